//! The admin REST API over real HTTP on its own listener: auth, CRUD with AAM's shapes,
//! paging, integration-code lookups, validation errors with offsets, conflicts, hot reload on
//! the very next event, durability across a restart, and garbage bodies that only ever get 4xx.

use std::sync::Arc;

use rand::{RngExt as _, SeedableRng as _};
use serde_json::{json, Value};

use crate::common::*;

fn seed() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1, "integrationCode": "ic-cars"},
            {"sid": 12, "name": "news", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"news\"", "dataSourceId": 1}
        ]),
        json!([{"sid": 101, "name": "car people", "segmentRule": "11T", "dataSourceId": 1}]),
    )
}

fn error_of(reply: &Reply) -> Value {
    reply.json()["error"].clone()
}

#[actix_web::test]
async fn the_admin_api_needs_the_token_and_lives_on_its_own_listener() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    for token in [None, Some("wrong"), Some("test-admin-token-012345678")] {
        let reply = admin.raw("GET", "/v1/traits", None, token).await;
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(error_of(&reply)["code"], "unauthorized");
        assert_eq!(
            reply.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert!(reply.header("www-authenticate").is_some());
    }
    let reply = admin.call("GET", "/v1/traits", None).await;
    assert_eq!(reply.status, 200);
    let ids: Vec<u64> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [11, 12]);
    // Not on the public listener; unknown admin paths are JSON 404s.
    assert_eq!(get(&server.url("/v1/traits")).await.status, 404);
    let reply = admin.call("GET", "/v1/nothing", None).await;
    assert_eq!(
        (reply.status, error_of(&reply)["code"].as_str()),
        (404, Some("not_found"))
    );
    let reply = admin.call("PATCH", "/v1/traits/11", None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow").as_deref(), Some("GET, PUT, DELETE"));
    server.stop().await;
}

