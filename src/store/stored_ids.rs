//! `StoredIds`: which visitors' profiles and which ID-sync mappings may be in the store, kept
//! in memory so that looking up one that was never stored costs no store read and no
//! blocking-thread hop. That is the common case of a visitor's first event (its `d_uuid` or
//! declared id is new to this server) and of a device's first ECID (`docs/architecture.md`,
//! "Stored-id filter").
//!
//! A Bloom filter: its "no" is certain, its "yes" may be wrong (then the read finds nothing,
//! as it would have without the filter). Correctness rests on one rule: an id is added
//! *before* its write is queued, and every write of a profile or a mapping goes through the
//! [`super::ProfileService`], so a stored id is never answered "no". The filter is built at
//! start from the store's keys on a thread of its own; until then it answers "yes" to
//! everything. Deleted ids stay in it (a read that finds nothing). Past `store.expected_ids`
//! ids its wrong "yes" become more frequent: more reads, never a wrong answer.
//!
//! Not used on a shared store: other nodes write it, and their ids are not in this filter.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

use fastbloom::AtomicBloomFilter;

use super::{ProfileStore, StoreError};
use crate::core::ids::VisitorId;

/// Wrong "yes" answers at `expected_ids` ids: one read in a hundred of a never-stored id.
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// What the filter holds: a profile's visitor, or a mapping's (data source, id).
#[derive(Hash)]
enum Key<'a> {
    Profile(u128),
    Link(u32, &'a [u8]),
}

pub struct StoredIds {
    /// `None`: disabled (shared store), every lookup reads the store.
    filter: Option<AtomicBloomFilter<foldhash::fast::RandomState>>,
    /// Every stored id has been added (the start-up scan is done).
    complete: AtomicBool,
}

impl StoredIds {
    /// A filter sized for `expected_ids` ids; it answers "yes" until [`StoredIds::load`] has
    /// added the stored ones.
    pub fn new(expected_ids: usize) -> Self {
        let filter = AtomicBloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
            .hasher(foldhash::fast::RandomState::default())
            .expected_items(expected_ids.max(1));
        StoredIds {
            filter: Some(filter),
            complete: AtomicBool::new(false),
        }
    }

    /// No filter: every lookup reads the store.
    pub fn disabled() -> Self {
        StoredIds {
            filter: None,
            complete: AtomicBool::new(false),
        }
    }

    /// Bytes the filter takes.
    pub fn memory_bytes(&self) -> usize {
        self.filter.as_ref().map_or(0, |f| f.num_bits() / 8)
    }

    /// A "no" spares a store read, and is counted as one (`tributary_store_reads_spared_total`).
    fn may_contain(&self, key: &Key<'_>) -> bool {
        let maybe = match &self.filter {
            Some(f) if self.complete.load(Ordering::Acquire) => f.contains(key),
            _ => true,
        };
        if !maybe {
            metrics::counter!("tributary_store_reads_spared_total").increment(1);
        }
        maybe
    }

    fn add(&self, key: &Key<'_>) {
        if let Some(f) = &self.filter {
            f.insert(key);
        }
    }

    /// Whether the visitor may have a stored profile (`false` is certain).
    pub fn may_have_profile(&self, visitor: VisitorId) -> bool {
        self.may_contain(&Key::Profile(visitor.as_u128()))
    }

    /// Whether (data source, id) may have a stored mapping (`false` is certain).
    pub fn may_have_link(&self, dpid: u32, id: &str) -> bool {
        self.may_contain(&Key::Link(dpid, id.as_bytes()))
    }

    /// To call before the visitor's profile write is queued.
    pub fn add_profile(&self, visitor: VisitorId) {
        self.add(&Key::Profile(visitor.as_u128()));
    }

    /// To call before the mapping's write is queued.
    pub fn add_link(&self, dpid: u32, id: &str) {
        self.add(&Key::Link(dpid, id.as_bytes()));
    }

    /// Adds every id the store holds, then starts answering "no". On a store that cannot list
    /// its ids the filter stays open (every lookup reads). Returns how many ids were added.
    pub fn load(&self, store: &dyn ProfileStore) -> Result<usize, StoreError> {
        if self.filter.is_none() {
            return Ok(0);
        }
        let mut added = 0usize;
        store.stored_ids(&mut |id| {
            match id {
                StoredId::Profile(visitor) => self.add(&Key::Profile(visitor.as_u128())),
                StoredId::Link(dpid, id) => self.add(&Key::Link(dpid, id)),
            }
            added += 1;
        })?;
        self.complete.store(true, Ordering::Release);
        Ok(added)
    }
}

/// One id a store holds, as [`ProfileStore::stored_ids`] lists them.
pub enum StoredId<'a> {
    Profile(VisitorId),
    /// A mapping's data source and the id's bytes.
    Link(u32, &'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IdLink, SledStore};

    #[test]
    fn answers_yes_until_loaded_then_only_for_what_was_stored_or_added() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8 << 20, 100).unwrap();
        let (stored, added, never) = (
            VisitorId::generate(),
            VisitorId::generate(),
            VisitorId::generate(),
        );
        store
            .save_profile(stored, &crate::core::profile::Profile::default())
            .unwrap();
        store
            .put_links(&[(
                7,
                "crm-1",
                IdLink {
                    visitor: stored,
                    at: 1,
                },
            )])
            .unwrap();
        let ids = StoredIds::new(1000);
        assert!(
            ids.may_have_profile(never),
            "not loaded yet: every id may be stored"
        );
        ids.add_profile(added);
        assert_eq!(ids.load(&store).unwrap(), 2);
        assert!(ids.may_have_profile(stored));
        assert!(ids.may_have_profile(added));
        assert!(ids.may_have_link(7, "crm-1"));
        assert!(!ids.may_have_link(8, "crm-1"), "another data source");
        assert!(!ids.may_have_link(7, "crm-2"));
        // A never-stored id is "no" but for the filter's rate of wrong "yes".
        let wrong = (0..10_000)
            .filter(|_| ids.may_have_profile(VisitorId::generate()))
            .count();
        assert!(wrong < 300, "{wrong} wrong yes in 10,000");
        assert!(StoredIds::disabled().may_have_profile(never));
    }
}
