//! `VisitorSession`: one actor per active visitor.
//!
//! Lifetime: started by the [`SessionDirectory`] on the first event of a visitor, on the
//! arbiter (worker thread) that received it; stopped by the directory's sweep ([`Retire`]) after
//! `session_idle_secs` without events, or earlier when there are more than `max_sessions`.
//! While alive it keeps the visitor's profile in memory, so a returning visitor costs no store
//! read.
//!
//! Each [`CollectEvent`] is handled as an [`AtomicResponse`]: the session does not look at its
//! next message until the current event is fully done (profile loaded, providers asked,
//! profile evaluated and saved). That is what makes two concurrent hits of one visitor safe —
//! they are applied one after the other to the same profile, and both count.
//!
//! The session never waits past the event's deadline for providers. The HTTP handler waits
//! for the session only until the deadline too; if the engine is slow, the handler answers
//! without segments and the session still finishes the event, so no realization is lost.
//!
//! Calls still running at the cut-off are not wasted (DESIGN.md §3, Late answers): a task
//! waits for them (each ends by its provider's own timeout) and sends the answers back as
//! [`LateAnswers`]; the session caches them and realizes the onboarded traits they carry, so
//! the visitor's next event benefits. A session that has stopped by then drops them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    MailboxError, Message, WrapFuture,
};
use actix_web::web::Bytes;
use futures_util::future::{self, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::directory::{PendingGuard, SessionDirectory};
use super::provider_client::{
    client_for, CallError, ClientSettings, LookupSegments, ProviderReply,
};
use super::segment_engine::{
    engine_for, ChangeBaseline, EvaluateProfile, Evaluated, EventReplay, LoadProfile,
};
use crate::catalog::{AskFor, Provider};
use crate::config::RealtimeConfig;
use crate::consent::VendorConsent;
use crate::engine::{CatalogHandle, CompiledCatalog};
use crate::error::DcsError;
use crate::ids::{Tid, VisitorId};
use crate::idsync::DeclaredId;
use crate::outbox::Outbox;
use crate::profile::{CachedAnswer, Profile};
use crate::provider::{budget, request_body, Answer, Outcome, RequestContext};
use crate::request::PrivacyParams;
use crate::signals::Signals;
use crate::store::{IdLink, ProfileService, Replay, StoreError};

/// The parts of an event the session, the providers and the engine need.
#[derive(Debug, Default)]
pub struct EventData {
    /// All signals, including private and header ones.
    pub signals: Signals,
    pub sids: Vec<u64>,
    pub tdpid: Option<u32>,
    pub privacy: PrivacyParams,
    /// Which providers' IAB vendors may be asked (`tcfVendorId`).
    pub vendors: VendorConsent,
    /// Declared ids of known data sources, within AAM's limits: synced before providers are
    /// asked, so a synced-only provider is asked on the very event that declared the id.
    pub declared: Vec<DeclaredId>,
}

/// Processes one event of this visitor.
#[derive(Message)]
#[rtype(result = "EventResult")]
pub struct CollectEvent {
    pub tid: Tid,
    pub event: Arc<EventData>,
    /// When the answer is due; providers are waited for only until shortly before.
    pub deadline: Instant,
    /// Unix seconds at arrival: realizations, TTLs and caches are computed from it.
    pub now: i64,
    /// Keeps the session from retiring while this event is queued or running; `None` when a
    /// test drives the session directly.
    pub pending: Option<PendingGuard>,
    /// The visitor id was drawn for this event: no profile can be stored yet, so none is read.
    pub new_visitor: bool,
}

/// Records ID syncs (`/ibs`) for this visitor, in order with its events.
#[derive(Message)]
#[rtype(result = "Vec<DcsError>")]
pub struct SyncIds {
    pub tid: Tid,
    pub ids: Vec<DeclaredId>,
    /// Unix seconds: when the mappings were made.
    pub now: i64,
    pub pending: Option<PendingGuard>,
    pub new_visitor: bool,
}

/// Erases every trace of the visitor (admin `DELETE /v1/profiles/{uuid}`): its profile,
/// pending or stored, with its cached provider answers, and the ID-sync mappings that lead to
/// it. Applied in order with the visitor's events, so no event in progress writes the profile
/// back afterwards.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct EraseProfile {
    pub pending: Option<PendingGuard>,
}

