//! `GET|POST /event`: the Data Collection Server call (the wire contract is
//! `docs/dcs-api.md`). The pipeline identifies the visitor, the visitor's session collects the
//! event (providers, engine, profile), and the answer is rendered from what it produced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::cookie::Cookie;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

use super::answer::{Answer, Body, HttpError};
use super::body::read_form;
use super::pipeline::{self, Claims, Identified, NoAnswer, Verdict};
use super::{cookies, AppState};
use crate::actors::visitor_session::{CollectEvent, EventResult};
use crate::core::clock::unix_now;
use crate::core::destinations::{dests, stuff, UrlContext};
use crate::core::engine::{CompiledCatalog, EventInput};
use crate::core::error::{truncate, DcsError};
use crate::core::event::EventData;
use crate::core::ids::{Tid, VisitorId};
use crate::core::profile::Profile;
use crate::core::provider::{anonymize_ip, Outcome};
use crate::core::request::{parse_event, EventRequest, RequestError};
use crate::core::response::EventBody;
use crate::core::signals::Signals;

/// Longest header value copied into an `h_` signal.
const MAX_HEADER_SIGNAL: usize = 2048;

/// `/event`: pipeline, message, render.
pub async fn event(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let call = pipeline::admit(&state)?;
    let tid = call.tid;
    let query = req.query_string();
    call.check_length(query.len())?;
    let body = match *req.method() == Method::POST {
        true => Some(read_form(&req, payload).await?),
        false => None,
    };
    let arrived = Instant::now();
    let deadline = state.deadline_from_now();
    let mut request = match parse_event(query.as_bytes(), body.as_deref()) {
        Ok(r) => r,
        Err(RequestError::BadCallback) => return Err(HttpError::BadCallback),
        Err(RequestError::InvalidEncoding { param }) => {
            return Ok(ignored(&req, &state, tid, body.as_deref(), &param))
        }
    };
    let mut out = base_body(&state, tid);
    out.errors.append(&mut request.errors);
    let cts = request.include_cts && state.config.server.allow_cts;
    if request.include_dests {
        out.dests = Some(Vec::new());
    }
    let catalog = state.deps.catalog.current();
    let claims = claims(&mut request);
    let id = match pipeline::identify(&state, &req, &catalog, claims, deadline, &mut out.errors)
        .await
    {
        Verdict::Identified(id) => id,
        Verdict::Refused { result } => return Ok(early(result, tid, Format::of(&request), &out)),
        Verdict::ChildDirected => {
            return Ok(child_directed(
                &state, &req, &catalog, tid, request, out, cts,
            ))
        }
    };
    let (visitor, new_visitor) = (id.visitor, id.new_visitor);
    let event = Arc::new(event_data(&state, &req, &mut request, id));
    let collected = pipeline::ask_session(&state, visitor, deadline, |pending| CollectEvent {
        tid,
        // The route keeps a reference: URL destinations read the event's consent.
        event: event.clone(),
        deadline,
        now: unix_now(),
        pending: Some(pending),
        new_visitor,
    })
    .await;
    let evaluated = collected.is_ok();
    let result = match collected {
        Ok(result) => {
            if cts && is_admin_try(&req, &state) {
                out.provider_wait_ms = Some(
                    result
                        .provider_waits
                        .iter()
                        .map(|(name, waited)| {
                            let ms = (waited.as_secs_f64() * 1e5).round() / 100.0;
                            (name.clone(), ms)
                        })
                        .collect(),
                );
            }
            render(&state, &catalog, &event, visitor, result, &mut out, cts)
        }
        Err(unanswered) => unavailable(tid, unanswered, &mut out),
    };
    if state.config.store.durable {
        durable(&state, visitor, evaluated, &mut out).await;
    }
    out.uuid = Some(visitor.to_string());
    record(arrived, tid, visitor, result, &out);
    let cookie = state.visitor_cookie(&req, visitor);
    Ok(answer(Format::of(&request), &out, Some(cookie)))
}

