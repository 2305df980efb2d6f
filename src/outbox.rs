//! The S2S outbox: deliveries to server-to-server destinations (see [`crate::core::s2s`]), kept in
//! the store until each destination accepts them.
//!
//! Sessions hand membership changes to an [`Outbox`] handle, which only sends them down a
//! channel: nothing here runs on the event path. One task, on the thread that started the
//! server (not an HTTP worker), does the rest:
//! - writes each delivery to the store's outbox and flushes it before any attempt, so a
//!   restart loses nothing that was queued (at start it reads back whatever is left);
//! - sends each destination its deliveries in order, `batchSize` visitors per POST, one request
//!   at a time per destination and destinations side by side;
//! - removes them from the store once the destination answers 2xx; any other answer, a
//!   timeout (`[s2s] timeout_ms`, over the whole exchange: sending, the head and the body) or a
//!   connection error is retried after a backoff that doubles from `retry_initial_ms` up to
//!   `retry_max_ms`, for as long as `max_age_hours`;
//! - drops (and counts) the deliveries of a destination that was deleted or is no longer S2S;
//!   an inactive destination's deliveries wait;
//! - keeps at most `[s2s] max_waiting` deliveries per destination in memory (and in the
//!   store), dropping the oldest beyond: each one carries the visitor's whole list, so the
//!   newest matter most.
//!
//! Delivery is at least once: a POST that the destination accepted just before a crash, or
//! whose answer was lost, is sent again. Receivers can tell repeats by `AAM_UUID` and
//! `DateTime`, as with AAM.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::core::catalog::{Destination, DestinationType, Status};
use crate::core::clock::unix_now;
use crate::core::engine::{CatalogHandle, CompiledCatalog};
use crate::core::ids::VisitorId;
use crate::core::s2s::{self, Delivery};
use crate::core::signing;
use crate::store::{on_blocking_thread, OutboxStore};

/// `[s2s]` settings, and the region reported in `AAM_Regions`.
#[derive(Clone, Copy, Debug)]
pub struct OutboxSettings {
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_age_secs: i64,
    /// Most deliveries kept waiting per destination; beyond, the oldest are dropped.
    pub max_waiting: usize,
    pub region: u32,
}

/// Where sessions queue deliveries. Cloning is cheap; a disabled outbox (tests that drive
/// sessions without a server) drops everything.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    tx: Option<mpsc::UnboundedSender<Command>>,
}

#[derive(Debug)]
enum Command {
    Queue(Vec<Delivery>),
    /// Write what was queued before, then end (in-flight POSTs are abandoned: what they
    /// carried stays in the store and is sent after the next start).
    Stop(tokio::sync::oneshot::Sender<()>),
}

impl Outbox {
    pub fn disabled() -> Self {
        Outbox::default()
    }

    /// Starts the delivery task on the current thread's runtime.
    pub fn start(
        store: Arc<dyn OutboxStore>,
        catalog: CatalogHandle,
        settings: OutboxSettings,
    ) -> (Outbox, actix_rt::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = actix_rt::spawn(run(store, catalog, settings, rx));
        (Outbox { tx: Some(tx) }, task)
    }

