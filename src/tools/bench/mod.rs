//! `tributary bench`: measures Tributary against two ceilings in one run on one machine.
//!
//! Every system under test runs as its own process — Tributary (`serve`, temp store), the mock
//! providers (`mock-provider`), the HTTP and fan-out ceilings (`bench-baseline`) — started from
//! this same binary, and is driven by the in-process load generator ([`load`]). Results are
//! reported as ratios against the ceilings measured in the same run, so they mean something on
//! a noisy or shared machine; the absolute figures do not travel between machines.
//!
//! Scenarios (see [`Scenario`]): the two ceilings; no providers; three providers cold (every
//! event calls them) and warm (answers cached), on the same visitors; one provider slower than
//! its timeout at half load (deadline adherence, connection reuse); a 100,000-trait / 20,000-
//! segment catalog; a million visitors (store growth and memory); 85% of capacity (no
//! shedding), overload at twice capacity (shedding) and recovery; optionally a soak; and,
//! only when named with `--scenario` (each takes minutes), the customer's own data
//! ([`inbound`]): a million ops through `/stream`, a million-line file imported, each against
//! the raw store's write rate, and `/event`'s latency during an import against without.
//!
//! The generator must never be what sets the pace: it runs on several threads, each thread's
//! CPU is measured, and a phase in which one was saturated is not judged. `--wrk` confirms
//! every closed-loop phase with an outside generator.
//!
//! This file holds the options, the run and one function per scenario; what they share sits
//! beside it: `process` (the child processes), `progress` (a load with a progress bar), `http`
//! and `prometheus` (reading a server's /metrics), `report` (figures, targets, the table),
//! `wrk` (the outside generator); the inbound scenarios are in `inbound`, with their own
//! admin client.

pub mod baseline;
pub mod catalogs;
pub mod engine;
pub mod inbound;
pub mod load;
pub mod population;
pub mod procstat;

mod http;
mod process;
mod progress;
mod prometheus;
mod report;
mod wrk;

pub use report::{Check, Measurement, Report, SoakSample};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store;
use catalogs::BenchProvider;
use http::http_get;
use load::{LoadSpec, Visitors};
use process::Service;
use progress::{prime_each_visitor, with_progress};
use prometheus::{metric, metric_where};
use report::measurement;

/// Visitors of the provider scenarios (cold and warm alike): warm primes each one first.
const PROVIDER_VISITORS: u64 = 100_000;

/// The deadline Tributary runs with in every scenario.
pub const DEADLINE_MS: u64 = 100;

/// What `tributary bench` runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured load before each measurement.
    pub warmup: Duration,
    /// Keep-alive connections of closed-loop runs.
    pub connections: usize,
    /// Visitor population (Zipf-distributed repeat visits).
    pub visitors: u64,
    /// Load generator threads (as `wrk -t`).
    pub generator_threads: usize,
    /// After each closed-loop phase, drive the same server with `wrk` too (Debian's package)
    /// and record its figures beside the bench's: the confirmation from outside.
    pub wrk: bool,
    /// Scenarios to run, in order; empty = all but the soak and the inbound ones (which a
    /// smoke run adds, tiny, but for `inbound-events`).
    pub scenarios: Vec<Scenario>,
    /// Length of the soak at 70% load (only when the soak scenario is selected).
    pub soak: Duration,
    /// Seed nodes of a Redis Cluster for `no-providers-redis` (skipped without them).
    pub redis_urls: Vec<String>,
    /// Where the JSON report goes.
    pub out: PathBuf,
}

impl BenchOptions {
    /// A run of a few seconds that only checks that everything works (CI).
    pub fn smoke(out: PathBuf) -> Self {
        BenchOptions {
            duration: Duration::from_millis(700),
            warmup: Duration::from_millis(200),
            connections: 8,
            visitors: 2_000,
            generator_threads: 2,
            wrk: false,
            scenarios: Vec::new(),
            soak: Duration::from_secs(2),
            redis_urls: Vec::new(),
            out,
        }
    }