/// Durable mode: the answer waits until the visitor's change is on disk, at most
/// `store.durable_wait_ms`; otherwise it says so in `errors`.
/// An event the session did not answer in time is still being evaluated: its change is not
/// saved yet, so nothing can be waited for.
async fn durable(state: &AppState, visitor: VisitorId, evaluated: bool, out: &mut EventBody) {
    let wait = Duration::from_millis(state.config.store.durable_wait_ms);
    let why = if evaluated {
        let written = actix_rt::time::timeout(wait, state.deps.profiles.durable(visitor)).await;
        match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not written within {} ms", wait.as_millis()),
        }
    } else {
        "answered before the event was evaluated".to_string()
    };
    metrics::counter!("tributary_events_not_durable_total").increment(1);
    log::warn!(tid:% = out.tid, uuid:% = visitor; "answered before its change was durable: {why}");
    out.errors.push(DcsError::not_durable(&why));
}

/// What the pipeline judges: taken out of the request, which keeps the rest.
fn claims(request: &mut EventRequest) -> Claims {
    Claims {
        privacy: std::mem::take(&mut request.privacy),
        d_uuid: request.d_uuid,
        d_mid: request.d_mid.take(),
        declared: std::mem::take(&mut request.declared),
    }
}

/// The event as the session sees it: the request's signals (with the real `h_` ones), and
/// what the pipeline judged.
fn event_data(
    state: &AppState,
    req: &HttpRequest,
    request: &mut EventRequest,
    id: Identified,
) -> EventData {
    EventData {
        signals: with_header_signals(state, req, std::mem::take(&mut request.signals)),
        sids: std::mem::take(&mut request.sids),
        tdpid: request.tdpid,
        privacy: id.privacy,
        vendors: id.vendors,
        declared: id.declared,
    }
}

fn base_body(state: &AppState, tid: Tid) -> EventBody {
    EventBody {
        dcs_region: state.config.server.dcs_region,
        tid: tid.to_string(),
        ..Default::default()
    }
}

/// How the caller wants its answer: AAM's JSON with `d_rtbd=json` (JSONP with `d_cb`), else
/// the pixel.
#[derive(Clone, Copy)]
struct Format<'a> {
    json: bool,
    callback: Option<&'a str>,
}

impl<'a> Format<'a> {
    fn of(request: &'a EventRequest) -> Self {
        Format {
            json: request.json,
            callback: request.callback.as_deref(),
        }
    }
}

fn answer(format: Format<'_>, out: &EventBody, cookie: Option<Cookie<'static>>) -> HttpResponse {
    let body = match format.json {
        true => Body::Json {
            body: out,
            callback: format.callback,
        },
        false => Body::Pixel,
    };
    Answer {
        body,
        errors: &out.errors,
        cookie,
        tid: None,
    }
    .into_response()
}

/// An answer given before the visitor's session is reached (ignored, refused, opted out,
/// child-directed): counted, logged, and without a cookie.
fn early(result: &'static str, tid: Tid, format: Format<'_>, out: &EventBody) -> HttpResponse {
    metrics::counter!("tributary_events_total", "result" => result).increment(1);
    log::debug!(target: "tributary::event", tid = tid.as_str(), result = result; "event");
    answer(format, out, None)
}

/// Error 311: AAM ignores the whole request, so no identity is issued and nothing is read or
/// written. The answer format is guessed from the raw text.
fn ignored(
    req: &HttpRequest,
    state: &AppState,
    tid: Tid,
    body: Option<&[u8]>,
    param: &str,
) -> HttpResponse {
    let json = contains(req.query_string().as_bytes(), b"d_rtbd=json")
        || body.is_some_and(|b| contains(b, b"d_rtbd=json"));
    let mut out = base_body(state, tid);
    out.uuid = cookies::sent(req)
        .and_then(|c| VisitorId::parse(c.value()))
        .map(|v| v.to_string());
    out.errors.push(DcsError::invalid_parameters(param));
    let format = Format {
        json,
        callback: None,
    };
    early("ignored", tid, format, &out)
}

