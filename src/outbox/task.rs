//! The delivery task: one [`DeliveryTask`] owns the destinations' queues, the store and the
//! client, and [`run`] is its loop — send what is due, then wait for a command, a POST's end or
//! the next retry.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{header, Version};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{Command, OutboxSettings, OutboxStatus};
use crate::core::catalog::{Destination, DestinationType, Status};
use crate::core::clock::unix_now;
use crate::core::engine::CatalogHandle;
use crate::core::s2s::{self, Delivery};
use crate::core::signing;
use crate::store::{on_blocking_thread, OutboxStore};

/// Runs until a `Stop` (once what came before it is written) or until every handle is gone.
pub(super) async fn run(
    store: Arc<dyn OutboxStore>,
    catalog: CatalogHandle,
    settings: OutboxSettings,
    status: OutboxStatus,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut task = DeliveryTask::new(store, catalog, settings, status);
    task.load_waiting().await;
    loop {
        task.send_due().await;
        let next_attempt = task.next_attempt();
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { break };
                let (deliveries, stop) = gather(command, &mut rx);
                task.accept(deliveries).await;
                if let Some(done) = stop {
                    let _ = done.send(());
                    break;
                }
            }
            Some(flight) = task.flights.next(), if !task.flights.is_empty() => {
                task.landed(flight).await;
            }
            _ = sleep_until(next_attempt), if next_attempt.is_some() => {}
        }
        task.report_waiting();
    }
}

