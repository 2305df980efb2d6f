//! The browser harness itself (`common/browser.rs`): scripts and their JSON results, cookies,
//! and the switch that blocks third-party cookies, checked against a real cookie.

use std::time::Duration;

use serde_json::json;

use crate::common::browser::{Browser, Options, TestSite};

/// Sets a cookie from a frame of another site (`127.0.0.1` framed by `localhost`), then
/// visits that site to see whether the browser kept it.
async fn third_party_cookie_kept(browser: &Browser, site: &TestSite, name: &str) -> bool {
    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    let loaded = browser
        .async_script(
            "const [src, done] = arguments;
             const frame = document.createElement('iframe');
             frame.addEventListener('load', () => done(true));
             frame.src = src;
             document.body.appendChild(frame);",
            vec![json!(format!(
                "{}/set-cookie?{name}",
                site.origin("127.0.0.1")
            ))],
        )
        .await;
    assert_eq!(loaded, json!(true));
    site.wait_hits(&format!("/set-cookie?{name}"), 1, Duration::from_secs(10))
        .await;
    // Scripts can run inside the (cross-site) frame, and come back out.
    browser.enter_frame(0).await;
    let inside = browser.script("return location.host;", vec![]).await;
    assert_eq!(inside, json!(format!("127.0.0.1:{}", site.port)));
    browser.leave_frame().await;
    let outside = browser.script("return location.hostname;", vec![]).await;
    assert_eq!(outside, json!("localhost"));
    browser
        .open(&format!("{}/page", site.origin("127.0.0.1")))
        .await;
    browser
        .cookies()
        .await
        .iter()
        .any(|(n, v)| n == name && v == "1")
}

#[actix_rt::test]
async fn browser_runs_scripts_reads_cookies_and_blocks_third_party_cookies_on_request() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let site = TestSite::start().await;

    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    let result = browser
        .script(
            "return {host: location.hostname, sum: arguments[0] + arguments[1], list: [true, null]};",
            vec![json!(2), json!(3)],
        )
        .await;
    assert_eq!(
        result,
        json!({"host": "localhost", "sum": 5, "list": [true, null]})
    );
    let later = browser
        .async_script(
            "const done = arguments[arguments.length - 1]; setTimeout(() => done('later'), 10);",
            vec![],
        )
        .await;
    assert_eq!(later, json!("later"));
    let waited = browser
        .wait_script(
            "a value set by a timer",
            Duration::from_secs(5),
            "if (!window.flag) { setTimeout(() => { window.flag = 'set'; }, 50); window.flag = null; }
             return window.flag;",
        )
        .await;
    assert_eq!(waited, json!("set"));

    // First-party: set by the page's own site.
    browser
        .open(&format!("{}/set-cookie?first", site.origin("localhost")))
        .await;
    assert!(browser
        .cookies()
        .await
        .contains(&("first".into(), "1".into())));

    assert!(
        third_party_cookie_kept(&browser, &site, "third").await,
        "without the switch, a third-party cookie is kept"
    );
    browser.close().await;

    let blocking = Browser::start(Options::blocking_third_party_cookies())
        .await
        .expect("Chromium was found a moment ago");
    assert!(
        !third_party_cookie_kept(&blocking, &site, "blocked").await,
        "with the switch, a third-party cookie is refused"
    );
    // The switch leaves first-party cookies alone.
    blocking
        .open(&format!("{}/set-cookie?own", site.origin("127.0.0.1")))
        .await;
    assert!(blocking
        .cookies()
        .await
        .contains(&("own".into(), "1".into())));
    blocking.close().await;
    let sets: Vec<String> = site
        .hits_to("/set-cookie")
        .into_iter()
        .map(|h| format!("{} {}", h.dest, h.target))
        .collect();
    assert_eq!(
        sets,
        [
            "document /set-cookie?first",
            "iframe /set-cookie?third",
            "iframe /set-cookie?blocked",
            "document /set-cookie?own",
        ]
    );
    site.stop().await;
}
