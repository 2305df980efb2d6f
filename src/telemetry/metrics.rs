//! Prometheus metrics: the `metrics` facade everywhere, one exporter per process.
//!
//! Labels are bounded: route, provider name, outcome — never a visitor, a segment or a URL.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `tributary_events_total` | counter | `result` (below) |
//! | `tributary_event_duration_seconds` | histogram | |
//! | `tributary_id_total` | counter | `result` (`ok`, `timeout`, `opted_out`, `no_consent`, `coppa`, `status`, `invalid`, `shed`) |
//! | `tributary_provider_calls_total` | counter | `provider`, `outcome` |
//! | `tributary_provider_wait_seconds` | histogram | `provider` |
//! | `tributary_provider_circuit_transitions_total` | counter | `provider`, `to` (`open`, `half_open`, `closed`) |
//! | `tributary_provider_late_answers_total` | counter | `provider` |
//! | `tributary_provider_drained_calls_total` | counter | `provider`, `result` (`finished`, `cut`): timed-out calls let run on for their connection |
//! | `tributary_provider_late_answers_handled_total` | counter | `provider`, `result` (`merged`, `erased`, `unreadable`, `engine_unavailable`, `stopped`) |
//! | `tributary_engine_duration_seconds` | histogram | |
//! | `tributary_events_shed_total` | counter | `reason` (`worker_lag`, `in_flight`, `store_backlog`) |
//! | `tributary_events_in_flight` | gauge | |
//! | `tributary_sessions_active` | gauge | |
//! | `tributary_store_read_seconds` | histogram | (a profile read, or on a shared store a version check, including the wait for a reader thread) |
//! | `tributary_store_reads_spared_total` | counter | (lookups of ids never stored, answered by the stored-id filter) |
//! | `tributary_store_write_seconds` | histogram | (one batch of profile writes) |
//! | `tributary_store_write_batch_size` | histogram | |
//! | `tributary_store_write_errors_total` | counter | |
//! | `tributary_store_pending_writes` | gauge | (the write-behind backlog) |
//! | `tributary_catalog_traits`, `_segments`, `_providers`, `_version` | gauge | |
//! | `tributary_s2s_queued_total` | counter | |
//! | `tributary_s2s_delivered_total` | counter | `destination` |
//! | `tributary_s2s_requests_total` | counter | `destination`, `result` (`ok`, `error`) |
//! | `tributary_s2s_dropped_total` | counter | `reason` (`expired`, `no_destination`, `overflow`, `queue_full`) |
//! | `tributary_s2s_waiting` | gauge | (deliveries in the outbox) |
//! | `tributary_build_info` | gauge (1) | `version` |
//!
//! `result` of `tributary_events_total`: `ok`, `timeout`, `error`, `opted_out`, `no_consent`,
//! `coppa`, `ignored`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder on first call and returns its handle.
///
/// Several servers in one process (tests) share it; if another recorder is already installed
/// the handle still renders, just without our series.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                2.5,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                log::warn!("a metrics recorder was already installed; /metrics may be incomplete");
            }
            metrics::gauge!("tributary_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            handle
        })
        .clone()
}

/// The catalog's size and version as gauges.
pub fn record_catalog(catalog: &crate::core::engine::CompiledCatalog) {
    metrics::gauge!("tributary_catalog_traits").set(catalog.trait_count() as f64);
    metrics::gauge!("tributary_catalog_segments").set(catalog.segment_count() as f64);
    metrics::gauge!("tributary_catalog_providers").set(catalog.providers().len() as f64);
    metrics::gauge!("tributary_catalog_version").set(catalog.version() as f64);
}
