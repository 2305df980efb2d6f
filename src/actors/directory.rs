//! `SessionDirectory`: finds the running session of a visitor, or starts one.
//!
//! Sharded by visitor id so that concurrent events of different visitors rarely meet on the
//! same lock. Entries hold a `WeakAddr`, so the directory never keeps a session alive.
//!
//! The delicate part is retiring an idle session without losing an event routed to it at the
//! same moment. Every routed message carries a [`PendingGuard`] that counts it as pending
//! until the session has finished with it (or until the message is dropped undelivered). The
//! count is raised under the shard lock, and a session retires only by removing its own entry
//! under that same lock while its count is zero — so an event is either routed before the
//! retirement (and the session sees the count and stays) or after it (and starts a new
//! session, which loads the profile the old one finished saving).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::{Addr, WeakAddr};

use super::visitor_session::VisitorSession;
use crate::ids::VisitorId;

const SHARDS: usize = 64;

struct Entry {
    generation: u64,
    addr: WeakAddr<VisitorSession>,
    pending: Arc<AtomicUsize>,
}

/// Counts a routed event as pending for its session until dropped.
pub struct PendingGuard(Arc<AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct SessionDirectory {
    shards: Box<[Mutex<HashMap<VisitorId, Entry>>]>,
    generations: AtomicU64,
}

impl Default for SessionDirectory {
    fn default() -> Self {
        SessionDirectory {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            generations: AtomicU64::new(1),
        }
    }
}

impl SessionDirectory {
    fn shard(&self, visitor: VisitorId) -> MutexGuard<'_, HashMap<VisitorId, Entry>> {
        let v = visitor.as_u128();
        let index = ((v ^ (v >> 64)) as u64 % SHARDS as u64) as usize;
        // A panic while holding a shard lock leaves a consistent map (every operation is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The visitor's live session (started with `start(generation)` if there is none), and a
    /// guard to put in the message sent to it.
    pub fn route(
        &self,
        visitor: VisitorId,
        start: impl FnOnce(u64) -> Addr<VisitorSession>,
    ) -> (Addr<VisitorSession>, PendingGuard) {
        let mut shard = self.shard(visitor);
        if let Some(entry) = shard.get(&visitor) {
            if let Some(addr) = entry.addr.upgrade().filter(Addr::connected) {
                entry.pending.fetch_add(1, Ordering::AcqRel);
                return (addr, PendingGuard(entry.pending.clone()));
            }
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let addr = start(generation);
        let pending = Arc::new(AtomicUsize::new(1));
        shard.insert(
            visitor,
            Entry {
                generation,
                addr: addr.downgrade(),
                pending: pending.clone(),
            },
        );
        (addr, PendingGuard(pending))
    }

    /// Removes the session's entry if it is still this generation's and nothing is pending
    /// for it; the session must stop when this returns true.
    pub fn try_retire(&self, visitor: VisitorId, generation: u64) -> bool {
        let mut shard = self.shard(visitor);
        match shard.get(&visitor) {
            Some(e) if e.generation == generation => {
                if e.pending.load(Ordering::Acquire) == 0 {
                    shard.remove(&visitor);
                    true
                } else {
                    false
                }
            }
            // Replaced or gone: nothing can be routed to this generation any more.
            _ => true,
        }
    }

    /// Drops the entry of a session that stopped (for whatever reason).
    pub fn forget(&self, visitor: VisitorId, generation: u64) {
        let mut shard = self.shard(visitor);
        if shard
            .get(&visitor)
            .is_some_and(|e| e.generation == generation)
        {
            shard.remove(&visitor);
        }
    }

    /// Number of sessions known (live or just stopped).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Events routed and not yet finished, across all sessions.
    pub fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock().unwrap_or_else(|p| p.into_inner());
                shard
                    .values()
                    .map(|e| e.pending.load(Ordering::Acquire))
                    .sum::<usize>()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
