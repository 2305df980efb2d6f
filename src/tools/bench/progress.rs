//! Running a load with a progress bar on the terminal, so that a long run shows where it is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::load::{self, LoadResult, LoadSpec};

/// Visits each of `visitors` once (sequentially), whatever the rate; returns what happened.
pub(super) fn prime_each_visitor(spec: LoadSpec, visitors: u64) -> Result<LoadResult, String> {
    let progress = Arc::new(AtomicU64::new(0));
    let spec = LoadSpec {
        progress: Some(progress.clone()),
        ..spec
    };
    // Each connection visits ids k, k+C, k+2C…; stop once all ids had their visit.
    let stop_at = visitors;
    let bar = bar("priming", Some(stop_at));
    let watcher_progress = progress.clone();
    let done = Arc::new(AtomicBool::new(false));
    let watcher_done = done.clone();
    let watcher = std::thread::spawn(move || {
        while !watcher_done.load(Ordering::Relaxed) {
            bar.set_position(watcher_progress.load(Ordering::Relaxed).min(stop_at));
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
    });
    let result = load::run(LoadSpec { once: true, ..spec }).map_err(|e| e.to_string());
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    result
}

fn bar(label: &str, length: Option<u64>) -> ProgressBar {
    let bar = match length {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Runs a load with a progress bar showing elapsed time and the current rate.
pub(super) fn with_progress(label: &str, spec: LoadSpec) -> Result<LoadResult, String> {
    let progress = Arc::new(AtomicU64::new(0));
    let duration = spec.duration;
    let spec = LoadSpec {
        progress: Some(progress.clone()),
        ..spec
    };
    let bar = bar(label, Some(duration.as_millis() as u64));
    let done = Arc::new(AtomicBool::new(false));
    let watcher_done = done.clone();
    let watcher = std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        while !watcher_done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let n = progress.load(Ordering::Relaxed);
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
            last = (Instant::now(), n);
            bar.set_position(
                (started.elapsed().as_millis() as u64).min(duration.as_millis() as u64),
            );
            bar.set_message(format!("{rate:>9.0} req/s"));
        }
        bar.finish_and_clear();
    });
    let result = load::run(spec).map_err(|e| e.to_string());
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    result
}
