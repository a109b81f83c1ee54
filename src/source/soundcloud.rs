//! The native SoundCloud API v2 lister: why playlistd does not need yt-dlp to read a set.
//!
//! One `/resolve` gives the playlist with full objects for a first few tracks and stubs
//! (`id, kind, monetization_model, policy`) for the rest; the stubs are filled with
//! `/tracks?ids=` in batches of at most 50 (SoundCloud refuses more), so a 500-track set costs
//! about 11 requests. See `reference/soundcloud-api.md` for the contract, §9 for how the
//! service behaves since 2026.
//!
//! The listing is streamed (`list_streamed`): each `/tracks?ids=` answer is mapped and handed
//! on with the full objects before it, so a 10,000-track set holds its 10,000 ids (16 bytes
//! each) but only one batch of full tracks. `list` collects the stream for callers that want
//! the whole [`Listing`].
//!
//! Invariants:
//! - the output keeps playlist order, whatever order `/tracks?ids=` answers in, and lists a
//!   track id once even when the set repeats it;
//! - a requested id missing from an answer is `NotReturned`; BLOCK/SNIP/DRM-only tracks are
//!   marked, never fatal; `streamable: false` is only a hint and marks nothing; a track that
//!   lists clear and encrypted transcodings carries a [`DrmCheck`] (the sync asks its clear
//!   stream once, [`SoundCloud::check_stream`]);
//! - a stub batch that fails after retries leaves its tracks out and the listing
//!   `complete = false` (so the sync never reads them as removed);
//! - every request carries a browser's headers (`User-Agent`, `Accept`, `Accept-Language`,
//!   `Sec-Fetch-Mode`, as yt-dlp sends): bot protection refuses anything else;
//! - a 403 is read by its body: JSON (like a 401) means a stale client id, an HTML or XML page
//!   is bot protection, reported as [`SourceError::Blocked`] at once, with no re-scrape;
//! - a 429 is waited out with growing backoff (or its `Retry-After`) for up to
//!   [`RetryPolicy::rate_limit_budget`] in all (10 minutes), then reported; every wait, and
//!   every request in flight, ends at once when the caller's cancellation token fires;
//! - the client id comes from the config, else the on-disk cache, else yt-dlp's cache (the one
//!   the downloads' yt-dlp runs use), else a scrape of the web page; a scrape is written to both
//!   caches, so one run scrapes once. On a JSON 401/403 a scraped id is replaced once per API
//!   call (a configured one is reported as stale instead, since scraping cannot fix the user's
//!   file);
//! - the client id never appears in an error message.

use super::{ListingEnd, SourceError, error_chain, one_line};
use crate::config::SoundCloudConfig;
use crate::model::{
    DrmCheck, ListedTrack, Listing, Track, TrackKey, UnavailableReason, canonical_url,
};
use crate::ytdlp::cache::{parse_ytdlp_client_id, ytdlp_client_id_entry, ytdlp_client_id_file};
use regex::Regex;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The most ids `/tracks?ids=` accepts in one request.
pub const BATCH: usize = 50;
/// The client-id cache file, inside the cache directory.
pub const CACHE_FILE: &str = "soundcloud-client-id.json";

/// A current desktop Chrome on Windows, the commonest browser SoundCloud sees, in the form
/// yt-dlp sends (`utils/networking.py`, Chrome 145-151 as of yt-dlp 2026.10.26). Bot
/// protection refuses non-browser agents; `soundcloud.user_agent` replaces this when it ages.
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";
/// The rest of yt-dlp's standard headers, sent with every request as it does.
const ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const ACCEPT_LANGUAGE: &str = "en-US,en;q=0.5";

static SCRIPT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<script[^>]+src="([^"]+)""#).unwrap());
static CLIENT_ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"client_id\s*:\s*"([0-9a-zA-Z]{32})""#).unwrap());

/// How hard to retry one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request against 5xx, timeouts and cut connections, the first included.
    pub attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub base: Duration,
    pub max_backoff: Duration,
    /// Longest single wait after a 429 (`Retry-After`, or the growing backoff without one).
    pub max_retry_after: Duration,
    /// How long one request may spend waiting out 429s in all before it is given up. A 429
    /// storm is SoundCloud's ~600-requests-per-10-minutes window: dropping a batch after a few
    /// seconds would only make the listing incomplete for nothing.
    pub rate_limit_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            rate_limit_budget: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Milliseconds instead of seconds and minutes, for tests (the same shape of waits).
    pub const FOR_TESTS: RetryPolicy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_millis(50),
        rate_limit_budget: Duration::from_millis(300),
    };
}

/// The SoundCloud API v2 client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct SoundCloud {
    /// A client that failed to build (no TLS backend) is kept as its error, so that `new`
    /// stays infallible and the failure surfaces as a typed error on the first request.
    http: Result<reqwest::Client, SourceError>,
    api_base: Url,
    web_base: Url,
    configured_id: Option<String>,
    cache_path: PathBuf,
    /// yt-dlp's cache entry for the id, shared with the downloads' yt-dlp runs.
    ytdlp_cache_path: PathBuf,
    /// The scraped or cached id in use; the lock also serializes scrapes.
    current: tokio::sync::Mutex<Option<String>>,
    retry: RetryPolicy,
    timeout: Duration,
    requests: AtomicU64,
    /// False for dry runs, which write nothing anywhere, not even these caches.
    write_cache: bool,
}

/// One caller's requests: counted apart (the client is shared, so a global delta would mix
/// calls), and stopped by the caller's token.
#[derive(Default)]
struct Call {
    requests: AtomicU64,
    cancel: CancellationToken,
}

impl Call {
    fn new(cancel: &CancellationToken) -> Call {
        Call {
            requests: AtomicU64::new(0),
            cancel: cancel.clone(),
        }
    }
}

/// How one HTTP exchange ended, before the API layer interprets it.
enum Failure {
    /// 401, or 403 with a JSON (not a web page) body: the client id may be stale.
    Auth(u16),
    /// Another 4xx: not worth retrying.
    Status(u16),
    /// Retries ran out, the error cannot be retried, or it needs no interpretation (bot
    /// protection, cancellation).
    Gave(SourceError),
}

/// How one attempt ended, for the retry loop in [`SoundCloud::get`].
enum Attempt<T> {
    Done(T),
    /// Worth another attempt after a backoff (5xx, network, timeout, a cut body).
    Retry(SourceError),
    /// 429, with its `Retry-After` when it has one.
    RateLimited(Option<Duration>),
    Stop(Failure),
}

/// What a clear stream's transcoding URL said about a [`DrmCheck`] track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCheck {
    /// It answered with a stream URL: the track plays.
    Plays,
    /// It answered 404: the clear stream is gone, only the encrypted one plays (DRM).
    DrmProtected,
}

#[derive(Debug, Deserialize)]
struct RawPlaylist {
    kind: Option<String>,
    id: Option<u64>,
    title: Option<String>,
    permalink_url: Option<String>,
    secret_token: Option<String>,
    track_count: Option<u64>,
    #[serde(default)]
    tracks: Vec<RawEntry>,
}

/// What `/resolve` answered: a playlist, or (when it does not read as one) its `kind` and why.
enum Resolved {
    Playlist(RawPlaylist),
    Other { kind: String, reason: String },
}

/// One entry of a playlist's `tracks`, classified as it is read. A 10,000-track set is mostly
/// stubs; kept as `serde_json::Value`s they took several hundred bytes each for the whole
/// listing, as an id they take 16.
#[derive(Debug)]
enum RawEntry {
    /// A full track object.
    Full(Box<RawTrack>),
    /// A stub (or an object too broken to use): filled in with `/tracks?ids=`.
    Stub(u64),
    /// No numeric id: skipped.
    NoId,
}

impl<'de> Deserialize<'de> for RawEntry {
    /// Lenient per entry, like the listing itself: one odd entry never fails the playlist. Each
    /// entry passes through a `Value` of its own, dropped as soon as it is classified.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entry = Value::deserialize(d)?;
        let Some(id) = entry.get("id").and_then(Value::as_u64) else {
            return Ok(RawEntry::NoId);
        };
        let full = ["title", "permalink_url", "media"]
            .iter()
            .all(|k| entry.get(*k).is_some_and(|v| !v.is_null()));
        Ok(
            match full
                .then(|| serde_json::from_value::<RawTrack>(entry).ok())
                .flatten()
            {
                Some(t) => RawEntry::Full(Box::new(t)),
                None => RawEntry::Stub(id),
            },
        )
    }
}

/// An element of a `/tracks?ids=` answer: a track, or `None` for an element that is not one.
struct MaybeTrack(Option<RawTrack>);

impl<'de> Deserialize<'de> for MaybeTrack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(MaybeTrack(serde_json::from_value(v).ok()))
    }
}