    fn is_smoke(&self) -> bool {
        self.duration < Duration::from_secs(2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    HttpCeiling,
    NoProviders,
    /// `no-providers` on a store that already holds every visitor (returning visitors).
    NoProvidersStored,
    /// `no-providers` on the Redis Cluster store (`--redis-urls`).
    NoProvidersRedis,
    NoProvidersDurable,
    FanoutCeiling,
    ProvidersCold,
    ProvidersWarm,
    HangingProvider,
    #[value(name = "catalog-100k")]
    #[serde(rename = "catalog-100k")]
    Catalog100k,
    #[value(name = "visitors-1m")]
    #[serde(rename = "visitors-1m")]
    Visitors1m,
    Overload,
    Soak,
    /// A million ops through `POST /stream` (not in the default list: see [`inbound`]).
    InboundStream,
    /// A million-line inbound file imported.
    InboundFile,
    /// `/event` latency at 40% of capacity, alone and during an import.
    InboundEvents,
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        use Scenario::*;
        vec![
            HttpCeiling,
            NoProviders,
            NoProvidersStored,
            NoProvidersRedis,
            NoProvidersDurable,
            FanoutCeiling,
            ProvidersCold,
            ProvidersWarm,
            HangingProvider,
            Catalog100k,
            Visitors1m,
            Overload,
        ]
    }

    fn name(self) -> &'static str {
        use Scenario::*;
        match self {
            HttpCeiling => "http-ceiling",
            NoProviders => "no-providers",
            NoProvidersStored => "no-providers-stored",
            NoProvidersRedis => "no-providers-redis",
            NoProvidersDurable => "no-providers-durable",
            FanoutCeiling => "fanout-ceiling",
            ProvidersCold => "providers-cold",
            ProvidersWarm => "providers-warm",
            HangingProvider => "hanging-provider",
            Catalog100k => "catalog-100k",
            Visitors1m => "visitors-1m",
            Overload => "overload",
            Soak => "soak",
            InboundStream => "inbound-stream",
            InboundFile => "inbound-file",
            InboundEvents => "inbound-events",
        }
    }
}

struct Bench {
    options: BenchOptions,
    dir: tempfile::TempDir,
    providers: Vec<BenchProvider>,
    hanging: BenchProvider,
    measurements: Vec<Measurement>,
}

