//! Cookie and URL destinations in `/event` answers over real HTTP: `stuff` always, `dests`
//! with `d_dst=1`, from the visitor's segments and the destinations' mappings.

use std::time::Duration;

use serde_json::json;

use crate::common::faults::{Fault, FaultServer};
use crate::common::*;

#[actix_web::test]
async fn cookie_and_url_destinations_in_the_answer() {
    let mut cat = catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
            {"sid": 12, "name": "news", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == news", "dataSourceId": 1}
        ]),
        json!([
            {"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1},
            {"sid": 102, "name": "news", "segmentRule": "12T", "dataSourceId": 1}
        ]),
    );
    cat.destinations = serde_json::from_value(json!([
        {"destinationId": 1, "name": "gpt", "destinationType": "ADS", "cookieName": "aamseg",
         "formatType": "single_key", "singleKey": "segs", "ttl": 14, "cnameDomain": ".site.example",
         "mappings": [{"sid": 101, "valueAlias": "cars"}, {"sid": 102, "valueAlias": "news"}]},
        {"destinationId": 2, "name": "pixel", "destinationType": "PUSH",
         "urlFormatString": "http://px.example/s?seg=%ALIAS%&uid=%DID%&dp=%DPID_1%",
         "secureUrlFormatString": "https://px.example/s?seg=%ALIAS%&uid=%DID%",
         "mappings": [{"sid": 101, "traitAlias": "auto"}]},
        {"destinationId": 3, "name": "off", "destinationType": "ADS", "cookieName": "off", "status": "INACTIVE",
         "mappings": [{"sid": 101}]}
    ]))
    .unwrap();
    let server = TestServer::start(&cat).await;

    let body = get(&server.url(&format!(
        "/event?d_rtbd=json&c_page=cars&d_dst=1&d_uuid={VISITOR}&d_cid=1%01crm-9"
    )))
    .await
    .json();
    assert_eq!(
        body["stuff"],
        json!([{"cn": "aamseg", "cv": "segs=cars", "ttl": 14, "dmn": ".site.example"}])
    );
    assert_eq!(
        body["dests"],
        json!([{"c": format!("http://px.example/s?seg=auto&uid={VISITOR}&dp=crm-9"),
                "e": format!("https://px.example/s?seg=auto&uid={VISITOR}"), "y": "img"}])
    );
    // Next event: news too; the cookie carries both segments; no d_dst, no dests.
    let body = get(&server.url(&format!("/event?d_rtbd=json&c_page=news&d_uuid={VISITOR}")))
        .await
        .json();
    assert_eq!(body["stuff"][0]["cv"], "segs=cars,news");
    assert!(body.get("dests").is_none());
    server.stop().await;
}

/// What the endpoint accepted: the parsed body, the raw body, the signature header.
type Accepted = std::sync::Arc<std::sync::Mutex<Vec<(serde_json::Value, Vec<u8>, String)>>>;

