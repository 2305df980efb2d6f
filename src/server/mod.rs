//! The composition of the whole server: [`start`] opens the store, loads (or seeds) the
//! catalog, starts the store threads, the S2S outbox, the background tasks and both HTTP
//! listeners, and hands back a [`Running`] server that knows how to stop. It is the one
//! function used alike by `tributary serve`, the demo and the integration tests, so that tests
//! exercise exactly what runs in production.

mod running;
mod tasks;
pub mod tls;

pub use running::Running;
pub use tls::TlsError;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};

use crate::actors::directory::SessionDirectory;
use crate::actors::provider_client::ClientSettings;
use crate::actors::visitor_session::SessionDeps;
use crate::admin::{self, AdminState, CatalogWriter};
use crate::config::{Backend, Config, ConfigError};
use crate::core::catalog::{Catalog, CatalogError};
use crate::core::engine::{CatalogHandle, CompiledCatalog};
use crate::outbox::{Outbox, OutboxSettings};
use crate::routes::body::close_after_refusal;
use crate::routes::{self, AppState};
use crate::store::{
    CatalogStore, OutboxStore, ProfileService, ProfileStore, RedisSettings, RedisStore,
    ServiceSettings, SledStore, Store, StoreError,
};
use running::Listener;
use tasks::RetentionSweep;

/// How [`start`] runs the server.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// Stop on SIGTERM (gracefully) and SIGINT/SIGQUIT (actix: without waiting for requests in
    /// flight), then flush: the binary. Tests stop their servers themselves.
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
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Starts everything; see the module doc. Must be called inside a running actix `System`.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let config = Arc::new(config);
    // Before the store is touched: a bad certificate or key stops the start at once.
    let tls = match config.server.tls() {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let metrics = crate::telemetry::metrics::install();

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
    let shared = config.store.backend == Backend::Redis;
    let writer = CatalogWriter::new(catalog, version, store.clone(), catalog_handle.clone());
    let writer = Arc::new(if shared { writer.shared() } else { writer });
    let profiles = start_profiles(&config, store.clone())?;
    let directory = Arc::new(SessionDirectory::default());
    let (outbox, outbox_task) = start_outbox(&config, store.clone(), catalog_handle.clone());
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
        profiles_config: Arc::new(config.profiles.clone()),
        priority: Default::default(),
    };
    let ready = Arc::new(AtomicBool::new(true));
    let state = web::Data::new(AppState::new(
        config.clone(),
        deps.clone(),
        metrics,
        ready.clone(),
    ));
    let scrape = state.clone();
    let try_key = state.try_key().to_string();
    let public = listen_public(&config, options, state, tls)?;
    let token = admin_token(&config);
    let mut admin_state = AdminState::new(writer.clone(), deps, &token, &config);
    admin_state.metrics = Some(Arc::new(move || {
        crate::routes::ops::render_metrics(&scrape)
    }));
    admin_state.public = Some(crate::admin::try_event::PublicListener {
        addr: public.addr,
        tls: config.server.tls().is_some(),
        key: try_key,
    });
    let admin_state = web::Data::new(admin_state);
    let admin = listen_admin(&config, admin_state)?;
    let (public, admin) = (public.spawn(), admin.spawn());
    let scheme = if config.server.tls().is_some() {
        "https"
    } else {
        "http"
    };
    log::info!("listening on {scheme}://{}", public.addr);
    log::info!("admin API on http://{}/v1", admin.addr);
    log::info!("admin console on http://{}/ui/", admin.addr);

    let sweep = RetentionSweep {
        profiles: profiles.clone(),
        catalog: catalog_handle.clone(),
        directory: directory.clone(),
        outbox: outbox.clone(),
        retention_days: config.store.profile_ttl_days,
    };
    let mut background = vec![actix_rt::spawn(tasks::sweep_sessions(
        directory.clone(),
        config.realtime.session_idle(),
        config.realtime.max_sessions,
    ))];
    if config.store.retention_sweep_secs > 0 {
        let every = Duration::from_secs(config.store.retention_sweep_secs);
        background.push(actix_rt::spawn(sweep.clone().every(every)));
    }
    let restart = Arc::new(AtomicBool::new(false));
    if config.store.backend == Backend::Sled {
        background.push(actix_rt::spawn(tasks::restart_when_the_disk_is_freed(
            profiles.clone(),
            config.store.path.clone(),
            public.handle.clone(),
            restart.clone(),
        )));
    }
    if shared {
        background.push(actix_rt::spawn(tasks::watch_shared_store(
            writer,
            profiles.clone(),
        )));
    }
    Ok(Running {
        public,
        admin,
        store,
        profiles,
        directory,
        catalog: catalog_handle,
        ready,
        sweep,
        outbox,
        outbox_task,
        background,
        restart,
    })
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
            let node_id = st.node_name(config.server.bind.port());
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

