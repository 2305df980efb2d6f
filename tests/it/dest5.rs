//! `GET /dest5.html`, the destination-publishing frame (docs/dcs-api.md): its HTTP answer,
//! its script's Node unit tests (tests/js/), and the frame in a real browser, attached as
//! VisitorAPI attaches it — by a page of another site (`localhost`; the DCS is `127.0.0.1`),
//! hidden, sandboxed, posted to once it has loaded — with [`TestSite`] as the partner whose
//! sync and destination URLs it fires.

use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::browser::{skip_once, Browser, Options, TestSite};
use crate::common::{catalog, get, get_with, post, TestServer};

const COMBINED: &str = "---destpub-combined---";
const CLEAR: &str = "---destpub-clear-dextp---";
const WAIT: Duration = Duration::from_secs(10);

fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// An `/id` sync as VisitorAPI 5.5 posts it: fields URI-encoded, each URL of the list on its own.
fn ibs(id: &str, tag: &str, urls: &[&str], ttl: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| enc(u)).collect();
    [
        "ibs",
        &enc(id),
        &enc(tag),
        &urls.join(","),
        &enc(ttl),
        "",
        "",
        "true",
    ]
    .join("|")
}

/// A URL destination as DIL posts it.
fn dest(id: &str, y: &str, c: &str) -> String {
    ["dests", &enc(id), &enc(y), &enc(c)].join("|")
}

fn combined(messages: &[String]) -> String {
    format!("{COMBINED}{}", messages.join("%01"))
}

async fn dcs() -> TestServer {
    TestServer::start(&catalog(vec![], json!([]), json!([]))).await
}

#[actix_rt::test]
async fn dest5_is_one_cacheable_frameable_locked_down_page_whatever_is_asked() {
    let server = dcs().await;
    let page = get(&server.url("/dest5.html?d_nsid=0")).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "img-src http: https:",
        "frame-src http: https:",
        "frame-ancestors *",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-frame-options"), None);
    assert_eq!(page.header("set-cookie"), None);
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let cache = page.header("cache-control").unwrap();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    // Weak: the same tag covers the gzipped and the plain page.
    let etag = page.header("etag").unwrap();
    let quoted = etag
        .strip_prefix("W/")
        .unwrap_or_else(|| panic!("weak: {etag}"));
    assert!(
        quoted.starts_with('"') && quoted.ends_with('"') && quoted.len() > 10,
        "{etag}"
    );
    let body = String::from_utf8(page.body.clone()).unwrap();
    assert!(body.contains("---destpub-combined---"));

    // The query is never looked at, the page never reflects it.
    let hostile =
        "/dest5.html?d_nsid=%3Cscript%3Ealert(1)%3C/script%3E&x=%22%3E%3Cimg%20src%3Dx%3E";
    let other = get(&server.url(hostile)).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body, page.body);
    assert_eq!(other.header("etag").as_deref(), Some(etag.as_str()));
    assert!(!String::from_utf8_lossy(&other.body).contains("alert(1)"));

    // Revalidation: the same tag (strong, weak, in a list, or `*`) is a 304 without a body.
    for inm in [
        etag.clone(),
        quoted.to_string(),
        format!("\"other\", {etag}"),
        "*".to_string(),
    ] {
        let cached = get_with(&server.url("/dest5.html"), &[("if-none-match", &inm)]).await;
        assert_eq!(cached.status, 304, "If-None-Match: {inm}");
        assert!(cached.body.is_empty());
        assert_eq!(cached.header("etag").as_deref(), Some(etag.as_str()));
        assert!(cached
            .header("cache-control")
            .unwrap()
            .starts_with("public"));
    }
    for inm in ["\"other\"", "not a tag list", "W/"] {
        let fresh = get_with(&server.url("/dest5.html"), &[("if-none-match", inm)]).await;
        assert_eq!(fresh.status, 200, "If-None-Match: {inm}");
        assert_eq!(fresh.body, page.body);
    }

    let head = crate::common::read(
        crate::common::client()
            .head(server.url("/dest5.html"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag").as_deref(), Some(etag.as_str()));

    let posted = post(&server.url("/dest5.html"), "text/plain", b"x".to_vec()).await;
    assert_eq!(posted.status, 405);
    assert_eq!(get(&server.url("/dest5.html/x")).await.status, 404);
    server.stop().await;
}

/// The frame script's parser and history (`src/routes/assets/dest5.js`), with Node's test
/// runner. `TRIBUTARY_TEST_NODE` names another `node`.
#[test]
fn dest5_script_node_unit_tests() {
    static SKIPPED: Once = Once::new();
    let node = std::env::var("TRIBUTARY_TEST_NODE").unwrap_or_else(|_| "node".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new(&node)
        .args(["--test", "tests/js/"])
        .current_dir(root)
        .output();
    let output = match run {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip_once(
                &SKIPPED,
                &format!(
                    "JavaScript tests skipped: {node} not found (install Node.js 20 or later)"
                ),
            );
            return;
        }
        Err(e) => panic!("run {node}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test tests/js/ failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(
        !stdout.contains("# pass 0\n"),
        "no JavaScript test ran:\n{stdout}"
    );
}

/// A page of another site with the DCS's frame attached to it.
struct Attached<'a> {
    browser: &'a Browser,
    /// The DCS origin: where posts are addressed, where reports must come from.
    dcs_origin: String,
}

/// Opens `site`'s page on `localhost` and attaches `/dest5.html?d_nsid=0#<fragment>` as
/// VisitorAPI does; returns once the frame has loaded. Every message the page receives is
/// kept in `window.received`.
async fn attach<'a>(
    browser: &'a Browser,
    server: &TestServer,
    site: &TestSite,
    fragment: &str,
) -> Attached<'a> {
    browser
        .open(&format!("{}/page", site.origin("localhost")))
        .await;
    add_frame(browser, server, fragment).await;
    Attached {
        browser,
        dcs_origin: server.base.clone(),
    }
}

