//! The public HTTP listener and the wiring of the whole server.
//!
//! [`start`] is the one function that composes Tributary — store, catalog, store threads,
//! session directory, HTTP workers — used alike by `tributary serve`, the demo and the
//! integration tests, so that tests exercise exactly what runs in production.
//!
//! Routes: `GET|POST|OPTIONS /event` (DESIGN.md §2), `GET /ibs:…` (ID sync), `GET /health`,
//! `GET /ready`, `GET /metrics`. Anything else is a JSON `404`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::cookie::{time as cookie_time, Cookie, SameSite};
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::directory::SessionDirectory;
use crate::actors::provider_client::ClientSettings;
use crate::actors::visitor_session::{
    erase, CollectEvent, EventData, Retire, SessionDeps, SyncIds,
};
use crate::admin::{self, AdminState, CatalogWriter};
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Backend, Config, ConfigError};
use crate::consent::{Judgement, Refusal, TcfPolicy};
use crate::engine::{CatalogHandle, CompiledCatalog};
use crate::error::{truncate, DcsError, HttpError};
use crate::ids::{Tid, VisitorId};
use crate::idsync::{redirect_target, resolve, DataSources, DeclaredId, RawDeclaredId};
use crate::outbox::{Outbox, OutboxSettings};
use crate::overload::{Admitted, Shedder};
use crate::profile::SECS_PER_DAY;
use crate::provider::Outcome;
use crate::request::{
    identify, parse_event, parse_ibs, Identity, RequestError, MAX_BODY_BYTES, MAX_QUERY_BYTES,
};
use crate::response::{x_error, EventBody, PIXEL_GIF};
use crate::signals::Signals;
use crate::store::{
    on_blocking_thread, CatalogStore, OutboxStore, ProfileService, ProfileStore, RedisSettings,
    RedisStore, SledStore, Store, StoreError, SweepReport,
};

/// Name of the visitor cookie (AAM's).
pub const COOKIE_NAME: &str = "demdex";
/// Cookie value of an opted-out visitor.
pub const OPT_OUT_VALUE: &str = "NOTARGET";
/// Visitor cookie lifetime, renewed on every call (AAM: 180 days).
const COOKIE_DAYS: i64 = 180;
/// Longest header value copied into an `h_` signal.
const MAX_HEADER_SIGNAL: usize = 2048;
/// How long a client may take to upload a form body; the event's deadline starts after it.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for events still running in sessions before the final flush.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared by every worker.
pub struct AppState {
    config: Arc<Config>,
    deps: SessionDeps,
    shedder: Shedder,
    metrics: PrometheusHandle,
    ready: Arc<AtomicBool>,
    /// `[server] integration_codes`, keys in lower case.
    integration_codes: HashMap<String, u32>,
    /// What a TC string must grant when GDPR applies (`[privacy]`).
    tcf: TcfPolicy,
}

/// How [`start`] runs the server.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// Stop gracefully on SIGINT/SIGTERM (the binary); tests stop servers themselves.
    pub handle_signals: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("stored catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
}

/// A started server.
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    handle: ServerHandle,
    task: actix_rt::task::JoinHandle<io::Result<()>>,
    admin_handle: ServerHandle,
    admin_task: actix_rt::task::JoinHandle<io::Result<()>>,
    store: Arc<dyn Store>,
    profiles: ProfileService,
    directory: Arc<SessionDirectory>,
    sweeper: actix_rt::task::JoinHandle<()>,
    catalog: CatalogHandle,
    ready: Arc<AtomicBool>,
    sweep: RetentionSweep,
    retention: Option<actix_rt::task::JoinHandle<()>>,
    outbox: Outbox,
    outbox_task: actix_rt::task::JoinHandle<()>,
    catalog_watch: Option<actix_rt::task::JoinHandle<()>>,
}

/// How often a node on a shared store checks whether another changed the catalog: a change
/// reaches every node within this (plus the reload), well inside a second.
const CATALOG_POLL: Duration = Duration::from_millis(250);

/// What the retention sweep works with: the periodic task and [`Running::sweep_retention`]
/// share one.
#[derive(Clone)]
struct RetentionSweep {
    profiles: ProfileService,
    catalog: CatalogHandle,
    directory: Arc<SessionDirectory>,
    outbox: Outbox,
    retention_days: u32,
}

impl RetentionSweep {
    /// One retention sweep, as if the time were `now`, on a blocking thread.
    async fn run(&self, now: i64) -> Result<SweepReport, StoreError> {
        let RetentionSweep {
            profiles,
            catalog,
            directory,
            outbox,
            retention_days,
        } = self.clone();
        let unseen_before = now.saturating_sub(i64::from(retention_days) * SECS_PER_DAY);
        let report = on_blocking_thread("retention sweep", move || {
            let compiled = catalog.current();
            profiles.sweep_now(
                unseen_before,
                &|p| compiled.expire_realizations(p, now),
                &|v| directory.is_live(v),
                // An erased visitor has left its segments: S2S destinations are told (status 0).
                &|v, p| outbox.membership(&compiled, v, &p.segments, &[], now),
            )
        })
        .await?;
        metrics::counter!("tributary_retention_purged_total").increment(report.purged as u64);
        metrics::counter!("tributary_retention_trimmed_total").increment(report.trimmed as u64);
        log::info!(
            "retention sweep: {} profiles read, {} unseen for {retention_days} days erased, {} trimmed of expired realizations, {} unreadable",
            report.scanned, report.purged, report.trimmed, report.unreadable
        );
        Ok(report)
    }
}

