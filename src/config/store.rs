//! `[store]`: where profiles, mappings, the catalog and the outbox are kept.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bad, range, ConfigError};

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
    /// Threads that do the event path's profile and id-mapping reads (a disk slow to read
    /// wants more).
    pub read_threads: usize,
    /// How long a changed profile may wait in memory before it is written; changes made in
    /// that window are written together. A crash loses at most this (plus `flush_every_ms`).
    pub write_delay_ms: u64,
    /// Profiles plus ID-sync mappings the store is expected to hold: the size of the in-memory
    /// filter that spares reads of ids never stored (1.2 MB per million, allocated at start;
    /// at most a billion, 1.2 GB). Beyond it more of those reads happen; answers stay right.
    pub expected_ids: usize,
    /// Durable mode: an event is answered only once its profile change is on disk (written at
    /// the writers' next tick and flushed in a flush shared by all events waiting then), so a
    /// crash loses no answered event. `write_delay_ms` does not apply then.
    pub durable: bool,
    /// Durable mode: how long an event waits for its write; past it (or when the write fails)
    /// the event is answered with an error entry saying its change is not yet durable.
    pub durable_wait_ms: u64,
    /// Shed events while this many changed profiles wait to be written (the disk is behind).
    pub max_pending_writes: usize,
    /// Shed events while this many wait and the store is failing (a full disk, an I/O error):
    /// a smaller bound, so a broken disk does not grow memory up to `max_pending_writes`.
    pub max_pending_writes_failing: usize,
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
            read_threads: 4,
            write_delay_ms: 1000,
            durable: false,
            durable_wait_ms: 2000,
            max_pending_writes: 500_000,
            max_pending_writes_failing: 10_000,
            expected_ids: 10_000_000,
            backend: Backend::Sled,
            redis_urls: Vec::new(),
            redis_prefix: "tributary".into(),
            redis_timeout_ms: 100,
            redis_connections: 16,
            node_id: String::new(),
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(bad("store.path", "must not be empty"));
        }
        if self.cache_capacity < 1024 * 1024 {
            return Err(bad(
                "store.cache_capacity",
                "must be at least 1048576 bytes",
            ));
        }
        if !(1..=60_000).contains(&self.flush_every_ms) {
            return Err(bad("store.flush_every_ms", "must be between 1 and 60000"));
        }
        range("store.threads", self.threads as u64, 1, 64)?;
        range("store.read_threads", self.read_threads as u64, 1, 256)?;
        if self.backend == Backend::Redis {
            if self.redis_urls.is_empty() {
                return Err(bad(
                    "store.redis_urls",
                    "backend \"redis\" needs at least one node, like redis://10.0.0.1:6379",
                ));
            }
            for url in &self.redis_urls {
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
        if self.redis_prefix.is_empty() || !key_safe(&self.redis_prefix) {
            return Err(bad(
                "store.redis_prefix",
                "must be 1 to 64 printable characters without { } : *",
            ));
        }
        if !key_safe(&self.node_id) {
            return Err(bad(
                "store.node_id",
                "must be at most 64 printable characters without { } : *",
            ));
        }
        range("store.redis_timeout_ms", self.redis_timeout_ms, 1, 60_000)?;
        range(
            "store.redis_connections",
            self.redis_connections as u64,
            1,
            1024,
        )?;
        range("store.write_delay_ms", self.write_delay_ms, 0, 60_000)?;
        range("store.durable_wait_ms", self.durable_wait_ms, 1, 60_000)?;
        range(
            "store.expected_ids",
            self.expected_ids as u64,
            1_000,
            1_000_000_000,
        )?;
        range(
            "store.max_pending_writes",
            self.max_pending_writes as u64,
            1,
            100_000_000,
        )?;
        range(
            "store.max_pending_writes_failing",
            self.max_pending_writes_failing as u64,
            0,
            self.max_pending_writes as u64,
        )?;
        if self.profile_ttl_days == 0 || self.profile_ttl_days > 3650 {
            return Err(bad("store.profile_ttl_days", "must be between 1 and 3650"));
        }
        range(
            "store.retention_sweep_secs",
            self.retention_sweep_secs,
            0,
            30 * 86_400,
        )?;
        Ok(())
    }
}

/// Fits inside a Redis key without touching its hash tag (`{…}`) or our `:` separators.
fn key_safe(v: &str) -> bool {
    v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b':' | b'*'))
}

#[cfg(test)]
mod tests {
    use super::Backend;
    use crate::config::tests::{env, error};
    use crate::config::Config;

    #[test]
    fn read_threads_and_the_filter_size_are_bounded() {
        let c = Config::from_toml("[store]\nread_threads = 8\nexpected_ids = 5000\n", env(&[]))
            .unwrap();
        assert_eq!((c.store.read_threads, c.store.expected_ids), (8, 5000));
        assert!(error("[store]\nread_threads = 0\n", &[])
            .starts_with("config key store.read_threads: must be between 1 and 256"));
        assert!(error("[store]\nexpected_ids = 10000000000\n", &[])
            .starts_with("config key store.expected_ids: must be between 1000 and 1000000000"));
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
}
