//! The embedded single-node store, on sled 0.34.
//!
//! Five trees, fixed: `profiles` (key: the visitor id as 16 big-endian bytes), `idlinks`
//! (key: the data source id as 4 big-endian bytes, then the id's UTF-8 bytes; value: the
//! visitor id, then the mapping's Unix seconds as 8 big-endian bytes), `optouts` (key: the
//! visitor id; value: Unix seconds), `outbox` (key: a sequence number from sled's
//! `generate_id`, 8 big-endian bytes; value: a versioned postcard delivery) and `catalog`
//! (key: one kind byte, then the object id as 8 big-endian bytes; the catalog version sits
//! under its own kind byte in the same tree so that a catalog replacement is one atomic
//! batch).

use std::path::Path;

use super::codec::{self, decode_json, decode_link, encode_json, encode_link};
use super::{
    CatalogChange, CatalogKind, CatalogObject, CatalogStore, IdLink, OutboxStore, ProfileStore,
    ScanBatch, ScanCursor, StoreError, StoredId,
};
use crate::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use crate::core::ids::VisitorId;
use crate::core::s2s::Delivery;

const KIND_VERSION: u8 = b'v';
const KIND_PROVIDER: u8 = b'p';
const KIND_TRAIT: u8 = b't';
const KIND_SEGMENT: u8 = b's';
const KIND_DESTINATION: u8 = b'd';

/// sled-backed [`ProfileStore`] and [`CatalogStore`].
pub struct SledStore {
    db: sled::Db,
    profiles: sled::Tree,
    idlinks: sled::Tree,
    /// Visitors that opted out (key: visitor id, value: Unix seconds, big-endian).
    optouts: sled::Tree,
    catalog: sled::Tree,
    /// S2S deliveries waiting (key: sequence number, big-endian).
    outbox: sled::Tree,
}

fn link_key(dpid: u32, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + id.len());
    key.extend_from_slice(&dpid.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The visitor a 16-byte big-endian key names (`None`: not a valid visitor id), or why the
/// key is not one (`what` names the tree's keys in the error).
fn visitor_key(what: &'static str, key: &[u8]) -> Result<Option<VisitorId>, StoreError> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{} bytes instead of 16", key.len()),
    })?;
    Ok(Some(VisitorId::from_stored(u128::from_be_bytes(bytes))))
}

