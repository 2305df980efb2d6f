//! Persistence. This module is the only one that touches sled or Redis (`docs/architecture.md`,
//! Invariants).
//!
//! Everything else talks to the [`ProfileStore`], [`CatalogStore`] and [`OutboxStore`] traits
//! ([`Store`] is all three), implemented by [`SledStore`] (one node) and [`RedisStore`] (many
//! nodes on a Redis Cluster). The traits are
//! synchronous on purpose: they are called only from the store's own threads and blocking
//! tasks ([`ProfileService`]) or at start-up, never from an actix-web worker.

mod codec;
mod group_commit;
mod health;
mod profile_service;
mod readers;
mod redis_store;
mod sled_store;
mod stored_ids;

/// The stored profile format, for tools and tests that prepare a store.
pub use codec::{decode_profile, encode_profile};
pub use health::Failing;
pub use profile_service::{
    ProfileService, Refreshed, Replay, ServiceSettings, SweepReport, MAX_SWAP_ATTEMPTS,
};
pub use redis_store::{cluster_usage, RedisSettings, RedisStore};
pub use sled_store::SledStore;
pub use stored_ids::{StoredId, StoredIds};

use crate::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use crate::core::ids::VisitorId;
use crate::core::profile::Profile;
use crate::core::s2s::Delivery;

/// Runs store work on a blocking thread, never on an actix-web worker; `what` names the work
/// in the error if the task itself dies.
pub async fn on_blocking_thread<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    actix_rt::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io(format!("{what} task failed: {e}")))?
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A stored value cannot be decoded: it is left as it is and reported, never overwritten
    /// silently.
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// An ID-sync mapping (data source, id) → visitor, and when it was last asserted (Unix
/// seconds): among several mappings of one request, the most recent identifies the visitor.
/// Stored profiles (visitor, encoded bytes), and where the walk goes on (`None`: the end).
pub type ScanBatch = (Vec<(VisitorId, Vec<u8>)>, Option<ScanCursor>);

/// Where a walk over the stored profiles is (see [`ProfileStore::scan_profiles`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ScanCursor {
    #[default]
    Start,
    /// After this visitor, in visitor order (sled).
    After(VisitorId),
    /// At this cursor of one node's `SCAN`, nodes in a fixed order (Redis Cluster).
    Node { node: usize, cursor: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdLink {
    pub visitor: VisitorId,
    pub at: i64,
}

/// A new profile version for a shared store: a random token, never 0 (which stands for "no
/// profile stored"). Random, not counted, so that no version comes back after a delete.
fn new_version() -> u64 {
    rand::random::<u64>().max(1)
}

/// A stored profile's version and bytes (`None`: no profile stored).
pub type Versioned = (u64, Option<Vec<u8>>);

/// One write of [`ProfileStore::swap_profiles_versioned`].
#[derive(Clone, Copy, Debug)]
pub struct VersionedWrite<'a> {
    pub visitor: VisitorId,
    /// The version the store must still hold (0: no profile).
    pub expected: u64,
    pub bytes: &'a [u8],
    /// The version the profile is written as.
    pub version: u64,
}

