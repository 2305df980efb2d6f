//! Parsers for AAM's Customer Data API (`docs/customer-data.md`): the body of
//! `POST /stream/{streamId}`, the parameters of `/event/s2s/{streamId}`, and the stream id
//! itself. They check shapes and limits and produce [`Op`]s ([`crate::core::inbound`]); whether a
//! data source, trait or profile exists is decided later, when an op is resolved.
//!
//! # `POST /stream/{streamId}`
//!
//! ```text
//! { "tracing_id": "<≤ 256 bytes>",                          optional, echoed as tracingId
//!   "ops": [                                                  1 to MAX_OPS
//!     { "identities": [                                       1 to MAX_IDENTITIES
//!         { "dataSourceId": 9001 | "9001"                     exactly one of these three
//!           "integrationCode": "crm",
//!           "namespaceCode": "email",
//!           "value": "c1" } ],
//!       "traitInput": { "traitIds": [5, "6"] },               ≤ MAX_TRAIT_IDS
//!       "traitEvaluation": { "data": [ { "key": "c_tier", "value": "gold" | 3 | true } ] },
//!       "targetDataSource": [9001],                           ≤ MAX_TARGETS
//!       "operationType": "APPEND" | "OVERWRITE" | "DELETE",   any case; APPEND if absent
//!       "routingHint": { "profileLocationId": [7, 9] } } ] }  checked, then ignored
//! ```
//!
//! A body that cannot be read at all (not JSON, not an object, no `ops`, too many ops, a field
//! the body does not have) is a [`BodyError`]. Each op is then read on its own, so one bad op
//! costs only itself: [`StreamRequest::ops`] holds one result per op, in order.
//!
//! # `/event/s2s/{streamId}`
//!
//! One DCS-style update, from the query (GET) or the body (POST): `d_orgid`; `d_sid` and
//! `d_tdpid` (repeated, or comma-separated); the identities `d_uuid` (data source 0), `d_mid`
//! (data source 4, the ECID), `d_cid=<dpid>%01<id>[%01<authState>]` and
//! `d_cid_ic=<code>%01<id>[%01<authState>]` (repeated); `d_ws=overwrite|delete`;
//! `d_location_id`. Any other `d_` key is refused; every other key is a signal.
//!
//! # Choices where AAM is silent
//!
//! - Field paths in messages count array entries from 0 (`identities[1].value`), as JSON
//!   paths do; the caller's `operationIndex` counts ops from 1.
//! - Ids may also be strings of digits (`"dataSourceId": "9001"`, `"traitIds": ["5"]`): many
//!   clients keep ids as text, and the digits leave no doubt.
//! - `null` in an optional field is the field left out, as clients that write every field of
//!   their own type send it.
//! - Within an op, a key given twice keeps its last value (as `JSON.parse` does); at the top
//!   of the body, where it would hide a whole list of ops, it is refused.
//! - An identity of data source 0 must be an AAM UUID (38 digits, error 102) and one of data
//!   source 4 an ECID (error 101, upper-cased as VisitorAPI stores it), whichever API names
//!   them, so both APIs give the same op for the same profile.
//! - Error codes: 300 for an identity that names nothing usable (no or several sources, a bad
//!   data source id or code, a blank or oversized value), 301 for too many, 0 for the rest.
//! - Limits count entries as sent; duplicate trait ids and target data sources are then
//!   dropped, keeping the first.
//! - An op that would change nothing (APPEND or OVERWRITE without trait ids or signals) is
//!   refused; OVERWRITE needs exactly one target data source, as the spec says.
//! - `tracing_id` may not hold control characters: it is echoed and logged.
//! - `d_cid`'s separator is the byte 0x01 (`%01` encoded) or, in a value without one, the
//!   three characters `%01` (what a caller who follows the SDK's `<DPID>%01<DPUID>` literally
//!   ends up sending). The authentication state is checked (0, 1 or 2) and ignored: an op
//!   names a profile, not a device's login.
//! - `d_orgid`, `d_uuid`, `d_mid` and `d_ws` may be given once. Empty pieces of a
//!   comma-separated `d_sid` or `d_tdpid` are skipped, so `d_sid=` is an empty list.
//! - A POST body of `/event/s2s` is a form, whatever its `Content-Type` says (Adobe's SDK
//!   labels its forms `application/json`), unless it starts with `{`: then it is a JSON
//!   object of parameters. Percent-decoding is strict (error 311), as on `/event`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::core::catalog::code_problem;
use crate::core::error::truncate;
use crate::core::ids::{Ecid, VisitorId, ECID_DATA_SOURCE};
use crate::core::inbound::{
    Identity, Op, OpError, OpKind, SourceName, MAX_IDENTITIES, MAX_SIGNALS, MAX_TARGETS,
    MAX_TRAIT_IDS, MAX_VALUE_BYTES,
};
use crate::core::request::form_pairs;

/// Largest `POST /stream` body (the spec's 100 KB), enforced by the route.
pub const MAX_STREAM_BODY: usize = 100 * 1024;
/// At most this many ops per `POST /stream` body.
pub const MAX_OPS: usize = 1_000;
/// Longest `tracing_id`.
pub const MAX_TRACING_ID_BYTES: usize = 256;
/// Longest stream id. The spec sets none; it is a path segment, and 255 bounds what is logged.
pub const MAX_STREAM_ID_BYTES: usize = 255;

/// The spec's stream id characters besides ASCII letters and digits.
const STREAM_ID_PUNCTUATION: &str = ".,+-$_*!()";
const OP_FIELDS: [&str; 6] = [
    "identities",
    "traitInput",
    "traitEvaluation",
    "targetDataSource",
    "operationType",
    "routingHint",
];
/// The first three name the data source; an identity has exactly one of them.
const IDENTITY_FIELDS: [&str; 4] = ["dataSourceId", "integrationCode", "namespaceCode", "value"];
const DATA_SOURCE_ID: &str = "a data source id (an integer from 0 to 4294967295)";
const TRAIT_ID: &str = "a trait id (an integer from 1 to 18446744073709551615)";
/// `d_sid` and `d_tdpid`: how many, what each is, how it is read.
type ListRule<T> = (usize, &'static str, fn(&str) -> Option<T>);
const D_SID: ListRule<u64> = (MAX_TRAIT_IDS, TRAIT_ID, |p| digits(p).filter(|&n| n >= 1));
const D_TDPID: ListRule<u32> = (MAX_TARGETS, DATA_SOURCE_ID, digits);
const S2S_KEYS: &str =
    "d_orgid, d_sid, d_tdpid, d_uuid, d_mid, d_cid, d_cid_ic, d_ws, d_location_id";

/// Checks a stream id against the spec's `^[a-zA-Z0-9.,+\-$_*!()]+$`, at most
/// [`MAX_STREAM_ID_BYTES`]. `,` alone is one: Adobe's SDK sends it when its caller gives none.
pub fn valid_stream_id(id: &str) -> Result<(), String> {
    let allowed = format!("ASCII letters, digits and {STREAM_ID_PUNCTUATION}");
    if id.is_empty() {
        return Err(format!("stream id: empty ({allowed})"));
    }
    if id.len() > MAX_STREAM_ID_BYTES {
        return Err(format!(
            "stream id: {} bytes, at most {MAX_STREAM_ID_BYTES}",
            id.len()
        ));
    }
    let bad = id
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_alphanumeric() && !STREAM_ID_PUNCTUATION.contains(c));
    match bad {
        Some((at, c)) => Err(format!(
            "stream id: {c:?} at byte {at} is not allowed ({allowed})"
        )),
        None => Ok(()),
    }
}

/// A `POST /stream` body, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub tracing_id: Option<String>,
    /// One entry per op, in the body's order (`operationIndex` = position + 1).
    pub ops: Vec<Result<Op, OpError>>,
}

