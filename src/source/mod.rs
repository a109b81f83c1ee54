//! Listing a playlist: the first arrow of the data flow (`Source::list(url) -> Listing`).
//!
//! [`Source`] owns both listers, so the sync and `check` ask it for a playlist and never match
//! on the source kind. [`soundcloud`] talks to SoundCloud's API v2 natively (one resolve plus one `/tracks?ids=`
//! per 50 stubs); [`ytdlp`] is the per-playlist `source = "yt-dlp"` fallback for any site
//! yt-dlp supports. Both can list into a whole [`crate::model::Listing`] (for `check` and the
//! tests) and fail with a [`SourceError`].
//!
//! The sync does not take a whole `Listing`: it takes the tracks a batch at a time, in
//! playlist order, through a callback (`FnMut(Vec<ListedTrack>) -> Result<(), E>`; an `Err`
//! stops the listing and is returned as is), and then the [`ListingEnd`] (title,
//! completeness). A 10,000-track set then never has more than a batch or two of full tracks
//! alive. The SoundCloud lister streams natively (`SoundCloud::list_streamed`, one batch per
//! `/tracks?ids=` answer) and its `list` is a thin collector over it; the yt-dlp lister gets
//! the whole answer in one go anyway and is replayed through [`replay`].
//!
//! Invariants kept by both listers: a key comes at most once in a listing (a repeated entry is
//! dropped), so a consumer of the stream needs no set of the keys it has seen; per-track
//! problems (geo-blocks, previews, DRM, deleted tracks) never fail a listing, they mark the
//! track; a part of the listing that could not be fetched makes it `complete = false` and is
//! left out, never reported as removed. Every [`SourceError`] message is one line that names
//! the problem and, where the user can act, the fix: exactly one `(fix: …)`, so an error that
//! wraps another's text must not add a second (see `messages_are_one_line_with_a_fix`).

pub mod short_link;
pub mod soundcloud;
pub mod ytdlp;

use crate::config::{DownloadConfig, SourceKind};
use crate::model::{ListedTrack, Listing};
pub(crate) use crate::util::one_line;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Both listers behind one door: SoundCloud's API v2 and the yt-dlp fallback.
pub struct Source {
    /// Shared with the native downloader, whose stream requests need the client id.
    soundcloud: std::sync::Arc<soundcloud::SoundCloud>,
    ytdlp: PathBuf,
    ytdlp_timeout: Duration,
}

impl Source {
    /// The yt-dlp lister runs the downloader's yt-dlp, with its timeout.
    pub fn new(soundcloud: soundcloud::SoundCloud, download: &DownloadConfig) -> Source {
        Source {
            soundcloud: std::sync::Arc::new(soundcloud),
            ytdlp: download.ytdlp.clone(),
            ytdlp_timeout: download.timeout,
        }
    }

    pub fn soundcloud(&self) -> &soundcloud::SoundCloud {
        &self.soundcloud
    }

    pub fn soundcloud_shared(&self) -> std::sync::Arc<soundcloud::SoundCloud> {
        self.soundcloud.clone()
    }

    /// Lists the playlist into `each`, a batch at a time in playlist order; the yt-dlp listing
    /// comes whole and is replayed in batches ([`replay`]). `cancel` stops a SoundCloud
    /// listing between requests (with [`SourceError::Cancelled`]).
    pub async fn list_streamed<E: From<SourceError>>(
        &self,
        kind: SourceKind,
        url: &Url,
        cancel: &CancellationToken,
        each: impl FnMut(Vec<ListedTrack>) -> Result<(), E>,
    ) -> Result<ListingEnd, E> {
        match kind {
            SourceKind::SoundCloud => self.soundcloud.list_streamed(url, cancel, each).await,
            SourceKind::YtDlp => {
                let listing = ytdlp::list_with_ytdlp(&self.ytdlp, url, self.ytdlp_timeout).await?;
                replay(listing, each)
            }
        }
    }

    /// The whole listing, for the callers that want it whole (`check`): each lister's own,
    /// with nothing replayed.
    pub async fn list(&self, kind: SourceKind, url: &Url) -> Result<Listing, SourceError> {
        match kind {
            SourceKind::SoundCloud => self.soundcloud.list(url).await,
            SourceKind::YtDlp => ytdlp::list_with_ytdlp(&self.ytdlp, url, self.ytdlp_timeout).await,
        }
    }
}

