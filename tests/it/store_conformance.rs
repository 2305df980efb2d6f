//! One suite, both stores: the embedded sled store and the Redis Cluster store must behave the
//! same through the store traits (profiles, the retention scan, ID-sync mappings, opt-outs,
//! the catalog with its versions, the S2S outbox).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use tributary::core::catalog::{Catalog, Trait};
use tributary::core::ids::VisitorId;
use tributary::core::s2s::Delivery;
use tributary::store::{
    CatalogChange, CatalogKind, CatalogObject, CatalogStore, IdLink, OutboxStore, ProfileStore,
    RedisSettings, RedisStore, ScanCursor, SledStore, VersionedWrite,
};

use crate::common::*;

trait Store: ProfileStore + CatalogStore + OutboxStore {}
impl<T: ProfileStore + CatalogStore + OutboxStore> Store for T {}

fn visitor(n: u64) -> VisitorId {
    VisitorId::parse(&format!("{:038}", 10u128.pow(37) + u128::from(n))).unwrap()
}

fn scan_all(store: &dyn Store, limit: usize) -> BTreeSet<VisitorId> {
    let mut seen = BTreeSet::new();
    let mut cursor = Some(ScanCursor::Start);
    let mut rounds = 0;
    while let Some(at) = cursor.take() {
        let (batch, next) = store.scan_profiles(at, limit).unwrap();
        assert!(
            batch.len() <= limit * 2 + 10,
            "a batch stays near its limit"
        );
        for (v, bytes) in batch {
            assert_eq!(bytes, v.to_string().into_bytes(), "value of {v}");
            seen.insert(v);
        }
        cursor = next;
        rounds += 1;
        assert!(rounds < 10_000, "the scan ends");
    }
    seen
}

fn trait_(sid: u64, rule: &str) -> Trait {
    serde_json::from_value(json!({"sid": sid, "name": format!("t{sid}"), "traitType": "RULE_BASED_TRAIT", "traitRule": rule, "dataSourceId": 1})).unwrap()
}

