//! Parsing of `/event` parameters (`docs/dcs-api.md`), free of actix so it can be tested and
//! fuzzed.
//!
//! Input is the raw query string and, for `POST`, the raw form body; both are
//! `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte). Parameters from the
//! query come first, then the body's, so a repeated key collects both.
//!
//! Outcomes, from worst to mildest:
//! - a hostile `d_cb` name → [`RequestError::BadCallback`] (the caller answers `400`);
//! - broken percent-encoding or invalid UTF-8 anywhere → [`RequestError::InvalidEncoding`]
//!   (AAM error 311: as AAM does, the whole request is ignored; `docs/dcs-api.md`, Encoding);
//! - an unusable value (`d_uuid` that is not 38 digits, a non-numeric `d_sid`, a malformed
//!   signal key) → an entry in [`EventRequest::errors`], and the rest of the call proceeds.

use crate::core::error::{truncate, DcsError};
use crate::core::ids::{Ecid, VisitorId};
use crate::core::idsync::{parse_cid, parse_pair, RawDeclaredId};
use crate::core::signals::Signals;

/// Largest query string accepted on `GET` (AAM: 8 KB).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Largest form body accepted on `POST` (AAM: 32 KB).
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// Longest signal key; AAM's own limit for key/value fields of derived signals is 228.
const MAX_KEY_BYTES: usize = 255;
/// Most trait ids one call may realize through `d_sid`.
const MAX_SIDS: usize = 1000;

/// Why a request cannot be processed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The offending parameter is named (truncated) so the client can find it.
    #[error("parameter {param:?} is not valid percent-encoded UTF-8")]
    InvalidEncoding { param: String },
    #[error("invalid JSONP callback name")]
    BadCallback,
}

/// Privacy parameters, kept as sent; interpreted by the privacy layer (`docs/privacy.md`) and
/// passed to providers in `regs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivacyParams {
    pub gdpr: Option<String>,
    pub gdpr_consent: Option<String>,
    pub us_privacy: Option<String>,
    pub gpp: Option<String>,
    pub gpp_sid: Option<String>,
    /// `d_coppa=1` or `d_coppa=true`.
    pub coppa: bool,
}

/// A parsed `/event` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventRequest {
    /// Customer, unprefixed and private signals. Header signals are added by the caller from
    /// the real headers; `h_` keys in the query are ignored.
    pub signals: Signals,
    /// `d_uuid`, when it is a valid id.
    pub d_uuid: Option<VisitorId>,
    /// `d_mid`, the device's Experience Cloud id, when it is a valid one.
    pub d_mid: Option<Ecid>,
    /// `d_rtbd=json` (or a JSONP callback): answer with JSON rather than a pixel.
    pub json: bool,
    /// `d_cb`: a validated JSONP callback name.
    pub callback: Option<String>,
    /// `d_dst=1`: include URL destinations.
    pub include_dests: bool,
    /// `d_cts=1|2`: include `traits`, `segments`, `providers`.
    pub include_cts: bool,
    /// `d_sid`: traits to realize directly.
    pub sids: Vec<u64>,
    /// `d_tdpid`: evaluate only the traits of this data source.
    pub tdpid: Option<u32>,
    /// Declared ids (`d_cid`, `d_cid_ic`, `d_dpid`+`d_dpuuid`), in the order sent; their data
    /// sources are checked later, against the catalog ([`crate::core::idsync::resolve`]).
    pub declared: Vec<RawDeclaredId>,
    /// The legacy pair, completed when both halves have been read.
    legacy_pair: (Option<String>, Option<String>),
    pub privacy: PrivacyParams,
    /// Problems with individual parameters; reported in the response's `errors`.
    pub errors: Vec<DcsError>,
}

