//! The event path's priority over imports (`docs/customer-data.md`, Inbound files).
//!
//! An import is CPU work on the same cores as the public workers: its sessions, the engine,
//! the store's writers. Waiting on the store's backlog alone does not keep it off the cores
//! (a million-line import at 40% of event capacity doubled the events' median and made them
//! shed, BENCHMARKS.md). So the public workers say when they fall behind while serving
//! events, and an import holds its next line while they did so lately.
//!
//! A worker's lag only counts while it serves events: an import alone makes idle workers'
//! timers late too, and must not throttle itself on that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A worker this late, on average, is behind.
pub const BEHIND_LAG: Duration = Duration::from_millis(2);
/// A worker that admitted an event this recently is serving events.
pub const SERVING_WITHIN: Duration = Duration::from_secs(1);
/// An import waits until the workers have not been behind for this long.
pub const QUIET_FOR: Duration = Duration::from_millis(50);

/// Shared by the public workers (who mark) and the import jobs (who ask).
#[derive(Debug)]
pub struct EventPriority {
    base: Instant,
    /// Nanoseconds after `base` the workers were last behind while serving, plus one; 0 =
    /// never.
    behind_at: AtomicU64,
}

impl Default for EventPriority {
    fn default() -> Self {
        Self::new()
    }
}

impl EventPriority {
    pub fn new() -> Self {
        EventPriority {
            base: Instant::now(),
            behind_at: AtomicU64::new(0),
        }
    }

    /// A worker's tick: `lag` is its averaged lag, `last_event` when it last admitted one.
    pub fn tick(&self, now: Instant, lag: Duration, last_event: Option<Instant>) {
        let serving =
            last_event.is_some_and(|at| now.saturating_duration_since(at) <= SERVING_WITHIN);
        if serving && lag > BEHIND_LAG {
            // Stored plus one, so that 0 keeps meaning "never".
            let at = self.nanos(now).saturating_add(1);
            self.behind_at.fetch_max(at, Ordering::AcqRel);
        }
    }

    /// Whether an import may apply its next line now.
    pub fn import_may_run(&self, now: Instant) -> bool {
        match self.behind_at.load(Ordering::Acquire) {
            0 => true,
            at => self.nanos(now).saturating_sub(at - 1) >= QUIET_FOR.as_nanos() as u64,
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn imports_wait_while_workers_serving_events_run_behind() {
        let p = EventPriority::new();
        let t0 = Instant::now();
        assert!(p.import_may_run(t0), "never behind");
        p.tick(t0, 10 * MS, Some(t0));
        assert!(!p.import_may_run(t0 + MS));
        assert!(!p.import_may_run(t0 + 49 * MS));
        assert!(p.import_may_run(t0 + 50 * MS), "quiet for 50 ms");
        // Behind again later: the latest mark counts, an older one never moves it back.
        p.tick(t0 + 100 * MS, 3 * MS, Some(t0 + 99 * MS));
        p.tick(t0 + 60 * MS, 3 * MS, Some(t0 + 60 * MS));
        assert!(!p.import_may_run(t0 + 120 * MS));
        assert!(p.import_may_run(t0 + 150 * MS));
    }

    #[test]
    fn idle_or_punctual_workers_never_hold_an_import() {
        let p = EventPriority::new();
        let t0 = Instant::now();
        // Late because the import itself takes the cores, but serving no events.
        p.tick(t0 + 5 * MS, 30 * MS, None);
        p.tick(t0 + 1500 * MS, 30 * MS, Some(t0));
        // Serving events, and on time.
        p.tick(t0 + 1600 * MS, BEHIND_LAG, Some(t0 + 1600 * MS));
        assert!(p.import_may_run(t0 + 1601 * MS));
    }
}