#[actix_web::test]
async fn traits_and_segments_crud_paging_and_ic_lookups() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);

    let created = admin
        .call(
            "POST",
            "/v1/traits",
            Some(json!({"name": "sport", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_section contains \"sport\"", "dataSourceId": 1, "integrationCode": "ic-sport"})),
        )
        .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let t = created.json();
    assert_eq!(t["sid"], 13, "the server assigns the next id");
    assert_eq!(t["ttl"], 120, "defaults are filled in and shown");
    assert_eq!(created.header("location").as_deref(), Some("/v1/traits/13"));

    assert_eq!(
        admin.call("GET", "/v1/traits/13", None).await.json()["name"],
        "sport"
    );
    assert_eq!(
        admin
            .call("GET", "/v1/traits/ic:ic-sport", None)
            .await
            .json()["sid"],
        13
    );
    assert_eq!(
        admin.call("GET", "/v1/traits/ic:nope", None).await.status,
        404
    );
    assert_eq!(admin.call("GET", "/v1/traits/999", None).await.status, 404);
    assert_eq!(admin.call("GET", "/v1/traits/abc", None).await.status, 400);

    let page = admin
        .call("GET", "/v1/traits?page=1&pageSize=2", None)
        .await
        .json();
    assert_eq!(page["total"], 3);
    assert_eq!(
        (page["page"].clone(), page["pageSize"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(page["list"].as_array().unwrap().len(), 1);
    assert_eq!(page["list"][0]["sid"], 13);
    assert_eq!(
        admin
            .call("GET", "/v1/traits?pageSize=0", None)
            .await
            .status,
        400
    );
    assert_eq!(
        admin.call("GET", "/v1/traits?bogus=1", None).await.status,
        400
    );

    let replaced = admin
        .call(
            "PUT",
            "/v1/traits/13",
            Some(json!({"name": "sport fans", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_section contains \"sport\"", "dataSourceId": 1, "ttl": 30})),
        )
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["ttl"], 30);

    let seg = admin
        .call(
            "POST",
            "/v1/segments/",
            Some(json!({"name": "sporty car people", "segmentRule": "11T AND 13T", "dataSourceId": 1, "integrationCode": "s1"})),
        )
        .await;
    assert_eq!(seg.status, 201);
    assert_eq!(seg.json()["sid"], 102);
    assert_eq!(
        admin.call("GET", "/v1/segments/ic:s1", None).await.json()["sid"],
        102
    );

    // A trait a segment uses cannot be deleted; once the segment is gone, it can.
    let conflict = admin.call("DELETE", "/v1/traits/13", None).await;
    assert_eq!(conflict.status, 409);
    assert!(error_of(&conflict)["message"]
        .as_str()
        .unwrap()
        .contains("102"));
    assert_eq!(
        admin.call("DELETE", "/v1/segments/102", None).await.status,
        204
    );
    assert_eq!(
        admin.call("DELETE", "/v1/traits/13", None).await.status,
        204
    );
    assert_eq!(
        admin.call("DELETE", "/v1/traits/13", None).await.status,
        404
    );

    let provider = admin
        .call(
            "POST",
            "/v1/providers",
            Some(json!({"name": "acme", "url": "http://127.0.0.1:9/seg", "dataSourceId": 1001, "askFor": "synced"})),
        )
        .await;
    assert_eq!(provider.status, 201);
    assert_eq!(provider.json()["pid"], 1);
    assert_eq!(provider.json()["timeoutMs"], 80);
    assert_eq!(
        admin.call("GET", "/v1/providers/ic:x", None).await.status,
        400
    );
    server.stop().await;
}

#[actix_web::test]
async fn bad_input_gets_a_precise_4xx() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let trait_with = |rule: &str| json!({"name": "x", "traitType": "RULE_BASED_TRAIT", "traitRule": rule, "dataSourceId": 1});

    let bad_rule = admin
        .call("POST", "/v1/traits", Some(trait_with("c_page == ")))
        .await;
    assert_eq!(bad_rule.status, 400);
    let e = error_of(&bad_rule);
    assert_eq!(
        (e["field"].as_str(), e["offset"].as_u64()),
        (Some("traitRule"), Some(10)),
        "{e}"
    );

    let unknown = admin
        .call("POST", "/v1/traits", Some(json!({"name": "x", "bogus": 1})))
        .await;
    assert_eq!(error_of(&unknown)["field"], "bogus");
    let missing = admin
        .call("POST", "/v1/traits", Some(json!({"name": "x"})))
        .await;
    assert_eq!(missing.status, 400);
    assert!(
        error_of(&missing)["field"].is_string(),
        "{}",
        error_of(&missing)
    );
    let with_id = admin
        .call("POST", "/v1/traits", Some(json!({"sid": 50, "name": "x"})))
        .await;
    assert_eq!(error_of(&with_id)["field"], "sid");
    let other_id = admin
        .call(
            "PUT",
            "/v1/traits/12",
            Some(json!({"sid": 11, "name": "x"})),
        )
        .await;
    assert_eq!(error_of(&other_id)["field"], "sid");

    let dangling = admin
        .call(
            "POST",
            "/v1/segments",
            Some(json!({"name": "s", "segmentRule": "11T AND 77T", "dataSourceId": 1})),
        )
        .await;
    assert_eq!(dangling.status, 400);
    assert_eq!(error_of(&dangling)["field"], "segmentRule");
    assert!(error_of(&dangling)["message"]
        .as_str()
        .unwrap()
        .contains("77T"));

    // A value of the wrong type is named by its path, nested ones too.
    let wrong_type = admin
        .call(
            "POST",
            "/v1/providers",
            Some(json!({"name": "p", "url": "http://127.0.0.1:9/x", "dataSourceId": 1, "timeoutMs": "fast"})),
        )
        .await;
    assert_eq!(
        (wrong_type.status, error_of(&wrong_type)["field"].clone()),
        (400, json!("timeoutMs"))
    );
    let nested = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "d", "destinationType": "ADS", "cookieName": "c", "mappings": [{"sid": 101}, {"sid": "x"}]})),
        )
        .await;
    assert_eq!(error_of(&nested)["field"], "mappings[1].sid");
    let nested_unknown = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "d", "destinationType": "ADS", "cookieName": "c", "mappings": [{"sid": 101, "bogus": 1}]})),
        )
        .await;
    assert_eq!(error_of(&nested_unknown)["field"], "mappings[0].bogus");
    let nested_missing = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "d", "destinationType": "ADS", "cookieName": "c", "mappings": [{"traitAlias": "a"}]})),
        )
        .await;
    assert_eq!(error_of(&nested_missing)["field"], "mappings[0].sid");

    let malformed = admin
        .raw(
            "POST",
            "/v1/traits",
            Some(b"{\"name\": ".to_vec()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(
        (malformed.status, error_of(&malformed)["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let text = client()
        .post(format!("{}/v1/traits", admin.base))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .insert_header(("content-type", "text/plain"))
        .send_body("{}")
        .await
        .unwrap();
    let text = read(text).await;
    assert_eq!(
        (text.status, error_of(&text)["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let huge = admin
        .raw(
            "POST",
            "/v1/traits",
            Some(vec![b' '; (1 << 20) + 1]),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(huge.status, 413);

    let ok = admin
        .call(
            "POST",
            "/v1/traits/validate",
            Some(json!({"code": "c_a == 1 AND c_b > 2"})),
        )
        .await;
    assert_eq!((ok.status, ok.json()), (200, json!({"valid": true})));
    let bad = admin
        .call(
            "POST",
            "/v1/traits/validate",
            Some(json!({"code": "c_a == 1 AND"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(error_of(&bad)["field"], "code");
    assert!(error_of(&bad)["offset"].is_u64());
    let seg_ok = admin
        .call(
            "POST",
            "/v1/segments/validate",
            Some(json!({"code": "FREQUENCY([11T] <=7D) >= 2"})),
        )
        .await;
    assert_eq!(seg_ok.status, 200);
    let seg_bad = admin
        .call(
            "POST",
            "/v1/segments/validate",
            Some(json!({"code": "12T AND 99T"})),
        )
        .await;
    assert!(error_of(&seg_bad)["message"]
        .as_str()
        .unwrap()
        .contains("99T"));

    // Nothing of that changed the catalog.
    let all = admin.call("GET", "/v1/traits", None).await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    server.stop().await;
}

/// A change is live for the very next event and durable once answered.
#[actix_web::test]
async fn changes_are_live_at_once_and_survive_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(dir.path(), &seed());
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let admin = Admin::of(&server);
    let event = |s: &TestServer| s.url("/event?d_rtbd=json&d_cts=2&c_page=cars&c_device=tv");

    let before = get(&event(&server)).await.json();
    assert_eq!(before["segments"], json!([101]));
    let t = admin
        .call(
            "POST",
            "/v1/traits",
            Some(json!({"name": "tv", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_device == tv", "dataSourceId": 1})),
        )
        .await
        .json();
    let s = admin
        .call(
            "POST",
            "/v1/segments",
            Some(json!({"name": "tv car people", "segmentRule": format!("11T AND {}T", t["sid"]), "dataSourceId": 1})),
        )
        .await
        .json();
    let after = get(&event(&server)).await.json();
    assert_eq!(
        after["segments"],
        json!([101, s["sid"]]),
        "the next event uses the new rules"
    );
    let ready = get(&server.url("/ready")).await.json();
    assert_eq!(ready["catalogVersion"], 3, "seed, then two changes");
    server.stop().await;

    let server = TestServer::start_config(config, dir).await;
    let admin = Admin::of(&server);
    assert_eq!(
        admin
            .call("GET", "/v1/segments", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let again = get(&event(&server)).await.json();
    assert_eq!(again["segments"], json!([101, s["sid"]]));
    server.stop().await;
}

/// Generated garbage at every endpoint, with the token: only 4xx, never a 5xx, and the
/// catalog unchanged.
#[actix_web::test]
async fn garbage_bodies_get_4xx_only() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let fragments = [
        "{",
        "}",
        "[",
        "]",
        "\"name\"",
        ":",
        ",",
        "\"sid\"",
        "1",
        "-1",
        "1e999",
        "null",
        "true",
        "\"traitRule\"",
        "\"c == 1\"",
        "\"segmentRule\"",
        "\"11T\"",
        "\"\\u0000\"",
        "\"é\"",
        "\"dataSourceId\"",
        "\"traitType\"",
        "\"RULE_BASED_TRAIT\"",
        "18446744073709551616",
        "\"code\"",
        "\"FREQUENCY([11T]) >= 1\"",
        "\"askFor\"",
        "\"url\"",
        "\"http://x\"",
        "\"destinationType\"",
        "\"ADS\"",
        "\"S2S\"",
        "\"mappings\"",
        "\"cookieName\"",
    ];
    let paths = [
        ("POST", "/v1/traits"),
        ("PUT", "/v1/traits/12"),
        ("POST", "/v1/segments"),
        ("PUT", "/v1/segments/101"),
        ("POST", "/v1/providers"),
        ("POST", "/v1/destinations"),
        ("POST", "/v1/traits/validate"),
        ("POST", "/v1/segments/validate"),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for round in 0..60 {
        let body: Vec<u8> = if round % 3 == 0 {
            (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect()
        } else {
            let n = rng.random_range(1..24);
            (0..n)
                .map(|_| fragments[rng.random_range(0..fragments.len())])
                .collect::<String>()
                .into_bytes()
        };
        for (method, path) in paths {
            let reply = admin
                .raw(method, path, Some(body.clone()), Some(ADMIN_TOKEN))
                .await;
            assert!(
                (400..500).contains(&reply.status) || reply.status == 200 || reply.status == 201,
                "{method} {path} {:?} → {}",
                String::from_utf8_lossy(&body),
                reply.status
            );
            assert!(reply.json()["error"].is_object() || reply.status < 300);
            *statuses.entry(reply.status).or_insert(0) += 1;
        }
    }
    eprintln!("garbage statuses: {statuses:?}");
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
    server.stop().await;
}

/// A profile as the admin API shows it, and its erasure: profile, cached answers and ID-sync
/// mappings both ways, even while the visitor's session is live in memory.
#[actix_web::test]
async fn profiles_are_shown_and_erased_with_every_trace() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], Some(600))).await;
    let cat = catalog(
        vec![provider(1, "acme", &p.url, 1001, 150)],
        seed_traits(),
        json!([{"sid": 101, "name": "car people", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    let server = TestServer::start(&cat).await;
    let admin = Admin::of(&server);
    let visit = format!("/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={VISITOR}&d_cid=1%01crm-7");
    let first = get(&server.url(&visit)).await.json();
    assert_eq!(first["segments"], json!([101]));

    let shown = admin
        .call("GET", &format!("/v1/profiles/{VISITOR}"), None)
        .await;
    assert_eq!(shown.status, 200);
    let profile = shown.json();
    assert_eq!(profile["uuid"], VISITOR);
    assert_eq!(profile["traits"][0]["sid"], 11);
    assert_eq!(profile["traits"][0]["count"], 1);
    assert!(profile["traits"][0]["firstRealization"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(profile["segments"], json!([101]));
    assert_eq!(
        profile["syncedIds"],
        json!([{"dataSourceId": 1, "id": "crm-7"}])
    );
    assert_eq!(profile["providerAnswers"][0]["segments"], json!(["s"]));
    server.running.sync_store().await.unwrap();
    assert!(server
        .running
        .store()
        .get_link(1, "crm-7")
        .unwrap()
        .is_some());

    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/profiles/{VISITOR}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/profiles/{VISITOR}"), None)
            .await
            .status,
        404
    );
    let visitor = tributary::core::ids::VisitorId::parse(VISITOR).unwrap();
    server.assert_forgotten(&[visitor], &[(1, "crm-7")]).await;
    let stranger = get(&server.url("/event?d_rtbd=json&d_cid=1%01crm-7"))
        .await
        .json();
    assert_ne!(
        stranger["uuid"], VISITOR,
        "the declared id no longer leads to the visitor"
    );

    // The visitor's next event starts from nothing: one realization, the provider asked again.
    let again = get(&server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={VISITOR}"
    )))
    .await
    .json();
    assert_eq!(again["providers"], json!({"acme": "ok"}));
    let profile = admin
        .call("GET", &format!("/v1/profiles/{VISITOR}"), None)
        .await
        .json();
    assert_eq!(profile["traits"][0]["count"], 1);

    assert_eq!(
        admin.call("GET", "/v1/profiles/123", None).await.status,
        400
    );
    assert_eq!(
        admin
            .call(
                "DELETE",
                "/v1/profiles/11111111111111111111111111111111111111",
                None
            )
            .await
            .status,
        204,
        "erasure is idempotent"
    );
    server.stop().await;
}

fn seed_traits() -> Value {
    json!([
        {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1},
        {"sid": 21, "name": "s", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"s\"", "dataSourceId": 1001}
    ])
}

/// `/openapi.json` describes the API that is really there: every documented path and method is
/// routed on the admin listener; `/docs` is a page that renders it.
#[actix_web::test]
async fn the_openapi_description_matches_the_routes() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let spec = admin.raw("GET", "/openapi.json", None, None).await;
    assert_eq!(spec.status, 200, "no token needed");
    let spec = spec.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let trait_schema = &spec["components"]["schemas"]["Trait"];
    for field in [
        "sid",
        "name",
        "traitType",
        "traitRule",
        "dataSourceId",
        "ttl",
    ] {
        assert!(
            trait_schema["properties"][field].is_object(),
            "Trait.{field}: {trait_schema}"
        );
    }
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 9, "{:?}", paths.keys());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "11")
            .replace("{uuid}", VISITOR)
            .replace("{streamId}", "s")
            .replace("{dataSourceId}", "9001");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let body = matches!(method, "post" | "put").then(|| json!({}));
            let reply = admin.call(&method.to_uppercase(), &concrete, body).await;
            let routed = reply.status != 405
                && !(reply.status == 404 && error_of(&reply)["message"] == "no such endpoint");
            assert!(routed, "{method} {path} → {}", reply.status);
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
    let docs = admin.raw("GET", "/docs", None, None).await;
    assert_eq!(docs.status, 200);
    let html = String::from_utf8_lossy(&docs.body);
    assert!(html.contains("Tributary admin API") && html.contains("/ui/docs.js"));
    assert!(
        !html.contains("https://"),
        "nothing loaded from outside: {html}"
    );
    let script = admin.raw("GET", "/ui/docs.js", None, None).await;
    assert_eq!(script.status, 200);
    assert!(String::from_utf8_lossy(&script.body).contains("/openapi.json"));
    server.stop().await;
}

/// Destinations of the three types: each type's required fields, mappings to existing
/// segments only, a mapped segment protected from deletion, and storage across a restart.
#[actix_web::test]
async fn destinations_crud_and_validation() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(dir.path(), &seed());
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let admin = Admin::of(&server);

    let no_cookie = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "c", "destinationType": "ADS"})),
        )
        .await;
    assert_eq!(
        (no_cookie.status, error_of(&no_cookie)["field"].as_str()),
        (400, Some("cookieName"))
    );
    let cookie = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "ad server cookie", "destinationType": "ADS", "cookieName": "aam_segs",
                        "mappings": [{"sid": 101, "valueAlias": "cars"}]})),
        )
        .await;
    assert_eq!(
        cookie.status,
        201,
        "{}",
        String::from_utf8_lossy(&cookie.body)
    );
    let cookie = cookie.json();
    assert_eq!(cookie["destinationId"], 1);
    assert_eq!(
        (cookie["ttl"].clone(), cookie["maxSize"].clone()),
        (json!(30), json!(1000))
    );
    assert_eq!(cookie["formatType"], "key_value");

    let unknown_segment = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "u", "destinationType": "PUSH", "urlFormatString": "https://p.example/?s=%ALIAS%",
                        "mappings": [{"sid": 999, "traitAlias": "x"}]})),
        )
        .await;
    assert_eq!(error_of(&unknown_segment)["field"], "mappings");
    let no_url = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "u", "destinationType": "PUSH"})),
        )
        .await;
    assert_eq!(error_of(&no_url)["field"], "urlFormatString");
    let bad_url = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "u", "destinationType": "PUSH", "urlFormatString": "javascript:alert(1)"})),
        )
        .await;
    assert_eq!(error_of(&bad_url)["field"], "urlFormatString");
    let pixel = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "pixel", "destinationType": "PUSH", "urlFormatString": "http://p.example/?s=%ALIAS%",
                        "secureUrlFormatString": "https://p.example/?s=%ALIAS%", "mappings": [{"sid": 101, "traitAlias": "cars"}]})),
        )
        .await;
    assert_eq!(pixel.status, 201);
    let big_batch = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "s2s", "destinationType": "S2S", "url": "https://hook.example/in", "batchSize": 5000})),
        )
        .await;
    assert_eq!(error_of(&big_batch)["field"], "batchSize");
    let s2s = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "s2s", "destinationType": "S2S", "url": "https://hook.example/in", "secret": "k"})),
        )
        .await;
    assert_eq!(s2s.status, 201);

    let conflict = admin.call("DELETE", "/v1/segments/101", None).await;
    assert_eq!(conflict.status, 409);
    assert!(error_of(&conflict)["message"]
        .as_str()
        .unwrap()
        .contains("destination"));
    assert_eq!(
        admin
            .call("DELETE", "/v1/destinations/3", None)
            .await
            .status,
        204
    );
    server.stop().await;

    let server = TestServer::start_config(config, dir).await;
    let admin = Admin::of(&server);
    let all = admin.call("GET", "/v1/destinations", None).await.json();
    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destinationId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2], "kept across the restart");
    assert_eq!(all[1]["mappings"][0]["traitAlias"], "cars");
    server.stop().await;
}