/// What a listing says besides its tracks; known only once the last batch is in (a failed
/// batch makes it incomplete).
#[derive(Debug, Clone, PartialEq)]
pub struct ListingEnd {
    pub title: String,
    pub url: String,
    /// False when some part of the listing failed; its tracks were left out of the stream.
    pub complete: bool,
    pub incomplete_reason: Option<String>,
    pub hidden: u64,
    pub requests: u64,
}

impl ListingEnd {
    /// The whole [`Listing`], for the callers that want it whole (`check`, tests).
    pub fn into_listing(self, tracks: Vec<ListedTrack>) -> Listing {
        Listing {
            title: self.title,
            url: self.url,
            tracks,
            complete: self.complete,
            incomplete_reason: self.incomplete_reason,
            hidden: self.hidden,
            requests: self.requests,
        }
    }
}

/// How many tracks [`replay`] hands over at a time: as many as a SoundCloud batch.
const REPLAY_BATCH: usize = soundcloud::BATCH;

/// Streams a listing already held whole (yt-dlp's) through the same interface, so the sync has
/// one way in. The listing's memory is the lister's; this adds none.
pub fn replay<E>(
    listing: Listing,
    mut each: impl FnMut(Vec<ListedTrack>) -> Result<(), E>,
) -> Result<ListingEnd, E> {
    let Listing {
        title,
        url,
        tracks,
        complete,
        incomplete_reason,
        hidden,
        requests,
    } = listing;
    let mut tracks = tracks.into_iter();
    loop {
        let batch: Vec<ListedTrack> = tracks.by_ref().take(REPLAY_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        each(batch)?;
    }
    Ok(ListingEnd {
        title,
        url,
        complete,
        incomplete_reason,
        hidden,
        requests,
    })
}

/// Why a playlist could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "SoundCloud has no playlist at {url} (fix: check the URL; a private set needs its secret /s-… link; the set may have been deleted)"
    )]
    NotFound { url: String },

    #[error(
        "{url} is a {kind}, not a playlist (fix: use a set URL such as https://soundcloud.com/<user>/sets/<name>)"
    )]
    NotAPlaylist { url: String, kind: String },

    #[error(
        "cannot get a SoundCloud client id: {reason} (fix: check that the SoundCloud web site is reachable, or set soundcloud.client_id in playlists.toml)"
    )]
    ClientId { reason: String },

    #[error(
        "SoundCloud rejects the configured soundcloud.client_id with HTTP {status}: the id is stale (fix: remove soundcloud.client_id from playlists.toml so playlistd scrapes a fresh one)"
    )]
    StaleConfiguredClientId { status: u16 },

    #[error(
        "SoundCloud kept answering 429 Too Many Requests to {what} for {} (fix: wait a while before syncing again, or sync fewer playlists at once)",
        minutes(.waited)
    )]
    RateLimited { what: String, waited: Duration },

    /// An HTML or XML 403 from the API or the web site: bot protection, not a stale client id,
    /// so scraping a new id would not help (and would only be refused too).
    #[error(
        "SoundCloud's bot protection refused {what}: {host} answered 403 with a challenge page, not an API error (fix: wait an hour before syncing again; if it persists, set soundcloud.user_agent to your browser's User-Agent, or use another network)"
    )]
    Blocked { what: String, host: String },

    #[error("SoundCloud answered HTTP {status} to {what}")]
    Http { status: u16, what: String },

    /// DNS or connection failure: nothing was said by SoundCloud at all.
    #[error(
        "cannot reach {host} ({what}): {reason} (fix: check the network connection, and that this machine can resolve and connect to {host})"
    )]
    Unreachable {
        host: String,
        what: String,
        reason: String,
    },

    #[error("network error on {what}: {reason} (fix: check the network connection)")]
    Network { what: String, reason: String },

    #[error("unreadable answer to {what}: {reason}")]
    Decode { what: String, reason: String },

    #[error(
        "{what} timed out after {secs} s (fix: check the network; raise the timeout in playlists.toml if the service is only slow)"
    )]
    Timeout { what: String, secs: u64 },

    #[error(
        "cannot run yt-dlp: {} not found (fix: install yt-dlp, e.g. pip install yt-dlp, or set download.ytdlp to its path)",
        .path.display()
    )]
    YtDlpMissing { path: PathBuf },

    #[error("yt-dlp failed ({}) listing {url}: {message}", exit_text(*.code))]
    YtDlp {
        code: Option<i32>,
        url: String,
        message: String,
    },

    #[error("cannot set up the HTTP client: {reason}")]
    Setup { reason: String },

    /// The sync was told to stop (SIGTERM, Ctrl-C) while SoundCloud was being waited for.
    #[error("interrupted while waiting for SoundCloud")]
    Cancelled,
}