impl Running {
    /// The public listener's address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn catalog(&self) -> &CatalogHandle {
        &self.catalog
    }

    pub fn sessions(&self) -> &Arc<SessionDirectory> {
        &self.directory
    }

    /// Runs the retention sweep now, as if the time were `now` (Unix seconds): profiles unseen
    /// for `store.profile_ttl_days` are erased, expired realizations dropped. The server runs
    /// it every `store.retention_sweep_secs`; tests call it with a clock of their choosing.
    pub async fn sweep_retention(&self, now: i64) -> Result<SweepReport, StoreError> {
        self.sweep.run(now).await
    }

    /// Waits until every profile write queued so far is in the store, and flushes it.
    pub async fn sync_store(&self) -> Result<(), StoreError> {
        self.profiles.flush().await
    }

    /// Stops gracefully: no new connections, in-flight requests finish, then the store is
    /// flushed.
    pub async fn stop(self) -> Result<(), StoreError> {
        self.ready.store(false, Ordering::SeqCst);
        self.handle.stop(true).await;
        self.admin_handle.stop(true).await;
        self.finish().await
    }

    /// Runs until the server stops (a signal, or [`ServerHandle::stop`]), then flushes.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.finish().await
    }

    async fn finish(self) -> Result<(), StoreError> {
        if let Ok(Err(e)) = (&mut { self.task }).await {
            log::error!("HTTP server ended with an error: {e}");
        }
        // The public listener has stopped (a signal stops both); so does the admin one.
        self.admin_handle.stop(true).await;
        if let Ok(Err(e)) = (&mut { self.admin_task }).await {
            log::error!("admin HTTP server ended with an error: {e}");
        }
        self.ready.store(false, Ordering::SeqCst);
        // Events whose HTTP answer already left may still be running in their sessions
        // (e.g. behind a slow engine); give them a moment to save before the last flush.
        let drained_by = Instant::now() + DRAIN_TIMEOUT;
        while self.directory.pending() > 0 && Instant::now() < drained_by {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        self.sweeper.abort();
        if let Some(watch) = &self.catalog_watch {
            watch.abort();
        }
        if let Some(retention) = &self.retention {
            retention.abort();
        }
        // Membership changes queued so far are written to the outbox; in-flight deliveries
        // stay there for the next start.
        self.outbox.stop().await;
        self.outbox_task.abort();
        // Pending profile writes first, then everything to disk.
        self.profiles.flush().await?;
        self.profiles.stop_writers();
        log::info!("store flushed; shutdown complete");
        Ok(())
    }
}

