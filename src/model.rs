//! The vocabulary shared by every arrow of the data flow: what a source lists and what the
//! Notion sink and the downloader consume.
//!
//! Invariant: a track's identity is its [`TrackKey`]. For SoundCloud that is the numeric track id
//! (as a decimal string), never the title or the file name, so renames upstream never cause a
//! second page or a second download. Other sites listed through yt-dlp use `"<extractor>:<id>"`.

use compact_str::CompactString;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
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
    /// The canonical permalink URL: the Notion dedup key (see [`canonical_url`]).
    pub url: String,
    /// What yt-dlp is given to download this track (usually the permalink URL).
    pub download_url: String,
    pub duration_ms: Option<u64>,
    pub genre: Option<String>,
    pub artwork_url: Option<String>,
    /// The streams SoundCloud listed for it, as this run's listing saw them (never stored in the
    /// state: stream URLs and authorizations go stale). `None` for other sources, and for a track
    /// whose JSON the native downloader must fetch afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Box<Media>>,
}

/// A SoundCloud track's clear, full-length transcodings (encrypted, preview, `abr_*` and
/// login-only `hq` ones are left out when listing), and what a stream request sends with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub streams: Vec<Stream>,
    /// The track's `track_authorization`, sent with a stream request as SoundCloud's player does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_authorization: Option<String>,
}

/// One transcoding: its API URL (which answers a signed stream URL) and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub url: String,
    /// `hls` or `progressive`.
    pub protocol: String,
    /// E.g. `audio/mp4; codecs="mp4a.40.2"`, `audio/mpeg`, `audio/ogg; codecs="opus"`.
    pub mime_type: String,
    /// E.g. `aac_160k`, `mp3_1_0`, `opus_0_0`.
    #[serde(default)]
    pub preset: String,
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

/// The hosts SoundCloud serves the same pages on; the canonical form uses the first.
const SOUNDCLOUD_HOSTS: [&str; 3] = ["soundcloud.com", "www.soundcloud.com", "m.soundcloud.com"];

/// What a path segment keeps encoded: controls, non-ASCII, and the characters that would end
/// or split a segment. The url crate leaves `%XX` escapes as they came, so an IRI
/// (`/träck`), its encoded URI (`/tr%C3%A4ck`) and a lowercase-hex copy (`/tr%c3%a4ck`) would
/// be three strings; decoding each segment and encoding it again with this set makes them one.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The canonical form of a track or playlist URL: the one form playlistd writes to Notion,
/// stores in the state and compares with. People paste share links into Notion by hand, and
/// every form of the same link must be the same track:
/// - query and fragment dropped (`?si=…&utm_…`, `?in=user/sets/name`, `#t=1:23`);
/// - trailing slashes dropped;
/// - `http://`, `www.` and `m.` SoundCloud links become `https://soundcloud.com/…` (the API
///   always reports permalinks there), and a scheme-less `soundcloud.com/…` gets `https://`;
/// - each path segment in one encoding (see [`SEGMENT`]); a `%2F` inside a segment stays
///   encoded, since decoding it would change the path's shape.
///
/// The path's case is kept: a secret link's `s-…` token is case-sensitive. Comparisons that
/// may ignore case use [`url_match_key`]. Anything that is not an absolute URL is returned
/// trimmed, as given.
pub fn canonical_url(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return String::new();
    }
    let schemeless = SOUNDCLOUD_HOSTS.iter().any(|h| {
        raw.get(..h.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(h))
            && raw.as_bytes().get(h.len()) == Some(&b'/')
    });
    let parsed = if schemeless {
        url::Url::parse(&format!("https://{raw}"))
    } else {
        url::Url::parse(raw)
    };
    let mut u = match parsed {
        Ok(u) if u.has_host() => u,
        _ => return raw.to_string(),
    };
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.host_str().is_some_and(|h| SOUNDCLOUD_HOSTS.contains(&h)) {
        let _ = u.set_scheme("https");
        let _ = u.set_host(Some(SOUNDCLOUD_HOSTS[0]));
        let _ = u.set_port(None);
    }
    let segments: Vec<String> = u
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(canonical_segment)
        .collect();
    u.set_path(&segments.join("/"));
    let mut s = u.to_string();
    while s.ends_with('/') {
        s.pop();
    }
    s
}

