//! The real binary as a process: start, SIGTERM (graceful shutdown with a flush), start again
//! on the same store — the profile survives.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

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
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line.clone());
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
    (child, base, lines)
}

/// The first logged line containing `marker`, waiting for it a little.
fn logged(lines: &Mutex<Vec<String>>, marker: &str) -> String {
    for _ in 0..500 {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| l.contains(marker)) {
            return line.clone();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no log line with {marker:?}: {:#?}", lines.lock().unwrap());
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

    let (child, base, lines) = spawn_server_logging(&config, &store);
    // No [admin] token configured: one is generated and logged once, and it opens the API.
    let token_line = logged(&lines, "admin token (generated at start, shown once): ");
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(token.len(), 64, "{token_line}");
    let admin = logged(&lines, "admin API on http://");
    let admin = admin
        .split("admin API on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
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