/// Opens the store, loads (or seeds) the catalog, starts the store threads and the HTTP workers.
/// Must be called inside a running actix `System`.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let metrics = crate::metrics::install();

    let store = open_store(&config)?;
    let (catalog, version) = load_or_seed_catalog(&config, store.as_ref())?;
    let compiled = CompiledCatalog::compile(&catalog, version)?;
    log::info!(
        "catalog v{version}: {} providers, {} traits, {} segments",
        catalog.providers.len(),
        catalog.traits.len(),
        catalog.segments.len()
    );
    let catalog_handle = CatalogHandle::new(compiled);
    let catalog_store: Arc<dyn CatalogStore> = store.clone();
    let writer = CatalogWriter::new(catalog, version, catalog_store, catalog_handle.clone());
    let shared = config.store.backend == Backend::Redis;
    let writer = Arc::new(if shared { writer.shared() } else { writer });
    let profile_store: Arc<dyn ProfileStore> = store.clone();
    let write_delay = Duration::from_millis(config.store.write_delay_ms);
    let profiles = if shared {
        // Other nodes write the same profiles: writes replay events (no lost realization).
        ProfileService::start_shared(profile_store, config.store.threads, write_delay)?
    } else {
        ProfileService::start(profile_store, config.store.threads, write_delay)?
    };
    // Other nodes change the shared catalog and opt visitors out: notice within CATALOG_POLL.
    let catalog_watch = shared.then(|| {
        let (writer, profiles) = (writer.clone(), profiles.clone());
        actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(CATALOG_POLL).await;
                if let Err(e) = writer.refresh().await {
                    log::warn!("stored catalog not checked (tried again shortly): {e}");
                }
                let profiles = profiles.clone();
                let refreshed =
                    on_blocking_thread("opt-out refresh", move || profiles.refresh_opt_outs())
                        .await;
                match refreshed {
                    Ok(0) => {}
                    Ok(n) => log::info!("{n} opt-out(s) made on other nodes loaded"),
                    Err(e) => log::warn!("opt-outs not checked (tried again shortly): {e}"),
                }
            }
        })
    });

    let directory = Arc::new(SessionDirectory::default());
    let outbox_store: Arc<dyn OutboxStore> = store.clone();
    let (outbox, outbox_task) = Outbox::start(
        outbox_store,
        catalog_handle.clone(),
        OutboxSettings {
            timeout: Duration::from_millis(config.s2s.timeout_ms),
            retry_initial: Duration::from_millis(config.s2s.retry_initial_ms),
            retry_max: Duration::from_millis(config.s2s.retry_max_ms),
            max_age_secs: i64::try_from(config.s2s.max_age_hours * 3600).unwrap_or(i64::MAX),
            max_waiting: config.s2s.max_waiting,
            region: config.server.dcs_region,
        },
    );
    let deps = SessionDeps {
        profiles: profiles.clone(),
        catalog: catalog_handle.clone(),
        realtime: Arc::new(config.realtime.clone()),
        clients: ClientSettings {
            body_limit: config.realtime.provider_body_limit,
            pool_size: config.realtime.provider_pool_size,
            max_in_flight: config.realtime.provider_max_in_flight,
            circuit: config.realtime.circuit(),
        },
        directory: directory.clone(),
        outbox: outbox.clone(),
    };
    let sweeper = actix_rt::spawn(sweep_sessions(
        directory.clone(),
        config.realtime.session_idle(),
        config.realtime.max_sessions,
    ));
    let ready = Arc::new(AtomicBool::new(true));
    let shedder = Shedder::new(
        Duration::from_millis(config.server.shed_lag_ms),
        config.server.max_in_flight,
        config.store.max_pending_writes,
    );
    let state = web::Data::new(AppState {
        config: config.clone(),
        deps,
        shedder,
        metrics,
        ready: ready.clone(),
        integration_codes: config
            .server
            .integration_codes
            .iter()
            .map(|(code, dpid)| (code.to_ascii_lowercase(), *dpid))
            .collect(),
        tcf: config.privacy.tcf_policy(),
    });

    let admin_deps = state.deps.clone();
    let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .workers(config.worker_count())
        .shutdown_timeout(config.server.shutdown_timeout_secs);
    if !options.handle_signals {
        server = server.disable_signals();
    }
    let bind = config.public_addr();
    // Plain bind(): HTTP/1.x only; TLS and HTTP/2 belong to the load balancer (CRATES.md F2).
    let server = server.bind(bind).map_err(|source| StartError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    let addr = server.addrs().first().copied().unwrap_or(bind);

    let token = if config.admin.token.is_empty() {
        let token = admin::generate_token();
        // Shown once, so the operator can use it; set [admin] token to keep one across starts.
        log::warn!("admin token (generated at start, shown once): {token}");
        token
    } else {
        config.admin.token.clone()
    };
    let admin_state = web::Data::new(AdminState::new(writer, admin_deps, &token));
    let admin_bind = config.admin_addr();
    let admin_server = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .configure(admin::routes)
    })
    .workers(1)
    .shutdown_timeout(config.server.shutdown_timeout_secs)
    .disable_signals()
    .bind(admin_bind)
    .map_err(|source| StartError::Bind {
        addr: admin_bind.to_string(),
        source,
    })?;
    let admin_addr = admin_server.addrs().first().copied().unwrap_or(admin_bind);
    let admin_server = admin_server.run();
    let admin_handle = admin_server.handle();
    let admin_task = actix_rt::spawn(admin_server);

    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    log::info!("listening on http://{addr}");
    log::info!("admin API on http://{admin_addr}/v1");
    let sweep = RetentionSweep {
        profiles: profiles.clone(),
        catalog: catalog_handle.clone(),
        directory: directory.clone(),
        outbox: outbox.clone(),
        retention_days: config.store.profile_ttl_days,
    };
    let retention = (config.store.retention_sweep_secs > 0).then(|| {
        let every = Duration::from_secs(config.store.retention_sweep_secs);
        let sweep = sweep.clone();
        actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(every).await;
                if let Err(e) = sweep.run(unix_now()).await {
                    log::error!("retention sweep failed (tried again next time): {e}");
                }
            }
        })
    });
    Ok(Running {
        catalog_watch,
        outbox,
        outbox_task,
        sweep,
        retention,
        addr,
        admin_addr,
        handle,
        task,
        admin_handle,
        admin_task,
        store,
        profiles,
        directory,
        sweeper,
        catalog: catalog_handle,
        ready,
    })
}

/// How often the session count is checked against `max_sessions`.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Retires idle sessions (looked for every tenth of the idle time, as a full sweep walks every
/// session), and the least recently active ones as soon as there are more than `max_sessions`.
async fn sweep_sessions(directory: Arc<SessionDirectory>, idle: Duration, max_sessions: usize) {
    let idle_every = (idle / 10).max(SWEEP_EVERY);
    let mut last_full = Instant::now();
    loop {
        actix_rt::time::sleep(SWEEP_EVERY).await;
        if last_full.elapsed() < idle_every && directory.approximate_len() <= max_sessions {
            continue;
        }
        last_full = Instant::now();
        for session in directory.sweep(idle, max_sessions) {
            session.do_send(Retire);
        }
    }
}

/// The configured store: the embedded sled database, or the shared Redis Cluster.
fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let st = &config.store;
    Ok(match st.backend {
        Backend::Sled => Arc::new(SledStore::open(
            &st.path,
            st.cache_capacity,
            st.flush_every_ms,
        )?),
        Backend::Redis => {
            let node_id = st.node_name(config.public_addr().port());
            log::info!(
                "store: Redis Cluster at {} (prefix {:?}, node {node_id:?})",
                st.redis_urls.join(", "),
                st.redis_prefix
            );
            Arc::new(RedisStore::open(RedisSettings {
                urls: st.redis_urls.clone(),
                prefix: st.redis_prefix.clone(),
                node_id,
                profile_ttl: Duration::from_secs(u64::from(st.profile_ttl_days) * 86_400),
                timeout: Duration::from_millis(st.redis_timeout_ms),
                connections: st.redis_connections,
            })?)
        }
    })
}

