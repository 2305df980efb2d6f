//! Visitor sessions over HTTP: concurrency of one visitor, idle sessions.

use std::time::Duration;

use serde_json::json;
use tributary::core::ids::VisitorId;

use crate::common::*;

fn counting_catalog() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([{"sid": 11, "name": "hit", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_hit == 1", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "hit", "segmentRule": "11T", "dataSourceId": 1}]),
    )
}

#[actix_web::test]
async fn concurrent_events_of_one_visitor_all_count() {
    let server = TestServer::start(&counting_catalog()).await;
    let url = server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_hit=1"
    ));
    let requests = (0..20).map(|_| get(&url));
    let replies = futures_util::future::join_all(requests).await;
    for reply in &replies {
        assert_eq!(reply.json()["segments"], json!([101]));
    }
    let visitor = VisitorId::parse(VISITOR).unwrap();
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(visitor);
    assert_eq!(
        profile.traits[&11].count(),
        20,
        "every concurrent event counted once"
    );
    server.stop().await;
}

#[actix_web::test]
async fn many_visitors_at_once_each_get_their_own_profile() {
    let server = TestServer::start(&counting_catalog()).await;
    let ids: Vec<String> = (0..50)
        .map(|i| format!("{:038}", 10u128.pow(37) + i))
        .collect();
    let urls: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            let url = server.url(&format!("/event?d_rtbd=json&d_uuid={id}&c_hit=1"));
            [url.clone(), url]
        })
        .collect();
    futures_util::future::join_all(urls.iter().map(|u| get(u))).await;
    server.running.sync_store().await.unwrap();
    for id in &ids {
        let profile = server.stored_profile(VisitorId::parse(id).unwrap());
        assert_eq!(profile.traits[&11].count(), 2, "visitor {id}");
    }
    server.stop().await;
}

#[actix_web::test]
async fn idle_sessions_stop_and_a_returning_visitor_is_served_from_the_store() {
    let server =
        TestServer::start_with(&counting_catalog(), |c| c.realtime.session_idle_secs = 1).await;
    let url = server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_hit=1"
    ));
    get(&url).await;
    assert_eq!(server.running.sessions().len(), 1);
    // Idle for a second, the session stops at the next sweep (every 200 ms).
    wait_until("the idle session to stop", Duration::from_secs(10), || {
        server.running.sessions().is_empty()
    })
    .await;
    let body = get(&server.url(&format!("/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}")))
        .await
        .json();
    assert_eq!(
        body["segments"],
        json!([101]),
        "the profile was saved before the session stopped"
    );
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(VisitorId::parse(VISITOR).unwrap());
    assert_eq!(profile.traits[&11].count(), 1);
    server.stop().await;
}

#[actix_web::test]
async fn sessions_beyond_the_limit_stop_and_lose_nothing() {
    let server = TestServer::start_with(&counting_catalog(), |c| c.realtime.max_sessions = 5).await;
    let ids: Vec<String> = (0..30)
        .map(|i| format!("{:038}", 10u128.pow(37) + 1000 + i))
        .collect();
    for round in 0..3 {
        let urls: Vec<String> = ids
            .iter()
            .map(|id| server.url(&format!("/event?d_rtbd=json&d_uuid={id}&c_hit=1")))
            .collect();
        futures_util::future::join_all(urls.iter().map(|u| get(u))).await;
        // The sweep (every 200 ms) brings the count back under the limit.
        wait_until(
            &format!("round {round}: at most 5 sessions"),
            Duration::from_secs(10),
            || {
                let active = server.running.sessions().len();
                if active <= 5 {
                    Ok(())
                } else {
                    Err(format!("{active} sessions"))
                }
            },
        )
        .await;
    }
    server.running.sync_store().await.unwrap();
    for id in &ids {
        let profile = server.stored_profile(VisitorId::parse(id).unwrap());
        assert_eq!(
            profile.traits[&11].count(),
            3,
            "visitor {id}: every event counted across session restarts"
        );
    }
    server.stop().await;
}

/// A session keeps its visitor's profile in memory between events: a returning visitor costs
/// no store read. (Shown by damaging the stored record: a session that re-read it would
/// report error 200.)
#[actix_web::test]
async fn an_active_visitors_profile_stays_in_memory() {
    let server = TestServer::start(&counting_catalog()).await;
    let url = server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_hit=1"
    ));
    get(&url).await;
    server.running.sync_store().await.unwrap();
    let visitor = VisitorId::parse(VISITOR).unwrap();
    server
        .running
        .store()
        .put_profile_bytes(&[(visitor, &[0xde, 0xad][..])])
        .unwrap();
    for _ in 0..3 {
        let body = get(&url).await.json();
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(body["segments"], json!([101]));
    }
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(visitor);
    assert_eq!(
        profile.traits[&11].count(),
        4,
        "the warm profile was written back whole"
    );
    server.stop().await;
}
