//! `GET /ibs:dpid=<dpid>&dpuuid=<id>[&redir=<url>]` (also `/ibs:d_cid=<dpid>%01<id>` and the
//! query-string form): maps the visitor to a data source's id. Answers the 1×1 GIF — or a
//! `302` to `redir`, with `${DD_UUID}` replaced, when its host is allowed — with errors in
//! `X-Error`. Like `/event`, it identifies (or creates) the visitor through the pipeline and
//! renews the cookie.

use std::time::Instant;

use actix_web::cookie::Cookie;
use actix_web::{web, HttpRequest, HttpResponse};

use super::answer::{Answer, Body, HttpError};
use super::pipeline::{self, Claims, Identified, Verdict};
use super::AppState;
use crate::core::error::DcsError;
use crate::core::ids::{Tid, VisitorId};
use crate::core::idsync::redirect_target;
use crate::core::request::{parse_ibs, RequestError};

/// `/ibs`: pipeline, message, render.
pub async fn ibs(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // Shed like events: a sync costs a session and a store write too.
    let call = match pipeline::admit(&state) {
        Ok(call) => call,
        Err(e) => return e.into_response(),
    };
    let tid = call.tid;
    // AAM's ID sync URL has no '?': the parameters follow `/ibs:` in the path.
    let tail = match req.uri().path().strip_prefix("/ibs") {
        Some(tail) if tail.is_empty() || tail.starts_with(':') => tail,
        _ => return HttpError::NotFound.into_response(),
    };
    let query = req.query_string();
    if let Err(e) = call.check_length(tail.len() + query.len()) {
        return e.into_response();
    }
    let deadline = state.deadline_from_now();
    let mut errors = Vec::new();
    let parsed = match parse_ibs(tail.as_bytes(), query.as_bytes()) {
        Ok(parsed) => parsed,
        Err(RequestError::InvalidEncoding { param }) => {
            errors.push(DcsError::invalid_parameters(&param));
            return answer("invalid", tid, &errors, None, None);
        }
        Err(RequestError::BadCallback) => return answer("invalid", tid, &errors, None, None),
    };
    errors.extend(parsed.errors);
    let claims = Claims {
        privacy: parsed.privacy,
        d_uuid: parsed.d_uuid,
        d_mid: parsed.d_mid,
        declared: parsed.declared,
    };
    let catalog = state.deps.catalog.current();
    let id = match pipeline::identify(&state, &req, &catalog, claims, deadline, &mut errors).await {
        Verdict::Identified(id) => id,
        // AAM ignores partner syncs without consent: nothing is read, linked or set.
        Verdict::Refused { result } => return answer(result, tid, &errors, None, None),
        // Child-directed: no id is read, set or linked.
        Verdict::ChildDirected => return answer("coppa", tid, &errors, None, None),
    };
    let visitor = id.visitor;
    let result = sync(&state, id, tid, deadline, &mut errors).await;
    let location = parsed
        .redir
        .and_then(|redir| redirect(&state, &redir, visitor, &mut errors));
    log::debug!(
        target: "tributary::ibs",
        tid = tid.as_str(),
        uuid:% = visitor,
        result = result,
        redirect = location.is_some();
        "id sync"
    );
    let cookie = state.visitor_cookie(&req, visitor);
    answer(result, tid, &errors, Some(cookie), location)
}

/// Records the declared ids through the visitor's session, in order with its events.
async fn sync(
    state: &AppState,
    id: Identified,
    tid: Tid,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> &'static str {
    if id.declared.is_empty() {
        return "invalid";
    }
    match pipeline::sync_ids(state, id, tid, deadline).await {
        Ok(session_errors) => {
            errors.extend(session_errors);
            "synced"
        }
        // The session still records the sync; the caller just cannot wait for it.
        Err(_) => {
            errors.push(DcsError::unspecified("ID sync not confirmed in time"));
            "timeout"
        }
    }
}

/// Where `redir` sends the browser, if its host is allowed (`[server] idsync_redirect_hosts`).
fn redirect(
    state: &AppState,
    redir: &str,
    visitor: VisitorId,
    errors: &mut Vec<DcsError>,
) -> Option<String> {
    match redirect_target(redir, visitor, &state.config.server.idsync_redirect_hosts) {
        Ok(url) => Some(url),
        Err(e) => {
            errors.push(DcsError::unspecified(e.to_string()));
            None
        }
    }
}

/// The pixel (or the redirect), counted by `result`, with the `tid` in a header.
fn answer(
    result: &'static str,
    tid: Tid,
    errors: &[DcsError],
    cookie: Option<Cookie<'static>>,
    location: Option<String>,
) -> HttpResponse {
    metrics::counter!("tributary_ibs_total", "result" => result).increment(1);
    Answer {
        body: location.map_or(Body::Pixel, Body::Redirect),
        errors,
        cookie,
        tid: Some(tid),
    }
    .into_response()
}
