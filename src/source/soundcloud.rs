//! The native SoundCloud API v2 lister: why playlistd does not need yt-dlp to read a set.
//!
//! One `/resolve` gives the playlist with full objects for a first few tracks and stubs
//! (`id, kind, monetization_model, policy`) for the rest; the stubs are filled with
//! `/tracks?ids=` in batches of at most 50 (SoundCloud refuses more), so a 500-track set costs
//! about 11 requests. See `reference/soundcloud-api.md` for the contract.
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
//!   marked, never fatal;
//! - a stub batch that fails after retries leaves its tracks out and the listing
//!   `complete = false` (so the sync never reads them as removed);
//! - the client id comes from the config, else the on-disk cache, else a scrape of the web
//!   page; on 401/403 a scraped id is replaced once per API call (a configured one is reported
//!   as stale instead, since scraping cannot fix the user's file);
//! - the client id never appears in an error message.

use super::{ListingEnd, SourceError, error_chain, one_line};
use crate::config::SoundCloudConfig;
use crate::model::{ListedTrack, Listing, Track, TrackKey, UnavailableReason, normalize_url};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use url::Url;

/// The most ids `/tracks?ids=` accepts in one request.
pub const BATCH: usize = 50;
/// The client-id cache file, inside the cache directory.
pub const CACHE_FILE: &str = "soundcloud-client-id.json";

static SCRIPT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<script[^>]+src="([^"]+)""#).unwrap());
static CLIENT_ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"client_id\s*:\s*"([0-9a-zA-Z]{32})""#).unwrap());

/// How hard to retry one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub base: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; longer asks are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
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
    /// The scraped or cached id in use; the lock also serializes scrapes.
    current: tokio::sync::Mutex<Option<String>>,
    retry: RetryPolicy,
    timeout: Duration,
    requests: AtomicU64,
    /// False for dry runs, which write nothing anywhere, not even this cache.
    write_cache: bool,
}

/// Requests spent by one `list` call (the client is shared, so a global delta would mix calls).
#[derive(Default)]
struct Call {
    requests: AtomicU64,
}

/// How one HTTP exchange ended, before the API layer interprets it.
enum Failure {
    /// 401 or 403: the client id may be stale.
    Auth(u16),
    /// Another 4xx: not worth retrying.
    Status(u16),
    /// Retries ran out (or the error cannot be retried).
    Gave(SourceError),
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
    streamable: Option<bool>,
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
    /// A client for `cfg`; the scraped client id is cached in `cache_dir`.
    pub fn new(cfg: &SoundCloudConfig, cache_dir: &Path) -> SoundCloud {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| SourceError::Setup {
                reason: error_chain(&e),
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
            current: tokio::sync::Mutex::new(None),
            retry: RetryPolicy::default(),
            timeout: cfg.timeout,
            requests: AtomicU64::new(0),
            write_cache: true,
        }
    }

    /// Reads the client-id cache but never writes it (for `--dry-run`).
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
    /// tests); the sync streams.
    pub async fn list(&self, url: &Url) -> Result<Listing, SourceError> {
        let mut tracks = Vec::new();
        let end = self
            .list_streamed(url, |batch| {
                tracks.extend(batch);
                Ok::<(), SourceError>(())
            })
            .await?;
        Ok(end.into_listing(tracks))
    }

