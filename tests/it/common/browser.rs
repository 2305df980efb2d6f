//! A real browser for the tests: Debian's Chromium, headless, driven through its chromedriver
//! over WebDriver (the `fantoccini` client), one chromedriver and one fresh profile per
//! [`Browser`]. `.ci/run` installs both (`apt-get install chromium chromium-driver`); where
//! either is missing, [`Browser::start`] prints one line and returns `None`, and the test
//! returns early. `TRIBUTARY_TEST_CHROMIUM` and `TRIBUTARY_TEST_CHROMEDRIVER` name other
//! binaries (a missing path shows the skip).
//!
//! Also here: [`TestSite`], "another site" for the browser to visit, which records every
//! request it gets. `127.0.0.1` and `localhost` are different sites for cookies, so one
//! server on loopback is first- or third-party depending on the name it is reached by.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use tempfile::TempDir;

use super::{wait_for, wait_until};

pub const CHROMIUM_VAR: &str = "TRIBUTARY_TEST_CHROMIUM";
pub const CHROMEDRIVER_VAR: &str = "TRIBUTARY_TEST_CHROMEDRIVER";

/// Without the networking switches Chromium reaches for Google's services at start, which
/// this machine's closed network refuses (and which slows every start elsewhere).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=800,600",
];

/// How long one script may run in the page before WebDriver gives up on it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Chromium's "Block third-party cookies". (Third-party frames keep their storage, which
    /// Chromium partitions by top site anyway.)
    pub block_third_party_cookies: bool,
    /// Chromium's `--host-resolver-rules`, e.g. `MAP *.demdex.net 127.0.0.1:8080`: host names
    /// a library hard-codes, sent to a server on loopback.
    pub host_rules: Option<String>,
}

impl Options {
    /// Chromium as a browser that blocks third-party cookies would run it, and nothing else.
    pub fn blocking_third_party_cookies() -> Self {
        Options {
            block_third_party_cookies: true,
            ..Default::default()
        }
    }
}

pub struct Browser {
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: TempDir,
}

/// Prints `line` to the test binary's stderr once per run. Written to the stream directly,
/// as the test harness captures `eprintln!` of passing tests.
pub fn skip_once(once: &'static Once, line: &str) {
    once.call_once(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
}

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// A headless Chromium with a fresh profile, or `None` (said once per run) when Chromium
    /// or chromedriver is not installed.
    pub async fn start(options: Options) -> Option<Browser> {
        static SKIPPED: Once = Once::new();
        let chromium = binary(CHROMIUM_VAR, "/usr/bin/chromium");
        let chromedriver = binary(CHROMEDRIVER_VAR, "/usr/bin/chromedriver");
        for path in [&chromium, &chromedriver] {
            if !path.is_file() {
                skip_once(
                    &SKIPPED,
                    &format!(
                        "browser tests skipped: {} not found (apt-get install chromium chromium-driver)",
                        path.display()
                    ),
                );
                return None;
            }
        }
        let profile = tempfile::tempdir().unwrap();
        let (driver, port) = start_driver(&chromedriver).await;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        if let Some(rules) = &options.host_rules {
            args.push(format!("--host-resolver-rules={rules}"));
        }
        // cookie_controls_mode is the setting's current name, block_third_party_cookies the
        // older one; both are set so that either Chromium reads the same choice.
        let block = options.block_third_party_cookies;
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "prefs": {
                    "profile.cookie_controls_mode": if block { 1 } else { 0 },
                    "profile.block_third_party_cookies": block,
                },
            },
            "timeouts": {"script": SCRIPT_TIMEOUT.as_millis() as u64, "pageLoad": 30_000},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let mut browser = Browser {
            client: None,
            driver,
            _profile: profile,
        };
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start {}: {e}", chromium.display()));
        browser.client = Some(client);
        Some(browser)
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("browser session")
    }

    /// Resizes the window, e.g. to a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client()
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
    }

    /// Navigates to `url` and waits for its load event.
    pub async fn open(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body: `arguments` are `args`, `return` gives the result) in
    /// the current page and returns its result as JSON.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Like [`Browser::script`], for a script that finishes by calling its last argument
    /// (`arguments[arguments.length - 1]`) with the result.
    pub async fn async_script(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Runs `script` until it returns something other than `null`, `false` or `undefined`,
    /// and returns that.
    pub async fn wait_script(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_for(what, timeout, || async move {
            match self.script(script, Vec::new()).await {
                Value::Null | Value::Bool(false) => Err(String::new()),
                value => Ok(value),
            }
        })
        .await
    }

    /// The cookies WebDriver sees for the current page, as (name, value).
    pub async fn cookies(&self) -> Vec<(String, String)> {
        self.client()
            .get_all_cookies()
            .await
            .expect("cookies")
            .iter()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect()
    }

    /// Scripts run in the page's `index`-th frame from now on.
    pub async fn enter_frame(&self, index: u16) {
        self.client().enter_frame(index).await.expect("enter frame");
    }

    /// Scripts run in the parent of the current frame again.
    pub async fn leave_frame(&self) {
        self.client()
            .enter_parent_frame()
            .await
            .expect("leave frame");
    }

    /// Ends the session (Chromium quits) and chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, Chromium's processes included: a test
        // that failed without closing the session leaves none of them behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver on a free loopback port, once it answers.
async fn start_driver(chromedriver: &PathBuf) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        // Ready once it accepts connections, unless it exited (the port was taken meanwhile).
        let up = wait_for("chromedriver to listen", Duration::from_secs(10), || {
            let exited = child.try_wait().ok().flatten().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| true)
            }
        })
        .await;
        if up {
            return (child, port);
        }
        let _ = child.wait();
    }
    panic!("chromedriver did not start");
}

