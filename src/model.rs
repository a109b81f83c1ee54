//! The vocabulary shared by every arrow of the data flow: what a source lists and what the
//! Notion sink and the downloader consume.
//!
//! Invariant: a track's identity is its [`TrackKey`]. For SoundCloud that is the numeric track id
//! (as a decimal string), never the title or the file name, so renames upstream never cause a
//! second page or a second download. Other sites listed through yt-dlp use `"<extractor>:<id>"`.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable identity of a track across runs, playlists and renames.
///
/// Stored inline (no heap allocation up to 24 bytes, which covers every SoundCloud id): the
/// state holds one key per track and one per playlist membership, so at 100,000 tracks this
/// is what keeps loading the state cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackKey(pub CompactString);

impl TrackKey {
    pub fn new(key: impl Into<CompactString>) -> Self {
        TrackKey(key.into())
    }
    pub fn soundcloud(id: u64) -> Self {
        TrackKey(compact_str::format_compact!("{id}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything playlistd knows about one track after listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub key: TrackKey,
    /// SoundCloud's numeric id, when the track comes from SoundCloud.
    pub soundcloud_id: Option<u64>,
    pub title: String,
    pub artist: String,
    /// The normalized permalink URL: the Notion dedup key (see [`normalize_url`]).
    pub url: String,
    /// What yt-dlp is given to download this track (usually the permalink URL).
    pub download_url: String,
    pub duration_ms: Option<u64>,
    pub genre: Option<String>,
    pub artwork_url: Option<String>,
}

/// Why a listed track cannot be mirrored. Recorded per track; never stops the rest, and never
/// counts as a failure (exit code): nothing a retry or the user could change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    /// `policy: BLOCK`: not available in this country.
    GeoBlocked,
    /// `policy: SNIP` or only snipped transcodings: a 30-second Go+ preview.
    PreviewOnly,
    /// Only DRM-protected (`ctr-`/`cbc-` encrypted) transcodings: known from the listing alone.
    DrmOnly,
    /// A label track under DRM (since 2026): it lists clear transcodings next to encrypted
    /// ones, but its clear stream answers 404. Known only after one request for that stream
    /// (see [`DrmCheck`]); recorded once, never asked again while the track stays encrypted.
    DrmProtected,
    /// Asked for by id in `/tracks?ids=` but missing from the answer (deleted or private).
    NotReturned,
    /// SoundCloud said `streamable: false`. No longer set: that flag is only a hint (such
    /// tracks get their page and the download decides); kept so older state files still load.
    NotStreamable,
}

impl UnavailableReason {
    pub fn describe(self) -> &'static str {
        match self {
            UnavailableReason::GeoBlocked => "geo-blocked (policy BLOCK)",
            UnavailableReason::PreviewOnly => "preview only (policy SNIP, Go+ track)",
            UnavailableReason::DrmOnly => "DRM-protected streams only",
            UnavailableReason::DrmProtected => "DRM-protected",
            UnavailableReason::NotReturned => "not returned by SoundCloud (deleted or private)",
            UnavailableReason::NotStreamable => "not streamable",
        }
    }
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A track that lists both clear and encrypted transcodings: DRM-protected if its clear stream
/// answers 404, playable if it answers. The listing cannot tell; one request can, so the sync
/// makes it once (for a track with work and no verdict yet) and records the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrmCheck {
    /// The clear transcoding's API URL (`…/media/soundcloud:tracks:<id>/…/stream/hls`).
    pub transcoding_url: String,
    /// The track's `track_authorization`, sent along as SoundCloud's own player does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_authorization: Option<String>,
}

/// One entry of a playlist, in playlist order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedTrack {
    pub track: Track,
    /// `Some` when the track is listed but cannot be mirrored; `track` then holds whatever
    /// metadata was known (a stub may have only its id).
    pub unavailable: Option<UnavailableReason>,
    /// `Some` when only a request for its clear stream tells whether the track is under DRM
    /// (then `unavailable` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drm_check: Option<DrmCheck>,
}

/// The result of listing one playlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub title: String,
    /// The playlist's canonical URL as the source reports it.
    pub url: String,
    pub tracks: Vec<ListedTrack>,
    /// False when some part of the listing failed (a stub batch, a timeout). An incomplete
    /// listing never marks tracks as removed.
    pub complete: bool,
    pub incomplete_reason: Option<String>,
    /// `track_count` minus the number of entries SoundCloud actually listed.
    pub hidden: u64,
    /// HTTP requests (or yt-dlp invocations) the listing cost.
    pub requests: u64,
}

/// Normalizes a track or playlist URL the way the system we replace did, so keys written by it
/// still match: trim, lowercase scheme and host, drop query and fragment, drop trailing slashes,
/// keep the path's case. A `m.`/`www.` SoundCloud host is folded to `soundcloud.com`, since the
/// API always reports permalinks on the bare host.
pub fn normalize_url(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return String::new();
    }
    match url::Url::parse(raw) {
        Ok(mut u) if u.has_host() => {
            u.set_query(None);
            u.set_fragment(None);
            if let Some(host) = u.host_str() {
                let folded = match host {
                    "m.soundcloud.com" | "www.soundcloud.com" => Some("soundcloud.com"),
                    _ => None,
                };
                if let Some(h) = folded {
                    let _ = u.set_host(Some(h));
                }
            }
            let path = u.path().trim_end_matches('/').to_string();
            u.set_path(&path);
            let mut s = u.to_string();
            while s.ends_with('/') {
                s.pop();
            }
            s
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_the_old_script() {
        assert_eq!(
            normalize_url("  HTTPS://SoundCloud.com/Alleycvt/So-Damn-Good/?in=x#t=1 "),
            "https://soundcloud.com/Alleycvt/So-Damn-Good"
        );
        assert_eq!(
            normalize_url("https://m.soundcloud.com/a/b"),
            "https://soundcloud.com/a/b"
        );
        assert_eq!(normalize_url("no scheme/x"), "no scheme/x");
        assert_eq!(normalize_url(""), "");
        assert_eq!(
            normalize_url("http://127.0.0.1:8080/a/b/"),
            "http://127.0.0.1:8080/a/b"
        );
    }
}
