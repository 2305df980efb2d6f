//! A provider's circuit breaker (`docs/provider-protocol.md`, Health): stop calling a provider
//! that keeps failing, try again after a cool-down, resume on success. Pure logic over injected
//! instants, no actix, so every transition is unit-tested without sleeping.
//!
//! ```text
//!            N consecutive failures, or ≥ rate failures in the last W calls
//!   Closed ──────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                     │ cool-down over
//!     │ the probe succeeds                                                  ▼
//!     └──────────────────────────────── HalfOpen (one probe call) ◀─────────┘
//!                                          │ the probe fails: Open again
//! ```
//!
//! While open, calls are not made (outcome `circuit_open`): the event does not wait, no
//! socket or timer is spent on a provider that is down, and the provider gets room to recover.
//! Half-open admits a single probe; other calls meanwhile are still refused.

use std::time::{Duration, Instant};

/// When a circuit opens and how long it stays open (from `[realtime]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit; 0 turns the breaker off (it never opens).
    pub failures: u32,
    /// Share of failures among the last `window` calls that opens it (checked once `window`
    /// calls have been seen).
    pub failure_rate: f64,
    /// Calls the failure rate is computed over (at most 64).
    pub window: u32,
    /// How long an open circuit refuses calls before a probe is allowed.
    pub cooldown: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures: 5,
            failure_rate: 0.5,
            window: 20,
            cooldown: Duration::from_secs(2),
        }
    }
}

/// What to do with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Make it.
    Call,
    /// Make it as the half-open probe; its result decides the circuit.
    Probe,
    /// Do not make it: the circuit is open (or a probe is already out).
    Refuse,
}

/// A state change worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Opened => "open",
            Transition::HalfOpened => "half_open",
            Transition::Closed => "closed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    settings: CircuitSettings,
    state: State,
    consecutive: u32,
    /// The last calls' results, newest in bit 0: 1 = failure.
    recent: u64,
    /// How many of `recent`'s bits hold a result (up to `window`).
    seen: u32,
}

impl CircuitBreaker {
    pub fn new(settings: CircuitSettings) -> Self {
        CircuitBreaker {
            settings: CircuitSettings {
                window: settings.window.clamp(1, 64),
                ..settings
            },
            state: State::Closed,
            consecutive: 0,
            recent: 0,
            seen: 0,
        }
    }

