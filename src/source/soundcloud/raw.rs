//! SoundCloud's JSON as playlistd reads it, and the mapping onto [`ListedTrack`].
//!
//! Every answer is read leniently, per entry: one odd entry never fails a playlist or a batch.
//!
//! Invariants:
//! - a playlist entry is held as its id (16 bytes) until its batch is fetched, never as a
//!   `serde_json::Value`;
//! - BLOCK/SNIP/DRM-only tracks are marked, never fatal; `streamable: false` is only a hint
//!   and marks nothing; a track that lists clear and encrypted transcodings carries a
//!   [`DrmCheck`] (the sync asks its clear stream once, [`SoundCloud::check_stream`]).

#[cfg(doc)]
use super::SoundCloud;
use crate::model::{
    DrmCheck, ListedTrack, Media, Stream, Track, TrackKey, UnavailableReason, canonical_url,
};
use crate::source::one_line;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub(super) struct RawPlaylist {
    pub(super) kind: Option<String>,
    pub(super) id: Option<u64>,
    pub(super) title: Option<String>,
    pub(super) permalink_url: Option<String>,
    pub(super) secret_token: Option<String>,
    pub(super) track_count: Option<u64>,
    #[serde(default)]
    pub(super) tracks: Vec<RawEntry>,
}

/// What `/resolve` answered: a playlist, or (when it does not read as one) its `kind` and why.
pub(super) enum Resolved {
    Playlist(RawPlaylist),
    Other { kind: String, reason: String },
}

/// One entry of a playlist's `tracks`, classified as it is read. A 10,000-track set is mostly
/// stubs; kept as `serde_json::Value`s they took several hundred bytes each for the whole
/// listing, as an id they take 16.
#[derive(Debug)]
pub(super) enum RawEntry {
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
pub(super) struct RawTrack {
    pub(super) id: u64,
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
    preset: Option<String>,
    quality: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawFormat {
    protocol: Option<String>,
    mime_type: Option<String>,
}

/// `/resolve`'s answer, read straight into [`RawPlaylist`] (never held whole as a `Value`).
/// What does not read as a playlist is parsed again as plain JSON for its `kind`; only JSON
/// that does not parse at all is an error here (and retried, as a cut connection).
pub(super) fn parse_resolved(body: &[u8]) -> Result<Resolved, String> {
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

/// `/tracks?ids=` answers a bare array; an element that is not a track (no id) is dropped, so
/// its id reads as not returned rather than failing the batch.
pub(super) fn parse_track_array(body: &[u8]) -> Result<Vec<RawTrack>, String> {
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
pub(super) fn bare_track(id: u64) -> Track {
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
        media: None,
    }
}

/// The transcodings a downloader may use: full-length (not snipped, not `/preview/`), clear (not
/// `ctr-`/`cbc-` encrypted), not `abr_*` (yt-dlp treats those as broken) and not `hq` (the Go+
/// stream, which needs a login): reference §9. Empty when none is left; `None` only when the
/// JSON had no `media` at all (the downloader then fetches the track's JSON afresh).
fn media(t: &RawTrack) -> Option<Box<Media>> {
    let streams: Vec<Stream> = t
        .media
        .as_ref()?
        .transcodings
        .iter()
        .filter_map(|tc| {
            let url = tc.url.clone()?;
            let format = tc.format.as_ref()?;
            let protocol = format.protocol.clone()?;
            let preset = tc.preset.clone().unwrap_or_default();
            let usable = tc.snipped != Some(true)
                && !url.contains("/preview/")
                && !protocol.starts_with("ctr-")
                && !protocol.starts_with("cbc-")
                && !preset.starts_with("abr_")
                && tc.quality.as_deref() != Some("hq");
            usable.then(|| Stream {
                url,
                protocol,
                mime_type: format.mime_type.clone().unwrap_or_default(),
                preset,
            })
        })
        .collect();
    Some(Box::new(Media {
        streams,
        track_authorization: t.track_authorization.clone(),
    }))
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
pub(super) fn artwork_500(url: String) -> String {
    match url.rfind("-large.") {
        Some(i) if !url[i..].contains('/') => {
            format!("{}-t500x500.{}", &url[..i], &url[i + "-large.".len()..])
        }
        _ => url,
    }
}

pub(super) fn map_track(mut raw: RawTrack) -> ListedTrack {
    let (unavailable, drm_check) = availability(&raw);
    let media = unavailable.is_none().then(|| media(&raw)).flatten();
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
            media,
        },
        unavailable,
        drm_check,
    }
}
