//! `ProfileService`: the only way the running server reads and writes profiles.
//!
//! A write-behind cache in front of the [`ProfileStore`]. Saving a profile encodes it and puts
//! it in a pending map (one short mutex per shard) — no thread is woken, no disk is touched, and
//! an event's answer never waits for either. One writer thread per shard writes pending
//! profiles once they are `write_delay` old, as one batch, so a visitor with many events in
//! that window costs one write instead of one per event. Reads check the pending map first,
//! so they always see the latest save (read-your-writes), and otherwise read the store on one
//! of the service's reader threads (`readers.rs`), never on the caller's.
//!
//! An entry leaves the pending map only after its write has reached the store (and only if no
//! newer save replaced it meanwhile), so at every moment the latest profile is either pending
//! or stored. Deletes and batch writes of a shard are serialized by the shard's I/O lock, so a
//! write cannot resurrect a profile deleted while it was in flight.
//!
//! ID-sync mappings (data source, id) → visitor go the same way: [`ProfileService::link`]
//! queues one in its shard's pending map (read first by [`ProfileService::lookup_link`]) and
//! the shard's writer writes it on its next tick — unless the store already maps the id to the
//! same visitor, asserted less than [`LINK_REFRESH_SECS`] ago, which is the common case of a
//! logged-in visitor declaring the same id on every event: then nothing is written.
//!
//! Shared stores (several nodes on one Redis Cluster, [`ProfileService::start_shared`]): two
//! nodes may change one visitor at once, so a node never writes the profile it holds. Each
//! save carries a [`Replay`] of what its event did (the realizations, synced ids and cached
//! answers, re-evaluated against the catalog the event used); the writer reads the stored
//! profile, replays the pending events on it in order and writes the result only if the
//! stored bytes are still those it read (`swap_profile_bytes`). Another node's write in
//! between makes it read and replay again, up to [`MAX_SWAP_ATTEMPTS`] times; so every event
//! is applied once to whatever the other nodes wrote, and no realization is lost.
//!
//! That alone would cost a read per event and a read and a replay per write. So every stored
//! profile also has a version (a random token each write sets), and a session keeps its
//! visitor's profile in memory with the version it holds: [`ProfileService::refresh`] answers
//! from the pending save if there is one, and otherwise asks the store only whether the
//! version is still that one (checks are batched: one pipeline per node for all that wait),
//! reading the profile when another node wrote it. A pending save remembers the version its
//! bytes were made from, and the writer swaps them in directly (again one pipeline for all
//! that are due) if the store still holds that version; only when it does not (another node
//! wrote) does it read and replay. With a load balancer that sends each visitor to the same
//! node (affinity on the `demdex` cookie), that is the rare case (`docs/architecture.md`,
//! Shared store).
//!
//! Durability: a crash loses what is pending (at most `write_delay` of changes) plus what sled
//! has not flushed (`store.flush_every_ms`); [`ProfileService::flush`] (shutdown) writes
//! everything pending and flushes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::group_commit::GroupCommit;
use super::health::{Failing, StoreHealth};
use super::readers::ReadPool;
use super::{
    codec, new_version, on_blocking_thread, IdLink, ProfileStore, ScanCursor, StoreError,
    StoredIds, VersionedWrite,
};
use crate::core::ids::VisitorId;
use crate::core::profile::Profile;

/// Profiles read per step of the retention sweep.
const SWEEP_BATCH: usize = 500;

/// What a retention sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub scanned: usize,
    /// Unseen for longer than the retention: erased.
    pub purged: usize,
    /// Expired realizations dropped.
    pub trimmed: usize,
    /// Left as they are (reported by the next read of the visitor).
    pub unreadable: usize,
}

/// How often a writer thread looks for due writes.
const TICK: Duration = Duration::from_millis(5);
/// A mapping to the same visitor is written again only when the stored one is older than
/// this, so that "the most recent mapping wins" stays true to the hour without a write per
/// event.
pub const LINK_REFRESH_SECS: i64 = 3600;

/// What one event did to a profile, to do again on a newer stored copy (shared stores).
pub trait Replay: Send + Sync {
    fn apply(&self, profile: &mut Profile);
}

/// A visitor's unwritten events, oldest first.
type Replays = Vec<Arc<dyn Replay>>;

/// Read-replay-swap rounds before a write gives up (and is retried at the next tick).
pub const MAX_SWAP_ATTEMPTS: usize = 10;

struct Pending {
    bytes: Arc<Vec<u8>>,
    /// Shared stores: the events not yet written, oldest first.
    replays: Replays,
    /// Shared stores: the stored version `bytes` were made from, if known; only then may they
    /// be written without a replay.
    base: Base,
    /// Shared stores: the version `bytes` get when written directly (the session holds it).
    token: u64,
    /// Bumped on every save, so a writer only removes the version it wrote.
    version: u64,
    /// When the oldest unwritten change of this entry was made.
    since: Instant,
}

/// Which stored version a pending save was made from (shared stores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// This version (0: no profile was stored).
    Version(u64),
    /// Not known (another node wrote meanwhile, or the saver held no version): the write must
    /// read and replay.
    Unknown,
}

/// What [`ProfileService::refresh`] found.
#[derive(Debug)]
pub enum Refreshed {
    /// The store still holds the version the caller holds: its copy is current.
    Unchanged,
    /// The current profile (`None`: none stored) and its version, to hold from now on.
    Read(Option<Profile>, Option<u64>),
}

/// Most version checks one reader sends the store at once.
const REFRESH_BATCH: usize = 256;

/// Version checks waiting, and whether a reader is on them.
#[derive(Default)]
struct Refreshes {
    waiting: Vec<RefreshRequest>,
    /// A reader is answering checks: it takes the waiting ones when done with its batch.
    running: bool,
}

impl Refreshes {
    /// No reader is on the checks any more: those waiting get `error`, and the next check
    /// starts a reader again.
    fn fail_waiting(&mut self, error: &StoreError) {
        self.running = false;
        for request in self.waiting.drain(..) {
            let _ = request.done.send(Err(error.clone()));
        }
    }
}

/// A [`ProfileService::refresh`] waiting for a reader.
struct RefreshRequest {
    visitor: VisitorId,
    held: Option<u64>,
    done: tokio::sync::oneshot::Sender<Result<Refreshed, StoreError>>,
}

type LinkKey = (u32, String);

/// A shard's unwritten profiles, and the order they fell due in.
#[derive(Default)]
struct PendingProfiles {
    entries: HashMap<VisitorId, Pending>,
    /// (`since`, visitor) of every entry, oldest first, so a writer's tick looks only at what
    /// is due instead of walking every pending entry (a second of saves) 200 times a second.
    /// An item whose entry is gone, or has a later `since` (it has an item of its own for
    /// it), is skipped.
    due: VecDeque<(Instant, VisitorId)>,
}

