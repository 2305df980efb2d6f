//! Typed configuration (DESIGN.md §7): `config.toml`, overridden key by key by environment
//! variables `TRIBUTARY__SECTION__KEY`, validated before anything starts.
//!
//! Unknown keys and bad values stop start-up with a message that names the key, e.g.
//! `config key realtime.deadline_ms: must be between 1 and 10000 (got 0)`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::catalog::{Catalog, Provider};
use crate::telemetry::logging::LogFormat;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "TRIBUTARY";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub realtime: RealtimeConfig,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub s2s: S2sConfig,
    /// Seed providers, added to the seed file's (AAM field names, as in the admin API).
    #[serde(default)]
    pub providers: Vec<Provider>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener (`/event`, `/health`, `/ready`, `/metrics`). Port 0 picks a free port.
    pub bind: String,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Returned as `dcs_region` on every answer.
    pub dcs_region: u32,
    /// `Domain` of the `demdex` cookie; empty = the request's host.
    pub cookie_domain: String,
    /// Origins allowed to read answers with credentials; empty = echo any caller's origin.
    pub cors_origins: Vec<String>,
    /// Whether `d_cts=2` may expose traits, segments and provider outcomes.
    pub allow_cts: bool,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Shed events (`429`) while a worker thread runs this many milliseconds behind; 0 = never.
    pub shed_lag_ms: u64,
    /// Shed events while this many are in flight (waiting on providers or sessions).
    pub max_in_flight: usize,
    /// Hosts an `/ibs` call may redirect to (`redir`): `sync.partner.example`, or
    /// `*.partner.example` for its subdomains. Empty = never redirect.
    pub idsync_redirect_hosts: Vec<String>,
    /// Integration codes `d_cid_ic` may name, with their data source ids (`crm = 9001`).
    /// Matched case-insensitively; `DSID_<n>` always names data source `n`.
    pub integration_codes: HashMap<String, u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            dcs_region: 7,
            cookie_domain: String::new(),
            cors_origins: Vec::new(),
            allow_cts: true,
            shutdown_timeout_secs: 10,
            shed_lag_ms: 25,
            max_in_flight: 20_000,
            idsync_redirect_hosts: Vec::new(),
            integration_codes: HashMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the embedded sled database.
    pub path: PathBuf,
    /// Bytes of sled page cache (sled's default of 1 GiB is too much for most hosts).
    pub cache_capacity: u64,
    /// How often sled flushes acknowledged writes to disk.
    pub flush_every_ms: u64,
    /// Profiles unseen this long are purged (retention).
    pub profile_ttl_days: u32,
    /// How often the retention sweep runs, in seconds; 0 = never.
    pub retention_sweep_secs: u64,
    /// Store writer threads (each visitor always on the same one).
    pub threads: usize,
    /// How long a changed profile may wait in memory before it is written; changes made in
    /// that window are written together. A crash loses at most this (plus `flush_every_ms`).
    pub write_delay_ms: u64,
    /// Shed events while this many changed profiles wait to be written (the disk is behind).
    pub max_pending_writes: usize,
    /// `sled` (embedded, one node) or `redis` (Redis Cluster or Valkey, shared by many nodes).
    pub backend: Backend,
    /// `redis`: seed nodes of the cluster, `redis://host:port` (or `rediss://`).
    pub redis_urls: Vec<String>,
    /// `redis`: prefix of every key, so that deployments can share a cluster.
    pub redis_prefix: String,
    /// `redis`: how long a store call may take before it fails (connect or answer).
    pub redis_timeout_ms: u64,
    /// `redis`: connections each node keeps open.
    pub redis_connections: usize,
    /// This node's name, for its S2S outbox in a shared store; keep it stable across restarts.
    /// Empty = the host name and the public port.
    pub node_id: String,
}

