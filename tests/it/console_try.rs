//! The console in a real browser, signed in with the admin token: "Try an event" sends a real
//! event through `POST /v1/events/try` and lays out its answer; the visitor it made is then in
//! the store. Also the endpoint's own refusals over HTTP.

use std::time::Duration;

use serde_json::json;

use crate::common::browser::{Browser, Options};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn cars() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == \"cars\"", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "car people", "segmentRule": "11T", "dataSourceId": 1}]),
    )
}

/// Signs in on `/ui/` with `token`; the sign-in error shown, or `null` once the console is in.
async fn sign_in_on(browser: &Browser, admin: &Admin, token: &str) -> serde_json::Value {
    browser.open(&format!("{}/ui/", admin.base)).await;
    browser
        .wait_script(
            "the sign-in form",
            WAIT,
            "return document.getElementById('sign-in').hidden ? null : true;",
        )
        .await;
    crate::common::console::sign_in(browser, token).await;
    browser
        .wait_script(
            "signed in, or refused",
            WAIT,
            "const e = document.getElementById('sign-in-error').textContent;
             if (e) return e;
             return document.getElementById('nav').hidden ? null : 'in';",
        )
        .await
}

#[actix_rt::test]
async fn try_an_event_from_the_console() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = TestServer::start(&cars()).await;
    let admin = Admin::of(&server);
    let refused = sign_in_on(&browser, &admin, "not-the-token-0123456789").await;
    assert!(
        refused
            .as_str()
            .is_some_and(|e| e.contains("not this server's admin token")),
        "{refused}"
    );
    assert_eq!(sign_in_on(&browser, &admin, ADMIN_TOKEN).await, "in");
    let token_in_url = browser.script("return location.href;", vec![]).await;
    assert!(!token_in_url.as_str().unwrap().contains(ADMIN_TOKEN));

    browser.script("location.hash = '#/try';", vec![]).await;
    browser
        .wait_script(
            "the try form",
            WAIT,
            "return document.getElementById('try-form') ? true : null;",
        )
        .await;
    browser
        .script(
            "document.getElementById('try-form').requestSubmit();",
            vec![],
        )
        .await;
    let shown = browser
        .wait_script(
            "the answer's segments",
            WAIT,
            "const s = document.getElementById('try-segments');
             const v = document.getElementById('try-visitor');
             return s && v ? {segments: s.textContent, visitor: v.textContent} : null;",
        )
        .await;
    assert_eq!(shown["segments"], "101", "{shown}");
    let visitor = shown["visitor"].as_str().unwrap();
    let profile = admin
        .call("GET", &format!("/v1/profiles/{visitor}"), None)
        .await;
    assert_eq!(profile.status, 200, "the tried event is a real one");
    assert_eq!(profile.json()["segments"], json!([101]));
    browser.close().await;
    server.stop().await;
}

#[actix_web::test]
async fn the_try_endpoint_refuses_what_a_site_could_not_send() {
    let slow = TestProvider::start(Behavior::Delay(
        30,
        Box::new(Behavior::Segments(vec!["x"], None)),
    ))
    .await;
    let mut cat = cars();
    cat.providers =
        serde_json::from_value(json!([provider(1, "slow", &slow.url, 1001, 150)])).unwrap();
    let server = TestServer::start_with(&cat, |c| c.realtime.deadline_ms = 300).await;
    let admin = Admin::of(&server);
    let tried = admin
        .call(
            "POST",
            "/v1/events/try",
            Some(json!({"signals": {"c_page": "cars"}})),
        )
        .await;
    assert_eq!(tried.status, 200);
    let body = tried.json();
    assert_eq!(body["status"], 200);
    assert_eq!(body["answer"]["segments"], json!([101]), "{body}");
    assert!(body["request"].as_str().unwrap().contains("c_page=cars"));
    // Each provider's wait, for the console only: a site never gets it, even asking for it.
    assert_eq!(body["answer"]["providers"]["slow"], "ok", "{body}");
    let waited = body["answer"]["providerWaitMs"]["slow"].as_f64().unwrap();
    assert!(waited >= 25.0, "{body}");
    for headers in [vec![], vec![("x-tributary-try", "guess")]] {
        let site = get_with(
            &server.url("/event?d_rtbd=json&d_cts=2&c_page=cars"),
            &headers,
        )
        .await;
        assert_eq!(site.json()["providers"]["slow"], "ok");
        assert!(
            site.json().get("providerWaitMs").is_none(),
            "{}",
            site.json()
        );
    }
    for (bad, field) in [
        (json!({"signals": {"d_uuid": "1"}}), "signals.d_uuid"),
        (json!({"uuid": "12"}), "uuid"),
        (json!({"signals": {"c_page": 3}}), "body"),
        (json!({"other": 1}), "body"),
    ] {
        let reply = admin
            .call("POST", "/v1/events/try", Some(bad.clone()))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["error"]["field"], field, "{bad}");
    }
    let unauthorized = admin
        .raw("POST", "/v1/events/try", Some(b"{}".to_vec()), None)
        .await;
    assert_eq!(unauthorized.status, 401);
    server.stop().await;
}

/// On a phone's width every section fits the screen (wide tables scroll inside their own
/// box), and every control of the page is reachable with the keyboard (a link, a button or a
/// form field, none taken out of the tab order).
#[actix_rt::test]
async fn every_section_fits_a_phone_and_the_keyboard() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = TestServer::start(&cars()).await;
    let admin = Admin::of(&server);
    browser.resize(390, 800).await;
    assert_eq!(sign_in_on(&browser, &admin, ADMIN_TOKEN).await, "in");
    for section in [
        "overview",
        "providers",
        "traits",
        "segments",
        "destinations",
        "profiles",
        "try",
    ] {
        browser
            .script(&format!("location.hash = '#/{section}';"), vec![])
            .await;
        let fits = browser
            .wait_script(
                &format!("the {section} section drawn at a phone's width"),
                WAIT,
                "const page = document.getElementById('page');
                 if (!page || page.textContent.includes('Loading…') || !page.querySelector('h1')) return null;
                 const wide = document.documentElement.scrollWidth;
                 const clickable = [...page.querySelectorAll('[onclick], div[role=button], span[role=button]')].length;
                 const untabbable = [...page.querySelectorAll('a, button, input, select, textarea')]
                     .filter((e) => e.tabIndex < 0).length;
                 return {wide, width: window.innerWidth, clickable, untabbable};",
            )
            .await;
        assert!(
            fits["wide"].as_u64() <= fits["width"].as_u64(),
            "{section} is wider than the screen: {fits}"
        );
        assert_eq!(fits["clickable"], 0, "{section}: {fits}");
        assert_eq!(fits["untabbable"], 0, "{section}: {fits}");
    }
    browser.close().await;
    server.stop().await;
}