/// Parses an `/event` call from its query string and optional form body.
pub fn parse_event(query: &[u8], body: Option<&[u8]>) -> Result<EventRequest, RequestError> {
    let mut req = EventRequest::default();
    for source in std::iter::once(query).chain(body) {
        for pair in form_pairs(source) {
            let (key, value) = pair?;
            apply(&mut req, key, value)?;
        }
    }
    finish_legacy_pair(&mut req.legacy_pair, &mut req.declared, &mut req.errors);
    Ok(req)
}

/// The decoded `key=value` pairs of a form-urlencoded text (empty pairs skipped).
pub fn form_pairs(
    source: &[u8],
) -> impl Iterator<Item = Result<(String, String), RequestError>> + '_ {
    source
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (raw_key, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let key = decode_component(raw_key).ok_or_else(|| invalid(raw_key))?;
            let value = decode_component(raw_value).ok_or_else(|| invalid(raw_key))?;
            Ok((key, value))
        })
}

/// Collects `d_cid`, `d_cid_ic` and the halves of the legacy pair; `false` for other keys.
fn collect_declared(
    key: &str,
    value: &str,
    pair: &mut (Option<String>, Option<String>),
    declared: &mut Vec<RawDeclaredId>,
    errors: &mut Vec<DcsError>,
) -> bool {
    match key {
        "d_cid" | "d_cid_ic" => match parse_cid(value, key == "d_cid_ic") {
            Ok(id) => declared.push(id),
            Err(e) => errors.push(e),
        },
        // The first of each half counts, as a repeated half cannot be paired reliably.
        "d_dpid" | "dpid" => {
            pair.0.get_or_insert_with(|| value.to_string());
        }
        "d_dpuuid" | "dpuuid" => {
            pair.1.get_or_insert_with(|| value.to_string());
        }
        _ => return false,
    }
    true
}

fn finish_legacy_pair(
    pair: &mut (Option<String>, Option<String>),
    declared: &mut Vec<RawDeclaredId>,
    errors: &mut Vec<DcsError>,
) {
    match std::mem::take(pair) {
        (None, None) => {}
        (dpid, id) => {
            match parse_pair(dpid.as_deref().unwrap_or(""), id.as_deref().unwrap_or("")) {
                Ok(d) => declared.push(d),
                Err(e) => errors.push(e),
            }
        }
    }
}

/// A parsed `/ibs` call: `/ibs:dpid=<dpid>&dpuuid=<id>[&redir=<url>]` or
/// `/ibs:d_cid=<dpid>%01<id>` (`docs/dcs-api.md`, `/ibs`). The parameters after the colon and
/// those of a query string are read alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IbsRequest {
    pub declared: Vec<RawDeclaredId>,
    pub redir: Option<String>,
    pub d_uuid: Option<VisitorId>,
    pub d_mid: Option<Ecid>,
    pub privacy: PrivacyParams,
    pub errors: Vec<DcsError>,
}

/// Parses an `/ibs` call from the text after `/ibs` in the raw path (starting with `:`, or
/// empty) and the query string. Unknown parameters are ignored.
pub fn parse_ibs(path_params: &[u8], query: &[u8]) -> Result<IbsRequest, RequestError> {
    let mut req = IbsRequest::default();
    let mut pair = (None, None);
    let path_params = path_params.strip_prefix(b":").unwrap_or(path_params);
    for source in [path_params, query] {
        for kv in form_pairs(source) {
            let (key, value) = kv?;
            if collect_declared(&key, &value, &mut pair, &mut req.declared, &mut req.errors) {
                continue;
            }
            match key.as_str() {
                "redir" => req.redir = Some(value),
                "d_uuid" => req.d_uuid = parse_uuid(&value, &mut req.errors),
                "d_mid" => req.d_mid = parse_mid(&value, &mut req.errors),
                _ => apply_privacy(&mut req.privacy, &key, value),
            }
        }
    }
    finish_legacy_pair(&mut pair, &mut req.declared, &mut req.errors);
    if req.declared.is_empty() && req.errors.is_empty() {
        req.errors.push(DcsError::invalid_customer_id(""));
    }
    Ok(req)
}

