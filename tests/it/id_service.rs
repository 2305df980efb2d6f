//! The ID service over real HTTP, as Adobe's VisitorAPI calls it (`docs/dcs-api.md`, `/id`):
//! `/id` gives a device its ECID and links it to the visitor, so later calls that carry only
//! the ECID (`d_mid`, no third-party cookie) reach the same profile; opt-out, erasure and
//! retention as they apply to that link; consent, COPPA and bad input, always answered `200`
//! with a JSON object.

use serde_json::{json, Value};
use tributary::core::ids::{Ecid, VisitorId, ECID_DATA_SOURCE};
use tributary::core::profile::SECS_PER_DAY;

use crate::common::*;

const ORIGIN: &str = "https://www.site.example";

/// What VisitorAPI 5.5 sends for the `MC` field group of a device without an ECID.
const ID_QUERY: &str =
    "/id?d_visid_ver=5.5.0&d_fieldgroup=MC&d_rtbd=json&d_ver=2&d_orgid=ABC%40AdobeOrg&d_nsid=0";

fn cars() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "twice", "segmentRule": "FREQUENCY([11T]) >= 2", "dataSourceId": 1}]),
    )
}

async fn start() -> TestServer {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut tributary::config::Config)) -> TestServer {
    TestServer::start_with(&cars(), |c| {
        c.id_service.syncs = serde_json::from_value(json!([
            {"id": 411, "url": "https://sync.partner.example/s?u=${DD_UUID}", "ttl_minutes": 10080}
        ]))
        .unwrap();
        tweak(c);
    })
    .await
}

/// `GET` from a page of `ORIGIN`, with no cookie: the browser blocks third-party cookies.
async fn from_page(server: &TestServer, path: &str) -> Reply {
    get_with(&server.url(path), &[("origin", ORIGIN)]).await
}

fn ecid_of(answer: &Value) -> String {
    answer["d_mid"]
        .as_str()
        .unwrap_or_else(|| panic!("d_mid is a string: {answer}"))
        .to_string()
}

