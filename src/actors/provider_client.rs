//! `ProviderClient`: everything about talking to one provider, on one arbiter thread.
//!
//! awc's `Client` is `!Send`, so there is one client actor per provider per arbiter, found
//! through a thread-local registry ([`client_for`]); a session only ever talks to the clients
//! of its own thread. Each client keeps its own keep-alive pool (HTTP/1.1 only: see
//! `docs/architecture.md`, Dependency notes).
//!
//! A call is never cut short by the event's deadline: the session stops *waiting* at the
//! deadline, but the call runs on here until the provider's own timeout. Dropping it would
//! throw away a pooled connection and make the next call pay a new connect — under a slow
//! provider that doubles the cost per event. Every failure becomes a [`CallError`]; nothing a
//! provider does can fail the event.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use actix_service::Service;
use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, ConnectorService};
use actix_web::http::{header, Uri, Version};
use actix_web::web::Bytes;
use awc::error::{ConnectError, SendRequestError};

use crate::core::catalog::Provider;
use crate::core::circuit::{Admission, CircuitBreaker, CircuitSettings, Transition};
use crate::core::ids::Tid;
use crate::core::provider::{parse_answer, Answer, AnswerError};
use crate::core::signing::{self, signature, SIGNATURE_HEADER};

/// Asks the provider about one visitor.
#[derive(Message)]
#[rtype(result = "ProviderReply")]
pub struct LookupSegments {
    pub tid: Tid,
    /// The JSON request body (`docs/provider-protocol.md`, The request).
    pub body: Bytes,
}

/// The provider's answer, or why there is none.
pub struct ProviderReply {
    pub result: Result<Answer, CallError>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("request failed: {0}")]
    Request(String),
    #[error("body unreadable or over the size limit: {0}")]
    Body(String),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// Not called: as many calls as allowed are already running (a slow or hanging provider
    /// must not pile up connections and timers without bound).
    #[error("not called: {0} calls already in flight")]
    Saturated(usize),
    /// Not called: the provider's circuit is open (it kept failing; `docs/provider-protocol.md`,
    /// Health).
    #[error("not called: the circuit is open")]
    CircuitOpen,
}

/// HTTP settings shared by every provider client (from `[realtime]`).
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    pub body_limit: usize,
    pub pool_size: usize,
    /// Calls to one provider running at once on one thread; more are not made (`skipped`).
    pub max_in_flight: usize,
    pub circuit: CircuitSettings,
}

/// Talks to one provider; see the module doc.
pub struct ProviderClient {
    provider: Arc<Provider>,
    client: awc::Client,
    settings: ClientSettings,
    /// Calls started and not finished (including those finishing after their event answered).
    in_flight: Rc<Cell<usize>>,
    /// This thread's view of the provider's health. Each worker thread learns on its own, so
    /// with N workers a dead provider costs N × `circuit_failures` failed calls before every
    /// thread stops calling it.
    breaker: Rc<RefCell<CircuitBreaker>>,
    /// The provider's `secret` as an HMAC key, when it has one.
    signing_key: Option<ring::hmac::Key>,
    failures: Rc<RefCell<FailureLog>>,
}

/// awc's TCP connector, counting each new connection (`tributary_provider_connects_total`):
/// with calls counted too, this shows how well keep-alive connections are reused (awc does not
/// expose its pool otherwise).
#[derive(Clone)]
struct CountingConnector {
    inner: ConnectorService,
    provider: String,
}

impl Service<ConnectInfo<Uri>> for CountingConnector {
    type Response = <ConnectorService as Service<ConnectInfo<Uri>>>::Response;
    type Error = TcpConnectError;
    type Future = <ConnectorService as Service<ConnectInfo<Uri>>>::Future;

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<ConnectInfo<Uri>>::poll_ready(&self.inner, cx)
    }

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        metrics::counter!("tributary_provider_connects_total", "provider" => self.provider.clone())
            .increment(1);
        self.inner.call(req)
    }
}

/// How often a provider's failed calls are summarized in the log, per thread.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits the warnings about a provider's failed calls: the first failure is reported at
/// once, later ones at most once per [`FAILURE_LOG_EVERY`], with how many there were — a dead
/// provider costs a few lines a minute, not one per event.
#[derive(Default)]
struct FailureLog {
    last_report: Option<Instant>,
    unreported: u64,
}