/// Where profiles, mappings, the catalog and the outbox are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Redis,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data/tributary"),
            cache_capacity: 64 * 1024 * 1024,
            flush_every_ms: 500,
            profile_ttl_days: 120,
            retention_sweep_secs: 3600,
            threads: 2,
            write_delay_ms: 1000,
            max_pending_writes: 500_000,
            backend: Backend::Sled,
            redis_urls: Vec::new(),
            redis_prefix: "tributary".into(),
            redis_timeout_ms: 100,
            redis_connections: 16,
            node_id: String::new(),
        }
    }
}

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
}

/// The admin REST API's listener (DESIGN.md §5).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener; keep it off the public network. Port 0 picks a free port.
    pub bind: String,
    /// Bearer token required on every admin request; empty = a random one is generated at
    /// start and printed once.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: "127.0.0.1:8081".into(),
            token: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (env_logger's default lines) or `json` (one object per line).
    pub format: LogFormat,
}

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

/// What a TCF v2 consent string must grant when a call says GDPR applies (DESIGN.md §6).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Our IAB vendor id: with `gdpr=1`, processing needs this vendor's consent. Unset = only
    /// purposes are checked (Tributary run by the publisher itself, not as a listed vendor).
    pub tcf_vendor_id: Option<u32>,
    /// TCF purposes that need consent; purpose 1 is always required.
    pub tcf_purposes: Vec<u32>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            tcf_vendor_id: None,
            tcf_purposes: vec![1, 10],
        }
    }
}

impl StoreConfig {
    /// `node_id`, or the host name and `port` when it is empty.
    pub fn node_name(&self, port: u16) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().replace(['{', '}', ':', '*', ' '], "-"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        format!("{host}-{port}")
    }
}

