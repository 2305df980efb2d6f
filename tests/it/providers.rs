//! Provider fan-out over real sockets (docs/provider-protocol.md): answers become onboarded
//! traits, and nothing a provider does delays or breaks the reply.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::faults::{Fault, FaultServer};
use crate::common::*;

/// How long a test waits for what it expects within milliseconds: only a loaded machine
/// gets near it.
const TEN_SECONDS: Duration = Duration::from_secs(10);

fn onboarded(traits: &[(u64, u32, &str)]) -> serde_json::Value {
    traits
        .iter()
        .map(|(sid, ds, seg)| {
            json!({"sid": sid, "name": format!("t{sid}"), "traitType": "ON_BOARDED_TRAIT",
                   "traitRule": format!("segment == \"{seg}\""), "dataSourceId": ds})
        })
        .collect()
}

#[actix_web::test]
async fn a_fast_providers_segment_becomes_a_segment_in_the_reply() {
    let acme = TestProvider::start(Behavior::Segments(vec!["auto-intender", "other"], None)).await;
    let cat = catalog(
        vec![provider(1, "acme", &acme.url, 1001, 150)],
        onboarded(&[(21, 1001, "auto-intender"), (22, 1001, "not-sent")]),
        json!([{"sid": 101, "name": "auto", "segmentRule": "21T", "dataSourceId": 1},
               {"sid": 102, "name": "never", "segmentRule": "22T", "dataSourceId": 1}]),
    );
    // The test client stands for the site's load balancer: its X-Forwarded-For counts.
    let server = TestServer::start_with(&cat, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let reply = get_with(
        &server.url(&format!(
            "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_page=cars&p_secret=s3cret"
        )),
        &[
            ("referer", "https://site.example/a"),
            ("user-agent", "UA/1"),
            ("x-forwarded-for", "203.0.113.77"),
        ],
    )
    .await;
    let body = reply.json();
    assert_eq!(body["traits"], json!([21]));
    assert_eq!(body["segments"], json!([101]));
    assert_eq!(body["providers"], json!({"acme": "ok"}));

    // What the provider received: the protocol body, no private signal, an anonymized IP.
    let sent = &acme.bodies()[0];
    assert_eq!(sent["id"], body["tid"]);
    assert_eq!(sent["user"]["ext"]["uuid"], VISITOR);
    assert_eq!(sent["signals"], json!({"c_page": "cars"}));
    assert_eq!(sent["site"]["page"], "https://site.example/a");
    assert_eq!(sent["device"], json!({"ua": "UA/1", "ip": "203.0.113.0"}));
    let tmax = sent["tmax"].as_u64().unwrap();
    assert!(tmax > 0 && tmax <= 150, "tmax {tmax}");
    let headers = &acme.headers()[0];
    assert_eq!(
        headers.get("x-tributary-tid").unwrap().to_str().unwrap(),
        body["tid"].as_str().unwrap()
    );
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert!(!serde_json::to_string(sent).unwrap().contains("s3cret"));
    server.stop().await;
}

#[actix_web::test]
async fn hanging_providers_do_not_delay_the_reply_past_the_deadline() {
    let hang1 = TestProvider::start(Behavior::Hang).await;
    let hang2 = TestProvider::start(Behavior::Hang).await;
    let fast = TestProvider::start(Behavior::Segments(vec!["x"], None)).await;
    let cat = catalog(
        vec![
            provider(1, "hang1", &hang1.url, 1001, 5000),
            provider(2, "hang2", &hang2.url, 1002, 5000),
            provider(3, "fast", &fast.url, 1003, 5000),
        ],
        onboarded(&[(31, 1003, "x")]),
        json!([{"sid": 103, "name": "fast", "segmentRule": "31T", "dataSourceId": 1}]),
    );
    let deadline_ms = 150;
    let server = TestServer::start_with(&cat, |c| c.realtime.deadline_ms = deadline_ms).await;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(&server.url("/event?d_rtbd=json&d_cts=2")).await;
        let elapsed = started.elapsed();
        let body = reply.json();
        assert_eq!(
            body["providers"],
            json!({"hang1": "timeout", "hang2": "timeout", "fast": "ok"})
        );
        assert_eq!(
            body["segments"],
            json!([103]),
            "the other provider's segments still arrive"
        );
        assert!(body.get("errors").is_none(), "{body}");
        // The providers hang for an hour; the answer comes at the deadline, not after them.
        // (A loose bound: this checks behaviour, not speed; see BENCHMARKS.md for latency.)
        assert!(
            elapsed < Duration::from_millis(deadline_ms + 400),
            "took {elapsed:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(deadline_ms / 2),
            "answered before waiting: {elapsed:?}"
        );
    }
    server.stop().await;
}

