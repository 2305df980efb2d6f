//! The real binary as a process: start, SIGTERM (graceful shutdown with a flush), start again
//! on the same store — the profile survives.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Starts `tributary serve` and returns it with its base URL, read from its log.
fn spawn_server(config: &std::path::Path, store: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__STORE__PATH", store)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server announces its address");
    (child, base)
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "graceful shutdown exits 0, got {code:?}");
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
    let seed = dir.path().join("catalog.json");
    std::fs::write(&seed, serde_json::to_vec(&cat).unwrap()).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[catalog]\nseed = {:?}\n[store]\nthreads = 1\n", seed),
    )
    .unwrap();
    let store = dir.path().join("store");

    let (child, base) = spawn_server(&config, &store);
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
