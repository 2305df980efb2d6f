//! Inbound file imports over real sockets (`POST /v1/inbound?file=`, `GET /v1/inbound`,
//! `GET /v1/inbound/{id}`): AAM's `.sync` and `.overwrite` files, plain and gzipped, applied to
//! the CRM's authenticated profiles; each line's fate checked in the job's progress and in the
//! profiles themselves; bad requests, bad lines and broken files; and events answered as usual
//! while a large file is imported.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::config::{Config, MergeRule};
use tributary::core::catalog::Catalog;

use crate::common::*;

const CRM: u32 = 9001;
const PARTNER: u32 = 21;

fn crm_catalog() -> Catalog {
    catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1},
            {"sid": 31, "name": "gold", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"gold\"", "dataSourceId": CRM},
            {"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"silver\"", "dataSourceId": CRM},
            {"sid": 33, "name": "vip", "traitType": "ON_BOARDED_TRAIT", "traitRule": "ic == \"vip\"", "dataSourceId": CRM},
            {"sid": 41, "name": "partner", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"a\"", "dataSourceId": PARTNER}
        ]),
        json!([
            {"sid": 201, "name": "gold members", "segmentRule": "31T", "dataSourceId": CRM}
        ]),
    )
}

async fn start() -> (TestServer, Admin) {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut Config)) -> (TestServer, Admin) {
    let server = TestServer::start_with(&crm_catalog(), |c| {
        c.profiles.cross_device_data_sources = vec![CRM];
        c.profiles.merge_rule = MergeRule::LastAuthenticatedAndDevice;
        c.server.integration_codes.insert("crm".into(), CRM);
        tweak(c);
    })
    .await;
    let admin = Admin::of(&server);
    (server, admin)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file timestamp an hour ago: realizations are dated it, so it must differ from the clock
/// to show that they are, and an old one would be past the traits' time to live.
fn stamp() -> i64 {
    now() - 3600
}

async fn upload(admin: &Admin, file: &str, body: Vec<u8>) -> Reply {
    let req = client()
        .post(format!("{}/v1/inbound?file={file}", admin.base))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .insert_header(("content-type", "application/octet-stream"));
    read(req.send_body(body).await.expect("upload")).await
}

/// Uploads `body` as `file` and waits for the job to end; its last progress.
async fn import(admin: &Admin, file: &str, body: Vec<u8>) -> Value {
    let size = body.len();
    let reply = upload(admin, file, body).await;
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let accepted = reply.json();
    let id = accepted["jobId"].as_u64().unwrap();
    let location = reply.header("location").unwrap();
    assert_eq!(location, format!("/v1/inbound/{id}"));
    assert_eq!(accepted["file"], file);
    assert_eq!(accepted["bytesReceived"], size as u64);
    wait_job(admin, &location).await
}

async fn wait_job(admin: &Admin, location: &str) -> Value {
    wait_for(
        "the import to end",
        Duration::from_secs(300),
        || async move {
            let p = admin.call("GET", location, None).await.json();
            match p["state"].as_str() {
                Some("done" | "failed") => Ok(p),
                _ => Err(format!("{} lines, {} applied", p["lines"], p["applied"])),
            }
        },
    )
    .await
}

/// The counters of a job's progress: lines, applied, rejected, failed.
fn counts(p: &Value) -> [u64; 4] {
    ["lines", "applied", "rejected", "failed"].map(|k| p[k].as_u64().unwrap())
}

/// A job's rejected lines by number. Lines refused by the catalog are reported when their
/// op settles, after lines refused by the parser that follow them: the order is not the
/// file's.
fn issues(p: &Value) -> Vec<(u64, String)> {
    let mut issues: Vec<(u64, String)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    issues.sort();
    issues
}

fn assert_issues(p: &Value, expected: &[(u64, &str)]) {
    let got = issues(p);
    assert_eq!(
        got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        expected.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        "{p}"
    );
    for ((line, message), (_, part)) in got.iter().zip(expected) {
        assert!(message.contains(part), "line {line}: {message:?}");
    }
}

/// A CRM user's authenticated profile as the admin API shows it; `None` when there is none.
async fn crm_profile(admin: &Admin, id: &str) -> Option<Value> {
    let reply = admin
        .call("GET", &format!("/v1/profiles/{CRM}:{id}"), None)
        .await;
    match reply.status {
        200 => Some(reply.json()),
        404 => None,
        other => panic!("{other}: {}", String::from_utf8_lossy(&reply.body)),
    }
}

/// A CRM user's trait ids; `None` when the user has no profile.
async fn crm_traits(admin: &Admin, id: &str) -> Option<Vec<u64>> {
    let profile = crm_profile(admin, id).await?;
    Some(
        profile["traits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["sid"].as_u64().unwrap())
            .collect(),
    )
}

async fn assert_traits(admin: &Admin, expected: &[(&str, Option<&[u64]>)]) {
    for (user, traits) in expected {
        assert_eq!(
            crm_traits(admin, user).await.as_deref(),
            *traits,
            "traits of {user}"
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Adds by `d_sid=`, by `tier=` and `ic=`/bare signals, removes by `d_unsid=`, `:0` and `:-1`
/// in later lines, and has four bad lines (5 to 8) and a blank one (11).
fn sync_file() -> Vec<u8> {
    [
        "alice\td_sid=31",
        "bob\ttier=gold,d_sid=32",
        "carol\tic=vip,tier=silver",
        "dave\tvip",
        "erin\td_sid=999",
        // Refused whole: alice keeps 31 alone.
        "alice\td_sid=32,d_sid=41",
        "frank\td_sid=abc",
        "gina\tk=a\u{1}b",
        "bob\td_unsid=31",
        "carol\t32:0",
        "   ",
        "dave\td_sid=32,33:-1",
    ]
    .join("\n")
    .into_bytes()
}

/// What [`sync_file`] leaves.
const SYNC_PROFILES: [(&str, Option<&[u64]>); 7] = [
    ("alice", Some(&[31])),
    ("bob", Some(&[32])),
    ("carol", Some(&[33])),
    ("dave", Some(&[32])),
    ("erin", None),
    ("frank", None),
    ("gina", None),
];

fn assert_sync_job(p: &Value) {
    assert_eq!(p["state"], "done", "{p}");
    assert_eq!(counts(p), [12, 7, 4, 0], "{p}");
    assert_issues(
        p,
        &[
            (5, "trait 999 does not exist"),
            (6, "trait 41 belongs to data source 21"),
            (7, "item 1 \"d_sid=abc\": not a trait id"),
            (8, "control character in the value"),
        ],
    );
    assert!(p.get("message").is_none(), "{p}");
    assert!(p["finishedAt"].as_i64().unwrap() >= p["startedAt"].as_i64().unwrap());
}

/// The admin API's profiles of [`sync_file`]'s users who have one.
async fn sync_profiles(admin: &Admin) -> Vec<Value> {
    let mut profiles = Vec::new();
    for (user, _) in SYNC_PROFILES {
        profiles.extend(crm_profile(admin, user).await);
    }
    profiles
}

#[actix_web::test]
async fn a_sync_file_adds_and_removes_traits_and_refuses_bad_lines_alone() {
    let (server, admin) = start().await;
    let at = stamp();
    let file = format!("ftp_dpm_{CRM}_{at}.sync");
    let body = sync_file();
    let reply = upload(&admin, &file, body.clone()).await;
    assert_eq!(reply.status, 202);
    let accepted = reply.json();
    assert_eq!(accepted["state"], "running", "{accepted}");
    assert!(accepted.get("finishedAt").is_none());
    let location = reply.header("location").unwrap();
    let p = wait_job(&admin, &location).await;
    assert_sync_job(&p);
    assert_eq!(p["bytesReceived"], body.len() as u64);

    assert_traits(&admin, &SYNC_PROFILES).await;
    // Realizations are dated the file's timestamp, onboarded traits counted once.
    let bob = crm_profile(&admin, "bob").await.unwrap();
    assert_eq!(
        bob["traits"],
        json!([{"sid": 32, "firstRealization": at, "lastRealization": at, "count": 1}])
    );
    assert_eq!(
        bob["authenticated"],
        json!({"dataSourceId": CRM, "id": "bob"})
    );
    // The profile viewer agrees, segments included.
    let viewed = admin.call("GET", "/profile/9001/alice", None).await.json();
    assert_eq!(viewed["profile"]["data"]["traits"][0]["id"], 31);
    assert_eq!(viewed["profile"]["data"]["segments"][0]["id"], 201);
    assert_eq!(
        admin.call("GET", "/profile/9001/erin", None).await.status,
        404
    );

    // The list shows the job, without its errors.
    let list = admin.call("GET", "/v1/inbound", None).await.json();
    assert_eq!(list[0]["jobId"], p["jobId"]);
    assert_eq!(list[0]["state"], "done");
    assert_eq!(list[0]["errors"], json!([]));
    server.stop().await;
}

#[actix_web::test]
async fn gzipped_files_give_the_same_profiles() {
    let at = stamp();
    let plain = sync_file();
    // Two members cut in the middle of a line: a concatenation of gzip files is one file.
    let cut = plain.len() / 2;
    assert_ne!(plain[cut - 1], b'\n');
    let mut two_members = gzip(&plain[..cut]);
    two_members.extend(gzip(&plain[cut..]));

    let mut seen: Vec<Vec<Value>> = Vec::new();
    for (suffix, body) in [
        ("sync", plain.clone()),
        ("sync.gz", gzip(&plain)),
        ("sync.gz", two_members),
    ] {
        let (server, admin) = start().await;
        let p = import(&admin, &format!("ftp_dpm_{CRM}_{at}.{suffix}"), body).await;
        assert_sync_job(&p);
        assert_traits(&admin, &SYNC_PROFILES).await;
        seen.push(sync_profiles(&admin).await);
        server.stop().await;
    }
    assert_eq!(seen[0].len(), 4);
    assert_eq!(seen[1], seen[0], "one gzip member");
    assert_eq!(seen[2], seen[0], "two gzip members");
}

#[actix_web::test]
async fn importing_a_file_again_changes_nothing() {
    let (server, admin) = start().await;
    let file = format!("ftp_dpm_{CRM}_{}.sync", stamp());
    let first = import(&admin, &file, sync_file()).await;
    assert_sync_job(&first);
    let before = sync_profiles(&admin).await;
    assert_eq!(before.len(), 4);
    // Anything dated by the clock rather than by the file would now differ.
    let finished = first["finishedAt"].as_i64().unwrap();
    wait_until("the clock to pass a second", Duration::from_secs(3), || {
        now() > finished
    })
    .await;
    let second = import(&admin, &file, sync_file()).await;
    assert_sync_job(&second);
    assert_ne!(first["jobId"], second["jobId"]);
    assert_eq!(sync_profiles(&admin).await, before);
    let list = admin.call("GET", "/v1/inbound", None).await.json();
    let ids: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["jobId"])
        .collect();
    assert_eq!(ids, [&second["jobId"], &first["jobId"]], "newest first");
    server.stop().await;
}

#[actix_web::test]
async fn an_overwrite_file_replaces_the_data_source_s_traits_only() {
    let (server, admin) = start().await;
    let at = stamp();
    let sync = import(
        &admin,
        &format!("ftp_dpm_{CRM}_{at}.sync"),
        b"alice\td_sid=31,d_sid=32\nbob\td_sid=31\ncarol\td_sid=32\n".to_vec(),
    )
    .await;
    assert_eq!(counts(&sync), [3, 3, 0, 0], "{sync}");
    // The CRM's users, the partner's traits.
    let partner = import(
        &admin,
        &format!("ftp_dpm_{CRM}_{PARTNER}_{at}.sync"),
        b"alice\tsegment=a\n".to_vec(),
    )
    .await;
    assert_eq!(counts(&partner), [1, 1, 0, 0], "{partner}");
    // A rule-based trait realized by alice's browser, on her authenticated profile.
    let answer = get(&server.url("/event?d_cid_ic=crm%01alice%011&c_page=cars&d_rtbd=json")).await;
    assert_eq!(answer.status, 200);
    let before = wait_for(
        "alice's profile to hold trait 11",
        Duration::from_secs(10),
        || {
            let admin = &admin;
            async move {
                let p = crm_profile(admin, "alice").await.unwrap();
                let traits = p["traits"].as_array().unwrap().clone();
                if traits.iter().any(|t| t["sid"] == 11) {
                    Ok(traits)
                } else {
                    Err(format!("{traits:?}"))
                }
            }
        },
    )
    .await;
    let sids: Vec<&Value> = before.iter().map(|t| &t["sid"]).collect();
    assert_eq!(sids, [11, 31, 32, 41]);

    let later = at + 60;
    let overwrite = import(
        &admin,
        &format!("ftp_dpm_{CRM}_{later}.overwrite"),
        // Removals are ignored in an overwrite file: the line lists what the user keeps.
        b"alice\td_sid=33\nbob\ttier=silver,d_unsid=31\n".to_vec(),
    )
    .await;
    assert_eq!(overwrite["state"], "done", "{overwrite}");
    assert_eq!(counts(&overwrite), [2, 2, 0, 0], "{overwrite}");
    assert_traits(
        &admin,
        &[
            ("alice", Some(&[11, 33, 41])),
            ("bob", Some(&[32])),
            ("carol", Some(&[32])),
        ],
    )
    .await;
    let after = crm_profile(&admin, "alice").await.unwrap();
    let after = after["traits"].as_array().unwrap();
    let kept = |traits: &[Value], sid: u64| traits.iter().find(|t| t["sid"] == sid).cloned();
    for sid in [11, 41] {
        assert_eq!(
            kept(after, sid),
            kept(&before, sid),
            "trait {sid} untouched"
        );
    }
    assert_eq!(kept(after, 33).unwrap()["firstRealization"], later);
    server.stop().await;
}

#[actix_web::test]
async fn a_truncated_gzip_file_fails_after_applying_the_lines_before_the_cut() {
    let (server, admin) = start().await;
    let total = 3000;
    let plain: String = (1..=total).map(|i| format!("t{i}\td_sid=31\n")).collect();
    let whole = gzip(plain.as_bytes());
    let cut = whole[..whole.len() / 2].to_vec();
    let p = import(&admin, &format!("ftp_dpm_{CRM}_{}.sync.gz", stamp()), cut).await;
    assert_eq!(p["state"], "failed", "{p}");
    let message = p["message"].as_str().unwrap();
    let line: u64 = message
        .strip_prefix("line ")
        .and_then(|m| m.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(
        message.contains("could not read the file: incomplete deflate stream"),
        "{message}"
    );
    assert!(line > 1 && line < total, "{message}");
    let before_cut = line - 1;
    assert_eq!(counts(&p), [before_cut, before_cut, 0, 0], "{p}");
    assert_traits(
        &admin,
        &[
            ("t1", Some(&[31])),
            (&format!("t{before_cut}"), Some(&[31])),
            (&format!("t{line}"), None),
            (&format!("t{total}"), None),
        ],
    )
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn bad_requests_and_long_lines() {
    let (server, admin) = start().await;
    let name = format!("ftp_dpm_{CRM}_{}.sync", stamp());

    let empty = upload(&admin, &name, Vec::new()).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()["error"]["field"], "body", "{}", empty.json());
    assert!(empty.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("empty"));
    let bad_name = upload(&admin, "crm-users.txt", b"a\td_sid=31".to_vec()).await;
    assert_eq!(bad_name.status, 400);
    let error = &bad_name.json()["error"];
    assert_eq!(error["field"], "file", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("ftp_dpm_"),
        "{error}"
    );
    let no_name = admin
        .raw(
            "POST",
            "/v1/inbound",
            Some(b"a\td_sid=31".to_vec()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(no_name.status, 400);
    assert_eq!(no_name.json()["error"]["field"], "file");
    let path = format!("/v1/inbound?file={name}");
    for token in [None, Some("wrong-token")] {
        let reply = admin
            .raw("POST", &path, Some(b"a\td_sid=31".to_vec()), token)
            .await;
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(
            admin.raw("GET", "/v1/inbound", None, token).await.status,
            401
        );
        assert_eq!(
            admin.raw("GET", "/v1/inbound/1", None, token).await.status,
            401
        );
    }
    for unknown in ["/v1/inbound/999", "/v1/inbound/abc"] {
        let reply = admin.call("GET", unknown, None).await;
        assert_eq!(reply.status, 404, "{unknown}");
        assert_eq!(reply.json()["error"]["code"], "not_found");
    }
    assert_eq!(
        crm_traits(&admin, "a").await,
        None,
        "refused uploads apply nothing"
    );

    let mut body = b"p1\td_sid=31\np2\tk=".to_vec();
    body.extend(std::iter::repeat_n(b'v', 10 << 20));
    body.extend(b"\np3\td_sid=32\n");
    // 201 lines of one user: the last one is past AAM's 200.
    for _ in 0..201 {
        body.extend(b"many\td_sid=31\n");
    }
    body.extend(b"p5\td_sid=abc\np6\td_sid=31\n");
    let p = import(&admin, &name, body).await;
    assert_eq!(p["state"], "done", "{p}");
    assert_eq!(counts(&p), [206, 203, 3, 0], "{p}");
    let expected = [
        (2, "longer than 102400 bytes"),
        (204, "more than 200 lines for user \"many\""),
        (205, "not a trait id"),
    ];
    assert_issues(&p, &expected);
    assert_traits(
        &admin,
        &[
            ("p1", Some(&[31])),
            ("p2", None),
            ("p3", Some(&[32])),
            ("many", Some(&[31])),
            ("p5", None),
            ("p6", Some(&[31])),
        ],
    )
    .await;
    let location = format!("/v1/inbound/{}", p["jobId"]);
    let all = issues(&p);
    for from in 0..=4 {
        let page = admin
            .call("GET", &format!("{location}?errorsFrom={from}"), None)
            .await
            .json();
        assert_eq!(issues(&page), all[from.min(3)..], "errorsFrom={from}");
        assert_eq!(counts(&page), counts(&p), "the counters are whole");
    }
    let bad_from = admin
        .call("GET", &format!("{location}?errorsFrom=x"), None)
        .await;
    assert_eq!(bad_from.status, 400);
    assert_eq!(bad_from.json()["error"]["field"], "errorsFrom");

    // The refused uploads left no job: only the import is listed.
    let list = admin.call("GET", "/v1/inbound", None).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["jobId"], p["jobId"]);
    server.stop().await;
}

/// Sends events, one after another, to a few visitors until `location`'s job has ended and
/// at least 300 were sent; each must be answered 200. The job's last progress.
async fn events_during(server: &TestServer, admin: &Admin, location: &str) -> Value {
    let mut events = 0;
    let mut during = 0;
    let progress = loop {
        // A few visitors, so that the events' own saves are a small part of the backlog.
        let visitor = format!("{}{:02}", &VISITOR[..36], events % 10);
        let answer =
            get(&server.url(&format!("/event?d_uuid={visitor}&c_page=cars&d_rtbd=json"))).await;
        assert_eq!(
            answer.status,
            200,
            "event {events}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["uuid"], visitor.as_str());
        events += 1;
        let p = admin.call("GET", location, None).await.json();
        match p["state"].as_str() {
            Some("running") => during += 1,
            _ if events >= 300 => break p,
            _ => {}
        }
    };
    assert!(
        during > 0,
        "no event was answered while the file was imported"
    );
    progress
}

#[actix_web::test]
async fn events_are_answered_while_a_large_file_is_imported() {
    let (server, admin) = start().await;
    let users = 25_000;
    let per_user = 4;
    let mut body = Vec::new();
    for u in 0..users {
        for l in 0..per_user {
            let item = match l {
                0 => "d_sid=31",
                1 => "tier=silver",
                2 => "ic=vip",
                _ => "d_unsid=31",
            };
            writeln!(body, "big{u}\t{item}").unwrap();
        }
    }
    let lines = (users * per_user) as u64;
    let reply = upload(&admin, &format!("ftp_dpm_{CRM}_{}.sync", stamp()), body).await;
    assert_eq!(reply.status, 202);
    let progress = events_during(&server, &admin, &reply.header("location").unwrap()).await;
    assert_eq!(progress["state"], "done", "{progress}");
    assert_eq!(counts(&progress), [lines, lines, 0, 0], "{progress}");
    assert_traits(
        &admin,
        &[
            ("big0", Some(&[32, 33])),
            ("big12345", Some(&[32, 33])),
            (&format!("big{}", users - 1), Some(&[32, 33])),
        ],
    )
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn an_import_waits_for_the_store_rather_than_have_events_shed() {
    // A write backlog bound the import would pass on its own (each user it changes waits
    // `store.write_delay_ms` to be written): events are shed at 200, the import waits above
    // 20. The wait makes the import slow, hence fewer lines than above.
    let (server, admin) = start_with(|c| {
        c.store.max_pending_writes = 200;
        c.store.max_pending_writes_failing = 100;
        c.store.write_delay_ms = 200;
    })
    .await;
    let users = 8_000;
    let body: String = (0..users).map(|u| format!("w{u}\td_sid=31\n")).collect();
    let reply = upload(
        &admin,
        &format!("ftp_dpm_{CRM}_{}.sync", stamp()),
        body.into(),
    )
    .await;
    assert_eq!(reply.status, 202);
    let progress = events_during(&server, &admin, &reply.header("location").unwrap()).await;
    assert_eq!(progress["state"], "done", "{progress}");
    assert_eq!(counts(&progress), [users, users, 0, 0], "{progress}");
    let waits = metric_value(
        &metrics(&server).await,
        "tributary_inbound_waits_total{reason=\"store_backlog\"}",
    );
    assert!(waits.is_some_and(|w| w > 0.0), "{waits:?}");
    assert_traits(&admin, &[("w0", Some(&[31])), ("w7999", Some(&[31]))]).await;
    server.stop().await;
}

/// A spool directory the server cannot write (here: under a regular file) is the server's
/// fault, not the client's: 503 with the store's error code, and no job left behind.
#[actix_web::test]
async fn an_unwritable_spool_is_a_503_not_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let spool = blocker.join("spool");
    let (server, admin) = start_with(move |c| c.admin.inbound_spool_dir = spool).await;
    let name = format!("ftp_dpm_{CRM}_{}.sync", stamp());
    let refused = upload(&admin, &name, b"alice\td_sid=31\n".to_vec()).await;
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("cannot spool the upload"), "{message}");
    let list = admin.call("GET", "/v1/inbound", None).await.json();
    assert_eq!(list, json!([]));
    server.stop().await;
}
