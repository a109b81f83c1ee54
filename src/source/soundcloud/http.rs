//! One GET against SoundCloud: a browser's headers, the retry policy, and how an answer is
//! classified before the API layer ([`client_id`](super::client_id)) interprets it.
//!
//! Invariants:
//! - every request carries a browser's headers (`User-Agent`, `Accept`, `Accept-Language`,
//!   `Sec-Fetch-Mode`, as yt-dlp sends): bot protection refuses anything else;
//! - a 403 is read by its body: JSON (like a 401) means a stale client id, an HTML or XML page
//!   is bot protection, reported as [`SourceError::Blocked`] at once, with no re-scrape;
//! - a 429 is waited out with growing backoff (or its `Retry-After`) for up to
//!   [`RetryPolicy::rate_limit_budget`] in all (10 minutes), then reported; every wait, and
//!   every request in flight, ends at once when the caller's cancellation token fires;
//! - an error names the request (`what`) and the host, never the URL: the URL holds the
//!   client id.

use super::{Call, LOG_TARGET, SoundCloud};
use crate::source::{SourceError, error_chain};
use reqwest::header::{self, HeaderMap, HeaderValue};
use std::sync::atomic::Ordering;
use std::time::Duration;
use url::Url;

/// The rest of yt-dlp's standard headers, sent with every request as it does.
const ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
pub(super) const ACCEPT_LANGUAGE: &str = "en-US,en;q=0.5";

/// How hard to retry one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request against 5xx, timeouts and cut connections, the first included.
    pub attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub base: Duration,
    pub max_backoff: Duration,
    /// Longest single wait after a 429 (`Retry-After`, or the growing backoff without one).
    pub max_retry_after: Duration,
    /// How long one request may spend waiting out 429s in all before it is given up. A 429
    /// storm is SoundCloud's ~600-requests-per-10-minutes window: dropping a batch after a few
    /// seconds would only make the listing incomplete for nothing.
    pub rate_limit_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            rate_limit_budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Milliseconds instead of seconds and minutes, for tests (the same shape of waits).
    pub const FOR_TESTS: RetryPolicy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_millis(50),
        rate_limit_budget: Duration::from_millis(300),
    };
}

/// How one HTTP exchange ended, before the API layer interprets it.
pub(super) enum Failure {
    /// 401, or 403 with a JSON (not a web page) body: the client id may be stale.
    Auth(u16),
    /// Another 4xx: not worth retrying.
    Status(u16),
    /// Retries ran out, the error cannot be retried, or it needs no interpretation (bot
    /// protection, cancellation).
    Gave(SourceError),
}

/// How one attempt ended, for the retry loop in [`SoundCloud::get`].
enum Attempt<T> {
    Done(T),
    /// Worth another attempt after a backoff (5xx, network, timeout, a cut body).
    Retry(SourceError),
    /// 429, with its `Retry-After` when it has one.
    RateLimited(Option<Duration>),
    Stop(Failure),
}

