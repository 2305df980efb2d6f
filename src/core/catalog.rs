//! The catalog: providers, traits, segments and destinations, with AAM's field names
//! (`docs/admin-api.md`).
//!
//! These are the objects admins write and the store keeps; [`Catalog::validate`] is the one
//! gate every catalog passes before it is stored or compiled, so an invalid rule, a dangling
//! trait reference or a provider URL that cannot be called is refused with the object, the
//! field and (for rules) the byte offset. The compiled, evaluation-ready form lives in
//! [`crate::core::engine`].

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::rules::segment_rule::SegmentRule;
use crate::core::rules::trait_rule::TraitRule;
use crate::core::rules::RuleError;

/// Longest name, description or integration code (AAM: names ≤ 255 characters).
const MAX_TEXT: usize = 255;
/// Longest trait TTL in days (10 years); 0 means "never expires".
const MAX_TTL_DAYS: u32 = 3650;
/// Longest provider timeout: a provider slower than this is of no use to a real-time call.
const MAX_PROVIDER_TIMEOUT_MS: u32 = 10_000;
/// Longest answer cache lifetime (7 days).
const MAX_CACHE_TTL_SECS: u32 = 7 * 86_400;

/// Which visitors a provider is asked about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AskFor {
    /// Every visitor.
    #[default]
    All,
    /// Only visitors with a synced provider id.
    Synced,
}

/// A third-party data provider asked in real time (`docs/provider-protocol.md`, The provider
/// object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub pid: u32,
    pub name: String,
    /// `http://` or `https://` endpoint the DCS POSTs to.
    pub url: String,
    /// The data source its segments belong to; onboarded traits of this data source are
    /// evaluated against its answers.
    pub data_source_id: u32,
    #[serde(default = "default_provider_timeout")]
    pub timeout_ms: u32,
    /// How long an answer is reused for a visitor when the answer carries no `ttl`; 0 = never.
    #[serde(default)]
    pub cache_ttl_secs: u32,
    #[serde(default)]
    pub ask_for: AskFor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcf_vendor_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_provider_timeout() -> u32 {
    80
}

fn yes() -> bool {
    true
}

