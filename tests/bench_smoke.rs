//! `tributary bench --smoke`: the benchmark tool runs end to end (every scenario, every
//! process it starts) and writes its report. Figures from a debug build on a test machine mean
//! nothing; only that they exist is checked.
//!
//! A test binary of its own: cargo runs test binaries one after another, so the load this
//! creates never overlaps the timing-sensitive integration tests.

use std::process::Command;

#[test]
fn the_bench_tool_runs_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["bench", "--smoke", "--out"])
        .arg(&out)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let scenarios: Vec<&str> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["scenario"].as_str().unwrap())
        .collect();
    for expected in [
        "http-ceiling",
        "no-providers",
        "fanout-ceiling",
        "providers-cold",
        "providers-warm",
        "hanging-provider",
        "catalog-100k",
        "visitors-1m",
        "overload-capacity",
        "overload-overload",
        "overload-recovery",
        "overload-generator-floor",
        "inbound-stream",
        "inbound-file",
    ] {
        assert!(
            scenarios.contains(&expected),
            "{expected} missing from {scenarios:?}"
        );
    }
    for m in report["measurements"].as_array().unwrap() {
        assert!(m["requests"].as_u64().unwrap() > 0, "{m}");
        // An import's one request is its upload, answered 202.
        let answered = ["200", "202"]
            .iter()
            .map(|s| m["by_status"][s].as_u64().unwrap_or(0))
            .sum::<u64>();
        assert!(answered > 0, "{m}");
    }
    // Every op and line applied and stored, and the raw store measured against.
    let find = |name: &str| {
        report["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["scenario"] == name)
            .unwrap()
            .clone()
    };
    for (name, sent, applied) in [
        ("inbound-stream", "ops", "ops_applied"),
        ("inbound-file", "lines", "applied"),
    ] {
        let extra = &find(name)["extra"];
        assert!(extra[sent].as_f64().unwrap() > 0.0, "{extra}");
        assert_eq!(extra[sent], extra[applied], "{name}: {extra}");
        assert_eq!(extra[sent], extra["stored_profiles"], "{name}: {extra}");
        assert!(extra["raw_store_writes_per_sec"].as_f64().unwrap() > 0.0);
    }
    assert!(!report["checks"].as_array().unwrap().is_empty());
    assert!(stdout.contains("targets:"), "{stdout}");
}

#[test]
fn the_engine_micro_benchmark_runs_every_catalog_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("engine.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["bench-engine", "--events", "2000", "--out"])
        .arg(&out)
        .output()
        .expect("run the engine bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench-engine failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let sizes: Vec<u64> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["traits"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [10, 1_000, 100_000]);
    for m in report["measurements"].as_array().unwrap() {
        assert!(m["ns_per_event"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["realized_per_event"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(stdout.contains("largest / smallest catalog"), "{stdout}");
}
