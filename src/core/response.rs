//! Rendering of `/event` answers (`docs/dcs-api.md`, The answer), free of actix: the AAM JSON
//! body, its JSONP form, the `X-Error` header value and the 1×1 pixel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::core::error::DcsError;

/// A transparent 1×1 GIF: the answer without `d_rtbd=json`.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// A cookie destination entry (`stuff`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stuff {
    pub cn: String,
    pub cv: String,
    pub ttl: u32,
    pub dmn: String,
}

/// A URL destination entry (`dests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dest {
    pub c: String,
    pub e: String,
    pub y: &'static str,
}

/// The JSON body of an `/event` answer, field for field as AAM sends it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventBody {
    pub stuff: Vec<Stuff>,
    /// Only with `d_dst=1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dests: Option<Vec<Dest>>,
    /// Absent for opted-out visitors and requests that were ignored before identification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub dcs_region: u32,
    pub tid: String,
    /// `traits`, `segments`, `providers`: only with `d_cts=2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traits: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<BTreeMap<String, &'static str>>,
    /// Milliseconds waited for each provider called: only for the admin console's tries
    /// (`POST /v1/events/try`), never for sites.
    #[serde(rename = "providerWaitMs", skip_serializing_if = "Option::is_none")]
    pub provider_wait_ms: Option<BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<DcsError>,
}

impl EventBody {
    /// `{…}`, or `name({…});` for JSONP. The callback name must already be validated.
    pub fn render(&self, callback: Option<&str>) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        match callback {
            None => json,
            Some(name) => {
                let mut out = Vec::with_capacity(json.len() + name.len() + 3);
                out.extend_from_slice(name.as_bytes());
                out.push(b'(');
                out.extend_from_slice(&json);
                out.extend_from_slice(b");");
                out
            }
        }
    }
}

/// The `X-Error` header: the error codes, comma-separated (`101,102`), or `None`.
pub fn x_error(errors: &[DcsError]) -> Option<String> {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", e.code);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> EventBody {
        EventBody {
            uuid: Some("22920112968019678612904394744954398990".into()),
            dcs_region: 7,
            tid: "31ZpxW5bQGc=".into(),
            ..Default::default()
        }
    }

    #[test]
    fn minimal_body_matches_aam() {
        let json = String::from_utf8(body().render(None)).unwrap();
        assert_eq!(
            json,
            r#"{"stuff":[],"uuid":"22920112968019678612904394744954398990","dcs_region":7,"tid":"31ZpxW5bQGc="}"#
        );
    }

    #[test]
    fn full_body_and_jsonp() {
        let mut b = body();
        b.dests = Some(vec![]);
        b.traits = Some(vec![11, 12]);
        b.segments = Some(vec![101]);
        b.providers = Some(
            [
                ("acme".to_string(), "ok"),
                ("slowco".to_string(), "timeout"),
            ]
            .into(),
        );
        b.errors = vec![DcsError::invalid_aam_id()];
        let text = String::from_utf8(b.render(Some("cb.x"))).unwrap();
        assert_eq!(
            text,
            r#"cb.x({"stuff":[],"dests":[],"uuid":"22920112968019678612904394744954398990","dcs_region":7,"tid":"31ZpxW5bQGc=","traits":[11,12],"segments":[101],"providers":{"acme":"ok","slowco":"timeout"},"errors":[{"code":102,"msg":"Invalid AAM ID passed in request"}]});"#
        );
    }

    #[test]
    fn x_error_lists_codes() {
        assert_eq!(x_error(&[]), None);
        assert_eq!(
            x_error(&[
                DcsError {
                    code: 101,
                    msg: "".into()
                },
                DcsError::invalid_aam_id()
            ])
            .as_deref(),
            Some("101,102")
        );
    }

    #[test]
    fn pixel_is_a_gif() {
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF.len(), 43);
    }
}
