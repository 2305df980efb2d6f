//! Durable mode (`store.durable`), with the real binary killed with SIGKILL under load: every
//! event answered without an error is in the store after the restart.

use std::time::Duration;

use serde_json::json;
use tributary::core::ids::VisitorId;

use crate::common::process::{seeded_config, serve};
use crate::common::*;

const VISITORS: usize = 8;
/// Kill cycles: 3 in the suite; `TRIBUTARY_TEST_KILL_CYCLES=20` for the 20.
fn cycles() -> usize {
    std::env::var("TRIBUTARY_TEST_KILL_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}
/// Answered events per cycle before the kill.
const ANSWERED_BEFORE_KILL: usize = 300;

#[actix_web::test]
async fn durable_mode_loses_no_answered_event_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "seen", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_x == 1", "dataSourceId": 1}]),
        json!([]),
    );
    let config = seeded_config(dir.path(), &cat, "[store]\ndurable = true\nthreads = 2\n");
    let store = dir.path().join("store");
    let visitors: Vec<String> = (0..VISITORS)
        .map(|_| VisitorId::generate().to_string())
        .collect();
    // Per visitor: events answered without an error, and events sent at all.
    let mut answered = [0u64; VISITORS];
    let mut sent = [0u64; VISITORS];
    for cycle in 0..cycles() {
        let (mut child, base, _, _) = serve(&config, &store).await;
        let counts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients: Vec<_> = visitors
            .iter()
            .map(|uuid| {
                let url = format!("{base}/event?d_rtbd=json&c_x=1&d_uuid={uuid}");
                let counts = counts.clone();
                actix_rt::spawn(async move {
                    let http = client();
                    let (mut ok, mut tried) = (0u64, 0u64);
                    loop {
                        tried += 1;
                        let Ok(mut reply) = http.get(&url).send().await else {
                            break;
                        };
                        let Ok(body) = reply.json::<serde_json::Value>().await else {
                            break;
                        };
                        if reply.status() == 200 && body.get("errors").is_none() {
                            ok += 1;
                            counts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    (ok, tried)
                })
            })
            .collect();
        wait_until(
            "enough answered events",
            Duration::from_secs(60),
            || match counts.load(std::sync::atomic::Ordering::Relaxed) {
                n if n >= ANSWERED_BEFORE_KILL => Ok(()),
                n => Err(format!("{n} answered")),
            },
        )
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        for (i, client) in clients.into_iter().enumerate() {
            let (ok, tried) = client.await.unwrap();
            answered[i] += ok;
            sent[i] += tried;
        }
        eprintln!(
            "cycle {cycle}: {} answered in all so far",
            answered.iter().sum::<u64>()
        );
    }
    let (mut child, _, admin, _) = serve(&config, &store).await;
    for (i, uuid) in visitors.iter().enumerate() {
        let profile = admin
            .call("GET", &format!("/v1/profiles/{uuid}"), None)
            .await
            .json();
        let stored = profile["traits"][0]["count"].as_u64().unwrap_or(0);
        assert!(
            stored >= answered[i] && stored <= sent[i],
            "visitor {i}: {stored} realizations stored, {} answered, {} sent: {profile}",
            answered[i],
            sent[i]
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
