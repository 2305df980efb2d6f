//! ID sync over real HTTP: `/ibs` (AAM's colon form, redirects), declared ids on `/event`
//! (`d_cid`, `d_cid_ic`, the legacy pair), AAM's limits and errors, mappings kept both ways,
//! and what they change: who the visitor is, and what synced-only providers are told.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::core::ids::VisitorId;
use tributary::store::IdLink;

use crate::common::*;

const OTHER: &str = "98765432109876543210987654321098765432";

fn onboarded(ds: u32) -> Value {
    json!([
        {"sid": 22, "name": "s", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"s\"", "dataSourceId": ds},
        {"sid": 11, "name": "page", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"x\"", "dataSourceId": 1}
    ])
}

/// A catalog with a synced-only provider on data source 1002.
async fn synced_provider() -> (TestProvider, tributary::core::catalog::Catalog) {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let mut entry = provider(2, "synced", &p.url, 1002, 150);
    entry["askFor"] = json!("synced");
    let cat = catalog(
        vec![entry],
        onboarded(1002),
        json!([{"sid": 102, "name": "s", "segmentRule": "22T", "dataSourceId": 1}]),
    );
    (p, cat)
}

fn no_redirects() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish()
}

async fn get_raw(url: &str, cookie: Option<&str>) -> Reply {
    let mut req = no_redirects().get(url);
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", format!("demdex={c}")));
    }
    read(req.send().await.expect("request")).await
}

fn link(server: &TestServer, dpid: u32, id: &str) -> Option<IdLink> {
    server.running.store().get_link(dpid, id).expect("readable")
}

fn visitor(text: &str) -> VisitorId {
    VisitorId::parse(text).expect("38 digits")
}