fn conformance(store: &dyn Store) {
    // Profiles.
    assert_eq!(store.get_profile_bytes(visitor(1)).unwrap(), None);
    let values: Vec<(VisitorId, Vec<u8>)> = (0..1200)
        .map(|n| (visitor(n), visitor(n).to_string().into_bytes()))
        .collect();
    let batch: Vec<(VisitorId, &[u8])> = values.iter().map(|(v, b)| (*v, b.as_slice())).collect();
    for chunk in batch.chunks(500) {
        store.put_profile_bytes(chunk).unwrap();
    }
    assert_eq!(
        store.get_profile_bytes(visitor(7)).unwrap(),
        Some(visitor(7).to_string().into_bytes())
    );
    store.put_profile_bytes(&[(visitor(7), b"x")]).unwrap();
    assert_eq!(
        store.get_profile_bytes(visitor(7)).unwrap().as_deref(),
        Some(&b"x"[..])
    );
    store
        .put_profile_bytes(&[(visitor(7), visitor(7).to_string().as_bytes())])
        .unwrap();
    store.delete_profile(visitor(3)).unwrap();
    store.delete_profile(visitor(3)).unwrap();
    assert_eq!(store.get_profile_bytes(visitor(3)).unwrap(), None);
    // Compare-and-set: only over the bytes expected.
    assert!(!store
        .swap_profile_bytes(visitor(3), Some(b"old"), b"new")
        .unwrap());
    assert!(store
        .swap_profile_bytes(visitor(3), None, b"first")
        .unwrap());
    assert!(!store
        .swap_profile_bytes(visitor(3), None, b"again")
        .unwrap());
    assert!(!store
        .swap_profile_bytes(visitor(3), Some(b"firs"), b"x")
        .unwrap());
    assert!(store
        .swap_profile_bytes(visitor(3), Some(b"first"), b"second")
        .unwrap());
    assert_eq!(
        store.get_profile_bytes(visitor(3)).unwrap().as_deref(),
        Some(&b"second"[..])
    );
    store.delete_profile(visitor(3)).unwrap();
    let expected: BTreeSet<VisitorId> = (0..1200).filter(|&n| n != 3).map(visitor).collect();
    assert_eq!(scan_all(store, 100), expected);
    assert_eq!(scan_all(store, 5000), expected);

    // ID-sync mappings, including ids with bytes that mean something to a key syntax.
    let link = |n: u64, at: i64| IdLink {
        visitor: visitor(n),
        at,
    };
    for id in ["crm-1", "a{b}c", "naïve", "x\u{1}y", ""] {
        assert_eq!(store.get_link(9, id).unwrap(), None);
        store.put_links(&[(9, id, link(1, 100))]).unwrap();
        assert_eq!(store.get_link(9, id).unwrap(), Some(link(1, 100)), "{id:?}");
        assert_eq!(store.get_link(10, id).unwrap(), None, "another data source");
    }
    store
        .put_links(&[(9, "crm-1", link(2, 200)), (9, "crm-2", link(3, 300))])
        .unwrap();
    assert_eq!(store.get_link(9, "crm-1").unwrap(), Some(link(2, 200)));
    store.delete_link(9, "crm-1").unwrap();
    assert_eq!(store.get_link(9, "crm-1").unwrap(), None);
    assert_eq!(store.get_link(9, "crm-2").unwrap(), Some(link(3, 300)));

    // Opt-outs.
    store.set_opted_out(visitor(5), 1).unwrap();
    store.set_opted_out(visitor(6), 2).unwrap();
    store.set_opted_out(visitor(5), 3).unwrap();
    let opted: BTreeSet<VisitorId> = store.opted_out().unwrap().into_iter().collect();
    assert_eq!(opted, [visitor(5), visitor(6)].into());
    assert_eq!(store.opted_out_count().unwrap(), 2);

    // The catalog and its versions.
    assert!(store.load_catalog().unwrap().is_none());
    assert_eq!(store.catalog_version().unwrap(), None);
    let catalog = Catalog {
        traits: vec![trait_(11, "a == 1"), trait_(12, "b == 2")],
        ..Default::default()
    };
    assert_eq!(store.replace_catalog(&catalog).unwrap(), 1);
    assert_eq!(store.load_catalog().unwrap(), Some((catalog.clone(), 1)));
    let v = store
        .apply_change(&CatalogChange::Put(CatalogObject::Trait(trait_(
            13, "c == 3",
        ))))
        .unwrap();
    assert_eq!(v, 2);
    let v = store
        .apply_change(&CatalogChange::Delete(CatalogKind::Trait, 11))
        .unwrap();
    assert_eq!(v, 3);
    let (loaded, version) = store.load_catalog().unwrap().unwrap();
    assert_eq!(version, 3);
    assert_eq!(store.catalog_version().unwrap(), Some(3));
    assert_eq!(
        loaded.traits.iter().map(|t| t.sid).collect::<Vec<_>>(),
        [12, 13]
    );
    let replaced = Catalog {
        traits: vec![trait_(20, "d == 4")],
        ..Default::default()
    };
    assert_eq!(store.replace_catalog(&replaced).unwrap(), 4);
    assert_eq!(store.load_catalog().unwrap(), Some((replaced, 4)));

    // The S2S outbox: sequence numbers only grow; order is kept.
    let delivery = |n: u64| Delivery {
        destination_id: 5,
        visitor: visitor(n),
        at: n as i64,
        active: vec![101],
        left: vec![],
    };
    assert!(store.outbox_all().unwrap().is_empty());
    let seqs = store
        .outbox_append(&[delivery(1), delivery(2), delivery(3)])
        .unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    store.outbox_remove(&[seqs[1]]).unwrap();
    let more = store.outbox_append(&[delivery(4)]).unwrap();
    assert!(more[0] > seqs[2]);
    let all = store.outbox_all().unwrap();
    assert_eq!(
        all,
        vec![
            (seqs[0], delivery(1)),
            (seqs[2], delivery(3)),
            (more[0], delivery(4))
        ]
    );
    store.outbox_remove(&[seqs[0], seqs[2], more[0]]).unwrap();
    assert!(store.outbox_all().unwrap().is_empty());
}

