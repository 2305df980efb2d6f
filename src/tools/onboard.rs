//! `tributary onboard FILE…`: imports inbound files in AAM's format through a running server's
//! admin API (`POST /v1/inbound`, then `GET /v1/inbound/{id}` until the job ends), with a
//! progress bar, one line per rejected line and a summary (`docs/customer-data.md`, Inbound
//! files).
//!
//! The server does the import, not this command: the store is the server's (sled allows one
//! process), and the server's job already yields to the event path. The file is streamed, so
//! memory stays flat whatever its size.
//!
//! Output: rejected lines and summaries on stdout (`<file>:<line>: <why>`, for grep and
//! scripts), the progress bar on stderr, drawn only on a terminal.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::core::clock::{unix_now, utc_text};
use crate::core::inbound_file::parse_file_name;
use crate::inbound::jobs::KEPT_ERRORS;

/// How often the job's progress is asked for.
const POLL: Duration = Duration::from_millis(200);
/// Upload chunk size; a few of them are in flight at once.
const CHUNK: usize = 256 << 10;

pub struct OnboardOptions {
    /// The admin listener's base URL (`http://127.0.0.1:8081`; a trailing `/v1` is accepted).
    pub admin: String,
    pub token: String,
    pub files: Vec<PathBuf>,
}

/// How the imports ended, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every line of every file was applied (blank lines aside).
    Applied,
    /// Every file was read to its end, but some lines were rejected or not applied.
    SomeLinesRefused,
}

/// The job's progress as `GET /v1/inbound/{id}` answers it (`crate::inbound::jobs::Progress`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    job_id: u64,
    state: String,
    lines: u64,
    applied: u64,
    rejected: u64,
    failed: u64,
    #[serde(default)]
    errors: Vec<Issue>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Issue {
    line: u64,
    message: String,
}

/// Imports each file in turn (split files in the order given). `Err` when a file could not be
/// imported to its end: the server is unreachable, refuses the token or the name, or the file
/// is broken (truncated gzip).
pub async fn run(options: OnboardOptions) -> Result<Outcome, String> {
    if options.files.is_empty() {
        return Err("name at least one file".into());
    }
    let base = options.admin.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
    let client = awc::Client::builder()
        .disable_timeout()
        .bearer_auth(&options.token)
        .finish();
    // Before streaming a file: a refused token or an unreachable server is said plainly, not
    // as a broken upload.
    get_json::<serde_json::Value>(&client, &format!("{base}/v1/inbound")).await?;
    let mut outcome = Outcome::Applied;
    for path in &options.files {
        outcome = outcome.max(import(&client, &base, path).await?);
    }
    Ok(outcome)
}

