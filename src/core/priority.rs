//! The event path's priority over imports (`docs/customer-data.md`, Inbound files).
//!
//! An import is CPU work on the same cores as the public workers: its sessions, the engine,
//! the store's writers. Waiting on the store's backlog alone does not keep it off the cores
//! (a million-line import at 40% of event capacity doubled the events' median and made them
//! shed, BENCHMARKS.md). So the public workers say when they fall behind while serving
//! events, and an import holds its next line while they did so lately.
//!
//! Holding is not enough: an import let go at full speed after each hold takes the cores again
//! at once (and its writes reach the store a write delay later), so it also paces itself
//! ([`ImportPacer`]): each time the workers fall behind it halves its rate, and it speeds up
//! again by a quarter every quiet 100 ms — the way TCP shares a link.
//!
//! A worker's lag only counts while it serves events: an import alone makes idle workers'
//! timers late too, and must not throttle itself on that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A worker this late, on average, is behind.
pub const BEHIND_LAG: Duration = Duration::from_millis(5);
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

/// The slowest an import is paced to: it always moves on.
pub const MIN_RATE: f64 = 1000.0;
/// Unpaced (no event load seen yet, or recovered from it).
pub const MAX_RATE: f64 = 1e7;
/// How often the rate may change.
const ADJUST_EVERY: Duration = Duration::from_millis(100);

/// One import's pace, in lines per second.
#[derive(Debug)]
pub struct ImportPacer {
    rate: f64,
    /// Lines per second in the last window that started any.
    measured: f64,
    /// When the rate last changed, and lines started since.
    window: (Instant, u64),
    /// When the next line may start.
    next_at: Instant,
}

impl ImportPacer {
    pub fn new(now: Instant) -> Self {
        ImportPacer {
            rate: MAX_RATE,
            measured: MAX_RATE,
            window: (now, 0),
            next_at: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long to wait before starting the next line; `behind`: the event path was behind
    /// lately. Call again after waiting (the state may have changed meanwhile).
    pub fn wait(&mut self, now: Instant, behind: bool) -> Duration {
        let (since, started) = self.window;
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= ADJUST_EVERY {
            if started > 0 {
                self.measured = started as f64 / elapsed.as_secs_f64();
            }
            if behind {
                // Halve what the import really did, not a limit it was nowhere near (a window
                // spent holding did nothing: the last one that did counts).
                self.rate = (self.rate.min(self.measured) / 2.0).max(MIN_RATE);
                self.measured = self.rate;
            } else {
                self.rate = (self.rate * 1.25).min(MAX_RATE);
            }
            self.window = (now, 0);
        }
        if self.next_at > now {
            return self.next_at - now;
        }
        Duration::ZERO
    }

    /// A line starts now.
    pub fn started(&mut self, now: Instant) {
        self.window.1 += 1;
        let gap = Duration::from_secs_f64(1.0 / self.rate);
        // A pacer that fell behind its own schedule does not burst to catch up.
        self.next_at = self.next_at.max(now) + gap;
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
        p.tick(t0 + 100 * MS, 6 * MS, Some(t0 + 99 * MS));
        p.tick(t0 + 60 * MS, 6 * MS, Some(t0 + 60 * MS));
        assert!(!p.import_may_run(t0 + 120 * MS));
        assert!(p.import_may_run(t0 + 150 * MS));
    }

    /// Lines started at `rate`-limited pace for `for_ms`, the workers behind or not.
    fn run(p: &mut ImportPacer, t: &mut Instant, for_ms: u64, behind: bool) -> u64 {
        let end = *t + Duration::from_millis(for_ms);
        let mut lines = 0;
        while *t < end {
            let wait = p.wait(*t, behind);
            if wait.is_zero() {
                p.started(*t);
                lines += 1;
                *t += Duration::from_micros(20); // a line's own cost
            } else {
                *t += wait;
            }
        }
        lines
    }

    #[test]
    fn the_pace_halves_while_behind_and_recovers_when_quiet() {
        let mut t = Instant::now();
        let mut p = ImportPacer::new(t);
        let free = run(&mut p, &mut t, 200, false);
        assert!(free > 9_000, "unpaced: {free} lines in 200 ms");
        run(&mut p, &mut t, 1_000, true);
        assert_eq!(p.rate(), MIN_RATE, "halved down to the floor");
        let slow = run(&mut p, &mut t, 100, true);
        assert!(slow <= 101, "{slow} lines in 100 ms at {}/s", p.rate());
        run(&mut p, &mut t, 6_000, false);
        assert_eq!(p.rate(), MAX_RATE, "sixty quiet windows");
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
