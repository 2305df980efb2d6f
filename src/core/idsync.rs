//! ID synchronization: declared ids (`d_cid`, `d_cid_ic`, `d_dpid`+`d_dpuuid`) and the `/ibs`
//! call (`docs/dcs-api.md`, Declared ids and `/ibs`). Pure logic, free of actix, so it can be
//! unit-tested and fuzzed.
//!
//! A declared id names a data source (by id, or by integration code) and the visitor's id in
//! that data source. Accepted ids become mappings kept both ways: the visitor's profile holds
//! its id per data source (sent to that data source's providers as `user.id`), and the store
//! maps (data source, id) back to the visitor, the most recent mapping winning.
//!
//! Choices where AAM is silent or out of scope:
//! - Only data sources Tributary knows are accepted: a provider's, trait's or segment's
//!   `dataSourceId`, or one named in `[server] integration_codes`. Others get AAM's error 302
//!   ("Unauthorized customer id"), which also bounds what a client can make us store.
//! - `d_cid_ic=DSID_<n>` names data source `n` (AAM's integration codes of its global data
//!   sources, e.g. `DSID_20915`); other codes come from `[server] integration_codes`.
//! - Authentication state `2` (LOGGED_OUT) neither identifies the visitor nor changes any
//!   mapping: the person logged out, so this device is no longer tied to them. Tributary keeps
//!   one profile per visitor id (AAM's profile merge rules are not modelled).

use std::collections::HashMap;

use crate::core::error::{truncate, DcsError};
use crate::core::ids::VisitorId;

/// At most this many declared ids are used per request (AAM error 301, then 309 per extra id).
pub const MAX_IDS_PER_REQUEST: usize = 10;
/// At most this many ids of one data source are used per request (AAM error 310).
pub const MAX_IDS_PER_SOURCE: usize = 3;
/// Longest accepted id. AAM documents no limit; ids are cookie values, device ids or hashed
/// e-mails, all far shorter.
pub const MAX_ID_BYTES: usize = 256;
/// The `${DD_UUID}` macro of a `redir` URL (also as browsers percent-encode it in a path).
const UUID_MACROS: [&str; 2] = ["${DD_UUID}", "$%7BDD_UUID%7D"];

/// The third `%01` field of `d_cid`/`d_cid_ic`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthState {
    #[default]
    Unknown,
    Authenticated,
    LoggedOut,
}

/// How a request names a data source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    Dpid(u32),
    Code(String),
}

/// A declared id as sent, before its data source is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDeclaredId {
    pub source: SourceRef,
    pub id: String,
    pub auth: AuthState,
}

/// A declared id of a known data source, within the request's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredId {
    pub dpid: u32,
    pub id: String,
    pub auth: AuthState,
}

impl DeclaredId {
    /// Whether this id may identify the visitor and be linked to it.
    pub fn links(&self) -> bool {
        self.auth != AuthState::LoggedOut
    }
}

/// Parses a `d_cid` (`by_code` false: `<dpid>%01<id>[%01<authState>]`) or `d_cid_ic`
/// (`by_code` true: `<integrationCode>%01<id>[%01<authState>]`) value, already percent-decoded.
pub fn parse_cid(value: &str, by_code: bool) -> Result<RawDeclaredId, DcsError> {
    let mut fields = value.split('\u{1}');
    let source = fields.next().unwrap_or("");
    let id = fields.next().unwrap_or("");
    let auth = fields.next();
    if fields.next().is_some() {
        return Err(DcsError::invalid_customer_id(value));
    }
    let source = if by_code {
        if source.is_empty() || source.len() > 255 || source.chars().any(char::is_control) {
            return Err(DcsError::invalid_customer_id(value));
        }
        SourceRef::Code(source.to_string())
    } else {
        SourceRef::Dpid(parse_dpid(source).ok_or_else(|| DcsError::invalid_customer_id(value))?)
    };
    let auth = match auth {
        None | Some("") | Some("0") => AuthState::Unknown,
        Some("1") => AuthState::Authenticated,
        Some("2") => AuthState::LoggedOut,
        Some(_) => return Err(DcsError::invalid_customer_id(value)),
    };
    Ok(RawDeclaredId {
        source,
        id: check_id(id).ok_or_else(|| DcsError::invalid_customer_id(value))?,
        auth,
    })
}

/// The legacy pair `d_dpid` + `d_dpuuid` (also `dpid`/`dpuuid`, the `/ibs` form).
pub fn parse_pair(dpid: &str, id: &str) -> Result<RawDeclaredId, DcsError> {
    let what = || DcsError::invalid_customer_id(&format!("{dpid}:{id}"));
    Ok(RawDeclaredId {
        source: SourceRef::Dpid(parse_dpid(dpid).ok_or_else(what)?),
        id: check_id(id).ok_or_else(what)?,
        auth: AuthState::Unknown,
    })
}

fn parse_dpid(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&d| d > 0)
}

