//! `SessionDirectory`: finds the running session of a visitor, or starts one, and retires
//! sessions that are idle or beyond the configured number.
//!
//! Sharded by visitor id so that concurrent events of different visitors rarely meet on the
//! same lock. Entries hold the session's address — an actix actor stops when no address of
//! it is left — and the sweep removes the entries of idle sessions, so the directory keeps a
//! session alive exactly as long as the visitor is active.
//!
//! Retiring a session must not lose an event routed to it at the same moment. Every routed
//! message carries a [`PendingGuard`] that counts it as pending until the session has finished
//! with it (or until the message is dropped undelivered). The count is raised under the shard
//! lock, and [`SessionDirectory::sweep`] removes an entry only under that same lock and only
//! while its count is zero — so an event is either routed before the removal (and the entry is
//! not removed) or after it (and starts a new session, which loads the profile the old one
//! saved). One sweep for all sessions replaces a timer per session, which costs memory and
//! wake-ups for every visitor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};

use crate::core::ids::VisitorId;

const SHARDS: usize = 64;

/// What the directory and a session's messages share about one session.
struct Activity {
    /// Events routed to the session and not finished.
    pending: AtomicUsize,
    /// Milliseconds since the directory's epoch when the last event finished.
    last_active_ms: AtomicU64,
}

struct Entry<A: Actor> {
    generation: u64,
    addr: Addr<A>,
    activity: Arc<Activity>,
}

