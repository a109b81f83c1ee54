//! The download pool every playlist shares: a semaphore of `download.concurrency` permits, so
//! the configured number is a global bound on yt-dlp runs, and one lock per staging folder,
//! i.e. per (playlist folder, track).
//!
//! Invariants: at most `concurrency` permits are out at once; two downloads of one track into
//! one folder never overlap (they would share the staging folder, and the second should find
//! the first one's file instead); the lock map holds only locks someone holds or waits for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedMutexGuard, Semaphore, SemaphorePermit};

pub(super) struct Pool {
    permits: Semaphore,
    /// One lock per staging folder; the last holder to leave removes the entry.
    in_flight: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pool {
    pub(super) fn new(concurrency: usize) -> Arc<Pool> {
        Arc::new(Pool {
            // The config refuses 0; a zero here would hang every download forever.
            permits: Semaphore::new(concurrency.max(1)),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for one of the pool's permits: one yt-dlp run.
    pub(super) async fn permit(&self) -> SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the download semaphore is never closed")
    }

    /// Waits until no other download into the staging folder `staging` runs.
    pub(super) async fn claim(self: &Arc<Self>, staging: PathBuf) -> Slot {
        let lock = {
            let mut map = self.in_flight.lock().expect("in-flight map");
            map.entry(staging.clone()).or_default().clone()
        };
        let mut slot = Slot {
            pool: self.clone(),
            key: staging,
            guard: None,
        };
        slot.guard = Some(lock.lock_owned().await);
        slot
    }
}

/// Holds the per-track lock; dropping it forgets the lock once nobody else waits for it.
pub(super) struct Slot {
    pool: Arc<Pool>,
    key: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.pool.in_flight.lock().expect("in-flight map");
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}
