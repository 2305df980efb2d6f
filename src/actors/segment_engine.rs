//! `SegmentEngine`: evaluation and persistence, on its own threads.
//!
//! Started with [`actix::SyncArbiter`], so each engine thread runs one message at a time and
//! may block on sled without stalling an actix-web worker or a visitor session. Messages carry
//! everything needed (the profile, the catalog snapshot the event started with, the event), so
//! the engine holds no per-visitor state and any of its threads can serve any visitor; the
//! visitor session guarantees that one visitor's messages never overlap.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Handler, Message, SyncContext};

use super::visitor_session::EventData;
use crate::engine::{CompiledCatalog, Evaluation, EventInput, ProviderSegments};
use crate::ids::{Tid, VisitorId};
use crate::profile::Profile;
use crate::store::{ProfileStore, StoreError};

/// Reads a visitor's stored profile (`None` for a visitor never stored).
#[derive(Message)]
#[rtype(result = "Result<Option<Profile>, StoreError>")]
pub struct LoadProfile {
    pub visitor: VisitorId,
}

/// Qualifies an event against a profile and, when `persist` is set, stores the result.
#[derive(Message)]
#[rtype(result = "Evaluated")]
pub struct EvaluateProfile {
    pub tid: Tid,
    pub visitor: VisitorId,
    pub profile: Profile,
    /// False when the stored profile could not be read: evaluating is still useful for this
    /// event, but writing would destroy what is stored.
    pub persist: bool,
    /// The catalog snapshot the event started with, so one event never sees two catalogs.
    pub catalog: Arc<CompiledCatalog>,
    pub event: Arc<EventData>,
    /// Segments per provider data source (fresh answers and cached ones).
    pub provider_segments: Vec<(u32, Vec<String>)>,
    /// Unix seconds.
    pub now: i64,
}

/// The evaluated profile, handed back to the session that keeps it warm.
pub struct Evaluated {
    pub profile: Profile,
    pub evaluation: Evaluation,
    /// The outcome of the write (`Ok` when nothing had to be written).
    pub saved: Result<(), StoreError>,
}

/// Evaluates rules and persists profiles; see the module doc.
pub struct SegmentEngine {
    store: Arc<dyn ProfileStore>,
}

impl SegmentEngine {
    pub fn new(store: Arc<dyn ProfileStore>) -> Self {
        SegmentEngine { store }
    }
}

impl Actor for SegmentEngine {
    type Context = SyncContext<Self>;
}

impl Handler<LoadProfile> for SegmentEngine {
    type Result = Result<Option<Profile>, StoreError>;

    fn handle(&mut self, msg: LoadProfile, _: &mut Self::Context) -> Self::Result {
        self.store.load_profile(msg.visitor)
    }
}

impl Handler<EvaluateProfile> for SegmentEngine {
    type Result = actix::MessageResult<EvaluateProfile>;

    fn handle(&mut self, msg: EvaluateProfile, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let mut profile = msg.profile;
        let providers: Vec<ProviderSegments<'_>> = msg
            .provider_segments
            .iter()
            .map(|(ds, segments)| ProviderSegments {
                data_source_id: *ds,
                segments,
            })
            .collect();
        let evaluation = msg.catalog.evaluate(
            &mut profile,
            &EventInput {
                signals: &msg.event.signals,
                providers: &providers,
                sids: &msg.event.sids,
                tdpid: msg.event.tdpid,
                now: msg.now,
            },
        );
        let saved = if msg.persist {
            self.store.save_profile(msg.visitor, &profile)
        } else {
            Ok(())
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
        })
    }
}
