//! `UpdateProfile`: a change to a profile that is not an event — an op of the customer's own
//! data (Customer Data API, `/event/s2s`, an inbound file), a linked device's realizations
//! written to its authenticated profile, a link made or removed. Applied by the profile's
//! session like its events, one at a time, so it never races one (`docs/customer-data.md`).

use std::sync::Arc;

use actix::{ActorContext, ActorFutureExt, AtomicResponse, Handler, Message, WrapFuture};

use super::{current_profile, ProfileState, SessionDeps, VisitorSession};
use crate::actors::directory::PendingGuard;
use crate::core::engine::CompiledCatalog;
use crate::core::ids::VisitorId;
use crate::core::inbound::{self, Change};
use crate::core::profile::Profile;
use crate::store::{Replay, StoreError};

/// Applies a [`ProfileUpdate`]; answers the profile's segments afterwards.
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>, StoreError>")]
pub struct UpdateProfile {
    pub update: Arc<ProfileUpdate>,
    pub pending: Option<PendingGuard>,
    /// The session stops afterwards if it served no event and nothing else is pending: a
    /// bulk import must not keep a session per profile it touched.
    pub transient: bool,
}

/// What an [`UpdateProfile`] changes, in this order.
pub struct ProfileUpdate {
    /// The catalog the change was planned against.
    pub catalog: Arc<CompiledCatalog>,
    /// Unix seconds: when the change is dated.
    pub now: i64,
    /// An authenticated profile's own id, recorded on its first change.
    pub identity: Option<(u32, String)>,
    /// An ID sync to record (a device first known by an op's ECID or partner id).
    pub sync: Option<(u32, String)>,
    /// A link to record (data source 0: a device that declared this profile's customer id).
    pub link: Option<(u32, String)>,
    /// Links to remove (the linked profile was erased); a customer id's ID sync goes with it.
    pub unlink: Vec<(u32, String)>,
    /// An inbound op's planned change.
    pub change: Option<Change>,
    /// Traits a linked device's event realized, counted here as events count them.
    pub realized: Vec<u64>,
}

impl ProfileUpdate {
    pub fn new(catalog: Arc<CompiledCatalog>, now: i64) -> Self {
        ProfileUpdate {
            catalog,
            now,
            identity: None,
            sync: None,
            link: None,
            unlink: Vec::new(),
            change: None,
            realized: Vec::new(),
        }
    }

    /// Makes the change on `profile`; its segments are evaluated again when traits changed.
    fn apply_to(&self, profile: &mut Profile) {
        if profile.identity.is_none() {
            profile.identity.clone_from(&self.identity);
        }
        if let Some((dpid, id)) = &self.sync {
            profile.synced_ids.insert(*dpid, id.clone());
        }
        if let Some((dpid, id)) = &self.link {
            profile.link(*dpid, id, self.now);
        }
        for (dpid, id) in &self.unlink {
            profile.links.retain(|l| !(l.dpid == *dpid && &l.id == id));
            if profile.synced_ids.get(dpid) == Some(id) {
                profile.synced_ids.remove(dpid);
            }
        }
        let mut traits_changed = !self.realized.is_empty();
        for &sid in &self.realized {
            if let Some(facts) = self.catalog.trait_facts(sid) {
                profile.realize(sid, self.now, facts.onboarded);
            }
        }
        if let Some(change) = &self.change {
            inbound::apply(&self.catalog, profile, change, self.now);
            traits_changed = false;
        }
        if traits_changed {
            self.catalog.reevaluate(profile, self.now);
        }
        if profile.first_seen == 0 {
            profile.first_seen = self.now;
        }
    }
}

/// The same update, on a copy another node changed meanwhile (shared stores).
impl Replay for ProfileUpdate {
    fn apply(&self, profile: &mut Profile) {
        self.apply_to(profile);
    }
}

/// Has `visitor`'s session (started on this thread if none runs) apply `update`, after
/// whatever is already queued for it.
pub async fn update(
    deps: &SessionDeps,
    visitor: VisitorId,
    update: ProfileUpdate,
    transient: bool,
) -> Result<Vec<u64>, StoreError> {
    let (session, pending) = deps.session_for(visitor);
    session
        .send(UpdateProfile {
            update: Arc::new(update),
            pending: Some(pending),
            transient,
        })
        .await
        .map_err(|e| StoreError::Io(format!("visitor session unavailable: {e}")))?
}

impl Handler<UpdateProfile> for VisitorSession {
    type Result = AtomicResponse<Self, Result<Vec<u64>, StoreError>>;

    fn handle(&mut self, msg: UpdateProfile, _: &mut Self::Context) -> Self::Result {
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let deps = self.deps.clone();
        let visitor = self.visitor;
        let transient = msg.transient;
        let work = async move {
            let UpdateProfile {
                update, pending, ..
            } = msg;
            let result = apply_update(&deps, visitor, state, update).await;
            drop(pending);
            result
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            move |(state, result), act, ctx| {
                act.profile = state;
                if transient
                    && act.events == 0
                    && act
                        .deps
                        .directory
                        .remove_if_idle(act.visitor, act.generation)
                {
                    ctx.stop();
                }
                result
            },
        )))
    }
}

async fn apply_update(
    deps: &SessionDeps,
    visitor: VisitorId,
    state: ProfileState,
    update: Arc<ProfileUpdate>,
) -> (ProfileState, Result<Vec<u64>, StoreError>) {
    let (mut profile, held) = match current_profile(deps, visitor, state, false).await {
        Ok(loaded) => loaded,
        // Nothing is written over a profile that could not be read.
        Err(e) => return (ProfileState::Unloaded, Err(e)),
    };
    let before = profile.segments.clone();
    update.apply_to(&mut profile);
    // A customer id's ID sync goes with its link; the mapping back to this device too.
    let cross: Vec<(u32, String)> = update
        .unlink
        .iter()
        .filter(|(dpid, _)| *dpid != 0)
        .cloned()
        .collect();
    if !cross.is_empty() {
        if let Err(e) = deps.profiles.unlink(visitor, cross).await {
            return (ProfileState::Unloaded, Err(e));
        }
    }
    let shared = deps.profiles.is_shared();
    let replay = shared.then(|| update.clone() as Arc<dyn Replay>);
    let saved = deps.profiles.save_held(visitor, &profile, replay, held);
    let segments = profile.segments.clone();
    match saved {
        Ok(version) => {
            // S2S destinations know devices by their AAM ids: an authenticated profile's
            // membership is the devices' to tell, when they are evaluated with it.
            if !visitor.is_authenticated() {
                deps.outbox
                    .membership(&update.catalog, visitor, &before, &segments, update.now);
            }
            (
                ProfileState::after_save(profile, true, version, shared),
                Ok(segments),
            )
        }
        Err(e) => (
            ProfileState::after_save(profile, false, None, shared),
            Err(e),
        ),
    }
}