/// A wait as a person reads it: whole minutes from a minute on, else seconds (tests use
/// milliseconds: "0 s" would be true but useless, so those are rounded up to 1 s).
pub(crate) fn minutes(d: &Duration) -> String {
    match d.as_secs() {
        s if s >= 60 => format!("{} min", s.div_ceil(60)),
        s => format!("{} s", s.max(1)),
    }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    }
}

impl SourceError {
    /// True when the same request may succeed later without the user changing anything
    /// (rate limits, server errors, network trouble); the sync engine retries those with
    /// backoff and reports the others as needing a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::RateLimited { .. }
            | SourceError::Unreachable { .. }
            | SourceError::Network { .. }
            | SourceError::Timeout { .. }
            | SourceError::Decode { .. } => true,
            SourceError::Http { status, .. } => *status >= 500 || *status == 429,
            // The web page may be down for a moment; a scrape that found no id is not.
            SourceError::ClientId { reason } => !reason.starts_with("none of"),
            SourceError::YtDlp { .. } => true,
            // Bot protection wants a person's attention (user agent, network), not a retry
            // loop; a cancelled wait was meant to end.
            SourceError::Blocked { .. } | SourceError::Cancelled => false,
            SourceError::NotFound { .. }
            | SourceError::NotAPlaylist { .. }
            | SourceError::StaleConfiguredClientId { .. }
            | SourceError::YtDlpMissing { .. }
            | SourceError::Setup { .. } => false,
        }
    }
}

/// Joins an error and its sources into one line, so a message never spans lines and never
/// hides the root cause ("error sending request" alone says nothing).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    one_line(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_with_a_fix() {
        let errors = [
            SourceError::NotFound {
                url: "https://soundcloud.com/a/sets/b".into(),
            },
            SourceError::StaleConfiguredClientId { status: 401 },
            SourceError::YtDlpMissing {
                path: "yt-dlp".into(),
            },
            SourceError::ClientId { reason: "x".into() },
            SourceError::RateLimited {
                what: "resolving u".into(),
                waited: Duration::from_secs(600),
            },
            SourceError::Blocked {
                what: "resolving u".into(),
                host: "api-v2.soundcloud.com".into(),
            },
            SourceError::Unreachable {
                host: "soundcloud.com".into(),
                what: "loading https://soundcloud.com".into(),
                reason: "dns error: failed to lookup address information".into(),
            },
            SourceError::Network {
                what: "w".into(),
                reason: "connection reset".into(),
            },
            SourceError::Timeout {
                what: "w".into(),
                secs: 30,
            },
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert_eq!(m.matches("(fix: ").count(), 1, "one fix per line: {m}");
        }
        let m = SourceError::RateLimited {
            what: "w".into(),
            waited: Duration::from_secs(600),
        }
        .to_string();
        assert!(m.contains("for 10 min"), "{m}");
        let m = SourceError::Unreachable {
            host: "soundcloud.com".into(),
            what: "w".into(),
            reason: "r".into(),
        }
        .to_string();
        assert!(m.starts_with("cannot reach soundcloud.com"), "{m}");
        assert!(m.contains("check the network"), "{m}");
        let e = SourceError::YtDlp {
            code: Some(1),
            url: "u".into(),
            message: "ERROR: boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "yt-dlp failed (exit code 1) listing u: ERROR: boom"
        );
    }

    #[test]
    fn a_whole_listing_replays_in_batches_in_order() {
        use crate::model::{Track, TrackKey};
        let track = |i: u64| ListedTrack {
            track: Track {
                key: TrackKey::soundcloud(i),
                soundcloud_id: Some(i),
                title: format!("T{i}"),
                artist: "A".into(),
                url: String::new(),
                download_url: String::new(),
                duration_ms: None,
                genre: None,
                artwork_url: None,
                media: None,
            },
            unavailable: None,
            drm_check: None,
        };
        let listing = Listing {
            title: "Set".into(),
            url: "u".into(),
            tracks: (0..REPLAY_BATCH as u64 * 2 + 1).map(track).collect(),
            complete: false,
            incomplete_reason: Some("why".into()),
            hidden: 2,
            requests: 1,
        };
        let mut batches: Vec<Vec<ListedTrack>> = vec![];
        let end = replay(listing.clone(), |b| {
            batches.push(b);
            Ok::<(), SourceError>(())
        })
        .unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [REPLAY_BATCH, REPLAY_BATCH, 1]);
        assert_eq!(end.into_listing(batches.concat()), listing);
    }
}