#[derive(Debug, Deserialize)]
struct RawTrack {
    id: u64,
    title: Option<String>,
    permalink_url: Option<String>,
    duration: Option<u64>,
    full_duration: Option<u64>,
    genre: Option<String>,
    artwork_url: Option<String>,
    user: Option<RawUser>,
    publisher_metadata: Option<RawPublisher>,
    policy: Option<String>,
    media: Option<RawMedia>,
    /// Sent with a stream request, as SoundCloud's player does (yt-dlp does without).
    track_authorization: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    username: Option<String>,
    avatar_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPublisher {
    artist: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMedia {
    #[serde(default)]
    transcodings: Vec<RawTranscoding>,
}

#[derive(Debug, Deserialize)]
struct RawTranscoding {
    url: Option<String>,
    snipped: Option<bool>,
    format: Option<RawFormat>,
}

#[derive(Debug, Deserialize)]
struct RawFormat {
    protocol: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct CacheFile {
    client_id: String,
    /// The web site the id was scraped from: an id from the demo's fake is no use for the real
    /// site, and the other way round.
    web_base: String,
    saved_at: String,
}

impl SoundCloud {
    /// A client for `cfg`; the scraped client id is cached in `cache_dir` (and in yt-dlp's
    /// cache under it).
    pub fn new(cfg: &SoundCloudConfig, cache_dir: &Path) -> SoundCloud {
        let http = browser_headers(cfg.user_agent.as_deref().unwrap_or(DEFAULT_USER_AGENT))
            .and_then(|headers| {
                reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
                    .default_headers(headers)
                    .build()
                    .map_err(|e| SourceError::Setup {
                        reason: error_chain(&e),
                    })
            });
        SoundCloud {
            http,
            api_base: cfg.api_base.clone(),
            web_base: cfg.web_base.clone(),
            configured_id: cfg
                .client_id
                .as_ref()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            cache_path: cache_dir.join(CACHE_FILE),
            ytdlp_cache_path: ytdlp_client_id_file(cache_dir),
            current: tokio::sync::Mutex::new(None),
            retry: RetryPolicy::default(),
            timeout: cfg.timeout,
            requests: AtomicU64::new(0),
            write_cache: true,
        }
    }

    /// Reads the client-id caches but never writes them (for `--dry-run`).
    pub fn read_only(mut self) -> SoundCloud {
        self.write_cache = false;
        self
    }

    /// Replaces the retry policy (tests use millisecond backoffs).
    pub fn with_retry(mut self, retry: RetryPolicy) -> SoundCloud {
        self.retry = retry;
        self
    }

    /// HTTP requests this client has sent, scraping included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The client id in use, scraping it if needed (`playlistd check` shows where it came from).
    pub async fn client_id(&self) -> Result<String, SourceError> {
        self.client_id_with(&Call::default()).await
    }

    /// The URL actually resolved for `url`: query and fragment dropped (`?si=…` share
    /// tracking), trailing slashes dropped, an `m.`/`www.` host folded onto the web host. A
    /// secret set's `/s-…` segment is part of the path and stays.
    pub fn canonical_set_url(&self, url: &Url) -> Url {
        let mut u = url.clone();
        u.set_query(None);
        u.set_fragment(None);
        if let (Some(host), Some(web)) = (url.host_str(), self.web_base.host_str()) {
            let bare = host
                .strip_prefix("m.")
                .or_else(|| host.strip_prefix("www."))
                .unwrap_or(host);
            if bare.eq_ignore_ascii_case(web) && !host.eq_ignore_ascii_case(web) {
                let _ = u.set_host(Some(web));
            }
        }
        let path = u.path().trim_end_matches('/').to_string();
        u.set_path(&path);
        u
    }

    /// Lists a playlist ("set"), public or secret, in playlist order, whole. A collector over
    /// [`SoundCloud::list_streamed`] for the callers that want the whole listing (`check`,
    /// tests), which nothing cancels; the sync streams.
    pub async fn list(&self, url: &Url) -> Result<Listing, SourceError> {
        let mut tracks = Vec::new();
        let end = self
            .list_streamed(url, &CancellationToken::new(), |batch| {
                tracks.extend(batch);
                Ok::<(), SourceError>(())
            })
            .await?;
        Ok(end.into_listing(tracks))
    }

    /// Lists a playlist ("set") a batch at a time: `each` gets the tracks in playlist order,
    /// one call per `/tracks?ids=` answer (the full objects `/resolve` gave come with the batch
    /// they precede), so only the batch in hand is ever held as full tracks. The batches are
    /// fetched one after another: `each` runs between two requests. When `cancel` fires, the
    /// request or wait in progress ends and the listing returns [`SourceError::Cancelled`].
    pub async fn list_streamed<E: From<SourceError>>(
        &self,
        url: &Url,
        cancel: &CancellationToken,
        mut each: impl FnMut(Vec<ListedTrack>) -> Result<(), E>,
    ) -> Result<ListingEnd, E> {
        let call = Call::new(cancel);
        let target = self.canonical_set_url(url);
        let mut pl = self.resolve_set(&call, &target).await?;
        let entries = pl.tracks.len();
        let order = playlist_order(std::mem::take(&mut pl.tracks), &target);
        let stubs = order
            .iter()
            .filter(|e| matches!(e, RawEntry::Stub(_)))
            .count();
        let batches = stubs.div_ceil(BATCH);

        // A segment is the entries up to and including the next BATCH stubs: it is handed on
        // once its batch has answered, full objects and filled stubs in their places.
        let mut failures: Vec<String> = Vec::new();
        let mut order = order.into_iter().peekable();
        let mut batch_no = 0;
        while order.peek().is_some() {
            let mut segment: Vec<RawEntry> = Vec::new();
            let mut ids: Vec<u64> = Vec::with_capacity(BATCH);
            while ids.len() < BATCH {
                let Some(entry) = order.next() else { break };
                if let RawEntry::Stub(id) = entry {
                    ids.push(id);
                }
                segment.push(entry);
            }
            let answer = if ids.is_empty() {
                Some(HashMap::new())
            } else {
                batch_no += 1;
                let what = format!("track batch {batch_no} of {batches} of {target}");
                match self.fetch_batch(&call, &pl, &ids, &what).await? {
                    Ok(answer) => Some(answer),
                    Err(reason) => {
                        tracing::warn!(playlist = %target, "{reason}");
                        failures.push(reason);
                        None
                    }
                }
            };
            let tracks = fill_segment(segment, answer);
            if !tracks.is_empty() {
                each(tracks)?;
            }
        }

        let incomplete_reason = match failures.len() {
            0 => None,
            1 => Some(failures.remove(0)),
            n => Some(format!("{n} track batches failed; first: {}", failures[0])),
        };
        Ok(ListingEnd {
            title: pl.title.unwrap_or_default(),
            url: pl
                .permalink_url
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| target.to_string()),
            complete: incomplete_reason.is_none(),
            incomplete_reason,
            hidden: pl.track_count.unwrap_or(0).saturating_sub(entries as u64),
            requests: call.requests.load(Ordering::Relaxed),
        })
    }

    /// One `/tracks?ids=` batch: `Ok(Ok(tracks by id))`, `Ok(Err(why))` for a batch that failed
    /// (the listing goes on, incomplete), or `Err` for what no other request can get past
    /// either (a bad client id, bot protection, a cancel): the listing stops.
    async fn fetch_batch(
        &self,
        call: &Call,
        pl: &RawPlaylist,
        ids: &[u64],
        what: &str,
    ) -> Result<Result<HashMap<u64, RawTrack>, String>, SourceError> {
        let mut query = vec![(
            "ids",
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        )];
        // A secret set's private tracks come back only with the set's id and token.
        if let (Some(token), Some(pid)) = (&pl.secret_token, pl.id) {
            query.push(("playlistId", pid.to_string()));
            query.push(("playlistSecretToken", token.clone()));
        }
        let url = self.endpoint("tracks");
        match self.api(call, url, &query, what, parse_track_array).await {
            // Ids not asked for are ignored, as is a full entry's id.
            Ok(tracks) => Ok(Ok(tracks
                .into_iter()
                .filter(|t| ids.contains(&t.id))
                .map(|t| (t.id, t))
                .collect())),
            Err(Failure::Gave(
                e @ (SourceError::ClientId { .. }
                | SourceError::StaleConfiguredClientId { .. }
                | SourceError::Blocked { .. }
                | SourceError::Cancelled),
            )) => Err(e),
            Err(Failure::Gave(e)) => Ok(Err(e.to_string())),
            Err(Failure::Auth(status) | Failure::Status(status)) => Ok(Err(SourceError::Http {
                status,
                what: what.to_string(),
            }
            .to_string())),
        }
    }

    /// Asks a [`DrmCheck`] track's clear stream once: `GET <transcoding url>?client_id=…&
    /// track_authorization=…` answers `{"url": …}` for a track that plays and 404 for a DRM
    /// label track (reference §9). The transcoding URL is taken on the API host configured (in
    /// production the same host; a test or proxy `api_base` gets the same path).
    pub async fn check_stream(
        &self,
        track_id: u64,
        check: &DrmCheck,
        cancel: &CancellationToken,
    ) -> Result<StreamCheck, SourceError> {
        let what = format!("checking the stream of track {track_id}");
        let mut url = Url::parse(&check.transcoding_url).map_err(|e| SourceError::Decode {
            what: what.clone(),
            reason: format!("bad transcoding URL: {e}"),
        })?;
        if url.origin() != self.api_base.origin() {
            let path = url.path().to_string();
            url = self.api_base.clone();
            url.set_path(&path);
        }
        url.set_query(None);
        let query: Vec<(&str, String)> = check
            .track_authorization
            .iter()
            .map(|a| ("track_authorization", a.clone()))
            .collect();
        let call = Call::new(cancel);
        match self.api(&call, url, &query, &what, parse_stream).await {
            Ok(()) => Ok(StreamCheck::Plays),
            Err(Failure::Status(404)) => Ok(StreamCheck::DrmProtected),
            Err(Failure::Auth(status) | Failure::Status(status)) => {
                Err(SourceError::Http { status, what })
            }
            Err(Failure::Gave(e)) => Err(e),
        }
    }

    /// `/resolve`s a set URL to the playlist, or says why it is not one.
    async fn resolve_set(&self, call: &Call, target: &Url) -> Result<RawPlaylist, SourceError> {
        let what = format!("resolving {target}");
        let query = [("url", target.to_string())];
        let url = self.endpoint("resolve");
        let resolved = match self.api(call, url, &query, &what, parse_resolved).await {
            Ok(v) => v,
            Err(Failure::Status(404)) => {
                return Err(SourceError::NotFound {
                    url: target.to_string(),
                });
            }
            Err(Failure::Status(status) | Failure::Auth(status)) => {
                return Err(SourceError::Http { status, what });
            }
            Err(Failure::Gave(e)) => return Err(e),
        };
        let (kind, pl) = match resolved {
            Resolved::Playlist(pl) => (pl.kind.clone().unwrap_or_default(), Ok(pl)),
            Resolved::Other { kind, reason } => (kind, Err(reason)),
        };
        if kind != "playlist" {
            let kind = if kind.is_empty() {
                "something else".to_string()
            } else {
                kind
            };
            return Err(SourceError::NotAPlaylist {
                url: target.to_string(),
                kind,
            });
        }
        pl.map_err(|reason| SourceError::Decode { what, reason })
    }

    // -----------------------------------------------------------------------------------------
    // API calls and the client id

    /// An API endpoint's URL, below `api_base`.
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.api_base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}/{path}"));
        url
    }

