//! A stored profile as read back from the store (sled, or a Redis Cluster other nodes and
//! other releases write to): decoded from any of its versions, it encodes and decodes again
//! to the same profile, and an event can be evaluated on it however odd its times and counts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tributary::core::catalog::Catalog;
use tributary::core::engine::{CompiledCatalog, EventInput, ProviderSegments};
use tributary::core::signals::Signals;
use tributary::store::{decode_profile, encode_profile};

const NOW: i64 = 1_700_000_000;

fn catalog() -> CompiledCatalog {
    let catalog: Catalog = serde_json::from_value(json!({
        "traits": [
            {"sid": 1, "name": "cars", "traitType": "RULE_BASED_TRAIT",
             "traitRule": "c_page == \"cars\"", "dataSourceId": 1, "ttl": 0},
            {"sid": 2, "name": "news", "traitType": "RULE_BASED_TRAIT",
             "traitRule": "c_page contains \"news\"", "dataSourceId": 1, "ttl": 1},
            {"sid": 3, "name": "intender", "traitType": "ON_BOARDED_TRAIT",
             "traitRule": "segment == \"auto\"", "dataSourceId": 1001, "ttl": 30}
        ],
        "segments": [
            {"sid": 101, "name": "auto", "segmentRule": "1T AND 3T", "dataSourceId": 1},
            {"sid": 102, "name": "often", "segmentRule": "FREQUENCY([1T, 2T] <= 7D) >= 3",
             "dataSourceId": 1},
            {"sid": 103, "name": "lapsed", "segmentRule": "2T AND NOT 1T", "dataSourceId": 1}
        ]
    }))
    .expect("the catalog reads");
    CompiledCatalog::compile(&catalog, 5).expect("the catalog compiles")
}

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = decode_profile(data) else {
        return;
    };
    let encoded = encode_profile(&profile).expect("a decoded profile encodes");
    assert_eq!(decode_profile(&encoded).ok().as_ref(), Some(&profile));

    let compiled = catalog();
    let mut signals = Signals::new();
    signals.add("c_page", ["cars".to_string(), "news today".to_string()]);
    let answer = ["auto".to_string()];
    let providers = [ProviderSegments {
        data_source_id: 1001,
        segments: &answer,
    }];
    let mut profile = profile;
    for now in [NOW, NOW + 86_400, profile.last_seen] {
        let event = EventInput {
            signals: &signals,
            providers: &providers,
            sids: &[1, 3, 99],
            tdpid: None,
            now,
            answers_only: false,
        };
        let _ = compiled.evaluate(&mut profile, &event);
        let _ = compiled.expire_realizations(&mut profile, now);
    }
});
