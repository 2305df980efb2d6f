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

mod task;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

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
        let task = actix_rt::spawn(task::run(store, catalog, settings, rx));
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
