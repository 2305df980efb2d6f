//! What cookie (`ADS`) and URL (`PUSH`) destinations put in an `/event` answer
//! (`docs/destinations.md`): `stuff` entries and `dests` URLs built from the visitor's
//! segments and the destinations' mappings. Pure functions, free of actix.
//!
//! Choices where AAM is vague:
//! - Only mappings of segments the visitor is in now count; a destination with none of them
//!   contributes nothing to this answer.
//! - A mapping without `valueAlias` (cookies) or `traitAlias` (URLs) uses the segment id.
//! - Cookie keys and values and URL aliases are percent-encoded (AAM encodes cookie data);
//!   separators are not. A cookie value longer than `maxSize` keeps the pairs and values that
//!   fit, in mapping order.
//! - Macros are case-insensitive. `%DPID_<n>%` is the visitor's synced id in data source n,
//!   empty when there is none; `${GDPR}` is the request's `gdpr` (0 when absent) and
//!   `${GDPR_CONSENT_<vendor>}` its consent string when `gdpr=1`, else empty.

use std::collections::BTreeMap;

use crate::core::catalog::{Destination, DestinationType, FormatType, Mapping, Status};
use crate::core::response::{Dest, Stuff};

/// What URL macros are filled with.
pub struct UrlContext<'a> {
    pub uuid: &'a str,
    pub dcs_region: u32,
    pub now: i64,
    pub random: u64,
    pub synced_ids: &'a BTreeMap<u32, String>,
    pub gdpr: Option<&'a str>,
    pub gdpr_consent: Option<&'a str>,
}

fn mapped<'a>(d: &'a Destination, segments: &'a [u64]) -> impl Iterator<Item = &'a Mapping> {
    d.mappings
        .iter()
        .filter(move |m| segments.binary_search(&m.sid).is_ok())
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn or_sid(alias: &str, sid: u64) -> String {
    if alias.is_empty() {
        sid.to_string()
    } else {
        alias.to_string()
    }
}

/// The `stuff` entries of the active cookie destinations, for a visitor in `segments`
/// (sorted).
pub fn stuff(destinations: &[Destination], segments: &[u64]) -> Vec<Stuff> {
    let mut out = Vec::new();
    for d in destinations
        .iter()
        .filter(|d| d.destination_type == DestinationType::Ads && d.status == Status::Active)
    {
        // Keys in first-mapping order, each with its values.
        let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
        for m in mapped(d, segments) {
            let key = match d.format_type {
                FormatType::SingleKey => d.single_key.clone().unwrap_or_default(),
                FormatType::KeyValue => or_sid(&m.trait_alias, m.sid),
            };
            let value = encode(&or_sid(&m.value_alias, m.sid));
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => pairs.push((key, vec![value])),
            }
        }
        let max = d.max_size as usize;
        let mut cv = String::new();
        for (key, values) in pairs {
            let head = format!(
                "{}{}{}",
                if cv.is_empty() {
                    ""
                } else {
                    &d.serialization_separator
                },
                encode(&key),
                d.key_separator
            );
            let mut pair = String::new();
            for v in values {
                let piece = if pair.is_empty() {
                    v
                } else {
                    format!("{}{v}", d.value_separator)
                };
                if cv.len() + head.len() + pair.len() + piece.len() > max {
                    break;
                }
                pair.push_str(&piece);
            }
            if pair.is_empty() {
                break;
            }
            cv.push_str(&head);
            cv.push_str(&pair);
        }
        if cv.is_empty() {
            continue;
        }
        out.push(Stuff {
            cn: d.cookie_name.clone().unwrap_or_default(),
            cv,
            ttl: d.ttl,
            dmn: d.cname_domain.clone().unwrap_or_default(),
        });
    }
    out
}

/// The `dests` URLs of the active URL destinations, for a visitor in `segments` (sorted).
pub fn dests(destinations: &[Destination], segments: &[u64], ctx: &UrlContext<'_>) -> Vec<Dest> {
    let mut out = Vec::new();
    for d in destinations
        .iter()
        .filter(|d| d.destination_type == DestinationType::Push && d.status == Status::Active)
    {
        let Some(plain) = d.url_format_string.as_deref() else {
            continue;
        };
        let secure = d
            .secure_url_format_string
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(plain);
        let aliases: Vec<String> = mapped(d, segments)
            .map(|m| encode(&or_sid(&m.trait_alias, m.sid)))
            .collect();
        if aliases.is_empty() {
            continue;
        }
        let groups: Vec<String> = if d.serialization_enabled {
            vec![aliases.join(&d.delimiter)]
        } else {
            aliases
        };
        for alias in groups {
            out.push(Dest {
                c: expand(plain, &alias, "http", ctx),
                e: expand(secure, &alias, "https", ctx),
                y: "img",
            });
        }
    }
    out
}