fn catalog_key(kind: u8, id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = kind;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

impl SledStore {
    /// Opens (or creates) the store at `path`. `cache_capacity` bounds sled's page cache,
    /// whose default (1 GiB) is too large for most hosts.
    pub fn open(
        path: &Path,
        cache_capacity: u64,
        flush_every_ms: u64,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .flush_every_ms(Some(flush_every_ms))
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        let profiles = db.open_tree("profiles")?;
        let idlinks = db.open_tree("idlinks")?;
        let optouts = db.open_tree("optouts")?;
        let catalog = db.open_tree("catalog")?;
        let outbox = db.open_tree("outbox")?;
        Ok(SledStore {
            db,
            profiles,
            idlinks,
            optouts,
            catalog,
            outbox,
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Stores raw bytes as a visitor's profile, bypassing the encoding: lets tests reproduce
    /// corrupted records. Not for production use.
    #[doc(hidden)]
    pub fn put_raw_profile(&self, visitor: VisitorId, bytes: &[u8]) -> Result<(), StoreError> {
        self.profiles.insert(visitor.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// Number of stored profiles (walks the tree: for tests and tools, not for the hot path).
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }
}

impl OutboxStore for SledStore {
    fn outbox_append(&self, deliveries: &[Delivery]) -> Result<Vec<u64>, StoreError> {
        let mut batch = sled::Batch::default();
        let mut seqs = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            // sled's ids only grow, across restarts too: the outbox keeps its order.
            let seq = self.db.generate_id()?;
            batch.insert(&seq.to_be_bytes(), codec::encode_delivery(d)?);
            seqs.push(seq);
        }
        self.outbox.apply_batch(batch)?;
        // A queued delivery is a promise to a destination: it must survive a crash.
        self.outbox.flush()?;
        Ok(seqs)
    }

    fn outbox_all(&self) -> Result<Vec<(u64, Delivery)>, StoreError> {
        let mut all = Vec::new();
        for entry in self.outbox.iter() {
            let (key, value) = entry?;
            let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: "outbox key",
                detail: format!("{} bytes instead of 8", key.len()),
            })?;
            match codec::decode_delivery(&value) {
                Ok(d) => all.push((u64::from_be_bytes(bytes), d)),
                // One unreadable entry must not hold up every other delivery.
                Err(e) => log::error!("outbox entry {} skipped: {e}", u64::from_be_bytes(bytes)),
            }
        }
        Ok(all)
    }

    fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }
}

impl ProfileStore for SledStore {
    fn get_profile_bytes(&self, visitor: VisitorId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .profiles
            .get(visitor.to_be_bytes())?
            .map(|v| v.to_vec()))
    }

    /// One insert per profile, not a `sled::Batch`: profiles are independent, and a sled batch
    /// holds sled's global write lock for all its inserts (every read of every tree waits) and
    /// writes a batch marker into the log. A crash part-way leaves some of them written, which
    /// is what write-behind promises anyway (`docs/architecture.md`, sled).
    fn put_profile_bytes(&self, batch: &[(VisitorId, &[u8])]) -> Result<(), StoreError> {
        for (visitor, bytes) in batch {
            self.profiles.insert(visitor.to_be_bytes(), *bytes)?;
        }
        Ok(())
    }

    fn delete_profile(&self, visitor: VisitorId) -> Result<(), StoreError> {
        self.profiles.remove(visitor.to_be_bytes())?;
        Ok(())
    }

    fn swap_profile_bytes(
        &self,
        visitor: VisitorId,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self
            .profiles
            .compare_and_swap(visitor.to_be_bytes(), expected, Some(new))?
            .is_ok())
    }

    fn scan_profiles(&self, cursor: ScanCursor, limit: usize) -> Result<ScanBatch, StoreError> {
        use std::ops::Bound;
        let start = match cursor {
            ScanCursor::After(v) => Bound::Excluded(v.to_be_bytes().to_vec()),
            _ => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self
            .profiles
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = item?;
            if let Some(v) = visitor_key("profile key", &key)? {
                out.push((v, value.to_vec()));
            }
        }
        let next = match out.last() {
            Some((last, _)) if out.len() >= limit => Some(ScanCursor::After(*last)),
            _ => None,
        };
        Ok((out, next))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn stored_ids(&self, each: &mut dyn FnMut(StoredId<'_>)) -> Result<(), StoreError> {
        for key in self.profiles.iter().keys() {
            let key = key?;
            // A key that is no visitor id is never looked up; the sweep reports such records.
            if let Ok(Some(visitor)) = visitor_key("profile key", &key) {
                each(StoredId::Profile(visitor));
            }
        }
        for key in self.idlinks.iter().keys() {
            let key = key?;
            if let Some((dpid, id)) = key.split_first_chunk::<4>() {
                each(StoredId::Link(u32::from_be_bytes(*dpid), id));
            }
        }
        Ok(())
    }

    fn get_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
        match self.idlinks.get(link_key(dpid, id))? {
            Some(value) => decode_link(&value).map(Some),
            None => Ok(None),
        }
    }

    /// One insert per mapping, for the reason [`SledStore::put_profile_bytes`] gives.
    fn put_links(&self, links: &[(u32, &str, IdLink)]) -> Result<(), StoreError> {
        for (dpid, id, link) in links {
            self.idlinks
                .insert(link_key(*dpid, id), &encode_link(link)[..])?;
        }
        Ok(())
    }

    fn delete_link(&self, dpid: u32, id: &str) -> Result<(), StoreError> {
        self.idlinks.remove(link_key(dpid, id))?;
        Ok(())
    }

    fn set_opted_out(&self, visitor: VisitorId, at: i64) -> Result<(), StoreError> {
        self.optouts
            .insert(visitor.to_be_bytes(), &at.to_be_bytes()[..])?;
        Ok(())
    }

    fn opted_out_count(&self) -> Result<usize, StoreError> {
        Ok(self.optouts.len())
    }

    fn opted_out(&self) -> Result<Vec<VisitorId>, StoreError> {
        let mut all = Vec::new();
        for key in self.optouts.iter().keys() {
            let key = key?;
            if let Some(v) = visitor_key("opt-out key", &key)? {
                all.push(v);
            }
        }
        Ok(all)
    }
}

