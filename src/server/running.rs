//! A started server: its addresses, what tests and tools may look at, and its shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::task::JoinHandle;
use actix_web::dev::ServerHandle;

use super::tasks::RetentionSweep;
use crate::actors::directory::SessionDirectory;
use crate::actors::visitor_session::VisitorSession;
use crate::core::engine::CatalogHandle;
use crate::outbox::Outbox;
use crate::store::{ProfileService, Store, StoreError, SweepReport};

/// How long shutdown waits for events still running in sessions before the final flush.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One listener: its address, its handle and the task serving it.
pub(super) struct Listener {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: JoinHandle<io::Result<()>>,
}

/// A started server.
pub struct Running {
    pub(super) public: Listener,
    pub(super) admin: Listener,
    pub(super) store: Arc<dyn Store>,
    pub(super) profiles: ProfileService,
    pub(super) directory: Arc<SessionDirectory<VisitorSession>>,
    pub(super) catalog: CatalogHandle,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) sweep: RetentionSweep,
    pub(super) outbox: Outbox,
    pub(super) outbox_task: JoinHandle<()>,
    /// The session sweeper, the retention sweep and the shared-store watch: aborted at stop.
    pub(super) background: Vec<JoinHandle<()>>,
    /// Set when the server stopped itself for its supervisor to start it again (a store that
    /// cannot recover in this process: `tasks::restart_when_the_disk_is_freed`).
    pub(super) restart: Arc<AtomicBool>,
}

impl Running {
    /// The public listener's address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.public.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The write-behind profile service: how everything in the server reads and writes
    /// profiles (tests that prepare a profile behind the server's back must go through it, as
    /// its stored-id filter knows only the ids written through it or stored at start).
    pub fn profiles(&self) -> &ProfileService {
        &self.profiles
    }

    pub fn catalog(&self) -> &CatalogHandle {
        &self.catalog
    }

    pub fn sessions(&self) -> &Arc<SessionDirectory<VisitorSession>> {
        &self.directory
    }

    /// Runs the retention sweep now, as if the time were `now` (Unix seconds): profiles unseen
    /// for `store.profile_ttl_days` are erased, expired realizations dropped. The server runs
    /// it every `store.retention_sweep_secs`; tests call it with a clock of their choosing.
    pub async fn sweep_retention(&self, now: i64) -> Result<SweepReport, StoreError> {
        self.sweep.run(now).await
    }

    /// Waits until every profile write queued so far is in the store, and flushes it.
    pub async fn sync_store(&self) -> Result<(), StoreError> {
        self.profiles.flush().await
    }

    /// Stops gracefully: no new connections, in-flight requests finish, then the store is
    /// flushed.
    pub async fn stop(self) -> Result<(), StoreError> {
        self.ready.store(false, Ordering::SeqCst);
        self.public.handle.stop(true).await;
        self.admin.handle.stop(true).await;
        self.finish().await
    }

    /// Runs until the server stops (a signal, or [`ServerHandle::stop`]), then flushes. An
    /// error also when the server stopped itself to be started again.
    pub async fn wait(self) -> Result<(), StoreError> {
        let restart = self.restart.clone();
        let finished = self.finish().await;
        if restart.load(Ordering::SeqCst) {
            return Err(StoreError::Io(format!(
                "stopped to be started again: the store cannot recover in this process ({})",
                finished
                    .err()
                    .map_or("pending changes written".into(), |e| e.to_string())
            )));
        }
        finished
    }

    async fn finish(self) -> Result<(), StoreError> {
        if let Ok(Err(e)) = self.public.task.await {
            log::error!("HTTP server ended with an error: {e}");
        }
        // The public listener has stopped (a signal stops both); so does the admin one.
        self.admin.handle.stop(true).await;
        if let Ok(Err(e)) = self.admin.task.await {
            log::error!("admin HTTP server ended with an error: {e}");
        }
        self.ready.store(false, Ordering::SeqCst);
        // Events whose HTTP answer already left may still be running in their sessions
        // (e.g. behind a slow engine); give them a moment to save before the last flush.
        let drained_by = Instant::now() + DRAIN_TIMEOUT;
        while self.directory.pending() > 0 && Instant::now() < drained_by {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        for task in &self.background {
            task.abort();
        }
        // Membership changes queued so far are written to the outbox; in-flight deliveries
        // stay there for the next start.
        self.outbox.stop().await;
        self.outbox_task.abort();
        // Pending profile writes first, then everything to disk.
        self.profiles.flush().await?;
        self.profiles.stop_writers();
        log::info!("store flushed; shutdown complete");
        Ok(())
    }
}