/// Providers through the whole cycle, live: created, asked on the next event, disabled by a
/// `PUT` and no longer asked on the very next event, then deleted. Destinations too.
#[actix_web::test]
async fn providers_and_destinations_get_put_delete_live() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let url = server.url("/event?d_rtbd=json&d_cts=2");
    let event = || get(&url);

    assert_eq!(event().await.json()["providers"], json!({}));
    let body = json!({"name": "live", "url": p.url, "dataSourceId": 1001, "timeoutMs": 150});
    let created = admin
        .call("POST", "/v1/providers", Some(body.clone()))
        .await
        .json();
    let pid = created["pid"].as_u64().unwrap();
    assert_eq!(event().await.json()["providers"], json!({"live": "ok"}));
    assert_eq!(p.hits(), 1);

    let mut disabled = body.clone();
    disabled["enabled"] = json!(false);
    let put = admin
        .call("PUT", &format!("/v1/providers/{pid}"), Some(disabled))
        .await;
    assert_eq!(
        (put.status, put.json()["enabled"].clone()),
        (200, json!(false))
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/providers/{pid}"), None)
            .await
            .json()["enabled"],
        false
    );
    assert_eq!(
        event().await.json()["providers"],
        json!({}),
        "not asked once disabled"
    );
    assert_eq!(p.hits(), 1);
    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/providers/{pid}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/providers/{pid}"), None)
            .await
            .status,
        404
    );

    let d = json!({"name": "cookie", "destinationType": "ADS", "cookieName": "segs"});
    let id = admin
        .call("POST", "/v1/destinations", Some(d.clone()))
        .await
        .json()["destinationId"]
        .clone();
    let mut renamed = d.clone();
    renamed["name"] = json!("renamed");
    renamed["ttl"] = json!(7);
    assert_eq!(
        admin
            .call("PUT", &format!("/v1/destinations/{id}"), Some(renamed))
            .await
            .status,
        200
    );
    let got = admin
        .call("GET", &format!("/v1/destinations/{id}"), None)
        .await
        .json();
    assert_eq!(
        (got["name"].clone(), got["ttl"].clone()),
        (json!("renamed"), json!(7))
    );
    let mut invalid = d;
    invalid["ttl"] = json!(0);
    let refused = admin
        .call("PUT", &format!("/v1/destinations/{id}"), Some(invalid))
        .await;
    assert_eq!(
        (refused.status, error_of(&refused)["field"].as_str()),
        (400, Some("ttl"))
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/destinations/{id}"), None)
            .await
            .json()["ttl"],
        7,
        "a refused change changes nothing"
    );
    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/destinations/{id}"), None)
            .await
            .status,
        204
    );
    server.stop().await;
}

