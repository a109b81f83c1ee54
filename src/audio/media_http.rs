//! GETs against SoundCloud's media hosts (the CDN behind a signed stream URL): the retry policy
//! and how an answer is classified.
//!
//! Invariants: 5xx, timeouts and connections cut mid-body are retried with backoff, a few times;
//! a 403 is [`MediaError::Expired`] at once (a signed URL lives minutes, reference §9: the caller
//! renews it and resumes); no other 4xx is retried; errors name the host, never the URL (it holds
//! the signature); every wait ends at once on cancel.

use reqwest::StatusCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// How a media request failed, after its retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the signed URL was refused (403): it expired")]
    Expired,
    #[error("{host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("network error from {host}: {reason}")]
    Network { host: String, reason: String },
    #[error("cancelled")]
    Cancelled,
}

/// Attempts against transient failures, and the first backoff (doubled per attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRetry {
    pub attempts: u32,
    pub base: Duration,
}

impl Default for MediaRetry {
    fn default() -> Self {
        MediaRetry {
            attempts: 5,
            base: Duration::from_millis(500),
        }
    }
}

impl MediaRetry {
    pub const FOR_TESTS: MediaRetry = MediaRetry {
        attempts: 4,
        base: Duration::from_millis(2),
    };
}

pub(super) fn host(url: &Url) -> String {
    url.host_str().unwrap_or("the media host").to_string()
}

/// A whole small body (a playlist, an init or media segment, artwork).
pub(super) async fn get_bytes(
    http: &reqwest::Client,
    retry: MediaRetry,
    url: &Url,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, MediaError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let once = async {
            let resp = http.get(url.clone()).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MediaError::Cancelled),
            r = once => r,
        };
        let err = match outcome {
            Ok((status, body)) if status.is_success() => return Ok(body.to_vec()),
            Ok((status, _)) => classify(url, status)?,
            Err(e) => network(url, &e),
        };
        if attempt >= retry.attempts {
            return Err(err);
        }
        backoff(retry, attempt, cancel).await?;
    }
}

/// A status that is not success: `Ok(err)` to retry, `Err` to give up at once.
pub(super) fn classify(url: &Url, status: StatusCode) -> Result<MediaError, MediaError> {
    let err = MediaError::Status {
        host: host(url),
        status: status.as_u16(),
    };
    match status.as_u16() {
        403 => Err(MediaError::Expired),
        s if s >= 500 || s == 408 || s == 429 => Ok(err),
        _ => Err(err),
    }
}

pub(super) fn network(url: &Url, e: &reqwest::Error) -> MediaError {
    MediaError::Network {
        host: host(url),
        reason: crate::source::error_chain(e),
    }
}

pub(super) async fn backoff(
    retry: MediaRetry,
    attempt: u32,
    cancel: &CancellationToken,
) -> Result<(), MediaError> {
    let exp = retry.base.saturating_mul(1 << attempt.min(6));
    let wait = exp + exp.mul_f64(fastrand::f64() * 0.5);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(MediaError::Cancelled),
        _ = tokio::time::sleep(wait) => Ok(()),
    }
}
