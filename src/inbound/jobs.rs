//! Inbound file imports (`docs/customer-data.md`, Inbound files): `POST /v1/inbound` receives
//! a file in AAM's format, answers with a job id, and the job applies it line by line while
//! `GET /v1/inbound/{id}` reports its progress (what `tributary onboard` shows).
//!
//! - The upload is written to a spool file first (on a blocking thread, never on the admin
//!   worker), so the job outlives the request and a slow job never holds the client.
//! - A thread reads the spool file (gunzipped for `.gz`) through the bounded line reader and
//!   parses each line; the ops go through a bounded channel to the job's task, which applies
//!   up to [`IN_FLIGHT`] at a time, one user's lines in order. Memory stays bounded whatever
//!   the file: a line is at most 100 KB, the channel and the ops in flight are bounded, and
//!   sessions started for an op stop after it.
//! - The event path comes first: the job holds its next line while the store's write backlog
//!   is over a tenth of `store.max_pending_writes`, and while the public workers serving
//!   events run behind ([`crate::core::priority`]), so an import slows down rather than make
//!   events wait or be shed.
//! - A line's realizations are dated the file's timestamp (or now, if that is in the future),
//!   so importing a file again changes nothing: imports are idempotent.
//! - Jobs are kept in memory (the last [`KEPT_JOBS`], running ones always); a restart forgets
//!   them. An upload refused during its request (too large, broken off, empty) leaves no job.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use serde::Serialize;

use super::{Inbound, OpFailure};
use crate::core::clock::unix_now;
use crate::core::inbound::Op;
use crate::core::inbound_file::{
    parse_file_name, parse_line, FileName, LineReadError, Lines, PerUserLimit,
};
use crate::core::priority::ImportPacer;
use crate::store::StoreError;

/// Ops applied at once by one job.
const IN_FLIGHT: usize = 64;
/// Parsed lines waiting for the job's task.
const CHANNEL: usize = 4096;
/// Jobs whose progress is kept.
const KEPT_JOBS: usize = 64;
/// Rejected lines whose number and reason a job keeps (all are counted).
pub const KEPT_ERRORS: usize = 1000;
/// How long a job holds its next line when the event path needs the cores or the store.
const WAIT: Duration = Duration::from_millis(10);
/// Largest upload: AAM's limit for a compressed file.
pub const MAX_UPLOAD_BYTES: u64 = 3 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Receiving,
    Running,
    Done,
    Failed,
}

/// One rejected line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineIssue {
    pub line: u64,
    pub message: String,
}

/// A job's progress, as `GET /v1/inbound/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub job_id: u64,
    pub file: String,
    pub state: JobState,
    pub bytes_received: u64,
    /// Lines read so far (blank ones included).
    pub lines: u64,
    /// Lines applied.
    pub applied: u64,
    /// Lines refused (bad line, unknown trait, over 200 lines for one user…): nothing of them
    /// was applied.
    pub rejected: u64,
    /// Lines not applied because the store failed: import the file again.
    pub failed: u64,
    /// The first rejected and failed lines, with their numbers (all are counted above).
    pub errors: Vec<LineIssue>,
    /// Why the job stopped before the end of the file (`state: failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// One import.
pub struct Job {
    progress: Mutex<Progress>,
}

impl Job {
    /// The progress, with the kept errors from `errors_from` on.
    pub fn progress(&self, errors_from: usize) -> Progress {
        let p = lock(&self.progress);
        Progress {
            errors: p.errors.iter().skip(errors_from).cloned().collect(),
            // The reader reports its count every 1,024 lines; lines settled since are read too.
            lines: p.lines.max(p.applied + p.rejected + p.failed),
            ..p.clone()
        }
    }

