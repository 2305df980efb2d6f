//! The load generator: keep-alive HTTP/1.1 connections driven closed-loop (fixed concurrency)
//! or open-loop (fixed rate), latencies into an HDR histogram.
//!
//! The client is a minimal hand-written HTTP/1.1 client on tokio rather than awc: on a
//! two-core machine the generator competes with the server for CPU, and every cycle it saves
//! is a cycle the system under test gets. It sends one request at a time per connection and
//! reads `Content-Length` bodies, which is all the servers under test produce.
//!
//! Open-loop latencies are measured from each request's *intended* send time, so a server that
//! falls behind is charged for the queueing it causes (no coordinated omission).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Exponent of the visitors' Zipf distribution. At 1.0 the busiest of a million visitors
/// would send 7% of all events — hundreds per second, which no real visitor does and which
/// a per-visitor session (rightly) serializes. At 0.7 the busiest sends 0.5% and the hundred
/// busiest 5%: strong repeat traffic, but from people rather than robots.
pub const ZIPF_EXPONENT: f64 = 0.7;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Who visits: a population of visitor ids and how often each comes back.
#[derive(Clone, Debug)]
pub enum Visitors {
    /// Ids 0..n with Zipf-distributed repeat visits (exponent [`ZIPF_EXPONENT`]): a few
    /// visitors come back often, most rarely.
    Zipf(u64),
    /// Ids 0..n visited in order, each once (then again from the start): every event is a
    /// visitor not seen for a long time.
    Sequential(u64),
}

/// Builds the request target (`/event?...`) for a visitor index.
pub type TargetFn = Arc<dyn Fn(u64, &mut SmallRng) -> String + Send + Sync>;

/// What one run does.
#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    /// `None`: closed loop, each connection sends as soon as it has an answer.
    pub rate: Option<f64>,
    pub visitors: Visitors,
    pub target: TargetFn,
    /// Counts requests as they finish, for a progress display.
    pub progress: Option<Arc<AtomicU64>>,
    /// With [`Visitors::Sequential`]: stop once every visitor had one visit (the duration is
    /// then only a cap).
    pub once: bool,
    /// Generator threads, each with its own runtime and a share of the connections: one
    /// thread tops out below what a bare HTTP server can take on two cores (it would flatter
    /// every ratio against the HTTP ceiling).
    pub threads: usize,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Connection or protocol failures.
    pub failures: u64,
    /// The failures by what failed (`connect` or `exchange`) and how (the I/O error kind).
    pub failure_kinds: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Latency in microseconds, all requests.
    pub latency: Histogram<u64>,
    /// Each generator thread's CPU time over the measured time: near 1.0, that thread, not
    /// the server, may be what limited the run.
    pub thread_cpu_share: Vec<f64>,
}

impl LoadResult {
    fn fail(&mut self, stage: &str, e: &io::Error) {
        self.failures += 1;
        let how = match e.kind() {
            io::ErrorKind::Other | io::ErrorKind::InvalidData => e.to_string(),
            kind => format!("{kind:?}"),
        };
        *self
            .failure_kinds
            .entry(format!("{stage} {how}"))
            .or_default() += 1;
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 120 s at 3 significant figures; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 120_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// Runs the load on [`LoadSpec::threads`] threads, each with its own tokio runtime and every
/// `threads`-th connection, and waits for the merged result. The measured time starts for all
/// threads at once, after every connection is open and warm.
pub fn run(spec: LoadSpec) -> io::Result<LoadResult> {
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let mut starts = Vec::with_capacity(threads);
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let (start_tx, start_rx) = std::sync::mpsc::channel::<Instant>();
        starts.push(start_tx);
        let mine: Vec<usize> = (t..spec.connections).step_by(threads).collect();
        let (spec, ready) = (spec.clone(), ready_tx.clone());
        workers.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drive(spec, mine, ready, start_rx))
        }));
    }
    drop(ready_tx);
    // A thread that fails before it is ready drops its sender: the wait ends either way.
    for _ in 0..threads {
        if ready_rx.recv().is_err() {
            break;
        }
    }
    let start = Instant::now();
    for tx in starts {
        let _ = tx.send(start);
    }
    let mut total = LoadResult::empty();
    for worker in workers {
        let part = worker
            .join()
            .map_err(|_| io::Error::other("load generator thread panicked"))??;
        total.merge(part)?;
    }
    Ok(total)
}

