//! Local stand-ins for the three notification targets playlistd reports to after a sync (issue
//! 14): a JSON webhook, an ntfy topic and a healthchecks.io check. One axum server on 127.0.0.1
//! plays all three, told apart by path prefix (`/hook/<name>`, `/ntfy/<topic>`, `/hc/<uuid>`),
//! so a test starts one server and points every target of a config at it.
//!
//! Each receiver refuses what the real service refuses, with the real answer; what that is, and
//! from which part of the real service it is taken, is told at the top of its file.
//!
//! Invariants:
//! - Every request is recorded before it is answered, in the order its body had fully arrived:
//!   refused ones (with `error` and the status answered, see [`FakeReceiver::rejected`]) and
//!   faulted ones (with `fault`) included. A faulted request is still validated, so a test can
//!   assert that the client never sent a bad one, faults or not.
//! - A request held by [`ReceiverFault::Hang`] blocks nothing else (each connection is its own
//!   task and no lock is held while it waits); only the client's timeout ends it, or dropping
//!   the fake, which resets its connection.
//! - [`FakeReceiver::wait_for`] is woken by the record itself (a watch channel), never by polling.
//!
//! Resets are real TCP resets, through the crate's killable connections (`conn`).
//!
//! Layout, one file per receiver: `webhook` (`/hook/…`), `ntfy` (`/ntfy/…`, with the RFC 2047
//! decoder for its headers and its message ids) and `healthchecks` (`/hc/…`); `tests` drives
//! all three through real HTTP. This file holds the server, the handle and its options, the
//! shared state, fault injection, the request records and [`FakeReceiver::wait_for`], and the
//! request and answer types every receiver works with.

mod healthchecks;
mod ntfy;
mod webhook;

#[cfg(test)]
mod tests;

use crate::conn::{ConnHandle, KillListener};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use healthchecks::healthchecks;
use ntfy::{ntfy, ntfy_error};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webhook::webhook;

/// ntfy's `DefaultMessageSizeLimit` (server/config.go).
pub const NTFY_MESSAGE_LIMIT: usize = 4096;
/// The bytes of a ping body healthchecks.io keeps.
pub const PING_BODY_LIMIT: usize = 100_000;
/// Bodies past this are refused with 413 (and recorded without their body).
const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// The healthchecks checks that exist; a ping to any other UUID is 404 `not found`.
    pub checks: Vec<String>,
    /// Bytes of a ping body that are kept ([`Ping::stored_body`]) and told in `Ping-Body-Limit`.
    pub ping_body_limit: usize,
    /// ntfy's message size limit; a longer body becomes an attachment and is flagged.
    pub ntfy_message_limit: usize,
    /// Seeds the ntfy message ids, so runs are reproducible.
    pub seed: u64,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            checks: vec![FakeReceiver::CHECK_UUID.to_string()],
            ping_body_limit: PING_BODY_LIMIT,
            ntfy_message_limit: NTFY_MESSAGE_LIMIT,
            seed: 11,
        }
    }
}

/// Which receiver a request went to (by path prefix); also what a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `/hook/…`
    Webhook,
    /// `/ntfy/…`
    Ntfy,
    /// `/hc/…`
    Healthchecks,
    /// Any other path: 404, and recorded as rejected.
    Other,
}

impl Kind {
    fn of(path: &str) -> Kind {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/hook") {
            Kind::Webhook
        } else if under("/ntfy") {
            Kind::Ntfy
        } else if under("/hc") {
            Kind::Healthchecks
        } else {
            Kind::Other
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverFault {
    /// Answer this status (ntfy's own error object for 429 and 500, a plain reason otherwise).
    Status(u16),
    /// Read the request and never answer, until the fake is dropped.
    Hang,
    /// Read the request, then drop the connection with a TCP reset.
    Reset,
}

/// What a healthchecks ping signals, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/<uuid>` or `/<uuid>/`
    Success,
    Start,
    Fail,
    Log,
    /// `/<uuid>/<n>`: 0 is a success, anything else a failure.
    Exit(u8),
}

impl Signal {
    pub fn is_failure(self) -> bool {
        matches!(self, Signal::Fail) || matches!(self, Signal::Exit(n) if n > 0)
    }
}

/// An ntfy publish as the server parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct NtfyMessage {
    pub topic: String,
    /// The id answered (empty when the publish was refused).
    pub id: String,
    pub title: Option<String>,
    /// The message shown: the trimmed body, `triggered` when empty, or ntfy's "You received a
    /// file: …" when the body became an attachment.
    pub message: String,
    /// 1 to 5; `None` when not given (ntfy shows it as 3).
    pub priority: Option<u8>,
    pub tags: Vec<String>,
    /// `Markdown: yes` (or `Content-Type: text/markdown`).
    pub markdown: bool,
    /// The body was longer than the message limit, so the real server would have made it an
    /// attachment: a client should keep its messages short.
    pub too_long: bool,
    /// The body became an attachment (too long, or not UTF-8).
    pub attachment: bool,
}

