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
//! - as in 2026 (reference §9): a label track with DRM ([`FakeTrack::drm`]) lists clear `hls`
//!   and `progressive` transcodings that answer 404, next to `ctr-`/`cbc-encrypted-hls` ones
//!   that answer; its audio is 404 too ([`FakeTrack::encrypted_too`] lists the same, but its
//!   clear streams play). Artwork URLs end in `-large.jpg` (100 px);
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

use crate::config::SoundCloudConfig;
use axum::Router;
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use url::Url;

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
    /// Normal status, but only the first half of the body.
    Truncated,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Bot protection: 403 with an HTML challenge page (as DataDome answers), not JSON.
    BlockedHtml,
    /// Bot protection: 403 with an XML `AccessDenied` document (as a CDN's firewall answers).
    BlockedXml,
}

/// SoundCloud's per-track availability policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Allow,
    Monetize,
    /// Go+ track: 30-second preview transcodings only.
    Snip,
    /// Geo-blocked: the web host answers 403 for its audio.
    Block,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "ALLOW",
            Policy::Monetize => "MONETIZE",
            Policy::Snip => "SNIP",
            Policy::Block => "BLOCK",
        }
    }
}

/// Default audio size: big enough to be real frames, small enough for fast tests.
pub const DEFAULT_AUDIO_SIZE: usize = 20 * 1024;
/// MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes per frame.
const FRAME_LEN: usize = 417;
const FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0x64];
/// The most ids the real `/tracks?ids=` accepts (reference §2).
pub const MAX_IDS: usize = 50;

/// One track as the fake knows it. Build with [`FakeTrack::new`] and the builder methods.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTrack {
    pub id: u64,
    pub title: String,
    /// `publisher_metadata.artist`; `None` leaves `publisher_metadata` out.
    pub artist: Option<String>,
    /// `user.username`.
    pub username: String,
    /// `user.permalink`: the first path segment of the permalink URL.
    pub user_permalink: String,
    /// The second path segment of the permalink URL.
    pub slug: String,
    pub policy: Policy,
    pub genre: String,
    pub duration_ms: u64,
    pub artwork_url: Option<String>,
    pub avatar_url: Option<String>,
    pub deleted: bool,
    /// A private track: its permalink carries a secret token, `/tracks?ids=` returns it only
    /// with the secret set's `playlistId` + `playlistSecretToken`.
    pub private: bool,
    /// Only `ctr-`/`cbc-encrypted-hls` transcodings.
    pub drm_only: bool,
    /// A label track under DRM (since 2026): clear `hls`/`progressive` transcodings are listed
    /// but answer 404, encrypted ones answer; the audio is 404.
    pub drm: bool,
    /// Lists encrypted transcodings beside its clear ones, which play: a label track that is
    /// not (or no longer) under DRM, which only asking its clear stream tells from a DRM one.
    pub encrypted_too: bool,
    pub streamable: bool,
    pub audio_size: usize,
    /// The audio response sends its headers and a first chunk, then never finishes.
    pub hang: bool,
}

impl FakeTrack {
    pub fn new(id: u64, title: &str, artist: &str) -> Self {
        FakeTrack {
            id,
            title: title.to_string(),
            artist: Some(artist.to_string()),
            username: artist.to_string(),
            user_permalink: slugify(artist),
            slug: slugify(title),
            policy: Policy::Allow,
            genre: String::new(),
            duration_ms: 180_000 + (id % 120) * 1000,
            artwork_url: Some(format!("https://i1.sndcdn.com/artworks-{id:012}-large.jpg")),
            avatar_url: Some(format!("https://i1.sndcdn.com/avatars-{id:012}-large.jpg")),
            deleted: false,
            private: false,
            drm_only: false,
            drm: false,
            encrypted_too: false,
            streamable: true,
            audio_size: DEFAULT_AUDIO_SIZE,
            hang: false,
        }
    }
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    pub fn genre(mut self, g: &str) -> Self {
        self.genre = g.to_string();
        self
    }
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration_ms = ms;
        self
    }
    /// The uploader (`user.username`, and its permalink), distinct from the publisher artist.
    pub fn uploader(mut self, username: &str) -> Self {
        self.username = username.to_string();
        self.user_permalink = slugify(username);
        self
    }
    /// Leaves `publisher_metadata` out, so the artist falls back to the uploader.
    pub fn no_publisher_artist(mut self) -> Self {
        self.artist = None;
        self
    }
    pub fn permalink(mut self, user: &str, slug: &str) -> Self {
        self.user_permalink = user.to_string();
        self.slug = slug.to_string();
        self
    }
    pub fn artwork(mut self, url: Option<&str>) -> Self {
        self.artwork_url = url.map(str::to_string);
        self
    }
    pub fn avatar(mut self, url: Option<&str>) -> Self {
        self.avatar_url = url.map(str::to_string);
        self
    }
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }
    pub fn drm_only(mut self) -> Self {
        self.drm_only = true;
        self
    }
    /// A DRM label track as SoundCloud lists them since 2026 (see [`FakeTrack::drm`] field).
    pub fn drm(mut self) -> Self {
        self.drm = true;
        self
    }
    /// Encrypted transcodings listed too, but the clear ones play (see the field).
    pub fn encrypted_too(mut self) -> Self {
        self.encrypted_too = true;
        self
    }
    pub fn not_streamable(mut self) -> Self {
        self.streamable = false;
        self
    }
    pub fn audio_size(mut self, bytes: usize) -> Self {
        self.audio_size = bytes;
        self
    }
    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }
    /// The secret token of a private track, derived from its id so it is stable.
    pub fn secret_token(&self) -> Option<String> {
        self.private.then(|| format!("s-{}", token_from(self.id)))
    }
}

/// A playlist ("set"). Build with [`FakePlaylist::new`] or [`playlist_of`].
#[derive(Debug, Clone, PartialEq)]
pub struct FakePlaylist {
    pub id: u64,
    pub user: String,
    pub slug: String,
    pub title: String,
    pub tracks: Vec<FakeTrack>,
    /// `Some("s-…")` makes this a secret set.
    pub secret_token: Option<String>,
    /// How many leading entries are full track objects; the rest are stubs.
    pub full_prefix: usize,
    /// Added to `track_count` beyond the listed entries (SoundCloud counts tracks it hides).
    pub hidden: u64,
}

