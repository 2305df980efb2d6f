//! Cookie and URL destinations in `/event` answers over real HTTP: `stuff` always, `dests`
//! with `d_dst=1`, from the visitor's segments and the destinations' mappings.

use serde_json::json;

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
