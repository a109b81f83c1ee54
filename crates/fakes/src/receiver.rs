//! Local stand-ins for the three notification targets playlistd reports to after a sync (issue
//! 14): a JSON webhook, an ntfy topic and a healthchecks.io check. One axum server on 127.0.0.1
//! plays all three, told apart by path prefix (`/hook/<name>`, `/ntfy/<topic>`, `/hc/<uuid>`),
//! so a test starts one server and points every target of a config at it.
//!
//! Each receiver refuses what the real service refuses, with the real answer:
//! - webhook: `POST` only (405 otherwise), `Content-Type: application/json` and a body that
//!   parses as JSON (400 otherwise). There is no one real webhook service: this is the common
//!   contract of JSON webhook receivers; the answer is 200 `{"ok":true}`.
//! - ntfy, as its server (server/server.go `handlePublishInternal` and `parsePublishParams`,
//!   server/util.go, util/util.go `ParsePriority`, server/errors.go) and docs/publish.md
//!   ("Publishing") have it: `PUT`/`POST` to `/<topic>`, or `GET` `/<topic>/publish` (`/send`,
//!   `/trigger`); a topic is 1 to 64 of `A-Za-z0-9_-`, anything else matches no route (404
//!   `{"code":40401,"http":404,"error":"page not found"}`); parameters come from the headers
//!   (RFC 2047 encoded words decoded, an RFC 9218 `Priority: u=…` header ignored), then from
//!   the query; a bad priority is 400 code 40007; the body is the message, trimmed, `triggered`
//!   when empty; a body over 4,096 bytes (or not UTF-8) becomes an attachment, which this fake
//!   flags (`too_long`) so tests can assert the client keeps messages short; the answer is the
//!   message object as JSON. The web app is off (a `GET` of the topic is 404), and publishing
//!   JSON to the root is not modelled.
//! - healthchecks, as hc/api/urls.py and hc/api/views.py `ping` and the "Pinging API" docs
//!   have it: `/<uuid>`, `/<uuid>/`, `/<uuid>/start`, `/fail`, `/log` and `/<exit status>`; the
//!   uuid must be Django's `<uuid:>` (lowercase canonical form) or no route matches (404); an
//!   unknown check is 404 `not found`; an exit status over 255 is 400 `invalid url format`; a
//!   `rid` that is not a UUID is 400 `invalid uuid format`; any method pings; the first 100,000
//!   bytes of the body are kept (healthchecks.io's limit, see "Attaching logs"; a self-hosted
//!   instance keeps 10,000 by default); the answer is `OK` with `Ping-Body-Limit`.
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

use crate::conn::{ConnHandle, KillListener};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// ntfy's `DefaultMessageSizeLimit` (server/config.go).
pub const NTFY_MESSAGE_LIMIT: usize = 4096;
/// The bytes of a ping body healthchecks.io keeps.
pub const PING_BODY_LIMIT: usize = 100_000;
/// Bodies past this are refused with 413 (and recorded without their body).
const MAX_BODY: usize = 16 << 20;
/// ntfy's `DefaultCacheDuration`: a cached message expires 12 h after it was sent.
const NTFY_CACHE_SECS: i64 = 12 * 3600;
/// ntfy's `DefaultAttachmentExpiryDuration`.
const NTFY_ATTACHMENT_SECS: i64 = 3 * 3600;
const NTFY_PRIORITY_LINK: &str = "https://ntfy.sh/docs/publish/#message-priority";
/// Django's answer when no URL pattern matches: `page_not_found`'s own page (django/views/
/// defaults.py), as healthchecks has no 404.html template.
const DJANGO_NOT_FOUND: &str = "\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n";

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

    /// ntfy's `util.RandomString(12)`.
    fn message_id(&mut self) -> String {
        const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..12)
            .map(|_| CHARSET[self.rng.usize(..CHARSET.len())] as char)
            .collect()
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

// ---------------------------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------------------------