impl FakePlaylist {
    pub fn new(id: u64, user: &str, slug: &str) -> Self {
        FakePlaylist {
            id,
            user: user.to_string(),
            slug: slug.to_string(),
            title: title_case(slug),
            tracks: Vec::new(),
            secret_token: None,
            full_prefix: 5,
            hidden: 0,
        }
    }
    pub fn title(mut self, t: &str) -> Self {
        self.title = t.to_string();
        self
    }
    pub fn track(mut self, t: FakeTrack) -> Self {
        self.tracks.push(t);
        self
    }
    pub fn tracks(mut self, ts: impl IntoIterator<Item = FakeTrack>) -> Self {
        self.tracks.extend(ts);
        self
    }
    /// Makes this a secret set with the given token (`s-` is added when missing).
    pub fn secret(mut self, token: &str) -> Self {
        let t = if token.starts_with("s-") {
            token.to_string()
        } else {
            format!("s-{token}")
        };
        self.secret_token = Some(t);
        self
    }
    pub fn full_prefix(mut self, n: usize) -> Self {
        self.full_prefix = n;
        self
    }
    pub fn hidden(mut self, n: u64) -> Self {
        self.hidden = n;
        self
    }
}

/// The artists `playlist_of` cycles through (benchmarks reuse them).
pub const ARTISTS: [&str; 7] = [
    "Lo Collective",
    "Alleycvt",
    "Mira Sol",
    "Kettama",
    "Dj Plant Texture",
    "Nia Archives",
    "Ross From Friends",
];
const GENRES: [&str; 5] = ["House", "Drum & Bass", "Ambient", "Techno", ""];

/// A playlist of `n` generated tracks with distinct titles, permalinks and ids (ids are
/// derived from `user/slug`, so two generated playlists never share a track by accident).
pub fn playlist_of(n: usize, user: &str, slug: &str) -> FakePlaylist {
    let base = fnv(&format!("{user}/{slug}"));
    let pid = 100_000_000 + base % 900_000_000;
    let name = title_case(slug);
    let tracks = (0..n).map(|i| {
        let id = 1_000_000_000 + (base % 90_000) * 10_000 + i as u64;
        let artist = ARTISTS[i % ARTISTS.len()];
        FakeTrack::new(id, &format!("{name} {:03}", i + 1), artist).genre(GENRES[i % GENRES.len()])
    });
    FakePlaylist::new(pid, user, slug).tracks(tracks)
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
    /// A `[soundcloud]` config pointing at this fake, with no configured client id.
    pub fn config(&self) -> SoundCloudConfig {
        SoundCloudConfig {
            api_base: Url::parse(&self.api_base()).unwrap(),
            web_base: Url::parse(&self.web_base()).unwrap(),
            short_link_base: Url::parse(&self.short_link_base()).unwrap(),
            client_id: None,
            user_agent: None,
            timeout: Duration::from_secs(10),
        }
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

    /// Adds a playlist and its tracks (a track id already known is replaced by the new
    /// definition). Returns the set URL, with the `/s-…` token for a secret set.
    pub fn add_playlist(&self, p: FakePlaylist) -> String {
        let mut s = lock(&self.state);
        let ids = p.tracks.iter().map(|t| t.id).collect();
        for t in &p.tracks {
            s.insert_track(t.clone());
        }
        let id = p.id;
        s.playlists.insert(
            id,
            StoredPlaylist {
                meta: p,
                track_ids: ids,
                deleted: false,
            },
        );
        s.playlist_url(id).expect("just inserted")
    }
    /// The set URL of a playlist (with its token when secret), `None` when unknown.
    pub fn playlist_url(&self, playlist_id: u64) -> Option<String> {
        lock(&self.state).playlist_url(playlist_id)
    }
    /// The permalink URL of a track.
    pub fn track_url(&self, track_id: u64) -> Option<String> {
        let s = lock(&self.state);
        s.tracks.get(&track_id).map(|t| s.permalink(t))
    }
    /// The exact bytes the web host serves for a track's audio.
    pub fn audio_of(&self, track_id: u64) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        let t = s.tracks.get(&track_id)?;
        let mut v = vec![0; t.audio_size];
        fill_audio(t.id, 0, &mut v);
        Some(v)
    }
    pub fn delete_playlist(&self, playlist_id: u64) {
        if let Some(p) = lock(&self.state).playlists.get_mut(&playlist_id) {
            p.deleted = true;
        }
    }
    /// Turns a public set into a secret one; the old URL then resolves to 404. Returns the new
    /// secret URL.
    pub fn make_private(&self, playlist_id: u64) -> Option<String> {
        let mut s = lock(&self.state);
        let p = s.playlists.get_mut(&playlist_id)?;
        p.meta.secret_token = Some(format!("s-{}", token_from(playlist_id ^ 0xabcdef)));
        s.playlist_url(playlist_id)
    }
    pub fn remove_track_from_playlist(&self, playlist_id: u64, track_id: u64) {
        if let Some(p) = lock(&self.state).playlists.get_mut(&playlist_id) {
            p.track_ids.retain(|t| *t != track_id);
        }
    }
    /// Appends a track to a playlist (defining or redefining the track).
    pub fn add_track(&self, playlist_id: u64, t: FakeTrack) {
        let mut s = lock(&self.state);
        let id = t.id;
        s.insert_track(t);
        if let Some(p) = s.playlists.get_mut(&playlist_id) {
            p.track_ids.push(id);
        }
    }
    /// Deletes a track everywhere: it stays in playlists as a stub, `/tracks?ids=` leaves it
    /// out, its audio is 404.
    pub fn delete_track(&self, track_id: u64) {
        self.update_track(track_id, |t| t.deleted = true);
    }
    /// Changes a track in place (rename, policy change, ...).
    pub fn update_track(&self, track_id: u64, f: impl FnOnce(&mut FakeTrack)) {
        let mut s = lock(&self.state);
        if let Some(mut t) = s.tracks.get(&track_id).cloned() {
            f(&mut t);
            s.insert_track(t);
        }
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
    pub fn reset_counters(&self) {
        let mut s = lock(&self.state);
        s.counts.clear();
        s.media_counts.clear();
        s.log.clear();
        s.max_ids = 0;
    }
    /// Added before every answer on both hosts (benchmarks: e.g. 80 ms).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.state).latency = d;
    }
    /// Caps each audio response at this many bytes per second (`None`: unlimited).
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        lock(&self.state).bandwidth = bytes_per_sec.filter(|b| *b > 0);
    }
}

