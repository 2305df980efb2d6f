//! `SegmentEngine`: qualification and persistence of profiles.
//!
//! One engine per arbiter thread, found through [`engine_for`] like the provider clients, so a
//! session hands its event to an engine on its own thread: no thread hop on the hot path.
//! Evaluation is pure CPU (microseconds) against the catalog snapshot the event started with.
//! Everything that touches the disk goes through the [`ProfileService`]'s store threads: saves
//! are queued there (write-behind) and the answer does not wait for them; sessions read
//! profiles from the service themselves. No actix-web worker ever blocks on the store.
//!
//! The engine holds no per-visitor state; the visitor's session guarantees that one visitor's
//! messages never overlap.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, Context, Handler, Message};

use crate::core::engine::{CompiledCatalog, Evaluation, EventInput, Merge, ProviderSegments};
use crate::core::event::EventData;
use crate::core::ids::{Tid, VisitorId};
use crate::core::profile::{CachedAnswer, Profile};
use crate::store::{ProfileService, Replay, StoreError};

/// Qualifies an event against a profile and, when `persist` is set, queues the result's save.
#[derive(Message)]
#[rtype(result = "Evaluated")]
pub struct EvaluateProfile {
    pub tid: Tid,
    pub visitor: VisitorId,
    pub profile: Profile,
    /// False when the stored profile could not be read: evaluating is still useful for this
    /// event, but writing would destroy what is stored.
    pub persist: bool,
    /// The stored version the profile is held as (see `ProfileService::save_held`).
    pub held: Option<u64>,
    /// The catalog snapshot the event started with, so one event never sees two catalogs.
    pub catalog: Arc<CompiledCatalog>,
    pub event: Arc<EventData>,
    /// Segments per provider data source (fresh answers and cached ones).
    pub provider_segments: Vec<(u32, Vec<String>)>,
    /// Unix seconds.
    pub now: i64,
    /// Late provider answers only (see [`crate::core::engine::EventInput::answers_only`]).
    pub answers_only: bool,
    /// What the session changed before evaluation (synced ids, cached answers), for the
    /// event's replay in a shared store.
    pub changes: ProfileChanges,
    /// The profiles merged with this one by the merge rule (`docs/customer-data.md`), if any.
    pub merged: Option<Arc<Merged>>,
}

/// The authenticated profiles an evaluation merges with the device's, and how.
#[derive(Clone, Debug)]
pub struct Merged {
    pub linked: Vec<Profile>,
    pub merge: Merge,
}

/// Changes a session makes to a profile outside evaluation, to make again on another copy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileChanges {
    pub synced: Vec<(u32, String)>,
    pub cached: Vec<(u32, CachedAnswer)>,
}

/// The parts of a profile a session changes outside evaluation, as they were before it did:
/// what [`ProfileChanges`] are taken against (a copy of two small maps, not of the profile).
pub struct ChangeBaseline {
    synced_ids: BTreeMap<u32, String>,
    provider_cache: BTreeMap<u32, CachedAnswer>,
}

impl ChangeBaseline {
    pub fn of(profile: &Profile) -> Self {
        ChangeBaseline {
            synced_ids: profile.synced_ids.clone(),
            provider_cache: profile.provider_cache.clone(),
        }
    }

    /// The synced ids and cached answers `after` has that the baseline did not.
    pub fn changes(&self, after: &Profile) -> ProfileChanges {
        ProfileChanges {
            synced: after
                .synced_ids
                .iter()
                .filter(|(k, v)| self.synced_ids.get(k) != Some(v))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            cached: after
                .provider_cache
                .iter()
                .filter(|(k, v)| self.provider_cache.get(k) != Some(v))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        }
    }
}

impl ProfileChanges {
    fn apply(&self, profile: &mut Profile) {
        for (dpid, id) in &self.synced {
            profile.synced_ids.insert(*dpid, id.clone());
        }
        for (pid, answer) in &self.cached {
            profile.provider_cache.insert(*pid, answer.clone());
        }
    }
}

/// One event, to apply again to a profile another node changed meanwhile (shared stores):
/// the session's changes, then the same evaluation against the same catalog snapshot.
pub struct EventReplay {
    pub changes: ProfileChanges,
    pub now: i64,
    /// `None` for an ID sync, which evaluates nothing.
    pub evaluation: Option<ReplayedEvaluation>,
}

