//! The S2S outbox: deliveries to server-to-server destinations (see [`crate::core::s2s`]), kept in
//! the store until each destination accepts them.
//!
//! Sessions hand membership changes to an [`Outbox`] handle, which only puts them in a
//! bounded channel, never waiting: nothing here runs on the event path. A full channel (the
//! task tens of thousands of changes behind, e.g. stuck on the store) drops the change and
//! counts it (`tributary_s2s_dropped_total{reason="queue_full"}`), with a warning at most
//! every few seconds. One task, on the thread that started the server (not an HTTP worker),
//! does the rest:
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
//! Delivery is at least once for every change that reached the task: a POST that the destination accepted just before a crash, or
//! whose answer was lost, is sent again. Receivers can tell repeats by `AAM_UUID` and
//! `DateTime`, as with AAM.

mod status;
mod task;

pub use status::{DeliveryError, DestinationStatus, OutboxStatus};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::core::engine::{CatalogHandle, CompiledCatalog};
use crate::core::ids::VisitorId;
use crate::core::s2s::{self, Delivery};
use crate::store::OutboxStore;

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

/// Commands the channel to the task holds. The task empties it into one store write each
/// time it wakes, so it fills only while the task waits on a store that does not answer: at
/// the ~10,000 events/s two cores serve, 50,000 is seconds of every event changing a mapped
/// segment, and at a few hundred bytes a command some 10-20 MB at most. Beyond, changes are
/// dropped and counted rather than piling up in memory for as long as the store is stuck.
const CHANNEL_CAPACITY: usize = 50_000;

/// At most one warning per this long about changes dropped on a full channel.
const FULL_LOG_EVERY: Duration = Duration::from_secs(5);

/// Where sessions queue deliveries. Cloning is cheap; a disabled outbox (tests that drive
/// sessions without a server) drops everything.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    tx: Option<mpsc::Sender<Command>>,
    /// Shared by every clone: the warnings are per outbox, not per session.
    full: Arc<Mutex<FullLog>>,
    /// Each destination's waiting deliveries and last errors, as the task last saw them.
    status: OutboxStatus,
}

/// Rate-limits the warnings about changes dropped on a full channel: the first at once, later
/// ones at most once per [`FULL_LOG_EVERY`] with how many there were, so a stuck store costs a
/// line every few seconds, not one per event.
#[derive(Debug, Default)]
struct FullLog {
    last_report: Option<Instant>,
    unreported: u64,
}

impl FullLog {
    /// Counts `n` dropped deliveries; `Some(total)` when it is time to report those not yet
    /// reported.
    fn dropped(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unreported += n;
        if self
            .last_report
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_LOG_EVERY)
        {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
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
        let (outbox, rx) = Outbox::channel(CHANNEL_CAPACITY);
        let status = outbox.status.clone();
        let task = actix_rt::spawn(task::run(store, catalog, settings, status, rx));
        (outbox, task)
    }

    /// A handle and the receiving end of its channel, holding `capacity` commands.
    fn channel(capacity: usize) -> (Outbox, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity);
        let outbox = Outbox {
            tx: Some(tx),
            full: Arc::default(),
            status: OutboxStatus::default(),
        };
        (outbox, rx)
    }

    /// A destination's deliveries: waiting, failures in a row, last errors.
    pub fn status(&self, destination: u64) -> DestinationStatus {
        self.status.get(destination)
    }

    /// Stops the delivery task once everything queued so far is in the store.
    pub async fn stop(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = tokio::sync::oneshot::channel();
            // Waits for room: unlike a change, the stop must not be dropped.
            if tx.send(Command::Stop(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Queues what a change of the visitor's segments from `before` to `after` calls for.
    /// Never waits: on a full channel the change is dropped (and counted).
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
        let count = changes.len() as u64;
        // Counted before the channel, so that every change queued is delivered, dropped (for
        // any reason, a full channel too) or waiting.
        metrics::counter!("tributary_s2s_queued_total").increment(count);
        match tx.try_send(Command::Queue(changes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("tributary_s2s_dropped_total", "reason" => "queue_full")
                    .increment(count);
                let report = self
                    .full
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .dropped(count, Instant::now());
                if let Some(n) = report {
                    log::warn!(
                        "S2S outbox queue full (the delivery task is behind, most likely on the \
                         store): {n} deliveries dropped since the last report (at most one per \
                         {}s)",
                        FULL_LOG_EVERY.as_secs()
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {
                log::warn!("S2S outbox stopped: a membership change of {visitor} is not delivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::core::catalog::Catalog;

    fn catalog() -> CompiledCatalog {
        let catalog: Catalog = serde_json::from_value(serde_json::json!({
            "traits": [{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT",
                        "traitRule": "c_page == cars", "dataSourceId": 1}],
            "segments": [{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}],
            "destinations": [{"destinationId": 5, "name": "partner", "destinationType": "S2S",
                              "url": "http://127.0.0.1:9/aam", "mappings": [{"sid": 101}]}]
        }))
        .unwrap();
        CompiledCatalog::compile(&catalog, 1).unwrap()
    }

    fn visitor(n: u8) -> VisitorId {
        VisitorId::parse(&n.to_string().repeat(38)).unwrap()
    }

    #[test]
    fn a_full_channel_drops_the_change_and_counts_it_without_waiting() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (outbox, mut rx) = Outbox::channel(1);
        let catalog = catalog();
        metrics::with_local_recorder(&recorder, || {
            for n in 1..=3 {
                outbox.membership(&catalog, visitor(n), &[], &[101], 1_700_000_000);
            }
        });
        let Ok(Command::Queue(first)) = rx.try_recv() else {
            panic!("the first change is queued")
        };
        assert_eq!(first[0].visitor, visitor(1));
        assert!(rx.try_recv().is_err(), "the others were dropped");
        let rendered = handle.render();
        assert!(
            rendered.contains(r#"tributary_s2s_dropped_total{reason="queue_full"} 2"#),
            "{rendered}"
        );
        assert!(
            rendered.contains("tributary_s2s_queued_total 3"),
            "{rendered}"
        );
    }

    #[test]
    fn full_channel_warnings_are_rate_limited() {
        let mut log = FullLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.dropped(1, t0),
            Some(1),
            "the first drop is reported at once"
        );
        assert_eq!(log.dropped(2, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.dropped(1, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            log.dropped(1, t0 + FULL_LOG_EVERY),
            Some(4),
            "then a summary of everything since"
        );
        assert_eq!(log.dropped(1, t0 + FULL_LOG_EVERY), None);
    }

    #[actix_rt::test]
    async fn stop_waits_for_room_rather_than_being_lost() {
        let (outbox, mut rx) = Outbox::channel(1);
        outbox.membership(&catalog(), visitor(1), &[], &[101], 1_700_000_000);
        let mut stopping = Box::pin(outbox.stop());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            stopping.as_mut().poll(&mut cx).is_pending(),
            "the stop waits while the channel is full"
        );
        assert!(matches!(rx.try_recv(), Ok(Command::Queue(_))));
        assert!(stopping.as_mut().poll(&mut cx).is_pending());
        let Ok(Command::Stop(done)) = rx.try_recv() else {
            panic!("the stop is sent once there is room")
        };
        done.send(()).unwrap();
        stopping.await;
    }
}
