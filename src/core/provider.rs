//! The provider protocol (`docs/provider-protocol.md`), free of actix: the request body the DCS
//! sends, the answer it accepts, and the per-provider outcome of a call.
//!
//! Answers are untrusted. Anything but a well-formed `200` OpenRTB `user.data` body or a `204`
//! is that provider's failure for this call and nothing more; well-formed answers are bounded
//! (segment count, id length, ttl) before they reach the engine or the profile.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::request::PrivacyParams;
use crate::core::signals::Signals;

/// Most segments taken from one answer; the rest are ignored.
pub const MAX_ANSWER_SEGMENTS: usize = 1000;
/// Longest segment id accepted; longer ones are ignored.
pub const MAX_SEGMENT_ID_BYTES: usize = 256;
/// Longest answer cache lifetime a provider may ask for (7 days).
pub const MAX_ANSWER_TTL_SECS: u64 = 7 * 86_400;

/// What happened with one provider for one event (`providers` in the `d_cts=2` response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with segments.
    Ok,
    /// Answered `204`, or `200` without segments.
    NoData,
    /// Did not answer within its budget.
    Timeout,
    /// Failed: connection error, bad status, bad body.
    Error,
    /// Not called: the event's remaining budget was below the useful minimum.
    Skipped,
    /// Not called: a fresh cached answer was used.
    Cached,
    /// Not called: its circuit breaker is open.
    CircuitOpen,
    /// Not called: the visitor gave that provider no consent.
    NoConsent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NoData => "nodata",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
            Outcome::Cached => "cached",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::NoConsent => "no_consent",
        }
    }
}

/// Everything about the event that goes into a provider request.
pub struct RequestContext<'a> {
    pub tid: &'a str,
    pub visitor_uuid: &'a str,
    pub signals: &'a Signals,
    pub privacy: &'a PrivacyParams,
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    tmax: u64,
    user: User<'a>,
    signals: SignalsOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<Site<'a>>,
    device: Device<'a>,
    regs: Regs<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    ext: UserExt<'a>,
}

#[derive(Serialize)]
struct UserExt<'a> {
    uuid: &'a str,
}

#[derive(Serialize)]
struct Site<'a> {
    page: &'a str,
}

#[derive(Serialize)]
struct Device<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ua: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
}

#[derive(Serialize)]
struct Regs<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    gdpr: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gdpr_consent: Option<&'a str>,
    coppa: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    us_privacy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpp_sid: Option<&'a str>,
}

/// Shareable signals: one value as a string, several as an array.
struct SignalsOut<'a>(&'a Signals);

impl Serialize for SignalsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, values) in self.0.shareable() {
            match values {
                [one] => map.serialize_entry(k, one)?,
                many => map.serialize_entry(k, many)?,
            }
        }
        map.end()
    }
}

/// The JSON body POSTed to a provider. `provider_user_id` is the provider's own id for the
/// visitor when an ID sync mapped one.
pub fn request_body(
    ctx: &RequestContext<'_>,
    tmax_ms: u64,
    provider_user_id: Option<&str>,
) -> Vec<u8> {
    let first = |k: &str| ctx.signals.get(k).first().map(String::as_str);
    let body = Body {
        id: ctx.tid,
        tmax: tmax_ms,
        user: User {
            id: provider_user_id,
            ext: UserExt {
                uuid: ctx.visitor_uuid,
            },
        },
        signals: SignalsOut(ctx.signals),
        site: first("h_referer").map(|page| Site { page }),
        device: Device {
            ua: first("h_user-agent"),
            ip: first("h_ip")
                .and_then(|ip| ip.parse().ok())
                .map(anonymize_ip),
        },
        regs: Regs {
            gdpr: ctx.privacy.gdpr.as_deref().and_then(|g| match g {
                "1" => Some(1),
                "0" => Some(0),
                _ => None,
            }),
            gdpr_consent: ctx.privacy.gdpr_consent.as_deref(),
            coppa: u8::from(ctx.privacy.coppa),
            us_privacy: ctx.privacy.us_privacy.as_deref(),
            gpp: ctx.privacy.gpp.as_deref(),
            gpp_sid: ctx.privacy.gpp_sid.as_deref(),
        },
    };
    // Serializing borrowed strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Providers see the IP with its last octet zeroed (IPv6: only the /48 prefix is kept).
pub fn anonymize_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0")
        }
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[3..].fill(0);
            std::net::Ipv6Addr::from(seg).to_string()
        }
    }
}

/// A usable provider answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub segments: Vec<String>,
    /// Seconds the answer may be reused, when the provider said.
    pub ttl_secs: Option<u64>,
}

/// Why an answer was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    #[error("body is not an OpenRTB user.data answer: {0}")]
    Body(String),
}

#[derive(Deserialize)]
struct AnswerIn {
    user: Option<UserIn>,
    ttl: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UserIn {
    data: Option<Vec<DataIn>>,
}

#[derive(Deserialize)]
struct DataIn {
    segment: Option<Vec<SegmentIn>>,
}

#[derive(Deserialize)]
struct SegmentIn {
    id: serde_json::Value,
}

/// Interprets a provider's HTTP answer: `204` is "no data" (an empty answer), `200` must carry
/// OpenRTB `user.data`; anything else is an error.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Answer, AnswerError> {
    match status {
        204 => {
            return Ok(Answer {
                segments: Vec::new(),
                ttl_secs: None,
            })
        }
        200 => {}
        other => return Err(AnswerError::Status(other)),
    }
    let parsed: AnswerIn =
        serde_json::from_slice(body).map_err(|e| AnswerError::Body(e.to_string()))?;
    let mut segments = Vec::new();
    let data = parsed.user.and_then(|u| u.data).unwrap_or_default();
    'outer: for d in data {
        for s in d.segment.unwrap_or_default() {
            // OpenRTB ids are strings; integer ids are accepted as their decimal text.
            let id = match s.id {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
                _ => continue,
            };
            if id.is_empty() || id.len() > MAX_SEGMENT_ID_BYTES {
                continue;
            }
            if segments.len() == MAX_ANSWER_SEGMENTS {
                break 'outer;
            }
            if !segments.contains(&id) {
                segments.push(id);
            }
        }
    }
    let ttl_secs = parsed
        .ttl
        .and_then(|t| t.as_u64())
        .map(|t| t.min(MAX_ANSWER_TTL_SECS));
    Ok(Answer { segments, ttl_secs })
}