impl CatalogStore for SledStore {
    fn load_catalog(&self) -> Result<Option<(Catalog, u64)>, StoreError> {
        let mut catalog = Catalog::default();
        let mut version = None;
        for item in self.catalog.iter() {
            let (key, value) = item?;
            match key.first() {
                Some(&KIND_VERSION) => {
                    let bytes: [u8; 8] =
                        value.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                            what: "catalog version",
                            detail: format!("{} bytes instead of 8", value.len()),
                        })?;
                    version = Some(u64::from_be_bytes(bytes));
                }
                Some(&KIND_PROVIDER) => catalog.providers.push(decode_json::<Provider>(&value)?),
                Some(&KIND_TRAIT) => catalog.traits.push(decode_json::<Trait>(&value)?),
                Some(&KIND_SEGMENT) => catalog.segments.push(decode_json::<Segment>(&value)?),
                Some(&KIND_DESTINATION) => catalog
                    .destinations
                    .push(decode_json::<Destination>(&value)?),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "catalog key",
                        detail: format!("unknown key {:?}", key.as_ref()),
                    })
                }
            }
        }
        Ok(version.map(|v| (catalog, v)))
    }

    fn replace_catalog(&self, catalog: &Catalog) -> Result<u64, StoreError> {
        let previous = self.load_catalog()?.map(|(_, v)| v).unwrap_or(0);
        let version = previous + 1;
        // The version key goes first and comes back last: a catalog without it is never
        // loaded (load_catalog answers None and the seed is loaded again), so a crash half-way
        // cannot leave a half-written catalog in use. The objects are written in chunks: one
        // batch of 100,000 traits makes sled hold hundreds of megabytes it never gives back.
        self.catalog.remove([KIND_VERSION])?;
        let old: Vec<sled::IVec> = self.catalog.iter().keys().collect::<Result<_, _>>()?;
        for chunk in old.chunks(CHUNK) {
            let mut batch = sled::Batch::default();
            for key in chunk {
                batch.remove(key.clone());
            }
            self.catalog.apply_batch(batch)?;
        }
        let mut entries: Vec<([u8; 9], Vec<u8>)> = Vec::new();
        for p in &catalog.providers {
            entries.push((
                catalog_key(KIND_PROVIDER, u64::from(p.pid)),
                encode_json(p)?,
            ));
        }
        for t in &catalog.traits {
            entries.push((catalog_key(KIND_TRAIT, t.sid), encode_json(t)?));
        }
        for s in &catalog.segments {
            entries.push((catalog_key(KIND_SEGMENT, s.sid), encode_json(s)?));
        }
        for d in &catalog.destinations {
            entries.push((
                catalog_key(KIND_DESTINATION, d.destination_id),
                encode_json(d)?,
            ));
        }
        for chunk in entries.chunks(CHUNK) {
            let mut batch = sled::Batch::default();
            for (key, value) in chunk {
                batch.insert(&key[..], value.as_slice());
            }
            self.catalog.apply_batch(batch)?;
        }
        self.catalog
            .insert([KIND_VERSION], &version.to_be_bytes()[..])?;
        // An acknowledged catalog change must survive a crash (`docs/admin-api.md`, Changes).
        self.db.flush()?;
        Ok(version)
    }

    fn catalog_version(&self) -> Result<Option<u64>, StoreError> {
        match self.catalog.get([KIND_VERSION])? {
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "catalog version",
                    detail: format!("{} bytes instead of 8", v.len()),
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
            None => Ok(None),
        }
    }

    fn apply_change(&self, change: &CatalogChange) -> Result<u64, StoreError> {
        let version = self.catalog_version()?.unwrap_or(0) + 1;
        // Object and version in one batch: a crash leaves either both or neither.
        let mut batch = sled::Batch::default();
        match change {
            CatalogChange::Put(object) => {
                let (key, value) = match object {
                    CatalogObject::Provider(p) => (
                        catalog_key(KIND_PROVIDER, u64::from(p.pid)),
                        encode_json(p)?,
                    ),
                    CatalogObject::Trait(t) => (catalog_key(KIND_TRAIT, t.sid), encode_json(t)?),
                    CatalogObject::Segment(s) => {
                        (catalog_key(KIND_SEGMENT, s.sid), encode_json(s)?)
                    }
                    CatalogObject::Destination(d) => (
                        catalog_key(KIND_DESTINATION, d.destination_id),
                        encode_json(d)?,
                    ),
                };
                batch.insert(&key[..], value);
            }
            CatalogChange::Delete(kind, id) => {
                let kind = match kind {
                    CatalogKind::Provider => KIND_PROVIDER,
                    CatalogKind::Trait => KIND_TRAIT,
                    CatalogKind::Segment => KIND_SEGMENT,
                    CatalogKind::Destination => KIND_DESTINATION,
                };
                batch.remove(&catalog_key(kind, *id)[..]);
            }
        }
        batch.insert(&[KIND_VERSION][..], &version.to_be_bytes()[..]);
        self.catalog.apply_batch(batch)?;
        self.db.flush()?;
        Ok(version)
    }
}

