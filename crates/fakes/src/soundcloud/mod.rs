//! A fake SoundCloud on 127.0.0.1: the API v2 host (`api-v2.soundcloud.com`) and the web host
//! (`soundcloud.com`), two listeners sharing one state. The tests, `playlistd demo` and the
//! benchmarks all use it, so it follows `reference/soundcloud-api.md` rather than what would be
//! convenient for the client:
//!
//! - every API call needs `client_id` equal to the current id, else 401; the id is only found in
//!   the LAST `<script src>` of the web root, as on the real site;
//! - playlist JSON carries full track objects for a prefix only (default 5), the rest are stubs
//!   with exactly `id, kind, monetization_model, policy`;
//! - `/tracks?ids=` answers a bare array in a shuffled (seeded) order, refuses more than 50 ids
//!   with 400, and leaves out deleted tracks and private tracks not unlocked by the secret set's
//!   `playlistId` + `playlistSecretToken`;
//! - a secret set resolves only with its `/s-…` token;
//! - the web host serves each track's permalink as `audio/mpeg`, so the real yt-dlp's generic
//!   extractor downloads it directly (this is what the downloader runs against the fake); it
//!   plays the part of the media CDN, so bot protection does not apply to it;
//! - as in 2026 (reference §9), media is delivered the way SoundCloud's CDN does it:
//!   - a track lists transcodings by its [`Layout`] ([`FakeTrack::layout`]): by default HLS
//!     AAC `aac_160k` only, beside a broken `abr_sq` and a Go+ `hq` `aac_256k` whose stream
//!     URL is a JSON 403 without a login (not listed while the public hosts are shown: the real
//!     yt-dlp gives a track up on that 403); or also MP3 (progressive and HLS), MP3 only, Opus
//!     only. A Go+ preview's are `/preview/` and `snipped`, a private track's carry
//!     `?secret_token=` and need it;
//!   - a transcoding's stream URL (`/media/…`, limited per window when
//!     [`FakeSoundCloud::set_stream_url_limit`] says so: a JSON 429 without `Retry-After`)
//!     answers a URL signed for the fake's CDN on the web listener (`/cdn/…`, see `cdn`): an
//!     HLS playlist of fMP4 AAC (a real AAC fixture tiled to the duration, see `hls`) or MP3
//!     segments, or a progressive MP3; the signature expires after a TTL (260 s) or a number of
//!     uses, and the CDN then answers CloudFront's XML 403;
//!   - a label track with DRM ([`FakeTrack::drm`]) lists clear `hls` and `progressive`
//!     transcodings that answer 404, next to `ctr-`/`cbc-encrypted-hls` ones that answer; its
//!     audio is 404 too ([`FakeTrack::encrypted_too`] lists the same, but its clear streams
//!     play). A geo-blocked track's stream URLs answer 404 (so yt-dlp reports no format);
//!   - artwork and avatar URLs end in `-large.jpg` (100 px) and, unless the public hosts are
//!     shown, point at the web listener's `/images/…` in place of `i1.sndcdn.com`, which
//!     serves a real 500×500 JPEG at `-large` and `-t500x500` alike;
//! - the CDN, the images and the permalink's audio are not bot-protected, like the real media
//!   hosts; they are counted per track ([`FakeSoundCloud::cdn_requests`],
//!   [`FakeSoundCloud::segment_requests`], [`FakeSoundCloud::stream_url_requests`]) and take
//!   faults like any endpoint, [`Fault::Reset`] included, and one segment's own faults
//!   ([`FakeSoundCloud::inject_segment`]);
//! - bot protection sits in front of the API and the web page: a request whose `User-Agent` is
//!   not a browser's (`Mozilla/5.0 …`) gets an HTML 403 challenge page, not JSON, and
//!   [`Fault::BlockedHtml`] / [`Fault::BlockedXml`] inject the same answer for any client. A
//!   stale client id still gets a JSON 401, so the two can be told apart;
//! - every request's `User-Agent` and `Accept-Language` are logged, and requests for a track's
//!   stream (API `/media/…`) or audio (web permalink) are counted per track
//!   ([`FakeSoundCloud::media_requests`]), so a test can assert a track is never asked for
//!   again.
//!
//! Invariants: the state is behind one std mutex that is never held across an await; faults are
//! consumed in the order they were injected, one per request to their endpoint; everything that
//! varies (client ids, shuffles) comes from a seed, so runs are repeatable.
//!
//! The web listener is a small hand-written HTTP/1.1 server instead of axum: throttled and
//! hanging audio bodies need a streaming body, and axum only takes a `Stream`, whose trait
//! (futures-core) is not a dependency of this crate. Each web connection serves one request and
//! closes (`Connection: close`), which every HTTP client handles.
//!
//! Layout, by the hosts and resources of the real service: `api` is the API v2 host (resolve,
//! playlists, tracks, the `/tracks?ids=` batch), `media` the streams (the transcodings a track
//! lists, a transcoding's stream URL, the audio bytes a permalink serves), `cdn` the media CDN
//! and images host (signatures, playlists, segments, progressive files, artwork), `hls` the
//! bytes of the streams (public: fMP4 AAC and MP3, for the main crate's tests too), `web` the
//! web host's pages (the root page and assets the client id is scraped from, short links, bot
//! protection, the small HTTP/1.1 server), `http` the answers they share (errors, bodies with
//! ranges, throttling, hangs and cuts), `catalog` the tracks and playlists the fake knows and
//! how a test builds them. This file holds the server, the shared state, fault injection and
//! counting.

