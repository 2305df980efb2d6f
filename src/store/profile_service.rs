//! `ProfileService`: the only way the running server reads and writes profiles.
//!
//! A fixed number of store threads ("shards"), each owning a FIFO queue. A visitor always maps
//! to the same shard, so its operations happen in the order they were issued: a load issued
//! after a save sees that save (read-your-writes), even when the save is still queued.
//!
//! Saves are write-behind: the caller encodes the profile, enqueues it and returns at once — an
//! event's answer never waits for the disk. Each shard drains what is queued, keeps only the
//! latest save per visitor, and writes the lot as one batch, so a busy visitor costs one write
//! per batch rather than one per event. Durability is unchanged by this: sled itself only makes
//! writes durable at its periodic flush, and [`ProfileService::flush`] (shutdown) waits for
//! every queued write and then flushes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{codec, ProfileStore, StoreError};
use crate::ids::VisitorId;
use crate::profile::Profile;

/// Most queued operations one shard takes in one round.
const MAX_BATCH: usize = 1024;

enum Command {
    Load {
        visitor: VisitorId,
        reply: oneshot::Sender<Result<Option<Profile>, StoreError>>,
    },
    Save {
        visitor: VisitorId,
        bytes: Vec<u8>,
    },
    Delete {
        visitor: VisitorId,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Write everything queued before this, then reply.
    Sync {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Cheap to clone; every clone talks to the same shards.
#[derive(Clone)]
pub struct ProfileService {
    shards: Arc<Vec<mpsc::Sender<Command>>>,
    /// Operations enqueued and not yet done, across shards.
    depth: Arc<AtomicUsize>,
    store: Arc<dyn ProfileStore>,
}

impl ProfileService {
    /// Starts `shards` store threads over `store`.
    pub fn start(store: Arc<dyn ProfileStore>, shards: usize) -> ProfileService {
        let depth = Arc::new(AtomicUsize::new(0));
        let senders = (0..shards.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel();
                let store = store.clone();
                let depth = depth.clone();
                std::thread::Builder::new()
                    .name(format!("tributary-store-{i}"))
                    .spawn(move || shard(store, rx, depth))
                    .map(|_| tx)
            })
            .collect::<Result<Vec<_>, _>>()
            // Failing to start a thread at start-up leaves nothing sensible to run.
            .unwrap_or_else(|e| panic!("cannot start store threads: {e}"));
        ProfileService {
            shards: Arc::new(senders),
            depth,
            store,
        }
    }

    fn send(&self, visitor: VisitorId, command: Command) -> Result<(), StoreError> {
        let v = visitor.as_u128();
        let index = ((v ^ (v >> 64)) as u64 % self.shards.len() as u64) as usize;
        self.depth.fetch_add(1, Ordering::AcqRel);
        self.shards[index].send(command).map_err(|_| {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            StoreError::Io("store thread stopped".into())
        })
    }

    /// The visitor's profile, seeing every save issued before.
    pub async fn load(&self, visitor: VisitorId) -> Result<Option<Profile>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(visitor, Command::Load { visitor, reply })?;
        answer
            .await
            .map_err(|_| StoreError::Io("store thread stopped".into()))?
    }

    /// Queues a save of the profile; returns once it is queued (write-behind).
    pub fn save(&self, visitor: VisitorId, profile: &Profile) -> Result<(), StoreError> {
        let bytes = codec::encode_profile(profile)?;
        self.send(visitor, Command::Save { visitor, bytes })
    }

    /// Deletes the visitor's profile, after any save queued before.
    pub async fn delete(&self, visitor: VisitorId) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(visitor, Command::Delete { visitor, reply })?;
        answer
            .await
            .map_err(|_| StoreError::Io("store thread stopped".into()))?
    }

    /// Waits until everything queued so far is written, then makes it durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mut answers = Vec::new();
        for shard in self.shards.iter() {
            let (reply, answer) = oneshot::channel();
            self.depth.fetch_add(1, Ordering::AcqRel);
            if shard.send(Command::Sync { reply }).is_err() {
                self.depth.fetch_sub(1, Ordering::AcqRel);
                return Err(StoreError::Io("store thread stopped".into()));
            }
            answers.push(answer);
        }
        for answer in answers {
            answer
                .await
                .map_err(|_| StoreError::Io("store thread stopped".into()))??;
        }
        self.store.flush()
    }

    /// Distinguishes services (one per running server) in per-thread registries.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.shards) as *const () as usize
    }

    /// Operations queued and not yet done (a measure of store back-pressure).
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }
}

/// One store thread: drains its queue in rounds, coalescing saves per visitor.
fn shard(store: Arc<dyn ProfileStore>, rx: mpsc::Receiver<Command>, depth: Arc<AtomicUsize>) {
    let mut pending: HashMap<VisitorId, Vec<u8>> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        while round.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => round.push(c),
                Err(_) => break,
            }
        }
        let taken = round.len();
        for command in round {
            match command {
                Command::Save { visitor, bytes } => {
                    pending.insert(visitor, bytes);
                }
                Command::Load { visitor, reply } => {
                    let result = match pending.get(&visitor) {
                        Some(bytes) => codec::decode_profile(bytes).map(Some),
                        None => store.load_profile(visitor),
                    };
                    let _ = reply.send(result);
                }
                Command::Delete { visitor, reply } => {
                    pending.remove(&visitor);
                    let _ = reply.send(store.delete_profile(visitor));
                }
                Command::Sync { reply } => {
                    let _ = reply.send(write(&*store, &mut pending));
                }
            }
        }
        if let Err(e) = write(&*store, &mut pending) {
            log::error!("profile writes failed: {e}");
        }
        depth.fetch_sub(taken, Ordering::AcqRel);
    }
}

fn write(
    store: &dyn ProfileStore,
    pending: &mut HashMap<VisitorId, Vec<u8>>,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let batch: Vec<(VisitorId, Vec<u8>)> = pending.drain().collect();
    let result = store.put_profile_bytes(&batch);
    metrics::histogram!("tributary_store_write_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("tributary_store_write_batch_size").record(batch.len() as f64);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn service(dir: &std::path::Path) -> (ProfileService, Arc<SledStore>) {
        let store = Arc::new(SledStore::open(dir, 8 << 20, 100).unwrap());
        (ProfileService::start(store.clone(), 3), store)
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
        let (svc, store) = service(dir.path());
        let ids: Vec<VisitorId> = (0..200).map(|_| VisitorId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            for n in 0..5 {
                svc.save(*id, &profile(i as i64 * 10 + n)).unwrap();
            }
        }
        // Read-your-writes: the last save of each visitor, queued or written.
        for (i, id) in ids.iter().enumerate() {
            let p = svc.load(*id).await.unwrap().unwrap();
            assert_eq!(p.last_seen, i as i64 * 10 + 4);
        }
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
    async fn delete_follows_queued_saves() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path());
        let id = VisitorId::generate();
        svc.save(id, &profile(1)).unwrap();
        svc.delete(id).await.unwrap();
        assert!(svc.load(id).await.unwrap().is_none());
        svc.save(id, &profile(2)).unwrap();
        svc.flush().await.unwrap();
        assert_eq!(store.load_profile(id).unwrap().unwrap().last_seen, 2);
    }

    #[actix_rt::test]
    async fn unreadable_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path());
        let id = VisitorId::generate();
        store.put_raw_profile(id, &[9, 9, 9]).unwrap();
        assert!(matches!(
            svc.load(id).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
