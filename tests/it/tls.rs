//! Built-in TLS on the public listener (`[server] tls_cert`, `tls_key`): `/event` over HTTPS
//! with the `SameSite=None; Secure` cookie browsers need, HTTP/1.1 only whatever the client
//! offers, start-up errors that name the key, and `tributary demo --tls`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use awc::http::Version;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tributary::server::{self, StartError, StartOptions};

use crate::common::demo::DemoProcess;
use crate::common::*;

/// A self-signed certificate for localhost and 127.0.0.1, written into `dir` as
/// `<name>.crt` and `<name>.key`.
struct SelfSigned {
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

fn self_signed(dir: &Path, name: &str) -> SelfSigned {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    SelfSigned {
        cert,
        key,
        pem: made.cert.pem(),
    }
}

/// A rustls client configuration that trusts only the certificates of `pem`, offering `alpn`.
fn client_config(pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// An awc client that trusts `pem` and, as browsers do, offers HTTP/2 before HTTP/1.1.
fn https_client(pem: &str) -> awc::Client {
    let config = client_config(pem, &[b"h2", b"http/1.1"]);
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .timeout(Duration::from_secs(30))
        .finish()
}

async fn https_server(tls: &SelfSigned) -> TestServer {
    TestServer::start_with(
        &catalog(vec![], serde_json::json!([]), serde_json::json!([])),
        |c| {
            c.server.tls_cert = tls.cert.clone();
            c.server.tls_key = tls.key.clone();
        },
    )
    .await
}

#[actix_web::test]
async fn event_over_https_sets_the_third_party_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path(), "site");
    let server = https_server(&tls).await;
    let base = format!("https://{}", server.running.addr());
    let trusting = https_client(&tls.pem);

    let res = trusting
        .get(format!("{base}/event?d_rtbd=json"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(
        res.version(),
        Version::HTTP_11,
        "HTTP/1.1 though h2 was offered"
    );
    let reply = read(res).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let uuid = body["uuid"].as_str().expect("a visitor id").to_string();
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(reply.visitor_cookie().as_deref(), Some(&*uuid));
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("; Secure"),
        "a browser keeps a third-party cookie only with SameSite=None; Secure: {cookie}"
    );

    // The cookie identifies the visitor on the next call, still over HTTPS.
    let again = trusting
        .get(format!("{base}/event?d_rtbd=json"))
        .insert_header(("cookie", format!("demdex={uuid}")))
        .send()
        .await
        .expect("HTTPS request");
    let again = read(again).await;
    assert_eq!(again.json()["uuid"], uuid.as_str());

    // Plain HTTP on the TLS port is no answer at all.
    let plain = client()
        .get(format!("http://{}/health", server.running.addr()))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP answered: {:?}",
        plain.map(|r| r.status())
    );

    // A client that does not trust the certificate is refused (the default roots do not).
    assert!(client().get(format!("{base}/health")).send().await.is_err());
    server.stop().await;
}

/// A handshake and `GET /health` with a blocking rustls client offering `alpn`: the protocol
/// the server chose and the start of its answer, or the handshake's error.
fn raw_https_get(addr: SocketAddr, pem: &str, alpn: &[&[u8]]) -> Result<(Vec<u8>, String), String> {
    let config = Arc::new(client_config(pem, alpn));
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
    Ok((alpn, String::from_utf8_lossy(&head).into_owned()))
}

