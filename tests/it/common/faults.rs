//! Peers that misbehave on real sockets, for the fault matrix (`tests/it/fault_matrix.rs`):
//! each [`Fault`] is one way a provider or an S2S destination can fail a call. Each
//! [`FaultServer`] runs on a thread of its own, so that what a fault does (writing 50 MB,
//! trickling) is not done on the test's thread, which times the answers.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One way a peer can fail a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accepts, reads the request, never answers.
    NoAnswer,
    /// Sends `200` and its headers (`Content-Length: 1000`), never the body.
    HeadersThenNothing,
    /// Sends `200` and its headers (`Content-Length: 1000`), then a body byte every 50 ms.
    Trickle,
    /// Sends a 50 MB body (`Content-Length` given) as fast as the socket takes it.
    HugeBody,
    /// The same 50 MB chunked, so that no length announces it.
    HugeChunked,
    /// `200` with a body that is not JSON.
    BadJson,
    /// `200` with valid JSON that is not the answer format.
    WrongShape,
    /// `503`.
    ServerError,
    /// `302` to its own URL.
    RedirectLoop,
    /// Nothing listens: the port was bound, then closed.
    Refused,
    /// HTTPS with a self-signed certificate, which the caller does not trust.
    TlsBadCert,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::NoAnswer,
        Fault::HeadersThenNothing,
        Fault::Trickle,
        Fault::HugeBody,
        Fault::HugeChunked,
        Fault::BadJson,
        Fault::WrongShape,
        Fault::ServerError,
        Fault::RedirectLoop,
        Fault::Refused,
        Fault::TlsBadCert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::NoAnswer => "no_answer",
            Fault::HeadersThenNothing => "headers_then_nothing",
            Fault::Trickle => "trickle",
            Fault::HugeBody => "huge_body",
            Fault::HugeChunked => "huge_chunked",
            Fault::BadJson => "bad_json",
            Fault::WrongShape => "wrong_shape",
            Fault::ServerError => "server_error",
            Fault::RedirectLoop => "redirect_loop",
            Fault::Refused => "refused",
            Fault::TlsBadCert => "tls_bad_cert",
        }
    }
}

/// How big the huge bodies are.
pub const HUGE: usize = 50 << 20;

/// The answer of a provider that knows the visitor as `healthy-seg` (what [`Fault::TlsBadCert`]
/// answers a client that trusts it).
pub const SEGMENT_ANSWER: &str =
    r#"{"user":{"data":[{"id":"p","segment":[{"id":"healthy-seg"}]}]}}"#;

/// What a fault server saw, shared with its thread.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    written: AtomicUsize,
    /// While set, every request is answered `200` with no body instead of the fault.
    healthy: AtomicBool,
    /// JSON bodies of the requests answered while healthy.
    accepted: Mutex<Vec<serde_json::Value>>,
}

