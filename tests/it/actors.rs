//! The actors driven directly, without HTTP: `SegmentEngine` with a real sled store behind its
//! store threads, `VisitorSession` with real provider servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use serde_json::json;
use tributary::actors::directory::SessionDirectory;
use tributary::actors::provider_client::ClientSettings;
use tributary::actors::segment_engine::{EvaluateProfile, SegmentEngine};
use tributary::actors::visitor_session::{CollectEvent, SessionDeps, VisitorSession};
use tributary::config::RealtimeConfig;
use tributary::core::engine::{CatalogHandle, CompiledCatalog};
use tributary::core::event::EventData;
use tributary::core::ids::{Tid, VisitorId};
use tributary::core::profile::Profile;
use tributary::core::provider::Outcome;
use tributary::core::signals::Signals;
use tributary::store::{IdLink, ProfileStore, SledStore, StoreError};
use tributary::store::{ProfileService, ServiceSettings};

use crate::common::*;

fn sample_catalog(provider_url: &str) -> tributary::core::catalog::Catalog {
    catalog(
        vec![provider(1, "acme", provider_url, 1001, 150)],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
            {"sid": 21, "name": "auto", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == auto", "dataSourceId": 1001}
        ]),
        json!([{"sid": 101, "name": "auto shoppers", "segmentRule": "11T AND 21T", "dataSourceId": 1}]),
    )
}

fn event(pairs: &[(&str, &str)]) -> Arc<EventData> {
    let mut signals = Signals::new();
    for (k, v) in pairs {
        signals.add(*k, [v.to_string()]);
    }
    Arc::new(EventData {
        signals,
        ..Default::default()
    })
}

#[actix::test]
async fn segment_engine_evaluates_persists_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20, 100).unwrap());
    let profile_store: Arc<dyn ProfileStore> = store.clone();
    let profiles = ProfileService::start(
        profile_store,
        ServiceSettings::new(2, std::time::Duration::from_millis(50)),
    )
    .unwrap();
    let engine = SegmentEngine::new(profiles.clone()).start();
    let compiled =
        Arc::new(CompiledCatalog::compile(&sample_catalog("http://127.0.0.1:9/"), 1).unwrap());
    let visitor = VisitorId::generate();

    assert!(profiles.load(visitor).await.unwrap().is_none());
    let done = engine
        .send(EvaluateProfile {
            changes: Default::default(),
            tid: Tid::next(),
            visitor,
            profile: Profile::default(),
            persist: true,
            held: None,
            catalog: compiled.clone(),
            event: event(&[("c_page", "cars")]),
            provider_segments: vec![(1001, vec!["auto".into()])],
            now: 1_000,
            answers_only: false,
            merged: None,
        })
        .await
        .unwrap();
    assert!(done.saved.is_ok());
    assert_eq!(done.evaluation.realized, [11, 21]);
    assert_eq!(done.evaluation.segments, [101]);
    let stored = profiles.load(visitor).await.unwrap().unwrap();
    assert_eq!(stored, done.profile);
    assert_eq!(stored.segments, [101]);

    // persist = false (the stored profile was unreadable) evaluates without writing.
    let other = VisitorId::generate();
    let done = engine
        .send(EvaluateProfile {
            changes: Default::default(),
            tid: Tid::next(),
            visitor: other,
            profile: Profile::default(),
            persist: false,
            held: None,
            catalog: compiled,
            event: event(&[("c_page", "cars")]),
            provider_segments: vec![],
            now: 1_000,
            answers_only: false,
            merged: None,
        })
        .await
        .unwrap();
    assert_eq!(done.evaluation.realized, [11]);
    profiles.flush().await.unwrap();
    assert!(store.load_profile(other).unwrap().is_none());
}

struct Harness {
    deps: SessionDeps,
    store: Arc<SledStore>,
    _dir: tempfile::TempDir,
}

fn harness(catalog: &tributary::core::catalog::Catalog, deadline_ms: u64) -> Harness {
    harness_reading_in(catalog, deadline_ms, Duration::ZERO)
}

/// A sled store whose profile reads take `delay` (a busy disk).
struct SlowReads {
    inner: Arc<SledStore>,
    delay: Duration,
}