/// The store threads. With a shared store, other nodes write the same profiles, so writes
/// replay events rather than overwrite (no realization is lost).
fn start_profiles(config: &Config, store: Arc<dyn Store>) -> Result<ProfileService, StoreError> {
    let store: Arc<dyn ProfileStore> = store;
    let settings = ServiceSettings {
        shards: config.store.threads,
        // Durable mode: an answer waits for its write, so nothing waits for more changes.
        write_delay: match config.store.durable {
            true => Duration::ZERO,
            false => Duration::from_millis(config.store.write_delay_ms),
        },
        expected_ids: config.store.expected_ids,
        read_threads: config.store.read_threads,
    };
    match config.store.backend {
        Backend::Redis => ProfileService::start_shared(store, settings),
        Backend::Sled => ProfileService::start(store, settings),
    }
}

fn start_outbox(
    config: &Config,
    store: Arc<dyn Store>,
    catalog: CatalogHandle,
) -> (Outbox, actix_rt::task::JoinHandle<()>) {
    let store: Arc<dyn OutboxStore> = store;
    let s2s = &config.s2s;
    Outbox::start(
        store,
        catalog,
        OutboxSettings {
            timeout: Duration::from_millis(s2s.timeout_ms),
            retry_initial: Duration::from_millis(s2s.retry_initial_ms),
            retry_max: Duration::from_millis(s2s.retry_max_ms),
            max_age_secs: i64::try_from(s2s.max_age_hours * 3600).unwrap_or(i64::MAX),
            max_waiting: s2s.max_waiting,
            region: config.server.dcs_region,
        },
    )
}

/// The public listener: `[server] workers` threads, HTTP/1.x only (HTTP/2 belongs to the load
/// balancer in front). Plain HTTP, or HTTPS with `tls` (from `[server] tls_cert` and `tls_key`).
fn listen_public(
    config: &Config,
    options: StartOptions,
    state: web::Data<AppState>,
    tls: Option<rustls::ServerConfig>,
) -> Result<Bound, StartError> {
    if let Some(tls) = tls {
        return listen_public_tls(config, options, state, tls);
    }
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(no_sniffing())
            .wrap(from_fn(close_after_refusal))
            .app_data(state.clone())
            .configure(routes::configure)
    })
    .workers(config.worker_count())
    .shutdown_timeout(config.server.shutdown_timeout_secs);
    if !options.handle_signals {
        server = server.disable_signals();
    }
    let bind = config.server.bind;
    let server = server.bind(bind).map_err(bind_failed(bind))?;
    Ok(Bound::new(server.addrs(), bind, server.run()))
}