impl Inner {
    fn insert_track(&mut self, mut t: FakeTrack) {
        let old = self
            .tracks
            .get(&t.id)
            .map(|o| (o.user_permalink.clone(), o.slug.clone()));
        if let Some(key) = old
            && self.paths.get(&key) == Some(&t.id)
        {
            self.paths.remove(&key);
        }
        // Two generated tracks may slugify alike; SoundCloud would suffix one, so do we.
        let mut key = (t.user_permalink.clone(), t.slug.clone());
        if self.paths.get(&key).is_some_and(|id| *id != t.id) {
            t.slug = format!("{}-{}", t.slug, t.id);
            key.1 = t.slug.clone();
        }
        self.paths.insert(key, t.id);
        self.tracks.insert(t.id, t);
    }

    /// The web host as answers name it.
    fn web_shown(&self) -> &str {
        if self.public_hosts {
            PUBLIC_WEB
        } else {
            &self.web
        }
    }
    /// The API host as answers name it.
    fn api_shown(&self) -> &str {
        if self.public_hosts {
            PUBLIC_API
        } else {
            &self.api
        }
    }

    fn playlist_url(&self, id: u64) -> Option<String> {
        let p = &self.playlists.get(&id)?.meta;
        let mut u = format!("{}/{}/sets/{}", self.web_shown(), p.user, p.slug);
        if let Some(tok) = &p.secret_token {
            u.push('/');
            u.push_str(tok);
        }
        Some(u)
    }

    fn permalink(&self, t: &FakeTrack) -> String {
        let mut u = format!("{}/{}/{}", self.web_shown(), t.user_permalink, t.slug);
        if let Some(tok) = t.secret_token() {
            u.push('/');
            u.push_str(&tok);
        }
        u
    }

