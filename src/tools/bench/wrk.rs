//! `wrk` (Debian's package), the outside load generator that confirms the bench's own figures
//! (`tributary bench --wrk`): after a closed-loop phase, the same server is driven by wrk with
//! the same threads, connections and duration, events shaped like the bench's
//! (`wrk_events.lua`), and its requests per second and the server's CPU per request are
//! recorded beside the bench's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The script wrk runs: events like `catalogs::event_target`'s.
pub const SCRIPT: &str = include_str!("wrk_events.lua");

/// What one wrk run reported.
#[derive(Clone, Debug, PartialEq)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p99_ms: Option<f64>,
    /// Answers other than 2xx and 3xx (a `429` is one).
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors together.
    pub socket_errors: u64,
}

/// Runs `wrk` against `addr`; its visitors are ids 0..`visitors`, drawn uniformly. With
/// `delay_ms`, each connection waits that long after each answer before its next request:
/// wrk has no fixed rate, so a steady load is `connections` paced this way (its latencies
/// are then counted from each send, not from when a request was due: a lower bound of an
/// open-loop figure).
pub fn run(
    addr: SocketAddr,
    threads: usize,
    connections: usize,
    duration: Duration,
    visitors: u64,
    script: &Path,
    delay_ms: Option<u64>,
) -> Result<WrkResult, String> {
    let mut command = Command::new("wrk");
    if let Some(ms) = delay_ms {
        command.env("TRIBUTARY_WRK_DELAY_MS", ms.to_string());
    }
    let output = command
        .arg(format!("-t{}", threads.max(1)))
        .arg(format!("-c{}", connections.max(threads.max(1))))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}"))
        .env("TRIBUTARY_WRK_VISITORS", visitors.to_string())
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("wrk's output not understood:\n{text}"))
}

/// Reads `Requests/sec:` and the 99% latency (`--latency`) from wrk's report.
fn parse(text: &str) -> Option<WrkResult> {
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()));
    // Both lines appear only when there was something to count.
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|counts| {
            counts
                .split(',')
                .filter_map(|c| c.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(WrkResult {
        requests_per_sec,
        p99_ms,
        non_2xx,
        socket_errors,
    })
}

/// `12.34ms`, `950.00us`, `1.02s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let number = |n: &str| n.parse::<f64>().ok();
    if let Some(n) = text.strip_suffix("us") {
        number(n).map(|n| n / 1000.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        number(n)
    } else if let Some(n) = text.strip_suffix('m') {
        number(n).map(|n| n * 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        number(n).map(|n| n * 1000.0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let text = "Running 10s test @ http://127.0.0.1:8080\n  2 threads and 64 connections\n\
                    \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                    \x20   Latency     1.20ms  500.00us  20.00ms   90.00%\n\
                    \x20 Latency Distribution\n     50%    1.10ms\n     75%    1.30ms\n\
                    \x20    90%    1.80ms\n     99%  950.00us\n\
                    \x20 543210 requests in 10.00s, 100.00MB read\n\
                    Requests/sec:  54321.00\nTransfer/sec:     10.00MB\n";
        assert_eq!(
            parse(text),
            Some(WrkResult {
                requests_per_sec: 54321.0,
                p99_ms: Some(0.95),
                non_2xx: 0,
                socket_errors: 0,
            })
        );
        let shed = format!(
            "{text}  Socket errors: connect 0, read 2, write 0, timeout 5\n  Non-2xx or 3xx responses: 17\n"
        );
        let r = parse(&shed).unwrap();
        assert_eq!((r.non_2xx, r.socket_errors), (17, 7));
        assert_eq!(duration_ms("1.50s"), Some(1500.0));
        assert_eq!(parse("nothing"), None);
    }
}
