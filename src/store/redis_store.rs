//! The shared store for many DCS nodes: Redis Cluster (or Valkey), through the `redis` crate's
//! synchronous cluster client. Like [`super::SledStore`], it is only called from store threads
//! and blocking tasks, never from an actix-web worker.
//!
//! Keys, all under `prefix` (`[store] redis_prefix`); `{…}` is the Redis Cluster hash tag
//! that picks the slot:
//! - `P:p:{<visitor>}`: a profile, in the same versioned encoding as sled's; it expires after
//!   `profile_ttl_days` without a write (the store's own expiry does retention's purge).
//!   Its value starts with a header: the byte 0xFF, then the profile's version, a random token
//!   every write sets, as 8 big-endian bytes. A node holding the profile in memory checks that
//!   header on each event (`GETRANGE` of 9 bytes) instead of reading the profile
//!   (`ProfileService::refresh`). 0xFF is never the first byte of an encoded profile, so a
//!   value written before versions existed is still read (as version 0: read every time until
//!   its next write).
//! - `P:l:{<dpid>:<id>}`: an ID-sync mapping (visitor id, then Unix seconds), with the same
//!   expiry.
//! - `{P:optouts}`: the set of visitors that opted out (never expires).
//! - `{P:catalog}:objects` (a hash, field `<kind>:<id>`, value the versioned JSON) and
//!   `{P:catalog}:version`: one slot, so that a change and its version are written together
//!   by one Lua script.
//! - `{P:outbox:<node>}` (a hash, sequence → delivery) and `{P:outbox:<node>}:seq`: each
//!   node's S2S outbox, delivered by that node (`[store] node_id`); another node does not
//!   take it over.
//!
//! Durability is Redis's: `flush` has nothing to force, so what an acknowledged write survives
//! is set by the servers' `appendonly`/`appendfsync` (README, Deployment).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionLike, FromRedisValue, Value};

use super::codec::{self, decode_json, decode_link, encode_json, encode_link};
use super::{
    new_version, CatalogChange, CatalogKind, CatalogObject, CatalogStore, IdLink, OutboxStore,
    ProfileStore, ScanBatch, ScanCursor, StoreError, Versioned, VersionedWrite,
};
use crate::core::catalog::{Catalog, Destination, Provider, Segment, Trait};
use crate::core::ids::VisitorId;
use crate::core::s2s::Delivery;

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// Seed nodes (`redis://host:port`); the rest of the cluster is discovered.
    pub urls: Vec<String>,
    /// Prefix of every key, so that several deployments (or tests) can share a cluster.
    pub prefix: String,
    /// This node's name, for its S2S outbox.
    pub node_id: String,
    /// Profiles and mappings unwritten this long expire.
    pub profile_ttl: Duration,
    /// Connecting and answering: a slow or dead node fails the call after this.
    pub timeout: Duration,
    /// Connections kept open (calls beyond wait for one).
    pub connections: usize,
}

