//! Group commit: many callers that each need their write durable share one flush. A caller
//! writes, then waits on [`GroupCommit::durable`]; the first waiter starts a flush on a thread
//! of its own, and whoever arrives while it runs waits for the next one, which starts as soon
//! as the running one ends and covers all of them. So a flood of opt-outs costs one `fsync`
//! per flush time, not one each, and no caller is answered before a flush that began after
//! its write.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::StoreError;

type Flush = dyn Fn() -> Result<(), StoreError> + Send + Sync;

pub struct GroupCommit {
    flush: Box<Flush>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Callers whose writes the next flush covers.
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// A flush thread is running (and will take `waiting` when its flush ends).
    flushing: bool,
}

impl GroupCommit {
    /// `flush` makes every write made before it began durable (`ProfileStore::flush`).
    pub fn new(
        flush: impl Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Arc<GroupCommit> {
        Arc::new(GroupCommit {
            flush: Box::new(flush),
            state: Mutex::new(State::default()),
        })
    }

    /// Resolves once every write this caller made before the call is durable.
    pub async fn durable(self: &Arc<Self>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.waiting.push(tx);
            !std::mem::replace(&mut state.flushing, true)
        };
        if start {
            let this = self.clone();
            let spawned = std::thread::Builder::new()
                .name("tributary-group-commit".into())
                .spawn(move || this.flush_while_waited_for());
            if let Err(e) = spawned {
                // Nobody flushes: answer everyone waiting (this caller among them) with it.
                let failed = StoreError::Io(format!("no thread for the group commit: {e}"));
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.flushing = false;
                for waiter in state.waiting.drain(..) {
                    let _ = waiter.send(Err(failed.clone()));
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Io("the group commit thread died".into())))
    }

    fn flush_while_waited_for(&self) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.waiting.is_empty() {
                    state.flushing = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let result = (self.flush)();
            metrics::counter!("tributary_store_group_flushes_total").increment(1);
            if let Err(e) = &result {
                log::error!("group commit: flush failed ({} waiting): {e}", batch.len());
            }
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// While one flush runs, every caller that arrives waits for the next, and one flush
    /// answers them all.
    #[actix_rt::test]
    async fn callers_arriving_during_a_flush_share_the_next_one() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let counted = flushes.clone();
        let group = GroupCommit::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = started_tx.send(());
            let _ = gate.lock().unwrap().recv();
            Ok(())
        });
        let first = actix_rt::spawn({
            let group = group.clone();
            async move { group.durable().await }
        });
        // The spawned callers run on this thread: yield to them, never block it.
        while started.try_recv().is_err() {
            actix_rt::task::yield_now().await;
        }
        let later: Vec<_> = (0..50)
            .map(|_| {
                let group = group.clone();
                actix_rt::spawn(async move { group.durable().await })
            })
            .collect();
        // Every later caller is queued before the first flush is let go.
        while group.state.lock().unwrap().waiting.len() < 50 {
            actix_rt::task::yield_now().await;
        }
        release.send(()).unwrap();
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for caller in later {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
        assert!(!group.state.lock().unwrap().flushing);
    }

    #[actix_rt::test]
    async fn a_failed_flush_fails_its_callers_and_the_next_one_tries_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let group = GroupCommit::new(move || match counted.fetch_add(1, Ordering::SeqCst) {
            0 => Err(StoreError::Io("No space left on device".into())),
            _ => Ok(()),
        });
        let failed = group.durable().await.unwrap_err();
        assert!(failed.to_string().contains("No space"), "{failed}");
        group.durable().await.unwrap();
    }
}