impl LoadResult {
    fn empty() -> Self {
        LoadResult {
            requests: 0,
            by_status: BTreeMap::new(),
            failures: 0,
            failure_kinds: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: new_histogram(),
            thread_cpu_share: Vec::new(),
        }
    }

    fn merge(&mut self, r: LoadResult) -> io::Result<()> {
        self.requests += r.requests;
        self.failures += r.failures;
        for (kind, n) in r.failure_kinds {
            *self.failure_kinds.entry(kind).or_default() += n;
        }
        for (status, n) in r.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        self.elapsed = self.elapsed.max(r.elapsed);
        self.thread_cpu_share.extend(r.thread_cpu_share);
        self.latency
            .add(&r.latency)
            .map_err(|e| io::Error::other(format!("histogram: {e}")))
    }
}

/// This thread's CPU time (user + system), in microseconds.
fn thread_cpu_micros() -> Option<u64> {
    super::procstat::stat_cpu_micros("/proc/thread-self/stat")
}

/// One generator thread: opens and warms its connections (`mine`, by global index), says it is
/// ready, waits for the common start, and drives them until the end.
async fn drive(
    spec: LoadSpec,
    mine: Vec<usize>,
    ready: std::sync::mpsc::Sender<()>,
    start: std::sync::mpsc::Receiver<Instant>,
) -> io::Result<LoadResult> {
    // Connections are opened before the clock starts, a few at a time: thousands of connects
    // at once overflow the server's accept queue, and the SYN retransmits (a second each)
    // would be measured as the server's latency.
    // Each then carries one unmeasured request, so that the server has accepted every
    // connection before the clock starts (a burst of accepts is a start-up cost, not latency).
    // The warm-up requests of a batch run concurrently: one after the other, a scenario whose
    // requests take the whole deadline (a hanging provider) spent seconds warming, and the
    // connections warmed first sat idle past the server's 5-second keep-alive and were closed
    // under the generator (measured as failures, `exchange UnexpectedEof`).
    const WARM_BATCH: usize = 32;
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(mine.len());
    let host = spec.addr.to_string();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    while conns.len() < mine.len() {
        let n = WARM_BATCH.min(mine.len() - conns.len());
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            batch.push(connect(spec.addr).await.ok());
        }
        let warmed = futures_util::future::join_all(batch.into_iter().map(|conn| {
            let target = (spec.target)(0, &mut rng);
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tributary-bench\r\n\r\n"
            );
            async move {
                let mut conn = conn?;
                conn.exchange(request.as_bytes()).await.ok()?;
                Some(conn)
            }
        }))
        .await;
        conns.extend(warmed);
    }
    let _ = ready.send(());
    // Every thread waits here with its connections idle, for a moment: nothing else runs on
    // this thread's runtime, so blocking it is harmless.
    let start = start
        .recv()
        .map_err(|_| io::Error::other("the load run was abandoned"))?;
    let cpu_before = thread_cpu_micros();
    let end = start + spec.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for (k, conn) in mine.into_iter().zip(conns) {
        let spec = spec.clone();
        let stop = stop.clone();
        handles.push(
            local.spawn_local(async move { connection(spec, k, conn, start, end, stop).await }),
        );
    }
    let results = local
        .run_until(async move {
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await);
            }
            out
        })
        .await;
    let mut total = LoadResult::empty();
    total.elapsed = start.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, thread_cpu_micros()) {
        let share = after.saturating_sub(before) as f64 / total.elapsed.as_micros().max(1) as f64;
        total.thread_cpu_share.push(share);
    }
    for r in results {
        let r = r.map_err(|e| io::Error::other(format!("load task failed: {e}")))?;
        total.merge(r)?;
    }
    Ok(total)
}

/// One connection's loop. In open-loop mode connection `k` owns slots k, k+C, k+2C… of the
/// global schedule (slot i is due at start + i/rate).
async fn connect(addr: SocketAddr) -> io::Result<Conn> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(4096),
    })
}