/// Why a `POST /stream` body could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    pub message: String,
    /// The top-level field at fault (`ops`, `tracing_id`, an unknown one); empty when it is
    /// the body itself (not JSON, not an object).
    pub field: String,
    /// Where in the body serde_json stopped reading, when it says.
    pub offset: Option<usize>,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(at) = self.offset {
            write!(f, " (at byte {at})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BodyError {}

/// Reads a `POST /stream/{streamId}` body (its size is the route's to bound).
pub fn parse_stream(body: &[u8]) -> Result<StreamRequest, BodyError> {
    let mut blamed = String::new();
    let mut reader = serde_json::Deserializer::from_slice(body);
    let read = BodySeed {
        blamed: &mut blamed,
    }
    .deserialize(&mut reader)
    .and_then(|read| reader.end().map(|()| read));
    let (tracing_id, ops) = read.map_err(|e| BodyError {
        message: bare_message(&e),
        // A syntax error is the body's, whichever field was being read.
        field: if e.is_data() { blamed } else { String::new() },
        offset: json_offset(body, &e),
    })?;
    Ok(StreamRequest {
        tracing_id,
        ops: ops.iter().map(parse_op).collect(),
    })
}

/// Reads the top-level object, noting in `blamed` the field being read, as serde_json's
/// errors carry a position but no path.
struct BodySeed<'a> {
    blamed: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = (Option<String>, Vec<Value>);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = (Option<String>, Vec<Value>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with an `ops` array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut tracing_id, mut tracing_seen, mut ops) = (None, false, None);
        while let Some(key) = map.next_key::<String>()? {
            *self.blamed = truncate(&key, 64).to_string();
            match key.as_str() {
                "tracing_id" if !tracing_seen => {
                    tracing_seen = true;
                    tracing_id = map.next_value_seed(TracingId)?;
                }
                "ops" if ops.is_none() => ops = Some(map.next_value_seed(Ops)?),
                "tracing_id" | "ops" => return Err(A::Error::custom("given twice")),
                _ => {
                    return Err(A::Error::custom(
                        "unknown field (a body has tracing_id and ops)",
                    ))
                }
            }
        }
        let Some(ops) = ops else {
            *self.blamed = "ops".into();
            return Err(A::Error::custom(format!(
                "required: an array of 1 to {MAX_OPS} operations"
            )));
        };
        Ok((tracing_id, ops))
    }
}

struct TracingId;

impl<'de> DeserializeSeed<'de> for TracingId {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let id = Option::<String>::deserialize(d)?;
        let problem = id
            .as_deref()
            .and_then(|id| text_problem(id, true, MAX_TRACING_ID_BYTES));
        match problem {
            Some(problem) => Err(D::Error::custom(problem)),
            None => Ok(id),
        }
    }
}

/// The `ops` array, each op kept as a `Value` to be read on its own.
struct Ops;

impl<'de> DeserializeSeed<'de> for Ops {
    type Value = Vec<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Ops {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of 1 to {MAX_OPS} operations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ops = Vec::new();
        loop {
            if ops.len() == MAX_OPS {
                // The one op too many is skipped over, not built.
                return match seq.next_element::<IgnoredAny>()? {
                    Some(_) => Err(A::Error::custom(format!("more than {MAX_OPS} operations"))),
                    None => Ok(ops),
                };
            }
            match seq.next_element::<Value>()? {
                Some(op) => ops.push(op),
                None if ops.is_empty() => {
                    return Err(A::Error::custom(format!(
                        "empty: an array of 1 to {MAX_OPS} operations"
                    )))
                }
                None => return Ok(ops),
            }
        }
    }
}

/// serde_json's message without the " at line L column C" it appends.
fn bare_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(bare) => bare.to_string(),
        None => text,
    }
}

/// The byte offset of serde_json's line (from 1) and column (bytes into the line).
fn json_offset(body: &[u8], e: &serde_json::Error) -> Option<usize> {
    let line_start = match e.line() {
        0 => return None,
        1 => 0,
        n => {
            body.iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .nth(n - 2)?
                .0
                + 1
        }
    };
    Some(line_start.saturating_add(e.column()).min(body.len()))
}

fn parse_op(value: &Value) -> Result<Op, OpError> {
    let fields = object(value, "", &OP_FIELDS)?;
    let mut op = Op {
        identities: identities(fields.get("identities"))?,
        ..Op::default()
    };
    if let Some(kind) = present(fields, "operationType") {
        op.kind = operation_type(kind)?;
    }
    if let Some(input) = present(fields, "traitInput") {
        let input = object(input, "traitInput", &["traitIds"])?;
        if let Some(ids) = present(input, "traitIds") {
            op.trait_ids = numbers(
                ids,
                "traitInput.traitIds",
                MAX_TRAIT_IDS,
                TRAIT_ID,
                trait_id,
            )?;
        }
    }
    if let Some(evaluation) = present(fields, "traitEvaluation") {
        let evaluation = object(evaluation, "traitEvaluation", &["data"])?;
        if let Some(data) = present(evaluation, "data") {
            op.signals = signal_list(data)?;
        }
    }
    if let Some(targets) = present(fields, "targetDataSource") {
        op.target_data_sources = numbers(
            targets,
            "targetDataSource",
            MAX_TARGETS,
            DATA_SOURCE_ID,
            data_source_id,
        )?;
    }
    if let Some(hint) = present(fields, "routingHint") {
        routing_hint(hint)?;
    }
    check_op(&op, &STREAM_NAMES)?;
    Ok(op)
}

fn identities(value: Option<&Value>) -> Result<Vec<Identity>, OpError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Err(OpError::invalid_identity(format!(
            "identities: required (1 to {MAX_IDENTITIES} identities)"
        )));
    };
    let list = array(value, "identities")?;
    if list.is_empty() {
        return Err(OpError::invalid_identity(format!(
            "identities: empty (1 to {MAX_IDENTITIES} identities)"
        )));
    }
    if list.len() > MAX_IDENTITIES {
        let mut e = OpError::too_many_identities();
        e.message = format!("identities: {} (got {})", e.message, list.len());
        return Err(e);
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| stream_identity(&format!("identities[{i}]"), v))
        .collect()
}