/// Secrets (provider signing keys, S2S keys) are never shown: the API answers `********`, a PUT
/// that sends `********` back keeps the stored secret, and calls stay signed with it.
#[actix_web::test]
async fn secrets_are_never_shown_and_kept_by_a_put_of_what_was_read() {
    let p = TestProvider::start(Behavior::Segments(vec!["s"], None)).await;
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let signed_with = |key: &[u8]| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let last = p.raw_bodies().len() - 1;
        let header = p.headers()[last]
            .get("x-tributary-signature")
            .map(|v| v.to_str().unwrap().to_string());
        header
            == Some(tributary::core::signing::signature(
                &key,
                &p.raw_bodies()[last],
            ))
    };
    let url = server.url("/event?d_rtbd=json");
    let body = json!({"name": "signed", "url": p.url, "dataSourceId": 1001, "timeoutMs": 150, "secret": "top-secret-key"});
    let created = admin.call("POST", "/v1/providers", Some(body)).await;
    assert_eq!(created.status, 201);
    let created = created.json();
    assert_eq!(created["secret"], "********");
    let pid = created["pid"].as_u64().unwrap();
    let one = admin
        .call("GET", &format!("/v1/providers/{pid}"), None)
        .await
        .json();
    assert_eq!(one["secret"], "********");
    let all = admin.call("GET", "/v1/providers", None).await;
    assert!(!String::from_utf8_lossy(&all.body).contains("top-secret-key"));
    get(&url).await;
    assert!(signed_with(b"top-secret-key"));

    // What was read, sent back with a change: the secret stays.
    let mut edited = one.clone();
    edited["timeoutMs"] = json!(140);
    let put = admin
        .call("PUT", &format!("/v1/providers/{pid}"), Some(edited.clone()))
        .await;
    assert_eq!(
        (put.status, put.json()["secret"].clone()),
        (200, json!("********"))
    );
    get(&url).await;
    assert!(signed_with(b"top-secret-key"), "kept");
    // A new secret replaces it; none removes it.
    edited["secret"] = json!("rotated-key");
    admin
        .call("PUT", &format!("/v1/providers/{pid}"), Some(edited.clone()))
        .await;
    get(&url).await;
    assert!(signed_with(b"rotated-key"));
    edited.as_object_mut().unwrap().remove("secret");
    let put = admin
        .call("PUT", &format!("/v1/providers/{pid}"), Some(edited))
        .await;
    assert!(put.json().get("secret").is_none());
    get(&url).await;
    assert!(p
        .headers()
        .last()
        .unwrap()
        .get("x-tributary-signature")
        .is_none());
    // The placeholder is not a secret to create with.
    let refused = admin
        .call(
            "POST",
            "/v1/destinations",
            Some(json!({"name": "s2s", "destinationType": "S2S", "url": "https://hook.example/in", "secret": "********"})),
        )
        .await;
    assert_eq!(
        (refused.status, error_of(&refused)["field"].clone()),
        (400, json!("secret"))
    );
    server.stop().await;
}

