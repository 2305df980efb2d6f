//! The `/event` contract over real HTTP (docs/dcs-api.md): shapes, identity, errors, limits.

use serde_json::json;

use crate::common::*;

fn rule_catalog() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1},
            {"sid": 12, "name": "young", "traitType": "RULE_BASED_TRAIT", "traitRule": "p_age < 25", "dataSourceId": 1},
            {"sid": 13, "name": "chrome", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_user-agent contains Chrome", "dataSourceId": 2},
            {"sid": 14, "name": "fired", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == never", "dataSourceId": 3}
        ]),
        json!([
            {"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1},
            {"sid": 102, "name": "young car fans", "segmentRule": "11T AND 12T", "dataSourceId": 1},
            {"sid": 103, "name": "pixel", "segmentRule": "14T", "dataSourceId": 1}
        ]),
    )
}

#[actix_web::test]
async fn json_answer_has_the_aam_shape_and_sets_the_cookie() {
    let server = TestServer::start(&rule_catalog()).await;
    let reply = get(&server.url("/event?d_rtbd=json&c_page=cars")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = reply.json();
    let uuid = body["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 38);
    assert!(uuid.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(body["dcs_region"], 7);
    assert_eq!(body["tid"].as_str().unwrap().len(), 12);
    assert_eq!(body["stuff"], json!([]));
    assert!(body.get("traits").is_none(), "traits only with d_cts=2");
    assert!(body.get("errors").is_none());
    assert_eq!(reply.visitor_cookie().as_deref(), Some(uuid));
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.contains("Max-Age=15552000") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // The cookie identifies the visitor next time and is renewed.
    let again = get_with(
        &server.url("/event?d_rtbd=json"),
        &[("cookie", &format!("demdex={uuid}"))],
    )
    .await;
    assert_eq!(again.json()["uuid"], uuid);
    assert_eq!(again.visitor_cookie().as_deref(), Some(uuid));
    assert_ne!(again.json()["tid"], body["tid"]);
    server.stop().await;
}

/// A `p_age` value that qualifies for `p_age < 25` and that nothing else in a profile (ids,
/// unix times, day numbers) could spell by chance.
const PRIVATE_AGE: &str = "23.98176";

#[actix_web::test]
async fn cts_shows_traits_segments_and_private_signals_count_only_here() {
    let server = TestServer::start(&rule_catalog()).await;
    let reply = get_with(
        &server.url(&format!(
            "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_page=cars&p_age={PRIVATE_AGE}"
        )),
        &[("user-agent", "Mozilla/5.0 Chrome/120")],
    )
    .await;
    let body = reply.json();
    assert_eq!(body["traits"], json!([11, 12, 13]));
    assert_eq!(body["segments"], json!([101, 102]));
    assert_eq!(body["providers"], json!({}));
    assert_eq!(body["uuid"], VISITOR);

    // d_tdpid restricts evaluation to one data source; d_sid realizes a trait directly.
    let reply = get_with(
        &server.url(&format!(
            "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_page=cars&d_tdpid=2&d_sid=14"
        )),
        &[("user-agent", "Chrome")],
    )
    .await;
    assert_eq!(reply.json()["traits"], json!([13, 14]));
    assert_eq!(
        reply.json()["segments"],
        json!([101, 102, 103]),
        "11T and 12T from the first visit still hold"
    );

    // The profile stores traits, never the private signal itself: 12T, realized from `p_age`,
    // is held, and neither the key nor its value is anywhere in the stored record.
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(tributary::core::ids::VisitorId::parse(VISITOR).unwrap());
    assert!(profile.traits.contains_key(&12), "{profile:?}");
    let encoded = tributary::store::encode_profile(&profile).unwrap();
    let stored = format!("{profile:?} {}", String::from_utf8_lossy(&encoded));
    for private in ["p_age", PRIVATE_AGE] {
        assert!(!stored.contains(private), "{private:?} stored: {stored}");
    }
    server.stop().await;
}

#[actix_web::test]
async fn pixel_without_rtbd_and_jsonp_with_callback() {
    let server = TestServer::start(&rule_catalog()).await;
    let pixel = get(&server.url("/event?c_page=cars")).await;
    assert_eq!(pixel.status, 200);
    assert_eq!(pixel.header("content-type").as_deref(), Some("image/gif"));
    assert!(pixel.body.starts_with(b"GIF89a"));
    assert!(pixel.visitor_cookie().is_some());

    let jsonp = get(&server.url("/event?d_rtbd=json&d_cb=window.cb_1&c_page=cars")).await;
    assert_eq!(
        jsonp.header("content-type").as_deref(),
        Some("application/javascript; charset=utf-8")
    );
    let text = String::from_utf8(jsonp.body.clone()).unwrap();
    assert!(
        text.starts_with("window.cb_1({\"stuff\":[]") && text.ends_with("});"),
        "{text}"
    );
    // A browser never runs or renders an answer as anything but its declared type.
    for reply in [&pixel, &jsonp, &get(&server.url("/nowhere")).await] {
        assert_eq!(
            reply.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    server.stop().await;
}

#[actix_web::test]
async fn hostile_callback_is_refused_and_never_reflected() {
    let server = TestServer::start(&rule_catalog()).await;
    for cb in ["alert(1)", "%3Cscript%3E", "a-b", "1abc", &"a".repeat(65)] {
        let reply = get(&server.url(&format!("/event?d_rtbd=json&d_cb={cb}"))).await;
        assert_eq!(reply.status, 400, "{cb}");
        let text = String::from_utf8(reply.body.clone()).unwrap();
        assert!(
            !text.contains("alert") && !text.contains("script"),
            "{text}"
        );
        assert!(reply.json()["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("callback"));
    }
    server.stop().await;
}

#[actix_web::test]
async fn malformed_parameters_are_errors_not_failures() {
    let server = TestServer::start(&rule_catalog()).await;
    // A bad d_uuid is error 102 and is ignored: a new visitor id is issued.
    let reply = get(&server.url("/event?d_rtbd=json&d_uuid=123&c_page=cars&d_sid=x")).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let codes: Vec<i64> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [102, 0]);
    assert_eq!(reply.header("x-error").as_deref(), Some("102,0"));
    assert_eq!(body["uuid"].as_str().unwrap().len(), 38);

    // Broken percent-encoding: AAM error 311, the whole request is ignored (no new id).
    let reply = get(&server.url("/event?d_rtbd=json&c_page=%esid!")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["errors"][0]["code"], 311);
    assert_eq!(reply.header("x-error").as_deref(), Some("311"));
    assert!(reply.json().get("uuid").is_none());
    assert!(reply.visitor_cookie().is_none());

    // Invalid UTF-8 after decoding is the same.
    let reply = get(&server.url("/event?d_rtbd=json&c_page=%FF%FE")).await;
    assert_eq!(reply.json()["errors"][0]["code"], 311);
    server.stop().await;
}

#[actix_web::test]
async fn opted_out_visitors_get_171_and_nothing_else() {
    let server = TestServer::start(&rule_catalog()).await;
    let reply = get_with(
        &server.url("/event?d_rtbd=json&d_cts=2&c_page=cars"),
        &[("cookie", "demdex=NOTARGET")],
    )
    .await;
    let body = reply.json();
    assert_eq!(body["errors"][0]["code"], 171);
    assert!(body.get("uuid").is_none());
    assert!(body.get("segments").is_none());
    assert!(reply.visitor_cookie().is_none());
    assert_eq!(server.running.store().count_profiles().unwrap(), 0);
    server.stop().await;
}

#[actix_web::test]
async fn size_limits() {
    let server = TestServer::start(&rule_catalog()).await;
    let long = format!("/event?d_rtbd=json&c_x={}", "a".repeat(8 * 1024));
    assert_eq!(get(&server.url(&long)).await.status, 414);
    let ok = format!("/event?d_rtbd=json&c_x={}", "a".repeat(8 * 1024 - 20));
    assert_eq!(get(&server.url(&ok)).await.status, 200);

    let form = "application/x-www-form-urlencoded";
    let big = format!("c_x={}", "a".repeat(32 * 1024));
    let reply = post(&server.url("/event?d_rtbd=json"), form, big.into_bytes()).await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["errors"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("32768"));

    let reply = post(&server.url("/event"), "application/json", b"{}".to_vec()).await;
    assert_eq!(reply.status, 415);

    // Request lines HTTP clients cannot even build (awc's URIs stop at 64 KB): the HTTP layer
    // refuses them before Tributary reads them, as README and docs/dcs-api.md say.
    let authority = server.url("").trim_start_matches("http://").to_string();
    for (len, status) in [(60_000, "414"), (70_000, "400"), (140_000, "431")] {
        let line = raw_status(&authority, &format!("/event?c_x={}", "a".repeat(len))).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{len}: {line}"
        );
    }
    server.stop().await;
}

/// The status line a request line of `target` gets, over a plain socket.
async fn raw_status(authority: &str, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    // The server may answer and close before it has read the whole request.
    let _ = socket.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_string()
}

#[actix_web::test]
async fn post_form_body_like_dil() {
    let server = TestServer::start(&rule_catalog()).await;
    let reply = post(
        &server.url("/event?d_dil_ver=9.4&_ts=1"),
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"d_rtbd=json&d_cts=2&d_jsonv=1&d_nsid=0&c_page=cars".to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["segments"], json!([101]));
    server.stop().await;
}

#[actix_web::test]
async fn cors_echoes_origins_with_credentials_but_never_null() {
    let server = TestServer::start(&rule_catalog()).await;
    let reply = get_with(
        &server.url("/event?d_rtbd=json"),
        &[("origin", "https://shop.example")],
    )
    .await;
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let reply = get_with(&server.url("/event?d_rtbd=json"), &[("origin", "null")]).await;
    assert!(reply.header("access-control-allow-origin").is_none());

    let preflight = client()
        .request(actix_web::http::Method::OPTIONS, server.url("/event"))
        .insert_header(("origin", "https://shop.example"))
        .insert_header(("access-control-request-method", "POST"))
        .insert_header(("access-control-request-headers", "content-type"))
        .send()
        .await
        .unwrap();
    let preflight = read(preflight).await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods").as_deref(),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    server.stop().await;

    let server = TestServer::start_with(&rule_catalog(), |c| {
        c.server.cors_origins = vec!["https://allowed.example".into()];
    })
    .await;
    let reply = get_with(
        &server.url("/event?d_rtbd=json"),
        &[("origin", "https://other.example")],
    )
    .await;
    assert_eq!(reply.status, 200, "the event is still collected");
    assert!(reply.header("access-control-allow-origin").is_none());
    let reply = get_with(
        &server.url("/event?d_rtbd=json"),
        &[("origin", "https://allowed.example")],
    )
    .await;
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://allowed.example")
    );
    server.stop().await;
}

#[actix_web::test]
async fn cts_can_be_turned_off() {
    let server = TestServer::start_with(&rule_catalog(), |c| c.server.allow_cts = false).await;
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2&c_page=cars"))
        .await
        .json();
    assert!(body.get("segments").is_none());
    server.stop().await;
}

#[actix_web::test]
async fn health_ready_metrics_and_unknown_routes() {
    let server = TestServer::start(&rule_catalog()).await;
    assert_eq!(get(&server.url("/health")).await.json()["status"], "ok");
    let ready = get(&server.url("/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["catalogVersion"], 1);
    get(&server.url("/event?c_page=cars")).await;
    // A visitor id not in memory: its profile is read from the store.
    get(&server.url(&format!("/event?d_uuid={VISITOR}&c_page=cars"))).await;
    let metrics = String::from_utf8(get(&server.url("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("tributary_store_read_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("tributary_events_total"), "{metrics}");
    assert!(metrics.contains("tributary_event_duration_seconds_bucket"));
    assert!(metrics.contains("tributary_catalog_traits 4"), "{metrics}");
    assert!(
        metrics.contains("tributary_catalog_segments 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tributary_build_info{version=""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_store_pending_writes"),
        "{metrics}"
    );
    let missing = get(&server.url("/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errors"][0]["code"], 0);
    let wrong = client().put(server.url("/event")).send().await.unwrap();
    assert_eq!(read(wrong).await.status, 405);
    server.stop().await;
}

/// Whatever a client sends, the answer is never a 5xx and the server stays up.
#[actix_web::test]
async fn garbage_requests_never_get_a_5xx() {
    use rand::{RngExt, SeedableRng};
    let server = TestServer::start(&rule_catalog()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let alphabet: &[u8] = b"abcdp_hdc=&%,+\"'<>()[]{}0123456789AF;:/?#\\ \t.-_$";
    for i in 0..400 {
        let len = rng.random_range(0..300);
        let raw: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        // Encode what a URL cannot carry, leave the rest (including stray %) as is.
        let query: String =
            raw.iter()
                .map(|&b| match b {
                    b' ' | b'\t' | b'"' | b'<' | b'>' | b'#' | b'\\' | b'{' | b'}' | b'['
                    | b']' => format!("%{b:02X}"),
                    _ => (b as char).to_string(),
                })
                .collect();
        let reply = if i % 2 == 0 {
            match client()
                .get(server.url(&format!("/event?{query}")))
                .send()
                .await
            {
                Ok(r) => read(r).await,
                Err(_) => continue, // a URL awc itself refuses to send
            }
        } else {
            post(
                &server.url("/event"),
                "application/x-www-form-urlencoded",
                raw,
            )
            .await
        };
        assert!(reply.status < 500, "{} for {query:?}", reply.status);
    }
    assert_eq!(get(&server.url("/health")).await.status, 200);
    server.stop().await;
}

/// `server.trusted_proxies`: forwarded headers count from a configured proxy only, and even
/// then only the hops it vouches for; from anyone else the socket's peer is the client and a
/// claimed `https` leaves the cookie `SameSite=Lax`.
#[actix_web::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let cat = catalog(
        vec![],
        json!([
            {"sid": 11, "name": "loopback", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_ip == \"127.0.0.0\"", "dataSourceId": 1},
            {"sid": 12, "name": "claimed", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_ip == \"198.51.100.0\"", "dataSourceId": 1},
            {"sid": 13, "name": "real", "traitType": "RULE_BASED_TRAIT", "traitRule": "h_ip == \"203.0.113.0\"", "dataSourceId": 1}
        ]),
        json!([]),
    );
    let spoofed: [(&str, &str); 2] = [
        ("x-forwarded-for", "198.51.100.9"),
        ("x-forwarded-proto", "https"),
    ];
    let untrusting = TestServer::start(&cat).await;
    let reply = get_with(&untrusting.url("/event?d_rtbd=json&d_cts=2"), &spoofed).await;
    assert_eq!(reply.json()["traits"], json!([11]), "{}", reply.json());
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=Lax") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let forwarded = [("forwarded", "for=198.51.100.9;proto=https")];
    let reply = get_with(&untrusting.url("/event?d_rtbd=json&d_cts=2"), &forwarded).await;
    assert_eq!(reply.json()["traits"], json!([11]));
    untrusting.stop().await;

    let behind_proxy = TestServer::start_with(&cat, |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]
    })
    .await;
    let url = behind_proxy.url("/event?d_rtbd=json&d_cts=2");
    // The client wrote the first address itself; the proxy appended the one it saw.
    let chain = [
        ("x-forwarded-for", "198.51.100.9, 203.0.113.77"),
        ("x-forwarded-proto", "https"),
    ];
    let reply = get_with(&url, &chain).await;
    assert_eq!(reply.json()["traits"], json!([13]), "{}", reply.json());
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("Secure"),
        "{cookie}"
    );
    let forwarded = [(
        "forwarded",
        "for=198.51.100.9, for=\"203.0.113.77:5511\";proto=https",
    )];
    let reply = get_with(&url, &forwarded).await;
    assert_eq!(reply.json()["traits"], json!([13]));
    assert!(reply.header("set-cookie").unwrap().contains("Secure"));
    // A proxy that does not know the client: no address rather than the proxy's own.
    let reply = get_with(&url, &[("x-forwarded-for", "unknown")]).await;
    assert_eq!(reply.json()["traits"], json!([]), "{}", reply.json());
    // No header from the proxy: the proxy itself is the client.
    let reply = get(&url).await;
    assert_eq!(reply.json()["traits"], json!([11]));
    behind_proxy.stop().await;
}