/// The stored catalog; on a store that never held one, the seed (file plus `[[providers]]`).
fn load_or_seed_catalog(
    config: &Config,
    store: &dyn CatalogStore,
) -> Result<(Catalog, u64), StartError> {
    if let Some((catalog, version)) = store.load_catalog()? {
        if config.catalog.seed.is_some() || !config.providers.is_empty() {
            log::warn!(
                "the store already holds catalog v{version}; the seed in the config is not loaded \
                 again (start with an empty store.path to reseed)"
            );
        }
        return Ok((catalog, version));
    }
    match config.seed_catalog()? {
        Some(seed) => {
            let version = store.replace_catalog(&seed)?;
            log::info!("seeded the catalog from the configuration");
            Ok((seed, version))
        }
        None => Ok((Catalog::default(), 0)),
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/event")
            .wrap(from_fn(cors))
            .route(web::get().to(event))
            .route(web::post().to(event))
            .route(web::method(Method::OPTIONS).to(preflight))
            .default_service(web::to(|| async {
                HttpError::MethodNotAllowed.into_response()
            })),
    )
    .route("/demoptout.jpg", web::get().to(opt_out))
    .route("/demoptout", web::get().to(opt_out))
    // AAM's ID sync URL has no '?': `/ibs:dpid=1&dpuuid=x`. The tail is checked in `ibs`.
    .route("/ibs{tail:.*}", web::get().to(ibs))
    .route("/health", web::get().to(health))
    .route("/ready", web::get().to(ready))
    .route("/metrics", web::get().to(metrics_text))
    .default_service(web::to(|| async { HttpError::NotFound.into_response() }));
}

