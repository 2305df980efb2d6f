//! A full disk that is freed again, with the real binary on a small tmpfs: the store fails,
//! `/ready` says so, admin writes are refused (not acknowledged), and once space is freed the
//! process stops for its supervisor — here the test — to start it again on the recovered
//! store, with every acknowledged admin write there. Skipped, with one line, where the test
//! cannot mount a tmpfs (not root, or no mount namespace allowed).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::process::serve;
use crate::common::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Creates a trait named `name`: the status, and its id when created.
async fn create_trait(admin: &Admin, name: &str) -> (u16, Option<u64>) {
    let body = json!({"name": name, "traitType": "RULE_BASED_TRAIT",
                      "traitRule": "c_x == 1", "dataSourceId": 1});
    let reply = admin.call("POST", "/v1/traits", Some(body)).await;
    let sid = (reply.status == 201)
        .then(|| reply.json()["sid"].as_u64())
        .flatten();
    (reply.status, sid)
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[actix_web::test]
async fn a_full_disk_that_is_freed_is_recovered_by_a_restart_with_nothing_acknowledged_lost() {
    let Some(disk) = Tmpfs::mount(48) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root and mount rights)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[store]\nthreads = 1\nwrite_delay_ms = 20\nflush_every_ms = 50\ncache_capacity = 4194304\n",
    )
    .unwrap();
    let store = disk.path().join("store");
    let (mut child, base, admin, lines) = serve(&config, &store).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let (status, sid) = create_trait(&admin, &format!("before {i}")).await;
        assert_eq!(status, 201);
        acknowledged.push(sid.unwrap());
    }
    assert_eq!(get(&format!("{base}/ready")).await.status, 200);

    let filler = disk.path().join("filler");
    fill(&filler);
    // New visitors' profiles now cannot be written: the store fails and says so.
    let mut sent = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        for _ in 0..20 {
            let reply = get(&format!("{base}/event?d_rtbd=json&c_x=1")).await;
            assert!(
                reply.status == 200 || reply.status == 429,
                "{}",
                reply.status
            );
            sent += 1;
        }
        let ready = get(&format!("{base}/ready")).await;
        if ready.status == 503 {
            break ready.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store still ready after {sent} events on a full disk"
        );
    };
    assert_eq!(ready["status"], "store_failing", "{ready}");
    assert!(
        ready["error"].as_str().unwrap().contains("space"),
        "{ready}"
    );
    // Not acknowledged, so not promised.
    let (refused, _) = create_trait(&admin, "during").await;
    assert_eq!(refused, 503);

    std::fs::remove_file(&filler).unwrap();
    // The process notices the room and stops for its supervisor.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the disk was freed: {:#?}",
            lines.lock().unwrap()
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !status.success(),
        "a restart is asked for with an error exit"
    );
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("has room again")),
        "{:#?}",
        lines.lock().unwrap()
    );

    // The supervisor's part: start it again on the same store.
    let (child, base, admin, _) = serve(&config, &store).await;
    assert_eq!(get(&format!("{base}/ready")).await.status, 200);
    let listed = admin.call("GET", "/v1/traits", None).await.json();
    let traits = listed.as_array().unwrap();
    for sid in &acknowledged {
        assert!(
            traits.iter().any(|t| t["sid"].as_u64() == Some(*sid)),
            "trait {sid} lost: {listed}"
        );
    }
    assert!(!traits.iter().any(|t| t["name"] == "during"), "{listed}");
    assert_eq!(
        get(&format!("{base}/event?d_rtbd=json&c_x=1")).await.status,
        200
    );
    assert_eq!(create_trait(&admin, "after").await.0, 201);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait_with_output().unwrap().status.success());
}