#[actix_web::test]
async fn failing_providers_yield_their_outcome_and_nothing_else() {
    let e500 = TestProvider::start(Behavior::Status(500)).await;
    let e404 = TestProvider::start(Behavior::Status(404)).await;
    let e302 = TestProvider::start(Behavior::Status(302)).await;
    let garbage = TestProvider::start(Behavior::Body("this is not json")).await;
    let wrong_shape = TestProvider::start(Behavior::Body(r#"{"user":{"data":"auto"}}"#)).await;
    let nodata = TestProvider::start(Behavior::Status(204)).await;
    let ok = TestProvider::start(Behavior::Segments(vec!["auto"], None)).await;
    // A closed port: bind, learn the address, stop.
    let closed = TestProvider::start(Behavior::Status(200)).await;
    closed.stop().await;

    // HTTPS to a plain-HTTP server: the TLS handshake fails (and the rustls path is exercised:
    // without a crypto provider awc would panic here, docs/architecture.md, "Dependency notes").
    let plain = TestProvider::start(Behavior::Segments(vec!["auto"], None)).await;
    let tls_to_plain = plain.url.replace("http://", "https://");

    let names = [
        "tls",
        "e500",
        "e404",
        "e302",
        "garbage",
        "wrong_shape",
        "nodata",
        "closed",
        "ok",
    ];
    let urls = [
        &tls_to_plain,
        &e500.url,
        &e404.url,
        &e302.url,
        &garbage.url,
        &wrong_shape.url,
        &nodata.url,
        &closed.url,
        &ok.url,
    ];
    let providers = names
        .iter()
        .zip(urls)
        .enumerate()
        .map(|(i, (name, url))| provider(i as u32 + 1, name, url, 1001 + i as u32, 150))
        .collect();
    // Every provider's data source has an onboarded trait that would match "auto".
    let traits: Vec<(u64, u32, &str)> = (0..9).map(|i| (21 + i as u64, 1001 + i, "auto")).collect();
    let cat = catalog(
        providers,
        onboarded(&traits),
        json!([{"sid": 101, "name": "any", "segmentRule": "21T OR 22T OR 23T OR 24T OR 25T OR 26T OR 27T OR 28T OR 29T", "dataSourceId": 1}]),
    );
    let server = TestServer::start(&cat).await;
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
    assert_eq!(
        body["providers"],
        json!({"e500": "error", "e404": "error", "e302": "error", "garbage": "error",
               "wrong_shape": "error", "nodata": "nodata", "closed": "error", "tls": "error", "ok": "ok"})
    );
    assert_eq!(
        body["traits"],
        json!([29]),
        "only the good provider's answer realizes a trait"
    );
    assert_eq!(
        plain.hits(),
        0,
        "no HTTP request went through the failed handshake"
    );
    assert_eq!(body["segments"], json!([101]));
    assert!(body.get("errors").is_none());
    server.stop().await;
}

#[actix_web::test]
async fn fresh_answers_are_reused_from_the_profile() {
    let acme = TestProvider::start(Behavior::Segments(vec!["auto"], Some(3600))).await;
    let cat = catalog(
        vec![provider(1, "acme", &acme.url, 1001, 150)],
        onboarded(&[(21, 1001, "auto")]),
        json!([{"sid": 101, "name": "auto", "segmentRule": "21T", "dataSourceId": 1}]),
    );
    let server = TestServer::start(&cat).await;
    let url = server.url(&format!("/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}"));
    let first = get(&url).await.json();
    assert_eq!(first["providers"], json!({"acme": "ok"}));
    let second = get(&url).await.json();
    assert_eq!(second["providers"], json!({"acme": "cached"}));
    assert_eq!(second["segments"], json!([101]));
    assert_eq!(acme.hits(), 1);
    server.stop().await;
}

#[actix_web::test]
async fn providers_are_skipped_when_the_budget_is_too_small() {
    let acme = TestProvider::start(Behavior::Segments(vec!["auto"], None)).await;
    let cat = catalog(
        vec![provider(1, "acme", &acme.url, 1001, 150)],
        json!([]),
        json!([]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.realtime.deadline_ms = 30;
        c.realtime.network_buffer_ms = 10;
        c.realtime.reply_reserve_ms = 10;
        c.realtime.min_provider_budget_ms = 15;
    })
    .await;
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
    assert_eq!(body["providers"], json!({"acme": "skipped"}));
    assert_eq!(acme.hits(), 0);
    server.stop().await;
}

#[actix_web::test]
async fn a_slow_provider_times_out_but_keeps_its_budget() {
    // Slower than the deadline allows, faster than its own timeout: a timeout for this event.
    let slow = TestProvider::start(Behavior::Delay(
        400,
        Box::new(Behavior::Segments(vec!["auto"], None)),
    ))
    .await;
    let cat = catalog(
        vec![provider(1, "slow", &slow.url, 1001, 1000)],
        onboarded(&[(21, 1001, "auto")]),
        json!([]),
    );
    let server = TestServer::start_with(&cat, |c| c.realtime.deadline_ms = 100).await;
    let started = Instant::now();
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "did not wait for the slow provider"
    );
    assert_eq!(body["providers"], json!({"slow": "timeout"}));
    assert_eq!(body["traits"], json!([]));
    // The provider was told the budget left for it, capped below the deadline.
    let tmax = slow.bodies()[0]["tmax"].as_u64().unwrap();
    assert!(tmax <= 90, "tmax {tmax}");
    server.stop().await;
}

#[actix_web::test]
async fn a_provider_slower_than_its_own_timeout_is_a_timeout() {
    // The provider's timeout (50 ms) ends the call before the event's deadline (200 ms): the
    // outcome is still "timeout", not "error", and the answer does not wait for the deadline.
    let hang = TestProvider::start(Behavior::Hang).await;
    let cat = catalog(
        vec![provider(1, "hang", &hang.url, 1001, 50)],
        json!([]),
        json!([]),
    );
    let server = TestServer::start_with(&cat, |c| c.realtime.deadline_ms = 200).await;
    for _ in 0..2 {
        let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
        assert_eq!(body["providers"], json!({"hang": "timeout"}));
    }
    server.stop().await;
}

#[actix_web::test]
async fn beyond_max_in_flight_events_are_shed_with_429_and_admitted_again_after() {
    let slow = TestProvider::start(Behavior::Delay(300, Box::new(Behavior::Status(204)))).await;
    let cat = catalog(
        vec![provider(1, "slow", &slow.url, 1001, 1000)],
        json!([]),
        json!([]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.realtime.deadline_ms = 400;
        c.server.max_in_flight = 1;
    })
    .await;
    let url = server.url("/event?d_rtbd=json&d_cts=2");
    let first = get(&url);
    // Once the provider has the first event's call, that event is in flight (for 300 ms).
    let second = async {
        wait_until("the first event's provider call", TEN_SECONDS, || {
            slow.hits() == 1
        })
        .await;
        get(&url).await
    };
    let (first, second) = futures_util::future::join(first, second).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["providers"], json!({"slow": "nodata"}));
    assert_eq!(second.status, 429);
    assert_eq!(second.header("retry-after").as_deref(), Some("1"));
    assert_eq!(second.json()["errors"][0]["code"], 0);
    // The first event is done: the next one is admitted.
    assert_eq!(get(&url).await.status, 200);
    let metrics = String::from_utf8(get(&server.url("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains(r#"tributary_events_shed_total{reason="in_flight"}"#),
        "{metrics}"
    );
    server.stop().await;
}

#[actix_web::test]
async fn a_hanging_providers_calls_are_capped_and_the_rest_skipped() {
    // The call outlives its event (the provider's timeout is 2 s, the deadline 150 ms), so it
    // still counts against the provider's in-flight cap when the next event comes.
    let hang = TestProvider::start(Behavior::Hang).await;
    let cat = catalog(
        vec![provider(1, "hang", &hang.url, 1001, 2000)],
        json!([]),
        json!([]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.server.workers = 1;
        c.realtime.provider_max_in_flight = 1;
    })
    .await;
    let url = server.url("/event?d_rtbd=json&d_cts=2");
    assert_eq!(
        get(&url).await.json()["providers"],
        json!({"hang": "timeout"})
    );
    assert_eq!(
        get(&url).await.json()["providers"],
        json!({"hang": "skipped"})
    );
    assert_eq!(hang.hits(), 1, "the second event did not call the provider");
    server.stop().await;
}

/// A provider that keeps failing is no longer called (`circuit_open`) while the others still
/// answer; after the cool-down one probe finds it healthy and calls resume.
#[actix_web::test]
async fn a_failing_provider_opens_its_circuit_and_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let failing = Arc::new(AtomicBool::new(true));
    let flaky = TestProvider::start(Behavior::FailWhile(
        failing.clone(),
        Box::new(Behavior::Segments(vec!["flaky-seg"], None)),
    ))
    .await;
    let acme = TestProvider::start(Behavior::Segments(vec!["auto-intender"], None)).await;
    let cat = catalog(
        vec![
            provider(1, "acme", &acme.url, 1001, 150),
            provider(2, "flaky", &flaky.url, 1002, 150),
        ],
        onboarded(&[(21, 1001, "auto-intender"), (22, 1002, "flaky-seg")]),
        json!([{"sid": 101, "name": "auto", "segmentRule": "21T", "dataSourceId": 1}]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.realtime.circuit_failures = 2;
        c.realtime.circuit_cooldown_ms = 300;
    })
    .await;
    let event = |i: u32| server.url(&format!("/event?d_rtbd=json&d_cts=2&c_n={i}"));

    let mut outcomes = Vec::new();
    for i in 0..12 {
        let body = get(&event(i)).await.json();
        assert_eq!(
            body["segments"],
            json!([101]),
            "acme's segment still arrives"
        );
        outcomes.push(body["providers"]["flaky"].as_str().unwrap().to_string());
    }
    // Each of the test server's two worker threads keeps its own circuit: at most two failed
    // calls each, then no more calls.
    assert!(flaky.hits() <= 4, "calls made: {}", flaky.hits());
    assert!(
        outcomes.iter().take(2).all(|o| o == "error"),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().rev().take(4).all(|o| o == "circuit_open"),
        "{outcomes:?}"
    );
    let metrics = String::from_utf8(get(&server.url("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains(
            r#"tributary_provider_circuit_transitions_total{provider="flaky",to="open"}"#
        ),
        "{metrics}"
    );

    // The provider recovers; after the cool-down a probe succeeds and calls resume.
    failing.store(false, Ordering::SeqCst);
    // Until the cool-down is over, calls are refused; then a probe finds the provider healthy.
    let mut n = 100;
    wait_for("a probe to find flaky healthy", TEN_SECONDS, || {
        n += 1;
        let url = event(n);
        async move {
            let body = get(&url).await.json();
            let outcome = body["providers"]["flaky"].as_str().unwrap_or_default();
            assert!(outcome == "circuit_open" || outcome == "ok", "{body}");
            outcome == "ok"
        }
    })
    .await;
    let mut outcomes = Vec::new();
    for i in 200..210 {
        let body = get(&event(i)).await.json();
        let outcome = body["providers"]["flaky"].as_str();
        outcomes.push(outcome.unwrap_or_else(|| panic!("{body}")).to_string());
    }
    assert!(
        outcomes.iter().rev().take(4).all(|o| o == "ok"),
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o == "error"), "{outcomes:?}");
    server.stop().await;
}

/// A provider with a `secret` gets `X-Tributary-Signature: sha256=<hex HMAC-SHA256(body)>`
/// over the exact bytes it received; one without gets no signature.
#[actix_web::test]
async fn requests_to_providers_with_a_secret_are_signed() {
    let signed = TestProvider::start(Behavior::Segments(vec!["a"], None)).await;
    let plain = TestProvider::start(Behavior::Segments(vec!["b"], None)).await;
    let mut with_secret = provider(1, "signed", &signed.url, 1001, 150);
    with_secret["secret"] = json!("s3cret-key");
    let cat = catalog(
        vec![with_secret, provider(2, "plain", &plain.url, 1002, 150)],
        onboarded(&[(21, 1001, "a"), (22, 1002, "b")]),
        json!([]),
    );
    let server = TestServer::start(&cat).await;
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2&c_page=x"))
        .await
        .json();
    assert_eq!(body["providers"], json!({"signed": "ok", "plain": "ok"}));

    let raw = &signed.raw_bodies()[0];
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-key");
    let expected: String = ring::hmac::sign(&key, raw)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let header = signed.headers()[0]
        .get("x-tributary-signature")
        .expect("signed")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(header, format!("sha256={expected}"));
    assert!(plain.headers()[0].get("x-tributary-signature").is_none());
    server.stop().await;
}

/// An answer that comes after the event was answered is not wasted: its onboarded trait is
/// realized and the answer cached, so the visitor's next event has the segment at once.
#[actix_web::test]
async fn late_answers_count_on_the_next_event() {
    let (slow, cat) = late_provider("slow").await;
    let server = TestServer::start(&cat).await;
    let hit = server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_page=x"
    ));

    let first = get(&hit).await.json();
    assert_eq!(first["providers"]["slow"], "timeout");
    assert_eq!(first["segments"], json!([]));

    // Wait until the session has merged the late answer into the profile.
    wait_for_metric(
        &server,
        r#"tributary_provider_late_answers_handled_total{provider="slow",result="merged"}"#,
        1.0,
        TEN_SECONDS,
    )
    .await;
    assert!(
        metrics(&server)
            .await
            .contains(r#"tributary_provider_late_answers_total{provider="slow"} 1"#),
        "the late answer was recorded"
    );
    let second = get(&hit).await.json();
    assert_eq!(second["providers"]["slow"], "cached", "{second}");
    assert_eq!(
        second["segments"],
        json!([101]),
        "21T realized from the late answer"
    );
    assert_eq!(
        slow.hits(),
        1,
        "the cached late answer spared a second call"
    );
    server.stop().await;
}

