//! `GET /demoptout.jpg` (and `/demoptout`): the visitor of the cookie, the one named by
//! `d_uuid` and the one the device's ECID (`d_mid`) is linked to opt out. Each is recorded as opted out (durably, and refused at once by every
//! listener) and erased — profile, cached answers, ID-sync mappings — through its session,
//! after any event already queued for it. The answer is the pixel with `demdex=NOTARGET` for
//! 10 years, also for a browser without a visitor id, so that it is never given one.

use actix_web::{web, HttpRequest, HttpResponse};

use super::answer::{Answer, Body, HttpError};
use super::{cookies, pipeline, AppState};
use crate::actors::visitor_session::{erase, Erasure};
use crate::core::clock::unix_now;
use crate::core::error::DcsError;
use crate::core::ids::{Ecid, VisitorId, ECID_DATA_SOURCE};
use crate::core::request::{parse_event, RequestError};

pub async fn opt_out(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    // Admitted as events are: a flood of opt-outs is shed (`429`) like one of events, and the
    // ones admitted share their flushes (store/group_commit.rs).
    let _call = pipeline::admit(&state)?;
    let mut errors = Vec::new();
    let visitors = who(&req, &state, &mut errors).await;
    let now = unix_now();
    let deps = &state.deps;
    for visitor in visitors {
        let erased = async {
            deps.profiles.opt_out(visitor, now).await?;
            erase(deps, visitor, Erasure::OptOut).await
        };
        match erased.await {
            Ok(()) => metrics::counter!("tributary_optouts_total").increment(1),
            Err(e) => {
                // Refused from now on (in memory) even so; the record is erased by retention.
                log::error!("opt-out of {visitor} not fully recorded: {e}");
                errors.push(DcsError::unspecified("Opt-out not fully recorded"));
            }
        }
    }
    Ok(Answer {
        body: Body::Pixel,
        errors: &errors,
        cookie: Some(cookies::opted_out(
            state.client(&req).https,
            &state.config.server.cookie_domain,
        )),
        tid: None,
    }
    .into_response())
}

/// The visitors the call names: the cookie's, `d_uuid`'s, and the one the device's ECID is
/// linked to (how a browser that sends no third-party cookie is known), each once.
async fn who(req: &HttpRequest, state: &AppState, errors: &mut Vec<DcsError>) -> Vec<VisitorId> {
    let mut visitors = Vec::new();
    if let Some(v) = cookies::sent(req).and_then(|c| VisitorId::parse(c.value())) {
        visitors.push(v);
    }
    let parsed = match parse_event(req.query_string().as_bytes(), None) {
        Ok(parsed) => parsed,
        Err(RequestError::InvalidEncoding { param }) => {
            errors.push(DcsError::invalid_parameters(&param));
            return visitors;
        }
        Err(RequestError::BadCallback) => return visitors,
    };
    errors.extend(
        parsed
            .errors
            .into_iter()
            .filter(|e| e.code == 101 || e.code == 102),
    );
    let linked = match parsed.d_mid {
        Some(ecid) => device_visitor(state, &ecid, errors).await,
        None => None,
    };
    for v in parsed.d_uuid.into_iter().chain(linked) {
        if !visitors.contains(&v) {
            visitors.push(v);
        }
    }
    visitors
}

/// The visitor the device's ECID is linked to.
async fn device_visitor(
    state: &AppState,
    ecid: &Ecid,
    errors: &mut Vec<DcsError>,
) -> Option<VisitorId> {
    let profiles = &state.deps.profiles;
    match profiles.lookup_link(ECID_DATA_SOURCE, ecid.as_str()).await {
        Ok(link) => link.map(|l| l.visitor),
        Err(e) => {
            log::error!("opt-out: the ECID's visitor not read: {e}");
            errors.push(DcsError::id_links_unreadable());
            None
        }
    }
}
