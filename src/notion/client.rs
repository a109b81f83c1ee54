//! HTTP to Notion: headers, timeouts, the shared limiter, and the retry policy.
//!
//! Invariants:
//! - Every HTTP attempt waits for the shared [`RateLimiter`] and is counted in `requests()`.
//! - Only requests that are safe to repeat are retried on 5xx, 409, timeouts and connection
//!   errors (GET, query, PATCH of properties). A create is sent once per call: the caller
//!   ([`super::sink`]) decides, from [`CreateFailure`], whether the page may already exist.
//! - 429 and 529 mean "not processed": any request is retried after `Retry-After`, and the wait is
//!   imposed on every caller through the limiter. `public_api_request_blocked` is never retried.
//! - Every retry takes one from the caller's [`RetryBudget`] (the run's, or an unbounded one
//!   outside a run) and waits an exponential backoff with jitter; a request also stops at its
//!   own ceiling (`max_attempts`, or `max_connect_failures` when the host cannot be reached at
//!   all, so an offline machine hears so in seconds, not minutes).
//! - A request that gives up says why in one line: Notion down or slow ([`NotionError::Unavailable`])
//!   or the host unreachable ([`NotionError::Unreachable`]), never both.
//! - The token lives only in a sensitive header value; no error, log line or `Debug` output
//!   contains it.

use super::NotionError;
use super::budget::RetryBudget;
use super::limiter::RateLimiter;
use crate::config::Secret;
pub(crate) use crate::util::one_line;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Knobs for tests and benchmarks; production uses [`ClientOptions::default`].
#[derive(Clone)]
pub struct ClientOptions {
    /// First retry delay; doubles each attempt up to `backoff_cap`, with jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The per-request ceiling: attempts of one request (first try included) on 5xx, 409,
    /// timeouts and resets, and sends of one create. The run's [`RetryBudget`] is what bounds a
    /// run; this only keeps one stuck request from spending all of it. Twelve is high enough
    /// not to bind at 30 % faults (0.3^12 is about one request in two million).
    pub max_attempts: u32,
    /// Attempts when the host cannot be reached at all (DNS, connection refused): a machine
    /// offline is told so after a few seconds instead of after minutes of backoff.
    pub max_connect_failures: u32,
    /// How many 429/529 answers one request tolerates before giving up.
    pub max_rate_limited: u32,
    /// How far Notion's query index may lag behind a create. A create whose answer was lost
    /// is looked up, and looked up again once this long has passed since the failure, before
    /// it is sent again: a fresh page can be missing from `/query` for a moment.
    pub index_lag: Duration,
    /// A limiter shared with other clients; a new one at the configured rate otherwise.
    pub limiter: Option<Arc<RateLimiter>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            max_attempts: 12,
            max_connect_failures: 4,
            max_rate_limited: 10,
            index_lag: Duration::from_secs(2),
            limiter: None,
        }
    }
}

impl ClientOptions {
    /// Fast retries for tests (~10 ms base, 50 ms index lag).
    pub fn for_tests() -> Self {
        ClientOptions {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(100),
            index_lag: Duration::from_millis(50),
            ..Self::default()
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("max_attempts", &self.max_attempts)
            .field("max_connect_failures", &self.max_connect_failures)
            .field("max_rate_limited", &self.max_rate_limited)
            .field("index_lag", &self.index_lag)
            .finish_non_exhaustive()
    }
}

/// Why a create did not return a page.
pub(crate) enum CreateFailure {
    /// 503 "The change was saved": the page exists with this id.
    Committed(String),
    /// The request may or may not have been applied (5xx, 409, timeout, reset, HTML 502).
    Uncertain(Attempt),
    /// Definitely not applied (4xx, blocked, rate-limit budget exhausted).
    Failed(NotionError),
}

/// One HTTP exchange that did not succeed, classified.
pub(crate) enum Attempt {
    Api {
        status: u16,
        code: String,
        message: String,
        additional: Value,
        retry_after: Option<Duration>,
    },
    Transport {
        /// No connection was made (DNS, refused, unreachable): nothing reached Notion.
        connect: bool,
        message: String,
    },
}

impl Attempt {
    fn describe(&self) -> String {
        match self {
            Attempt::Api {
                status,
                code,
                message,
                ..
            } => format!("HTTP {status} {code}: {message}"),
            Attempt::Transport { message, .. } => message.clone(),
        }
    }

