//! Inbound data (issue 18): the customer's own data streamed through `POST /stream` and
//! imported from an inbound file (`POST /v1/inbound`), each against the raw store write rate
//! measured in the same run, and the `/event` path's latency during an import against without.
//!
//! - `inbound-stream`: `--visitors` ops (a million by default), 1,000 per request (the API's
//!   most) over several keep-alive connections to the admin listener.
//! - `inbound-file`: a file of as many lines, uploaded once; its job is polled until done.
//! - `inbound-events`: this server's closed-loop `/event` capacity, then 40% of it open-loop,
//!   first alone, then while a file of as many lines is imported, and last against the bare
//!   HTTP ceiling (the generator's own tail at that rate).
//!
//! Every op or line names a user never seen before, of the cross-device data source 9001
//! (authenticated profiles, the CRM's case): each creates a profile, the heaviest case for the
//! store and the shape of a first CRM load. A quarter of them carry two traits.
//!
//! The ceiling is the store alone: the profiles the server stored (their bytes sampled from its
//! store once it stopped) written under the same keys straight into a fresh `SledStore`, with
//! the server's cache and flush settings, in batches of [`RAW_BATCH`], then flushed. No HTTP,
//! parsing, sessions or write-behind: what the store takes on this machine right now.
//!
//! The admin client here is a blocking HTTP/1.1 one of its own: the rates are a few requests
//! per second of up to 100 KB each (a single one of megabytes for the file), where a thread
//! per connection costs nothing, and the answers have to be read, not only counted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::http::http_get;
use super::load::Visitors;
use super::process::Service;
use super::prometheus::metric;
use super::report::Measurement;
use super::{catalogs, connections_for, procstat, wrk, Bench, Scenario, DEADLINE_MS};
use crate::config::StoreConfig;
use crate::core::clock::unix_now;
use crate::core::ids::VisitorId;
use crate::store::{ProfileStore, ScanCursor, SledStore};

/// The customer's data source: cross-device, so its ids are people (authenticated profiles).
pub const CRM: u32 = 9001;
/// Ops per `POST /stream`: the Customer Data API's most.
const OPS_PER_REQUEST: u64 = 1_000;
/// Profiles per `put_profile_bytes` of the raw ceiling.
pub const RAW_BATCH: usize = 1_000;
/// Ops and lines of a smoke run.
const SMOKE_SIZE: u64 = 3_000;
/// Share of this server's closed-loop capacity offered to `/event` around the import: a
/// moderate load, so that what the import costs the events shows as latency, not as a queue.
const EVENT_SHARE: f64 = 0.4;
/// wrk's wait after each answer, per connection, when it paces a steady load.
const WRK_DELAY_MS: u64 = 10;
/// Longest wait for an import job, or for the write-behind to drain.
const GIVE_UP: Duration = Duration::from_secs(3600);

/// The bench's small catalog plus two onboarded traits of the CRM and a segment of one.
pub fn catalog() -> Value {
    let mut catalog = catalogs::small(&[], 0, 80);
    if let Some(traits) = catalog["traits"].as_array_mut() {
        traits.push(
            json!({"sid": 31, "name": "gold", "traitType": "ON_BOARDED_TRAIT",
                           "traitRule": "tier == \"gold\"", "dataSourceId": CRM}),
        );
        traits.push(
            json!({"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT",
                           "traitRule": "tier == \"silver\"", "dataSourceId": CRM}),
        );
    }
    if let Some(segments) = catalog["segments"].as_array_mut() {
        segments.push(
            json!({"sid": 201, "name": "gold members", "segmentRule": "31T",
                             "dataSourceId": CRM}),
        );
    }
    catalog
}

/// The body of the `POST /stream` carrying ops `ops` (user `<prefix><n>` for op n).
pub fn stream_body(prefix: &str, ops: Range<u64>) -> Vec<u8> {
    let mut body = String::with_capacity(100 * 1024);
    body.push_str(r#"{"ops":["#);
    for (k, n) in ops.enumerate() {
        if k > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"identities":[{{"dataSourceId":{CRM},"value":"{prefix}{n}"}}],"traitInput":{{"traitIds":[{}]}}}}"#,
            traits_of(n)
        );
    }
    body.push_str("]}");
    body.into_bytes()
}