impl FailureLog {
    /// Counts a failure; `Some(n)` when it is time to report the `n` failures not yet reported.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self
            .last_report
            .is_some_and(|t| now.saturating_duration_since(t) < FAILURE_LOG_EVERY)
        {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

impl ProviderClient {
    /// Must run on the arbiter that will own the client (awc is `!Send`).
    pub fn new(provider: Arc<Provider>, settings: ClientSettings) -> Self {
        let timeout = Duration::from_millis(u64::from(provider.timeout_ms));
        let connector = awc::Connector::new()
            .connector(CountingConnector {
                inner: actix_tls::connect::Connector::new(Default::default()).service(),
                provider: provider.name.clone(),
            })
            .timeout(timeout)
            .max_http_version(Version::HTTP_11)
            .limit(settings.pool_size)
            .conn_keep_alive(Duration::from_secs(30));
        // No client-level request timeout: the handler's single timeout covers the whole call.
        let client = awc::Client::builder()
            .connector(connector)
            .max_http_version(Version::HTTP_11)
            .disable_redirects()
            .disable_timeout()
            .finish();
        let signing_key = provider.secret.as_ref().map(|s| signing::key(s));
        ProviderClient {
            provider,
            client,
            settings,
            in_flight: Rc::new(Cell::new(0)),
            breaker: Rc::new(RefCell::new(CircuitBreaker::new(settings.circuit))),
            signing_key,
            failures: Rc::new(RefCell::new(FailureLog::default())),
        }
    }
}

impl Actor for ProviderClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every concurrent event of this thread that asks this provider queues here for a
        // moment; the handler only starts a request, so the mailbox drains fast.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<LookupSegments> for ProviderClient {
    // ResponseFuture, not ResponseActFuture: each call runs as its own task. Futures spawned
    // into an actor's context are all polled whenever any of them is woken, so hundreds of
    // concurrent calls in one context cost quadratic CPU (measured: most of the server's CPU
    // with a hanging provider). State shared with the running calls lives in `Rc` cells.
    type Result = ResponseFuture<ProviderReply>;

    fn handle(&mut self, msg: LookupSegments, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let not_called = |error| -> Self::Result {
            Box::pin(std::future::ready(ProviderReply {
                result: Err(error),
                elapsed: Duration::ZERO,
            }))
        };
        let running = self.in_flight.get();
        if running >= self.settings.max_in_flight {
            return not_called(CallError::Saturated(running));
        }
        let (admission, transition) = self.breaker.borrow_mut().admit(started);
        if let Some(t) = transition {
            report_transition(&self.provider.name, t);
        }
        if admission == Admission::Refuse {
            return not_called(CallError::CircuitOpen);
        }
        let verdict = Verdict {
            breaker: self.breaker.clone(),
            admission,
            name: self.provider.name.clone(),
            recorded: false,
        };
        let in_flight = InFlight::enter(self.in_flight.clone());
        let timeout_ms = u64::from(self.provider.timeout_ms);
        let limit = self.settings.body_limit;
        let name = self.provider.name.clone();
        let failures = self.failures.clone();
        let mut request = self
            .client
            .post(self.provider.url.as_str())
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header(("X-Tributary-Tid", msg.tid.as_str()));
        if let Some(key) = &self.signing_key {
            request = request.insert_header((SIGNATURE_HEADER, signature(key, &msg.body)));
        }
        let request = request.send_body(msg.body);
        let call = async move {
            let mut response = request.await.map_err(|e| match e {
                // awc's connect timeout is the provider being too slow.
                SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                    CallError::Timeout(timeout_ms)
                }
                other => CallError::Request(other.to_string()),
            })?;
            let status = response.status().as_u16();
            let body = response
                .body()
                .limit(limit)
                .await
                .map_err(|e| CallError::Body(e.to_string()))?;
            Ok(parse_answer(status, &body)?)
        };
        Box::pin(async move {
            // One timeout over the whole call — connect, head and body — so a provider
            // trickling bytes cannot hold the event (awc's own timeout stops at the head).
            let mut call = Box::pin(call);
            let limit = Duration::from_millis(timeout_ms);
            let result = match tokio::time::timeout(limit, call.as_mut()).await {
                Ok(result) => {
                    drop(in_flight);
                    result
                }
                Err(_) => {
                    drain(&name, call, in_flight);
                    Err(CallError::Timeout(timeout_ms))
                }
            };
            verdict.record(result.is_ok());
            if let Err(e) = &result {
                log::debug!(tid = msg.tid.as_str(); "provider {name} failed: {e}");
                let report = failures
                    .try_borrow_mut()
                    .ok()
                    .and_then(|mut f| f.failed(Instant::now()));
                if let Some(n) = report {
                    log::warn!(
                        tid = msg.tid.as_str();
                        "provider {name}: {n} failed call(s) on this thread since the last report \
                         (at most one report per {}s); latest: {e}",
                        FAILURE_LOG_EVERY.as_secs()
                    );
                }
            }
            ProviderReply {
                result,
                elapsed: started.elapsed(),
            }
        })
    }
}