/// Stops the session: the directory has removed it (idle, or too many sessions) and no event
/// is pending for it, so nothing can be routed to it any more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// What an event produced.
#[derive(Debug, Default)]
pub struct EventResult {
    /// Traits realized by this event.
    pub realized: Vec<u64>,
    /// Segments the visitor is in now.
    pub segments: Vec<u64>,
    /// Each enabled provider's outcome, by provider name.
    pub providers: Vec<(String, Outcome)>,
    /// The visitor's ids in other data sources (for URL destinations' `%DPID_<n>%`).
    pub synced_ids: std::collections::BTreeMap<u32, String>,
    pub errors: Vec<DcsError>,
}

/// What a session needs from the rest of the server; cheap to clone.
#[derive(Clone)]
pub struct SessionDeps {
    /// The store threads; each thread's engine is found through it.
    pub profiles: ProfileService,
    pub catalog: CatalogHandle,
    pub realtime: Arc<RealtimeConfig>,
    pub clients: ClientSettings,
    pub directory: Arc<SessionDirectory>,
    /// Where membership changes for S2S destinations go.
    pub outbox: Outbox,
}

impl SessionDeps {
    /// The visitor's running session, started on this thread if there is none, and the guard
    /// that keeps it from retiring while the message sent with it is pending.
    pub fn session_for(&self, visitor: VisitorId) -> (Addr<VisitorSession>, PendingGuard) {
        self.directory.route(visitor, |generation| {
            VisitorSession::new(visitor, generation, self.clone()).start()
        })
    }
}

enum ProfileState {
    /// Not read yet (new session, or the last read or write failed).
    Unloaded,
    Loaded(Profile),
}

/// One active visitor; see the module doc.
pub struct VisitorSession {
    visitor: VisitorId,
    /// Identifies this session in the directory (a later session of the same visitor has
    /// another generation).
    generation: u64,
    profile: ProfileState,
    deps: SessionDeps,
    /// Erasures so far: late provider answers of events before an erasure are dropped, so an
    /// erased (or opted-out) visitor's profile is not rebuilt from them.
    erasures: u64,
}

impl VisitorSession {
    pub fn new(visitor: VisitorId, generation: u64, deps: SessionDeps) -> Self {
        VisitorSession {
            visitor,
            generation,
            profile: ProfileState::Unloaded,
            deps,
            erasures: 0,
        }
    }
}

impl Actor for VisitorSession {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        metrics::gauge!("tributary_sessions_active").increment(1.0);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("tributary_sessions_active").decrement(1.0);
        self.deps.directory.forget(self.visitor, self.generation);
    }
}

impl Handler<Retire> for VisitorSession {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<CollectEvent> for VisitorSession {
    type Result = AtomicResponse<Self, EventResult>;

    fn handle(&mut self, msg: CollectEvent, ctx: &mut Self::Context) -> Self::Result {
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let work = run_event(
            self.deps.clone(),
            self.visitor,
            state,
            msg,
            ctx.address(),
            self.erasures,
        );
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(state, result), act, _| {
                act.profile = state;
                result
            },
        )))
    }
}