fn traits_of(n: u64) -> &'static str {
    match n % 4 {
        0 | 1 => "31",
        2 => "32",
        _ => "31,32",
    }
}

/// Line n of the bench's inbound file (user `<prefix><n>`): trait ids and signals mixed.
pub fn file_line(prefix: &str, n: u64) -> String {
    let items = match n % 4 {
        0 => "d_sid=31",
        1 => "tier=gold",
        2 => "d_sid=32",
        _ => "d_sid=31,tier=silver",
    };
    format!("{prefix}{n}\t{items}\n")
}

/// The file's name in AAM's form: the CRM's user ids, `.sync`, dated now.
fn file_name() -> String {
    format!("ftp_dpm_{CRM}_{}.sync", unix_now())
}

fn write_file(path: &Path, prefix: &str, lines: u64) -> Result<u64, String> {
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(failed)?);
    for n in 0..lines {
        out.write_all(file_line(prefix, n).as_bytes())
            .map_err(failed)?;
    }
    out.flush().map_err(failed)?;
    Ok(std::fs::metadata(path).map_err(failed)?.len())
}

/// Where a server's admin API is, and its token.
#[derive(Clone)]
struct Admin {
    addr: SocketAddr,
    token: String,
}

/// One keep-alive connection to the admin API.
struct Conn {
    reader: BufReader<TcpStream>,
    admin: Admin,
}

/// An answer, read whole.
struct Answer {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Answer {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                clip(&self.body)
            )
        })
    }
}

fn clip(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

impl Admin {
    fn connect(&self) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to the admin API at {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        // A request of 1,000 ops on a slow debug build takes seconds; a minute means stuck.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(stream),
            admin: self.clone(),
        })
    }
}

impl Conn {
    /// Sends a request with a `length`-byte body read from `body`, and reads the answer.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &mut dyn Read,
        length: u64,
    ) -> Result<Answer, String> {
        let broken = |e: std::io::Error| format!("{method} {path}: {e}");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            self.admin.addr, self.admin.token
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).map_err(broken)?;
        std::io::copy(body, stream).map_err(broken)?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(broken)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{method} {path}: no status in {line:?}"))?;
        let (mut length, mut keep_alive) = (0usize, true);
        loop {
            line.clear();
            if self.reader.read_line(&mut line).map_err(broken)? == 0 {
                return Err(format!("{method} {path}: the answer's head broke off"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .parse()
                        .map_err(|_| format!("{method} {path}: content-length {value:?}"))?;
                } else if name.eq_ignore_ascii_case("connection") {
                    keep_alive = !value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(format!("{method} {path}: a chunked answer is not expected"));
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).map_err(broken)?;
        Ok(Answer {
            status,
            body,
            keep_alive,
        })
    }
}

/// What streaming the ops did, from the client's side.
struct StreamRun {
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    /// Requests without an answer (connection or protocol failures).
    failures: u64,
    applied: u64,
    /// Ops the server answered as not applied, with the first such answer.
    refused: u64,
    first_refusal: Option<String>,
    /// Per request, in microseconds.
    latency: Histogram<u64>,
    elapsed: Duration,
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())
}

impl StreamRun {
    fn empty() -> Result<Self, String> {
        Ok(StreamRun {
            requests: 0,
            by_status: BTreeMap::new(),
            failures: 0,
            applied: 0,
            refused: 0,
            first_refusal: None,
            latency: histogram()?,
            elapsed: Duration::ZERO,
        })
    }

    fn merge(&mut self, other: StreamRun) -> Result<(), String> {
        self.requests += other.requests;
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        self.failures += other.failures;
        self.applied += other.applied;
        self.refused += other.refused;
        if self.first_refusal.is_none() {
            self.first_refusal = other.first_refusal;
        }
        self.latency.add(&other.latency).map_err(|e| e.to_string())
    }

