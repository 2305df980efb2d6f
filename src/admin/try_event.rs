//! `POST /v1/events/try`: the console's "Try an event" (`docs/console.md`). The admin API
//! sends a real `/event` to this server's public listener, with the signals and the visitor
//! given, and hands back the answer and how long it took; the answer also gives each
//! provider's wait, which only this process's key (`X-Tributary-Try`) obtains. It is a real event: the visitor's
//! profile changes, providers are called, destinations are computed.
//!
//! Going through the public listener rather than calling the pipeline directly means the
//! answer is exactly what a site would get, with nothing of the event path duplicated here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::AdminError;
use super::AdminState;
use crate::core::request::is_valid_signal_key;

/// Signals one try may carry (an event may carry more; a console form needs no more).
const MAX_SIGNALS: usize = 50;
const MAX_VALUE_BYTES: usize = 1024;
/// The public answer comes within the deadline; this only bounds a listener that hangs.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TryEvent {
    /// Signals as a site would send them (`c_page`, `c_section`, …).
    #[serde(default)]
    signals: BTreeMap<String, String>,
    /// A visitor id (38 digits) to send the event as; none = a new visitor.
    #[serde(default)]
    uuid: Option<String>,
}

/// Where the public listener is, for `POST /v1/events/try`; `https` when it serves TLS itself.
#[derive(Clone, Debug)]
pub struct PublicListener {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Sent as `X-Tributary-Try`: the answer then also gives each provider's wait.
    pub key: String,
}

/// The `/event` query for a try: JSON with segments and destinations, then the signals.
fn query(body: &TryEvent) -> Result<String, AdminError> {
    if body.signals.len() > MAX_SIGNALS {
        return Err(AdminError::invalid(
            "signals",
            format!("at most {MAX_SIGNALS} signals"),
        ));
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("d_rtbd", "json")
        .append_pair("d_cts", "2")
        .append_pair("d_dst", "1");
    if let Some(uuid) = &body.uuid {
        if uuid.len() != 38 || !uuid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AdminError::invalid("uuid", "a visitor id is 38 digits"));
        }
        q.append_pair("d_uuid", uuid);
    }
    for (key, value) in &body.signals {
        // The event's own rule for a key, so that a try never sends one /event would drop.
        if !is_valid_signal_key(key) || key.starts_with("d_") {
            return Err(AdminError::invalid(
                format!("signals.{}", super::error::clip(key)),
                "a signal key is 1 to 255 letters, digits, '_', '.' or '-', with a letter, and not a d_ parameter",
            ));
        }
        if value.len() > MAX_VALUE_BYTES || value.chars().any(char::is_control) {
            return Err(AdminError::invalid(
                format!("signals.{key}"),
                format!("a value is at most {MAX_VALUE_BYTES} bytes, without control characters"),
            ));
        }
        q.append_pair(key, value);
    }
    Ok(q.finish())
}

pub async fn try_event(
    body: Result<web::Json<TryEvent>, actix_web::Error>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let body = body.map_err(|e| AdminError::invalid("body", e.to_string()))?;
    let query = query(&body)?;
    let public = state
        .public
        .as_ref()
        .ok_or_else(|| AdminError::NotFound("no public listener in this process".into()))?;
    if public.tls {
        // Our own listener's certificate is not one this client could check.
        return Err(AdminError::Conflict {
            message: "the public listener serves HTTPS itself; send the event with curl -k".into(),
            field: None,
        });
    }
    let url = format!("http://{}/event?{query}", public.addr);
    let started = Instant::now();
    let client = awc::Client::builder().timeout(TIMEOUT).finish();
    let mut res = client
        .get(&url)
        .insert_header(("User-Agent", "tributary-console"))
        .insert_header(("X-Tributary-Try", public.key.as_str()))
        .send()
        .await
        .map_err(|e| AdminError::Store(format!("the public listener did not answer: {e}")))?;
    let bytes =
        res.body().limit(1 << 20).await.map_err(|e| {
            AdminError::Store(format!("the public listener's answer broke off: {e}"))
        })?;
    let elapsed = started.elapsed();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "request": format!("/event?{query}"),
        "status": res.status().as_u16(),
        "elapsedMs": (elapsed.as_secs_f64() * 1e5).round() / 100.0,
        "answer": answer,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(signals: &[(&str, &str)], uuid: Option<&str>) -> TryEvent {
        TryEvent {
            signals: signals
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uuid: uuid.map(str::to_string),
        }
    }

    #[test]
    fn the_query_asks_for_json_segments_and_destinations() {
        let q = query(&body(&[("c_page", "cars & more")], None)).unwrap();
        assert_eq!(q, "d_rtbd=json&d_cts=2&d_dst=1&c_page=cars+%26+more");
        let uuid = "1".repeat(38);
        let q = query(&body(&[], Some(&uuid))).unwrap();
        assert!(q.ends_with(&format!("d_uuid={uuid}")));
    }

    #[test]
    fn bad_keys_values_and_ids_name_the_field() {
        let field = |b: TryEvent| match query(&b) {
            Err(AdminError::Invalid { field, .. }) => field,
            _ => None,
        };
        assert_eq!(
            field(body(&[("d_uuid", "x")], None)).as_deref(),
            Some("signals.d_uuid")
        );
        assert_eq!(
            field(body(&[("a b", "x")], None)).as_deref(),
            Some("signals.a b")
        );
        assert_eq!(
            field(body(&[("k", "a\u{0}")], None)).as_deref(),
            Some("signals.k")
        );
        assert_eq!(
            field(body(&[("123", "x")], None)).as_deref(),
            Some("signals.123"),
            "a key without a letter, which /event would drop"
        );
        assert_eq!(field(body(&[], Some("12"))).as_deref(), Some("uuid"));
    }
}