impl HttpError {
    fn into_response(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Admits a request, or sheds it (`429`) while the server is overloaded.
fn admit(state: &AppState) -> Result<Admitted, HttpError> {
    state
        .shedder
        .admit(state.deps.profiles.queue_depth())
        .map_err(|reason| {
            metrics::counter!("tributary_events_shed_total", "reason" => reason.as_str())
                .increment(1);
            HttpError::Overloaded
        })
}

/// `/event`: the Data Collection Server call.
async fn event(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let _admitted = admit(&state)?;
    let tid = Tid::next();
    let query = req.query_string();
    if query.len() > MAX_QUERY_BYTES {
        return Err(HttpError::QueryTooLong {
            limit: MAX_QUERY_BYTES,
        });
    }
    let body = if req.method() == Method::POST {
        Some(read_form(&req, payload).await?)
    } else {
        None
    };
    let arrived = Instant::now();
    let deadline = arrived + state.config.realtime.deadline();
    let cookie = req.cookie(COOKIE_NAME);
    let cookie_value = cookie.as_ref().map(|c| c.value());

    let mut request = match parse_event(query.as_bytes(), body.as_deref()) {
        Ok(r) => r,
        Err(RequestError::BadCallback) => return Err(HttpError::BadCallback),
        Err(RequestError::InvalidEncoding { param }) => {
            // AAM ignores the whole request (error 311): no identity is issued, nothing is
            // read or written. The answer format is guessed from the raw text.
            let json = contains(query.as_bytes(), b"d_rtbd=json")
                || body.as_deref().is_some_and(|b| contains(b, b"d_rtbd=json"));
            let mut out = base_body(&state, tid);
            out.uuid = cookie_value
                .and_then(VisitorId::parse)
                .map(|v| v.to_string());
            out.errors.push(DcsError::invalid_parameters(&param));
            metrics::counter!("tributary_events_total", "result" => "ignored").increment(1);
            log::debug!(target: "tributary::event", tid = tid.as_str(), result = "ignored"; "invalid parameter {param:?}");
            return Ok(respond(json, None, &out, None));
        }
    };

    let mut out = base_body(&state, tid);
    out.errors.extend(request.errors.iter().cloned());
    let cts = request.include_cts && state.config.server.allow_cts;
    if request.include_dests {
        out.dests = Some(Vec::new());
    }

    let vendors = match crate::consent::judge(&mut request.privacy, &state.tcf, &mut out.errors) {
        Judgement::Proceed(vendors) => vendors,
        Judgement::Refuse(why) => {
            let (refusal, label) = refusal(&state, cookie_value, request.d_uuid, &why);
            out.errors.push(refusal);
            metrics::counter!("tributary_events_total", "result" => label).increment(1);
            log::debug!(target: "tributary::event", tid = tid.as_str(), result = label; "event refused: {why}");
            return Ok(respond(
                request.json,
                request.callback.as_deref(),
                &out,
                None,
            ));
        }
    };
    let catalog = state.deps.catalog.current();
    if request.privacy.coppa {
        return Ok(child_directed(&req, &catalog, request, out, cts));
    }
    let (mut declared, id_errors) = resolve_declared(&state, &catalog, &request.declared);
    out.errors.extend(id_errors);
    let identity = identify_visitor(
        &state,
        cookie_value,
        request.d_uuid,
        &mut declared,
        deadline,
        &mut out.errors,
    )
    .await;
    let (visitor, new_visitor) = match identity {
        Identity::OptedOut => {
            out.errors.push(DcsError::opted_out());
            metrics::counter!("tributary_events_total", "result" => "opted_out").increment(1);
            log::debug!(target: "tributary::event", tid = tid.as_str(), result = "opted_out"; "event");
            return Ok(respond(
                request.json,
                request.callback.as_deref(),
                &out,
                None,
            ));
        }
        Identity::Known(id) => (id, false),
        Identity::New(id) => (id, true),
    };

    let mut signals = request.signals;
    add_header_signals(&req, &mut signals);
    let event = Arc::new(EventData {
        signals,
        sids: request.sids,
        tdpid: request.tdpid,
        privacy: request.privacy,
        vendors,
        declared,
    });
    let (session, pending) = state.deps.session_for(visitor);
    let sent = session.send(CollectEvent {
        tid,
        // The handler keeps a reference: URL destinations read the event's consent.
        event: event.clone(),
        deadline,
        now: unix_now(),
        pending: Some(pending),
        new_visitor,
    });
    let result_label = match tokio::time::timeout_at(deadline.into(), sent).await {
        Ok(Ok(result)) => {
            out.errors.extend(result.errors);
            let destinations = catalog.destinations();
            if !destinations.is_empty() {
                out.stuff = crate::destinations::stuff(destinations, &result.segments);
                if request.include_dests {
                    let uuid = visitor.to_string();
                    let ctx = crate::destinations::UrlContext {
                        uuid: &uuid,
                        dcs_region: state.config.server.dcs_region,
                        now: unix_now(),
                        random: rand::random(),
                        synced_ids: &result.synced_ids,
                        gdpr: event.privacy.gdpr.as_deref(),
                        gdpr_consent: event.privacy.gdpr_consent.as_deref(),
                    };
                    out.dests = Some(crate::destinations::dests(
                        destinations,
                        &result.segments,
                        &ctx,
                    ));
                }
            }
            if cts {
                out.traits = Some(result.realized);
                out.segments = Some(result.segments);
                out.providers = Some(
                    result
                        .providers
                        .into_iter()
                        .map(|(name, outcome): (String, Outcome)| (name, outcome.as_str()))
                        .collect(),
                );
            }
            "ok"
        }
        Ok(Err(e)) => {
            log::error!(tid = tid.as_str(); "visitor session failed: {e}");
            out.errors.push(DcsError::unable_to_evaluate());
            "error"
        }
        Err(_) => {
            // The session goes on with the event (nothing is lost); this answer just cannot
            // wait for it.
            out.errors.push(DcsError::unable_to_evaluate());
            "timeout"
        }
    };
    out.uuid = Some(visitor.to_string());
    let elapsed = arrived.elapsed();
    metrics::counter!("tributary_events_total", "result" => result_label).increment(1);
    metrics::histogram!("tributary_event_duration_seconds").record(elapsed.as_secs_f64());
    log::debug!(
        target: "tributary::event",
        tid = tid.as_str(),
        uuid:% = visitor,
        result = result_label,
        segments = out.segments.as_ref().map_or(0, Vec::len),
        micros = elapsed.as_micros() as u64;
        "event"
    );
    let secure = req.connection_info().scheme() == "https";
    let cookie = visitor_cookie(visitor, secure, &state.config.server.cookie_domain);
    Ok(respond(
        request.json,
        request.callback.as_deref(),
        &out,
        Some(cookie),
    ))
}

/// The error for a call refused for want of consent (DESIGN.md §6), and the result label of
/// its metric, read from memory only: no profile or id mapping may be read. A visitor who
/// opted out is told so instead (171), as AAM's global opt-out outranks its consent checks.
fn refusal(
    state: &AppState,
    cookie: Option<&str>,
    d_uuid: Option<VisitorId>,
    why: &Refusal,
) -> (DcsError, &'static str) {
    let opted_out = match identify(cookie, d_uuid) {
        Identity::OptedOut => true,
        Identity::Known(v) => state.deps.profiles.is_opted_out(v),
        Identity::New(_) => false,
    };
    if opted_out {
        (DcsError::opted_out(), "opted_out")
    } else {
        (DcsError::no_consent(why), "no_consent")
    }
}

/// `d_coppa=1`: a child-directed call (DESIGN.md §6). No visitor id is read or set (no
/// cookie, no `d_uuid`, no declared id), no profile is read or written, no provider is asked:
/// the event's own signals are evaluated against the catalog and forgotten.
fn child_directed(
    req: &HttpRequest,
    catalog: &CompiledCatalog,
    request: crate::request::EventRequest,
    mut out: EventBody,
    cts: bool,
) -> HttpResponse {
    let mut signals = request.signals;
    add_header_signals(req, &mut signals);
    let evaluation = catalog.evaluate(
        &mut crate::profile::Profile::default(),
        &crate::engine::EventInput {
            signals: &signals,
            providers: &[],
            sids: &request.sids,
            tdpid: request.tdpid,
            now: unix_now(),
            answers_only: false,
        },
    );
    if cts {
        out.traits = Some(evaluation.realized);
        out.segments = Some(evaluation.segments);
        out.providers = Some(
            catalog
                .providers()
                .iter()
                .map(|p| (p.name.clone(), Outcome::Skipped.as_str()))
                .collect(),
        );
    }
    metrics::counter!("tributary_events_total", "result" => "coppa").increment(1);
    respond(request.json, request.callback.as_deref(), &out, None)
}

/// The data sources declared ids may name: the catalog's, and the integration codes'.
struct KnownSources<'a> {
    catalog: &'a CompiledCatalog,
    codes: &'a HashMap<String, u32>,
}

impl DataSources for KnownSources<'_> {
    fn knows(&self, dpid: u32) -> bool {
        self.catalog.knows_data_source(dpid) || self.codes.values().any(|&d| d == dpid)
    }
}