    /// Counts one answer to a request of `ops` ops.
    fn answered(&mut self, answer: &Answer, ops: u64, took: Duration) {
        self.requests += 1;
        *self.by_status.entry(answer.status).or_default() += 1;
        let _ = self.latency.record((took.as_micros() as u64).max(1));
        let reply = answer.json().ok();
        let status = reply
            .as_ref()
            .and_then(|r| r["status"].as_str().map(str::to_string));
        let errors = reply
            .as_ref()
            .and_then(|r| r["errors"].as_array().map(Vec::len))
            .unwrap_or(0) as u64;
        let not_applied = match status.as_deref() {
            Some("SUCCESS") => 0,
            Some("PARTIAL_SUCCESS") => errors.min(ops),
            _ => ops,
        };
        self.applied += ops - not_applied;
        self.refused += not_applied;
        if not_applied > 0 && self.first_refusal.is_none() {
            self.first_refusal = Some(format!("{}: {}", answer.status, clip(&answer.body)));
        }
    }
}

/// Streams ops 0..`total` (users `<prefix><n>`) over `connections` connections, each taking
/// the next request of 1,000 ops as soon as it has its answer.
fn stream_ops(
    admin: &Admin,
    prefix: &str,
    total: u64,
    connections: usize,
) -> Result<StreamRun, String> {
    let requests = total.div_ceil(OPS_PER_REQUEST);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (admin, next, prefix) = (admin.clone(), next.clone(), prefix.to_string());
            std::thread::spawn(move || -> Result<StreamRun, String> {
                let mut run = StreamRun::empty()?;
                let mut conn = admin.connect()?;
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= requests {
                        return Ok(run);
                    }
                    let ops = r * OPS_PER_REQUEST..((r + 1) * OPS_PER_REQUEST).min(total);
                    let count = ops.end - ops.start;
                    let body = stream_body(&prefix, ops);
                    let sent = Instant::now();
                    match conn.request("POST", "/stream/bench", &mut &body[..], body.len() as u64) {
                        Ok(answer) => {
                            run.answered(&answer, count, sent.elapsed());
                            if !answer.keep_alive {
                                conn = admin.connect()?;
                            }
                        }
                        Err(why) => {
                            run.failures += 1;
                            run.refused += count;
                            if run.first_refusal.is_none() {
                                run.first_refusal = Some(why);
                            }
                            conn = admin.connect()?;
                        }
                    }
                }
            })
        })
        .collect();
    let mut total_run = StreamRun::empty()?;
    for w in workers {
        let part = w
            .join()
            .map_err(|_| "a stream connection's thread panicked".to_string())??;
        total_run.merge(part)?;
    }
    total_run.elapsed = started.elapsed();
    Ok(total_run)
}

/// Uploads the file at `path` as `name`; the job's id.
fn upload(admin: &Admin, path: &Path, name: &str) -> Result<u64, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    let mut conn = admin.connect()?;
    let answer = conn.request(
        "POST",
        &format!("/v1/inbound?file={name}"),
        &mut file,
        length,
    )?;
    if answer.status != 202 {
        return Err(format!(
            "the upload was answered {}: {}",
            answer.status,
            clip(&answer.body)
        ));
    }
    answer.json()?["jobId"]
        .as_u64()
        .ok_or_else(|| format!("no jobId in the upload's answer: {}", clip(&answer.body)))
}

/// A job's progress (`errorsFrom` large: polls need the counts, not the messages).
fn job_progress(conn: &mut Conn, id: u64, errors_from: usize) -> Result<Value, String> {
    let answer = conn.request(
        "GET",
        &format!("/v1/inbound/{id}?errorsFrom={errors_from}"),
        &mut std::io::empty(),
        0,
    )?;
    if answer.status != 200 {
        return Err(format!(
            "job {id}'s progress was answered {}: {}",
            answer.status,
            clip(&answer.body)
        ));
    }
    answer.json()
}

