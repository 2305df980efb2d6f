//! `tributary demo` as a process: its printed walkthrough works — a cached answer, an ID sync
//! that makes a synced-only provider answer, and the segment that follows.

use std::time::Duration;

use crate::common::demo::DemoProcess;
use crate::common::*;

#[actix_web::test]
async fn the_demo_shows_a_cached_answer_and_an_id_sync() {
    let demo = DemoProcess::spawn(&[]);
    let printed = &demo.printed;
    let base = demo
        .value("DCS endpoint: ")
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

    demo.stop();
}

/// The demo's site in a real browser (which blocks third-party cookies): the tag page shows
/// the segments of each event and writes the cookie destination; the ID-service page gets an
/// ECID, fires idco's ID sync through the frame (the partner sends the browser back to the
/// DCS's `/ibs`), after which idco answers, segment 106 follows and its URL destination
/// fires.
#[actix_web::test]
async fn the_demo_site_shows_the_seed_flow_in_a_browser() {
    use crate::common::browser::{Browser, Options};
    let Some(browser) = Browser::start(Options::blocking_third_party_cookies()).await else {
        return;
    };
    let demo = DemoProcess::spawn(&[]);
    let site = demo.value("demo site: ");
    let site = site.trim_end_matches('/');
    let wait = Duration::from_secs(30);
    // The pages show `…` until their first answer.
    let shown = "window.segmentsShown = () => {
        const t = document.getElementById('segments').textContent;
        return t.startsWith('[') ? JSON.parse(t) : [];
    };";

    browser.open(&format!("{site}/tag.html")).await;
    browser
        .wait_script(
            "the tag's first answer",
            wait,
            "return /^[0-9]{38}$/.test(document.getElementById('uuid').textContent) || null;",
        )
        .await;
    browser
        .script(
            "document.querySelector('button[data-section]').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "segment 103 after a sport page",
            wait,
            &[shown, "return segmentsShown().includes(103) || null;"].concat(),
        )
        .await;
    let cookies = browser.cookies().await;
    assert!(
        cookies
            .iter()
            .any(|(n, v)| n == "demo_segs" && v.contains("103")),
        "{cookies:?}"
    );

    browser.open(&format!("{site}/idservice.html")).await;
    let ecid = browser
        .wait_script(
            "an ECID from /id",
            wait,
            "const t = document.getElementById('ecid').textContent; return /^[0-9]{38}$/.test(t) ? t : null;",
        )
        .await;
    // idco's sync goes image → partner → /ibs; an event after it reaches idco.
    let fired = browser
        .wait_script(
            "idco's segment 106 and its URL destination",
            wait,
            &[
                shown,
                "const segments = segmentsShown();
             const fired = document.getElementById('fired').textContent;
             if (segments.includes(106) && fired.includes('seg=loyal')) return fired;
             if (!window.__clicked || Date.now() - window.__clicked > 1000) {
               window.__clicked = Date.now();
               document.querySelector('button[data-page]').click();
             }
             return null;",
            ]
            .concat(),
        )
        .await;
    let uuid = browser
        .script(
            "return document.getElementById('uuid').textContent;",
            vec![],
        )
        .await;
    assert!(
        fired
            .as_str()
            .unwrap()
            .contains(&format!("uid={}", uuid.as_str().unwrap())),
        "{fired}"
    );
    // The next page view: the same ECID, the same visitor.
    browser.open(&format!("{site}/idservice.html")).await;
    let again = browser
        .wait_script(
            "the visitor found through the ECID",
            wait,
            "const t = document.getElementById('uuid').textContent; return /^[0-9]{38}$/.test(t) ? t : null;",
        )
        .await;
    assert_eq!(again, uuid);
    let ecid_again = browser
        .script(
            "return document.getElementById('ecid').textContent;",
            vec![],
        )
        .await;
    assert_eq!(ecid_again, ecid);
    browser.close().await;
    demo.stop();
}