mod api;
mod catalog;
mod cdn;
pub mod hls;
mod http;
mod media;
mod web;

#[cfg(test)]
mod cdn_tests;
#[cfg(test)]
mod tests;

pub use api::MAX_IDS;
pub use catalog::DEFAULT_AUDIO_SIZE;
pub use catalog::{ARTISTS, FakePlaylist, FakeTrack, Layout, Policy, playlist_of};
pub use cdn::{CdnCounts, DEFAULT_SIGNED_URL_TTL};
pub use hls::{HlsAudio, aac_hls, mp3_bytes};

use api::{api_fallback, api_playlist, api_resolve, api_track, api_tracks};
use axum::Router;
use axum::http::header;
use axum::routing::get;
use catalog::fnv;
use media::api_media;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use web::{make_client_id, web_accept};

/// The kinds of request the fake counts and can inject faults into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// API `GET /resolve?url=`.
    Resolve,
    /// API `GET /tracks?ids=` (the batch endpoint).
    Tracks,
    /// API `GET /tracks/{id}`.
    Track,
    /// API `GET /playlists/{id}`.
    Playlist,
    /// API `GET /media/soundcloud:tracks:{id}/...`: a transcoding's stream URL.
    Media,
    /// Web `GET /`.
    WebRoot,
    /// Web `GET /assets/*.js`.
    Asset,
    /// Web `GET|HEAD /{user}/{track}`: the audio.
    Audio,
    /// Web `GET /on/{code}`: an `on.soundcloud.com` short link, answered with a redirect.
    ShortLink,
    /// CDN `GET /cdn/{id}/{preset}/playlist.m3u8`: an HLS media playlist.
    CdnPlaylist,
    /// CDN `GET /cdn/{id}/{preset}/init.mp4`: the `#EXT-X-MAP` init segment.
    CdnInit,
    /// CDN `GET /cdn/{id}/{preset}/seg/{n}.{m4s|mp3|opus}`: an HLS media segment.
    CdnSegment,
    /// CDN `GET /cdn/{id}/{preset}/audio.mp3`: a progressive stream.
    CdnProgressive,
    /// Images host `GET /images/{artworks|avatars}-{id}-{large|t500x500}.jpg`.
    Artwork,
    /// Any other path on either host (answered 404).
    Other,
}

/// A scripted misbehaviour, used once per request to its endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and a small JSON error body.
    Status(u16),
    /// 429, with `Retry-After: <secs>` when given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// Normal status, but only the first half of the body (the full length announced), then
    /// the connection is closed.
    Truncated,
    /// Normal status and headers, part of the body, then the connection is reset (a TCP RST
    /// on the web host and CDN; on the API host the connection is dropped mid-body).
    Reset,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Bot protection: 403 with an HTML challenge page (as DataDome answers), not JSON.
    BlockedHtml,
    /// Bot protection: 403 with an XML `AccessDenied` document (as a CDN's firewall answers).
    BlockedXml,
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub endpoint: Endpoint,
    /// Path and query, as sent.
    pub target: String,
    /// The `User-Agent` header, when sent.
    pub user_agent: Option<String>,
    /// The `Accept-Language` header, when sent.
    pub accept_language: Option<String>,
}

/// The headers the fake looks at, as one request carried them.
#[derive(Debug, Clone, Default)]
struct Seen {
    user_agent: Option<String>,
    accept_language: Option<String>,
}

impl Seen {
    fn from_headers(h: &axum::http::HeaderMap) -> Seen {
        let get = |name: header::HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Seen {
            user_agent: get(header::USER_AGENT),
            accept_language: get(header::ACCEPT_LANGUAGE),
        }
    }

    /// What bot protection lets through: a browser's user agent. Real protection looks at far
    /// more (TLS fingerprint, IP reputation); the user agent is the part a client controls.
    fn is_browser(&self) -> bool {
        self.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("Mozilla/5.0 ("))
    }
}

