//! `ReadPool`: a few threads of the store's own that do the profile and id-mapping reads of the
//! event path, taking them from one queue.
//!
//! The event path's reads used to go to tokio's blocking pool, one task each. Each such task
//! wakes an idle pool thread (a futex wake and a context switch per read) and the pool grows to
//! as many threads as there are reads in flight; on a store holding every visitor those
//! wake-ups were the largest single cost after the HTTP work itself (issue 16's profile). Here
//! a busy reader takes the next read without sleeping, so under load a read costs a queue push
//! and the wake of the waiting task, and the threads are as many as configured
//! (`store.read_threads`). Rare work (deletes, flushes, opt-outs, the retention sweep) still
//! goes to the blocking pool.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::StoreError;

type Job = Box<dyn FnOnce() + Send>;

/// Cheap to clone; the threads end when every clone is dropped.
#[derive(Clone)]
pub struct ReadPool {
    jobs: Sender<Job>,
}

impl ReadPool {
    /// Starts `threads` reader threads (at least one).
    pub fn start(threads: usize) -> ReadPool {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tributary-read-{index}"))
                .spawn(move || read(&queue));
            if let Err(e) = spawned {
                // The others (or none: then every read fails with a clear error) go on.
                log::error!("cannot start store reader thread {index}: {e}");
            }
        }
        ReadPool { jobs }
    }

    /// Runs `work` on a reader thread and waits for it without blocking the caller's thread.
    pub async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have stopped waiting (its deadline passed): nothing to tell.
            let _ = done.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Io(format!("{what}: no store reader thread is running")))?;
        result
            .await
            .map_err(|_| StoreError::Io(format!("{what}: the store reader thread failed")))?
    }

    /// Runs `work` on a reader thread, without waiting for it.
    pub fn submit(
        &self,
        what: &'static str,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<(), StoreError> {
        self.jobs
            .send(Box::new(work))
            .map_err(|_| StoreError::Io(format!("{what}: no store reader thread is running")))
    }
}

/// One reader: the next job, whichever reader is free takes it.
fn read(queue: &Mutex<Receiver<Job>>) {
    loop {
        // Held only while waiting for one job, so the readers take turns at the queue.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            // A panic in a read ends that read (its caller gets an error), not the reader.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return, // every ReadPool is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn runs_work_on_its_threads_and_reports_failures() {
        let pool = ReadPool::start(2);
        let here = std::thread::current().id();
        let there = pool
            .run("test", move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(there, here, "not on the caller's thread");
        let name = pool
            .run("test", || {
                Ok(std::thread::current().name().map(str::to_string))
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("tributary-read-"));
        let failed: Result<(), _> = pool
            .run("test", || Err(StoreError::Io("disk".into())))
            .await;
        assert!(matches!(failed, Err(StoreError::Io(e)) if e == "disk"));
        // Many at once, all answered.
        let all = futures_util::future::join_all((0..200).map(|i| pool.run("test", move || Ok(i))));
        let sum: i32 = all.await.into_iter().map(|r| r.unwrap()).sum();
        assert_eq!(sum, (0..200).sum::<i32>());
    }
}