    fn is_finished(&self) -> bool {
        matches!(
            lock(&self.progress).state,
            JobState::Done | JobState::Failed
        )
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut lock(&self.progress));
    }

    fn issue(&self, line: u64, message: String, failed: bool) {
        self.update(|p| {
            if failed {
                p.failed += 1;
            } else {
                p.rejected += 1;
            }
            if p.errors.len() < KEPT_ERRORS {
                p.errors.push(LineIssue { line, message });
            }
        });
        let result = if failed { "failed" } else { "rejected" };
        metrics::counter!("tributary_inbound_lines_total", "result" => result).increment(1);
    }

    fn finish(&self, message: Option<String>) {
        self.update(|p| {
            p.state = if message.is_some() {
                JobState::Failed
            } else {
                JobState::Done
            };
            p.message = message;
            p.finished_at = Some(unix_now());
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The last job id given, and the kept jobs by id, oldest first.
type Kept = (u64, VecDeque<(u64, Arc<Job>)>);

/// The import jobs of this server.
#[derive(Clone)]
pub struct Jobs {
    inbound: Inbound,
    spool_dir: PathBuf,
    jobs: Arc<Mutex<Kept>>,
    /// `store.max_pending_writes`: the job waits while the backlog is over a tenth of it.
    max_backlog: usize,
}

/// Why an upload was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The file name is not AAM's (the message says how).
    #[error("{0}")]
    BadName(String),
    #[error("the file is larger than {MAX_UPLOAD_BYTES} bytes")]
    TooLarge,
    /// The server could not spool it (a full or unwritable disk): not the client's fault.
    #[error("{0}")]
    Spool(String),
}

/// A spool file being written.
pub struct Upload {
    pub job: Arc<Job>,
    pub id: u64,
    file: FileName,
    spool: Option<tempfile::NamedTempFile>,
    received: u64,
}

impl Jobs {
    pub fn new(inbound: Inbound, spool_dir: PathBuf, max_pending_writes: usize) -> Self {
        Jobs {
            inbound,
            spool_dir,
            jobs: Arc::new(Mutex::new((0, VecDeque::new()))),
            max_backlog: (max_pending_writes / 10).max(1),
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        let jobs = lock(&self.jobs);
        jobs.1
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, j)| j.clone())
    }

    /// Every kept job's progress, newest first, without their errors.
    pub fn list(&self) -> Vec<Progress> {
        let jobs = lock(&self.jobs);
        jobs.1
            .iter()
            .rev()
            .map(|(_, j)| {
                let mut p = j.progress(usize::MAX);
                p.errors.clear();
                p
            })
            .collect()
    }

    /// Starts receiving `name` (AAM's file name, which says the data source, sync or overwrite,
    /// gzip, and the date of its realizations). `Err` says what is wrong with the name.
    pub async fn receive(&self, name: &str) -> Result<Upload, UploadError> {
        let file = parse_file_name(name).map_err(UploadError::BadName)?;
        let dir = self.spool_dir.clone();
        let spool = crate::store::on_blocking_thread("inbound spool", move || {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(e.to_string()))?;
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| StoreError::Io(e.to_string()))
        })
        .await
        .map_err(|e| {
            UploadError::Spool(format!(
                "cannot spool the upload in {}: {e}",
                self.spool_dir.display()
            ))
        })?;
        let job = Arc::new(Job {
            progress: Mutex::new(Progress {
                job_id: 0,
                file: name.rsplit('/').next().unwrap_or(name).to_string(),
                state: JobState::Receiving,
                bytes_received: 0,
                lines: 0,
                applied: 0,
                rejected: 0,
                failed: 0,
                errors: Vec::new(),
                message: None,
                started_at: unix_now(),
                finished_at: None,
            }),
        });
        let id = {
            let mut jobs = lock(&self.jobs);
            jobs.0 += 1;
            let id = jobs.0;
            jobs.1.push_back((id, job.clone()));
            // The oldest finished jobs go first: one still running stays in view.
            while jobs.1.len() > KEPT_JOBS {
                let finished = jobs.1.iter().position(|(_, j)| j.is_finished());
                match finished {
                    Some(i) => drop(jobs.1.remove(i)),
                    None => break,
                }
            }
            id
        };
        job.update(|p| p.job_id = id);
        Ok(Upload {
            job,
            id,
            file,
            spool: Some(spool),
            received: 0,
        })
    }

    /// Starts applying a received file; the job runs on this thread's runtime.
    pub fn start(&self, mut upload: Upload) {
        let Some(spool) = upload.spool.take() else {
            return;
        };
        let (inbound, job, file) = (self.inbound.clone(), upload.job.clone(), upload.file);
        job.update(|p| p.state = JobState::Running);
        let max_backlog = self.max_backlog;
        actix::spawn(async move {
            let message = run(&inbound, &job, spool.path(), &file, max_backlog).await;
            // The spool file goes when `spool` drops, on a blocking thread.
            let _ = actix_rt::task::spawn_blocking(move || drop(spool)).await;
            if let Some(why) = &message {
                log::warn!("inbound job {} stopped: {why}", upload.id);
            } else {
                log::info!("inbound job {} done", upload.id);
            }
            job.finish(message);
        });
    }
}

