//! The Customer Data API (`POST /stream`, `/event/s2s`, `GET /profile`) and authenticated
//! profiles with merge rules, over real sockets (Adobe's own SDK drives the same endpoints in
//! `customer_data_sdk.rs`).

use serde_json::{json, Value};
use tributary::config::{Config, MergeRule};
use tributary::core::catalog::Catalog;

use crate::common::*;

const CRM: u32 = 9001;
const TEN_SECONDS: std::time::Duration = std::time::Duration::from_secs(10);

fn crm_catalog() -> Catalog {
    catalog(
        vec![],
        json!([
            {"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1},
            {"sid": 31, "name": "gold", "description": "CRM tier gold", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"gold\"", "dataSourceId": CRM},
            {"sid": 32, "name": "silver", "traitType": "ON_BOARDED_TRAIT", "traitRule": "tier == \"silver\"", "dataSourceId": CRM},
            {"sid": 41, "name": "partner", "traitType": "ON_BOARDED_TRAIT", "traitRule": "segment == \"a\"", "dataSourceId": 21}
        ]),
        json!([
            {"sid": 201, "name": "gold members", "segmentRule": "31T", "dataSourceId": CRM},
            {"sid": 202, "name": "gold car lovers", "segmentRule": "31T AND 11T", "dataSourceId": 1},
            {"sid": 203, "name": "keen", "segmentRule": "FREQUENCY([11T]) >= 2", "dataSourceId": 1}
        ]),
    )
}

fn with_crm(rule: MergeRule) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.profiles.cross_device_data_sources = vec![CRM];
        c.profiles.merge_rule = rule;
        c.server.integration_codes.insert("crm".into(), CRM);
    }
}

async fn start(rule: MergeRule) -> (TestServer, Admin) {
    let server = TestServer::start_with(&crm_catalog(), with_crm(rule)).await;
    let admin = Admin::of(&server);
    (server, admin)
}

async fn stream(admin: &Admin, body: Value) -> Reply {
    admin.call("POST", "/stream/crm", Some(body)).await
}

fn op(identity: Value, rest: Value) -> Value {
    let mut op = json!({"identities": [identity]});
    if let (Some(o), Some(r)) = (op.as_object_mut(), rest.as_object()) {
        o.extend(r.clone());
    }
    op
}

fn crm(id: &str) -> Value {
    json!({"dataSourceId": CRM, "value": id})
}