#[derive(Debug, Clone)]
struct StoredPlaylist {
    meta: FakePlaylist,
    track_ids: Vec<u64>,
    deleted: bool,
}

struct Inner {
    web: String,
    api: String,
    seed: u64,
    client_id: String,
    rotations: u64,
    shuffles: u64,
    tracks: HashMap<u64, FakeTrack>,
    /// `(user permalink, slug)` -> track id, for the web host.
    paths: HashMap<(String, String), u64>,
    playlists: BTreeMap<u64, StoredPlaylist>,
    faults: HashMap<Endpoint, VecDeque<(Fault, u32)>>,
    counts: HashMap<Endpoint, u64>,
    /// Stream (`/media/…`) and audio requests per track id.
    media_counts: HashMap<u64, u64>,
    log: Vec<LoggedRequest>,
    /// Non-browser user agents get the HTML 403 (on by default, as on the real site).
    bot_protection: bool,
    max_ids: usize,
    latency: Duration,
    bandwidth: Option<u64>,
    /// Write `https://soundcloud.com` and `https://api-v2.soundcloud.com` into answers instead
    /// of this fake's addresses (see [`FakeSoundCloud::show_public_hosts`]).
    public_hosts: bool,
    /// `on.soundcloud.com` codes -> where they redirect.
    short_links: HashMap<String, String>,
    /// The CDN's side: signatures issued, their lifetime, the stream-URL limit, the counts.
    cdn: cdn::CdnState,
}