fn resolve_declared(
    state: &AppState,
    catalog: &CompiledCatalog,
    raw: &[RawDeclaredId],
) -> (Vec<DeclaredId>, Vec<DcsError>) {
    if raw.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let known = KnownSources {
        catalog,
        codes: &state.integration_codes,
    };
    resolve(raw, &state.integration_codes, &known)
}

/// Who the visitor is: the cookie's id, else `d_uuid`, else the visitor a declared id is
/// mapped to (the most recent mapping among them), else a new id. The cookie wins over a
/// declared id, so a person who logs in on a second device moves their declared id's mapping
/// to that device (AAM: the most recent mapping wins). If the mappings cannot be read by the
/// deadline, the declared ids are dropped for this call (error 201): linking them to a new id
/// could take them away from the visitor they belong to.
async fn identify_visitor(
    state: &AppState,
    cookie: Option<&str>,
    d_uuid: Option<VisitorId>,
    declared: &mut Vec<DeclaredId>,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> Identity {
    match find_visitor(state, cookie, d_uuid, declared, deadline, errors).await {
        // A visitor who opted out (by cookie, `d_uuid` or a declared id) is refused whatever
        // identifies them: no read, no write, no provider, no new id.
        Identity::Known(v) if state.deps.profiles.is_opted_out(v) => Identity::OptedOut,
        identity => identity,
    }
}

async fn find_visitor(
    state: &AppState,
    cookie: Option<&str>,
    d_uuid: Option<VisitorId>,
    declared: &mut Vec<DeclaredId>,
    deadline: Instant,
    errors: &mut Vec<DcsError>,
) -> Identity {
    let identity = identify(cookie, d_uuid);
    let Identity::New(_) = identity else {
        return identity;
    };
    let linking: Vec<&DeclaredId> = declared.iter().filter(|d| d.links()).collect();
    if linking.is_empty() {
        return identity;
    }
    let profiles = &state.deps.profiles;
    let lookups =
        futures_util::future::join_all(linking.iter().map(|d| profiles.lookup_link(d.dpid, &d.id)));
    let read_by = deadline
        .checked_sub(state.config.realtime.reply_reserve())
        .unwrap_or(deadline);
    let found = match tokio::time::timeout_at(read_by.into(), lookups).await {
        Ok(results) => results.into_iter().collect::<Result<Vec<_>, _>>(),
        Err(_) => Err(StoreError::Io(
            "id mappings not read by the deadline".into(),
        )),
    };
    match found {
        Ok(links) => {
            let latest = links.into_iter().flatten().max_by_key(|l| l.at);
            let result = if latest.is_some() { "found" } else { "none" };
            metrics::counter!("tributary_declared_id_lookups_total", "result" => result)
                .increment(1);
            latest.map_or(identity, |l| Identity::Known(l.visitor))
        }
        Err(e) => {
            metrics::counter!("tributary_declared_id_lookups_total", "result" => "error")
                .increment(1);
            log::warn!("declared ids not looked up: {e}");
            errors.push(DcsError::id_links_unreadable());
            declared.clear();
            identity
        }
    }
}

/// How long the opt-out cookie lasts (AAM: 10 years).
const OPT_OUT_DAYS: i64 = 3650;

/// `/demoptout.jpg` (DESIGN.md §6): the visitor of the cookie, and the one named by `d_uuid`,
/// opt out. Each is recorded as opted out (durably, and refused at once by every listener)
/// and erased — profile, cached answers, ID-sync mappings — through its session, after any
/// event already queued for it. The answer is the pixel with `demdex=NOTARGET` for 10 years,
/// also for a browser without a visitor id, so that it is never given one.
async fn opt_out(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut visitors = Vec::new();
    let cookie = req.cookie(COOKIE_NAME);
    if let Some(v) = cookie.as_ref().and_then(|c| VisitorId::parse(c.value())) {
        visitors.push(v);
    }
    let mut out = EventBody::default();
    match parse_event(req.query_string().as_bytes(), None) {
        Ok(parsed) => {
            visitors.extend(parsed.d_uuid.filter(|v| !visitors.contains(v)));
            out.errors
                .extend(parsed.errors.into_iter().filter(|e| e.code == 102));
        }
        Err(RequestError::InvalidEncoding { param }) => {
            out.errors.push(DcsError::invalid_parameters(&param))
        }
        Err(RequestError::BadCallback) => {}
    }
    let now = unix_now();
    let deps = &state.deps;
    for visitor in visitors {
        let erased = async {
            deps.profiles.opt_out(visitor, now).await?;
            erase(deps, visitor).await
        };
        match erased.await {
            Ok(()) => metrics::counter!("tributary_optouts_total").increment(1),
            Err(e) => {
                // Refused from now on (in memory) even so; the record is erased by retention.
                log::error!("opt-out of {visitor} not fully recorded: {e}");
                out.errors
                    .push(DcsError::unspecified("Opt-out not fully recorded"));
            }
        }
    }
    let cookie = dcs_cookie(
        OPT_OUT_VALUE.to_string(),
        OPT_OUT_DAYS,
        req.connection_info().scheme() == "https",
        &state.config.server.cookie_domain,
    );
    // The pixel, with the errors in X-Error.
    respond(false, None, &out, Some(cookie))
}

/// `/ibs:dpid=<dpid>&dpuuid=<id>[&redir=<url>]` (also `/ibs:d_cid=<dpid>%01<id>` and the
/// query-string form): maps the visitor to a data source's id. Answers the 1×1 GIF — or a
/// `302` to `redir`, with `${DD_UUID}` replaced, when its host is allowed — with errors in
/// `X-Error`. Like `/event`, it identifies (or creates) the visitor and renews the cookie.
async fn ibs(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // Shed like events: a sync costs a session and a store write too.
    let _admitted = match admit(&state) {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let tid = Tid::next();
    let Some(tail) = req.uri().path().strip_prefix("/ibs") else {
        return HttpError::NotFound.into_response();
    };
    if !tail.is_empty() && !tail.starts_with(':') {
        return HttpError::NotFound.into_response();
    }
    let query = req.query_string();
    if tail.len() + query.len() > MAX_QUERY_BYTES {
        return HttpError::QueryTooLong {
            limit: MAX_QUERY_BYTES,
        }
        .into_response();
    }
    let deadline = Instant::now() + state.config.realtime.deadline();
    let mut errors = Vec::new();
    let parsed = match parse_ibs(tail.as_bytes(), query.as_bytes()) {
        Ok(parsed) => parsed,
        Err(RequestError::InvalidEncoding { param }) => {
            errors.push(DcsError::invalid_parameters(&param));
            return ibs_answer("invalid", tid, &errors, None, None);
        }
        Err(RequestError::BadCallback) => return ibs_answer("invalid", tid, &errors, None, None),
    };
    errors.extend(parsed.errors.iter().cloned());
    let mut parsed = parsed;
    if let Judgement::Refuse(why) =
        crate::consent::judge(&mut parsed.privacy, &state.tcf, &mut errors)
    {
        // AAM ignores partner syncs without consent: nothing is read, linked or set.
        let cookie = req.cookie(COOKIE_NAME);
        let (refusal, label) = refusal(
            &state,
            cookie.as_ref().map(|c| c.value()),
            parsed.d_uuid,
            &why,
        );
        errors.push(refusal);
        return ibs_answer(label, tid, &errors, None, None);
    }
    if parsed.privacy.coppa {
        // Child-directed: no id is read, set or linked.
        return ibs_answer("coppa", tid, &errors, None, None);
    }
    let cookie = req.cookie(COOKIE_NAME);
    let catalog = state.deps.catalog.current();
    let (mut declared, id_errors) = resolve_declared(&state, &catalog, &parsed.declared);
    errors.extend(id_errors);
    let identity = identify_visitor(
        &state,
        cookie.as_ref().map(|c| c.value()),
        parsed.d_uuid,
        &mut declared,
        deadline,
        &mut errors,
    )
    .await;
    let (visitor, new_visitor) = match identity {
        Identity::OptedOut => {
            errors.push(DcsError::opted_out());
            return ibs_answer("opted_out", tid, &errors, None, None);
        }
        Identity::Known(v) => (v, false),
        Identity::New(v) => (v, true),
    };
    let mut result = "invalid";
    if !declared.is_empty() {
        let (session, pending) = state.deps.session_for(visitor);
        let sent = session.send(SyncIds {
            tid,
            ids: declared,
            now: unix_now(),
            pending: Some(pending),
            new_visitor,
        });
        result = match tokio::time::timeout_at(deadline.into(), sent).await {
            Ok(Ok(session_errors)) => {
                errors.extend(session_errors);
                "synced"
            }
            // The session still records the sync; the caller just cannot wait for it.
            Ok(Err(_)) | Err(_) => {
                errors.push(DcsError::unspecified("ID sync not confirmed in time"));
                "timeout"
            }
        };
    }
    let location = parsed.redir.as_deref().and_then(|redir| {
        match redirect_target(redir, visitor, &state.config.server.idsync_redirect_hosts) {
            Ok(url) => Some(url),
            Err(e) => {
                errors.push(DcsError::unspecified(e.to_string()));
                None
            }
        }
    });
    let secure = req.connection_info().scheme() == "https";
    let cookie = visitor_cookie(visitor, secure, &state.config.server.cookie_domain);
    log::debug!(
        target: "tributary::ibs",
        tid = tid.as_str(),
        uuid:% = visitor,
        result = result,
        redirect = location.is_some();
        "id sync"
    );
    ibs_answer(result, tid, &errors, Some(cookie), location)
}

fn ibs_answer(
    result: &'static str,
    tid: Tid,
    errors: &[DcsError],
    cookie: Option<Cookie<'static>>,
    location: Option<String>,
) -> HttpResponse {
    metrics::counter!("tributary_ibs_total", "result" => result).increment(1);
    let mut builder = match location {
        Some(_) => HttpResponse::Found(),
        None => HttpResponse::Ok(),
    };
    builder.insert_header((header::CACHE_CONTROL, "no-store, no-cache, max-age=0"));
    builder.insert_header(("X-Tributary-Tid", tid.as_str().to_string()));
    if let Some(codes) = x_error(errors) {
        builder.insert_header(("X-Error", codes));
    }
    if let Some(cookie) = cookie {
        builder.cookie(cookie);
    }
    match location {
        Some(url) => builder.insert_header((header::LOCATION, url)).finish(),
        None => builder.content_type("image/gif").body(PIXEL_GIF),
    }
}

fn base_body(state: &AppState, tid: Tid) -> EventBody {
    EventBody {
        dcs_region: state.config.server.dcs_region,
        tid: tid.to_string(),
        ..Default::default()
    }
}

/// The request's media type (`Content-Type` without parameters, lower case), if it has one.
pub(crate) fn media_type(req: &HttpRequest) -> Option<String> {
    let ct = req.headers().get(header::CONTENT_TYPE)?;
    Some(
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a `POST` form body of at most [`MAX_BODY_BYTES`].
async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Vec<u8>, HttpError> {
    if let Some(essence) = media_type(req) {
        if essence != "application/x-www-form-urlencoded"
            && essence != "text/plain"
            && !essence.is_empty()
        {
            return Err(HttpError::UnsupportedMediaType);
        }
    }
    read_body(req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => HttpError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            },
            BodyError::Unreadable(_) => HttpError::BadBody,
        })
}

/// Why a request body could not be read.
pub(crate) enum BodyError {
    TooLarge,
    /// Broken, or not received within [`BODY_READ_TIMEOUT`].
    Unreadable(String),
}

/// Reads a request body of at most `limit` bytes (refused at once when `Content-Length` says
/// more), within [`BODY_READ_TIMEOUT`] so a client trickling bytes cannot hold a request.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            BodyError::Unreadable(format!(
                "not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?
}

/// Fills the `h_` signals from the real request (DESIGN.md §2).
fn add_header_signals(req: &HttpRequest, signals: &mut Signals) {
    for (name, key) in [
        (header::REFERER, "h_referer"),
        (header::USER_AGENT, "h_user-agent"),
        (header::ACCEPT_LANGUAGE, "h_accept-language"),
        (header::HOST, "h_host"),
    ] {
        if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            signals.set(key, truncate(value, MAX_HEADER_SIGNAL));
        }
    }
    if let Some(ip) = client_ip(req) {
        // Truncated before anything else sees it: rules, logs and providers get the same.
        signals.set("h_ip", crate::provider::anonymize_ip(ip));
    }
}

