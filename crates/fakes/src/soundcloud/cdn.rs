//! The media CDN and the images host, served by the web listener (the real ones are
//! `cf-hls-media.sndcdn.com`, `cf-media.sndcdn.com` and `i1.sndcdn.com`): what a stream URL
//! (`/media/…`, see `media`) points at, signed and short-lived as reference §9 describes.
//!
//! URLs (always the fake's real `http://127.0.0.1:…` web address, even when the public hosts
//! are shown, so that a native client can fetch them):
//! - `/cdn/{id}/{preset}/playlist.m3u8?expires={unix secs}&sig={hex}`: an HLS media playlist,
//!   whose init (`/cdn/{id}/{preset}/init.mp4`) and segment (`/cdn/{id}/{preset}/seg/{n}.m4s`,
//!   `.mp3` or `.opus`) URLs are absolute and carry the same `expires` and `sig`, so a renewed
//!   playlist URL gives renewed segment URLs;
//! - `/cdn/{id}/{preset}/audio.mp3?expires=…&sig=…`: a progressive MP3, with ranges;
//! - `/images/artworks-{id:012}-{large|t500x500}.jpg` (and `avatars-…`, any image a track
//!   shows that SoundCloud would host): the fixture JPEG.
//!
//! Invariants: a signature is issued by one stream URL call for one track, preset and protocol
//! and works for nothing else; it expires `signed_url_ttl` after it was issued and, when
//! `signed_url_uses` is set, after that many CDN requests made with it, and then every request
//! with it gets CloudFront's 403 XML `AccessDenied` / "Request has expired" (a bad signature
//! gets "Access denied"); the CDN is not bot-protected, like the real CDN hosts; a track that is
//! deleted or under DRM is a 404 there too, a geo-blocked one a 403. The bodies are pure
//! functions of the track and the signed duration (see `hls`), so tests can rebuild them.

use super::catalog::{Policy, fill_audio};
use super::hls::{
    COVER_JPEG, MP3_FRAME_BYTES, aac_durations, aac_init, aac_segment, mp3_frame_count,
    mp3_segments,
};
use super::http::{BodyOpts, Cut, WebRequest, write_body, write_simple};
use super::{Endpoint, FakeSoundCloud, Fault, Inner, Shared, fnv, lock, next_fault};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a signed CDN URL works by default: about 260 s, as reference §9 infers.
pub const DEFAULT_SIGNED_URL_TTL: Duration = Duration::from_secs(260);

/// CDN requests for one track, faulted and refused ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CdnCounts {
    pub playlist: u64,
    pub init: u64,
    pub segments: u64,
    pub progressive: u64,
    /// Its artwork's and its uploader's avatar's (`/images/…`).
    pub artwork: u64,
}

/// What one signature was issued for.
#[derive(Debug, Clone)]
struct Signed {
    track_id: u64,
    preset: String,
    hls: bool,
    /// The duration of the stream it gives (30 s for a Go+ preview).
    duration_ms: u64,
    /// The `expires` query value (unix seconds), checked as part of the signature.
    expires: u64,
    deadline: Instant,
    uses: u32,
}

pub(super) struct CdnState {
    signatures: HashMap<String, Signed>,
    issued: u64,
    ttl: Duration,
    uses: Option<u32>,
    limit: Option<(u32, Duration)>,
    /// When the stream URL calls of the current window were admitted.
    recent: VecDeque<Instant>,
    /// Stream URL (`/media/…`) calls per track.
    pub(super) stream_urls: HashMap<u64, u64>,
    counts: HashMap<u64, CdnCounts>,
    segments: HashMap<(u64, usize), u64>,
    segment_faults: HashMap<(u64, usize), VecDeque<(Fault, u32)>>,
}

impl Default for CdnState {
    fn default() -> Self {
        CdnState {
            signatures: HashMap::new(),
            issued: 0,
            ttl: DEFAULT_SIGNED_URL_TTL,
            uses: None,
            limit: None,
            recent: VecDeque::new(),
            stream_urls: HashMap::new(),
            counts: HashMap::new(),
            segments: HashMap::new(),
            segment_faults: HashMap::new(),
        }
    }
}

