//! What a bench run reports: one [`Measurement`] per measured phase, the targets
//! checked against them, the table printed at the end and the JSON written next to it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::load::LoadResult;
use super::{BenchOptions, DEADLINE_MS};

/// One measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub scenario: String,
    pub events_per_sec: f64,
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub failures: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Server CPU time per answered request, in microseconds.
    pub cpu_us_per_event: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub store_bytes: Option<u64>,
    /// Offered rate for open-loop phases.
    pub offered_per_sec: Option<f64>,
    /// A load generator thread was busy (above [`GENERATOR_BOUND`] of a core) for the whole
    /// phase: the generator, not the server, may have set the pace, so no target is judged on
    /// this phase.
    pub generator_bound: bool,
    /// Scenario-specific figures.
    pub extra: BTreeMap<String, f64>,
    /// Samples over time (the soak).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SoakSample>,
}

/// The server's state at one moment of the soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    pub secs: f64,
    pub rss_bytes: u64,
    pub sessions: f64,
    pub pending_writes: f64,
    pub store_bytes: u64,
}

/// A target from the issue, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub target: String,
    pub value: String,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub measurements: Vec<Measurement>,
    pub checks: Vec<Check>,
}

/// The machine the run was on (the figures do not travel between machines).
pub(super) fn machine() -> BTreeMap<String, String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    BTreeMap::from([
        ("cpu".into(), cpu),
        ("cores".into(), cores.to_string()),
        ("tributary".into(), env!("CARGO_PKG_VERSION").into()),
    ])
}

/// The options that shape the figures.
pub(super) fn settings(options: &BenchOptions) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "duration_secs".into(),
            format!("{}", options.duration.as_secs_f64()),
        ),
        (
            "warmup_secs".into(),
            format!("{}", options.warmup.as_secs_f64()),
        ),
        ("connections".into(), options.connections.to_string()),
        ("visitors".into(), options.visitors.to_string()),
        ("deadline_ms".into(), DEADLINE_MS.to_string()),
        (
            "build".into(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        ),
    ])
}

/// The load generator's figures of a phase; what the server's side shows (CPU, memory, store)
/// is added by whoever measured it.
pub(super) fn measurement(scenario: &str, r: &LoadResult) -> Measurement {
    Measurement {
        scenario: scenario.to_string(),
        events_per_sec: r.per_second(),
        requests: r.requests,
        by_status: r.by_status.clone(),
        failures: r.failures,
        p50_ms: r.quantile_ms(0.5),
        p99_ms: r.quantile_ms(0.99),
        p999_ms: r.quantile_ms(0.999),
        max_ms: r.max_ms(),
        cpu_us_per_event: None,
        peak_rss_bytes: None,
        store_bytes: None,
        offered_per_sec: None,
        generator_bound: r
            .thread_cpu_share
            .iter()
            .any(|&share| share > GENERATOR_BOUND),
        extra: r
            .failure_kinds
            .iter()
            .map(|(kind, n)| (format!("failures {kind}"), *n as f64))
            .chain(
                r.thread_cpu_share
                    .iter()
                    .copied()
                    .reduce(f64::max)
                    .map(|share| ("generator_thread_max_share".to_string(), share)),
            )
            .collect(),
        series: Vec::new(),
    }
}

/// A generator thread busier than this share of a core may be what limits a closed-loop run.
pub const GENERATOR_BOUND: f64 = 0.90;

