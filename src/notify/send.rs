//! Delivering messages to one target: a task of its own with a queue, so each target gets its
//! messages in order and a slow one never holds up a sync or another target.
//!
//! Invariants:
//! - Each message gets at most two attempts, each bounded by the configured timeout; a 4xx
//!   other than 408/429 is not retried (the request itself is wrong).
//! - What is logged names the target by its scheme and host only (its URL is a secret), and
//!   reqwest's errors are logged without the URL they carry.

use super::message::{Body, Kind, Message, Outgoing, render};
use crate::config::redact_url;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use url::Url;

/// The pause before the second attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One configured target.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub url: Url,
}

impl Target {
    /// How logs name it: `ntfy https://ntfy.sh/[redacted]`.
    pub fn shown(&self) -> String {
        format!("{} {}", self.kind.key(), redact_url(&self.url))
    }
}

/// Runs until the queue's senders are gone and the queue is empty.
pub async fn run(
    target: Target,
    http: reqwest::Client,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Arc<Message>>,
) {
    while let Some(msg) = queue.recv().await {
        let Some(out) = render(target.kind, &target.url, &msg, Utc::now()) else {
            continue;
        };
        match deliver(&http, &out, timeout).await {
            Ok(()) => tracing::debug!(target: "playlistd::notify", "sent to {}", target.shown()),
            Err(e) => tracing::warn!(
                target: "playlistd::notify",
                "notification to {} not delivered: {e}",
                target.shown()
            ),
        }
    }
}

/// Two attempts at most; the second only when the first could have been the network's or
/// the receiver's passing fault.
async fn deliver(http: &reqwest::Client, out: &Outgoing, timeout: Duration) -> Result<(), String> {
    match attempt(http, out, timeout).await {
        Ok(()) => Ok(()),
        Err((e, retry)) => {
            if !retry {
                return Err(e);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            attempt(http, out, timeout)
                .await
                .map_err(|(again, _)| format!("{again} (after a retry; first: {e})"))
        }
    }
}

/// One request; the error says whether a retry may help.
async fn attempt(
    http: &reqwest::Client,
    out: &Outgoing,
    timeout: Duration,
) -> Result<(), (String, bool)> {
    let mut req = if out.post {
        http.post(out.url.clone())
    } else {
        http.get(out.url.clone())
    };
    for (name, value) in &out.headers {
        req = req.header(*name, value);
    }
    req = match &out.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Text(t) => req
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(t.clone()),
    };
    match tokio::time::timeout(timeout, req.send()).await {
        Err(_) => Err((format!("no answer within {}s", timeout.as_secs_f32()), true)),
        Ok(Err(e)) => Err((e.without_url().to_string(), true)),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => {
            let s = resp.status();
            let retry = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
            Err((format!("HTTP {s}"), retry))
        }
    }
}