/// Faults below HTTP, all at once: a socket that reads the request and never answers, headers
/// followed by a body trickling one byte per 50 ms, and a 50 MB body (each also in the fault
/// matrix, `fault_matrix.rs`, one at a time). The event still answers by its deadline
/// with the healthy provider's segment; the huge body is refused at the size limit instead of
/// being read whole.
#[actix_web::test]
async fn socket_level_faults_do_not_hold_or_flood_the_event() {
    let silent = FaultServer::start(Fault::NoAnswer);
    let trickle = FaultServer::start(Fault::Trickle);
    let huge = FaultServer::start(Fault::HugeBody);
    let fast = TestProvider::start(Behavior::Segments(vec!["x"], None)).await;
    let cat = catalog(
        vec![
            provider(1, "silent", &silent.url, 1001, 150),
            provider(2, "trickle", &trickle.url, 1002, 150),
            provider(3, "huge", &huge.url, 1003, 150),
            provider(4, "fast", &fast.url, 1004, 150),
        ],
        onboarded(&[(41, 1004, "x")]),
        json!([{"sid": 104, "name": "fast", "segmentRule": "41T", "dataSourceId": 1}]),
    );
    let deadline_ms = 200;
    let server = TestServer::start_with(&cat, |c| {
        c.realtime.deadline_ms = deadline_ms;
        c.realtime.circuit_failures = 0;
    })
    .await;
    for i in 0..3 {
        let started = Instant::now();
        let body = get(&server.url(&format!("/event?d_rtbd=json&d_cts=2&c_i={i}")))
            .await
            .json();
        let elapsed = started.elapsed();
        assert_eq!(
            body["providers"],
            json!({"silent": "timeout", "trickle": "timeout", "huge": "error", "fast": "ok"}),
            "{body}"
        );
        assert_eq!(body["segments"], json!([104]));
        // Behaviour, not speed: a loose bound that fails only if a fault held the event.
        assert!(
            elapsed < Duration::from_millis(deadline_ms + 400),
            "took {elapsed:?}"
        );
    }
    // The 50 MB answers were cut off: Tributary read at most its body limit (64 KiB) of each
    // and closed the connection, so the provider could not write them whole.
    let written = huge.written();
    assert!(written < 3 * (50 << 20), "wrote {written} bytes");
    server.stop().await;
}