/// One event, start to finish. Runs on the session's thread (provider clients are per thread).
async fn run_event(
    deps: SessionDeps,
    visitor: VisitorId,
    state: ProfileState,
    msg: CollectEvent,
    me: Addr<VisitorSession>,
    erasures: u64,
) -> (ProfileState, EventResult) {
    let CollectEvent {
        tid,
        event,
        deadline,
        now,
        pending,
        new_visitor,
    } = msg;
    let catalog = deps.catalog.current();
    let mut result = EventResult::default();

    let mut fanout = FanOut::new(tid, visitor, deadline);
    let mut read_errors = Vec::new();
    let (mut profile, persist) = {
        let read = load_profile(&deps, visitor, state, new_visitor, tid, &mut read_errors);
        let mut read = std::pin::pin!(read);
        match tokio::time::timeout(deps.realtime.profile_read_wait(), read.as_mut()).await {
            Ok(loaded) => loaded,
            Err(_) => {
                // A slow read (a busy disk, a busy blocking pool) must not eat the providers'
                // budget: the calls that do not depend on the profile start now.
                fanout.start_independent(&deps, &catalog, &event);
                // And a store that does not answer (down, or a node of the cluster gone) must
                // not take the answer: by the time it is due, the event goes on without the
                // profile, as when it is unreadable, and writes nothing.
                let read_by = deadline
                    .checked_sub(deps.realtime.reply_reserve())
                    .unwrap_or(deadline);
                match tokio::time::timeout_at(read_by.into(), read).await {
                    Ok(loaded) => loaded,
                    Err(_) => {
                        store_unavailable(tid, visitor, "profile read timed out");
                        result.errors.push(DcsError::profile_unreadable());
                        (Profile::default(), false)
                    }
                }
            }
        }
    };
    result.errors.append(&mut read_errors);
    profile
        .provider_cache
        .retain(|_, answer| answer.expires_at > now);
    // A shared store gets this event's replay, not the profile: what the session changes
    // besides evaluation is part of it.
    let shared = deps.profiles.is_shared();
    let baseline = shared.then(|| ChangeBaseline::of(&profile));
    sync_ids(&deps.profiles, visitor, &mut profile, &event.declared, now);

    fanout.plan(&deps, &catalog, &event, &profile, now, &mut result);
    let (provider_segments, late) = fanout
        .collect(&deps.realtime, &mut profile, now, &mut result)
        .await;

    let evaluated = evaluate(
        &deps,
        EvaluateProfile {
            changes: baseline.map(|b| b.changes(&profile)).unwrap_or_default(),
            tid,
            visitor,
            profile,
            persist,
            catalog,
            event,
            provider_segments,
            now,
            answers_only: false,
        },
    )
    .await;
    if let Some(late) = late {
        collect_late_answers(late, me, erasures, tid);
    }
    let state = match evaluated {
        Ok(done) => {
            if done.saved.is_err() {
                result
                    .errors
                    .push(DcsError::unspecified("Profile could not be saved"));
            }
            result.realized = done.evaluation.realized;
            result.segments = done.evaluation.segments;
            result.synced_ids = done.profile.synced_ids.clone();
            // After a failed write the profile stays in memory, so the next event's write
            // carries this event's realizations too. With a shared store it is read again
            // for every event: another node may have changed it.
            if persist && !shared {
                ProfileState::Loaded(done.profile)
            } else {
                ProfileState::Unloaded
            }
        }
        Err(e) => {
            log::error!(tid = tid.as_str(); "segment engine unavailable: {e}");
            result.errors.push(DcsError::unable_to_evaluate());
            ProfileState::Unloaded
        }
    };
    drop(pending);
    (state, result)
}

/// The visitor's profile: the one in memory, an empty one for a new visitor, or the stored
/// one. `false` when the stored profile could not be read: the event goes on with an empty
/// profile that must not be written over the stored one.
async fn load_profile(
    deps: &SessionDeps,
    visitor: VisitorId,
    state: ProfileState,
    new_visitor: bool,
    tid: Tid,
    errors: &mut Vec<DcsError>,
) -> (Profile, bool) {
    match state {
        ProfileState::Loaded(p) => (p, true),
        ProfileState::Unloaded if new_visitor => (Profile::default(), true),
        ProfileState::Unloaded => match engine_for(&deps.profiles)
            .send(LoadProfile { visitor })
            .await
        {
            Ok(Ok(stored)) => (stored.unwrap_or_default(), true),
            Ok(Err(e)) => {
                store_unavailable(tid, visitor, &e.to_string());
                errors.push(DcsError::profile_unreadable());
                (Profile::default(), false)
            }
            Err(e) => {
                log::error!(tid = tid.as_str(); "segment engine unavailable: {e}");
                errors.push(DcsError::profile_unreadable());
                (Profile::default(), false)
            }
        },
    }
}