/// A new device gets a server-minted ECID with every field VisitorAPI reads, in the types it
/// needs, exact-origin CORS with credentials, and the visitor cookie; the ECID alone then
/// brings every later call to the same visitor and profile.
#[actix_web::test]
async fn a_device_keeps_its_profile_through_its_ecid_without_third_party_cookies() {
    let server = start().await;
    let answer = from_page(&server, &format!("{ID_QUERY}&ts=1700000000000")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        answer.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let body = answer.json();
    let ecid = ecid_of(&body);
    assert_eq!(ecid.len(), 38, "{body}");
    assert!(ecid.bytes().all(|b| b.is_ascii_digit()), "{body}");
    assert!(body["dcs_region"].is_u64(), "{body}");
    assert!(!body["d_blob"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(body["id_sync_ttl"], 604_800);
    assert_eq!(body["subdomain"], "tributary");
    assert_eq!(body["d_ottl"], 7200);
    assert!(body.get("d_optout").is_none(), "{body}");
    let visitor = answer.visitor_cookie().expect("the visitor cookie is set");
    assert_eq!(
        body["ibs"],
        json!([{"id": "411", "tag": "img",
                "url": [format!("https://sync.partner.example/s?u={visitor}")],
                "ttl": 10080, "fireURLSync": 1, "syncOnPage": 0}])
    );
    assert_eq!(
        Ecid::for_visitor(VisitorId::parse(&visitor).unwrap()).as_str(),
        ecid
    );

    // DIL's events carry the ECID and no cookie: the same visitor, whose traits accumulate.
    let event = |ecid: &str| format!("/event?d_rtbd=json&d_cts=2&c_page=cars&d_mid={ecid}");
    let first = from_page(&server, &event(&ecid)).await.json();
    assert_eq!(first["uuid"], visitor.as_str(), "{first}");
    assert_eq!(first["segments"], json!([]), "{first}");
    let second = from_page(&server, &event(&ecid)).await.json();
    assert_eq!(second["uuid"], visitor.as_str(), "{second}");
    assert_eq!(
        second["segments"],
        json!([101]),
        "the second visit counts: {second}"
    );

    // VisitorAPI asks again (field group AAM, with its ECID): the same ECID comes back.
    let again = from_page(&server, &format!("{ID_QUERY}&d_mid={ecid}")).await;
    assert_eq!(ecid_of(&again.json()), ecid);
    assert_eq!(again.visitor_cookie().as_deref(), Some(visitor.as_str()));

    // Stored both ways, and shown by the admin API.
    server.running.sync_store().await.unwrap();
    let v = VisitorId::parse(&visitor).unwrap();
    let link = server
        .running
        .store()
        .get_link(ECID_DATA_SOURCE, &ecid)
        .unwrap()
        .expect("the ECID is linked");
    assert_eq!(link.visitor, v);
    let profile = Admin::of(&server)
        .call("GET", &format!("/v1/profiles/{visitor}"), None)
        .await
        .json();
    assert_eq!(profile["ecid"], ecid.as_str(), "{profile}");
    server.stop().await;
}

/// A device that already has an ECID of its own (VisitorAPI minted one when `/id` was not
/// reachable) keeps it, and is known by it from then on.
#[actix_web::test]
async fn the_callers_own_ecid_is_adopted() {
    let server = start().await;
    let own = "07955261652886032950143702505894272138";
    let answer = from_page(&server, &format!("{ID_QUERY}&d_mid={own}")).await;
    assert_eq!(ecid_of(&answer.json()), own);
    let visitor = answer.visitor_cookie().unwrap();
    let event = from_page(&server, &format!("/event?d_rtbd=json&d_mid={own}"))
        .await
        .json();
    assert_eq!(event["uuid"], visitor.as_str(), "{event}");
    server.stop().await;
}

/// An opted-out device stays opted out by its ECID alone: `/id` tells VisitorAPI so (no ECID,
/// `d_optout`), `/optOutStatus` too, and events are refused. The profile is gone; only the
/// link that keeps the device opted out remains.
#[actix_web::test]
async fn opting_out_by_ecid_sticks_to_the_device() {
    let server = start().await;
    let answer = from_page(&server, ID_QUERY).await;
    let ecid = ecid_of(&answer.json());
    let visitor = VisitorId::parse(&answer.visitor_cookie().unwrap()).unwrap();
    from_page(&server, &format!("/event?c_page=cars&d_mid={ecid}")).await;

    let out = from_page(&server, &format!("/demoptout.jpg?d_mid={ecid}")).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.visitor_cookie().as_deref(), Some("NOTARGET"));

    let event = from_page(&server, &format!("/event?d_rtbd=json&d_mid={ecid}")).await;
    let body = event.json();
    assert_eq!(body["errors"][0]["code"], 171, "{body}");
    assert!(body.get("uuid").is_none(), "{body}");
    assert!(event.visitor_cookie().is_none());
    for path in [
        format!("{ID_QUERY}&d_mid={ecid}"),
        format!("/optOutStatus?d_visid_ver=5.5.0&d_mid={ecid}"),
    ] {
        let answer = from_page(&server, &path).await;
        assert_eq!(answer.status, 200);
        let body = answer.json();
        assert_eq!(body["d_optout"], json!(["global"]), "{path}: {body}");
        assert!(body.get("d_mid").is_none(), "{path}: {body}");
        assert_eq!(body["d_ottl"], 7200);
        assert!(answer.visitor_cookie().is_none(), "{path}");
    }
    server.assert_forgotten(&[visitor], &[]).await;
    let link = server
        .running
        .store()
        .get_link(ECID_DATA_SOURCE, &ecid)
        .unwrap();
    assert_eq!(
        link.map(|l| l.visitor),
        Some(visitor),
        "the device stays opted out"
    );

    // Another device is not affected.
    let other = from_page(&server, "/optOutStatus?d_visid_ver=5.5.0")
        .await
        .json();
    assert!(other.get("d_optout").is_none(), "{other}");
    server.stop().await;
}

/// Erasure (admin `DELETE`) and retention remove the ECID link with the profile: the device
/// is then a new visitor.
#[actix_web::test]
async fn erasure_and_retention_remove_the_ecid_link() {
    // Sessions retire after a second, so that the retention sweep (which leaves visitors with
    // a live session to their session) sees the profile.
    let server = start_with(|c| c.realtime.session_idle_secs = 1).await;
    let mut devices = Vec::new();
    for _ in 0..2 {
        let answer = from_page(&server, ID_QUERY).await;
        let ecid = ecid_of(&answer.json());
        let visitor = answer.visitor_cookie().unwrap();
        from_page(&server, &format!("/event?c_page=cars&d_mid={ecid}")).await;
        devices.push((ecid, visitor));
    }
    let (erased_ecid, erased) = &devices[0];
    let deleted = Admin::of(&server)
        .call("DELETE", &format!("/v1/profiles/{erased}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    server
        .assert_forgotten(
            &[VisitorId::parse(erased).unwrap()],
            &[(ECID_DATA_SOURCE, erased_ecid)],
        )
        .await;
    let after = from_page(&server, &format!("/event?d_rtbd=json&d_mid={erased_ecid}"))
        .await
        .json();
    assert_ne!(after["uuid"], erased.as_str(), "{after}");

    let (kept_ecid, kept) = &devices[1];
    wait_until(
        "every session retired",
        std::time::Duration::from_secs(20),
        || server.running.sessions().is_empty(),
    )
    .await;
    server.running.sync_store().await.unwrap();
    let now = tributary::core::clock::unix_now();
    server
        .running
        .sweep_retention(now + 121 * SECS_PER_DAY)
        .await
        .unwrap();
    server
        .assert_forgotten(
            &[VisitorId::parse(kept).unwrap()],
            &[(ECID_DATA_SOURCE, kept_ecid)],
        )
        .await;
    server.stop().await;
}

/// Consent and COPPA are judged as on `/event`: without consent no ECID is given or linked
/// and no cookie set; a child-directed call gets an ECID that nothing links to anyone.
#[actix_web::test]
async fn consent_and_coppa_are_judged_as_on_event() {
    let server = start().await;
    let refused = from_page(&server, &format!("{ID_QUERY}&gdpr=1")).await;
    assert_eq!(refused.status, 200);
    let body = refused.json();
    assert!(body.get("d_mid").is_none(), "{body}");
    assert_eq!(body["errors"][0]["code"], 315, "{body}");
    assert!(refused.visitor_cookie().is_none());

    let child = from_page(&server, &format!("{ID_QUERY}&d_coppa=true")).await;
    let body = child.json();
    let ecid = ecid_of(&body);
    assert!(child.visitor_cookie().is_none());
    assert_eq!(body["ibs"], json!([]), "no syncs for a child: {body}");
    server.running.sync_store().await.unwrap();
    assert!(server
        .running
        .store()
        .get_link(ECID_DATA_SOURCE, &ecid)
        .unwrap()
        .is_none());
    server.stop().await;
}

/// Every malformed or hostile input still gets `200` and a JSON object (anything else makes
/// VisitorAPI wait forever), with the problem in `errors`.
#[actix_web::test]
async fn bad_input_gets_a_json_object_and_an_error() {
    let server = start().await;
    let cases = [
        (format!("{ID_QUERY}&d_mid=%3Cscript%3E"), 101, true),
        (format!("{ID_QUERY}&d_mid=%zz"), 311, false),
        (format!("{ID_QUERY}&d_cid_ic=%01"), 300, true),
        (format!("{ID_QUERY}&x={}", "a".repeat(9000)), 0, false),
    ];
    for (path, code, minted) in cases {
        let answer = from_page(&server, &path).await;
        assert_eq!(answer.status, 200, "{}", &path[..path.len().min(80)]);
        let body = answer.json();
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        assert_eq!(body.get("d_mid").is_some(), minted, "{body}");
        assert!(!answer.body.windows(7).any(|w| w == b"<script"), "{body}");
    }
    // On /event, a bad d_mid is error 101 and the call goes on.
    let event = from_page(&server, "/event?d_rtbd=json&d_mid=NOTAHEXID")
        .await
        .json();
    assert_eq!(event["errors"][0]["code"], 101, "{event}");
    assert!(event["uuid"].is_string(), "{event}");
    server.stop().await;
}

/// The ID service and the destination-publishing frame in a real browser that blocks
/// third-party cookies, driven the way VisitorAPI and DIL drive them (without their code):
/// `/id` by an XHR with credentials from another site, its `ibs` posted to `/dest5.html` in the
/// combined message format, then a DIL-style `POST /event` carrying only the ECID.
#[actix_rt::test]
async fn id_and_dest5_in_a_browser_as_visitorapi_drives_them() {
    use crate::common::browser::{Browser, Options, TestSite};
    let Some(browser) = Browser::start(Options::blocking_third_party_cookies()).await else {
        return;
    };
    let site = TestSite::start().await;
    let sync_url = format!("{}/sync?u=${{DD_UUID}}", site.origin("127.0.0.1"));
    let server = start_with(|c| {
        c.id_service.syncs = serde_json::from_value(json!([
            {"id": 411, "url": sync_url, "ttl_minutes": 60}
        ]))
        .unwrap();
    })
    .await;
    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    let seen = browser
        .async_script(
            "const [dcs, done] = arguments;
             const xhr = new XMLHttpRequest();
             xhr.open('GET', dcs + '/id?d_visid_ver=5.5.0&d_fieldgroup=MC&d_rtbd=json&d_ver=2'
                 + '&d_orgid=ABC%40AdobeOrg&d_nsid=0&ts=' + Date.now());
             xhr.withCredentials = true;
             xhr.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');
             xhr.onload = () => {
               const id = JSON.parse(xhr.responseText);
               const frame = document.createElement('iframe');
               frame.style.display = 'none';
               frame.setAttribute('sandbox', 'allow-scripts allow-same-origin');
               const reports = [];
               window.addEventListener('message', (e) => reports.push(e.data));
               frame.addEventListener('load', () => {
                 const e = encodeURIComponent;
                 const messages = id.ibs.map((s) => ['ibs', e(s.id), e(s.tag),
                   s.url.map(e).join(','), e(String(s.ttl)), '', '', String(!!s.fireURLSync)].join('|'));
                 frame.contentWindow.postMessage('---destpub-clear-dextp------destpub-combined---'
                   + messages.join('%01'), new URL(dcs).origin);
                 fetch(dcs + '/event?d_dil_ver=9.5&_ts=' + Date.now(), {
                   method: 'POST', credentials: 'include',
                   headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                   body: 'd_mid=' + e(id.d_mid) + '&d_nsid=0&c_page=cars&d_rtbd=json&d_jsonv=1&d_dst=1'
                 }).then((r) => r.json()).then((event) => {
                   setTimeout(() => done({id, event, reports}), 200);
                 });
               });
               frame.src = dcs + '/dest5.html?d_nsid=0#' + encodeURIComponent(location.origin);
               document.body.appendChild(frame);
             };
             xhr.send();",
            vec![json!(server.base)],
        )
        .await;
    let ecid = ecid_of(&seen["id"]);
    let visitor = seen["event"]["uuid"].as_str().expect("the event's visitor");
    assert_eq!(
        Ecid::for_visitor(VisitorId::parse(visitor).unwrap()).as_str(),
        ecid,
        "the event found the visitor /id minted the ECID for: {seen}"
    );
    site.wait_hits(
        &format!("/sync?u={visitor}"),
        1,
        std::time::Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        seen["reports"],
        json!(["---destpub-to-parent---canSetThirdPartyCookies|false"]),
        "{seen}"
    );
    assert!(
        !browser.cookies().await.iter().any(|(n, _)| n == "demdex"),
        "no third-party cookie"
    );
    browser.close().await;
    server.stop().await;
    site.stop().await;
}
