//! The identification pipeline: every public route that acts for a visitor (`/event`, `/ibs`)
//! takes its call through the same steps, in the same order, here and only here:
//!
//! 1. [`admit`]: load shedding (`429`), the call's `tid`; [`Call::check_length`] (`414`);
//! 2. (the route reads and parses its own parameters into [`Claims`]);
//! 3. [`identify`]: the consent judgement (TCF v2, US Privacy, GPP) and its refusal (315, or
//!    171 for a visitor who opted out: read from memory only), COPPA, the declared ids checked
//!    against known data sources, the visitor identified (cookie, `d_uuid`, a declared id's
//!    link, or a new id) and the opt-out check on whoever that is;
//! 4. [`ask_session`]: the message to the visitor's session, waited for until the deadline.
//!
//! Each step either lets the call go on or says how it must be answered at once, so a route is
//! "pipeline, message, render" and no route can skip a privacy check by forgetting it.

use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::{Handler, MailboxError, Message};
use actix_web::cookie::Cookie;
use actix_web::HttpRequest;

use super::admission::Admitted;
use super::answer::HttpError;
use super::{cookies, AppState};
use crate::actors::directory::PendingGuard;
use crate::actors::visitor_session::{SyncIds, VisitorSession};
use crate::core::clock::unix_now;
use crate::core::consent::{judge, Judgement, Refusal, VendorConsent};
use crate::core::engine::CompiledCatalog;
use crate::core::error::DcsError;
use crate::core::ids::{Ecid, Tid, VisitorId, ECID_DATA_SOURCE};
use crate::core::idsync::{resolve, AuthState, DataSources, DeclaredId, RawDeclaredId};
use crate::core::request::{identify as identify_by_id, Identity, PrivacyParams, MAX_QUERY_BYTES};
use crate::store::{IdLink, StoreError};

/// An admitted call: it counts as in flight (for shedding) until dropped.
pub struct Call {
    pub tid: Tid,
    _admitted: Admitted,
}

/// Admits a call, or sheds it (`429`) while the server is overloaded.
pub fn admit(state: &AppState) -> Result<Call, HttpError> {
    let admitted = state
        .shedder
        .admit(
            state.deps.profiles.queue_depth(),
            state.deps.profiles.is_store_failing(),
        )
        .map_err(|reason| {
            metrics::counter!("tributary_events_shed_total", "reason" => reason.as_str())
                .increment(1);
            HttpError::Overloaded
        })?;
    Ok(Call {
        tid: Tid::next(),
        _admitted: admitted,
    })
}

impl Call {
    /// `414` for parameters (query string, and the `/ibs:` path tail) over AAM's 8 KB.
    pub fn check_length(&self, len: usize) -> Result<(), HttpError> {
        if len > MAX_QUERY_BYTES {
            return Err(HttpError::QueryTooLong {
                limit: MAX_QUERY_BYTES,
            });
        }
        Ok(())
    }
}

/// What a route's parameters claim about who the call is for and what it may do.
pub struct Claims {
    pub privacy: PrivacyParams,
    pub d_uuid: Option<VisitorId>,
    /// The device's ECID (`d_mid`): linked to the visitor like an ID-synced id, so a browser
    /// that sends no third-party cookie is still recognised.
    pub d_mid: Option<Ecid>,
    pub declared: Vec<RawDeclaredId>,
}