/// `d_uuid`: an invalid one is reported (102) and the call goes on without it.
fn parse_uuid(value: &str, errors: &mut Vec<DcsError>) -> Option<VisitorId> {
    let id = VisitorId::parse(value);
    if id.is_none() {
        errors.push(DcsError::invalid_aam_id());
    }
    id
}

/// `d_mid`: an invalid one is reported (101) and the call goes on without it.
fn parse_mid(value: &str, errors: &mut Vec<DcsError>) -> Option<Ecid> {
    let id = Ecid::parse(value);
    if id.is_none() {
        errors.push(DcsError::invalid_ecid());
    }
    id
}

/// A parsed `GET /id` (or `/optOutStatus`) call, the ID service as Adobe's VisitorAPI calls
/// it (`docs/dcs-api.md`, `/id`): the device's ECID, customer ids, consent. Other parameters
/// (`d_visid_ver`, `d_fieldgroup`, `d_orgid`, `d_nsid`, `d_blob`, `ts`…) are accepted and
/// ignored: the answer is the same whichever field group asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdRequest {
    pub d_mid: Option<Ecid>,
    pub d_uuid: Option<VisitorId>,
    pub declared: Vec<RawDeclaredId>,
    pub privacy: PrivacyParams,
    pub errors: Vec<DcsError>,
}

/// Parses an `/id` query string.
pub fn parse_id(query: &[u8]) -> Result<IdRequest, RequestError> {
    let mut req = IdRequest::default();
    let mut pair = (None, None);
    for kv in form_pairs(query) {
        let (key, value) = kv?;
        if collect_declared(&key, &value, &mut pair, &mut req.declared, &mut req.errors) {
            continue;
        }
        match key.as_str() {
            "d_mid" => req.d_mid = parse_mid(&value, &mut req.errors),
            "d_uuid" => req.d_uuid = parse_uuid(&value, &mut req.errors),
            _ => apply_privacy(&mut req.privacy, &key, value),
        }
    }
    finish_legacy_pair(&mut pair, &mut req.declared, &mut req.errors);
    Ok(req)
}

/// Records a privacy parameter; other keys are ignored.
fn apply_privacy(privacy: &mut PrivacyParams, key: &str, value: String) {
    match key {
        "gdpr" => privacy.gdpr = Some(value),
        "gdpr_consent" => privacy.gdpr_consent = Some(value),
        "us_privacy" => privacy.us_privacy = Some(value),
        "gpp" => privacy.gpp = Some(value),
        "gpp_sid" => privacy.gpp_sid = Some(value),
        "d_coppa" => privacy.coppa = value == "1" || value.eq_ignore_ascii_case("true"),
        _ => {}
    }
}

