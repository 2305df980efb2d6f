//! `[realtime]`: the event's deadline and how it is shared among providers.

use std::time::Duration;

use serde::Deserialize;

use super::{bad, range, ConfigError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// The whole event's budget, from arrival to answer.
    pub deadline_ms: u64,
    /// Kept back from each provider's budget for the answer's trip back.
    pub network_buffer_ms: u64,
    /// Kept back at the end of the deadline for evaluation, persistence and writing the reply.
    pub reply_reserve_ms: u64,
    /// A provider whose budget would be below this is not called (`skipped`).
    pub min_provider_budget_ms: u64,
    /// How long an event waits for a profile that is not in memory before it asks the
    /// providers that do not depend on it (the rest are asked once it is read).
    pub profile_read_wait_ms: u64,
    /// A visitor session idle this long stops and frees its memory.
    pub session_idle_secs: u64,
    /// Most visitor sessions kept in memory; beyond it the least recently active idle ones
    /// stop early (their profiles are saved and reloaded on the next event).
    pub max_sessions: usize,
    /// Largest provider answer body read; larger answers are that provider's error.
    pub provider_body_limit: usize,
    /// Pooled keep-alive connections per provider per worker thread.
    pub provider_pool_size: usize,
    /// Calls to one provider running at once per worker thread (calls outlive their event
    /// until the provider's own timeout); beyond it the provider is `skipped`.
    pub provider_max_in_flight: usize,
    /// Consecutive failed calls that open a provider's circuit (no calls, `circuit_open`);
    /// 0 turns circuit breaking off.
    pub circuit_failures: u32,
    /// Share of failures among the last `circuit_window` calls that opens it.
    pub circuit_failure_rate: f64,
    /// Calls the failure rate is computed over (1–64).
    pub circuit_window: u32,
    /// How long an open circuit refuses calls before one probe call may test the provider.
    pub circuit_cooldown_ms: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            deadline_ms: 100,
            network_buffer_ms: 5,
            reply_reserve_ms: 5,
            min_provider_budget_ms: 10,
            profile_read_wait_ms: 10,
            session_idle_secs: 30,
            max_sessions: 100_000,
            provider_body_limit: 64 * 1024,
            provider_pool_size: 256,
            provider_max_in_flight: 128,
            circuit_failures: 5,
            circuit_failure_rate: 0.5,
            circuit_window: 20,
            circuit_cooldown_ms: 2_000,
        }
    }
}

impl RealtimeConfig {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn network_buffer(&self) -> Duration {
        Duration::from_millis(self.network_buffer_ms)
    }
    pub fn reply_reserve(&self) -> Duration {
        Duration::from_millis(self.reply_reserve_ms)
    }
    pub fn min_provider_budget(&self) -> Duration {
        Duration::from_millis(self.min_provider_budget_ms)
    }
    pub fn profile_read_wait(&self) -> Duration {
        Duration::from_millis(self.profile_read_wait_ms)
    }
    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs)
    }
    pub fn circuit(&self) -> crate::core::circuit::CircuitSettings {
        crate::core::circuit::CircuitSettings {
            failures: self.circuit_failures,
            failure_rate: self.circuit_failure_rate,
            window: self.circuit_window,
            cooldown: Duration::from_millis(self.circuit_cooldown_ms),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        range("realtime.deadline_ms", self.deadline_ms, 1, 10_000)?;
        range(
            "realtime.network_buffer_ms",
            self.network_buffer_ms,
            0,
            1000,
        )?;
        range("realtime.reply_reserve_ms", self.reply_reserve_ms, 0, 1000)?;
        range(
            "realtime.profile_read_wait_ms",
            self.profile_read_wait_ms,
            0,
            10_000,
        )?;
        range(
            "realtime.min_provider_budget_ms",
            self.min_provider_budget_ms,
            1,
            10_000,
        )?;
        // The ranges above keep this sum from overflowing.
        if self.network_buffer_ms + self.reply_reserve_ms >= self.deadline_ms {
            return Err(bad(
                "realtime.deadline_ms",
                "must be larger than network_buffer_ms + reply_reserve_ms",
            ));
        }
        range(
            "realtime.session_idle_secs",
            self.session_idle_secs,
            1,
            86_400,
        )?;
        range(
            "realtime.max_sessions",
            self.max_sessions as u64,
            1,
            100_000_000,
        )?;
        range(
            "realtime.provider_body_limit",
            self.provider_body_limit as u64,
            1024,
            16 << 20,
        )?;
        range(
            "realtime.provider_pool_size",
            self.provider_pool_size as u64,
            1,
            100_000,
        )?;
        range(
            "realtime.circuit_failures",
            u64::from(self.circuit_failures),
            0,
            1_000,
        )?;
        if !(self.circuit_failure_rate > 0.0 && self.circuit_failure_rate <= 1.0) {
            return Err(bad(
                "realtime.circuit_failure_rate",
                format!(
                    "must be above 0 and at most 1 (got {})",
                    self.circuit_failure_rate
                ),
            ));
        }
        range(
            "realtime.circuit_window",
            u64::from(self.circuit_window),
            1,
            64,
        )?;
        range(
            "realtime.circuit_cooldown_ms",
            self.circuit_cooldown_ms,
            1,
            3_600_000,
        )?;
        Ok(())
    }
}