/// `askFor = "synced"`: the provider is asked only about visitors it has an id for (from an
/// ID sync), and gets that id in `user.id`; others are `skipped` without a call.
#[actix_web::test]
async fn synced_only_providers_are_asked_about_synced_visitors_only() {
    let synced = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let mut only_synced = provider(2, "synced", &synced.url, 1002, 150);
    only_synced["askFor"] = json!("synced");
    let cat = catalog(
        vec![only_synced],
        onboarded(&[(22, 1002, "s")]),
        json!([{"sid": 102, "name": "s", "segmentRule": "22T", "dataSourceId": 1}]),
    );
    let server = TestServer::start(&cat).await;

    // A visitor the provider knows as "prov-77" (as an ID sync would have recorded).
    let known = tributary::core::ids::VisitorId::parse(VISITOR).unwrap();
    let mut profile = tributary::core::profile::Profile::default();
    profile.synced_ids.insert(1002, "prov-77".into());
    server.running.profiles().save(known, &profile).unwrap();
    server.running.sync_store().await.unwrap();

    let anonymous = get(&server.url("/event?d_rtbd=json&d_cts=2&c_page=x"))
        .await
        .json();
    assert_eq!(anonymous["providers"], json!({"synced": "skipped"}));
    assert_eq!(synced.hits(), 0, "not called for a visitor it cannot know");

    let body = get(&server.url(&format!("/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}")))
        .await
        .json();
    assert_eq!(body["providers"], json!({"synced": "ok"}));
    assert_eq!(body["segments"], json!([102]));
    assert_eq!(synced.bodies()[0]["user"]["id"], "prov-77");
    server.stop().await;
}