    /// Stops the delivery task once everything queued so far is in the store.
    pub async fn stop(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(Command::Stop(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Queues what a change of the visitor's segments from `before` to `after` calls for.
    pub fn membership(
        &self,
        catalog: &CompiledCatalog,
        visitor: VisitorId,
        before: &[u64],
        after: &[u64],
        at: i64,
    ) {
        let Some(tx) = &self.tx else { return };
        if catalog.destinations().is_empty() {
            return;
        }
        let changes = s2s::changes(catalog.destinations(), visitor, before, after, at);
        if changes.is_empty() {
            return;
        }
        metrics::counter!("tributary_s2s_queued_total").increment(changes.len() as u64);
        if tx.send(Command::Queue(changes)).is_err() {
            log::warn!("S2S outbox stopped: a membership change of {visitor} is not delivered");
        }
    }
}

/// One destination's waiting deliveries.
#[derive(Default)]
struct Queue {
    /// Sequence number in the store (`None` if it could not be written), and the delivery.
    items: VecDeque<(Option<u64>, Delivery)>,
    in_flight: bool,
    failures: u32,
    next_attempt: Option<Instant>,
}

impl Queue {
    fn due(&self, now: Instant) -> bool {
        !self.in_flight && !self.items.is_empty() && self.next_attempt.is_none_or(|t| t <= now)
    }
}

/// What became of one POST.
struct Flight {
    destination_id: u64,
    count: usize,
    result: Result<(), String>,
}

async fn run(
    store: Arc<dyn OutboxStore>,
    catalog: CatalogHandle,
    settings: OutboxSettings,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    // No client-level timeout: the one around each POST covers the whole exchange.
    let client = awc::Client::builder()
        .disable_redirects()
        .disable_timeout()
        .finish();
    let mut queues: BTreeMap<u64, Queue> = BTreeMap::new();
    let waiting = {
        let store = store.clone();
        on_blocking_thread("outbox read", move || store.outbox_all()).await
    };
    match waiting {
        Ok(all) => {
            if !all.is_empty() {
                log::info!("S2S outbox: {} deliveries waiting from before", all.len());
            }
            for (seq, d) in all {
                queues
                    .entry(d.destination_id)
                    .or_default()
                    .items
                    .push_back((Some(seq), d));
            }
        }
        Err(e) => log::error!(
            "S2S outbox not read; deliveries queued before this start wait for the next: {e}"
        ),
    }
    let mut flights = FuturesUnordered::new();
    loop {
        let now = Instant::now();
        let catalog_now = catalog.current();
        for (&id, queue) in queues.iter_mut().filter(|(_, q)| q.due(now)) {
            let oldest_kept = unix_now() - settings.max_age_secs;
            let expired = queue
                .items
                .iter()
                .take_while(|(_, d)| d.at < oldest_kept)
                .count();
            if expired > 0 {
                let dropped: Vec<_> = queue.items.drain(..expired).collect();
                forget(&store, id, dropped, "expired").await;
            }
            match prepare(catalog_now.destinations(), id, queue, &settings) {
                Prepared::Send {
                    url,
                    body,
                    signature,
                    count,
                } => {
                    queue.in_flight = true;
                    let request = client
                        .post(url)
                        .insert_header((header::CONTENT_TYPE, "application/json"))
                        .insert_header((header::USER_AGENT, "Tributary S2S"));
                    let request = match signature {
                        Some(s) => request.insert_header((signing::SIGNATURE_HEADER, s)),
                        None => request,
                    };
                    let timeout = settings.timeout;
                    flights.push(async move {
                        let exchange = async {
                            match request.send_body(body).await {
                                Ok(mut response) => {
                                    // Read (a little of) the body so the connection can be reused.
                                    let _ = response.body().limit(64 * 1024).await;
                                    if response.status().is_success() {
                                        Ok(())
                                    } else {
                                        Err(format!("status {}", response.status().as_u16()))
                                    }
                                }
                                Err(e) => Err(e.to_string()),
                            }
                        };
                        // One timeout over the send and the body read, so a destination that
                        // trickles its answer cannot keep the POST (and its queue) in flight:
                        // awc's own timeout stops at the response head.
                        let result = match tokio::time::timeout(timeout, exchange).await {
                            Ok(result) => result,
                            Err(_) => Err(format!("no whole answer within {timeout:?}")),
                        };
                        Flight {
                            destination_id: id,
                            count,
                            result,
                        }
                    });
                }
                Prepared::Drop { reason } => {
                    // Waits for no flight: a destination's flight keeps its queue out of here.
                    let dropped: Vec<_> = queue.items.drain(..).collect();
                    forget(&store, id, dropped, reason).await;
                }
                Prepared::Wait => {}
            }
        }
        queues.retain(|_, q| !q.items.is_empty() || q.in_flight);
        let next_attempt = queues
            .values()
            .filter(|q| !q.in_flight && !q.items.is_empty())
            .filter_map(|q| q.next_attempt)
            .min();
        tokio::select! {
            command = rx.recv() => {
                let mut deliveries = Vec::new();
                let mut stop = None;
                match command {
                    Some(Command::Queue(queued)) => deliveries = queued,
                    Some(Command::Stop(done)) => stop = Some(done),
                    None => break,
                }
                // Whatever else has arrived is written in the same batch.
                while stop.is_none() {
                    match rx.try_recv() {
                        Ok(Command::Queue(more)) => deliveries.extend(more),
                        Ok(Command::Stop(done)) => stop = Some(done),
                        Err(_) => break,
                    }
                }
                write(&store, &mut queues, deliveries).await;
                // A destination down for long must not take all the memory: each delivery
                // carries the visitor's whole list, so the newest are the ones worth keeping.
                for (&id, queue) in queues.iter_mut() {
                    let excess = queue.items.len().saturating_sub(settings.max_waiting);
                    // Not while a POST is out: its deliveries are the first ones, removed by
                    // position when it succeeds. The next command trims instead.
                    if excess > 0 && !queue.in_flight {
                        let dropped: Vec<_> = queue.items.drain(..excess).collect();
                        forget(&store, id, dropped, "overflow").await;
                    }
                }
                if let Some(done) = stop {
                    let _ = done.send(());
                    break;
                }
            }
            Some(flight) = flights.next(), if !flights.is_empty() => {
                let Some(queue) = queues.get_mut(&flight.destination_id) else { continue };
                queue.in_flight = false;
                let label = flight.destination_id.to_string();
                match flight.result {
                    Ok(()) => {
                        let done: Vec<_> = queue.items.drain(..flight.count.min(queue.items.len())).collect();
                        if queue.failures > 0 {
                            log::info!("S2S destination {label} accepts deliveries again");
                        }
                        queue.failures = 0;
                        queue.next_attempt = None;
                        metrics::counter!("tributary_s2s_requests_total", "destination" => label.clone(), "result" => "ok").increment(1);
                        metrics::counter!("tributary_s2s_delivered_total", "destination" => label).increment(done.len() as u64);
                        remove(&store, done.iter().filter_map(|(seq, _)| *seq).collect()).await;
                    }
                    Err(why) => {
                        queue.failures += 1;
                        let wait = s2s::backoff(queue.failures, settings.retry_initial, settings.retry_max, rand::random());
                        queue.next_attempt = Some(Instant::now() + wait);
                        metrics::counter!("tributary_s2s_requests_total", "destination" => label.clone(), "result" => "error").increment(1);
                        if queue.failures == 1 {
                            log::warn!("S2S destination {label} failed ({why}); {} deliveries wait, retried in {wait:?}", queue.items.len());
                        } else {
                            log::debug!("S2S destination {label} failed again ({why}); retried in {wait:?}");
                        }
                    }
                }
            }
            _ = sleep_until(next_attempt), if next_attempt.is_some() => {}
        }
        metrics::gauge!("tributary_s2s_waiting")
            .set(queues.values().map(|q| q.items.len()).sum::<usize>() as f64);
    }
}

/// Makes deliveries durable, then queues them for sending.
async fn write(
    store: &Arc<dyn OutboxStore>,
    queues: &mut BTreeMap<u64, Queue>,
    deliveries: Vec<Delivery>,
) {
    if deliveries.is_empty() {
        return;
    }
    let seqs = {
        let store = store.clone();
        let batch = deliveries.clone();
        on_blocking_thread("outbox write", move || store.outbox_append(&batch)).await
    };
    let seqs: Vec<Option<u64>> = match seqs {
        Ok(seqs) => seqs.into_iter().map(Some).collect(),
        Err(e) => {
            // Still delivered from memory; only a restart before then loses them.
            log::error!(
                "S2S outbox write failed ({} deliveries kept in memory only): {e}",
                deliveries.len()
            );
            vec![None; deliveries.len()]
        }
    };
    for (seq, d) in seqs.into_iter().zip(deliveries) {
        queues
            .entry(d.destination_id)
            .or_default()
            .items
            .push_back((seq, d));
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

enum Prepared {
    Send {
        url: String,
        body: Vec<u8>,
        signature: Option<String>,
        count: usize,
    },
    Drop {
        reason: &'static str,
    },
    Wait,
}

/// The next POST of a destination's queue, after dropping what is too old.
fn prepare(
    destinations: &[Destination],
    id: u64,
    queue: &mut Queue,
    settings: &OutboxSettings,
) -> Prepared {
    let Some(destination) = destinations
        .iter()
        .find(|d| d.destination_id == id && d.destination_type == DestinationType::S2s)
    else {
        return Prepared::Drop {
            reason: "no_destination",
        };
    };
    let Some(url) = destination.url.clone() else {
        return Prepared::Drop {
            reason: "no_destination",
        };
    };
    let now = unix_now();
    if destination.status != Status::Active || queue.items.is_empty() {
        return Prepared::Wait;
    }
    let count = queue
        .items
        .len()
        .min(destination.batch_size.max(1) as usize);
    let batch: Vec<&Delivery> = queue.items.iter().take(count).map(|(_, d)| d).collect();
    let body = s2s::body(destination, &batch, settings.region, now);
    let signature = destination
        .secret
        .as_ref()
        .map(|secret| signing::signature(&signing::key(secret), &body));
    Prepared::Send {
        url,
        body,
        signature,
        count,
    }
}

async fn forget(
    store: &Arc<dyn OutboxStore>,
    id: u64,
    dropped: Vec<(Option<u64>, Delivery)>,
    reason: &'static str,
) {
    log::warn!(
        "S2S destination {id}: {} deliveries dropped ({reason})",
        dropped.len()
    );
    metrics::counter!("tributary_s2s_dropped_total", "reason" => reason)
        .increment(dropped.len() as u64);
    remove(store, dropped.iter().filter_map(|(seq, _)| *seq).collect()).await;
}

async fn remove(store: &Arc<dyn OutboxStore>, seqs: Vec<u64>) {
    if seqs.is_empty() {
        return;
    }
    let store = store.clone();
    if let Err(e) = on_blocking_thread("outbox remove", move || store.outbox_remove(&seqs)).await {
        // They are sent again after a restart: at least once, never lost.
        log::error!("S2S outbox: delivered entries not removed: {e}");
    }
}