#[test]
fn sled_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 8 << 20, 100).unwrap();
    conformance(&store);
}

pub fn redis_store(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::open(RedisSettings {
        urls: cluster.urls.clone(),
        prefix: prefix.to_string(),
        node_id: "node-a".into(),
        profile_ttl: Duration::from_secs(3600),
        timeout: Duration::from_millis(500),
        connections: 4,
    })
    .unwrap()
}

#[test]
fn redis_store_conforms() {
    let cluster = RedisCluster::shared();
    let store = redis_store(&cluster, &unique_prefix());
    conformance(&store);
    versions(&store);
}

/// The profile versions a shared store keeps (sled keeps none: one node needs none).
fn versions(store: &dyn Store) {
    let (v, w) = (visitor(123_456), visitor(123_457));
    let swap = |visitor, expected, bytes: &'static [u8], version| VersionedWrite {
        visitor,
        expected,
        bytes,
        version,
    };
    // Nothing stored: version 0, no bytes, whatever is claimed held.
    assert_eq!(
        store.get_profile_if_changed(v, Some(7)).unwrap(),
        Some((0, None))
    );
    assert_eq!(
        store
            .swap_profiles_versioned(&[
                swap(v, 5, b"a", 6),
                swap(v, 0, b"a", 6),
                swap(w, 0, b"w", 9)
            ])
            .unwrap(),
        [false, true, true],
        "5 is not stored; then each is written as its version"
    );
    assert_eq!(
        store
            .swap_profiles_versioned(&[swap(v, 0, b"b", 7)])
            .unwrap(),
        [false],
        "a profile is stored now"
    );
    assert_eq!(
        store.get_profile_if_changed(v, Some(6)).unwrap(),
        None,
        "held as 6: unchanged"
    );
    assert_eq!(
        store
            .get_profiles_if_changed(&[
                (v, Some(5)),
                (w, Some(9)),
                (v, None),
                (visitor(123_458), None)
            ])
            .unwrap(),
        [
            Some((6, Some(b"a".to_vec()))),
            None,
            Some((6, Some(b"a".to_vec()))),
            Some((0, None))
        ]
    );
    assert_eq!(
        store
            .swap_profiles_versioned(&[swap(v, 6, b"b", 8)])
            .unwrap(),
        [true]
    );
    assert_eq!(
        store
            .swap_profiles_versioned(&[swap(v, 6, b"b", 8)])
            .unwrap(),
        [true],
        "made again (its answer lost): already written, not refused"
    );
    assert_eq!(
        store.get_profile_if_changed(v, Some(6)).unwrap(),
        Some((8, Some(b"b".to_vec())))
    );
    // Every other write sets a version of its own, so no holder takes it for its copy.
    store.put_profile_bytes(&[(v, b"c")]).unwrap();
    let (put, bytes) = store.get_profile_if_changed(v, Some(8)).unwrap().unwrap();
    assert!(put != 8 && put != 0 && bytes.as_deref() == Some(&b"c"[..]));
    assert!(store.swap_profile_bytes(v, Some(b"c"), b"d").unwrap());
    let (swapped, _) = store.get_profile_if_changed(v, Some(put)).unwrap().unwrap();
    assert!(swapped != put && swapped != 0);
    store.delete_profile(v).unwrap();
    assert_eq!(
        store.get_profile_if_changed(v, Some(swapped)).unwrap(),
        Some((0, None))
    );
    store.delete_profile(w).unwrap();
}