fn canonical_segment(seg: &str) -> String {
    match percent_decode_str(seg).decode_utf8() {
        Ok(decoded) if !decoded.contains('/') => utf8_percent_encode(&decoded, SEGMENT).to_string(),
        _ => seg.to_string(),
    }
}

/// Is this (canonical) URL on soundcloud.com, whose paths are case-insensitive?
pub fn is_soundcloud_url(canonical: &str) -> bool {
    canonical
        .strip_prefix("https://soundcloud.com")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The key two canonical URLs are compared by: the URL itself, with a SoundCloud path folded
/// to lowercase (SoundCloud answers `/Artist/Track` as `/artist/track`, and permalinks are
/// lowercase slugs). Other sites' paths are compared exactly (YouTube ids are case-sensitive).
pub fn url_match_key(canonical: &str) -> String {
    if is_soundcloud_url(canonical) {
        canonical.to_ascii_lowercase()
    } else {
        canonical.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form a person pastes is the same canonical URL.
    #[test]
    fn every_pasted_form_of_a_link_is_one_canonical_url() {
        let canonical = "https://soundcloud.com/okra-picks/caf%C3%A9-con-leche";
        for pasted in [
            "https://soundcloud.com/okra-picks/caf%C3%A9-con-leche",
            "https://soundcloud.com/okra-picks/café-con-leche",
            "https://soundcloud.com/okra-picks/caf%c3%a9-con-leche",
            "https://soundcloud.com/okra-picks/caf%C3%A9-con%2Dleche",
            "https://soundcloud.com/okra-picks/café-con-leche?si=4f1e2d3c4b5a69788796a5b4c3d2e1f0&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing",
            "https://soundcloud.com/okra-picks/café-con-leche?in=okra-picks/sets/late-night",
            "https://soundcloud.com/okra-picks/café-con-leche#t=1:23",
            "https://soundcloud.com/okra-picks/café-con-leche/",
            "http://soundcloud.com/okra-picks/café-con-leche",
            "https://www.soundcloud.com/okra-picks/café-con-leche",
            "https://m.soundcloud.com/okra-picks/café-con-leche/?in=x#t=5",
            "http://www.soundcloud.com:80/okra-picks/café-con-leche",
            "soundcloud.com/okra-picks/café-con-leche",
            "  www.soundcloud.com/okra-picks/café-con-leche  ",
        ] {
            assert_eq!(canonical_url(pasted), canonical, "{pasted}");
        }
        // A case difference is the same SoundCloud track, but the canonical form keeps the
        // case (secret tokens are case-sensitive); the match key folds it.
        let upper = canonical_url("https://SoundCloud.com/Okra-Picks/Caf%C3%A9-Con-Leche");
        assert_ne!(upper, canonical);
        assert_eq!(url_match_key(&upper), url_match_key(canonical));
        // A prefix is another track; a secret link keeps its token; other sites keep case.
        assert_ne!(
            canonical_url("https://soundcloud.com/okra-picks/café-con-leche-2"),
            canonical
        );
        assert_eq!(
            canonical_url("https://soundcloud.com/a/b/s-AbC12?si=x"),
            "https://soundcloud.com/a/b/s-AbC12"
        );
        assert_eq!(
            url_match_key("https://youtu.be/AbC"),
            "https://youtu.be/AbC"
        );
        // An encoded slash stays encoded (decoding it would add a segment).
        assert_eq!(
            canonical_url("https://soundcloud.com/a/b%2Fc"),
            "https://soundcloud.com/a/b%2Fc"
        );
    }

    #[test]
    fn normalize_matches_the_old_script() {
        assert_eq!(
            canonical_url("  HTTPS://SoundCloud.com/Alleycvt/So-Damn-Good/?in=x#t=1 "),
            "https://soundcloud.com/Alleycvt/So-Damn-Good"
        );
        assert_eq!(
            canonical_url("https://m.soundcloud.com/a/b"),
            "https://soundcloud.com/a/b"
        );
        assert_eq!(canonical_url("no scheme/x"), "no scheme/x");
        // Not a URL at all (a playlist name is looked up this way too): as given.
        assert_eq!(
            canonical_url("夜のドライブ 🌙 Ñandú"),
            "夜のドライブ 🌙 Ñandú"
        );
        assert_eq!(canonical_url("soundcloud.com"), "soundcloud.com");
        assert_eq!(canonical_url(""), "");
        assert_eq!(
            canonical_url("http://127.0.0.1:8080/a/b/"),
            "http://127.0.0.1:8080/a/b"
        );
    }
}