/// Where the pipeline leaves a call.
pub enum Verdict {
    /// Answer at once, with no cookie and nothing read or written: no consent (315), or the
    /// visitor opted out (171). The error is already in the call's errors; `result` is the
    /// label of the route's metric.
    Refused { result: &'static str },
    /// `d_coppa=1`: no id may be read, set or linked; the route does what it can without one.
    ChildDirected,
    /// Go on for this visitor.
    Identified(Identified),
}

/// A call the pipeline let through.
pub struct Identified {
    pub visitor: VisitorId,
    /// The id was drawn for this call: there is no stored profile to read.
    pub new_visitor: bool,
    /// Declared ids of known data sources, within AAM's limits (dropped if their links could
    /// not be read in time).
    pub declared: Vec<DeclaredId>,
    pub privacy: PrivacyParams,
    /// Which providers' IAB vendors may be asked.
    pub vendors: VendorConsent,
}

/// Step 3 of the module doc: consent, COPPA, declared ids, identification, opt-out. Errors
/// found on the way are added to `errors`.
pub async fn identify(
    state: &AppState,
    req: &HttpRequest,
    catalog: &CompiledCatalog,
    claims: Claims,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> Verdict {
    let Claims {
        mut privacy,
        d_uuid,
        d_mid,
        declared,
    } = claims;
    let cookie = cookies::sent(req);
    let cookie = cookie.as_ref().map(|c| c.value());
    let vendors = match judge(&mut privacy, &state.tcf, errors) {
        Judgement::Proceed(vendors) => vendors,
        Judgement::Refuse(why) => {
            let (error, result) = refusal(state, cookie, d_uuid, &why);
            errors.push(error);
            return Verdict::Refused { result };
        }
    };
    if privacy.coppa {
        return Verdict::ChildDirected;
    }
    let (mut declared, id_errors) = resolve_declared(state, catalog, &declared);
    errors.extend(id_errors);
    declared.extend(d_mid.map(ecid_link));
    let found = find_visitor(state, cookie, d_uuid, &mut declared, deadline, errors).await;
    let (visitor, new_visitor) = match found {
        Identity::Known(v) if !state.deps.profiles.is_opted_out(v) => (v, false),
        Identity::New(v) => (v, true),
        // A visitor who opted out (by cookie, `d_uuid` or a declared id) is refused whatever
        // identifies them: no read, no write, no provider, no new id.
        Identity::Known(_) | Identity::OptedOut => {
            errors.push(DcsError::opted_out());
            return Verdict::Refused {
                result: "opted_out",
            };
        }
    };
    Verdict::Identified(Identified {
        visitor,
        new_visitor,
        declared,
        privacy,
        vendors,
    })
}

/// The error for a call refused for want of consent, and the result label of its metric,
/// read from memory only: no profile or id mapping may be read. A visitor who opted out is
/// told so instead (171), as AAM's global opt-out outranks its consent checks.
fn refusal(
    state: &AppState,
    cookie: Option<&str>,
    d_uuid: Option<VisitorId>,
    why: &Refusal,
) -> (DcsError, &'static str) {
    let opted_out = match identify_by_id(cookie, d_uuid) {
        Identity::OptedOut => true,
        Identity::Known(v) => state.deps.profiles.is_opted_out(v),
        Identity::New(_) => false,
    };
    if opted_out {
        (DcsError::opted_out(), "opted_out")
    } else {
        (DcsError::no_consent(why), "no_consent")
    }
}

/// The device's ECID as a declared id of the ECID namespace: looked up, synced, erased and
/// expired with the rest of the visitor's ids. It is not counted in AAM's per-request limits,
/// which are about the ids a page declares.
pub fn ecid_link(ecid: Ecid) -> DeclaredId {
    DeclaredId {
        dpid: ECID_DATA_SOURCE,
        id: ecid.as_str().to_string(),
        auth: AuthState::Unknown,
    }
}

/// The data sources declared ids may name: the catalog's, and the integration codes'.
struct KnownSources<'a> {
    catalog: &'a CompiledCatalog,
    state: &'a AppState,
}

impl DataSources for KnownSources<'_> {
    fn knows(&self, dpid: u32) -> bool {
        self.catalog.knows_data_source(dpid)
            || self.state.integration_codes.values().any(|&d| d == dpid)
    }
}

fn resolve_declared(
    state: &AppState,
    catalog: &CompiledCatalog,
    raw: &[RawDeclaredId],
) -> (Vec<DeclaredId>, Vec<DcsError>) {
    if raw.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let known = KnownSources { catalog, state };
    resolve(raw, &state.integration_codes, &known)
}

