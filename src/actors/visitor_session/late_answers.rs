//! Late answers: provider answers that arrive after their event was answered are not wasted.
//! A task on the session's thread waits for the calls still running (each ends by its
//! provider's own timeout) and sends their answers back to the session as [`LateAnswers`]; the
//! session caches them and realizes the onboarded traits they carry, so the visitor's next
//! event benefits; an event evaluated with an authenticated profile has its late answers
//! evaluated so too, and their realizations written where the merge rule says. A session that
//! has stopped by then drops them, and so does one whose visitor was erased or opted out since
//! the event started. What became of each answer is
//! counted in `tributary_provider_late_answers_handled_total{provider,result}`, so an operator
//! (and a test) can tell answers put to use from answers dropped, and why.

use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AtomicResponse, Handler, Message, Recipient, WrapFuture};
use futures_util::stream::StreamExt;

use super::fanout::{cache_answer, LateCalls};
use super::merge::MergePlan;
use super::{current_profile, evaluate, merged_now, write_to_linked, ProfileState, VisitorSession};
use crate::actors::provider_client::ProviderReply;
use crate::actors::segment_engine::{ChangeBaseline, EvaluateProfile};
use crate::core::catalog::Provider;
use crate::core::clock::unix_now;
use crate::core::event::EventData;
use crate::core::ids::Tid;
use crate::core::provider::Answer;

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
    /// The merge rule's plan, when the event was evaluated merged: the answers are too, and
    /// what they realize goes where the event's realizations went.
    pub(super) merge: Option<MergePlan>,
}

/// Waits, on this thread, for the calls still running and hands their answers to the session.
pub(super) fn collect(
    late: LateCalls,
    session: Recipient<LateAnswers>,
    erasures: u64,
    tid: Tid,
    merge: Option<MergePlan>,
) {
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
        if answers.is_empty() {
            return;
        }
        // A session stopping between this check and the send drops them uncounted: the
        // count is for operators, and the window is a few instructions wide.
        if !session.connected() {
            count_handled(answers.iter().map(|(p, _)| p), Handled::Stopped);
            return;
        }
        session.do_send(LateAnswers {
            tid,
            answers,
            now: unix_now(),
            erasures,
            merge,
        });
    });
}

/// What became of a late answer.
#[derive(Clone, Copy)]
enum Handled {
    /// Cached with the profile and its onboarded traits realized.
    Merged,
    /// Dropped: the visitor was erased or opted out since the event started.
    Erased,
    /// Dropped: the profile could not be read (or its last write failed), and writing could
    /// overwrite what is stored.
    Unreadable,
    /// Dropped: the segment engine did not evaluate the profile.
    EngineUnavailable,
    /// Dropped: the visitor's session had stopped.
    Stopped,
}

impl Handled {
    fn label(self) -> &'static str {
        match self {
            Handled::Merged => "merged",
            Handled::Erased => "erased",
            Handled::Unreadable => "unreadable",
            Handled::EngineUnavailable => "engine_unavailable",
            Handled::Stopped => "stopped",
        }
    }
}

/// Counts one handled answer per provider in `providers`.
fn count_handled<'a>(providers: impl IntoIterator<Item = &'a Arc<Provider>>, handled: Handled) {
    for provider in providers {
        metrics::counter!("tributary_provider_late_answers_handled_total",
            "provider" => provider.name.clone(), "result" => handled.label())
        .increment(1);
    }
}

impl Handler<LateAnswers> for VisitorSession {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: LateAnswers, _: &mut Self::Context) -> Self::Result {
        if msg.erasures != self.erasures {
            // The visitor was erased (or opted out) since: these answers belong to no one.
            count_handled(msg.answers.iter().map(|(p, _)| p), Handled::Erased);
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        let state = std::mem::replace(&mut self.profile, ProfileState::Unloaded);
        let deps = self.deps.clone();
        let visitor = self.visitor;
        let providers: Vec<Arc<Provider>> = msg.answers.iter().map(|(p, _)| p.clone()).collect();
        let work = async move {
            // Not in memory: the last read or write failed, and writing now could overwrite
            // what is stored. The answers are dropped; the next event asks again. (With a
            // shared store the profile is checked, or read, as for an event.)
            let shared = deps.profiles.is_shared();
            if !shared && matches!(state, ProfileState::Unloaded) {
                count_handled(&providers, Handled::Unreadable);
                return state;
            }
            let (mut profile, held) = match current_profile(&deps, visitor, state, false).await {
                Ok(current) => current,
                Err(_) => {
                    count_handled(&providers, Handled::Unreadable);
                    return ProfileState::Unloaded;
                }
            };
            // The authenticated profile as it is now: it may have changed since the event.
            // Unreadable, the answers count for the device alone, as an event's would.
            let merged = match msg.merge.as_ref() {
                None => None,
                Some(plan) => match merged_now(&deps, plan).await {
                    Ok(merged) => Some(merged),
                    Err(e) => {
                        let auth = plan.auth.as_ref().map(|a| a.visitor.to_string());
                        log::warn!(tid = msg.tid.as_str(); "late answers evaluated without the authenticated profile {}: {e}", auth.unwrap_or_default());
                        None
                    }
                },
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
                    held,
                    catalog: deps.catalog.current(),
                    event: Arc::new(EventData::default()),
                    provider_segments: segments,
                    now: msg.now,
                    answers_only: true,
                    merged: merged.clone(),
                },
            )
            .await;
            match evaluated {
                Ok(done) => {
                    count_handled(&providers, Handled::Merged);
                    if let (Some(plan), Some(_)) = (&msg.merge, &merged) {
                        let realized = &done.evaluation.realized;
                        write_to_linked(&deps, visitor, plan, realized, false, msg.now);
                    }
                    ProfileState::after_save(done.profile, done.saved.is_ok(), done.version, shared)
                }
                Err(e) => {
                    log::error!(tid = msg.tid.as_str(); "segment engine unavailable: {e}");
                    count_handled(&providers, Handled::EngineUnavailable);
                    ProfileState::Unloaded
                }
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|state, act, _| {
            act.profile = state;
        })))
    }
}
