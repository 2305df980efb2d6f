//! What operators and load balancers ask: `GET /health` (the process answers), `GET /ready`
//! (not stopping, store writes succeeding) and `GET /metrics` (Prometheus text).

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut unavailable = HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE);
    if !state.ready.load(Ordering::SeqCst) {
        return unavailable.json(serde_json::json!({"status": "stopping"}));
    }
    let profiles = &state.deps.profiles;
    if let Some(failing) = profiles.store_failing() {
        // Balancers stop sending; the operator sees why and since when (README, Operations).
        return unavailable.json(serde_json::json!({
            "status": "store_failing",
            "since": failing.since,
            "error": failing.error,
            "pendingWrites": profiles.queue_depth(),
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "catalogVersion": state.deps.catalog.current().version(),
    }))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render_metrics(&state))
}

/// The Prometheus text, for `/metrics` here and `/v1/metrics` on the admin listener.
pub fn render_metrics(state: &AppState) -> String {
    // Levels are read at scrape time rather than kept up to date on the event path.
    metrics::gauge!("tributary_store_pending_writes").set(state.deps.profiles.queue_depth() as f64);
    metrics::gauge!("tributary_events_in_flight").set(state.shedder.in_flight() as f64);
    crate::telemetry::metrics::record_catalog(&state.deps.catalog.current());
    state.metrics.render()
}
