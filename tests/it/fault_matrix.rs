//! The fault matrix (issue 17): every way of failing in [`Fault`], each on a real socket, put
//! to a server that also has a healthy peer.
//!
//! - Providers, each fault × circuit breaker on and off: every answer is a `200` with its
//!   `tid` within the deadline bound, has the healthy provider's segment, and reports the
//!   faulty provider's outcome as its class, in the answer and in
//!   `tributary_provider_calls_total`.
//! - S2S destinations, each fault: the healthy destination gets every delivery; each failed
//!   attempt at the faulty one ends and is retried (its queue is not held), and once it
//!   recovers it gets its deliveries, in order.
//!
//! Each case has a server of its own; cases run side by side (providers a few at a time, see
//! [`CASES_AT_ONCE`]), so the matrix takes seconds. A case collects what it found wrong instead
//! of panicking, so that a failure shows the whole table.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::json;

use crate::common::faults::{Fault, FaultServer, HUGE, SEGMENT_ANSWER};
use crate::common::*;

/// The event's deadline here.
const DEADLINE_MS: u64 = 200;

/// The bound on every answer, as the issue puts it: the deadline + 20 ms, measured at the
/// client (from sending the request to the end of the answer's body). It is a correctness bound, not a speed one:
/// a fault that held the event would show as the provider's own timeout (1 s here) or
/// forever. It holds for the slowest of each case's answers, not for some average: the test
/// servers keep 25 ms of the deadline for answering (`reply_reserve_ms` in
/// `common::test_config`), which covers the rest of the suite running beside (the slowest
/// answers here: 180-192 ms); the bound is not widened. A machine busy with other work well
/// beyond its cores can make answers miss it (measured: up to 450 ms late, and answers given
/// up on by the handler's own deadline, without segments, at a load average of 8 on two
/// cores) with nothing wrong in the server, so the failure message gives the load average.
const BOUND: Duration = Duration::from_millis(DEADLINE_MS + 20);

/// The faulty provider's own timeout: longer than the event waits, so that the deadline, not
/// the call's end, is what the answer must keep to.
const FAULTY_TIMEOUT_MS: u32 = 1000;

/// Provider cases run side by side, this many at a time. All 22 at once put some 25 servers'
/// work on two cores at the same moment, which here took answers up to 200 ms past the bound
/// with nothing wrong but that load (the error kinds too, whose answers wait for nothing); four
/// at a time keeps every answer well within it and the matrix within a few seconds.
const CASES_AT_ONCE: usize = 4;

/// Failed calls in a row that open a circuit, when it is on.
const CIRCUIT_FAILURES: usize = 2;

/// How long a case waits for what it expects: only a loaded machine gets near it.
const WAIT: Duration = Duration::from_secs(10);

/// The outcomes an answer can give a called provider (`docs/provider-protocol.md`, Outcomes).
const OUTCOMES: [&str; 6] = [
    "ok",
    "nodata",
    "timeout",
    "error",
    "circuit_open",
    "skipped",
];

/// What the answer says of a provider failing this way.
fn provider_outcome(fault: Fault) -> &'static str {
    match fault {
        Fault::NoAnswer | Fault::HeadersThenNothing | Fault::Trickle => "timeout",
        _ => "error",
    }
}

#[derive(Clone, Copy)]
struct ProviderCase {
    fault: Fault,
    circuit: bool,
}

impl ProviderCase {
    /// Also its metrics' label: series are shared by every server of the process.
    fn name(self) -> String {
        let circuit = if self.circuit {
            "circuit"
        } else {
            "no-circuit"
        };
        format!("fm-{}-{circuit}", self.fault.name())
    }

    fn healthy_name(self) -> String {
        format!("{}-healthy", self.name())
    }
}

struct ProviderSetup {
    case: ProviderCase,
    faulty: FaultServer,
    server: TestServer,
}

/// One line of the table: what a case showed, and what was wrong with it.
struct Row {
    case: String,
    shown: String,
    problems: Vec<String>,
}

