//! The public listener: the routes sites, tags and partners call, one file per route family.
//!
//! - [`event`]: `GET|POST|OPTIONS /event`, the DCS call.
//! - [`ibs`]: `GET /ibs:…`, ID syncs.
//! - [`id`]: `GET /id` and `/optOutStatus`, the ID service as Adobe's VisitorAPI calls it.
//! - [`opt_out`]: `GET /demoptout.jpg`, the global opt-out.
//! - [`dest5`]: `GET /dest5.html`, the destination-publishing frame.
//! - [`tag`]: `GET /tributary.js`, Tributary's own site tag.
//! - [`ops`]: `GET /health`, `/ready`, `/metrics`.
//!
//! What they share: [`pipeline`] (admission, consent, COPPA, identification, opt-out, the
//! session call — every visitor-facing route goes through it), [`admission`] (load shedding),
//! [`cookies`] (the `demdex` cookie), [`cors`], [`assets`] (constant files, cacheable),
//! [`body`] (bounded body reading, also used by the admin API) and [`answer`], the one place
//! answers and refusals are written.
//!
//! The wire contract of these routes is `docs/dcs-api.md`.

pub mod admission;
pub mod answer;
pub mod assets;
pub mod body;
mod client;
mod cookies;
pub mod cors;
pub mod dest5;
pub mod event;
pub mod ibs;
pub mod id;
pub mod ops;
pub mod opt_out;
pub mod pipeline;
pub mod tag;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::dev::HttpServiceFactory;
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Compress};
use actix_web::{web, Route};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::visitor_session::SessionDeps;
use crate::config::Config;
use crate::core::consent::TcfPolicy;
use admission::Shedder;
use answer::HttpError;

/// What every public worker shares.
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) deps: SessionDeps,
    pub(crate) shedder: Shedder,
    pub(crate) metrics: PrometheusHandle,
    /// False once shutdown has begun: `/ready` answers 503 so balancers stop sending.
    pub(crate) ready: Arc<AtomicBool>,
    /// `[server] integration_codes`, keys in lower case.
    pub(crate) integration_codes: HashMap<String, u32>,
    /// What a TC string must grant when GDPR applies (`[privacy]`).
    pub(crate) tcf: TcfPolicy,
    /// Made at start and known only to this process's admin API: an `/event` carrying it in
    /// `X-Tributary-Try` (the console's "Try an event") also gets each provider's wait.
    pub(crate) try_key: String,
}

impl AppState {
    /// The key of the admin API's tries (`POST /v1/events/try`).
    pub fn try_key(&self) -> &str {
        &self.try_key
    }

    pub fn new(
        config: Arc<Config>,
        deps: SessionDeps,
        metrics: PrometheusHandle,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let server = &config.server;
        AppState {
            shedder: Shedder::new(
                std::time::Duration::from_millis(server.shed_lag_ms),
                server.max_in_flight,
                config.store.max_pending_writes,
                config.store.max_pending_writes_failing,
                deps.priority.clone(),
            ),
            integration_codes: server
                .integration_codes
                .iter()
                .map(|(code, dpid)| (code.to_ascii_lowercase(), *dpid))
                .collect(),
            tcf: config.privacy.tcf_policy(),
            try_key: {
                use rand::RngExt as _;
                let bytes: [u8; 16] = rand::rng().random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            },
            config,
            deps,
            metrics,
            ready,
        }
    }
}

/// The public routes; anything else is a JSON `404`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(cross_origin(
        "/event",
        vec![web::get().to(event::event), web::post().to(event::event)],
    ))
    .service(cross_origin("/id", vec![web::get().to(id::id)]))
    .service(cross_origin(
        "/optOutStatus",
        vec![web::get().to(id::opt_out_status)],
    ))
    .route("/demoptout.jpg", web::get().to(opt_out::opt_out))
    .route("/demoptout", web::get().to(opt_out::opt_out))
    // AAM's ID sync URL has no '?': `/ibs:dpid=1&dpuuid=x`. The tail is checked in `ibs`.
    .route("/ibs{tail:.*}", web::get().to(ibs::ibs))
    .service(asset(
        "/dest5.html",
        web::get().to(dest5::dest5),
        web::head().to(dest5::dest5),
    ))
    .service(asset(
        "/tributary.js",
        web::get().to(tag::tag),
        web::head().to(tag::tag),
    ))
    .route("/health", web::get().to(ops::health))
    .route("/ready", web::get().to(ops::ready))
    .route("/metrics", web::get().to(ops::metrics))
    .default_service(web::to(|| async { HttpError::NotFound.into_response() }));
}

/// A route pages call from other origins with credentials: CORS and its preflight, `405` for
/// other methods.
fn cross_origin(path: &str, routes: Vec<Route>) -> impl HttpServiceFactory {
    routes
        .into_iter()
        .fold(web::resource(path), |resource, route| resource.route(route))
        .route(web::method(Method::OPTIONS).to(cors::preflight))
        .default_service(web::to(|| async {
            HttpError::MethodNotAllowed.into_response()
        }))
        .wrap(from_fn(cors::cors))
}

/// A constant file for browsers (`GET`, `HEAD`; `405` otherwise), compressed when the
/// browser accepts it: the tag is a dozen kilobytes as written, a third of that gzipped.
fn asset(path: &str, get: Route, head: Route) -> impl HttpServiceFactory {
    web::resource(path)
        .route(get)
        .route(head)
        .default_service(web::to(|| async {
            HttpError::MethodNotAllowed.into_response()
        }))
        .wrap(Compress::default())
}