/// Has the visitor's engine evaluate the profile (and, with `persist`, save it), then tells
/// the S2S outbox when the saved segments changed: events and late answers alike.
async fn evaluate(
    deps: &SessionDeps,
    msg: EvaluateProfile,
) -> Result<Evaluated, actix::MailboxError> {
    let (visitor, now, persist) = (msg.visitor, msg.now, msg.persist);
    let catalog = msg.catalog.clone();
    let before = msg.profile.segments.clone();
    let evaluated = engine_for(&deps.profiles).send(msg).await;
    if let (Ok(done), true) = (&evaluated, persist) {
        deps.outbox
            .membership(&catalog, visitor, &before, &done.profile.segments, now);
    }
    evaluated
}

/// A profile that could not be read (error 200): counted, and logged at warn at most every
/// ten seconds per process — a store that is down fails every event at once.
fn store_unavailable(tid: Tid, visitor: VisitorId, why: &str) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_WARNING: AtomicI64 = AtomicI64::new(i64::MIN);
    metrics::counter!("tributary_store_read_failures_total").increment(1);
    let now = crate::server::unix_now();
    let last = LAST_WARNING.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10
        && LAST_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        log::warn!(tid = tid.as_str(); "profile of {visitor} not read ({why}); events go on without stored profiles while this lasts");
    } else {
        log::debug!(tid = tid.as_str(); "profile of {visitor} not read: {why}");
    }
}

/// Most data sources a profile keeps an id for. Only known data sources are accepted, so this
/// is a guard against an admin creating thousands of them, not against clients.
const MAX_SYNCED_SOURCES: usize = 1000;

/// Records ID syncs: the visitor's id in each data source (forward, in the profile) and the
/// mapping back to the visitor (queued for the store). Logged-out ids change nothing.
fn sync_ids(
    profiles: &ProfileService,
    visitor: VisitorId,
    profile: &mut Profile,
    ids: &[DeclaredId],
    now: i64,
) {
    for declared in ids.iter().filter(|d| d.links()) {
        if profile.synced_ids.len() >= MAX_SYNCED_SOURCES
            && !profile.synced_ids.contains_key(&declared.dpid)
        {
            continue;
        }
        if profile.synced_ids.get(&declared.dpid) != Some(&declared.id) {
            profile
                .synced_ids
                .insert(declared.dpid, declared.id.clone());
            metrics::counter!("tributary_id_syncs_total").increment(1);
        }
        profiles.link(declared.dpid, &declared.id, IdLink { visitor, at: now });
    }
}

/// Erases the visitor through its session (started if none runs), after any event already
/// queued for it.
pub async fn erase(deps: &SessionDeps, visitor: VisitorId) -> Result<(), StoreError> {
    let (session, pending) = deps.session_for(visitor);
    session
        .send(EraseProfile {
            pending: Some(pending),
        })
        .await
        .map_err(|e| StoreError::Io(format!("visitor session unavailable: {e}")))?
}