/// A refused upload is not read on: a chunked body over the limit (and one sent without the
/// token) gets its `4xx` while it streams, and the connection is closed although the client
/// keeps sending (actix-http would otherwise read and discard it for as long as it comes).
#[actix_web::test]
async fn refused_uploads_close_the_connection_while_the_client_still_sends() {
    let server = TestServer::start(&seed()).await;
    let admin = server.running.admin_addr().to_string();
    let public = server.url("").trim_start_matches("http://").to_string();
    let json = "Content-Type: application/json\r\n";
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n{json}");
    for (addr, path, headers, status) in [
        (&admin, "/v1/traits", auth.as_str(), "413"),
        (&admin, "/v1/traits", json, "401"),
        (&public, "/event", "Content-Type: text/plain\r\n", "413"),
        (&public, "/event", json, "415"),
    ] {
        let line = endless_upload(addr, path, headers).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {line}"
        );
    }
    server.stop().await;
}

/// Sends a chunked body without end to `path`, after `headers`; returns the answer's status line once the
/// server has closed the connection. Panics if it is still reading after 20 s.
async fn endless_upload(addr: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Transfer-Encoding: chunked\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let sender = actix_rt::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
        while write.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let mut answer = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), read_all).await;
    assert!(
        closed.is_ok(),
        "{path}: the server still reads the refused body"
    );
    // The writer ends on its own once the socket is closed.
    let _ = sender.await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_string()
}