async fn start_provider_case(case: ProviderCase, healthy_url: &str) -> ProviderSetup {
    let faulty = FaultServer::start(case.fault);
    let cat = catalog(
        vec![
            provider(1, &case.name(), &faulty.url, 1001, FAULTY_TIMEOUT_MS),
            provider(2, &case.healthy_name(), healthy_url, 1002, 150),
        ],
        // Trait 22 would be realized from the faulty provider's data source only if one of its
        // answers were taken as a segment answer.
        json!([
            {"sid": 21, "name": "healthy", "traitType": "ON_BOARDED_TRAIT",
             "traitRule": "segment == \"healthy-seg\"", "dataSourceId": 1002},
            {"sid": 22, "name": "faulty", "traitType": "ON_BOARDED_TRAIT",
             "traitRule": "segment == \"healthy-seg\"", "dataSourceId": 1001}
        ]),
        json!([{"sid": 101, "name": "healthy", "segmentRule": "21T", "dataSourceId": 1}]),
    );
    let server = TestServer::start_with(&cat, |c| {
        c.realtime.deadline_ms = DEADLINE_MS;
        // One worker, so one circuit per provider: when it opens is known.
        c.server.workers = 1;
        c.realtime.circuit_failures = if case.circuit {
            CIRCUIT_FAILURES as u32
        } else {
            0
        };
        // Once open, it stays open for the rest of the case.
        c.realtime.circuit_cooldown_ms = 600_000;
    })
    .await;
    // A server's first request costs it some 20 ms more (measured in a debug build with a
    // `GET /health`, so it is not the event path): paid here, before any answer is timed.
    assert_eq!(get(&server.url("/health")).await.status, 200);
    ProviderSetup {
        case,
        faulty,
        server,
    }
}

/// One event from a new visitor (so that no cached answer stands in for a call): how long
/// its answer took, and the answer.
async fn timed_event(client: &awc::Client, server: &TestServer, n: usize) -> (Duration, Reply) {
    let url = server.url(&format!("/event?d_rtbd=json&d_cts=2&c_n={n}"));
    let started = Instant::now();
    let reply = read(client.get(url).send().await.expect("an answer")).await;
    (started.elapsed(), reply)
}