impl Handler<EraseProfile> for VisitorSession {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: EraseProfile, _: &mut Self::Context) -> Self::Result {
        self.erasures += 1;
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let profiles = self.deps.profiles.clone();
        let (outbox, catalog) = (self.deps.outbox.clone(), self.deps.catalog.clone());
        let visitor = self.visitor;
        let work = async move {
            // The synced ids say which reverse mappings to remove, the segments which S2S
            // destinations to tell; an unreadable record is deleted all the same.
            let erased = match state {
                ProfileState::Loaded(p) => p,
                ProfileState::Unloaded => match profiles.load(visitor).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => Profile::default(),
                },
            };
            let ids = erased.synced_ids.into_iter().collect();
            let result = async {
                profiles.delete(visitor).await?;
                profiles.unlink(visitor, ids).await
            }
            .await;
            if result.is_ok() {
                let now = crate::server::unix_now();
                outbox.membership(&catalog.current(), visitor, &erased.segments, &[], now);
            }
            drop(msg.pending);
            result
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| {
            // Whatever comes next starts from nothing (or from the store, if erasure failed).
            if result.is_ok() {
                act.profile = ProfileState::Loaded(Profile::default());
            }
            result
        })))
    }
}

impl Handler<SyncIds> for VisitorSession {
    type Result = AtomicResponse<Self, Vec<DcsError>>;

    fn handle(&mut self, msg: SyncIds, _: &mut Self::Context) -> Self::Result {
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let deps = self.deps.clone();
        let visitor = self.visitor;
        let work = async move {
            let SyncIds {
                tid,
                ids,
                now,
                pending,
                new_visitor,
            } = msg;
            let mut errors = Vec::new();
            let (mut profile, persist) =
                load_profile(&deps, visitor, state, new_visitor, tid, &mut errors).await;
            let shared = deps.profiles.is_shared();
            let baseline = shared.then(|| ChangeBaseline::of(&profile));
            sync_ids(&deps.profiles, visitor, &mut profile, &ids, now);
            if profile.first_seen == 0 {
                profile.first_seen = now;
            }
            let replay = baseline.map(|b| {
                Arc::new(EventReplay {
                    changes: b.changes(&profile),
                    now,
                    evaluation: None,
                }) as Arc<dyn Replay>
            });
            let state = if !persist {
                // The stored profile is unreadable: the reverse mappings are queued, the
                // forward ones would overwrite it and wait for a readable profile.
                ProfileState::Unloaded
            } else {
                match deps.profiles.save_event(visitor, &profile, replay) {
                    Ok(()) if shared => ProfileState::Unloaded,
                    Ok(()) => ProfileState::Loaded(profile),
                    Err(e) => {
                        log::error!(tid = tid.as_str(); "profile of {visitor} not saved: {e}");
                        errors.push(DcsError::unspecified("Profile could not be saved"));
                        ProfileState::Loaded(profile)
                    }
                }
            };
            drop(pending);
            (state, errors)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(state, errors), act, _| {
                act.profile = state;
                errors
            },
        )))
    }
}

/// One provider call of this event.
struct Called {
    provider: Arc<Provider>,
    /// The `user.id` it carried.
    user_id: Option<String>,
    /// Started before the profile was read (see [`FanOut::start_independent`]).
    early: bool,
    /// Its answer is not used: it was started early and is not the call the profile called
    /// for (a fresh cached answer existed, or the visitor's synced id differed).
    discarded: bool,
}

/// The provider fan-out of one event: which providers are called (or answered from the cache,
/// or skipped), and the calls in flight.
struct FanOut {
    tid: Tid,
    uuid: String,
    deadline: Instant,
    started: Instant,
    called: Vec<Called>,
    running: FuturesUnordered<Call>,
    /// Segments per data source for the engine (cached answers now, fresh ones in `collect`).
    segments: Vec<(u32, Vec<String>)>,
}

impl FanOut {
    fn new(tid: Tid, visitor: VisitorId, deadline: Instant) -> Self {
        FanOut {
            tid,
            uuid: visitor.to_string(),
            deadline,
            started: Instant::now(),
            called: Vec::new(),
            running: FuturesUnordered::new(),
            segments: Vec::new(),
        }
    }