/// Attaches one more frame (the page's frames are numbered in order); waits for its load.
async fn add_frame(browser: &Browser, server: &TestServer, fragment: &str) {
    let loaded = browser
        .async_script(
            "const [src, done] = arguments;
             if (!window.received) {
               window.received = [];
               window.addEventListener('message', (event) => {
                 const frames = [...document.querySelectorAll('iframe')];
                 window.received.push({
                   origin: event.origin,
                   data: event.data,
                   frame: frames.findIndex((f) => f.contentWindow === event.source),
                 });
               });
             }
             const frame = document.createElement('iframe');
             frame.sandbox = 'allow-scripts allow-same-origin';
             frame.style.cssText = 'display: none; width: 0; height: 0;';
             frame.addEventListener('load', () => {
               frame.className = 'aamIframeLoaded';
               done(true);
             });
             frame.src = src;
             document.body.appendChild(frame);",
            vec![json!(
                server.url(&format!("/dest5.html?d_nsid=0#{fragment}"))
            )],
        )
        .await;
    assert_eq!(loaded, json!(true));
}

impl Attached<'_> {
    /// Posts `data` (a string, or any JSON value) to frame `index`, addressed to the DCS
    /// origin as VisitorAPI addresses it.
    async fn post_to(&self, index: usize, data: Value) {
        self.browser
            .script(
                "const [index, data, origin] = arguments;
                 document.querySelectorAll('iframe')[index].contentWindow.postMessage(data, origin);
                 return true;",
                vec![json!(index), data, json!(self.dcs_origin)],
            )
            .await;
    }

    async fn post(&self, data: String) {
        self.post_to(0, json!(data)).await;
    }

    /// What the page has received so far: {origin, data, frame}.
    async fn received(&self) -> Vec<Value> {
        match self.browser.script("return window.received;", vec![]).await {
            Value::Array(list) => list,
            other => panic!("received: {other}"),
        }
    }

    /// Waits for frame `index`'s `canSetThirdPartyCookies` report and returns its value.
    async fn third_party_cookies_report(&self, index: usize) -> String {
        let script =
            format!("return (window.received || []).find((m) => m.frame === {index}) || null;");
        let message = self
            .browser
            .wait_script("the frame's report", WAIT, &script)
            .await;
        assert_eq!(message["origin"], json!(self.dcs_origin), "{message}");
        let data = message["data"].as_str().unwrap().to_string();
        data.strip_prefix("---destpub-to-parent---canSetThirdPartyCookies|")
            .unwrap_or_else(|| panic!("not a report: {data}"))
            .to_string()
    }
}

