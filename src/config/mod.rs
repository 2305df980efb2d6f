//! Typed configuration (keys documented in `config.toml` and the README's Configuration
//! section): `config.toml`, overridden key by key by environment variables
//! `TRIBUTARY__SECTION__KEY`, validated before anything starts.
//!
//! Each section lives in its own file with the checks of its keys; this file loads the whole,
//! runs the sections' checks in turn and then those that span sections.
//!
//! Unknown keys and bad values stop start-up with a message that names the key, e.g.
//! `config key realtime.deadline_ms: must be between 1 and 10000 (got 0)`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::core::catalog::{Catalog, Provider};
use crate::telemetry::logging::LogFormat;

mod admin;
mod id_service;
mod privacy;
mod profiles;
mod realtime;
mod s2s;
mod server;
mod store;

pub use admin::AdminConfig;
pub use id_service::IdServiceConfig;
pub use privacy::PrivacyConfig;
pub use profiles::{MergeRule, ProfilesConfig};
pub use realtime::RealtimeConfig;
pub use s2s::S2sConfig;
pub use server::ServerConfig;
pub use store::{Backend, StoreConfig};

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
    #[serde(default)]
    pub profiles: ProfilesConfig,
    #[serde(default)]
    pub id_service: IdServiceConfig,
    /// Seed providers, added to the seed file's (AAM field names, as in the admin API).
    #[serde(default)]
    pub providers: Vec<Provider>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (env_logger's default lines) or `json` (one object per line).
    pub format: LogFormat,
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
            .with_list_parse_key("server.trusted_proxies")
            .with_list_parse_key("privacy.tcf_purposes")
            .with_list_parse_key("profiles.cross_device_data_sources")
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

    /// Checks ranges and relations that types alone cannot express: each section's keys, then
    /// what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.admin.validate()?;
        self.store.validate()?;
        self.realtime.validate()?;
        self.s2s.validate()?;
        self.privacy.validate()?;
        self.id_service.validate()?;
        self.profiles.validate()?;

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

/// Start of the message of a `bind` that is not an address; [`from_config_error`] knows it.
const NOT_AN_ADDRESS: &str = "not an address:port";

/// A listener's `bind`, parsed as the configuration is read. Read as text first: the config
/// crate turns a number (`bind = 8080`, or an environment value it parsed) back into its text,
/// and the message quotes what was written.
fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map_err(|_| serde::de::Error::custom(format!("{NOT_AN_ADDRESS} ({text:?})")))
}

/// Start of the message of a `trusted_proxies` entry that is no CIDR; [`from_config_error`]
/// knows it.
const NOT_A_CIDR: &str = "not a CIDR like 10.0.0.0/8 or an address";

/// `server.trusted_proxies`: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
fn cidrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            let trimmed = text.trim();
            trimmed
                .parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| trimmed.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{NOT_A_CIDR} ({text:?})")))
        })
        .collect()
}

/// The config crate reports keys inside its messages ("… for key `server.bind`"); we keep its
/// text, which names the key, and add the key when it can be found. Our own `bind` message
/// drops that suffix, reading as the checks of every other key do.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    if let config::ConfigError::At {
        error,
        key: Some(key),
        ..
    } = &e
    {
        if let config::ConfigError::Message(message) = error.as_ref() {
            // Our own deserializers' messages, which need no "for key" suffix.
            if message.starts_with(NOT_AN_ADDRESS)
                || message.starts_with(NOT_A_CIDR)
                || message.starts_with("must be ")
            {
                return bad(key, message.clone());
            }
        }
    }
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

    pub(super) fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
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
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:8081");
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
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:0");
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

    pub(super) fn error(toml: &str, vars: &[(&str, &str)]) -> String {
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
        assert_eq!(
            error(
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0/8\"]\n",
                &[]
            ),
            "config key server.trusted_proxies: not a CIDR like 10.0.0.0/8 or an address \
             (\"10.0.0/8\")"
        );
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        let c = Config::from_toml(
            "[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"127.0.0.1\", \"2001:db8::/32\"]\n",
            env(&[]),
        )
        .unwrap();
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"]);
        assert!(Config::from_toml("", env(&[]))
            .unwrap()
            .server
            .trusted_proxies
            .is_empty());
        let c = Config::from_toml(
            "",
            env(&[(
                "TRIBUTARY__SERVER__TRUSTED_PROXIES",
                "10.0.0.0/8,192.168.0.1",
            )]),
        )
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn crate_messages_keep_their_text() {
        // Only our own `bind` message loses the config crate's " for key …" suffix.
        assert_eq!(
            error("", &[("TRIBUTARY__REALTIME__DEADLINE_MS", "soon")]),
            "config key realtime.deadline_ms: invalid type: string \"soon\", expected an \
             integer for key `realtime.deadline_ms` in the environment"
        );
        assert_eq!(
            error("[log]\nformat = \"xml\"\n", &[]),
            "config key log.format: enum LogFormat does not have variant constructor xml for \
             key `log.format`"
        );
        assert_eq!(
            error("[server]\nbind = [\"x\"]\n", &[]),
            "config key server.bind: invalid type: sequence, expected a string for key \
             `server.bind`"
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