/// A peer on 127.0.0.1 that fails every call in the way of its [`Fault`] (until
/// [`FaultServer::recover`]), on a thread of its own; dropping it stops that thread.
pub struct FaultServer {
    pub url: String,
    /// The certificate a [`Fault::TlsBadCert`] server presents (PEM), for a client that trusts it.
    pub cert_pem: Option<String>,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultServer {
    pub fn start(fault: Fault) -> FaultServer {
        Self::spawn(fault, false)
    }

    /// A peer that answers `200` to everything (a healthy S2S destination): a fault server
    /// recovered from the start (which plain-HTTP fault it would have is never seen).
    pub fn healthy() -> FaultServer {
        Self::spawn(Fault::ServerError, true)
    }

    fn spawn(fault: Fault, healthy: bool) -> FaultServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        let addr = listener.local_addr().unwrap();
        let scheme = if fault == Fault::TlsBadCert {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{addr}/peer");
        let seen = Arc::new(Seen::default());
        seen.healthy.store(healthy, Ordering::SeqCst);
        if fault == Fault::Refused {
            drop(listener);
            return FaultServer {
                url,
                cert_pem: None,
                seen,
                stop: None,
                thread: None,
            };
        }
        let tls = (fault == Fault::TlsBadCert).then(self_signed);
        let cert_pem = tls.as_ref().map(|(_, pem)| pem.clone());
        let tls = tls.map(|(config, _)| config);
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (state, own_url) = (seen.clone(), url.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accepting = async {
                    while let Ok((socket, _)) = listener.accept().await {
                        state.connections.fetch_add(1, Ordering::SeqCst);
                        let (state, own_url) = (state.clone(), own_url.clone());
                        match &tls {
                            Some(config) => {
                                let config = config.clone();
                                let socket = socket.into_std().unwrap();
                                tokio::task::spawn_blocking(move || {
                                    tls_session(socket, config, &state)
                                });
                            }
                            None => {
                                tokio::spawn(async move {
                                    serve(fault, socket, &state, &own_url).await;
                                });
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = accepting => {}
                    _ = stopped => {}
                }
            });
            // A TLS session blocked on its socket ends by its read timeout; nothing waits for it.
            runtime.shutdown_background();
        });
        FaultServer {
            url,
            cert_pem,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// HTTP requests read whole so far.
    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// Body bytes of answers written so far (the huge bodies).
    pub fn written(&self) -> usize {
        self.seen.written.load(Ordering::SeqCst)
    }

    /// From now on, every request is answered `200` (the peer is back).
    pub fn recover(&self) {
        self.seen.healthy.store(true, Ordering::SeqCst);
    }

    /// As an S2S destination: the `AAM_UUID` of every user entry of the requests answered
    /// while healthy, in the order received.
    pub fn s2s_uuids(&self) -> Vec<String> {
        self.seen
            .accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| body["Users"].as_array().cloned().unwrap_or_default())
            .map(|u| u["AAM_UUID"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection of a plain-HTTP fault server: request after request (keep-alive), each
/// answered as the fault says (or `200` while healthy).
async fn serve(fault: Fault, mut socket: TcpStream, seen: &Seen, own_url: &str) {
    while let Some(body) = read_request(&mut socket).await {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if seen.healthy.load(Ordering::SeqCst) {
            if let Ok(json) = serde_json::from_slice(&body) {
                seen.accepted.lock().unwrap().push(json);
            }
            if write(&mut socket, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let answered = match fault {
            Fault::NoAnswer => {
                until_closed(&mut socket).await;
                return;
            }
            Fault::HeadersThenNothing => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
                if write(&mut socket, head).await.is_ok() {
                    until_closed(&mut socket).await;
                }
                return;
            }
            Fault::Trickle => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
                if write(&mut socket, head).await.is_err() {
                    return;
                }
                for _ in 0..1000 {
                    // The trickle's pace is the fault itself, not a wait for a condition.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if socket.write_all(b" ").await.is_err() {
                        return;
                    }
                    seen.written.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
            Fault::HugeBody => huge(&mut socket, seen, false).await,
            Fault::HugeChunked => huge(&mut socket, seen, true).await,
            Fault::BadJson => write(&mut socket, &ok_json("this is not json")).await,
            Fault::WrongShape => {
                write(&mut socket, &ok_json(r#"{"user":{"data":"healthy-seg"}}"#)).await
            }
            Fault::ServerError => {
                let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                write(&mut socket, answer).await
            }
            Fault::RedirectLoop => {
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {own_url}\r\ncontent-length: 0\r\n\r\n"
                );
                write(&mut socket, &answer).await
            }
            Fault::Refused | Fault::TlsBadCert => unreachable!("not served as plain HTTP"),
        };
        if answered.is_err() {
            return;
        }
    }
}

fn ok_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn write(socket: &mut TcpStream, text: &str) -> std::io::Result<()> {
    socket.write_all(text.as_bytes()).await
}

/// Reads (and ignores) whatever comes until the peer closes: holding a connection without
/// answering, and letting go of it once the caller gives up.
async fn until_closed(socket: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// A `200` with a [`HUGE`] body of spaces, with its length or chunked.
async fn huge(socket: &mut TcpStream, seen: &Seen, chunked: bool) -> std::io::Result<()> {
    let head = if chunked {
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_string()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUGE}\r\n\r\n"
        )
    };
    write(socket, &head).await?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < HUGE {
        if chunked {
            write(socket, &format!("{:x}\r\n", chunk.len())).await?;
        }
        socket.write_all(&chunk).await?;
        if chunked {
            write(socket, "\r\n").await?;
        }
        sent += chunk.len();
        seen.written.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    if chunked {
        write(socket, "0\r\n\r\n").await?;
    }
    Ok(())
}

/// The length of the HTTP/1.1 request (head and `Content-Length` body) at the start of `buf`,
/// once it is all there.
fn request_end(buf: &[u8]) -> Option<(usize, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    (buf.len() >= head_end + length).then_some((head_end, head_end + length))
}

/// One HTTP/1.1 request with a `Content-Length` body: its body, or `None` once the client
/// closed the connection.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((start, end)) = request_end(&buf) {
            return Some(buf[start..end].to_vec());
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server configuration with a fresh self-signed certificate for 127.0.0.1 and localhost
/// (trusted by no one), and that certificate as PEM.
fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key.into())
        .unwrap();
    (Arc::new(config), made.cert.pem())
}

/// One connection of the TLS fault server, blocking: the handshake, then (for a client that
/// trusts the certificate) a segment answer. A client that does not trust it aborts the
/// handshake, and the session ends with it.
fn tls_session(socket: std::net::TcpStream, config: Arc<rustls::ServerConfig>, seen: &Seen) {
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(session) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(session, socket);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while request_end(&buf).is_none() {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{SEGMENT_ANSWER}",
        SEGMENT_ANSWER.len()
    );
    let _ = tls.write_all(answer.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