impl PrivacyConfig {
    /// The checks a TC string must pass; call after [`Config::validate`].
    pub fn tcf_policy(&self) -> crate::core::consent::TcfPolicy {
        let purposes: Vec<u8> = self
            .tcf_purposes
            .iter()
            .filter_map(|&p| u8::try_from(p).ok())
            .collect();
        crate::core::consent::TcfPolicy::new(
            &purposes,
            self.tcf_vendor_id.and_then(|v| u16::try_from(v).ok()),
        )
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// JSON file (`providers`, `traits`, `segments`) loaded into an empty store at start.
    pub seed: Option<PathBuf>,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config key {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads `path`, applies the process's `TRIBUTARY__…` variables and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// As [`Config::load`], with the environment given explicitly (tests, tools).
    pub fn load_with_env(
        path: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(bad("", format!("file {} does not exist", path.display())));
        }
        let file = config::File::from(path).format(config::FileFormat::Toml);
        Self::build(file, env)
    }

    /// Parses TOML text (no file), with the given environment overrides.
    pub fn from_toml(
        text: &str,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        Self::build(config::File::from_str(text, config::FileFormat::Toml), env)
    }

    fn build<S>(source: S, env: Option<HashMap<String, String>>) -> Result<Config, ConfigError>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .separator("__")
            .prefix_separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("server.cors_origins")
            .with_list_parse_key("server.idsync_redirect_hosts")
            .with_list_parse_key("privacy.tcf_purposes")
            .with_list_parse_key("store.redis_urls");
        if let Some(vars) = env {
            environment = environment.source(Some(vars.into_iter().collect()));
        }
        let built = config::Config::builder()
            .add_source(source)
            .add_source(environment)
            .build()
            .map_err(from_config_error)?;
        let cfg: Config = built.try_deserialize().map_err(from_config_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and relations that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        s.bind
            .parse::<SocketAddr>()
            .map_err(|_| bad("server.bind", format!("not an address:port ({:?})", s.bind)))?;
        range("server.shed_lag_ms", s.shed_lag_ms, 0, 10_000)?;
        range(
            "server.max_in_flight",
            s.max_in_flight as u64,
            1,
            10_000_000,
        )?;
        if s.workers > 1024 {
            return Err(bad(
                "server.workers",
                "must be at most 1024 (0 = one per core)",
            ));
        }
        if s.dcs_region > 1000 {
            return Err(bad("server.dcs_region", "must be at most 1000"));
        }
        if !s.cookie_domain.is_empty()
            && !s
                .cookie_domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(bad(
                "server.cookie_domain",
                "must be a domain name like .example.com",
            ));
        }
        for origin in &s.cors_origins {
            if !is_origin(origin) {
                return Err(bad(
                    "server.cors_origins",
                    format!("{origin:?} is not an origin like https://www.example.com"),
                ));
            }
        }
        for host in &s.idsync_redirect_hosts {
            if !crate::core::idsync::is_host_pattern(host) {
                return Err(bad(
                    "server.idsync_redirect_hosts",
                    format!("{host:?} is not a host like sync.example.com or *.example.com"),
                ));
            }
        }
        for (code, dpid) in &s.integration_codes {
            if code.is_empty() || code.len() > 255 || code.chars().any(char::is_control) {
                return Err(bad(
                    "server.integration_codes",
                    format!("{code:?} is not an integration code"),
                ));
            }
            if *dpid == 0 {
                return Err(bad(
                    "server.integration_codes",
                    format!("{code:?}: data source ids start at 1"),
                ));
            }
        }

        self.admin.bind.parse::<SocketAddr>().map_err(|_| {
            bad(
                "admin.bind",
                format!("not an address:port ({:?})", self.admin.bind),
            )
        })?;
        let token = &self.admin.token;
        if !token.is_empty()
            && (token.len() < 16
                || token.len() > 256
                || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(bad(
                "admin.token",
                "must be 16 to 256 printable ASCII characters (or empty: one is generated)",
            ));
        }

        let st = &self.store;
        if st.path.as_os_str().is_empty() {
            return Err(bad("store.path", "must not be empty"));
        }
        if st.cache_capacity < 1024 * 1024 {
            return Err(bad(
                "store.cache_capacity",
                "must be at least 1048576 bytes",
            ));
        }
        if !(1..=60_000).contains(&st.flush_every_ms) {
            return Err(bad("store.flush_every_ms", "must be between 1 and 60000"));
        }
        range("store.threads", st.threads as u64, 1, 64)?;
        if st.backend == Backend::Redis {
            if st.redis_urls.is_empty() {
                return Err(bad(
                    "store.redis_urls",
                    "backend \"redis\" needs at least one node, like redis://10.0.0.1:6379",
                ));
            }
            for url in &st.redis_urls {
                if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                    || url::Url::parse(url).map_or(true, |u| u.host_str().is_none())
                {
                    return Err(bad(
                        "store.redis_urls",
                        format!("{url:?} is not a URL like redis://10.0.0.1:6379"),
                    ));
                }
            }
        }
        let key_safe = |v: &str| {
            v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b':' | b'*'))
        };
        if st.redis_prefix.is_empty() || !key_safe(&st.redis_prefix) {
            return Err(bad(
                "store.redis_prefix",
                "must be 1 to 64 printable characters without { } : *",
            ));
        }
        if !key_safe(&st.node_id) {
            return Err(bad(
                "store.node_id",
                "must be at most 64 printable characters without { } : *",
            ));
        }
        range("store.redis_timeout_ms", st.redis_timeout_ms, 1, 60_000)?;
        range(
            "store.redis_connections",
            st.redis_connections as u64,
            1,
            1024,
        )?;
        range("store.write_delay_ms", st.write_delay_ms, 0, 60_000)?;
        range(
            "store.max_pending_writes",
            st.max_pending_writes as u64,
            1,
            100_000_000,
        )?;
        if st.profile_ttl_days == 0 || st.profile_ttl_days > 3650 {
            return Err(bad("store.profile_ttl_days", "must be between 1 and 3650"));
        }
        range(
            "store.retention_sweep_secs",
            st.retention_sweep_secs,
            0,
            30 * 86_400,
        )?;

        let r = &self.realtime;
        range("realtime.deadline_ms", r.deadline_ms, 1, 10_000)?;
        range("realtime.network_buffer_ms", r.network_buffer_ms, 0, 1000)?;
        range("realtime.reply_reserve_ms", r.reply_reserve_ms, 0, 1000)?;
        range(
            "realtime.profile_read_wait_ms",
            r.profile_read_wait_ms,
            0,
            10_000,
        )?;
        range(
            "realtime.min_provider_budget_ms",
            r.min_provider_budget_ms,
            1,
            10_000,
        )?;
        if r.network_buffer_ms + r.reply_reserve_ms >= r.deadline_ms {
            return Err(bad(
                "realtime.deadline_ms",
                "must be larger than network_buffer_ms + reply_reserve_ms",
            ));
        }
        range("realtime.session_idle_secs", r.session_idle_secs, 1, 86_400)?;
        range(
            "realtime.max_sessions",
            r.max_sessions as u64,
            1,
            100_000_000,
        )?;
        range(
            "realtime.provider_body_limit",
            r.provider_body_limit as u64,
            1024,
            16 << 20,
        )?;
        range(
            "realtime.provider_pool_size",
            r.provider_pool_size as u64,
            1,
            100_000,
        )?;
        range(
            "realtime.circuit_failures",
            u64::from(r.circuit_failures),
            0,
            1_000,
        )?;
        if !(r.circuit_failure_rate > 0.0 && r.circuit_failure_rate <= 1.0) {
            return Err(bad(
                "realtime.circuit_failure_rate",
                format!(
                    "must be above 0 and at most 1 (got {})",
                    r.circuit_failure_rate
                ),
            ));
        }
        range(
            "realtime.circuit_window",
            u64::from(r.circuit_window),
            1,
            64,
        )?;
        range(
            "realtime.circuit_cooldown_ms",
            r.circuit_cooldown_ms,
            1,
            3_600_000,
        )?;

        let o = &self.s2s;
        range("s2s.timeout_ms", o.timeout_ms, 1, 60_000)?;
        range("s2s.retry_initial_ms", o.retry_initial_ms, 1, 3_600_000)?;
        range(
            "s2s.retry_max_ms",
            o.retry_max_ms,
            o.retry_initial_ms,
            86_400_000,
        )?;
        range("s2s.max_age_hours", o.max_age_hours, 1, 24 * 365)?;
        range("s2s.max_waiting", o.max_waiting as u64, 1, 100_000_000)?;

        let p = &self.privacy;
        if let Some(vendor) = p.tcf_vendor_id {
            range("privacy.tcf_vendor_id", vendor.into(), 1, 65_535)?;
        }
        for &purpose in &p.tcf_purposes {
            // TCF v2 has 11 purposes; its consent field has room for 24.
            range("privacy.tcf_purposes", purpose.into(), 1, 24)?;
        }

        if !self.providers.is_empty() {
            let catalog = Catalog {
                providers: self.providers.clone(),
                ..Default::default()
            };
            catalog
                .validate()
                .map_err(|e| bad("providers", e.to_string()))?;
        }
        if let Some(seed) = &self.catalog.seed {
            if !seed.exists() {
                return Err(bad(
                    "catalog.seed",
                    format!("file {} does not exist", seed.display()),
                ));
            }
        }
        Ok(())
    }

    /// The seed catalog: the seed file's objects plus `[[providers]]`, validated together.
    pub fn seed_catalog(&self) -> Result<Option<Catalog>, ConfigError> {
        let mut catalog = match &self.catalog.seed {
            Some(path) => Catalog::from_seed_file(path).map_err(|e| bad("catalog.seed", e))?,
            None if self.providers.is_empty() => return Ok(None),
            None => Catalog::default(),
        };
        catalog.providers.extend(self.providers.iter().cloned());
        catalog
            .validate()
            .map_err(|e| bad("catalog.seed", e.to_string()))?;
        Ok(Some(catalog))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        // validate() checked it; the fallback is never used by a validated config.
        self.admin
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8081)))
    }

    pub fn public_addr(&self) -> SocketAddr {
        // validate() checked it; the fallback is never used by a validated config.
        self.server
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    pub fn worker_count(&self) -> usize {
        nonzero_or_cores(self.server.workers)
    }
}