fn check_id(id: &str) -> Option<String> {
    (!id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control))
        .then(|| id.to_string())
}

/// Which data sources declared ids may name.
pub trait DataSources {
    fn knows(&self, dpid: u32) -> bool;
}

/// Resolves integration codes (`codes` has lower-case keys; codes match case-insensitively),
/// drops ids of unknown data sources and enforces AAM's limits
/// (≤ 3 per data source, ≤ 10 per request), in the order the ids were sent. Duplicates count
/// once.
pub fn resolve(
    raw: &[RawDeclaredId],
    codes: &HashMap<String, u32>,
    known: &dyn DataSources,
) -> (Vec<DeclaredId>, Vec<DcsError>) {
    let mut accepted: Vec<DeclaredId> = Vec::new();
    let mut errors = Vec::new();
    let mut over_limit = false;
    for r in raw {
        let dpid = match &r.source {
            SourceRef::Dpid(d) => Some(*d),
            SourceRef::Code(code) => {
                let code = code.to_ascii_lowercase();
                codes
                    .get(&code)
                    .copied()
                    .or_else(|| code.strip_prefix("dsid_").and_then(parse_dpid))
            }
        };
        let Some(dpid) = dpid else {
            errors.push(DcsError::invalid_customer_id(&r.id));
            continue;
        };
        if !known.knows(dpid) {
            errors.push(DcsError::unauthorized_customer_id(dpid));
            continue;
        }
        if accepted.iter().any(|a| a.dpid == dpid && a.id == r.id) {
            continue;
        }
        if accepted.iter().filter(|a| a.dpid == dpid).count() >= MAX_IDS_PER_SOURCE {
            errors.push(DcsError::over_namespace_limit(&r.id));
            continue;
        }
        if accepted.len() >= MAX_IDS_PER_REQUEST {
            if !over_limit {
                errors.push(DcsError::too_many_customer_ids());
                over_limit = true;
            }
            errors.push(DcsError::customer_id_discarded(&r.id));
            continue;
        }
        accepted.push(DeclaredId {
            dpid,
            id: r.id.clone(),
            auth: r.auth,
        });
    }
    (accepted, errors)
}

/// Why a `redir` URL is not followed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redir is not an absolute http(s) URL")]
    NotHttp,
    #[error("redir host {0:?} is not in server.idsync_redirect_hosts")]
    HostNotAllowed(String),
}

/// The URL to redirect an `/ibs` call to: `redir` with `${DD_UUID}` replaced by the visitor
/// id, if it is an http(s) URL whose host is allowed. The URL is re-serialized after parsing,
/// so what was checked is exactly what the browser is sent to (no `user@host` or backslash
/// tricks).
pub fn redirect_target(
    redir: &str,
    visitor: VisitorId,
    allowed_hosts: &[String],
) -> Result<String, RedirectError> {
    let uuid = visitor.to_string();
    let mut text = redir.to_string();
    for macro_text in UUID_MACROS {
        text = replace_ignore_case(&text, macro_text, &uuid);
    }
    let url = url::Url::parse(&text).map_err(|_| RedirectError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RedirectError::NotHttp);
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(other) => other.to_string(),
        None => return Err(RedirectError::NotHttp),
    };
    if !allowed_hosts.iter().any(|a| host_matches(a, &host)) {
        return Err(RedirectError::HostNotAllowed(
            truncate(&host, 255).to_string(),
        ));
    }
    Ok(url.to_string())
}

/// `pattern` is a host (`sync.partner.example`, matched exactly) or `*.partner.example` (any
/// subdomain, not the domain itself).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern == host,
    }
}