fn stream_identity(field: &str, value: &Value) -> Result<Identity, OpError> {
    let fields = object(value, field, &IDENTITY_FIELDS)?;
    let named: Vec<(&str, &Value)> = IDENTITY_FIELDS[..3]
        .iter()
        .filter_map(|&name| present(fields, name).map(|v| (name, v)))
        .collect();
    let (name, named_by) = match named.as_slice() {
        [one] => *one,
        [] => {
            return Err(OpError::invalid_identity(format!(
                "{field}: names no data source (one of dataSourceId, integrationCode, \
                 namespaceCode)"
            )))
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(name, _)| *name).collect();
            return Err(OpError::invalid_identity(format!(
                "{field}: names its data source {} ways ({}): one only",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let at = format!("{field}.{name}");
    let source = match (name, named_by) {
        ("dataSourceId", v) => SourceName::DataSource(data_source_id(v).ok_or_else(|| {
            OpError::invalid_identity(format!("{at}: {} is not {DATA_SOURCE_ID}", shown_json(v)))
        })?),
        ("integrationCode", Value::String(code)) => integration_code(code, &at)?,
        ("namespaceCode", Value::String(code)) => {
            if let Some(problem) = text_problem(code, false, MAX_VALUE_BYTES) {
                return Err(OpError::invalid_identity(format!("{at}: {problem}")));
            }
            SourceName::Namespace(code.clone())
        }
        (_, v) => {
            return Err(OpError::invalid_identity(format!(
                "{at}: {} is not a string",
                shown_json(v)
            )))
        }
    };
    match present(fields, "value") {
        Some(Value::String(text)) => identity(source, text, &format!("{field}.value")),
        Some(v) => Err(OpError::invalid_identity(format!(
            "{field}.value: {} is not a string",
            shown_json(v)
        ))),
        None => Err(OpError::invalid_identity(format!(
            "{field}.value: required (the profile's id in that data source)"
        ))),
    }
}

/// An identity of either API: data sources 0 and 4 hold AAM UUIDs and ECIDs.
fn identity(source: SourceName, value: &str, field: &str) -> Result<Identity, OpError> {
    let value = match source {
        SourceName::DataSource(0) => match VisitorId::parse(value) {
            Some(_) => value.to_string(),
            None => {
                return Err(OpError {
                    code: 102,
                    message: format!("{field}: invalid AAM ID {}: not 38 digits", shown(value)),
                })
            }
        },
        SourceName::DataSource(ECID_DATA_SOURCE) => match Ecid::parse(value) {
            Some(ecid) => ecid.as_str().to_string(),
            None => {
                return Err(OpError {
                    code: 101,
                    message: format!(
                        "{field}: invalid Experience Cloud id {}: not hex digits and -, \
                         at most 64",
                        shown(value)
                    ),
                })
            }
        },
        _ => match text_problem(value, false, MAX_VALUE_BYTES) {
            Some(problem) => return Err(OpError::invalid_identity(format!("{field}: {problem}"))),
            None => value.to_string(),
        },
    };
    Ok(Identity { source, value })
}

fn integration_code(code: &str, field: &str) -> Result<SourceName, OpError> {
    // code_problem's reasons read as the code's own ("must not start ..."), so it is shown.
    let problem = text_problem(code, false, MAX_VALUE_BYTES)
        .or_else(|| code_problem(code).map(|why| format!("{} {why}", shown(code))));
    match problem {
        Some(problem) => Err(OpError::invalid_identity(format!("{field}: {problem}"))),
        None => Ok(SourceName::IntegrationCode(code.to_string())),
    }
}

fn operation_type(value: &Value) -> Result<OpKind, OpError> {
    let text = value.as_str().unwrap_or_default();
    [
        ("APPEND", OpKind::Append),
        ("OVERWRITE", OpKind::Overwrite),
        ("DELETE", OpKind::Delete),
    ]
    .into_iter()
    .find(|(name, _)| text.eq_ignore_ascii_case(name))
    .map(|(_, kind)| kind)
    .ok_or_else(|| {
        OpError::malformed(format!(
            "operationType: {} is not APPEND, OVERWRITE or DELETE",
            shown_json(value)
        ))
    })
}

fn signal_list(data: &Value) -> Result<Vec<(String, String)>, OpError> {
    let field = "traitEvaluation.data";
    let list = array(data, field)?;
    if list.len() > MAX_SIGNALS {
        return Err(too_many(field, list.len(), MAX_SIGNALS));
    }
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("{field}[{i}]");
            let pair = object(entry, &at, &["key", "value"])?;
            let text = |name: &str, read: fn(&Value) -> Option<String>, what: &str| match present(
                pair, name,
            ) {
                Some(v) => read(v).ok_or_else(|| {
                    OpError::malformed(format!("{at}.{name}: {} is not {what}", shown_json(v)))
                }),
                None => Err(OpError::malformed(format!("{at}.{name}: required"))),
            };
            let key = text("key", |v| v.as_str().map(str::to_string), "a string")?;
            let value = text("value", scalar_text, "a string, number or boolean")?;
            signal(key, value, &format!("{at}.key"), &format!("{at}.value"))
        })
        .collect()
}

/// A signal of either API: a non-empty key; a value that may be empty (`c_flag=`).
fn signal(
    key: String,
    value: String,
    key_field: &str,
    value_field: &str,
) -> Result<(String, String), OpError> {
    if let Some(problem) = text_problem(&key, false, MAX_VALUE_BYTES) {
        return Err(OpError::malformed(format!("{key_field}: {problem}")));
    }
    if let Some(problem) = text_problem(&value, true, MAX_VALUE_BYTES) {
        return Err(OpError::malformed(format!("{value_field}: {problem}")));
    }
    Ok((key, value))
}

fn routing_hint(hint: &Value) -> Result<(), OpError> {
    let hint = object(hint, "routingHint", &["profileLocationId"])?;
    let Some(locations) = present(hint, "profileLocationId") else {
        return Ok(());
    };
    let field = "routingHint.profileLocationId";
    match array(locations, field)?
        .iter()
        .enumerate()
        .find(|(_, v)| uint(v).is_none())
    {
        Some((i, v)) => Err(OpError::malformed(format!(
            "{field}[{i}]: {} is not a location id (an integer)",
            shown_json(v)
        ))),
        None => Ok(()),
    }
}

/// How each API names the parts of an op the shared rules speak of.
struct Names {
    append: &'static str,
    overwrite: &'static str,
    targets: &'static str,
    traits: &'static str,
    signals: &'static str,
}

const STREAM_NAMES: Names = Names {
    append: "APPEND",
    overwrite: "OVERWRITE",
    targets: "targetDataSource",
    traits: "traitInput.traitIds",
    signals: "traitEvaluation.data",
};

const S2S_NAMES: Names = Names {
    append: "an append (no d_ws)",
    overwrite: "d_ws=overwrite",
    targets: "d_tdpid",
    traits: "d_sid",
    signals: "a signal (a key not starting with d_)",
};

/// The rules an op of any API must follow once its fields are read.
fn check_op(op: &Op, names: &Names) -> Result<(), OpError> {
    if op.kind == OpKind::Overwrite && op.target_data_sources.len() != 1 {
        return Err(OpError::malformed(format!(
            "{}: {} needs exactly one target data source, not {}",
            names.targets,
            names.overwrite,
            op.target_data_sources.len()
        )));
    }
    let verb = match op.kind {
        OpKind::Append => names.append,
        OpKind::Overwrite => names.overwrite,
        OpKind::Delete => return Ok(()),
    };
    if op.trait_ids.is_empty() && op.signals.is_empty() {
        return Err(OpError::malformed(format!(
            "{verb} with neither {} nor {} would change nothing",
            names.traits, names.signals
        )));
    }
    Ok(())
}

/// A parsed `/event/s2s/{streamId}` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2sRequest {
    /// `d_orgid`, for the caller to match against its organisation.
    pub org_id: Option<String>,
    pub op: Op,
}

/// Reads the decoded parameters of an `/event/s2s` call (the query's, or
/// [`s2s_body_pairs`]'s) into its one op.
pub fn parse_s2s<'a>(
    pairs: impl IntoIterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
) -> Result<S2sRequest, OpError> {
    let mut org_id = None;
    let mut op = Op::default();
    let mut given_once: Vec<&'static str> = Vec::new();
    for (key, value) in pairs {
        let (key, value) = (key.as_ref(), value.as_ref());
        if let Some(&once) = ["d_orgid", "d_uuid", "d_mid", "d_ws"]
            .iter()
            .find(|k| **k == key)
        {
            if given_once.contains(&once) {
                return Err(OpError::malformed(format!("{once}: given more than once")));
            }
            given_once.push(once);
        }
        match key {
            "d_orgid" => match text_problem(value, false, MAX_VALUE_BYTES) {
                Some(problem) => return Err(OpError::malformed(format!("d_orgid: {problem}"))),
                None => org_id = Some(value.to_string()),
            },
            "d_sid" => comma_list(value, key, &mut op.trait_ids, D_SID)?,
            "d_tdpid" => comma_list(value, key, &mut op.target_data_sources, D_TDPID)?,
            "d_uuid" => add_identity(&mut op, identity(SourceName::DataSource(0), value, key)?)?,
            "d_mid" => add_identity(
                &mut op,
                identity(SourceName::DataSource(ECID_DATA_SOURCE), value, key)?,
            )?,
            "d_cid" | "d_cid_ic" => add_identity(&mut op, declared_id(key, value)?)?,
            "d_ws" => op.kind = write_style(value)?,
            "d_location_id" => {
                let bad = value
                    .split(',')
                    .find(|p| !p.is_empty() && digits::<u64>(p).is_none());
                if let Some(bad) = bad {
                    return Err(OpError::malformed(format!(
                        "d_location_id: {} is not a location id (an integer)",
                        shown(bad)
                    )));
                }
            }
            _ if is_system_key(key) => {
                return Err(OpError::malformed(format!(
                    "{}: not a parameter of /event/s2s ({S2S_KEYS}; other keys are signals)",
                    shown(key)
                )))
            }
            _ => {
                if op.signals.len() == MAX_SIGNALS {
                    return Err(OpError::malformed(format!(
                        "more than {MAX_SIGNALS} signals"
                    )));
                }
                let named = shown(key);
                let pair = signal(key.into(), value.into(), &format!("signal {named}"), &named)?;
                op.signals.push(pair);
            }
        }
    }
    if op.identities.is_empty() {
        return Err(OpError::invalid_identity(
            "no identity: d_uuid, d_mid, d_cid or d_cid_ic",
        ));
    }
    dedup(&mut op.trait_ids);
    dedup(&mut op.target_data_sources);
    check_op(&op, &S2S_NAMES)?;
    Ok(S2sRequest { org_id, op })
}

/// `d_`, in any case: a DCS parameter, never a signal (a mistyped one is better refused than
/// quietly evaluated as a signal).
fn is_system_key(key: &str) -> bool {
    key.as_bytes()
        .get(..2)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"d_"))
}

fn add_identity(op: &mut Op, identity: Identity) -> Result<(), OpError> {
    if op.identities.len() == MAX_IDENTITIES {
        return Err(OpError::too_many_identities());
    }
    op.identities.push(identity);
    Ok(())
}

