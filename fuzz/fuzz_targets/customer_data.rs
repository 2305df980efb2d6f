//! The Customer Data API: the bytes as a `POST /stream` body, as an `/event/s2s` POST body
//! (form or JSON) and as an `/event/s2s` query string (decoded as a route would, lossily).
//! Every op that parses is within the limits and follows the op rules; written back as a
//! stream op it parses again to itself, whichever API it came from.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use tributary::core::customer_data::{
    parse_s2s, parse_stream, s2s_body_pairs, valid_stream_id, MAX_OPS, MAX_TRACING_ID_BYTES,
};
use tributary::core::ids::{Ecid, VisitorId};
use tributary::core::inbound::{
    Op, OpKind, SourceName, MAX_IDENTITIES, MAX_SIGNALS, MAX_TARGETS, MAX_TRAIT_IDS,
    MAX_VALUE_BYTES,
};

fn text_ok(text: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !text.is_empty())
        && text.len() <= MAX_VALUE_BYTES
        && !text.chars().any(char::is_control)
}

fn unique<T: PartialEq>(list: &[T]) -> bool {
    list.iter().enumerate().all(|(i, x)| !list[..i].contains(x))
}

fn check(op: &Op) {
    assert!(
        (1..=MAX_IDENTITIES).contains(&op.identities.len()),
        "{op:?}"
    );
    for id in &op.identities {
        assert!(text_ok(&id.value, false), "{id:?}");
        match &id.source {
            SourceName::DataSource(0) => assert!(VisitorId::parse(&id.value).is_some(), "{id:?}"),
            SourceName::DataSource(4) => {
                let ecid = Ecid::parse(&id.value).expect("an ECID");
                assert_eq!(ecid.as_str(), id.value, "ECIDs are normalised");
            }
            SourceName::DataSource(_) => {}
            SourceName::IntegrationCode(code) | SourceName::Namespace(code) => {
                assert!(text_ok(code, false), "{id:?}")
            }
        }
    }
    assert!(op.trait_ids.len() <= MAX_TRAIT_IDS && unique(&op.trait_ids));
    assert!(op.trait_ids.iter().all(|&t| t >= 1));
    assert!(op.remove_trait_ids.is_empty());
    assert!(op.signals.len() <= MAX_SIGNALS);
    for (key, value) in &op.signals {
        assert!(
            text_ok(key, false) && text_ok(value, true),
            "{key:?}={value:?}"
        );
    }
    assert!(op.target_data_sources.len() <= MAX_TARGETS && unique(&op.target_data_sources));
    match op.kind {
        OpKind::Overwrite => assert_eq!(op.target_data_sources.len(), 1, "{op:?}"),
        OpKind::Append => {}
        OpKind::Delete => return,
    }
    assert!(!op.trait_ids.is_empty() || !op.signals.is_empty(), "{op:?}");
}

/// The op as a `POST /stream` op.
fn as_stream_op(op: &Op) -> Value {
    let identities: Vec<Value> = op
        .identities
        .iter()
        .map(|id| {
            let (name, source) = match &id.source {
                SourceName::DataSource(dpid) => ("dataSourceId", json!(dpid)),
                SourceName::IntegrationCode(code) => ("integrationCode", json!(code)),
                SourceName::Namespace(code) => ("namespaceCode", json!(code)),
            };
            let mut fields = Map::new();
            fields.insert(name.into(), source);
            fields.insert("value".into(), json!(id.value));
            Value::Object(fields)
        })
        .collect();
    let data: Vec<Value> = op
        .signals
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    let kind = match op.kind {
        OpKind::Append => "APPEND",
        OpKind::Overwrite => "OVERWRITE",
        OpKind::Delete => "DELETE",
    };
    json!({
        "identities": identities,
        "traitInput": { "traitIds": op.trait_ids },
        "traitEvaluation": { "data": data },
        "targetDataSource": op.target_data_sources,
        "operationType": kind,
    })
}

fn round_trip(op: &Op) {
    let body = json!({ "ops": [as_stream_op(op)] }).to_string();
    let again = parse_stream(body.as_bytes()).expect("a body we wrote");
    assert_eq!(again.ops, vec![Ok(op.clone())], "{body}");
}

fuzz_target!(|data: &[u8]| {
    match parse_stream(data) {
        Ok(stream) => {
            assert!((1..=MAX_OPS).contains(&stream.ops.len()));
            if let Some(id) = &stream.tracing_id {
                assert!(id.len() <= MAX_TRACING_ID_BYTES && !id.chars().any(char::is_control));
            }
            for op in stream.ops.iter().flatten() {
                check(op);
                round_trip(op);
            }
        }
        Err(e) => assert!(e.offset.is_none_or(|at| at <= data.len()), "{e:?}"),
    }
    if let Ok(pairs) = s2s_body_pairs(data) {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)));
        if let Ok(call) = parse_s2s(pairs) {
            check(&call.op);
            round_trip(&call.op);
        }
    }
    if let Ok(call) = parse_s2s(url::form_urlencoded::parse(data)) {
        check(&call.op);
        round_trip(&call.op);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if valid_stream_id(text).is_ok() {
            assert!(!text.is_empty() && text.len() <= 255);
        }
    }
});
