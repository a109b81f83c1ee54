//! `/healthz` and `/metrics` on `daemon.listen`: the address a supervisor or a Prometheus
//! scraper asks whether the daemon is well and what it has done. Off unless `daemon.listen` is
//! set; loopback is the default address, since nothing here needs to be seen from elsewhere.
//!
//! - `GET /healthz`: 200 while the scheduler loop beats and no alert is open, else 503; the JSON
//!   body says which.
//! - `GET /metrics`: the [`Metrics`] in the Prometheus text format (0.0.4).
//! - `HEAD` of either; any other path is 404, any other method on these two 405.
//!
//! Invariants:
//! - Answering never touches the network or the state database and never waits on a sync: it
//!   reads the [`Heartbeat`]'s atomic, the alerts' mutex of its own (held for a clone) and the
//!   metrics, which promise the same.
//! - A slow or malicious client cannot hold up the daemon: each connection runs on its own task;
//!   hyper closes one whose request head (or next request, when kept alive) has not arrived
//!   within [`HEADER_READ_TIMEOUT`]; heads are capped in size; and at most [`MAX_CONNECTIONS`]
//!   are open at once, further ones waiting in the kernel's backlog.
//! - On cancel the listener closes at once; open connections finish the response under way and
//!   close, and whatever has not finished within [`SHUTDOWN_GRACE`] is dropped, so shutdown is
//!   never delayed by more than that.

use super::metrics::Metrics;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LOG_TARGET;

/// How long a client may take to send a request head, or the next one on a kept-alive
/// connection. A scraper sends its head in one packet; a few seconds spares slow machines.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for open connections once the listener is closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Connections served at once: a supervisor and a scraper need a few; the cap bounds what a
/// flood of idle connections can take (each also ends at [`HEADER_READ_TIMEOUT`]).
pub const MAX_CONNECTIONS: usize = 32;
/// Hyper's smallest read buffer; a request head larger than this is refused. Ours are tiny.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scheduler loop's heartbeat: the loop beats at least every `interval`; it is alive while
/// the last beat is younger than 3 × interval.
///
/// Measured on tokio's clock, the one the loop's timers run on, so a test that pauses time sees
/// the two agree.
#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    origin: Instant,
    /// Nanoseconds from `origin` to the last beat.
    last_beat: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat whose first beat is now.
    pub fn new(interval: Duration) -> Heartbeat {
        Heartbeat {
            interval,
            origin: Instant::now(),
            last_beat: AtomicU64::new(0),
        }
    }

    /// A heartbeat whose last beat was `ago` before now (or as long ago as the clock allows).
    #[cfg(test)]
    fn beaten_ago(interval: Duration, ago: Duration) -> Heartbeat {
        let now = Instant::now();
        Heartbeat {
            interval,
            origin: now.checked_sub(ago).unwrap_or(now),
            last_beat: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let since_origin = nanos(self.origin.elapsed());
        // `fetch_max`: a beat that lost a race with a later one does not move the beat back.
        self.last_beat.fetch_max(since_origin, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_nanos(self.last_beat.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    pub fn alive(&self) -> bool {
        self.age() < self.interval.saturating_mul(3)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

fn nanos(d: Duration) -> u64 {
    // Past u64::MAX nanoseconds (584 years) the heartbeat saturates instead of wrapping.
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An alert a person must act on, as /healthz shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpenAlert {
    pub kind: String,
    pub detail: String,
    pub since: DateTime<Utc>,
}

/// What the listener reads; the daemon keeps it up to date.
pub struct Shared {
    pub heartbeat: Heartbeat,
    pub metrics: Arc<Metrics>,
    alerts: Mutex<Vec<OpenAlert>>,
}

impl Shared {
    pub fn new(heartbeat: Heartbeat, metrics: Arc<Metrics>) -> Shared {
        Shared {
            heartbeat,
            metrics,
            alerts: Mutex::new(Vec::new()),
        }
    }

    /// Replaces the open alerts with `alerts` (the daemon passes all that are open).
    pub fn set_alerts(&self, alerts: Vec<OpenAlert>) {
        *self.alerts.lock().unwrap_or_else(PoisonError::into_inner) = alerts;
    }

    pub fn alerts(&self) -> Vec<OpenAlert> {
        self.alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Binds `addr` (a one-line error that names the address and the fix: "cannot listen on
/// 127.0.0.1:9817 for daemon.listen: address in use (fix: choose another port in
/// daemon.listen, or stop what uses it)").
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        let (what, fix) = match e.kind() {
            std::io::ErrorKind::AddrInUse => (
                "address in use".to_owned(),
                "choose another port in daemon.listen, or stop what uses it",
            ),
            std::io::ErrorKind::AddrNotAvailable => (
                "no such address on this machine".to_owned(),
                "use 127.0.0.1 or an address of this machine in daemon.listen",
            ),
            std::io::ErrorKind::PermissionDenied => (
                "permission denied".to_owned(),
                "choose a port above 1023 in daemon.listen",
            ),
            _ => (e.to_string(), "check daemon.listen"),
        };
        format!("cannot listen on {addr} for daemon.listen: {what} (fix: {fix})")
    })
}

/// Serves until `cancel` fires; each connection on its own task.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    serve_with(listener, shared, cancel, Limits::DAEMON).await;
}

/// The time and room one client may take; tests shorten them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read: Duration,
    grace: Duration,
    connections: usize,
}

impl Limits {
    const DAEMON: Limits = Limits {
        header_read: HEADER_READ_TIMEOUT,
        grace: SHUTDOWN_GRACE,
        connections: MAX_CONNECTIONS,
    };
}

async fn serve_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    limits: Limits,
) {
    let room = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    while let Some((stream, permit)) = accept(&listener, &room, &cancel).await {
        let (shared, cancel) = (Arc::clone(&shared), cancel.clone());
        connections.spawn(connection(stream, shared, cancel, limits, permit));
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        let open = connections.len();
        tracing::debug!(target: LOG_TARGET, open, "daemon.listen: dropping open connections");
        connections.shutdown().await;
    }
}

/// The next connection once there is room for it; `None` once `cancel` fires.
async fn accept(
    listener: &TcpListener,
    room: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => return None,
            permit = Arc::clone(room).acquire_owned() => permit.ok()?,
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => return Some((stream, permit)),
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, "daemon.listen: cannot accept: {e}");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Serves one connection until the client closes it, it times out, or `cancel` fires (then the
/// response under way is finished and the connection closed).
async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, Infallible>(respond(&shared, &req)))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        // Clients that time out or hang up are theirs to worry about, not the log's.
        tracing::debug!(target: LOG_TARGET, "daemon.listen: connection ended: {e}");
    }
}

/// The paths served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Metrics,
}

