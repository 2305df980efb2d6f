//! kill -9 under load, a few times over, on one sled store (issue 17, the fault matrix's crash
//! case, once an outside probe).
//!
//! Admin writes are flushed before they are answered (`docs/admin-api.md`, Changes), so not one
//! acknowledged write may be lost. Events are write-behind: a crash may lose up to
//! `store.write_delay_ms` + `store.flush_every_ms` of them, so for events what is checked is
//! that what the store kept is whole: every profile reads, and no visitor has more
//! realizations than it was sent events.

use std::cell::{Cell, RefCell};
use std::process::Child;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::process::*;
use crate::common::*;

const CYCLES: usize = 5;
const VISITORS: usize = 8;
const EVENT_CLIENTS: usize = 4;
const ADMIN_WRITERS: usize = 2;
/// Each cycle kills once this many admin writes of its own have been acknowledged...
const WRITES_PER_CYCLE: usize = 15;
/// ...and this many of its events answered, so that profiles are being written when it dies.
const EVENTS_PER_CYCLE: usize = 200;
/// The seed's trait: every load event realizes it once.
const LOAD_TRAIT: u64 = 11;

fn visitor(v: usize) -> String {
    format!("9{v:037}")
}

/// What the clients did, across cycles.
#[derive(Default)]
struct Load {
    stop: Cell<bool>,
    /// Events sent per visitor: counted before each request, so an upper bound of what the
    /// server can have received whatever a kill cut off.
    sent: RefCell<[u64; VISITORS]>,
    answered: Cell<usize>,
    /// Requests (events and admin writes) that got no complete answer: those the kills cut.
    cut: Cell<usize>,
    /// `(sid, name, n)` of each trait created with a complete `201` answer; its rule is
    /// `c_k == n`.
    acknowledged: RefCell<Vec<(u64, String, u64)>>,
    /// Unique across cycles: names a trait, acknowledged or not.
    next_n: Cell<u64>,
    /// Complete answers that were not what they should be.
    unexpected: RefCell<Vec<String>>,
    /// Event answers with error 10: the session missed the deadline, which says how loaded
    /// the machine was, not what the store kept.
    late: Cell<usize>,
}

fn load_client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish()
}