    /// Decides about a call at `now`; may half-open an open circuit whose cool-down is over.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.state {
            State::Closed => (Admission::Call, None),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: true };
                (Admission::Probe, Some(Transition::HalfOpened))
            }
            State::Open { .. } | State::HalfOpen { probing: true } => (Admission::Refuse, None),
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                (Admission::Probe, None)
            }
        }
    }

    /// Records the result of a call admitted as `admission`.
    pub fn record(&mut self, admission: Admission, ok: bool, now: Instant) -> Option<Transition> {
        match (admission, self.state) {
            (Admission::Probe, State::HalfOpen { .. }) => {
                if ok {
                    self.reset();
                    self.state = State::Closed;
                    Some(Transition::Closed)
                } else {
                    self.open(now)
                }
            }
            // A call admitted while closed that ends after the circuit changed (it ran on
            // past its event) still counts towards the window, but cannot reopen or close.
            (Admission::Call, State::Closed) => {
                self.push(ok);
                if self.tripped() {
                    self.open(now)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    fn push(&mut self, ok: bool) {
        self.consecutive = if ok { 0 } else { self.consecutive + 1 };
        self.recent = (self.recent << 1) | u64::from(!ok);
        self.seen = (self.seen + 1).min(self.settings.window);
    }

    fn tripped(&self) -> bool {
        if self.settings.failures == 0 {
            return false;
        }
        if self.consecutive >= self.settings.failures {
            return true;
        }
        let window = self.settings.window;
        if self.seen < window {
            return false;
        }
        let mask = if window == 64 {
            u64::MAX
        } else {
            (1u64 << window) - 1
        };
        let failed = (self.recent & mask).count_ones();
        f64::from(failed) >= self.settings.failure_rate * f64::from(window)
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        self.reset();
        self.state = State::Open {
            until: now + self.settings.cooldown,
        };
        Some(Transition::Opened)
    }

    fn reset(&mut self) {
        self.consecutive = 0;
        self.recent = 0;
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, rate: f64, window: u32) -> CircuitBreaker {
        CircuitBreaker::new(CircuitSettings {
            failures,
            failure_rate: rate,
            window,
            cooldown: Duration::from_secs(2),
        })
    }

    /// Runs calls with the given results (1 = ok, 0 = failure) while closed.
    fn calls(b: &mut CircuitBreaker, results: &str, now: Instant) -> Vec<Option<Transition>> {
        results
            .chars()
            .map(|r| {
                let (admission, _) = b.admit(now);
                assert_eq!(admission, Admission::Call);
                b.record(admission, r == '1', now)
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_open_and_a_success_resets_the_count() {
        let now = Instant::now();
        let mut b = breaker(3, 1.0, 64);
        assert!(calls(&mut b, "0010011", now).iter().all(Option::is_none));
        assert!(!b.is_open());
        let t = calls(&mut b, "000", now);
        assert_eq!(t, [None, None, Some(Transition::Opened)]);
        assert!(b.is_open());
        assert_eq!(b.admit(now).0, Admission::Refuse);
    }

    #[test]
    fn a_failure_rate_over_the_window_opens() {
        let now = Instant::now();
        let mut b = breaker(100, 0.5, 10);
        assert!(calls(&mut b, "0111111111", now).iter().all(Option::is_none));
        // The first failure slides out of the window: 4 of the last 10.
        assert!(calls(&mut b, "0000", now).iter().all(Option::is_none));
        // 5 of the last 10.
        assert_eq!(calls(&mut b, "0", now), [Some(Transition::Opened)]);
    }

    #[test]
    fn the_rate_waits_for_a_full_window() {
        let now = Instant::now();
        let mut b = breaker(100, 0.5, 10);
        assert!(calls(&mut b, "00", now).iter().all(Option::is_none));
        assert!(!b.is_open(), "2 of 2 failed, but 2 calls are not a window");
    }

    #[test]
    fn cool_down_then_one_probe_decides() {
        let t0 = Instant::now();
        let mut b = breaker(1, 1.0, 1);
        calls(&mut b, "0", t0);
        assert_eq!(
            b.admit(t0 + Duration::from_millis(1999)).0,
            Admission::Refuse
        );
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            b.admit(later),
            (Admission::Probe, Some(Transition::HalfOpened))
        );
        assert_eq!(b.admit(later).0, Admission::Refuse, "one probe at a time");
        // The probe fails: open again for another cool-down.
        assert_eq!(
            b.record(Admission::Probe, false, later),
            Some(Transition::Opened)
        );
        assert_eq!(b.admit(later + Duration::from_secs(1)).0, Admission::Refuse);
        let again = later + Duration::from_secs(2);
        assert_eq!(b.admit(again).0, Admission::Probe);
        assert_eq!(
            b.record(Admission::Probe, true, again),
            Some(Transition::Closed)
        );
        assert!(!b.is_open());
        assert_eq!(b.admit(again).0, Admission::Call);
    }

    #[test]
    fn late_results_of_calls_from_before_cannot_flip_the_circuit() {
        let now = Instant::now();
        let mut b = breaker(1, 1.0, 1);
        calls(&mut b, "0", now);
        assert!(b.is_open());
        // A call admitted while closed finishes now: it neither closes nor reopens.
        assert_eq!(b.record(Admission::Call, true, now), None);
        assert!(b.is_open());
    }

    #[test]
    fn window_bounds_are_clamped() {
        let now = Instant::now();
        let mut b = breaker(1, 0.5, 1000);
        assert_eq!(b.settings.window, 64);
        assert_eq!(calls(&mut b, "0", now), [Some(Transition::Opened)]);
    }

    #[test]
    fn zero_failures_turns_the_breaker_off() {
        let now = Instant::now();
        let mut b = breaker(0, 0.5, 4);
        assert!(calls(&mut b, &"0".repeat(100), now)
            .iter()
            .all(Option::is_none));
        assert!(!b.is_open());
    }
}