impl Answer {
    pub fn outcome(&self) -> Outcome {
        if self.segments.is_empty() {
            Outcome::NoData
        } else {
            Outcome::Ok
        }
    }
}

/// The time a provider may use for this event (`tmax`), or `None` when it is below the useful
/// minimum and the provider is skipped.
///
/// `tmax` = what is really left of the deadline, minus the network buffer (the answer's trip
/// back) and the reply reserve (evaluation, persistence, writing the reply), capped by the
/// provider's own timeout (`docs/provider-protocol.md`, Budgets).
pub fn budget(
    remaining: Duration,
    provider_timeout: Duration,
    network_buffer: Duration,
    reply_reserve: Duration,
    minimum: Duration,
) -> Option<Duration> {
    let tmax = remaining
        .saturating_sub(network_buffer)
        .saturating_sub(reply_reserve)
        .min(provider_timeout);
    (tmax >= minimum).then_some(tmax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_shape() {
        let mut s = Signals::new();
        s.add("c_page", ["cars".to_string()]);
        s.add("c_multi", ["a".to_string(), "b".to_string()]);
        s.add("p_secret", ["x".to_string()]);
        s.set("h_referer", "https://site.example/page");
        s.set("h_user-agent", "UA/1");
        s.set("h_ip", "203.0.113.77");
        let privacy = PrivacyParams {
            gdpr: Some("1".into()),
            gdpr_consent: Some("CONSENT".into()),
            us_privacy: Some("1YNN".into()),
            ..Default::default()
        };
        let ctx = RequestContext {
            tid: "abc",
            visitor_uuid: "123",
            signals: &s,
            privacy: &privacy,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&ctx, 80, Some("prov-1"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": "abc", "tmax": 80,
                "user": {"id": "prov-1", "ext": {"uuid": "123"}},
                "signals": {"c_multi": ["a", "b"], "c_page": "cars"},
                "site": {"page": "https://site.example/page"},
                "device": {"ua": "UA/1", "ip": "203.0.113.0"},
                "regs": {"gdpr": 1, "gdpr_consent": "CONSENT", "coppa": 0, "us_privacy": "1YNN"}
            })
        );
    }

    #[test]
    fn budget_arithmetic() {
        let ms = Duration::from_millis;
        // 100 left, 5 buffer, 5 reserve → 90, capped by an 80 ms provider timeout.
        assert_eq!(budget(ms(100), ms(80), ms(5), ms(5), ms(10)), Some(ms(80)));
        assert_eq!(budget(ms(50), ms(80), ms(5), ms(5), ms(10)), Some(ms(40)));
        assert_eq!(
            budget(ms(19), ms(80), ms(5), ms(5), ms(10)),
            None,
            "9 ms is below the minimum"
        );
        assert_eq!(budget(ms(0), ms(80), ms(5), ms(5), ms(1)), None);
    }

    #[test]
    fn ips_are_anonymized() {
        assert_eq!(anonymize_ip("10.1.2.3".parse().unwrap()), "10.1.2.0");
        assert_eq!(
            anonymize_ip("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1::"
        );
    }

    #[test]
    fn answers() {
        let ok = br#"{"user":{"data":[{"id":"acme","name":"acme","segment":[{"id":"auto"},{"id":"age","value":"1"},{"id":7}]}]},"ttl":3600}"#;
        assert_eq!(
            parse_answer(200, ok),
            Ok(Answer {
                segments: vec!["auto".into(), "age".into(), "7".into()],
                ttl_secs: Some(3600)
            })
        );
        assert_eq!(
            parse_answer(204, b"ignored").unwrap().outcome(),
            Outcome::NoData
        );
        assert_eq!(parse_answer(200, b"{}").unwrap().outcome(), Outcome::NoData);
        assert_eq!(parse_answer(500, b""), Err(AnswerError::Status(500)));
        assert_eq!(parse_answer(302, b""), Err(AnswerError::Status(302)));
        assert!(matches!(
            parse_answer(200, b"not json"),
            Err(AnswerError::Body(_))
        ));
        assert!(matches!(
            parse_answer(200, br#"{"user":{"data":"nope"}}"#),
            Err(AnswerError::Body(_))
        ));
        assert!(matches!(
            parse_answer(200, br#"[1,2]"#),
            Err(AnswerError::Body(_))
        ));
    }

    #[test]
    fn answers_are_bounded() {
        let many: Vec<String> = (0..5000).map(|i| format!(r#"{{"id":"s{i}"}}"#)).collect();
        let long = "x".repeat(MAX_SEGMENT_ID_BYTES + 1);
        let body = format!(
            r#"{{"user":{{"data":[{{"segment":[{{"id":"{long}"}},{{"id":""}},{{"id":null}},{}]}}]}},"ttl":999999999}}"#,
            many.join(",")
        );
        let a = parse_answer(200, body.as_bytes()).unwrap();
        assert_eq!(a.segments.len(), MAX_ANSWER_SEGMENTS);
        assert_eq!(a.segments[0], "s0");
        assert_eq!(a.ttl_secs, Some(MAX_ANSWER_TTL_SECS));
    }
}
