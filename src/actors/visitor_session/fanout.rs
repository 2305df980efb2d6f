//! The provider fan-out of one event: which providers are called (or answered from the
//! visitor's cache, or skipped), each with what is left of the event's budget, and the wait
//! for their answers until the cut-off. Calls still running then are handed on as
//! [`LateCalls`] (see [`super::late_answers`]).
//!
//! A call is never cut short here: the event stops *waiting* at the deadline, but the call
//! runs on in its provider client until the provider's own timeout, so its keep-alive
//! connection is kept and its answer can still be merged for the visitor's next event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::MailboxError;
use actix_web::web::Bytes;
use futures_util::future::{self, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{EventResult, SessionDeps};
use crate::actors::provider_client::{client_for, CallError, LookupSegments, ProviderReply};
use crate::config::RealtimeConfig;
use crate::core::catalog::{AskFor, Provider};
use crate::core::engine::CompiledCatalog;
use crate::core::event::EventData;
use crate::core::ids::{Tid, VisitorId};
use crate::core::profile::{CachedAnswer, Profile};
use crate::core::provider::{budget, request_body, Answer, Outcome, RequestContext};

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
pub(super) struct FanOut {
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
    pub(super) fn new(tid: Tid, visitor: VisitorId, deadline: Instant) -> Self {
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
    pub(super) fn start_independent(
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
    pub(super) fn plan(
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
    pub(super) async fn collect(
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
        let mut waits: Vec<Option<Duration>> = vec![None; self.called.len()];
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
            waits[index] = Some(waited);
            if !called.discarded {
                awaited -= 1;
            }
        }
        for ((called, outcome), waited) in self.called.iter().zip(outcomes).zip(waits) {
            if called.discarded {
                continue;
            }
            let waited = waited.unwrap_or_else(|| self.started.elapsed());
            let outcome = outcome.unwrap_or_else(|| {
                record(&called.provider, Outcome::Timeout, waited);
                Outcome::Timeout
            });
            result
                .providers
                .push((called.provider.name.clone(), outcome));
            result
                .provider_waits
                .push((called.provider.name.clone(), waited));
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
pub(super) fn cache_answer(profile: &mut Profile, provider: &Provider, answer: &Answer, now: i64) {
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
pub(super) type Call =
    Pin<Box<dyn Future<Output = (usize, Result<ProviderReply, MailboxError>, Duration)>>>;

/// Calls still running when their event was answered.
pub(super) struct LateCalls {
    pub(super) running: FuturesUnordered<Call>,
    /// By call index; `None` for a call whose answer is discarded.
    pub(super) called: Vec<Option<Arc<Provider>>>,
}

/// One provider's metric handles on this thread.
struct Handles {
    wait: metrics::Histogram,
    /// By outcome label; a handful at most.
    calls: Vec<(&'static str, metrics::Counter)>,
}

thread_local! {
    /// Each provider's handles by name, so that recording a call is no registry lookup (which
    /// hashes the name and labels and allocates the label, twice per call). Provider names
    /// are bounded by the catalog.
    static HANDLES: std::cell::RefCell<std::collections::HashMap<String, Handles>> =
        Default::default();
}

fn record(provider: &Provider, outcome: Outcome, waited: Duration) {
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        if !handles.contains_key(&provider.name) {
            let wait = metrics::histogram!("tributary_provider_wait_seconds", "provider" => provider.name.clone());
            handles.insert(
                provider.name.clone(),
                Handles {
                    wait,
                    calls: Vec::new(),
                },
            );
        }
        let Some(h) = handles.get_mut(&provider.name) else {
            return;
        };
        let label = outcome.as_str();
        match h.calls.iter().find(|(l, _)| *l == label) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let counter = metrics::counter!("tributary_provider_calls_total", "provider" => provider.name.clone(), "outcome" => label);
                counter.increment(1);
                h.calls.push((label, counter));
            }
        }
        h.wait.record(waited.as_secs_f64());
    });
}