/// A healthchecks ping as the service parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub uuid: String,
    pub signal: Signal,
    /// The run id, as sent (`None` without `rid`).
    pub rid: Option<String>,
    /// The part of the body the service keeps (the first `ping_body_limit` bytes).
    pub stored_body: Vec<u8>,
    /// The body was longer than what is kept.
    pub truncated: bool,
}

/// One request, as it arrived and as it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// 0, 1, 2… in arrival order.
    pub seq: usize,
    pub kind: Kind,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names in lower case, in the order sent; values decoded as UTF-8 (lossy).
    pub headers: Vec<(String, String)>,
    /// The whole body as sent (empty when it was over 16 MiB and refused with 413).
    pub body: Vec<u8>,
    /// When the fake recorded it: its body had arrived, its answer was not sent yet.
    pub at: Instant,
    /// The status answered; `None` when a fault hung or reset the connection.
    pub status: Option<u16>,
    pub fault: Option<ReceiverFault>,
    /// Why the real service would refuse it; `None` when it would accept it.
    pub error: Option<String>,
    /// A webhook's body.
    pub json: Option<Value>,
    pub ntfy: Option<NtfyMessage>,
    pub ping: Option<Ping>,
}

impl Received {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------------------------

/// A running receiver. Dropping it stops the server and lets go of hanging requests.
pub struct FakeReceiver {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeReceiver {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        self.task.abort();
    }
}

impl FakeReceiver {
    /// The check that exists by default ([`ReceiverOptions::checks`]).
    pub const CHECK_UUID: &'static str = "9d3c1a5e-7b2f-4e8a-b6d4-2f0e5c7a1b93";

    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(opts: ReceiverOptions) -> FakeReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            ping_body_limit: opts.ping_body_limit,
            ntfy_message_limit: opts.ntfy_message_limit,
            state: Mutex::new(State {
                log: Vec::new(),
                injections: Vec::new(),
                down: HashSet::new(),
                checks: opts.checks.iter().cloned().collect(),
                rng: fastrand::Rng::with_seed(opts.seed),
            }),
            count: watch::Sender::new(0),
            stop: watch::Sender::new(false),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                KillListener(listener),
                app.into_make_service_with_connect_info::<ConnHandle>(),
            )
            .await;
        });
        FakeReceiver { shared, task }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }
    /// What a config's webhook URL would hold.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.shared.base)
    }
    /// What a config's ntfy topic URL would hold (ntfy's `https://ntfy.sh/<topic>`).
    pub fn ntfy_url(&self, topic: &str) -> String {
        format!("{}/ntfy/{topic}", self.shared.base)
    }
    /// What a config's ping URL would hold (healthchecks.io's `https://hc-ping.com/<uuid>`).
    pub fn healthchecks_url(&self, uuid: &str) -> String {
        format!("{}/hc/{uuid}", self.shared.base)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Makes a check exist, so pings to it are answered `OK`.
    pub fn add_check(&self, uuid: &str) {
        self.state().checks.insert(uuid.to_string());
    }

    /// Answers the next `times` requests to `kind` with `fault`, in the order injected.
    pub fn inject(&self, kind: Kind, fault: ReceiverFault, times: u32) {
        self.state().injections.push(Injection {
            kind,
            fault,
            remaining: times,
        });
    }
    /// With `true`, the receiver is down for good: every request to `kind` hangs, until
    /// `set_hang(kind, false)`; the requests already held stay held until the fake is dropped.
    pub fn set_hang(&self, kind: Kind, down: bool) {
        let mut s = self.state();
        if down {
            s.down.insert(kind);
        } else {
            s.down.remove(&kind);
        }
    }
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.injections.clear();
        s.down.clear();
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state().log.clone()
    }
    fn of_kind(&self, kind: Kind) -> Vec<Received> {
        self.state()
            .log
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }
    pub fn webhooks(&self) -> Vec<Received> {
        self.of_kind(Kind::Webhook)
    }
    pub fn ntfy(&self) -> Vec<Received> {
        self.of_kind(Kind::Ntfy)
    }
    pub fn pings(&self) -> Vec<Received> {
        self.of_kind(Kind::Healthchecks)
    }
    /// The requests the real service would have refused, whatever a fault answered.
    pub fn rejected(&self) -> Vec<Received> {
        self.state()
            .log
            .iter()
            .filter(|r| r.error.is_some())
            .cloned()
            .collect()
    }
    /// Forgets the log; [`FakeReceiver::wait_for`] counts from here.
    pub fn clear_log(&self) {
        let mut s = self.state();
        s.log.clear();
        self.shared.count.send_replace(0);
    }

    /// Returns every request as soon as at least `n` have arrived. Panics, with the log, if
    /// fewer than `n` arrive within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.shared.count.subscribe();
        let arrived = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await,
            Ok(Ok(_))
        );
        let log = self.requests();
        if !arrived {
            panic!(
                "timed out after {timeout:?} waiting for {n} requests, got {}: {log:#?}",
                log.len()
            );
        }
        log
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    base: String,
    ping_body_limit: usize,
    ntfy_message_limit: usize,
    state: Mutex<State>,
    /// Requests recorded; sent while the state is locked, so it never goes back.
    count: watch::Sender<usize>,
    /// Set when the fake is dropped: hanging requests end.
    stop: watch::Sender<bool>,
}