    fn is_connect(&self) -> bool {
        matches!(self, Attempt::Transport { connect: true, .. })
    }
}

/// Why a request stopped retrying, for its error message.
#[derive(Clone, Copy)]
enum GaveUp {
    /// Its own ceiling (`max_attempts`, `max_connect_failures`, `max_rate_limited`).
    Ceiling,
    /// The run's retry budget is spent.
    Budget,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    /// `host[:port]` of the API, for "cannot reach" messages.
    host: String,
    version: String,
    limiter: Arc<RateLimiter>,
    requests: AtomicU64,
    pub(crate) opts: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("version", &self.version)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(
        api_base: &url::Url,
        token: &Secret,
        version: &str,
        timeout: Duration,
        rpm: u32,
        opts: ClientOptions,
    ) -> Result<Client, NotionError> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| NotionError::Setup {
                message: "the Notion token contains characters that cannot go in an HTTP header".into(),
                fix: "check the token / NOTION_TOKEN: paste the integration secret alone, with no spaces or quotes".into(),
            })?;
        auth.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        headers.insert(
            "Notion-Version",
            HeaderValue::from_str(version).map_err(|_| NotionError::Setup {
                message: format!("invalid notion.version {version:?}"),
                fix: "set notion.version to a date such as \"2025-09-03\"".into(),
            })?,
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("playlistd/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .read_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| NotionError::Setup {
                message: one_line(&e.to_string()),
                fix: "check the system's TLS certificates and proxy settings".into(),
            })?;
        let base = api_base.as_str().trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        let host = match (api_base.host_str(), api_base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => base.clone(),
        };
        let limiter = opts
            .limiter
            .clone()
            .unwrap_or_else(|| Arc::new(RateLimiter::new(rpm)));
        Ok(Client {
            http,
            base,
            host,
            version: version.to_string(),
            limiter,
            requests: AtomicU64::new(0),
            opts,
        })
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn limiter(&self) -> Arc<RateLimiter> {
        self.limiter.clone()
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so concurrent callers
    /// spread out but never retry immediately.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.opts.backoff_cap);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// One exchange: the answer's JSON, or why there is none.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Attempt> {
        self.limiter.acquire().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let retry_after = header(reqwest::header::RETRY_AFTER.as_str())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // An HTML page from Cloudflare or a proxy is named with its ray id, if any.
        let ray = header("cf-ray")
            .map(|r| format!(" (cf-ray {r})"))
            .unwrap_or_default();
        let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return parsed.ok_or_else(|| Attempt::Api {
                status: status.as_u16(),
                code: "invalid_body".into(),
                message: "the answer is not JSON".into(),
                additional: Value::Null,
                retry_after: None,
            });
        }
        Err(match parsed.filter(|v| v["object"] == "error") {
            Some(v) => {
                let retry_after = retry_after.or_else(|| {
                    v["additional_data"]["retry_after"]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(Duration::from_secs)
                });
                Attempt::Api {
                    status: status.as_u16(),
                    code: v["code"].as_str().unwrap_or("").to_string(),
                    message: one_line(v["message"].as_str().unwrap_or("")),
                    additional: v["additional_data"].clone(),
                    retry_after,
                }
            }
            None => Attempt::Api {
                status: status.as_u16(),
                code: "non_json".into(),
                message: format!("{} with a non-JSON body{ray}", status_text(status)),
                additional: Value::Null,
                retry_after,
            },
        })
    }

    /// Handles a 429/529: pauses the shared limiter and says whether to try again (taking
    /// the retry from `budget`).
    fn rate_limited(
        &self,
        what: &str,
        a: &Attempt,
        count: u32,
        budget: &RetryBudget,
    ) -> Result<(), NotionError> {
        let Attempt::Api {
            status,
            additional,
            retry_after,
            ..
        } = a
        else {
            return Ok(());
        };
        if additional["rate_limit_reason"] == "public_api_request_blocked" {
            return Err(NotionError::Blocked);
        }
        if count > self.opts.max_rate_limited {
            return Err(self.give_up(what, count, a, GaveUp::Ceiling));
        }
        if !budget.take() {
            return Err(self.give_up(what, count, a, GaveUp::Budget));
        }
        let wait = retry_after.unwrap_or_else(|| self.backoff(count));
        tracing::warn!(
            status,
            wait_secs = wait.as_secs_f64(),
            "Notion asked us to slow down; pausing all Notion requests"
        );
        self.limiter.pause_until(Instant::now() + wait);
        Ok(())
    }

    /// A request that is safe to repeat: retried on 5xx, 409, timeouts and connection errors,
    /// each retry taken from `budget`.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
        budget: &RetryBudget,
    ) -> Result<Value, NotionError> {
        let mut failures = 0u32;
        let mut limited = 0u32;
        loop {
            let a = match self.attempt(&method, path, body).await {
                Ok(v) => return Ok(v),
                Err(a) => a,
            };
            match &a {
                Attempt::Api {
                    status: 429 | 529, ..
                } => {
                    limited += 1;
                    self.rate_limited(what, &a, limited, budget)?;
                }
                Attempt::Api { status, .. } if is_transient(*status) => {
                    failures += 1;
                    self.retry_or_give_up(what, &a, failures, budget).await?;
                }
                Attempt::Transport { .. } => {
                    failures += 1;
                    self.retry_or_give_up(what, &a, failures, budget).await?;
                }
                Attempt::Api { .. } => return Err(classify(what, a)),
            }
        }
    }

    /// After the `failures`-th failed attempt: waits the backoff and returns `Ok` when the
    /// request may be sent again (see [`Client::may_retry`]).
    async fn retry_or_give_up(
        &self,
        what: &str,
        a: &Attempt,
        failures: u32,
        budget: &RetryBudget,
    ) -> Result<(), NotionError> {
        self.may_retry(what, a, failures, budget)?;
        let wait = self.backoff(failures);
        tracing::debug!(what, attempt = failures, wait_ms = wait.as_millis() as u64, error = %a.describe(), "retrying Notion request");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Whether a request that failed `failures` times, `a` the last, may be sent again: within
    /// its ceiling, and with a retry taken from `budget`. Otherwise the error to return.
    pub(crate) fn may_retry(
        &self,
        what: &str,
        a: &Attempt,
        failures: u32,
        budget: &RetryBudget,
    ) -> Result<(), NotionError> {
        let ceiling = if a.is_connect() {
            self.opts.max_connect_failures
        } else {
            self.opts.max_attempts
        };
        if failures >= ceiling {
            return Err(self.give_up(what, failures, a, GaveUp::Ceiling));
        }
        if !budget.take() {
            return Err(self.give_up(what, failures, a, GaveUp::Budget));
        }
        Ok(())
    }

    /// The error of a request that stops retrying after `attempts` attempts, `a` the last.
    fn give_up(&self, what: &str, attempts: u32, a: &Attempt, why: GaveUp) -> NotionError {
        let mut last = a.describe();
        if let GaveUp::Budget = why {
            last.push_str("; this run's retry budget is spent");
        }
        if a.is_connect() {
            return NotionError::Unreachable {
                host: self.host.clone(),
                what: what.to_string(),
                attempts,
                last,
            };
        }
        NotionError::Unavailable {
            what: what.to_string(),
            attempts,
            last,
        }
    }

    /// `POST /v1/pages`, sent once (plus rate-limit retries, which Notion did not process,
    /// taken from `budget`).
    pub(crate) async fn create_page(
        &self,
        body: &Value,
        what: &str,
        budget: &RetryBudget,
    ) -> Result<Value, CreateFailure> {
        let mut limited = 0u32;
        loop {
            let a = match self.attempt(&Method::POST, "/v1/pages", Some(body)).await {
                Ok(v) => return Ok(v),
                Err(a) => a,
            };
            match &a {
                Attempt::Api {
                    status: 429 | 529, ..
                } => {
                    limited += 1;
                    self.rate_limited(what, &a, limited, budget)
                        .map_err(CreateFailure::Failed)?;
                }
                Attempt::Api {
                    status, additional, ..
                } if is_transient(*status) => {
                    if let Some(id) = additional["committed_resource_id"].as_str() {
                        return Err(CreateFailure::Committed(id.to_string()));
                    }
                    return Err(CreateFailure::Uncertain(a));
                }
                // A connection that broke may have delivered the create (a reset after the
                // write); one that never connected did not, but the caller's look-up costs
                // little and keeps one way to resolve every outcome that is not an answer.
                Attempt::Transport { .. } => return Err(CreateFailure::Uncertain(a)),
                Attempt::Api { .. } => return Err(CreateFailure::Failed(classify(what, a))),
            }
        }
    }
}

