//! Media: what a client gets for a track's sound. The API's `/media/soundcloud:tracks:{id}/…`
//! answers a transcoding's stream URL (HLS or progressive), and the web host serves each
//! track's permalink as `audio/mpeg` bytes, with byte ranges, a bandwidth cap, truncation and
//! hangs, which is what the real yt-dlp downloads from the fake.
//!
//! Invariants: the audio of a track is a pure function of its id and size (MPEG frame headers
//! every 417 bytes, the id in the first frame), so a test can compare files byte for byte; a
//! DRM track (reference §9) has no clear stream: its clear transcodings and its audio are 404,
//! its encrypted transcodings answer; every stream and audio request counts for its track.

use super::catalog::{Policy, fill_audio};
use super::http::{ApiQuery, WebRequest, api_prelude, json_response, not_found, write_simple};
use super::{Endpoint, Shared, lock};
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A transcoding's URL answers with where its stream is (as SoundCloud's do), for clients that
/// resolve every format while listing. Nothing is served at the stream URL itself: playlistd
/// downloads from the permalink. A DRM track's clear transcodings answer 404 and only its
/// encrypted ones answer (reference §9); every request is counted for its track.
pub(super) async fn api_media(
    State(st): State<Shared>,
    AxPath(rest): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let id = rest
        .strip_prefix("soundcloud:tracks:")
        .and_then(|r| r.split('/').next())
        .and_then(|id| id.parse::<u64>().ok());
    if let Some(id) = id {
        *lock(&st).media_counts.entry(id).or_default() += 1;
    }
    let truncate = match api_prelude(&st, Endpoint::Media, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = lock(&st);
    let protocol = rest.rsplit('/').next().unwrap_or("");
    let encrypted = protocol.starts_with("ctr-") || protocol.starts_with("cbc-");
    let track = id
        .and_then(|id| s.tracks.get(&id))
        .filter(|t| !t.deleted && (encrypted || !(t.drm_only || t.drm)));
    let (status, body) = match track {
        Some(t) => {
            let ext = if rest.ends_with("hls") { "m3u8" } else { "mp3" };
            let url = format!("https://cf-media.sndcdn.com/{}.128.{ext}?fake=1", t.id);
            (StatusCode::OK, json!({ "url": url }))
        }
        None => not_found(),
    };
    json_response(status, &body, truncate)
}

pub(super) async fn serve_audio(
    st: &Shared,
    sock: &mut TcpStream,
    req: &WebRequest,
    truncate: bool,
) {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let found = {
        let s = lock(st);
        let key = (segs[0].to_string(), segs[1].to_string());
        s.paths
            .get(&key)
            .and_then(|id| s.tracks.get(id))
            .cloned()
            .map(|t| (t, s.bandwidth))
    };
    let Some((track, bandwidth)) = found else {
        return write_simple(
            sock,
            404,
            "text/html",
            b"<h1>Not Found</h1>",
            "",
            req.head_only,
        )
        .await;
    };
    // A DRM track has no clear stream to serve (reference §9): like its transcodings, 404.
    let no_clear_stream = track.drm || track.drm_only;
    if track.deleted || no_clear_stream || track.secret_token().as_deref() != segs.get(2).copied() {
        return write_simple(
            sock,
            404,
            "text/html",
            b"<h1>Not Found</h1>",
            "",
            req.head_only,
        )
        .await;
    }
    if track.policy == Policy::Block {
        return write_simple(
            sock,
            403,
            "text/html",
            b"<h1>Not available in your country</h1>",
            "",
            req.head_only,
        )
        .await;
    }
    let size = track.audio_size;
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
        "Content-Type: audio/mpeg\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
    ));
    if sock.write_all(head.as_bytes()).await.is_err() || req.head_only {
        let _ = sock.shutdown().await;
        return;
    }
    let stop = if truncate { start + len / 2 } else { end };
    let chunk = match bandwidth {
        Some(bw) => (bw as usize / 20).clamp(512, 16 * 1024),
        None => 16 * 1024,
    };
    let mut pos = start;
    let mut buf = vec![0u8; chunk];
    while pos < stop {
        let n = chunk.min(stop - pos);
        fill_audio(track.id, pos, &mut buf[..n]);
        if sock.write_all(&buf[..n]).await.is_err() {
            return;
        }
        pos += n;
        if track.hang {
            // Headers and a first chunk went out; the rest never comes.
            std::future::pending::<()>().await;
        }
        if let Some(bw) = bandwidth {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bw as f64)).await;
        }
    }
    let _ = sock.shutdown().await;
}