/// Who the visitor is: the cookie's id, else `d_uuid`, else the visitor the device's ECID is
/// linked to, else the visitor a declared id is mapped to (the most recent mapping among
/// them), else a new id. The cookie and the ECID (the device) win over a declared id (the
/// person), so a person who logs in on a second device moves their declared id's mapping to
/// that device (AAM: the most recent mapping wins). If the mappings cannot be read by the
/// deadline, the declared ids and the ECID are dropped for this call (error 201): linking them
/// to a new id could take them away from the visitor they belong to.
async fn find_visitor(
    state: &AppState,
    cookie: Option<&str>,
    d_uuid: Option<VisitorId>,
    declared: &mut Vec<DeclaredId>,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> Identity {
    let identity = identify_by_id(cookie, d_uuid);
    let Identity::New(_) = identity else {
        return identity;
    };
    let linking: Vec<&DeclaredId> = declared.iter().filter(|d| d.links()).collect();
    if linking.is_empty() {
        return identity;
    }
    let profiles = &state.deps.profiles;
    let lookups =
        futures_util::future::join_all(linking.iter().map(|d| profiles.lookup_link(d.dpid, &d.id)));
    let read_by = deadline
        .checked_sub(state.config.realtime.reply_reserve())
        .unwrap_or(deadline);
    let found = match tokio::time::timeout_at(read_by.into(), lookups).await {
        Ok(results) => results.into_iter().collect::<Result<Vec<_>, _>>(),
        Err(_) => Err(StoreError::Io(
            "id mappings not read by the deadline".into(),
        )),
    };
    match found {
        Ok(links) => {
            let device = |(d, _): &(&&DeclaredId, _)| d.dpid == ECID_DATA_SOURCE;
            let (devices, people): (Vec<_>, Vec<_>) = linking.iter().zip(links).partition(device);
            let latest = |found: Vec<(&&DeclaredId, Option<IdLink>)>| {
                found
                    .into_iter()
                    .filter_map(|(_, l)| l)
                    .max_by_key(|l| l.at)
            };
            let latest = latest(devices).or_else(|| latest(people));
            let result = if latest.is_some() { "found" } else { "none" };
            metrics::counter!("tributary_declared_id_lookups_total", "result" => result)
                .increment(1);
            latest.map_or(identity, |l| Identity::Known(l.visitor))
        }
        Err(e) => {
            metrics::counter!("tributary_declared_id_lookups_total", "result" => "error")
                .increment(1);
            log::warn!("declared ids not looked up: {e}");
            errors.push(DcsError::id_links_unreadable());
            declared.clear();
            identity
        }
    }
}

/// Why a session's answer did not come.
pub enum NoAnswer {
    /// The session is gone (it failed or the runtime is stopping).
    Failed(MailboxError),
    /// Not by the deadline: the session goes on with the message (nothing is lost); the answer
    /// just cannot wait for it.
    Late,
}

/// Step 4: sends the message `make` builds (with the guard that keeps the session from
/// retiring while the message is pending) to the visitor's session, started on this thread
/// if none runs, and waits for its answer until `deadline`.
pub async fn ask_session<M>(
    state: &AppState,
    visitor: VisitorId,
    deadline: Instant,
    make: impl FnOnce(PendingGuard) -> M,
) -> Result<M::Result, NoAnswer>
where
    M: Message + Send + 'static,
    M::Result: Send,
    VisitorSession: Handler<M>,
    <VisitorSession as actix::Actor>::Context: ToEnvelope<VisitorSession, M>,
{
    let (session, pending) = state.deps.session_for(visitor);
    let sent = session.send(make(pending));
    match tokio::time::timeout_at(deadline.into(), sent).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(NoAnswer::Failed(e)),
        Err(_) => Err(NoAnswer::Late),
    }
}

/// Step 4 for ID syncs (`/ibs`, `/id`): the call's ids recorded by the visitor's session, in
/// order with its events. The session's errors, or why they did not come by the deadline (the
/// session still records the ids).
pub async fn sync_ids(
    state: &AppState,
    id: Identified,
    tid: Tid,
    deadline: Instant,
) -> Result<Vec<DcsError>, NoAnswer> {
    ask_session(state, id.visitor, deadline, |pending| SyncIds {
        tid,
        ids: id.declared,
        now: unix_now(),
        pending: Some(pending),
        new_visitor: id.new_visitor,
    })
    .await
}

impl AppState {
    /// The `demdex` cookie for an identified visitor, renewed on every call.
    pub fn visitor_cookie(&self, req: &HttpRequest, visitor: VisitorId) -> Cookie<'static> {
        cookies::visitor(
            self.client(req).https,
            visitor,
            &self.config.server.cookie_domain,
        )
    }

    /// When a call arriving now must be answered.
    pub fn deadline_from_now(&self) -> Instant {
        Instant::now() + self.config.realtime.deadline()
    }
}