/// The profile viewer's trait ids and segment ids.
async fn viewer(admin: &Admin, dpid: u32, id: &str) -> (Vec<u64>, Vec<u64>, Value) {
    let reply = admin
        .call("GET", &format!("/profile/{dpid}/{id}"), None)
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let ids = |key: &str| -> Vec<u64> {
        body["profile"]["data"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    };
    (ids("traits"), ids("segments"), body.clone())
}

/// [`viewer`] once the profile holds `trait_id` (its writes are the session's, after the
/// answer), within ten seconds.
async fn viewer_holding(
    admin: &Admin,
    dpid: u32,
    id: &str,
    trait_id: u64,
) -> (Vec<u64>, Vec<u64>, Value) {
    let what = format!("{dpid}:{id} to hold trait {trait_id}");
    wait_for(&what, TEN_SECONDS, || async move {
        let v = viewer(admin, dpid, id).await;
        if v.0.contains(&trait_id) {
            Ok(v)
        } else {
            Err(format!("{:?}", v.0))
        }
    })
    .await
}

async fn event(server: &TestServer, query: &str) -> Value {
    let reply = get(&server.url(&format!("/event?{query}&d_rtbd=json&d_cts=2"))).await;
    assert_eq!(reply.status, 200);
    reply.json()
}

fn segments_of(answer: &Value) -> Vec<u64> {
    answer["segments"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn one_bad_op_never_loses_the_good_ones() {
    let (server, admin) = start(MergeRule::LastAuthenticatedAndDevice).await;
    let reply = stream(
        &admin,
        json!({"tracing_id": "t-1", "ops": [
            op(crm("alice"), json!({"traitInput": {"traitIds": [31]}})),
            op(crm("bob"), json!({"traitInput": {"traitIds": [999]}})),
            op(crm("carol"), json!({"traitEvaluation": {"data": [{"key": "tier", "value": "silver"}]}, "targetDataSource": [CRM]})),
            op(crm("dave"), json!({"traitInput": {"traitIds": [41]}})),
            op(json!({"namespaceCode": "email", "value": "x"}), json!({"traitInput": {"traitIds": [31]}}))
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], "PARTIAL_SUCCESS");
    assert_eq!(body["tracingId"], "t-1");
    assert!(body["transactionId"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let errors = body["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["operationIndex"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [2, 4, 5], "{body}");
    let message = |i: usize| {
        errors[i]["details"][0]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        message(0).contains("trait 999 does not exist"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("belongs to data source 21"),
        "{}",
        message(1)
    );
    assert!(message(2).contains("namespaceCode"), "{}", message(2));
    assert_eq!(errors[2]["details"][0]["errorCode"], 300);

    let (traits, segments, body) = viewer(&admin, CRM, "alice").await;
    assert_eq!((traits, segments), (vec![31], vec![201]));
    let profile = &body["profile"];
    assert_eq!(profile["id"], "alice");
    assert_eq!(profile["namespace"]["id"], "9001");
    assert_eq!(profile["namespace"]["integration code"], "crm");
    assert_eq!(profile["namespace"]["type"], "CROSS_DEVICE");
    let gold = &profile["data"]["traits"][0];
    assert_eq!(gold["name"], "gold");
    assert_eq!(gold["description"], "CRM tier gold");
    assert_eq!(gold["type"], "1st party");
    assert_eq!(gold["last realization"].as_str().unwrap().len(), 19);
    assert_eq!(body["summaries"][0]["regionId"], "7");
    assert_eq!(
        body["summaries"][0]["profileSummary"]["firstPartyTraitsCount"],
        1
    );
    assert_eq!(body["summaries"][0]["profileSummary"]["segmentsCount"], 1);
    assert_eq!(viewer(&admin, CRM, "carol").await.0, [32]);
    let unknown = admin.call("GET", "/profile/9001/bob", None).await;
    assert_eq!(unknown.status, 404, "a refused op creates nothing");
    let elsewhere = admin
        .call("GET", "/profile/9001/alice?filter[regionId]=3,9", None)
        .await
        .json();
    assert_eq!(elsewhere["summaries"], json!([]));
    server.stop().await;
}

#[actix_web::test]
async fn whole_requests_are_refused_in_the_api_s_own_shape() {
    let (server, admin) = start(MergeRule::LastAuthenticatedAndDevice).await;
    let all_bad = stream(
        &admin,
        json!({"ops": [op(crm("a"), json!({"traitInput": {"traitIds": [999]}}))]}),
    )
    .await;
    assert_eq!(all_bad.status, 400);
    assert_eq!(all_bad.json()["status"], "BAD_REQUEST");
    let not_json = admin
        .raw(
            "POST",
            "/stream/crm",
            Some(b"{\"ops\": [".to_vec()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["errors"][0]["details"][0]["offset"].is_u64(),
        "{}",
        not_json.json()
    );
    let data: Vec<Value> = (0..600)
        .map(|_| json!({"key": "k", "value": "v".repeat(200)}))
        .collect();
    let huge = json!({"ops": [op(crm("a"), json!({"traitEvaluation": {"data": data}}))]});
    let too_large = stream(&admin, huge).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["status"], "BAD_REQUEST");
    let no_token = admin
        .raw("POST", "/stream/crm", Some(b"{}".to_vec()), None)
        .await;
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.json()["status"], "UNAUTHORIZED");
    let bad_stream = admin.call("POST", "/stream/a%20b", Some(json!({}))).await;
    assert_eq!(bad_stream.status, 400);
    assert_eq!(
        bad_stream.json()["errors"][0]["details"][0]["field"],
        "streamId"
    );
    let profile_no_token = admin.raw("GET", "/profile/9001/a", None, None).await;
    assert_eq!(profile_no_token.status, 401);
    // Never on the public listener.
    let public = post(
        &server.url("/stream/crm"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(public.status, 404);
    server.stop().await;
}

#[actix_web::test]
async fn a_streamed_trait_is_live_on_the_next_event_of_a_browser_declaring_the_id() {
    let (server, admin) = start(MergeRule::LastAuthenticatedAndDevice).await;
    let reply = stream(
        &admin,
        json!({"ops": [op(crm("alice"), json!({"traitInput": {"traitIds": [31]}}))]}),
    )
    .await;
    assert_eq!(reply.json()["status"], "SUCCESS");
    // Logged in (state 1): gold (the CRM's) and cars (this event) together.
    let first = event(&server, "d_cid_ic=crm%01alice%011&c_page=cars").await;
    assert_eq!(segments_of(&first), [201, 202], "{first}");
    let device = first["uuid"].as_str().unwrap().to_string();
    // Authenticated: the realization went to alice's profile, and the device is linked.
    let (traits, _, body) = viewer_holding(&admin, CRM, "alice", 11).await;
    assert_eq!(traits, [11, 31]);
    assert_eq!(body["profile"]["links"][0]["id"], device.as_str());
    assert_eq!(body["profile"]["links"][0]["namespace"]["id"], "0");
    let device_view = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await
        .json();
    assert_eq!(
        device_view["traits"],
        json!([]),
        "nothing written to the device while authenticated"
    );
    assert_eq!(device_view["links"][0]["id"], "alice");
    assert_eq!(
        device_view["authenticatedProfiles"][0]["segments"],
        json!([201, 202])
    );

    // Logged out on the same device: last authenticated profile + device; written to the device.
    let second = event(
        &server,
        &format!("d_uuid={device}&d_cid_ic=crm%01alice%012&c_page=cars"),
    )
    .await;
    assert_eq!(
        segments_of(&second),
        [201, 202, 203],
        "frequencies add up across the two: {second}"
    );
    let device_view = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await
        .json();
    assert_eq!(device_view["traits"][0]["sid"], 11);
    // No id declared at all: still the last authenticated profile.
    let third = event(&server, &format!("d_uuid={device}&c_page=news")).await;
    assert_eq!(segments_of(&third), [201, 202, 203]);

    // The admin view of the authenticated profile by its customer id.
    let alice = admin
        .call("GET", "/v1/profiles/9001:alice", None)
        .await
        .json();
    assert_eq!(
        alice["authenticated"],
        json!({"dataSourceId": CRM, "id": "alice"})
    );
    // Erasing the device reaches the link; erasing alice too.
    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/profiles/{device}"), None)
            .await
            .status,
        204
    );
    let (_, _, body) = viewer(&admin, CRM, "alice").await;
    assert_eq!(body["profile"]["links"], json!([]));
    assert_eq!(
        admin
            .call("DELETE", "/v1/profiles/9001:alice", None)
            .await
            .status,
        204
    );
    assert_eq!(
        admin.call("GET", "/profile/9001/alice", None).await.status,
        404
    );
    server.stop().await;
}

/// A provider's answer that comes after the event was answered is merged as the event was:
/// what it realizes for a signed-in visitor goes to the person's profile, so another device
/// of the same person has it at once.
#[actix_web::test]
async fn late_answers_go_where_the_merge_rule_sends_the_event_s_realizations() {
    let (_slow, cat) = late_provider("late-merged").await;
    let server =
        TestServer::start_with(&cat, with_crm(MergeRule::LastAuthenticatedAndDevice)).await;
    let admin = Admin::of(&server);
    let first = event(&server, "d_cid_ic=crm%01bob%011&c_page=x").await;
    assert_eq!(first["providers"]["late-merged"], "timeout", "{first}");
    let device = first["uuid"].as_str().unwrap().to_string();
    wait_for_metric(
        &server,
        r#"tributary_provider_late_answers_handled_total{provider="late-merged",result="merged"}"#,
        1.0,
        TEN_SECONDS,
    )
    .await;
    // Authenticated: the late realization is bob's, not the device's.
    let (traits, _, _) = viewer_holding(&admin, CRM, "bob", 21).await;
    assert_eq!(traits, [21]);
    let device_view = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await
        .json();
    assert_eq!(device_view["traits"], json!([]), "{device_view}");

    // A second device of bob's (its own AAM id), signed in: segment 101 at once, from bob's
    // profile, although the provider times out for it too.
    let other = event(
        &server,
        &format!("d_uuid={VISITOR}&d_cid_ic=crm%01bob%011&c_page=x"),
    )
    .await;
    assert_eq!(other["uuid"], VISITOR);
    assert_eq!(other["providers"]["late-merged"], "timeout", "{other}");
    assert_eq!(segments_of(&other), [101], "{other}");
    server.stop().await;
}

#[actix_web::test]
async fn merge_rules_decide_what_an_event_sees() {
    // Current authenticated profiles: the CRM's profile alone, only while authenticated.
    let (server, admin) = start(MergeRule::CurrentAuthenticated).await;
    stream(
        &admin,
        json!({"ops": [op(crm("bob"), json!({"traitInput": {"traitIds": [31]}}))]}),
    )
    .await;
    let device = event(&server, "c_page=cars").await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let logged_in = event(
        &server,
        &format!("d_uuid={device}&d_cid_ic=crm%01bob%011&c_page=cars"),
    )
    .await;
    assert_eq!(
        segments_of(&logged_in),
        [201, 202],
        "the device's earlier view does not count"
    );
    let unknown = event(
        &server,
        &format!("d_uuid={device}&d_cid_ic=crm%01bob%010&c_page=cars"),
    )
    .await;
    assert_eq!(
        segments_of(&unknown),
        Vec::<u64>::new(),
        "no profile at all when not authenticated"
    );
    server.stop().await;

    // Device only: the CRM's data never reaches the browser.
    let (server, admin) = start(MergeRule::DeviceOnly).await;
    stream(
        &admin,
        json!({"ops": [op(crm("bob"), json!({"traitInput": {"traitIds": [31]}}))]}),
    )
    .await;
    let answer = event(&server, "d_cid_ic=crm%01bob%011&c_page=cars").await;
    assert_eq!(segments_of(&answer), Vec::<u64>::new());
    server.stop().await;
}

#[actix_web::test]
async fn overwrite_delete_and_s2s_updates() {
    let (server, admin) = start(MergeRule::LastAuthenticatedAndDevice).await;
    stream(
        &admin,
        json!({"ops": [op(crm("erin"), json!({"traitInput": {"traitIds": [31]}}))]}),
    )
    .await;
    let overwrite = stream(&admin, json!({"ops": [op(crm("erin"), json!({"operationType": "OVERWRITE", "targetDataSource": [CRM], "traitInput": {"traitIds": [32]}}))]})).await;
    assert_eq!(overwrite.json()["status"], "SUCCESS");
    assert_eq!(viewer(&admin, CRM, "erin").await.0, [32]);
    let no_target = stream(&admin, json!({"ops": [op(crm("erin"), json!({"operationType": "OVERWRITE", "traitInput": {"traitIds": [32]}}))]})).await;
    assert_eq!(no_target.status, 400);

    // /event/s2s: a query (the literal %01 of Adobe's documentation works too), then a form.
    let s2s = admin
        .call("GET", "/event/s2s/crm?d_cid=9001%2501erin&d_sid=31", None)
        .await;
    assert_eq!(s2s.json()["status"], "SUCCESS", "{}", s2s.json());
    assert_eq!(viewer(&admin, CRM, "erin").await.0, [31, 32]);
    let form = admin
        .raw(
            "POST",
            "/event/s2s/crm",
            Some(b"d_cid=9001%01erin&d_sid=31,32&d_ws=delete".to_vec()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(form.json()["status"], "SUCCESS", "{}", form.json());
    assert_eq!(viewer(&admin, CRM, "erin").await.0, Vec::<u64>::new());
    let bad = admin
        .call("GET", "/event/s2s/crm?d_uuid=12&d_sid=31", None)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["errors"][0]["operationIndex"], 1);
    assert_eq!(bad.json()["errors"][0]["details"][0]["errorCode"], 102);

    // A device by its AAM id, and a partner id nobody synced: a new device, synced to it.
    let device = event(&server, "c_page=news").await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let by_uuid = stream(&admin, json!({"ops": [op(json!({"dataSourceId": 0, "value": device}), json!({"traitInput": {"traitIds": [41]}}))]})).await;
    assert_eq!(by_uuid.json()["status"], "SUCCESS");
    let view = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await
        .json();
    assert_eq!(view["traits"][0]["sid"], 41);
    let partner = stream(&admin, json!({"ops": [op(json!({"dataSourceId": 21, "value": "p-1"}), json!({"traitInput": {"traitIds": [41]}}))]})).await;
    assert_eq!(partner.json()["status"], "SUCCESS");
    assert_eq!(viewer(&admin, 21, "p-1").await.0, [41]);
    server.stop().await;
}

#[actix_web::test]
async fn org_ids_are_checked_where_one_is_configured() {
    let server = TestServer::start_with(&crm_catalog(), |c| {
        with_crm(MergeRule::LastAuthenticatedAndDevice)(c);
        c.admin.org_id = "ACME@AdobeOrg".into();
    })
    .await;
    let admin = Admin::of(&server);
    let body =
        json!({"ops": [op(crm("a"), json!({"traitInput": {"traitIds": [31]}}))]}).to_string();
    let send = |org: Option<&'static str>| {
        let mut req = client()
            .post(format!("{}/stream/crm", admin.base))
            .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
            .insert_header(("content-type", "application/json"));
        if let Some(org) = org {
            req = req.insert_header(("x-gw-ims-org-id", org));
        }
        let body = body.clone();
        async move { read(req.send_body(body).await.unwrap()).await }
    };
    assert_eq!(send(Some("ACME@AdobeOrg")).await.status, 200);
    let wrong = send(Some("OTHER@AdobeOrg")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["status"], "UNAUTHORIZED");
    assert_eq!(send(None).await.status, 401);
    server.stop().await;
}

/// In a real browser that blocks third-party cookies, the site tag declares the customer id a
/// page signed in with: the CRM's data, streamed and imported from a file, is in the answer of
/// the next page view, on a first device and on a second one that has never seen the CRM.
#[actix_rt::test]
async fn the_site_tag_in_a_browser_gets_the_customer_s_own_data() {
    use crate::common::browser::{Browser, Options, TestSite};
    let Some(browser) = Browser::start(Options::blocking_third_party_cookies()).await else {
        return;
    };
    let site = TestSite::start().await;
    let (server, admin) = start(MergeRule::LastAuthenticatedAndDevice).await;
    let signed_in = |id: &str| {
        json!({"signals": {"c_page": "cars"},
               "declaredIds": [{"code": "crm", "id": id, "authState": 1}]})
    };

    let reply = stream(
        &admin,
        json!({"ops": [op(crm("alice"), json!({"traitInput": {"traitIds": [31]}}))]}),
    )
    .await;
    assert_eq!(reply.json()["status"], "SUCCESS");
    let first =
        crate::site_tag::page_with_tag(&browser, &site, &server.base, signed_in("alice")).await;
    assert_eq!(segments_of(&first), [201, 202], "{first}");

    // Bob's gold comes from an inbound file instead.
    // Dated now: the realizations of a file are dated its time stamp, and a years-old one would
    // be past the traits' lifetime.
    let file = format!("ftp_dpm_9001_{}.sync", tributary::core::clock::unix_now());
    let upload = admin
        .raw(
            "POST",
            &format!("/v1/inbound?file={file}"),
            Some(b"bob\ttier=gold\n".to_vec()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(
        upload.status,
        202,
        "{}",
        String::from_utf8_lossy(&upload.body)
    );
    let job = upload.json()["jobId"].as_u64().unwrap();
    wait_for(
        "the import to finish",
        std::time::Duration::from_secs(10),
        || {
            let admin = &admin;
            async move {
                let p = admin
                    .call("GET", &format!("/v1/inbound/{job}"), None)
                    .await
                    .json();
                if p["state"] == "done" {
                    Ok(p)
                } else {
                    Err(p.to_string())
                }
            }
        },
    )
    .await;
    // A second device, in a fresh browser profile: bob signs in there.
    let other = Browser::start(Options::blocking_third_party_cookies())
        .await
        .expect("a second browser where the first started");
    let bob = crate::site_tag::page_with_tag(&other, &site, &server.base, signed_in("bob")).await;
    assert_eq!(segments_of(&bob), [201, 202], "{bob}");
    assert_ne!(bob["uuid"], first["uuid"], "another device");

    // The first device, signed out and without a declared id: still alice's device.
    let anonymous = json!({"signals": {"c_page": "cars"}});
    let later = crate::site_tag::page_with_tag(&browser, &site, &server.base, anonymous).await;
    assert_eq!(later["uuid"], first["uuid"]);
    assert_eq!(segments_of(&later), [201, 202, 203], "{later}");
    other.close().await;
    browser.close().await;
    site.stop().await;
    server.stop().await;
}