/// Appends the numbers of a comma-separated `value` to `out` (empty pieces skipped).
fn comma_list<T>(
    value: &str,
    key: &str,
    out: &mut Vec<T>,
    (max, what, read): ListRule<T>,
) -> Result<(), OpError> {
    for piece in value.split(',').filter(|p| !p.is_empty()) {
        if out.len() == max {
            return Err(OpError::malformed(format!("{key}: more than {max} values")));
        }
        match read(piece) {
            Some(n) => out.push(n),
            None => {
                return Err(OpError::malformed(format!(
                    "{key}: {} is not {what}",
                    shown(piece)
                )))
            }
        }
    }
    Ok(())
}

/// `d_cid` (`<dpid>SEP<id>[SEP<authState>]`) or `d_cid_ic` (an integration code first).
fn declared_id(key: &str, value: &str) -> Result<Identity, OpError> {
    let by_code = key == "d_cid_ic";
    let separator = if value.contains('\u{1}') {
        "\u{1}"
    } else {
        "%01"
    };
    let mut parts = value.split(separator);
    let source = parts.next().unwrap_or_default();
    let (id, auth, extra) = (parts.next(), parts.next(), parts.next());
    let shape = if by_code {
        "<integrationCode>%01<id>[%01<authState>]"
    } else {
        "<dataSourceId>%01<id>[%01<authState>]"
    };
    let invalid = |why: String| OpError::invalid_identity(format!("{key}: {why} ({shape})"));
    let Some(id) = id else {
        return Err(invalid(format!("{} has no %01 separator", shown(value))));
    };
    if extra.is_some() {
        return Err(invalid(format!(
            "{} has more than three parts",
            shown(value)
        )));
    }
    if let Some(auth) = auth.filter(|a| !["", "0", "1", "2"].contains(a)) {
        return Err(invalid(format!(
            "authentication state {} is not 0, 1 or 2",
            shown(auth)
        )));
    }
    let source = if by_code {
        integration_code(source, key)?
    } else {
        match digits::<u32>(source) {
            Some(dpid) => SourceName::DataSource(dpid),
            None => {
                return Err(invalid(format!(
                    "{} is not {DATA_SOURCE_ID}",
                    shown(source)
                )))
            }
        }
    };
    identity(source, id, key)
}

fn write_style(value: &str) -> Result<OpKind, OpError> {
    if value.eq_ignore_ascii_case("overwrite") {
        Ok(OpKind::Overwrite)
    } else if value.eq_ignore_ascii_case("delete") {
        Ok(OpKind::Delete)
    } else {
        Err(OpError::malformed(format!(
            "d_ws: {} is not overwrite or delete (leave d_ws out to append)",
            shown(value)
        )))
    }
}

/// The parameters of an `/event/s2s` POST body: a JSON object of parameters if it starts with
/// `{`, else a form (whatever the `Content-Type`: Adobe's SDK labels its forms JSON).
pub fn s2s_body_pairs(body: &[u8]) -> Result<Vec<(String, String)>, OpError> {
    let text = std::str::from_utf8(body).map_err(|e| OpError {
        code: 311,
        message: format!("body: not UTF-8 (at byte {})", e.valid_up_to()),
    })?;
    if text.trim_start().starts_with('{') {
        return json_pairs(text);
    }
    // Strict decoding: url's form parser would turn a bad %-escape into U+FFFD unannounced.
    form_pairs(body)
        .map(|pair| {
            pair.map_err(|e| OpError {
                code: 311,
                message: e.to_string(),
            })
        })
        .collect()
}

/// `{"d_sid": [1, "2"], "c_tier": "gold"}`: an array gives its key once per entry; `null` is
/// the key left out.
fn json_pairs(text: &str) -> Result<Vec<(String, String)>, OpError> {
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        let at = json_offset(text.as_bytes(), &e).map(|at| format!(" (at byte {at})"));
        OpError::malformed(format!(
            "body: not a JSON object of parameters: {}{}",
            bare_message(&e),
            at.unwrap_or_default()
        ))
    })?;
    let mut pairs = Vec::new();
    for (key, value) in &object {
        let (items, indexed) = match value {
            Value::Null => continue,
            Value::Array(items) => (items.as_slice(), true),
            one => (std::slice::from_ref(one), false),
        };
        for (i, item) in items.iter().enumerate() {
            let Some(text) = scalar_text(item) else {
                let at = if indexed {
                    format!("{}[{i}]", shown(key))
                } else {
                    shown(key)
                };
                return Err(OpError::malformed(format!(
                    "{at}: {} is not a string, number or boolean",
                    shown_json(item)
                )));
            };
            pairs.push((key.clone(), text));
        }
    }
    Ok(pairs)
}

/// The object `value` is, checked to have only the `known` fields.
fn object<'v>(
    value: &'v Value,
    field: &str,
    known: &[&str],
) -> Result<&'v Map<String, Value>, OpError> {
    let problem = match value.as_object() {
        None => format!("{} is not an object", shown_json(value)),
        Some(fields) => match fields.keys().find(|k| !known.contains(&k.as_str())) {
            None => return Ok(fields),
            Some(key) => {
                let at = if field.is_empty() {
                    shown(key)
                } else {
                    format!("{field}.{}", shown(key))
                };
                return Err(OpError::malformed(format!(
                    "{at}: unknown field (known: {})",
                    known.join(", ")
                )));
            }
        },
    };
    Err(OpError::malformed(if field.is_empty() {
        format!("operation: {problem}")
    } else {
        format!("{field}: {problem}")
    }))
}

fn array<'v>(value: &'v Value, field: &str) -> Result<&'v Vec<Value>, OpError> {
    value.as_array().ok_or_else(|| {
        OpError::malformed(format!("{field}: {} is not an array", shown_json(value)))
    })
}

fn present<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// An array of ids, at most `max`, duplicates dropped.
fn numbers<T: Copy + Eq + Hash>(
    value: &Value,
    field: &str,
    max: usize,
    what: &str,
    read: fn(&Value) -> Option<T>,
) -> Result<Vec<T>, OpError> {
    let list = array(value, field)?;
    if list.len() > max {
        return Err(too_many(field, list.len(), max));
    }
    let mut out = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            read(v).ok_or_else(|| {
                OpError::malformed(format!("{field}[{i}]: {} is not {what}", shown_json(v)))
            })
        })
        .collect::<Result<Vec<T>, OpError>>()?;
    dedup(&mut out);
    Ok(out)
}

fn too_many(field: &str, got: usize, max: usize) -> OpError {
    OpError::malformed(format!("{field}: {got} entries, at most {max}"))
}

/// Drops repeats, keeping each first one where it was.
fn dedup<T: Copy + Eq + Hash>(list: &mut Vec<T>) {
    let mut seen = HashSet::with_capacity(list.len());
    list.retain(|x| seen.insert(*x));
}

/// A non-negative integer, or a string of its digits.
fn uint(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => digits(s),
        _ => None,
    }
}

fn data_source_id(value: &Value) -> Option<u32> {
    uint(value).and_then(|n| u32::try_from(n).ok())
}

fn trait_id(value: &Value) -> Option<u64> {
    uint(value).filter(|&n| n >= 1)
}

/// ASCII digits only: `str::parse` would also take a sign.
fn digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A signal value's text: numbers as serde_json prints them, booleans as `true`/`false`.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why `text` cannot be an id, key or value, if it cannot.
fn text_problem(text: &str, may_be_empty: bool, max: usize) -> Option<String> {
    if text.is_empty() && !may_be_empty {
        return Some("empty".into());
    }
    if text.len() > max {
        return Some(format!("{} bytes, at most {max}", text.len()));
    }
    let (at, c) = text.char_indices().find(|(_, c)| c.is_control())?;
    Some(format!("control character U+{:04X} at byte {at}", c as u32))
}

/// Client text in a message: as it is when it is a plain name, else quoted and escaped, and
/// cut to 64 bytes either way.
fn shown(text: &str) -> String {
    let cut = truncate(text, 64);
    let plain = !cut.is_empty()
        && cut
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let ellipsis = if cut.len() < text.len() { "…" } else { "" };
    if plain {
        format!("{cut}{ellipsis}")
    } else {
        format!("{cut:?}{ellipsis}")
    }
}