impl SoundCloud {
    /// One GET with retries: 429 waits its `Retry-After` (capped) or a growing backoff, for up
    /// to the policy's rate-limit budget in all; 5xx, timeouts, connection errors and
    /// undecodable bodies (a cut connection) back off exponentially with jitter, `attempts`
    /// times. Other statuses return at once. Every wait and the exchange itself end when the
    /// call is cancelled.
    pub(super) async fn get<T>(
        &self,
        call: &Call,
        url: Url,
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let http = self.http.as_ref().map_err(|e| Failure::Gave(e.clone()))?;
        let attempts = self.retry.attempts.max(1);
        let (mut failures, mut limited) = (0, 0);
        let mut waited = Duration::ZERO;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            call.requests.fetch_add(1, Ordering::Relaxed);
            let attempt = tokio::select! {
                a = self.attempt(http, &url, what, decode) => a,
                _ = call.cancel.cancelled() => return Err(Failure::Gave(SourceError::Cancelled)),
            };
            let (delay, rate_limited) = match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Stop(f) => return Err(f),
                Attempt::Retry(e) => {
                    failures += 1;
                    if failures >= attempts {
                        return Err(Failure::Gave(e));
                    }
                    tracing::debug!(
                        target: LOG_TARGET,
                        "{what}: attempt {failures} failed ({e}); retrying"
                    );
                    (self.backoff(failures, self.retry.max_backoff), false)
                }
                Attempt::RateLimited(after) => {
                    limited += 1;
                    let left = self.retry.rate_limit_budget.saturating_sub(waited);
                    if left.is_zero() {
                        let what = what.to_string();
                        return Err(Failure::Gave(SourceError::RateLimited { what, waited }));
                    }
                    // Never less than the base (nor zero): `Retry-After: 0` must not spin,
                    // and every wait spends budget, so the loop ends.
                    let wish = after
                        .map(|d| d.min(self.retry.max_retry_after))
                        .unwrap_or_else(|| self.backoff(limited, self.retry.max_retry_after))
                        .max(self.retry.base)
                        .max(Duration::from_millis(1));
                    // Said once per request: a storm may hold a sync for minutes.
                    if limited == 1 {
                        tracing::info!(
                            target: LOG_TARGET,
                            "{what}: SoundCloud answered 429 Too Many Requests; waiting, up to {} in all",
                            crate::source::minutes(&self.retry.rate_limit_budget)
                        );
                    }
                    (wish.min(left), true)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = call.cancel.cancelled() => return Err(Failure::Gave(SourceError::Cancelled)),
            }
            if rate_limited {
                waited += delay;
            }
        }
    }

    /// One request and its answer, classified.
    async fn attempt<T>(
        &self,
        http: &reqwest::Client,
        url: &Url,
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Attempt<T> {
        let resp = match http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(self.transport_error(url, what, &e)),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => match resp.bytes().await {
                Err(e) => Attempt::Retry(self.transport_error(url, what, &e)),
                Ok(body) => match decode(&body) {
                    Ok(v) => Attempt::Done(v),
                    Err(reason) => Attempt::Retry(SourceError::Decode {
                        what: what.to_string(),
                        reason,
                    }),
                },
            },
            429 => Attempt::RateLimited(retry_after(resp.headers())),
            403 => {
                let page = is_web_page(resp.headers());
                let body = resp.bytes().await.unwrap_or_default();
                if page || body.trim_ascii_start().starts_with(b"<") {
                    Attempt::Stop(Failure::Gave(SourceError::Blocked {
                        what: what.to_string(),
                        host: url.host_str().unwrap_or("SoundCloud").to_string(),
                    }))
                } else {
                    Attempt::Stop(Failure::Auth(status))
                }
            }
            401 => Attempt::Stop(Failure::Auth(status)),
            500..=599 => Attempt::Retry(SourceError::Http {
                status,
                what: what.to_string(),
            }),
            _ => Attempt::Stop(Failure::Status(status)),
        }
    }

    fn transport_error(&self, url: &Url, what: &str, e: &reqwest::Error) -> SourceError {
        // Only the sources: reqwest's own text embeds the URL, and the URL the client id.
        let reason = match std::error::Error::source(e) {
            Some(s) => error_chain(s),
            None => "request failed".to_string(),
        };
        if e.is_timeout() {
            SourceError::Timeout {
                what: what.to_string(),
                secs: self.timeout.as_secs().max(1),
            }
        } else if e.is_connect() {
            // DNS lookups and refused or unroutable connections: the host was never reached.
            SourceError::Unreachable {
                host: url.host_str().unwrap_or("SoundCloud").to_string(),
                what: what.to_string(),
                reason,
            }
        } else {
            SourceError::Network {
                what: what.to_string(),
                reason,
            }
        }
    }

    /// Full jitter over an exponential ceiling: between half and all of `base * 2^(n-1)`,
    /// at most `cap`.
    pub(super) fn backoff(&self, attempt: u32, cap: Duration) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(1 << (attempt.max(1) - 1).min(16))
            .min(cap);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// yt-dlp's standard headers (`utils/networking.py::std_headers`) with `user_agent`: what a
/// browser sends, so bot protection lets the request through.
pub(crate) fn browser_headers(user_agent: &str) -> Result<HeaderMap, SourceError> {
    let mut h = HeaderMap::new();
    let ua = HeaderValue::from_str(user_agent).map_err(|_| SourceError::Setup {
        reason: "soundcloud.user_agent is not a valid header value".into(),
    })?;
    h.insert(header::USER_AGENT, ua);
    h.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
    h.insert(
        header::ACCEPT_LANGUAGE,
        HeaderValue::from_static(ACCEPT_LANGUAGE),
    );
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    Ok(h)
}

/// An HTML or XML answer: a page for a browser (a bot-protection challenge, a CDN's
/// `AccessDenied`), never the API's JSON error.
fn is_web_page(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("html") || ct.contains("xml")
        })
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .num_seconds()
        .max(0);
    Some(Duration::from_secs(secs as u64))
}
