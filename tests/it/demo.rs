//! `tributary demo` as a process: its printed walkthrough works — a cached answer, an ID sync
//! that makes a synced-only provider answer, and the segment that follows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[actix_web::test]
async fn the_demo_shows_a_cached_answer_and_an_id_sync() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("demo")
        .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tributary demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("Metrics:");
            lines.push(line);
            if done {
                let _ = tx.send(lines.clone());
            }
        }
    });
    let printed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo prints its walkthrough");
    let base = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("DCS endpoint: "))
        .expect("endpoint printed")
        .trim_end_matches("/event")
        .to_string();
    assert!(
        printed.iter().any(|l| l.contains("/ibs:dpid=1003&dpuuid=")),
        "the walkthrough shows an ID sync: {printed:#?}"
    );

    let first = get(&format!("{base}/event?d_rtbd=json&d_cts=2&c_page=cars")).await;
    let uuid = first.visitor_cookie().expect("cookie");
    let body = first.json();
    assert_eq!(body["providers"]["idco"], "skipped", "{body}");
    let cookie = format!("demdex={uuid}");
    let second = get_with(
        &format!("{base}/event?d_rtbd=json&d_cts=2&c_page=cars"),
        &[("cookie", &cookie)],
    )
    .await
    .json();
    assert_eq!(second["providers"]["acme"], "cached", "{second}");

    let sync = get_with(
        &format!("{base}/ibs:dpid=1003&dpuuid=idco-user-42"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(sync.status, 200);
    assert_eq!(sync.header("x-error"), None);
    let third = get_with(
        &format!("{base}/event?d_rtbd=json&d_cts=2"),
        &[("cookie", &cookie)],
    )
    .await
    .json();
    assert_eq!(third["providers"]["idco"], "ok", "{third}");
    assert!(
        third["segments"].as_array().unwrap().contains(&106.into()),
        "{third}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the demo stops cleanly on SIGTERM: {status:?}"
    );
}