/// An S2S endpoint on loopback: answers 500 while `failing` is set, else 200, and keeps what
/// it accepted (body and signature header) and how many requests it got.
struct S2sReceiver {
    url: String,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: Accepted,
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl S2sReceiver {
    async fn start() -> S2sReceiver {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let failing = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (f, a, n) = (failing.clone(), accepted.clone(), attempts.clone());
        let server = actix_web::HttpServer::new(move || {
            let (f, a, n) = (f.clone(), a.clone(), n.clone());
            actix_web::App::new().default_service(actix_web::web::to(
                move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                    let (f, a, n) = (f.clone(), a.clone(), n.clone());
                    async move {
                        n.fetch_add(1, Ordering::SeqCst);
                        if f.load(Ordering::SeqCst) {
                            return actix_web::HttpResponse::InternalServerError().finish();
                        }
                        let signature = req
                            .headers()
                            .get("x-tributary-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let json = serde_json::from_slice(&body).expect("JSON body");
                        a.lock().unwrap().push((json, body.to_vec(), signature));
                        actix_web::HttpResponse::Ok().finish()
                    }
                },
            ))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}/aam", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        S2sReceiver {
            url,
            failing,
            accepted,
            attempts,
            handle,
        }
    }

    /// Every accepted user entry: (uuid, [(segment, status)]), in the order received.
    fn users(&self) -> Vec<(String, Vec<(String, String)>)> {
        let mut out = Vec::new();
        for (body, _, _) in self.accepted.lock().unwrap().iter() {
            let users = body["Users"].as_array().unwrap();
            assert_eq!(body["User_count"], users.len().to_string());
            assert_eq!(body["AAM_Destination_Id"], "5");
            for u in users {
                let segments = u["Segments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        (
                            s["Segment_ID"].as_str().unwrap().to_string(),
                            s["Status"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                out.push((u["AAM_UUID"].as_str().unwrap().to_string(), segments));
            }
        }
        out
    }
}

/// Destination 5's outbox status (`GET /v1/destinations/5/outbox`) once `shows` holds.
async fn outbox_status(
    admin: &Admin,
    what: &str,
    shows: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let shows = &shows;
    wait_for(
        &format!("the outbox status to show {what}"),
        DELIVERY,
        || async move {
            let s = admin
                .call("GET", "/v1/destinations/5/outbox", None)
                .await
                .json();
            if shows(&s) {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await
}

/// How long a test waits for the outbox: its retries here start at 20 ms and stay under
/// 100 ms, so this only bounds a loaded machine.
const DELIVERY: Duration = Duration::from_secs(20);

/// S2S delivery: membership changes (and an opt-out) are queued while the endpoint fails,
/// retried, kept in the store across a restart of Tributary, and all delivered — in order,
/// batched, signed — once the endpoint is back.
#[actix_web::test]
async fn s2s_destination_receives_every_change_after_failures_and_a_restart() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tributary::store::OutboxStore;

    let receiver = S2sReceiver::start().await;
    let mut cat = catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
            {"sid": 12, "name": "bikes", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == bikes", "dataSourceId": 1},
            {"sid": 13, "name": "news", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == news", "dataSourceId": 1}
        ]),
        json!([
            {"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1},
            {"sid": 102, "name": "bikes", "segmentRule": "12T", "dataSourceId": 1},
            {"sid": 103, "name": "news", "segmentRule": "13T", "dataSourceId": 1}
        ]),
    );
    cat.destinations = serde_json::from_value(json!([
        {"destinationId": 5, "name": "partner", "destinationType": "S2S", "url": receiver.url,
         "secret": "s2s-secret", "batchSize": 2,
         "mappings": [{"sid": 101, "traitAlias": "autos"}, {"sid": 102}]}
    ]))
    .unwrap();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &cat);
    config.s2s.retry_initial_ms = 20;
    config.s2s.retry_max_ms = 100;
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    const A: &str = "11111111111111111111111111111111111111";
    const B: &str = "22222222222222222222222222222222222222";
    const C: &str = "33333333333333333333333333333333333333";
    for (visitor, page) in [
        (A, "cars"),  // A enters 101
        (B, "bikes"), // B enters 102
        (A, "cars"),  // no change
        (A, "news"),  // 103 is not mapped: no change
        (A, "bikes"), // A: 101 and 102
        (C, "cars"),  // C enters 101
    ] {
        let reply = get(&server.url(&format!(
            "/event?d_rtbd=json&c_page={page}&d_uuid={visitor}"
        )))
        .await;
        assert_eq!(reply.status, 200);
    }
    get(&server.url(&format!("/demoptout.jpg?d_uuid={C}"))).await; // C leaves 101
    wait_until("retries", DELIVERY, || {
        receiver.attempts.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(receiver.users().is_empty());
    // The admin API (and the console) see the failing run and its errors.
    let admin = Admin::of(&server);
    let status = outbox_status(&admin, "the waiting changes", |s| {
        s["waiting"] == 5 && s["failuresInARow"].as_u64() >= Some(3)
    })
    .await;
    assert!(
        status["lastErrors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("500")),
        "{status}"
    );
    assert_eq!(status["lastDeliveredAt"], serde_json::Value::Null);
    let unknown = admin.call("GET", "/v1/destinations/99/outbox", None).await;
    assert_eq!(unknown.status, 404);
    server.stop().await;

    let waiting = {
        let store = open_stopped_store(dir.path()).await;
        store.outbox_all().unwrap().len()
    };
    assert_eq!(waiting, 5, "every change is in the store's outbox");

    receiver.failing.store(false, Ordering::SeqCst);
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    wait_until("deliveries after the restart", DELIVERY, || {
        receiver.users().len() >= 5
    })
    .await;
    let admin = Admin::of(&server);
    let status = outbox_status(&admin, "the deliveries", |s| {
        s["waiting"] == 0 && s["lastDeliveredAt"].is_i64()
    })
    .await;
    assert_eq!(status["failuresInARow"], 0, "{status}");
    let s = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        receiver.users(),
        vec![
            (A.to_string(), s(&[("101", "1")])),
            (B.to_string(), s(&[("102", "1")])),
            (A.to_string(), s(&[("101", "1"), ("102", "1")])),
            (C.to_string(), s(&[("101", "1")])),
            (C.to_string(), s(&[("101", "0")])),
        ]
    );
    {
        let accepted = receiver.accepted.lock().unwrap();
        assert_eq!(accepted.len(), 3, "batches of at most 2 users");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s2s-secret");
        for (body, raw, signature) in accepted.iter() {
            assert_eq!(
                signature,
                &tributary::core::signing::signature(&key, raw),
                "{body}"
            );
            assert_eq!(body["Users"][0]["AAM_Regions"], json!(["7"]));
        }
        assert_eq!(accepted[0].0["Users"][0]["Segments"][0]["Alias"], "autos");
    }

    // Once delivered, nothing is left; a change now goes out at once.
    get(&server.url(&format!("/event?d_rtbd=json&c_page=cars&d_uuid={B}"))).await;
    wait_until("a live delivery", DELIVERY, || receiver.users().len() >= 6).await;
    assert_eq!(
        receiver.users()[5],
        (B.to_string(), s(&[("101", "1"), ("102", "1")]))
    );
    // A visitor erased by the retention sweep leaves its segments too.
    let d =
        tributary::core::ids::VisitorId::parse("44444444444444444444444444444444444444").unwrap();
    let old = tributary::core::profile::Profile {
        segments: vec![102, 103],
        first_seen: 1_000_000_000,
        last_seen: 1_000_000_000,
        ..Default::default()
    };
    {
        server.running.store().save_profile(d, &old).unwrap();
    }
    let report = server
        .running
        .sweep_retention(tributary::core::clock::unix_now())
        .await
        .unwrap();
    assert_eq!(report.purged, 1, "{report:?}");
    wait_until("the sweep's delivery", DELIVERY, || {
        receiver.users().len() >= 7
    })
    .await;
    assert_eq!(receiver.users()[6], (d.to_string(), s(&[("102", "0")])));
    wait_until("an empty outbox", DELIVERY, || {
        server.running.store().outbox_all().unwrap().is_empty()
    })
    .await;
    server.stop().await;
    receiver.handle.stop(true).await;
}

/// A destination that stays down keeps at most `max_waiting` deliveries, the newest.
#[actix_web::test]
async fn s2s_outbox_keeps_the_newest_deliveries_within_its_cap() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tributary::store::OutboxStore;

    let receiver = S2sReceiver::start().await;
    let mut cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    cat.destinations = serde_json::from_value(json!([
        {"destinationId": 906, "name": "partner", "destinationType": "S2S", "url": receiver.url,
         "mappings": [{"sid": 101}]}
    ]))
    .unwrap();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &cat);
    // After the first failure, no attempt for a minute: the queue only grows.
    config.s2s.retry_initial_ms = 60_000;
    config.s2s.retry_max_ms = 60_000;
    config.s2s.max_waiting = 2;
    let server = TestServer::start_config(config, dir.clone()).await;
    let visitor = |n: u8| format!("{}", n).repeat(38);
    get(&server.url(&format!("/event?c_page=cars&d_uuid={}", visitor(1)))).await;
    // Until the outbox has handled the failure and waits out its minute: events queued while
    // the POST is still out are not trimmed (its deliveries are removed by position).
    wait_for_metric(
        &server,
        r#"tributary_s2s_requests_total{destination="906",result="error"}"#,
        1.0,
        DELIVERY,
    )
    .await;
    assert_eq!(
        receiver.attempts.load(Ordering::SeqCst),
        1,
        "a failed attempt"
    );
    for n in 2..=5 {
        get(&server.url(&format!("/event?c_page=cars&d_uuid={}", visitor(n)))).await;
    }
    server.stop().await;
    let waiting: Vec<String> = {
        let store = open_stopped_store(dir.path()).await;
        store
            .outbox_all()
            .unwrap()
            .into_iter()
            .map(|(_, d)| d.visitor.to_string())
            .collect()
    };
    assert_eq!(waiting, [visitor(4), visitor(5)]);
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 1);
    receiver.handle.stop(true).await;
}

/// `[s2s] timeout_ms` covers the whole exchange: a destination that sends its headers and
/// then trickles the body fails the POST when the time is up, so the delivery is retried
/// instead of staying in flight, and arrives once the destination behaves.
#[actix_web::test]
async fn s2s_destination_that_trickles_its_answer_is_timed_out_and_retried() {
    use std::sync::Arc;

    let receiver = FaultServer::start(Fault::Trickle);
    let mut cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    cat.destinations = serde_json::from_value(json!([
        // An id of its own: the metrics below are shared by every server of the process.
        {"destinationId": 15, "name": "partner", "destinationType": "S2S", "url": receiver.url,
         "mappings": [{"sid": 101}]}
    ]))
    .unwrap();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &cat);
    // The trickle would take 50 s to finish; the timeout is far shorter than the wait below.
    config.s2s.timeout_ms = 200;
    config.s2s.retry_initial_ms = 20;
    config.s2s.retry_max_ms = 100;
    let server = TestServer::start_config(config, dir.clone()).await;
    const A: &str = "11111111111111111111111111111111111111";
    const B: &str = "22222222222222222222222222222222222222";
    for visitor in [A, B] {
        let reply = get(&server.url(&format!("/event?c_page=cars&d_uuid={visitor}"))).await;
        assert_eq!(reply.status, 200);
    }
    wait_until("a second attempt after a timed-out one", DELIVERY, || {
        receiver.requests() >= 2
    })
    .await;
    assert!(receiver.s2s_uuids().is_empty());
    let metrics = String::from_utf8(get(&server.url("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains(r#"tributary_s2s_requests_total{destination="15",result="error"}"#),
        "a timed-out POST counts as failed: {metrics}"
    );

    receiver.recover();
    wait_until(
        "the deliveries once the destination answers",
        DELIVERY,
        || receiver.s2s_uuids().len() >= 2,
    )
    .await;
    assert_eq!(receiver.s2s_uuids(), [A, B]);
    server.stop().await;
}
