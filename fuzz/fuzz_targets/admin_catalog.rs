//! Admin API bodies for catalog resources: `POST` or `PUT` of a provider, trait, segment or
//! destination on a small catalog, then what the catalog writer does with the result (compile
//! it) and what events get out of it (cookie and URL destinations). An object the API answers
//! with can be sent back with `PUT` unchanged, secret placeholder included; a compiled
//! catalog's cookies keep to `maxSize` and its URLs are printable ASCII starting http(s).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tributary::admin::resource::{create, replace, Resource};
use tributary::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use tributary::core::destinations::{dests, stuff, UrlContext};
use tributary::core::engine::CompiledCatalog;

fn sample() -> Catalog {
    serde_json::from_value(json!({
        "providers": [{"pid": 1, "name": "acme", "url": "https://seg.example/q",
            "dataSourceId": 1001, "secret": "s3cret"}],
        "traits": [
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT",
             "traitRule": "c_page == \"cars\"", "dataSourceId": 1, "integrationCode": "cars"},
            {"sid": 21, "name": "intender", "traitType": "ON_BOARDED_TRAIT",
             "traitRule": "segment == \"auto\"", "dataSourceId": 1001, "ttl": 30}
        ],
        "segments": [
            {"sid": 101, "name": "auto", "segmentRule": "11T AND 21T", "dataSourceId": 1},
            {"sid": 102, "name": "often", "segmentRule": "FREQUENCY([11T] <= 7D) >= 3",
             "dataSourceId": 1}
        ],
        "destinations": [
            {"destinationId": 1, "name": "cookie", "destinationType": "ADS",
             "cookieName": "segs", "maxSize": 40,
             "mappings": [{"sid": 101, "traitAlias": "k", "valueAlias": "auto"}, {"sid": 102}]},
            {"destinationId": 2, "name": "pixel", "destinationType": "PUSH",
             "urlFormatString": "http://px.example/s?a=%ALIAS%&r=%RND%",
             "mappings": [{"sid": 101, "traitAlias": "a b"}]},
            {"destinationId": 3, "name": "feed", "destinationType": "S2S",
             "url": "https://feed.example/in", "secret": "k", "mappings": [{"sid": 102}]}
        ]
    }))
    .expect("the sample catalog reads")
}

/// `POST` (or `PUT` of the kind's first object), then the checks above.
fn edit<T: Resource + PartialEq + std::fmt::Debug>(put: bool, body: Value) {
    let mut catalog = sample();
    let result = if put {
        let id = T::all(&catalog)[0].id();
        replace::<T>(&mut catalog, id, body)
    } else {
        create::<T>(&mut catalog, body)
    };
    let (_, object) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // What `GET` shows, sent back as it is, changes nothing.
    let shown = serde_json::to_value(object.redacted()).expect("an object serializes");
    let (_, again) = replace::<T>(&mut catalog.clone(), object.id(), shown)
        .unwrap_or_else(|e| panic!("the API's own answer is refused: {e}"));
    assert_eq!(again, object);

    let Ok(compiled) = CompiledCatalog::compile(&catalog, 2) else {
        return;
    };
    let destinations = compiled.destinations();
    let mut segments: Vec<u64> = catalog.segments.iter().map(|s| s.sid).collect();
    segments.sort_unstable();
    for d in destinations {
        for cookie in stuff(std::slice::from_ref(d), &segments) {
            assert!(cookie.cv.len() <= d.max_size as usize, "{cookie:?}");
        }
    }
    let synced: BTreeMap<u32, String> = [(1001, "é/ &%".to_string())].into_iter().collect();
    let ctx = UrlContext {
        uuid: "07955261652886032950143702505894272138",
        dcs_region: 7,
        now: 1_700_000_000,
        random: 42,
        synced_ids: &synced,
        gdpr: Some("1"),
        gdpr_consent: Some("CQ a+b/=é"),
    };
    for dest in dests(destinations, &segments, &ctx) {
        for url in [&dest.c, &dest.e] {
            let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
            assert!(
                lower.starts_with("http://") || lower.starts_with("https://"),
                "{url}"
            );
            assert!(url.bytes().all(|b| b.is_ascii_graphic()), "{url}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the resource (p, t, s, d) and the method (lower case POST, upper
    // case PUT); the rest is the JSON body.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let put = pick.is_ascii_uppercase();
    match pick.to_ascii_lowercase() {
        b'p' => edit::<Provider>(put, body),
        b't' => edit::<Trait>(put, body),
        b's' => edit::<Segment>(put, body),
        b'd' => edit::<Destination>(put, body),
        _ => {}
    }
});