fn default_ttl() -> u32 {
    120
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraitType {
    /// Realized in real time from the event's signals.
    RuleBasedTrait,
    /// Realized from a provider's answer (rule over `segment`) or by `d_sid`.
    OnBoardedTrait,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    #[default]
    #[serde(alias = "active")]
    Active,
    #[serde(alias = "inactive")]
    Inactive,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trait {
    pub sid: u64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trait_type: TraitType,
    pub trait_rule: String,
    pub data_source_id: u32,
    #[serde(default)]
    pub folder_id: u32,
    #[serde(default)]
    pub integration_code: String,
    /// Days a realization counts; 0 = never expires.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default)]
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    pub sid: u64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub segment_rule: String,
    pub data_source_id: u32,
    #[serde(default)]
    pub folder_id: u32,
    #[serde(default)]
    pub integration_code: String,
    #[serde(default)]
    pub status: Status,
}

/// Everything the engine needs to qualify visitors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub traits: Vec<Trait>,
    #[serde(default)]
    pub segments: Vec<Segment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<Destination>,
}

/// Where segments are handed for targeting (`docs/destinations.md`): a cookie (`ADS`), a URL the
/// browser fires (`PUSH`), or a server endpoint Tributary calls (`S2S`). The fields of the
/// other types are ignored; each type's own required ones are checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub destination_id: u64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub destination_type: DestinationType,
    #[serde(default)]
    pub status: Status,
    /// ADS: the cookie's name (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// ADS: the cookie's domain; empty = the DCS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_domain: Option<String>,
    /// ADS: cookie lifetime in days.
    #[serde(default = "default_cookie_ttl")]
    pub ttl: u32,
    /// ADS: the cookie value's longest length, in bytes.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    #[serde(default)]
    pub format_type: FormatType,
    /// ADS `single_key`: the key of the only pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_key: Option<String>,
    #[serde(default = "default_key_separator")]
    pub key_separator: String,
    #[serde(default = "default_value_separator")]
    pub value_separator: String,
    #[serde(default = "default_serialization_separator")]
    pub serialization_separator: String,
    /// PUSH: the URL fired over HTTP (required), with macros such as `%ALIAS%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_format_string: Option<String>,
    /// PUSH: the URL fired over HTTPS; empty = `urlFormatString`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_url_format_string: Option<String>,
    /// PUSH: all mapped aliases in one call, joined by `delimiter`.
    #[serde(default)]
    pub serialization_enabled: bool,
    #[serde(default = "default_value_separator")]
    pub delimiter: String,
    /// S2S: the endpoint Tributary posts membership changes to (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// S2S: HMAC key for `X-Tributary-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// S2S: most visitors per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Segments sent to this destination.
    #[serde(default)]
    pub mappings: Vec<Mapping>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DestinationType {
    /// Cookie destination.
    Ads,
    /// URL destination.
    Push,
    /// Server-to-server destination.
    S2s,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FormatType {
    #[default]
    KeyValue,
    SingleKey,
}

/// A segment mapped to a destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// The segment.
    pub sid: u64,
    /// PUSH: what `%ALIAS%` becomes; ADS `key_value`: the key.
    #[serde(default)]
    pub trait_alias: String,
    /// ADS: the value (e.g. `segs=<valueAlias>`).
    #[serde(default)]
    pub value_alias: String,
}

fn default_cookie_ttl() -> u32 {
    30
}
fn default_max_size() -> u32 {
    1000
}
fn default_key_separator() -> String {
    "=".into()
}
fn default_value_separator() -> String {
    ",".into()
}
fn default_serialization_separator() -> String {
    ";".into()
}
fn default_batch_size() -> u32 {
    100
}

/// A catalog object that cannot be accepted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogError {
    /// Which object: `trait 11`, `provider 3`, …
    pub object: String,
    /// The AAM field name at fault (`traitRule`, `url`…).
    pub field: &'static str,
    pub message: String,
    /// For rule errors, the byte offset in the rule text.
    pub offset: Option<usize>,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object, self.field, self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CatalogError {}

fn err(object: String, field: &'static str, message: impl Into<String>) -> CatalogError {
    CatalogError {
        object,
        field,
        message: message.into(),
        offset: None,
    }
}

impl Catalog {
    /// Reads a seed file (JSON with `providers`, `traits`, `segments`), without validating it.
    pub fn from_seed_file(path: &Path) -> Result<Catalog, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read catalog seed {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "catalog seed {} is not a valid catalog: {e}",
                path.display()
            )
        })
    }

    /// Checks every object and every reference; the first problem found is returned.
    pub fn validate(&self) -> Result<(), CatalogError> {
        self.parse_rules().map(|_| ())
    }

    /// Validates the catalog and returns its parsed rules, in catalog order, so that compiling
    /// a catalog parses each rule once.
    pub fn parse_rules(&self) -> Result<ParsedRules, CatalogError> {
        let mut pids = HashSet::new();
        for p in &self.providers {
            let object = format!("provider {}", p.pid);
            if !pids.insert(p.pid) {
                return Err(err(object, "pid", "duplicate provider id"));
            }
            check_name(&object, &p.name)?;
            check_url(&object, &p.url)?;
            if p.timeout_ms == 0 || p.timeout_ms > MAX_PROVIDER_TIMEOUT_MS {
                return Err(err(
                    object,
                    "timeoutMs",
                    format!("must be between 1 and {MAX_PROVIDER_TIMEOUT_MS}"),
                ));
            }
            if p.cache_ttl_secs > MAX_CACHE_TTL_SECS {
                return Err(err(
                    object,
                    "cacheTtlSecs",
                    format!("must be at most {MAX_CACHE_TTL_SECS}"),
                ));
            }
            if p.secret
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.len() > 1024)
            {
                return Err(err(object, "secret", "must be 1 to 1024 bytes"));
            }
        }
        let names: HashSet<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        if names.len() != self.providers.len() {
            return Err(err(
                "providers".into(),
                "name",
                "provider names must be unique",
            ));
        }

        let mut trait_ids = BTreeSet::new();
        let mut trait_rules = Vec::with_capacity(self.traits.len());
        for t in &self.traits {
            let object = format!("trait {}", t.sid);
            if !trait_ids.insert(t.sid) {
                return Err(err(object, "sid", "duplicate trait id"));
            }
            check_name(&object, &t.name)?;
            check_text(&object, "description", &t.description, 2000)?;
            check_code(&object, &t.integration_code)?;
            if t.ttl > MAX_TTL_DAYS {
                return Err(err(
                    object,
                    "ttl",
                    format!("must be at most {MAX_TTL_DAYS} days"),
                ));
            }
            let rule = TraitRule::parse(&t.trait_rule)
                .map_err(|e| CatalogError::rule(object, "traitRule", e))?;
            trait_rules.push(rule);
        }

        let mut segment_ids = HashSet::new();
        let mut segment_rules = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let object = format!("segment {}", s.sid);
            if !segment_ids.insert(s.sid) {
                return Err(err(object, "sid", "duplicate segment id"));
            }
            check_name(&object, &s.name)?;
            check_text(&object, "description", &s.description, 2000)?;
            check_code(&object, &s.integration_code)?;
            let rule = SegmentRule::parse(&s.segment_rule)
                .map_err(|e| CatalogError::rule(object.clone(), "segmentRule", e))?;
            if let Some(missing) = rule.traits().iter().find(|t| !trait_ids.contains(t)) {
                return Err(err(
                    object,
                    "segmentRule",
                    format!("references unknown trait {missing}T"),
                ));
            }
            segment_rules.push(rule);
        }

        let mut destination_ids = HashSet::new();
        for d in &self.destinations {
            let object = format!("destination {}", d.destination_id);
            if !destination_ids.insert(d.destination_id) {
                return Err(err(object, "destinationId", "duplicate destination id"));
            }
            check_destination(&object, d)?;
            for m in &d.mappings {
                if !segment_ids.contains(&m.sid) {
                    return Err(err(
                        object,
                        "mappings",
                        format!("maps unknown segment {}", m.sid),
                    ));
                }
                check_text(&object, "mappings", &m.trait_alias, MAX_TEXT)?;
                check_text(&object, "mappings", &m.value_alias, MAX_TEXT)?;
            }
        }
        Ok(ParsedRules {
            traits: trait_rules,
            segments: segment_rules,
        })
    }
}