/// A JSON value in a message: strings and numbers as they are, others by their kind.
fn shown_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", truncate(s, 64)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "12345678901234567890123456789012345678";

    fn ds(dpid: u32, value: &str) -> Identity {
        Identity {
            source: SourceName::DataSource(dpid),
            value: value.into(),
        }
    }

    fn named(source: SourceName, value: &str) -> Identity {
        Identity {
            source,
            value: value.into(),
        }
    }

    /// An op on data source 9001's profile `c1`.
    fn op(traits: &[u64]) -> Op {
        Op {
            identities: vec![ds(9001, "c1")],
            trait_ids: traits.to_vec(),
            ..Op::default()
        }
    }

    fn signals(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(code: u16, message: &str) -> Result<Op, OpError> {
        Err(OpError {
            code,
            message: message.into(),
        })
    }

    /// The one op of a body holding `op` (JSON text).
    fn check(op: &str, expected: Result<Op, OpError>) {
        let body = format!(r#"{{"ops":[{op}]}}"#);
        let parsed = parse_stream(body.as_bytes()).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(parsed.ops, vec![expected], "{op}");
    }

    const ID: &str = r#""identities":[{"dataSourceId":9001,"value":"c1"}]"#;

    #[test]
    fn stream_ops() {
        let with = |fields: &str| format!("{{{ID},{fields}}}");
        check(&with(r#""traitInput":{"traitIds":[5]}"#), Ok(op(&[5])));
        check(
            &with(r#""traitInput":{"traitIds":[5,"6",5,"0006"]}"#),
            Ok(op(&[5, 6])),
        );
        check(
            r#"{"identities":[{"dataSourceId":"9001","value":"c1"}],"traitInput":{"traitIds":[5]}}"#,
            Ok(op(&[5])),
        );
        check(
            &with(
                r#""traitEvaluation":{"data":[{"key":"c_tier","value":"gold"},
                    {"key":"c_n","value":3},{"key":"c_f","value":2.5},{"key":"c_big","value":-7},
                    {"key":"c_b","value":true},{"key":"c_flag","value":""}]}"#,
            ),
            Ok(Op {
                signals: signals(&[
                    ("c_tier", "gold"),
                    ("c_n", "3"),
                    ("c_f", "2.5"),
                    ("c_big", "-7"),
                    ("c_b", "true"),
                    ("c_flag", ""),
                ]),
                ..op(&[])
            }),
        );
        check(
            &with(
                r#""traitInput":{"traitIds":[5]},"targetDataSource":[7,"8",7],"operationType":"append""#,
            ),
            Ok(Op {
                target_data_sources: vec![7, 8],
                ..op(&[5])
            }),
        );
        check(
            &with(
                r#""traitInput":{"traitIds":[5]},"targetDataSource":[7],"operationType":"Overwrite""#,
            ),
            Ok(Op {
                target_data_sources: vec![7],
                kind: OpKind::Overwrite,
                ..op(&[5])
            }),
        );
        // DELETE without traits: every trait of the target data sources.
        check(
            &with(r#""operationType":"DELETE""#),
            Ok(Op {
                kind: OpKind::Delete,
                ..op(&[])
            }),
        );
        check(
            &with(
                r#""operationType":"delete","targetDataSource":[7],"traitInput":{"traitIds":[9]}"#,
            ),
            Ok(Op {
                kind: OpKind::Delete,
                target_data_sources: vec![7],
                ..op(&[9])
            }),
        );
        check(
            &with(r#""traitInput":{"traitIds":[5]},"routingHint":{"profileLocationId":[7,9]}"#),
            Ok(op(&[5])),
        );
        // null is the field left out.
        check(
            &with(
                r#""traitInput":{"traitIds":[5]},"traitEvaluation":null,"targetDataSource":null,
                "operationType":null,"routingHint":{"profileLocationId":null}"#,
            ),
            Ok(op(&[5])),
        );
        check(
            &with(r#""traitInput":{"traitIds":[5]},"traitEvaluation":{}"#),
            Ok(op(&[5])),
        );
    }

    #[test]
    fn stream_identities() {
        let traits = r#""traitInput":{"traitIds":[5]}"#;
        let with = |ids: &str| format!(r#"{{"identities":[{ids}],{traits}}}"#);
        check(
            &with(
                r#"{"integrationCode":"crm","value":"u 1"},{"namespaceCode":"email","value":"h"},
                   {"dataSourceId":0,"value":"12345678901234567890123456789012345678"},
                   {"dataSourceId":4,"value":"abc-12"},{"dataSourceId":4294967295,"value":"é"}"#,
            ),
            Ok(Op {
                identities: vec![
                    named(SourceName::IntegrationCode("crm".into()), "u 1"),
                    named(SourceName::Namespace("email".into()), "h"),
                    ds(0, UUID),
                    ds(4, "ABC-12"),
                    ds(u32::MAX, "é"),
                ],
                ..op(&[5])
            }),
        );
        let ten = [r#"{"dataSourceId":9001,"value":"c1"}"#; 10].join(",");
        check(
            &with(&ten),
            Ok(Op {
                identities: vec![ds(9001, "c1"); 10],
                ..op(&[5])
            }),
        );
        let eleven = [r#"{"dataSourceId":9001,"value":"c1"}"#; 11].join(",");
        check(
            &with(&eleven),
            err(
                301,
                "identities: at most 10 identities per operation (got 11)",
            ),
        );
        check(
            &format!("{{{traits}}}"),
            err(300, "identities: required (1 to 10 identities)"),
        );
        check(
            &format!(r#"{{"identities":null,{traits}}}"#),
            err(300, "identities: required (1 to 10 identities)"),
        );
        check(
            &with(""),
            err(300, "identities: empty (1 to 10 identities)"),
        );
        check(
            &format!(r#"{{"identities":{{"dataSourceId":1}},{traits}}}"#),
            err(0, "identities: an object is not an array"),
        );
        check(
            &with(r#"{"dataSourceId":9001,"value":"c1"},{"dataSourceId":-1,"value":"c2"}"#),
            err(
                300,
                "identities[1].dataSourceId: -1 is not a data source id \
                 (an integer from 0 to 4294967295)",
            ),
        );
        let bad_id = |json: &str, shown: &str| {
            check(
                &with(&format!(r#"{{"dataSourceId":{json},"value":"c1"}}"#)),
                err(
                    300,
                    &format!(
                        "identities[0].dataSourceId: {shown} is not a data source id \
                         (an integer from 0 to 4294967295)"
                    ),
                ),
            )
        };
        bad_id("4294967296", "4294967296");
        bad_id("1.5", "1.5");
        bad_id(r#""9x""#, r#""9x""#);
        bad_id(r#""+9""#, r#""+9""#);
        bad_id(r#""""#, r#""""#);
        bad_id("true", "true");
        bad_id("[1]", "an array");
        let bad =
            |identity: &str, code: u16, message: &str| check(&with(identity), err(code, message));
        bad("5", 0, "identities[0]: 5 is not an object");
        bad(
            r#"{"dataSourceId":9001,"value":"c1","authState":1}"#,
            0,
            "identities[0].authState: unknown field \
             (known: dataSourceId, integrationCode, namespaceCode, value)",
        );
        bad(
            r#"{"value":"c1"}"#,
            300,
            "identities[0]: names no data source \
             (one of dataSourceId, integrationCode, namespaceCode)",
        );
        bad(
            r#"{"dataSourceId":9001,"integrationCode":"crm","value":"c1"}"#,
            300,
            "identities[0]: names its data source 2 ways (dataSourceId, integrationCode): one only",
        );
        bad(
            r#"{"dataSourceId":9001}"#,
            300,
            "identities[0].value: required (the profile's id in that data source)",
        );
        bad(
            r#"{"dataSourceId":9001,"value":""}"#,
            300,
            "identities[0].value: empty",
        );
        bad(
            r#"{"dataSourceId":9001,"value":12}"#,
            300,
            "identities[0].value: 12 is not a string",
        );
        bad(
            r#"{"dataSourceId":9001,"value":"a\u0001b"}"#,
            300,
            "identities[0].value: control character U+0001 at byte 1",
        );
        bad(
            &format!(r#"{{"dataSourceId":9001,"value":"{}"}}"#, "x".repeat(257)),
            300,
            "identities[0].value: 257 bytes, at most 256",
        );
        bad(
            r#"{"dataSourceId":0,"value":"123"}"#,
            102,
            "identities[0].value: invalid AAM ID 123: not 38 digits",
        );
        bad(
            r#"{"dataSourceId":4,"value":"not-an-ecid"}"#,
            101,
            "identities[0].value: invalid Experience Cloud id not-an-ecid: \
             not hex digits and -, at most 64",
        );
        bad(
            r#"{"integrationCode":"","value":"c1"}"#,
            300,
            "identities[0].integrationCode: empty",
        );
        bad(
            r#"{"integrationCode":" crm","value":"c1"}"#,
            300,
            r#"identities[0].integrationCode: " crm" must not start or end with a space"#,
        );
        bad(
            r#"{"integrationCode":7,"value":"c1"}"#,
            300,
            "identities[0].integrationCode: 7 is not a string",
        );
        bad(
            r#"{"namespaceCode":"a\nb","value":"c1"}"#,
            300,
            "identities[0].namespaceCode: control character U+000A at byte 1",
        );
    }

    #[test]
    fn stream_op_errors() {
        let with = |fields: &str| format!("{{{ID},{fields}}}");
        let bad = |op: &str, message: &str| check(op, err(0, message));
        bad("5", "operation: 5 is not an object");
        bad("[]", "operation: an array is not an object");
        bad(
            &with(r#""traitIDs":[5]"#),
            "traitIDs: unknown field (known: identities, traitInput, traitEvaluation, \
             targetDataSource, operationType, routingHint)",
        );
        bad(
            &with(r#""trait ids":[5]"#),
            "\"trait ids\": unknown field (known: identities, traitInput, traitEvaluation, \
             targetDataSource, operationType, routingHint)",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5,0]}"#),
            "traitInput.traitIds[1]: 0 is not a trait id (an integer from 1 to 18446744073709551615)",
        );
        bad(
            &with(r#""traitInput":{"traitIds":["abc"]}"#),
            r#"traitInput.traitIds[0]: "abc" is not a trait id (an integer from 1 to 18446744073709551615)"#,
        );
        bad(
            &with(r#""traitInput":{"traitIds":[18446744073709551616]}"#),
            "traitInput.traitIds[0]: 1.8446744073709552e+19 is not a trait id \
             (an integer from 1 to 18446744073709551615)",
        );
        bad(
            &with(r#""traitInput":{"traitIds":5}"#),
            "traitInput.traitIds: 5 is not an array",
        );
        bad(
            &with(r#""traitInput":[5]"#),
            "traitInput: an array is not an object",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5],"sids":[6]}"#),
            "traitInput.sids: unknown field (known: traitIds)",
        );
        let many: Vec<String> = (1..=1001).map(|n| n.to_string()).collect();
        bad(
            &with(&format!(
                r#""traitInput":{{"traitIds":[{}]}}"#,
                many.join(",")
            )),
            "traitInput.traitIds: 1001 entries, at most 1000",
        );
        let data = |entries: &str| with(&format!(r#""traitEvaluation":{{"data":[{entries}]}}"#));
        bad(
            &data(r#"{"value":"v"}"#),
            "traitEvaluation.data[0].key: required",
        );
        bad(
            &data(r#"{"key":"","value":"v"}"#),
            "traitEvaluation.data[0].key: empty",
        );
        bad(
            &data(r#"{"key":5,"value":"v"}"#),
            "traitEvaluation.data[0].key: 5 is not a string",
        );
        bad(
            &data(r#"{"key":"k","value":"v"},{"key":"k"}"#),
            "traitEvaluation.data[1].value: required",
        );
        bad(
            &data(r#"{"key":"k","value":null}"#),
            "traitEvaluation.data[0].value: required",
        );
        bad(
            &data(r#"{"key":"k","value":{"a":1}}"#),
            "traitEvaluation.data[0].value: an object is not a string, number or boolean",
        );
        bad(
            &data(r#"{"key":"k","value":["a"]}"#),
            "traitEvaluation.data[0].value: an array is not a string, number or boolean",
        );
        bad(
            &data(&format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(257))),
            "traitEvaluation.data[0].value: 257 bytes, at most 256",
        );
        bad(
            &data(r#"{"key":"k\t","value":"v"}"#),
            "traitEvaluation.data[0].key: control character U+0009 at byte 1",
        );
        bad(
            &data(r#"{"key":"k","value":"v","type":"s"}"#),
            "traitEvaluation.data[0].type: unknown field (known: key, value)",
        );
        bad(&data("7"), "traitEvaluation.data[0]: 7 is not an object");
        let entries = vec![r#"{"key":"k","value":"v"}"#; 1001].join(",");
        bad(
            &data(&entries),
            "traitEvaluation.data: 1001 entries, at most 1000",
        );
        bad(
            &with(r#""traitEvaluation":{"signals":[]}"#),
            "traitEvaluation.signals: unknown field (known: data)",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"targetDataSource":[1,2,3,4,5,6,7,8,9,10,11]"#),
            "targetDataSource: 11 entries, at most 10",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"targetDataSource":[-3]"#),
            "targetDataSource[0]: -3 is not a data source id (an integer from 0 to 4294967295)",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"operationType":"MERGE""#),
            r#"operationType: "MERGE" is not APPEND, OVERWRITE or DELETE"#,
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"operationType":1"#),
            "operationType: 1 is not APPEND, OVERWRITE or DELETE",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"operationType":"OVERWRITE""#),
            "targetDataSource: OVERWRITE needs exactly one target data source, not 0",
        );
        bad(
            &with(
                r#""traitInput":{"traitIds":[5]},"operationType":"OVERWRITE","targetDataSource":[1,2]"#,
            ),
            "targetDataSource: OVERWRITE needs exactly one target data source, not 2",
        );
        bad(
            &with(r#""operationType":"OVERWRITE","targetDataSource":[1]"#),
            "OVERWRITE with neither traitInput.traitIds nor traitEvaluation.data \
             would change nothing",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[]}"#),
            "APPEND with neither traitInput.traitIds nor traitEvaluation.data would change nothing",
        );
        bad(
            &format!("{{{ID}}}"),
            "APPEND with neither traitInput.traitIds nor traitEvaluation.data would change nothing",
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"routingHint":{"profileLocationId":["x"]}"#),
            r#"routingHint.profileLocationId[0]: "x" is not a location id (an integer)"#,
        );
        bad(
            &with(r#""traitInput":{"traitIds":[5]},"routingHint":{"region":7}"#),
            "routingHint.region: unknown field (known: profileLocationId)",
        );
    }

    #[test]
    fn one_bad_op_costs_only_itself() {
        let body = r#"{"tracing_id":"t-1","ops":[
            {"identities":[{"dataSourceId":9001,"value":"c1"}],"traitInput":{"traitIds":[5]}},
            {"identities":[{"dataSourceId":9001,"value":"c1"},{"dataSourceId":"x","value":"c2"}],
             "traitInput":{"traitIds":[5]}},
            {"identities":[{"dataSourceId":9001,"value":"c1"}],"traitInput":{"traitIds":[6]}}]}"#;
        let parsed = parse_stream(body.as_bytes()).unwrap();
        assert_eq!(parsed.tracing_id.as_deref(), Some("t-1"));
        assert_eq!(
            parsed.ops,
            vec![
                Ok(op(&[5])),
                err(
                    300,
                    r#"identities[1].dataSourceId: "x" is not a data source id (an integer from 0 to 4294967295)"#
                ),
                Ok(op(&[6])),
            ]
        );
    }

    #[test]
    fn sdk_stream_body() {
        let body = r#"{"tracing_id":"x","ops":[{"identities":[{"dataSourceId":9001,"value":"c1"}],"traitInput":{"traitIds":[5]}}]}"#;
        assert_eq!(
            parse_stream(body.as_bytes()),
            Ok(StreamRequest {
                tracing_id: Some("x".into()),
                ops: vec![Ok(op(&[5]))],
            })
        );
    }

    /// A body that cannot be read: its field, message and offset.
    fn check_body(body: &str, expected: Result<usize, (&str, &str, Option<usize>)>) {
        let got = parse_stream(body.as_bytes())
            .map(|r| r.ops.len())
            .map_err(|e| (e.field, e.message, e.offset));
        let expected = expected
            .map_err(|(field, message, offset)| (field.to_string(), message.to_string(), offset));
        assert_eq!(got, expected, "{body}");
    }

    #[test]
    fn stream_bodies() {
        let one =
            r#"{"identities":[{"dataSourceId":1,"value":"a"}],"traitInput":{"traitIds":[1]}}"#;
        check_body(&format!(r#"{{"ops":[{one}]}}"#), Ok(1));
        check_body(
            &format!(r#" {{"tracing_id":null,"ops":[{one},5]}} "#),
            Ok(2),
        );
        // Ops are read on their own: a bad one is not the body's error.
        check_body(r#"{"ops":[{},"x",null]}"#, Ok(3));
        check_body("", Err(("", "EOF while parsing a value", Some(0))));
        check_body("{", Err(("", "EOF while parsing an object", Some(1))));
        check_body(
            "[1]",
            Err((
                "",
                "invalid type: sequence, expected a JSON object with an `ops` array",
                Some(0),
            )),
        );
        check_body(
            "\"ops\"",
            Err((
                "",
                "invalid type: string \"ops\", expected a JSON object with an `ops` array",
                Some(5),
            )),
        );
        check_body(
            "{}",
            Err(("ops", "required: an array of 1 to 1000 operations", Some(2))),
        );
        check_body(
            r#"{"tracing_id":"x"}"#,
            Err((
                "ops",
                "required: an array of 1 to 1000 operations",
                Some(18),
            )),
        );
        check_body(
            r#"{"ops":[]}"#,
            Err(("ops", "empty: an array of 1 to 1000 operations", Some(9))),
        );
        check_body(
            r#"{"ops":{}}"#,
            Err((
                "ops",
                "invalid type: map, expected an array of 1 to 1000 operations",
                Some(7),
            )),
        );
        check_body(
            &format!(r#"{{"ops":[{one}],"op":[]}}"#),
            Err((
                "op",
                "unknown field (a body has tracing_id and ops)",
                Some(one.len() + 14),
            )),
        );
        check_body(
            &format!(r#"{{"ops":[{one}],"ops":[{one}]}}"#),
            Err(("ops", "given twice", Some(one.len() + 15))),
        );
        check_body(
            &format!(r#"{{"tracing_id":5,"ops":[{one}]}}"#),
            Err((
                "tracing_id",
                "invalid type: integer `5`, expected a string",
                Some(15),
            )),
        );
        check_body(
            &format!(r#"{{"tracing_id":"{}","ops":[{one}]}}"#, "t".repeat(257)),
            Err(("tracing_id", "257 bytes, at most 256", Some(273))),
        );
        check_body(
            &format!(r#"{{"tracing_id":"a\u0007","ops":[{one}]}}"#),
            Err(("tracing_id", "control character U+0007 at byte 1", Some(23))),
        );
        check_body(
            &format!("{{\"ops\":[{one}]}} x"),
            Err(("", "trailing characters", Some(one.len() + 12))),
        );
        // A multi-line body: line and column become a byte offset.
        check_body(
            "{\n  \"ops\": [\n    1,\n  }",
            // serde_json stops after the byte it could not take (the `}`, at 22).
            Err(("", "expected value", Some(23))),
        );
    }

    #[test]
    fn stream_body_errors_in_bytes() {
        let bad_utf8 = b"{\"ops\":[\"\xff\"]}";
        let e = parse_stream(bad_utf8).unwrap_err();
        assert_eq!((e.field.as_str(), e.offset), ("", Some(10)), "{e}");
        assert!(e.message.contains("invalid unicode"), "{e}");
        assert_eq!(
            BodyError {
                message: "empty".into(),
                field: "ops".into(),
                offset: Some(9)
            }
            .to_string(),
            "ops: empty (at byte 9)"
        );
    }

    #[test]
    fn ops_limit() {
        let one =
            r#"{"identities":[{"dataSourceId":1,"value":"a"}],"traitInput":{"traitIds":[1]}}"#;
        let body = |n: usize| format!(r#"{{"ops":[{}]}}"#, vec![one; n].join(","));
        let thousand = parse_stream(body(MAX_OPS).as_bytes()).unwrap();
        assert_eq!(thousand.ops.len(), MAX_OPS);
        assert!(thousand.ops.iter().all(Result::is_ok));
        let e = parse_stream(body(MAX_OPS + 1).as_bytes()).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("ops", "more than 1000 operations")
        );
    }

    #[test]
    fn stream_ids() {
        let check = |id: &str, expected: Result<(), &str>| {
            assert_eq!(
                valid_stream_id(id),
                expected.map_err(str::to_string),
                "{id}"
            );
        };
        check(",", Ok(()));
        check("crm123", Ok(()));
        check("a.b,c+d-e$f_g*h!(i)Z9", Ok(()));
        check(&"s".repeat(255), Ok(()));
        check(
            "",
            Err("stream id: empty (ASCII letters, digits and .,+-$_*!())"),
        );
        check(&"s".repeat(256), Err("stream id: 256 bytes, at most 255"));
        check(
            "crm 1",
            Err("stream id: ' ' at byte 3 is not allowed (ASCII letters, digits and .,+-$_*!())"),
        );
        check(
            "é",
            Err("stream id: 'é' at byte 0 is not allowed (ASCII letters, digits and .,+-$_*!())"),
        );
        check(
            "a/b",
            Err("stream id: '/' at byte 1 is not allowed (ASCII letters, digits and .,+-$_*!())"),
        );
    }

    /// An `/event/s2s` call from its decoded parameters.
    fn check_s2s(pairs: &[(&str, &str)], expected: Result<Op, OpError>) {
        let got = parse_s2s(pairs.iter().map(|&(k, v)| (Cow::from(k), Cow::from(v))));
        assert_eq!(got.map(|r| r.op), expected, "{pairs:?}");
    }

    #[test]
    fn s2s_calls() {
        // The SDK's query, `<DPID>%01<DPUID>` literally as its docs say.
        check_s2s(
            &[("d_cid", "9001%01c1"), ("d_sid", "1"), ("d_sid", "2")],
            Ok(op(&[1, 2])),
        );
        check_s2s(
            &[("d_cid", "9001\u{1}c1\u{1}1"), ("d_sid", "1,2,,2")],
            Ok(op(&[1, 2])),
        );
        // With the byte 0x01 as separator, a literal %01 is the id's own.
        check_s2s(
            &[("d_cid", "9001\u{1}c%011"), ("d_sid", "1")],
            Ok(Op {
                identities: vec![ds(9001, "c%011")],
                ..op(&[1])
            }),
        );
        check_s2s(
            &[
                ("d_uuid", UUID),
                ("d_mid", "abc-1"),
                ("d_cid_ic", "crm%01u1%012"),
                ("d_cid", "7%01x%01"),
                ("d_tdpid", "5"),
                ("d_ws", "OVERWRITE"),
                ("c_tier", "gold"),
                ("tier", "1,2"),
                ("c_flag", ""),
                ("d_location_id", "7,9"),
                ("d_orgid", "ORG@AdobeOrg"),
            ],
            Ok(Op {
                identities: vec![
                    ds(0, UUID),
                    ds(4, "ABC-1"),
                    named(SourceName::IntegrationCode("crm".into()), "u1"),
                    ds(7, "x"),
                ],
                signals: signals(&[("c_tier", "gold"), ("tier", "1,2"), ("c_flag", "")]),
                target_data_sources: vec![5],
                kind: OpKind::Overwrite,
                ..op(&[])
            }),
        );
        check_s2s(
            &[("d_cid", "9001%01c1"), ("d_ws", "Delete"), ("d_sid", "")],
            Ok(Op {
                kind: OpKind::Delete,
                ..op(&[])
            }),
        );
        check_s2s(
            &[
                ("d_cid", "9001%01c1"),
                ("d_tdpid", "3,3,4"),
                ("d_tdpid", "3"),
                ("c_n", "3"),
            ],
            Ok(Op {
                target_data_sources: vec![3, 4],
                signals: signals(&[("c_n", "3")]),
                ..op(&[])
            }),
        );
        let ten: Vec<(&str, &str)> = vec![("d_cid", "9001%01c1"); 10];
        check_s2s(
            &[ten.as_slice(), &[("d_sid", "1")]].concat(),
            Ok(Op {
                identities: vec![ds(9001, "c1"); 10],
                ..op(&[1])
            }),
        );
        let org = parse_s2s([
            (Cow::from("d_orgid"), Cow::from("O")),
            ("d_uuid".into(), UUID.into()),
            ("d_sid".into(), "1".into()),
        ]);
        assert_eq!(org.map(|r| r.org_id), Ok(Some("O".to_string())));
    }

    #[test]
    fn s2s_errors() {
        let id = ("d_cid", "9001%01c1");
        let bad =
            |pairs: &[(&str, &str)], code: u16, message: &str| check_s2s(pairs, err(code, message));
        bad(
            &[("d_sid", "1"), ("c_tier", "gold")],
            300,
            "no identity: d_uuid, d_mid, d_cid or d_cid_ic",
        );
        bad(&[], 300, "no identity: d_uuid, d_mid, d_cid or d_cid_ic");
        bad(
            &[("d_uuid", "123"), ("d_sid", "1")],
            102,
            "d_uuid: invalid AAM ID 123: not 38 digits",
        );
        bad(
            &[("d_uuid", "")],
            102,
            r#"d_uuid: invalid AAM ID "": not 38 digits"#,
        );
        bad(
            &[("d_mid", "<script>")],
            101,
            r#"d_mid: invalid Experience Cloud id "<script>": not hex digits and -, at most 64"#,
        );
        bad(
            &[("d_cid", "9001c1")],
            300,
            "d_cid: 9001c1 has no %01 separator (<dataSourceId>%01<id>[%01<authState>])",
        );
        bad(
            &[("d_cid", "9001%01c1%011%01x")],
            300,
            r#"d_cid: "9001%01c1%011%01x" has more than three parts (<dataSourceId>%01<id>[%01<authState>])"#,
        );
        bad(
            &[("d_cid", "9001\u{1}c1\u{1}3")],
            300,
            "d_cid: authentication state 3 is not 0, 1 or 2 (<dataSourceId>%01<id>[%01<authState>])",
        );
        bad(
            &[("d_cid", "crm%01c1")],
            300,
            "d_cid: crm is not a data source id (an integer from 0 to 4294967295) \
             (<dataSourceId>%01<id>[%01<authState>])",
        );
        bad(&[("d_cid", "9001%01")], 300, "d_cid: empty");
        bad(
            &[("d_cid", "0%01123")],
            102,
            "d_cid: invalid AAM ID 123: not 38 digits",
        );
        bad(
            &[("d_cid_ic", " crm%01c1")],
            300,
            r#"d_cid_ic: " crm" must not start or end with a space"#,
        );
        bad(
            &[("d_cid_ic", "c1")],
            300,
            "d_cid_ic: c1 has no %01 separator (<integrationCode>%01<id>[%01<authState>])",
        );
        let eleven = vec![id; 11];
        bad(&eleven, 301, "at most 10 identities per operation");
        bad(
            &[id, ("d_sid", "1"), ("d_ws", "append")],
            0,
            "d_ws: append is not overwrite or delete (leave d_ws out to append)",
        );
        bad(
            &[id, ("d_ws", "delete"), ("d_ws", "delete")],
            0,
            "d_ws: given more than once",
        );
        bad(
            &[("d_uuid", UUID), ("d_uuid", UUID)],
            0,
            "d_uuid: given more than once",
        );
        bad(
            &[id, ("d_sid", "1"), ("d_streamid", "s")],
            0,
            "d_streamid: not a parameter of /event/s2s (d_orgid, d_sid, d_tdpid, d_uuid, \
             d_mid, d_cid, d_cid_ic, d_ws, d_location_id; other keys are signals)",
        );
        bad(
            &[id, ("D_SID", "1")],
            0,
            "D_SID: not a parameter of /event/s2s (d_orgid, d_sid, d_tdpid, d_uuid, \
             d_mid, d_cid, d_cid_ic, d_ws, d_location_id; other keys are signals)",
        );
        bad(
            &[id, ("d_sid", "1,0")],
            0,
            "d_sid: 0 is not a trait id (an integer from 1 to 18446744073709551615)",
        );
        bad(
            &[id, ("d_sid", "1, 2")],
            0,
            r#"d_sid: " 2" is not a trait id (an integer from 1 to 18446744073709551615)"#,
        );
        let sids: Vec<String> = (1..=1001).map(|n| n.to_string()).collect();
        bad(
            &[id, ("d_sid", &sids.join(","))],
            0,
            "d_sid: more than 1000 values",
        );
        bad(
            &[id, ("d_sid", "1"), ("d_tdpid", "4294967296")],
            0,
            "d_tdpid: 4294967296 is not a data source id (an integer from 0 to 4294967295)",
        );
        bad(
            &[id, ("d_sid", "1"), ("d_ws", "overwrite")],
            0,
            "d_tdpid: d_ws=overwrite needs exactly one target data source, not 0",
        );
        bad(
            &[
                id,
                ("d_sid", "1"),
                ("d_ws", "overwrite"),
                ("d_tdpid", "1,2"),
            ],
            0,
            "d_tdpid: d_ws=overwrite needs exactly one target data source, not 2",
        );
        bad(
            &[id, ("d_tdpid", "1")],
            0,
            "an append (no d_ws) with neither d_sid nor a signal (a key not starting with d_) \
             would change nothing",
        );
        bad(&[id, ("", "x")], 0, r#"signal "": empty"#);
        bad(
            &[id, ("c_x", "a\u{1}b")],
            0,
            "c_x: control character U+0001 at byte 1",
        );
        let long = "v".repeat(257);
        bad(&[id, ("c_x", &long)], 0, "c_x: 257 bytes, at most 256");
        bad(
            &[id, ("d_sid", "1"), ("d_location_id", "7,x")],
            0,
            "d_location_id: x is not a location id (an integer)",
        );
        bad(&[id, ("d_orgid", "")], 0, "d_orgid: empty");
        let keys: Vec<String> = (0..=1000).map(|n| format!("c_{n}")).collect();
        let many: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        bad(
            &[&[id], many.as_slice()].concat(),
            0,
            "more than 1000 signals",
        );
    }

    fn check_pairs(body: &[u8], expected: Result<&[(&str, &str)], (u16, &str)>) {
        let got = s2s_body_pairs(body).map(|mut pairs| {
            pairs.sort();
            pairs
        });
        let expected = match expected {
            Ok(pairs) => {
                let mut pairs: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                pairs.sort();
                Ok(pairs)
            }
            Err((code, message)) => Err(OpError {
                code,
                message: message.into(),
            }),
        };
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(body));
    }

    #[test]
    fn s2s_bodies() {
        // The SDK's POST: a form, labelled JSON.
        check_pairs(
            b"d_orgid=O&d_sid=1,2&d_cid=9001%01c1",
            Ok(&[("d_orgid", "O"), ("d_sid", "1,2"), ("d_cid", "9001\u{1}c1")]),
        );
        check_pairs(
            b"d_cid=9001%2501c1&c_tier=gold+plus&&flag",
            Ok(&[
                ("d_cid", "9001%01c1"),
                ("c_tier", "gold plus"),
                ("flag", ""),
            ]),
        );
        check_pairs(b"", Ok(&[]));
        check_pairs(
            br#" {"d_orgid":"O","d_sid":[1,"2"],"c_n":2.5,"c_b":true,"d_mid":null,"d_tdpid":7}"#,
            Ok(&[
                ("d_orgid", "O"),
                ("d_sid", "1"),
                ("d_sid", "2"),
                ("c_n", "2.5"),
                ("c_b", "true"),
                ("d_tdpid", "7"),
            ]),
        );
        check_pairs(
            br#"{"d_sid":[1,[2]]}"#,
            Err((0, "d_sid[1]: an array is not a string, number or boolean")),
        );
        check_pairs(
            br#"{"c_x":{"a":1}}"#,
            Err((0, "c_x: an object is not a string, number or boolean")),
        );
        check_pairs(
            br#"{"d_sid":[null]}"#,
            Err((0, "d_sid[0]: null is not a string, number or boolean")),
        );
        check_pairs(
            b"{\"d_sid\":\n 1,}",
            Err((
                0,
                "body: not a JSON object of parameters: trailing comma (at byte 14)",
            )),
        );
        check_pairs(b"d_cid=\xff", Err((311, "body: not UTF-8 (at byte 6)")));
        check_pairs(
            b"d_cid=%FF",
            Err((
                311,
                "parameter \"d_cid\" is not valid percent-encoded UTF-8",
            )),
        );
        check_pairs(
            b"d_cid=100%",
            Err((
                311,
                "parameter \"d_cid\" is not valid percent-encoded UTF-8",
            )),
        );
    }

    #[test]
    fn sdk_form_body_end_to_end() {
        let pairs = s2s_body_pairs(b"d_orgid=O&d_sid=1,2&d_cid=9001%01c1").unwrap();
        let parsed = parse_s2s(pairs.into_iter().map(|(k, v)| (k.into(), v.into()))).unwrap();
        assert_eq!(
            parsed,
            S2sRequest {
                org_id: Some("O".into()),
                op: op(&[1, 2]),
            }
        );
    }
}