/// The deliveries of `first` and of every command already waiting behind it (written in one
/// batch), up to a `Stop`, which is returned.
fn gather(
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
) -> (Vec<Delivery>, Option<oneshot::Sender<()>>) {
    let (mut deliveries, mut stop) = match first {
        Command::Queue(queued) => (queued, None),
        Command::Stop(done) => (Vec::new(), Some(done)),
    };
    while stop.is_none() {
        match rx.try_recv() {
            Ok(Command::Queue(more)) => deliveries.extend(more),
            Ok(Command::Stop(done)) => stop = Some(done),
            Err(_) => break,
        }
    }
    (deliveries, stop)
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

struct DeliveryTask {
    store: Arc<dyn OutboxStore>,
    catalog: CatalogHandle,
    settings: OutboxSettings,
    client: awc::Client,
    queues: BTreeMap<u64, Queue>,
    /// The POSTs out, at most one per destination (its queue's `in_flight`).
    flights: FuturesUnordered<LocalBoxFuture<'static, Flight>>,
    /// What the admin API shows of each destination.
    status: OutboxStatus,
}

impl DeliveryTask {
    fn new(
        store: Arc<dyn OutboxStore>,
        catalog: CatalogHandle,
        settings: OutboxSettings,
        status: OutboxStatus,
    ) -> Self {
        // No client-level timeout: the one around each POST covers the whole exchange.
        // HTTP/1.1 only, as for providers (docs/architecture.md, "HTTP/1.1 only"); no awc
        // timeout, as `send` bounds the whole exchange, body included.
        let client = awc::Client::builder()
            .max_http_version(Version::HTTP_11)
            .disable_redirects()
            .disable_timeout()
            .finish();
        DeliveryTask {
            store,
            catalog,
            settings,
            client,
            queues: BTreeMap::new(),
            flights: FuturesUnordered::new(),
            status,
        }
    }

    /// Queues what the store's outbox still holds from before this start.
    async fn load_waiting(&mut self) {
        let waiting = {
            let store = self.store.clone();
            on_blocking_thread("outbox read", move || store.outbox_all()).await
        };
        match waiting {
            Ok(all) => {
                if !all.is_empty() {
                    log::info!("S2S outbox: {} deliveries waiting from before", all.len());
                }
                for (seq, d) in all {
                    self.queues
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
    }

    /// Starts the next POST of every destination that is due, after dropping what is too old
    /// or has no destination any more.
    async fn send_due(&mut self) {
        let now = Instant::now();
        let catalog = self.catalog.current();
        for (&id, queue) in self.queues.iter_mut().filter(|(_, q)| q.due(now)) {
            expire(
                &self.store,
                id,
                queue,
                unix_now() - self.settings.max_age_secs,
            )
            .await;
            match prepare(catalog.destinations(), id, queue, &self.settings) {
                Prepared::Send(post) => {
                    queue.in_flight = true;
                    self.flights
                        .push(send(&self.client, self.settings.timeout, id, post));
                }
                Prepared::Drop { reason } => {
                    // Waits for no flight: a destination's flight keeps its queue out of here.
                    let dropped: Vec<_> = queue.items.drain(..).collect();
                    forget(&self.store, id, dropped, reason).await;
                }
                Prepared::Wait => {}
            }
        }
        self.queues
            .retain(|_, q| !q.items.is_empty() || q.in_flight);
    }

    /// When the earliest destination waiting out a backoff is due again.
    fn next_attempt(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter(|q| !q.in_flight && !q.items.is_empty())
            .filter_map(|q| q.next_attempt)
            .min()
    }

    /// Makes new deliveries durable and queues them, within the cap.
    async fn accept(&mut self, deliveries: Vec<Delivery>) {
        self.write(deliveries).await;
        self.trim_overflow().await;
    }

    /// Makes deliveries durable, then queues them for sending.
    async fn write(&mut self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let seqs = {
            let store = self.store.clone();
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
            self.queues
                .entry(d.destination_id)
                .or_default()
                .items
                .push_back((seq, d));
        }
    }

    /// A destination down for long must not take all the memory: each delivery carries the
    /// visitor's whole list, so the newest are the ones worth keeping.
    async fn trim_overflow(&mut self) {
        for (&id, queue) in self.queues.iter_mut() {
            let excess = queue.items.len().saturating_sub(self.settings.max_waiting);
            // Not while a POST is out: its deliveries are the first ones, removed by position
            // when it succeeds. The next command trims instead.
            if excess > 0 && !queue.in_flight {
                let dropped: Vec<_> = queue.items.drain(..excess).collect();
                forget(&self.store, id, dropped, "overflow").await;
            }
        }
    }

    /// Removes what a destination accepted, or schedules its retry.
    async fn landed(&mut self, flight: Flight) {
        let Some(queue) = self.queues.get_mut(&flight.destination_id) else {
            return;
        };
        queue.in_flight = false;
        let label = flight.destination_id.to_string();
        match flight.result {
            Ok(()) => {
                let done: Vec<_> = queue
                    .items
                    .drain(..flight.count.min(queue.items.len()))
                    .collect();
                if queue.failures > 0 {
                    log::info!("S2S destination {label} accepts deliveries again");
                }
                queue.failures = 0;
                queue.next_attempt = None;
                self.status.delivered(flight.destination_id, unix_now());
                metrics::counter!("tributary_s2s_requests_total", "destination" => label.clone(), "result" => "ok").increment(1);
                metrics::counter!("tributary_s2s_delivered_total", "destination" => label)
                    .increment(done.len() as u64);
                remove(
                    &self.store,
                    done.iter().filter_map(|(seq, _)| *seq).collect(),
                )
                .await;
            }
            Err(why) => {
                queue.failures += 1;
                self.status.failed(flight.destination_id, unix_now(), &why);
                let wait = s2s::backoff(
                    queue.failures,
                    self.settings.retry_initial,
                    self.settings.retry_max,
                    rand::random(),
                );
                queue.next_attempt = Some(Instant::now() + wait);
                metrics::counter!("tributary_s2s_requests_total", "destination" => label.clone(), "result" => "error").increment(1);
                if queue.failures == 1 {
                    log::warn!(
                        "S2S destination {label} failed ({why}); {} deliveries wait, retried in {wait:?}",
                        queue.items.len()
                    );
                } else {
                    log::debug!(
                        "S2S destination {label} failed again ({why}); retried in {wait:?}"
                    );
                }
            }
        }
    }

    fn report_waiting(&self) {
        metrics::gauge!("tributary_s2s_waiting")
            .set(self.queues.values().map(|q| q.items.len()).sum::<usize>() as f64);
        self.status
            .waiting(self.queues.iter().map(|(id, q)| (*id, q.items.len())));
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// One POST, ready to send.
struct Post {
    url: String,
    body: Vec<u8>,
    signature: Option<String>,
    /// Deliveries it carries: the first ones of the queue.
    count: usize,
}

enum Prepared {
    Send(Post),
    Drop { reason: &'static str },
    Wait,
}

/// The next POST of a destination's queue.
fn prepare(
    destinations: &[Destination],
    id: u64,
    queue: &Queue,
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
    Prepared::Send(Post {
        url,
        body,
        signature,
        count,
    })
}

/// The POST of `post` to destination `id`, ending in its [`Flight`].
fn send(
    client: &awc::Client,
    timeout: Duration,
    id: u64,
    post: Post,
) -> LocalBoxFuture<'static, Flight> {
    let request = client
        .post(post.url)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::USER_AGENT, "Tributary S2S"));
    let request = match post.signature {
        Some(s) => request.insert_header((signing::SIGNATURE_HEADER, s)),
        None => request,
    };
    let body = post.body;
    Box::pin(async move {
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
        // One timeout over the send and the body read, so a destination that trickles its
        // answer cannot keep the POST (and its queue) in flight: awc's own timeout stops at
        // the response head.
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no whole answer within {timeout:?}")),
        };
        Flight {
            destination_id: id,
            count: post.count,
            result,
        }
    })
}

/// Drops the deliveries at the head of `queue` older than `oldest_kept` (Unix seconds).
async fn expire(store: &Arc<dyn OutboxStore>, id: u64, queue: &mut Queue, oldest_kept: i64) {
    let expired = queue
        .items
        .iter()
        .take_while(|(_, d)| d.at < oldest_kept)
        .count();
    if expired > 0 {
        let dropped: Vec<_> = queue.items.drain(..expired).collect();
        forget(store, id, dropped, "expired").await;
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