impl PendingProfiles {
    /// The entries due by `due_before` (all of them with `None`), taken off the due order but
    /// left pending until written.
    fn take_due(&mut self, due_before: Option<Instant>) -> Vec<(VisitorId, &Pending)> {
        let mut due = Vec::new();
        match due_before {
            None => {
                self.due.clear();
                due.extend(self.entries.iter().map(|(v, p)| (*v, p)));
            }
            Some(before) => {
                while let Some(&(since, visitor)) = self.due.front() {
                    if since > before {
                        break;
                    }
                    self.due.pop_front();
                    if let Some(p) = self.entries.get(&visitor).filter(|p| p.since <= since) {
                        due.push((visitor, p));
                    }
                }
            }
        }
        due
    }

    /// After a failed write: the entries are due again at once (ahead of the others).
    fn retry(&mut self, visitors: impl DoubleEndedIterator<Item = VisitorId>) {
        for visitor in visitors.rev() {
            if let Some(p) = self.entries.get(&visitor) {
                self.due.push_front((p.since, visitor));
            }
        }
    }

    /// After a write started at `started`: an entry saved again meanwhile is due again from
    /// then.
    fn requeue(&mut self, visitor: VisitorId, started: Instant) {
        if let Some(p) = self.entries.get_mut(&visitor) {
            p.since = started;
            self.due.push_back((started, visitor));
        }
    }
}

#[derive(Default)]
struct Shard {
    pending: Mutex<PendingProfiles>,
    /// ID-sync mappings not yet written.
    links: Mutex<HashMap<LinkKey, IdLink>>,
    /// Held while this shard writes to or deletes from the store.
    io: Mutex<()>,
    /// Durable mode: callers waiting until a visitor has nothing pending in this shard (its
    /// changes are in the store); answered by the writer after each tick.
    written_waiters: Mutex<HashMap<VisitorId, Vec<oneshot::Sender<()>>>>,
    /// The shard's writer, woken by a durable-mode waiter instead of waiting for its tick.
    writer: std::sync::OnceLock<std::thread::Thread>,
}

struct Inner {
    shards: Vec<Shard>,
    store: Arc<dyn ProfileStore>,
    write_delay: Duration,
    /// Pending profiles across shards (the write-behind backlog).
    pending: AtomicUsize,
    versions: AtomicU64,
    stopping: AtomicBool,
    /// Other nodes write the same store: writes replay events on the stored profile.
    shared: bool,
    /// Which ids may be stored: a read of one that was never stored is answered at once.
    ids: Arc<StoredIds>,
    /// The threads that do the event path's reads.
    readers: ReadPool,
    /// Shared stores: version checks waiting for a reader.
    refreshes: Mutex<Refreshes>,
    /// Visitors that opted out, all of them in memory (16 bytes each plus the set's overhead),
    /// so that no request of theirs reaches a session, a provider or the store.
    opted_out: RwLock<HashSet<VisitorId>>,
    /// Opt-outs wait for a flush they share (one `fsync` for a flood of them).
    group_commit: Arc<GroupCommit>,
    /// Whether writes reach the store (`/ready`, shedding).
    health: StoreHealth,
}

impl Inner {
    fn is_opted_out(&self, visitor: VisitorId) -> bool {
        self.opted_out
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&visitor)
    }
}

/// How the service runs.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSettings {
    /// Writer threads (each visitor always on the same one).
    pub shards: usize,
    /// A saved profile is written once it has been pending this long.
    pub write_delay: Duration,
    /// Ids the stored-id filter is sized for (sled only).
    pub expected_ids: usize,
    /// Threads doing the event path's reads.
    pub read_threads: usize,
}

impl ServiceSettings {
    /// `shards` writers writing after `write_delay`; the rest as a small test needs it.
    pub fn new(shards: usize, write_delay: Duration) -> Self {
        ServiceSettings {
            shards,
            write_delay,
            expected_ids: 1000,
            read_threads: 2,
        }
    }
}

/// Cheap to clone; every clone shares the same cache and writer threads.
#[derive(Clone)]
pub struct ProfileService {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations that leave the map consistent, so a
    // poisoned lock (a panic elsewhere while holding it) still guards valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProfileService {
    /// Starts the writer and reader threads over `store` (see [`ServiceSettings`]); the
    /// [`StoredIds`] filter is built from the store on a thread of its own.
    /// Fails only if the stored opt-outs cannot be read: starting without them would serve
    /// visitors who asked not to be.
    pub fn start(
        store: Arc<dyn ProfileStore>,
        settings: ServiceSettings,
    ) -> Result<ProfileService, StoreError> {
        let ids = Arc::new(StoredIds::new(settings.expected_ids));
        let service = Self::start_with(store.clone(), settings, false, ids.clone())?;
        let spawned = std::thread::Builder::new()
            .name("tributary-store-ids".into())
            .spawn(move || load_stored_ids(&ids, store.as_ref()));
        if let Err(e) = spawned {
            log::warn!("stored-id filter not built ({e}): every profile lookup reads the store");
        }
        Ok(service)
    }

    /// As [`ProfileService::start`], for a store other nodes write too (see the module doc):
    /// no [`StoredIds`] filter, as the other nodes' ids are not in it.
    pub fn start_shared(
        store: Arc<dyn ProfileStore>,
        settings: ServiceSettings,
    ) -> Result<ProfileService, StoreError> {
        let ids = Arc::new(StoredIds::disabled());
        Self::start_with(store, settings, true, ids)
    }

    fn start_with(
        store: Arc<dyn ProfileStore>,
        settings: ServiceSettings,
        shared: bool,
        ids: Arc<StoredIds>,
    ) -> Result<ProfileService, StoreError> {
        let ServiceSettings {
            shards,
            write_delay,
            read_threads,
            ..
        } = settings;
        let opted_out = store.opted_out()?.into_iter().collect();
        let inner = Arc::new(Inner {
            ids,
            readers: ReadPool::start(read_threads),
            refreshes: Mutex::new(Refreshes::default()),
            opted_out: RwLock::new(opted_out),
            health: StoreHealth::default(),
            group_commit: {
                let store = store.clone();
                GroupCommit::new(move || store.flush())
            },
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            store,
            write_delay,
            pending: AtomicUsize::new(0),
            versions: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            shared,
        });
        for index in 0..inner.shards.len() {
            let weak = Arc::downgrade(&inner);
            let spawned = std::thread::Builder::new()
                .name(format!("tributary-store-{index}"))
                .spawn(move || writer(weak, index));
            match spawned {
                Ok(handle) => {
                    let _ = inner.shards[index].writer.set(handle.thread().clone());
                }
                // Without its writer a shard would only be written at flush; say so loudly.
                Err(e) => log::error!("cannot start store writer thread {index}: {e}"),
            }
        }
        Ok(ProfileService { inner })
    }

