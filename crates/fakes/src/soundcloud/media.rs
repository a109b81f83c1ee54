//! Media: what a client gets for a track's sound. A track lists transcodings (by its
//! [`Layout`], or the DRM lists of reference §9); the API's
//! `/media/soundcloud:tracks:{id}/{uuid}/{stream|preview}/{protocol}` answers one's stream URL,
//! a URL signed for the fake's CDN (see `cdn`); and the web host serves each track's permalink
//! as `audio/mpeg` bytes, with byte ranges, a bandwidth cap, truncation and hangs, which is
//! what the real yt-dlp downloads from the fake.
//!
//! Invariants: the permalink's audio of a track is a pure function of its id and size (MPEG
//! frame headers every 417 bytes, the id in the first frame), so a test can compare files byte
//! for byte; a DRM track (reference §9) has no clear stream: its clear transcodings and its
//! audio are 404, its encrypted transcodings answer; every stream and audio request counts for
//! its track (`media_requests`), and stream URL calls also on their own
//! (`stream_url_requests`).
//!
//! Decisions where the reference says nothing: a geo-blocked track's (`Policy::Block`) stream
//! URL answers 404 JSON, so yt-dlp finds no format and reports the geo restriction as §4 says
//! (a 401/403 would make it re-scrape the client id); the `hq` transcoding answers a JSON 403
//! unless the request carries an `Authorization` header (a login); encrypted transcodings
//! answer a URL on the real CDN host that the fake does not serve (nothing may fetch it).

use super::catalog::{Layout, Policy, fill_audio};
use super::http::{
    ApiQuery, BodyOpts, Cut, WebRequest, api_prelude, error_body, json_response, not_found,
    write_body, write_simple,
};
use super::{Endpoint, FakeTrack, Shared, lock};
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::json;
use tokio::net::TcpStream;

/// One transcoding a track lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transcoding {
    /// The path segment after the track URN; an HLS and a progressive transcoding of one
    /// preset share it, as on the real service.
    pub(super) uuid: &'static str,
    pub(super) protocol: &'static str,
    pub(super) preset: &'static str,
    pub(super) mime: &'static str,
    pub(super) quality: &'static str,
}

const AAC_MIME: &str = "audio/mp4; codecs=\"mp4a.40.2\"";
const MP3_MIME: &str = "audio/mpeg";
const OPUS_MIME: &str = "audio/ogg; codecs=\"opus\"";

const fn tc(
    uuid: &'static str,
    protocol: &'static str,
    preset: &'static str,
    mime: &'static str,
    quality: &'static str,
) -> Transcoding {
    Transcoding {
        uuid,
        protocol,
        preset,
        mime,
        quality,
    }
}

/// The AAC transcodings of [`Layout::Aac`]. The Go+ one and the broken `abr_sq` come first,
/// so that a client taking the first HLS AAC it sees gets caught. `a1` is the uuid the playing
/// one has always had here (main-crate tests name it).
const AAC_SET: [Transcoding; 3] = [
    tc("h1", "hls", "aac_256k", AAC_MIME, "hq"),
    tc("r1", "hls", "abr_sq", AAC_MIME, "sq"),
    tc("a1", "hls", "aac_160k", AAC_MIME, "sq"),
];
const MP3_1_0: [Transcoding; 2] = [
    tc("m1", "progressive", "mp3_1_0", MP3_MIME, "sq"),
    tc("m1", "hls", "mp3_1_0", MP3_MIME, "sq"),
];
const MP3_0_0: [Transcoding; 2] = [
    tc("a1", "hls", "mp3_0_0", MP3_MIME, "sq"),
    tc("a1", "progressive", "mp3_0_0", MP3_MIME, "sq"),
];
const OPUS: Transcoding = tc("b2", "hls", "opus_0_0", OPUS_MIME, "sq");
const ENCRYPTED: [Transcoding; 2] = [
    tc("c1", "ctr-encrypted-hls", "aac_160k", AAC_MIME, "sq"),
    tc("c2", "cbc-encrypted-hls", "aac_160k", AAC_MIME, "sq"),
];
/// A DRM label track's clear ones, listed first as SoundCloud lists them.
const DRM_CLEAR: [Transcoding; 2] = [
    tc("d1", "hls", "aac_160k", AAC_MIME, "sq"),
    tc("d2", "progressive", "mp3_1_0", MP3_MIME, "sq"),
];