impl Upload {
    /// Appends a chunk of the upload to the spool file (on a blocking thread). `Err` for an
    /// upload over [`MAX_UPLOAD_BYTES`] or a spool that cannot be written.
    pub async fn write(&mut self, chunk: actix_web::web::Bytes) -> Result<(), UploadError> {
        self.received += chunk.len() as u64;
        if self.received > MAX_UPLOAD_BYTES {
            return Err(UploadError::TooLarge);
        }
        let Some(mut spool) = self.spool.take() else {
            return Err(UploadError::Spool("the spool file is gone".into()));
        };
        let (spool, written) = actix_rt::task::spawn_blocking(move || {
            let written = spool.write_all(&chunk);
            (spool, written)
        })
        .await
        .map_err(|e| UploadError::Spool(format!("spool task failed: {e}")))?;
        self.spool = Some(spool);
        written.map_err(|e| UploadError::Spool(format!("cannot write the spool file: {e}")))?;
        let received = self.received;
        self.job.update(|p| p.bytes_received = received);
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Gives up on an upload that was refused or broke off: the request's answer says why, and
    /// the job, never started, leaves the list.
    pub fn abandon(mut self, jobs: &Jobs, why: &str) {
        log::info!("inbound upload {} abandoned: {why}", self.id);
        if let Some(spool) = self.spool.take() {
            // Removing the file is disk work: not on the admin worker.
            drop(actix_rt::task::spawn_blocking(move || drop(spool)));
        }
        self.job.finish(Some(why.to_string()));
        lock(&jobs.jobs).1.retain(|(id, _)| *id != self.id);
    }
}

/// What the reading thread hands the job's task.
enum Parsed {
    Op {
        line: u64,
        user: String,
        op: Op,
    },
    Rejected {
        line: u64,
        message: String,
    },
    /// Lines read so far (sent now and then, and at the end).
    Lines(u64),
    /// The file cannot be read on (truncated gzip, I/O error): the job stops.
    Broken(String),
}

/// Applies the spool file; `Some(why)` when it stopped before the end.
async fn run(
    inbound: &Inbound,
    job: &Job,
    path: &Path,
    file: &FileName,
    max_backlog: usize,
) -> Option<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Parsed>(CHANNEL);
    let (path, file_name) = (path.to_path_buf(), *file);
    let reader = std::thread::Builder::new()
        .name("inbound-reader".into())
        .spawn(move || read_file(&path, &file_name, &tx));
    if let Err(e) = reader {
        return Some(format!("cannot start the reading thread: {e}"));
    }
    // A time stamp from the future would date realizations nobody has made yet.
    let now = file.timestamp.min(unix_now());
    let mut in_flight = FuturesUnordered::new();
    let mut users: HashSet<String> = HashSet::new();
    let profiles = inbound.deps().profiles.clone();
    let priority = inbound.deps().priority.clone();
    let mut pacer = ImportPacer::new(Instant::now());
    let mut broken = None;
    while let Some(parsed) = rx.recv().await {
        match parsed {
            Parsed::Lines(n) => job.update(|p| p.lines = n),
            Parsed::Rejected { line, message } => job.issue(line, message, false),
            Parsed::Broken(why) => broken = Some(why),
            Parsed::Op { line, user, op } => {
                // One user's lines in order; at most IN_FLIGHT ops at once.
                while users.contains(&user) || in_flight.len() >= IN_FLIGHT {
                    match in_flight.next().await {
                        Some(done) => settle(job, &mut users, done),
                        None => break,
                    }
                }
                // The event path first: wait while the store is behind, and while the
                // public workers serving events run behind (the import takes their cores),
                // then at the pace the event load leaves (core::priority).
                loop {
                    let now = Instant::now();
                    let behind = !priority.import_may_run(now);
                    let reason = if profiles.queue_depth() > max_backlog {
                        "store_backlog"
                    } else if behind {
                        "event_workers"
                    } else {
                        let wait = pacer.wait(now, false);
                        if wait.is_zero() {
                            break;
                        }
                        actix_rt::time::sleep(wait).await;
                        continue;
                    };
                    pacer.wait(now, behind);
                    metrics::counter!("tributary_inbound_waits_total", "reason" => reason)
                        .increment(1);
                    actix_rt::time::sleep(WAIT).await;
                }
                pacer.started(Instant::now());
                users.insert(user.clone());
                in_flight.push(async move {
                    let result = inbound.apply(&op, now).await;
                    (line, user, result)
                });
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        settle(job, &mut users, done);
    }
    broken
}

fn settle(
    job: &Job,
    users: &mut HashSet<String>,
    (line, user, result): (u64, String, Result<(), OpFailure>),
) {
    users.remove(&user);
    match result {
        Ok(()) => {
            job.update(|p| p.applied += 1);
            metrics::counter!("tributary_inbound_lines_total", "result" => "applied").increment(1);
        }
        Err(OpFailure::Refused(e)) => job.issue(line, e.to_string(), false),
        Err(OpFailure::Internal(why)) => job.issue(line, format!("not applied: {why}"), true),
    }
}

/// The reading thread: lines of the spool file, parsed, into `tx` (blocking when the job is
/// behind, which is what bounds memory).
fn read_file(path: &Path, file: &FileName, tx: &tokio::sync::mpsc::Sender<Parsed>) {
    let send = |p: Parsed| tx.blocking_send(p).is_ok();
    let opened = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            send(Parsed::Broken(format!("cannot read the spool file: {e}")));
            return;
        }
    };
    let raw = BufReader::with_capacity(1 << 16, opened);
    let reader: Box<dyn BufRead> = if file.gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let mut lines = Lines::new(reader);
    let mut per_user = PerUserLimit::new();
    let mut count = 0u64;
    loop {
        let parsed = match lines.next_line() {
            None => break,
            Some(Ok(line)) => {
                count = line.number;
                match parse_line(&line.bytes, file) {
                    Ok(None) => None,
                    Ok(Some(op)) => {
                        let user = op
                            .identities
                            .first()
                            .map(|i| i.value.clone())
                            .unwrap_or_default();
                        if per_user.admit(&user) {
                            Some(Parsed::Op {
                                line: line.number,
                                user,
                                op,
                            })
                        } else {
                            Some(Parsed::Rejected {
                                line: line.number,
                                message: format!(
                                    "more than {} lines for user {user:?}: discarded, as AAM does",
                                    crate::core::inbound_file::MAX_LINES_PER_USER
                                ),
                            })
                        }
                    }
                    Err(e) => Some(Parsed::Rejected {
                        line: line.number,
                        message: e.to_string(),
                    }),
                }
            }
            Some(Err(LineReadError::TooLong { line })) => {
                count = line;
                Some(Parsed::Rejected {
                    line,
                    message: format!(
                        "longer than {} bytes",
                        crate::core::inbound_file::MAX_LINE_BYTES
                    ),
                })
            }
            Some(Err(e)) => {
                send(Parsed::Lines(count));
                send(Parsed::Broken(e.to_string()));
                return;
            }
        };
        if let Some(p) = parsed {
            if !send(p) {
                return;
            }
        }
        if count.is_multiple_of(1024) && !send(Parsed::Lines(count)) {
            return;
        }
    }
    send(Parsed::Lines(count));
    if count == 0 {
        send(Parsed::Broken(
            "the file is empty: AAM refuses empty files, and so does Tributary".into(),
        ));
    }
}
