//! The retries one run may spend on Notion, shared by all of that run's requests.
//!
//! Why a budget and not a fixed number of rounds per request: at 30 % faults a few creates in
//! every few hundred lose three rounds in a row, and those tracks then waited for a later run.
//! A budget lets an unlucky request retry as often as it needs while the run as a whole stays
//! bounded: when Notion is really down the budget runs out and the run ends instead of
//! retrying forever. A per-request ceiling ([`super::ClientOptions::max_attempts`]) still caps
//! one request, so a single stuck request cannot spend the whole run's budget.
//!
//! Invariants:
//! - Every retry of a safe request (after a 5xx, 409, timeout, reset, 429 or 529) and every
//!   re-sent create takes one retry; a first attempt is free. Taking from an empty budget fails,
//!   and the request then fails as it would without retries.
//! - The budget only grows by [`RetryBudget::grow`] (the run plans its Notion work) and only
//!   shrinks by [`RetryBudget::take`]; both are lock-free and safe from concurrent requests.
//! - It is passed explicitly (a [`super::Sink::for_run`] handle carries it), never through a
//!   global, so two syncs running at once in the daemon never share one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Retries left for one run. Cheap to share: hand out `Arc` clones.
#[derive(Debug)]
pub struct RetryBudget {
    left: AtomicU64,
    spent: AtomicU64,
}

impl RetryBudget {
    /// Retries every run starts with: the connect, the playlist's page, a few lookups.
    pub const RUN_BASE: u64 = 20;
    /// Retries added per track with Notion work. At 30 % faults a track needs well under one
    /// on average (one create, a share of a lookup, sometimes a look-again), so four leave a
    /// wide margin for unlucky tracks while a run against a dead Notion still ends.
    pub const PER_TRACK: u64 = 4;

    /// A budget of `retries`.
    pub fn new(retries: u64) -> Arc<RetryBudget> {
        Arc::new(RetryBudget {
            left: AtomicU64::new(retries),
            spent: AtomicU64::new(0),
        })
    }

    /// The budget a run starts with, before it plans its tracks.
    pub fn for_run() -> Arc<RetryBudget> {
        Self::new(Self::RUN_BASE)
    }

    /// No run budget: only the per-request ceiling applies (`playlistd check`, the connect that
    /// a long-lived engine shares between runs, tests of one request).
    pub fn unbounded() -> Arc<RetryBudget> {
        Self::new(u64::MAX)
    }

    /// Adds `retries`, saturating.
    pub fn grow(&self, retries: u64) {
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_add(retries))
            });
    }

    /// Grows the budget for `tracks` tracks of Notion work.
    pub fn plan_tracks(&self, tracks: usize) {
        self.grow((tracks as u64).saturating_mul(Self::PER_TRACK));
    }

    /// Takes one retry; false when none is left.
    pub fn take(&self) -> bool {
        let took = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
            .is_ok();
        if took {
            self.spent.fetch_add(1, Ordering::Relaxed);
        }
        took
    }

    /// Retries still available.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Retries taken so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_until_empty_then_refuses_and_grows_again() {
        let b = RetryBudget::new(2);
        assert!(b.take() && b.take());
        assert!(!b.take(), "an empty budget refuses");
        assert_eq!((b.left(), b.spent()), (0, 2));
        b.plan_tracks(3);
        assert_eq!(b.left(), 3 * RetryBudget::PER_TRACK);
        assert!(b.take());
        assert_eq!(b.spent(), 3, "a refused take is not counted");
    }

    #[test]
    fn a_run_starts_with_its_base_and_unbounded_never_runs_out() {
        assert_eq!(RetryBudget::for_run().left(), RetryBudget::RUN_BASE);
        let u = RetryBudget::unbounded();
        u.grow(10);
        assert_eq!(u.left(), u64::MAX, "growth saturates");
        assert!((0..1000).all(|_| u.take()));
    }

    #[test]
    fn concurrent_takes_never_overdraw() {
        let b = RetryBudget::new(1000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..400).filter(|_| b.take()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 1000);
        assert_eq!((b.left(), b.spent()), (0, 1000));
    }
}
