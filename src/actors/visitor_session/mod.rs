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
//! The session never waits past the event's deadline for providers (`fanout.rs`). The route
//! waits for the session only until the deadline too; if the engine is slow, the route answers
//! without segments and the session still finishes the event, so no realization is lost.
//! Calls still running at the cut-off are merged when they answer (`late_answers.rs`).

mod fanout;
mod late_answers;
mod merge;
mod update;

pub use update::{update, ProfileUpdate, UpdateProfile};

pub use late_answers::LateAnswers;

use std::sync::Arc;
use std::time::Instant;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    Message, WrapFuture,
};

use super::directory::{PendingGuard, SessionDirectory};
use super::provider_client::ClientSettings;
use super::segment_engine::{
    engine_for, ChangeBaseline, EvaluateProfile, Evaluated, EventReplay, Merged,
};
use crate::config::{ProfilesConfig, RealtimeConfig};
use crate::core::clock::unix_now;
use crate::core::engine::CatalogHandle;
use crate::core::error::DcsError;
use crate::core::event::EventData;
use crate::core::ids::{Tid, VisitorId, ECID_DATA_SOURCE};
use crate::core::idsync::DeclaredId;
use crate::core::profile::Profile;
use crate::core::provider::Outcome;
use crate::outbox::Outbox;
use crate::store::{IdLink, ProfileService, Refreshed, Replay, StoreError};
use fanout::FanOut;

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
    pub erasure: Erasure,
}

/// What an erasure leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Erasure {
    /// Nothing (admin `DELETE /v1/profiles/{uuid}`).
    Everything,
    /// An opt-out: everything but the device's ECID link, which now leads to the opted-out
    /// visitor and so keeps the device opted out when its browser sends no third-party cookie
    /// (`docs/privacy.md`, Opt-out).
    OptOut,
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
    /// How long the event waited for each provider called (the console's "Try an event").
    pub provider_waits: Vec<(String, std::time::Duration)>,
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
    pub directory: Arc<SessionDirectory<VisitorSession>>,
    /// Where membership changes for S2S destinations go.
    pub outbox: Outbox,
    /// Cross-device data sources and the merge rule.
    pub profiles_config: Arc<ProfilesConfig>,
    /// The public workers' claim on the CPU, which imports yield to.
    pub priority: Arc<crate::core::priority::EventPriority>,
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
    /// In memory, held as this stored version (shared stores: see
    /// [`ProfileService::refresh`]; `None` with a store of one node).
    Loaded(Profile, Option<u64>),
}

impl ProfileState {
    /// What a session holds once it has saved `profile`: the profile, as the `version` the
    /// save gave it. After a failed save, on one node the profile still, so that the next
    /// write carries its changes too; on a shared store nothing, as what that write would
    /// have been based on is then unknown: it is read again.
    fn after_save(profile: Profile, saved: bool, version: Option<u64>, shared: bool) -> Self {
        match (saved, shared) {
            (true, _) => ProfileState::Loaded(profile, version),
            (false, false) => ProfileState::Loaded(profile, None),
            (false, true) => ProfileState::Unloaded,
        }
    }
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
    /// Events so far: a session that served none was started for server-side updates only.
    events: u64,
}