/// Events for the visitors in turn until told to stop. A request the kill cuts off (refused,
/// reset, body cut) is simply not answered.
async fn send_events(base: String, load: Rc<Load>, first: usize) {
    let client = load_client();
    let mut v = first;
    while !load.stop.get() {
        v = (v + 1) % VISITORS;
        load.sent.borrow_mut()[v] += 1;
        let url = format!("{base}/event?d_rtbd=json&c_page=cars&d_uuid={}", visitor(v));
        let Ok(mut res) = client.get(url).send().await else {
            load.cut.set(load.cut.get() + 1);
            continue;
        };
        let Ok(body) = res.body().await else {
            load.cut.set(load.cut.get() + 1);
            continue;
        };
        let answer: Option<Value> = serde_json::from_slice(&body).ok();
        let errors = answer
            .as_ref()
            .and_then(|a| a["errors"].as_array().cloned());
        match (res.status().as_u16(), errors) {
            // Shed: not processed.
            (429, _) => {}
            (200, None) if answer.is_some() => load.answered.set(load.answered.get() + 1),
            (200, Some(errors)) if errors.iter().all(|e| e["code"] == 10) => {
                load.late.set(load.late.get() + 1);
            }
            (status, _) => load.unexpected.borrow_mut().push(format!(
                "event for {}: {status} {}",
                visitor(v),
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// Creates traits one after another until told to stop; records those acknowledged.
async fn write_traits(admin: String, load: Rc<Load>) {
    let client = load_client();
    while !load.stop.get() {
        let n = load.next_n.get();
        load.next_n.set(n + 1);
        let name = format!("kill9-{n}");
        let sent = client
            .post(format!("{admin}/traits"))
            .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
            .send_json(&json!({
                "name": name,
                "traitType": "RULE_BASED_TRAIT",
                "traitRule": format!("c_k == {n}"),
                "dataSourceId": 1
            }))
            .await;
        let Ok(mut res) = sent else {
            load.cut.set(load.cut.get() + 1);
            continue;
        };
        let Ok(body) = res.body().await else {
            load.cut.set(load.cut.get() + 1);
            continue;
        };
        let created = serde_json::from_slice::<Value>(&body).ok();
        match created.as_ref().and_then(|t| t["sid"].as_u64()) {
            Some(sid) if res.status() == 201 => {
                load.acknowledged.borrow_mut().push((sid, name, n));
            }
            _ => load.unexpected.borrow_mut().push(format!(
                "POST /traits {name}: {} {}",
                res.status(),
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// A server started by [`start`].
struct Started {
    child: Child,
    base: String,
    /// `http://host:port/v1`.
    admin: String,
    lines: Arc<Mutex<Vec<String>>>,
    /// From the spawn to its address in the log, the store's recovery included.
    took: Duration,
}

async fn start(config: &std::path::Path, store: &std::path::Path) -> Started {
    let started = Instant::now();
    let (mut child, base, lines) = spawn_server_with(config, store, &[]);
    let took = started.elapsed();
    let admin = admin_base(&lines).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server stays up after announcing its address: {:#?}",
        lines.lock().unwrap()
    );
    Started {
        child,
        base,
        admin,
        lines,
        took,
    }
}

/// The lines a server logged at warn or error, but for the notice of every restart that the
/// seed is not loaded again. A profile the store cannot read is logged at warn.
fn complaints(lines: &Mutex<Vec<String>>) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("the seed in the config is not loaded again"))
        .cloned()
        .collect()
}

#[actix_web::test]
async fn kill_9_under_load_loses_no_acknowledged_admin_write_and_no_profile() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        vec![],
        json!([{"sid": LOAD_TRAIT, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([]),
    );
    // Short write-behind and flush intervals: profiles are being written all through the load,
    // so each kill lands in the middle of store writes, not between them. The long deadline
    // keeps a loaded machine's slow answers from looking like store errors (error 200 is also
    // what a profile read that times out gets).
    let config = seeded_config(
        dir.path(),
        &cat,
        &format!(
            "[admin]\ntoken = {ADMIN_TOKEN:?}\n\
             [store]\nthreads = 1\nwrite_delay_ms = 10\nflush_every_ms = 50\n\
             expected_ids = 10000\n[realtime]\ndeadline_ms = 5000\n"
        ),
    );
    let store = dir.path().join("store");

    let load = Rc::new(Load::default());
    let mut report = Vec::new();
    for cycle in 0..CYCLES {
        let Started {
            mut child,
            base,
            admin,
            lines,
            took,
        } = start(&config, &store).await;
        load.stop.set(false);
        let (acked_before, answered_before, cut_before) = (
            load.acknowledged.borrow().len(),
            load.answered.get(),
            load.cut.get(),
        );
        let sent_before: u64 = load.sent.borrow().iter().sum();
        let mut clients = Vec::new();
        for c in 0..EVENT_CLIENTS {
            clients.push(actix_rt::spawn(send_events(
                base.clone(),
                load.clone(),
                c * VISITORS / EVENT_CLIENTS,
            )));
        }
        for _ in 0..ADMIN_WRITERS {
            clients.push(actix_rt::spawn(write_traits(admin.clone(), load.clone())));
        }
        wait_until(
            &format!("cycle {cycle}: {WRITES_PER_CYCLE} admin writes acknowledged and {EVENTS_PER_CYCLE} events answered"),
            Duration::from_secs(60),
            || {
                let acked = load.acknowledged.borrow().len() - acked_before;
                let answered = load.answered.get() - answered_before;
                if acked >= WRITES_PER_CYCLE && answered >= EVENTS_PER_CYCLE {
                    Ok(())
                } else {
                    Err(format!(
                        "{acked} acknowledged, {answered} answered, unexpected: {:?}",
                        load.unexpected.borrow()
                    ))
                }
            },
        )
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "cycle {cycle}: the server died under load"
        );
        child.kill().unwrap();
        // No client runs between the kill and this (one thread): none starts a request on the
        // dead server, while those in flight at the kill are cut off.
        load.stop.set(true);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "cycle {cycle}: killed by SIGKILL, not exited: {status:?}"
        );
        for client in clients {
            client.await.unwrap();
        }
        let logged = complaints(&lines);
        assert!(logged.is_empty(), "cycle {cycle} logged: {logged:#?}");
        report.push(format!(
            "cycle {cycle}: up in {took:?}; {} admin writes acknowledged; {} events sent, {} \
             answered; {} requests cut off by the kill",
            load.acknowledged.borrow().len() - acked_before,
            load.sent.borrow().iter().sum::<u64>() - sent_before,
            load.answered.get() - answered_before,
            load.cut.get() - cut_before,
        ));
    }

    let last = start(&config, &store).await;
    report.push(format!("final start: up in {:?}", last.took));
    let (child, base) = (last.child, last.base);
    let admin = Admin {
        base: last.admin.trim_end_matches("/v1").to_string(),
    };

    // Every acknowledged trait is there, as it was created; the catalog holds each id once and
    // each name at most once (no write was retried).
    let listed = admin.call("GET", "/v1/traits", None).await;
    assert_eq!(
        listed.status,
        200,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    let traits = listed.json();
    let traits = traits.as_array().unwrap();
    let sids: Vec<u64> = traits.iter().map(|t| t["sid"].as_u64().unwrap()).collect();
    assert!(
        sids.windows(2).all(|w| w[0] < w[1]),
        "ids unique, in order: {sids:?}"
    );
    let mut names: Vec<&str> = traits.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "each name once");
    let acknowledged = load.acknowledged.borrow().clone();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|(sid, name, n)| {
            !traits.iter().any(|t| {
                t["sid"] == *sid
                    && t["name"] == name.as_str()
                    && t["traitRule"] == format!("c_k == {n}")
            })
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged admin writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    report.push(format!(
        "{} admin writes acknowledged, 0 lost; {} traits stored ({} created but not acknowledged)",
        acknowledged.len(),
        traits.len(),
        traits.len() - 1 - acknowledged.len()
    ));

    // What the store kept of each visitor reads, and holds no more than it was sent.
    let sent = *load.sent.borrow();
    let mut kept = Vec::new();
    for (v, &sent) in sent.iter().enumerate() {
        let uuid = visitor(v);
        let profile = admin
            .call("GET", &format!("/v1/profiles/{uuid}"), None)
            .await;
        let count = match profile.status {
            404 => 0,
            200 => {
                let profile = profile.json();
                let traits = profile["traits"].as_array().unwrap();
                assert!(
                    traits.iter().all(|t| t["sid"] == LOAD_TRAIT),
                    "{uuid}: only the load's trait realized: {profile}"
                );
                traits
                    .iter()
                    .map(|t| t["count"].as_u64().unwrap())
                    .sum::<u64>()
            }
            status => panic!(
                "{uuid}: profile unreadable: {status} {}",
                String::from_utf8_lossy(&profile.body)
            ),
        };
        assert!(
            count <= sent,
            "{uuid}: {count} realizations stored, only {sent} events sent"
        );
        kept.push((count, sent));
    }
    report.push(format!(
        "realizations kept / events sent per visitor: {}",
        kept.iter()
            .map(|(k, s)| format!("{k}/{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The server answers every visitor without a store error, and with the recovered catalog:
    // an acknowledged trait's rule realizes it.
    for v in 0..VISITORS {
        let uuid = visitor(v);
        let (sid, _, n) = &acknowledged[v * acknowledged.len() / VISITORS];
        let answer = get(&format!(
            "{base}/event?d_rtbd=json&d_cts=2&c_k={n}&d_uuid={uuid}"
        ))
        .await;
        assert_eq!(answer.status, 200);
        let answer = answer.json();
        assert_eq!(answer["uuid"], uuid.as_str(), "{answer}");
        assert!(answer.get("errors").is_none(), "{uuid}: {answer}");
        assert_eq!(answer["traits"], json!([sid]), "{uuid}: {answer}");
    }
    terminate(child);
    let logged = complaints(&last.lines);
    assert!(logged.is_empty(), "the last run logged: {logged:#?}");

    report.push(format!(
        "{} event answers with error 10 (late) during the load",
        load.late.get()
    ));
    eprintln!("{}", report.join("\n"));
    let unexpected = load.unexpected.borrow();
    assert!(
        unexpected.is_empty(),
        "complete answers that should not have been: {unexpected:#?}"
    );
}