pub struct ReplayedEvaluation {
    pub catalog: Arc<CompiledCatalog>,
    pub event: Arc<EventData>,
    pub provider_segments: Vec<(u32, Vec<String>)>,
    pub answers_only: bool,
    pub merged: Option<Arc<Merged>>,
}

/// Qualifies one event against a profile (merged with others when the merge rule says so):
/// the engine's one call into the rules.
fn evaluate(
    catalog: &CompiledCatalog,
    profile: &mut Profile,
    event: &EventData,
    provider_segments: &[(u32, Vec<String>)],
    now: i64,
    answers_only: bool,
    merged: Option<&Merged>,
) -> Evaluation {
    let providers: Vec<ProviderSegments<'_>> = provider_segments
        .iter()
        .map(|(ds, segments)| ProviderSegments {
            data_source_id: *ds,
            segments,
        })
        .collect();
    let input = EventInput {
        signals: &event.signals,
        providers: &providers,
        sids: &event.sids,
        tdpid: event.tdpid,
        now,
        answers_only,
    };
    match merged {
        None => catalog.evaluate(profile, &input),
        Some(m) => catalog.evaluate_merged(profile, &mut m.linked.clone(), &input, m.merge),
    }
}

impl Replay for EventReplay {
    fn apply(&self, profile: &mut Profile) {
        self.changes.apply(profile);
        if profile.first_seen == 0 {
            profile.first_seen = self.now;
        }
        if let Some(e) = &self.evaluation {
            evaluate(
                &e.catalog,
                profile,
                &e.event,
                &e.provider_segments,
                self.now,
                e.answers_only,
                e.merged.as_deref(),
            );
        }
    }
}

/// The evaluated profile, handed back to the session that keeps it warm.
pub struct Evaluated {
    pub profile: Profile,
    pub evaluation: Evaluation,
    /// Whether the save could be queued (`Ok` when nothing had to be written).
    pub saved: Result<(), StoreError>,
    /// The version to hold the profile as from now on.
    pub version: Option<u64>,
}

/// Evaluates rules and persists profiles; see the module doc.
pub struct SegmentEngine {
    profiles: ProfileService,
}

impl SegmentEngine {
    pub fn new(profiles: ProfileService) -> Self {
        SegmentEngine { profiles }
    }
}

impl Actor for SegmentEngine {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every session of this thread talks to this engine; handlers are short, so the
        // mailbox drains as fast as it fills.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<EvaluateProfile> for SegmentEngine {
    type Result = actix::MessageResult<EvaluateProfile>;

    fn handle(&mut self, msg: EvaluateProfile, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let mut profile = msg.profile;
        let evaluation = evaluate(
            &msg.catalog,
            &mut profile,
            &msg.event,
            &msg.provider_segments,
            msg.now,
            msg.answers_only,
            msg.merged.as_deref(),
        );
        let saved = if msg.persist {
            let replay = self.profiles.is_shared().then(|| {
                Arc::new(EventReplay {
                    changes: msg.changes,
                    now: msg.now,
                    evaluation: Some(ReplayedEvaluation {
                        catalog: msg.catalog.clone(),
                        event: msg.event.clone(),
                        provider_segments: msg.provider_segments.clone(),
                        answers_only: msg.answers_only,
                        merged: msg.merged.clone(),
                    }),
                }) as Arc<dyn Replay>
            });
            self.profiles
                .save_held(msg.visitor, &profile, replay, msg.held)
        } else {
            Ok(msg.held)
        };
        let (saved, version) = match saved {
            Ok(version) => (Ok(()), version),
            Err(e) => (Err(e), None),
        };
        if let Err(e) = &saved {
            log::error!(tid = msg.tid.as_str(); "profile of {} not saved: {e}", msg.visitor);
        }
        metrics::histogram!("tributary_engine_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        actix::MessageResult(Evaluated {
            profile,
            evaluation,
            saved,
            version,
        })
    }
}

thread_local! {
    /// This thread's engine per profile service (one service per running server).
    static ENGINES: RefCell<HashMap<usize, Addr<SegmentEngine>>> = RefCell::new(HashMap::new());
}

/// The engine of the current arbiter thread for `profiles`, started on first use.
pub fn engine_for(profiles: &ProfileService) -> Addr<SegmentEngine> {
    ENGINES.with(|engines| {
        let mut engines = engines.borrow_mut();
        let key = profiles.identity();
        if let Some(addr) = engines.get(&key).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = SegmentEngine::new(profiles.clone()).start();
        engines.insert(key, addr.clone());
        addr
    })
}