impl VisitorSession {
    pub fn new(visitor: VisitorId, generation: u64, deps: SessionDeps) -> Self {
        VisitorSession {
            visitor,
            generation,
            profile: ProfileState::Unloaded,
            deps,
            erasures: 0,
            events: 0,
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
        self.events += 1;
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
    let (mut profile, persist, held) = {
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
                        (Profile::default(), false, None)
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
    let merge_plan = merge::plan(&deps.profiles_config, &event.declared, &profile);
    let merged = match &merge_plan {
        Some(plan) => merged_profiles(&deps, plan, deadline, tid, &mut result).await,
        None => None,
    };
    // The device's link to the id it declared; the profile learns of it when it is new, or an
    // hour old, so a logged-in visitor does not cost a write of the profile on every event.
    let link_due = merge_plan
        .as_ref()
        .and_then(|p| p.declared.as_ref())
        .filter(|_| merged.is_some())
        .map(|d| {
            let stale = profile
                .last_link(d.dpid)
                .filter(|l| l.id == d.id)
                .is_none_or(|l| now.saturating_sub(l.at) >= LINK_REFRESH_SECS);
            profile.link(d.dpid, &d.id, now) || stale
        })
        .unwrap_or(false);

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
            held,
            catalog,
            event,
            provider_segments,
            now,
            answers_only: false,
            merged: merged.clone(),
        },
    )
    .await;
    if let Some(late) = late {
        // Late answers are merged as this event was, if it was.
        let merge = merge_plan.clone().filter(|_| merged.is_some());
        late_answers::collect(late, me.recipient(), erasures, tid, merge);
    }
    let state = match evaluated {
        Ok(done) => {
            if done.saved.is_err() {
                result
                    .errors
                    .push(DcsError::unspecified("Profile could not be saved"));
            }
            if let (Some(plan), Some(_)) = (&merge_plan, &merged) {
                write_to_linked(
                    &deps,
                    visitor,
                    plan,
                    &done.evaluation.realized,
                    link_due,
                    now,
                );
            }
            result.realized = done.evaluation.realized;
            result.segments = done.evaluation.segments;
            result.synced_ids = done.profile.synced_ids.clone();
            if persist {
                ProfileState::after_save(done.profile, done.saved.is_ok(), done.version, shared)
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

/// How old a device's link to its customer id may grow before an event renews it.
const LINK_REFRESH_SECS: i64 = 3600;

/// The profiles the merge rule merges with the device's for this event, read by the time the
/// providers are collected; `None` (error 202, the device alone) when the authenticated
/// profile cannot be read by then.
async fn merged_profiles(
    deps: &SessionDeps,
    plan: &merge::MergePlan,
    deadline: Instant,
    tid: Tid,
    result: &mut EventResult,
) -> Option<Arc<Merged>> {
    let read_by = deadline
        .checked_sub(deps.realtime.reply_reserve())
        .unwrap_or(deadline);
    let failed = |why: &str, result: &mut EventResult| {
        if let Some(auth) = &plan.auth {
            store_unavailable(tid, auth.visitor, why);
        }
        result.errors.push(DcsError::related_profile_unreadable());
        None
    };
    match tokio::time::timeout_at(read_by.into(), merged_now(deps, plan)).await {
        Ok(Ok(merged)) => Some(merged),
        Ok(Err(e)) => failed(&e.to_string(), result),
        Err(_) => failed("authenticated profile read timed out", result),
    }
}

/// What `plan` merges with the device: the authenticated profile it names as stored now
/// (none when nobody stored it yet, or the plan names none).
async fn merged_now(
    deps: &SessionDeps,
    plan: &merge::MergePlan,
) -> Result<Arc<Merged>, StoreError> {
    let linked = match &plan.auth {
        Some(auth) => deps.profiles.load(auth.visitor).await?,
        None => None,
    };
    metrics::counter!("tributary_merged_evaluations_total").increment(1);
    Ok(Arc::new(Merged {
        linked: linked.into_iter().collect(),
        merge: plan.merge,
    }))
}

/// Writes what belongs to the authenticated profile: the event's realizations when the
/// visitor was authenticated, and the device's link. Through that profile's own session, so
/// it is applied in order with the profile's other changes; the answer does not wait for it.
fn write_to_linked(
    deps: &SessionDeps,
    device: VisitorId,
    plan: &merge::MergePlan,
    realized: &[u64],
    link_due: bool,
    now: i64,
) {
    let Some(auth) = &plan.auth else { return };
    let realized = if plan.merge.realize_here {
        Vec::new()
    } else {
        realized.to_vec()
    };
    let link = plan
        .declared
        .as_ref()
        .filter(|d| link_due && d.visitor == auth.visitor)
        .map(|_| (0, device.to_string()));
    if realized.is_empty() && link.is_none() {
        return;
    }
    let mut change = ProfileUpdate::new(deps.catalog.current(), now);
    change.identity = Some((auth.dpid, auth.id.clone()));
    change.realized = realized;
    change.link = link;
    let (deps, to) = (deps.clone(), auth.visitor);
    actix::spawn(async move {
        if let Err(e) = update(&deps, to, change, false).await {
            log::warn!("authenticated profile of {device} not updated: {e}");
        }
    });
}

/// The visitor's profile, and the version it is held as: the one in memory, an empty one for
/// a new visitor, or the stored one. `false` when the stored profile could not be read: the
/// event goes on with an empty profile that must not be written over the stored one.
async fn load_profile(
    deps: &SessionDeps,
    visitor: VisitorId,
    state: ProfileState,
    new_visitor: bool,
    tid: Tid,
    errors: &mut Vec<DcsError>,
) -> (Profile, bool, Option<u64>) {
    match current_profile(deps, visitor, state, new_visitor).await {
        Ok((profile, held)) => (profile, true, held),
        Err(e) => {
            store_unavailable(tid, visitor, &e.to_string());
            errors.push(DcsError::profile_unreadable());
            (Profile::default(), false, None)
        }
    }
}

/// [`load_profile`]'s reading: with a store of one node the copy in memory is the profile; with
/// a shared one it is checked against the store's version first (one small round trip), and
/// read again only if another node changed it.
async fn current_profile(
    deps: &SessionDeps,
    visitor: VisitorId,
    state: ProfileState,
    new_visitor: bool,
) -> Result<(Profile, Option<u64>), StoreError> {
    let shared = deps.profiles.is_shared();
    let held = match state {
        ProfileState::Loaded(profile, held) if !shared => return Ok((profile, held)),
        ProfileState::Loaded(profile, held) => Some((profile, held)),
        // Nothing can be stored yet: held as "no profile stored" (version 0).
        ProfileState::Unloaded if new_visitor => {
            return Ok((Profile::default(), shared.then_some(0)))
        }
        ProfileState::Unloaded => None,
    };
    let version = held.as_ref().and_then(|(_, v)| *v);
    match deps.profiles.refresh(visitor, version).await? {
        Refreshed::Read(stored, version) => Ok((stored.unwrap_or_default(), version)),
        Refreshed::Unchanged => match held {
            Some((profile, version)) => Ok((profile, version)),
            None => Err(StoreError::Io(
                "the store found a held profile current where none was held".into(),
            )),
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
    let now = unix_now();
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
pub async fn erase(
    deps: &SessionDeps,
    visitor: VisitorId,
    erasure: Erasure,
) -> Result<(), StoreError> {
    let (session, pending) = deps.session_for(visitor);
    session
        .send(EraseProfile {
            pending: Some(pending),
            erasure,
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
        let deps = self.deps.clone();
        let visitor = self.visitor;
        let work = async move {
            // The synced ids say which reverse mappings to remove, the segments which S2S
            // destinations to tell; an unreadable record is deleted all the same.
            let mut erased = match state {
                ProfileState::Loaded(p, _) => p,
                ProfileState::Unloaded => match profiles.load(visitor).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => Profile::default(),
                },
            };
            let keep_device = msg.erasure == Erasure::OptOut;
            let links = std::mem::take(&mut erased.links);
            let identity = erased.identity.take();
            let ids = erased
                .synced_ids
                .into_iter()
                .filter(|(dpid, _)| !(keep_device && *dpid == ECID_DATA_SOURCE))
                .collect();
            let result = async {
                profiles.delete(visitor).await?;
                profiles.unlink(visitor, ids).await
            }
            .await;
            if result.is_ok() {
                let now = unix_now();
                outbox.membership(&catalog.current(), visitor, &erased.segments, &[], now);
                unlink_everywhere(&deps, visitor, identity, links, now).await;
            }
            drop(msg.pending);
            result
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| {
            // Whatever comes next starts from nothing (or from the store, if erasure failed).
            if result.is_ok() {
                let nothing_stored = act.deps.profiles.is_shared().then_some(0);
                act.profile = ProfileState::Loaded(Profile::default(), nothing_stored);
            }
            result
        })))
    }
}

/// After an erasure, removes the erased profile from the profiles linked to it: a device from
/// its authenticated profiles, an authenticated profile from its devices (with the devices'
/// ID sync of its customer id). A failure is logged: the erased profile itself is gone.
async fn unlink_everywhere(
    deps: &SessionDeps,
    erased: VisitorId,
    identity: Option<(u32, String)>,
    links: Vec<crate::core::profile::ProfileLink>,
    now: i64,
) {
    let catalog = deps.catalog.current();
    let updates = links.into_iter().filter_map(|l| {
        let mut change = ProfileUpdate::new(catalog.clone(), now);
        let target = match &identity {
            // An authenticated profile: its links are devices.
            Some(own) => {
                change.unlink.push(own.clone());
                VisitorId::parse(&l.id).filter(|_| l.dpid == 0)?
            }
            None => {
                change.unlink.push((0, erased.to_string()));
                VisitorId::authenticated(l.dpid, &l.id)
            }
        };
        Some(async move { (target, update(deps, target, change, true).await) })
    });
    for (target, result) in futures_util::future::join_all(updates).await {
        if let Err(e) = result {
            log::warn!("link from {target} to the erased {erased} not removed: {e}");
        }
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
            let (mut profile, persist, held) =
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
                let saved = deps.profiles.save_held(visitor, &profile, replay, held);
                if let Err(e) = &saved {
                    log::error!(tid = tid.as_str(); "profile of {visitor} not saved: {e}");
                    errors.push(DcsError::unspecified("Profile could not be saved"));
                }
                let version = saved.as_ref().ok().copied().flatten();
                ProfileState::after_save(profile, saved.is_ok(), version, shared)
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
