//! The admin console's overview, providers and profiles sections (issue 19) in a real
//! browser: sign-in, live metrics with a slow provider's timeouts, editing and disabling a
//! provider, looking a visitor up and erasing it — all under the console's strict CSP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::browser::{Browser, Options};
use crate::common::console::sign_in;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Collects CSP violations from now on. Registered after the shell's load (WebDriver runs
/// scripts only in a loaded page); every section is then rendered by hash navigation, without
/// a reload, so whatever the sections do is seen.
const WATCH_CSP: &str = "window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber);
    });
    return true;";

/// A script giving the element's text once it has some (an empty error slot is not an error).
fn text_of(selector: &str) -> String {
    format!("const el = document.querySelector({selector:?}); return el && el.textContent ? el.textContent : null;")
}

#[actix_web::test]
async fn console_a_overview_providers_and_profiles_in_a_browser() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    // Answers long after its 20 ms timeout: every call is a timeout.
    let slow = TestProvider::start(Behavior::Delay(
        400,
        Box::new(Behavior::Segments(vec!["x"], None)),
    ))
    .await;
    let server = TestServer::start(&catalog(
        vec![provider(1, "slowpoke", &slow.url, 9, 20)],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT",
                "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([]),
    ))
    .await;
    let admin = Admin::of(&server);
    let ui = format!("{}/ui/", admin.base);

    // Every console file carries the policy.
    for path in [
        "",
        "app.js",
        "pages/overview.js",
        "pages/providers.js",
        "pages/profiles.js",
    ] {
        let reply = get(&format!("{ui}{path}")).await;
        assert_eq!(reply.status, 200, "{path}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
            "{path}: {csp:?}"
        );
    }

    browser.open(&ui).await;
    browser.script(WATCH_CSP, vec![]).await;
    // The watch sees a violation: an inline style attribute is one.
    browser
        .script(
            "const d = document.createElement('div'); d.setAttribute('style', 'color: red');
             document.body.append(d); d.remove(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "the watch to see a violation",
            WAIT,
            "if (!window.__cspViolations.length) return null; window.__cspViolations = []; return true;",
        )
        .await;
    // The stylesheet applied and the module ran under the policy: the form is shown.
    browser
        .wait_script(
            "the sign-in form",
            WAIT,
            "return !document.getElementById('sign-in').hidden
                && getComputedStyle(document.querySelector('header')).display === 'flex';",
        )
        .await;

    sign_in(&browser, "not-the-token").await;
    let refused = browser
        .wait_script(
            "the refusal",
            WAIT,
            "const t = document.getElementById('sign-in-error').textContent; return t || null;",
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("not this server's admin token"),
        "{refused}"
    );

    // Events, each waiting on the slow provider until its timeout.
    let mut uuid = String::new();
    for _ in 0..4 {
        let reply = get(&server.url("/event?d_rtbd=json&c_page=cars")).await;
        assert_eq!(reply.status, 200);
        uuid = reply.json()["uuid"].as_str().unwrap().to_string();
    }

    sign_in(&browser, ADMIN_TOKEN).await;
    let total = browser
        .wait_script(
            "the overview's event count",
            WAIT,
            "const v = document.querySelector('[data-metric=events_total] .value');
             const n = v ? Number(v.textContent.replace(/,/g, '')) : 0;
             return n >= 4 ? n : null;",
        )
        .await;
    assert!(total.as_f64().unwrap() >= 4.0);
    let timeouts = browser
        .wait_script(
            "the provider's timeouts on the overview",
            WAIT,
            "const td = document.querySelector('tr[data-provider=slowpoke] td[data-outcome=timeout]');
             return td && Number(td.textContent) >= 4 ? document.querySelector('tr[data-provider=slowpoke] .timeout-share').textContent : null;",
        )
        .await;
    assert_eq!(timeouts, json!("100 %"));
    // A rate needs two readings: more events after the first one show events per second.
    for _ in 0..3 {
        get(&server.url("/event?d_rtbd=json&c_page=cars")).await;
    }
    browser
        .wait_script(
            "a rate of events",
            WAIT,
            "const v = document.querySelector('[data-metric=events_rate] .value');
             return v && Number(v.textContent) > 0;",
        )
        .await;
    let charts = browser
        .script(
            "return document.querySelectorAll('#overview-cards svg.chart polyline').length;",
            vec![],
        )
        .await;
    assert!(charts.as_u64().unwrap() >= 5, "{charts}");

    // Providers: listed with their state.
    browser
        .script("location.hash = '#/providers'; return true;", vec![])
        .await;
    let row = browser
        .wait_script(
            "the providers list",
            WAIT,
            "const tr = document.querySelector('tr[data-pid=\"1\"]');
             return tr ? {state: tr.querySelector('.state').textContent,
                          share: tr.querySelector('.timeout-share').textContent,
                          circuit: tr.querySelector('.circuit').textContent} : null;",
        )
        .await;
    assert_eq!(row["state"], "enabled", "{row}");
    assert!(
        row["share"].as_str().unwrap().starts_with("100.0 %"),
        "{row}"
    );
    assert!(!row["circuit"].as_str().unwrap().is_empty(), "{row}");

    // A refused value is shown next to its field.
    browser
        .script(
            "document.querySelector('tr[data-pid=\"1\"] [data-action=edit]').click();
             document.getElementById('provider-timeoutMs').value = '0';
             document.querySelector('#provider-form button[type=submit]').click();
             return true;",
            vec![],
        )
        .await;
    let field_error = browser
        .wait_script(
            "the field's error",
            WAIT,
            &text_of("#provider-timeoutMs-error"),
        )
        .await;
    assert!(!field_error.as_str().unwrap().is_empty());
    // The secret is never shown, and the form does not fill it in.
    let secret = browser
        .script(
            "return document.getElementById('provider-secret').value;",
            vec![],
        )
        .await;
    assert_eq!(secret, json!(""));

    browser
        .script(
            "document.getElementById('provider-timeoutMs').value = '35';
             document.querySelector('#provider-form button[type=submit]').click();
             return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "the edited timeout",
            WAIT,
            "const tr = document.querySelector('tr[data-pid=\"1\"]');
             return tr && tr.textContent.includes('35 ms') && !document.getElementById('provider-form');",
        )
        .await;
    let stored = admin.call("GET", "/v1/providers/1", None).await.json();
    assert_eq!(stored["timeoutMs"], 35, "{stored}");

    browser
        .script(
            "document.querySelector('tr[data-pid=\"1\"] [data-action=toggle]').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "the provider disabled",
            WAIT,
            "const tr = document.querySelector('tr[data-pid=\"1\"]');
             return tr && tr.querySelector('.state').textContent === 'disabled';",
        )
        .await;
    let stored = admin.call("GET", "/v1/providers/1", None).await.json();
    assert_eq!(stored["enabled"], false, "{stored}");
    assert_eq!(stored["timeoutMs"], 35, "{stored}");

    // A provider created through the form: its secret is sent, and never shown again.
    browser
        .script(
            "document.getElementById('provider-new').click();
             const set = (id, v) => { document.getElementById('provider-' + id).value = v; };
             set('name', 'second'); set('url', 'http://127.0.0.1:9/segments');
             set('dataSourceId', '12'); set('secret', 'hush-hush');
             document.querySelector('#provider-form button[type=submit]').click();
             return true;",
            vec![],
        )
        .await;
    let pid = browser
        .wait_script(
            "the created provider",
            WAIT,
            "const th = [...document.querySelectorAll('#providers-list tbody th')].find((t) => t.textContent === 'second');
             return th ? th.closest('tr').dataset.pid : null;",
        )
        .await;
    let pid = pid.as_str().unwrap().to_string();
    let created = admin
        .call("GET", &format!("/v1/providers/{pid}"), None)
        .await
        .json();
    assert_eq!(created["secret"], "********", "{created}");
    assert_eq!(created["dataSourceId"], 12, "{created}");
    let page_text = browser
        .script("return document.body.textContent;", vec![])
        .await;
    assert!(!page_text.as_str().unwrap().contains("hush-hush"));
    // Deleted after the confirmation.
    browser
        .script(
            "window.confirm = () => true;
             document.querySelector('tr[data-pid=\"' + arguments[0] + '\"] [data-action=delete]').click();
             return true;",
            vec![json!(pid)],
        )
        .await;
    browser
        .wait_script(
            "the provider deleted",
            WAIT,
            "return document.querySelectorAll('#providers-list tbody tr').length === 1;",
        )
        .await;
    let deleted = admin
        .call("GET", &format!("/v1/providers/{pid}"), None)
        .await;
    assert_eq!(deleted.status, 404);

    // Profiles: the link opens the visitor's profile; erasing it leaves nothing.
    server.running.sync_store().await.unwrap();
    browser
        .script(
            "location.hash = '#/profiles/' + arguments[0]; return true;",
            vec![json!(uuid)],
        )
        .await;
    let shown = browser
        .wait_script("the profile", WAIT, &text_of("#profile-uuid"))
        .await;
    assert_eq!(shown, json!(uuid));
    let traits = browser
        .wait_script(
            "the profile's traits",
            WAIT,
            "const cells = [...document.querySelectorAll('#profile-result tbody tr:first-child td')];
             return cells.length ? cells.map((c) => c.textContent) : null;",
        )
        .await;
    assert_eq!(traits[0], "11", "{traits}");
    assert!(traits[1].as_str().unwrap().ends_with(" UTC"), "{traits}");
    browser
        .script(
            "window.confirm = () => true; document.getElementById('profile-erase').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script("the erasure", WAIT, &text_of("#profile-erased"))
        .await;
    let gone = admin
        .call("GET", &format!("/v1/profiles/{uuid}"), None)
        .await;
    assert_eq!(gone.status, 404);

    // By ECID: a device known by the ECID the ID service gave it.
    let id_answer = get(&server.url(
        "/id?d_visid_ver=5.5.0&d_fieldgroup=MC&d_rtbd=json&d_ver=2&d_orgid=ABC%40AdobeOrg&d_nsid=0",
    ))
    .await
    .json();
    let ecid = id_answer["d_mid"].as_str().unwrap().to_string();
    let event = get(&server.url(&format!("/event?d_rtbd=json&c_page=cars&d_mid={ecid}"))).await;
    assert_eq!(event.status, 200);
    server.running.sync_store().await.unwrap();
    browser
        .script(
            "const kind = document.getElementById('profile-kind');
             kind.value = 'ecid'; kind.dispatchEvent(new Event('change'));
             document.getElementById('profile-id').value = arguments[0];
             document.querySelector('#profile-form button[type=submit]').click(); return true;",
            vec![json!(ecid)],
        )
        .await;
    let by_ecid = browser
        .wait_script(
            "the profile by ECID",
            WAIT,
            "const code = document.querySelector('#profile-uuid');
             const row = document.querySelector('#profile-result tbody tr td');
             return code && row ? [code.textContent, row.textContent] : null;",
        )
        .await;
    let device = event.json()["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        by_ecid,
        json!([device, "11"]),
        "the device the ECID is synced to"
    );
    // And erased through it, as a device found by AAM id is.
    browser
        .script(
            "window.confirm = () => true; document.getElementById('profile-erase').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "the device erased by its ECID",
            WAIT,
            "return document.getElementById('profile-erased') ? true : null;",
        )
        .await;
    let gone = admin
        .call("GET", &format!("/v1/profiles/{device}"), None)
        .await;
    assert_eq!(gone.status, 404);
    browser
        .script(
            "const kind = document.getElementById('profile-kind');
             kind.value = 'uuid'; kind.dispatchEvent(new Event('change')); return true;",
            vec![],
        )
        .await;

    // The lookup form: a malformed id is refused in the page.
    browser
        .script(
            "document.getElementById('profile-id').value = '12';
             document.querySelector('#profile-form button[type=submit]').click(); return true;",
            vec![],
        )
        .await;
    browser
        .wait_script("the id's error", WAIT, &text_of("#profile-result .error"))
        .await;

    let violations: Value = browser
        .script("return window.__cspViolations;", vec![])
        .await;
    assert_eq!(violations, json!([]), "CSP violations");

    browser.close().await;
    server.stop().await;
    slow.stop().await;
}