async fn connection(
    spec: LoadSpec,
    k: usize,
    mut conn: Option<Conn>,
    start: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
) -> LoadResult {
    let mut rng = SmallRng::seed_from_u64(0x5eed ^ k as u64);
    let mut result = LoadResult::empty();
    let zipf = match spec.visitors {
        Visitors::Zipf(n) => Zipf::new(n.max(1) as f64, ZIPF_EXPONENT).ok(),
        Visitors::Sequential(_) => None,
    };
    let mut sequence = k as u64;
    let mut slot = k as u64;
    let host = spec.addr.to_string();
    loop {
        let intended = match spec.rate {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(slot as f64 / rate);
                slot += spec.connections as u64;
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        if intended >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let visitor = match (&spec.visitors, &zipf) {
            (Visitors::Zipf(_), Some(z)) => z.sample(&mut rng) as u64 - 1,
            (Visitors::Sequential(n), _) => {
                if spec.once && sequence >= *n {
                    break;
                }
                let v = sequence % (*n).max(1);
                sequence += spec.connections as u64;
                v
            }
            (Visitors::Zipf(n), None) => rng.random_range(0..(*n).max(1)),
        };
        let target = (spec.target)(visitor, &mut rng);
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tributary-bench\r\n\r\n");
        if conn.is_none() {
            match TcpStream::connect(spec.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(Conn {
                        stream,
                        buf: Vec::with_capacity(4096),
                    });
                }
                Err(e) => {
                    result.fail("connect", &e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.exchange(request.as_bytes()).await {
            Ok((status, keep_alive)) => {
                let micros = intended.elapsed().as_micros() as u64;
                let _ = result.latency.record(micros.max(1));
                result.requests += 1;
                *result.by_status.entry(status).or_default() += 1;
                if let Some(p) = &spec.progress {
                    p.fetch_add(1, Ordering::Relaxed);
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Err(e) => {
                result.fail("exchange", &e);
                conn = None;
            }
        }
    }
    result
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Sends a request and reads the whole response; returns its status and whether the
    /// connection may be reused.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let mut length = 0usize;
        let mut keep_alive = true;
        for line in head.split("\r\n").skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| bad("bad content-length"))?;
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    keep_alive = false;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(bad("chunked bodies are not supported"));
                }
            }
        }
        let mut have = self.buf.len() - head_end;
        while have < length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
        }
        Ok((status, keep_alive))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A tiny blocking server answering every request with a fixed response.
    fn fixed_server(response: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        while let Some(pos) = find(&pending, b"\r\n\r\n") {
                            pending.drain(..pos + 4);
                            if stream.write_all(response).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn closed_and_open_loop_runs_count_statuses() {
        let addr = fixed_server(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        let target: TargetFn = Arc::new(|v, _| format!("/event?v={v}"));
        let spec = LoadSpec {
            addr,
            connections: 4,
            duration: Duration::from_millis(300),
            rate: None,
            visitors: Visitors::Zipf(1000),
            target: target.clone(),
            progress: None,
            once: false,
            threads: 2,
        };
        let r = run(spec.clone()).unwrap();
        assert!(r.requests > 10, "{}", r.requests);
        assert_eq!(r.count(200), r.requests);
        assert_eq!(r.failures, 0);
        assert_eq!(r.latency.len(), r.requests);

        let r = run(LoadSpec {
            rate: Some(200.0),
            visitors: Visitors::Sequential(10),
            ..spec.clone()
        })
        .unwrap();
        // 200/s for 0.3 s: about 60 requests, give or take scheduling.
        assert!((40..=70).contains(&r.requests), "{}", r.requests);

        let r = run(LoadSpec {
            duration: Duration::from_secs(10),
            visitors: Visitors::Sequential(101),
            once: true,
            ..spec
        })
        .unwrap();
        assert_eq!(r.requests, 101, "each visitor once, then stop");
    }

    #[test]
    fn failures_are_counted_not_fatal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let spec = LoadSpec {
            addr,
            connections: 1,
            duration: Duration::from_millis(100),
            rate: None,
            visitors: Visitors::Sequential(1),
            target: Arc::new(|_, _| "/".into()),
            progress: None,
            once: false,
            threads: 1,
        };
        let r = run(spec).unwrap();
        assert_eq!(r.requests, 0);
        assert!(r.failures > 0);
    }
}
