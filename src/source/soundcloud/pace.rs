//! Pacing of transcoding-URL requests: SoundCloud allows about 600 per 10 minutes (yt-dlp's
//! own message, reference §9), and answers 429 past that. The DRM checks and the native
//! downloads share one window, so a sync of many new tracks slows down instead of being refused.
//!
//! Invariant: at most `limit` requests start in any `window`; a waiting caller's cancel ends
//! its wait at once.

use crate::source::SourceError;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A little under SoundCloud's ~600, so that a listing's own calls leave room.
pub const STREAM_URLS_PER_WINDOW: usize = 550;
pub const STREAM_URL_WINDOW: Duration = Duration::from_secs(600);

pub struct Pacer {
    limit: usize,
    window: Duration,
    started: Mutex<VecDeque<Instant>>,
}

impl Pacer {
    pub fn new(limit: usize, window: Duration) -> Pacer {
        Pacer {
            limit: limit.max(1),
            window,
            started: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more request fits in the window, and counts it.
    pub async fn wait(&self, cancel: &CancellationToken) -> Result<(), SourceError> {
        loop {
            let until = {
                let mut started = self.started.lock().expect("pacer");
                let now = Instant::now();
                while started
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    started.pop_front();
                }
                if started.len() < self.limit {
                    started.push_back(now);
                    return Ok(());
                }
                started[0] + self.window
            };
            tracing::info!(target: super::LOG_TARGET, "pacing stream requests: {} in the last {} s", self.limit, self.window.as_secs());
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SourceError::Cancelled),
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_limit_start_in_one_window() {
        let pacer = Pacer::new(3, Duration::from_secs(10));
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            pacer.wait(&cancel).await.unwrap();
        }
        assert_eq!(Instant::now(), t0, "the first three pass at once");
        pacer.wait(&cancel).await.unwrap();
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(10),
            "the fourth waits a window"
        );
        let stopped = CancellationToken::new();
        stopped.cancel();
        for _ in 0..2 {
            pacer.wait(&cancel).await.unwrap();
        }
        assert!(matches!(
            pacer.wait(&stopped).await,
            Err(SourceError::Cancelled)
        ));
    }
}