/// Redis Cluster-backed [`ProfileStore`], [`CatalogStore`] and [`OutboxStore`].
pub struct RedisStore {
    client: ClusterClient,
    pool: Vec<Mutex<Option<ClusterConnection>>>,
    next: AtomicUsize,
    settings: RedisSettings,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Io(format!("redis: {e}"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A connection slot holds no invariant a panic could break; at worst it is reconnected.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const CHANGE_SCRIPT: &str = r"
if ARGV[1] == 'put' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
return redis.call('INCR', KEYS[2])
";

/// Compare-and-set of one profile: ARGV[1] says whether a value is expected, ARGV[2] is it
/// (without the version header), ARGV[3] the new value (with its header), ARGV[4] its expiry
/// in seconds. Already written (the new value's version is stored: the call is made again
/// after its answer was lost) counts as written.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 9) == string.sub(ARGV[3], 1, 9) then
  return 1
end
if current and string.byte(current, 1) == 255 then
  current = string.sub(current, 10)
end
if (ARGV[1] == '0' and current == false) or (ARGV[1] == '1' and current == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
  return 1
end
return 0
";

/// Compare-and-set of one profile by version: ARGV[1] the expected version header ('' when
/// no profile may be stored), ARGV[2] the new value (with its header), ARGV[3] the expiry in
/// seconds. As in `SWAP_SCRIPT`, finding the new value's version already stored counts as
/// written: versions are random, so only this write can have stored it.
const SWAP_VERSION_SCRIPT: &str = r"
local current = redis.call('GETRANGE', KEYS[1], 0, 8)
if current == string.sub(ARGV[2], 1, 9) then return 1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// First byte of a stored profile's version header; never the first of an encoded profile.
const VERSIONED: u8 = 0xFF;
/// The header's length: the marker and 8 bytes of version.
const HEADER: usize = 9;

fn header(version: u64) -> [u8; HEADER] {
    let mut h = [0; HEADER];
    h[0] = VERSIONED;
    h[1..].copy_from_slice(&version.to_be_bytes());
    h
}

/// A stored value with the version header `version` in front of `profile`.
fn with_header(version: u64, profile: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + profile.len());
    value.extend_from_slice(&header(version));
    value.extend_from_slice(profile);
    value
}

/// A stored value's version (0 without a header) and the encoded profile.
fn split_header(value: Vec<u8>) -> (u64, Vec<u8>) {
    match value.get(..HEADER) {
        Some(h) if h[0] == VERSIONED => {
            let mut version = [0; 8];
            version.copy_from_slice(&h[1..]);
            (u64::from_be_bytes(version), value[HEADER..].to_vec())
        }
        _ => (0, value),
    }
}

impl RedisStore {
    /// Connects to the cluster (failing at once if no seed node answers).
    pub fn open(settings: RedisSettings) -> Result<RedisStore, StoreError> {
        let client = ClusterClientBuilder::new(settings.urls.clone())
            .connection_timeout(settings.timeout)
            .response_timeout(settings.timeout)
            .retries(2)
            .build()?;
        let store = RedisStore {
            pool: (0..settings.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            client,
            next: AtomicUsize::new(0),
            settings,
        };
        store.with(|c| Cmd::new().arg("PING").query::<String>(c))?;
        Ok(store)
    }

    /// Runs `work` on a pooled connection. A connection that failed is dropped and the next
    /// call opens a new one; a call that failed because its connection was found broken
    /// (closed while it sat in the pool, as after a node restarts: the request never reached
    /// a server) is made once more on a new one.
    fn with<T>(
        &self,
        work: impl Fn(&mut ClusterConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()];
        let mut guard = lock(slot);
        let mut retried = false;
        loop {
            if guard.is_none() {
                let conn = self.client.get_connection()?;
                conn.set_read_timeout(Some(self.settings.timeout))?;
                conn.set_write_timeout(Some(self.settings.timeout))?;
                *guard = Some(conn);
            }
            let Some(conn) = guard.as_mut() else {
                return Err(StoreError::Io("redis: no connection".into()));
            };
            match work(conn) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    // Any failure but the server's own answer (a script's error, a wrong type)
                    // may have left the connection broken: an answer cut short comes back as a
                    // parse error ("unexpected end of file").
                    if matches!(
                        e.kind(),
                        redis::ErrorKind::Server(_) | redis::ErrorKind::UnexpectedReturnType
                    ) {
                        return Err(e.into());
                    }
                    *guard = None;
                    // A timeout may be a request still running: never sent twice.
                    let stale = !e.is_timeout()
                        && (e.is_connection_dropped()
                            || matches!(e.kind(), redis::ErrorKind::Parse | redis::ErrorKind::Io));
                    if retried || !stale {
                        return Err(e.into());
                    }
                    retried = true;
                }
            }
        }
    }

    fn profile_key(&self, visitor: VisitorId) -> String {
        format!("{}:p:{{{visitor}}}", self.settings.prefix)
    }

    fn link_key(&self, dpid: u32, id: &str) -> Vec<u8> {
        // The id is the client's text: kept as bytes, whatever it holds.
        let mut key = format!("{}:l:{{{dpid}:", self.settings.prefix).into_bytes();
        key.extend_from_slice(id.as_bytes());
        key.push(b'}');
        key
    }

    fn optouts_key(&self) -> String {
        format!("{{{}:optouts}}", self.settings.prefix)
    }

    fn catalog_keys(&self) -> (String, String) {
        let tag = format!("{{{}:catalog}}", self.settings.prefix);
        (format!("{tag}:objects"), format!("{tag}:version"))
    }

    fn outbox_keys(&self) -> (String, String) {
        let tag = format!(
            "{{{}:outbox:{}}}",
            self.settings.prefix, self.settings.node_id
        );
        (tag.clone(), format!("{tag}:seq"))
    }

    fn ttl_secs(&self) -> u64 {
        self.settings.profile_ttl.as_secs().max(1)
    }

    /// The cluster's primaries, in address order: where a scan goes.
    fn primaries(&self) -> Result<Vec<(String, u16)>, StoreError> {
        let text: String = self.with(|c| {
            let value = c.route_command(
                Cmd::new().arg("CLUSTER").arg("NODES"),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )?;
            Ok(String::from_redis_value(value)?)
        })?;
        let mut nodes: Vec<(String, u16)> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                    return None;
                }
                // `host:port@bus-port[,hostname]`
                let addr = fields.get(1)?.split('@').next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            })
            .collect();
        nodes.sort();
        Ok(nodes)
    }
}

