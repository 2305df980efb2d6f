//! Adobe's own site libraries, unmodified, against Tributary in a real browser that blocks
//! third-party cookies: VisitorAPI 5.5 gets a server-minted ECID from `/id` and fires the ID
//! syncs through `/dest5.html`; DIL 9.5's events carry that ECID, so the visitor is the same
//! across page views without the `demdex` cookie; DIL writes the cookie destinations on the
//! site and the URL destinations fire.
//!
//! The libraries are public but carry no licence, so they are not part of the repository:
//! these tests run where `TRIBUTARY_TEST_ADOBE_DIR` names a folder holding `visitorapi.min.js`
//! (github: Adobe-Marketing-Cloud/id-service, `lib/`) and `dil.js` (Adobe-Marketing-Cloud/dil,
//! `dist/`), and are skipped with one line elsewhere. Both libraries call hosts under
//! `demdex.net` (DIL always does), which the browser maps to the test server
//! (`--host-resolver-rules`).

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::core::ids::{VisitorId, ECID_DATA_SOURCE};

use crate::common::browser::{skip_once, Browser, Options, TestSite};
use crate::common::*;

const ADOBE_DIR_VAR: &str = "TRIBUTARY_TEST_ADOBE_DIR";
const WAIT: Duration = Duration::from_secs(30);

/// The two libraries' text, or `None` (said once) where they are not provided.
fn libraries() -> Option<(String, String)> {
    static SKIPPED: Once = Once::new();
    let dir = std::env::var_os(ADOBE_DIR_VAR).map(PathBuf::from);
    let read = |dir: &PathBuf, name: &str| std::fs::read_to_string(dir.join(name)).ok();
    match dir
        .as_ref()
        .and_then(|d| Some((read(d, "visitorapi.min.js")?, read(d, "dil.js")?)))
    {
        Some(libs) => Some(libs),
        None => {
            skip_once(
                &SKIPPED,
                &format!(
                    "Adobe library tests skipped: set {ADOBE_DIR_VAR} to a folder with visitorapi.min.js and dil.js"
                ),
            );
            None
        }
    }
}

/// One page view of the site: VisitorAPI, then DIL sending `c_page=cars`. Returns the ECID
/// VisitorAPI reports and DIL's answer.
async fn page_view(browser: &Browser, site: &TestSite, visitorapi: &str, dil: &str) -> Value {
    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    browser
        .async_script(
            "const [visitorapi, dil, done] = arguments;
             const inline = (text) => {
               const s = document.createElement('script');
               s.textContent = text;
               document.head.appendChild(s);
             };
             inline(visitorapi);
             const visitor = Visitor.getInstance('ABC123@AdobeOrg', {
               loadSSL: false,
               audienceManagerServer: 'dpm.demdex.net',
               audienceManagerServerSecure: 'dpm.demdex.net'
             });
             // `true`: call back even when the ECID is already stored (the second view).
             visitor.getMarketingCloudVisitorID((mid) => {
               inline(dil);
               const instance = DIL.create({
                 partner: 'tributary',
                 visitorService: {namespace: 'ABC123@AdobeOrg'},
                 secureDataCollection: false,
                 disableDefaultRequest: true
               });
               instance.api.signals({c_page: 'cars'})
                 .afterResult((answer) => done({mid, answer}))
                 .submit();
             }, true);",
            vec![json!(visitorapi), json!(dil)],
        )
        .await
}

#[actix_rt::test]
async fn visitorapi_and_dil_unmodified_keep_the_visitor_without_third_party_cookies() {
    let Some((visitorapi, dil)) = libraries() else {
        return;
    };
    let site = TestSite::start().await;
    let sync_url = format!("{}/sync?u=${{DD_UUID}}", site.origin("127.0.0.1"));
    let server = TestServer::start_with(&crate::site_tag::tag_catalog(&site), |c| {
        c.id_service.syncs = serde_json::from_value(json!([
            {"id": 411, "url": sync_url, "ttl_minutes": 60}
        ]))
        .unwrap();
    })
    .await;
    let Some(browser) = Browser::start(Options {
        block_third_party_cookies: true,
        host_rules: Some(format!("MAP *.demdex.net {}", server.running.addr())),
    })
    .await
    else {
        return;
    };

    let first = page_view(&browser, &site, &visitorapi, &dil).await;
    let mid = first["mid"].as_str().expect("an ECID").to_string();
    assert_eq!(mid.len(), 38, "{first}");
    let visitor = first["answer"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("DIL's answer has the visitor: {first}"))
        .to_string();
    // The ECID is Tributary's, minted for this visitor and linked to it.
    server.running.sync_store().await.unwrap();
    let link = server
        .running
        .store()
        .get_link(ECID_DATA_SOURCE, &mid)
        .unwrap()
        .expect("the ECID is linked");
    assert_eq!(link.visitor.to_string(), visitor);

    // DIL wrote the cookie destination on the site; the URL destination and the ID sync
    // fired; the DCS's own cookie did not survive the third-party cookie block.
    let cookies = browser.cookies().await;
    assert!(
        cookies
            .iter()
            .any(|(n, v)| n == "aamseg" && v == "segs%3D101"),
        "{cookies:?}"
    );
    assert!(!cookies.iter().any(|(n, _)| n == "demdex"), "{cookies:?}");
    site.wait_hits(&format!("/px?seg=auto&uid={visitor}"), 1, WAIT)
        .await;
    site.wait_hits(&format!("/sync?u={visitor}"), 1, WAIT).await;

    // The next page view: the same ECID from the site's own cookie, the same visitor, and
    // its second car page counts.
    let second = page_view(&browser, &site, &visitorapi, &dil).await;
    assert_eq!(second["mid"], mid.as_str(), "{second}");
    assert_eq!(second["answer"]["uuid"], visitor.as_str(), "{second}");
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(VisitorId::parse(&visitor).unwrap());
    assert_eq!(profile.segments, [101, 102], "{profile:?}");
    browser.close().await;
    server.stop().await;
    site.stop().await;
}