/// The admin API's try (`POST /v1/events/try`): the process's own key, compared in constant
/// time, so no site can ask for providers' timings.
fn is_admin_try(req: &HttpRequest, state: &AppState) -> bool {
    use subtle::ConstantTimeEq as _;
    req.headers()
        .get("x-tributary-try")
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(state.try_key().as_bytes())))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the session produced, into the answer: cookie (`stuff`) and URL (`dests`)
/// destinations, and with `d_cts=2` traits, segments and provider outcomes.
fn render(
    state: &AppState,
    catalog: &CompiledCatalog,
    event: &EventData,
    visitor: VisitorId,
    result: EventResult,
    out: &mut EventBody,
    cts: bool,
) -> &'static str {
    out.errors.extend(result.errors);
    let destinations = catalog.destinations();
    if !destinations.is_empty() {
        out.stuff = stuff(destinations, &result.segments);
        if out.dests.is_some() {
            let uuid = visitor.to_string();
            let ctx = UrlContext {
                uuid: &uuid,
                dcs_region: state.config.server.dcs_region,
                now: unix_now(),
                random: rand::random(),
                synced_ids: &result.synced_ids,
                gdpr: event.privacy.gdpr.as_deref(),
                gdpr_consent: event.privacy.gdpr_consent.as_deref(),
            };
            out.dests = Some(dests(destinations, &result.segments, &ctx));
        }
    }
    if cts {
        out.traits = Some(result.realized);
        out.segments = Some(result.segments);
        out.providers = Some(
            result
                .providers
                .into_iter()
                .map(|(name, outcome)| (name, outcome.as_str()))
                .collect(),
        );
    }
    "ok"
}

fn unavailable(tid: Tid, why: NoAnswer, out: &mut EventBody) -> &'static str {
    out.errors.push(DcsError::unable_to_evaluate());
    match why {
        NoAnswer::Failed(e) => {
            log::error!(tid = tid.as_str(); "visitor session failed: {e}");
            "error"
        }
        // The session goes on with the event (nothing is lost); this answer cannot wait.
        NoAnswer::Late => "timeout",
    }
}

/// The count, latency and log line of an event that reached its visitor's session.
fn record(arrived: Instant, tid: Tid, visitor: VisitorId, result: &'static str, out: &EventBody) {
    let elapsed = arrived.elapsed();
    metrics::counter!("tributary_events_total", "result" => result).increment(1);
    metrics::histogram!("tributary_event_duration_seconds").record(elapsed.as_secs_f64());
    log::debug!(
        target: "tributary::event",
        tid = tid.as_str(),
        uuid:% = visitor,
        result = result,
        segments = out.segments.as_ref().map_or(0, Vec::len),
        micros = elapsed.as_micros() as u64;
        "event"
    );
}

/// `d_coppa=1`: a child-directed call. No visitor id is read or set (no cookie, no `d_uuid`,
/// no declared id), no profile is read or written, no provider is asked: the event's own
/// signals are evaluated against the catalog and forgotten.
fn child_directed(
    state: &AppState,
    req: &HttpRequest,
    catalog: &CompiledCatalog,
    tid: Tid,
    mut request: EventRequest,
    mut out: EventBody,
    cts: bool,
) -> HttpResponse {
    let signals = with_header_signals(state, req, std::mem::take(&mut request.signals));
    let evaluation = catalog.evaluate(
        &mut Profile::default(),
        &EventInput {
            signals: &signals,
            providers: &[],
            sids: &request.sids,
            tdpid: request.tdpid,
            now: unix_now(),
            answers_only: false,
        },
    );
    if cts {
        out.traits = Some(evaluation.realized);
        out.segments = Some(evaluation.segments);
        out.providers = Some(
            catalog
                .providers()
                .iter()
                .map(|p| (p.name.clone(), Outcome::Skipped.as_str()))
                .collect(),
        );
    }
    early("coppa", tid, Format::of(&request), &out)
}

/// The `h_` signals, filled from the real request: whatever the query said for those keys is
/// replaced.
fn with_header_signals(state: &AppState, req: &HttpRequest, mut signals: Signals) -> Signals {
    for (name, key) in [
        (header::REFERER, "h_referer"),
        (header::USER_AGENT, "h_user-agent"),
        (header::ACCEPT_LANGUAGE, "h_accept-language"),
        (header::HOST, "h_host"),
    ] {
        if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            signals.set(key, truncate(value, MAX_HEADER_SIGNAL));
        }
    }
    if let Some(ip) = state.client(req).ip {
        // Truncated before anything else sees it: rules, logs and providers get the same.
        signals.set("h_ip", anonymize_ip(ip));
    }
    signals
}