/// Waits for the request `marker`, fired by frame `index` for a post sent after the ones
/// under test: the frame handles posts in order, so every fire of the earlier posts has been
/// made. Their hidden frames are then all in the frame's document: the sources returned.
/// (Images are not in the document; an image the frame fires goes out before a marker image
/// fired after it, so counts of those read at this point hold too.)
async fn after(browser: &Browser, site: &TestSite, index: u16, marker: &str) -> Vec<String> {
    site.wait_hits(marker, 1, WAIT).await;
    browser.enter_frame(index).await;
    let sources = browser
        .script(
            "return [...document.querySelectorAll('iframe')].map((f) => f.src);",
            vec![],
        )
        .await;
    browser.leave_frame().await;
    serde_json::from_value(sources).unwrap()
}

fn count(site: &TestSite, target: &str) -> usize {
    site.hits().iter().filter(|h| h.target == target).count()
}

#[actix_rt::test]
async fn dest5_fires_syncs_and_destinations_once_within_their_ttl() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = dcs().await;
    let site = TestSite::start().await;
    let partner = site.origin("127.0.0.1");
    let scheme_less = format!("//127.0.0.1:{}", site.port);
    let frame = attach(&browser, &server, &site, &enc(&site.origin("localhost"))).await;
    assert_eq!(frame.third_party_cookies_report(0).await, "true");

    let first = combined(&[
        ibs(
            "1001",
            "img",
            &[
                &format!("{scheme_less}/s/a1?uid=1,2"),
                &format!("{partner}/s/a2"),
            ],
            "60",
        ),
        ibs("1002", "iframe", &[&format!("{scheme_less}/s/b")], "60"),
        dest("7", "img", &format!("{partner}/d/img?seg=1%2C2")),
        dest("8", "iframe", &format!("{scheme_less}/d/frame")),
    ]);
    frame.post(first.clone()).await;
    for (target, kind) in [
        ("/s/a1?uid=1,2", "image"),
        ("/s/a2", "image"),
        ("/s/b", "iframe"),
        ("/d/img?seg=1%2C2", "image"),
        ("/d/frame", "iframe"),
    ] {
        let hits = site.wait_hits(target, 1, WAIT).await;
        assert_eq!(hits[0].dest, kind, "{target} fired as {}", hits[0].dest);
    }

    // Within the ttl the syncs are not fired again. (A browser does not request an image
    // again within one document, whatever its caching headers say: the frame-type sync is
    // what shows a refire in the same frame.)
    frame
        .post(combined(&[
            ibs("1001", "img", &[&format!("{partner}/s/a1?uid=1,2")], "60"),
            ibs("1002", "iframe", &[&format!("{partner}/s/b")], "60"),
            dest("9", "img", &format!("{partner}/mark/1")),
        ]))
        .await;
    let frames = after(&browser, &site, 0, "/mark/1").await;
    assert_eq!(
        frames,
        [format!("{partner}/s/b"), format!("{partner}/d/frame")]
    );
    assert_eq!(count(&site, "/s/b"), 1);

    // The history is kept in the frame origin's storage: a new frame on the page (a new
    // document) knows it too. Destinations have no ttl: the same one fires again.
    add_frame(&browser, &server, &enc(&site.origin("localhost"))).await;
    assert_eq!(frame.third_party_cookies_report(1).await, "true");
    frame
        .post_to(
            1,
            json!(combined(&[
                ibs("1001", "img", &[&format!("{partner}/s/a1?uid=1,2")], "60"),
                ibs("1002", "iframe", &[&format!("{partner}/s/b")], "60"),
                dest("7", "img", &format!("{partner}/d/img?seg=1%2C2")),
                dest("9", "img", &format!("{partner}/mark/2")),
            ])),
        )
        .await;
    site.wait_hits("/d/img?seg=1%2C2", 2, WAIT).await;
    assert!(after(&browser, &site, 1, "/mark/2").await.is_empty());
    assert_eq!(count(&site, "/s/a1?uid=1,2"), 1);
    assert_eq!(count(&site, "/s/b"), 1);

    // The clear marker (sent after a region change) forgets every sync: they fire again.
    frame.post_to(1, json!(format!("{CLEAR}{first}"))).await;
    site.wait_hits("/s/a1?uid=1,2", 2, WAIT).await;
    site.wait_hits("/s/a2", 2, WAIT).await;
    site.wait_hits("/s/b", 2, WAIT).await;

    // A sync without a ttl is not remembered.
    let no_ttl = combined(&[ibs("1003", "iframe", &[&format!("{partner}/s/c")], "")]);
    frame.post(no_ttl.clone()).await;
    frame.post(no_ttl).await;
    site.wait_hits("/s/c", 2, WAIT).await;

    // The frame loaded nothing but what it was told to (the page has its favicon).
    let expected = ["/page", "/favicon.ico", "/s/", "/d/", "/mark/"];
    let unexpected: Vec<_> = site
        .hits()
        .into_iter()
        .filter(|h| !expected.iter().any(|p| h.target.starts_with(p)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert_eq!(
        frame.received().await.len(),
        2,
        "one report per frame, nothing else"
    );
    browser.close().await;
    site.stop().await;
    server.stop().await;
}

#[actix_rt::test]
async fn dest5_fires_nothing_on_hostile_input_and_keeps_working() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = dcs().await;
    let site = TestSite::start().await;
    let partner = site.origin("127.0.0.1");
    let pwned = |what: &str| format!("{partner}/pwned/{what}");

    // Fragments that are no plain origin: the frame reports to no one, and still works.
    let hostile_fragments = [
        String::new(),
        "*".to_string(),
        enc("javascript:parent.postMessage('pwned','*')"),
        enc(&format!("{}/page", site.origin("localhost"))),
        enc(&format!("{}\"><img src=x>", site.origin("localhost"))),
        "%E0%A4%A".to_string(),
    ];
    let frame = attach(&browser, &server, &site, &hostile_fragments[0]).await;
    for fragment in &hostile_fragments[1..] {
        add_frame(&browser, &server, fragment).await;
    }
    // The last frame, with its parent's origin, reports; none before it did.
    let good = hostile_fragments.len();
    add_frame(&browser, &server, &enc(&site.origin("localhost"))).await;
    assert_eq!(frame.third_party_cookies_report(good).await, "true");
    let received = frame.received().await;
    assert_eq!(received.len(), 1, "{received:?}");

    let js = |what: &str| format!("javascript:new Image().src='{}'", pwned(what));
    let html = |what: &str| format!("data:text/html,<img src=\"{}\">", pwned(what));
    let oversized = combined(&[
        ibs("2001", "img", &[&pwned("oversized")], "60"),
        dest(
            "1",
            "img",
            &format!("{}?{}", pwned("oversized-dest"), "x".repeat(70_000)),
        ),
    ]);
    let many: Vec<String> = (0..101)
        .map(|_| dest("1", "img", &pwned("too-many")))
        .collect();
    let many_urls: Vec<String> = (0..11)
        .map(|_| ibs("2002", "img", &[pwned("too-many-urls").as_str(); 20], "60"))
        .collect();
    let posts = vec![
        json!(combined(&[
            ibs("2003", "img", &[&js("ibs-img")], "60"),
            ibs("2004", "iframe", &[&js("ibs-iframe")], "60"),
            ibs("2005", "iframe", &[&html("ibs-data")], "60"),
            ibs("2006", "iframe", &[&pwned("mixed"), &js("mixed")], "60"),
            dest("1", "iframe", &js("dest-iframe")),
            dest("1", "img", &html("dest-data")),
            dest("1", "iframe", &format!(" {}", js("dest-space"))),
            dest(
                "1",
                "iframe",
                &format!("java\tscript:new Image().src='{}'", pwned("tab"))
            ),
            dest(
                &format!("<img src=\"{}\">", pwned("id")),
                "img",
                &pwned("id-html")
            ),
            dest(
                "1",
                &format!("<img src=\"{}\">", pwned("tag")),
                &pwned("tag-html")
            ),
            format!("ibs|1|img|{}|%E0%A4%A", enc(&pwned("bad-escape"))),
        ])),
        json!(oversized),
        json!(combined(&many)),
        json!(combined(&many_urls)),
        json!(format!(
            "---destpub---{}",
            ibs("2007", "img", &[&pwned("legacy")], "60")
        )),
        json!({"ibs": pwned("object")}),
        json!([COMBINED, dest("1", "img", &pwned("array"))]),
        json!(null),
    ];
    for data in posts {
        frame.post_to(good, data).await;
    }
    // The frame still works: a post after all those fires.
    frame
        .post_to(
            good,
            json!(combined(&[dest(
                "9",
                "img",
                &format!("{partner}/ok/after")
            )])),
        )
        .await;
    let frames = after(&browser, &site, good as u16, "/ok/after").await;
    assert!(frames.is_empty(), "{frames:?}");
    let fired = site.hits_to("/pwned/");
    assert!(fired.is_empty(), "{fired:?}");
    // No hostile frame fires either: each gets a post it accepts.
    for index in 0..hostile_fragments.len() {
        let mark = format!("{partner}/ok/frame{index}");
        frame
            .post_to(index, json!(combined(&[dest("9", "img", &mark)])))
            .await;
        let frames = after(&browser, &site, index as u16, &format!("/ok/frame{index}")).await;
        assert!(frames.is_empty(), "{frames:?}");
    }
    assert_eq!(frame.received().await.len(), 1);
    assert!(site.hits_to("/pwned/").is_empty());
    browser.close().await;
    site.stop().await;
    server.stop().await;
}

#[actix_rt::test]
async fn dest5_reports_false_where_third_party_cookies_are_blocked_and_still_fires() {
    let Some(browser) = Browser::start(Options::blocking_third_party_cookies()).await else {
        return;
    };
    let server = dcs().await;
    let site = TestSite::start().await;
    let partner = site.origin("127.0.0.1");
    let frame = attach(&browser, &server, &site, &enc(&site.origin("localhost"))).await;
    assert_eq!(frame.third_party_cookies_report(0).await, "false");

    // Syncs still fire, once within their ttl. (A frame sync, so that a refire would show:
    // images are not requested twice in one document.)
    let sync = ibs("3001", "iframe", &[&format!("{partner}/s/blocked")], "60");
    frame.post(combined(std::slice::from_ref(&sync))).await;
    site.wait_hits("/s/blocked", 1, WAIT).await;
    frame
        .post(combined(&[
            sync,
            dest("9", "img", &format!("{partner}/mark/2")),
        ]))
        .await;
    let frames = after(&browser, &site, 0, "/mark/2").await;
    assert_eq!(frames, [format!("{partner}/s/blocked")]);
    assert_eq!(count(&site, "/s/blocked"), 1);
    browser.close().await;
    site.stop().await;
    server.stop().await;
}