/// Memory used and keys held by the given nodes, summed (`INFO memory`, `DBSIZE` on each):
/// what a run adds, per key, is the store's cost per profile (`tributary bench`). Give it the
/// primaries; a replica would count its data twice.
pub fn cluster_usage(urls: &[String]) -> Result<(u64, u64), StoreError> {
    let failed = |url: &str, e: redis::RedisError| StoreError::Io(format!("redis {url}: {e}"));
    let mut memory = 0;
    let mut keys = 0;
    for url in urls {
        let client = redis::Client::open(url.as_str()).map_err(|e| failed(url, e))?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| failed(url, e))?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut conn)
            .map_err(|e| failed(url, e))?;
        memory += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        keys += redis::cmd("DBSIZE")
            .query::<u64>(&mut conn)
            .map_err(|e| failed(url, e))?;
    }
    Ok((memory, keys))
}

fn catalog_field(kind: CatalogKind, id: u64) -> String {
    let k = match kind {
        CatalogKind::Provider => 'p',
        CatalogKind::Trait => 't',
        CatalogKind::Segment => 's',
        CatalogKind::Destination => 'd',
    };
    format!("{k}:{id}")
}

fn object_entry(object: &CatalogObject) -> Result<(String, Vec<u8>), StoreError> {
    Ok(match object {
        CatalogObject::Provider(p) => (
            catalog_field(CatalogKind::Provider, u64::from(p.pid)),
            encode_json(p)?,
        ),
        CatalogObject::Trait(t) => (catalog_field(CatalogKind::Trait, t.sid), encode_json(t)?),
        CatalogObject::Segment(s) => (catalog_field(CatalogKind::Segment, s.sid), encode_json(s)?),
        CatalogObject::Destination(d) => (
            catalog_field(CatalogKind::Destination, d.destination_id),
            encode_json(d)?,
        ),
    })
}

/// The visitor of a profile key `P:p:{<visitor>}`.
fn visitor_of(key: &[u8]) -> Option<VisitorId> {
    let open = key.iter().position(|&b| b == b'{')?;
    let digits = std::str::from_utf8(key.get(open + 1..key.len().checked_sub(1)?)?).ok()?;
    VisitorId::parse_stored(digits)
}

impl ProfileStore for RedisStore {
    fn get_profile_bytes(&self, visitor: VisitorId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.profile_key(visitor);
        let value: Option<Vec<u8>> = self.with(|c| Cmd::get(&key).query(c))?;
        Ok(value.map(|v| split_header(v).1))
    }