/// The targets (issue 16's), where this run measured what they need. A ratio involving a
/// generator-bound phase is refused rather than judged.
pub(super) fn checks(ms: &[Measurement]) -> Vec<Check> {
    let get = |name: &str| ms.iter().find(|m| m.scenario == name);
    let mut out = Vec::new();
    let mut ratio = |target: &str, a: &str, b: &str, min: f64| {
        if let (Some(a), Some(b)) = (get(a), get(b)) {
            let r = a.events_per_sec / b.events_per_sec.max(1e-9);
            let bound = a.generator_bound || b.generator_bound;
            out.push(Check {
                target: target.into(),
                value: if bound {
                    format!("{r:.2} (refused: the load generator was the limit)")
                } else {
                    format!("{r:.2}")
                },
                pass: !bound && r >= min,
            });
        }
    };
    ratio(
        "providers-cold ≥ 0.85 × fanout-ceiling",
        "providers-cold",
        "fanout-ceiling",
        0.85,
    );
    ratio(
        "no-providers ≥ 0.40 × http-ceiling",
        "no-providers",
        "http-ceiling",
        0.40,
    );
    ratio(
        "no-providers-stored (every visitor stored) ≥ 0.40 × http-ceiling",
        "no-providers-stored",
        "http-ceiling",
        0.40,
    );
    ratio(
        "providers-warm ≥ 3 × providers-cold (same visitors)",
        "providers-warm",
        "providers-cold",
        3.0,
    );
    ratio(
        "no-providers-redis ≥ 0.80 × no-providers (sled)",
        "no-providers-redis",
        "no-providers",
        0.80,
    );
    ratio(
        "catalog-100k ≥ 0.90 × no-providers (10 traits)",
        "catalog-100k",
        "no-providers",
        0.90,
    );
    // The same ratios from wrk's figures, where the run has them (`--wrk`).
    let mut wrk_ratio = |target: &str, a: &str, b: &str, min: f64| {
        let rate = |name: &str| get(name).and_then(|m| m.extra.get("wrk_events_per_sec").copied());
        if let (Some(a), Some(b)) = (rate(a), rate(b)) {
            let r = a / b.max(1e-9);
            out.push(Check {
                target: format!("{target} (wrk)"),
                value: format!("{r:.2}"),
                pass: r >= min,
            });
        }
    };
    wrk_ratio(
        "providers-cold ≥ 0.85 × fanout-ceiling",
        "providers-cold",
        "fanout-ceiling",
        0.85,
    );
    wrk_ratio(
        "no-providers ≥ 0.40 × http-ceiling",
        "no-providers",
        "http-ceiling",
        0.40,
    );
    wrk_ratio(
        "no-providers-stored ≥ 0.40 × http-ceiling",
        "no-providers-stored",
        "http-ceiling",
        0.40,
    );
    wrk_ratio(
        "providers-warm ≥ 3 × providers-cold",
        "providers-warm",
        "providers-cold",
        3.0,
    );
    wrk_ratio(
        "catalog-100k ≥ 0.90 × no-providers",
        "catalog-100k",
        "no-providers",
        0.90,
    );
    if let (Some(cold), Some(ceiling)) = (get("providers-cold"), get("fanout-ceiling")) {
        if let (Some(a), Some(b)) = (cold.cpu_us_per_event, ceiling.cpu_us_per_event) {
            let r = a / b.max(1e-9);
            out.push(Check {
                target: "providers-cold CPU/event ≤ 1.3 × fanout-ceiling's".into(),
                value: format!("{r:.2} ({a:.0} vs {b:.0} µs)"),
                pass: r <= 1.3,
            });
        }
    }
    if let Some(h) = get("hanging-provider") {
        let limit = DEADLINE_MS as f64;
        out.push(Check {
            target: format!("hanging-provider p99 ≤ {} ms", limit + 5.0),
            value: format!("{:.1} ms", h.p99_ms),
            pass: h.p99_ms <= limit + 5.0,
        });
        out.push(Check {
            target: format!("hanging-provider max ≤ {} ms", limit + 20.0),
            value: format!("{:.1} ms", h.max_ms),
            pass: h.max_ms <= limit + 20.0,
        });
        let connects = h.extra.get("hanging_connects").copied();
        let calls = h.extra.get("hanging_calls").copied();
        if let (Some(connects), Some(calls)) = (connects, calls) {
            out.push(Check {
                target: "hanging-provider: timed-out calls' connections reused (connects ≤ 10% of calls)"
                    .into(),
                value: format!("{connects:.0} connects for {calls:.0} calls"),
                pass: connects <= 0.1 * calls,
            });
        }
    }
    if let Some(steady) = get("overload-steady") {
        let shed = steady.by_status.get(&429).copied().unwrap_or(0);
        out.push(Check {
            target: "no 429 at 85% of capacity".into(),
            value: format!("{shed} × 429"),
            pass: shed == 0,
        });
    }
    if let (Some(over), Some(rec)) = (get("overload-overload"), get("overload-recovery")) {
        let shed = over.by_status.get(&429).copied().unwrap_or(0);
        let floor = get("overload-generator-floor").map_or(0.0, |f| f.p99_ms);
        out.push(Check {
            target: "overload (2× capacity): explicit 429s, p99 ≤ deadline + generator floor p99"
                .into(),
            value: format!(
                "{shed} × 429, p99 {:.1} ms (floor {floor:.1} ms)",
                over.p99_ms
            ),
            pass: shed > 0 && over.p99_ms <= DEADLINE_MS as f64 + floor,
        });
        let rec_shed = rec.by_status.get(&429).copied().unwrap_or(0);
        let share = rec_shed as f64 / rec.requests.max(1) as f64;
        out.push(Check {
            target: "recovery (0.5× capacity, right after): ≤ 1% 429 (the backlog), p99 ≤ deadline"
                .into(),
            value: format!(
                "{rec_shed} × 429 ({:.2}%), p99 {:.1} ms",
                share * 100.0,
                rec.p99_ms
            ),
            pass: share <= 0.01 && rec.p99_ms <= DEADLINE_MS as f64,
        });
    }
    if let Some(s) = get("soak") {
        if let Some(g) = s.extra.get("rss_growth_ratio") {
            out.push(Check {
                target: "soak at 70%: RSS growth ≤ 10% after the first quarter".into(),
                value: format!("{g:.3}"),
                pass: *g <= 1.10,
            });
        }
    }
    out
}