/// A provider a little slower than its `timeoutMs`: each call is a `timeout`, but the call
/// runs on until the answer is read, so its connection goes back to the pool and the next
/// call reuses it instead of connecting again.
#[actix_web::test]
async fn a_timed_out_calls_connection_is_reused() {
    let p = TestProvider::start(Behavior::Delay(
        120,
        Box::new(Behavior::Segments(vec!["s"], None)),
    ))
    .await;
    let cat = catalog(
        vec![provider(1, "slow-but-kept", &p.url, 1001, 40)],
        onboarded(&[(21, 1001, "s")]),
        json!([]),
    );
    // Every call fails by timing out: without this the circuit would open after five.
    let server = TestServer::start_with(&cat, |c| c.realtime.circuit_failures = 0).await;
    for round in 1..=8 {
        let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
        assert_eq!(body["providers"], json!({"slow-but-kept": "timeout"}));
        // The timed-out call ends in the background once the answer is read.
        wait_for_metric(
            &server,
            r#"tributary_provider_drained_calls_total{provider="slow-but-kept",result="finished"}"#,
            f64::from(round),
            Duration::from_secs(5),
        )
        .await;
    }
    let text = metrics(&server).await;
    let series = r#"tributary_provider_connects_total{provider="slow-but-kept"}"#;
    let connects =
        metric_value(&text, series).unwrap_or_else(|| panic!("no connect count in\n{text}"));
    assert!(
        connects <= 2.0,
        "{connects} connections for 8 timed-out calls"
    );
    assert_eq!(p.hits(), 8);
    server.stop().await;
}

/// Provider connections are kept alive and reused: thirty calls open a connection or two (one
/// pool per worker thread), as `tributary_provider_connects_total` shows beside the calls.
#[actix_web::test]
async fn provider_connections_are_reused() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let cat = catalog(
        vec![provider(1, "reuse", &p.url, 1001, 150)],
        onboarded(&[(21, 1001, "s")]),
        json!([]),
    );
    let server = TestServer::start(&cat).await;
    for _ in 0..30 {
        let body = get(&server.url("/event?d_rtbd=json&d_cts=2")).await.json();
        assert_eq!(body["providers"], json!({"reuse": "ok"}));
    }
    let text = metrics(&server).await;
    let value = |series: &str| -> f64 {
        metric_value(&text, series).unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    let calls = value(r#"tributary_provider_calls_total{provider="reuse",outcome="ok"}"#);
    let connects = value(r#"tributary_provider_connects_total{provider="reuse"}"#);
    assert_eq!(calls, 30.0);
    assert!(connects <= 2.0, "{connects} connections for 30 calls");
    assert_eq!(p.hits(), 30);
    server.stop().await;
}