/// Visitor profiles by visitor id, stored in their versioned encoding (see `codec`), and the
/// reverse ID-sync mappings that lead to them (the forward ones are in the profile).
pub trait ProfileStore: Send + Sync {
    /// The stored bytes of a profile.
    fn get_profile_bytes(&self, visitor: VisitorId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes encoded profiles. Not atomic as a whole: each profile stands alone, and a crash
    /// part-way may leave some of them written.
    fn put_profile_bytes(&self, batch: &[(VisitorId, &[u8])]) -> Result<(), StoreError>;
    fn delete_profile(&self, visitor: VisitorId) -> Result<(), StoreError>;
    /// Writes `new` only if the stored bytes are still `expected` (`None`: no profile stored),
    /// atomically; `false` when another write came first. How nodes sharing a store update a
    /// profile without losing each other's changes.
    fn swap_profile_bytes(
        &self,
        visitor: VisitorId,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// For each (visitor, `held` version): the stored profile's version and bytes, or `None`
    /// when the stored version is the held one (then nothing else is read). A version is a
    /// token that each write of the profile sets; 0 stands for "no profile stored" and never
    /// matches. How a node sharing a store keeps visitors' profiles in memory and checks them
    /// instead of reading them on every event; one round trip per node for the whole batch. A
    /// store that keeps no versions reads every profile (version 0).
    fn get_profiles_if_changed(
        &self,
        batch: &[(VisitorId, Option<u64>)],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        batch
            .iter()
            .map(|(visitor, _)| Ok(Some((0, self.get_profile_bytes(*visitor)?))))
            .collect()
    }
    /// Writes each profile as its `version` only if the stored version is still its
    /// `expected` (0: no profile stored), each atomically: whether each was written (`false`:
    /// another write came first). A store that keeps no versions writes none: its caller then
    /// reads, replays and uses [`Self::swap_profile_bytes`].
    fn swap_profiles_versioned(
        &self,
        batch: &[VersionedWrite<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        Ok(vec![false; batch.len()])
    }
    /// [`Self::get_profiles_if_changed`] for one visitor.
    fn get_profile_if_changed(
        &self,
        visitor: VisitorId,
        held: Option<u64>,
    ) -> Result<Option<Versioned>, StoreError> {
        self.get_profiles_if_changed(&[(visitor, held)])?
            .pop()
            .ok_or_else(|| StoreError::Io("the store answered no version check".into()))
    }
    /// About `limit` stored profiles from `cursor` on, and where to go on (`None` at the end):
    /// how the retention sweep walks the store a batch at a time. Each profile stored for the
    /// whole walk is returned once (a backend may return one twice); an empty batch does not
    /// mean the end.
    fn scan_profiles(&self, cursor: ScanCursor, limit: usize) -> Result<ScanBatch, StoreError>;
    /// Makes every acknowledged write durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Calls `each` with every stored profile's visitor and every mapping's key: how the
    /// [`StoredIds`] filter is built at start. A store that cannot list them cheaply says so
    /// with an error (the filter then stays open: every lookup reads the store).
    fn stored_ids(&self, each: &mut dyn FnMut(StoredId<'_>)) -> Result<(), StoreError> {
        let _ = each;
        Err(StoreError::Io("this store does not list its ids".into()))
    }

    /// The visitor a data source's id is mapped to.
    fn get_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError>;
    /// Writes mappings, replacing what each (data source, id) was mapped to.
    fn put_links(&self, links: &[(u32, &str, IdLink)]) -> Result<(), StoreError>;
    fn delete_link(&self, dpid: u32, id: &str) -> Result<(), StoreError>;

    /// Records that the visitor opted out (Unix seconds): nothing may be stored for it again.
    /// Durable once a [`ProfileStore::flush`] that began after it has returned (the profile
    /// service shares one flush among all the opt-outs waiting for one).
    fn set_opted_out(&self, visitor: VisitorId, at: i64) -> Result<(), StoreError>;
    /// Every visitor that opted out (read at start, and again when the count changes).
    fn opted_out(&self) -> Result<Vec<VisitorId>, StoreError>;
    /// How many visitors opted out: cheap, so nodes sharing a store can poll it.
    fn opted_out_count(&self) -> Result<usize, StoreError>;

    fn load_profile(&self, visitor: VisitorId) -> Result<Option<Profile>, StoreError> {
        match self.get_profile_bytes(visitor)? {
            Some(bytes) => codec::decode_profile(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn save_profile(&self, visitor: VisitorId, profile: &Profile) -> Result<(), StoreError> {
        self.put_profile_bytes(&[(visitor, &codec::encode_profile(profile)?)])
    }
}

/// The S2S outbox: deliveries waiting for their destination, in the order they were queued,
/// each under a sequence number that only grows (also across restarts).
pub trait OutboxStore: Send + Sync {
    /// Appends deliveries and makes them durable; returns their sequence numbers.
    fn outbox_append(&self, deliveries: &[Delivery]) -> Result<Vec<u64>, StoreError>;
    /// Every waiting delivery, oldest first (read at start).
    fn outbox_all(&self) -> Result<Vec<(u64, Delivery)>, StoreError>;
    /// Removes delivered (or abandoned) deliveries.
    fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError>;
}

/// Everything a running server keeps: what [`SledStore`] and [`RedisStore`] both are.
pub trait Store: ProfileStore + CatalogStore + OutboxStore {
    /// Stored profiles, counted by walking them (tests and tools, not the hot path).
    fn count_profiles(&self) -> Result<usize, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut cursor = Some(ScanCursor::Start);
        while let Some(at) = cursor.take() {
            let (batch, next) = self.scan_profiles(at, 1000)?;
            seen.extend(batch.into_iter().map(|(v, _)| v));
            cursor = next;
        }
        Ok(seen.len())
    }
}

impl<T: ProfileStore + CatalogStore + OutboxStore> Store for T {}

/// One object of the catalog.
#[derive(Clone, Debug)]
pub enum CatalogObject {
    Provider(Provider),
    Trait(Trait),
    Segment(Segment),
    Destination(Box<Destination>),
}

/// Which kind of catalog object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogKind {
    Provider,
    Trait,
    Segment,
    Destination,
}

/// One admin change to the catalog.
#[derive(Clone, Debug)]
pub enum CatalogChange {
    /// Creates or replaces the object with its id.
    Put(CatalogObject),
    Delete(CatalogKind, u64),
}

/// The catalog (providers, traits, segments).
pub trait CatalogStore: Send + Sync {
    /// The stored catalog and its version, or `None` if none was ever stored.
    fn load_catalog(&self) -> Result<Option<(Catalog, u64)>, StoreError>;
    /// Replaces the whole catalog, bumps its version and flushes before returning.
    fn replace_catalog(&self, catalog: &Catalog) -> Result<u64, StoreError>;
    /// The stored catalog's version, without reading the catalog (how a node notices that
    /// another changed it).
    fn catalog_version(&self) -> Result<Option<u64>, StoreError>;
    /// Applies one change and bumps the version, atomically, and flushes before returning
    /// (an acknowledged admin change survives a crash). Returns the new version.
    fn apply_change(&self, change: &CatalogChange) -> Result<u64, StoreError>;
}