/// The table, the scenario-specific figures and the targets, on stdout.
pub(super) fn print_report(r: &Report) {
    println!();
    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "scenario",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "CPU µs/ev",
        "RSS MiB",
        "store MiB",
        "non-200"
    );
    // Rows of an import have no request latency: its one request is the upload.
    let ms = |m: &Measurement, v: f64| {
        if m.max_ms > 0.0 {
            format!("{v:.2}")
        } else {
            "-".into()
        }
    };
    for m in &r.measurements {
        let non_ok: u64 = m
            .by_status
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum::<u64>()
            + m.failures;
        println!(
            "{:<20} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}",
            m.scenario,
            m.events_per_sec,
            ms(m, m.p50_ms),
            ms(m, m.p99_ms),
            ms(m, m.p999_ms),
            ms(m, m.max_ms),
            m.cpu_us_per_event.map_or("-".into(), |c| format!("{c:.0}")),
            m.peak_rss_bytes
                .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0)),
            m.store_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            non_ok,
        );
    }
    for m in r.measurements.iter().filter(|m| m.generator_bound) {
        println!(
            "  warning: {}: a load generator thread was busy for the whole phase; the generator \
             may have set the pace, so no target is judged on it (try --generator-threads)",
            m.scenario
        );
    }
    for m in &r.measurements {
        if !m.extra.is_empty() {
            let extras: Vec<String> = m
                .extra
                .iter()
                .map(|(k, v)| {
                    if v.abs() < 10.0 {
                        format!("{k}={v:.2}")
                    } else {
                        format!("{k}={v:.0}")
                    }
                })
                .collect();
            println!("  {}: {}", m.scenario, extras.join(", "));
        }
    }
    print_inbound(r);
    if !r.checks.is_empty() {
        println!("\ntargets:");
        for c in &r.checks {
            println!(
                "  [{}] {} — {}",
                if c.pass { "pass" } else { "MISS" },
                c.target,
                c.value
            );
        }
    }
}

/// The inbound scenarios' figures (issue 18) as sentences: rates against the raw store, and
/// `/event` with and without an import. The issue sets no target for them.
fn print_inbound(r: &Report) {
    let get = |name: &str| r.measurements.iter().find(|m| m.scenario == name);
    let extra = |m: &Measurement, key: &str| m.extra.get(key).copied().unwrap_or(f64::NAN);
    let mib = |m: &Measurement| m.peak_rss_bytes.map_or(f64::NAN, |b| b as f64 / 1048576.0);
    let mut lines = Vec::new();
    for (name, what, count) in [
        ("inbound-stream", "ops", "ops_applied"),
        ("inbound-file", "lines", "lines"),
    ] {
        if let Some(m) = get(name) {
            lines.push(format!(
                "{name}: {:.0} {what} at {:.0}/s answered ({:.0}/s until stored); raw store \
                 {:.0} writes/s: ratio {:.2} ({:.2} until stored); peak RSS {:.0} MiB",
                extra(m, count),
                m.events_per_sec,
                extra(m, "per_sec_until_stored"),
                extra(m, "raw_store_writes_per_sec"),
                extra(m, "ratio_to_raw_store"),
                extra(m, "ratio_to_raw_store_until_stored"),
                mib(m),
            ));
        }
    }
    if let (Some(alone), Some(during)) = (
        get("inbound-events-alone"),
        get("inbound-events-during-import"),
    ) {
        let shed = |m: &Measurement| m.by_status.get(&429).copied().unwrap_or(0);
        lines.push(format!(
            "/event at {:.0}/s: p99 {:.2} ms alone, {:.2} ms during the import ({:.2}x; \
             generator floor {:.2} ms); 429s {} / {}, failures {} / {}; import {:.0} lines/s, \
             still running at the end of the phase: {}",
            alone.offered_per_sec.unwrap_or(0.0),
            alone.p99_ms,
            during.p99_ms,
            extra(during, "p99_ratio_to_alone"),
            get("inbound-events-generator-floor").map_or(f64::NAN, |f| f.p99_ms),
            shed(alone),
            shed(during),
            alone.failures,
            during.failures,
            extra(during, "import_lines_per_sec"),
            if extra(during, "import_running_at_end") > 0.0 {
                "yes"
            } else {
                "no (the phase outlasted the import)"
            },
        ));
    }
    if !lines.is_empty() {
        println!("\ninbound data (issue 18):");
        for line in lines {
            println!("  {line}");
        }
    }
}
