//! The real binary as a process: start, SIGTERM (graceful shutdown with a flush), start again
//! on the same store — the profile survives.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::common::process::*;
use crate::common::*;

/// Starts `tributary serve` and returns it with its base URL, read from its log.
fn spawn_server(config: &std::path::Path, store: &std::path::Path) -> (Child, String) {
    let (child, base, _) = spawn_server_logging(config, store);
    (child, base)
}

/// As [`spawn_server`], with every line the server logs.
fn spawn_server_logging(
    config: &std::path::Path,
    store: &std::path::Path,
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    spawn_server_with(config, store, &[])
}

#[actix_web::test]
async fn a_profile_survives_a_restart_on_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        vec![],
        json!([
            {"sid": 11, "name": "first", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_step == 1", "dataSourceId": 1},
            {"sid": 12, "name": "second", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_step == 2", "dataSourceId": 1}
        ]),
        json!([{"sid": 101, "name": "both", "segmentRule": "11T AND 12T", "dataSourceId": 1}]),
    );
    let config = seeded_config(dir.path(), &cat, "[store]\nthreads = 1\n");
    let store = dir.path().join("store");

    let (child, base, lines) = spawn_server_logging(&config, &store);
    // No [admin] token configured: one is generated and logged once, and it opens the API.
    let token_line = logged(&lines, "admin token (generated at start, shown once): ").await;
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(token.len(), 64, "{token_line}");
    let admin = admin_base(&lines).await;
    let authorized = read(
        client()
            .get(format!("{admin}/traits"))
            .insert_header(("authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(authorized.status, 200);
    assert_eq!(get(&format!("{admin}/traits")).await.status, 401);

    let first = get(&format!("{base}/event?d_rtbd=json&d_cts=2&c_step=1")).await;
    let uuid = first.json()["uuid"].as_str().unwrap().to_string();
    assert_eq!(first.json()["segments"], json!([]));
    terminate(child);

    let (child, base) = spawn_server(&config, &store);
    let second = get_with(
        &format!("{base}/event?d_rtbd=json&d_cts=2&c_step=2"),
        &[("cookie", &format!("demdex={uuid}"))],
    )
    .await;
    assert_eq!(second.json()["uuid"], uuid.as_str());
    assert_eq!(
        second.json()["segments"],
        json!([101]),
        "trait 11 came back from the store"
    );
    terminate(child);
}

#[actix_web::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[realtime]\ndeadline_ms = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config key realtime.deadline_ms"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Two `tributary serve` processes on one Redis Cluster, the same visitors' events alternating
/// between them and sent all at once: after both stop, every visitor's count is exact.
#[actix_web::test]
async fn two_processes_sharing_a_redis_cluster_count_every_event() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([]),
    );
    let urls: Vec<String> = cluster.urls.iter().map(|u| format!("{u:?}")).collect();
    let config = seeded_config(
        dir.path(),
        &cat,
        &format!(
            "[store]\nbackend = \"redis\"\nredis_urls = [{}]\n\
             redis_prefix = {prefix:?}\nwrite_delay_ms = 50\n[realtime]\ndeadline_ms = 200\n",
            urls.join(", ")
        ),
    );
    let mut nodes = Vec::new();
    for name in ["dcs-1", "dcs-2"] {
        let (child, base, _) = spawn_server_with(
            &config,
            &dir.path().join(name),
            &[("TRIBUTARY__STORE__NODE_ID", name)],
        );
        nodes.push((child, base));
    }
    const EVENTS: usize = 20;
    let visitors: Vec<String> = (1..=6).map(|n| format!("{n}").repeat(38)).collect();
    let calls = (0..EVENTS).flat_map(|round| {
        let nodes = &nodes;
        visitors.iter().enumerate().map(move |(i, v)| {
            let url = format!(
                "{}/event?d_rtbd=json&c_page=cars&d_uuid={v}",
                nodes[(round + i) % 2].1
            );
            async move { get(&url).await.status }
        })
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    for (child, _) in nodes {
        terminate(child);
    }
    let store = crate::store_conformance::redis_store(&cluster, &prefix);
    for v in &visitors {
        let profile = tributary::store::ProfileStore::load_profile(
            &store,
            tributary::core::ids::VisitorId::parse(v).unwrap(),
        )
        .unwrap()
        .expect("stored");
        assert_eq!(profile.traits[&11].count(), EVENTS as u64, "visitor {v}");
    }
}