async fn import(client: &awc::Client, base: &str, path: &Path) -> Result<Outcome, String> {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown}: not a file name"))?
        .to_string();
    // The server checks it too; checking first saves uploading a file it would refuse.
    let parsed = parse_file_name(&name).map_err(|why| format!("{shown}: {why}"))?;
    // Realizations are dated the name's time stamp: an old one can put them past their
    // traits' lifetime, which should not come as a surprise.
    let days = (unix_now() - parsed.timestamp) / 86_400;
    if days >= 1 {
        println!(
            "{name}: note: its realizations are dated {} UTC, the time in its name ({days} days ago)",
            utc_text(parsed.timestamp)
        );
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        return Err(format!(
            "{shown}: the file is empty: AAM refuses empty files, and so does Tributary"
        ));
    }
    let started = Instant::now();
    let bar = ProgressBar::new(size).with_style(style(
        "{prefix} uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
    ));
    bar.set_prefix(name.clone());

    let url = format!("{base}/v1/inbound?file={}", encode(&name));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let reader_bar = bar.clone();
    // Reading on a thread of its own: the runtime never waits on the disk.
    std::thread::Builder::new()
        .name("onboard-reader".into())
        .spawn(move || read_chunks(file, &tx, &reader_bar))
        .map_err(|e| format!("cannot start the reading thread: {e}"))?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut res = client
        .post(&url)
        .content_type("application/octet-stream")
        .send_stream(body)
        .await
        .map_err(|e| format!("{shown}: upload failed: {e}"))?;
    let text = res
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("{shown}: upload answer unreadable: {e}"))?;
    if res.status().as_u16() != 202 {
        bar.finish_and_clear();
        return Err(format!(
            "{shown}: the server refused the upload: {}",
            error_text(res.status().as_u16(), &text)
        ));
    }
    let mut progress: Progress = serde_json::from_slice(&text)
        .map_err(|e| format!("{shown}: unexpected upload answer ({e})"))?;
    let job = progress.job_id;

    bar.set_length(0);
    bar.set_position(0);
    bar.set_style(style("{prefix} {spinner} {pos} lines · {msg} · {elapsed}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let applying = Instant::now();
    let mut printed = 0usize;
    loop {
        // Within one answer, in line order (parse errors are known before the store's).
        progress.errors.sort_by_key(|i| i.line);
        for issue in &progress.errors {
            let line = format!("{name}:{}: {}", issue.line, issue.message);
            bar.suspend(|| println!("{line}"));
        }
        printed += progress.errors.len();
        let seen = progress.lines;
        bar.set_position(seen);
        let failed = if progress.failed > 0 {
            format!(", {} not applied", progress.failed)
        } else {
            String::new()
        };
        bar.set_message(format!(
            "{:.0} lines/s · {} applied, {} rejected{failed}",
            seen as f64 / applying.elapsed().as_secs_f64().max(1e-3),
            progress.applied,
            progress.rejected,
        ));
        if progress.state == "done" || progress.state == "failed" {
            break;
        }
        tokio::select! {
            _ = actix_rt::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                bar.finish_and_clear();
                return Err(format!(
                    "{shown}: interrupted; the server goes on importing it (job {job}: GET {base}/v1/inbound/{job})"
                ));
            }
        }
        progress = get_json(
            client,
            &format!("{base}/v1/inbound/{job}?errorsFrom={printed}"),
        )
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    }
    bar.finish_and_clear();

    let refused = progress.rejected + progress.failed;
    if refused > printed as u64 && printed >= KEPT_ERRORS {
        println!(
            "{name}: {} more lines refused (the server lists the first {KEPT_ERRORS})",
            refused - printed as u64
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: {} lines in {secs:.1} s ({:.0} lines/s): {} applied, {} rejected, {} not applied",
        progress.lines,
        progress.lines as f64 / secs.max(1e-3),
        progress.applied,
        progress.rejected,
        progress.failed,
    );
    if progress.failed > 0 {
        println!(
            "{name}: the store failed {} lines; importing the file again applies them (imports are idempotent)",
            progress.failed
        );
    }
    if progress.state == "failed" {
        let why = progress.message.unwrap_or_else(|| "no reason given".into());
        return Err(format!(
            "{shown}: the import stopped after line {}: {why}",
            progress.lines
        ));
    }
    Ok(if refused > 0 {
        Outcome::SomeLinesRefused
    } else {
        Outcome::Applied
    })
}

/// The file in chunks into `tx`; an I/O error is sent along, which breaks the upload.
fn read_chunks(
    mut file: std::fs::File,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    bar: &ProgressBar,
) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &awc::Client,
    url: &str,
) -> Result<T, String> {
    let mut res = client
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("cannot reach the admin API at {url}: {e}"))?;
    let body = res
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| format!("{url}: answer unreadable: {e}"))?;
    let status = res.status().as_u16();
    if status != 200 {
        return Err(format!("{url}: {}", error_text(status, &body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: unexpected answer ({e})"))
}

/// The admin API's `{"error": {"message", "field"}}`, or the status alone.
fn error_text(status: u16, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let message = error.and_then(|e| e["message"].as_str());
    let field = error.and_then(|e| e["field"].as_str());
    let hint = if status == 401 {
        " (set --token or TRIBUTARY__ADMIN__TOKEN to the server's admin token)"
    } else {
        ""
    };
    match (message, field) {
        (Some(m), Some(f)) => format!("{status}: {f}: {m}{hint}"),
        (Some(m), None) => format!("{status}: {m}{hint}"),
        _ => format!("HTTP {status}{hint}"),
    }
}

/// Percent-encodes a file name for the query string.
fn encode(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_names_the_field_and_hints_at_the_token() {
        let body = br#"{"error": {"code": "invalid", "message": "bad name", "field": "file"}}"#;
        assert_eq!(error_text(400, body), "400: file: bad name");
        assert!(error_text(401, b"").contains("TRIBUTARY__ADMIN__TOKEN"));
        assert_eq!(error_text(502, b"<html>"), "HTTP 502");
    }

    #[test]
    fn names_are_encoded_for_the_query() {
        assert_eq!(
            encode("ftp_dpm_9001_1700000000.sync"),
            "ftp_dpm_9001_1700000000.sync"
        );
        assert_eq!(encode("a b&c"), "a+b%26c");
    }
}
