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
//! the whole [`Listing`](crate::model::Listing).
//!
//! One client, split by job; each file states the invariants it keeps:
//! - [`listing`]: `/resolve` and the `/tracks?ids=` batches, in playlist order;
//! - [`raw`]: SoundCloud's JSON as read, and what it says about a track (unavailable, DRM);
//! - [`stream`]: the one request that tells a DRM label track from a playable one;
//! - [`client_id`]: where the client id comes from, its caches, and its refresh on a 401/403;
//! - [`http`]: one GET with a browser's headers and the retry policy (5xx, 429, cancellation).
//!
//! This file holds the client itself, its configuration and what every request shares: the
//! client id never appears in an error message, and every request is counted twice, on the
//! client and on the caller's [`Call`].

mod client_id;
mod http;
mod listing;
mod pace;
mod raw;
mod stream;
#[cfg(test)]
mod tests;

pub use http::RetryPolicy;
pub(crate) use http::browser_headers;
pub use stream::{StreamCheck, StreamUrlError};

use super::{SourceError, error_chain};
use crate::config::SoundCloudConfig;
use crate::ytdlp::cache::ytdlp_client_id_file;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The target of this module's log lines, whichever file they come from: the module path it
/// had as one file, so log filters and whoever reads the log (or its JSON `target`) see the
/// same names as before the split.
const LOG_TARGET: &str = "playlistd::source::soundcloud";

/// The most ids `/tracks?ids=` accepts in one request.
pub const BATCH: usize = 50;
/// The client-id cache file, inside the cache directory.
pub const CACHE_FILE: &str = "soundcloud-client-id.json";

/// A current desktop Chrome on Windows, the commonest browser SoundCloud sees, in the form
/// yt-dlp sends (`utils/networking.py`, Chrome 145-151 as of yt-dlp 2026.10.26). Bot
/// protection refuses non-browser agents; `soundcloud.user_agent` replaces this when it ages.
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

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
    /// Transcoding-URL requests (DRM checks, downloads) share this window.
    pacer: pace::Pacer,
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
            pacer: pace::Pacer::new(pace::STREAM_URLS_PER_WINDOW, pace::STREAM_URL_WINDOW),
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

    /// The headers and timeout every SoundCloud request uses, for the media hosts (CDN).
    pub fn http(&self) -> Result<reqwest::Client, SourceError> {
        self.http.clone()
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

    /// An API endpoint's URL, below `api_base`.
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.api_base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}/{path}"));
        url
    }
}