fn nonzero_or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }
}

fn range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

/// `scheme://host[:port]`, nothing more (CORS compares origins exactly).
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    (scheme == "http" || scheme == "https")
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The config crate reports keys inside its messages ("… for key `server.bind`"); we keep its
/// text, which names the key, and add the key when it can be found.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or("")
        .to_string();
    ConfigError { key, message: text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.realtime.deadline_ms, 100);
    }

    #[test]
    fn env_overrides_any_key() {
        let c = Config::from_toml(
            "[server]\nbind = \"127.0.0.1:1\"\n",
            env(&[
                ("TRIBUTARY__SERVER__BIND", "127.0.0.1:0"),
                ("TRIBUTARY__STORE__PATH", "/tmp/x"),
                ("TRIBUTARY__REALTIME__DEADLINE_MS", "250"),
                (
                    "TRIBUTARY__SERVER__CORS_ORIGINS",
                    "https://a.example,http://b.example:8080",
                ),
                ("TRIBUTARY__SERVER__ALLOW_CTS", "false"),
                ("OTHER__SERVER__BIND", "nope"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:0");
        assert_eq!(c.store.path, PathBuf::from("/tmp/x"));
        assert_eq!(c.realtime.deadline_ms, 250);
        assert_eq!(
            c.server.cors_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        assert!(!c.server.allow_cts);
        let c = Config::from_toml("", env(&[("TRIBUTARY__LOG__FORMAT", "json")])).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        let e = Config::from_toml("[log]\nformat = \"xml\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("xml"), "{e}");
    }

    #[test]
    fn id_sync_keys() {
        let c = Config::from_toml(
            "[server]\nidsync_redirect_hosts = [\"sync.a.example\"]\n\
             [server.integration_codes]\nCRM_Login = 9001\n",
            env(&[
                (
                    "TRIBUTARY__SERVER__IDSYNC_REDIRECT_HOSTS",
                    "x.example,*.y.example",
                ),
                ("TRIBUTARY__SERVER__INTEGRATION_CODES__LOYALTY", "9002"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.idsync_redirect_hosts, ["x.example", "*.y.example"]);
        let mut codes: Vec<(String, u32)> = c
            .server
            .integration_codes
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            [("crm_login".to_string(), 9001), ("loyalty".into(), 9002)]
        );
        assert!(
            error("[server]\nidsync_redirect_hosts = [\"https://x\"]\n", &[])
                .starts_with("config key server.idsync_redirect_hosts")
        );
        assert!(error("[server.integration_codes]\ncrm = 0\n", &[])
            .starts_with("config key server.integration_codes"));
    }

    #[test]
    fn store_backend_keys() {
        let c = Config::from_toml(
            "[store]\nbackend = \"redis\"\nredis_urls = [\"redis://10.0.0.1:6379\"]\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.store.backend, Backend::Redis);
        assert_eq!(c.store.node_name(8080).rsplit('-').next(), Some("8080"));
        let c = Config::from_toml(
            "",
            env(&[
                ("TRIBUTARY__STORE__BACKEND", "redis"),
                ("TRIBUTARY__STORE__REDIS_URLS", "redis://a:1,redis://b:2"),
                ("TRIBUTARY__STORE__NODE_ID", "dcs-3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.redis_urls, ["redis://a:1", "redis://b:2"]);
        assert_eq!(c.store.node_name(1), "dcs-3");
        assert!(error("[store]\nbackend = \"redis\"\n", &[])
            .starts_with("config key store.redis_urls: backend \"redis\" needs"));
        assert!(error(
            "[store]\nbackend = \"redis\"\nredis_urls = [\"http://x\"]\n",
            &[]
        )
        .starts_with("config key store.redis_urls:"));
        assert!(error("[store]\nredis_prefix = \"a{b}\"\n", &[])
            .starts_with("config key store.redis_prefix:"));
        assert!(error("[store]\nbackend = \"mongo\"\n", &[]).contains("mongo"));
    }

    #[test]
    fn privacy_keys() {
        let c = Config::from_toml("", env(&[])).unwrap();
        assert_eq!(
            c.privacy.tcf_policy(),
            crate::core::consent::TcfPolicy::new(&[1, 10], None)
        );
        let c = Config::from_toml(
            "[privacy]\ntcf_vendor_id = 565\ntcf_purposes = [10, 3]\n",
            env(&[]),
        )
        .unwrap();
        let policy = c.privacy.tcf_policy();
        assert_eq!(
            (policy.purposes, policy.vendor_id),
            (vec![1, 3, 10], Some(565))
        );
        let c = Config::from_toml("", env(&[("TRIBUTARY__PRIVACY__TCF_PURPOSES", "1,2")])).unwrap();
        assert_eq!(c.privacy.tcf_purposes, [1, 2]);
        assert_eq!(
            error("[privacy]\ntcf_purposes = [25]\n", &[]),
            "config key privacy.tcf_purposes: must be between 1 and 24 (got 25)"
        );
        assert_eq!(
            error("[privacy]\ntcf_vendor_id = 70000\n", &[]),
            "config key privacy.tcf_vendor_id: must be between 1 and 65535 (got 70000)"
        );
    }

    fn error(toml: &str, vars: &[(&str, &str)]) -> String {
        Config::from_toml(toml, env(vars)).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = error("[server]\nbogus = 1\n", &[]);
        assert!(e.contains("bogus"), "{e}");
        let e = error("[nosuch]\nx = 1\n", &[]);
        assert!(e.contains("nosuch"), "{e}");
        assert_eq!(
            error("[realtime]\ndeadline_ms = 0\n", &[]),
            "config key realtime.deadline_ms: must be between 1 and 10000 (got 0)"
        );
        let e = error("", &[("TRIBUTARY__SERVER__BIND", "not-an-address")]);
        assert!(e.starts_with("config key server.bind:"), "{e}");
        let e = error("", &[("TRIBUTARY__REALTIME__DEADLINE_MS", "soon")]);
        assert!(e.contains("deadline_ms"), "{e}");
        let e = error("", &[("TRIBUTARY__SERVER__NOPE", "1")]);
        assert!(e.contains("nope"), "{e}");
        let e = error("[server]\ncors_origins = [\"*\"]\n", &[]);
        assert!(e.starts_with("config key server.cors_origins:"), "{e}");
        let e = error(
            "[realtime]\ndeadline_ms = 10\nnetwork_buffer_ms = 5\nreply_reserve_ms = 5\n",
            &[],
        );
        assert!(e.starts_with("config key realtime.deadline_ms:"), "{e}");
        let e = error("[catalog]\nseed = \"/nonexistent/catalog.json\"\n", &[]);
        assert!(e.starts_with("config key catalog.seed:"), "{e}");
        let e = error(
            "[[providers]]\npid = 1\nname = \"a\"\nurl = \"gopher://x\"\ndataSourceId = 1\n",
            &[],
        );
        assert!(e.starts_with("config key providers: provider 1 url"), "{e}");
        assert_eq!(
            error("[realtime]\ncircuit_failure_rate = 0.0\n", &[]),
            "config key realtime.circuit_failure_rate: must be above 0 and at most 1 (got 0)"
        );
        assert_eq!(
            error("", &[("TRIBUTARY__REALTIME__CIRCUIT_WINDOW", "65")]),
            "config key realtime.circuit_window: must be between 1 and 64 (got 65)"
        );
    }

    #[test]
    fn repository_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let c = Config::load_with_env(&path, env(&[])).unwrap();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let seed = manifest.join(c.catalog.seed.clone().expect("config.toml names a seed"));
        let catalog = Catalog::from_seed_file(&seed).unwrap();
        catalog.validate().unwrap();
    }
}