impl ProfileStore for SlowReads {
    fn get_profile_bytes(&self, visitor: VisitorId) -> Result<Option<Vec<u8>>, StoreError> {
        // The busy disk itself: time passing is what the tests put the session through.
        std::thread::sleep(self.delay);
        self.inner.get_profile_bytes(visitor)
    }
    fn put_profile_bytes(&self, batch: &[(VisitorId, &[u8])]) -> Result<(), StoreError> {
        self.inner.put_profile_bytes(batch)
    }
    fn delete_profile(&self, visitor: VisitorId) -> Result<(), StoreError> {
        self.inner.delete_profile(visitor)
    }
    fn swap_profile_bytes(
        &self,
        visitor: VisitorId,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.swap_profile_bytes(visitor, expected, new)
    }
    fn opted_out_count(&self) -> Result<usize, StoreError> {
        self.inner.opted_out_count()
    }
    fn scan_profiles(
        &self,
        cursor: tributary::store::ScanCursor,
        limit: usize,
    ) -> Result<
        (
            Vec<(VisitorId, Vec<u8>)>,
            Option<tributary::store::ScanCursor>,
        ),
        StoreError,
    > {
        self.inner.scan_profiles(cursor, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn get_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
        self.inner.get_link(dpid, id)
    }
    fn put_links(&self, links: &[(u32, &str, IdLink)]) -> Result<(), StoreError> {
        self.inner.put_links(links)
    }
    fn delete_link(&self, dpid: u32, id: &str) -> Result<(), StoreError> {
        self.inner.delete_link(dpid, id)
    }
    fn set_opted_out(&self, visitor: VisitorId, at: i64) -> Result<(), StoreError> {
        self.inner.set_opted_out(visitor, at)
    }
    fn opted_out(&self) -> Result<Vec<VisitorId>, StoreError> {
        self.inner.opted_out()
    }
}

fn harness_reading_in(
    catalog: &tributary::core::catalog::Catalog,
    deadline_ms: u64,
    read_delay: Duration,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20, 100).unwrap());
    let profile_store: Arc<dyn ProfileStore> = Arc::new(SlowReads {
        inner: store.clone(),
        delay: read_delay,
    });
    let profiles = ProfileService::start(
        profile_store,
        ServiceSettings::new(1, std::time::Duration::from_millis(50)),
    )
    .unwrap();
    let realtime = RealtimeConfig {
        deadline_ms,
        ..Default::default()
    };
    let deps = SessionDeps {
        profiles,
        catalog: CatalogHandle::new(CompiledCatalog::compile(catalog, 1).unwrap()),
        realtime: Arc::new(realtime),
        clients: ClientSettings {
            body_limit: 64 * 1024,
            pool_size: 16,
            max_in_flight: 64,
            circuit: Default::default(),
        },
        directory: Arc::new(SessionDirectory::default()),
        outbox: tributary::outbox::Outbox::disabled(),
        profiles_config: Default::default(),
        priority: Default::default(),
    };
    Harness {
        deps,
        store,
        _dir: dir,
    }
}

fn collect(ev: Arc<EventData>, deadline_ms: u64) -> CollectEvent {
    CollectEvent {
        tid: Tid::next(),
        event: ev,
        deadline: Instant::now() + Duration::from_millis(deadline_ms),
        now: 1_000,
        pending: None,
        new_visitor: false,
    }
}

#[actix::test]
async fn visitor_session_asks_providers_and_serialises_events() {
    let acme = TestProvider::start(Behavior::Segments(vec!["auto"], None)).await;
    let h = harness(&sample_catalog(&acme.url), 200);
    let visitor = VisitorId::generate();
    let session = VisitorSession::new(visitor, 0, h.deps.clone()).start();

    // Five events sent at once are applied one after another to the same profile.
    let sends: Vec<_> = (0..5)
        .map(|_| session.send(collect(event(&[("c_page", "cars")]), 200)))
        .collect();
    let results = futures_util::future::join_all(sends).await;
    for r in results {
        let r = r.unwrap();
        assert_eq!(r.segments, [101]);
        assert_eq!(r.providers, [("acme".to_string(), Outcome::Ok)]);
        assert!(r.errors.is_empty());
    }
    h.deps.profiles.flush().await.unwrap();
    let profile = h.store.load_profile(visitor).unwrap().unwrap();
    assert_eq!(profile.traits[&11].count(), 5);
    assert_eq!(
        profile.traits[&21].count(),
        1,
        "onboarded traits count once"
    );
    assert_eq!(acme.hits(), 5);
}

#[actix::test]
async fn visitor_session_answers_by_the_deadline_when_the_provider_hangs() {
    let hang = TestProvider::start(Behavior::Hang).await;
    let h = harness(&sample_catalog(&hang.url), 100);
    let session = VisitorSession::new(VisitorId::generate(), 0, h.deps.clone()).start();
    let started = Instant::now();
    let r = session
        .send(collect(event(&[("c_page", "cars")]), 100))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.providers, [("acme".to_string(), Outcome::Timeout)]);
    assert_eq!(r.realized, [11], "the event's own signals still qualify");
}