    /// Calls `provider` with what is left of the budget; `false` (not called) when too little
    /// is left.
    fn call(
        &mut self,
        deps: &SessionDeps,
        event: &EventData,
        provider: &Arc<Provider>,
        user_id: Option<&str>,
        early: bool,
    ) -> bool {
        let rt = &deps.realtime;
        let Some(tmax) = budget(
            self.deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(u64::from(provider.timeout_ms)),
            rt.network_buffer(),
            rt.reply_reserve(),
            rt.min_provider_budget(),
        ) else {
            return false;
        };
        let ctx = RequestContext {
            tid: self.tid.as_str(),
            visitor_uuid: &self.uuid,
            signals: &event.signals,
            privacy: &event.privacy,
        };
        let body = Bytes::from(request_body(&ctx, tmax.as_millis() as u64, user_id));
        let request = client_for(provider, deps.clients).send(LookupSegments {
            tid: self.tid,
            body,
        });
        let index = self.called.len();
        let started = self.started;
        self.called.push(Called {
            provider: provider.clone(),
            user_id: user_id.map(str::to_string),
            early,
            discarded: false,
        });
        self.running.push(Box::pin(async move {
            (index, request.await, started.elapsed())
        }));
        true
    }

    /// While the profile is still being read: calls the providers whose call does not depend on
    /// it, as far as can be known without it — every `askFor: "all"` provider, and the
    /// synced-only ones this event declares an id for — each with the id this event declares
    /// for its data source, if any. [`FanOut::plan`] checks them against the profile.
    fn start_independent(
        &mut self,
        deps: &SessionDeps,
        catalog: &CompiledCatalog,
        event: &EventData,
    ) {
        for provider in catalog.providers() {
            if !event.vendors.allows(provider.tcf_vendor_id) {
                continue;
            }
            let declared = event
                .declared
                .iter()
                .rev()
                .find(|d| d.links() && d.dpid == provider.data_source_id)
                .map(|d| d.id.as_str());
            if provider.ask_for == AskFor::Synced && declared.is_none() {
                continue;
            }
            self.call(deps, event, provider, declared, true);
        }
    }

    /// With the profile: takes fresh cached answers, skips what cannot or need not be called,
    /// calls the rest. A call started early is kept only if it is exactly the call the profile
    /// calls for; otherwise its answer is discarded (and the provider called again, budget
    /// permitting), so an early call never puts a wrong answer in the cache.
    fn plan(
        &mut self,
        deps: &SessionDeps,
        catalog: &CompiledCatalog,
        event: &EventData,
        profile: &Profile,
        now: i64,
        result: &mut EventResult,
    ) {
        for provider in catalog.providers() {
            // Not even a cached answer: the visitor has not let this vendor's data be used.
            if !event.vendors.allows(provider.tcf_vendor_id) {
                result
                    .providers
                    .push((provider.name.clone(), Outcome::NoConsent));
                continue;
            }
            let cached = profile.fresh_answer(provider.pid, now);
            let user_id = profile
                .synced_ids
                .get(&provider.data_source_id)
                .map(String::as_str);
            if let Some(early) = self
                .called
                .iter_mut()
                .find(|c| c.early && !c.discarded && c.provider.pid == provider.pid)
            {
                let exact = cached.is_none() && early.user_id.as_deref() == user_id;
                let used = if exact { "used" } else { "discarded" };
                metrics::counter!("tributary_provider_early_calls_total", "result" => used)
                    .increment(1);
                if exact {
                    continue;
                }
                early.discarded = true;
            }
            if let Some(cached) = cached {
                result
                    .providers
                    .push((provider.name.clone(), Outcome::Cached));
                self.segments
                    .push((provider.data_source_id, cached.segments.clone()));
                continue;
            }
            // A synced-only provider knows visitors by its own ids: without one there is
            // nothing to ask it about.
            if provider.ask_for == AskFor::Synced && user_id.is_none() {
                result
                    .providers
                    .push((provider.name.clone(), Outcome::Skipped));
                continue;
            }
            if !self.call(deps, event, provider, user_id, false) {
                result
                    .providers
                    .push((provider.name.clone(), Outcome::Skipped));
            }
        }
    }