/// The rules of a validated catalog, in the order of its `traits` and `segments`.
pub struct ParsedRules {
    pub traits: Vec<TraitRule>,
    pub segments: Vec<SegmentRule>,
}

impl CatalogError {
    /// A rule that does not parse: the rule error's message and offset, on `field`.
    fn rule(object: String, field: &'static str, e: RuleError) -> Self {
        CatalogError {
            object,
            field,
            message: e.message,
            offset: Some(e.offset),
        }
    }
}

fn check_destination(object: &str, d: &Destination) -> Result<(), CatalogError> {
    check_name(object, &d.name)?;
    check_text(object, "description", &d.description, 2000)?;
    let separator = |field: &'static str, text: &str| {
        if text.is_empty() || text.len() > 8 {
            Err(err(object.into(), field, "must be 1 to 8 bytes"))
        } else {
            Ok(())
        }
    };
    let required = |field: &'static str, value: &Option<String>| match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v.to_string()),
        _ => Err(err(
            object.into(),
            field,
            format!("is required for a {:?} destination", d.destination_type),
        )),
    };
    match d.destination_type {
        DestinationType::Ads => {
            let name = required("cookieName", &d.cookie_name)?;
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(err(
                    object.into(),
                    "cookieName",
                    "letters, digits, '_', '-' and '.' only",
                ));
            }
            if d.format_type == FormatType::SingleKey {
                required("singleKey", &d.single_key)?;
            }
            if !(1..=3650).contains(&d.ttl) {
                return Err(err(object.into(), "ttl", "must be 1 to 3650 days"));
            }
            if !(1..=4096).contains(&d.max_size) {
                return Err(err(object.into(), "maxSize", "must be 1 to 4096 bytes"));
            }
            separator("keySeparator", &d.key_separator)?;
            separator("valueSeparator", &d.value_separator)?;
            separator("serializationSeparator", &d.serialization_separator)?;
        }
        DestinationType::Push => {
            let url = required("urlFormatString", &d.url_format_string)?;
            check_url_field(object, "urlFormatString", &url)?;
            if let Some(secure) = d
                .secure_url_format_string
                .as_deref()
                .filter(|s| !s.is_empty())
            {
                check_url_field(object, "secureUrlFormatString", secure)?;
            }
            separator("delimiter", &d.delimiter)?;
            // Joined into the fired URL as it is, so held to what the URL itself is held to.
            if !d.delimiter.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    object.into(),
                    "delimiter",
                    "printable ASCII only, no spaces",
                ));
            }
        }
        DestinationType::S2s => {
            let url = required("url", &d.url)?;
            check_url_field(object, "url", &url)?;
            if !(1..=1000).contains(&d.batch_size) {
                return Err(err(object.into(), "batchSize", "must be 1 to 1000"));
            }
            if d.secret
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.len() > 1024)
            {
                return Err(err(object.into(), "secret", "must be 1 to 1024 bytes"));
            }
        }
    }
    Ok(())
}