async fn run_provider_case(setup: &ProviderSetup) -> Row {
    let ProviderSetup {
        case,
        faulty,
        server,
    } = setup;
    let (name, healthy) = (case.name(), case.healthy_name());
    let class = provider_outcome(case.fault);
    let mut problems = Vec::new();
    // Made before any answer is timed: setting up a client is the test's cost, not the server's.
    let client = client();
    let mut answers = Vec::new();
    for n in 0..3 {
        answers.push(timed_event(&client, server, n).await);
    }
    if case.circuit {
        // The first calls' failures open it, a timeout once the call ends by its own timeout.
        let opened = format!(
            r#"tributary_provider_circuit_transitions_total{{provider="{name}",to="open"}}"#
        );
        let open = || async { counted(server, &opened).await == 1.0 };
        awaited("the circuit to open", &mut problems, open).await;
        for n in 3..5 {
            answers.push(timed_event(&client, server, n).await);
        }
    }

    let mut outcomes = Vec::new();
    for (i, (elapsed, reply)) in answers.iter().enumerate() {
        if reply.status != 200 {
            problems.push(format!("answer {i}: status {}", reply.status));
            continue;
        }
        let body = reply.json();
        if body["tid"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("answer {i}: no tid in {body}"));
        }
        if *elapsed > BOUND {
            problems.push(format!("answer {i}: took {elapsed:?}, over {BOUND:?}"));
        }
        if body["segments"] != json!([101]) || body["traits"] != json!([21]) {
            problems.push(format!(
                "answer {i}: traits {} and segments {}, not the healthy provider's [21] and [101]",
                body["traits"], body["segments"]
            ));
        }
        if body["providers"][&healthy] != "ok" {
            problems.push(format!(
                "answer {i}: healthy provider {}",
                body["providers"]
            ));
        }
        let outcome = body["providers"][&name]
            .as_str()
            .unwrap_or("none")
            .to_string();
        // With the circuit on, the first calls fail as the fault does; the third may have been
        // admitted before the breaker learned of them (a timeout is learned only when the
        // call ends, after the event); after the circuit opened, no call is made.
        let expected: &[&str] = match (case.circuit, i) {
            (false, _) => &[class],
            (true, 0..CIRCUIT_FAILURES) => &[class],
            (true, CIRCUIT_FAILURES) => &[class, "circuit_open"],
            (true, _) => &["circuit_open"],
        };
        if !expected.contains(&outcome.as_str()) {
            problems.push(format!("answer {i}: {name} {outcome}, not {expected:?}"));
        }
        outcomes.push(outcome);
    }

    // The outcome counters moved by what the answers said, no more, no less.
    let text = metrics(server).await;
    let calls = |provider: &str, outcome: &str| {
        let series = format!(
            r#"tributary_provider_calls_total{{provider="{provider}",outcome="{outcome}"}}"#
        );
        metric_value(&text, &series).unwrap_or(0.0)
    };
    for outcome in OUTCOMES {
        let said = outcomes.iter().filter(|o| *o == outcome).count() as f64;
        let counted = calls(&name, outcome);
        if counted != said {
            problems.push(format!(
                "tributary_provider_calls_total outcome={outcome}: {counted}, the answers said {said}"
            ));
        }
    }
    if calls(&healthy, "ok") != answers.len() as f64 {
        problems.push(format!(
            "healthy provider counted {} ok calls for {} answers",
            calls(&healthy, "ok"),
            answers.len()
        ));
    }
    let made = outcomes.iter().filter(|o| *o != "circuit_open").count();
    match case.fault {
        // Cut off at the body limit: not a whole 50 MB per call.
        Fault::HugeBody | Fault::HugeChunked if faulty.written() >= made * HUGE => {
            problems.push(format!(
                "{} bytes written for {made} calls",
                faulty.written()
            ));
        }
        // The handshake failed: no request went through.
        Fault::TlsBadCert if faulty.requests() != 0 || faulty.connections() < made => {
            problems.push(format!(
                "{} connections and {} requests for {made} calls",
                faulty.connections(),
                faulty.requests()
            ));
        }
        _ => {}
    }

    let slowest = answers.iter().map(|(e, _)| *e).max().unwrap_or_default();
    Row {
        case: name,
        shown: format!("slowest {slowest:?}; {}", outcomes.join(",")),
        problems,
    }
}

/// Prints the table (seen with `--nocapture`) and fails with every problem found.
fn report(title: &str, rows: &[Row]) {
    eprintln!("{title}");
    for row in rows {
        let verdict = if row.problems.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        eprintln!("  {:<40} {verdict:<6} {}", row.case, row.shown);
    }
    let problems: Vec<String> = rows
        .iter()
        .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.case)))
        .collect();
    assert!(
        problems.is_empty(),
        "{}\n(load average then: {}on {} cores)",
        problems.join("\n"),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

#[actix_web::test]
async fn every_provider_fault_keeps_the_deadline_and_the_healthy_segment() {
    let healthy = TestProvider::start(Behavior::Segments(vec!["healthy-seg"], None)).await;
    let cases: Vec<ProviderCase> = Fault::ALL
        .into_iter()
        .flat_map(|fault| [false, true].map(|circuit| ProviderCase { fault, circuit }))
        .collect();
    // Every server first, so that starting one is not timed in another's answers.
    let setups = join_all(cases.iter().map(|&c| start_provider_case(c, &healthy.url))).await;
    let started = Instant::now();
    let rows: Vec<Row> = futures_util::stream::iter(setups.iter().map(run_provider_case))
        .buffered(CASES_AT_ONCE)
        .collect()
        .await;
    eprintln!("provider cases took {:?} side by side", started.elapsed());
    for setup in setups {
        setup.server.stop().await;
    }
    report("provider fault × circuit", &rows);
}

/// The TLS fault is the certificate alone: a client that trusts it gets a segment answer.
#[actix_web::test]
async fn the_tls_fault_is_only_the_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let server = FaultServer::start(Fault::TlsBadCert);
    let pem = server.cert_pem.clone().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let trusting = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(config)))
        .timeout(Duration::from_secs(10))
        .finish();
    let answer = trusting
        .post(&server.url)
        .send_body("{}")
        .await
        .expect("a trusting client gets through");
    let reply = read(answer).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, SEGMENT_ANSWER.as_bytes());
    assert_eq!(server.requests(), 1);
}