    fn put_profile_bytes(&self, batch: &[(VisitorId, &[u8])]) -> Result<(), StoreError> {
        let ttl = self.ttl_secs();
        let mut pipe = redis::cluster::cluster_pipe();
        for (visitor, bytes) in batch {
            pipe.cmd("SET")
                .arg(self.profile_key(*visitor))
                .arg(with_header(new_version(), bytes))
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        self.with(|c| pipe.exec(c))
    }

    fn delete_profile(&self, visitor: VisitorId) -> Result<(), StoreError> {
        let key = self.profile_key(visitor);
        self.with(|c| Cmd::del(&key).exec(c))
    }

    fn swap_profile_bytes(
        &self,
        visitor: VisitorId,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SWAP_SCRIPT));
        let mut invocation = SCRIPT.key(self.profile_key(visitor));
        match expected {
            Some(bytes) => invocation.arg("1").arg(bytes),
            None => invocation.arg("0").arg(""),
        };
        invocation
            .arg(with_header(new_version(), new))
            .arg(self.ttl_secs());
        let swapped: i64 = self.with(|c| invocation.invoke(c))?;
        Ok(swapped == 1)
    }

    fn get_profiles_if_changed(
        &self,
        batch: &[(VisitorId, Option<u64>)],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        // The common case with visitor affinity is "unchanged": the 9 bytes of the version
        // header per held profile, all of them in one pipeline. Plain commands, not a script:
        // cheaper for the servers.
        let mut answers: Vec<Option<Option<Versioned>>> = vec![None; batch.len()];
        let held: Vec<(usize, u64)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, (_, held))| held.filter(|v| *v != 0).map(|v| (i, v)))
            .collect();
        if !held.is_empty() {
            let mut pipe = redis::cluster::cluster_pipe();
            for (i, _) in &held {
                pipe.cmd("GETRANGE")
                    .arg(self.profile_key(batch[*i].0))
                    .arg(0)
                    .arg(HEADER - 1);
            }
            let stored: Vec<Vec<u8>> = self.with(|c| pipe.query(c))?;
            for ((i, held), stored) in held.iter().zip(stored) {
                if stored == header(*held) {
                    answers[*i] = Some(None);
                }
            }
        }
        let read: Vec<usize> = (0..batch.len()).filter(|i| answers[*i].is_none()).collect();
        if !read.is_empty() {
            let mut pipe = redis::cluster::cluster_pipe();
            for i in &read {
                pipe.get(self.profile_key(batch[*i].0));
            }
            let values: Vec<Option<Vec<u8>>> = self.with(|c| pipe.query(c))?;
            if values.len() != read.len() {
                return Err(StoreError::Io(
                    "redis: a pipelined read came back short".into(),
                ));
            }
            for (i, value) in read.into_iter().zip(values) {
                answers[i] = Some(Some(match value.map(split_header) {
                    Some((version, bytes)) => (version, Some(bytes)),
                    None => (0, None),
                }));
            }
        }
        Ok(answers.into_iter().map(Option::flatten).collect())
    }

    fn swap_profiles_versioned(
        &self,
        batch: &[VersionedWrite<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.ttl_secs();
        let mut pipe = redis::cluster::cluster_pipe();
        for w in batch {
            let expected = match w.expected {
                0 => Vec::new(),
                v => header(v).to_vec(),
            };
            // EVAL, not EVALSHA: a pipeline cannot load a script the server does not have;
            // the server compiles it once and keeps it.
            pipe.cmd("EVAL")
                .arg(SWAP_VERSION_SCRIPT)
                .arg(1)
                .arg(self.profile_key(w.visitor))
                .arg(expected)
                .arg(with_header(w.version, w.bytes))
                .arg(ttl);
        }
        let swapped: Vec<i64> = self.with(|c| pipe.query(c))?;
        Ok(swapped.into_iter().map(|s| s == 1).collect())
    }

    fn scan_profiles(&self, cursor: ScanCursor, limit: usize) -> Result<ScanBatch, StoreError> {
        let (node, at) = match cursor {
            ScanCursor::Node { node, cursor } => (node, cursor),
            _ => (0, 0),
        };
        let primaries = self.primaries()?;
        let Some((host, port)) = primaries.get(node).cloned() else {
            return Ok((Vec::new(), None));
        };
        let pattern = format!("{}:p:{{*", self.settings.prefix);
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            })
        };
        let (next, keys): (u64, Vec<Vec<u8>>) = self.with(|c| {
            let value = c.route_command(
                Cmd::new()
                    .arg("SCAN")
                    .arg(at)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(limit.max(1)),
                route(),
            )?;
            Ok(<(u64, Vec<Vec<u8>>)>::from_redis_value(value)?)
        })?;
        let mut out = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            // One node, but several slots: one GET per key keeps to cluster rules.
            let values: Vec<Option<Vec<u8>>> = self.with(|c| {
                keys.iter()
                    .map(|key| {
                        let value = c.route_command(Cmd::new().arg("GET").arg(key), route())?;
                        Ok(Option::<Vec<u8>>::from_redis_value(value)?)
                    })
                    .collect()
            })?;
            for (key, value) in keys.iter().zip(values) {
                if let (Some(visitor), Some(value)) = (visitor_of(key), value) {
                    out.push((visitor, split_header(value).1));
                }
            }
        }
        let next = if next != 0 {
            Some(ScanCursor::Node { node, cursor: next })
        } else if node + 1 < primaries.len() {
            Some(ScanCursor::Node {
                node: node + 1,
                cursor: 0,
            })
        } else {
            None
        };
        Ok((out, next))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn get_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
        let key = self.link_key(dpid, id);
        let value: Option<Vec<u8>> = self.with(|c| Cmd::get(&key).query(c))?;
        value.map(|v| decode_link(&v)).transpose()
    }

    fn put_links(&self, links: &[(u32, &str, IdLink)]) -> Result<(), StoreError> {
        let ttl = self.ttl_secs();
        let mut pipe = redis::cluster::cluster_pipe();
        for (dpid, id, link) in links {
            pipe.cmd("SET")
                .arg(self.link_key(*dpid, id))
                .arg(&encode_link(link)[..])
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        self.with(|c| pipe.exec(c))
    }

    fn delete_link(&self, dpid: u32, id: &str) -> Result<(), StoreError> {
        let key = self.link_key(dpid, id);
        self.with(|c| Cmd::del(&key).exec(c))
    }

    fn set_opted_out(&self, visitor: VisitorId, _at: i64) -> Result<(), StoreError> {
        let key = self.optouts_key();
        self.with(|c| Cmd::sadd(&key, visitor.to_string()).exec(c))
    }

    fn opted_out_count(&self) -> Result<usize, StoreError> {
        let key = self.optouts_key();
        self.with(|c| Cmd::scard(&key).query(c))
    }

    fn opted_out(&self) -> Result<Vec<VisitorId>, StoreError> {
        let key = self.optouts_key();
        let members: Vec<String> = self.with(|c| Cmd::smembers(&key).query(c))?;
        Ok(members.iter().filter_map(|m| VisitorId::parse(m)).collect())
    }
}