#[actix_web::test]
async fn the_listener_speaks_http_1_1_only() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path(), "site");
    let server = https_server(&tls).await;
    let addr = server.running.addr();
    let pem = tls.pem.clone();
    let (browser_like, no_alpn, h2_only) = actix_web::rt::task::spawn_blocking(move || {
        (
            raw_https_get(addr, &pem, &[b"h2", b"http/1.1"]),
            raw_https_get(addr, &pem, &[]),
            raw_https_get(addr, &pem, &[b"h2"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        browser_like,
        Ok((b"http/1.1".to_vec(), "HTTP/1.1 200".to_string()))
    );
    assert_eq!(no_alpn, Ok((Vec::new(), "HTTP/1.1 200".to_string())));
    let refused = h2_only.expect_err("an h2-only client is refused");
    assert!(refused.contains("NoApplicationProtocol"), "{refused}");
    server.stop().await;
}

/// What `server::start` says of a configuration whose TLS files are `cert` and `key`.
async fn start_error(dir: &Path, cert: &Path, key: &Path) -> String {
    let catalog = catalog(vec![], serde_json::json!([]), serde_json::json!([]));
    let mut config = test_config(dir, &catalog);
    config.server.tls_cert = cert.to_path_buf();
    config.server.tls_key = key.to_path_buf();
    config.validate().expect("the files exist");
    match server::start(
        config,
        StartOptions {
            handle_signals: false,
        },
    )
    .await
    {
        Err(StartError::Tls(e)) => e.to_string(),
        Err(other) => panic!("not a TLS error: {other}"),
        Ok(_) => panic!("started with {} and {}", cert.display(), key.display()),
    }
}

#[actix_web::test]
async fn bad_tls_files_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let site = self_signed(dir.path(), "site");
    let other = self_signed(dir.path(), "other");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();

    // Only one of the two keys: the configuration is refused before anything starts.
    let catalog = catalog(vec![], serde_json::json!([]), serde_json::json!([]));
    let mut config = test_config(dir.path(), &catalog);
    config.server.tls_cert = site.cert.clone();
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "config key server.tls_key: must be set with server.tls_cert (both for HTTPS, neither \
         for HTTP)"
    );
    config.server.tls_cert = PathBuf::new();
    config.server.tls_key = site.key.clone();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("config key server.tls_cert: must be set with server.tls_key"));

    assert_eq!(
        start_error(dir.path(), &not_pem, &site.key).await,
        format!(
            "config key server.tls_cert: {} holds no certificate (a PEM \"CERTIFICATE\" block)",
            not_pem.display()
        )
    );
    let e = start_error(dir.path(), &site.cert, &not_pem).await;
    assert!(
        e.starts_with(&format!(
            "config key server.tls_key: {} holds no private key",
            not_pem.display()
        )),
        "{e}"
    );
    assert_eq!(
        start_error(dir.path(), &site.cert, &other.key).await,
        format!(
            "config key server.tls_key: the key in {} does not belong to the certificate in {}",
            other.key.display(),
            site.cert.display()
        )
    );
}

#[actix_web::test]
async fn serve_exits_with_the_message_on_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let site = self_signed(dir.path(), "site");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "serve",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
        .env("TRIBUTARY__STORE__PATH", dir.path().join("store"))
        .env("TRIBUTARY__SERVER__TLS_CERT", &not_pem)
        .env("TRIBUTARY__SERVER__TLS_KEY", &site.key)
        .env("RUST_LOG", "off")
        .output()
        .expect("run tributary serve");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "tributary: config key server.tls_cert: {} holds no certificate (a PEM \
             \"CERTIFICATE\" block)",
            not_pem.display()
        )
    );
    // Refused before the store was opened.
    assert!(!dir.path().join("store").exists());
}

#[actix_web::test]
async fn the_demo_serves_https_with_a_certificate_of_its_own() {
    let demo = DemoProcess::spawn(&["--tls"]);
    let printed = &demo.printed;
    let endpoint = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("DCS endpoint: "))
        .expect("endpoint printed")
        .to_string();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let cert = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("certificate:"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("certificate path printed: {printed:#?}"));
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("curl --cacert {} -s", cert.display()))),
        "the walkthrough's curl trusts the certificate: {printed:#?}"
    );
    let pem = std::fs::read_to_string(&cert).expect("certificate written");

    let res = https_client(&pem)
        .get(format!("{endpoint}?d_rtbd=json&d_cts=2&c_page=cars"))
        .send()
        .await
        .expect("HTTPS request trusting the printed certificate");
    let reply = read(res).await;
    assert_eq!(reply.status, 200);
    // acme answers every visitor, with segments for some of them (`nodata` for the others).
    let acme = reply.json()["providers"]["acme"].clone();
    assert!(acme == "ok" || acme == "nodata", "{}", reply.json());
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("; Secure"),
        "{cookie}"
    );

    demo.stop();
    assert!(
        !cert.exists(),
        "the certificate goes with the demo's temporary directory"
    );
}