/// An http(s) URL template: macros like `%ALIAS%` are replaced by a placeholder before the
/// URL is checked.
fn check_url_field(object: &str, field: &'static str, url: &str) -> Result<(), CatalogError> {
    let plain = url.replace('%', "x").replace(['{', '}', '$'], "x");
    check_url(object, &plain).map_err(|mut e| {
        e.field = field;
        e
    })
}

fn check_name(object: &str, name: &str) -> Result<(), CatalogError> {
    if name.trim().is_empty() {
        return Err(err(object.into(), "name", "must not be empty"));
    }
    check_text(object, "name", name, MAX_TEXT)
}

fn check_text(
    object: &str,
    field: &'static str,
    text: &str,
    max: usize,
) -> Result<(), CatalogError> {
    if text.chars().count() > max {
        return Err(err(
            object.into(),
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

fn check_code(object: &str, code: &str) -> Result<(), CatalogError> {
    check_text(object, "integrationCode", code, MAX_TEXT)?;
    match code_problem(code) {
        Some(why) => Err(err(object.into(), "integrationCode", why)),
        None => Ok(()),
    }
}

/// Why `code` cannot be an integration code, if it cannot. A code is matched byte for byte
/// (`/v1/traits/ic:<code>`, `d_cid_ic`, what destinations send), so two codes that look the
/// same must be the same: no control or format characters (zero-width spaces and joiners,
/// bidirectional overrides and isolates, the byte-order mark, soft hyphens), no line or
/// paragraph separators, no space but U+0020, and none at either end.
pub fn code_problem(code: &str) -> Option<String> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if code.starts_with(' ') || code.ends_with(' ') {
        return Some("must not start or end with a space".into());
    }
    let (at, c) = code.chars().enumerate().find(|&(_, c)| {
        c != ' '
            && matches!(
                c.general_category(),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::SpaceSeparator
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
                    | GeneralCategory::PrivateUse
                    | GeneralCategory::Surrogate
                    | GeneralCategory::Unassigned
            )
    })?;
    Some(format!(
        "must hold visible characters only: U+{:04X} at character {} is not one",
        c as u32,
        at + 1
    ))
}

fn check_url(object: &str, url: &str) -> Result<(), CatalogError> {
    url_problem(url).map_or(Ok(()), |why| Err(err(object.into(), "url", why)))
}

/// Why `url` cannot be an http(s) endpoint Tributary calls or has a browser fire, if it
/// cannot: it must be what an HTTP client sends as the request target (printable ASCII, no
/// spaces: the `url` crate would quietly percent-encode them, a request line cannot hold
/// them), start with `http://` or `https://` (which also refuses `http:host` and
/// `http:/host`, which the `url` crate would repair) and name a host.
pub fn url_problem(url: &str) -> Option<&'static str> {
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("is not a valid URL");
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Some("must start with http:// or https://");
    }
    match url::Url::parse(url) {
        Err(_) => Some("is not a valid URL"),
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => Some("has no host"),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Catalog {
        serde_json::from_str(
            r#"{
              "providers": [{"pid": 1, "name": "acme", "url": "http://127.0.0.1:9/seg", "dataSourceId": 1001}],
              "traits": [
                {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1},
                {"sid": 21, "name": "intender", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"auto\"", "dataSourceId": 1001, "ttl": 30}
              ],
              "segments": [{"sid": 101, "name": "auto", "segmentRule": "11T AND 21T", "dataSourceId": 1}]
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn integration_codes_hold_visible_characters_only() {
        for good in ["", "crm-tier", "DSID_20914", "Käse 7", "顧客"] {
            assert_eq!(code_problem(good), None, "{good:?}");
        }
        for (bad, why) in [
            ("crm\u{200B}tier", "U+200B at character 4"),
            ("crm\u{202E}reit", "U+202E at character 4"),
            ("\u{FEFF}crm", "U+FEFF at character 1"),
            ("a\u{00A0}b", "U+00A0 at character 2"),
            ("a\u{2066}b\u{2069}", "U+2066 at character 2"),
            ("a\u{00AD}b", "U+00AD at character 2"),
            ("a\nb", "U+000A at character 2"),
            ("a\u{E000}", "U+E000 at character 2"),
        ] {
            let got = code_problem(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad:?}: {got}");
        }
        assert_eq!(
            code_problem(" crm").as_deref(),
            Some("must not start or end with a space")
        );
        let mut c = sample();
        c.segments[0].integration_code = "seg\u{200D}1".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("integrationCode") && e.contains("U+200D"), "{e}");
    }

    #[test]
    fn defaults_and_valid_catalog() {
        let c = sample();
        assert_eq!(c.providers[0].timeout_ms, 80);
        assert!(c.providers[0].enabled);
        assert_eq!(c.traits[0].ttl, 120);
        assert_eq!(c.traits[1].ttl, 30);
        assert_eq!(c.segments[0].status, Status::Active);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<Trait>(
            r#"{"sid":1,"name":"x","traitType":"RULE_BASED_TRAIT","traitRule":"a==1","dataSourceId":1,"bogus":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn validation_errors_name_object_field_and_offset() {
        let mut c = sample();
        c.traits[0].trait_rule = "c_page == ".into();
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "trait 11 traitRule: expected a value, found the end of the rule (at byte 10)"
        );

        let mut c = sample();
        c.segments[0].segment_rule = "11T AND 99T".into();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "segment 101 segmentRule: references unknown trait 99T"
        );

        let mut c = sample();
        c.providers[0].url = "ftp://x".into();
        assert_eq!(c.validate().unwrap_err().field, "url");

        let mut c = sample();
        c.providers[0].timeout_ms = 0;
        assert_eq!(c.validate().unwrap_err().field, "timeoutMs");

        let mut c = sample();
        c.traits.push(c.traits[0].clone());
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "trait 11 sid: duplicate trait id"
        );

        let mut c = sample();
        c.traits[0].name = " ".into();
        assert_eq!(c.validate().unwrap_err().field, "name");
    }

    /// The delimiter goes into the URL the browser fires, unencoded: it must keep the URL
    /// printable ASCII without spaces, as `urlFormatString` must be (found by the
    /// `admin_catalog` fuzz target: `"delimiter": "| "`).
    #[test]
    fn url_delimiters_keep_urls_printable() {
        let with_delimiter = |delimiter: &str| {
            let mut c = sample();
            c.destinations.push(
                serde_json::from_value(serde_json::json!({
                    "destinationId": 1, "name": "pixel", "destinationType": "PUSH",
                    "urlFormatString": "https://px.example/s?a=%ALIAS%",
                    "serializationEnabled": true, "delimiter": delimiter,
                    "mappings": [{"sid": 101}]
                }))
                .unwrap(),
            );
            c.validate()
        };
        for ok in [",", "|", ";;", "%7C", "~-~"] {
            assert_eq!(with_delimiter(ok), Ok(()), "{ok:?}");
        }
        for bad in ["| ", " ", "\t", "a\nb", "\u{1}", "é", "12345678+"] {
            assert_eq!(
                with_delimiter(bad).map_err(|e| e.field),
                Err("delimiter"),
                "{bad:?}"
            );
        }
    }
}