/// How long an S2S attempt may take, whole (`[s2s] timeout_ms`).
const S2S_TIMEOUT_MS: u64 = 200;

/// The visitors whose membership changes are delivered, in order.
const VISITORS: [&str; 3] = [
    "17171717171717171717171717171717171711",
    "17171717171717171717171717171717171712",
    "17171717171717171717171717171717171713",
];

/// What becomes of a destination's deliveries when it fails this way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum S2sExpect {
    /// A `2xx` head accepts them, whatever its body (only up to 64 KiB of it is read).
    Accepted,
    /// Each attempt fails and is retried; `recovers`: the test can make the destination
    /// healthy again (not a closed port, not a certificate nobody trusts).
    Retried { recovers: bool },
}

fn s2s_expect(fault: Fault) -> S2sExpect {
    match fault {
        Fault::HugeBody | Fault::HugeChunked | Fault::BadJson | Fault::WrongShape => {
            S2sExpect::Accepted
        }
        Fault::Refused | Fault::TlsBadCert => S2sExpect::Retried { recovers: false },
        _ => S2sExpect::Retried { recovers: true },
    }
}

struct S2sSetup {
    fault: Fault,
    /// The faulty destination's id; the healthy one's is 100 more. Ids of their own: the
    /// metrics are shared by every server of the process.
    id: u64,
    faulty: FaultServer,
    healthy: FaultServer,
    server: TestServer,
}

async fn start_s2s_case(fault: Fault, id: u64) -> S2sSetup {
    let faulty = FaultServer::start(fault);
    let healthy = FaultServer::healthy();
    let mut cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT",
                "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    cat.destinations = serde_json::from_value(json!([
        {"destinationId": id, "name": "faulty", "destinationType": "S2S", "url": faulty.url,
         "mappings": [{"sid": 101}]},
        {"destinationId": id + 100, "name": "healthy", "destinationType": "S2S",
         "url": healthy.url, "mappings": [{"sid": 101}]}
    ]))
    .unwrap();
    let server = TestServer::start_with(&cat, |c| {
        c.s2s.timeout_ms = S2S_TIMEOUT_MS;
        c.s2s.retry_initial_ms = 20;
        c.s2s.retry_max_ms = 100;
    })
    .await;
    S2sSetup {
        fault,
        id,
        faulty,
        healthy,
        server,
    }
}

/// Waits for `condition` as [`wait_for`] does; one not met within [`WAIT`] is a problem of the
/// case rather than a panic, so that the table is still shown.
async fn awaited<F, Fut>(what: &str, problems: &mut Vec<String>, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waiting = wait_for(what, Duration::MAX, condition);
    if tokio::time::timeout(WAIT, waiting).await.is_err() {
        problems.push(format!("not within {WAIT:?}: {what}"));
    }
}

/// The value of a counter in the server's `/metrics`, 0 while it has none.
async fn counted(server: &TestServer, series: &str) -> f64 {
    metric_value(&metrics(server).await, series).unwrap_or(0.0)
}