/// Runs the benchmark and writes the report.
pub fn run(options: BenchOptions) -> Result<Report, String> {
    if cfg!(debug_assertions) && !options.is_smoke() {
        eprintln!(
            "warning: this is a debug build; run `cargo run --release -- bench` for real figures"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("tributary-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let (services, providers, hanging) = start_providers()?;
    let mut bench = Bench {
        options,
        dir,
        providers,
        hanging,
        measurements: Vec::new(),
    };
    let scenarios = if bench.options.scenarios.is_empty() {
        let mut all = Scenario::all();
        if bench.options.is_smoke() {
            // Tiny in a smoke run (a few thousand ops, seconds), so CI runs them too; the
            // `/event` one is left out, as its three phases would add as many again.
            all.extend([Scenario::InboundStream, Scenario::InboundFile]);
        }
        all
    } else {
        bench.options.scenarios.clone()
    };
    let outcome = scenarios.iter().try_for_each(|s| bench.scenario(*s));
    for s in services {
        s.stop();
    }
    outcome?;

    let report = Report {
        machine: report::machine(),
        settings: report::settings(&bench.options),
        checks: report::checks(&bench.measurements),
        measurements: bench.measurements,
    };
    report::print_report(&report);
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&bench.options.out, json)
        .map_err(|e| format!("cannot write {}: {e}", bench.options.out.display()))?;
    println!("\nJSON report: {}", bench.options.out.display());
    Ok(report)
}

/// The mock providers every provider scenario calls (`p1`…`p3`, answering in 1-3 ms) and one
/// that never answers in time (`hang`, standing in for `p3`), with the processes serving them.
fn start_providers() -> Result<(Vec<Service>, Vec<BenchProvider>, BenchProvider), String> {
    let mut services = Vec::new();
    let mut providers = Vec::new();
    for i in 1..=3u32 {
        let name = format!("p{i}");
        let args = vec![
            "mock-provider".into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--name".into(),
            name.clone(),
            "--segment".into(),
            format!("seg-{i}=0.8"),
            "--segment".into(),
            format!("other-{i}=0.5"),
            "--latency-ms".into(),
            "1..3".into(),
        ];
        let service = Service::spawn(&name, &args, &[])?;
        providers.push(BenchProvider {
            pid: i,
            name,
            url: format!("http://{}/segments", service.addr),
            data_source_id: 1000 + i,
            segment: format!("seg-{i}"),
        });
        services.push(service);
    }
    let hang_args: Vec<String> = [
        "mock-provider",
        "--bind",
        "127.0.0.1:0",
        "--name",
        "hang",
        "--segment",
        "seg-3=1",
        // Slower than its 80 ms timeout, but it does answer: whether the connection of a
        // timed-out call is used again afterwards is what the scenario also measures.
        "--latency-ms",
        "150..200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let hang = Service::spawn("hanging provider", &hang_args, &[])?;
    let hanging = BenchProvider {
        pid: 3,
        name: "hang".into(),
        url: format!("http://{}/segments", hang.addr),
        data_source_id: 1003,
        segment: "seg-3".into(),
    };
    services.push(hang);
    Ok((services, providers, hanging))
}

/// The scenarios, in the order of the report's rows.
impl Bench {
    fn scenario(&mut self, scenario: Scenario) -> Result<(), String> {
        match scenario {
            Scenario::HttpCeiling => self.http_ceiling(),
            Scenario::NoProviders => self.no_providers(),
            Scenario::NoProvidersStored => self.no_providers_stored(),
            Scenario::NoProvidersRedis => self.no_providers_redis(),
            Scenario::NoProvidersDurable => self.no_providers_durable(),
            Scenario::FanoutCeiling => self.fanout_ceiling(),
            Scenario::ProvidersCold => self.providers_cold(),
            Scenario::ProvidersWarm => self.providers_warm(),
            Scenario::HangingProvider => self.hanging_provider(),
            Scenario::Catalog100k => self.catalog_100k(),
            Scenario::Visitors1m => self.visitors_1m(),
            Scenario::Overload => self.overload(),
            Scenario::Soak => self.soak(),
            Scenario::InboundStream => self.inbound_stream(),
            Scenario::InboundFile => self.inbound_file(),
            Scenario::InboundEvents => self.inbound_events(),
        }
    }

    /// What any HTTP server on this machine answers: fixed JSON, no logic.
    fn http_ceiling(&mut self) -> Result<(), String> {
        self.ceiling(
            Scenario::HttpCeiling,
            &["bench-baseline".into(), "http".into()],
        )
    }

    /// Tributary with no providers: the pipeline's own cost.
    fn no_providers(&mut self) -> Result<(), String> {
        self.without_providers(Scenario::NoProviders, catalogs::small(&[], 0, 80))
    }

    /// `no-providers` with every visitor's profile stored before the start: each session's
    /// first event reads one (on an empty store, the stored-id filter spares those reads).
    fn no_providers_stored(&mut self) -> Result<(), String> {
        let name = Scenario::NoProvidersStored.name();
        let took = population::prefill(&self.store_path(name), self.options.visitors)?;
        eprintln!(
            "{name}: {} visitors' profiles stored beforehand in {:.1} s",
            self.options.visitors,
            took.as_secs_f64()
        );
        self.without_providers(Scenario::NoProvidersStored, catalogs::small(&[], 0, 80))
    }

    /// `no-providers` in durable mode (`store.durable`): every answer waits until its change
    /// is on disk. What that costs against `no-providers` (BENCHMARKS.md).
    fn no_providers_durable(&mut self) -> Result<(), String> {
        self.without_providers_with(
            Scenario::NoProvidersDurable,
            catalogs::small(&[], 0, 80),
            &[("TRIBUTARY__STORE__DURABLE", "true")],
        )
    }

    /// `no-providers` on a Redis Cluster, and what each stored key costs there.
    fn no_providers_redis(&mut self) -> Result<(), String> {
        let o = self.options.clone();
        let name = Scenario::NoProvidersRedis.name();
        if o.redis_urls.is_empty() {
            eprintln!("{name}: skipped (give --redis-urls to measure the Redis store)");
            return Ok(());
        }
        let before = store::cluster_usage(&o.redis_urls).map_err(|e| e.to_string())?;
        let urls = o.redis_urls.join(",");
        let prefix = format!("bench{:08x}", rand::random::<u32>());
        let (s, _) = self.tributary_with_env(
            name,
            catalogs::small(&[], 0, 80),
            "",
            &[
                ("TRIBUTARY__STORE__BACKEND", "redis"),
                ("TRIBUTARY__STORE__REDIS_URLS", urls.as_str()),
                ("TRIBUTARY__STORE__REDIS_PREFIX", prefix.as_str()),
            ],
        )?;
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(o.visitors),
            None,
            o.connections,
            o.duration,
        );
        let mut m = self.measure(name, &s, None, spec)?;
        s.stop();
        let after = store::cluster_usage(&o.redis_urls).map_err(|e| e.to_string())?;
        let keys = after.1.saturating_sub(before.1);
        if keys > 0 {
            m.extra.insert("redis_keys".into(), keys as f64);
            m.extra.insert(
                "redis_bytes_per_key".into(),
                after.0.saturating_sub(before.0) as f64 / keys as f64,
            );
        }
        self.measurements.push(m);
        Ok(())
    }

    /// What calling the three providers costs at best: a server that only fans out to them.
    fn fanout_ceiling(&mut self) -> Result<(), String> {
        let mut args = vec!["bench-baseline".to_string(), "fanout".into()];
        for p in &self.providers {
            args.push("--provider".into());
            args.push(p.url.clone());
        }
        self.ceiling(Scenario::FanoutCeiling, &args)
    }

    /// Three providers, called on every event (no answer cached).
    fn providers_cold(&mut self) -> Result<(), String> {
        self.with_providers(Scenario::ProvidersCold, false)
    }

    /// Three providers whose answers every visitor has in its profile's cache.
    fn providers_warm(&mut self) -> Result<(), String> {
        self.with_providers(Scenario::ProvidersWarm, true)
    }

    /// One of three providers always answers after its timeout, at half the `providers-cold`
    /// rate: the deadline holds, and the slow provider's connections are counted.
    fn hanging_provider(&mut self) -> Result<(), String> {
        let o = self.options.clone();
        let name = Scenario::HangingProvider.name();
        let capacity = self
            .find(Scenario::ProvidersCold)
            .map(|m| m.events_per_sec)
            .unwrap_or(1000.0);
        let providers = [&self.providers[0], &self.providers[1], &self.hanging];
        let list: Vec<BenchProvider> = providers
            .iter()
            .map(|p| BenchProvider {
                pid: p.pid,
                name: p.name.clone(),
                url: p.url.clone(),
                data_source_id: p.data_source_id,
                segment: p.segment.clone(),
            })
            .collect();
        // Every provider's timeout (80 ms) is below the deadline; the slow one answers after
        // it (150-200 ms), every time. Its circuit would open after a few timeouts and stop
        // the calls (the right thing in production); this scenario is about the deadline
        // and the connections while calls time out, so the breaker is turned off.
        let catalog = catalogs::small(&list, 0, 80);
        let (s, store) = self.tributary_with_env(
            name,
            catalog,
            "",
            &[("TRIBUTARY__REALTIME__CIRCUIT_FAILURES", "0")],
        )?;
        let rate = (capacity * 0.5).max(10.0);
        let connections = connections_for(rate, DEADLINE_MS as f64 / 1000.0);
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(o.visitors),
            Some(rate),
            connections,
            o.duration,
        );
        let mut m = self.measure(name, &s, Some(&store), spec)?;
        m.offered_per_sec = Some(rate);
        // Connections opened to the slow provider against its calls: with every timed-out
        // connection thrown away, one per call.
        if let Some(text) = http_get(s.addr, "/metrics") {
            let of_slow = |series: &str| metric_where(&text, series, "provider=\"hang\"");
            if let (Some(connects), Some(calls)) = (
                of_slow("tributary_provider_connects_total"),
                of_slow("tributary_provider_calls_total"),
            ) {
                m.extra.insert("hanging_connects".into(), connects);
                m.extra.insert("hanging_calls".into(), calls);
            }
        }
        s.stop();
        self.measurements.push(m);
        Ok(())
    }

    /// 100,000 traits and 20,000 segments (a fiftieth of that in a smoke run), no providers.
    fn catalog_100k(&mut self) -> Result<(), String> {
        let catalog = if self.options.is_smoke() {
            catalogs::large(2_000, 400)
        } else {
            catalogs::large(100_000, 20_000)
        };
        self.without_providers(Scenario::Catalog100k, catalog)
    }

    /// A million visitors once each: the memory each active session holds and the store's
    /// cost per profile.
    fn visitors_1m(&mut self) -> Result<(), String> {
        let o = self.options.clone();
        let name = Scenario::Visitors1m.name();
        let (s, store) = self.tributary(name, catalogs::small(&[], 0, 80), "")?;
        let total = if o.is_smoke() { 5_000 } else { 1_000_000 };
        let rss_idle = procstat::rss_bytes(s.pid()).unwrap_or(0);
        let started = Instant::now();
        let spec = LoadSpec {
            // Long enough for every visitor once at the rates seen on small machines;
            // each connection stops when its share is done.
            ..self.spec(
                s.addr,
                Visitors::Sequential(total),
                None,
                o.connections,
                Duration::from_secs(600),
            )
        };
        let result = prime_each_visitor(spec, total)?;
        let elapsed = started.elapsed();
        let mut m = measurement(name, &result);
        m.events_per_sec = result.requests as f64 / elapsed.as_secs_f64();
        let metrics = http_get(s.addr, "/metrics").unwrap_or_default();
        let sessions = metric(&metrics, "tributary_sessions_active").unwrap_or(0.0);
        let rss = procstat::rss_bytes(s.pid()).unwrap_or(0);
        m.peak_rss_bytes = procstat::peak_rss_bytes(s.pid());
        s.stop();
        let store_bytes = procstat::dir_size(&store);
        m.store_bytes = Some(store_bytes);
        m.extra.insert("visitors".into(), total as f64);
        m.extra.insert("sessions_active_at_end".into(), sessions);
        m.extra.insert("rss_bytes_at_end".into(), rss as f64);
        m.extra.insert("rss_idle_bytes".into(), rss_idle as f64);
        if sessions > 0.0 {
            m.extra.insert(
                "rss_bytes_per_active_session".into(),
                (rss.saturating_sub(rss_idle)) as f64 / sessions,
            );
        }
        m.extra.insert(
            "store_bytes_per_profile".into(),
            store_bytes as f64 / total as f64,
        );
        self.measurements.push(m);
        Ok(())
    }

    /// `<name>-capacity`: what this server serves closed-loop (after a warm-up), recorded as a
    /// measurement; the events/s that open-loop phases are offered a share of.
    fn capacity(&mut self, name: &str, s: &Service, store: &Path) -> Result<f64, String> {
        let o = &self.options;
        let zipf = Visitors::Zipf(o.visitors);
        let spec = self.spec(s.addr, zipf, None, o.connections, o.duration);
        let capacity = self.measure(&format!("{name}-capacity"), s, Some(store), spec)?;
        let rate = capacity.events_per_sec;
        self.measurements.push(capacity);
        Ok(rate)
    }

    /// 85% of the capacity (nothing shed), twice the capacity (shedding with explicit 429s),
    /// then half of it right after (recovery), and the load generator's own latency at that
    /// many connections.
    fn overload(&mut self) -> Result<(), String> {
        let o = self.options.clone();
        let name = Scenario::Overload.name();
        let zipf = Visitors::Zipf(o.visitors);
        // One HTTP worker: the load generator (one thread) must be able to offer twice
        // what the server can take, which on a small machine it cannot against a server
        // using every core. The capacity is measured first, on this same server.
        // Every visitor stored beforehand: the capacity measured first is then the steady
        // state's, not that of a store still filling (whose new visitors cost no read), so
        // 85% of it is a load the server can hold for the whole run.
        population::prefill(&self.store_path(name), o.visitors)?;
        let (s, store) =
            self.tributary(name, catalogs::small(&[], 0, 80), "[server]\nworkers = 1\n")?;
        let capacity = self.capacity(name, &s, &store)?;
        let rate_of = |factor: f64| (capacity * factor).max(10.0);
        // Real overload comes from many clients: thousands of connections, so that the
        // backlog builds up at the server (where it can be seen and shed), not inside
        // a client that waits for one answer before sending the next.
        let connections = connections_for(rate_of(2.0), DEADLINE_MS as f64 / 1000.0);
        // Recovery: half the capacity from ordinary clients (keep-alive connections
        // that each wait for an answer), right after the overload ends.
        // Steady: 85% of the capacity from ordinary clients, which must not be shed.
        let phases = [
            ("steady", 0.85, o.connections),
            ("overload", 2.0, connections),
            ("recovery", 0.5, o.connections),
        ];
        for (phase, factor, connections) in phases {
            let rate = rate_of(factor);
            let spec = self.spec(s.addr, zipf.clone(), Some(rate), connections, o.duration);
            let label = format!("{name}-{phase}");
            let mut m = self.measure_phase(&label, &s, Some(&store), spec)?;
            m.offered_per_sec = Some(rate);
            self.measurements.push(m);
        }
        s.stop();
        // With thousands of connections the generator adds latency of its own; the bare HTTP
        // ceiling driven the same way shows how much.
        let floor = Service::spawn(
            "generator floor",
            &["bench-baseline".into(), "http".into()],
            &[],
        )?;
        let rate = rate_of(2.0);
        let spec = self.spec(floor.addr, zipf, Some(rate), connections, o.duration);
        let label = format!("{name}-generator-floor");
        let mut m = self.measure_phase(&label, &floor, None, spec)?;
        m.offered_per_sec = Some(rate);
        floor.stop();
        self.measurements.push(m);
        Ok(())
    }

    /// The deployment shape (three providers, every event calls them) at 70% of the capacity
    /// this same server shows first, for `--soak-secs` (only when `--scenario soak` is given):
    /// whether memory and the store keep growing.
    fn soak(&mut self) -> Result<(), String> {
        let o = self.options.clone();
        let name = Scenario::Soak.name();
        let zipf = Visitors::Zipf(o.visitors);
        let (s, store) = self.tributary(name, catalogs::small(&self.providers, 0, 80), "")?;
        let rate = self.capacity(name, &s, &store)? * 0.7;
        let connections = connections_for(rate, 0.05);
        let spec = self.spec(s.addr, zipf, Some(rate), connections, o.soak);
        let pid = s.pid();
        let addr = s.addr;
        let samples = Arc::new(Mutex::new(Vec::<SoakSample>::new()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let samples = samples.clone();
            let done = done.clone();
            let store = store.clone();
            let started = Instant::now();
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let sample = soak_sample(addr, pid, &store, started);
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                    std::thread::sleep(Duration::from_secs(5));
                }
            })
        };
        let result = with_progress(name, spec)?;
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let mut m = measurement(name, &result);
        m.offered_per_sec = Some(rate);
        m.store_bytes = Some(procstat::dir_size(&store));
        m.peak_rss_bytes = procstat::peak_rss_bytes(pid);
        let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if samples.len() >= 4 {
            // Growth from the end of the first quarter to the end, and what grew with it.
            let first = &samples[samples.len() / 4];
            let last = &samples[samples.len() - 1];
            m.extra
                .insert("rss_first_quarter_bytes".into(), first.rss_bytes as f64);
            m.extra
                .insert("rss_end_bytes".into(), last.rss_bytes as f64);
            m.extra.insert(
                "rss_growth_ratio".into(),
                last.rss_bytes as f64 / (first.rss_bytes as f64).max(1.0),
            );
            m.extra
                .insert("sessions_first_quarter".into(), first.sessions);
            m.extra.insert("sessions_end".into(), last.sessions);
            m.extra.insert(
                "store_growth_bytes".into(),
                last.store_bytes as f64 - first.store_bytes as f64,
            );
        }
        m.series = samples;
        s.stop();
        self.measurements.push(m);
        Ok(())
    }
}