struct State {
    log: Vec<Received>,
    injections: Vec<Injection>,
    down: HashSet<Kind>,
    checks: HashSet<String>,
    rng: fastrand::Rng,
}

struct Injection {
    kind: Kind,
    fault: ReceiverFault,
    remaining: u32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, mut r: Received) {
        let mut s = self.lock();
        r.seq = s.log.len();
        s.log.push(r);
        self.count.send_replace(s.log.len());
    }

    /// Holds until the fake is dropped.
    async fn hold(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

impl State {
    fn take_fault(&mut self, kind: Kind) -> Option<ReceiverFault> {
        if self.down.contains(&kind) {
            return Some(ReceiverFault::Hang);
        }
        let inj = self
            .injections
            .iter_mut()
            .find(|i| i.kind == kind && i.remaining > 0)?;
        inj.remaining -= 1;
        let fault = inj.fault;
        self.injections.retain(|i| i.remaining > 0);
        Some(fault)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

/// The request as the receivers read it.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    /// Every value of a query parameter, decoded as a form (`+` is a space).
    fn query_values(&self, name: &str) -> Vec<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn text(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type,
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }
    fn json(status: u16, body: &Value) -> Reply {
        let mut bytes = serde_json::to_vec(body).expect("JSON");
        bytes.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body: bytes,
            headers: Vec::new(),
        }
    }
    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
    fn into_response(self) -> Response {
        let mut b = Response::builder()
            .status(self.status)
            .header("content-type", self.content_type);
        for (n, v) in self.headers {
            b = b.header(n, v);
        }
        b.body(Body::from(self.body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// What a receiver made of a request: its answer, why it refused it, what it parsed.
struct Answer {
    reply: Reply,
    error: Option<String>,
    json: Option<Value>,
    ntfy: Option<NtfyMessage>,
    ping: Option<Ping>,
}

impl Answer {
    fn accept(reply: Reply) -> Answer {
        Answer {
            reply,
            error: None,
            json: None,
            ntfy: None,
            ping: None,
        }
    }
    fn refuse(reply: Reply, why: impl Into<String>) -> Answer {
        Answer {
            error: Some(why.into()),
            ..Answer::accept(reply)
        }
    }
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().to_string();
    let kind = Kind::of(&path);
    let (body, too_big) = match to_bytes(body, MAX_BODY).await {
        Ok(b) => (b.to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    let req = Incoming {
        method,
        path,
        query: uri.query().map(str::to_string),
        headers,
        body,
    };
    let answer = if too_big {
        Answer::refuse(
            Reply::text(413, "text/plain", "request body too large"),
            format!("body over {MAX_BODY} bytes"),
        )
    } else {
        answer(&shared, kind, &req)
    };
    let fault = shared.lock().take_fault(kind);
    let reply = match fault {
        None => Some(answer.reply),
        Some(ReceiverFault::Status(s)) => Some(fault_reply(kind, s)),
        Some(ReceiverFault::Hang | ReceiverFault::Reset) => None,
    };
    shared.record(Received {
        seq: 0,
        kind,
        method: req.method.to_string(),
        path: req.path,
        query: req.query,
        headers: header_list(&req.headers),
        body: req.body,
        at: Instant::now(),
        status: reply.as_ref().map(|r| r.status),
        fault,
        error: answer.error,
        json: answer.json,
        ntfy: answer.ntfy,
        ping: answer.ping,
    });
    if fault == Some(ReceiverFault::Hang) {
        shared.hold().await;
    }
    match reply {
        Some(r) => r.into_response(),
        None => {
            conn.kill();
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect()
}

fn answer(shared: &Shared, kind: Kind, req: &Incoming) -> Answer {
    match kind {
        Kind::Webhook => webhook(req),
        Kind::Ntfy => ntfy(shared, req),
        Kind::Healthchecks => healthchecks(shared, req),
        Kind::Other => Answer::refuse(
            Reply::text(404, "text/plain", "no receiver at this path"),
            "no receiver at this path (/hook/, /ntfy/ or /hc/)",
        ),
    }
}

/// What a fault's status answers: ntfy's own error object where it has one for that status
/// (server/errors.go), else the reason phrase, as from a proxy in front of the service.
fn fault_reply(kind: Kind, status: u16) -> Reply {
    match (kind, status) {
        (Kind::Ntfy, 429) => ntfy_error(
            42901,
            429,
            "limit reached: too many requests",
            Some("https://ntfy.sh/docs/publish/#limitations"),
        ),
        (Kind::Ntfy, 500) => ntfy_error(50001, 500, "internal server error", None),
        _ => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("fault");
            Reply::text(status, "text/plain", reason)
        }
    }
}
