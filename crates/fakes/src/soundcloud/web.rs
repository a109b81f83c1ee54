//! The web host (`soundcloud.com`): the root page whose LAST `<script src>` asset holds the
//! client id (the others are decoys), `on.soundcloud.com` short links (a 302 to the set URL
//! with the app's share-tracking query), bot protection's 403 pages, and the small hand-written
//! HTTP/1.1 server that serves them, the permalink's audio (see `media`) and, on the same
//! listener, the media CDN's `/cdn/…` and the images host's `/images/…` (see `cdn`).
//!
//! Invariants: each connection serves one request and closes (`Connection: close`); bot
//! protection refuses a non-browser `User-Agent` with an HTML 403 on every path but the media
//! (the permalink's audio, `/cdn/`, `/images/`: the real media hosts are not behind it); `cdn`
//! and `images` are never taken for a user's permalink; a client id is a function of the seed
//! and the rotation count, so a rotation is seen by every later page load and by nothing before
//! it.

use super::cdn::{cdn_endpoint, serve_artwork, serve_cdn};
use super::http::{Cut, WebRequest, blocked_page, finish, write_simple};
use super::media::serve_audio;
use super::{Endpoint, Fault, Seen, Shared, lock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub(super) fn make_client_id(seed: u64, rotation: u64) -> String {
    let mut rng =
        fastrand::Rng::with_seed(seed.wrapping_add(rotation.wrapping_mul(0x1000_0000_01b3)));
    (0..32).map(|_| rng.alphanumeric()).collect()
}

const ASSETS: [&str; 3] = ["0-3f2a1c.js", "49-8b7e0d.js", "app-5c9a77.js"];

pub(super) async fn web_accept(listener: TcpListener, st: Shared) {
    // Connections live in this set, so aborting the accept task also ends hanging responses.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((sock, _)) = accepted {
                    conns.spawn(web_conn(st.clone(), sock));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn read_request(sock: &mut TcpStream) -> Option<WebRequest> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let mut range = None;
    let mut seen = Seen::default();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("range") {
            range = parse_range(value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            seen.user_agent = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("accept-language") {
            seen.accept_language = Some(value.to_string());
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Some(WebRequest {
        head_only: method.eq_ignore_ascii_case("HEAD"),
        path,
        target,
        range,
        seen,
    })
}

fn parse_range(v: &str) -> Option<(usize, Option<usize>)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((start, end))
}

fn classify(path: &str) -> Endpoint {
    // The CDN and the images host first: `/images/x` would look like a permalink.
    if let Some(ep) = cdn_endpoint(path) {
        return ep;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first().is_some_and(|s| *s == "cdn" || *s == "images") {
        return Endpoint::Other;
    }
    match segs.as_slice() {
        [] => Endpoint::WebRoot,
        ["assets", _] => Endpoint::Asset,
        ["on", _] => Endpoint::ShortLink,
        [u, _] if *u != "assets" => Endpoint::Audio,
        [_, s, t] if *s != "sets" && t.starts_with("s-") => Endpoint::Audio,
        _ => Endpoint::Other,
    }
}

/// Like [`write_simple`], but announces the full length and sends only half: a cut connection.
async fn write_not_found(sock: &mut TcpStream, head_only: bool) {
    write_simple(sock, 404, "text/html", b"<h1>Not Found</h1>", "", head_only).await
}

async fn write_truncated(sock: &mut TcpStream, ctype: &str, body: &[u8], cut: Cut) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(&body[..body.len() / 2]).await;
    finish(sock, cut).await;
}

/// A page or asset: whole, or cut as a scripted fault says.
async fn write_page(sock: &mut TcpStream, req: &WebRequest, ctype: &str, body: &[u8], cut: Cut) {
    if cut == Cut::No {
        write_simple(sock, 200, ctype, body, "", req.head_only).await;
    } else {
        write_truncated(sock, ctype, body, cut).await;
    }
}

/// Media the web listener serves as the CDN would: not bot-protected, as the CDN hosts are not.
fn is_media(ep: Endpoint) -> bool {
    use Endpoint::*;
    matches!(
        ep,
        Audio | CdnPlaylist | CdnInit | CdnSegment | CdnProgressive | Artwork
    )
}

/// Counts a request (and, for audio and the CDN, its track), and takes its fault: one scripted
/// for its segment first, then its endpoint's.
fn count_web(st: &Shared, req: &WebRequest, ep: Endpoint) -> (Duration, Option<Fault>, bool) {
    let mut s = lock(st);
    let segment_fault = if is_media(ep) && ep != Endpoint::Audio {
        s.count_cdn(ep, &req.path)
    } else {
        None
    };
    let (latency, fault) = match segment_fault {
        Some(f) => {
            s.log_request(ep, &req.target, &req.seen);
            (s.latency, Some(f))
        }
        None => s.record(ep, &req.target, &req.seen),
    };
    if ep == Endpoint::Audio
        && let Some(id) = s.track_at(&req.path)
    {
        *s.media_counts.entry(id).or_default() += 1;
    }
    (latency, fault, s.bot_protection && !is_media(ep))
}

/// The web host's counterpart of [`api_prelude`]: counts the request (see [`count_web`]),
/// waits the latency, lets bot protection refuse a non-browser (not on audio and the CDN) and
/// applies a scripted fault. `None` means the answer has been written; `Some(cut)` that the
/// caller answers, cutting its body as the fault says.
async fn web_prelude(
    st: &Shared,
    sock: &mut TcpStream,
    req: &WebRequest,
    ep: Endpoint,
) -> Option<Cut> {
    let (latency, fault, protected) = count_web(st, req, ep);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let blocked = |xml| {
        let (ctype, body) = blocked_page(xml);
        (403, ctype, body.as_bytes(), String::new())
    };
    let (status, ctype, body, extra) = match fault {
        _ if protected && !req.seen.is_browser() => blocked(false),
        Some(Fault::BlockedHtml) => blocked(false),
        Some(Fault::BlockedXml) => blocked(true),
        Some(Fault::Status(code)) => (code, "text/plain", &b"injected fault"[..], String::new()),
        Some(Fault::TooManyRequests { retry_after_secs }) => (
            429,
            "text/plain",
            &b"Too Many Requests"[..],
            retry_after_secs
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default(),
        ),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            return Some(Cut::No);
        }
        Some(Fault::Truncated) => return Some(Cut::Half),
        Some(Fault::Reset) => return Some(Cut::Reset),
        None => return Some(Cut::No),
    };
    write_simple(sock, status, ctype, body, &extra, req.head_only).await;
    None
}

async fn web_conn(st: Shared, mut sock: TcpStream) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let ep = classify(&req.path);
    let Some(cut) = web_prelude(&st, &mut sock, &req, ep).await else {
        return;
    };
    let sock = &mut sock;
    match ep {
        Endpoint::WebRoot => {
            let html = root_html(&lock(&st).web);
            write_page(sock, &req, "text/html; charset=utf-8", html.as_bytes(), cut).await;
        }
        Endpoint::Asset => {
            let name = req.path.rsplit('/').next().unwrap_or("");
            let js = asset_js(name, &lock(&st).client_id);
            match js {
                Some(js) => {
                    write_page(sock, &req, "application/javascript", js.as_bytes(), cut).await
                }
                None => {
                    write_simple(sock, 404, "text/plain", b"not found", "", req.head_only).await
                }
            }
        }
        Endpoint::Audio => serve_audio(&st, sock, &req, cut).await,
        Endpoint::CdnPlaylist
        | Endpoint::CdnInit
        | Endpoint::CdnSegment
        | Endpoint::CdnProgressive => serve_cdn(&st, sock, &req, cut).await,
        Endpoint::Artwork => serve_artwork(&st, sock, &req, cut).await,
        Endpoint::ShortLink => {
            let code = req.path.rsplit('/').next().unwrap_or("");
            let target = lock(&st).short_links.get(code).cloned();
            match target {
                Some(to) => {
                    let location = format!("Location: {to}\r\n");
                    write_simple(sock, 302, "text/html", b"", &location, req.head_only).await
                }
                None => write_not_found(sock, req.head_only).await,
            }
        }
        _ => write_not_found(sock, req.head_only).await,
    }
}

fn root_html(web: &str) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SoundCloud - Hear the world's sounds</title>\n",
    );
    html.push_str("<script>window.__sc_version=\"1714000000\"</script>\n");
    for a in ASSETS {
        html.push_str(&format!(
            "<script crossorigin src=\"{web}/assets/{a}\"></script>\n"
        ));
    }
    html.push_str("</head><body><div id=\"app\"></div></body></html>\n");
    html
}

fn asset_js(name: &str, client_id: &str) -> Option<String> {
    let last = ASSETS[ASSETS.len() - 1];
    if name == last {
        Some(format!(
            "(self.webpackChunk_N_E=self.webpackChunk_N_E||[]).push([[9],{{77:function(e,t,n){{\"use strict\";var r={{env:\"production\",client_id:\"{client_id}\",api_host:\"api-v2\"}};e.exports=r}}}}]);\n"
        ))
    } else if ASSETS.contains(&name) {
        // Decoys that a sloppier regex would take for the id.
        Some(
            "(self.webpackChunk_N_E=self.webpackChunk_N_E||[]).push([[0],{1:function(e,t){var o={client_id:t.clientId,legacy_client_id:\"abc123\"};e.exports=o}}]);\n"
                .to_string(),
        )
    } else {
        None
    }
}