/// `X-Content-Type-Options: nosniff` on every answer of both listeners: a JSONP answer, a
/// pixel or an error body is only ever what its `Content-Type` says, never a script or a page
/// a browser guessed.
fn no_sniffing() -> DefaultHeaders {
    DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// The public listener over TLS, put together as `HttpServer` does it and with its defaults,
/// but with actix-http's HTTP/1 service alone. `HttpServer::bind_rustls_0_23` would put `h2`
/// in front of the ALPN protocols of `tls` (actix-http's `http2` feature is always on, through
/// awc), and browsers would then speak HTTP/2 to the h2 0.3 code (docs/architecture.md,
/// "HTTP/1.1 only").
fn listen_public_tls(
    config: &Config,
    options: StartOptions,
    state: web::Data<AppState>,
    tls: rustls::ServerConfig,
) -> Result<Bound, StartError> {
    let bind = config.server.bind;
    let listener = tcp_listener(bind).map_err(bind_failed(bind))?;
    let addr = listener.local_addr().map_err(bind_failed(bind))?;
    let mut builder = Server::build()
        .workers(config.worker_count())
        .shutdown_timeout(config.server.shutdown_timeout_secs);
    if !options.handle_signals {
        builder = builder.disable_signals();
    }
    let shutdown = builder.graceful_shutdown_signal();
    let builder = builder
        .listen("tributary-public-https", listener, move || {
            let app = App::new()
                .wrap(no_sniffing())
                .wrap(from_fn(close_after_refusal))
                .app_data(state.clone())
                .configure(routes::configure)
                .into_factory()
                .map_err(|e: actix_web::Error| e.error_response());
            let host = addr.to_string();
            let shutdown = shutdown.clone();
            HttpService::build()
                // HttpServer's value (actix-http's own default is none).
                .client_disconnect_timeout(Duration::from_secs(1))
                // Idle keep-alive connections close as a graceful stop begins.
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                // `secure`: `connection_info().scheme()` is "https", so the `demdex` cookie is
                // `SameSite=None; Secure` (routes/cookies.rs).
                .h1(map_config(app, move |_| {
                    AppConfig::__priv_test_new(true, host.clone(), addr)
                }))
                .rustls_0_23(tls.clone())
        })
        .map_err(bind_failed(bind))?;
    Ok(Bound::new(vec![addr], bind, builder.run()))
}

/// A listening socket as `HttpServer::bind` makes one: address reuse, a backlog of 1024.
fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// The admin listener: one worker (admins are few; changes are serialised by the writer).
fn listen_admin(config: &Config, state: web::Data<AdminState>) -> Result<Bound, StartError> {
    let bind = config.admin.bind;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(no_sniffing())
            .wrap(from_fn(close_after_refusal))
            .app_data(state.clone())
            .configure(admin::routes)
    })
    .workers(1)
    .shutdown_timeout(config.server.shutdown_timeout_secs)
    .disable_signals()
    .bind(bind)
    .map_err(bind_failed(bind))?;
    Ok(Bound::new(server.addrs(), bind, server.run()))
}

fn bind_failed(addr: SocketAddr) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    }
}

/// A bound listener, not yet serving: its workers start when it is spawned, so a listener
/// that fails to bind after another one leaves nothing running.
struct Bound {
    addr: SocketAddr,
    server: Server,
}

impl Bound {
    /// `addrs` are those the server bound: with port 0, the one the system picked.
    fn new(addrs: Vec<SocketAddr>, bind: SocketAddr, server: Server) -> Self {
        Bound {
            addr: addrs.first().copied().unwrap_or(bind),
            server,
        }
    }

    fn spawn(self) -> Listener {
        Listener {
            addr: self.addr,
            handle: self.server.handle(),
            task: actix_rt::spawn(self.server),
        }
    }
}

/// `[admin] token`, or one generated now and shown once, so the operator can use it (set the
/// key to keep one across starts).
fn admin_token(config: &Config) -> String {
    if config.admin.token.is_empty() {
        let token = admin::generate_token();
        log::warn!("admin token (generated at start, shown once): {token}");
        token
    } else {
        config.admin.token.clone()
    }
}