impl CatalogStore for RedisStore {
    fn load_catalog(&self) -> Result<Option<(Catalog, u64)>, StoreError> {
        let (objects, version_key) = self.catalog_keys();
        let version: Option<u64> = self.with(|c| Cmd::get(&version_key).query(c))?;
        let Some(version) = version else {
            return Ok(None);
        };
        let entries: Vec<(String, Vec<u8>)> = self.with(|c| Cmd::hgetall(&objects).query(c))?;
        let mut catalog = Catalog::default();
        for (field, value) in entries {
            match field.split_once(':').map(|(k, _)| k) {
                Some("p") => catalog.providers.push(decode_json::<Provider>(&value)?),
                Some("t") => catalog.traits.push(decode_json::<Trait>(&value)?),
                Some("s") => catalog.segments.push(decode_json::<Segment>(&value)?),
                Some("d") => catalog
                    .destinations
                    .push(decode_json::<Destination>(&value)?),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "catalog key",
                        detail: format!("unknown field {field:?}"),
                    })
                }
            }
        }
        // A hash has no order; sled's keys gave id order per kind.
        catalog.providers.sort_by_key(|p| p.pid);
        catalog.traits.sort_by_key(|t| t.sid);
        catalog.segments.sort_by_key(|s| s.sid);
        catalog.destinations.sort_by_key(|d| d.destination_id);
        Ok(Some((catalog, version)))
    }

    fn replace_catalog(&self, catalog: &Catalog) -> Result<u64, StoreError> {
        let (objects, version_key) = self.catalog_keys();
        let previous: Option<u64> = self.with(|c| Cmd::get(&version_key).query(c))?;
        let version = previous.unwrap_or(0) + 1;
        // As with sled: the version goes first and comes back last, so a half-written catalog
        // is never loaded.
        self.with(|c| {
            Cmd::del(&version_key).exec(c)?;
            Cmd::del(&objects).exec(c)
        })?;
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for p in &catalog.providers {
            entries.push(object_entry(&CatalogObject::Provider(p.clone()))?);
        }
        for t in &catalog.traits {
            entries.push(object_entry(&CatalogObject::Trait(t.clone()))?);
        }
        for s in &catalog.segments {
            entries.push(object_entry(&CatalogObject::Segment(s.clone()))?);
        }
        for d in &catalog.destinations {
            entries.push(object_entry(&CatalogObject::Destination(Box::new(
                d.clone(),
            )))?);
        }
        for chunk in entries.chunks(1000) {
            let mut hset = Cmd::new();
            hset.arg("HSET").arg(&objects);
            for (field, value) in chunk {
                hset.arg(field).arg(value.as_slice());
            }
            self.with(|c| hset.exec(c))?;
        }
        self.with(|c| Cmd::set(&version_key, version).exec(c))?;
        Ok(version)
    }

    fn catalog_version(&self) -> Result<Option<u64>, StoreError> {
        let (_, version_key) = self.catalog_keys();
        self.with(|c| Cmd::get(&version_key).query(c))
    }

    fn apply_change(&self, change: &CatalogChange) -> Result<u64, StoreError> {
        let (objects, version_key) = self.catalog_keys();
        let script = redis::Script::new(CHANGE_SCRIPT);
        let mut invocation = script.key(&objects);
        invocation.key(&version_key);
        match change {
            CatalogChange::Put(object) => {
                let (field, value) = object_entry(object)?;
                invocation.arg("put").arg(field).arg(value);
            }
            CatalogChange::Delete(kind, id) => {
                invocation.arg("del").arg(catalog_field(*kind, *id));
            }
        }
        self.with(|c| invocation.invoke(c))
    }
}

