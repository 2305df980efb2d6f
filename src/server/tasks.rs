//! The server's background tasks, each on the thread that started the server (never an HTTP
//! worker): retiring idle sessions, the retention sweep, and — on a shared store — noticing
//! what other nodes changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::directory::SessionDirectory;
use crate::actors::visitor_session::{Retire, VisitorSession};
use crate::admin::CatalogWriter;
use crate::core::clock::unix_now;
use crate::core::engine::CatalogHandle;
use crate::core::profile::SECS_PER_DAY;
use crate::outbox::Outbox;
use crate::store::{on_blocking_thread, ProfileService, StoreError, SweepReport};

/// How often the session count is checked against `max_sessions`.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// How often a node on a shared store checks whether another changed the catalog: a change
/// reaches every node within this (plus the reload), well inside a second.
const CATALOG_POLL: Duration = Duration::from_millis(250);

/// Retires idle sessions (looked for every tenth of the idle time, as a full sweep walks every
/// session), and the least recently active ones as soon as there are more than `max_sessions`.
pub async fn sweep_sessions(
    directory: Arc<SessionDirectory<VisitorSession>>,
    idle: Duration,
    max_sessions: usize,
) {
    let idle_every = (idle / 10).max(SWEEP_EVERY);
    let mut last_full = Instant::now();
    loop {
        actix_rt::time::sleep(SWEEP_EVERY).await;
        if last_full.elapsed() < idle_every && directory.approximate_len() <= max_sessions {
            continue;
        }
        last_full = Instant::now();
        for session in directory.sweep(idle, max_sessions) {
            session.do_send(Retire);
        }
    }
}

/// How often a failing embedded store is looked at for a disk that has room again.
const STORE_RECOVERY_POLL: Duration = Duration::from_secs(1);

/// Free space at which a full disk counts as freed: 64 MiB, or a tenth of a smaller
/// filesystem (sled needs room for its log and for compaction, not just one more write).
const ROOM_AGAIN_BYTES: u64 = 64 << 20;

/// sled 0.34 keeps its first I/O error for the life of the process, so an embedded store that
/// failed (a full disk) never takes a write again, even once space is freed; and reopening it
/// in this process would lose what it had in memory and not flushed, as a restart does. So
/// once the store fails and its disk has room again, the server stops as on `SIGTERM` and
/// `tributary serve` exits with an error for its supervisor (systemd, Kubernetes) to start it
/// again, on a store sled then reopens and recovers. Until the disk has room, a restart would
/// fail the same way: the node stays up, not ready, shedding (README, Operations).
pub async fn restart_when_the_disk_is_freed(
    profiles: ProfileService,
    path: std::path::PathBuf,
    public: actix_web::dev::ServerHandle,
    restart: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        actix_rt::time::sleep(STORE_RECOVERY_POLL).await;
        let Some(failing) = profiles.store_failing() else {
            continue;
        };
        let Ok(Some(free)) = on_blocking_thread("free space", {
            let path = path.clone();
            move || Ok(room_again(&path))
        })
        .await
        else {
            continue;
        };
        log::error!(
            "the store's disk has room again ({} MiB free) but sled keeps its error ({}): \
             stopping so that the supervisor starts tributary again",
            free >> 20,
            failing.error
        );
        restart.store(true, std::sync::atomic::Ordering::SeqCst);
        public.stop(true).await;
        return;
    }
}

/// The free bytes on `path`'s filesystem when there are enough again (see
/// [`ROOM_AGAIN_BYTES`]); `None` when not, or when they cannot be told.
fn room_again(path: &std::path::Path) -> Option<u64> {
    let free = fs2::available_space(path).ok()?;
    let total = fs2::total_space(path).ok()?;
    (free >= ROOM_AGAIN_BYTES.min(total / 10)).then_some(free)
}

/// Other nodes change the shared catalog and opt visitors out: noticed within
/// [`CATALOG_POLL`].
pub async fn watch_shared_store(writer: Arc<CatalogWriter>, profiles: ProfileService) {
    loop {
        actix_rt::time::sleep(CATALOG_POLL).await;
        if let Err(e) = writer.refresh().await {
            log::warn!("stored catalog not checked (tried again shortly): {e}");
        }
        let profiles = profiles.clone();
        let refreshed =
            on_blocking_thread("opt-out refresh", move || profiles.refresh_opt_outs()).await;
        match refreshed {
            Ok(0) => {}
            Ok(n) => log::info!("{n} opt-out(s) made on other nodes loaded"),
            Err(e) => log::warn!("opt-outs not checked (tried again shortly): {e}"),
        }
    }
}

/// What the retention sweep works with: the periodic task and
/// [`super::Running::sweep_retention`] share one.
#[derive(Clone)]
pub struct RetentionSweep {
    pub profiles: ProfileService,
    pub catalog: CatalogHandle,
    pub directory: Arc<SessionDirectory<VisitorSession>>,
    pub outbox: Outbox,
    pub retention_days: u32,
}

impl RetentionSweep {
    /// One retention sweep, as if the time were `now`, on a blocking thread.
    pub async fn run(&self, now: i64) -> Result<SweepReport, StoreError> {
        let RetentionSweep {
            profiles,
            catalog,
            directory,
            outbox,
            retention_days,
        } = self.clone();
        let unseen_before = now.saturating_sub(i64::from(retention_days) * SECS_PER_DAY);
        let report = on_blocking_thread("retention sweep", move || {
            let compiled = catalog.current();
            profiles.sweep_now(
                unseen_before,
                &|p| compiled.expire_realizations(p, now),
                &|v| directory.is_live(v),
                // An erased visitor has left its segments: S2S destinations are told (status 0).
                &|v, p| outbox.membership(&compiled, v, &p.segments, &[], now),
            )
        })
        .await?;
        metrics::counter!("tributary_retention_purged_total").increment(report.purged as u64);
        metrics::counter!("tributary_retention_trimmed_total").increment(report.trimmed as u64);
        log::info!(
            "retention sweep: {} profiles read, {} unseen for {retention_days} days erased, {} trimmed of expired realizations, {} unreadable",
            report.scanned, report.purged, report.trimmed, report.unreadable
        );
        Ok(report)
    }

    /// Sweeps every `every`, for as long as the server runs.
    pub async fn every(self, every: Duration) {
        loop {
            actix_rt::time::sleep(every).await;
            if let Err(e) = self.run(unix_now()).await {
                log::error!("retention sweep failed (tried again next time): {e}");
            }
        }
    }
}
