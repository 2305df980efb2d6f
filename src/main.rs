//! The `tributary` binary: parses the command line, loads the configuration, starts logging and
//! hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tributary::config::Config;
use tributary::server::{self, StartOptions};
use tributary::telemetry::logging::LogFormat;
use tributary::tools::bench::{baseline, BenchOptions};
use tributary::tools::mock_provider::{self, MockBehavior};
use tributary::tools::onboard::Outcome;

// mimalloc instead of glibc's malloc: the A/B in BENCHMARKS.md (issue 16) is why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Real-time audience data collection server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DCS with a configuration file.
    Serve {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Run the DCS with sample providers, traits and segments, on a temporary store.
    Demo {
        /// Server settings to use (the catalog and store are the demo's own).
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Serve HTTPS, with a self-signed certificate for localhost and 127.0.0.1 made in the
        /// demo's temporary directory (the admin API stays plain HTTP).
        #[arg(long)]
        tls: bool,
    },
    /// Run a sample data provider (the provider protocol's other side).
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:9101")]
        bind: SocketAddr,
        /// Name echoed in answers.
        #[arg(long, default_value = "mock")]
        name: String,
        /// A segment and the share of visitors that have it, e.g. `auto-intender=0.6`.
        #[arg(long = "segment", value_parser = parse_segment)]
        segments: Vec<(String, f64)>,
        /// Minimum and maximum latency in ms, e.g. `2..10`.
        #[arg(long, default_value = "0..0", value_parser = parse_range)]
        latency_ms: (u64, u64),
        /// Share of calls answered with 500.
        #[arg(long, default_value_t = 0.0)]
        error_share: f64,
        /// Share of calls answered only after `--slow-ms`.
        #[arg(long, default_value_t = 0.0)]
        slow_share: f64,
        #[arg(long, default_value_t = 0)]
        slow_ms: u64,
        /// `ttl` (seconds) to put in answers.
        #[arg(long)]
        ttl: Option<u64>,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Import inbound files in AAM's format (`ftp_dpm_<DPID>_<unix secs>.sync[.gz]`…) through a
    /// running server's admin API, with progress. Exit status: 0 when every line was applied,
    /// 2 when some were rejected (each is printed with its number), 1 when a file could not be
    /// imported.
    Onboard {
        /// Files, imported in the order given (AAM's names: they say the data source).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The server's admin listener.
        #[arg(
            long,
            env = "TRIBUTARY_ADMIN_URL",
            default_value = "http://127.0.0.1:8081"
        )]
        admin: String,
        /// The server's admin token.
        #[arg(long, env = "TRIBUTARY__ADMIN__TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Print a TCF v2 consent string (core segment) granting these purposes and vendors, to
    /// try `gdpr=1` calls; `--decode` shows what a string grants instead.
    TcString {
        /// Purposes with consent, e.g. `1,10`.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        purposes: Vec<u8>,
        /// Vendors with consent, e.g. `565,900`.
        #[arg(long, value_delimiter = ',')]
        vendors: Vec<u16>,
        /// A string to decode rather than encode.
        #[arg(long)]
        decode: Option<String>,
    },
    /// Measure Tributary against bare HTTP and bare fan-out ceilings (see BENCHMARKS.md).
    Bench {
        /// A run of a few seconds that only checks that the tool works (CI).
        #[arg(long)]
        smoke: bool,
        /// Measured seconds per scenario.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Unmeasured warm-up seconds before each measurement.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Keep-alive connections of closed-loop scenarios.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Visitor population (Zipf-distributed repeat visits).
        #[arg(long, default_value_t = 1_000_000)]
        visitors: u64,
        /// Load generator threads (as `wrk -t`): enough that the generator is never the limit.
        #[arg(long, default_value_t = 2)]
        generator_threads: usize,
        /// Confirm each closed-loop phase with `wrk` (apt-get install wrk) on the same server.
        #[arg(long)]
        wrk: bool,
        /// Scenarios to run (repeatable); default: all but soak and the inbound ones.
        #[arg(long = "scenario", value_enum)]
        scenarios: Vec<tributary::tools::bench::Scenario>,
        /// Length of the soak scenario in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench-results.json")]
        out: PathBuf,
        /// Seed nodes of a Redis Cluster (`redis://127.0.0.1:7101,...`) for the
        /// `no-providers-redis` scenario; every primary should be listed (memory per key).
        #[arg(long, value_delimiter = ',')]
        redis_urls: Vec<String>,
    },
    /// Segment-engine micro-benchmark: evaluation time per event for catalogs of 10, 1,000
    /// and 100,000 traits (see BENCHMARKS.md).
    BenchEngine {
        /// Events per run (each catalog size runs five times).
        #[arg(long, default_value_t = 300_000)]
        events: usize,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench-engine.json")]
        out: PathBuf,
    },
    /// Drives one server with the bench's load generator and prints the figures.
    #[command(hide = true)]
    BenchLoad {
        #[arg(long)]
        addr: SocketAddr,
        /// Requests per second (open loop); without it, closed loop.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1_000_000)]
        visitors: u64,
    },
    /// A ceiling for `bench`: `http` (fixed JSON) or `fanout` (calls providers, no logic).
    #[command(hide = true)]
    BenchBaseline {
        #[arg(value_parser = ["http", "fanout"])]
        kind: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        #[arg(long = "provider")]
        providers: Vec<String>,
        #[arg(long, default_value_t = 80)]
        timeout_ms: u64,
    },
}