impl OutboxStore for RedisStore {
    fn outbox_append(&self, deliveries: &[Delivery]) -> Result<Vec<u64>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let (outbox, seq_key) = self.outbox_keys();
        let last: u64 = self.with(|c| Cmd::incr(&seq_key, deliveries.len() as u64).query(c))?;
        let first = last + 1 - deliveries.len() as u64;
        let mut hset = Cmd::new();
        hset.arg("HSET").arg(&outbox);
        let mut seqs = Vec::with_capacity(deliveries.len());
        for (i, d) in deliveries.iter().enumerate() {
            let seq = first + i as u64;
            hset.arg(seq).arg(codec::encode_delivery(d)?);
            seqs.push(seq);
        }
        self.with(|c| hset.exec(c))?;
        Ok(seqs)
    }

    fn outbox_all(&self) -> Result<Vec<(u64, Delivery)>, StoreError> {
        let (outbox, _) = self.outbox_keys();
        let entries: Vec<(u64, Vec<u8>)> = self.with(|c| Cmd::hgetall(&outbox).query(c))?;
        let mut all = Vec::with_capacity(entries.len());
        for (seq, bytes) in entries {
            match codec::decode_delivery(&bytes) {
                Ok(d) => all.push((seq, d)),
                Err(e) => log::error!("outbox entry {seq} skipped: {e}"),
            }
        }
        all.sort_by_key(|(seq, _)| *seq);
        Ok(all)
    }

    fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (outbox, _) = self.outbox_keys();
        self.with(|c| Cmd::hdel(&outbox, seqs).exec(c))
    }
}

impl RedisStore {
    /// Whether the cluster answers (for readiness and tests).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.req_command(Cmd::new().arg("PING")).map(|_: Value| ()))
    }
}