/// The real hosts, shown in answers when the fake plays SoundCloud for a client that has them
/// hard-coded (yt-dlp, with a plugin that sends those hosts' requests here).
pub const PUBLIC_WEB: &str = "https://soundcloud.com";
pub const PUBLIC_API: &str = "https://api-v2.soundcloud.com";

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panicking test thread must not turn every later request into a second panic.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fake. Dropping it stops both servers.
pub struct FakeSoundCloud {
    state: Shared,
    api_addr: SocketAddr,
    web_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeSoundCloud {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeSoundCloud {
    /// Starts both servers on ephemeral ports of 127.0.0.1. Panics if it cannot bind (tests).
    pub async fn start() -> FakeSoundCloud {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("cannot bind the fake SoundCloud on 127.0.0.1")
    }

    /// Starts both servers on the given addresses (port 0 = any), e.g. for `playlistd demo`.
    pub async fn start_on(api: SocketAddr, web: SocketAddr) -> std::io::Result<FakeSoundCloud> {
        let api_l = TcpListener::bind(api).await?;
        let web_l = TcpListener::bind(web).await?;
        let api_addr = api_l.local_addr()?;
        let web_addr = web_l.local_addr()?;
        let seed = 0x5eed_50c1_0d00_u64;
        let state = Arc::new(Mutex::new(Inner {
            web: format!("http://{web_addr}"),
            api: format!("http://{api_addr}"),
            seed,
            client_id: make_client_id(seed, 0),
            rotations: 0,
            shuffles: 0,
            tracks: HashMap::new(),
            paths: HashMap::new(),
            playlists: BTreeMap::new(),
            faults: HashMap::new(),
            counts: HashMap::new(),
            media_counts: HashMap::new(),
            log: Vec::new(),
            bot_protection: true,
            max_ids: 0,
            latency: Duration::ZERO,
            bandwidth: None,
            public_hosts: false,
            short_links: HashMap::new(),
            cdn: cdn::CdnState::default(),
        }));
        let router = Router::new()
            .route("/resolve", get(api_resolve))
            .route("/tracks", get(api_tracks))
            .route("/tracks/{id}", get(api_track))
            .route("/playlists/{id}", get(api_playlist))
            .route("/media/{*rest}", get(api_media))
            .fallback(api_fallback)
            .with_state(state.clone());
        let api_task = tokio::spawn(async move {
            let _ = axum::serve(api_l, router).await;
        });
        let web_task = tokio::spawn(web_accept(web_l, state.clone()));
        Ok(FakeSoundCloud {
            state,
            api_addr,
            web_addr,
            tasks: vec![api_task, web_task],
        })
    }

    /// Like `https://api-v2.soundcloud.com` (no trailing slash).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.api_addr)
    }
    /// Like `https://soundcloud.com` (no trailing slash).
    pub fn web_base(&self) -> String {
        format!("http://{}", self.web_addr)
    }
    /// Stands in for `https://on.soundcloud.com`: `soundcloud.short_link_base`.
    pub fn short_link_base(&self) -> String {
        format!("{}/on", self.web_base())
    }
    /// A short link `https://on.soundcloud.com/<code>` to a playlist, redirecting (as the real
    /// ones do) to its public URL with the app's share-tracking query.
    pub fn add_short_link(&self, playlist_id: u64) -> Option<String> {
        let mut s = lock(&self.state);
        let target = s.playlist_url(playlist_id)?;
        let code = format!("{:X}", fnv(&target) % 0xFFFF_FFFF);
        let to = format!(
            "{target}?si=9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing"
        );
        s.short_links.insert(code.clone(), to);
        Some(format!("https://on.soundcloud.com/{code}"))
    }

    /// Answers name the real hosts (permalinks, users, transcoding URLs) instead of this
    /// fake's addresses, so that a client with SoundCloud's hosts hard-coded recognises them;
    /// its requests must then be sent here by other means. Off by default.
    pub fn show_public_hosts(&self, on: bool) {
        lock(&self.state).public_hosts = on;
    }
    /// The client id the API currently accepts.
    pub fn client_id(&self) -> String {
        lock(&self.state).client_id.clone()
    }
    /// Changes the seed of client ids and shuffles (the current client id changes too).
    pub fn set_seed(&self, seed: u64) {
        let mut s = lock(&self.state);
        s.seed = seed;
        s.client_id = make_client_id(seed, s.rotations);
    }
    /// SoundCloud ships a new web build: the old id gets 401, the web page serves a new one.
    pub fn rotate_client_id(&self) -> String {
        let mut s = lock(&self.state);
        s.rotations += 1;
        s.client_id = make_client_id(s.seed, s.rotations);
        s.client_id.clone()
    }

    /// Scripts `fault` for the next `times` requests to `endpoint` (after faults already queued).
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        if times > 0 {
            lock(&self.state)
                .faults
                .entry(endpoint)
                .or_default()
                .push_back((fault, times));
        }
    }
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }
    /// Requests received by one endpoint, faulted ones included.
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        lock(&self.state)
            .counts
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }
    /// Requests received by both hosts.
    pub fn total_requests(&self) -> u64 {
        lock(&self.state).counts.values().sum()
    }
    /// Every request so far, in arrival order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.state).log.clone()
    }
    /// The most ids any `/tracks?ids=` request carried (including refused ones).
    pub fn max_ids_per_request(&self) -> usize {
        lock(&self.state).max_ids
    }
    /// Requests for one track's stream (API `/media/…`, any transcoding) or its audio (web
    /// permalink), faulted ones included.
    pub fn media_requests(&self, track_id: u64) -> u64 {
        lock(&self.state)
            .media_counts
            .get(&track_id)
            .copied()
            .unwrap_or(0)
    }
    /// Bot protection on or off (on by default): when on, a request to the API or the web page
    /// whose `User-Agent` is not a browser's gets the HTML 403.
    pub fn set_bot_protection(&self, on: bool) {
        lock(&self.state).bot_protection = on;
    }
    /// Forgets every count and the request log (the CDN's counts too; not the faults).
    pub fn reset_counters(&self) {
        let mut s = lock(&self.state);
        s.counts.clear();
        s.media_counts.clear();
        s.cdn.reset_counters();
        s.log.clear();
        s.max_ids = 0;
    }
    /// Added before every answer on both hosts (benchmarks: e.g. 80 ms).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.state).latency = d;
    }
    /// Caps each audio response (the permalink's and every CDN body: playlists, init and media
    /// segments, progressive streams) at this many bytes per second (`None`: unlimited).
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        lock(&self.state).bandwidth = bytes_per_sec.filter(|b| *b > 0);
    }
}

impl Inner {
    fn record(
        &mut self,
        endpoint: Endpoint,
        target: &str,
        seen: &Seen,
    ) -> (Duration, Option<Fault>) {
        self.log_request(endpoint, target, seen);
        let fault = self.faults.get_mut(&endpoint).and_then(next_fault);
        (self.latency, fault)
    }

    /// Counts and logs a request, without taking a fault.
    fn log_request(&mut self, endpoint: Endpoint, target: &str, seen: &Seen) {
        *self.counts.entry(endpoint).or_default() += 1;
        self.log.push(LoggedRequest {
            endpoint,
            target: target.to_string(),
            user_agent: seen.user_agent.clone(),
            accept_language: seen.accept_language.clone(),
        });
    }
}

/// Takes one use of the fault at the front of a queue (faults are used in injection order).
fn next_fault(q: &mut VecDeque<(Fault, u32)>) -> Option<Fault> {
    let (f, n) = q.front_mut()?;
    let f = f.clone();
    *n -= 1;
    if *n == 0 {
        q.pop_front();
    }
    Some(f)
}