async fn run_s2s_case(setup: &S2sSetup) -> Row {
    let S2sSetup {
        fault,
        id,
        faulty,
        healthy,
        server,
    } = setup;
    let expect = s2s_expect(*fault);
    let started = Instant::now();
    let mut problems = Vec::new();
    for visitor in VISITORS {
        let reply = get(&server.url(&format!("/event?c_page=cars&d_uuid={visitor}"))).await;
        if reply.status != 200 {
            problems.push(format!("event of {visitor}: status {}", reply.status));
        }
    }
    let requests = |result: &str| {
        format!(r#"tributary_s2s_requests_total{{destination="{id}",result="{result}"}}"#)
    };
    let delivered = format!(r#"tributary_s2s_delivered_total{{destination="{id}"}}"#);

    let all = || std::future::ready(healthy.s2s_uuids().len() >= VISITORS.len());
    awaited(
        "every delivery at the healthy destination",
        &mut problems,
        all,
    )
    .await;
    if healthy.s2s_uuids() != VISITORS {
        problems.push(format!(
            "the healthy destination got {:?}",
            healthy.s2s_uuids()
        ));
    }
    let healthy_after = started.elapsed();

    let mut shown = format!("{expect:?}; healthy had all after {healthy_after:?}");
    match expect {
        S2sExpect::Accepted => {
            let all = || async { counted(server, &delivered).await >= VISITORS.len() as f64 };
            awaited("the deliveries counted as delivered", &mut problems, all).await;
            if counted(server, &requests("error")).await != 0.0 {
                problems.push("an accepted POST counted as failed".into());
            }
            // Read up to 64 KiB and let go: not a whole 50 MB per POST.
            let huge = matches!(fault, Fault::HugeBody | Fault::HugeChunked);
            if huge && faulty.written() >= faulty.requests().max(1) * HUGE {
                problems.push(format!("{} answer bytes written whole", faulty.written()));
            }
            shown += &format!("; accepted in {} POSTs", faulty.requests());
        }
        S2sExpect::Retried { recovers } => {
            // Each attempt ended (as a failure) and another was made: the queue is not held.
            let failed = requests("error");
            let two = || async { counted(server, &failed).await >= 2.0 };
            awaited("two failed attempts, each ended", &mut problems, two).await;
            let reached = match fault {
                Fault::Refused => None,
                Fault::TlsBadCert => Some(faulty.connections()),
                _ => Some(faulty.requests()),
            };
            if reached.is_some_and(|n| n < 2) {
                problems.push(format!("the destination saw {reached:?} attempts"));
            }
            if *fault == Fault::TlsBadCert && faulty.requests() != 0 {
                problems.push("a request went through the failed handshake".into());
            }
            shown += &format!(
                "; 2 failed attempts after {:?} (it saw {reached:?})",
                started.elapsed()
            );
            if recovers {
                faulty.recover();
                let all = || std::future::ready(faulty.s2s_uuids().len() >= VISITORS.len());
                awaited("the deliveries once it recovered", &mut problems, all).await;
                if faulty.s2s_uuids() != VISITORS {
                    problems.push(format!("after recovering it got {:?}", faulty.s2s_uuids()));
                }
                shown += &format!("; recovered, all delivered after {:?}", started.elapsed());
            } else if counted(server, &delivered).await != 0.0 {
                problems.push("deliveries counted as delivered".into());
            }
        }
    }
    Row {
        case: format!("s2s-{}", fault.name()),
        shown,
        problems,
    }
}

#[actix_web::test]
async fn every_s2s_fault_is_retried_without_holding_the_queue() {
    let setups = join_all(
        Fault::ALL
            .into_iter()
            .enumerate()
            .map(|(i, fault)| start_s2s_case(fault, 17_000 + i as u64)),
    )
    .await;
    let started = Instant::now();
    let rows = join_all(setups.iter().map(run_s2s_case)).await;
    eprintln!("S2S cases took {:?} side by side", started.elapsed());
    for setup in setups {
        setup.server.stop().await;
    }
    report("S2S destination fault", &rows);
}