fn respond<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    let route = match req.uri().path() {
        "/healthz" => Route::Health,
        "/metrics" => Route::Metrics,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        let allow = HeaderValue::from_static("GET, HEAD");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    match route {
        Route::Health => health(shared),
        Route::Metrics => {
            let body = shared.metrics.render(Utc::now());
            with_body(StatusCode::OK, METRICS_CONTENT_TYPE, body.into())
        }
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Unhealthy,
}

#[derive(Serialize)]
struct HealthBody {
    status: Status,
    scheduler: SchedulerBody,
    alerts: Vec<OpenAlert>,
    version: &'static str,
}

#[derive(Serialize)]
struct SchedulerBody {
    alive: bool,
    last_beat_secs_ago: f64,
}

fn health(shared: &Shared) -> Response<Full<Bytes>> {
    let alive = shared.heartbeat.alive();
    let alerts = shared.alerts();
    let (code, status) = if alive && alerts.is_empty() {
        (StatusCode::OK, Status::Ok)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Status::Unhealthy)
    };
    let body = HealthBody {
        status,
        scheduler: SchedulerBody {
            alive,
            last_beat_secs_ago: shared.heartbeat.age().as_secs_f64(),
        },
        alerts,
        version: env!("CARGO_PKG_VERSION"),
    };
    match serde_json::to_vec(&body) {
        Ok(json) => with_body(code, "application/json", json.into()),
        // Not expected with these types; a supervisor still gets a failing status.
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_body(
        code,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn with_body(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Health is a live reading: no cache between the daemon and its watcher may keep one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    /// Far past anything a passing test waits; a hung test fails instead of hanging CI.
    const TEST_DEADLINE: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        shared: Arc<Shared>,
        cancel: CancellationToken,
        task: JoinHandle<()>,
    }

    async fn start_with(heartbeat: Heartbeat, limits: Limits) -> Server {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared::new(heartbeat, Arc::new(Metrics::new())));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            Arc::clone(&shared),
            cancel.clone(),
            limits,
        ));
        Server {
            addr,
            shared,
            cancel,
            task,
        }
    }

    async fn start() -> Server {
        start_with(Heartbeat::new(Duration::from_secs(60)), Limits::DAEMON).await
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: String,
    }

    /// One HTTP/1.1 request on its own connection, read until the server closes it.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(head.as_bytes()).await.expect("send");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("receive");
            raw
        };
        let raw = tokio::time::timeout(TEST_DEADLINE, exchange)
            .await
            .expect("an answer in time");
        parse_reply(&String::from_utf8(raw).expect("a UTF-8 reply"))
    }

    fn parse_reply(raw: &str) -> Reply {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        let headers = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn json(reply: &Reply) -> serde_json::Value {
        assert_eq!(reply.headers["content-type"], "application/json");
        serde_json::from_str(&reply.body).expect("a JSON body")
    }

    fn alert() -> OpenAlert {
        OpenAlert {
            kind: "notion_token".to_owned(),
            detail: "the Notion token was refused".to_owned(),
            since: DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time"),
        }
    }

    #[tokio::test]
    async fn healthz_is_200_with_json_while_alive() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = json(&reply);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["scheduler"]["alive"], true);
        assert!(body["scheduler"]["last_beat_secs_ago"].as_f64().is_some());
        assert_eq!(body["alerts"], serde_json::json!([]));
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test]
    async fn an_open_alert_makes_healthz_503_until_cleared() {
        let server = start().await;
        server.shared.set_alerts(vec![alert()]);
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 503);
        let body = json(&reply);
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["scheduler"]["alive"], true);
        assert_eq!(body["alerts"][0]["kind"], "notion_token");
        assert_eq!(body["alerts"][0]["since"], "2023-11-14T22:13:20Z");
        server.shared.set_alerts(Vec::new());
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
    }

    #[tokio::test]
    async fn a_stale_heartbeat_makes_healthz_503() {
        let interval = Duration::from_millis(10);
        let stale = Heartbeat::beaten_ago(interval, Duration::from_secs(1));
        let server = start_with(stale, Limits::DAEMON).await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 503);
        let body = json(&reply);
        assert_eq!(body["scheduler"]["alive"], false);
        assert!(body["scheduler"]["last_beat_secs_ago"].as_f64() >= Some(1.0));
    }

    #[test]
    fn heartbeat_is_alive_for_three_intervals() {
        let interval = Duration::from_secs(10);
        assert!(Heartbeat::beaten_ago(interval, Duration::from_secs(29)).alive());
        assert!(!Heartbeat::beaten_ago(interval, Duration::from_secs(31)).alive());
        let heartbeat = Heartbeat::beaten_ago(interval, Duration::from_secs(31));
        heartbeat.beat();
        assert!(heartbeat.alive());
        assert!(heartbeat.age() < Duration::from_secs(1));
        assert_eq!(heartbeat.interval(), interval);
    }

    #[tokio::test]
    async fn metrics_parse_as_prometheus_text() {
        let server = start().await;
        server.shared.metrics.seed_playlist("house", None);
        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["content-type"], METRICS_CONTENT_TYPE);
        let lines = reply.body.lines().map(|line| Ok(line.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("parseable metrics");
        let up = scrape.samples.iter().find(|s| s.metric == "playlistd_up");
        assert!(matches!(
            up.map(|s| &s.value),
            Some(prometheus_parse::Value::Gauge(1.0))
        ));
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.labels.get("playlist") == Some("house"))
        );
    }

    #[tokio::test]
    async fn head_answers_without_a_body() {
        let server = start().await;
        for path in ["/healthz", "/metrics"] {
            let reply = request(server.addr, "HEAD", path).await;
            assert_eq!(reply.status, 200, "{path}");
            assert!(reply.body.is_empty(), "{path}: {reply:?}");
            assert!(reply.headers.contains_key("content-type"), "{path}");
        }
    }

    #[tokio::test]
    async fn an_unknown_path_is_404() {
        let server = start().await;
        for path in ["/", "/nope", "/healthz/", "/metrics/x", "/HEALTHZ"] {
            assert_eq!(
                request(server.addr, "GET", path).await.status,
                404,
                "{path}"
            );
        }
        // A query string does not change the path.
        assert_eq!(
            request(server.addr, "GET", "/healthz?x=1").await.status,
            200
        );
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let server = start().await;
        for method in ["POST", "PUT", "DELETE"] {
            let reply = request(server.addr, method, "/healthz").await;
            assert_eq!(reply.status, 405, "{method}");
            assert_eq!(reply.headers["allow"], "GET, HEAD");
        }
    }

    #[tokio::test]
    async fn bind_names_the_address_and_the_fix_when_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = taken.local_addr().expect("its address");
        let error = bind(addr).await.expect_err("the port is taken");
        assert_eq!(
            error,
            format!(
                "cannot listen on {addr} for daemon.listen: address in use \
                 (fix: choose another port in daemon.listen, or stop what uses it)"
            )
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_without_holding_up_others() {
        let limits = Limits {
            header_read: Duration::from_millis(100),
            ..Limits::DAEMON
        };
        let server = start_with(Heartbeat::new(Duration::from_secs(60)), limits).await;
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("send");
        // Others are answered meanwhile.
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        // The slow one is closed by the header timeout (hyper may say 408 first).
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TEST_DEADLINE, slow.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the silent connection is still open");
    }

    #[tokio::test]
    async fn serve_stops_on_cancel_and_closes_the_port() {
        let limits = Limits {
            grace: Duration::from_millis(100),
            ..Limits::DAEMON
        };
        let server = start_with(Heartbeat::new(Duration::from_secs(60)), limits).await;
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        // One connection idle and one halfway through its head: neither delays shutdown.
        let _idle = TcpStream::connect(server.addr).await.expect("connect");
        let mut half = TcpStream::connect(server.addr).await.expect("connect");
        half.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("send");
        server.cancel.cancel();
        tokio::time::timeout(TEST_DEADLINE, server.task)
            .await
            .expect("serve returns after cancel")
            .expect("serve did not panic");
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connection_closes_on_cancel() {
        let server = start().await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let head = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.expect("a reply");
        assert_eq!(&first, b"HTTP/1.1 200");
        server.cancel.cancel();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TEST_DEADLINE, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection outlived the cancel");
        tokio::time::timeout(TEST_DEADLINE, server.task)
            .await
            .expect("serve returns after cancel")
            .expect("serve did not panic");
    }
}