/// One request [`TestSite`] received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Path and query, as sent.
    pub target: String,
    /// `Sec-Fetch-Dest`: `image`, `iframe`, `document`…
    pub dest: String,
}

/// A site on loopback for the browser: `/page` is an empty page, `/set-cookie?<name>` sets
/// the cookie `<name>=1` (`SameSite=None; Secure`, so that it may be third-party), and every
/// other path answers a 1×1 GIF. Every request is recorded.
pub struct TestSite {
    pub port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    handle: ServerHandle,
}

const PAGE: &str =
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>site</title></head><body></body></html>";

async fn site_answer(req: HttpRequest, hits: web::Data<Mutex<Vec<Hit>>>) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let dest = req
        .headers()
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    hits.lock().unwrap().push(Hit {
        target: target.clone(),
        dest,
    });
    match req.path() {
        "/page" => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(PAGE),
        "/set-cookie" => HttpResponse::Ok()
            .insert_header((
                "set-cookie",
                format!(
                    "{}=1; Path=/; Max-Age=600; SameSite=None; Secure",
                    req.query_string()
                ),
            ))
            .content_type("text/html; charset=utf-8")
            .body(PAGE),
        _ => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .content_type("image/gif")
            .body(tributary::core::response::PIXEL_GIF),
    }
}

impl TestSite {
    pub async fn start() -> TestSite {
        let hits = web::Data::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(recorded.clone())
                .default_service(web::to(site_answer))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind test site");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        TestSite {
            port,
            hits: hits.into_inner(),
            handle,
        }
    }

    /// `http://<host>:<port>`: with `localhost` and `127.0.0.1` the same server is two sites.
    pub fn origin(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn hits_to(&self, prefix: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.target.starts_with(prefix))
            .collect()
    }

    /// Waits until `count` requests to `path` (exactly, query included) have come.
    pub async fn wait_hits(&self, target: &str, count: usize, timeout: Duration) -> Vec<Hit> {
        wait_until(&format!("{count} requests to {target}"), timeout, || {
            let seen: Vec<Hit> = self
                .hits()
                .into_iter()
                .filter(|h| h.target == target)
                .collect();
            if seen.len() >= count {
                Ok(seen)
            } else {
                Err(format!("{} so far", seen.len()))
            }
        })
        .await
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