/// The server's metrics behind the admin token, for the console: the same series as the
/// public `/metrics`, levels refreshed at the scrape.
#[actix_web::test]
async fn metrics_on_the_admin_listener_need_the_token() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let event = get(&server.url("/event?c_page=cars&d_rtbd=json")).await;
    assert_eq!(event.status, 200);
    let reply = admin.call("GET", "/v1/metrics", None).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.contains("tributary_events_in_flight"), "{text}");
    assert!(
        metric_value(&text, "tributary_events_total{result=\"ok\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let refused = admin.raw("GET", "/v1/metrics", None, None).await;
    assert_eq!(refused.status, 401);
    server.stop().await;
}

/// A device found by an id it is synced to (`<dataSourceId>:<id>` of a data source that is not
/// cross-device, ECIDs among them), read and erased through it.
#[actix_web::test]
async fn profiles_by_a_synced_id_are_the_device_s() {
    let server = TestServer::start(&seed()).await;
    let admin = Admin::of(&server);
    let event = get(&server.url("/event?c_page=cars&d_rtbd=json")).await;
    let device = event.json()["uuid"].as_str().unwrap().to_string();
    let synced = get_with(
        &server.url("/ibs:dpid=1&dpuuid=crm-7"),
        &[("cookie", &format!("demdex={device}"))],
    )
    .await;
    assert_eq!(synced.status, 200);
    let found = wait_for(
        "the sync to be readable",
        std::time::Duration::from_secs(5),
        || {
            let admin = &admin;
            async move {
                let r = admin.call("GET", "/v1/profiles/1:crm-7", None).await;
                if r.status == 200 {
                    Ok(r.json())
                } else {
                    Err(String::from_utf8_lossy(&r.body).into_owned())
                }
            }
        },
    )
    .await;
    assert_eq!(found["uuid"], device.as_str(), "{found}");
    let unknown = admin.call("GET", "/v1/profiles/1:nobody", None).await;
    assert_eq!(unknown.status, 404);
    let erased = admin.call("DELETE", "/v1/profiles/1:crm-7", None).await;
    assert_eq!(erased.status, 204);
    let gone = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await;
    assert_eq!(gone.status, 404);
    server.stop().await;
}
