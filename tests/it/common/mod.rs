//! Shared test harness: real Tributary servers and real provider servers on 127.0.0.1:0,
//! real sled stores in temporary directories.

pub mod browser;
pub mod console;
pub mod demo;
pub mod faults;
pub mod process;
mod redis_cluster;
pub use redis_cluster::{unique_prefix, RedisCluster};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use tempfile::TempDir;
use tributary::config::Config;
use tributary::core::catalog::Catalog;
use tributary::server::{self, Running, StartOptions};

/// How a test provider answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// `200` with these segment ids (and an optional `ttl`).
    Segments(Vec<&'static str>, Option<u64>),
    /// Never answers.
    Hang,
    /// Answers with this status and an empty body.
    Status(u16),
    /// `200` with this raw body.
    Body(&'static str),
    /// Waits, then behaves as the inner behavior.
    Delay(u64, Box<Behavior>),
    /// `500` while the flag is set, else the inner behavior (a provider that goes down and
    /// comes back).
    FailWhile(Arc<std::sync::atomic::AtomicBool>, Box<Behavior>),
}

/// A provider server on loopback that records what it receives.
pub struct TestProvider {
    pub url: String,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    headers: Arc<Mutex<Vec<actix_web::http::header::HeaderMap>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    handle: ServerHandle,
}

struct ProviderState {
    behavior: Behavior,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    headers: Arc<Mutex<Vec<actix_web::http::header::HeaderMap>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TestProvider {
    pub async fn start(behavior: Behavior) -> TestProvider {
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(ProviderState {
            behavior,
            hits: hits.clone(),
            bodies: bodies.clone(),
            headers: headers.clone(),
            raw: raw.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind provider");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        TestProvider {
            url: format!("http://{addr}/segments"),
            hits,
            bodies,
            headers,
            raw,
            handle,
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// JSON bodies received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<actix_web::http::header::HeaderMap> {
        self.headers.lock().unwrap().clone()
    }

    /// Request bodies received so far, byte for byte.
    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.raw.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

async fn answer(
    req: actix_web::HttpRequest,
    body: web::Bytes,
    state: web::Data<ProviderState>,
) -> HttpResponse {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.headers.lock().unwrap().push(req.headers().clone());
    state.raw.lock().unwrap().push(body.to_vec());
    if let Ok(json) = serde_json::from_slice(&body) {
        state.bodies.lock().unwrap().push(json);
    }
    respond(&state.behavior).await
}

fn respond(
    behavior: &Behavior,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = HttpResponse> + '_>> {
    Box::pin(async move {
        match behavior {
            Behavior::Segments(ids, ttl) => {
                let segs: Vec<_> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
                let mut body =
                    serde_json::json!({"user": {"data": [{"id": "p", "segment": segs}]}});
                if let Some(ttl) = ttl {
                    body["ttl"] = (*ttl).into();
                }
                HttpResponse::Ok().json(body)
            }
            // The sleeps below are the provider's slowness the tests put the server through,
            // not waits for a condition.
            Behavior::Hang => {
                actix_rt::time::sleep(Duration::from_secs(3600)).await;
                HttpResponse::Ok().finish()
            }
            Behavior::Status(code) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(*code).unwrap()).finish()
            }
            Behavior::Body(text) => HttpResponse::Ok()
                .content_type("application/json")
                .body(*text),
            Behavior::Delay(ms, inner) => {
                actix_rt::time::sleep(Duration::from_millis(*ms)).await;
                respond(inner).await
            }
            Behavior::FailWhile(failing, inner) => {
                if failing.load(Ordering::SeqCst) {
                    HttpResponse::InternalServerError().finish()
                } else {
                    respond(inner).await
                }
            }
        }
    })
}

/// A provider entry for a catalog.
pub fn provider(
    pid: u32,
    name: &str,
    url: &str,
    data_source_id: u32,
    timeout_ms: u32,
) -> serde_json::Value {
    serde_json::json!({"pid": pid, "name": name, "url": url, "dataSourceId": data_source_id, "timeoutMs": timeout_ms})
}

/// A catalog from JSON fragments.
pub fn catalog(
    providers: Vec<serde_json::Value>,
    traits: serde_json::Value,
    segments: serde_json::Value,
) -> Catalog {
    serde_json::from_value(
        serde_json::json!({"providers": providers, "traits": traits, "segments": segments}),
    )
    .expect("valid test catalog")
}

/// A provider named `name` that answers segment "auto-intender" after 300 ms (past a test
/// server's 200 ms deadline, within its own 1 s timeout), with the catalog of it: onboarded
/// trait 21 and segment 101 (`21T`). Metrics are the process's, so each test names its own.
pub async fn late_provider(name: &str) -> (TestProvider, Catalog) {
    let slow = TestProvider::start(Behavior::Delay(
        300,
        Box::new(Behavior::Segments(vec!["auto-intender"], Some(3600))),
    ))
    .await;
    let cat = catalog(
        vec![provider(1, name, &slow.url, 1001, 1000)],
        serde_json::json!([{"sid": 21, "name": "auto intender", "traitType": "ON_BOARDED_TRAIT",
            "traitRule": "segment == \"auto-intender\"", "dataSourceId": 1001}]),
        serde_json::json!([{"sid": 101, "name": "auto", "segmentRule": "21T", "dataSourceId": 1}]),
    );
    (slow, cat)
}

/// A configuration for a test server: free port, store in `dir`, seed `catalog`.
pub fn test_config(dir: &std::path::Path, catalog: &Catalog) -> Config {
    let seed = dir.join("catalog.json");
    std::fs::write(&seed, serde_json::to_vec(catalog).unwrap()).unwrap();
    let mut config = Config::from_toml("", Some(Default::default())).unwrap();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.admin.bind = "127.0.0.1:0".parse().unwrap();
    config.admin.token = ADMIN_TOKEN.into();
    config.server.workers = 2;
    config.store.path = dir.join("store");
    config.store.cache_capacity = 8 << 20;
    config.catalog.seed = Some(seed);
    config.store.threads = 2;
    config.realtime.deadline_ms = 200;
    config.realtime.min_provider_budget_ms = 5;
    // A loaded CI machine can delay a thread by several milliseconds; keep enough of the
    // deadline for the session to answer before the handler gives up on it.
    config.realtime.reply_reserve_ms = 25;
    // Worker-lag shedding answers 429 when a worker's timer fires late, which on a loaded test
    // machine says more about the machine than about the test; it has unit tests of its own
    // (src/routes/admission.rs). The in-flight and store-backlog limits stay on.
    config.server.shed_lag_ms = 0;
    config.validate().unwrap();
    config
}

/// A running server with its temporary directory.
pub struct TestServer {
    pub running: Running,
    pub base: String,
    /// Keeps the store directory until the server is dropped.
    _dir: Arc<TempDir>,
}

impl TestServer {
    pub async fn start(catalog: &Catalog) -> TestServer {
        Self::start_with(catalog, |_| {}).await
    }

    pub async fn start_with(catalog: &Catalog, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(dir.path(), catalog);
        tweak(&mut config);
        config.validate().unwrap();
        Self::start_config(config, dir).await
    }

    pub async fn start_config(config: Config, dir: Arc<TempDir>) -> TestServer {
        // Restarting on the same store: sled's background thread of the stopped server can
        // hold the file lock for a moment, so a store that cannot be opened is tried again.
        let config = &config;
        let running = wait_for(
            "the store to open",
            Duration::from_secs(10),
            || async move {
                let started = server::start(
                    config.clone(),
                    StartOptions {
                        handle_signals: false,
                    },
                )
                .await;
                match started {
                    Err(tributary::server::StartError::Store(e)) => Err(e.to_string()),
                    other => Ok(other.expect("server starts")),
                }
            },
        )
        .await;
        let base = format!("http://{}", running.addr());
        TestServer {
            running,
            base,
            _dir: dir,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// The visitor's profile as stored (call `running.sync_store()` first for pending writes).
    pub fn stored_profile(
        &self,
        visitor: tributary::core::ids::VisitorId,
    ) -> tributary::core::profile::Profile {
        self.running
            .store()
            .load_profile(visitor)
            .expect("store readable")
            .expect("profile stored")
    }

    /// Once every queued write is in the store: none of `visitors` has a profile there, and
    /// none of the ID-sync mappings `links` (data source, id) is left.
    pub async fn assert_forgotten(
        &self,
        visitors: &[tributary::core::ids::VisitorId],
        links: &[(u32, &str)],
    ) {
        self.running.sync_store().await.unwrap();
        let store = self.running.store();
        for &visitor in visitors {
            assert!(
                store.load_profile(visitor).unwrap().is_none(),
                "profile of {visitor} still stored"
            );
        }
        for &(dpid, id) in links {
            assert!(
                store.get_link(dpid, id).unwrap().is_none(),
                "mapping ({dpid}, {id:?}) still stored"
            );
        }
    }

    pub async fn stop(self) {
        self.running.stop().await.expect("clean stop");
    }
}

/// The store of a stopped test server in `dir`, opened directly. The stopped server's sled
/// thread may hold the lock for a moment, so opening is retried.
pub async fn open_stopped_store(dir: &std::path::Path) -> tributary::store::SledStore {
    let path = dir.join("store");
    wait_until(
        "the stopped server's store to open",
        Duration::from_secs(10),
        || tributary::store::SledStore::open(&path, 8 << 20, 100).map_err(|e| e.to_string()),
    )
    .await
}

/// What a [`wait_for`] condition returns: `bool`, `Option<T>` (the value once there) or
/// `Result<T, String>` (the error says what was last seen, for the timeout's message).
pub trait Outcome {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self
    }
}

/// How often [`wait_for`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls the async `condition` until it holds and returns what it yielded; panics naming
/// `what` (and what the condition last reported) once `timeout` has passed. Tests wait for
/// what they mean instead of sleeping for a time that is too short on a loaded machine and
/// too long everywhere else.
pub async fn wait_for<F, Fut, O>(what: &str, timeout: Duration, mut condition: F) -> O::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
    O: Outcome,
{
    let started = std::time::Instant::now();
    loop {
        let last = match condition().await.into_result() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            let seen = if last.is_empty() {
                String::new()
            } else {
                format!("; last seen: {last}")
            };
            panic!("timed out after {elapsed:?} waiting for {what}{seen}");
        }
        actix_rt::time::sleep(POLL).await;
    }
}

/// [`wait_for`] with a synchronous condition.
pub async fn wait_until<O: Outcome>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> O,
) -> O::Value {
    wait_for(what, timeout, || std::future::ready(condition())).await
}

/// The server's `/metrics` text.
pub async fn metrics(server: &TestServer) -> String {
    String::from_utf8(get(&server.url("/metrics")).await.body).unwrap()
}

/// The value of `series` (name and labels as rendered) in a `/metrics` text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the server's `/metrics` has a line starting with `series` (name and labels as
/// rendered) whose value is `value`. Series are process-wide, shared by every test in this
/// binary: give the series a label only this test uses (a provider name).
pub async fn wait_for_metric(server: &TestServer, series: &str, value: f64, timeout: Duration) {
    wait_for(&format!("{series} {value}"), timeout, || async move {
        let found = metric_value(&metrics(server).await, series);
        match found {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// The admin API of a test server, called with the test token.
pub struct Admin {
    pub base: String,
}

impl Admin {
    pub fn of(server: &TestServer) -> Admin {
        Admin {
            base: format!("http://{}", server.running.admin_addr()),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        self.raw(
            method,
            path,
            body.map(|b| b.to_string().into_bytes()),
            Some(ADMIN_TOKEN),
        )
        .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client().request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        let res = match body {
            Some(b) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(b)
                    .await
            }
            None => req.send().await,
        };
        read(res.expect("admin request")).await
    }
}

/// An HTTP answer, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The `demdex` value set by the answer.
    pub fn visitor_cookie(&self) -> Option<String> {
        self.headers.get_all("set-cookie").find_map(|v| {
            let text = v.to_str().ok()?;
            let value = text.strip_prefix("demdex=")?;
            Some(value.split(';').next()?.to_string())
        })
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

pub async fn get(url: &str) -> Reply {
    read(client().get(url).send().await.expect("request")).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    read(req.send().await.expect("request")).await
}

pub async fn post(url: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let req = client()
        .post(url)
        .insert_header(("content-type", content_type));
    read(req.send_body(body).await.expect("request")).await
}

pub async fn read(
    mut res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    >,
) -> Reply {
    let body = res.body().limit(1 << 20).await.expect("body").to_vec();
    Reply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body,
    }
}

/// The admin token of test servers.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A fixed visitor id for `d_uuid`.
pub const VISITOR: &str = "12345678901234567890123456789012345678";
