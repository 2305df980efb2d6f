//! Tributary's site tag (`/tributary.js`) in a real browser that blocks third-party cookies:
//! a page of another site (`localhost`) loads the tag from the DCS (`127.0.0.1`), and its
//! signals become segments in the page, its cookie destination a cookie of the site, its URL
//! destination a request fired through `/dest5.html`; the visitor stays the same on the next
//! page view; an opt-out holds.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::browser::{Browser, Options, TestSite};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Segment 101 from a car page, 102 from two; 101 mapped to a cookie destination (`aamseg`)
/// and to a URL destination `site` records (`/px`). Also used by the Adobe library tests.
pub fn tag_catalog(site: &TestSite) -> tributary::core::catalog::Catalog {
    let mut cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([
            {"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1},
            {"sid": 102, "name": "cars twice", "segmentRule": "FREQUENCY([11T]) >= 2", "dataSourceId": 1}
        ]),
    );
    cat.destinations = serde_json::from_value(json!([
        {"destinationId": 1, "name": "ads", "destinationType": "ADS", "cookieName": "aamseg",
         "formatType": "single_key", "singleKey": "segs", "ttl": 14,
         "mappings": [{"sid": 101}]},
        {"destinationId": 2, "name": "pixel", "destinationType": "PUSH",
         "urlFormatString": format!("{}/px?seg=%ALIAS%&uid=%DID%", site.origin("127.0.0.1")),
         "mappings": [{"sid": 101, "traitAlias": "auto"}]}
    ]))
    .unwrap();
    cat
}

/// Opens the site's page and loads the tag from the DCS with `config`; the answer of the
/// tag's first event, or `null` when it sent none.
pub async fn page_with_tag(browser: &Browser, site: &TestSite, dcs: &str, config: Value) -> Value {
    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    browser
        .async_script(
            "const [src, config, done] = arguments;
             window.tributaryConfig = config;
             const script = document.createElement('script');
             script.src = src;
             script.onload = () => tributary.ready
                 ? tributary.ready.then(done, (e) => done({failed: String(e)}))
                 : done(null);
             script.onerror = () => done({failed: 'the tag did not load'});
             document.head.appendChild(script);",
            vec![json!(format!("{dcs}/tributary.js")), config],
        )
        .await
}

fn cookie<'a>(cookies: &'a [(String, String)], name: &str) -> Option<&'a str> {
    cookies
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[actix_rt::test]
async fn the_tag_collects_targets_and_keeps_the_visitor_without_third_party_cookies() {
    let Some(browser) = Browser::start(Options::blocking_third_party_cookies()).await else {
        return;
    };
    let site = TestSite::start().await;
    let server = TestServer::start(&tag_catalog(&site)).await;
    let dcs = server.base.clone();
    let config = json!({"signals": {"c_page": "cars"}});

    let first = page_with_tag(&browser, &site, &dcs, config.clone()).await;
    assert_eq!(first["segments"], json!([101]), "{first}");
    let visitor = first["uuid"].as_str().expect("a visitor id").to_string();
    // The answer also reached the page as a DOM event and through onAnswer.
    let seen = browser
        .script(
            "let got = null; tributary.onAnswer((a) => { got = a.uuid; });
             return {got, segments: tributary.segments()};",
            vec![],
        )
        .await;
    assert_eq!(seen, json!({"got": visitor, "segments": [101]}));

    // The cookie destination is a cookie of the site; the visitor id is kept first-party.
    let cookies = browser.cookies().await;
    assert_eq!(
        cookie(&cookies, "aamseg"),
        Some("segs%3D101"),
        "{cookies:?}"
    );
    assert_eq!(cookie(&cookies, "tributary_uuid"), Some(visitor.as_str()));
    assert_eq!(
        cookie(&cookies, "demdex"),
        None,
        "third-party cookies are blocked"
    );

    // The URL destination is fired by the DCS's frame, as an image.
    let fired = site
        .wait_hits(&format!("/px?seg=auto&uid={visitor}"), 1, WAIT)
        .await;
    assert_eq!(fired[0].dest, "image");
    let frames = browser
        .script(
            "return [...document.querySelectorAll('iframe')].map((f) => f.src.split('#')[0]);",
            vec![],
        )
        .await;
    assert_eq!(frames, json!([format!("{dcs}/dest5.html")]));

    // The next page view is the same visitor, whose traits accumulate.
    let second = page_with_tag(&browser, &site, &dcs, config.clone()).await;
    assert_eq!(second["uuid"], visitor.as_str(), "{second}");
    assert_eq!(second["segments"], json!([101, 102]), "{second}");

    // Opting out: the DCS forgets the visitor, and the tag sends nothing more.
    browser
        .async_script(
            "const done = arguments[arguments.length - 1]; tributary.optOut().then(() => done(true));",
            vec![],
        )
        .await;
    let third = page_with_tag(&browser, &site, &dcs, config).await;
    assert_eq!(third, Value::Null, "nothing sent after the opt-out");
    let refused = get(&server.url(&format!("/event?d_rtbd=json&d_uuid={visitor}")))
        .await
        .json();
    assert_eq!(refused["errors"][0]["code"], 171, "{refused}");
    server
        .assert_forgotten(
            &[tributary::core::ids::VisitorId::parse(&visitor).unwrap()],
            &[],
        )
        .await;
    browser.close().await;
    server.stop().await;
    site.stop().await;
}