/// `/ibs:dpid=…&dpuuid=…` for the cookie's visitor: a GIF, the cookie renewed, the mapping
/// stored both ways, and the synced-only provider asked with that id on the next event.
#[actix_web::test]
async fn ibs_syncs_the_cookie_visitor_both_ways() {
    let (p, cat) = synced_provider().await;
    let server = TestServer::start(&cat).await;

    let before = get_with(
        &server.url("/event?d_rtbd=json&d_cts=2"),
        &[("cookie", &format!("demdex={VISITOR}"))],
    )
    .await
    .json();
    assert_eq!(before["providers"], json!({"synced": "skipped"}));

    let reply = get_raw(
        &server.url("/ibs:dpid=1002&dpuuid=prov%2077"),
        Some(VISITOR),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type").as_deref(), Some("image/gif"));
    assert_eq!(reply.visitor_cookie().as_deref(), Some(VISITOR));
    assert_eq!(reply.header("x-error"), None);

    let after = get_with(
        &server.url("/event?d_rtbd=json&d_cts=2"),
        &[("cookie", &format!("demdex={VISITOR}"))],
    )
    .await
    .json();
    assert_eq!(after["providers"], json!({"synced": "ok"}));
    assert_eq!(after["segments"], json!([102]));
    assert_eq!(p.bodies()[0]["user"]["id"], "prov 77");

    server.running.sync_store().await.unwrap();
    assert_eq!(
        link(&server, 1002, "prov 77").unwrap().visitor,
        visitor(VISITOR)
    );
    assert_eq!(
        server
            .stored_profile(visitor(VISITOR))
            .synced_ids
            .get(&1002)
            .map(String::as_str),
        Some("prov 77")
    );
    // The new form and the query-string form sync too.
    let reply = get_raw(&server.url("/ibs:d_cid=1002%01prov-78"), Some(OTHER)).await;
    assert_eq!((reply.status, reply.header("x-error")), (200, None));
    let reply = get_raw(&server.url("/ibs?dpid=1002&dpuuid=prov-79"), Some(OTHER)).await;
    assert_eq!((reply.status, reply.header("x-error")), (200, None));
    server.running.sync_store().await.unwrap();
    assert_eq!(
        link(&server, 1002, "prov-78").unwrap().visitor,
        visitor(OTHER)
    );
    assert_eq!(
        server.stored_profile(visitor(OTHER)).synced_ids[&1002],
        "prov-79",
        "one id per data source: the latest"
    );
    server.stop().await;
}

/// `redir` is followed only to configured hosts, with `${DD_UUID}` replaced; a new visitor
/// gets an id (and the cookie) like on `/event`; bad calls get AAM's codes in `X-Error`.
#[actix_web::test]
async fn ibs_redirects_only_to_allowed_hosts_and_reports_bad_calls() {
    let (_p, cat) = synced_provider().await;
    let server = TestServer::start_with(&cat, |c| {
        c.server.idsync_redirect_hosts = vec!["sync.partner.example".into()];
    })
    .await;

    let reply = get_raw(
        &server.url(
            "/ibs:dpid=1002&dpuuid=abc&redir=https%3A%2F%2Fsync.partner.example%2Fback%3Faam%3D%24%7BDD_UUID%7D",
        ),
        None,
    )
    .await;
    assert_eq!(reply.status, 302);
    let uuid = reply
        .visitor_cookie()
        .expect("a new visitor gets the cookie");
    assert!(VisitorId::parse(&uuid).is_some());
    assert_eq!(
        reply.header("location").unwrap(),
        format!("https://sync.partner.example/back?aam={uuid}")
    );

    for evil in [
        "https%3A%2F%2Fevil.example%2F",
        "https%3A%2F%2Fsync.partner.example%40evil.example%2F",
        "javascript%3Aalert(1)",
        "%2F%2Fevil.example",
    ] {
        let reply = get_raw(
            &server.url(&format!("/ibs:dpid=1002&dpuuid=abc&redir={evil}")),
            Some(VISITOR),
        )
        .await;
        assert_eq!(reply.status, 200, "{evil}");
        assert_eq!(reply.header("location"), None, "{evil}");
        assert_eq!(reply.header("x-error").as_deref(), Some("0"), "{evil}");
    }

    for (path, codes) in [
        ("/ibs:dpid=999&dpuuid=x", "302"),
        ("/ibs:dpid=abc&dpuuid=x", "300"),
        ("/ibs:dpid=1002", "300"),
        ("/ibs", "300"),
        ("/ibs:dpid=1002&dpuuid=%zz", "311"),
        (
            "/ibs:d_cid=1002%01a&d_cid=1002%01b&d_cid=1002%01c&d_cid=1002%01d",
            "310",
        ),
    ] {
        let reply = get_raw(&server.url(path), Some(VISITOR)).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("x-error").as_deref(), Some(codes), "{path}");
    }
    let opted_out = get_raw(&server.url("/ibs:dpid=1002&dpuuid=x"), Some("NOTARGET")).await;
    assert_eq!(opted_out.header("x-error").as_deref(), Some("171"));
    assert_eq!(opted_out.visitor_cookie(), None);
    assert_eq!(get_raw(&server.url("/ibsx:dpid=1"), None).await.status, 404);

    server.running.sync_store().await.unwrap();
    assert_eq!(
        link(&server, 1002, "x"),
        None,
        "nothing synced for the opted-out visitor"
    );
    assert_eq!(
        link(&server, 1002, "d"),
        None,
        "the fourth id of a data source is dropped"
    );
    assert!(link(&server, 1002, "c").is_some());
    server.stop().await;
}

/// A declared id identifies its visitor when there is no cookie; the cookie wins over it and
/// takes the mapping over (most recent wins); a logged-out id identifies no one; mappings
/// survive a restart.
#[actix_web::test]
async fn declared_ids_identify_their_visitor_most_recent_mapping_wins() {
    let (_p, cat) = synced_provider().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(dir.path(), &cat);
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let event = |query: &str| server.url(&format!("/event?d_rtbd=json&d_cts=2&c_page=x&{query}"));

    let first = get(&event("d_cid=1002%01crm-1")).await;
    let u1 = first.json()["uuid"].as_str().unwrap().to_string();
    assert_eq!(first.visitor_cookie().as_deref(), Some(u1.as_str()));
    let again = get(&event("d_cid=1002%01crm-1")).await.json();
    assert_eq!(again["uuid"], u1.as_str(), "identified by the declared id");
    let legacy = get(&event("d_dpid=1002&d_dpuuid=crm-1")).await.json();
    assert_eq!(legacy["uuid"], u1.as_str(), "the legacy pair too");
    let logged_out = get(&event("d_cid=1002%01crm-1%012")).await.json();
    assert_ne!(
        logged_out["uuid"],
        u1.as_str(),
        "a logged-out id identifies no one"
    );

    server.running.sync_store().await.unwrap();
    let p1 = server.stored_profile(visitor(&u1));
    assert_eq!(p1.traits[&11].count(), 3, "three events of one visitor");

    // The same person logs in on another device (another cookie): that device now has it.
    let other = get_with(
        &event("d_cid=1002%01crm-1%011"),
        &[("cookie", &format!("demdex={OTHER}"))],
    )
    .await
    .json();
    assert_eq!(other["uuid"], OTHER, "the cookie wins over a declared id");
    let later = get(&event("d_cid=1002%01crm-1")).await.json();
    assert_eq!(later["uuid"], OTHER, "the most recent mapping wins");
    server.stop().await;

    let server = TestServer::start_config(config, dir).await;
    let reply = get(&server.url("/event?d_rtbd=json&d_cid_ic=DSID_1002%01crm-1"))
        .await
        .json();
    assert_eq!(reply["uuid"], OTHER, "mappings survive a restart");
    server.stop().await;
}