impl CdnState {
    pub(super) fn reset_counters(&mut self) {
        self.stream_urls.clear();
        self.counts.clear();
        self.segments.clear();
    }

    /// The stream-URL limit (SoundCloud's ~600 per 10 minutes): `false` when this call is one
    /// too many for the window. Refused calls do not count against the window.
    pub(super) fn admit_stream_url(&mut self) -> bool {
        let Some((n, window)) = self.limit else {
            return true;
        };
        let now = Instant::now();
        while self.recent.front().is_some_and(|t| now - *t >= window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= n as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

impl Inner {
    /// Issues a signed CDN URL for a track's stream (see the module comment for the format).
    pub(super) fn sign(
        &mut self,
        track_id: u64,
        preset: &str,
        hls: bool,
        duration_ms: u64,
    ) -> String {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let expires = (unix + self.cdn.ttl).as_secs();
        let sig = loop {
            self.cdn.issued += 1;
            let n = self.cdn.issued;
            let sig = format!(
                "{:016x}",
                fnv(&format!("{}/{track_id}/{preset}/{n}", self.seed))
            );
            if !self.cdn.signatures.contains_key(&sig) {
                break sig;
            }
        };
        let signed = Signed {
            track_id,
            preset: preset.to_string(),
            hls,
            duration_ms,
            expires,
            deadline: Instant::now() + self.cdn.ttl,
            uses: 0,
        };
        // A long benchmark issues many; one long dead is forgotten (it then answers "Access
        // denied" instead of "Request has expired", as a forged one does).
        if self.cdn.signatures.len() >= 10_000 {
            let now = Instant::now();
            let keep = Duration::from_secs(600);
            self.cdn.signatures.retain(|_, s| s.deadline + keep > now);
        }
        self.cdn.signatures.insert(sig.clone(), signed);
        let file = if hls { "playlist.m3u8" } else { "audio.mp3" };
        format!(
            "{}/cdn/{track_id}/{preset}/{file}?expires={expires}&sig={sig}",
            self.web
        )
    }

    /// Counts a CDN or images request for its track (and segment), and takes the fault
    /// scripted for that one segment, if any (it goes before the endpoint's faults).
    pub(super) fn count_cdn(&mut self, ep: Endpoint, path: &str) -> Option<Fault> {
        if ep == Endpoint::Artwork {
            let id = self.image_track(path.rsplit('/').next().unwrap_or(""))?;
            self.cdn.counts.entry(id).or_default().artwork += 1;
            return None;
        }
        let req = CdnPath::parse(path)?;
        let c = self.cdn.counts.entry(req.track_id).or_default();
        match req.file {
            File::Playlist => c.playlist += 1,
            File::Init => c.init += 1,
            File::Progressive => c.progressive += 1,
            File::Segment(n, _) => {
                c.segments += 1;
                *self.cdn.segments.entry((req.track_id, n)).or_default() += 1;
                return self
                    .cdn
                    .segment_faults
                    .get_mut(&(req.track_id, n))
                    .and_then(next_fault);
            }
        }
        None
    }

    /// The track whose shown artwork (or uploader's avatar) is `/images/{name}`, at either
    /// size.
    pub(super) fn image_track(&self, name: &str) -> Option<u64> {
        let large = name
            .strip_suffix("-t500x500.jpg")
            .map(|stem| format!("{stem}-large.jpg"))
            .or_else(|| name.ends_with("-large.jpg").then(|| name.to_string()))?;
        let wanted = format!("{}/images/{large}", self.web);
        let shows = |id: &u64| {
            self.tracks.get(id).is_some_and(|t| {
                !t.deleted
                    && [&t.artwork_url, &t.avatar_url]
                        .iter()
                        .any(|u| self.image_shown(u.as_deref()).as_deref() == Some(&wanted))
            })
        };
        // The default names hold the id; any other image is looked for among all tracks.
        let direct = ["artworks-", "avatars-"]
            .iter()
            .find_map(|p| large.strip_prefix(p))
            .and_then(|r| r.split('-').next())
            .and_then(|d| d.parse::<u64>().ok());
        direct
            .filter(shows)
            .or_else(|| self.tracks.keys().copied().find(|id| shows(id)))
    }

    /// Checks a CDN request's signature and uses it once.
    fn check_signature(&mut self, req: &CdnPath, query: &Query) -> Result<Signed, &'static str> {
        let (uses_allowed, now) = (self.cdn.uses, Instant::now());
        let s = query
            .sig
            .as_ref()
            .and_then(|sig| self.cdn.signatures.get_mut(sig))
            .filter(|s| {
                s.track_id == req.track_id
                    && s.preset == req.preset
                    && s.hls == !matches!(req.file, File::Progressive)
                    && Some(s.expires) == query.expires
            })
            .ok_or("Access denied")?;
        s.uses += 1;
        if now >= s.deadline || uses_allowed.is_some_and(|n| s.uses > n) {
            return Err("Request has expired");
        }
        Ok(s.clone())
    }
}

/// The file a CDN path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum File {
    Playlist,
    Init,
    /// Segment number and extension (`m4s`, `mp3`, `opus`).
    Segment(usize, String),
    Progressive,
}

#[derive(Debug, Clone)]
struct CdnPath {
    track_id: u64,
    preset: String,
    file: File,
}

impl CdnPath {
    /// `/cdn/{id}/{preset}/{playlist.m3u8|init.mp4|audio.mp3|seg/{n}.{ext}}`.
    fn parse(path: &str) -> Option<CdnPath> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let file = match segs.as_slice() {
            ["cdn", _, _, "playlist.m3u8"] => File::Playlist,
            ["cdn", _, _, "init.mp4"] => File::Init,
            ["cdn", _, _, "audio.mp3"] => File::Progressive,
            ["cdn", _, _, "seg", name] => {
                let (n, ext) = name.split_once('.')?;
                File::Segment(n.parse().ok()?, ext.to_string())
            }
            _ => return None,
        };
        Some(CdnPath {
            track_id: segs[1].parse().ok()?,
            preset: segs[2].to_string(),
            file,
        })
    }
}