fn is_transient(status: u16) -> bool {
    matches!(status, 409 | 500 | 502 | 503 | 504) || status >= 520
}

fn status_text(s: StatusCode) -> String {
    format!("HTTP {}", s.as_u16())
}

/// reqwest's Display includes the URL (never the token, which is only in a header); keep the
/// kind of failure, which is what a user can act on. A failure to connect at all (DNS, refused,
/// no route) is told apart from a connection that broke: only the first means "check the
/// network".
fn transport(e: &reqwest::Error) -> Attempt {
    let connect = e.is_connect();
    let kind = if e.is_timeout() {
        "timed out"
    } else if connect {
        "could not connect"
    } else {
        "connection failed"
    };
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    let message = if detail.is_empty() {
        kind.to_string()
    } else {
        one_line(&format!("{kind}: {detail}"))
    };
    Attempt::Transport { connect, message }
}

/// A final (non-retried) error answer.
fn classify(what: &str, a: Attempt) -> NotionError {
    let Attempt::Api {
        status,
        code,
        message,
        ..
    } = a
    else {
        return NotionError::Protocol {
            what: what.to_string(),
            message: a.describe(),
        };
    };
    let what = what.to_string();
    match (status, code.as_str()) {
        (401, _) => NotionError::Unauthorized { message },
        (403, _) => NotionError::Forbidden { what, code, message },
        (404, _) => NotionError::NotFound { what, message },
        (400, "validation_error") => NotionError::Validation { what, message },
        (200..=299, _) => NotionError::Protocol { what, message },
        (_, "invalid_request_url") | (_, "missing_version") => NotionError::Request {
            what,
            status,
            code,
            message,
            fix: "set notion.version to \"2025-09-03\" or later, and notion.api_base to https://api.notion.com".into(),
        },
        _ => NotionError::Request {
            what,
            status,
            code,
            message,
            fix: "this is likely a playlistd bug; please report it with this message".into(),
        },
    }
}