fn parse_segment(text: &str) -> Result<(String, f64), String> {
    let (id, share) = text.split_once('=').unwrap_or((text, "1"));
    let share: f64 = share
        .parse()
        .map_err(|_| format!("{share:?} is not a share between 0 and 1"))?;
    if id.is_empty() || !(0.0..=1.0).contains(&share) {
        return Err("expected <segment-id>=<share between 0 and 1>".into());
    }
    Ok((id.to_string(), share))
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = text.split_once("..").ok_or("expected <min>..<max>")?;
    let lo: u64 = lo.parse().map_err(|_| "min is not a number")?;
    let hi: u64 = hi.parse().map_err(|_| "max is not a number")?;
    if lo > hi {
        return Err("min is larger than max".into());
    }
    Ok((lo, hi))
}

fn bench_engine(events: usize, out: &std::path::Path) -> Result<(), String> {
    let report = tributary::tools::bench::engine::run(events.max(1))?;
    tributary::tools::bench::engine::print(&report);
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(out, json).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("JSON report: {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs in the configured format; everything else in text.
    if !matches!(cli.command, Command::Serve { .. }) {
        tributary::telemetry::logging::init(LogFormat::Text);
    }
    let system = actix_rt::System::new();
    let outcome: Result<(), String> = match cli.command {
        Command::Serve { config } => match Config::load(&config) {
            Ok(config) => system.block_on(async move {
                tributary::telemetry::logging::init(config.log.format);
                let running = server::start(
                    config,
                    StartOptions {
                        handle_signals: true,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                running.wait().await.map_err(|e| e.to_string())
            }),
            Err(e) => Err(e.to_string()),
        },
        Command::Demo { config, tls } => system.block_on(tributary::tools::demo::run(&config, tls)),
        Command::Onboard {
            files,
            admin,
            token,
        } => {
            let options = tributary::tools::onboard::OnboardOptions {
                admin,
                token,
                files,
            };
            return match system.block_on(tributary::tools::onboard::run(options)) {
                Ok(Outcome::Applied) => ExitCode::SUCCESS,
                Ok(Outcome::SomeLinesRefused) => ExitCode::from(2),
                Err(message) => {
                    eprintln!("tributary onboard: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::TcString {
            purposes,
            vendors,
            decode,
        } => tributary::tools::tc_string::run(&purposes, &vendors, decode.as_deref()),
        Command::MockProvider {
            bind,
            name,
            segments,
            latency_ms,
            error_share,
            slow_share,
            slow_ms,
            ttl,
            workers,
        } => system.block_on(async move {
            let behavior = MockBehavior {
                name,
                segments,
                latency_ms,
                slow_share,
                slow_ms,
                error_share,
                ttl_secs: ttl,
            };
            let provider = mock_provider::start(bind, behavior, workers)
                .await
                .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
            println!("mock provider listening on {}", provider.url());
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
            provider.stop().await;
            Ok(())
        }),
        Command::Bench {
            smoke,
            duration,
            warmup,
            connections,
            visitors,
            generator_threads,
            wrk,
            scenarios,
            soak_secs,
            out,
            redis_urls,
        } => {
            let mut options = if smoke {
                BenchOptions::smoke(out)
            } else {
                BenchOptions {
                    duration: Duration::from_secs_f64(duration.max(0.1)),
                    warmup: Duration::from_secs_f64(warmup.max(0.0)),
                    connections: connections.max(1),
                    visitors: visitors.max(1),
                    generator_threads: generator_threads.clamp(1, 64),
                    wrk,
                    scenarios: Vec::new(),
                    soak: Duration::from_secs(soak_secs),
                    redis_urls: Vec::new(),
                    out,
                }
            };
            options.scenarios = scenarios;
            options.redis_urls = redis_urls;
            tributary::tools::bench::run(options).map(|_| ())
        }
        Command::BenchEngine { events, out } => bench_engine(events, &out),
        Command::BenchLoad {
            addr,
            rate,
            connections,
            duration,
            visitors,
        } => {
            let spec = tributary::tools::bench::load::LoadSpec {
                addr,
                connections,
                duration: Duration::from_secs_f64(duration),
                rate,
                visitors: tributary::tools::bench::load::Visitors::Zipf(visitors),
                target: std::sync::Arc::new(tributary::tools::bench::catalogs::event_target),
                progress: None,
                once: false,
                threads: 2,
            };
            tributary::tools::bench::load::run(spec)
                .map(|r| {
                    println!(
                        "{:.0}/s p50 {:.2} ms p99 {:.2} ms max {:.2} ms statuses {:?} failures {}",
                        r.per_second(),
                        r.quantile_ms(0.5),
                        r.quantile_ms(0.99),
                        r.max_ms(),
                        r.by_status,
                        r.failures
                    )
                })
                .map_err(|e| e.to_string())
        }
        Command::BenchBaseline {
            kind,
            bind,
            providers,
            timeout_ms,
        } => system.block_on(async move {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            let served = if kind == "http" {
                baseline::http_ceiling(bind, workers).await
            } else {
                let timeout = Duration::from_millis(timeout_ms);
                baseline::fanout_ceiling(bind, workers, providers, timeout).await
            };
            served.map_err(|e| format!("{kind} baseline: {e}"))
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tributary: {message}");
            ExitCode::FAILURE
        }
    }
}
