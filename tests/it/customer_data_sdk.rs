//! Adobe's Node SDK for the Customer Data API (`@adobe/aio-lib-audience-manager-cd` 2.1.0,
//! pinned in `tests/sdk/package.json`), unmodified but for its server URL, against the admin
//! listener over real HTTP: streamed ops applied or refused one by one, DCS-style updates by
//! GET and POST, the profile viewer, and the errors the SDK reports. The SDK runs in Node
//! through `tests/sdk/drive.js`; what it sees is checked against the server's own state, and a
//! trait streamed for a CRM id is live on the next event of a browser declaring that id.
//!
//! Skipped with one line where `node` is not installed (`TRIBUTARY_TEST_NODE` names another
//! one). Where `tests/sdk/node_modules` is missing, `npm ci` installs it once (`.ci/run` does
//! so beforehand); a failed install fails the test with npm's output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tributary::core::ids::VisitorId;

use crate::common::browser::skip_once;
use crate::common::*;

const ORG: &str = "TEST@AdobeOrg";
const STREAM: &str = "crm";
const CRM: u32 = 9001;
/// The server's `dcs_region`, the viewer's one region (not the default 7).
const REGION: u32 = 9;
/// The customer id every update is about.
const CUSTOMER: &str = "crm-alice-0001";
const GOLD: u64 = 31;
const SILVER: u64 = 32;
const CARS: u64 = 11;
/// `31T`.
const GOLD_MEMBERS: u64 = 201;
/// `31T AND 11T`: gold (streamed for the customer) and a car page (seen on the device).
const GOLD_CAR_PEOPLE: u64 = 202;
/// One run of `drive.js`: the SDK's calls are milliseconds, Node's start about a second.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// The `node` to run `drive.js` with, the SDK installed beside it; `None` (said once) where
/// Node is not installed. Panics with npm's output when the SDK cannot be installed.
fn node_with_sdk() -> Option<String> {
    static SKIPPED: Once = Once::new();
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let node = std::env::var("TRIBUTARY_TEST_NODE").unwrap_or_else(|_| "node".into());
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            skip_once(
                &SKIPPED,
                &format!("Customer Data SDK test skipped: {node} not found (install Node.js 18 or later)"),
            );
            return None;
        }
    }
    // Once per test binary, so that parallel tests never run two installs into one folder.
    let installed = INSTALLED.get_or_init(|| {
        let sdk = sdk_dir().join("node_modules/@adobe/aio-lib-audience-manager-cd/package.json");
        if sdk.is_file() {
            return Ok(());
        }
        let out = Command::new("npm")
            .args([
                "ci",
                "--prefix",
                "tests/sdk",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| {
                format!("npm not run ({e}): install npm, or run `npm ci --prefix tests/sdk`")
            })?;
        if out.status.success() && sdk.is_file() {
            Ok(())
        } else {
            Err(format!(
                "npm ci --prefix tests/sdk failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(why) = installed {
        panic!("{why}");
    }
    Some(node)
}

/// Adobe's SDK pointed at a server's admin listener.
struct Sdk {
    node: String,
    base: String,
}

impl Sdk {
    /// Runs `steps` through `drive.js` (one Node process, in order) and returns its one line
    /// per step. The child is waited for off the runtime, which serves the server too.
    async fn run(&self, steps: &[Value]) -> Vec<Value> {
        let input = json!({"base": self.base, "token": ADMIN_TOKEN, "org": ORG, "steps": steps});
        let mut child = Command::new(&self.node)
            .arg("drive.js")
            .current_dir(sdk_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        let waited = actix_rt::task::spawn_blocking(move || {
            std::io::Write::write_all(&mut stdin, input.to_string().as_bytes()).unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        });
        let out = match actix_rt::time::timeout(NODE_TIMEOUT, waited).await {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("drive.js did not finish within {NODE_TIMEOUT:?}");
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
            .collect();
        assert!(
            out.status.success() && lines.len() == steps.len(),
            "drive.js ({}) answered {} of {} steps:\n{stdout}\n{stderr}",
            out.status,
            lines.len(),
            steps.len()
        );
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["step"], i, "{line}");
        }
        lines
    }
}

/// The body of a step the SDK resolved with `status`.
fn answered(line: &Value, status: u16) -> &Value {
    assert_eq!(
        (&line["ok"], &line["status"]),
        (&json!(true), &json!(status)),
        "{line}"
    );
    &line["body"]
}

/// The answer's body of a step the SDK rejected because of an HTTP `status`: its message is
/// `[AudienceManagerSDK:<code>] <status> - <reason> (<body as JSON>)`.
fn rejected(line: &Value, status: u16) -> Value {
    assert_eq!(line["ok"], false, "{line}");
    let message = line["error"].as_str().unwrap();
    let at = message
        .find(&format!("] {status} - "))
        .unwrap_or_else(|| panic!("not a {status}: {message}"));
    let body = &message[at..];
    let json = body
        .find('(')
        .and_then(|open| body.strip_suffix(')').map(|b| &b[open + 1..]))
        .unwrap_or_else(|| panic!("no body in {message}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {message}"))
}

/// An `UpdateUsersDataResponse` of `status` with errors for exactly `failed_ops` (1-based).
fn assert_update(body: &Value, status: &str, failed_ops: &[u64]) {
    assert_eq!(body["status"], status, "{body}");
    assert!(
        !body["transactionId"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    let indexes: Vec<u64> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"))
        .iter()
        .map(|e| {
            assert!(
                !e["details"][0]["message"].as_str().unwrap_or("").is_empty(),
                "{e}"
            );
            e["operationIndex"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(indexes, failed_ops, "{body}");
}

fn ids(list: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// The trait and segment ids of a profile viewer's answer.
fn viewed(viewer: &Value) -> (Vec<u64>, Vec<u64>) {
    (
        ids(&viewer["profile"]["data"]["traits"]),
        ids(&viewer["profile"]["data"]["segments"]),
    )
}

/// The customer's authenticated profile as the server stored it: trait and segment ids.
async fn stored(server: &TestServer) -> (Vec<u64>, Vec<u64>) {
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(VisitorId::authenticated(CRM, CUSTOMER));
    (profile.traits.keys().copied().collect(), profile.segments)
}

/// `2019-09-05 09:41:00`, UTC: the profile viewer's times, which sort as text.
fn viewer_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(format)
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sdk_catalog() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([
            {"sid": CARS, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1},
            {"sid": GOLD, "name": "gold", "description": "gold tier", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"gold\"", "dataSourceId": CRM},
            {"sid": SILVER, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"silver\"", "dataSourceId": CRM}
        ]),
        json!([
            {"sid": GOLD_MEMBERS, "name": "gold members", "segmentRule": "31T", "dataSourceId": 1},
            {"sid": GOLD_CAR_PEOPLE, "name": "gold car people", "segmentRule": "31T AND 11T", "dataSourceId": 1}
        ]),
    )
}

fn customer(op: Value) -> Value {
    let mut op = op;
    op["identities"] = json!([{"dataSourceId": CRM, "value": CUSTOMER}]);
    op
}

fn stream(body: Value) -> Value {
    json!({"call": "updateStream", "streamId": STREAM, "body": body})
}

fn view_customer() -> Value {
    json!({"call": "getProfile", "dataSourceId": CRM.to_string(), "id": CUSTOMER})
}

/// `updateProfile` by GET: the SDK needs `d_orgid` (it sets `d_orgId`) and `streamId` (else
/// the path's `{streamId}` stays unfilled) from its caller.
fn s2s_get(params: Value) -> Value {
    let mut params = params;
    params["d_orgid"] = ORG.into();
    params["streamId"] = STREAM.into();
    params["d_cid"] = format!("{CRM}%01{CUSTOMER}").into();
    json!({"call": "updateProfile", "streamId": STREAM, "params": params})
}

/// `updateProfile` by POST: the body goes out form-encoded, arrays comma-joined.
fn s2s_post(body: Value) -> Value {
    let mut body = body;
    body["d_orgid"] = ORG.into();
    body["d_cid"] = format!("{CRM}%01{CUSTOMER}").into();
    json!({"call": "updateProfile", "streamId": STREAM, "params": {"streamId": STREAM}, "body": body})
}

#[actix_rt::test]
async fn adobes_customer_data_sdk_unmodified_streams_updates_and_views_profiles() {
    let Some(node) = node_with_sdk() else {
        return;
    };
    let server = TestServer::start_with(&sdk_catalog(), |c| {
        c.profiles.cross_device_data_sources = vec![CRM];
        c.server.integration_codes.insert("crm".into(), CRM);
        c.admin.org_id = ORG.into();
        c.server.dcs_region = REGION;
    })
    .await;
    let admin = Admin::of(&server);
    let sdk = Sdk {
        node,
        base: admin.base.clone(),
    };

    // Three ops, the second naming a trait nobody has: the others are applied.
    let before = viewer_time(now());
    let first = sdk
        .run(&[
            stream(json!({"tracing_id": "trace-1", "ops": [
                customer(json!({"traitInput": {"traitIds": [GOLD]}, "operationType": "APPEND"})),
                customer(json!({"traitInput": {"traitIds": [999_999]}})),
                {"identities": [{"integrationCode": "crm", "value": CUSTOMER}],
                 "traitEvaluation": {"data": [{"key": "tier", "value": "silver"}]},
                 "targetDataSource": [CRM]}
            ]})),
            view_customer(),
        ])
        .await;
    let after = viewer_time(now());
    let streamed = answered(&first[0], 200);
    assert_update(streamed, "PARTIAL_SUCCESS", &[2]);
    assert_eq!(streamed["tracingId"], "trace-1");
    let viewer = answered(&first[1], 200);
    assert_eq!(viewed(viewer), (vec![GOLD, SILVER], vec![GOLD_MEMBERS]));
    let profile = &viewer["profile"];
    assert_eq!(profile["id"], CUSTOMER);
    assert_eq!(
        profile["namespace"],
        json!({"id": "9001", "integration code": "crm", "data provider name": "crm", "type": "CROSS_DEVICE"})
    );
    let gold = profile["data"]["traits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == GOLD)
        .unwrap();
    assert_eq!(gold["name"], "gold", "{gold}");
    assert_eq!(gold["description"], "gold tier", "{gold}");
    assert_eq!(gold["type"], "1st party", "{gold}");
    let realized = gold["last realization"].as_str().unwrap();
    assert!(
        before.as_str() <= realized && realized <= after.as_str(),
        "{before} <= {realized} <= {after}"
    );
    assert_eq!(profile["data"]["segments"][0]["name"], "gold members");
    assert_eq!(profile["data"]["segments"][0]["active"], true);
    assert_eq!(
        viewer["summaries"],
        json!([{"regionId": REGION.to_string(), "source": "REALTIME",
                "profileSummary": {"firstPartyTraitsCount": 2, "thirdPartyTraitsCount": 0, "segmentsCount": 1}}])
    );
    assert_eq!(profile["links"], json!([]));
    assert_eq!(
        stored(&server).await,
        (vec![GOLD, SILVER], vec![GOLD_MEMBERS])
    );

    // A browser declaring the customer id, logged in (state 1): its car page and the streamed
    // gold make 202. (`d_cts=2`: the answer lists segments only when asked to.)
    let event = get(&server.url(&format!(
        "/event?d_cid_ic=crm%01{CUSTOMER}%011&c_page=cars&d_rtbd=json&d_cts=2"
    )))
    .await;
    assert_eq!(event.status, 200);
    let event = event.json();
    assert_eq!(
        event["segments"],
        json!([GOLD_MEMBERS, GOLD_CAR_PEOPLE]),
        "a trait streamed for a CRM id is live on the browser's next event: {event}"
    );
    let device = event["uuid"].as_str().unwrap().to_string();
    // Logged in, the realization goes to the customer's profile, and the device is linked to
    // it both ways; the profile learns of both through its own session, after the answer.
    wait_for(
        "the customer's profile to hold the car page and the device's link",
        Duration::from_secs(5),
        || async {
            let reply = admin
                .call("GET", &format!("/profile/{CRM}/{CUSTOMER}"), None)
                .await;
            let body = reply.json();
            let linked = body["profile"]["links"][0]["id"] == device.as_str();
            match viewed(&body).0.contains(&CARS) && linked {
                true => Ok(()),
                false => Err(body.to_string()),
            }
        },
    )
    .await;
    let shown = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.json()["traits"],
        json!([]),
        "nothing is written to the device while authenticated"
    );
    server.running.sync_store().await.unwrap();
    let links: Vec<(u32, String)> = server
        .stored_profile(VisitorId::parse(&device).unwrap())
        .links
        .into_iter()
        .map(|l| (l.dpid, l.id))
        .collect();
    assert_eq!(links, [(CRM, CUSTOMER.to_string())]);

    let s2s_ok = |line: &Value| assert_update(answered(line, 200), "SUCCESS", &[]);
    let lines = sdk
        .run(&[
            // 0: the device is linked to the customer.
            view_customer(),
            // 1, 2: OVERWRITE of the data source replaces its gold and silver with silver
            // (the car page, of data source 1, stays).
            stream(json!({"ops": [customer(json!({
                "traitInput": {"traitIds": [SILVER]}, "targetDataSource": [CRM], "operationType": "OVERWRITE"
            }))]})),
            view_customer(),
            // 3, 4: the DCS-style GET adds gold.
            s2s_get(json!({"d_sid": [GOLD]})),
            view_customer(),
            // 5, 6: and deletes silver.
            s2s_get(json!({"d_sid": [SILVER], "d_ws": "delete"})),
            view_customer(),
            // 7, 8: the POST adds both (sent as `d_sid=32,31`).
            s2s_post(json!({"d_sid": [SILVER, GOLD]})),
            view_customer(),
            // 9, 10: a delete naming no trait removes every trait of the data source.
            s2s_post(json!({"d_ws": "delete"})),
            view_customer(),
            // 11: every op refused is a 400.
            stream(json!({"ops": [customer(json!({"traitInput": {"traitIds": [CARS]}}))]})),
            // 12, 13: a wrong org id, in the header and in `d_orgid`.
            json!({"call": "updateStream", "streamId": STREAM, "org": "OTHER@AdobeOrg",
                   "body": {"ops": [customer(json!({"traitInput": {"traitIds": [GOLD]}}))]}}),
            {
                let mut step = s2s_get(json!({"d_sid": [GOLD]}));
                step["params"]["d_orgid"] = "OTHER@AdobeOrg".into();
                step
            },
            // 14, 15: the wrong token.
            json!({"call": "updateStream", "streamId": STREAM, "token": "wrong",
                   "body": {"ops": [customer(json!({"traitInput": {"traitIds": [GOLD]}}))]}}),
            json!({"call": "getProfile", "dataSourceId": "9001", "id": CUSTOMER, "token": "wrong"}),
            // 16: nobody has this id.
            json!({"call": "getProfile", "dataSourceId": "9001", "id": "crm-nobody"}),
            // 17: over 100 KB, for ids nobody had.
            stream(json!({"ops": (0..400).map(|i| json!({
                "identities": [{"dataSourceId": CRM, "value": format!("{i:0>250}")}],
                "traitInput": {"traitIds": [GOLD]}
            })).collect::<Vec<_>>()})),
        ])
        .await;

    let links = &answered(&lines[0], 200)["profile"]["links"];
    assert_eq!(links.as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links[0]["id"], device.as_str(), "{links}");
    assert_eq!(links[0]["namespace"]["id"], "0", "{links}");
    assert!(
        links[0]["linking datetime"].as_str().unwrap_or("").len() == 19,
        "{links}"
    );
    let both = vec![GOLD_MEMBERS, GOLD_CAR_PEOPLE];
    for (update, view, traits, segments) in [
        (1, 2, vec![CARS, SILVER], vec![]),
        (3, 4, vec![CARS, GOLD, SILVER], both.clone()),
        (5, 6, vec![CARS, GOLD], both.clone()),
        (7, 8, vec![CARS, GOLD, SILVER], both.clone()),
        (9, 10, vec![CARS], vec![]),
    ] {
        s2s_ok(&lines[update]);
        assert_eq!(
            viewed(answered(&lines[view], 200)),
            (traits, segments),
            "after step {update}: {}",
            lines[update]
        );
    }
    assert_eq!(stored(&server).await, (vec![CARS], vec![]));

    assert_update(&rejected(&lines[11], 400), "BAD_REQUEST", &[1]);
    for (line, field) in [
        (12, "x-gw-ims-org-id"),
        (13, "d_orgid"),
        (14, "Authorization"),
    ] {
        let refused = rejected(&lines[line], 401);
        assert_update(&refused, "UNAUTHORIZED", &[0]);
        assert_eq!(
            refused["errors"][0]["details"][0]["field"], field,
            "{refused}"
        );
    }
    assert_eq!(rejected(&lines[15], 401)["error"]["code"], "unauthorized");
    let missing = rejected(&lines[16], 404);
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
    assert_update(&rejected(&lines[17], 413), "BAD_REQUEST", &[0]);
    // None of the refused requests changed anything.
    assert_eq!(stored(&server).await, (vec![CARS], vec![]));
    server.running.sync_store().await.unwrap();
    let unseen = VisitorId::authenticated(CRM, &format!("{:0>250}", 0));
    assert!(server
        .running
        .store()
        .load_profile(unseen)
        .unwrap()
        .is_none());
    server.stop().await;
}
