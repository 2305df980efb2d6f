//! Privacy over real HTTP: opt-out (`/demoptout.jpg`) by cookie and by `d_uuid`, what an
//! opted-out visitor's later calls do (nothing), and that the choice survives a restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary::core::ids::VisitorId;

use crate::common::*;

const OTHER: &str = "98765432109876543210987654321098765432";

#[actix_web::test]
async fn opting_out_erases_the_visitor_and_refuses_everything_after() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], Some(600))).await;
    let cat = catalog(
        vec![provider(1, "acme", &p.url, 1001, 150)],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([]),
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(dir.path(), &cat);
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let cookie = format!("demdex={VISITOR}");
    let with_cookie = [("cookie", cookie.as_str())];

    get_with(
        &server.url("/event?c_page=cars&d_cid=1%01crm-1"),
        &with_cookie,
    )
    .await;
    get(&server.url(&format!("/event?c_page=cars&d_uuid={OTHER}"))).await;
    server.running.sync_store().await.unwrap();
    let visitor = VisitorId::parse(VISITOR).unwrap();
    let other = VisitorId::parse(OTHER).unwrap();
    assert!(server
        .running
        .store()
        .load_profile(visitor)
        .unwrap()
        .is_some());
    let hits = p.hits();

    // By cookie.
    let reply = get_with(&server.url("/demoptout.jpg"), &with_cookie).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type").as_deref(), Some("image/gif"));
    assert_eq!(reply.visitor_cookie().as_deref(), Some("NOTARGET"));
    let set = reply.header("set-cookie").unwrap();
    assert!(set.contains("Max-Age=315360000"), "ten years: {set}");
    // By d_uuid (server to server, no cookie).
    let reply = get(&server.url(&format!("/demoptout?d_uuid={OTHER}"))).await;
    assert_eq!(reply.visitor_cookie().as_deref(), Some("NOTARGET"));

    server
        .assert_forgotten(&[visitor, other], &[(1, "crm-1")])
        .await;

    // Whatever identifies them, their calls read and write nothing, call no provider and get
    // no id: error 171.
    for call in [
        format!("/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={VISITOR}"),
        format!("/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={OTHER}"),
    ] {
        let reply = get(&server.url(&call)).await;
        let body = reply.json();
        assert_eq!(body["errors"][0]["code"], 171, "{call}: {body}");
        assert!(
            body.get("uuid").is_none() && body.get("segments").is_none(),
            "{body}"
        );
        assert_eq!(reply.visitor_cookie(), None);
    }
    let ibs = get(&server.url(&format!("/ibs:dpid=1&dpuuid=z&d_uuid={OTHER}"))).await;
    assert_eq!(ibs.header("x-error").as_deref(), Some("171"));
    assert_eq!(p.hits(), hits, "no provider was asked");
    server
        .assert_forgotten(&[visitor, other], &[(1, "z")])
        .await;

    // A browser without an id is marked too, so it never gets one.
    let anonymous = get(&server.url("/demoptout.jpg")).await;
    assert_eq!(anonymous.visitor_cookie().as_deref(), Some("NOTARGET"));
    server.stop().await;

    // The choice is durable.
    let server = TestServer::start_config(config, dir).await;
    let body = get(&server.url(&format!("/event?d_rtbd=json&d_uuid={OTHER}")))
        .await
        .json();
    assert_eq!(body["errors"][0]["code"], 171);
    server.stop().await;
}

