//! What the fake SoundCloud's hosts answer with, shared by the API, media and web servers:
//! the API's JSON errors and its request prelude (counting, latency, bot protection, scripted
//! faults, the client id), bot protection's HTML or XML 403, and the raw HTTP/1.1 answers of
//! the web host: simple ones, and media bodies with ranges, the bandwidth cap, hangs and the
//! cuts that [`Fault::Truncated`] and [`Fault::Reset`] script.
//!
//! Invariants: it is the bottom of the fake's servers (it imports none of `api`, `media`,
//! `cdn` or `web`), so they share one way of answering without importing each other; every API
//! error has SoundCloud's JSON shape, and bot protection is never a JSON error.

use super::{Endpoint, Fault, Seen, Shared, lock};
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(super) fn error_body(code: u16, msg: &str) -> Value {
    json!({
        "code": code,
        "message": msg,
        "status": format!("{code} - {msg}"),
        "errors": [{"error_message": format!("{code} - {msg}")}],
        "error": null,
    })
}

pub(super) fn not_found() -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, error_body(404, "Not Found"))
}

pub(super) type ApiQuery = Query<HashMap<String, String>>;

/// Counts the request, waits the latency, lets bot protection refuse a non-browser, applies a
/// scripted fault and checks the client id. `Ok(true)` means "answer normally but truncate the
/// body".
pub(super) async fn api_prelude(
    st: &Shared,
    ep: Endpoint,
    req: (&Uri, &HeaderMap),
    q: &HashMap<String, String>,
) -> Result<bool, Response> {
    let (uri, headers) = req;
    let target = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let seen = Seen::from_headers(headers);
    let (latency, fault, protected) = {
        let mut s = lock(st);
        let (latency, fault) = s.record(ep, &target, &seen);
        (latency, fault, s.bot_protection)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if protected && !seen.is_browser() {
        return Err(blocked_response(false));
    }
    let mut truncate = false;
    match fault {
        Some(Fault::Status(code)) => {
            let s = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(json_response(s, &error_body(code, "injected fault"), false));
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &error_body(429, "Too Many Requests"),
                false,
            );
            if let Some(secs) = retry_after_secs {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Err(r);
        }
        Some(Fault::Reset) => return Err(reset_response()),
        Some(Fault::BlockedHtml) => return Err(blocked_response(false)),
        Some(Fault::BlockedXml) => return Err(blocked_response(true)),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncated) => truncate = true,
        None => {}
    }
    let current = lock(st).client_id.clone();
    if q.get("client_id").map(String::as_str) != Some(current.as_str()) {
        return Err(json_response(
            StatusCode::UNAUTHORIZED,
            &error_body(401, "Unauthorized"),
            false,
        ));
    }
    Ok(truncate)
}

pub(super) fn json_response(status: StatusCode, body: &Value, truncate: bool) -> Response {
    let mut bytes = serde_json::to_vec(body).expect("JSON values serialize");
    if truncate {
        bytes.truncate(bytes.len() / 2);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

/// [`Fault::Reset`] on the API host: a 200 that announces more body than it sends. hyper
/// then ends the connection mid-body, which a client sees as a connection cut while reading.
fn reset_response() -> Response {
    let partial = "{\"collection\":[{\"kind\":\"track\",\"id\":";
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        partial,
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(4096u32));
    r
}

/// Bot protection's answer: a 403 that is a page for a browser, not an API error.
pub(super) fn blocked_page(xml: bool) -> (&'static str, &'static str) {
    if xml {
        (
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>\n",
        )
    } else {
        (
            "text/html; charset=utf-8",
            "<html><head><title>soundcloud.com</title><style>#cmsg{animation: A 1.5s;}</style></head><body><p id=\"cmsg\">Please enable JS and disable any ad blocker</p><script data-cfasync=\"false\">var dd={'rt':'c','cid':'AHrlqAAAAAMA','hsh':'0','t':'bv','host':'geo.captcha-delivery.com'}</script><script src=\"https://ct.captcha-delivery.com/c.js\"></script></body></html>\n",
        )
    }
}

pub(super) fn blocked_response(xml: bool) -> Response {
    let (ctype, body) = blocked_page(xml);
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

pub(super) struct WebRequest {
    pub(super) head_only: bool,
    pub(super) path: String,
    pub(super) target: String,
    pub(super) range: Option<(usize, Option<usize>)>,
    pub(super) seen: Seen,
}

pub(super) async fn write_simple(
    sock: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    extra: &str,
    head_only: bool,
) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    if !head_only {
        let _ = sock.write_all(body).await;
    }
    let _ = sock.shutdown().await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What a scripted fault does to a web answer's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// The whole body.
    No,
    /// [`Fault::Truncated`]: half the body, then a clean close.
    Half,
    /// [`Fault::Reset`]: half the body, then a TCP reset.
    Reset,
}

/// How a body is sent: a scripted cut, the bandwidth cap, a hang after the first chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyOpts {
    pub(super) cut: Cut,
    pub(super) bandwidth: Option<u64>,
    pub(super) hang: bool,
}