/// Whether a configured redirect host pattern is well-formed.
pub fn is_host_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn replace_ignore_case(text: &str, needle: &str, with: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle_lower = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in lower.match_indices(&needle_lower) {
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known(Vec<u32>);
    impl DataSources for Known {
        fn knows(&self, dpid: u32) -> bool {
            self.0.contains(&dpid)
        }
    }

    #[test]
    fn cid_fields() {
        assert_eq!(
            parse_cid("123\u{1}abc", false).unwrap(),
            RawDeclaredId {
                source: SourceRef::Dpid(123),
                id: "abc".into(),
                auth: AuthState::Unknown
            }
        );
        let r = parse_cid("crm\u{1}u 1\u{1}1", true).unwrap();
        assert_eq!(r.source, SourceRef::Code("crm".into()));
        assert_eq!((r.id.as_str(), r.auth), ("u 1", AuthState::Authenticated));
        assert_eq!(
            parse_cid("7\u{1}x\u{1}2", false).unwrap().auth,
            AuthState::LoggedOut
        );
        for bad in [
            "",
            "123",
            "123\u{1}",
            "abc\u{1}x",
            "0\u{1}x",
            "-1\u{1}x",
            "99999999999\u{1}x",
            "1\u{1}x\u{1}3",
            "1\u{1}x\u{1}1\u{1}extra",
            "1\u{1}a\u{7}b",
        ] {
            let e = parse_cid(bad, false).unwrap_err();
            assert_eq!(e.code, 300, "{bad:?}");
        }
        assert!(parse_cid(&format!("1\u{1}{}", "x".repeat(257)), false).is_err());
        assert!(parse_cid("\u{1}x", true).is_err());
        assert_eq!(parse_pair("5", "abc").unwrap().source, SourceRef::Dpid(5));
        assert!(parse_pair("x", "abc").is_err());
        assert!(parse_pair("5", "").is_err());
    }

    fn raw(dpid: u32, id: &str) -> RawDeclaredId {
        RawDeclaredId {
            source: SourceRef::Dpid(dpid),
            id: id.into(),
            auth: AuthState::Unknown,
        }
    }

    #[test]
    fn limits_codes_and_unknown_sources() {
        let known = Known(vec![1, 2, 3, 20915]);
        let mut map = HashMap::new();
        map.insert("crm".to_string(), 2);
        let mut ids = vec![
            RawDeclaredId {
                source: SourceRef::Code("CRM".into()),
                id: "c".into(),
                auth: AuthState::Authenticated,
            },
            RawDeclaredId {
                source: SourceRef::Code("DSID_20915".into()),
                id: "IDFA".into(),
                auth: AuthState::Unknown,
            },
            RawDeclaredId {
                source: SourceRef::Code("nope".into()),
                id: "n".into(),
                auth: AuthState::Unknown,
            },
            raw(9, "unknown-source"),
        ];
        for i in 0..4 {
            ids.push(raw(1, &format!("a{i}")));
        }
        ids.push(raw(1, "a0"));
        for i in 0..10 {
            ids.push(raw(3, &format!("b{i}")));
        }
        let (accepted, errors) = resolve(&ids, &map, &known);
        let got: Vec<(u32, &str)> = accepted.iter().map(|d| (d.dpid, d.id.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "c"),
                (20915, "IDFA"),
                (1, "a0"),
                (1, "a1"),
                (1, "a2"),
                (3, "b0"),
                (3, "b1"),
                (3, "b2")
            ]
        );
        let codes: Vec<u16> = errors.iter().map(|e| e.code).collect();
        // nope → 300, dpid 9 → 302, a3 → 310, b3..b9 → 310 (the per-source limit bites
        // before the per-request one here).
        assert_eq!(codes, [300, 302, 310, 310, 310, 310, 310, 310, 310, 310]);

        let many: Vec<RawDeclaredId> = (0..4)
            .flat_map(|s| (0..3).map(move |i| raw(s + 1, &format!("{s}-{i}"))))
            .collect();
        let known = Known(vec![1, 2, 3, 4]);
        let (accepted, errors) = resolve(&many, &HashMap::new(), &known);
        assert_eq!(accepted.len(), MAX_IDS_PER_REQUEST);
        let codes: Vec<u16> = errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [301, 309, 309]);
        assert!(errors[1].msg.contains("3-1"), "{:?}", errors[1]);
    }

    #[test]
    fn redirects_only_to_allowed_hosts() {
        let v = VisitorId::parse("12345678901234567890123456789012345678").unwrap();
        let allowed = vec!["sync.partner.example".to_string(), "*.ads.example".into()];
        assert_eq!(
            redirect_target(
                "https://sync.partner.example/back?aam=${DD_UUID}&x=1",
                v,
                &allowed
            )
            .unwrap(),
            "https://sync.partner.example/back?aam=12345678901234567890123456789012345678&x=1"
        );
        assert_eq!(
            redirect_target("http://a.ads.example/u/$%7Bdd_uuid%7D", v, &allowed).unwrap(),
            "http://a.ads.example/u/12345678901234567890123456789012345678"
        );
        for (bad, why) in [
            ("https://evil.example/", "other host"),
            ("https://ads.example/", "apex of a wildcard"),
            ("https://sync.partner.example@evil.example/", "userinfo"),
            ("https://evil.example\\@sync.partner.example/", "backslash"),
            ("https://sync.partner.example.evil.example/", "suffix"),
            ("https://xads.example/", "wildcard without dot"),
            ("javascript:alert(1)", "scheme"),
            ("//sync.partner.example/", "relative"),
            ("/local", "path"),
            ("", "empty"),
        ] {
            assert!(redirect_target(bad, v, &allowed).is_err(), "{why}: {bad}");
        }
        assert!(redirect_target("https://SYNC.Partner.example/", v, &allowed).is_ok());
        assert!(is_host_pattern("*.a.example"));
        assert!(is_host_pattern("localhost"));
        for bad in ["", "*.", "a..b", "a/b", "http://a", "*"] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,64}", by_code in proptest::bool::ANY) {
            let _ = parse_cid(&s, by_code);
        }

        #[test]
        fn redirects_never_panic(s in "\\PC{0,128}") {
            let v = VisitorId::generate();
            let _ = redirect_target(&s, v, &["a.example".to_string(), "*.b.example".into()]);
        }
    }
}