/// Replaces the macros of a URL template.
fn expand(template: &str, alias: &str, proto: &str, ctx: &UrlContext<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find(['%', '$']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match replacement(tail, alias, proto, ctx) {
            Some((value, used)) => {
                out.push_str(&value);
                rest = &tail[used..];
            }
            None => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The macro at the start of `tail`, if one is: its value and its length.
fn replacement(
    tail: &str,
    alias: &str,
    proto: &str,
    ctx: &UrlContext<'_>,
) -> Option<(String, usize)> {
    let upper = |n: usize| tail.get(..n).map(str::to_ascii_uppercase);
    let fixed: [(&str, String); 6] = [
        ("%ALIAS%", alias.to_string()),
        ("%DID%", ctx.uuid.to_string()),
        ("%HTTP_PROTO%", proto.to_string()),
        ("%RND%", ctx.random.to_string()),
        ("%TIMESTAMP%", ctx.now.to_string()),
        ("%REGION%", ctx.dcs_region.to_string()),
    ];
    for (name, value) in fixed {
        if upper(name.len()).as_deref() == Some(name) {
            return Some((value, name.len()));
        }
    }
    if upper(7).as_deref() == Some("${GDPR}") {
        return Some((encode(ctx.gdpr.unwrap_or("0")), 7));
    }
    let numbered = |prefix: &str, end: char| -> Option<(u32, usize)> {
        let head = tail.get(..prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) {
            return None;
        }
        let digits: String = tail[prefix.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let after = prefix.len() + digits.len();
        (tail[after..].starts_with(end) && !digits.is_empty())
            .then(|| digits.parse().ok().map(|n| (n, after + 1)))
            .flatten()
    };
    if let Some((dpid, used)) = numbered("%DPID_", '%') {
        let id = ctx
            .synced_ids
            .get(&dpid)
            .map(|s| encode(s))
            .unwrap_or_default();
        return Some((id, used));
    }
    if let Some((_vendor, used)) = numbered("${GDPR_CONSENT_", '}') {
        let consent = match ctx.gdpr {
            Some("1") => ctx.gdpr_consent.map(encode).unwrap_or_default(),
            _ => String::new(),
        };
        return Some((consent, used));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn destination(v: serde_json::Value) -> Destination {
        let mut base = json!({"destinationId": 1, "name": "d"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn cookie_values_per_format_with_max_size() {
        let key_value = destination(
            json!({"destinationType": "ADS", "cookieName": "aam", "ttl": 7,
            "cnameDomain": ".site.example",
            "mappings": [{"sid": 101, "traitAlias": "segs", "valueAlias": "cars"},
                         {"sid": 102, "traitAlias": "segs", "valueAlias": "sport fans"},
                         {"sid": 103, "traitAlias": "age", "valueAlias": "25-34"},
                         {"sid": 104, "traitAlias": "never"}]}),
        );
        let s = stuff(std::slice::from_ref(&key_value), &[101, 102, 103]);
        assert_eq!(
            s,
            [Stuff {
                cn: "aam".into(),
                cv: "segs=cars,sport%20fans;age=25-34".into(),
                ttl: 7,
                dmn: ".site.example".into()
            }]
        );
        let mut small = key_value.clone();
        small.max_size = 17;
        assert_eq!(
            stuff(&[small], &[101, 102, 103])[0].cv,
            "segs=cars",
            "what fits"
        );
        assert!(
            stuff(&[key_value], &[999]).is_empty(),
            "nothing mapped, nothing sent"
        );

        let single = destination(json!({"destinationType": "ADS", "cookieName": "aamseg",
            "formatType": "single_key", "singleKey": "aamseg",
            "mappings": [{"sid": 101}, {"sid": 102, "valueAlias": "b"}]}));
        assert_eq!(stuff(&[single], &[101, 102])[0].cv, "aamseg=101,b");
    }

    #[test]
    fn url_destinations_with_macros() {
        let push = destination(json!({"destinationType": "PUSH",
            "urlFormatString": "http://p.example/s?seg=%alias%&u=%DID%&c=%DPID_7%&g=${GDPR}&cs=${GDPR_CONSENT_565}&t=%TIMESTAMP%&r=%REGION%&x=%RND%&p=%HTTP_PROTO%&pct=100%",
            "secureUrlFormatString": "https://p.example/s?seg=%ALIAS%",
            "mappings": [{"sid": 101, "traitAlias": "cars"}, {"sid": 102}]}));
        let mut synced = BTreeMap::new();
        synced.insert(7, "crm 1".to_string());
        let ctx = UrlContext {
            uuid: "123",
            dcs_region: 7,
            now: 1700000000,
            random: 42,
            synced_ids: &synced,
            gdpr: Some("1"),
            gdpr_consent: Some("CO-x"),
        };
        let d = dests(std::slice::from_ref(&push), &[101, 102], &ctx);
        assert_eq!(d.len(), 2, "one call per segment without serialization");
        assert_eq!(
            d[0].c,
            "http://p.example/s?seg=cars&u=123&c=crm%201&g=1&cs=CO-x&t=1700000000&r=7&x=42&p=http&pct=100%"
        );
        assert_eq!(d[1].e, "https://p.example/s?seg=102");
        assert_eq!(d[0].y, "img");

        let mut serialized = push;
        serialized.serialization_enabled = true;
        serialized.delimiter = ";".into();
        serialized.secure_url_format_string = None;
        let ctx = UrlContext { gdpr: None, ..ctx };
        let d = dests(&[serialized], &[101, 102], &ctx);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].c.starts_with("http://p.example/s?seg=cars;102&"),
            "{}",
            d[0].c
        );
        assert!(
            d[0].c.contains("&g=0&cs=&"),
            "no consent without gdpr=1: {}",
            d[0].c
        );
        assert!(
            d[0].e.contains("p=https"),
            "the secure URL falls back on the plain one"
        );
    }
}
