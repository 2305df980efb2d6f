//! The real binary as a child process, for tests of what only a process shows: exits,
//! restarts, kill -9.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ADMIN_TOKEN;

/// `tributary serve` with its store at `store`: the process, its base and admin URLs and its
/// log lines. The caller waits for the process.
#[allow(clippy::zombie_processes)] // the child is returned, killed here only on a timeout
pub fn serve(config: &Path, store: &Path) -> (Child, String, String, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("TRIBUTARY__SERVER__SHED_LAG_MS", "0")
        .env("TRIBUTARY__STORE__PATH", store)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line);
        }
    });
    let found = |marker: &str| {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .find_map(|l| l.split(marker).nth(1).map(|u| u.trim().to_string()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let (Some(base), Some(admin)) = (found("listening on "), found("admin API on ")) {
            return (child, base, admin, lines);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address logged: {:#?}", lines.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
