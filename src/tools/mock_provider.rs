//! A sample data provider speaking the provider protocol (`docs/provider-protocol.md`): used by
//! the demo, by `tributary mock-provider`, and as the stand-in for real providers in
//! benchmarks.
//!
//! Which segments a visitor gets is a deterministic function of its `user.ext.uuid`, so
//! repeated visits of one visitor see the same answer, as with a real provider.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use rand::RngExt as _;
use serde::Deserialize;

/// How a mock provider answers.
#[derive(Clone, Debug)]
pub struct MockBehavior {
    /// Provider name, echoed in `user.data[].id`.
    pub name: String,
    /// Each segment with the share of visitors (0.0–1.0) that have it.
    pub segments: Vec<(String, f64)>,
    /// Latency drawn uniformly from this range, in milliseconds.
    pub latency_ms: (u64, u64),
    /// Share of calls answered only after `slow_ms`.
    pub slow_share: f64,
    pub slow_ms: u64,
    /// Share of calls answered `500`.
    pub error_share: f64,
    /// `ttl` put in answers (seconds), if any.
    pub ttl_secs: Option<u64>,
}

impl Default for MockBehavior {
    fn default() -> Self {
        MockBehavior {
            name: "mock".into(),
            segments: Vec::new(),
            latency_ms: (0, 0),
            slow_share: 0.0,
            slow_ms: 0,
            error_share: 0.0,
            ttl_secs: None,
        }
    }
}

/// A running mock provider.
pub struct MockProvider {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl MockProvider {
    /// The URL to configure as the provider's `url`.
    pub fn url(&self) -> String {
        format!("http://{}/segments", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

#[derive(Deserialize)]
struct Request {
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    ext: Option<UserExt>,
}

#[derive(Deserialize)]
struct UserExt {
    uuid: Option<String>,
}

/// Starts a mock provider on `bind` (port 0 picks a free one), in the current actix System.
pub async fn start(
    bind: SocketAddr,
    behavior: MockBehavior,
    workers: usize,
) -> io::Result<MockProvider> {
    let behavior = Arc::new(behavior);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(behavior.clone()))
            .app_data(web::JsonConfig::default().limit(64 * 1024))
            .default_service(web::to(answer))
    })
    .workers(workers.max(1))
    .disable_signals()
    .bind(bind)?;
    let addr = server.addrs().first().copied().unwrap_or(bind);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(MockProvider { addr, handle })
}

async fn answer(body: web::Bytes, behavior: web::Data<MockBehavior>) -> HttpResponse {
    let (delay, fail) = {
        let mut rng = rand::rng();
        let (lo, hi) = behavior.latency_ms;
        let mut delay = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        if behavior.slow_share > 0.0 && rng.random::<f64>() < behavior.slow_share {
            delay = behavior.slow_ms;
        }
        (
            delay,
            behavior.error_share > 0.0 && rng.random::<f64>() < behavior.error_share,
        )
    };
    if delay > 0 {
        actix_rt::time::sleep(Duration::from_millis(delay)).await;
    }
    if fail {
        return HttpResponse::InternalServerError().finish();
    }
    let uuid = serde_json::from_slice::<Request>(&body)
        .ok()
        .and_then(|r| r.user)
        .and_then(|u| u.ext)
        .and_then(|e| e.uuid)
        .unwrap_or_default();
    let segments: Vec<serde_json::Value> = behavior
        .segments
        .iter()
        .filter(|(id, share)| visitor_share(&uuid, id) < *share)
        .map(|(id, _)| serde_json::json!({"id": id}))
        .collect();
    if segments.is_empty() {
        return HttpResponse::NoContent().finish();
    }
    let mut answer = serde_json::json!({
        "user": {"data": [{"id": behavior.name, "name": behavior.name, "segment": segments}]}
    });
    if let Some(ttl) = behavior.ttl_secs {
        answer["ttl"] = ttl.into();
    }
    HttpResponse::Ok().json(answer)
}

/// A stable pseudo-random number in [0, 1) for (visitor, segment).
fn visitor_share(uuid: &str, segment: &str) -> f64 {
    let mut h = DefaultHasher::new();
    uuid.hash(&mut h);
    segment.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_stable_and_spread() {
        assert_eq!(visitor_share("a", "s"), visitor_share("a", "s"));
        let hits = (0..10_000)
            .filter(|i| visitor_share(&i.to_string(), "s") < 0.3)
            .count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }
}