    fn shard(&self, visitor: VisitorId) -> &Shard {
        let v = visitor.as_u128();
        let index = ((v ^ (v >> 64)) as u64 % self.inner.shards.len() as u64) as usize;
        &self.inner.shards[index]
    }

    fn link_shard(&self, dpid: u32, id: &str) -> &Shard {
        use std::hash::BuildHasher as _;
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one((dpid, id));
        &self.inner.shards[(hash % self.inner.shards.len() as u64) as usize]
    }

    /// Queues the mapping (data source `dpid`, `id`) → `link.visitor` (write-behind).
    pub fn link(&self, dpid: u32, id: &str, link: IdLink) {
        self.inner.ids.add_link(dpid, id);
        let mut links = lock(&self.link_shard(dpid, id).links);
        if links.insert((dpid, id.to_string()), link).is_none() {
            self.inner.pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The visitor (data source `dpid`, `id`) is mapped to: pending, or read from the store on
    /// a reader thread.
    pub async fn lookup_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
        let key = (dpid, id.to_string());
        if let Some(link) = lock(&self.link_shard(dpid, id).links).get(&key) {
            return Ok(Some(*link));
        }
        if !self.inner.ids.may_have_link(dpid, id) {
            return Ok(None);
        }
        let this = self.clone();
        self.inner
            .readers
            .run("store read", move || this.link_now(key.0, &key.1))
            .await
    }

    /// The mapping of (`dpid`, `id`), pending or stored, read on the calling thread (a
    /// blocking one).
    fn link_now(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
        let key = (dpid, id.to_string());
        if let Some(link) = lock(&self.link_shard(dpid, id).links).get(&key) {
            return Ok(Some(*link));
        }
        if !self.inner.ids.may_have_link(dpid, id) {
            return Ok(None);
        }
        self.inner.store.get_link(dpid, id)
    }

    /// Maps (data source `dpid`, `id`) to `link.visitor` unless it is mapped already, and
    /// returns the mapping that holds: `link`, or the one found. Two callers creating a device
    /// for one unseen id so get the same device. The shard's I/O lock, held from the look to
    /// the insert, keeps its writer from moving a pending mapping to the store in between; a
    /// plain [`ProfileService::link`] (an event's ID sync, where the latest wins) may still
    /// replace it later. Other nodes of a shared store are not held off.
    pub async fn link_if_absent(
        &self,
        dpid: u32,
        id: &str,
        link: IdLink,
    ) -> Result<IdLink, StoreError> {
        let this = self.clone();
        let id = id.to_string();
        self.inner
            .readers
            .run("store read", move || {
                let shard = this.link_shard(dpid, &id);
                let _io = lock(&shard.io);
                if let Some(found) = this.link_now(dpid, &id)? {
                    return Ok(found);
                }
                let mut links = lock(&shard.links);
                // An event's link() may have come in since the look: it stands.
                let holds = *links.entry((dpid, id.clone())).or_insert_with(|| {
                    this.inner.pending.fetch_add(1, Ordering::Relaxed);
                    link
                });
                this.inner.ids.add_link(dpid, &id);
                Ok(holds)
            })
            .await
    }

    /// Whether other nodes write the same store (so sessions must not keep profiles warm).
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Queues a save of the profile (write-behind): encodes it and returns.
    pub fn save(&self, visitor: VisitorId, profile: &Profile) -> Result<(), StoreError> {
        self.save_event(visitor, profile, None)
    }

    /// Queues a save of the profile an event produced, with the event's [`Replay`] (used by
    /// shared stores; ignored otherwise). In a shared store, a save without one is not
    /// written: only replays reach the store.
    pub fn save_event(
        &self,
        visitor: VisitorId,
        profile: &Profile,
        replay: Option<Arc<dyn Replay>>,
    ) -> Result<(), StoreError> {
        self.save_held(visitor, profile, replay, None).map(drop)
    }

    /// [`ProfileService::save_event`] by a caller that holds the profile: `held` is the version
    /// it was read as or last saved as ([`ProfileService::refresh`]). Returns the version to
    /// hold from now on (`None` for a store of one node, which needs none).
    pub fn save_held(
        &self,
        visitor: VisitorId,
        profile: &Profile,
        replay: Option<Arc<dyn Replay>>,
        held: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let bytes = Arc::new(codec::encode_profile(profile)?);
        let version = self.inner.versions.fetch_add(1, Ordering::Relaxed);
        let shared = self.inner.shared;
        let replay = replay.filter(|_| shared);
        let token = if shared { new_version() } else { 0 };
        self.inner.ids.add_profile(visitor);
        let mut pending = lock(&self.shard(visitor).pending);
        match pending.entries.get_mut(&visitor) {
            Some(entry) => {
                // Made from the entry's own latest state, the bytes may replace it on the same
                // base; made from anything else, only a replay knows what they are worth.
                if held != Some(entry.token) {
                    entry.base = Base::Unknown;
                }
                entry.bytes = bytes;
                entry.version = version;
                entry.token = token;
                entry.replays.extend(replay);
            }
            None => {
                let since = Instant::now();
                pending.entries.insert(
                    visitor,
                    Pending {
                        bytes,
                        replays: replay.into_iter().collect(),
                        base: held.map_or(Base::Unknown, Base::Version),
                        token,
                        version,
                        since,
                    },
                );
                pending.due.push_back((since, visitor));
                self.inner.pending.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(shared.then_some(token))
    }

    /// Shared stores: whether the profile a caller holds as version `held` is still current,
    /// and if not (another node wrote it, or nothing is held) the current one with its
    /// version. While a save of this node is pending, that save is the profile (read-your-
    /// writes, no round trip): another node's write meanwhile is found by the write, which
    /// then replays, and by the first check after it. Otherwise one small round trip when
    /// nothing changed, on a reader thread. A store of one node has no other writer: the held
    /// copy is always current.
    pub async fn refresh(
        &self,
        visitor: VisitorId,
        held: Option<u64>,
    ) -> Result<Refreshed, StoreError> {
        if !self.inner.shared {
            return match held {
                Some(_) => Ok(Refreshed::Unchanged),
                None => Ok(Refreshed::Read(self.load(visitor).await?, None)),
            };
        }
        if let Some(pending) = self.pending_profile(visitor, held) {
            return pending;
        }
        // Checks wait in one queue, and one reader at a time takes all that are waiting: one
        // round trip per store node for all of them, and while it is out the next batch
        // gathers (`docs/architecture.md`, Shared store).
        let started = Instant::now();
        let (done, answer) = tokio::sync::oneshot::channel();
        let start_reader = {
            let mut refreshes = lock(&self.inner.refreshes);
            refreshes.waiting.push(RefreshRequest {
                visitor,
                held,
                done,
            });
            !std::mem::replace(&mut refreshes.running, true)
        };
        if start_reader {
            let this = self.clone();
            let submitted = self
                .inner
                .readers
                .submit("store read", move || this.refresh_waiting());
            if let Err(e) = submitted {
                lock(&self.inner.refreshes).fail_waiting(&e);
            }
        }
        let refreshed = answer
            .await
            .map_err(|_| StoreError::Io("store read: the store reader thread failed".into()))?;
        metrics::histogram!("tributary_store_read_seconds").record(started.elapsed().as_secs_f64());
        refreshed
    }

    /// On a reader thread: answers the waiting checks, [`REFRESH_BATCH`] at a time, until none
    /// is left.
    fn refresh_waiting(&self) {
        // Should a batch panic (the reader survives it), the checks waiting are failed and the
        // next one starts a reader again.
        struct Stopped<'a>(&'a Mutex<Refreshes>);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if !std::thread::panicking() {
                    return;
                }
                let stopped = StoreError::Io("store read: the reader stopped".into());
                lock(self.0).fail_waiting(&stopped);
            }
        }
        let _stopped = Stopped(&self.inner.refreshes);
        loop {
            let requests: Vec<RefreshRequest> = {
                let mut refreshes = lock(&self.inner.refreshes);
                if refreshes.waiting.is_empty() {
                    refreshes.running = false;
                    return;
                }
                let n = refreshes.waiting.len().min(REFRESH_BATCH);
                refreshes.waiting.drain(..n).collect()
            };
            self.refresh_batch(requests);
        }
    }

