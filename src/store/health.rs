//! Whether the store is taking writes: failing from the first write that fails until one
//! succeeds again. `/ready` answers 503 while it fails (so a load balancer sends events to the
//! other nodes), events are shed early (`store.max_pending_writes_failing`), and the change is
//! logged once each way instead of once per failed write. See README, Operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::StoreError;
use crate::core::clock::unix_now;

#[derive(Default)]
pub struct StoreHealth {
    /// Unix seconds of the first failure of the current run of them; 0 while healthy.
    failing_since: AtomicU64,
    last_error: Mutex<String>,
}

/// What `/ready` shows of a failing store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    pub since: u64,
    pub error: String,
}

impl StoreHealth {
    /// A write (or a flush) failed with `error`.
    pub fn failed(&self, what: &str, error: &StoreError) {
        let text = format!("{what}: {error}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = text.clone();
        let now = u64::try_from(unix_now()).unwrap_or(1).max(1);
        if self
            .failing_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::gauge!("tributary_store_failing").set(1.0);
            log::error!(
                "store failing ({text}): /ready answers 503 and events are shed beyond \
                 store.max_pending_writes_failing until a write succeeds; changes stay pending"
            );
        }
    }

    /// A write reached the store.
    pub fn succeeded(&self) {
        let since = self.failing_since.swap(0, Ordering::AcqRel);
        if since != 0 {
            metrics::gauge!("tributary_store_failing").set(0.0);
            let secs = u64::try_from(unix_now())
                .unwrap_or(since)
                .saturating_sub(since);
            log::warn!("store writes succeed again after {secs} s of failures: ready");
        }
    }

    /// `None` while healthy.
    pub fn failing(&self) -> Option<Failing> {
        let since = self.failing_since.load(Ordering::Acquire);
        (since != 0).then(|| Failing {
            since,
            error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }

    pub fn is_failing(&self) -> bool {
        self.failing_since.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_from_the_first_failure_until_a_success() {
        let health = StoreHealth::default();
        assert_eq!(health.failing(), None);
        health.succeeded();
        let full = StoreError::Io("No space left on device (os error 28)".into());
        health.failed("profile writes", &full);
        let first = health.failing().unwrap();
        assert!(first.error.contains("No space left"), "{first:?}");
        health.failed("flush", &StoreError::Io("still full".into()));
        let second = health.failing().unwrap();
        // The run of failures keeps its start; the error shown is the latest.
        assert_eq!(second.since, first.since);
        assert_eq!(second.error, "flush: store I/O failed: still full");
        assert!(health.is_failing());
        health.succeeded();
        assert_eq!(health.failing(), None);
        assert!(!health.is_failing());
    }
}