#[actix::test]
async fn an_unreadable_profile_is_reported_and_left_untouched() {
    let acme = TestProvider::start(Behavior::Status(204)).await;
    let h = harness(&sample_catalog(&acme.url), 200);
    let visitor = VisitorId::generate();
    h.store
        .put_raw_profile(visitor, &[0xff, 0xff, 0xff])
        .unwrap();

    let session = VisitorSession::new(visitor, 0, h.deps.clone()).start();
    let r = session
        .send(collect(event(&[("c_page", "cars")]), 200))
        .await
        .unwrap();
    assert_eq!(r.errors.iter().map(|e| e.code).collect::<Vec<_>>(), [200]);
    assert_eq!(r.realized, [11]);
    h.deps.profiles.flush().await.unwrap();
    assert!(
        h.store.load_profile(visitor).is_err(),
        "the unreadable record was not overwritten"
    );
}

/// A stored profile with `segments` cached for provider 1 (until `expires_at`) and, if given,
/// the visitor's id in data source 1001.
fn store_profile(h: &Harness, visitor: VisitorId, cached: Option<&str>, synced: Option<&str>) {
    let mut p = Profile::default();
    if let Some(segment) = cached {
        p.provider_cache.insert(
            1,
            tributary::core::profile::CachedAnswer {
                segments: vec![segment.into()],
                expires_at: 5_000,
            },
        );
    }
    if let Some(id) = synced {
        p.synced_ids.insert(1001, id.into());
    }
    h.store.save_profile(visitor, &p).unwrap();
}

/// A slow profile read does not eat the providers' budget: after `profile_read_wait_ms` the
/// providers that do not depend on the profile are called, while the read goes on.
#[actix::test]
async fn a_slow_profile_read_does_not_hold_up_the_providers() {
    let slowish = TestProvider::start(Behavior::Delay(
        250,
        Box::new(Behavior::Segments(vec!["auto"], None)),
    ))
    .await;
    let mut cat = sample_catalog(&slowish.url);
    cat.providers[0].timeout_ms = 350;
    let h = harness_reading_in(&cat, 400, Duration::from_millis(200));
    let visitor = VisitorId::generate();
    store_profile(&h, visitor, None, None);
    let session = VisitorSession::new(visitor, 0, h.deps.clone()).start();
    let r = session
        .send(collect(event(&[("c_page", "cars")]), 400))
        .await
        .unwrap();
    // Called only after the 200 ms read, it would have had 190 ms for its 250 ms answer.
    assert_eq!(r.providers, [("acme".to_string(), Outcome::Ok)]);
    assert_eq!(r.realized, [11, 21]);
    assert_eq!(slowish.hits(), 1);
}

/// A call made before the profile was read is used only if it is the call the profile calls
/// for: with a fresh cached answer the cache wins (and keeps its content); with another synced
/// id the provider is asked again with the right one.
#[actix::test]
async fn early_calls_that_the_profile_contradicts_are_discarded() {
    let acme = TestProvider::start(Behavior::Segments(vec!["other"], None)).await;
    let mut cat = sample_catalog(&acme.url);
    cat.providers[0].cache_ttl_secs = 600;
    let h = harness_reading_in(&cat, 400, Duration::from_millis(60));

    let cached = VisitorId::generate();
    store_profile(&h, cached, Some("auto"), None);
    let session = VisitorSession::new(cached, 0, h.deps.clone()).start();
    let r = session
        .send(collect(event(&[("c_page", "cars")]), 400))
        .await
        .unwrap();
    assert_eq!(r.providers, [("acme".to_string(), Outcome::Cached)]);
    assert_eq!(r.segments, [101], "from the cached answer");
    assert_eq!(acme.hits(), 1, "the early call was made");
    h.deps.profiles.flush().await.unwrap();
    let stored = h.store.load_profile(cached).unwrap().unwrap();
    assert_eq!(
        stored.provider_cache[&1].segments,
        ["auto"],
        "its answer did not replace the cached one"
    );

    let synced = VisitorId::generate();
    store_profile(&h, synced, None, Some("p-1"));
    let session = VisitorSession::new(synced, 0, h.deps.clone()).start();
    let r = session
        .send(collect(event(&[("c_page", "cars")]), 400))
        .await
        .unwrap();
    assert_eq!(r.providers, [("acme".to_string(), Outcome::Ok)]);
    let bodies = acme.bodies();
    assert_eq!(bodies.len(), 3);
    assert!(bodies[1]["user"].get("id").is_none(), "the early call");
    assert_eq!(
        bodies[2]["user"]["id"], "p-1",
        "the call the profile called for"
    );
    h.deps.profiles.flush().await.unwrap();
    let stored = h.store.load_profile(synced).unwrap().unwrap();
    assert_eq!(stored.provider_cache[&1].segments, ["other"]);
}