    /// Waits for the calls, each no longer than its budget, records outcomes in `result` and
    /// fresh answers in the profile's cache. Returns the segments per data source for the
    /// engine, and the calls still running for the late-answer collector.
    async fn collect(
        mut self,
        rt: &RealtimeConfig,
        profile: &mut Profile,
        now: i64,
        result: &mut EventResult,
    ) -> (Vec<(u32, Vec<String>)>, Option<LateCalls>) {
        // One timer for the whole fan-out: a provider whose own timeout is shorter is ended by
        // its client (outcome `timeout`); every call still running at `answer_by` is a timeout
        // too.
        let answer_by = self
            .deadline
            .checked_sub(rt.reply_reserve())
            .unwrap_or(self.deadline);
        let mut cutoff = std::pin::pin!(tokio::time::sleep_until(answer_by.into()));
        let mut outcomes: Vec<Option<Outcome>> = vec![None; self.called.len()];
        let mut awaited = self.called.iter().filter(|c| !c.discarded).count();
        while awaited > 0 {
            let (index, reply, waited) =
                match future::select(self.running.next(), cutoff.as_mut()).await {
                    Either::Left((Some(done), _)) => done,
                    Either::Left((None, _)) | Either::Right(_) => break,
                };
            let called = &self.called[index];
            let outcome = match reply {
                Ok(ProviderReply {
                    result: Ok(answer), ..
                }) => {
                    let outcome = answer.outcome();
                    if !called.discarded {
                        cache_answer(profile, &called.provider, &answer, now);
                        self.segments
                            .push((called.provider.data_source_id, answer.segments));
                    }
                    outcome
                }
                Ok(ProviderReply {
                    result: Err(CallError::Timeout(_)),
                    ..
                }) => Outcome::Timeout,
                Ok(ProviderReply {
                    result: Err(CallError::Saturated(_)),
                    ..
                }) => Outcome::Skipped,
                Ok(ProviderReply {
                    result: Err(CallError::CircuitOpen),
                    ..
                }) => Outcome::CircuitOpen,
                Ok(ProviderReply { result: Err(_), .. }) | Err(_) => Outcome::Error,
            };
            record(&called.provider, outcome, waited);
            outcomes[index] = Some(outcome);
            if !called.discarded {
                awaited -= 1;
            }
        }
        for (called, outcome) in self.called.iter().zip(outcomes) {
            if called.discarded {
                continue;
            }
            let outcome = outcome.unwrap_or_else(|| {
                record(&called.provider, Outcome::Timeout, self.started.elapsed());
                Outcome::Timeout
            });
            result
                .providers
                .push((called.provider.name.clone(), outcome));
        }
        let late = (!self.running.is_empty()).then(|| LateCalls {
            running: self.running,
            // A discarded call's answer is not the visitor's: never cached, even late.
            called: self
                .called
                .into_iter()
                .map(|c| (!c.discarded).then_some(c.provider))
                .collect(),
        });
        (self.segments, late)
    }
}

/// Keeps a provider's answer with the visitor for its `ttl`, or the provider's `cacheTtlSecs`.
fn cache_answer(profile: &mut Profile, provider: &Provider, answer: &Answer, now: i64) {
    let ttl = answer
        .ttl_secs
        .unwrap_or(u64::from(provider.cache_ttl_secs));
    if ttl > 0 {
        profile.provider_cache.insert(
            provider.pid,
            CachedAnswer {
                segments: answer.segments.clone(),
                expires_at: now.saturating_add(ttl.min(i64::MAX as u64) as i64),
            },
        );
    }
}

/// One provider call of a fan-out: its index among the called providers, the reply, and how
/// long the event waited.
type Call = Pin<Box<dyn Future<Output = (usize, Result<ProviderReply, MailboxError>, Duration)>>>;

/// Calls still running when their event was answered.
struct LateCalls {
    running: FuturesUnordered<Call>,
    /// By call index; `None` for a call whose answer is discarded.
    called: Vec<Option<Arc<Provider>>>,
}