/// A synced-only provider is asked on the very event that declares its id, with that id.
#[actix_web::test]
async fn a_declared_id_reaches_its_provider_on_the_same_event() {
    let (p, cat) = synced_provider().await;
    let server = TestServer::start(&cat).await;
    let body = get(&server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&d_cid=1002%01prov-9"
    )))
    .await
    .json();
    assert_eq!(body["providers"], json!({"synced": "ok"}));
    assert_eq!(body["segments"], json!([102]));
    assert_eq!(p.bodies()[0]["user"]["id"], "prov-9");
    assert_eq!(p.bodies()[0]["user"]["ext"]["uuid"], VISITOR);
    server.stop().await;
}

/// AAM's limits: ≤ 3 ids per data source (310), ≤ 10 per request (301, then 309 per extra
/// id); integration codes from config and `DSID_<n>`; unknown data sources (302) and
/// malformed ids (300) are reported without failing the event.
#[actix_web::test]
async fn declared_id_limits_and_errors() {
    let (_p, cat) = synced_provider().await;
    let server = TestServer::start_with(&cat, |c| {
        for (i, code) in ["crm", "loyalty", "app", "pos"].iter().enumerate() {
            c.server
                .integration_codes
                .insert(code.to_string(), 9001 + i as u32);
        }
    })
    .await;
    let mut query = String::from("d_rtbd=json&d_cts=2&c_page=x");
    query.push_str("&d_cid=1002%01a&d_cid=1002%01b&d_cid=1002%01c&d_cid=1002%01d");
    for code in ["crm", "LOYALTY", "app", "pos"] {
        for i in 0..3 {
            query.push_str(&format!("&d_cid_ic={code}%01{code}-{i}"));
        }
    }
    query.push_str("&d_cid=424242%01x&d_cid_ic=nope%01y&d_cid=1002&d_cid_ic=DSID_1002%01z");
    let reply = get_with(
        &server.url(&format!("/event?{query}")),
        &[("cookie", &format!("demdex={VISITOR}"))],
    )
    .await;
    let body = reply.json();
    let codes: Vec<u64> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_u64().unwrap())
        .collect();
    // The malformed bare `d_cid=1002` first (parsing), then in the order sent: 1002's fourth
    // id, app-1 (the 11th: 301 and 309), app-2 and pos-0..2 (309), the unknown data source,
    // the unknown code, and DSID_1002's id, a fourth for 1002 again.
    assert_eq!(
        codes,
        [300, 310, 301, 309, 309, 309, 309, 309, 302, 300, 310],
        "{body}"
    );
    assert_eq!(
        body["traits"],
        json!([11, 22]),
        "the event itself went through"
    );
    assert_eq!(body["providers"], json!({"synced": "ok"}));
    let header = reply.header("x-error").unwrap();
    assert!(header.starts_with("300,310,301,309"), "{header}");

    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(visitor(VISITOR));
    let synced: Vec<u32> = profile.synced_ids.keys().copied().collect();
    assert_eq!(synced, [1002, 9001, 9002, 9003]);
    assert_eq!(
        profile.synced_ids[&1002], "c",
        "the last accepted id of a data source"
    );
    assert_eq!(profile.synced_ids[&9002], "LOYALTY-2");
    assert_eq!(profile.synced_ids[&9003], "app-0");
    assert!(link(&server, 9003, "app-0").is_some());
    assert!(link(&server, 9003, "app-1").is_none());
    assert!(link(&server, 1002, "d").is_none());
    server.stop().await;
}