/// What the scenarios share: the processes they start, the load they drive and how a phase is
/// measured.
impl Bench {
    /// A ceiling (`bench-baseline …`) under closed-loop load.
    fn ceiling(&mut self, scenario: Scenario, args: &[String]) -> Result<(), String> {
        let o = self.options.clone();
        let name = scenario.name();
        let s = Service::spawn(name, args, &[])?;
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(o.visitors),
            None,
            o.connections,
            o.duration,
        );
        let m = self.measure(name, &s, None, spec)?;
        s.stop();
        self.measurements.push(m);
        Ok(())
    }

    /// Tributary with `catalog` (no providers) under closed-loop load.
    fn without_providers(
        &mut self,
        scenario: Scenario,
        catalog: serde_json::Value,
    ) -> Result<(), String> {
        self.without_providers_with(scenario, catalog, &[])
    }

    /// [`Bench::without_providers`] with configuration overrides.
    fn without_providers_with(
        &mut self,
        scenario: Scenario,
        catalog: serde_json::Value,
        overrides: &[(&str, &str)],
    ) -> Result<(), String> {
        let o = self.options.clone();
        let name = scenario.name();
        let (s, store) = self.tributary_with_env(name, catalog, "", overrides)?;
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(o.visitors),
            None,
            o.connections,
            o.duration,
        );
        let m = self.measure(name, &s, Some(&store), spec)?;
        s.stop();
        self.measurements.push(m);
        Ok(())
    }

    /// Tributary calling the three providers, their answers cached (`warm`, after one visit
    /// of every visitor) or not.
    fn with_providers(&mut self, scenario: Scenario, warm: bool) -> Result<(), String> {
        let o = self.options.clone();
        let name = scenario.name();
        let catalog = catalogs::small(&self.providers, if warm { 3600 } else { 0 }, 80);
        let (s, store) = self.tributary(name, catalog, "")?;
        // Cold and warm on the same visitors, so that the ratio is about the providers' cache
        // and nothing else; bounded so that priming every one of them stays short.
        let visitors = o.visitors.min(PROVIDER_VISITORS);
        if warm {
            // Every visitor once, so that every answer is in its profile's cache.
            let prime = LoadSpec {
                visitors: Visitors::Sequential(visitors),
                ..self.spec(
                    s.addr,
                    Visitors::Sequential(visitors),
                    None,
                    o.connections,
                    o.duration,
                )
            };
            prime_each_visitor(prime, visitors)?;
        }
        let spec = self.spec(
            s.addr,
            Visitors::Zipf(visitors),
            None,
            o.connections,
            o.duration,
        );
        let mut m = self.measure(name, &s, Some(&store), spec)?;
        if let Some(text) = http_get(s.addr, "/metrics") {
            let calls = metric(&text, "tributary_provider_calls_total").unwrap_or(0.0);
            m.extra.insert("provider_outcomes_total".into(), calls);
        }
        s.stop();
        self.measurements.push(m);
        Ok(())
    }

    fn find(&self, scenario: Scenario) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.scenario == scenario.name())
    }

    /// Writes a config and catalog for Tributary and starts it.
    fn tributary(
        &self,
        label: &str,
        catalog: serde_json::Value,
        extra_config: &str,
    ) -> Result<(Service, PathBuf), String> {
        self.tributary_with_env(label, catalog, extra_config, &[])
    }

    /// Where the Tributary of scenario `label` keeps its store.
    fn store_path(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("store-{label}"))
    }

    /// [`Bench::tributary`] with configuration overrides as environment variables
    /// (`TRIBUTARY__SECTION__KEY`).
    fn tributary_with_env(
        &self,
        label: &str,
        catalog: serde_json::Value,
        extra_config: &str,
        overrides: &[(&str, &str)],
    ) -> Result<(Service, PathBuf), String> {
        let seed = self.dir.path().join(format!("catalog-{label}.json"));
        std::fs::write(
            &seed,
            serde_json::to_vec(&catalog).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let store = self.store_path(label);
        let config = self.dir.path().join(format!("config-{label}.toml"));
        // `extra_config` may add keys to [server] (it comes first) or add other sections.
        let text = format!(
            "{extra_config}\n[store]\npath = {store:?}\n[realtime]\ndeadline_ms = {DEADLINE_MS}\n[catalog]\nseed = {seed:?}\n"
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let args = vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        // The listener on a free port, whatever `extra_config` says.
        let mut env = vec![
            ("TRIBUTARY__SERVER__BIND", "127.0.0.1:0".to_string()),
            ("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0".to_string()),
        ];
        env.extend(overrides.iter().map(|(k, v)| (*k, v.to_string())));
        let service = Service::spawn(&format!("tributary ({label})"), &args, &env)?;
        Ok((service, store))
    }

    fn spec(
        &self,
        addr: SocketAddr,
        visitors: Visitors,
        rate: Option<f64>,
        connections: usize,
        duration: Duration,
    ) -> LoadSpec {
        LoadSpec {
            addr,
            connections,
            duration,
            rate,
            visitors,
            target: Arc::new(catalogs::event_target),
            progress: None,
            once: false,
            threads: self.options.generator_threads,
        }
    }

    /// Warm-up, then a measured phase with CPU, memory and store figures.
    fn measure(
        &mut self,
        scenario: &str,
        service: &Service,
        store: Option<&Path>,
        spec: LoadSpec,
    ) -> Result<Measurement, String> {
        if !self.options.warmup.is_zero() {
            load::run(LoadSpec {
                duration: self.options.warmup,
                ..spec.clone()
            })
            .map_err(|e| e.to_string())?;
        }
        let mut m = self.measure_phase(scenario, service, store, spec.clone())?;
        if self.options.wrk && spec.rate.is_none() {
            self.confirm_with_wrk(&mut m, service, &spec)?;
        }
        Ok(m)
    }

    /// The same closed-loop load from `wrk`: its events/s, p99 and the server's CPU per event
    /// go into the measurement's figures (`wrk_…`).
    fn confirm_with_wrk(
        &self,
        m: &mut Measurement,
        service: &Service,
        spec: &LoadSpec,
    ) -> Result<(), String> {
        let script = self.wrk_script()?;
        let visitors = match spec.visitors {
            Visitors::Zipf(n) | Visitors::Sequential(n) => n,
        };
        let cpu_before = procstat::cpu_micros(service.pid());
        let result = wrk::run(
            spec.addr,
            spec.threads,
            spec.connections,
            spec.duration,
            visitors,
            &script,
            None,
        )?;
        let cpu_after = procstat::cpu_micros(service.pid());
        m.extra
            .insert("wrk_events_per_sec".into(), result.requests_per_sec);
        if let Some(p99) = result.p99_ms {
            m.extra.insert("wrk_p99_ms".into(), p99);
        }
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            let requests = result.requests_per_sec * spec.duration.as_secs_f64();
            if requests > 0.0 {
                m.extra
                    .insert("wrk_cpu_us_per_event".into(), (b - a) as f64 / requests);
            }
        }
        Ok(())
    }

    /// Where wrk's event script is, written there on first use.
    fn wrk_script(&self) -> Result<PathBuf, String> {
        let script = self.dir.path().join("wrk_events.lua");
        if !script.exists() {
            std::fs::write(&script, wrk::SCRIPT).map_err(|e| e.to_string())?;
        }
        Ok(script)
    }

    /// A measured phase (no warm-up): load figures, server CPU per event, memory, store size,
    /// how busy the load generator itself was, and the server's shed counts.
    fn measure_phase(
        &mut self,
        scenario: &str,
        service: &Service,
        store: Option<&Path>,
        spec: LoadSpec,
    ) -> Result<Measurement, String> {
        let me = std::process::id();
        let cpu_before = procstat::cpu_micros(service.pid());
        let own_before = procstat::cpu_micros(me);
        let shed_before = shed_counts(service.addr);
        let result = with_progress(scenario, spec)?;
        let cpu_after = procstat::cpu_micros(service.pid());
        let own_after = procstat::cpu_micros(me);
        let mut m = measurement(scenario, &result);
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            if result.requests > 0 {
                m.cpu_us_per_event = Some((b - a) as f64 / result.requests as f64);
            }
        }
        if let (Some(a), Some(b)) = (own_before, own_after) {
            // Over 0.9 the generator, not the server, may be what limits the run.
            let share = (b - a) as f64 / result.elapsed.as_micros().max(1) as f64;
            m.extra.insert("generator_cpu_share".into(), share);
        }
        for (reason, after) in shed_counts(service.addr) {
            let before = shed_before
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0.0, |(_, n)| *n);
            if after > before {
                m.extra.insert(format!("shed_{reason}"), after - before);
            }
        }
        m.peak_rss_bytes = procstat::peak_rss_bytes(service.pid());
        m.store_bytes = store.map(procstat::dir_size);
        Ok(m)
    }
}