    /// One API GET of `base` + `query` + the client id, refreshing a scraped id once on a
    /// JSON 401/403 (a web-page 403 is bot protection: [`SoundCloud::get`] reports it as is).
    async fn api<T>(
        &self,
        call: &Call,
        base: Url,
        query: &[(&str, String)],
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let mut id = self.client_id_with(call).await.map_err(Failure::Gave)?;
        let mut refreshed = false;
        loop {
            let mut url = base.clone();
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in query {
                    pairs.append_pair(k, v);
                }
                pairs.append_pair("client_id", &id);
            }
            match self.get(call, url, what, decode).await {
                Err(Failure::Auth(status)) => {
                    if self.configured_id.is_some() {
                        return Err(Failure::Gave(SourceError::StaleConfiguredClientId {
                            status,
                        }));
                    }
                    if refreshed {
                        return Err(Failure::Gave(SourceError::ClientId {
                            reason: format!(
                                "SoundCloud still answers HTTP {status} to {what} with a freshly scraped id"
                            ),
                        }));
                    }
                    tracing::info!("SoundCloud answered HTTP {status}: refreshing the client id");
                    id = self
                        .refresh_client_id(call, &id)
                        .await
                        .map_err(Failure::Gave)?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// The id in use: the configured one, else the one found before, else our cache, else
    /// yt-dlp's (a yt-dlp run may have scraped one), else a fresh scrape.
    async fn client_id_with(&self, call: &Call) -> Result<String, SourceError> {
        if let Some(id) = &self.configured_id {
            return Ok(id.clone());
        }
        let mut cur = self.current.lock().await;
        if let Some(id) = cur.as_ref() {
            return Ok(id.clone());
        }
        if let Some(id) = self.read_cache().await {
            *cur = Some(id.clone());
            return Ok(id);
        }
        if let Some(id) = self.read_ytdlp_cache().await {
            tracing::debug!("using the SoundCloud client id from yt-dlp's cache");
            *cur = Some(id.clone());
            return Ok(id);
        }
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// Replaces `stale` by a fresh scrape, unless another call already did. Neither cache may
    /// hand the stale id out again, even if the scrape fails.
    async fn refresh_client_id(&self, call: &Call, stale: &str) -> Result<String, SourceError> {
        let mut cur = self.current.lock().await;
        if let Some(id) = cur.as_ref().filter(|id| id.as_str() != stale) {
            return Ok(id.clone());
        }
        *cur = None;
        let _ = tokio::fs::remove_file(&self.cache_path).await;
        if self.write_cache && self.read_ytdlp_cache().await.as_deref() == Some(stale) {
            let _ = tokio::fs::remove_file(&self.ytdlp_cache_path).await;
        }
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// yt-dlp's method: the web page's `<script src>`s, last to first (the id lives in a late
    /// bundle), first `client_id:"<32 alphanumerics>"` wins. A script that fails to load is
    /// skipped, unless bot protection refused it (the rest would be refused too).
    async fn scrape(&self, call: &Call) -> Result<String, SourceError> {
        let web = self.web_base.as_str().trim_end_matches('/');
        let what = format!("loading {web} to find a client id");
        let html = match self
            .get(call, self.web_base.clone(), &what, parse_text)
            .await
        {
            Ok(h) => h,
            Err(Failure::Gave(SourceError::Http { status, .. }))
            | Err(Failure::Auth(status) | Failure::Status(status)) => {
                return Err(SourceError::ClientId {
                    reason: format!("{web} answered HTTP {status}"),
                });
            }
            // Already one line with its own fix: wrapped, it would carry two.
            Err(Failure::Gave(e)) => return Err(e),
        };
        let scripts: Vec<Url> = SCRIPT_RE
            .captures_iter(&html)
            .filter_map(|c| self.web_base.join(&c[1]).ok())
            .collect();
        if scripts.is_empty() {
            return Err(SourceError::ClientId {
                reason: format!("{web} has no <script src> to search"),
            });
        }
        for src in scripts.iter().rev() {
            let what = format!("loading script {src}");
            match self.get(call, src.clone(), &what, parse_text).await {
                Ok(js) => {
                    if let Some(c) = CLIENT_ID_RE.captures(&js) {
                        tracing::info!("scraped a SoundCloud client id from {src}");
                        return Ok(c[1].to_string());
                    }
                }
                Err(Failure::Gave(e @ (SourceError::Blocked { .. } | SourceError::Cancelled))) => {
                    return Err(e);
                }
                Err(_) => tracing::debug!("could not load {src}; trying the previous script"),
            }
        }
        Err(SourceError::ClientId {
            reason: format!(
                "none of the {} scripts on {web} contains a client_id",
                scripts.len()
            ),
        })
    }

    async fn read_cache(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(&self.cache_path).await.ok()?;
        let c: CacheFile = serde_json::from_str(&text).ok()?;
        let valid =
            c.client_id.len() == 32 && c.client_id.chars().all(|ch| ch.is_ascii_alphanumeric());
        (valid && c.web_base == self.web_base.as_str()).then_some(c.client_id)
    }

    /// yt-dlp's entry names no web site: an id from elsewhere (the real site, for the demo's
    /// fake) costs one 401 and a refresh, as a stale id does.
    async fn read_ytdlp_cache(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(&self.ytdlp_cache_path)
            .await
            .ok()?;
        parse_ytdlp_client_id(&text)
    }

    /// Writes the id to our cache and to yt-dlp's, each replaced atomically; a cache that
    /// cannot be written only costs a scrape next time.
    async fn write_cache(&self, id: &str) {
        if !self.write_cache {
            return;
        }
        let c = CacheFile {
            client_id: id.to_string(),
            web_base: self.web_base.to_string(),
            saved_at: chrono::Utc::now().to_rfc3339(),
        };
        let ours = serde_json::to_string_pretty(&c).expect("serializable");
        for (path, text) in [
            (&self.cache_path, ours),
            (&self.ytdlp_cache_path, ytdlp_client_id_entry(id)),
        ] {
            if let Err(e) = write_atomically(path, text.as_bytes()).await {
                tracing::warn!(
                    "cannot cache the SoundCloud client id in {}: {e}",
                    path.display()
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // HTTP with retries

    /// One GET with retries: 429 waits its `Retry-After` (capped) or a growing backoff, for up
    /// to the policy's rate-limit budget in all; 5xx, timeouts, connection errors and
    /// undecodable bodies (a cut connection) back off exponentially with jitter, `attempts`
    /// times. Other statuses return at once. Every wait and the exchange itself end when the
    /// call is cancelled.
    async fn get<T>(
        &self,
        call: &Call,
        url: Url,
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let http = self.http.as_ref().map_err(|e| Failure::Gave(e.clone()))?;
        let attempts = self.retry.attempts.max(1);
        let (mut failures, mut limited) = (0, 0);
        let mut waited = Duration::ZERO;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            call.requests.fetch_add(1, Ordering::Relaxed);
            let attempt = tokio::select! {
                a = self.attempt(http, &url, what, decode) => a,
                _ = call.cancel.cancelled() => return Err(Failure::Gave(SourceError::Cancelled)),
            };
            let (delay, rate_limited) = match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Stop(f) => return Err(f),
                Attempt::Retry(e) => {
                    failures += 1;
                    if failures >= attempts {
                        return Err(Failure::Gave(e));
                    }
                    tracing::debug!("{what}: attempt {failures} failed ({e}); retrying");
                    (self.backoff(failures, self.retry.max_backoff), false)
                }
                Attempt::RateLimited(after) => {
                    limited += 1;
                    let left = self.retry.rate_limit_budget.saturating_sub(waited);
                    if left.is_zero() {
                        let what = what.to_string();
                        return Err(Failure::Gave(SourceError::RateLimited { what, waited }));
                    }
                    // Never less than the base (nor zero): `Retry-After: 0` must not spin,
                    // and every wait spends budget, so the loop ends.
                    let wish = after
                        .map(|d| d.min(self.retry.max_retry_after))
                        .unwrap_or_else(|| self.backoff(limited, self.retry.max_retry_after))
                        .max(self.retry.base)
                        .max(Duration::from_millis(1));
                    // Said once per request: a storm may hold a sync for minutes.
                    if limited == 1 {
                        tracing::info!(
                            "{what}: SoundCloud answered 429 Too Many Requests; waiting, up to {} in all",
                            super::minutes(&self.retry.rate_limit_budget)
                        );
                    }
                    (wish.min(left), true)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = call.cancel.cancelled() => return Err(Failure::Gave(SourceError::Cancelled)),
            }
            if rate_limited {
                waited += delay;
            }
        }
    }

    /// One request and its answer, classified.
    async fn attempt<T>(
        &self,
        http: &reqwest::Client,
        url: &Url,
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Attempt<T> {
        let resp = match http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(self.transport_error(url, what, &e)),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => match resp.bytes().await {
                Err(e) => Attempt::Retry(self.transport_error(url, what, &e)),
                Ok(body) => match decode(&body) {
                    Ok(v) => Attempt::Done(v),
                    Err(reason) => Attempt::Retry(SourceError::Decode {
                        what: what.to_string(),
                        reason,
                    }),
                },
            },
            429 => Attempt::RateLimited(retry_after(resp.headers())),
            403 => {
                let page = is_web_page(resp.headers());
                let body = resp.bytes().await.unwrap_or_default();
                if page || body.trim_ascii_start().starts_with(b"<") {
                    Attempt::Stop(Failure::Gave(SourceError::Blocked {
                        what: what.to_string(),
                        host: url.host_str().unwrap_or("SoundCloud").to_string(),
                    }))
                } else {
                    Attempt::Stop(Failure::Auth(status))
                }
            }
            401 => Attempt::Stop(Failure::Auth(status)),
            500..=599 => Attempt::Retry(SourceError::Http {
                status,
                what: what.to_string(),
            }),
            _ => Attempt::Stop(Failure::Status(status)),
        }
    }

    fn transport_error(&self, url: &Url, what: &str, e: &reqwest::Error) -> SourceError {
        // Only the sources: reqwest's own text embeds the URL, and the URL the client id.
        let reason = match std::error::Error::source(e) {
            Some(s) => error_chain(s),
            None => "request failed".to_string(),
        };
        if e.is_timeout() {
            SourceError::Timeout {
                what: what.to_string(),
                secs: self.timeout.as_secs().max(1),
            }
        } else if e.is_connect() {
            // DNS lookups and refused or unroutable connections: the host was never reached.
            SourceError::Unreachable {
                host: url.host_str().unwrap_or("SoundCloud").to_string(),
                what: what.to_string(),
                reason,
            }
        } else {
            SourceError::Network {
                what: what.to_string(),
                reason,
            }
        }
    }

    /// Full jitter over an exponential ceiling: between half and all of `base * 2^(n-1)`,
    /// at most `cap`.
    fn backoff(&self, attempt: u32, cap: Duration) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(1 << (attempt.max(1) - 1).min(16))
            .min(cap);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// yt-dlp's standard headers (`utils/networking.py::std_headers`) with `user_agent`: what a
/// browser sends, so bot protection lets the request through.
pub(crate) fn browser_headers(user_agent: &str) -> Result<HeaderMap, SourceError> {
    let mut h = HeaderMap::new();
    let ua = HeaderValue::from_str(user_agent).map_err(|_| SourceError::Setup {
        reason: "soundcloud.user_agent is not a valid header value".into(),
    })?;
    h.insert(header::USER_AGENT, ua);
    h.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
    h.insert(
        header::ACCEPT_LANGUAGE,
        HeaderValue::from_static(ACCEPT_LANGUAGE),
    );
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    Ok(h)
}

/// An HTML or XML answer: a page for a browser (a bot-protection challenge, a CDN's
/// `AccessDenied`), never the API's JSON error.
fn is_web_page(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("html") || ct.contains("xml")
        })
}

/// [`crate::util::write_atomically`] off the async threads, its folder made first.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::util::write_atomically(&path, &bytes, 0o600)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .num_seconds()
        .max(0);
    Some(Duration::from_secs(secs as u64))
}

/// `/resolve`'s answer, read straight into [`RawPlaylist`] (never held whole as a `Value`).
/// What does not read as a playlist is parsed again as plain JSON for its `kind`; only JSON
/// that does not parse at all is an error here (and retried, as a cut connection).
fn parse_resolved(body: &[u8]) -> Result<Resolved, String> {
    match serde_json::from_slice::<RawPlaylist>(body) {
        Ok(pl) => Ok(Resolved::Playlist(pl)),
        Err(e) => {
            #[derive(Deserialize)]
            struct Kind {
                kind: Option<Value>,
            }
            let k: Kind = serde_json::from_slice(body).map_err(|e| one_line(&e.to_string()))?;
            Ok(Resolved::Other {
                kind: k
                    .kind
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                reason: one_line(&e.to_string()),
            })
        }
    }
}

fn parse_text(body: &[u8]) -> Result<String, String> {
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// `/tracks?ids=` answers a bare array; an element that is not a track (no id) is dropped, so
/// its id reads as not returned rather than failing the batch.
fn parse_track_array(body: &[u8]) -> Result<Vec<RawTrack>, String> {
    match serde_json::from_slice::<Vec<MaybeTrack>>(body) {
        Ok(items) => Ok(items.into_iter().filter_map(|t| t.0).collect()),
        // Well-formed JSON of another shape says so; broken JSON keeps the parser's words.
        Err(e) => Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => "expected a JSON array of tracks".to_string(),
                Err(_) => one_line(&e.to_string()),
            },
        ),
    }
}

/// A transcoding URL's answer, `{"url": "<signed stream URL>"}`: only that it is one matters.
fn parse_stream(body: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Stream {
        #[allow(dead_code)]
        url: String,
    }
    serde_json::from_slice::<Stream>(body)
        .map(|_| ())
        .map_err(|e| one_line(&e.to_string()))
}

/// The playlist's entries in order, each id once, entries without an id dropped; a stub is
/// 16 bytes here until its batch is fetched.
fn playlist_order(mut entries: Vec<RawEntry>, target: &Url) -> Vec<RawEntry> {
    let mut seen = HashSet::with_capacity(entries.len());
    entries.retain(|entry| match entry {
        RawEntry::Full(t) => seen.insert(t.id),
        RawEntry::Stub(id) => seen.insert(*id),
        RawEntry::NoId => {
            tracing::warn!(playlist = %target, "skipping a playlist entry without a numeric id");
            false
        }
    });
    entries
}

/// A segment's tracks in order once its batch answered (`None`: the batch failed). A failed
/// batch's stubs are left out: the listing is incomplete, so they are neither listed nor
/// removed. A stub missing from a good answer is `NotReturned`.
fn fill_segment(
    segment: Vec<RawEntry>,
    mut answer: Option<HashMap<u64, RawTrack>>,
) -> Vec<ListedTrack> {
    segment
        .into_iter()
        .filter_map(|entry| match entry {
            RawEntry::Full(t) => Some(map_track(*t)),
            RawEntry::Stub(id) => {
                let got = answer.as_mut()?.remove(&id);
                Some(match got {
                    Some(t) => map_track(t),
                    None => ListedTrack {
                        track: bare_track(id),
                        unavailable: Some(UnavailableReason::NotReturned),
                        drm_check: None,
                    },
                })
            }
            RawEntry::NoId => None,
        })
        .collect()
}

/// The trimmed text, or `None` when there is none. Text already trimmed (nearly all of it) is
/// kept as it is rather than copied.
fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| {
        if s.trim().len() == s.len() {
            s
        } else {
            s.trim().to_string()
        }
    })
    .filter(|s| !s.is_empty())
}

/// A track known only by its id (a stub SoundCloud would not fill in).
fn bare_track(id: u64) -> Track {
    Track {
        key: TrackKey::soundcloud(id),
        soundcloud_id: Some(id),
        title: String::new(),
        artist: String::new(),
        url: String::new(),
        download_url: String::new(),
        duration_ms: None,
        genre: None,
        artwork_url: None,
    }
}

/// What the listing alone says about a track: unavailable (and why), or playable, or (a track
/// that lists clear transcodings beside encrypted ones, as DRM label tracks do since 2026)
/// playable only if its clear stream answers, which the [`DrmCheck`] asks. `streamable: false`
/// decides nothing: such tracks often play, so the page is created and the download decides.
fn availability(t: &RawTrack) -> (Option<UnavailableReason>, Option<DrmCheck>) {
    let policy = t.policy.as_deref().unwrap_or("");
    let transcodings = t
        .media
        .as_ref()
        .map(|m| m.transcodings.as_slice())
        .unwrap_or(&[]);
    let preview = |tc: &RawTranscoding| {
        tc.snipped == Some(true) || tc.url.as_deref().is_some_and(|u| u.contains("/preview/"))
    };
    let protocol = |tc: &RawTranscoding| {
        tc.format
            .as_ref()
            .and_then(|f| f.protocol.as_deref())
            .unwrap_or("")
            .to_string()
    };
    let encrypted = |tc: &RawTranscoding| {
        let p = protocol(tc);
        p.starts_with("ctr-") || p.starts_with("cbc-")
    };
    if policy.eq_ignore_ascii_case("BLOCK") {
        return (Some(UnavailableReason::GeoBlocked), None);
    }
    if policy.eq_ignore_ascii_case("SNIP")
        || (!transcodings.is_empty() && transcodings.iter().all(preview))
    {
        return (Some(UnavailableReason::PreviewOnly), None);
    }
    if !transcodings.iter().any(encrypted) {
        return (None, None);
    }
    // The clear full-length stream to ask: HLS first, as nearly every track has one now.
    let clear = |want: &str| {
        transcodings
            .iter()
            .filter(|tc| !encrypted(tc) && !preview(tc))
            .find(|tc| want.is_empty() || protocol(tc) == want)
            .and_then(|tc| tc.url.clone())
    };
    match clear("hls")
        .or_else(|| clear("progressive"))
        .or_else(|| clear(""))
    {
        Some(url) => (
            None,
            Some(DrmCheck {
                transcoding_url: url,
                track_authorization: t.track_authorization.clone(),
            }),
        ),
        None => (Some(UnavailableReason::DrmOnly), None),
    }
}

/// SoundCloud's image URLs name their size: `-large` is 100×100 px, too small for a page
/// cover. The same image exists at `-t500x500` (what yt-dlp and scdl use); other URLs are kept.
fn artwork_500(url: String) -> String {
    match url.rfind("-large.") {
        Some(i) if !url[i..].contains('/') => {
            format!("{}-t500x500.{}", &url[..i], &url[i + "-large.".len()..])
        }
        _ => url,
    }
}

fn map_track(mut raw: RawTrack) -> ListedTrack {
    let (unavailable, drm_check) = availability(&raw);
    raw.track_authorization = None;
    let user = raw.user.unwrap_or(RawUser {
        username: None,
        avatar_url: None,
    });
    let artist = non_empty(raw.publisher_metadata.and_then(|p| p.artist))
        .or_else(|| non_empty(user.username))
        .unwrap_or_default();
    let permalink = raw.permalink_url.unwrap_or_default();
    let artwork = non_empty(raw.artwork_url).or_else(|| non_empty(user.avatar_url));
    ListedTrack {
        track: Track {
            key: TrackKey::soundcloud(raw.id),
            soundcloud_id: Some(raw.id),
            title: raw.title.unwrap_or_default(),
            artist,
            url: canonical_url(&permalink),
            download_url: permalink,
            duration_ms: raw.full_duration.or(raw.duration).filter(|d| *d > 0),
            genre: non_empty(raw.genre),
            artwork_url: artwork.map(artwork_500),
        },
        unavailable,
        drm_check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::FakeSoundCloudConfig;
    use playlistd_fakes::soundcloud::{
        Endpoint, FakePlaylist, FakeSoundCloud, FakeTrack, Fault, Policy, playlist_of,
    };
    use std::time::Instant;

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
        rate_limit_budget: Duration::from_secs(2),
    };

    fn client(sc: &FakeSoundCloud, cache: &Path) -> SoundCloud {
        SoundCloud::new(&sc.config(), cache).with_retry(FAST)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn ids_of(l: &Listing) -> Vec<u64> {
        l.tracks
            .iter()
            .map(|t| t.track.soundcloud_id.unwrap())
            .collect()
    }

    #[tokio::test]
    async fn big_public_set_costs_one_resolve_and_three_batches_in_order() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(120, "all-lo", "big-set");
        let expected: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let l = c.list(&url(&set)).await.unwrap();
        assert_eq!(ids_of(&l), expected);
        assert!(l.complete && l.incomplete_reason.is_none());
        assert!(
            l.tracks
                .iter()
                .all(|t| t.unavailable.is_none() && !t.track.title.is_empty())
        );
        assert_eq!(sc.requests(Endpoint::Resolve), 1);
        assert_eq!(sc.requests(Endpoint::Tracks), 3);
        assert!(sc.max_ids_per_request() <= BATCH);
        // Scraping costs the page and the last script (which has the id), then 4 API calls.
        assert_eq!(sc.requests(Endpoint::WebRoot), 1);
        assert_eq!(sc.requests(Endpoint::Asset), 1);
        assert_eq!(l.requests, 6);
        assert_eq!(c.requests(), 6);
        assert_eq!(l.title, "Big Set");
        assert_eq!(l.hidden, 0);
        // Mapping of one track.
        let t = &l.tracks[7].track;
        assert_eq!(t.key, TrackKey::soundcloud(expected[7]));
        assert_eq!(t.title, "Big Set 008");
        assert_eq!(t.artist, "Lo Collective");
        assert_eq!(
            t.url,
            format!("{}/lo-collective/big-set-008", sc.web_base())
        );
        assert_eq!(t.download_url, t.url);
        assert!(t.duration_ms.unwrap() >= 180_000);
        assert_eq!(t.genre.as_deref(), Some("Ambient"));
        assert!(
            t.artwork_url
                .as_deref()
                .unwrap()
                .starts_with("https://i1.sndcdn.com/artworks-")
        );
    }

    #[tokio::test]
    async fn client_id_is_cached_on_disk_for_the_next_instance() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(3, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        assert_eq!(
            client(&sc, cache.path()).client_id().await.unwrap(),
            sc.client_id()
        );
        let text = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
        assert!(text.contains(&sc.client_id()));
        let web_before = sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset);
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        assert_eq!(l.tracks.len(), 3);
        assert_eq!(
            sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
            web_before
        );
        assert_eq!(l.requests, 1);
    }

    #[tokio::test]
    async fn rotated_client_id_is_refreshed_once() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(50, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        c.list(&url(&set)).await.unwrap();
        let new_id = sc.rotate_client_id();
        sc.reset_counters();
        let l = c.list(&url(&set)).await.unwrap();
        assert_eq!(l.tracks.len(), 50);
        // 401 on resolve, page + script, resolve again, one batch.
        assert_eq!(sc.requests(Endpoint::Resolve), 2);
        assert_eq!(sc.requests(Endpoint::WebRoot), 1);
        assert_eq!(sc.requests(Endpoint::Tracks), 1);
        assert_eq!(l.requests, 5);
        assert_eq!(c.client_id().await.unwrap(), new_id);
        let cached = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
        assert!(cached.contains(&new_id));
    }

    #[tokio::test]
    async fn stale_cache_file_is_replaced() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(2, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        client(&sc, cache.path()).client_id().await.unwrap();
        sc.rotate_client_id();
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        assert_eq!(l.tracks.len(), 2);
    }

    #[tokio::test]
    async fn configured_stale_client_id_says_how_to_fix_it() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(2, "u", "s"));
        let mut cfg = sc.config();
        cfg.client_id = Some("x".repeat(32));
        let cache = tempfile::tempdir().unwrap();
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        let e = c.list(&url(&set)).await.unwrap_err();
        assert_eq!(e, SourceError::StaleConfiguredClientId { status: 401 });
        assert!(e.to_string().contains("remove soundcloud.client_id"), "{e}");
        assert_eq!(sc.requests(Endpoint::WebRoot), 0);
        cfg.client_id = Some(sc.client_id());
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        assert_eq!(c.list(&url(&set)).await.unwrap().tracks.len(), 2);
    }