/// Catalog objects per sled batch when a whole catalog is written.
const CHUNK: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::profile::{Profile, Realization};

    /// Opens the store, retrying for a moment: after a drop, sled's background flush thread
    /// can hold the database's file lock a little longer, and a reopen at once then fails.
    fn open(dir: &Path) -> SledStore {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledStore::open(dir, 8 << 20, 100) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > until => panic!("cannot reopen: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn profiles_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = VisitorId::generate();
        let mut p = Profile::default();
        p.traits.insert(
            1,
            Realization {
                first: 1,
                last: 1,
                days: vec![(0, 1)],
            },
        );
        {
            let s = open(dir.path());
            assert_eq!(s.load_profile(id).unwrap(), None);
            s.save_profile(id, &p).unwrap();
            s.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.load_profile(id).unwrap(), Some(p));
        s.delete_profile(id).unwrap();
        assert_eq!(s.load_profile(id).unwrap(), None);
    }

    #[test]
    fn id_links_round_trip_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = VisitorId::generate();
        let b = VisitorId::generate();
        {
            let s = open(dir.path());
            assert_eq!(s.get_link(5, "x").unwrap(), None);
            s.put_links(&[
                (5, "x", IdLink { visitor: a, at: 10 }),
                (6, "x", IdLink { visitor: a, at: 11 }),
            ])
            .unwrap();
            s.put_links(&[(5, "x", IdLink { visitor: b, at: 12 })])
                .unwrap();
            s.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(
            s.get_link(5, "x").unwrap(),
            Some(IdLink { visitor: b, at: 12 })
        );
        assert_eq!(
            s.get_link(6, "x").unwrap(),
            Some(IdLink { visitor: a, at: 11 })
        );
        assert_eq!(s.get_link(5, "y").unwrap(), None);
        s.idlinks.insert(link_key(7, "z"), &[1u8, 2][..]).unwrap();
        assert!(matches!(
            s.get_link(7, "z"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_profiles_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let id = VisitorId::generate();
        s.profiles
            .insert(id.to_be_bytes(), &[7u8, 7, 7][..])
            .unwrap();
        assert!(matches!(
            s.load_profile(id),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_catalog_without_its_version_key_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let c: Catalog = serde_json::from_str(
            r#"{"traits":[{"sid":1,"name":"a","traitType":"RULE_BASED_TRAIT","traitRule":"a==1","dataSourceId":1}]}"#,
        )
        .unwrap();
        s.replace_catalog(&c).unwrap();
        // What a crash during the next replacement leaves: objects, no version.
        s.catalog.remove([KIND_VERSION]).unwrap();
        assert!(s.load_catalog().unwrap().is_none());
    }

    #[test]
    fn catalog_changes_are_applied_one_by_one_with_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let c: Catalog = serde_json::from_str(
            r#"{"traits":[{"sid":1,"name":"a","traitType":"RULE_BASED_TRAIT","traitRule":"a==1","dataSourceId":1}]}"#,
        )
        .unwrap();
        {
            let s = open(dir.path());
            assert_eq!(s.replace_catalog(&c).unwrap(), 1);
            let mut t = c.traits[0].clone();
            t.sid = 2;
            t.name = "b".into();
            let v = s
                .apply_change(&CatalogChange::Put(CatalogObject::Trait(t)))
                .unwrap();
            assert_eq!(v, 2);
            let v = s
                .apply_change(&CatalogChange::Delete(CatalogKind::Trait, 1))
                .unwrap();
            assert_eq!(v, 3);
        }
        let s = open(dir.path());
        let (loaded, version) = s.load_catalog().unwrap().unwrap();
        assert_eq!(version, 3);
        let ids: Vec<u64> = loaded.traits.iter().map(|t| t.sid).collect();
        assert_eq!(ids, [2]);
        assert_eq!(loaded.traits[0].name, "b");
    }

    #[test]
    fn catalog_replace_bumps_version_and_replaces_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        assert!(s.load_catalog().unwrap().is_none());
        let c1: Catalog = serde_json::from_str(
            r#"{"traits":[{"sid":1,"name":"a","traitType":"RULE_BASED_TRAIT","traitRule":"a==1","dataSourceId":1},
                          {"sid":2,"name":"b","traitType":"RULE_BASED_TRAIT","traitRule":"b==1","dataSourceId":1}]}"#,
        )
        .unwrap();
        assert_eq!(s.replace_catalog(&c1).unwrap(), 1);
        let mut c2 = c1.clone();
        c2.traits.remove(0);
        assert_eq!(s.replace_catalog(&c2).unwrap(), 2);
        drop(s);
        let s = open(dir.path());
        let (loaded, version) = s.load_catalog().unwrap().unwrap();
        assert_eq!(version, 2);
        assert_eq!(loaded, c2);
    }
}