/// What a track lists under `media.transcodings`, in order.
pub(super) fn transcodings(t: &FakeTrack) -> Vec<Transcoding> {
    if t.drm_only {
        return ENCRYPTED.to_vec();
    }
    if t.drm || t.encrypted_too {
        return [DRM_CLEAR, ENCRYPTED].concat();
    }
    match t.layout {
        Layout::Aac => AAC_SET.to_vec(),
        Layout::AacAndMp3 => [&AAC_SET[..], &MP3_1_0[..]].concat(),
        Layout::Mp3Only => MP3_0_0.to_vec(),
        Layout::OpusOnly => vec![OPUS],
    }
}

fn is_encrypted(protocol: &str) -> bool {
    protocol.starts_with("ctr-") || protocol.starts_with("cbc-")
}

/// `soundcloud:tracks:{id}/{uuid}/{stream|preview}/{protocol}` -> `(id, uuid, protocol)`.
fn parse_media_path(rest: &str) -> Option<(u64, &str, &str)> {
    let rest = rest.strip_prefix("soundcloud:tracks:")?;
    let mut parts = rest.split('/');
    let id = parts.next()?.parse().ok()?;
    let uuid = parts.next()?;
    let _kind = parts.next()?;
    let protocol = parts.next()?;
    Some((id, uuid, protocol))
}

/// A transcoding's URL answers `{"url": <signed CDN URL>}` (see the module comment for the
/// refusals). Counted for its track, then passes the API prelude and the stream-URL limit.
pub(super) async fn api_media(
    State(st): State<Shared>,
    AxPath(rest): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let parsed = parse_media_path(&rest);
    if let Some((id, _, _)) = parsed {
        let mut s = lock(&st);
        *s.media_counts.entry(id).or_default() += 1;
        *s.cdn.stream_urls.entry(id).or_default() += 1;
    }
    let truncate = match api_prelude(&st, Endpoint::Media, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut s = lock(&st);
    if !s.cdn.admit_stream_url() {
        return json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &error_body(429, "Too Many Requests"),
            false,
        );
    }
    let logged_in = headers.contains_key(header::AUTHORIZATION);
    let found = parsed.and_then(|(id, uuid, protocol)| {
        let t = s.tracks.get(&id)?;
        let tc = transcodings(t)
            .into_iter()
            .find(|tc| tc.uuid == uuid && tc.protocol == protocol)?;
        let token_ok = t.secret_token().as_deref() == q.get("secret_token").map(String::as_str);
        let clear_gone = t.drm || t.drm_only || t.policy == Policy::Block;
        let playable = token_ok && !t.deleted && (is_encrypted(protocol) || !clear_gone);
        playable.then(|| (t.clone(), tc))
    });
    let (status, body) = match found {
        None => not_found(),
        Some((_, tc)) if tc.quality == "hq" && !logged_in => (
            StatusCode::FORBIDDEN,
            error_body(
                403,
                "Forbidden: a Go+ subscription is needed for this stream",
            ),
        ),
        Some((t, tc)) if is_encrypted(tc.protocol) => {
            let url = format!("https://cf-media.sndcdn.com/{}.128.m3u8?fake=1", t.id);
            (StatusCode::OK, json!({ "url": url }))
        }
        Some((t, tc)) => {
            let snip = t.policy == Policy::Snip;
            let duration = if snip {
                30_000
            } else {
                t.stream_ms.unwrap_or(t.duration_ms)
            };
            let url = s.sign(t.id, tc.preset, tc.protocol == "hls", duration);
            (StatusCode::OK, json!({ "url": url }))
        }
    };
    json_response(status, &body, truncate)
}

async fn not_found_page(sock: &mut TcpStream, head_only: bool) {
    write_simple(sock, 404, "text/html", b"<h1>Not Found</h1>", "", head_only).await;
}

/// The permalink's audio: the synthetic MP3 of `audio_size` bytes (what yt-dlp downloads).
pub(super) async fn serve_audio(st: &Shared, sock: &mut TcpStream, req: &WebRequest, cut: Cut) {
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
        return not_found_page(sock, req.head_only).await;
    };
    // A DRM track has no clear stream to serve (reference §9): like its transcodings, 404.
    let no_clear_stream = track.drm || track.drm_only;
    if track.deleted || no_clear_stream || track.secret_token().as_deref() != segs.get(2).copied() {
        return not_found_page(sock, req.head_only).await;
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
    let opts = BodyOpts {
        cut,
        bandwidth,
        hang: track.hang,
    };
    let id = track.id;
    write_body(
        sock,
        req,
        ("audio/mpeg", track.audio_size),
        |pos, buf| fill_audio(id, pos, buf),
        opts,
    )
    .await;
}
