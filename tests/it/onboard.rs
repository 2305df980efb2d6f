//! `tributary onboard FILE…` as a user runs it: the real binary against a real server's admin
//! listener — what it prints for each rejected line, its summary, its exit status (0 all
//! applied, 2 some lines refused, 1 a file not imported) and what ends up in the store.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tributary::core::catalog::Catalog;

use crate::common::*;

const CRM: u32 = 9001;

fn crm_catalog() -> Catalog {
    catalog(
        vec![],
        json!([
            {"sid": 31, "name": "gold", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"gold\"", "dataSourceId": CRM},
            {"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"silver\"", "dataSourceId": CRM},
            {"sid": 41, "name": "partner", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"a\"", "dataSourceId": 21}
        ]),
        json!([]),
    )
}

async fn start() -> (TestServer, Admin) {
    let server = TestServer::start_with(&crm_catalog(), |c| {
        c.profiles.cross_device_data_sources = vec![CRM];
    })
    .await;
    let admin = Admin::of(&server);
    (server, admin)
}

/// Runs `tributary onboard` with `args` off the runtime's thread (the server under test runs
/// on this runtime).
async fn onboard(admin: &Admin, token: &str, files: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .arg("onboard")
        .args(files)
        .args(["--admin", &format!("{}/v1", admin.base)])
        .env("TRIBUTARY__ADMIN__TOKEN", token)
        .env_remove("TRIBUTARY_ADMIN_URL");
    actix_rt::task::spawn_blocking(move || command.output().expect("run tributary onboard"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The trait ids of a CRM id's authenticated profile (empty when it has none).
async fn traits(admin: &Admin, id: &str) -> Vec<u64> {
    let reply = admin
        .call("GET", &format!("/profile/{CRM}/{id}"), None)
        .await;
    if reply.status == 404 {
        return Vec::new();
    }
    let body: Value = reply.json();
    let mut ids: Vec<u64> = body["profile"]["data"]["traits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[actix_web::test]
async fn rejected_lines_are_printed_by_number_and_the_rest_applied() {
    let (server, admin) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("ftp_dpm_{CRM}_1700000000.sync"));
    std::fs::write(
        &file,
        "alice\td_sid=31\n\
         bob\ttier=silver\n\
         carol\td_sid=999\n\
         \n\
         dave\td_sid=41\n\
         erin\tabc:0\n",
    )
    .unwrap();
    let out = onboard(&admin, ADMIN_TOKEN, &[&file]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", stderr(&out));
    let name = file.file_name().unwrap().to_str().unwrap();
    // Parse errors are known before the store's answers, so lines are not printed in order.
    let mut rejected: Vec<(u64, &str)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}:"))?;
            let (number, why) = rest.split_once(": ")?;
            Some((number.parse().ok()?, why))
        })
        .collect();
    rejected.sort_unstable();
    let numbers: Vec<u64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(numbers, [3, 5, 6], "{text}");
    assert!(rejected[0].1.contains("trait 999 does not exist"), "{text}");
    assert!(rejected[1].1.contains("data source 21"), "{text}");
    assert!(rejected[2].1.contains("abc:0"), "{text}");
    assert!(
        text.contains(&format!("{name}: 6 lines in"))
            && text.contains("2 applied, 3 rejected, 0 not applied"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{name}: note: its realizations are dated 2023-11-14 22:13:20 UTC"
        )),
        "an old time stamp is pointed out: {text}"
    );
    assert_eq!(traits(&admin, "alice").await, [31]);
    assert_eq!(traits(&admin, "bob").await, [32]);
    for refused in ["carol", "dave", "erin"] {
        assert!(traits(&admin, refused).await.is_empty(), "{refused}");
    }
    server.stop().await;
}

#[actix_web::test]
async fn a_clean_import_exits_0_and_several_files_go_in_order() {
    let (server, admin) = start().await;
    let dir = tempfile::tempdir().unwrap();
    // Part 1 adds gold, part 2 (gzip) removes it again and adds silver: order matters.
    let first = dir.path().join(format!("ftp_dpm_{CRM}_1700000000.sync.1"));
    std::fs::write(&first, "alice\td_sid=31\nbob\td_sid=31\n").unwrap();
    let second = dir
        .path()
        .join(format!("ftp_dpm_{CRM}_1700000100.sync.2.gz"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"alice\t31:0,d_sid=32\n").unwrap();
    std::fs::write(&second, gz.finish().unwrap()).unwrap();
    let out = onboard(&admin, ADMIN_TOKEN, &[&first, &second]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("2 lines in") && stdout(&out).contains("1 lines in"),
        "{}",
        stdout(&out)
    );
    assert_eq!(traits(&admin, "alice").await, [32]);
    assert_eq!(traits(&admin, "bob").await, [31]);
    server.stop().await;
}

#[actix_web::test]
async fn what_cannot_be_imported_exits_1_with_the_reason() {
    let (server, admin) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join(format!("ftp_dpm_{CRM}_1700000000.sync"));
    std::fs::write(&good, "alice\td_sid=31\n").unwrap();

    let refused = onboard(&admin, "wrong-token-0123456789", &[&good]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("401") && stderr(&refused).contains("TRIBUTARY__ADMIN__TOKEN"),
        "{}",
        stderr(&refused)
    );

    let misnamed = dir.path().join("customers.tsv");
    std::fs::write(&misnamed, "alice\td_sid=31\n").unwrap();
    let out = onboard(&admin, ADMIN_TOKEN, &[&misnamed]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("customers.tsv"), "{}", stderr(&out));

    let empty = dir.path().join(format!("ftp_dpm_{CRM}_1700000001.sync"));
    std::fs::write(&empty, "").unwrap();
    let out = onboard(&admin, ADMIN_TOKEN, &[&empty]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));

    // A gzip file cut short: the lines before the cut are applied, and the command says where
    // the import stopped.
    let truncated = dir.path().join(format!("ftp_dpm_{CRM}_1700000002.sync.gz"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..20_000 {
        writeln!(gz, "user-{i}\td_sid=32").unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = onboard(&admin, ADMIN_TOKEN, &[&truncated]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the import stopped after line"),
        "{}",
        stderr(&out)
    );
    assert_eq!(traits(&admin, "user-0").await, [32]);
    assert!(traits(&admin, "user-19999").await.is_empty());

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = Admin {
        base: format!("http://127.0.0.1:{port}"),
    };
    let out = onboard(&nobody, ADMIN_TOKEN, &[&good]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the admin API"),
        "{}",
        stderr(&out)
    );
    assert!(traits(&admin, "alice").await.is_empty(), "never imported");
    server.stop().await;
}