fn invalid(raw_key: &[u8]) -> RequestError {
    RequestError::InvalidEncoding {
        param: truncate(&String::from_utf8_lossy(raw_key), 64).to_string(),
    }
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte; the result must be
/// UTF-8. `None` for a stray `%` or invalid UTF-8.
pub fn decode_component(raw: &[u8]) -> Option<String> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8(raw.to_vec()).ok();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_value(*raw.get(i + 1)?)?;
                let lo = hex_value(*raw.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn apply(req: &mut EventRequest, key: String, value: String) -> Result<(), RequestError> {
    if collect_declared(
        &key,
        &value,
        &mut req.legacy_pair,
        &mut req.declared,
        &mut req.errors,
    ) {
        return Ok(());
    }
    match key.as_str() {
        "d_uuid" => req.d_uuid = parse_uuid(&value, &mut req.errors),
        "d_mid" => req.d_mid = parse_mid(&value, &mut req.errors),
        "d_rtbd" => req.json |= value == "json",
        "d_cb" => {
            if !is_valid_callback(&value) {
                return Err(RequestError::BadCallback);
            }
            req.callback = Some(value);
            req.json = true;
        }
        "d_dst" => req.include_dests = value == "1",
        "d_cts" => req.include_cts = value == "1" || value == "2",
        "d_sid" => parse_sids(req, &value),
        "d_tdpid" => match value.parse::<u32>() {
            Ok(dpid) => req.tdpid = Some(dpid),
            Err(_) => req
                .errors
                .push(DcsError::invalid_value("d_tdpid", "not a data source id")),
        },
        "gdpr" | "gdpr_consent" | "us_privacy" | "gpp" | "gpp_sid" | "d_coppa" => {
            apply_privacy(&mut req.privacy, &key, value)
        }
        // Accepted and otherwise unused (d_orgid, d_ptfm, d_nsid, d_jsonv, d_blob, d_ld,
        // cache busters…): AAM reserves every d_ key, so none of them is a signal.
        k if k.starts_with("d_") || k == "dcs_region" || k == "_ts" => {}
        // The DCS fills h_ signals from the real request; a client may not forge them.
        k if k.starts_with("h_") => {}
        _ => {
            if !is_valid_signal_key(&key) {
                req.errors.push(DcsError::invalid_value(
                    &key,
                    "signal keys are letters, digits, '_', '-' and '.'",
                ));
                return Ok(());
            }
            req.signals.add(key, split_values(&value));
        }
    }
    Ok(())
}

fn parse_sids(req: &mut EventRequest, value: &str) {
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u64>() {
            Ok(sid) if req.sids.len() < MAX_SIDS => {
                if !req.sids.contains(&sid) {
                    req.sids.push(sid);
                }
            }
            Ok(_) => {
                req.errors
                    .push(DcsError::invalid_value("d_sid", "more than 1000 trait ids"));
                return;
            }
            Err(_) => req
                .errors
                .push(DcsError::invalid_value("d_sid", "not a trait id")),
        }
    }
}

/// JSONP names are restricted to `^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$` (`docs/dcs-api.md`):
/// enough for `jQuery123.cb`, never enough to inject script.
pub fn is_valid_callback(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b'$')
                && rest.len() <= 63
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
        }
        None => false,
    }
}

/// Signal keys (`docs/dcs-api.md`, Parameters): letters, digits, `-`, `_` (and `.`, which SDKs
/// send), with at least one letter.
pub fn is_valid_signal_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && key.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Splits a serialized value `v1,v2,"v 3"` into its values. A value wrapped in double quotes
/// keeps its commas and loses the quotes (`age="41 to 55"`, as AAM reads it). An empty value
/// stays one empty value, so `c_flag=` is a present key.
pub fn split_values(value: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' if in_quotes => in_quotes = false,
            '"' if current.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            ',' if !in_quotes => {
                if !current.is_empty() || quoted {
                    values.push(std::mem::take(&mut current));
                }
                quoted = false;
            }
            c => current.push(c),
        }
    }
    if in_quotes {
        // An unterminated quote is data, not syntax: keep what was sent.
        current.insert(0, '"');
    }
    if !current.is_empty() || quoted || values.is_empty() {
        values.push(current);
    }
    values
}

/// Who the visitor is, from the `demdex` cookie and `d_uuid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The cookie says `NOTARGET`.
    OptedOut,
    /// A valid id from the cookie, or else from `d_uuid`.
    Known(VisitorId),
    /// No usable id: a new one was drawn.
    New(VisitorId),
}