    /// The track whose permalink is `path` (`/user/slug[/s-token]`), if any.
    fn track_at(&self, path: &str) -> Option<u64> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (user, slug) = (segs.first()?, segs.get(1)?);
        self.paths
            .get(&(user.to_string(), slug.to_string()))
            .copied()
    }

    fn record(
        &mut self,
        endpoint: Endpoint,
        target: &str,
        seen: &Seen,
    ) -> (Duration, Option<Fault>) {
        *self.counts.entry(endpoint).or_default() += 1;
        self.log.push(LoggedRequest {
            endpoint,
            target: target.to_string(),
            user_agent: seen.user_agent.clone(),
            accept_language: seen.accept_language.clone(),
        });
        let fault = self.faults.get_mut(&endpoint).and_then(|q| {
            let (f, n) = q.front_mut()?;
            let f = f.clone();
            *n -= 1;
            if *n == 0 {
                q.pop_front();
            }
            Some(f)
        });
        (self.latency, fault)
    }

    fn user_json(&self, permalink: &str, username: &str, avatar: Option<&str>) -> Value {
        let id = fnv(permalink) % 900_000_000 + 1_000_000;
        json!({
            "id": id,
            "kind": "user",
            "urn": format!("soundcloud:users:{id}"),
            "username": username,
            "permalink": permalink,
            "permalink_url": format!("{}/{}", self.web_shown(), permalink),
            "uri": format!("https://api.soundcloud.com/users/{id}"),
            "avatar_url": avatar,
            "verified": false,
            "followers_count": 1000 + id % 5000,
        })
    }

    fn track_json(&self, t: &FakeTrack) -> Value {
        let id = t.id;
        let snip = t.policy == Policy::Snip;
        let media = format!("{}/media/soundcloud:tracks:{id}", self.api_shown());
        let kind = if snip { "preview" } else { "stream" };
        let dur = if snip { 30_000 } else { t.duration_ms };
        let tc = |uuid: &str, protocol: &str, preset: &str, mime: &str| {
            json!({
                "url": format!("{media}/{uuid}/{kind}/{protocol}"),
                "preset": preset,
                "duration": dur,
                "snipped": snip,
                "format": {"protocol": protocol, "mime_type": mime},
                "quality": "sq",
            })
        };
        let aac = "audio/mp4; codecs=\"mp4a.40.2\"";
        let encrypted = || {
            [
                tc("c1", "ctr-encrypted-hls", "aac_160k", aac),
                tc("c2", "cbc-encrypted-hls", "aac_160k", aac),
            ]
        };
        let transcodings = if t.drm_only {
            encrypted().to_vec()
        } else if t.drm || t.encrypted_too {
            // Listed in the order SoundCloud lists them: the clear ones first.
            let mut v = vec![
                tc("d1", "hls", "aac_160k", aac),
                tc("d2", "progressive", "mp3_1_0", "audio/mpeg"),
            ];
            v.extend(encrypted());
            v
        } else {
            vec![
                tc("a1", "hls", "mp3_0_0", "audio/mpeg"),
                tc("a1", "progressive", "mp3_0_0", "audio/mpeg"),
                tc("b2", "hls", "opus_0_0", "audio/ogg; codecs=\"opus\""),
            ]
        };
        let secret = t.secret_token();
        json!({
            "kind": "track",
            "id": id,
            "urn": format!("soundcloud:tracks:{id}"),
            "title": t.title,
            "permalink": t.slug,
            "permalink_url": self.permalink(t),
            "uri": format!("https://api.soundcloud.com/tracks/{id}"),
            "duration": dur,
            "full_duration": t.duration_ms,
            "genre": t.genre,
            "tag_list": "",
            "description": "",
            "caption": null,
            "label_name": null,
            "artwork_url": t.artwork_url,
            "waveform_url": format!("https://wave.sndcdn.com/{id}_m.json"),
            "created_at": "2024-05-01T12:00:00Z",
            "last_modified": "2024-05-02T12:00:00Z",
            "display_date": "2024-05-01T12:00:00Z",
            "release_date": null,
            "license": "all-rights-reserved",
            "public": !t.private,
            "sharing": if t.private { "private" } else { "public" },
            "secret_token": secret,
            "state": "finished",
            "streamable": t.streamable,
            "embeddable_by": "all",
            "downloadable": false,
            "has_downloads_left": true,
            "playback_count": id % 100_000,
            "likes_count": id % 1000,
            "reposts_count": id % 100,
            "comment_count": id % 10,
            "publisher_metadata": t.artist.as_ref().map(|a| json!({
                "id": id, "urn": format!("soundcloud:tracks:{id}"), "artist": a, "contains_music": true
            })),
            "track_format": "single-track",
            // A JWT on the real service; clients may send it with a stream request.
            "track_authorization": format!("eyJ0eXAiOiJKV1QifQ.fake-{id}"),
            "monetization_model": monetization(t.policy),
            "policy": t.policy.as_str(),
            "media": {"transcodings": transcodings},
            "user_id": fnv(&t.user_permalink) % 900_000_000 + 1_000_000,
            "user": self.user_json(&t.user_permalink, &t.username, t.avatar_url.as_deref()),
        })
    }

    fn stub_json(&self, t: &FakeTrack) -> Value {
        json!({
            "id": t.id,
            "kind": "track",
            "monetization_model": monetization(t.policy),
            "policy": t.policy.as_str(),
        })
    }

    fn playlist_json(&self, sp: &StoredPlaylist) -> Value {
        let p = &sp.meta;
        let mut entries = Vec::with_capacity(sp.track_ids.len());
        let mut duration = 0;
        for (i, id) in sp.track_ids.iter().enumerate() {
            let Some(t) = self.tracks.get(id) else {
                continue;
            };
            duration += t.duration_ms;
            // A deleted track has nothing left to show in full; it stays listed as a stub.
            entries.push(if i < p.full_prefix && !t.deleted {
                self.track_json(t)
            } else {
                self.stub_json(t)
            });
        }
        let count = entries.len() as u64 + p.hidden;
        json!({
            "kind": "playlist",
            "id": p.id,
            "urn": format!("soundcloud:playlists:{}", p.id),
            "title": p.title,
            "description": "",
            "permalink": p.slug,
            "permalink_url": self.playlist_url(p.id),
            "uri": format!("https://api.soundcloud.com/playlists/{}", p.id),
            "sharing": if p.secret_token.is_some() { "private" } else { "public" },
            "secret_token": p.secret_token,
            "set_type": "",
            "is_album": false,
            "managed_by_feeds": false,
            "track_count": count,
            "duration": duration,
            "created_at": "2024-01-01T00:00:00Z",
            "last_modified": "2024-06-01T00:00:00Z",
            "genre": "",
            "artwork_url": null,
            "user_id": fnv(&p.user) % 900_000_000 + 1_000_000,
            "user": self.user_json(&p.user, &title_case(&p.user), None),
            "tracks": entries,
        })
    }

    fn find_playlist(&self, user: &str, slug: &str) -> Option<&StoredPlaylist> {
        self.playlists
            .values()
            .find(|p| !p.deleted && p.meta.user == user && p.meta.slug == slug)
    }

    fn resolve(&self, raw: &str) -> (StatusCode, Value) {
        let Ok(u) = Url::parse(raw) else {
            return (StatusCode::BAD_REQUEST, error_body(400, "invalid url"));
        };
        let segs: Vec<&str> = u
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        match segs.as_slice() {
            [user, "sets", slug] => match self.find_playlist(user, slug) {
                Some(p) if p.meta.secret_token.is_none() => (StatusCode::OK, self.playlist_json(p)),
                _ => not_found(),
            },
            [user, "sets", slug, token] => match self.find_playlist(user, slug) {
                Some(p) if p.meta.secret_token.as_deref() == Some(*token) => {
                    (StatusCode::OK, self.playlist_json(p))
                }
                _ => not_found(),
            },
            [user, slug] | [user, slug, _] => {
                let token = segs.get(2).copied();
                match self.paths.get(&(user.to_string(), slug.to_string())) {
                    Some(id) => {
                        let t = &self.tracks[id];
                        if t.deleted || t.secret_token().as_deref() != token {
                            not_found()
                        } else {
                            (StatusCode::OK, self.track_json(t))
                        }
                    }
                    None => not_found(),
                }
            }
            [user] => {
                if let Some(t) = self.tracks.values().find(|t| t.user_permalink == *user) {
                    (
                        StatusCode::OK,
                        self.user_json(user, &t.username, t.avatar_url.as_deref()),
                    )
                } else if self.playlists.values().any(|p| p.meta.user == *user) {
                    (
                        StatusCode::OK,
                        self.user_json(user, &title_case(user), None),
                    )
                } else {
                    not_found()
                }
            }
            _ => not_found(),
        }
    }

    fn tracks_batch(&mut self, q: &HashMap<String, String>) -> (StatusCode, Value) {
        let raw = q.get("ids").map(String::as_str).unwrap_or("");
        let mut ids = Vec::new();
        for part in raw.split(',').filter(|p| !p.is_empty()) {
            match part.trim().parse::<u64>() {
                Ok(id) => ids.push(id),
                Err(_) => return (StatusCode::BAD_REQUEST, error_body(400, "invalid ids")),
            }
        }
        self.max_ids = self.max_ids.max(ids.len());
        if ids.len() > MAX_IDS {
            return (
                StatusCode::BAD_REQUEST,
                error_body(400, "ids: should be less than 50"),
            );
        }
        let unlocked: HashSet<u64> = match (q.get("playlistId"), q.get("playlistSecretToken")) {
            (Some(pid), Some(tok)) => pid
                .parse::<u64>()
                .ok()
                .and_then(|pid| self.playlists.get(&pid))
                .filter(|p| !p.deleted && p.meta.secret_token.as_deref() == Some(tok.as_str()))
                .map(|p| p.track_ids.iter().copied().collect())
                .unwrap_or_default(),
            _ => HashSet::new(),
        };
        let mut seen = HashSet::new();
        let mut out: Vec<Value> = ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| self.tracks.get(id))
            .filter(|t| !t.deleted && (!t.private || unlocked.contains(&t.id)))
            .map(|t| self.track_json(t))
            .collect();
        self.shuffles += 1;
        fastrand::Rng::with_seed(self.seed ^ self.shuffles.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .shuffle(&mut out);
        (StatusCode::OK, Value::Array(out))
    }
}

fn monetization(p: Policy) -> &'static str {
    match p {
        Policy::Allow => "NOT_APPLICABLE",
        Policy::Monetize => "AD_SUPPORTED",
        Policy::Snip => "SUB_HIGH_TIER",
        Policy::Block => "BLACKBOX",
    }
}