/// The endpoint of a web path on the CDN or images host, if it is one.
pub(super) fn cdn_endpoint(path: &str) -> Option<Endpoint> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["images", _] = segs.as_slice() {
        return Some(Endpoint::Artwork);
    }
    Some(match CdnPath::parse(path)?.file {
        File::Playlist => Endpoint::CdnPlaylist,
        File::Init => Endpoint::CdnInit,
        File::Segment(..) => Endpoint::CdnSegment,
        File::Progressive => Endpoint::CdnProgressive,
    })
}

struct Query {
    expires: Option<u64>,
    sig: Option<String>,
}

impl Query {
    fn parse(target: &str) -> Query {
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut q = Query {
            expires: None,
            sig: None,
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "expires" => q.expires = v.parse().ok(),
                "sig" => q.sig = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// What a preset's stream is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// fMP4 AAC (`aac_*`).
    Aac,
    /// `abr_*`: a playlist like the AAC one whose init and segments are 404 (broken, as
    /// yt-dlp says of these).
    Abr,
    Mp3,
    /// Junk `.opus` segments: nothing native fetches them.
    Opus,
}

fn codec(preset: &str) -> Option<Codec> {
    [
        ("aac", Codec::Aac),
        ("abr", Codec::Abr),
        ("mp3", Codec::Mp3),
        ("opus", Codec::Opus),
    ]
    .into_iter()
    .find(|(p, _)| preset.starts_with(p))
    .map(|(_, c)| c)
}

/// An HLS media playlist (VOD), with absolute URLs under `base` carrying `query`.
fn playlist(base: &str, query: &str, codec: Codec, duration_ms: u64) -> String {
    let (durations, ext): (Vec<f64>, _) = match codec {
        Codec::Aac | Codec::Abr => (aac_durations(duration_ms), "m4s"),
        Codec::Mp3 => (
            mp3_segments(duration_ms).into_iter().map(|s| s.1).collect(),
            "mp3",
        ),
        Codec::Opus => (aac_durations(duration_ms), "opus"),
    };
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:11\n");
    m.push_str("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    if matches!(codec, Codec::Aac | Codec::Abr) {
        let _ = writeln!(m, "#EXT-X-MAP:URI=\"{base}/init.mp4?{query}\"");
    }
    for (n, d) in durations.iter().enumerate() {
        let _ = writeln!(m, "#EXTINF:{d:.6},\n{base}/seg/{n}.{ext}?{query}");
    }
    m.push_str("#EXT-X-ENDLIST\n");
    m
}

/// CloudFront's error document.
fn xml_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
}

async fn write_xml(sock: &mut TcpStream, req: &WebRequest, status: u16, code: &str, msg: &str) {
    let body = xml_error(code, msg);
    write_simple(
        sock,
        status,
        "application/xml",
        body.as_bytes(),
        "",
        req.head_only,
    )
    .await;
}

/// A body the CDN serves: bytes in memory, or the synthetic MP3 from a byte offset.
enum Body {
    Bytes(&'static str, Vec<u8>),
    Mp3 { id: u64, from: usize, len: usize },
}

/// Serves `/cdn/…` (after the web prelude has counted it and applied any fault).
pub(super) async fn serve_cdn(st: &Shared, sock: &mut TcpStream, req: &WebRequest, cut: Cut) {
    let Some(path) = CdnPath::parse(&req.path) else {
        return no_such_key(sock, req).await;
    };
    let query = Query::parse(&req.target);
    let checked = {
        let mut s = lock(st);
        s.check_signature(&path, &query).map(|signed| {
            let t = s.tracks.get(&path.track_id).cloned();
            (signed, t, s.bandwidth)
        })
    };
    let (signed, track, bandwidth) = match checked {
        Ok(found) => found,
        Err(msg) => return write_xml(sock, req, 403, "AccessDenied", msg).await,
    };
    let Some(track) = track.filter(|t| !t.deleted && !t.drm && !t.drm_only) else {
        return no_such_key(sock, req).await;
    };
    if track.policy == Policy::Block {
        return write_xml(sock, req, 403, "AccessDenied", "Access denied").await;
    }
    let base = format!("{}/cdn/{}/{}", lock(st).web, track.id, signed.preset);
    let q = format!(
        "expires={}&sig={}",
        signed.expires,
        query.sig.unwrap_or_default()
    );
    let Some(body) = cdn_body(&path.file, codec(&signed.preset), &signed, (&base, &q)) else {
        return no_such_key(sock, req).await;
    };
    let opts = BodyOpts {
        cut,
        bandwidth,
        // A hanging track stalls its media, not its playlist.
        hang: track.hang && path.file != File::Playlist,
    };
    match body {
        Body::Bytes(ctype, bytes) => {
            let fill =
                |pos: usize, buf: &mut [u8]| buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
            write_body(sock, req, (ctype, bytes.len()), fill, opts).await;
        }
        Body::Mp3 { id, from, len } => {
            let fill = |pos: usize, buf: &mut [u8]| fill_audio(id, from + pos, buf);
            write_body(sock, req, ("audio/mpeg", len), fill, opts).await;
        }
    }
}

/// The body of one CDN file of a signed stream, `None` for a 404.
fn cdn_body(
    file: &File,
    codec: Option<Codec>,
    s: &Signed,
    (base, q): (&str, &str),
) -> Option<Body> {
    let (codec, d) = (codec?, s.duration_ms);
    let body = match (file, codec) {
        (File::Playlist, _) => Body::Bytes(
            "application/vnd.apple.mpegurl",
            playlist(base, q, codec, d).into_bytes(),
        ),
        (File::Init, Codec::Aac) => Body::Bytes("audio/mp4", aac_init()),
        (File::Segment(n, ext), Codec::Aac) if ext == "m4s" => {
            Body::Bytes("video/iso.segment", aac_segment(d, *n)?)
        }
        (File::Segment(n, ext), Codec::Mp3) if ext == "mp3" => {
            let range = mp3_segments(d).get(*n)?.0.clone();
            Body::Mp3 {
                id: s.track_id,
                from: range.start,
                len: range.len(),
            }
        }
        (File::Segment(n, ext), Codec::Opus) if ext == "opus" => {
            (*n < aac_durations(d).len()).then_some(())?;
            let mut junk = b"OggS".to_vec();
            junk.resize(1024, 0);
            Body::Bytes("audio/ogg", junk)
        }
        (File::Progressive, Codec::Mp3) => Body::Mp3 {
            id: s.track_id,
            from: 0,
            len: mp3_frame_count(d) as usize * MP3_FRAME_BYTES,
        },
        _ => return None,
    };
    Some(body)
}

/// The CDN's 404, as S3-style hosts answer it.
async fn no_such_key(sock: &mut TcpStream, req: &WebRequest) {
    write_xml(
        sock,
        req,
        404,
        "NoSuchKey",
        "The specified key does not exist.",
    )
    .await
}

/// Serves `/images/…`: the fixture JPEG for a track's shown artwork or avatar, at either
/// size.
pub(super) async fn serve_artwork(st: &Shared, sock: &mut TcpStream, req: &WebRequest, cut: Cut) {
    let name = req.path.rsplit('/').next().unwrap_or("");
    if lock(st).image_track(name).is_none() {
        return no_such_key(sock, req).await;
    }
    let opts = BodyOpts {
        cut,
        bandwidth: None,
        hang: false,
    };
    let fill = |pos: usize, buf: &mut [u8]| buf.copy_from_slice(&COVER_JPEG[pos..pos + buf.len()]);
    write_body(sock, req, ("image/jpeg", COVER_JPEG.len()), fill, opts).await;
}

impl FakeSoundCloud {
    /// How long a signed CDN URL works after its stream URL call (default
    /// [`DEFAULT_SIGNED_URL_TTL`], 260 s). Applies to URLs issued from now on.
    pub fn set_signed_url_ttl(&self, ttl: Duration) {
        lock(&self.state).cdn.ttl = ttl;
    }
    /// A signature stops working after this many CDN requests made with it (`None`, the
    /// default: no such limit), for tests that need an expiry at an exact request. Applies to
    /// every signature, counting its uses so far; a request that a scripted status fault
    /// answered (before the CDN looks at the signature) is not a use.
    pub fn set_signed_url_uses(&self, uses: Option<u32>) {
        lock(&self.state).cdn.uses = uses;
    }
    /// At most `n` stream URL calls per `window` (SoundCloud's are ~600 per 10 minutes); more
    /// get a JSON 429 without `Retry-After`. `None` (the default): no limit.
    pub fn set_stream_url_limit(&self, limit: Option<(u32, Duration)>) {
        let mut s = lock(&self.state);
        s.cdn.limit = limit;
        s.cdn.recent.clear();
    }
    /// Scripts `fault` for the next `times` requests of one media segment (0-based) of a
    /// track's HLS streams; they go before faults injected on [`Endpoint::CdnSegment`].
    pub fn inject_segment(&self, track_id: u64, segment: usize, fault: Fault, times: u32) {
        if times > 0 {
            lock(&self.state)
                .cdn
                .segment_faults
                .entry((track_id, segment))
                .or_default()
                .push_back((fault, times));
        }
    }
    /// CDN and artwork requests for one track, faulted and refused ones included.
    pub fn cdn_requests(&self, track_id: u64) -> CdnCounts {
        let s = lock(&self.state);
        s.cdn.counts.get(&track_id).copied().unwrap_or_default()
    }
    /// Requests for one media segment (0-based) of a track, faulted and refused ones included.
    pub fn segment_requests(&self, track_id: u64, segment: usize) -> u64 {
        let s = lock(&self.state);
        s.cdn
            .segments
            .get(&(track_id, segment))
            .copied()
            .unwrap_or(0)
    }
    /// Stream URL calls (API `/media/…`) for one track, faulted and refused ones included.
    pub fn stream_url_requests(&self, track_id: u64) -> u64 {
        let s = lock(&self.state);
        s.cdn.stream_urls.get(&track_id).copied().unwrap_or(0)
    }
    /// The exact bytes of a track's `progressive` MP3 on the CDN (sized to its duration).
    pub fn progressive_of(&self, track_id: u64) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        let t = s.tracks.get(&track_id)?;
        Some(super::hls::mp3_bytes(t.id, t.duration_ms))
    }
    /// The exact init and segments of a track's HLS AAC stream on the CDN.
    pub fn hls_of(&self, track_id: u64) -> Option<super::HlsAudio> {
        let d = lock(&self.state).tracks.get(&track_id)?.duration_ms;
        Some(super::hls::aac_hls(d))
    }
}
