//! Catalogs and events for benchmark scenarios.
//!
//! The small catalog has ten traits (rule-based ones over the event's signals, one onboarded
//! trait per provider) and five segments. The large one adds generated traits up to 100,000 and
//! segments up to 20,000, AAM's limits. Both are driven by the same events, so their ratio is
//! the cost of catalog size alone.

use rand::rngs::SmallRng;
use rand::RngExt as _;
use serde_json::{json, Value};

/// Keys the generated traits of the large catalog read (ten traits per key).
pub const GENERATED_KEYS: u64 = 10_000;
const VALUES_PER_KEY: u64 = 10;

/// A provider as the bench configures it.
pub struct BenchProvider {
    pub pid: u32,
    pub name: String,
    pub url: String,
    pub data_source_id: u32,
    /// The onboarded trait's rule matches this segment id.
    pub segment: String,
}

fn rule_trait(sid: u64, rule: &str) -> Value {
    json!({"sid": sid, "name": format!("trait {sid}"), "traitType": "RULE_BASED_TRAIT",
           "traitRule": rule, "dataSourceId": 1})
}

fn segment(sid: u64, rule: &str) -> Value {
    json!({"sid": sid, "name": format!("segment {sid}"), "segmentRule": rule, "dataSourceId": 1})
}

/// The ten-trait catalog, with `providers` (cache lifetime `cache_ttl_secs`).
pub fn small(providers: &[BenchProvider], cache_ttl_secs: u32, timeout_ms: u32) -> Value {
    let mut traits = vec![
        rule_trait(11, r#"c_page == "cars""#),
        rule_trait(12, "c_basket > 100"),
        rule_trait(13, r#"c_section contains "sport""#),
        rule_trait(14, r#"c_page startswith "news""#),
        rule_trait(15, "c_basket <= 20"),
        rule_trait(16, "c_device in [mobile, tablet]"),
        rule_trait(17, r#"c_device == desktop AND c_section == "home""#),
    ];
    let onboarded = [21u64, 22, 23];
    for (p, sid) in providers.iter().zip(onboarded) {
        traits.push(json!({"sid": sid, "name": format!("{} segment", p.name),
                           "traitType": "ON_BOARDED_TRAIT",
                           "traitRule": format!("segment == \"{}\"", p.segment),
                           "dataSourceId": p.data_source_id}));
    }
    // Without a provider, its onboarded trait becomes a rule-based one that events never
    // realize, so the catalog keeps ten traits and the same segments.
    for sid in onboarded.iter().skip(providers.len()) {
        traits.push(rule_trait(*sid, &format!("c_unused{sid} == 1")));
    }
    let segments = vec![
        segment(101, "11T AND (12T OR 21T)"),
        segment(102, "12T OR 13T"),
        segment(103, "14T AND NOT 15T"),
        segment(104, "16T OR 17T"),
        segment(105, "21T AND 22T"),
    ];
    let providers: Vec<Value> = providers
        .iter()
        .map(|p| {
            json!({"pid": p.pid, "name": p.name, "url": p.url, "dataSourceId": p.data_source_id,
                   "timeoutMs": timeout_ms, "cacheTtlSecs": cache_ttl_secs})
        })
        .collect();
    json!({"providers": providers, "traits": traits, "segments": segments})
}

/// The small catalog grown to `traits` traits and `segments` segments.
pub fn large(traits: u64, segments: u64) -> Value {
    let mut catalog = small(&[], 0, 80);
    let base_traits = catalog["traits"].as_array().map_or(0, Vec::len) as u64;
    let base_segments = catalog["segments"].as_array().map_or(0, Vec::len) as u64;
    let generated = traits.saturating_sub(base_traits);
    if let Some(list) = catalog["traits"].as_array_mut() {
        for i in 0..generated {
            let key = i % GENERATED_KEYS;
            let value = (i / GENERATED_KEYS) % VALUES_PER_KEY;
            list.push(rule_trait(1000 + i, &format!(r#"c_k{key} == "v{value}""#)));
        }
    }
    if let Some(list) = catalog["segments"].as_array_mut() {
        for j in 0..segments.saturating_sub(base_segments) {
            let a = 1000 + (j * 7) % generated.max(1);
            let b = 1000 + (j * 13 + 1) % generated.max(1);
            let op = if j % 2 == 0 { "AND" } else { "OR" };
            list.push(segment(10_000 + j, &format!("{a}T {op} {b}T")));
        }
    }
    catalog
}

/// The request target of one event: a few signals, as a tag would send them.
///
/// The generated key `c_k…` depends on the visitor, so a visitor can realize at most the ten
/// large-catalog traits of its key: profiles stay the size real visitors have (a few dozen
/// traits), and the large-catalog scenario measures catalog size, not profile growth.
/// The `d_uuid` of bench visitor number `visitor`.
pub fn visitor_id(visitor: u64) -> u128 {
    10u128.pow(37) + u128::from(visitor)
}

pub fn event_target(visitor: u64, rng: &mut SmallRng) -> String {
    const PAGES: [&str; 4] = ["cars", "news/today", "home", "cars/suv"];
    const SECTIONS: [&str; 3] = ["sport", "finance", "home"];
    const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
    let id = visitor_id(visitor);
    format!(
        "/event?d_rtbd=json&d_uuid={id}&c_page={}&c_basket={}&c_section={}&c_device={}&c_k{}=v{}",
        PAGES[rng.random_range(0..PAGES.len())],
        rng.random_range(0..200),
        SECTIONS[rng.random_range(0..SECTIONS.len())],
        DEVICES[rng.random_range(0..DEVICES.len())],
        visitor % GENERATED_KEYS,
        rng.random_range(0..VALUES_PER_KEY),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::Catalog;
    use rand::SeedableRng;

    #[test]
    fn catalogs_are_valid_and_sized() {
        let providers: Vec<BenchProvider> = (1..=3)
            .map(|i| BenchProvider {
                pid: i,
                name: format!("p{i}"),
                url: format!("http://127.0.0.1:{}/segments", 9000 + i),
                data_source_id: 1000 + i,
                segment: format!("seg-{i}"),
            })
            .collect();
        let small: Catalog = serde_json::from_value(small(&providers, 0, 80)).unwrap();
        small.validate().unwrap();
        assert_eq!(small.traits.len(), 10);
        let none: Catalog = serde_json::from_value(super::small(&[], 0, 80)).unwrap();
        none.validate().unwrap();
        assert_eq!(none.traits.len(), 10);
        let large: Catalog = serde_json::from_value(large(2_000, 500)).unwrap();
        large.validate().unwrap();
        assert_eq!(large.traits.len(), 2_000);
        assert_eq!(large.segments.len(), 500);
    }

    #[test]
    fn events_parse() {
        let mut rng = SmallRng::seed_from_u64(1);
        let target = event_target(5, &mut rng);
        let query = target.split_once('?').unwrap().1;
        let r = crate::core::request::parse_event(query.as_bytes(), None).unwrap();
        assert!(r.errors.is_empty());
        assert_eq!(r.signals.len(), 5);
        assert_eq!(
            r.d_uuid.unwrap().to_string(),
            "10000000000000000000000000000000000005"
        );
    }
}