fn error_body(code: u16, msg: &str) -> Value {
    json!({
        "code": code,
        "message": msg,
        "status": format!("{code} - {msg}"),
        "errors": [{"error_message": format!("{code} - {msg}")}],
        "error": null,
    })
}

fn not_found() -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, error_body(404, "Not Found"))
}

fn make_client_id(seed: u64, rotation: u64) -> String {
    let mut rng =
        fastrand::Rng::with_seed(seed.wrapping_add(rotation.wrapping_mul(0x1000_0000_01b3)));
    (0..32).map(|_| rng.alphanumeric()).collect()
}

fn token_from(n: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(n);
    (0..11).map(|_| rng.alphanumeric()).collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "untitled".to_string()
    } else {
        out
    }
}

fn title_case(slug: &str) -> String {
    slug.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills `buf` with the audio bytes at `offset`: frame headers every 417 bytes, the track id
/// in the first payload bytes (so files of different tracks differ), zeros elsewhere.
fn fill_audio(id: u64, offset: usize, buf: &mut [u8]) {
    let idb = id.to_le_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        let p = offset + i;
        let (frame, off) = (p / FRAME_LEN, p % FRAME_LEN);
        *b = if off < 4 {
            FRAME_HEADER[off]
        } else if frame == 0 && off < 12 {
            idb[off - 4]
        } else {
            0
        };
    }
}

// ---------------------------------------------------------------------------------------------
// API host (axum)

type ApiQuery = Query<HashMap<String, String>>;

