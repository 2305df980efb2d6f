//! The actors driven directly, without HTTP: `SegmentEngine` with a real sled store behind its
//! store threads, `VisitorSession` with real provider servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use serde_json::json;
use tributary::actors::directory::SessionDirectory;
use tributary::actors::provider_client::ClientSettings;
use tributary::actors::segment_engine::{EvaluateProfile, LoadProfile, SegmentEngine};
use tributary::actors::visitor_session::{CollectEvent, EventData, SessionDeps, VisitorSession};
use tributary::config::RealtimeConfig;
use tributary::engine::{CatalogHandle, CompiledCatalog};
use tributary::ids::{Tid, VisitorId};
use tributary::profile::Profile;
use tributary::provider::Outcome;
use tributary::signals::Signals;
use tributary::store::ProfileService;
use tributary::store::{ProfileStore, SledStore};

use crate::common::*;

fn sample_catalog(provider_url: &str) -> tributary::catalog::Catalog {
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
    let profiles = ProfileService::start(profile_store, 2, std::time::Duration::from_millis(50));
    let engine = SegmentEngine::new(profiles.clone()).start();
    let compiled =
        Arc::new(CompiledCatalog::compile(&sample_catalog("http://127.0.0.1:9/"), 1).unwrap());
    let visitor = VisitorId::generate();

    assert!(engine
        .send(LoadProfile { visitor })
        .await
        .unwrap()
        .unwrap()
        .is_none());
    let done = engine
        .send(EvaluateProfile {
            tid: Tid::next(),
            visitor,
            profile: Profile::default(),
            persist: true,
            catalog: compiled.clone(),
            event: event(&[("c_page", "cars")]),
            provider_segments: vec![(1001, vec!["auto".into()])],
            now: 1_000,
            answers_only: false,
        })
        .await
        .unwrap();
    assert!(done.saved.is_ok());
    assert_eq!(done.evaluation.realized, [11, 21]);
    assert_eq!(done.evaluation.segments, [101]);
    let stored = engine
        .send(LoadProfile { visitor })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stored, done.profile);
    assert_eq!(stored.segments, [101]);

    // persist = false (the stored profile was unreadable) evaluates without writing.
    let other = VisitorId::generate();
    let done = engine
        .send(EvaluateProfile {
            tid: Tid::next(),
            visitor: other,
            profile: Profile::default(),
            persist: false,
            catalog: compiled,
            event: event(&[("c_page", "cars")]),
            provider_segments: vec![],
            now: 1_000,
            answers_only: false,
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

fn harness(catalog: &tributary::catalog::Catalog, deadline_ms: u64) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), 8 << 20, 100).unwrap());
    let profile_store: Arc<dyn ProfileStore> = store.clone();
    let profiles = ProfileService::start(profile_store, 1, std::time::Duration::from_millis(50));
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