/// How long a call that timed out may run on, unseen, so that the answer is read to its end
/// and its keep-alive connection goes back to the pool: a provider that is a little slower than
/// its `timeoutMs` then costs no new connection per call (issue 16 measured one per call).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Lets a timed-out call finish in the background (its answer is dropped: it came after the
/// provider's own timeout). It still counts as in flight, so `max_in_flight` bounds what a
/// hanging provider holds; after [`DRAIN_GRACE`] it is dropped with its connection.
fn drain<F: std::future::Future + 'static>(
    provider: &str,
    call: std::pin::Pin<Box<F>>,
    in_flight: InFlight,
) {
    let provider = provider.to_string();
    actix_rt::spawn(async move {
        let finished = tokio::time::timeout(DRAIN_GRACE, call).await.is_ok();
        drop(in_flight);
        let result = if finished { "finished" } else { "cut" };
        metrics::counter!("tributary_provider_drained_calls_total", "provider" => provider, "result" => result)
            .increment(1);
    });
}

/// Tells the circuit breaker how an admitted call ended; a call dropped before it ended (the
/// runtime shutting down) counts as failed, so a half-open circuit never waits forever for its
/// probe.
struct Verdict {
    breaker: Rc<RefCell<CircuitBreaker>>,
    admission: Admission,
    name: String,
    recorded: bool,
}

impl Verdict {
    fn record(mut self, ok: bool) {
        self.finish(ok);
    }

    fn finish(&mut self, ok: bool) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        // try_borrow_mut: a drop during a panic elsewhere must not panic again.
        let transition = match self.breaker.try_borrow_mut() {
            Ok(mut b) => b.record(self.admission, ok, Instant::now()),
            Err(_) => None,
        };
        if let Some(t) = transition {
            report_transition(&self.name, t);
        }
    }
}

impl Drop for Verdict {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// Circuit changes are rare, so each is logged — the per-call failures are not, at error
/// level: a dead provider would flood the log with one line per event.
fn report_transition(provider: &str, t: Transition) {
    metrics::counter!("tributary_provider_circuit_transitions_total",
        "provider" => provider.to_string(), "to" => t.as_str())
    .increment(1);
    match t {
        Transition::Opened => {
            log::warn!(
                "provider {provider}: circuit open (it keeps failing); calls stop for a cool-down"
            )
        }
        Transition::HalfOpened => log::info!("provider {provider}: circuit half-open, probing"),
        Transition::Closed => log::info!("provider {provider}: circuit closed, calls resume"),
    }
}

/// Counts a running call until dropped (also when the call is abandoned).
struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    fn enter(counter: Rc<Cell<usize>>) -> Self {
        counter.set(counter.get() + 1);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// This thread's clients by provider id, with the definition each was built from.
type ClientRegistry = HashMap<u32, (Arc<Provider>, Addr<ProviderClient>)>;

thread_local! {
    static CLIENTS: RefCell<ClientRegistry> = RefCell::new(HashMap::new());
}

/// The client actor for `provider` on the current arbiter thread, started on first use and
/// replaced when the provider's definition changes.
pub fn client_for(provider: &Arc<Provider>, settings: ClientSettings) -> Addr<ProviderClient> {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((known, addr)) = clients.get(&provider.pid) {
            let same = Arc::ptr_eq(known, provider) || **known == **provider;
            if same && addr.connected() {
                return addr.clone();
            }
        }
        let addr = ProviderClient::new(provider.clone(), settings).start();
        clients.insert(provider.pid, (provider.clone(), addr.clone()));
        addr
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_at_most_once_per_period() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.failed(t0),
            Some(1),
            "the first failure is reported at once"
        );
        for i in 1..=500u64 {
            assert_eq!(log.failed(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(
            log.failed(t0 + FAILURE_LOG_EVERY),
            Some(501),
            "then a summary of everything since"
        );
        assert_eq!(log.failed(t0 + FAILURE_LOG_EVERY), None);
    }
}