/// The cookie wins over `d_uuid` (which AAM defines as the id "when not available from the
/// cookie"); a malformed cookie is treated as absent.
pub fn identify(cookie: Option<&str>, d_uuid: Option<VisitorId>) -> Identity {
    if cookie == Some("NOTARGET") {
        return Identity::OptedOut;
    }
    match cookie.and_then(VisitorId::parse).or(d_uuid) {
        Some(id) => Identity::Known(id),
        None => Identity::New(VisitorId::generate()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::idsync::{AuthState, SourceRef};

    fn parse(q: &str) -> EventRequest {
        parse_event(q.as_bytes(), None).expect("parses")
    }

    #[test]
    fn signal_kinds_and_serialized_values() {
        let r = parse("c_color=blue&plain=1&p_age=23&c_multi=a,b,c&c_multi=d&h_ip=1.2.3.4");
        assert_eq!(r.signals.get("c_color"), ["blue"]);
        assert_eq!(r.signals.get("plain"), ["1"]);
        assert_eq!(r.signals.get("p_age"), ["23"]);
        assert_eq!(r.signals.get("c_multi"), ["a", "b", "c", "d"]);
        assert!(
            r.signals.get("h_ip").is_empty(),
            "h_ from the query is ignored"
        );
        assert!(r.errors.is_empty());
    }

    #[test]
    fn split_values_table() {
        let check = |input: &str, expected: &[&str]| {
            assert_eq!(split_values(input), expected, "input {input:?}");
        };
        check("a", &["a"]);
        check("", &[""]);
        check("a,b", &["a", "b"]);
        check("a,,b,", &["a", "b"]);
        check("\"41 to 55\"", &["41 to 55"]);
        check("\"a,b\",c", &["a,b", "c"]);
        check("\"\"", &[""]);
        check("\"open", &["\"open"]);
        check("x\"y", &["x\"y"]);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(decode_component(b"a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(decode_component(b"%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_component(b"%01").as_deref(), Some("\u{1}"));
        for bad in [&b"%"[..], b"%2", b"%zz", b"%esid!", b"%FF", b"\xff"] {
            assert_eq!(decode_component(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_encoding_rejects_the_whole_request() {
        let err = parse_event(b"c_a=1&c_b=%esid!", None).unwrap_err();
        assert_eq!(
            err,
            RequestError::InvalidEncoding {
                param: "c_b".into()
            }
        );
        assert!(parse_event(b"c_a=%C3%28", None).is_err(), "invalid UTF-8");
        assert!(parse_event(b"c_a=1", Some(b"c_b=%G1")).is_err(), "body too");
    }

    #[test]
    fn system_parameters() {
        let r = parse(
            "d_uuid=07955261652886032950143702505894272138&d_rtbd=json&d_dst=1&d_cts=2\
             &d_sid=11,12&d_sid=12,13&d_tdpid=77&d_orgid=x@AdobeOrg&dcs_region=7\
             &gdpr=1&gdpr_consent=abc&us_privacy=1YNN&d_coppa=true&d_cid=123%01987",
        );
        assert_eq!(
            r.d_uuid.map(|v| v.to_string()).as_deref(),
            Some("07955261652886032950143702505894272138")
        );
        assert!(r.json && r.include_dests && r.include_cts);
        assert_eq!(r.sids, [11, 12, 13]);
        assert_eq!(r.tdpid, Some(77));
        assert_eq!(r.privacy.gdpr.as_deref(), Some("1"));
        assert_eq!(r.privacy.us_privacy.as_deref(), Some("1YNN"));
        assert!(r.privacy.coppa);
        assert_eq!(
            r.declared,
            [RawDeclaredId {
                source: SourceRef::Dpid(123),
                id: "987".into(),
                auth: AuthState::Unknown
            }]
        );
        assert!(r.signals.is_empty(), "no system parameter is a signal");
        assert!(r.errors.is_empty());
    }

    #[test]
    fn declared_ids_in_every_form() {
        let r = parse(
            "d_cid_ic=crm%01u%2B1%011&d_dpuuid=legacy&d_cid=5%01x%012&d_dpid=9&d_dpid=10\
             &d_cid=bad&dpuuid=ignored",
        );
        let got: Vec<(SourceRef, &str, AuthState)> = r
            .declared
            .iter()
            .map(|d| (d.source.clone(), d.id.as_str(), d.auth))
            .collect();
        assert_eq!(
            got,
            [
                (
                    SourceRef::Code("crm".into()),
                    "u+1",
                    AuthState::Authenticated
                ),
                (SourceRef::Dpid(5), "x", AuthState::LoggedOut),
                (SourceRef::Dpid(9), "legacy", AuthState::Unknown),
            ]
        );
        let codes: Vec<u16> = r.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [300]);
        assert_eq!(parse("d_dpid=9").errors[0].code, 300, "half a pair");
    }

    #[test]
    fn ibs_calls() {
        let r = parse_ibs(
            b":dpid=77&dpuuid=abc%20def&redir=https%3A%2F%2Fp.example%2F%3Fu%3D%24%7BDD_UUID%7D",
            b"gdpr=0",
        )
        .unwrap();
        assert_eq!(r.declared.len(), 1);
        assert_eq!(r.declared[0].source, SourceRef::Dpid(77));
        assert_eq!(r.declared[0].id, "abc def");
        assert_eq!(r.redir.as_deref(), Some("https://p.example/?u=${DD_UUID}"));
        assert_eq!(r.privacy.gdpr.as_deref(), Some("0"));
        assert!(r.errors.is_empty());
        let r = parse_ibs(b":d_cid=123%01987", b"").unwrap();
        assert_eq!(r.declared[0].id, "987");
        let r = parse_ibs(b"", b"dpid=1&dpuuid=z").unwrap();
        assert_eq!(r.declared[0].id, "z");
        for nothing in [&b""[..], b":", b":redir=x", b":dpid=1"] {
            let r = parse_ibs(nothing, b"").unwrap();
            assert!(r.declared.is_empty());
            assert_eq!(r.errors[0].code, 300, "{nothing:?}");
        }
        assert!(matches!(
            parse_ibs(b":dpid=%zz", b""),
            Err(RequestError::InvalidEncoding { .. })
        ));
    }

    #[test]
    fn ecids_on_every_route() {
        let mid = "07955261652886032950143702505894272138";
        let r = parse(&format!("d_mid={mid}&c_a=1"));
        assert_eq!(r.d_mid.as_ref().map(Ecid::as_str), Some(mid));
        assert!(r.errors.is_empty() && !r.signals.contains_key("d_mid"));
        let r = parse_ibs(b":dpid=5&dpuuid=x", format!("d_mid={mid}").as_bytes()).unwrap();
        assert_eq!(r.d_mid.as_ref().map(Ecid::as_str), Some(mid));
        for bad in ["NOTARGET", "", "12%2034"] {
            let r = parse(&format!("d_mid={bad}"));
            assert_eq!(r.d_mid, None, "{bad:?}");
            assert_eq!(r.errors.iter().map(|e| e.code).collect::<Vec<_>>(), [101]);
        }
    }

    #[test]
    fn id_service_calls_as_visitorapi_sends_them() {
        let mid = "07955261652886032950143702505894272138";
        let r = parse_id(
            format!(
                "d_visid_ver=5.5.0&d_fieldgroup=MC&gdpr=1&gdpr_consent=CO1&d_rtbd=json&d_ver=2\
                 &d_orgid=ABC%40AdobeOrg&d_nsid=0&d_mid={mid}&d_coppa=true&d_blob=xyz\
                 &d_cid_ic=crm%01u-1%011&d_cid_ic=AVID%01abc&ts=1700000000000"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.d_mid.as_ref().map(Ecid::as_str), Some(mid));
        assert_eq!(r.privacy.gdpr.as_deref(), Some("1"));
        assert_eq!(r.privacy.gdpr_consent.as_deref(), Some("CO1"));
        assert!(r.privacy.coppa);
        assert_eq!(r.declared.len(), 2);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let r = parse_id(b"d_mid=%3Cscript%3E&d_cid_ic=%01").unwrap();
        assert_eq!(r.d_mid, None);
        assert_eq!(
            r.errors.iter().map(|e| e.code).collect::<Vec<_>>(),
            [101, 300]
        );
        assert!(parse_id(b"d_mid=%zz").is_err());
    }

    #[test]
    fn bad_values_become_error_entries() {
        let r = parse("d_uuid=123&d_sid=abc,5&d_tdpid=-1&c_a=1&bad!key=2");
        assert_eq!(r.d_uuid, None);
        let codes: Vec<u16> = r.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, [102, 0, 0, 0]);
        assert_eq!(r.sids, [5]);
        assert_eq!(r.signals.get("c_a"), ["1"]);
        assert!(!r.signals.contains_key("bad!key"));
    }

    #[test]
    fn identity_precedence() {
        let a = VisitorId::parse("11111111111111111111111111111111111111").unwrap();
        let b = VisitorId::parse("22222222222222222222222222222222222222").unwrap();
        assert_eq!(identify(Some("NOTARGET"), Some(b)), Identity::OptedOut);
        assert_eq!(identify(Some(&a.to_string()), Some(b)), Identity::Known(a));
        assert_eq!(identify(Some("garbage"), Some(b)), Identity::Known(b));
        assert_eq!(identify(None, Some(b)), Identity::Known(b));
        assert!(matches!(identify(Some("garbage"), None), Identity::New(_)));
        assert!(matches!(identify(None, None), Identity::New(_)));
    }

    #[test]
    fn callback_names() {
        for ok in [
            "cb",
            "_x",
            "$",
            "jQuery123.cb_1",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert!(is_valid_callback(ok), "{ok}");
        }
        for bad in [
            "",
            "1cb",
            "a-b",
            "alert(1)",
            "a;b",
            "<script>",
            "é",
            &format!("a{}", "b".repeat(64)),
        ] {
            assert!(!is_valid_callback(bad), "{bad}");
        }
        assert_eq!(
            parse_event(b"d_rtbd=json&d_cb=alert(1)", None),
            Err(RequestError::BadCallback)
        );
        let r = parse("d_cb=cb");
        assert!(r.json, "a callback implies a JSON body");
    }

    #[test]
    fn body_parameters_follow_query_parameters() {
        let r = parse_event(b"d_rtbd=json&c_x=1", Some(b"c_x=2&c_y=3")).unwrap();
        assert_eq!(r.signals.get("c_x"), ["1", "2"]);
        assert_eq!(r.signals.get("c_y"), ["3"]);
        assert!(r.json);
    }

    #[test]
    fn keys_without_values_and_empty_pairs() {
        let r = parse("&&c_flag&c_empty=&=orphan&");
        assert_eq!(r.signals.get("c_flag"), [""]);
        assert_eq!(r.signals.get("c_empty"), [""]);
        assert_eq!(r.errors.len(), 1, "an empty key is reported");
    }

    #[test]
    fn oversized_input_is_parsed_without_trouble() {
        // The HTTP layer refuses more than 8 KB / 32 KB; the parser itself must still cope
        // with anything it is handed.
        let many_keys: String = (0..50_000).map(|i| format!("c_k{i}=v&")).collect();
        let r = parse(&many_keys);
        assert_eq!(r.signals.len(), 50_000);
        let huge_value = format!("c_x={}", "a,".repeat(500_000));
        let r = parse(&huge_value);
        assert_eq!(r.signals.get("c_x").len(), 500_000);
        let long_key = format!("{}=1", "k".repeat(300));
        assert_eq!(
            parse(&long_key).errors.len(),
            1,
            "keys over 255 bytes are refused"
        );
    }

    #[test]
    fn d_sid_is_capped() {
        let many: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
        let r = parse(&format!("d_sid={}", many.join(",")));
        assert_eq!(r.sids.len(), MAX_SIDS);
        assert_eq!(r.errors.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(query in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                        body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_event(&query, Some(&body));
        }

        #[test]
        fn never_panics_on_plausible_queries(q in "[a-z_%0-9A-F=&,+\"]{0,200}") {
            let _ = parse_event(q.as_bytes(), None);
        }
    }
}
