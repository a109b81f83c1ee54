//! The catalog: the tracks and playlists ("sets") the fake serves, how a test builds them
//! ([`FakeTrack`], [`FakePlaylist`], [`playlist_of`]), and the handle's methods that change
//! them while the fake runs (add, delete, make private, rename...).
//!
//! Invariants: a track id names one track everywhere (adding a playlist with a known id
//! replaces the definition); permalinks are unique, as SoundCloud suffixes a clashing slug;
//! a private track's and a secret set's tokens are derived from their ids, so they are stable.

use super::{FakeSoundCloud, Inner, PUBLIC_API, PUBLIC_WEB, StoredPlaylist, lock};

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

/// Which transcodings a track lists (reference §9), for a track that is not under DRM: a DRM
/// track ([`FakeTrack::drm`], [`FakeTrack::drm_only`], [`FakeTrack::encrypted_too`]) lists
/// what it always did, whatever its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Most tracks in 2026: HLS AAC only. `aac_160k` (`sq`) plays; beside it an `abr_sq` one
    /// (broken: its playlist's segments answer 404, clients skip `abr_*`) and a Go+ `aac_256k`
    /// (`hq`) one whose stream URL answers 403 without a login.
    #[default]
    Aac,
    /// The AAC ones, plus a `progressive` and an `hls` MP3 (`mp3_1_0`).
    AacAndMp3,
    /// An older track: `progressive` and `hls` MP3 (`mp3_0_0`) only.
    Mp3Only,
    /// Only an `hls` Opus (`opus_0_0`): nothing a native client speaks.
    OpusOnly,
}

/// Where SoundCloud's images are; a track's default artwork is there.
const SNDCDN_IMAGES: &str = "https://i1.sndcdn.com/";

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
    /// The audio response sends its headers and a first chunk, then never finishes (the
    /// permalink's audio, and the CDN's init, media segments and progressive stream).
    pub hang: bool,
    /// The transcodings listed (see [`Layout`]).
    pub layout: Layout,
    /// The length of the stream the CDN serves, when it is not the track's `duration_ms` (a
    /// preview served in place of the full stream, or a cut encoding): the JSON still says
    /// `duration_ms`.
    pub stream_ms: Option<u64>,
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
            stream_ms: None,
            layout: Layout::Aac,
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
    /// The CDN serves a stream of `ms` while the JSON says `duration_ms` (see
    /// [`FakeTrack::stream_ms`]).
    pub fn stream_ms(mut self, ms: u64) -> Self {
        self.stream_ms = Some(ms);
        self
    }
    /// The transcodings it lists (default [`Layout::Aac`]).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
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

impl FakeSoundCloud {
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
}

impl Inner {
    pub(super) fn insert_track(&mut self, mut t: FakeTrack) {
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
    pub(super) fn web_shown(&self) -> &str {
        if self.public_hosts {
            PUBLIC_WEB
        } else {
            &self.web
        }
    }
    /// An image URL (a track's `artwork_url`, a user's `avatar_url`) as answers name it: the
    /// fake's images (`{web}/images/…`, which the web listener serves) in place of
    /// `https://i1.sndcdn.com/`, unless the public hosts are shown. Other URLs are shown as
    /// they are.
    pub(super) fn image_shown(&self, url: Option<&str>) -> Option<String> {
        let url = url?;
        match url.strip_prefix(SNDCDN_IMAGES) {
            Some(name) if !self.public_hosts => Some(format!("{}/images/{name}", self.web)),
            _ => Some(url.to_string()),
        }
    }

    /// The API host as answers name it.
    pub(super) fn api_shown(&self) -> &str {
        if self.public_hosts {
            PUBLIC_API
        } else {
            &self.api
        }
    }

    pub(super) fn playlist_url(&self, id: u64) -> Option<String> {
        let p = &self.playlists.get(&id)?.meta;
        let mut u = format!("{}/{}/sets/{}", self.web_shown(), p.user, p.slug);
        if let Some(tok) = &p.secret_token {
            u.push('/');
            u.push_str(tok);
        }
        Some(u)
    }

    pub(super) fn permalink(&self, t: &FakeTrack) -> String {
        let mut u = format!("{}/{}/{}", self.web_shown(), t.user_permalink, t.slug);
        if let Some(tok) = t.secret_token() {
            u.push('/');
            u.push_str(&tok);
        }
        u
    }

    /// The track whose permalink is `path` (`/user/slug[/s-token]`), if any.
    pub(super) fn track_at(&self, path: &str) -> Option<u64> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (user, slug) = (segs.first()?, segs.get(1)?);
        self.paths
            .get(&(user.to_string(), slug.to_string()))
            .copied()
    }
}

pub(super) fn token_from(n: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(n);
    (0..11).map(|_| rng.alphanumeric()).collect()
}

pub(super) fn fnv(s: &str) -> u64 {
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

pub(super) fn title_case(slug: &str) -> String {
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

/// Default audio size: big enough to be real frames, small enough for fast tests.
pub const DEFAULT_AUDIO_SIZE: usize = 20 * 1024;

/// MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes per frame.
pub(super) const FRAME_LEN: usize = 417;

pub(super) const FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0x64];

/// Fills `buf` with the audio bytes at `offset`: frame headers every 417 bytes, the track id
/// in the first payload bytes (so files of different tracks differ), zeros elsewhere.
pub(super) fn fill_audio(id: u64, offset: usize, buf: &mut [u8]) {
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