/// The visitor's IP: from `Forwarded`/`X-Forwarded-For` when a proxy sets them, else the peer.
fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let info = req.connection_info();
    let text = info.realip_remote_addr()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The `demdex` cookie, renewed for 180 days on every call.
fn visitor_cookie(visitor: VisitorId, secure: bool, domain: &str) -> Cookie<'static> {
    dcs_cookie(visitor.to_string(), COOKIE_DAYS, secure, domain)
}

/// The `demdex` cookie with `value`, for `days`.
fn dcs_cookie(value: String, days: i64, secure: bool, domain: &str) -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE_NAME, value)
        .path("/")
        .max_age(cookie_time::Duration::days(days))
        .finish();
    if secure {
        // Browsers send a third-party cookie only with SameSite=None, which requires Secure.
        cookie.set_same_site(SameSite::None);
        cookie.set_secure(true);
    } else {
        cookie.set_same_site(SameSite::Lax);
    }
    if !domain.is_empty() {
        cookie.set_domain(domain.to_string());
    }
    cookie
}

fn respond(
    json: bool,
    callback: Option<&str>,
    body: &EventBody,
    cookie: Option<Cookie<'static>>,
) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    builder.insert_header((header::CACHE_CONTROL, "no-store, no-cache, max-age=0"));
    if let Some(codes) = x_error(&body.errors) {
        builder.insert_header(("X-Error", codes));
    }
    if let Some(cookie) = cookie {
        builder.cookie(cookie);
    }
    if json {
        let content_type = if callback.is_some() {
            "application/javascript; charset=utf-8"
        } else {
            "application/json"
        };
        builder
            .content_type(content_type)
            .body(body.render(callback))
    } else {
        builder.content_type("image/gif").body(PIXEL_GIF)
    }
}