/// Provider answers that arrived after their event was answered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LateAnswers {
    pub tid: Tid,
    pub answers: Vec<(Arc<Provider>, Answer)>,
    /// Unix seconds when they arrived.
    pub now: i64,
    /// The session's erasure count when the event started.
    pub erasures: u64,
}

/// Waits, on this thread, for the calls still running and hands their answers to the session.
fn collect_late_answers(late: LateCalls, session: Addr<VisitorSession>, erasures: u64, tid: Tid) {
    // Every call ends by its provider's own timeout (its client enforces it); this limit only
    // bounds the task if that ever failed.
    let limit = late
        .called
        .iter()
        .flatten()
        .map(|p| Duration::from_millis(u64::from(p.timeout_ms)))
        .max()
        .unwrap_or_default()
        .saturating_mul(2);
    actix_rt::spawn(async move {
        let LateCalls {
            mut running,
            called,
        } = late;
        let mut answers = Vec::new();
        let collect = async {
            while let Some((index, reply, _)) = running.next().await {
                if let (
                    Ok(ProviderReply {
                        result: Ok(answer), ..
                    }),
                    Some(provider),
                ) = (reply, called[index].clone())
                {
                    metrics::counter!("tributary_provider_late_answers_total",
                        "provider" => provider.name.clone())
                    .increment(1);
                    answers.push((provider, answer));
                }
            }
        };
        let _ = tokio::time::timeout(limit, collect).await;
        if !answers.is_empty() {
            session.do_send(LateAnswers {
                tid,
                answers,
                now: crate::server::unix_now(),
                erasures,
            });
        }
    });
}

impl Handler<LateAnswers> for VisitorSession {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: LateAnswers, _: &mut Self::Context) -> Self::Result {
        if msg.erasures != self.erasures {
            // The visitor was erased (or opted out) since: these answers belong to no one.
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let deps = self.deps.clone();
        let visitor = self.visitor;
        let work = async move {
            // Not in memory: the last read or write failed, and writing now could overwrite
            // what is stored. The answers are dropped; the next event asks again. (A shared
            // store's sessions keep nothing in memory: the profile is read.)
            let shared = deps.profiles.is_shared();
            let mut profile = match state {
                ProfileState::Loaded(profile) => profile,
                ProfileState::Unloaded if shared => match deps.profiles.load(visitor).await {
                    Ok(stored) => stored.unwrap_or_default(),
                    Err(_) => return ProfileState::Unloaded,
                },
                ProfileState::Unloaded => return state,
            };
            let baseline = shared.then(|| ChangeBaseline::of(&profile));
            let mut segments = Vec::with_capacity(msg.answers.len());
            for (provider, answer) in msg.answers {
                cache_answer(&mut profile, &provider, &answer, msg.now);
                segments.push((provider.data_source_id, answer.segments));
            }
            let evaluated = evaluate(
                &deps,
                EvaluateProfile {
                    changes: baseline.map(|b| b.changes(&profile)).unwrap_or_default(),
                    tid: msg.tid,
                    visitor,
                    profile,
                    persist: true,
                    catalog: deps.catalog.current(),
                    event: Arc::new(EventData::default()),
                    provider_segments: segments,
                    now: msg.now,
                    answers_only: true,
                },
            )
            .await;
            match evaluated {
                Ok(done) => {
                    if shared {
                        ProfileState::Unloaded
                    } else {
                        ProfileState::Loaded(done.profile)
                    }
                }
                Err(e) => {
                    log::error!(tid = msg.tid.as_str(); "segment engine unavailable: {e}");
                    ProfileState::Unloaded
                }
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|state, act, _| {
            act.profile = state;
        })))
    }
}

fn record(provider: &Provider, outcome: Outcome, waited: Duration) {
    let name = provider.name.clone();
    metrics::counter!("tributary_provider_calls_total", "provider" => name.clone(), "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!("tributary_provider_wait_seconds", "provider" => name)
        .record(waited.as_secs_f64());
}