    /// One batch of checks: from pending saves where there are some, else together from the
    /// store.
    fn refresh_batch(&self, requests: Vec<RefreshRequest>) {
        let mut asked = Vec::with_capacity(requests.len());
        let mut answer_to = Vec::with_capacity(requests.len());
        for request in requests {
            // Checked again on this thread, as in `load`.
            match self.pending_profile(request.visitor, request.held) {
                Some(answer) => {
                    let _ = request.done.send(answer);
                }
                None => {
                    asked.push((request.visitor, request.held));
                    answer_to.push(request.done);
                }
            }
        }
        if asked.is_empty() {
            return;
        }
        match self.inner.store.get_profiles_if_changed(&asked) {
            Ok(answers) => {
                for (done, answer) in answer_to.into_iter().zip(answers) {
                    let refreshed = match answer {
                        None => Ok(Refreshed::Unchanged),
                        Some((version, bytes)) => bytes
                            .as_deref()
                            .map(codec::decode_profile)
                            .transpose()
                            .map(|profile| Refreshed::Read(profile, Some(version))),
                    };
                    let _ = done.send(refreshed);
                }
            }
            Err(e) => {
                for done in answer_to {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    /// [`ProfileService::refresh`] answered by a pending save, if there is one.
    fn pending_profile(
        &self,
        visitor: VisitorId,
        held: Option<u64>,
    ) -> Option<Result<Refreshed, StoreError>> {
        let (token, bytes) = lock(&self.shard(visitor).pending)
            .entries
            .get(&visitor)
            .map(|p| (p.token, p.bytes.clone()))?;
        if held == Some(token) {
            return Some(Ok(Refreshed::Unchanged));
        }
        Some(codec::decode_profile(&bytes).map(|p| Refreshed::Read(Some(p), Some(token))))
    }

    /// The visitor's latest profile: pending, or read from the store on a reader thread.
    pub async fn load(&self, visitor: VisitorId) -> Result<Option<Profile>, StoreError> {
        let queued = lock(&self.shard(visitor).pending)
            .entries
            .get(&visitor)
            .map(|p| p.bytes.clone());
        if let Some(bytes) = queued {
            return codec::decode_profile(&bytes).map(Some);
        }
        if !self.inner.ids.may_have_profile(visitor) {
            return Ok(None);
        }
        let this = self.clone();
        let started = Instant::now();
        let loaded = self
            .inner
            .readers
            .run("store read", move || {
                // Checked again on this thread: a save may have been queued and written meanwhile,
                // and the store read below must not miss an entry that was pending a moment ago.
                let queued = lock(&this.shard(visitor).pending)
                    .entries
                    .get(&visitor)
                    .map(|p| p.bytes.clone());
                match queued {
                    Some(bytes) => codec::decode_profile(&bytes).map(Some),
                    None => this.inner.store.load_profile(visitor),
                }
            })
            .await;
        // Includes the wait for a reader thread: what the event waited for.
        metrics::histogram!("tributary_store_read_seconds").record(started.elapsed().as_secs_f64());
        loaded
    }

    /// Records the visitor's opt-out: at once in memory (the next request is refused), then
    /// durably in the store.
    pub async fn opt_out(&self, visitor: VisitorId, at: i64) -> Result<(), StoreError> {
        self.inner
            .opted_out
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(visitor);
        let this = self.clone();
        on_blocking_thread("store write", move || {
            this.inner.store.set_opted_out(visitor, at)
        })
        .await
        .inspect_err(|e| self.inner.health.failed("opt-out write", e))?;
        // An opt-out must survive a crash: it is the visitor's explicit choice.
        self.shared_flush("opt-out flush").await
    }

    /// The group commit's next flush (`what` names it in the store's health if it fails).
    async fn shared_flush(&self, what: &str) -> Result<(), StoreError> {
        self.inner
            .group_commit
            .durable()
            .await
            .inspect_err(|e| self.inner.health.failed(what, e))
    }

    /// Resolves once every change saved for `visitor` before the call is durable: written
    /// by its shard's writer (woken for it; with `write_delay` 0 it takes it at once), then
    /// flushed in a flush shared with every other caller waiting then (durable mode,
    /// `store.durable`). Never resolves while writes fail; callers bound the wait.
    pub async fn durable(&self, visitor: VisitorId) -> Result<(), StoreError> {
        let shard = self.shard(visitor);
        let written = {
            // The writer's order too (`answer_written_waiters`): waiters, then pending.
            let mut waiters = lock(&shard.written_waiters);
            if lock(&shard.pending).entries.contains_key(&visitor) {
                let (tx, rx) = oneshot::channel();
                waiters.entry(visitor).or_default().push(tx);
                Some(rx)
            } else {
                None
            }
        };
        if let Some(written) = written {
            if let Some(writer) = shard.writer.get() {
                writer.unpark();
            }
            written
                .await
                .map_err(|_| StoreError::Io("the profile writer stopped".into()))?;
        }
        self.shared_flush("durable flush").await
    }

    /// Whether writes reach the store: `None` while they do.
    pub fn store_failing(&self) -> Option<Failing> {
        self.inner.health.failing()
    }

    pub fn is_store_failing(&self) -> bool {
        self.inner.health.is_failing()
    }

    /// Reads the opt-outs again when their number in the store is not the one in memory:
    /// how a node learns of opt-outs made on other nodes of a shared store. Returns how many
    /// were new.
    pub fn refresh_opt_outs(&self) -> Result<usize, StoreError> {
        let known = self
            .inner
            .opted_out
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if self.inner.store.opted_out_count()? == known {
            return Ok(0);
        }
        let all = self.inner.store.opted_out()?;
        let mut set = self
            .inner
            .opted_out
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let before = set.len();
        set.extend(all);
        Ok(set.len() - before)
    }

    /// Whether the visitor opted out (an in-memory lookup: every request asks).
    pub fn is_opted_out(&self, visitor: VisitorId) -> bool {
        self.inner.is_opted_out(visitor)
    }

    /// Deletes the visitor's profile, pending or stored.
    pub async fn delete(&self, visitor: VisitorId) -> Result<(), StoreError> {
        let this = self.clone();
        on_blocking_thread("store delete", move || {
            let shard = this.shard(visitor);
            let _io = lock(&shard.io);
            if lock(&shard.pending).entries.remove(&visitor).is_some() {
                this.inner.pending.fetch_sub(1, Ordering::Relaxed);
            }
            this.inner.store.delete_profile(visitor)
        })
        .await
    }

    /// Removes the mappings (data source, id) → `visitor`, pending or stored; a mapping that
    /// now leads to another visitor (a more recent sync) is left alone.
    pub async fn unlink(
        &self,
        visitor: VisitorId,
        ids: Vec<(u32, String)>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        on_blocking_thread("store unlink", move || this.unlink_now(visitor, ids)).await
    }

    /// [`ProfileService::unlink`] on the calling thread (a blocking one).
    fn unlink_now(&self, visitor: VisitorId, ids: Vec<(u32, String)>) -> Result<(), StoreError> {
        for (dpid, id) in ids {
            let shard = self.link_shard(dpid, &id);
            let _io = lock(&shard.io);
            let key = (dpid, id);
            {
                let mut links = lock(&shard.links);
                if links.get(&key).is_some_and(|l| l.visitor == visitor) {
                    links.remove(&key);
                    self.inner.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let (dpid, id) = key;
            if self
                .inner
                .store
                .get_link(dpid, &id)?
                .is_some_and(|l| l.visitor == visitor)
            {
                self.inner.store.delete_link(dpid, &id)?;
            }
        }
        Ok(())
    }

    /// The retention sweep, on the calling thread (run it as a blocking task): walks every
    /// stored profile a batch at a time. A profile unseen since `unseen_before` (Unix seconds)
    /// is purged with the ID-sync mappings that lead to it; the others go through `trim`
    /// (which drops expired realizations) and are written back if it changed them. Visitors
    /// for which `live` is true (a session holds them) and those with a pending save are left
    /// to their session. Events never wait for it: each profile is handled under its shard's
    /// I/O lock only, for a moment.
    pub fn sweep_now(
        &self,
        unseen_before: i64,
        trim: &dyn Fn(&mut Profile) -> bool,
        live: &dyn Fn(VisitorId) -> bool,
        purged: &dyn Fn(VisitorId, &Profile),
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let mut cursor = Some(ScanCursor::Start);
        while let Some(at) = cursor.take() {
            let (batch, next) = self.inner.store.scan_profiles(at, SWEEP_BATCH)?;
            cursor = next;
            for (visitor, bytes) in batch {
                report.scanned += 1;
                if live(visitor) {
                    continue;
                }
                let Ok(mut profile) = codec::decode_profile(&bytes) else {
                    report.unreadable += 1;
                    continue;
                };
                let shard = self.shard(visitor);
                let purge = profile.last_seen.max(profile.first_seen) < unseen_before;
                let synced: Vec<(u32, String)> = profile.synced_ids.clone().into_iter().collect();
                {
                    let _io = lock(&shard.io);
                    if lock(&shard.pending).entries.contains_key(&visitor) {
                        continue;
                    }
                    if purge {
                        self.inner.store.delete_profile(visitor)?;
                        report.purged += 1;
                    } else if trim(&mut profile) {
                        // Only over what was read: another node (shared store) may have
                        // written since; then the next sweep trims it.
                        let encoded = codec::encode_profile(&profile)?;
                        if self
                            .inner
                            .store
                            .swap_profile_bytes(visitor, Some(&bytes), &encoded)?
                        {
                            report.trimmed += 1;
                        }
                    }
                }
                if purge {
                    self.unlink_now(visitor, synced)?;
                    purged(visitor, &profile);
                }
            }
            // Leave the disk and a core to events between batches.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(report)
    }

    /// Writes everything pending and makes the store durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let this = self.clone();
        on_blocking_thread("store flush", move || {
            for shard in &this.inner.shards {
                write_due(&this.inner, shard, None)?;
            }
            this.inner.store.flush()
        })
        .await
    }

    /// Profiles and ID-sync mappings saved and not yet written (the write-behind backlog).
    pub fn queue_depth(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Distinguishes services (one per running server) in per-thread registries.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// Stops the writer threads after their current round (pending entries stay pending until
    /// [`ProfileService::flush`]).
    pub fn stop_writers(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }
}

/// Builds the [`StoredIds`] filter (a thread of its own: a million stored ids take about a
/// second, and events are served meanwhile, each reading the store).
fn load_stored_ids(ids: &StoredIds, store: &dyn ProfileStore) {
    let started = Instant::now();
    match ids.load(store) {
        Ok(n) => log::info!(
            "stored-id filter built: {n} ids in {:.1} s ({} KiB); reads of ids never stored are spared from now on",
            started.elapsed().as_secs_f64(),
            ids.memory_bytes() / 1024
        ),
        Err(e) => log::warn!("stored-id filter not built ({e}): every profile lookup reads the store"),
    }
}

/// One shard's writer: every tick, writes the entries that are due. Holds only a weak
/// reference, so it ends when the service is dropped.
fn writer(inner: std::sync::Weak<Inner>, index: usize) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        // A durable-mode waiter unparks it early (`ProfileService::durable`).
        std::thread::park_timeout(TICK);
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        let due_before = Instant::now()
            .checked_sub(inner.write_delay)
            .unwrap_or_else(Instant::now);
        let shard = &inner.shards[index];
        let written = write_due(&inner, shard, Some(due_before));
        answer_written_waiters(shard);
        if let Err(e) = written {
            metrics::counter!("tributary_store_write_errors_total").increment(1);
            inner.health.failed("profile writes", &e);
            // A failing disk fails every tick; one line every ten seconds is enough.
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                log::error!("profile writes failed (they stay pending and are retried): {e}");
                last_error_log = Some(Instant::now());
            }
        }
    }
}

/// Answers the durable-mode callers whose visitor has nothing pending in `shard` any more:
/// written (or erased) since they asked.
fn answer_written_waiters(shard: &Shard) {
    let mut waiters = lock(&shard.written_waiters);
    if waiters.is_empty() {
        return;
    }
    let pending = lock(&shard.pending);
    waiters.retain(|visitor, senders| {
        if pending.entries.contains_key(visitor) {
            return true;
        }
        for sender in senders.drain(..) {
            let _ = sender.send(());
        }
        false
    });
}

/// Writes the shard's entries pending since before `due_before` (all of them with `None`),
/// and its pending ID-sync mappings.
fn write_due(inner: &Inner, shard: &Shard, due_before: Option<Instant>) -> Result<(), StoreError> {
    let _io = lock(&shard.io);
    write_links(inner, shard)?;
    if inner.shared {
        return write_due_shared(inner, shard, due_before);
    }
    let batch: Vec<(VisitorId, Arc<Vec<u8>>, u64)> = lock(&shard.pending)
        .take_due(due_before)
        .into_iter()
        .map(|(v, p)| (v, p.bytes.clone(), p.version))
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let items: Vec<(VisitorId, &[u8])> = batch.iter().map(|(v, b, _)| (*v, b.as_slice())).collect();
    if let Err(e) = inner.store.put_profile_bytes(&items) {
        lock(&shard.pending).retry(batch.iter().map(|(v, _, _)| *v));
        return Err(e);
    }
    metrics::histogram!("tributary_store_write_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("tributary_store_write_batch_size").record(items.len() as f64);
    inner.health.succeeded();
    let mut pending = lock(&shard.pending);
    for (visitor, _, version) in batch {
        if pending
            .entries
            .get(&visitor)
            .is_some_and(|p| p.version == version)
        {
            pending.entries.remove(&visitor);
            inner.pending.fetch_sub(1, Ordering::Relaxed);
        } else {
            // Saved again while being written: the newer change is due from now on.
            pending.requeue(visitor, started);
        }
    }
    Ok(())
}

/// [`write_due`] for a shared store: per visitor, read the stored profile, replay the pending
/// events on it, swap it in if nobody wrote meanwhile, else try again. Called with the
/// shard's I/O lock held.
fn write_due_shared(
    inner: &Inner,
    shard: &Shard,
    due_before: Option<Instant>,
) -> Result<(), StoreError> {
    let batch: Vec<Due> = lock(&shard.pending)
        .take_due(due_before)
        .into_iter()
        .map(|(visitor, p)| Due {
            visitor,
            bytes: p.bytes.clone(),
            replays: p.replays.clone(),
            base: p.base,
            token: p.token,
            version: p.version,
            // Opted out on another node meanwhile: these events are not written.
            skipped: p.replays.is_empty() || inner.is_opted_out(visitor),
        })
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    // Those whose base the store may still hold: swapped in together, one round trip per
    // node. What the store refuses (another node wrote first) is replayed one by one.
    let direct: Vec<VersionedWrite<'_>> = batch
        .iter()
        .filter(|d| !d.skipped)
        .filter_map(|d| match d.base {
            Base::Version(expected) => Some(VersionedWrite {
                visitor: d.visitor,
                expected,
                bytes: &d.bytes,
                version: d.token,
            }),
            Base::Unknown => None,
        })
        .collect();
    let swapped: HashSet<VisitorId> = match inner.store.swap_profiles_versioned(&direct) {
        Ok(done) => direct
            .iter()
            .zip(done)
            .filter(|(_, swapped)| *swapped)
            .map(|(w, _)| w.visitor)
            .collect(),
        Err(e) => {
            lock(&shard.pending).retry(batch.iter().map(|d| d.visitor));
            return Err(e);
        }
    };
    let mut first_error = None;
    for d in &batch {
        let written = if d.skipped {
            Ok(None)
        } else if swapped.contains(&d.visitor) {
            Ok(Some(d.token))
        } else {
            replay_and_swap(inner, d.visitor, &d.replays).map(|()| None)
        };
        let mut pending = lock(&shard.pending);
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                first_error.get_or_insert(e);
                pending.retry(std::iter::once(d.visitor));
                continue;
            }
        };
        let Some(entry) = pending.entries.get_mut(&d.visitor) else {
            continue;
        };
        if entry.version == d.version {
            pending.entries.remove(&d.visitor);
            inner.pending.fetch_sub(1, Ordering::Relaxed);
        } else {
            // Saved again meanwhile: those events are still to write, from now on. Their
            // bytes were made from what was just written only if it was written as saved
            // (not replayed).
            let done = d.replays.len().min(entry.replays.len());
            entry.replays.drain(..done);
            entry.base = match (written, entry.base) {
                (Some(v), Base::Version(_)) => Base::Version(v),
                _ => Base::Unknown,
            };
            pending.requeue(d.visitor, started);
        }
    }
    metrics::histogram!("tributary_store_write_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("tributary_store_write_batch_size").record(batch.len() as f64);
    if first_error.is_none() {
        inner.health.succeeded();
    }
    first_error.map_or(Ok(()), Err)
}

/// A pending save taken for writing.
struct Due {
    visitor: VisitorId,
    bytes: Arc<Vec<u8>>,
    replays: Replays,
    base: Base,
    token: u64,
    version: u64,
    /// Nothing to write: no events, or the visitor opted out (on another node) meanwhile.
    skipped: bool,
}

fn replay_and_swap(
    inner: &Inner,
    visitor: VisitorId,
    replays: &[Arc<dyn Replay>],
) -> Result<(), StoreError> {
    for attempt in 0..MAX_SWAP_ATTEMPTS {
        let stored = inner.store.get_profile_bytes(visitor)?;
        let mut profile = match stored.as_deref().map(codec::decode_profile) {
            None => Profile::default(),
            Some(Ok(p)) => p,
            // As with one node: an unreadable record is not overwritten.
            Some(Err(e)) => return Err(e),
        };
        for replay in replays {
            replay.apply(&mut profile);
        }
        let encoded = codec::encode_profile(&profile)?;
        if inner
            .store
            .swap_profile_bytes(visitor, stored.as_deref(), &encoded)?
        {
            if attempt > 0 {
                metrics::counter!("tributary_store_write_conflicts_total")
                    .increment(attempt as u64);
            }
            return Ok(());
        }
    }
    metrics::counter!("tributary_store_write_conflicts_total").increment(MAX_SWAP_ATTEMPTS as u64);
    Err(StoreError::Io(format!(
        "profile of {visitor} changed by other nodes {MAX_SWAP_ATTEMPTS} times in a row while being written; tried again later"
    )))
}

/// Writes the shard's pending mappings, skipping those the store already holds (recently
/// asserted, same visitor). Called with the shard's I/O lock held.
fn write_links(inner: &Inner, shard: &Shard) -> Result<(), StoreError> {
    let queued: Vec<(LinkKey, IdLink)> = lock(&shard.links)
        .iter()
        .map(|(k, l)| (k.clone(), *l))
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    let mut writes: Vec<(u32, &str, IdLink)> = Vec::new();
    for ((dpid, id), link) in &queued {
        let stored = inner.store.get_link(*dpid, id).ok().flatten();
        let current = stored.is_some_and(|s| {
            s.visitor == link.visitor && link.at.saturating_sub(s.at) < LINK_REFRESH_SECS
        });
        if !current {
            writes.push((*dpid, id.as_str(), *link));
        }
    }
    if !writes.is_empty() {
        inner.store.put_links(&writes)?;
        inner.health.succeeded();
        metrics::counter!("tributary_id_links_written_total").increment(writes.len() as u64);
    }
    let mut links = lock(&shard.links);
    for (key, link) in queued {
        if links.get(&key) == Some(&link) {
            links.remove(&key);
            inner.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn service(dir: &std::path::Path, delay_ms: u64) -> (ProfileService, Arc<SledStore>) {
        let store = Arc::new(SledStore::open(dir, 8 << 20, 100).unwrap());
        (
            ProfileService::start(
                store.clone(),
                ServiceSettings::new(3, Duration::from_millis(delay_ms)),
            )
            .unwrap(),
            store,
        )
    }

    fn profile(seen: i64) -> Profile {
        Profile {
            last_seen: seen,
            ..Default::default()
        }
    }

    #[actix_rt::test]
    async fn loads_see_earlier_saves_and_flush_writes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path(), 60_000);
        let ids: Vec<VisitorId> = (0..200).map(|_| VisitorId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            for n in 0..5 {
                svc.save(*id, &profile(i as i64 * 10 + n)).unwrap();
            }
        }
        assert_eq!(
            svc.queue_depth(),
            200,
            "five saves of a visitor are one pending write"
        );
        // Read-your-writes: the last save of each visitor, pending or written.
        for (i, id) in ids.iter().enumerate() {
            let p = svc.load(*id).await.unwrap().unwrap();
            assert_eq!(p.last_seen, i as i64 * 10 + 4);
        }
        assert!(
            store.load_profile(ids[0]).unwrap().is_none(),
            "not written before its delay"
        );
        svc.flush().await.unwrap();
        assert_eq!(svc.queue_depth(), 0);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                store.load_profile(*id).unwrap().unwrap().last_seen,
                i as i64 * 10 + 4
            );
        }
        assert!(svc.load(VisitorId::generate()).await.unwrap().is_none());
    }

    #[actix_rt::test]
    async fn writers_write_once_the_delay_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path(), 20);
        let id = VisitorId::generate();
        svc.save(id, &profile(1)).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while svc.queue_depth() > 0 && Instant::now() < until {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(svc.queue_depth(), 0);
        assert_eq!(store.load_profile(id).unwrap().unwrap().last_seen, 1);
        // The stored copy is what a later load sees.
        assert_eq!(svc.load(id).await.unwrap().unwrap().last_seen, 1);
    }

    #[actix_rt::test]
    async fn delete_removes_pending_and_stored_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path(), 60_000);
        let id = VisitorId::generate();
        svc.save(id, &profile(1)).unwrap();
        svc.flush().await.unwrap();
        svc.save(id, &profile(2)).unwrap();
        svc.delete(id).await.unwrap();
        assert!(svc.load(id).await.unwrap().is_none());
        svc.flush().await.unwrap();
        assert!(store.load_profile(id).unwrap().is_none());
        svc.save(id, &profile(3)).unwrap();
        svc.flush().await.unwrap();
        assert_eq!(store.load_profile(id).unwrap().unwrap().last_seen, 3);
    }

    #[actix_rt::test]
    async fn links_are_read_back_before_and_after_their_write() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path(), 60_000);
        let (a, b) = (VisitorId::generate(), VisitorId::generate());
        assert_eq!(svc.lookup_link(1, "x").await.unwrap(), None);
        svc.link(
            1,
            "x",
            IdLink {
                visitor: a,
                at: 100,
            },
        );
        svc.link(
            1,
            "x",
            IdLink {
                visitor: b,
                at: 101,
            },
        );
        assert_eq!(svc.queue_depth(), 1);
        assert_eq!(
            svc.lookup_link(1, "x").await.unwrap().map(|l| l.visitor),
            Some(b),
            "pending, the latest wins"
        );
        svc.flush().await.unwrap();
        assert_eq!(svc.queue_depth(), 0);
        assert_eq!(
            store.get_link(1, "x").unwrap(),
            Some(IdLink {
                visitor: b,
                at: 101
            })
        );
        // The same mapping again within the hour is not rewritten; later, it is.
        svc.link(
            1,
            "x",
            IdLink {
                visitor: b,
                at: 200,
            },
        );
        svc.flush().await.unwrap();
        assert_eq!(store.get_link(1, "x").unwrap().unwrap().at, 101);
        svc.link(
            1,
            "x",
            IdLink {
                visitor: b,
                at: 101 + LINK_REFRESH_SECS,
            },
        );
        svc.flush().await.unwrap();
        assert_eq!(
            store.get_link(1, "x").unwrap().unwrap().at,
            101 + LINK_REFRESH_SECS
        );
        assert_eq!(svc.lookup_link(1, "x").await.unwrap().unwrap().visitor, b);
    }

    #[actix_rt::test]
    async fn link_if_absent_keeps_the_first_mapping_pending_or_written() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path(), 60_000);
        let (a, b, c) = (
            VisitorId::generate(),
            VisitorId::generate(),
            VisitorId::generate(),
        );
        let at = |visitor| IdLink { visitor, at: 100 };
        // Concurrent creators of one unseen id: one device wins, and both are told which.
        let (first, second) = futures_util::future::join(
            svc.link_if_absent(4, "x", at(a)),
            svc.link_if_absent(4, "x", at(b)),
        )
        .await;
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first, second);
        assert_eq!(svc.queue_depth(), 1);
        svc.flush().await.unwrap();
        assert_eq!(store.get_link(4, "x").unwrap(), Some(first));
        // Written, not pending: still found.
        assert_eq!(svc.link_if_absent(4, "x", at(c)).await.unwrap(), first);
        assert_eq!(svc.queue_depth(), 0);
        // Unmapped: the new mapping is queued and read back.
        assert_eq!(svc.link_if_absent(4, "y", at(c)).await.unwrap(), at(c));
        assert_eq!(svc.lookup_link(4, "y").await.unwrap(), Some(at(c)));
    }

    #[actix_rt::test]
    async fn unreadable_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let id = VisitorId::generate();
        {
            let store = SledStore::open(dir.path(), 8 << 20, 100).unwrap();
            store.put_raw_profile(id, &[9, 9, 9]).unwrap();
        }
        let (svc, _store) = service(dir.path(), 10);
        assert!(matches!(
            svc.load(id).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// Failed writes make the store failing (what `/ready` and the shedder see) and stay
    /// pending; the first write that succeeds again makes it healthy, with nothing lost.
    #[actix_rt::test]
    async fn failed_writes_stay_pending_and_a_successful_one_ends_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk, svc) = counted(
            dir.path(),
            true,
            ServiceSettings::new(1, Duration::from_millis(1)),
        );
        let visitors: Vec<VisitorId> = (0..20).map(|_| VisitorId::generate()).collect();
        for (i, v) in visitors.iter().enumerate() {
            svc.save(*v, &profile(i as i64)).unwrap();
        }
        let until = Instant::now() + Duration::from_secs(10);
        while !svc.is_store_failing() {
            assert!(Instant::now() < until, "the failure was not noticed");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let failing = svc.store_failing().unwrap();
        assert!(failing.error.contains("No space left"), "{failing:?}");
        assert_eq!(svc.queue_depth(), 20, "nothing dropped");
        disk.full.store(false, Ordering::Relaxed);
        while svc.is_store_failing() || svc.queue_depth() > 0 {
            assert!(Instant::now() < until, "no recovery");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        for (i, v) in visitors.iter().enumerate() {
            let stored = store.get_profile_bytes(*v).unwrap().unwrap();
            assert_eq!(codec::decode_profile(&stored).unwrap().last_seen, i as i64);
        }
    }

    /// Durable mode's wait: answered once the visitor's change is written and flushed, not
    /// while writes fail; at once for a visitor with nothing pending.
    #[actix_rt::test]
    async fn durable_waits_for_the_write_and_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk, svc) = counted(dir.path(), true, ServiceSettings::new(2, Duration::ZERO));
        let visitor = VisitorId::generate();
        svc.save(visitor, &profile(3)).unwrap();
        let waiting = actix_rt::time::timeout(Duration::from_millis(200), svc.durable(visitor));
        assert!(waiting.await.is_err(), "answered while writes fail");
        assert!(store.get_profile_bytes(visitor).unwrap().is_none());
        disk.full.store(false, Ordering::Relaxed);
        svc.durable(visitor).await.unwrap();
        let stored = store.get_profile_bytes(visitor).unwrap().unwrap();
        assert_eq!(codec::decode_profile(&stored).unwrap().last_seen, 3);
        svc.durable(VisitorId::generate()).await.unwrap();
    }

    /// Once the stored-id filter is built, an id never stored is answered without a store
    /// read; ids stored before the start, and ids saved since, are still read.
    #[actix_rt::test]
    async fn ids_never_stored_cost_no_read_once_the_filter_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let (before, link_before) = (VisitorId::generate(), VisitorId::generate());
        {
            let store = SledStore::open(dir.path(), 8 << 20, 100).unwrap();
            store.save_profile(before, &profile(7)).unwrap();
            let link = IdLink {
                visitor: link_before,
                at: 1,
            };
            store.put_links(&[(3, "crm", link)]).unwrap();
        }
        let (_store, counting, svc) = counted(
            dir.path(),
            false,
            ServiceSettings::new(2, Duration::from_millis(10)),
        );
        let until = Instant::now() + Duration::from_secs(10);
        while svc.inner.ids.may_have_profile(VisitorId::generate()) && Instant::now() < until {
            // Not built yet (or a wrong "yes": one in a hundred); ask again.
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let reads = || counting.reads.load(Ordering::Relaxed);
        let start = reads();
        for _ in 0..100 {
            assert!(svc.load(VisitorId::generate()).await.unwrap().is_none());
            assert!(svc.lookup_link(3, "other").await.unwrap().is_none());
        }
        let spared = 200 - (reads() - start);
        assert!(spared >= 180, "only {spared} of 200 reads spared");
        assert_eq!(svc.load(before).await.unwrap().unwrap().last_seen, 7);
        let link = svc.lookup_link(3, "crm").await.unwrap().unwrap();
        assert_eq!(link.visitor, link_before);
        let new = VisitorId::generate();
        svc.save(new, &profile(9)).unwrap();
        svc.flush().await.unwrap();
        assert_eq!(svc.load(new).await.unwrap().unwrap().last_seen, 9);
    }

    /// A service over sled at `dir` through [`CountingReads`] (`full`: writes fail at first).
    fn counted(
        dir: &std::path::Path,
        full: bool,
        settings: ServiceSettings,
    ) -> (Arc<SledStore>, Arc<CountingReads>, ProfileService) {
        // A store just closed in `dir` may still be held by sled's flusher for a moment.
        let until = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match SledStore::open(dir, 8 << 20, 100) {
                Ok(store) => break Arc::new(store),
                Err(e) if Instant::now() > until => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let counting = Arc::new(CountingReads {
            inner: store.clone(),
            reads: AtomicUsize::new(0),
            full: AtomicBool::new(full),
        });
        let svc = ProfileService::start(counting.clone(), settings).unwrap();
        (store, counting, svc)
    }

    /// Counts profile and mapping reads that reach the store.
    struct CountingReads {
        inner: Arc<SledStore>,
        reads: AtomicUsize,
        /// Profile writes fail with "No space left on device" while set.
        full: AtomicBool,
    }

    impl ProfileStore for CountingReads {
        fn get_profile_bytes(&self, v: VisitorId) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.get_profile_bytes(v)
        }
        fn put_profile_bytes(&self, batch: &[(VisitorId, &[u8])]) -> Result<(), StoreError> {
            if self.full.load(Ordering::Relaxed) {
                return Err(StoreError::Io(
                    "No space left on device (os error 28)".into(),
                ));
            }
            self.inner.put_profile_bytes(batch)
        }
        fn delete_profile(&self, v: VisitorId) -> Result<(), StoreError> {
            self.inner.delete_profile(v)
        }
        fn swap_profile_bytes(
            &self,
            v: VisitorId,
            expected: Option<&[u8]>,
            new: &[u8],
        ) -> Result<bool, StoreError> {
            self.inner.swap_profile_bytes(v, expected, new)
        }
        fn scan_profiles(
            &self,
            c: ScanCursor,
            limit: usize,
        ) -> Result<super::super::ScanBatch, StoreError> {
            self.inner.scan_profiles(c, limit)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn stored_ids(
            &self,
            each: &mut dyn FnMut(super::super::StoredId<'_>),
        ) -> Result<(), StoreError> {
            self.inner.stored_ids(each)
        }
        fn get_link(&self, dpid: u32, id: &str) -> Result<Option<IdLink>, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.get_link(dpid, id)
        }
        fn put_links(&self, links: &[(u32, &str, IdLink)]) -> Result<(), StoreError> {
            self.inner.put_links(links)
        }
        fn delete_link(&self, dpid: u32, id: &str) -> Result<(), StoreError> {
            self.inner.delete_link(dpid, id)
        }
        fn set_opted_out(&self, v: VisitorId, at: i64) -> Result<(), StoreError> {
            self.inner.set_opted_out(v, at)
        }
        fn opted_out(&self) -> Result<Vec<VisitorId>, StoreError> {
            self.inner.opted_out()
        }
        fn opted_out_count(&self) -> Result<usize, StoreError> {
            self.inner.opted_out_count()
        }
    }
}