/// `d_coppa=1`: the event's own signals qualify, but no id is read or set, no profile is read
/// or written, no provider is asked. The IP is truncated before rules, logs or providers see it.
#[actix_web::test]
async fn child_directed_calls_are_stateless_and_ips_are_truncated() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let cat = catalog(
        vec![provider(1, "acme", &p.url, 1001, 150)],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
            {"sid": 12, "name": "full ip", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_ip == \"203.0.113.77\"", "dataSourceId": 1},
            {"sid": 13, "name": "net", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_ip == \"203.0.113.0\"", "dataSourceId": 1}
        ]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    // The test client stands for the site's load balancer: its X-Forwarded-For counts.
    let server = TestServer::start_with(&cat, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let cookie = format!("demdex={VISITOR}");
    for coppa in ["d_coppa=1", "d_coppa=true"] {
        let reply = get_with(
            &server.url(&format!(
                "/event?d_rtbd=json&d_cts=2&c_page=cars&{coppa}&d_uuid={OTHER}&d_cid=1%01k"
            )),
            &[("cookie", cookie.as_str())],
        )
        .await;
        let body = reply.json();
        assert_eq!(body["segments"], json!([101]), "{body}");
        assert_eq!(body["providers"], json!({"acme": "skipped"}));
        assert!(body.get("uuid").is_none(), "{body}");
        assert_eq!(reply.visitor_cookie(), None, "no cookie set");
    }
    let ibs = get_with(
        &server.url("/ibs:dpid=1&dpuuid=k2&d_coppa=1"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!((ibs.status, ibs.visitor_cookie()), (200, None));
    assert_eq!(p.hits(), 0);
    server.running.sync_store().await.unwrap();
    assert!(server.running.store().get_link(1, "k2").unwrap().is_none());
    assert_eq!(
        server.running.store().count_profiles().unwrap(),
        0,
        "nothing stored"
    );
    assert!(server.running.store().get_link(1, "k").unwrap().is_none());

    let body = get_with(
        &server.url("/event?d_rtbd=json&d_cts=2"),
        &[("x-forwarded-for", "203.0.113.77")],
    )
    .await
    .json();
    assert_eq!(
        body["traits"],
        json!([13]),
        "rules see the truncated IP only: {body}"
    );
    assert_eq!(p.bodies()[0]["device"]["ip"], "203.0.113.0");
    server.stop().await;
}

/// Retention, with a clock of the test's choosing: profiles unseen for `profile_ttl_days` are
/// erased with their ID-sync mappings, expired realizations are dropped from the others, and
/// the rest is left alone.
#[actix_web::test]
async fn the_retention_sweep_purges_unseen_profiles_and_expired_realizations() {
    use tributary::core::profile::{day_of, Profile, Realization, SECS_PER_DAY};
    use tributary::store::IdLink;
    let cat = catalog(
        vec![],
        json!([
            {"sid": 11, "name": "one day", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1, "ttl": 1},
            {"sid": 12, "name": "forever", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == news", "dataSourceId": 1, "ttl": 0}
        ]),
        json!([]),
    );
    let server = TestServer::start(&cat).await;
    let store = server.running.store();
    let t0: i64 = 1_900_000_000;
    let at = |days_ago: i64| t0 - days_ago * SECS_PER_DAY;
    let profile = |last_seen: i64, traits: &[(u64, i64)]| {
        let mut p = Profile {
            first_seen: last_seen,
            last_seen,
            ..Default::default()
        };
        for (sid, when) in traits {
            p.traits.insert(
                *sid,
                Realization {
                    first: *when,
                    last: *when,
                    days: vec![(day_of(*when), 1)],
                },
            );
        }
        p
    };
    let (gone, trimmed, kept) = (
        VisitorId::parse(VISITOR).unwrap(),
        VisitorId::parse(OTHER).unwrap(),
        VisitorId::parse("55555555555555555555555555555555555555").unwrap(),
    );
    let mut old = profile(at(130), &[(12, at(130))]);
    old.synced_ids.insert(1, "b".into());
    store.save_profile(gone, &old).unwrap();
    store
        .put_links(&[(
            1,
            "b",
            IdLink {
                visitor: gone,
                at: at(130),
            },
        )])
        .unwrap();
    store
        .save_profile(trimmed, &profile(at(10), &[(11, at(10)), (12, at(10))]))
        .unwrap();
    store.save_profile(kept, &profile(t0, &[(11, t0)])).unwrap();

    let report = server.running.sweep_retention(t0).await.unwrap();
    assert_eq!(
        (report.scanned, report.purged, report.trimmed),
        (3, 1, 1),
        "{report:?}"
    );
    assert!(store.load_profile(gone).unwrap().is_none());
    assert!(
        store.get_link(1, "b").unwrap().is_none(),
        "its mappings go too"
    );
    let t = store.load_profile(trimmed).unwrap().unwrap();
    assert_eq!(
        t.traits.keys().copied().collect::<Vec<_>>(),
        [12],
        "the one-day trait expired"
    );
    assert_eq!(
        store.load_profile(kept).unwrap().unwrap().traits[&11].count(),
        1
    );

    // A second sweep finds nothing more to do.
    let again = server.running.sweep_retention(t0).await.unwrap();
    assert_eq!((again.scanned, again.purged, again.trimmed), (2, 0, 0));
    server.stop().await;
}

/// A provider answer that arrives after its event was answered — and after the visitor was
/// erased — does not bring the profile back.
#[actix_web::test]
async fn late_answers_do_not_survive_an_erasure() {
    let slow = TestProvider::start(Behavior::Delay(
        800,
        Box::new(Behavior::Segments(vec!["s"], Some(3600))),
    ))
    .await;
    let cat = catalog(
        vec![provider(1, "lateerase", &slow.url, 1001, 2000)],
        json!([{"sid": 21, "name": "s", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == s", "dataSourceId": 1001}]),
        json!([]),
    );
    let server = TestServer::start(&cat).await;
    let first = get(&server.url(&format!("/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}")))
        .await
        .json();
    assert_eq!(first["providers"]["lateerase"], "timeout");
    let erase = client()
        .delete(format!(
            "http://{}/v1/profiles/{VISITOR}",
            server.running.admin_addr()
        ))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(erase.status().as_u16(), 204);

    // Wait until the session has handled the late answer and dropped it for the erasure (a
    // session without that guard merges it instead, and this wait fails); the absent profile
    // then shows that nothing else brought it back.
    wait_for_metric(
        &server,
        r#"tributary_provider_late_answers_handled_total{provider="lateerase",result="erased"}"#,
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        metrics(&server)
            .await
            .contains(r#"tributary_provider_late_answers_total{provider="lateerase"} 1"#),
        "the late answer arrived"
    );
    server.running.sync_store().await.unwrap();
    let visitor = VisitorId::parse(VISITOR).unwrap();
    assert!(
        server
            .running
            .store()
            .load_profile(visitor)
            .unwrap()
            .is_none(),
        "the erased profile was not rebuilt from the late answer"
    );
    server.stop().await;
}

/// TCF v2 over HTTP, with TC strings encoded by the test: with consent the call runs and each
/// provider is asked per its vendor's consent; without it (missing, refused, malformed,
/// oversized) nothing is read, written, set or asked, and the answer is 315.
#[actix_web::test]
async fn tcf_consent_gates_everything_and_each_vendor() {
    use tributary::core::consent::TcStringBuilder;

    let plain = TestProvider::start(Behavior::Segments(vec!["p"], None)).await;
    let vendor = TestProvider::start(Behavior::Segments(vec!["v"], None)).await;
    let refused = TestProvider::start(Behavior::Segments(vec!["r"], None)).await;
    let mut with_vendor = provider(2, "vend", &vendor.url, 1002, 150);
    with_vendor["tcfVendorId"] = json!(900);
    let mut without = provider(3, "nope", &refused.url, 1003, 150);
    without["tcfVendorId"] = json!(901);
    let cat = catalog(
        vec![
            provider(1, "plain", &plain.url, 1001, 150),
            with_vendor,
            without,
        ],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.privacy.tcf_vendor_id = Some(565);
        c.privacy.tcf_purposes = vec![1, 10];
    })
    .await;
    let tc = |purposes: &[u8], vendors: &[u16]| {
        TcStringBuilder::default()
            .purposes(purposes)
            .vendors(vendors)
            .encode()
    };
    let granted = tc(&[1, 2, 10], &[565, 900]);
    let cookie = format!("demdex={VISITOR}");
    let with_cookie = [("cookie", cookie.as_str())];

    let refusals = [
        ("gdpr=1".to_string(), "gdpr=1 without gdpr_consent"),
        (
            format!("gdpr=1&gdpr_consent={}", tc(&[1], &[565, 900])),
            "no consent for purpose 10",
        ),
        (
            format!("gdpr=1&gdpr_consent={}", tc(&[1, 10], &[564, 900])),
            "no consent for vendor 565",
        ),
        (
            format!("gdpr=1&gdpr_consent={}", &granted[..30]),
            "not a TCF v2 string: ends early",
        ),
        (
            "gdpr=1&gdpr_consent=CO%21%21%21".to_string(),
            "invalid character at byte 2",
        ),
        (
            format!("gdpr=1&gdpr_consent={}", "C".repeat(5000)),
            "longer than 4096 bytes",
        ),
        // An unknown `gdpr` value does not switch the checks off.
        ("gdpr=maybe".to_string(), "gdpr=1 without gdpr_consent"),
    ];
    for (params, why) in &refusals {
        for (path, headers) in [
            (
                format!("/event?d_rtbd=json&d_cts=2&c_page=cars&{params}"),
                &[][..],
            ),
            (
                format!("/event?d_rtbd=json&d_cts=2&c_page=cars&d_cid=1%01crm-1&{params}"),
                &with_cookie[..],
            ),
        ] {
            let reply = get_with(&server.url(&path), headers).await;
            let body = reply.json();
            let errors = body["errors"].as_array().unwrap();
            let refusal = errors.iter().find(|e| e["code"] == 315).unwrap_or_else(|| {
                panic!("{params}: no 315 in {body}");
            });
            assert!(
                refusal["msg"].as_str().unwrap().contains(why),
                "{params}: {refusal}"
            );
            assert!(body.get("uuid").is_none(), "{body}");
            assert!(body.get("segments").is_none(), "{body}");
            assert_eq!(reply.visitor_cookie(), None, "no cookie set or renewed");
            assert!(reply.header("x-error").unwrap().contains("315"));
        }
    }
    let ibs = get_with(&server.url("/ibs:dpid=1&dpuuid=crm-2&gdpr=1"), &with_cookie).await;
    assert_eq!(ibs.header("x-error").as_deref(), Some("315"));
    assert_eq!(ibs.visitor_cookie(), None);
    server.running.sync_store().await.unwrap();
    let store = server.running.store();
    assert_eq!(store.count_profiles().unwrap(), 0, "nothing stored");
    assert!(store.get_link(1, "crm-1").unwrap().is_none());
    assert!(store.get_link(1, "crm-2").unwrap().is_none());
    assert_eq!(plain.hits() + vendor.hits() + refused.hits(), 0);

    // With consent: the call runs; only the vendor without consent is not asked.
    let reply = get_with(
        &server.url(&format!(
            "/event?d_rtbd=json&d_cts=2&c_page=cars&gdpr=1&gdpr_consent={granted}\
             &us_privacy=1YNN&gpp=DBABTA~1YNN&gpp_sid=6"
        )),
        &with_cookie,
    )
    .await;
    let body = reply.json();
    assert_eq!(body["segments"], json!([101]), "{body}");
    assert_eq!(
        body["providers"],
        json!({"plain": "ok", "vend": "ok", "nope": "no_consent"})
    );
    assert_eq!(body["uuid"], VISITOR);
    assert_eq!(reply.visitor_cookie().as_deref(), Some(VISITOR));
    assert_eq!(refused.hits(), 0);
    let regs = &vendor.bodies()[0]["regs"];
    assert_eq!(
        regs,
        &json!({"gdpr": 1, "gdpr_consent": granted, "coppa": 0, "us_privacy": "1YNN", "gpp": "DBABTA~1YNN", "gpp_sid": "6"})
    );
    let ibs = get_with(
        &server.url(&format!(
            "/ibs:dpid=1&dpuuid=crm-2&gdpr=1&gdpr_consent={granted}"
        )),
        &with_cookie,
    )
    .await;
    assert_eq!(ibs.header("x-error"), None);
    server.running.sync_store().await.unwrap();
    assert_eq!(
        server
            .stored_profile(VisitorId::parse(VISITOR).unwrap())
            .traits
            .len(),
        1
    );
    assert!(server
        .running
        .store()
        .get_link(1, "crm-2")
        .unwrap()
        .is_some());

    // gdpr=0: no checks; a broken consent string or US Privacy string is reported and not
    // passed on.
    let body = get(&server
        .url("/event?d_rtbd=json&d_cts=2&c_page=cars&gdpr=0&gdpr_consent=%25%25&us_privacy=YES"))
    .await
    .json();
    assert_eq!(
        body["providers"],
        json!({"plain": "ok", "vend": "ok", "nope": "ok"}),
        "{body}"
    );
    let messages: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["msg"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{body}");
    assert!(messages
        .iter()
        .any(|m| m.starts_with("Invalid gdpr_consent")));
    assert!(messages.iter().any(|m| m.starts_with("Invalid us_privacy")));
    assert_eq!(
        refused.bodies()[0]["regs"],
        json!({"gdpr": 0, "coppa": 0}),
        "malformed strings are not passed on"
    );

    // An opted-out visitor without consent is told 171: the opt-out outranks consent.
    get_with(&server.url("/demoptout.jpg"), &with_cookie).await;
    let body = get_with(&server.url("/event?d_rtbd=json&gdpr=1"), &with_cookie)
        .await
        .json();
    assert_eq!(body["errors"][0]["code"], 171, "{body}");
    server.stop().await;
}
