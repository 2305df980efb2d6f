//! The rule languages end to end (docs/rules.md): events over real HTTP qualify and disqualify
//! traits by every operator, and frequency segments qualify on the Nth hit.

use serde_json::json;

use crate::common::*;

fn rule(sid: u64, text: &str) -> serde_json::Value {
    json!({"sid": sid, "name": format!("t{sid}"), "traitType": "RULE_BASED_TRAIT",
           "traitRule": text, "dataSourceId": 1})
}

fn operator_catalog() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([
            rule(1, "c_color == blue"),
            rule(2, r#"c_color = "Blue""#),
            rule(3, "c_color != blue"),
            rule(4, "c_price < 10"),
            rule(5, "c_price <= 10"),
            rule(6, "c_price > 10"),
            rule(7, "c_price >= 10.5"),
            rule(8, "c_price => 11"),
            rule(9, "c_price == 10"),
            rule(10, "c_url contains shop"),
            rule(11, "c_url startswith https"),
            rule(12, r#"c_url endswith ".com""#),
            rule(13, r#"c_id matchesregex "^[0-9]{3}-x$""#),
            rule(14, r#"c_q matcheswords "red car""#),
            rule(15, "c_dev in [mobile, tablet]"),
            rule(16, "c_dev not in [desktop]"),
            rule(17, "c_a == 1 AND NOT (c_b == 2 OR c_c == 3)"),
            rule(18, "C_COLOR == blue"),
        ]),
        json!([
            {"sid": 501, "name": "third visit", "segmentRule": "FREQUENCY([1T]) >= 3", "dataSourceId": 1},
            {"sid": 502, "name": "once today", "segmentRule": "1T AND FREQUENCY([1T] <= 1D) == 1", "dataSourceId": 1},
            {"sid": 503, "name": "blue or cheap", "segmentRule": "FREQUENCY([1T, 4T]) >= 2", "dataSourceId": 1}
        ]),
    )
}

#[actix_web::test]
async fn every_operator_qualifies_and_disqualifies_as_specified() {
    let server = TestServer::start(&operator_catalog()).await;
    let cases: &[(&str, &[u64])] = &[
        ("c_color=blue", &[1]),
        ("c_color=Blue", &[2, 3]),
        ("c_price=10.0", &[5, 9]),
        ("c_price=11", &[6, 7, 8]),
        ("c_price=9.99", &[4, 5]),
        ("c_price=abc", &[]),
        ("c_url=https%3A%2F%2Fshop.example.com", &[10, 11, 12]),
        ("c_url=http%3A%2F%2Fexample.org", &[]),
        ("c_id=123-x", &[13]),
        ("c_id=1234-x", &[]),
        ("c_q=a%20red%20fast%20car", &[14]),
        ("c_q=redcar", &[]),
        ("c_dev=tablet", &[15, 16]),
        ("c_dev=desktop", &[]),
        // A multi-valued key matches when any value does.
        ("c_dev=desktop,mobile", &[15, 16]),
        // Absent keys match nothing, `!=` and `not in` included.
        ("c_other=1", &[]),
        ("c_a=1", &[17]),
        ("c_a=1&c_c=3", &[]),
        ("c_a=1&c_b=3", &[17]),
    ];
    for (query, expected) in cases {
        let reply = get(&server.url(&format!("/event?d_rtbd=json&d_cts=2&{query}"))).await;
        assert_eq!(reply.status, 200, "{query}");
        let body = reply.json();
        assert!(body.get("errors").is_none(), "{query}: {body}");
        assert_eq!(body["traits"], json!(expected), "{query}");
    }
    server.stop().await;
}

#[actix_web::test]
async fn frequency_segments_qualify_on_the_nth_hit() {
    let server = TestServer::start(&operator_catalog()).await;
    let hit = |query: &str| {
        server.url(&format!(
            "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&{query}"
        ))
    };
    let segments = |reply: Reply| reply.json()["segments"].clone();

    assert_eq!(segments(get(&hit("c_color=blue")).await), json!([502]));
    assert_eq!(
        segments(get(&hit("c_color=blue")).await),
        json!([503]),
        "second hit: out of 'once today', into 'two of 1T or 4T'"
    );
    assert_eq!(
        segments(get(&hit("c_page=x")).await),
        json!([503]),
        "kept between hits"
    );
    assert_eq!(segments(get(&hit("c_color=blue")).await), json!([501, 503]));
    server.stop().await;
}

#[actix_web::test]
async fn frequency_counts_survive_a_restart() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(dir.path(), &operator_catalog());
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    for _ in 0..2 {
        get(&server.url(&format!("/event?d_rtbd=json&d_uuid={VISITOR}&c_color=blue"))).await;
    }
    server.stop().await;
    let server = TestServer::start_config(config, dir).await;
    let reply = get(&server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&d_uuid={VISITOR}&c_color=blue"
    )))
    .await;
    assert_eq!(
        reply.json()["segments"],
        json!([501, 503]),
        "the third hit counts the first two"
    );
    server.stop().await;
}
