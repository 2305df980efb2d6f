//! `[s2s]`: delivery to server-to-server destinations (the outbox).

use serde::Deserialize;

use super::{range, ConfigError};

/// Delivery to server-to-server destinations (the outbox).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// How long a destination has to answer a delivery (AAM allows 3 s).
    pub timeout_ms: u64,
    /// Wait after a destination's first failure; doubled after each further one.
    pub retry_initial_ms: u64,
    /// Longest wait between attempts.
    pub retry_max_ms: u64,
    /// Deliveries a destination has not accepted for this long are dropped (and counted).
    pub max_age_hours: u64,
    /// Most deliveries waiting per destination (memory); beyond, the oldest are dropped.
    pub max_waiting: usize,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            timeout_ms: 3000,
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            max_age_hours: 168,
            max_waiting: 1_000_000,
        }
    }
}

impl S2sConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        range("s2s.timeout_ms", self.timeout_ms, 1, 60_000)?;
        range("s2s.retry_initial_ms", self.retry_initial_ms, 1, 3_600_000)?;
        range(
            "s2s.retry_max_ms",
            self.retry_max_ms,
            self.retry_initial_ms,
            86_400_000,
        )?;
        range("s2s.max_age_hours", self.max_age_hours, 1, 24 * 365)?;
        range("s2s.max_waiting", self.max_waiting as u64, 1, 100_000_000)?;
        Ok(())
    }
}
