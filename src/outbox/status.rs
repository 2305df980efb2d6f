//! What the delivery task tells the admin API about each S2S destination
//! (`GET /v1/destinations/{id}/outbox`, shown by the console): deliveries waiting, the run of
//! failed requests and the last errors. In memory only; a restart starts it afresh (the
//! deliveries themselves are in the store).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Errors kept per destination.
const KEPT_ERRORS: usize = 10;

/// One failed request.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryError {
    /// Unix seconds.
    pub at: i64,
    pub message: String,
}

/// One destination's deliveries as the task sees them.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    pub waiting: usize,
    /// Failed requests since the last accepted one.
    pub failures_in_a_row: u32,
    /// Unix seconds of the last accepted request.
    pub last_delivered_at: Option<i64>,
    /// The last errors, newest first.
    pub last_errors: VecDeque<DeliveryError>,
}

/// Shared by the delivery task (which writes) and the admin API (which reads).
#[derive(Clone, Debug, Default)]
pub struct OutboxStatus(Arc<Mutex<BTreeMap<u64, DestinationStatus>>>);

impl OutboxStatus {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, DestinationStatus>) -> T) -> T {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// The destination's status; a destination never heard of has nothing waiting.
    pub fn get(&self, destination: u64) -> DestinationStatus {
        self.with(|m| m.get(&destination).cloned().unwrap_or_default())
    }

    pub(super) fn delivered(&self, destination: u64, at: i64) {
        self.with(|m| {
            let s = m.entry(destination).or_default();
            s.failures_in_a_row = 0;
            s.last_delivered_at = Some(at);
        });
    }

    pub(super) fn failed(&self, destination: u64, at: i64, message: &str) {
        self.with(|m| {
            let s = m.entry(destination).or_default();
            s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
            s.last_errors.push_front(DeliveryError {
                at,
                message: crate::core::error::truncate(message, 512).to_string(),
            });
            s.last_errors.truncate(KEPT_ERRORS);
        });
    }

    pub(super) fn waiting(&self, counts: impl Iterator<Item = (u64, usize)>) {
        self.with(|m| {
            for s in m.values_mut() {
                s.waiting = 0;
            }
            for (destination, n) in counts {
                m.entry(destination).or_default().waiting = n;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_run_until_a_delivery_and_errors_are_kept_newest_first() {
        let status = OutboxStatus::default();
        assert_eq!(status.get(7).waiting, 0);
        for i in 0..12 {
            status.failed(7, i, &format!("HTTP 50{}", i % 10));
        }
        status.waiting([(7, 3)].into_iter());
        let s = status.get(7);
        assert_eq!((s.failures_in_a_row, s.waiting), (12, 3));
        assert_eq!(s.last_errors.len(), KEPT_ERRORS);
        assert_eq!(s.last_errors[0].at, 11);
        status.delivered(7, 20);
        status.waiting(std::iter::empty());
        let s = status.get(7);
        assert_eq!((s.failures_in_a_row, s.waiting), (0, 0));
        assert_eq!(s.last_delivered_at, Some(20));
        assert_eq!(s.last_errors.len(), KEPT_ERRORS, "errors stay to be read");
    }
}