fn webhook(req: &Incoming) -> Answer {
    let refuse =
        |status: u16, why: &str| Answer::refuse(Reply::json(status, &json!({ "error": why })), why);
    let name = req.path.strip_prefix("/hook/").unwrap_or("");
    if name.is_empty() {
        return refuse(404, "no webhook name in the path (/hook/<name>)");
    }
    if req.method != Method::POST {
        let mut a = refuse(405, "webhooks take POST only");
        a.reply = a.reply.with_header("allow", "POST");
        return a;
    }
    let content_type = req.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return refuse(
            400,
            &format!("Content-Type must be application/json, was {content_type:?}"),
        );
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => Answer {
            json: Some(v),
            ..Answer::accept(Reply::json(200, &json!({ "ok": true })))
        },
        Err(e) => refuse(400, &format!("the body is not JSON: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// ntfy
// ---------------------------------------------------------------------------------------------

/// ntfy's `errHTTP` as JSON: `{"code":…,"http":…,"error":…,"link":…}` (`link` only if set).
fn ntfy_error(code: u32, status: u16, error: &str, link: Option<&str>) -> Reply {
    let mut e = json!({ "code": code, "http": status, "error": error });
    if let Some(link) = link {
        e["link"] = json!(link);
    }
    Reply::json(status, &e).with_header("access-control-allow-origin", "*")
}

fn ntfy_not_found(why: &str) -> Answer {
    Answer::refuse(ntfy_error(40401, 404, "page not found", None), why)
}

/// ntfy's topic rule: `^[-_A-Za-z0-9]{1,64}$`.
fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Routes as ntfy does: `PUT`/`POST /<topic>` and `GET /<topic>/{publish,send,trigger}`
/// publish; anything else is no route.
fn ntfy(shared: &Shared, req: &Incoming) -> Answer {
    let rest = req.path.strip_prefix("/ntfy/").unwrap_or("");
    let segs: Vec<&str> = rest.split('/').collect();
    let publish_put = matches!(req.method, Method::PUT | Method::POST);
    let topic = match (segs.as_slice(), publish_put, req.method == Method::GET) {
        ([topic], true, _) if valid_topic(topic) => *topic,
        ([topic, "publish" | "send" | "trigger"], _, true) if valid_topic(topic) => *topic,
        ([""], true, _) => return ntfy_not_found("publishing JSON to the root is not modelled"),
        ([topic], false, true) if valid_topic(topic) => {
            return ntfy_not_found("GET of a topic serves the web app (off here): not a publish");
        }
        _ => {
            return ntfy_not_found(&format!(
                "no route: {} {} (a topic is 1 to 64 of A-Za-z0-9_-)",
                req.method, req.path
            ));
        }
    };
    ntfy_publish(shared, req, topic)
}

/// `readParam`: the first non-empty header of `names` (RFC 2047 decoded, an RFC 9218
/// `Priority` ignored), else the first non-empty query parameter of `names`, trimmed.
fn ntfy_param(req: &Incoming, names: &[&str]) -> String {
    for name in names {
        let raw = req.header(name).unwrap_or_default();
        let decoded = decode_rfc2047(&raw).unwrap_or(raw);
        let value = decoded.trim();
        if *name == "priority" && is_rfc9218_priority(value) {
            continue;
        }
        if !value.is_empty() {
            return value.to_string();
        }
    }
    for name in names {
        if let Some(v) = req.query_values(name).into_iter().next()
            && !v.is_empty()
        {
            return v.trim().to_string();
        }
    }
    String::new()
}

fn ntfy_bool(req: &Incoming, default: bool, names: &[&str]) -> bool {
    match ntfy_param(req, names).to_lowercase().as_str() {
        "" => default,
        v => matches!(v, "1" | "yes" | "true"),
    }
}

/// `^u=\d,\s*(i|\d)$|^u=\d$`: what Cloudflare adds, which ntfy ignores.
fn is_rfc9218_priority(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("u=") else {
        return false;
    };
    let mut chars = rest.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    let tail = chars.as_str();
    if tail.is_empty() {
        return true;
    }
    let Some(after) = tail.strip_prefix(',') else {
        return false;
    };
    let last = after.trim_start();
    last == "i" || (last.len() == 1 && last.as_bytes()[0].is_ascii_digit())
}

/// ntfy's `ParsePriority`: `None` for not given, `Err` for anything unknown.
fn ntfy_priority(v: &str) -> Result<Option<u8>, ()> {
    match v.trim().to_lowercase().as_str() {
        "" => Ok(None),
        "1" | "min" => Ok(Some(1)),
        "2" | "low" => Ok(Some(2)),
        "3" | "default" => Ok(Some(3)),
        "4" | "high" => Ok(Some(4)),
        "5" | "max" | "urgent" => Ok(Some(5)),
        _ => Err(()),
    }
}

fn ntfy_publish(shared: &Shared, req: &Incoming, topic: &str) -> Answer {
    let prio = ntfy_param(req, &["x-priority", "priority", "prio", "p"]);
    let Ok(priority) = ntfy_priority(&prio) else {
        let reply = ntfy_error(
            40007,
            400,
            "invalid priority parameter",
            Some(NTFY_PRIORITY_LINK),
        );
        return Answer::refuse(reply, format!("invalid priority {prio:?}"));
    };
    let title = Some(ntfy_param(req, &["x-title", "title", "t"])).filter(|t| !t.is_empty());
    let tags: Vec<String> = ntfy_param(req, &["x-tags", "tags", "tag", "ta"])
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let content_type = ntfy_param(req, &["content-type", "content_type"]);
    let markdown = ntfy_bool(req, false, &["x-markdown", "markdown", "md"])
        || content_type.eq_ignore_ascii_case("text/markdown");
    let cache = ntfy_bool(req, true, &["x-cache", "cache"]);
    let mut message = ntfy_param(req, &["x-message", "message", "m"]).replace("\\n", "\n");
    let too_long = req.body.len() > shared.ntfy_message_limit;
    let text = std::str::from_utf8(&req.body).ok().filter(|_| !too_long);
    if let Some(t) = text
        && !t.is_empty()
    {
        message = t.trim().to_string();
    }
    let attachment = text.is_none();
    let msg = NtfyMessage {
        topic: topic.to_string(),
        id: shared.lock().message_id(),
        title,
        message,
        priority,
        tags,
        markdown,
        too_long,
        attachment,
    };
    ntfy_reply(shared, req, msg, cache)
}

/// The message object ntfy answers (`message` in server/types.go, empty fields left out).
fn ntfy_reply(shared: &Shared, req: &Incoming, mut msg: NtfyMessage, cache: bool) -> Answer {
    let now = chrono::Utc::now().timestamp();
    let mut m = Map::new();
    m.insert("id".into(), json!(msg.id));
    m.insert("time".into(), json!(now));
    if cache {
        m.insert("expires".into(), json!(now + NTFY_CACHE_SECS));
    }
    m.insert("event".into(), json!("message"));
    m.insert("topic".into(), json!(msg.topic));
    if let Some(t) = &msg.title {
        m.insert("title".into(), json!(t));
    }
    if msg.attachment {
        let utf8 = std::str::from_utf8(&req.body).is_ok();
        let (mime, ext) = if utf8 {
            ("text/plain; charset=utf-8", ".txt")
        } else {
            ("application/octet-stream", ".bin")
        };
        let name = format!("attachment{ext}");
        if msg.message.is_empty() {
            msg.message = format!("You received a file: {name}");
        }
        let url = format!("{}/ntfy/file/{}{ext}", shared.base, msg.id);
        let a = json!({"name": name, "type": mime, "size": req.body.len(),
            "expires": now + NTFY_ATTACHMENT_SECS, "url": url});
        m.insert("attachment".into(), a);
    }
    if msg.message.is_empty() {
        msg.message = "triggered".into();
    }
    m.insert("message".into(), json!(msg.message));
    if let Some(p) = msg.priority {
        m.insert("priority".into(), json!(p));
    }
    if !msg.tags.is_empty() {
        m.insert("tags".into(), json!(msg.tags));
    }
    if msg.markdown {
        m.insert("content_type".into(), json!("text/markdown"));
    }
    let reply = Reply::json(200, &Value::Object(m)).with_header("access-control-allow-origin", "*");
    Answer {
        ntfy: Some(msg),
        ..Answer::accept(reply)
    }
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?UTF-8?Q?…?=`), as ntfy does with Go's
/// `mime.WordDecoder`: malformed words are left as they are, the blanks between two words are
/// dropped, and a charset other than UTF-8, US-ASCII or ISO-8859-1 is an error (ntfy then
/// keeps the raw value).
fn decode_rfc2047(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    let mut between_words = false;
    while let Some(start) = rest.find("=?") {
        let Some((charset, content, end)) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            between_words = false;
            continue;
        };
        let before = &rest[..start];
        if !between_words || !before.trim().is_empty() {
            out.push_str(before);
        }
        match charset.to_ascii_lowercase().as_str() {
            "utf-8" | "us-ascii" => out.push_str(&String::from_utf8_lossy(&content)),
            "iso-8859-1" => out.extend(content.iter().map(|&b| b as char)),
            _ => return None,
        }
        rest = &rest[start + end..];
        between_words = true;
    }
    out.push_str(rest);
    Some(out)
}

/// One encoded word at the start of `s`: (charset, decoded bytes, its length in `s`).
fn encoded_word(s: &str) -> Option<(&str, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, rest) = inner.split_once('?')?;
    let mut chars = rest.chars();
    let encoding = chars.next()?;
    let rest = chars.as_str().strip_prefix('?')?;
    let text_len = rest.find("?=")?;
    let text = &rest[..text_len];
    let content = match encoding {
        'B' | 'b' => base64_decode(text)?,
        'Q' | 'q' => q_decode(text)?,
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + encoding.len_utf8() + 1 + text_len + 2;
    Some((charset, content, len))
}

/// Standard base64 with padding.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad]);
    }
    Some(out)
}

/// RFC 2047 "Q": `_` is a space, `=XX` a byte.
fn q_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// healthchecks
// ---------------------------------------------------------------------------------------------

/// Django's `<uuid:>` converter: lowercase canonical form only.
fn django_uuid(s: &str) -> bool {
    canonical_uuid(s, false)
}

/// `8-4-4-4-12` hex digits; upper case too when `any_case` (healthchecks' `rid` check).
fn canonical_uuid(s: &str, any_case: bool) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => {
                c.is_ascii_digit()
                    || (b'a'..=b'f').contains(&c)
                    || (any_case && (b'A'..=b'F').contains(&c))
            }
        })
}

/// The signal of the part after the uuid: `Err` when no URL pattern matches, `Ok(Err(n))` for
/// an exit status over 255.
fn hc_signal(suffix: Option<&str>) -> Result<Result<Signal, u128>, ()> {
    Ok(Ok(match suffix {
        None | Some("") => Signal::Success,
        Some("start") => Signal::Start,
        Some("fail") => Signal::Fail,
        Some("log") => Signal::Log,
        Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
            let n = d.parse::<u128>().unwrap_or(u128::MAX);
            match u8::try_from(n) {
                Ok(n) => Signal::Exit(n),
                Err(_) => return Ok(Err(n)),
            }
        }
        Some(_) => return Err(()),
    }))
}

/// healthchecks' `ping` view behind hc/api/urls.py's routes: the check, then the exit status,
/// then `rid`.
fn healthchecks(shared: &Shared, req: &Incoming) -> Answer {
    let no_route = |why: &str| Answer::refuse(Reply::text(404, "text/html", DJANGO_NOT_FOUND), why);
    let rest = req.path.strip_prefix("/hc/").unwrap_or("");
    let (uuid, suffix) = match rest.split_once('/') {
        Some((u, s)) => (u, Some(s)),
        None => (rest, None),
    };
    if !django_uuid(uuid) {
        return no_route(&format!("{uuid:?} is not a lowercase canonical UUID"));
    }
    let Ok(signal) = hc_signal(suffix) else {
        return no_route(&format!("no ping route {}", req.path));
    };
    let limit = shared.ping_body_limit;
    let rid = req.query_values("rid").pop();
    let ping = Ping {
        uuid: uuid.to_string(),
        signal: *signal.as_ref().unwrap_or(&Signal::Fail),
        rid: rid.clone(),
        stored_body: req.body[..req.body.len().min(limit)].to_vec(),
        truncated: req.body.len() > limit,
    };
    let text = |status: u16, body: &str| Reply::text(status, "text/html; charset=utf-8", body);
    let refused = |reply: Reply, why: String| Answer {
        ping: Some(ping.clone()),
        ..Answer::refuse(reply, why)
    };
    if !shared.lock().checks.contains(uuid) {
        return refused(text(404, "not found"), format!("no check {uuid}"));
    }
    if let Err(n) = signal {
        return refused(
            text(400, "invalid url format"),
            format!("exit status {n} > 255"),
        );
    }
    if let Some(r) = rid.filter(|r| !canonical_uuid(r, true)) {
        return refused(
            text(400, "invalid uuid format"),
            format!("rid {r:?} is not a UUID"),
        );
    }
    let reply = Reply::text(200, "text/plain; charset=utf-8", "OK")
        .with_header("ping-body-limit", limit.to_string())
        .with_header("access-control-allow-origin", "*");
    Answer {
        ping: Some(ping),
        ..Answer::accept(reply)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const SECOND: Duration = Duration::from_secs(1);

    async fn fake() -> FakeReceiver {
        FakeReceiver::start(ReceiverOptions::default()).await
    }

    async fn status_and_text(rb: reqwest::RequestBuilder) -> (u16, String) {
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn status_and_json(rb: reqwest::RequestBuilder) -> (u16, Value) {
        let (s, t) = status_and_text(rb).await;
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn webhook_takes_posted_json_only() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let url = f.webhook_url("sync");
        let (s, b) = status_and_json(c.post(&url).json(&json!({"added": 3}))).await;
        assert_eq!((s, b), (200, json!({"ok": true})));
        let text = c.post(&url).header("content-type", "text/plain").body("{}");
        assert_eq!(status_and_json(text).await.0, 400);
        let bad = c
            .post(&url)
            .header("content-type", "application/json; charset=utf-8");
        assert_eq!(status_and_json(bad.body("{nope")).await.0, 400);
        let (s, _) = status_and_text(c.get(&url)).await;
        assert_eq!(s, 405);
        assert_eq!(status_and_text(c.post(f.webhook_url(""))).await.0, 404);
        let hooks = f.webhooks();
        assert_eq!(hooks.len(), 5);
        assert_eq!(hooks[0].json, Some(json!({"added": 3})));
        assert_eq!(hooks[0].header("content-type"), Some("application/json"));
        assert_eq!(hooks[0].path, "/hook/sync");
        let rejected: Vec<Option<u16>> = f.rejected().iter().map(|r| r.status).collect();
        assert_eq!(rejected, vec![Some(400), Some(400), Some(405), Some(404)]);
        assert!(
            f.rejected()[0]
                .error
                .as_deref()
                .unwrap()
                .contains("text/plain")
        );
    }

    #[tokio::test]
    async fn ntfy_reads_title_priority_tags_and_markdown_from_any_alias() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let rb = c
            .post(f.ntfy_url("my-topic_1"))
            .header("Title", "Sync done")
            .header("Priority", "high")
            .header("Tags", "white_check_mark, music,")
            .header("Markdown", "yes")
            .body("  3 tracks **added**\n");
        let (s, b) = status_and_json(rb).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["event"], "message");
        assert_eq!(b["topic"], "my-topic_1");
        assert_eq!(b["title"], "Sync done");
        assert_eq!(b["message"], "3 tracks **added**");
        assert_eq!(b["priority"], 4);
        assert_eq!(b["tags"], json!(["white_check_mark", "music"]));
        assert_eq!(b["content_type"], "text/markdown");
        assert_eq!(b["id"].as_str().unwrap().len(), 12);
        assert!(b["time"].as_i64().unwrap() > 1_700_000_000);
        let short = c
            .put(f.ntfy_url("t2"))
            .header("t", "short")
            .header("p", "1")
            .header("ta", "a")
            .body("x");
        assert_eq!(status_and_json(short).await.0, 200);
        let query = c.post(format!(
            "{}?title=From+query&priority=urgent",
            f.ntfy_url("t3")
        ));
        assert_eq!(status_and_json(query.body("q")).await.0, 200);
        let n = f.ntfy();
        let m0 = n[0].ntfy.as_ref().unwrap();
        assert_eq!(m0.id, b["id"].as_str().unwrap());
        assert!(m0.markdown && !m0.too_long && !m0.attachment);
        let m1 = n[1].ntfy.as_ref().unwrap();
        assert_eq!((m1.title.as_deref(), m1.priority), (Some("short"), Some(1)));
        assert_eq!(m1.tags, vec!["a"]);
        assert!(!m1.markdown);
        let m2 = n[2].ntfy.as_ref().unwrap();
        assert_eq!(
            (m2.title.as_deref(), m2.priority),
            (Some("From query"), Some(5))
        );
        assert!(f.rejected().is_empty());
    }

    #[tokio::test]
    async fn ntfy_priority_names_and_the_invalid_priority_error() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let url = f.ntfy_url("prio");
        for (given, want) in [("min", 1), ("LOW", 2), ("default", 3), ("4", 4), ("max", 5)] {
            let (s, b) = status_and_json(c.post(&url).header("X-Priority", given).body("m")).await;
            assert_eq!((s, b["priority"].clone()), (200, json!(want)), "{given}");
        }
        let (s, b) = status_and_json(c.post(&url).header("X-Priority", "6").body("m")).await;
        assert_eq!(s, 400);
        assert_eq!(
            b,
            json!({"code": 40007, "http": 400, "error": "invalid priority parameter",
                "link": "https://ntfy.sh/docs/publish/#message-priority"})
        );
        // Cloudflare's RFC 9218 header is ignored, and `p` then counts.
        let rb = c.post(&url).header("Priority", "u=3, i").header("p", "2");
        let (s, b) = status_and_json(rb.body("m")).await;
        assert_eq!((s, b["priority"].clone()), (200, json!(2)));
        let (s, b) = status_and_json(c.post(&url).body("no priority")).await;
        assert_eq!(s, 200);
        assert!(b.get("priority").is_none(), "{b}");
        let rejected = f.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].status, Some(400));
        assert_eq!(rejected[0].header("x-priority"), Some("6"));
    }

    #[tokio::test]
    async fn ntfy_topic_names_follow_the_server_rule() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let ok = "a".repeat(64);
        assert_eq!(
            status_and_json(c.post(f.ntfy_url(&ok)).body("m")).await.0,
            200
        );
        for bad in ["a".repeat(65), "dots.in.it".to_string(), "a/b".to_string()] {
            let (s, b) = status_and_json(c.post(f.ntfy_url(&bad)).body("m")).await;
            assert_eq!(s, 404, "{bad}");
            assert_eq!(
                b,
                json!({"code": 40401, "http": 404, "error": "page not found"})
            );
        }
        let (s, _) = status_and_json(c.get(f.ntfy_url("fine"))).await;
        assert_eq!(s, 404, "GET of a topic is not a publish");
        assert_eq!(f.rejected().len(), 4);
        assert_eq!(f.ntfy().len(), 5);
    }

    #[tokio::test]
    async fn ntfy_empty_body_is_triggered_and_get_publish_works() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let (s, b) = status_and_json(c.post(f.ntfy_url("t"))).await;
        assert_eq!((s, b["message"].clone()), (200, json!("triggered")));
        let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body(" \n ")).await;
        assert_eq!((s, b["message"].clone()), (200, json!("triggered")));
        let url = format!("{}/trigger?message=Line+1%5CnLine+2", f.ntfy_url("t"));
        let (s, b) = status_and_json(c.get(url)).await;
        assert_eq!((s, b["message"].clone()), (200, json!("Line 1\nLine 2")));
        assert_eq!(f.ntfy()[0].ntfy.as_ref().unwrap().message, "triggered");
    }

    #[tokio::test]
    async fn ntfy_long_body_is_flagged_and_answered_as_an_attachment() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let (s, _) = status_and_json(c.post(f.ntfy_url("t")).body("x".repeat(4096))).await;
        assert_eq!(s, 200);
        let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body("x".repeat(4097))).await;
        assert_eq!(s, 200);
        assert_eq!(b["message"], "You received a file: attachment.txt");
        assert_eq!(b["attachment"]["size"], 4097);
        assert_eq!(b["attachment"]["name"], "attachment.txt");
        let n = f.ntfy();
        let (at_limit, over) = (n[0].ntfy.as_ref().unwrap(), n[1].ntfy.as_ref().unwrap());
        assert!(!at_limit.too_long && !at_limit.attachment);
        assert!(over.too_long && over.attachment);
        assert_eq!(n[1].body.len(), 4097, "the whole body is recorded");
        let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body(vec![0xff, 0xfe])).await;
        assert_eq!(
            (s, b["attachment"]["name"].clone()),
            (200, json!("attachment.bin"))
        );
        let binary = f.ntfy()[2].ntfy.clone().unwrap();
        assert!(binary.attachment && !binary.too_long);
    }

    #[tokio::test]
    async fn ntfy_header_values_may_be_utf8_or_rfc2047() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let raw = HeaderValue::from_bytes("Äpfel ✓".as_bytes()).unwrap();
        assert_eq!(
            status_and_json(c.post(f.ntfy_url("t")).header("Title", raw))
                .await
                .0,
            200
        );
        let b64 = c
            .post(f.ntfy_url("t"))
            .header("Title", "=?UTF-8?B?8J+HqfCfh6o=?= flags");
        assert_eq!(status_and_json(b64).await.0, 200);
        let q = c
            .post(f.ntfy_url("t"))
            .header("Title", "=?UTF-8?Q?=C3=84pfel?= =?utf-8?q?_und_Birnen?=")
            .header("Tags", "tag1,=?UTF-8?B?8J+HqfCfh6o=?=");
        assert_eq!(status_and_json(q).await.0, 200);
        let unknown = c.post(f.ntfy_url("t")).header("Title", "=?KOI8-R?B?AAAA?=");
        assert_eq!(status_and_json(unknown).await.0, 200);
        let titles: Vec<String> = f
            .ntfy()
            .iter()
            .map(|r| r.ntfy.as_ref().unwrap().title.clone().unwrap())
            .collect();
        assert_eq!(
            titles,
            [
                "Äpfel ✓",
                "🇩🇪 flags",
                "Äpfel und Birnen",
                "=?KOI8-R?B?AAAA?="
            ]
        );
        assert_eq!(f.ntfy()[2].ntfy.as_ref().unwrap().tags, ["tag1", "🇩🇪"]);
    }

    #[tokio::test]
    async fn healthchecks_signals_by_path_with_any_method() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let base = f.healthchecks_url(FakeReceiver::CHECK_UUID);
        let sends = [
            c.get(&base),
            c.head(format!("{base}/")),
            c.post(format!("{base}/start")),
            c.post(format!("{base}/fail")).body("boom"),
            c.post(format!("{base}/log")).body("a line"),
            c.get(format!("{base}/0")),
            c.get(format!("{base}/3")),
        ];
        for rb in sends {
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["ping-body-limit"], "100000");
        }
        let (s, t) = status_and_text(c.get(&base)).await;
        assert_eq!((s, t.as_str()), (200, "OK"));
        let signals: Vec<Signal> = f
            .pings()
            .iter()
            .map(|r| r.ping.as_ref().unwrap().signal)
            .collect();
        use Signal::*;
        assert_eq!(
            signals,
            [
                Success,
                Success,
                Start,
                Fail,
                Log,
                Exit(0),
                Exit(3),
                Success
            ]
        );
        assert!(!Exit(0).is_failure() && Exit(3).is_failure() && Fail.is_failure());
        let pings = f.pings();
        assert_eq!(pings[1].method, "HEAD");
        assert_eq!(pings[3].ping.as_ref().unwrap().stored_body, b"boom");
        assert!(f.rejected().is_empty());
    }

    #[tokio::test]
    async fn healthchecks_refuses_as_the_service_does() {
        let f = fake().await;
        let c = reqwest::Client::new();
        let base = f.healthchecks_url(FakeReceiver::CHECK_UUID);
        let unknown = f.healthchecks_url("00000000-0000-4000-8000-000000000000");
        let upper = f.healthchecks_url(&FakeReceiver::CHECK_UUID.to_uppercase());
        let cases = [
            (upper, 404, "Not Found"),
            (f.healthchecks_url("not-a-uuid"), 404, "Not Found"),
            (format!("{base}/-1"), 404, "Not Found"),
            (format!("{base}/start/"), 404, "Not Found"),
            (unknown.clone(), 404, "not found"),
            (format!("{base}/256"), 400, "invalid url format"),
            (format!("{base}?rid=nope"), 400, "invalid uuid format"),
            (format!("{base}?rid="), 400, "invalid uuid format"),
        ];
        for (url, status, text) in &cases {
            let (s, t) = status_and_text(c.get(url)).await;
            assert_eq!(s, *status, "{url}");
            if *text == "Not Found" {
                assert!(t.contains("<h1>Not Found</h1>"), "{url}: {t}");
            } else {
                assert_eq!(t, *text, "{url}");
            }
        }
        assert_eq!(f.rejected().len(), cases.len());
        let rid = "123E4567-E89B-12D3-A456-426614174000";
        let (s, _) = status_and_text(c.get(format!("{base}/start?rid={rid}"))).await;
        assert_eq!(s, 200);
        assert_eq!(
            f.pings()
                .last()
                .unwrap()
                .ping
                .as_ref()
                .unwrap()
                .rid
                .as_deref(),
            Some(rid)
        );
        f.add_check("00000000-0000-4000-8000-000000000000");
        assert_eq!(status_and_text(c.get(&unknown)).await.0, 200);
    }

    #[tokio::test]
    async fn healthchecks_keeps_the_first_bytes_of_a_long_body() {
        let opts = ReceiverOptions {
            ping_body_limit: 10,
            ..ReceiverOptions::default()
        };
        let f = FakeReceiver::start(opts).await;
        let c = reqwest::Client::new();
        let url = f.healthchecks_url(FakeReceiver::CHECK_UUID);
        let resp = c.post(&url).body("0123456789abc").send().await.unwrap();
        assert_eq!(resp.headers()["ping-body-limit"], "10");
        let p = f.pings()[0].clone();
        assert_eq!(p.body, b"0123456789abc");
        let ping = p.ping.unwrap();
        assert_eq!(ping.stored_body, b"0123456789");
        assert!(ping.truncated);
    }

    #[tokio::test]
    async fn status_faults_apply_per_kind_and_are_recorded() {
        let f = fake().await;
        let c = reqwest::Client::new();
        f.inject(Kind::Ntfy, ReceiverFault::Status(500), 2);
        f.inject(Kind::Webhook, ReceiverFault::Status(503), 1);
        let ntfy = || c.post(f.ntfy_url("t")).header("p", "9").body("m");
        let (s, b) = status_and_json(ntfy()).await;
        assert_eq!((s, b["code"].clone()), (500, json!(50001)));
        let hook = c.post(f.webhook_url("w")).json(&json!({}));
        assert_eq!(
            status_and_text(hook).await,
            (503, "Service Unavailable".into())
        );
        let ping = c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID));
        assert_eq!(status_and_text(ping).await.0, 200);
        assert_eq!(status_and_json(ntfy()).await.0, 500);
        assert_eq!(status_and_json(ntfy()).await.0, 400, "faults used up");
        let log = f.requests();
        let faults: Vec<_> = log.iter().map(|r| r.fault).collect();
        let st = ReceiverFault::Status;
        assert_eq!(
            faults,
            [Some(st(500)), Some(st(503)), None, Some(st(500)), None]
        );
        // The faulted publishes were still checked: the bad priority shows.
        assert_eq!(f.rejected().len(), 3);
        assert_eq!(f.rejected()[0].status, Some(500));
    }

    #[tokio::test]
    async fn reset_drops_the_connection_and_is_recorded() {
        let f = fake().await;
        let c = reqwest::Client::new();
        f.inject(Kind::Healthchecks, ReceiverFault::Reset, 1);
        let url = f.healthchecks_url(FakeReceiver::CHECK_UUID);
        let r = c.post(&url).body("log").send().await;
        let err = r.expect_err("a reset, not an answer");
        assert!(!err.is_timeout(), "{err:?}");
        assert_eq!(status_and_text(c.get(&url)).await.0, 200);
        let pings = f.pings();
        assert_eq!(pings[0].fault, Some(ReceiverFault::Reset));
        assert_eq!(pings[0].status, None);
        assert_eq!(pings[0].body, b"log");
        assert_eq!(pings[1].status, Some(200));
    }

    #[tokio::test]
    async fn a_hanging_request_ends_by_client_timeout_and_blocks_nothing() {
        let f = fake().await;
        f.inject(Kind::Ntfy, ReceiverFault::Hang, 1);
        let patient = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let hung = tokio::spawn(patient.post(f.ntfy_url("t")).body("first").send());
        f.wait_for(1, SECOND).await;
        let c = reqwest::Client::new();
        let others = async {
            let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body("second")).await;
            assert_eq!((s, b["message"].clone()), (200, json!("second")));
            let hook = c.post(f.webhook_url("w")).json(&json!(1));
            assert_eq!(status_and_json(hook).await.0, 200);
        };
        tokio::time::timeout(SECOND, others)
            .await
            .expect("not blocked by the hang");
        let err = hung.await.unwrap().expect_err("no answer");
        assert!(err.is_timeout(), "{err:?}");
        let first = &f.requests()[0];
        assert_eq!(
            (first.fault, first.status),
            (Some(ReceiverFault::Hang), None)
        );
        assert_eq!(first.ntfy.as_ref().unwrap().message, "first");
    }

    #[tokio::test]
    async fn a_receiver_down_for_good_hangs_until_the_fake_stops() {
        let f = fake().await;
        f.set_hang(Kind::Webhook, true);
        let c = reqwest::Client::builder()
            .timeout(5 * SECOND)
            .build()
            .unwrap();
        let first = tokio::spawn(c.post(f.webhook_url("a")).json(&json!(1)).send());
        let second = tokio::spawn(c.post(f.webhook_url("b")).json(&json!(2)).send());
        let ping = c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID));
        assert_eq!(
            status_and_text(ping).await.0,
            200,
            "other kinds still answer"
        );
        let log = f.wait_for(3, SECOND).await;
        assert_eq!(
            log.iter()
                .filter(|r| r.fault == Some(ReceiverFault::Hang))
                .count(),
            2
        );
        let started = Instant::now();
        drop(f);
        for pending in [first, second] {
            let err = pending
                .await
                .unwrap()
                .expect_err("reset when the fake stops");
            assert!(!err.is_timeout(), "{err:?}");
        }
        assert!(started.elapsed() < SECOND);
    }

    #[tokio::test]
    async fn set_hang_false_and_clear_faults_bring_a_receiver_back() {
        let f = fake().await;
        let c = reqwest::Client::new();
        f.set_hang(Kind::Ntfy, true);
        f.set_hang(Kind::Ntfy, false);
        assert_eq!(status_and_json(c.post(f.ntfy_url("t"))).await.0, 200);
        f.inject(Kind::Ntfy, ReceiverFault::Status(429), 5);
        let (s, b) = status_and_json(c.post(f.ntfy_url("t"))).await;
        assert_eq!((s, b["code"].clone()), (429, json!(42901)));
        f.clear_faults();
        assert_eq!(status_and_json(c.post(f.ntfy_url("t"))).await.0, 200);
    }

    #[tokio::test]
    async fn records_keep_arrival_order_and_filters_split_them() {
        let f = fake().await;
        let c = reqwest::Client::new();
        c.post(f.ntfy_url("t")).body("1").send().await.unwrap();
        c.post(f.webhook_url("w"))
            .json(&json!(2))
            .send()
            .await
            .unwrap();
        c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID))
            .send()
            .await
            .unwrap();
        c.post(format!("{}/elsewhere", f.url()))
            .send()
            .await
            .unwrap();
        c.post(f.ntfy_url("t")).body("5").send().await.unwrap();
        let log = f.requests();
        let kinds: Vec<Kind> = log.iter().map(|r| r.kind).collect();
        use Kind::*;
        assert_eq!(kinds, [Ntfy, Webhook, Healthchecks, Other, Ntfy]);
        assert_eq!(
            log.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(
            f.ntfy().iter().map(|r| r.body_text()).collect::<Vec<_>>(),
            ["1", "5"]
        );
        assert_eq!((f.webhooks().len(), f.pings().len()), (1, 1));
        assert_eq!(f.rejected()[0].kind, Other);
        assert_eq!(f.rejected()[0].status, Some(404));
        f.clear_log();
        assert!(f.requests().is_empty());
    }

    #[tokio::test]
    async fn wait_for_returns_as_soon_as_requests_arrive() {
        let f = fake().await;
        let urls = [f.ntfy_url("t"), f.webhook_url("w")];
        let sender = tokio::spawn(async move {
            let c = reqwest::Client::new();
            c.post(&urls[0]).body("a").send().await.unwrap();
            c.post(&urls[1]).json(&json!({})).send().await.unwrap();
        });
        let log = f.wait_for(2, 5 * SECOND).await;
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].kind, Kind::Webhook);
        sender.await.unwrap();
        assert_eq!(
            f.wait_for(1, Duration::ZERO).await.len(),
            2,
            "already there"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for 2 requests, got 1")]
    async fn wait_for_panics_with_the_log_on_timeout() {
        let f = fake().await;
        reqwest::Client::new()
            .post(f.ntfy_url("t"))
            .send()
            .await
            .unwrap();
        f.wait_for(2, Duration::from_millis(50)).await;
    }

    #[test]
    fn base64_and_q_decoding() {
        assert_eq!(base64_decode("8J+HqfCfh6o=").unwrap(), "🇩🇪".as_bytes());
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("YQ=").is_none());
        assert_eq!(q_decode("a_b=3Dc").unwrap(), b"a b=c");
        assert!(q_decode("=4").is_none());
        assert_eq!(decode_rfc2047("plain").unwrap(), "plain");
        assert_eq!(decode_rfc2047("=?bad").unwrap(), "=?bad");
        assert_eq!(decode_rfc2047("=?iso-8859-1?q?=E4?=").unwrap(), "ä");
        assert!(is_rfc9218_priority("u=1") && is_rfc9218_priority("u=0,  i"));
        assert!(!is_rfc9218_priority("u=12") && !is_rfc9218_priority("high"));
    }
}
