//! `tributary demo`: the whole real-time path on one machine, in one command.
//!
//! Starts three sample providers on loopback — `acme` (fast, answers cached for a minute),
//! `slowco` (sometimes slower than the deadline) and `idco` (asked only about visitors it knows
//! through an ID sync) — seeds the sample catalog (`demo/catalog.json`, compiled in) into a
//! store in a temporary directory, and serves until Ctrl-C. With `--tls`, the public listener
//! serves HTTPS with a self-signed certificate for localhost made in that directory, so a page
//! on another origin can be given the `SameSite=None; Secure` cookie.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::core::catalog::{AskFor, Catalog, Destination, Provider};
use crate::core::id_service::SyncPartner;
use crate::server::{self, StartOptions};
use crate::tools::demo_site::DemoSite;
use crate::tools::mock_provider::{self, MockBehavior};

/// The sample catalog's traits and segments.
pub const DEMO_CATALOG: &str = include_str!("../../demo/catalog.json");

/// How long the demo's certificate is valid: one run's worth and more, and well within what
/// browsers accept of a certificate (Apple's platforms refuse more than 825 days).
const DEMO_CERT_DAYS: i64 = 30;

/// Runs the demo with the settings of `config_path` (if it exists) and an embedded store in a
/// temporary directory; `tls`: HTTPS with a self-signed certificate made there. Must be called
/// inside an actix `System`.
pub async fn run(config_path: &Path, tls: bool) -> Result<(), String> {
    let mut config = if config_path.exists() {
        Config::load(config_path).map_err(|e| e.to_string())?
    } else {
        Config::from_toml("", None).map_err(|e| e.to_string())?
    };
    let dir = tempfile::Builder::new()
        .prefix("tributary-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    config.store.path = dir.path().join("store");
    let demo_cert = if tls {
        let (cert, key) = self_signed_certificate(dir.path())?;
        config.server.tls_cert = cert.clone();
        config.server.tls_key = key;
        Some(cert)
    } else {
        None
    };

    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let acme = mock_provider::start(
        loopback,
        MockBehavior {
            name: "acme".into(),
            segments: vec![("auto-intender".into(), 0.6), ("age-25-34".into(), 0.5)],
            latency_ms: (2, 8),
            ..Default::default()
        },
        1,
    )
    .await
    .map_err(|e| format!("cannot start the sample provider acme: {e}"))?;
    let slowco = mock_provider::start(
        loopback,
        MockBehavior {
            name: "slowco".into(),
            segments: vec![("sports-fan".into(), 0.7)],
            latency_ms: (5, 15),
            slow_share: 0.3,
            slow_ms: 400,
            ..Default::default()
        },
        1,
    )
    .await
    .map_err(|e| format!("cannot start the sample provider slowco: {e}"))?;

    let idco = mock_provider::start(
        loopback,
        MockBehavior {
            name: "idco".into(),
            segments: vec![("loyal-customer".into(), 1.0)],
            latency_ms: (2, 6),
            ..Default::default()
        },
        1,
    )
    .await
    .map_err(|e| format!("cannot start the sample provider idco: {e}"))?;

    let mut catalog: Catalog =
        serde_json::from_str(DEMO_CATALOG).map_err(|e| format!("demo catalog: {e}"))?;
    catalog.providers = vec![
        // acme's answers are kept with the visitor for a minute: from a visitor's second event
        // on, it shows `cached` instead of being called again.
        demo_provider(1, "acme", acme.url(), 1001, 60, 60),
        demo_provider(2, "slowco", slowco.url(), 1002, 60, 0),
        // idco knows visitors by its own ids: it is asked only about visitors synced with its
        // data source 1003 (`/ibs:dpid=1003&dpuuid=…` or `d_cid=1003%01…`).
        Provider {
            ask_for: AskFor::Synced,
            ..demo_provider(3, "idco", idco.url(), IDCO_DATA_SOURCE, 60, 0)
        },
    ];
    // The demo's web site: its pages use the tag and the ID service; it also plays the URL
    // destination and idco's ID sync partner.
    let site = DemoSite::start(IDCO_DATA_SOURCE)
        .await
        .map_err(|e| format!("cannot start the demo site: {e}"))?;
    catalog.destinations = demo_destinations(&site.origin)?;
    config.id_service.syncs = vec![SyncPartner {
        id: site.sync_dpid,
        url: format!("{}/sync?u=${{DD_UUID}}", site.origin),
        ttl_minutes: 60,
        tag: "img".into(),
    }];
    let seed = dir.path().join("catalog.json");
    let text = serde_json::to_string_pretty(&catalog).map_err(|e| e.to_string())?;
    std::fs::write(&seed, text).map_err(|e| format!("cannot write {}: {e}", seed.display()))?;
    config.catalog.seed = Some(seed);
    config.providers.clear();

    let config_tls = config.server.tls().is_some();
    let running = server::start(
        config,
        StartOptions {
            handle_signals: true,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let scheme = if config_tls { "https" } else { "http" };
    let base = format!("{scheme}://{}", running.addr());
    site.serve_dcs(&base);
    // curl must be told to trust the demo's own certificate.
    let curl = match &demo_cert {
        Some(cert) => format!("curl --cacert {}", cert.display()),
        None => "curl".to_string(),
    };
    println!();
    println!(
        "Tributary demo is running (store in {}).",
        dir.path().display()
    );
    println!("  DCS endpoint: {base}/event");
    println!(
        "  demo site:    {}/ (open it in a browser: the site tag, and the ID service as Adobe's libraries call it)",
        site.origin
    );
    if let Some(cert) = &demo_cert {
        println!(
            "  certificate:  {} (self-signed for localhost and 127.0.0.1, valid {DEMO_CERT_DAYS} days)",
            cert.display()
        );
        println!("                curl: --cacert as below; a browser: open {base}/health once and accept");
        println!("                the warning, or add the file to its trusted authorities (new every run)");
    }
    println!(
        "  console:      http://{}/ui/ (sign in with the admin token logged above)",
        running.admin_addr()
    );
    println!(
        "  admin API:    http://{}/v1 (bearer token: [admin] token, or the one logged above; docs at /docs)",
        running.admin_addr()
    );
    println!(
        "  providers:    acme at {} (fast, answers cached 60 s), slowco at {} (30% of calls take 400 ms),",
        acme.url(),
        slowco.url()
    );
    println!(
        "                idco at {} (asked only about visitors synced with its data source 1003)",
        idco.url()
    );
    println!(
        "  catalog:      {} traits, {} segments (demo/catalog.json)",
        catalog.traits.len(),
        catalog.segments.len()
    );
    println!();
    println!("Try (the calls share a visitor cookie; the second shows acme `cached`):");
    println!("  {curl} -s -c /tmp/tributary.jar -b /tmp/tributary.jar '{base}/event?d_rtbd=json&d_cts=2&c_page=cars&c_section=sport'");
    println!("  {curl} -s -c /tmp/tributary.jar -b /tmp/tributary.jar '{base}/event?d_rtbd=json&d_cts=2&c_basket=150'");
    println!("Sync the visitor with idco (as idco's own sync pixel would), then idco is asked too (segment 106):");
    println!("  {curl} -s -o /dev/null -w '%{{http_code}}\\n' -c /tmp/tributary.jar -b /tmp/tributary.jar '{base}/ibs:dpid=1003&dpuuid=idco-user-42'");
    println!(
        "  {curl} -s -c /tmp/tributary.jar -b /tmp/tributary.jar '{base}/event?d_rtbd=json&d_cts=2'"
    );
    println!("Metrics: {base}/metrics   Press Ctrl-C to stop.");
    println!();
    running.wait().await.map_err(|e| e.to_string())?;
    acme.stop().await;
    slowco.stop().await;
    idco.stop().await;
    site.stop().await;
    drop(dir);
    Ok(())
}

/// A self-signed certificate for `localhost` and `127.0.0.1` and its key, written as PEM into
/// `dir/tls/`: (certificate, key).
fn self_signed_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let failed = |e: rcgen::Error| format!("cannot make the demo certificate: {e}");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(failed)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tributary demo (localhost)");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // A day back, for clocks a little behind.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(DEMO_CERT_DAYS);
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;

    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)
        .map_err(|e| format!("cannot create {}: {e}", tls_dir.display()))?;
    let cert_path = tls_dir.join("cert.pem");
    let key_path = tls_dir.join("key.pem");
    for (path, text) in [(&cert_path, cert.pem()), (&key_path, key.serialize_pem())] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((cert_path, key_path))
}

/// idco's data source: its synced ids, and its ID sync partner's `dpid`.
const IDCO_DATA_SOURCE: u32 = 1003;

/// A cookie destination (`demo_segs`, written by the tag on the demo site) and a URL
/// destination (the demo site's `/px`, fired through `/dest5.html`) for the sample segments.
fn demo_destinations(site: &str) -> Result<Vec<Destination>, String> {
    serde_json::from_value(serde_json::json!([
        {"destinationId": 1, "name": "Demo ad server (cookie)", "destinationType": "ADS",
         "cookieName": "demo_segs", "formatType": "single_key", "singleKey": "segs", "ttl": 14,
         "mappings": [{"sid": 101}, {"sid": 103}, {"sid": 106}]},
        {"destinationId": 2, "name": "Demo pixel (URL)", "destinationType": "PUSH",
         "urlFormatString": format!("{site}/px?seg=%ALIAS%&uid=%DID%"),
         "mappings": [{"sid": 101, "traitAlias": "auto-shopper"}, {"sid": 106, "traitAlias": "loyal"}]}
    ]))
    .map_err(|e| format!("demo destinations: {e}"))
}

fn demo_provider(
    pid: u32,
    name: &str,
    url: String,
    data_source_id: u32,
    timeout_ms: u32,
    cache_ttl_secs: u32,
) -> Provider {
    Provider {
        pid,
        name: name.into(),
        url,
        data_source_id,
        timeout_ms,
        cache_ttl_secs,
        ask_for: AskFor::All,
        tcf_vendor_id: None,
        secret: None,
        enabled: true,
    }
}
