//! The API reference at `/docs` in a real browser: rendered from `/openapi.json` by the
//! console's own script under its strict Content-Security-Policy, with nothing loaded from
//! outside (a server without internet access shows the same page).

use std::time::Duration;

use serde_json::json;

use crate::common::browser::{Browser, Options};
use crate::common::*;

#[actix_rt::test]
async fn the_api_reference_renders_offline_under_the_console_s_policy() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = TestServer::start(&catalog(vec![], json!([]), json!([]))).await;
    let admin = Admin::of(&server);
    let page = admin.raw("GET", "/docs", None, None).await;
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    // Asked for again on every load, with a 304 while unchanged: an upgrade's console is
    // never mixed with the last one's files.
    let script = admin.raw("GET", "/ui/app.js", None, None).await;
    assert_eq!(script.header("cache-control").as_deref(), Some("no-cache"));
    let etag = script.header("etag").unwrap();
    let again = get_with(
        &format!("{}/ui/app.js", admin.base),
        &[("if-none-match", etag.as_str())],
    )
    .await;
    assert_eq!(again.status, 304);
    assert_eq!(page.header("cache-control").as_deref(), Some("no-cache"));
    browser.open(&format!("{}/docs", admin.base)).await;
    let rendered = browser
        .wait_script(
            "the operations and schemas of /openapi.json in the page",
            Duration::from_secs(20),
            "const ops = [...document.querySelectorAll('section.card h3')].map((e) => e.textContent);
             const schemas = document.querySelectorAll('details summary code').length;
             return ops.length > 20 && schemas > 5 ? {ops, schemas} : null;",
        )
        .await;
    let ops: Vec<String> = serde_json::from_value(rendered["ops"].clone()).unwrap();
    for expected in [
        "GET /v1/traits",
        "POST /v1/traits/validate",
        "POST /stream/{streamId}",
        "POST /v1/inbound",
    ] {
        assert!(ops.iter().any(|o| o == expected), "{expected}: {ops:?}");
    }
    // Every resource the page loaded came from this listener.
    let foreign = browser
        .script(
            "return performance.getEntriesByType('resource').map((r) => r.name)
                 .filter((u) => !u.startsWith(location.origin));",
            vec![],
        )
        .await;
    assert_eq!(foreign, json!([]));
    browser.close().await;
    server.stop().await;
}