/// `tributary_events_shed_total` by reason, from a server's /metrics (empty for servers
/// without it, such as the ceilings).
fn shed_counts(addr: SocketAddr) -> Vec<(String, f64)> {
    http_get(addr, "/metrics")
        .map(|text| prometheus::shed_counts(&text))
        .unwrap_or_default()
}

/// The soaking server's state now.
fn soak_sample(addr: SocketAddr, pid: u32, store: &Path, started: Instant) -> SoakSample {
    let text = http_get(addr, "/metrics").unwrap_or_default();
    SoakSample {
        secs: started.elapsed().as_secs_f64().round(),
        rss_bytes: procstat::rss_bytes(pid).unwrap_or(0),
        sessions: metric(&text, "tributary_sessions_active").unwrap_or(0.0),
        pending_writes: metric(&text, "tributary_store_pending_writes").unwrap_or(0.0),
        store_bytes: procstat::dir_size(store),
    }
}

/// Connections needed to offer `rate` requests/s when each may take up to `latency` seconds.
fn connections_for(rate: f64, latency: f64) -> usize {
    ((rate * latency * 1.5).ceil() as usize).clamp(16, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_cover_rate_times_latency() {
        assert_eq!(connections_for(1000.0, 0.1), 150);
        assert_eq!(connections_for(1.0, 0.1), 16);
        assert_eq!(connections_for(1e9, 1.0), 4096);
    }
}