    #[tokio::test]
    async fn secret_set_unlocks_its_private_tracks() {
        let sc = FakeSoundCloud::start().await;
        let p = FakePlaylist::new(4242, "me", "drafts")
            .secret("s-Zq9XyW3")
            .full_prefix(1)
            .track(FakeTrack::new(1, "Public One", "A"))
            .track(FakeTrack::new(2, "Private Two", "B").private())
            .track(FakeTrack::new(3, "Public Three", "C"));
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        // As a user would paste it: share tracking and a trailing slash.
        let l = c
            .list(&url(&format!("{set}/?si=abc123&utm_source=clipboard")))
            .await
            .unwrap();
        assert_eq!(ids_of(&l), [1, 2, 3]);
        assert!(
            l.tracks.iter().all(|t| t.unavailable.is_none()),
            "{:?}",
            l.tracks
        );
        assert_eq!(l.tracks[1].track.title, "Private Two");
        assert!(
            l.tracks[1].track.url.contains("/s-"),
            "a private track's permalink carries its token"
        );
        let log = sc.request_log();
        let batch = log.iter().find(|r| r.endpoint == Endpoint::Tracks).unwrap();
        assert!(batch.target.contains("playlistId=4242"), "{}", batch.target);
        assert!(
            batch.target.contains("playlistSecretToken=s-Zq9XyW3"),
            "{}",
            batch.target
        );
        let resolve = log
            .iter()
            .find(|r| r.endpoint == Endpoint::Resolve)
            .unwrap();
        assert!(
            resolve.target.contains("s-Zq9XyW3") && !resolve.target.contains("si%3D"),
            "{}",
            resolve.target
        );
        // Without its token the set does not exist.
        let public = set.trim_end_matches("/s-Zq9XyW3");
        assert!(matches!(
            c.list(&url(public)).await,
            Err(SourceError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn unavailable_tracks_are_marked_and_the_rest_listed() {
        let sc = FakeSoundCloud::start().await;
        let p = FakePlaylist::new(9, "u", "mixed")
            .full_prefix(2)
            .track(FakeTrack::new(1, "Blocked Full", "A").policy(Policy::Block))
            .track(FakeTrack::new(2, "Snipped Full", "A").policy(Policy::Snip))
            .track(FakeTrack::new(3, "Fine", "A"))
            .track(FakeTrack::new(4, "Gone", "A").deleted())
            .track(FakeTrack::new(5, "Blocked Stub", "A").policy(Policy::Block))
            .track(FakeTrack::new(6, "Drm", "A").drm_only())
            .track(FakeTrack::new(7, "Private Elsewhere", "A").private())
            .track(FakeTrack::new(8, "Monetized", "A").policy(Policy::Monetize))
            .track(FakeTrack::new(9, "Muted", "A").not_streamable())
            .track(FakeTrack::new(10, "Label", "A").drm())
            .hidden(2);
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        use UnavailableReason::*;
        let reasons: Vec<Option<UnavailableReason>> =
            l.tracks.iter().map(|t| t.unavailable).collect();
        assert_eq!(
            reasons,
            [
                Some(GeoBlocked),
                Some(PreviewOnly),
                None,
                Some(NotReturned),
                Some(GeoBlocked),
                Some(DrmOnly),
                Some(NotReturned),
                None,
                None,
                None,
            ]
        );
        // `streamable: false` is a hint: nothing is decided without a download.
        assert!(l.tracks[8].drm_check.is_none());
        // A DRM label track is known only by asking its clear stream: it carries the check.
        let check = l.tracks[9].drm_check.as_ref().expect("a DRM check");
        assert!(
            check.transcoding_url.ends_with("/stream/hls"),
            "{}",
            check.transcoding_url
        );
        assert!(l.tracks.iter().take(9).all(|t| t.drm_check.is_none()));
        assert!(l.complete);
        assert_eq!(l.hidden, 2);
        assert_eq!(l.tracks[3].track.key, TrackKey::soundcloud(4));
        assert_eq!(l.tracks[4].track.title, "Blocked Stub");
        // SNIP reports the real length, not the 30 s preview.
        assert_eq!(
            l.tracks[1].track.duration_ms,
            Some(FakeTrack::new(2, "x", "y").duration_ms)
        );
    }

    #[tokio::test]
    async fn the_stream_hands_on_one_batch_at_a_time_in_order_and_stops_when_told() {
        let sc = FakeSoundCloud::start().await;
        // 5 full objects, then 115 stubs: three batches.
        let p = playlist_of(120, "u", "s");
        let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let mut sizes = vec![];
        let mut ids = vec![];
        let end = c
            .list_streamed(&url(&set), &CancellationToken::new(), |batch| {
                sizes.push(batch.len());
                ids.extend(batch.iter().map(|t| t.track.soundcloud_id.unwrap()));
                Ok::<(), SourceError>(())
            })
            .await
            .unwrap();
        assert_eq!(sizes, [5 + BATCH, BATCH, 15]);
        assert_eq!(ids, all);
        assert!(end.complete && end.incomplete_reason.is_none());
        assert_eq!(sc.requests(Endpoint::Tracks), 3);
        // The whole listing is the stream collected.
        let whole = c.list(&url(&set)).await.unwrap();
        assert_eq!(ids_of(&whole), all);

        // An error from the consumer ends the listing there: no further batch is fetched.
        let before = sc.requests(Endpoint::Tracks);
        let e = c
            .list_streamed(&url(&set), &CancellationToken::new(), |_| {
                Err(SourceError::Setup {
                    reason: "stop".into(),
                })
            })
            .await
            .unwrap_err();
        assert_eq!(
            e,
            SourceError::Setup {
                reason: "stop".into()
            }
        );
        assert_eq!(sc.requests(Endpoint::Tracks), before + 1);
    }

    #[tokio::test]
    async fn failing_batch_makes_the_listing_incomplete_without_marking_tracks() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(155, "u", "s");
        let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        c.client_id().await.unwrap();
        // 150 stubs: the first batch succeeds, the second fails on all 4 attempts, the third
        // succeeds.
        sc.inject(Endpoint::Tracks, Fault::Delay(Duration::ZERO), 1);
        sc.inject(Endpoint::Tracks, Fault::Status(500), 4);
        let l = c.list(&url(&set)).await.unwrap();
        assert!(!l.complete);
        let reason = l.incomplete_reason.as_deref().unwrap();
        assert!(
            reason.contains("HTTP 500") && reason.contains("batch 2 of 3"),
            "{reason}"
        );
        assert!(l.tracks.iter().all(|t| t.unavailable.is_none()));
        let expected: Vec<u64> = all[..55].iter().chain(&all[105..]).copied().collect();
        assert_eq!(ids_of(&l), expected);
        assert_eq!(sc.requests(Endpoint::Tracks), 1 + 4 + 1);
    }

    #[tokio::test]
    async fn rate_limit_waits_retry_after_then_succeeds() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(3, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        c.client_id().await.unwrap();
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(1),
            },
            1,
        );
        let t0 = Instant::now();
        let l = c.list(&url(&set)).await.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(950),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(l.tracks.len(), 3);
        assert_eq!(sc.requests(Endpoint::Resolve), 2);
        // A long Retry-After is capped, and once the budget is spent, reported: four waits
        // of 50 ms fill 200 ms, the fifth 429 ends it.
        let capped = RetryPolicy {
            max_retry_after: Duration::from_millis(50),
            rate_limit_budget: Duration::from_millis(200),
            ..FAST
        };
        let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(capped);
        sc.reset_counters();
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(3600),
            },
            1000,
        );
        let t0 = Instant::now();
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(
            e,
            SourceError::RateLimited {
                what: format!("resolving {set}"),
                waited: Duration::from_millis(200)
            }
        );
        assert_eq!(sc.requests(Endpoint::Resolve), 5);
    }

    #[tokio::test]
    async fn truncated_json_and_server_errors_are_retried() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(70, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        sc.inject(Endpoint::Resolve, Fault::Truncated, 1);
        sc.inject(Endpoint::Resolve, Fault::Status(503), 1);
        sc.inject(Endpoint::Tracks, Fault::Truncated, 1);
        sc.inject(Endpoint::Tracks, Fault::Status(502), 1);
        sc.inject(Endpoint::WebRoot, Fault::Status(500), 1);
        let l = c.list(&url(&set)).await.unwrap();
        assert!(l.complete);
        assert_eq!(l.tracks.len(), 70);
        assert_eq!(sc.requests(Endpoint::Resolve), 3);
        // Two batches (65 stubs); the first needed three attempts.
        assert_eq!(sc.requests(Endpoint::Tracks), 3 + 1);
    }

    #[tokio::test]
    async fn unknown_set_is_not_found_with_the_fix() {
        let sc = FakeSoundCloud::start().await;
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let e = c
            .list(&url(&format!("{}/nobody/sets/nothing", sc.web_base())))
            .await
            .unwrap_err();
        assert!(matches!(e, SourceError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("secret /s-"), "{e}");
        assert_eq!(sc.requests(Endpoint::Resolve), 1, "404 is not retried");
    }

    #[tokio::test]
    async fn deleted_or_privatized_set_is_not_found() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(3, "u", "s");
        let pid = p.id;
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let secret = sc.make_private(pid).unwrap();
        assert!(matches!(
            c.list(&url(&set)).await,
            Err(SourceError::NotFound { .. })
        ));
        assert_eq!(c.list(&url(&secret)).await.unwrap().tracks.len(), 3);
        sc.delete_playlist(pid);
        assert!(matches!(
            c.list(&url(&secret)).await,
            Err(SourceError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_track_or_user_url_is_not_a_playlist() {
        let sc = FakeSoundCloud::start().await;
        sc.add_playlist(playlist_of(1, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let track = sc.track_url(playlist_of(1, "u", "s").tracks[0].id).unwrap();
        let e = c.list(&url(&track)).await.unwrap_err();
        assert!(e.to_string().contains("is a track, not a playlist"), "{e}");
        let user = format!("{}/u", sc.web_base());
        let e = c.list(&url(&user)).await.unwrap_err();
        assert!(e.to_string().contains("is a user, not a playlist"), "{e}");
    }

    #[tokio::test]
    async fn empty_set_and_all_full_and_all_stub_sets() {
        let sc = FakeSoundCloud::start().await;
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let empty = sc.add_playlist(FakePlaylist::new(1, "u", "empty"));
        let l = c.list(&url(&empty)).await.unwrap();
        assert!(l.tracks.is_empty() && l.complete);
        assert_eq!(l.requests, 3, "scrape (2) + resolve, no batch");
        let stubs = sc.add_playlist(playlist_of(51, "u", "stubs").full_prefix(0));
        let l = c.list(&url(&stubs)).await.unwrap();
        assert_eq!(l.tracks.len(), 51);
        assert_eq!(l.requests, 3, "resolve + 50 + 1");
        let full = sc.add_playlist(playlist_of(4, "u", "full"));
        assert_eq!(c.list(&url(&full)).await.unwrap().requests, 1);
    }

    #[tokio::test]
    async fn artist_falls_back_to_uploader_and_artwork_to_avatar() {
        let sc = FakeSoundCloud::start().await;
        let p = FakePlaylist::new(3, "u", "s")
            .full_prefix(1)
            .track(FakeTrack::new(1, "One", "Label Artist").uploader("Uploader Name"))
            .track(
                FakeTrack::new(2, "Two", "x")
                    .uploader("Only Uploader")
                    .no_publisher_artist()
                    .artwork(None),
            )
            .track(
                FakeTrack::new(3, "Three", "x")
                    .no_publisher_artist()
                    .artwork(None)
                    .avatar(None)
                    .genre(""),
            );
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        assert_eq!(l.tracks[0].track.artist, "Label Artist");
        assert_eq!(l.tracks[1].track.artist, "Only Uploader");
        let avatar = l.tracks[1].track.artwork_url.as_deref().unwrap();
        assert!(avatar.contains("avatars-"), "{avatar}");
        assert!(
            avatar.ends_with("-t500x500.jpg"),
            "the fallback is 500 px too: {avatar}"
        );
        let cover = l.tracks[0].track.artwork_url.as_deref().unwrap();
        assert!(cover.ends_with("-t500x500.jpg"), "{cover}");
        assert_eq!(l.tracks[2].track.artwork_url, None);
        assert_eq!(l.tracks[2].track.genre, None);
    }

    #[tokio::test]
    async fn duplicate_entries_are_listed_once() {
        let sc = FakeSoundCloud::start().await;
        let t = FakeTrack::new(5, "Twice", "A");
        let set = sc.add_playlist(
            FakePlaylist::new(3, "u", "s")
                .full_prefix(0)
                .track(t.clone())
                .track(FakeTrack::new(6, "Once", "B"))
                .track(t),
        );
        let cache = tempfile::tempdir().unwrap();
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        assert_eq!(ids_of(&l), [5, 6]);
    }

    #[tokio::test]
    async fn an_unreachable_host_says_so_with_one_fix() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(1, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = sc.config();
        cfg.web_base = url("http://127.0.0.1:9/");
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(matches!(e, SourceError::Unreachable { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.starts_with(
                "cannot reach 127.0.0.1 (loading http://127.0.0.1:9 to find a client id): "
            ),
            "{m}"
        );
        assert!(m.contains("check the network connection"), "{m}");
        assert!(!m.contains('\n'));
        assert_eq!(m.matches("(fix: ").count(), 1, "{m}");
        assert!(e.is_transient());
        // (A name that does not resolve is a connect error too in reqwest; no test looks up
        // a name, since none may leave the machine.)
    }

    #[test]
    fn covers_are_asked_at_500_px() {
        let a = |u: &str| artwork_500(u.to_string());
        assert_eq!(
            a("https://i1.sndcdn.com/artworks-000484833429-0bon3i-large.jpg"),
            "https://i1.sndcdn.com/artworks-000484833429-0bon3i-t500x500.jpg"
        );
        assert_eq!(
            a("https://i1.sndcdn.com/avatars-0001-large.png"),
            "https://i1.sndcdn.com/avatars-0001-t500x500.png"
        );
        // Only the size in the file name: anything else is left as it is.
        for kept in [
            "https://i1.sndcdn.com/artworks-1-t500x500.jpg",
            "https://i1.sndcdn.com/artworks-1-original.jpg",
            "https://example.com/x-large.dir/cover.jpg",
        ] {
            assert_eq!(a(kept), kept);
        }
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let c = SoundCloud::new(&offline_config(), Path::new("/nonexistent"));
        let cap = Duration::from_secs(60);
        for (n, ceiling) in [(1, 500), (2, 1000), (4, 4000), (8, 60_000), (30, 60_000)] {
            let d = c.backoff(n, cap);
            let ceiling = Duration::from_millis(ceiling);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
        }
    }

    #[tokio::test]
    async fn requests_carry_a_browsers_headers_and_the_configured_user_agent() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(60, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        let log = sc.request_log();
        assert_eq!(log.len(), 5, "page, script, resolve, two batches");
        for r in &log {
            assert_eq!(r.user_agent.as_deref(), Some(DEFAULT_USER_AGENT), "{r:?}");
            assert_eq!(r.accept_language.as_deref(), Some(ACCEPT_LANGUAGE), "{r:?}");
        }

        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        let mut cfg = sc.config();
        cfg.user_agent = Some(firefox.into());
        sc.reset_counters();
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        c.list(&url(&set)).await.unwrap();
        assert!(
            sc.request_log()
                .iter()
                .all(|r| r.user_agent.as_deref() == Some(firefox))
        );

        // What bot protection does to anything else, and what playlistd then says.
        cfg.user_agent = Some("playlistd/0.1".into());
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
        assert!(e.to_string().contains("soundcloud.user_agent"), "{e}");
    }

    #[tokio::test]
    async fn a_web_page_403_is_bot_protection_and_never_rescraped() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(60, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        c.client_id().await.unwrap();
        sc.reset_counters();
        sc.inject(Endpoint::Resolve, Fault::BlockedHtml, 1);
        let e = c.list(&url(&set)).await.unwrap_err();
        let host = url(&sc.api_base()).host_str().unwrap().to_string();
        assert_eq!(
            e,
            SourceError::Blocked {
                what: format!("resolving {set}"),
                host
            }
        );
        let m = e.to_string();
        assert!(!m.contains('\n') && m.matches("(fix: ").count() == 1, "{m}");
        assert!(!e.is_transient());
        assert_eq!(sc.requests(Endpoint::Resolve), 1, "not retried");
        assert_eq!(
            sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
            0
        );

        // An XML one on a batch stops the listing (no other batch would get through either).
        sc.inject(Endpoint::Tracks, Fault::BlockedXml, 1);
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
        assert_eq!(
            sc.requests(Endpoint::Tracks),
            1,
            "the second batch is not asked"
        );
        assert_eq!(
            sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
            0
        );

        // A JSON 403 is a stale client id: refreshed once, as before.
        sc.inject(Endpoint::Resolve, Fault::Status(403), 1);
        assert_eq!(c.list(&url(&set)).await.unwrap().tracks.len(), 60);
        assert_eq!(sc.requests(Endpoint::WebRoot), 1);

        // The web page itself behind bot protection: said as such, not "no client id".
        let cache = tempfile::tempdir().unwrap();
        sc.reset_counters();
        sc.inject(Endpoint::WebRoot, Fault::BlockedHtml, 1);
        let e = client(&sc, cache.path())
            .list(&url(&set))
            .await
            .unwrap_err();
        assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
        assert_eq!(sc.requests(Endpoint::Asset), 0);
        assert_eq!(e.to_string().matches("(fix: ").count(), 1, "{e}");
    }

    #[tokio::test]
    async fn a_429_storm_without_retry_after_is_waited_out_within_the_budget() {
        let sc = FakeSoundCloud::start().await;
        let p = playlist_of(60, "u", "s");
        let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
        let set = sc.add_playlist(p);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        c.client_id().await.unwrap();
        // More 429s than `attempts` allows for other errors: waited out, nothing dropped.
        sc.inject(
            Endpoint::Tracks,
            Fault::TooManyRequests {
                retry_after_secs: None,
            },
            8,
        );
        let l = c.list(&url(&set)).await.unwrap();
        assert!(l.complete, "{:?}", l.incomplete_reason);
        assert_eq!(ids_of(&l), all);
        assert_eq!(sc.requests(Endpoint::Tracks), 8 + 2);

        // Past the budget the batch is given up: the listing is incomplete, not failed.
        let tight = RetryPolicy {
            rate_limit_budget: Duration::from_millis(100),
            ..FAST
        };
        let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(tight);
        sc.inject(Endpoint::Tracks, Fault::Delay(Duration::ZERO), 1);
        sc.inject(
            Endpoint::Tracks,
            Fault::TooManyRequests {
                retry_after_secs: None,
            },
            10_000,
        );
        let t0 = Instant::now();
        let l = c.list(&url(&set)).await.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        assert!(!l.complete);
        let reason = l.incomplete_reason.as_deref().unwrap();
        assert!(
            reason.contains("429") && reason.contains("batch 2 of 2"),
            "{reason}"
        );
        assert_eq!(ids_of(&l), all[..55].to_vec());
        sc.clear_faults();

        // `Retry-After: 0` forever must not spin: every wait spends budget.
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(0),
            },
            100_000,
        );
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(matches!(e, SourceError::RateLimited { .. }), "{e}");
        assert!(sc.requests(Endpoint::Resolve) < 1000);
        sc.clear_faults();
    }

    #[tokio::test]
    async fn a_cancel_ends_a_429_wait_at_once() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(3, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let slow = RetryPolicy {
            max_retry_after: Duration::from_secs(600),
            ..RetryPolicy::default()
        };
        let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(slow);
        c.client_id().await.unwrap();
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(300),
            },
            1,
        );
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        let target = url(&set);
        let listing = c.list_streamed(&target, &cancel, |_| Ok::<(), SourceError>(()));
        // Cancelled once the 429 has been answered: the client is in its 300 s wait then.
        let canceller = async {
            while sc.requests(Endpoint::Resolve) == 0 {
                tokio::task::yield_now().await;
            }
            cancel.cancel();
        };
        let (e, ()) = tokio::join!(listing, canceller);
        assert_eq!(e.unwrap_err(), SourceError::Cancelled);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_drm_check_asks_the_clear_stream_once() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(
            FakePlaylist::new(7, "u", "label")
                .full_prefix(1)
                .track(FakeTrack::new(1, "Label Full", "A").drm())
                .track(FakeTrack::new(2, "Label Stub", "A").drm())
                .track(FakeTrack::new(3, "Locked", "A").drm_only())
                .track(FakeTrack::new(4, "Upload", "A")),
        );
        let cache = tempfile::tempdir().unwrap();
        let c = client(&sc, cache.path());
        let l = c.list(&url(&set)).await.unwrap();
        let checks: Vec<bool> = l.tracks.iter().map(|t| t.drm_check.is_some()).collect();
        assert_eq!(checks, [true, true, false, false]);
        assert_eq!(l.tracks[2].unavailable, Some(UnavailableReason::DrmOnly));
        assert_eq!(
            sc.media_requests(1) + sc.media_requests(2),
            0,
            "listing asks nothing"
        );

        let never = CancellationToken::new();
        for i in [0, 1] {
            let check = l.tracks[i].drm_check.as_ref().unwrap();
            let id = l.tracks[i].track.soundcloud_id.unwrap();
            assert_eq!(
                c.check_stream(id, check, &never).await,
                Ok(StreamCheck::DrmProtected)
            );
            assert_eq!(sc.media_requests(id), 1);
        }
        let asked = sc
            .request_log()
            .into_iter()
            .rfind(|r| r.endpoint == Endpoint::Media)
            .unwrap();
        assert!(asked.target.contains("/stream/hls?"), "{}", asked.target);
        assert!(
            asked
                .target
                .contains("track_authorization=eyJ0eXAiOiJKV1QifQ.fake-2"),
            "{}",
            asked.target
        );
        // A clear stream that answers is a track that plays.
        let upload = DrmCheck {
            transcoding_url: format!("{}/media/soundcloud:tracks:4/a1/stream/hls", sc.api_base()),
            track_authorization: None,
        };
        assert_eq!(
            c.check_stream(4, &upload, &never).await,
            Ok(StreamCheck::Plays)
        );
        // A transcoding URL on the public host is asked on the configured API host.
        let public = DrmCheck {
            transcoding_url:
                "https://api-v2.soundcloud.com/media/soundcloud:tracks:2/d1/stream/hls".into(),
            track_authorization: None,
        };
        assert_eq!(
            c.check_stream(2, &public, &never).await,
            Ok(StreamCheck::DrmProtected)
        );
        assert_eq!(sc.media_requests(2), 2);
    }

    #[tokio::test]
    async fn a_scraped_id_is_shared_with_ytdlps_cache_in_its_format() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(3, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let theirs = ytdlp_client_id_file(cache.path());
        client(&sc, cache.path())
            .read_only()
            .client_id()
            .await
            .unwrap();
        assert!(!theirs.exists(), "a dry run writes no cache");
        let id = client(&sc, cache.path()).client_id().await.unwrap();
        let entry: Value =
            serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap();
        assert_eq!(entry["data"], id.as_str());
        assert!(entry["yt-dlp_version"].is_string(), "{entry}");
        assert_eq!(
            theirs,
            cache.path().join("yt-dlp/soundcloud/client_id.json")
        );

        // Our own cache gone: yt-dlp's is read, nothing is scraped.
        std::fs::remove_file(cache.path().join(CACHE_FILE)).unwrap();
        sc.reset_counters();
        let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        assert_eq!(l.tracks.len(), 3);
        assert_eq!(
            sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
            0
        );

        // A refresh replaces both.
        let new = sc.rotate_client_id();
        client(&sc, cache.path()).list(&url(&set)).await.unwrap();
        let text = std::fs::read_to_string(&theirs).unwrap();
        assert_eq!(parse_ytdlp_client_id(&text), Some(new.clone()));
        let ours = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
        assert!(ours.contains(&new));
        // No temporary file left beside them.
        let names: Vec<String> = std::fs::read_dir(theirs.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["client_id.json"]);
    }

    /// The real hosts, for tests that send nothing.
    fn offline_config() -> SoundCloudConfig {
        SoundCloudConfig {
            api_base: url("https://api-v2.soundcloud.com"),
            web_base: url("https://soundcloud.com"),
            short_link_base: url("https://on.soundcloud.com"),
            client_id: None,
            user_agent: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn mobile_and_www_hosts_are_folded() {
        let c = SoundCloud::new(&offline_config(), Path::new("/nonexistent"));
        assert_eq!(
            c.canonical_set_url(&url("https://m.soundcloud.com/a/sets/b/?si=x#t"))
                .as_str(),
            "https://soundcloud.com/a/sets/b"
        );
        assert_eq!(
            c.canonical_set_url(&url(
                "https://www.soundcloud.com/a/sets/b/s-TOKEN?ref=clipboard"
            ))
            .as_str(),
            "https://soundcloud.com/a/sets/b/s-TOKEN"
        );
    }
}