    /// Lists a playlist ("set") a batch at a time: `each` gets the tracks in playlist order,
    /// one call per `/tracks?ids=` answer (the full objects `/resolve` gave come with the batch
    /// they precede), so only the batch in hand is ever held as full tracks. The batches are
    /// fetched one after another: `each` runs between two requests.
    pub async fn list_streamed<E: From<SourceError>>(
        &self,
        url: &Url,
        mut each: impl FnMut(Vec<ListedTrack>) -> Result<(), E>,
    ) -> Result<ListingEnd, E> {
        let call = Call::default();
        let target = self.canonical_set_url(url);
        let mut pl = self.resolve_set(&call, &target).await?;
        let entries = pl.tracks.len();

        // Playlist order, each id once; a stub is 16 bytes here until its batch is fetched.
        let mut seen = HashSet::with_capacity(entries);
        let mut order = std::mem::take(&mut pl.tracks);
        order.retain(|entry| match entry {
            RawEntry::Full(t) => seen.insert(t.id),
            RawEntry::Stub(id) => seen.insert(*id),
            RawEntry::NoId => {
                tracing::warn!(playlist = %target, "skipping a playlist entry without a numeric id");
                false
            }
        });
        drop(seen);
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
            let mut answer: HashMap<u64, RawTrack> = HashMap::new();
            let mut failed = false;
            if !ids.is_empty() {
                batch_no += 1;
                let mut query = vec![(
                    "ids",
                    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                )];
                // A secret set's private tracks come back only with the set's id and token.
                if let (Some(token), Some(pid)) = (&pl.secret_token, pl.id) {
                    query.push(("playlistId", pid.to_string()));
                    query.push(("playlistSecretToken", token.clone()));
                }
                let what = format!("track batch {batch_no} of {batches} of {target}");
                match self
                    .api(&call, "tracks", &query, &what, parse_track_array)
                    .await
                {
                    Ok(tracks) => {
                        // Ids not asked for are ignored, as is a full entry's id.
                        answer = tracks
                            .into_iter()
                            .filter(|t| ids.contains(&t.id))
                            .map(|t| (t.id, t))
                            .collect();
                    }
                    // Nothing else in the listing can work with a bad client id either.
                    Err(Failure::Gave(
                        e @ (SourceError::ClientId { .. }
                        | SourceError::StaleConfiguredClientId { .. }),
                    )) => {
                        return Err(e.into());
                    }
                    Err(f) => {
                        let reason = match f {
                            Failure::Gave(e) => e.to_string(),
                            Failure::Auth(s) | Failure::Status(s) => {
                                SourceError::Http { status: s, what }.to_string()
                            }
                        };
                        tracing::warn!(playlist = %target, "{reason}");
                        failures.push(reason);
                        failed = true;
                    }
                }
            }
            // A failed batch's stubs are left out: the listing is incomplete, so they are
            // neither listed nor removed. A stub missing from a good answer is `NotReturned`.
            let tracks: Vec<ListedTrack> = segment
                .into_iter()
                .filter_map(|entry| match entry {
                    RawEntry::Full(t) => Some(map_track(*t)),
                    RawEntry::Stub(_) if failed => None,
                    RawEntry::Stub(id) => Some(match answer.remove(&id) {
                        Some(t) => map_track(t),
                        None => ListedTrack {
                            track: bare_track(id),
                            unavailable: Some(UnavailableReason::NotReturned),
                        },
                    }),
                    RawEntry::NoId => None,
                })
                .collect();
            drop(answer);
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

    /// `/resolve`s a set URL to the playlist, or says why it is not one.
    async fn resolve_set(&self, call: &Call, target: &Url) -> Result<RawPlaylist, SourceError> {
        let what = format!("resolving {target}");
        let resolved = match self
            .api(
                call,
                "resolve",
                &[("url", target.to_string())],
                &what,
                parse_resolved,
            )
            .await
        {
            Ok(v) => v,
            Err(Failure::Status(404)) => {
                return Err(SourceError::NotFound {
                    url: target.to_string(),
                });
            }
            Err(Failure::Status(status)) => return Err(SourceError::Http { status, what }),
            Err(Failure::Auth(status)) => return Err(SourceError::Http { status, what }),
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

    /// One API GET with the client id, refreshing a scraped id once on 401/403.
    async fn api<T>(
        &self,
        call: &Call,
        path: &str,
        query: &[(&str, String)],
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let mut id = self.client_id_with(call).await.map_err(Failure::Gave)?;
        let mut refreshed = false;
        loop {
            let mut url = self.api_base.clone();
            let base_path = url.path().trim_end_matches('/').to_string();
            url.set_path(&format!("{base_path}/{path}"));
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
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// Replaces `stale` by a fresh scrape, unless another call already did.
    async fn refresh_client_id(&self, call: &Call, stale: &str) -> Result<String, SourceError> {
        let mut cur = self.current.lock().await;
        if let Some(id) = cur.as_ref().filter(|id| id.as_str() != stale) {
            return Ok(id.clone());
        }
        *cur = None;
        let _ = tokio::fs::remove_file(&self.cache_path).await;
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// yt-dlp's method: the web page's `<script src>`s, last to first (the id lives in a late
    /// bundle), first `client_id:"<32 alphanumerics>"` wins. A script that fails to load is
    /// skipped.
    async fn scrape(&self, call: &Call) -> Result<String, SourceError> {
        let web = self.web_base.as_str().trim_end_matches('/');
        let html = match self
            .get(
                call,
                self.web_base.clone(),
                &format!("loading {web}"),
                parse_text,
            )
            .await
        {
            Ok(h) => h,
            Err(Failure::Gave(e)) => {
                return Err(SourceError::ClientId {
                    reason: e.to_string(),
                });
            }
            Err(Failure::Auth(s) | Failure::Status(s)) => {
                return Err(SourceError::ClientId {
                    reason: format!("{web} answered HTTP {s}"),
                });
            }
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
            match self
                .get(
                    call,
                    src.clone(),
                    &format!("loading script {src}"),
                    parse_text,
                )
                .await
            {
                Ok(js) => {
                    if let Some(c) = CLIENT_ID_RE.captures(&js) {
                        tracing::info!("scraped a SoundCloud client id from {src}");
                        return Ok(c[1].to_string());
                    }
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

    /// Temp file + rename, so a crash never leaves half a file; a cache that cannot be written
    /// only costs a scrape next time.
    async fn write_cache(&self, id: &str) {
        if !self.write_cache {
            return;
        }
        let c = CacheFile {
            client_id: id.to_string(),
            web_base: self.web_base.to_string(),
            saved_at: chrono::Utc::now().to_rfc3339(),
        };
        let json = serde_json::to_string_pretty(&c).expect("serializable");
        let tmp = self.cache_path.with_extension(format!(
            "json.tmp-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let result = async {
            if let Some(dir) = self.cache_path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&tmp, json).await?;
            tokio::fs::rename(&tmp, &self.cache_path).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(
                "cannot cache the SoundCloud client id in {}: {e}",
                self.cache_path.display()
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // HTTP with retries

    /// One GET with retries: 429 waits `Retry-After` (capped); 5xx, timeouts, connection
    /// errors and undecodable bodies (a cut connection) back off exponentially with jitter.
    /// Other statuses return at once.
    async fn get<T>(
        &self,
        call: &Call,
        url: Url,
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let http = self.http.as_ref().map_err(|e| Failure::Gave(e.clone()))?;
        let attempts = self.retry.attempts.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            self.requests.fetch_add(1, Ordering::Relaxed);
            call.requests.fetch_add(1, Ordering::Relaxed);
            let mut wait = None;
            match http.get(url.clone()).send().await {
                Err(e) => last = Some(self.transport_error(what, &e)),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => match resp.bytes().await {
                            Err(e) => last = Some(self.transport_error(what, &e)),
                            Ok(body) => match decode(&body) {
                                Ok(v) => return Ok(v),
                                Err(reason) => {
                                    last = Some(SourceError::Decode {
                                        what: what.to_string(),
                                        reason,
                                    })
                                }
                            },
                        },
                        429 => {
                            let retry_after = retry_after(resp.headers());
                            wait = retry_after.map(|d| d.min(self.retry.max_retry_after));
                            last = Some(SourceError::RateLimited {
                                what: what.to_string(),
                                attempts,
                                retry_after,
                            });
                        }
                        401 | 403 => return Err(Failure::Auth(status)),
                        500..=599 => {
                            last = Some(SourceError::Http {
                                status,
                                what: what.to_string(),
                            })
                        }
                        _ => return Err(Failure::Status(status)),
                    }
                }
            }
            if attempt < attempts {
                let delay = wait.unwrap_or_else(|| self.backoff(attempt));
                tracing::debug!(
                    "{what}: attempt {attempt} failed ({:?}); retrying in {delay:?}",
                    last
                );
                tokio::time::sleep(delay).await;
            }
        }
        Err(Failure::Gave(last.expect("at least one attempt")))
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> SourceError {
        if e.is_timeout() {
            SourceError::Timeout {
                what: what.to_string(),
                secs: self.timeout.as_secs().max(1),
            }
        } else {
            // Only the sources: reqwest's own text embeds the URL, and the URL the client id.
            let reason = match std::error::Error::source(e) {
                Some(s) => error_chain(s),
                None => "request failed".to_string(),
            };
            SourceError::Network {
                what: what.to_string(),
                reason,
            }
        }
    }

    /// Full jitter over an exponential ceiling: between half and all of `base * 2^(n-1)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.retry.max_backoff);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
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

fn availability(t: &RawTrack) -> Option<UnavailableReason> {
    let policy = t.policy.as_deref().unwrap_or("");
    let transcodings = t
        .media
        .as_ref()
        .map(|m| m.transcodings.as_slice())
        .unwrap_or(&[]);
    let preview = |tc: &RawTranscoding| {
        tc.snipped == Some(true) || tc.url.as_deref().is_some_and(|u| u.contains("/preview/"))
    };
    let drm = |tc: &RawTranscoding| {
        let p = tc
            .format
            .as_ref()
            .and_then(|f| f.protocol.as_deref())
            .unwrap_or("");
        p.starts_with("ctr-") || p.starts_with("cbc-")
    };
    if policy.eq_ignore_ascii_case("BLOCK") {
        Some(UnavailableReason::GeoBlocked)
    } else if policy.eq_ignore_ascii_case("SNIP")
        || (!transcodings.is_empty() && transcodings.iter().all(preview))
    {
        Some(UnavailableReason::PreviewOnly)
    } else if !transcodings.is_empty() && transcodings.iter().all(drm) {
        Some(UnavailableReason::DrmOnly)
    } else if t.streamable == Some(false) {
        Some(UnavailableReason::NotStreamable)
    } else {
        None
    }
}

fn map_track(raw: RawTrack) -> ListedTrack {
    let unavailable = availability(&raw);
    let user = raw.user.unwrap_or(RawUser {
        username: None,
        avatar_url: None,
    });
    let artist = non_empty(raw.publisher_metadata.and_then(|p| p.artist))
        .or_else(|| non_empty(user.username))
        .unwrap_or_default();
    let permalink = raw.permalink_url.unwrap_or_default();
    ListedTrack {
        track: Track {
            key: TrackKey::soundcloud(raw.id),
            soundcloud_id: Some(raw.id),
            title: raw.title.unwrap_or_default(),
            artist,
            url: normalize_url(&permalink),
            download_url: permalink,
            duration_ms: raw.full_duration.or(raw.duration).filter(|d| *d > 0),
            genre: non_empty(raw.genre),
            artwork_url: non_empty(raw.artwork_url).or_else(|| non_empty(user.avatar_url)),
        },
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::soundcloud::{
        Endpoint, FakePlaylist, FakeSoundCloud, FakeTrack, Fault, Policy, playlist_of,
    };
    use std::time::Instant;

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
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
                Some(NotStreamable)
            ]
        );
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
            .list_streamed(&url(&set), |batch| {
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
            .list_streamed(&url(&set), |_| {
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
        // A long Retry-After is capped, and once the attempts are spent, reported.
        let capped = RetryPolicy {
            max_retry_after: Duration::from_millis(50),
            ..FAST
        };
        let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(capped);
        sc.inject(
            Endpoint::Resolve,
            Fault::TooManyRequests {
                retry_after_secs: Some(3600),
            },
            4,
        );
        let t0 = Instant::now();
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(
            matches!(e, SourceError::RateLimited { attempts: 4, .. }),
            "{e}"
        );
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
        assert!(
            l.tracks[1]
                .track
                .artwork_url
                .as_deref()
                .unwrap()
                .contains("avatars-")
        );
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
    async fn unreachable_web_page_is_a_client_id_error() {
        let sc = FakeSoundCloud::start().await;
        let set = sc.add_playlist(playlist_of(1, "u", "s"));
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = sc.config();
        cfg.web_base = url("http://127.0.0.1:9/");
        let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
        let e = c.list(&url(&set)).await.unwrap_err();
        assert!(matches!(e, SourceError::ClientId { .. }), "{e}");
        assert!(!e.to_string().contains('\n'));
        assert!(e.is_transient());
    }

    #[test]
    fn mobile_and_www_hosts_are_folded() {
        let cfg = SoundCloudConfig {
            api_base: url("https://api-v2.soundcloud.com"),
            web_base: url("https://soundcloud.com"),
            short_link_base: url("https://on.soundcloud.com"),
            client_id: None,
            timeout: Duration::from_secs(5),
        };
        let c = SoundCloud::new(&cfg, Path::new("/nonexistent"));
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
