//! Load shedding: when the server cannot keep up, `/event` and `/ibs` answer `429` at once
//! (AAM's answer to excess traffic; `docs/dcs-api.md`, Load shedding) instead of letting every
//! answer wait.
//!
//! Three signals, each checked before any work is done for an event:
//! - **worker lag**: each worker thread measures how late a 5 ms timer fires. A late timer means
//!   requests are queueing on that thread faster than it handles them — the one signal that
//!   sees a CPU-bound overload, because the requests waiting on a busy thread have not reached
//!   any handler yet;
//! - **events in flight** across the server (waiting on providers, sessions or the engine);
//! - **store backlog**: profile writes waiting for the disk.
//!
//! The same lag, while a worker serves events, tells imports to hold back
//! ([`crate::core::priority`]).
//!
//! Shed answers are cheap (no session, no provider, no store), so shedding frees the capacity
//! that lets the admitted events meet their deadline, and it stops as soon as load drops.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::priority::EventPriority;

/// How often each worker measures its own lag.
const TICK: Duration = Duration::from_millis(5);

thread_local! {
    /// How late this worker's ticks fire (a running average).
    static LAG: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static MONITORING: Cell<bool> = const { Cell::new(false) };
    /// When this worker last admitted an event.
    static LAST_EVENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Why an event was shed (the `reason` label of `tributary_events_shed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    WorkerLag,
    InFlight,
    StoreBacklog,
    /// The store fails writes and more than `store.max_pending_writes_failing` wait.
    StoreFailing,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::WorkerLag => "worker_lag",
            Shed::InFlight => "in_flight",
            Shed::StoreBacklog => "store_backlog",
            Shed::StoreFailing => "store_failing",
        }
    }
}

/// The server-wide admission control.
pub struct Shedder {
    max_lag: Option<Duration>,
    max_in_flight: usize,
    max_store_backlog: usize,
    max_failing_backlog: usize,
    in_flight: Arc<AtomicUsize>,
    priority: Arc<EventPriority>,
}

/// Counts an admitted event as in flight until dropped.
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shedder {
    /// `max_lag` of zero turns the lag signal off.
    pub fn new(
        max_lag: Duration,
        max_in_flight: usize,
        max_store_backlog: usize,
        max_failing_backlog: usize,
        priority: Arc<EventPriority>,
    ) -> Self {
        Shedder {
            max_lag: (!max_lag.is_zero()).then_some(max_lag),
            max_in_flight,
            max_store_backlog,
            max_failing_backlog,
            in_flight: Arc::new(AtomicUsize::new(0)),
            priority,
        }
    }

    /// Admits an event or says why not. Must be called on an actix worker thread (it starts
    /// that thread's lag monitor on first use).
    pub fn admit(&self, store_backlog: usize, store_failing: bool) -> Result<Admitted, Shed> {
        ensure_monitor(&self.priority);
        LAST_EVENT.with(|at| at.set(Some(Instant::now())));
        if let Some(max) = self.max_lag {
            if LAG.with(Cell::get) > max {
                return Err(Shed::WorkerLag);
            }
        }
        if store_backlog > self.max_store_backlog {
            return Err(Shed::StoreBacklog);
        }
        if store_failing && store_backlog > self.max_failing_backlog {
            return Err(Shed::StoreFailing);
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.in_flight.clone());
        if before >= self.max_in_flight {
            return Err(Shed::InFlight);
        }
        Ok(admitted)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Starts the lag monitor of the current thread if it is not running.
fn ensure_monitor(priority: &Arc<EventPriority>) {
    if MONITORING.with(|m| m.replace(true)) {
        return;
    }
    let priority = priority.clone();
    actix_rt::spawn(async move {
        loop {
            let due = Instant::now() + TICK;
            actix_rt::time::sleep_until(due.into()).await;
            let late = Instant::now().saturating_duration_since(due);
            // Averaged with the previous estimate: one late tick (the OS preempting this
            // thread for a moment) halves its weight, a sustained backlog keeps it.
            let lag = LAG.with(|lag| {
                lag.set((lag.get() + late) / 2);
                lag.get()
            });
            priority.tick(Instant::now(), lag, LAST_EVENT.with(Cell::get));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn in_flight_and_backlog_limits() {
        let shedder = Shedder::new(Duration::ZERO, 2, 100, 10, Default::default());
        let a = shedder.admit(0, false).unwrap();
        let _b = shedder.admit(0, false).unwrap();
        assert_eq!(shedder.admit(0, false).err(), Some(Shed::InFlight));
        drop(a);
        assert!(shedder.admit(0, false).is_ok());
        assert_eq!(
            shedder.in_flight(),
            1,
            "refused and dropped admissions do not stay counted"
        );
        assert_eq!(shedder.admit(101, false).err(), Some(Shed::StoreBacklog));
        // A failing store sheds at the smaller bound.
        assert!(shedder.admit(11, false).is_ok());
        assert!(shedder.admit(10, true).is_ok());
        assert_eq!(shedder.admit(11, true).err(), Some(Shed::StoreFailing));
    }

    #[actix_rt::test]
    async fn a_blocked_worker_sheds_until_it_catches_up() {
        let shedder = Shedder::new(
            Duration::from_millis(20),
            1000,
            1000,
            1000,
            Default::default(),
        );
        assert!(
            shedder.admit(0, false).is_ok(),
            "the monitor starts on first use"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        // Hog the thread: the monitor's next tick fires about 200 ms late (averaged: 100 ms,
        // halving with every on-time tick after). Waiting one tick period lets the monitor
        // record it before the check.
        std::thread::sleep(Duration::from_millis(200));
        actix_rt::time::sleep(Duration::from_millis(6)).await;
        assert_eq!(shedder.admit(0, false).err(), Some(Shed::WorkerLag));
        // Once the thread is responsive again, on-time ticks bring the average down.
        actix_rt::time::sleep(Duration::from_millis(40)).await;
        assert!(shedder.admit(0, false).is_ok());
    }
}
