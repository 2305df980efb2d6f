//! `GET /id` and `GET /optOutStatus`: the ID service as Adobe's VisitorAPI calls it
//! (`docs/dcs-api.md`, `/id`).
//!
//! `/id` gives the device its ECID — the caller's own, or one minted from the visitor id — and
//! links it to the visitor like an ID-synced id, so that the device keeps its profile when its
//! browser sends no third-party cookie: every later call carries the ECID (`d_mid`) from the
//! site's first-party cookie. Consent, COPPA and opt-out are judged by the pipeline, as on
//! `/event`. VisitorAPI waits forever on anything but a `200` with a JSON object, so every
//! answer here is one, refusals and errors included.

use std::time::Instant;

use actix_web::cookie::Cookie;
use actix_web::{web, HttpRequest, HttpResponse};

use super::answer::{Answer, Body, HttpError};
use super::pipeline::{self, ecid_link, Call, Claims, Identified, Verdict};
use super::AppState;
use crate::core::error::DcsError;
use crate::core::id_service::{blob, IdBody};
use crate::core::ids::{Ecid, Tid, VisitorId};
use crate::core::request::{parse_id, IdRequest, RequestError};

/// `/id`: pipeline, message, render.
pub async fn id(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (call, mut out) = match begin(&req, &state) {
        Ok(begun) => begun,
        Err((tid, why)) => return refused(&state, tid, why),
    };
    let tid = call.tid;
    let deadline = state.deadline_from_now();
    let (parsed, claims) = match parse(&req, &mut out.errors) {
        Some(parsed) => parsed,
        None => return answer("invalid", &out, None),
    };
    let catalog = state.deps.catalog.current();
    let verdict = pipeline::identify(&state, &req, &catalog, claims, deadline, &mut out.errors);
    let mut id = match verdict.await {
        Verdict::Identified(id) => id,
        Verdict::Refused { result } => return refusal(result, out),
        // No id is stored or set for a child-directed call: the device keeps (or is given) an
        // ECID that nothing links to anyone.
        Verdict::ChildDirected => {
            let ecid = parsed
                .d_mid
                .unwrap_or_else(|| Ecid::for_visitor(VisitorId::generate()));
            out.d_mid = Some(ecid.to_string());
            return answer("coppa", &out, None);
        }
    };
    let ecid = match parsed.d_mid {
        // The pipeline links the caller's own ECID already.
        Some(ecid) => ecid,
        None => {
            let minted = Ecid::for_visitor(id.visitor);
            id.declared.push(ecid_link(minted.clone()));
            minted
        }
    };
    let visitor = id.visitor;
    let result = link(&state, id, tid, deadline, &mut out.errors).await;
    out.d_mid = Some(ecid.to_string());
    out.ibs = state
        .config
        .id_service
        .syncs
        .iter()
        .map(|partner| partner.sync_for(visitor))
        .collect();
    log::debug!(target: "tributary::id", tid = tid.as_str(), uuid:% = visitor, result = result; "id");
    answer(result, &out, Some(state.visitor_cookie(&req, visitor)))
}

/// `/optOutStatus`: whether the device (its cookie, its ECID) opted out. Nothing is linked,
/// stored or set.
pub async fn opt_out_status(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // The call counts as in flight (for shedding) until it is answered.
    let (_call, mut out) = match begin(&req, &state) {
        Ok(begun) => begun,
        Err((tid, why)) => return refused(&state, tid, why),
    };
    let Some((_, claims)) = parse(&req, &mut out.errors) else {
        return answer("invalid", &out, None);
    };
    let catalog = state.deps.catalog.current();
    let deadline = state.deadline_from_now();
    let verdict = pipeline::identify(&state, &req, &catalog, claims, deadline, &mut out.errors);
    match verdict.await {
        Verdict::Refused { result } => refusal(result, out),
        Verdict::Identified(_) | Verdict::ChildDirected => answer("status", &out, None),
    }
}

/// Admission and the length cap: the admitted call (kept until the answer, for shedding) and
/// its answer's fields so far, or why it is refused (and its tid, when it got that far).
fn begin(req: &HttpRequest, state: &AppState) -> Result<(Call, IdBody), (Option<Tid>, HttpError)> {
    let call = pipeline::admit(state).map_err(|e| (None, e))?;
    call.check_length(req.query_string().len())
        .map_err(|e| (Some(call.tid), e))?;
    let out = base_body(state, call.tid);
    Ok((call, out))
}

fn base_body(state: &AppState, tid: Tid) -> IdBody {
    let ids = &state.config.id_service;
    IdBody {
        dcs_region: state.config.server.dcs_region,
        d_blob: blob(state.config.server.dcs_region),
        id_sync_ttl: ids.id_sync_ttl_secs,
        subdomain: ids.subdomain.clone(),
        d_ottl: ids.opt_out_ttl_secs,
        tid: tid.to_string(),
        ..Default::default()
    }
}

/// The parameters, and what the pipeline judges of them; `None` (error 311 added) when they
/// cannot be read at all.
fn parse(req: &HttpRequest, errors: &mut Vec<DcsError>) -> Option<(IdRequest, Claims)> {
    let mut parsed = match parse_id(req.query_string().as_bytes()) {
        Ok(parsed) => parsed,
        Err(RequestError::InvalidEncoding { param }) => {
            errors.push(DcsError::invalid_parameters(&param));
            return None;
        }
        Err(RequestError::BadCallback) => return None,
    };
    errors.append(&mut parsed.errors);
    let claims = Claims {
        privacy: std::mem::take(&mut parsed.privacy),
        d_uuid: parsed.d_uuid,
        d_mid: parsed.d_mid.clone(),
        declared: std::mem::take(&mut parsed.declared),
    };
    Some((parsed, claims))
}

/// Records the ECID and the page's customer ids through the visitor's session, in order with
/// its events.
async fn link(
    state: &AppState,
    id: Identified,
    tid: Tid,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> &'static str {
    match pipeline::sync_ids(state, id, tid, deadline).await {
        Ok(session_errors) => {
            errors.extend(session_errors);
            "ok"
        }
        // The session still records the link; this answer cannot wait for it.
        Err(_) => {
            errors.push(DcsError::unspecified("ECID link not confirmed in time"));
            "timeout"
        }
    }
}

/// A refused call: no ECID, and for an opted-out device the opt-out VisitorAPI keeps.
fn refusal(result: &'static str, mut out: IdBody) -> HttpResponse {
    if result == "opted_out" {
        out.d_optout = Some(vec!["global"]);
    }
    answer(result, &out, None)
}

/// A request the DCS would refuse outright (shed, oversized): still `200` with a JSON object,
/// which VisitorAPI takes as a failed call (it keeps its own ECID) instead of waiting forever.
fn refused(state: &AppState, tid: Option<Tid>, why: HttpError) -> HttpResponse {
    let mut out = base_body(state, tid.unwrap_or_else(Tid::next));
    out.errors.push(DcsError::unspecified(why.to_string()));
    let result = match why {
        HttpError::Overloaded => "shed",
        _ => "invalid",
    };
    answer(result, &out, None)
}

fn answer(result: &'static str, out: &IdBody, cookie: Option<Cookie<'static>>) -> HttpResponse {
    metrics::counter!("tributary_id_total", "result" => result).increment(1);
    Answer {
        body: Body::Id(out),
        errors: &out.errors,
        cookie,
        tid: None,
    }
    .into_response()
}
