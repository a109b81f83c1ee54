//! The one rate limiter every Notion request passes through.
//!
//! Notion's budget is per connection and per 60-second window (180/min below Business). Two rules
//! together keep us inside it without bursts:
//! - spacing: grants are at least `60 s / rpm` apart, so a long run sits at the floor
//!   (requests ÷ rate) and never spends the whole budget in one burst;
//! - window: a log of the last `rpm` grant times guarantees that no 60-second sliding window ever
//!   holds more than `rpm` grants, even where rounding of the spacing or a pause would allow it.
//!
//! `pause_until` stops every caller until a deadline (a 429/529 `Retry-After`): the budget is
//! shared, so one caller being told to wait means all must wait.
//!
//! Uses `tokio::time`, so tests can run it under `tokio::time::pause()`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct RateLimiter {
    rpm: u32,
    spacing: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Grant times inside the last window, oldest first; at most `rpm` entries.
    grants: VecDeque<Instant>,
    next: Option<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// `rpm` is clamped to at least 1.
    pub fn new(rpm: u32) -> Self {
        let rpm = rpm.max(1);
        RateLimiter {
            rpm,
            spacing: WINDOW / rpm,
            state: Mutex::new(State::default()),
        }
    }

    pub fn requests_per_minute(&self) -> u32 {
        self.rpm
    }

    /// Waits until a request may be sent, and records it as sent.
    pub async fn acquire(&self) {
        loop {
            let wake = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while s
                    .grants
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    s.grants.pop_front();
                }
                let mut earliest = now;
                if let Some(n) = s.next {
                    earliest = earliest.max(n);
                }
                if let Some(p) = s.paused_until {
                    earliest = earliest.max(p);
                }
                if s.grants.len() >= self.rpm as usize {
                    earliest = earliest.max(s.grants[0] + WINDOW);
                }
                if earliest <= now {
                    s.grants.push_back(now);
                    s.next = Some(now + self.spacing);
                    return;
                }
                earliest
            };
            // Several waiters may wake at the same instant; one wins, the others recompute.
            sleep_until(wake).await;
        }
    }

    /// Nobody is granted a request before `until` (later deadlines win).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_rpm_in_any_window_and_evenly_spaced() {
        let rpm = 7u32;
        let limiter = Arc::new(RateLimiter::new(rpm));
        let times = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (l, t) = (limiter.clone(), times.clone());
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                t.lock().unwrap().push(Instant::now());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        assert_eq!(times.len(), 40);
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= WINDOW / rpm, "burst: {:?}", w[1] - w[0]);
        }
        for i in 0..times.len() - rpm as usize {
            assert!(
                times[i + rpm as usize] - times[i] >= WINDOW,
                "window {i} holds more than {rpm}"
            );
        }
        // The floor: 40 requests at 7/min take (40 - 1) spacings, not much more.
        let took = *times.last().unwrap() - start;
        assert!(took <= WINDOW / rpm * 40, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_everyone() {
        let limiter = RateLimiter::new(6000);
        limiter.acquire().await;
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(5));
        limiter.pause_until(start + Duration::from_secs(2));
        limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }
}