/// Whether the caller's origin may read answers with credentials. With no configured list,
/// any origin is echoed (tags run on many customer domains) — but never `null`, the origin of
/// sandboxed frames and local files, which must not be trusted with credentials.
fn cors_origin(state: &AppState, req: &ServiceRequest) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let allowed = &state.config.server.cors_origins;
    let ok = if allowed.is_empty() {
        text != "null" && text.contains("://")
    } else {
        allowed.iter().any(|a| a == text)
    };
    ok.then(|| origin.clone())
}

/// CORS with credentials for `/event` (written by hand rather than with actix-cors, which
/// refuses requests from other origins with an error: an event from any page must still be
/// collected, only the reading of its answer is restricted).
async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| cors_origin(state, &req));
    let preflight = req.method() == Method::OPTIONS;
    let requested_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("X-Error"),
        );
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            if let Some(requested) = requested_headers.filter(|h| h.len() <= 512) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            }
        }
    }
    Ok(res)
}

async fn preflight() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.ready.load(Ordering::SeqCst) {
        HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "catalogVersion": state.deps.catalog.current().version(),
        }))
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
            .json(serde_json::json!({"status": "stopping"}))
    }
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    // Levels are read at scrape time rather than kept up to date on the event path.
    metrics::gauge!("tributary_store_pending_writes").set(state.deps.profiles.queue_depth() as f64);
    metrics::gauge!("tributary_events_in_flight").set(state.shedder.in_flight() as f64);
    let catalog = state.deps.catalog.current();
    crate::metrics::record_catalog(&catalog);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