/// Polls job `id` until it is done or failed; its last progress, with its first errors.
fn wait_for_job(admin: &Admin, id: u64) -> Result<Value, String> {
    let mut conn = admin.connect()?;
    let give_up = Instant::now() + GIVE_UP;
    loop {
        let progress = job_progress(&mut conn, id, usize::MAX)?;
        match progress["state"].as_str() {
            Some("done") | Some("failed") => return job_progress(&mut conn, id, 0),
            Some(_) if Instant::now() < give_up => std::thread::sleep(Duration::from_millis(100)),
            Some(state) => return Err(format!("job {id} still {state} after {GIVE_UP:?}")),
            None => return Err(format!("job {id}: no state in {progress}")),
        }
    }
}

fn count(progress: &Value, field: &str) -> u64 {
    progress[field].as_u64().unwrap_or(0)
}

/// Waits for the server's write-behind to have written everything (`pending writes` 0);
/// how long after `since` that was, `None` if it never was.
fn drained(addr: SocketAddr, since: Instant) -> Option<Duration> {
    let give_up = Instant::now() + GIVE_UP;
    while Instant::now() < give_up {
        let text = http_get(addr, "/metrics")?;
        if metric(&text, "tributary_store_pending_writes") == Some(0.0) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Up to `samples` stored profiles' bytes of a stopped server's store, and how many it holds.
fn stored_profiles(store: &Path, samples: usize) -> Result<(Vec<Vec<u8>>, usize), String> {
    let config = StoreConfig::default();
    // The server has exited, but its store's lock may outlive it by a moment.
    let mut tries = 0;
    let opened = loop {
        match SledStore::open(store, config.cache_capacity, config.flush_every_ms) {
            Ok(s) => break s,
            Err(_) if tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let (batch, _) = opened
        .scan_profiles(ScanCursor::Start, samples)
        .map_err(|e| e.to_string())?;
    Ok((
        batch.into_iter().map(|(_, bytes)| bytes).collect(),
        opened.profile_count(),
    ))
}

/// The raw ceiling: `keys` with the `samples`' bytes (in turn) written into a fresh store at
/// `dir` and flushed; writes per second.
fn raw_store_rate(dir: &Path, samples: &[Vec<u8>], keys: &[VisitorId]) -> Result<f64, String> {
    if samples.is_empty() {
        return Err("the server stored no profile to measure the raw store with".into());
    }
    let config = StoreConfig::default();
    let store = SledStore::open(dir, config.cache_capacity, config.flush_every_ms)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for (c, chunk) in keys.chunks(RAW_BATCH).enumerate() {
        let batch: Vec<(VisitorId, &[u8])> = chunk
            .iter()
            .enumerate()
            .map(|(k, v)| (*v, &samples[(c * RAW_BATCH + k) % samples.len()][..]))
            .collect();
        store.put_profile_bytes(&batch).map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())?;
    Ok(keys.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// A measurement row of an inbound phase; `per_sec` is ops or lines per second.
fn row(scenario: &str, per_sec: f64, requests: u64, by_status: BTreeMap<u16, u64>) -> Measurement {
    Measurement {
        scenario: scenario.to_string(),
        events_per_sec: per_sec,
        requests,
        by_status,
        failures: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        cpu_us_per_event: None,
        peak_rss_bytes: None,
        store_bytes: None,
        offered_per_sec: None,
        generator_bound: false,
        extra: BTreeMap::new(),
        series: Vec::new(),
    }
}

/// The inbound scenarios.
impl Bench {
    /// Ops or lines per inbound scenario: `--visitors` (a million by default), a few thousand
    /// in a smoke run.
    fn inbound_size(&self) -> u64 {
        if self.options.is_smoke() {
            SMOKE_SIZE
        } else {
            self.options.visitors
        }
    }

    /// Tributary with the CRM catalog and data source, and its admin API.
    fn inbound_server(&self, label: &str) -> Result<(Service, PathBuf, Admin), String> {
        let token = format!("bench{:032x}", rand::random::<u128>());
        let config = format!(
            "[admin]\ntoken = \"{token}\"\n[profiles]\ncross_device_data_sources = [{CRM}]\n"
        );
        let (s, store) = self.tributary(label, catalog(), &config)?;
        let addr = s
            .logged_after("admin API on http://", Duration::from_secs(10))
            .and_then(|rest| rest.split(['/', ' ']).next().and_then(|a| a.parse().ok()));
        match addr {
            Some(addr) => Ok((s, store, Admin { addr, token })),
            None => {
                s.stop();
                Err(format!("{label}: the server did not log its admin address"))
            }
        }
    }

    /// `inbound-stream`: the ops through `POST /stream`, then the raw ceiling.
    pub(super) fn inbound_stream(&mut self) -> Result<(), String> {
        let name = Scenario::InboundStream.name();
        let total = self.inbound_size();
        let connections = (self.options.connections / 4).clamp(4, 32);
        let (s, store, admin) = self.inbound_server(name)?;
        eprintln!(
            "{name}: {total} ops, {OPS_PER_REQUEST} per request, over {connections} connections"
        );
        let measured = stream_phase(name, &s, &admin, total, connections);
        s.stop();
        let mut m = measured?;
        m.store_bytes = Some(procstat::dir_size(&store));
        let keys: Vec<VisitorId> = (0..total)
            .map(|n| VisitorId::authenticated(CRM, &format!("s{n}")))
            .collect();
        self.raw_ceiling(name, &store, &keys, &mut m)?;
        self.measurements.push(m);
        Ok(())
    }

    /// `inbound-file`: a file of as many lines imported, then the raw ceiling.
    pub(super) fn inbound_file(&mut self) -> Result<(), String> {
        let name = Scenario::InboundFile.name();
        let total = self.inbound_size();
        let path = self.dir.path().join(format!("{name}.sync"));
        let bytes = write_file(&path, "f", total)?;
        let (s, store, admin) = self.inbound_server(name)?;
        eprintln!("{name}: a file of {total} lines ({bytes} bytes)");
        let measured = import_phase(name, &s, &admin, &path);
        s.stop();
        let _ = std::fs::remove_file(&path);
        let mut m = measured?;
        m.store_bytes = Some(procstat::dir_size(&store));
        m.extra.insert("file_bytes".into(), bytes as f64);
        let keys: Vec<VisitorId> = (0..total)
            .map(|n| VisitorId::authenticated(CRM, &format!("f{n}")))
            .collect();
        self.raw_ceiling(name, &store, &keys, &mut m)?;
        self.measurements.push(m);
        Ok(())
    }

    /// What the store alone takes for the profiles the server stored, into `m`'s figures.
    fn raw_ceiling(
        &self,
        name: &str,
        store: &Path,
        keys: &[VisitorId],
        m: &mut Measurement,
    ) -> Result<(), String> {
        let (samples, stored) = stored_profiles(store, 1_000)?;
        let dir = self.dir.path().join(format!("raw-{name}"));
        let rate = raw_store_rate(&dir, &samples, keys);
        let raw_bytes = procstat::dir_size(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let rate = rate?;
        let mean = samples.iter().map(Vec::len).sum::<usize>() as f64 / samples.len() as f64;
        eprintln!(
            "{name}: raw store {rate:.0} writes/s ({} profiles of {mean:.0} bytes on average)",
            keys.len()
        );
        m.extra.insert("stored_profiles".into(), stored as f64);
        m.extra.insert("raw_store_writes_per_sec".into(), rate);
        m.extra.insert("raw_store_profile_bytes".into(), mean);
        m.extra.insert("raw_store_bytes".into(), raw_bytes as f64);
        m.extra
            .insert("ratio_to_raw_store".into(), m.events_per_sec / rate);
        if let Some(stored_rate) = m.extra.get("per_sec_until_stored").copied() {
            m.extra
                .insert("ratio_to_raw_store_until_stored".into(), stored_rate / rate);
        }
        Ok(())
    }

    /// `inbound-events`: `/event` at 40% of this server's capacity, alone and during an import.
    pub(super) fn inbound_events(&mut self) -> Result<(), String> {
        let name = Scenario::InboundEvents.name();
        let total = self.inbound_size();
        let path = self.dir.path().join(format!("{name}.sync"));
        write_file(&path, "e", total)?;
        let (s, store, admin) = self.inbound_server(name)?;
        let outcome = self.events_phases(name, &s, &store, &admin, &path, total);
        s.stop();
        let _ = std::fs::remove_file(&path);
        outcome
    }

    fn events_phases(
        &mut self,
        name: &str,
        s: &Service,
        store: &Path,
        admin: &Admin,
        path: &Path,
        total: u64,
    ) -> Result<(), String> {
        let o = self.options.clone();
        let capacity = self.capacity(name, s, store)?;
        // The capacity phases leave hundreds of thousands of new visitors' profiles in the
        // write-behind; measured on top of that backlog, `alone` would be charged with the
        // capacity phases' writes (run 1 of BENCHMARKS.md was).
        let drain = Instant::now();
        let drained_in = drained(s.addr, drain);
        let rate = (capacity * EVENT_SHARE).max(10.0);
        let connections = connections_for(rate, DEADLINE_MS as f64 / 1000.0);
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(o.visitors),
            Some(rate),
            connections,
            o.duration,
        );
        let mut alone =
            self.measure_phase(&format!("{name}-alone"), s, Some(store), spec.clone())?;
        alone.offered_per_sec = Some(rate);
        if let Some(took) = drained_in {
            alone
                .extra
                .insert("write_behind_drain_secs_before".into(), took.as_secs_f64());
        }
        if o.wrk {
            self.paced_wrk(&mut alone, s, rate)?;
        }
        eprintln!("{name}: importing {total} lines with /event at {rate:.0}/s");
        let done = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let importer = {
            let (admin, path, done) = (admin.clone(), path.to_path_buf(), done.clone());
            std::thread::spawn(move || -> Result<(Value, Duration), String> {
                let started = Instant::now();
                let id = upload(&admin, &path, &file_name());
                let _ = started_tx.send(id.clone());
                let progress = wait_for_job(&admin, id?);
                done.store(true, Ordering::Relaxed);
                Ok((progress?, started.elapsed()))
            })
        };
        let id = match started_rx.recv() {
            Ok(Ok(id)) => id,
            Ok(Err(why)) => return Err(why),
            Err(_) => return Err("the importing thread ended before its upload".into()),
        };
        let mut during =
            self.measure_phase(&format!("{name}-during-import"), s, Some(store), spec)?;
        during.offered_per_sec = Some(rate);
        let running = |done: &AtomicBool| f64::from(u8::from(!done.load(Ordering::Relaxed)));
        during
            .extra
            .insert("import_running_at_end".into(), running(&done));
        if let Ok(p) = admin
            .connect()
            .and_then(|mut c| job_progress(&mut c, id, usize::MAX))
        {
            during
                .extra
                .insert("import_lines_at_end".into(), count(&p, "lines") as f64);
        }
        if o.wrk {
            self.paced_wrk(&mut during, s, rate)?;
            during
                .extra
                .insert("wrk_import_running_at_end".into(), running(&done));
        }
        let (progress, took) = importer
            .join()
            .map_err(|_| "the importing thread panicked".to_string())??;
        report_job(name, &progress);
        let lines = count(&progress, "lines");
        for field in ["lines", "applied", "rejected", "failed"] {
            during
                .extra
                .insert(format!("import_{field}"), count(&progress, field) as f64);
        }
        during.extra.insert(
            "import_lines_per_sec".into(),
            lines as f64 / took.as_secs_f64().max(1e-9),
        );
        during.extra.insert(
            "p99_ratio_to_alone".into(),
            during.p99_ms / alone.p99_ms.max(1e-9),
        );
        // The same open-loop load on the bare HTTP ceiling (Tributary idle beside it): the
        // tail the generator and the machine add by themselves at this rate and connections.
        let floor = Service::spawn(
            "generator floor",
            &["bench-baseline".into(), "http".into()],
            &[],
        )?;
        let spec = self.spec(
            floor.addr,
            Visitors::Zipf(o.visitors),
            Some(rate),
            connections,
            o.duration,
        );
        let measured = self.measure_phase(&format!("{name}-generator-floor"), &floor, None, spec);
        floor.stop();
        let mut floor = measured?;
        floor.offered_per_sec = Some(rate);
        self.measurements.push(alone);
        self.measurements.push(during);
        self.measurements.push(floor);
        Ok(())
    }

    /// The same steady load from wrk, paced (see [`wrk::run`]): its rate, p99 and non-2xx
    /// answers go into `m`'s figures (`wrk_…`).
    fn paced_wrk(&self, m: &mut Measurement, s: &Service, rate: f64) -> Result<(), String> {
        let connections = ((rate * WRK_DELAY_MS as f64 / 1000.0).round() as usize).max(1);
        let script = self.wrk_script()?;
        let result = wrk::run(
            s.addr,
            self.options.generator_threads,
            connections,
            self.options.duration,
            self.options.visitors,
            &script,
            Some(WRK_DELAY_MS),
        )?;
        m.extra
            .insert("wrk_events_per_sec".into(), result.requests_per_sec);
        m.extra.insert("wrk_connections".into(), connections as f64);
        if let Some(p99) = result.p99_ms {
            m.extra.insert("wrk_p99_ms".into(), p99);
        }
        m.extra.insert("wrk_non_2xx".into(), result.non_2xx as f64);
        m.extra
            .insert("wrk_socket_errors".into(), result.socket_errors as f64);
        Ok(())
    }
}

/// Streams the ops and measures the server: ops/s answered and until stored, CPU, memory.
fn stream_phase(
    name: &str,
    s: &Service,
    admin: &Admin,
    total: u64,
    connections: usize,
) -> Result<Measurement, String> {
    let (pid, me) = (s.pid(), std::process::id());
    let rss_idle = procstat::rss_bytes(pid).unwrap_or(0);
    let (cpu_before, own_before) = (procstat::cpu_micros(pid), procstat::cpu_micros(me));
    let started = Instant::now();
    let run = stream_ops(admin, "s", total, connections)?;
    let (cpu_after, own_after) = (procstat::cpu_micros(pid), procstat::cpu_micros(me));
    let stored_after = drained(s.addr, started);
    let mut m = row(
        name,
        run.applied as f64 / run.elapsed.as_secs_f64().max(1e-9),
        run.requests,
        run.by_status.clone(),
    );
    m.failures = run.failures;
    m.p50_ms = run.latency.value_at_quantile(0.5) as f64 / 1000.0;
    m.p99_ms = run.latency.value_at_quantile(0.99) as f64 / 1000.0;
    m.p999_ms = run.latency.value_at_quantile(0.999) as f64 / 1000.0;
    m.max_ms = run.latency.max() as f64 / 1000.0;
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        m.cpu_us_per_event = Some((b - a) as f64 / run.applied.max(1) as f64);
    }
    if let (Some(a), Some(b)) = (own_before, own_after) {
        m.extra.insert(
            "client_cpu_share".into(),
            (b - a) as f64 / run.elapsed.as_micros().max(1) as f64,
        );
    }
    m.peak_rss_bytes = procstat::peak_rss_bytes(pid);
    m.extra.insert("rss_idle_bytes".into(), rss_idle as f64);
    m.extra.insert("ops".into(), total as f64);
    m.extra.insert("ops_applied".into(), run.applied as f64);
    m.extra.insert("ops_not_applied".into(), run.refused as f64);
    m.extra.insert("connections".into(), connections as f64);
    if let Some(took) = stored_after {
        m.extra.insert(
            "per_sec_until_stored".into(),
            run.applied as f64 / took.as_secs_f64().max(1e-9),
        );
    }
    let metrics = http_get(s.addr, "/metrics").unwrap_or_default();
    if let Some(sessions) = metric(&metrics, "tributary_sessions_active") {
        m.extra.insert("sessions_active_at_end".into(), sessions);
    }
    if let Some(why) = &run.first_refusal {
        eprintln!(
            "{name}: {} ops not applied; the first answer: {why}",
            run.refused
        );
    }
    Ok(m)
}

/// Uploads the file, waits for its job and measures the server: lines/s answered and until
/// stored, CPU, memory.
fn import_phase(
    name: &str,
    s: &Service,
    admin: &Admin,
    path: &Path,
) -> Result<Measurement, String> {
    let pid = s.pid();
    let rss_idle = procstat::rss_bytes(pid).unwrap_or(0);
    let cpu_before = procstat::cpu_micros(pid);
    let started = Instant::now();
    let id = upload(admin, path, &file_name())?;
    let uploaded = started.elapsed();
    let progress = wait_for_job(admin, id)?;
    let took = started.elapsed();
    let cpu_after = procstat::cpu_micros(pid);
    let stored_after = drained(s.addr, started);
    report_job(name, &progress);
    let lines = count(&progress, "lines");
    let mut m = row(
        name,
        lines as f64 / took.as_secs_f64().max(1e-9),
        1,
        BTreeMap::from([(202, 1)]),
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        m.cpu_us_per_event = Some((b - a) as f64 / lines.max(1) as f64);
    }
    m.peak_rss_bytes = procstat::peak_rss_bytes(pid);
    m.extra.insert("rss_idle_bytes".into(), rss_idle as f64);
    m.extra.insert("upload_secs".into(), uploaded.as_secs_f64());
    m.extra.insert("import_secs".into(), took.as_secs_f64());
    for field in ["lines", "applied", "rejected", "failed"] {
        m.extra.insert(field.into(), count(&progress, field) as f64);
    }
    if let Some(stored) = stored_after {
        m.extra.insert(
            "per_sec_until_stored".into(),
            lines as f64 / stored.as_secs_f64().max(1e-9),
        );
    }
    Ok(m)
}

/// Says on stderr how a job ended when it was not clean: its state, counts and first errors.
fn report_job(name: &str, progress: &Value) {
    let clean = progress["state"] == "done"
        && count(progress, "rejected") == 0
        && count(progress, "failed") == 0;
    if !clean {
        let errors: Vec<&Value> = progress["errors"]
            .as_array()
            .map(|e| e.iter().take(3).collect())
            .unwrap_or_default();
        eprintln!(
            "{name}: import {} with {} lines, {} applied, {} rejected, {} failed ({}); first errors: {errors:?}",
            progress["state"],
            count(progress, "lines"),
            count(progress, "applied"),
            count(progress, "rejected"),
            count(progress, "failed"),
            progress["message"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::customer_data::{parse_stream, MAX_STREAM_BODY};
    use crate::core::inbound_file::{parse_file_name, parse_line};

    #[test]
    fn a_full_stream_request_fits_the_api_and_parses() {
        // The longest user ids of a million ops.
        let body = stream_body("s", 999_000..1_000_000);
        assert!(body.len() <= MAX_STREAM_BODY, "{} bytes", body.len());
        let parsed = parse_stream(&body).unwrap();
        assert_eq!(parsed.ops.len(), 1_000);
        assert!(parsed.ops.iter().all(Result::is_ok));
    }

    #[test]
    fn file_lines_parse() {
        let file = parse_file_name(&file_name()).unwrap();
        assert_eq!(file.dpid, CRM);
        for n in 0..8 {
            let line = file_line("f", n);
            let op = parse_line(line.trim_end().as_bytes(), &file).unwrap();
            assert!(op.is_some(), "{line:?}");
        }
    }

    #[test]
    fn the_catalog_is_valid() {
        let catalog: crate::core::catalog::Catalog = serde_json::from_value(catalog()).unwrap();
        catalog.validate().unwrap();
        assert_eq!(catalog.traits.len(), 12);
    }
}
