//! What the server tells its operators: Prometheus metrics and log lines.
//!
//! - [`metrics`]: the exporter (one per process) and the table of every metric.
//! - [`logging`]: text or JSON log lines through env_logger, an event's `tid` on each.

pub mod logging;
pub mod metrics;