/// Answers a `GET`/`HEAD` with a body of `size` bytes that `fill(offset, buf)` produces, as a
/// CDN does: `Range` (one `bytes=a-[b]`) gives a 206 with `Content-Range`, a range past the
/// end a 416; the body goes out in chunks, at most `bandwidth` bytes a second, cut or hung as
/// `opts` says. Nothing is materialised, so a large track costs one chunk of memory.
pub(super) async fn write_body(
    sock: &mut TcpStream,
    req: &WebRequest,
    (ctype, size): (&str, usize),
    mut fill: impl FnMut(usize, &mut [u8]),
    opts: BodyOpts,
) {
    let (start, end) = match req.range {
        Some((s, e)) if s < size => (s, e.map(|e| e.min(size - 1)).unwrap_or(size - 1) + 1),
        Some(_) => {
            let extra = format!("Content-Range: bytes */{size}\r\n");
            return write_simple(sock, 416, "text/plain", b"", &extra, req.head_only).await;
        }
        None => (0, size),
    };
    let len = end - start;
    let mut head = String::new();
    if req.range.is_some() {
        head.push_str("HTTP/1.1 206 Partial Content\r\n");
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            end.saturating_sub(1)
        ));
    } else {
        head.push_str("HTTP/1.1 200 OK\r\n");
    }
    head.push_str(&format!(
        "Content-Type: {ctype}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
    ));
    if sock.write_all(head.as_bytes()).await.is_err() || req.head_only {
        let _ = sock.shutdown().await;
        return;
    }
    let stop = if opts.cut == Cut::No {
        end
    } else {
        start + len / 2
    };
    let chunk = match opts.bandwidth {
        Some(bw) => (bw as usize / 20).clamp(512, 16 * 1024),
        None => 16 * 1024,
    };
    let mut pos = start;
    let mut buf = vec![0u8; chunk];
    while pos < stop {
        let n = chunk.min(stop - pos);
        fill(pos, &mut buf[..n]);
        if sock.write_all(&buf[..n]).await.is_err() {
            return;
        }
        pos += n;
        if opts.hang {
            // Headers and a first chunk went out; the rest never comes.
            std::future::pending::<()>().await;
        }
        if let Some(bw) = opts.bandwidth {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bw as f64)).await;
        }
    }
    finish(sock, opts.cut).await;
}

/// Ends an answer: a clean close, or for [`Cut::Reset`] a TCP reset (`SO_LINGER` 0, then the
/// socket is dropped without a shutdown).
pub(super) async fn finish(sock: &mut TcpStream, cut: Cut) {
    if cut == Cut::Reset {
        // A reset makes the peer's kernel drop what it has not read yet; a moment first lets
        // a reading client take the headers and the partial body, so it sees a cut download
        // rather than a refused connection.
        let _ = sock.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = sock.set_zero_linger();
        return;
    }
    let _ = sock.shutdown().await;
}
