//! The real binary as a process (`tributary serve` with a config file and a store dir): what
//! only a process shows — signals, a kill, a restart on the same store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary::core::catalog::Catalog;

use super::{wait_until, Admin, ADMIN_TOKEN};

/// Starts `tributary serve` with `config`, its store in `store` and more environment
/// overrides; returns it with its base URL, read from its log, and every line it logs.
pub fn spawn_server_with(
    config: &Path,
    store: &Path,
    env: &[(&str, &str)],
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
        // As in `test_config`: a loaded machine's late timers are not what these tests test.
        .env("TRIBUTARY__SERVER__SHED_LAG_MS", "0")
        .env("TRIBUTARY__STORE__PATH", store)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
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
    let base = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => base,
        Err(e) => {
            let status = child.try_wait();
            panic!(
                "server announces its address ({e}); exit status {status:?}, log: {:#?}",
                lines.lock().unwrap()
            );
        }
    };
    (child, base, lines)
}

/// The first logged line containing `marker`, once the server has logged it.
pub async fn logged(lines: &Mutex<Vec<String>>, marker: &str) -> String {
    wait_until(
        &format!("a log line with {marker:?}"),
        Duration::from_secs(10),
        || {
            let lines = lines.lock().unwrap();
            match lines.iter().find(|l| l.contains(marker)) {
                Some(line) => Ok(line.clone()),
                None => Err(format!("{lines:#?}")),
            }
        },
    )
    .await
}

/// The admin listener's base URL (`http://host:port/v1`), from the server's log.
pub async fn admin_base(lines: &Mutex<Vec<String>>) -> String {
    let line = logged(lines, "admin API on http://").await;
    line.split("admin API on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string()
}

/// SIGTERM, and the graceful shutdown's exit status 0.
pub fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "graceful shutdown exits 0, got {code:?}");
}

/// `tributary serve` with its store at `store` and the test's admin token: the process, its
/// base URL, its admin API and its log lines. The caller waits for the process.
pub async fn serve(config: &Path, store: &Path) -> (Child, String, Admin, Arc<Mutex<Vec<String>>>) {
    let (child, base, lines) =
        spawn_server_with(config, store, &[("TRIBUTARY__ADMIN__TOKEN", ADMIN_TOKEN)]);
    let admin = admin_base(&lines).await;
    let admin = Admin {
        base: admin.trim_end_matches("/v1").to_string(),
    };
    (child, base, admin, lines)
}

/// Writes `catalog` as the seed of a config file in `dir`, followed by `more` (TOML sections);
/// returns the config file's path.
pub fn seeded_config(dir: &Path, catalog: &Catalog, more: &str) -> PathBuf {
    let seed = dir.join("catalog.json");
    std::fs::write(&seed, serde_json::to_vec(catalog).unwrap()).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("[catalog]\nseed = {seed:?}\n{more}")).unwrap();
    config
}