/// Counts the request, waits the latency, lets bot protection refuse a non-browser, applies a
/// scripted fault and checks the client id. `Ok(true)` means "answer normally but truncate the
/// body".
async fn api_prelude(
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

/// Bot protection's answer: a 403 that is a page for a browser, not an API error.
fn blocked_page(xml: bool) -> (&'static str, &'static str) {
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

fn blocked_response(xml: bool) -> Response {
    let (ctype, body) = blocked_page(xml);
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

fn json_response(status: StatusCode, body: &Value, truncate: bool) -> Response {
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

async fn api_resolve(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Resolve, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (status, body) = match q.get("url") {
        Some(u) => lock(&st).resolve(u),
        None => (StatusCode::BAD_REQUEST, error_body(400, "url is required")),
    };
    json_response(status, &body, truncate)
}

async fn api_tracks(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Tracks, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (status, body) = lock(&st).tracks_batch(&q);
    json_response(status, &body, truncate)
}

async fn api_track(
    State(st): State<Shared>,
    AxPath(id): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Track, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = lock(&st);
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| s.tracks.get(&id))
        .filter(|t| {
            !t.deleted
                && (!t.private
                    || t.secret_token().as_deref() == q.get("secret_token").map(String::as_str))
        });
    let (status, body) = match found {
        Some(t) => (StatusCode::OK, s.track_json(t)),
        None => not_found(),
    };
    json_response(status, &body, truncate)
}

async fn api_playlist(
    State(st): State<Shared>,
    AxPath(id): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Playlist, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = lock(&st);
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| s.playlists.get(&id))
        .filter(|p| {
            !p.deleted
                && (p.meta.secret_token.is_none()
                    || p.meta.secret_token.as_deref() == q.get("secret_token").map(String::as_str))
        });
    let (status, body) = match found {
        Some(p) => (StatusCode::OK, s.playlist_json(p)),
        None => not_found(),
    };
    json_response(status, &body, truncate)
}

/// A transcoding's URL answers with where its stream is (as SoundCloud's do), for clients that
/// resolve every format while listing. Nothing is served at the stream URL itself: playlistd
/// downloads from the permalink. A DRM track's clear transcodings answer 404 and only its
/// encrypted ones answer (reference §9); every request is counted for its track.
async fn api_media(
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

async fn api_fallback(State(st): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let target = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    lock(&st).record(Endpoint::Other, &target, &Seen::from_headers(&headers));
    json_response(StatusCode::NOT_FOUND, &error_body(404, "Not Found"), false)
}

// ---------------------------------------------------------------------------------------------
// Web host (hand-written HTTP/1.1, one request per connection)

const ASSETS: [&str; 3] = ["0-3f2a1c.js", "49-8b7e0d.js", "app-5c9a77.js"];

async fn web_accept(listener: TcpListener, st: Shared) {
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

struct WebRequest {
    head_only: bool,
    path: String,
    target: String,
    range: Option<(usize, Option<usize>)>,
    seen: Seen,
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
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => Endpoint::WebRoot,
        ["assets", _] => Endpoint::Asset,
        ["on", _] => Endpoint::ShortLink,
        [u, _] if *u != "assets" => Endpoint::Audio,
        [_, s, t] if *s != "sets" && t.starts_with("s-") => Endpoint::Audio,
        _ => Endpoint::Other,
    }
}

async fn write_simple(
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

/// Like [`write_simple`], but announces the full length and sends only half: a cut connection.
async fn write_not_found(sock: &mut TcpStream, head_only: bool) {
    write_simple(sock, 404, "text/html", b"<h1>Not Found</h1>", "", head_only).await
}

async fn write_truncated(sock: &mut TcpStream, ctype: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(&body[..body.len() / 2]).await;
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

/// The web host's counterpart of [`api_prelude`]: counts the request (and, for audio, its
/// track), waits the latency, lets bot protection refuse a non-browser (not on audio: the
/// permalink plays the media CDN here) and applies a scripted fault. `None` means the answer
/// has been written; `Some(truncate)` that the caller answers.
async fn web_prelude(
    st: &Shared,
    sock: &mut TcpStream,
    req: &WebRequest,
    ep: Endpoint,
) -> Option<bool> {
    let (latency, fault, protected) = {
        let mut s = lock(st);
        let (latency, fault) = s.record(ep, &req.target, &req.seen);
        if ep == Endpoint::Audio
            && let Some(id) = s.track_at(&req.path)
        {
            *s.media_counts.entry(id).or_default() += 1;
        }
        (latency, fault, s.bot_protection && ep != Endpoint::Audio)
    };
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
            return Some(false);
        }
        Some(Fault::Truncated) => return Some(true),
        None => return Some(false),
    };
    write_simple(sock, status, ctype, body, &extra, req.head_only).await;
    None
}

async fn web_conn(st: Shared, mut sock: TcpStream) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let ep = classify(&req.path);
    let Some(truncate) = web_prelude(&st, &mut sock, &req, ep).await else {
        return;
    };
    match ep {
        Endpoint::WebRoot => {
            let html = root_html(&lock(&st).web);
            if truncate {
                write_truncated(&mut sock, "text/html; charset=utf-8", html.as_bytes()).await;
            } else {
                write_simple(
                    &mut sock,
                    200,
                    "text/html; charset=utf-8",
                    html.as_bytes(),
                    "",
                    req.head_only,
                )
                .await;
            }
        }
        Endpoint::Asset => {
            let name = req.path.rsplit('/').next().unwrap_or("");
            let js = asset_js(name, &lock(&st).client_id);
            match js {
                Some(js) if truncate => {
                    write_truncated(&mut sock, "application/javascript", js.as_bytes()).await
                }
                Some(js) => {
                    write_simple(
                        &mut sock,
                        200,
                        "application/javascript",
                        js.as_bytes(),
                        "",
                        req.head_only,
                    )
                    .await
                }
                None => {
                    write_simple(
                        &mut sock,
                        404,
                        "text/plain",
                        b"not found",
                        "",
                        req.head_only,
                    )
                    .await
                }
            }
        }
        Endpoint::Audio => serve_audio(&st, &mut sock, &req, truncate).await,
        Endpoint::ShortLink => {
            let code = req.path.rsplit('/').next().unwrap_or("");
            let target = lock(&st).short_links.get(code).cloned();
            match target {
                Some(to) => {
                    let location = format!("Location: {to}\r\n");
                    write_simple(&mut sock, 302, "text/html", b"", &location, req.head_only).await
                }
                None => write_not_found(&mut sock, req.head_only).await,
            }
        }
        _ => write_not_found(&mut sock, req.head_only).await,
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

async fn serve_audio(st: &Shared, sock: &mut TcpStream, req: &WebRequest, truncate: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A browser's user agent: the bot protection lets it through (see `bot_protection_...`).
    const BROWSER: &str = crate::source::soundcloud::DEFAULT_USER_AGENT;

    fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(BROWSER)
            .build()
            .unwrap()
    }

    async fn get(url: &str) -> (u16, String) {
        let r = browser().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn web_root_hides_the_id_in_the_last_script() {
        let sc = FakeSoundCloud::start().await;
        let (status, html) = get(&sc.web_base()).await;
        assert_eq!(status, 200);
        let re = regex::Regex::new(r#"<script[^>]+src="([^"]+)""#).unwrap();
        let srcs: Vec<String> = re.captures_iter(&html).map(|c| c[1].to_string()).collect();
        assert_eq!(srcs.len(), 3);
        let id_re = regex::Regex::new(r#"client_id\s*:\s*"([0-9a-zA-Z]{32})""#).unwrap();
        for (i, s) in srcs.iter().enumerate() {
            let (_, js) = get(s).await;
            let found = id_re.captures(&js).map(|c| c[1].to_string());
            if i == srcs.len() - 1 {
                assert_eq!(found, Some(sc.client_id()));
            } else {
                assert_eq!(found, None);
            }
        }
        let old = sc.client_id();
        let new = sc.rotate_client_id();
        assert_ne!(old, new);
        let (_, js) = get(srcs.last().unwrap()).await;
        assert!(js.contains(&new));
    }

    #[tokio::test]
    async fn public_hosts_are_named_in_answers_and_formats_resolve() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(3, "dj", "set");
        let (pid, tid) = (p.id, p.tracks[0].id);
        sc.add_playlist(p);
        sc.show_public_hosts(true);
        let url = sc.playlist_url(pid).unwrap();
        assert_eq!(url, "https://soundcloud.com/dj/sets/set");
        let (api, id) = (sc.api_base(), sc.client_id());
        let (s, body) = get(&format!("{api}/tracks/{tid}?client_id={id}")).await;
        assert_eq!(s, 200);
        let track: Value = serde_json::from_str(&body).unwrap();
        assert!(
            track["permalink_url"]
                .as_str()
                .unwrap()
                .starts_with(PUBLIC_WEB)
        );
        let media = track["media"]["transcodings"][1]["url"].as_str().unwrap();
        let path = media.strip_prefix(PUBLIC_API).expect("the public API host");
        let (s, body) = get(&format!("{api}{path}?client_id={id}")).await;
        assert_eq!(s, 200, "{body}");
        let stream: Value = serde_json::from_str(&body).unwrap();
        assert!(stream["url"].as_str().unwrap().ends_with(".mp3?fake=1"));
        assert_eq!(sc.requests(Endpoint::Media), 1);
        let (s, _) = get(&format!(
            "{api}/media/soundcloud:tracks:1/x/stream/hls?client_id={id}"
        ))
        .await;
        assert_eq!(s, 404, "an unknown track has no stream");
        sc.show_public_hosts(false);
        assert!(sc.playlist_url(pid).unwrap().starts_with(&sc.web_base()));
    }

    #[tokio::test]
    async fn api_needs_the_current_client_id_and_shapes_stubs() {
        let sc = FakeSoundCloud::start().await;
        let url = sc.add_playlist(playlist_of(8, "dj", "mix"));
        let api = sc.api_base();
        let (s, _) = get(&format!("{api}/resolve?url={url}")).await;
        assert_eq!(s, 401);
        let (s, body) = get(&format!(
            "{api}/resolve?url={url}&client_id={}",
            sc.client_id()
        ))
        .await;
        assert_eq!(s, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "playlist");
        assert_eq!(v["track_count"], 8);
        let tracks = v["tracks"].as_array().unwrap();
        assert!(tracks[4]["title"].is_string() && tracks[4]["media"].is_object());
        let mut keys: Vec<&str> = tracks[5]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, ["id", "kind", "monetization_model", "policy"]);
        assert_eq!(sc.requests(Endpoint::Resolve), 2);
    }

    #[tokio::test]
    async fn tracks_batch_refuses_51_ids_and_shuffles() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(60, "dj", "big");
        let ids: Vec<String> = p.tracks.iter().map(|t| t.id.to_string()).collect();
        sc.add_playlist(p);
        let base = format!("{}/tracks?client_id={}&ids=", sc.api_base(), sc.client_id());
        let (s, _) = get(&format!("{base}{}", ids[..51].join(","))).await;
        assert_eq!(s, 400);
        let (s, body) = get(&format!("{base}{}", ids[..50].join(","))).await;
        assert_eq!(s, 200);
        let got: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
            .unwrap()
            .iter()
            .map(|t| t["id"].to_string())
            .collect();
        assert_eq!(got.len(), 50);
        assert_ne!(got, ids[..50].to_vec(), "answers come shuffled");
        assert_eq!(sc.max_ids_per_request(), 51);
    }

    #[tokio::test]
    async fn secret_sets_and_private_tracks() {
        let sc = FakeSoundCloud::start().await;
        let p = FakePlaylist::new(77, "me", "hidden")
            .secret("s-AbC123")
            .full_prefix(0)
            .track(FakeTrack::new(1, "Open", "A"))
            .track(FakeTrack::new(2, "Closed", "B").private());
        let url = sc.add_playlist(p);
        assert!(url.ends_with("/me/sets/hidden/s-AbC123"), "{url}");
        let cid = sc.client_id();
        let api = sc.api_base();
        let public = url.trim_end_matches("/s-AbC123");
        assert_eq!(
            get(&format!("{api}/resolve?client_id={cid}&url={public}"))
                .await
                .0,
            404
        );
        assert_eq!(
            get(&format!("{api}/resolve?client_id={cid}&url={url}"))
                .await
                .0,
            200
        );
        let (_, b) = get(&format!("{api}/tracks?client_id={cid}&ids=1,2")).await;
        assert_eq!(serde_json::from_str::<Vec<Value>>(&b).unwrap().len(), 1);
        let (_, b) = get(&format!(
            "{api}/tracks?client_id={cid}&ids=1,2&playlistId=77&playlistSecretToken=s-AbC123"
        ))
        .await;
        assert_eq!(serde_json::from_str::<Vec<Value>>(&b).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn faults_are_consumed_in_order() {
        let sc = FakeSoundCloud::start().await;
        let url = sc.add_playlist(playlist_of(1, "dj", "one"));
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(3),
            },
            1,
        );
        sc.inject(Endpoint::Resolve, Fault::Truncated, 1);
        let u = format!(
            "{}/resolve?client_id={}&url={url}",
            sc.api_base(),
            sc.client_id()
        );
        let r = browser().get(&u).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let (s, body) = get(&u).await;
        assert_eq!(s, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err());
        let (s, body) = get(&u).await;
        assert_eq!(s, 200);
        assert!(serde_json::from_str::<Value>(&body).is_ok());
    }

    #[tokio::test]
    async fn audio_is_served_as_mpeg_with_ranges_and_policies() {
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(
            FakePlaylist::new(5, "u", "s")
                .track(FakeTrack::new(10, "Good", "Art").audio_size(5000))
                .track(FakeTrack::new(11, "Gone", "Art").deleted())
                .track(FakeTrack::new(12, "Far", "Art").policy(Policy::Block)),
        );
        let url = sc.track_url(10).unwrap();
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.headers()["content-type"], "audio/mpeg");
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), 5000);
        assert_eq!(&body[..4], &FRAME_HEADER);
        assert_eq!(&body[417..421], &FRAME_HEADER);
        assert_eq!(body.to_vec(), sc.audio_of(10).unwrap());
        let r = reqwest::Client::new()
            .get(&url)
            .header("Range", "bytes=4000-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
        let r = reqwest::Client::new().head(&url).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "5000");
        assert_eq!(get(&sc.track_url(11).unwrap()).await.0, 404);
        assert_eq!(get(&sc.track_url(12).unwrap()).await.0, 403);
        assert_eq!(sc.requests(Endpoint::Audio), 5);
    }

    #[tokio::test]
    async fn bandwidth_limit_slows_audio() {
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(
            FakePlaylist::new(5, "u", "s")
                .track(FakeTrack::new(10, "Slow", "A").audio_size(20_000)),
        );
        sc.set_bandwidth(Some(100_000));
        let t0 = std::time::Instant::now();
        let (s, _) = get(&sc.track_url(10).unwrap()).await;
        assert_eq!(s, 200);
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn a_hanging_track_sends_headers_then_stalls() {
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(
            FakePlaylist::new(5, "u", "s")
                .track(FakeTrack::new(10, "Stuck", "A").audio_size(100_000).hang()),
        );
        let r = reqwest::get(&sc.track_url(10).unwrap()).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body = tokio::time::timeout(Duration::from_millis(300), r.bytes()).await;
        assert!(body.is_err(), "the body never completes");
    }

    #[tokio::test]
    async fn latency_applies_to_every_request() {
        let sc = FakeSoundCloud::start().await;
        sc.set_latency(Duration::from_millis(80));
        let t0 = std::time::Instant::now();
        assert_eq!(
            get(&format!("{}/resolve?url=x", sc.api_base())).await.0,
            401
        );
        assert_eq!(get(&sc.web_base()).await.0, 200);
        assert!(t0.elapsed() >= Duration::from_millis(160));
        assert_eq!(sc.total_requests(), 2);
    }

    #[tokio::test]
    async fn bot_protection_refuses_non_browsers_with_an_html_403_and_logs_headers() {
        let sc = FakeSoundCloud::start().await;
        let url = sc.add_playlist(playlist_of(1, "dj", "one"));
        let track = sc
            .track_url(playlist_of(1, "dj", "one").tracks[0].id)
            .unwrap();
        let resolve = format!(
            "{}/resolve?client_id={}&url={url}",
            sc.api_base(),
            sc.client_id()
        );
        let bare = reqwest::Client::new();
        let curl = reqwest::Client::builder()
            .user_agent("curl/8.5")
            .build()
            .unwrap();
        for (client, target) in [
            (&bare, &resolve),
            (&curl, &resolve),
            (&bare, &sc.web_base()),
        ] {
            let r = client.get(target).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 403, "{target}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            assert!(r.text().await.unwrap().starts_with("<html>"));
        }
        // The permalink plays the media CDN: no bot protection there.
        assert_eq!(
            bare.get(&track).send().await.unwrap().status().as_u16(),
            200
        );
        let r = browser()
            .get(&resolve)
            .header("accept-language", "en-US,en;q=0.5")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let log = sc.request_log();
        assert_eq!(log[0].user_agent, None);
        assert_eq!(log[1].user_agent.as_deref(), Some("curl/8.5"));
        let last = log.last().unwrap();
        assert_eq!(last.user_agent.as_deref(), Some(BROWSER));
        assert_eq!(last.accept_language.as_deref(), Some("en-US,en;q=0.5"));
        // Switched off, a bare client reaches the API (and its client-id check) again.
        sc.set_bot_protection(false);
        assert_eq!(
            bare.get(&resolve).send().await.unwrap().status().as_u16(),
            200
        );
    }

    #[tokio::test]
    async fn injected_blocks_are_web_pages_and_a_stale_id_is_json() {
        let sc = FakeSoundCloud::start().await;
        let url = sc.add_playlist(playlist_of(1, "dj", "one"));
        let resolve = format!(
            "{}/resolve?client_id={}&url={url}",
            sc.api_base(),
            sc.client_id()
        );
        sc.inject(Endpoint::Resolve, Fault::BlockedHtml, 1);
        sc.inject(Endpoint::Resolve, Fault::BlockedXml, 1);
        sc.inject(Endpoint::Resolve, Fault::Status(403), 1);
        sc.inject(Endpoint::WebRoot, Fault::BlockedXml, 1);
        let answer = |r: reqwest::Response| async move {
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status().as_u16(), ct, r.text().await.unwrap())
        };
        let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
        assert_eq!((s, ct.starts_with("text/html")), (403, true));
        assert!(body.contains("captcha-delivery"), "{body}");
        let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
        assert_eq!((s, ct.as_str()), (403, "application/xml"));
        assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
        let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
        assert_eq!((s, ct.starts_with("application/json")), (403, true));
        assert!(serde_json::from_str::<Value>(&body).is_ok());
        let (s, ct, _) = answer(browser().get(sc.web_base()).send().await.unwrap()).await;
        assert_eq!((s, ct.as_str()), (403, "application/xml"));
        assert_eq!(get(&resolve).await.0, 200, "faults are used up");
    }

    #[tokio::test]
    async fn drm_label_tracks_list_clear_streams_that_answer_404() {
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(
            FakePlaylist::new(5, "u", "s")
                .track(FakeTrack::new(10, "Label", "A").drm())
                .track(FakeTrack::new(11, "Locked", "A").drm_only())
                .track(FakeTrack::new(12, "Upload", "A")),
        );
        let (api, cid) = (sc.api_base(), sc.client_id());
        let track = |id: u64| {
            let u = format!("{api}/tracks/{id}?client_id={cid}");
            async move { serde_json::from_str::<Value>(&get(&u).await.1).unwrap() }
        };
        let t = track(10).await;
        assert!(t["artwork_url"].as_str().unwrap().ends_with("-large.jpg"));
        let tcs = t["media"]["transcodings"].as_array().unwrap().clone();
        let protocols: Vec<&str> = tcs
            .iter()
            .map(|t| t["format"]["protocol"].as_str().unwrap())
            .collect();
        assert_eq!(
            protocols,
            [
                "hls",
                "progressive",
                "ctr-encrypted-hls",
                "cbc-encrypted-hls"
            ]
        );
        let cid = sc.client_id();
        for (tc, status) in tcs.iter().zip([404, 404, 200, 200]) {
            let u = format!("{}?client_id={cid}", tc["url"].as_str().unwrap());
            assert_eq!(get(&u).await.0, status, "{u}");
        }
        assert_eq!(get(&sc.track_url(10).unwrap()).await.0, 404, "no audio");
        assert_eq!(sc.media_requests(10), 5);
        let locked = track(11).await;
        let u = locked["media"]["transcodings"][0]["url"].as_str().unwrap();
        assert_eq!(get(&format!("{u}?client_id={cid}")).await.0, 200);
        assert_eq!(get(&sc.track_url(11).unwrap()).await.0, 404);
        let upload = track(12).await;
        let u = upload["media"]["transcodings"][0]["url"].as_str().unwrap();
        assert_eq!(get(&format!("{u}?client_id={cid}")).await.0, 200);
        assert_eq!(get(&sc.track_url(12).unwrap()).await.0, 200);
        assert_eq!((sc.media_requests(11), sc.media_requests(12)), (2, 2));
        sc.reset_counters();
        assert_eq!(sc.media_requests(10), 0);
    }

    /// What the downloader does: the real yt-dlp, generic extractor, against the fake's audio.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_ytdlp_downloads_the_fake_audio() {
        if std::process::Command::new("yt-dlp")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("yt-dlp not on PATH; skipped");
            return;
        }
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(FakePlaylist::new(5, "u", "s").track(FakeTrack::new(
            10,
            "Real Download",
            "Art",
        )));
        let dir = tempfile::tempdir().unwrap();
        let url = sc.track_url(10).unwrap();
        // First as a person would run it, to see what yt-dlp says.
        let plain = tokio::process::Command::new("yt-dlp")
            .args(["--ignore-config", "--no-update", "--no-cache-dir", "-o"])
            .arg(dir.path().join("plain-%(title)s.%(ext)s"))
            .arg(&url)
            .output()
            .await
            .unwrap();
        eprintln!(
            "plain yt-dlp stdout:\n{}\nplain yt-dlp stderr:\n{}",
            String::from_utf8_lossy(&plain.stdout),
            String::from_utf8_lossy(&plain.stderr)
        );
        assert!(plain.status.success());
        sc.reset_counters();
        let out = tokio::process::Command::new("yt-dlp")
            .args([
                "--ignore-config",
                "--no-update",
                "--no-cache-dir",
                "--print",
                "after_move:filepath",
                "-o",
            ])
            .arg(dir.path().join("%(title)s.%(ext)s"))
            .arg(&url)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("yt-dlp stdout:\n{stdout}\nyt-dlp stderr:\n{stderr}");
        assert!(out.status.success(), "yt-dlp failed: {stderr}");
        let path = std::path::PathBuf::from(stdout.trim());
        assert_eq!(path, dir.path().join("real-download.mp3"));
        assert_eq!(std::fs::read(&path).unwrap(), sc.audio_of(10).unwrap());
        // The generic extractor probes the URL once, then downloads it.
        let audio: Vec<String> = sc
            .request_log()
            .into_iter()
            .filter(|r| r.endpoint == Endpoint::Audio)
            .map(|r| r.target)
            .collect();
        assert_eq!(audio.len(), 2, "{audio:?}");
    }
}