/// Counts a routed event as pending for its session until dropped.
pub struct PendingGuard {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.activity.last_active_ms.store(now, Ordering::Release);
        self.activity.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many sessions a sweep for surplus leaves of `max_sessions`: nine tenths, so the
/// next such sweep comes only after a tenth of the limit in new sessions.
pub fn low_water(max_sessions: usize) -> usize {
    max_sessions - max_sessions / 10
}

/// Generic over the session actor only so that this file does not depend on the session
/// (which depends on it): the server has one, of `VisitorSession`s.
pub struct SessionDirectory<A: Actor> {
    shards: Box<[Mutex<Shard<A>>]>,
    generations: AtomicU64,
    epoch: Instant,
    /// Sessions started minus sessions removed: an estimate, kept without locking every shard,
    /// that tells whether a sweep for surplus sessions is needed.
    started_minus_removed: AtomicUsize,
}

type Shard<A> = HashMap<VisitorId, Entry<A>>;

impl<A: Actor> Default for SessionDirectory<A> {
    fn default() -> Self {
        SessionDirectory {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            generations: AtomicU64::new(1),
            epoch: Instant::now(),
            started_minus_removed: AtomicUsize::new(0),
        }
    }
}

fn lock<A: Actor>(shard: &Mutex<Shard<A>>) -> MutexGuard<'_, Shard<A>> {
    // Every critical section is a single insert, lookup or remove, so a poisoned lock still
    // guards a consistent map.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl<A: Actor> SessionDirectory<A> {
    fn shard(&self, visitor: VisitorId) -> &Mutex<Shard<A>> {
        let v = visitor.as_u128();
        &self.shards[((v ^ (v >> 64)) as u64 % SHARDS as u64) as usize]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a session of the visitor is running.
    pub fn is_live(&self, visitor: VisitorId) -> bool {
        lock(self.shard(visitor))
            .get(&visitor)
            .is_some_and(|e| e.addr.connected())
    }

    /// The visitor's live session (started with `start(generation)` if there is none), and a
    /// guard to put in the message sent to it.
    pub fn route(
        &self,
        visitor: VisitorId,
        start: impl FnOnce(u64) -> Addr<A>,
    ) -> (Addr<A>, PendingGuard) {
        let mut shard = lock(self.shard(visitor));
        if let Some(entry) = shard.get(&visitor) {
            if entry.addr.connected() {
                entry.activity.pending.fetch_add(1, Ordering::AcqRel);
                let guard = PendingGuard {
                    activity: entry.activity.clone(),
                    epoch: self.epoch,
                };
                return (entry.addr.clone(), guard);
            }
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let addr = start(generation);
        let activity = Arc::new(Activity {
            pending: AtomicUsize::new(1),
            last_active_ms: AtomicU64::new(self.now_ms()),
        });
        let entry = Entry {
            generation,
            addr: addr.clone(),
            activity: activity.clone(),
        };
        if shard.insert(visitor, entry).is_none() {
            self.started_minus_removed.fetch_add(1, Ordering::Relaxed);
        }
        (
            addr,
            PendingGuard {
                activity,
                epoch: self.epoch,
            },
        )
    }

    /// Removes the entries of sessions with nothing pending that have been idle for `idle`,
    /// and — when more than `max_sessions` exist — the least recently active others, down to
    /// [`low_water`] of them, and returns their addresses: each must be told to stop.
    /// Going below the limit, not just to it, is what keeps a steady stream of new visitors
    /// from making every sweep a walk over all sessions (`docs/architecture.md`,
    /// `SessionDirectory`).
    pub fn sweep(&self, idle: Duration, max_sessions: usize) -> Vec<Addr<A>> {
        let now = self.now_ms();
        let idle_ms = idle.as_millis() as u64;
        let mut retired = Vec::new();
        // (last active, shard, visitor) of idle-able sessions that are not yet due.
        let mut others: Vec<(u64, usize, VisitorId)> = Vec::new();
        let mut removed = 0;
        for (index, shard) in self.shards.iter().enumerate() {
            let mut map = lock(shard);
            let before = map.len();
            map.retain(|visitor, e| {
                if !e.addr.connected() {
                    return false; // stopped by itself
                }
                if e.activity.pending.load(Ordering::Acquire) > 0 {
                    return true;
                }
                let last = e.activity.last_active_ms.load(Ordering::Acquire);
                if now.saturating_sub(last) >= idle_ms {
                    retired.push(e.addr.clone());
                    false
                } else {
                    others.push((last, index, *visitor));
                    true
                }
            });
            removed += before - map.len();
        }
        let remaining = self.len();
        if remaining > max_sessions && !others.is_empty() {
            let excess = (remaining - low_water(max_sessions)).min(others.len());
            others.select_nth_unstable_by_key(excess - 1, |(last, _, _)| *last);
            for (_, index, visitor) in others.into_iter().take(excess) {
                let mut map = lock(&self.shards[index]);
                // Re-checked under the lock: an event may have arrived since.
                let idle_now = map
                    .get(&visitor)
                    .is_some_and(|e| e.activity.pending.load(Ordering::Acquire) == 0);
                if idle_now {
                    if let Some(e) = map.remove(&visitor) {
                        retired.push(e.addr);
                        removed += 1;
                    }
                }
            }
        }
        self.removed(removed);
        retired
    }

    /// Removes the entry of this session when nothing is pending for it, as the sweep would
    /// once it is idle: how a session started only for a server-side update (an inbound op)
    /// goes at once instead of holding memory for `session_idle_secs`. `true` if removed: the
    /// session must stop.
    pub fn remove_if_idle(&self, visitor: VisitorId, generation: u64) -> bool {
        let mut shard = lock(self.shard(visitor));
        let idle = shard.get(&visitor).is_some_and(|e| {
            e.generation == generation && e.activity.pending.load(Ordering::Acquire) == 0
        });
        if idle {
            shard.remove(&visitor);
            self.removed(1);
        }
        idle
    }

    /// Drops the entry of a session that stopped (for whatever reason).
    pub fn forget(&self, visitor: VisitorId, generation: u64) {
        let mut shard = lock(self.shard(visitor));
        if shard
            .get(&visitor)
            .is_some_and(|e| e.generation == generation)
        {
            shard.remove(&visitor);
            self.removed(1);
        }
    }

    /// Number of sessions known (live or just stopped). Locks every shard: for metrics and
    /// tests, not for the event path.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Events routed and not yet finished, across all sessions.
    pub fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                lock(s)
                    .values()
                    .map(|e| e.activity.pending.load(Ordering::Acquire))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Roughly how many sessions exist, without locking the shards.
    pub fn approximate_len(&self) -> usize {
        self.started_minus_removed.load(Ordering::Relaxed)
    }

    fn removed(&self, n: usize) {
        let _ =
            self.started_minus_removed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