/// The tag's targeting helpers hand the segments to Google Publisher Tag and Prebid.js in
/// the shapes those expect (stand-ins for the two libraries record what they are given).
#[actix_rt::test]
async fn the_tag_hands_segments_to_gpt_and_prebid() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let site = TestSite::start().await;
    let server = TestServer::start(&tag_catalog(&site)).await;
    let answer = page_with_tag(
        &browser,
        &site,
        &server.base,
        json!({"signals": {"c_page": "cars"}, "dataName": "site.example"}),
    )
    .await;
    assert_eq!(answer["segments"], json!([101]), "{answer}");
    let handed = browser
        .script(
            "const targeting = {};
             const googletag = {cmd: [], pubads: () => ({setTargeting: (k, v) => { targeting[k] = v; }})};
             tributary.gpt(googletag);
             googletag.cmd.forEach((f) => f());
             let merged = null;
             const pbjs = {que: [], mergeConfig: (c) => { merged = c; }};
             tributary.prebid(pbjs, 600);
             pbjs.que.forEach((f) => f());
             return {targeting, merged};",
            vec![],
        )
        .await;
    assert_eq!(
        handed,
        json!({
            "targeting": {"tributary": ["101"]},
            "merged": {"ortb2": {"user": {"data": [
                {"name": "site.example", "ext": {"segtax": 600}, "segment": [{"id": "101"}]}
            ]}}}
        })
    );
    browser.close().await;
    server.stop().await;
    site.stop().await;
}

/// `/tributary.js` is one cacheable, compressible constant.
#[actix_web::test]
async fn the_tag_is_served_cacheable_and_compressed() {
    let server = TestServer::start(&catalog(vec![], json!([]), json!([]))).await;
    let plain = get(&server.url("/tributary.js")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type").as_deref(),
        Some("application/javascript; charset=utf-8")
    );
    assert!(plain
        .header("cache-control")
        .unwrap()
        .starts_with("public, max-age="));
    let etag = plain.header("etag").unwrap();
    let again = get_with(&server.url("/tributary.js"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    let gzipped = awc::Client::builder()
        .no_default_headers()
        .finish()
        .get(server.url("/tributary.js"))
        .insert_header(("accept-encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gzipped.headers().get("content-encoding").unwrap(),
        "gzip",
        "compressed for browsers that accept it"
    );
    let posted = post(&server.url("/tributary.js"), "text/plain", vec![]).await;
    assert_eq!(posted.status, 405);
    server.stop().await;
}
