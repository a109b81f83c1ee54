//! Native SoundCloud audio: from a track's listed transcodings to a tagged, complete file in the
//! staging folder, without Python or ffmpeg. The download pool ([`crate::download`]) decides
//! when this runs and moves the file into the music folder; yt-dlp stays the fallback for what
//! this does not speak (reference soundcloud-api.md §9).
//!
//! The parts: [`stream`] (which transcoding), [`hls`] and [`progressive`] (the fetch, with
//! signed-URL renewal and resume), [`remux`] (fragmented MP4 to a standard `.m4a`), [`mp3`]
//! (an MP3's length from its frames), [`tags`], [`media_http`] (GETs on the media hosts).
//!
//! Invariants:
//! - a file is handed back only when complete: every segment in order, and its length within
//!   [`tolerance`] of the track's `full_duration` (a 30-second preview never passes);
//! - every request is counted in [`MediaRequests`], renewals and re-fetched track JSON apart;
//! - [`NativeError::Unsupported`] is the only error that says "yt-dlp might do better".

pub mod analysis;
pub mod decode;
pub mod formats;
pub mod library;
pub mod media_http;
pub mod mp3;
pub mod remux;
pub mod stream;
pub mod tags;

mod hls;
mod progressive;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_formats;

use crate::model::{Media, Stream, Track};
use crate::source::SourceError;
use crate::source::soundcloud::{SoundCloud, StreamUrlError};
use media_http::{MediaError, MediaRetry, get_bytes};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stream::{Choice, Layout, Prefer, choose};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Segments of one track in flight at once (within the pool's one permit per track).
pub const SEGMENTS_AT_ONCE: usize = 3;

/// Why a native download failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// A layout, protocol or container this engine does not speak: yt-dlp might.
    #[error("{0}")]
    Unsupported(String),
    #[error("SoundCloud has no such stream any more (404)")]
    NotFound,
    /// The file is shorter or longer than the track, or segments are missing.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// The media hosts or the stream request failed after their retries.
    #[error("{0}")]
    Media(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("writing the file: {0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Tag(String),
    #[error("cancelled")]
    Cancelled,
}

impl From<MediaError> for NativeError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Cancelled => NativeError::Cancelled,
            MediaError::Status { status: 404, .. } => NativeError::NotFound,
            e => NativeError::Media(e.to_string()),
        }
    }
}

impl From<StreamUrlError> for NativeError {
    fn from(e: StreamUrlError) -> Self {
        match e {
            StreamUrlError::NotFound => NativeError::NotFound,
            StreamUrlError::Http(s) => NativeError::Media(format!(
                "SoundCloud answered HTTP {s} to the stream request"
            )),
            StreamUrlError::Source(SourceError::Cancelled) => NativeError::Cancelled,
            StreamUrlError::Source(e @ SourceError::RateLimited { .. }) => {
                NativeError::RateLimited(e.to_string())
            }
            StreamUrlError::Source(e) => NativeError::Media(e.to_string()),
        }
    }
}

/// Requests one native download made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaRequests {
    pub stream_urls: u64,
    pub track_json: u64,
    pub playlist: u64,
    pub init: u64,
    pub segments: u64,
    pub progressive: u64,
    pub artwork: u64,
    /// Of `stream_urls`: the ones that renewed an expired signature.
    pub renewals: u64,
}

/// The native engine. Cheap to share; holds the SoundCloud client for stream requests.
pub struct Native {
    soundcloud: Arc<SoundCloud>,
    http: reqwest::Client,
    prefer: Prefer,
    retry: MediaRetry,
    segments_at_once: usize,
}

/// One track to fetch.
pub struct Job<'a> {
    pub track: &'a Track,
    /// The album tag: the playlist's name.
    pub album: &'a str,
    /// Where the unfinished file is written (a private folder of this download).
    pub staging: &'a Path,
    pub cancel: &'a CancellationToken,
}

/// A complete, tagged file in the staging folder.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub layout: Layout,
    pub requests: MediaRequests,
}

/// The stream being fetched, and what it has cost so far.
struct Session<'a> {
    native: &'a Native,
    track_id: u64,
    stream: Stream,
    authorization: Option<String>,
    cancel: &'a CancellationToken,
    counts: MediaRequests,
}

impl Session<'_> {
    /// A fresh signed URL for the stream (each one lives minutes: reference §9).
    async fn signed_url(&mut self) -> Result<Url, NativeError> {
        self.counts.stream_urls += 1;
        let sc = &self.native.soundcloud;
        let url = sc
            .stream_url(
                self.track_id,
                &self.stream,
                self.authorization.as_deref(),
                self.cancel,
            )
            .await?;
        Ok(url)
    }
}

/// How far a file's length may be from the track's `full_duration`: 2 s, or 2 % of a long mix.
pub fn tolerance(expected_secs: f64) -> f64 {
    (expected_secs * 0.02).max(2.0)
}

impl Native {
    pub fn new(soundcloud: Arc<SoundCloud>, prefer: Prefer) -> Result<Native, SourceError> {
        Ok(Native {
            http: soundcloud.http()?,
            soundcloud,
            prefer,
            retry: MediaRetry::default(),
            segments_at_once: SEGMENTS_AT_ONCE,
        })
    }

    /// Millisecond backoffs, for tests.
    pub fn with_retry(mut self, retry: MediaRetry) -> Native {
        self.retry = retry;
        self
    }

    /// Fetches `job.track` into `job.staging`; on failure, what it cost comes back too.
    pub async fn fetch(&self, job: &Job<'_>) -> Result<Fetched, (NativeError, MediaRequests)> {
        let mut counts = MediaRequests::default();
        let result = self.fetch_counted(job, &mut counts).await;
        result.map_err(|e| (e, counts))
    }

    async fn fetch_counted(
        &self,
        job: &Job<'_>,
        counts: &mut MediaRequests,
    ) -> Result<Fetched, NativeError> {
        let track = job.track;
        let Some(track_id) = track.soundcloud_id else {
            return Err(NativeError::Unsupported("not a SoundCloud track".into()));
        };
        let media: Box<Media> = match &track.media {
            Some(m) => m.clone(),
            None => {
                counts.track_json += 1;
                self.soundcloud
                    .track_media(track_id, job.cancel)
                    .await?
                    .ok_or_else(|| {
                        NativeError::Unsupported(
                            "SoundCloud lists no clear full-length stream for it".into(),
                        )
                    })?
            }
        };
        let (stream, layout) = match choose(&media, self.prefer) {
            Choice::Native(s, l) => (s.clone(), l),
            Choice::Unsupported(what) if what.is_empty() => {
                return Err(NativeError::Unsupported(
                    "SoundCloud lists no clear full-length stream for it".into(),
                ));
            }
            Choice::Unsupported(what) => {
                return Err(NativeError::Unsupported(format!(
                    "no stream the native engine speaks (only {what})"
                )));
            }
        };
        let mut session = Session {
            native: self,
            track_id,
            stream,
            authorization: media.track_authorization.clone(),
            cancel: job.cancel,
            counts: *counts,
        };
        let out = job.staging.join(format!("audio.{}", layout.extension()));
        let fetched = session.fetch_file(layout, job.staging, &out).await;
        *counts = session.counts;
        let secs = fetched?;
        check_length(secs, track.duration_ms)?;
        let cover = self.cover(track, job.cancel, counts).await;
        let comment = if track.url.is_empty() {
            &track.download_url
        } else {
            &track.url
        };
        let info = tags::Tags {
            title: &track.title,
            artist: &track.artist,
            album: job.album,
            genre: track.genre.as_deref(),
            comment,
            cover: cover.as_deref(),
            ..Default::default()
        };
        tags::write(&out, &info, tags::Mode::Replace)
            .map_err(|e| NativeError::Tag(e.to_string()))?;
        Ok(Fetched {
            path: out,
            layout,
            requests: *counts,
        })
    }

    /// The 500×500 cover (the listing already asked for `-t500x500`); a cover that cannot be
    /// had costs the file its cover only.
    async fn cover(
        &self,
        track: &Track,
        cancel: &CancellationToken,
        counts: &mut MediaRequests,
    ) -> Option<Vec<u8>> {
        let url = Url::parse(track.artwork_url.as_deref()?).ok()?;
        counts.artwork += 1;
        match get_bytes(&self.http, self.retry, &url, cancel).await {
            Ok(bytes) if bytes.starts_with(&[0xff, 0xd8]) => Some(bytes),
            Ok(_) => {
                tracing::warn!(track = %track.key, "the cover is not a JPEG; the file gets none");
                None
            }
            Err(e) => {
                tracing::warn!(track = %track.key, "cannot fetch the cover ({e}); the file gets none");
                None
            }
        }
    }
}

impl Session<'_> {
    /// Fetches the stream into `out` and returns how long it plays.
    async fn fetch_file(
        &mut self,
        layout: Layout,
        staging: &Path,
        out: &Path,
    ) -> Result<f64, NativeError> {
        match layout {
            Layout::AacHls => {
                let mut sink = RemuxSink {
                    raw: staging.join("samples.raw"),
                    remuxer: None,
                };
                let listed = self.fetch_hls(&mut sink).await?;
                let remuxer = sink.remuxer.ok_or_else(|| {
                    NativeError::Unsupported("an AAC HLS stream without an init segment".into())
                })?;
                let secs = remuxer.duration_secs();
                if (secs - listed).abs() > 1.0 {
                    return Err(NativeError::Incomplete(format!(
                        "the segments hold {secs:.1} s of audio, the playlist lists {listed:.1} s"
                    )));
                }
                remuxer.finish(out).map_err(remux_error)?;
                Ok(secs)
            }
            Layout::Mp3Hls => {
                let mut sink = FileSink(std::fs::File::create(out).map_err(NativeError::Io)?);
                self.fetch_hls(&mut sink).await?;
                sink.0.sync_all().map_err(NativeError::Io)?;
                drop(sink);
                mp3_length(out)
            }
            Layout::Mp3Progressive => {
                self.fetch_progressive(out).await?;
                mp3_length(out)
            }
        }
    }
}

fn mp3_length(path: &Path) -> Result<f64, NativeError> {
    let data = std::fs::read(path).map_err(NativeError::Io)?;
    let (secs, frames) = mp3::duration(&data);
    if frames == 0 {
        return Err(NativeError::Unsupported(
            "the MP3 stream holds no MPEG audio frames".into(),
        ));
    }
    Ok(secs)
}

fn check_length(secs: f64, expected_ms: Option<u64>) -> Result<(), NativeError> {
    let Some(ms) = expected_ms else { return Ok(()) };
    let expected = ms as f64 / 1000.0;
    if (secs - expected).abs() > tolerance(expected) {
        return Err(NativeError::Incomplete(format!(
            "the stream plays {secs:.1} s, the track {expected:.1} s (a preview or a cut stream)"
        )));
    }
    Ok(())
}

fn remux_error(e: remux::RemuxError) -> NativeError {
    match e {
        remux::RemuxError::Unsupported(w) => NativeError::Unsupported(w),
        remux::RemuxError::Broken(w) => NativeError::Incomplete(w),
        remux::RemuxError::Io(e) => NativeError::Io(e),
    }
}

/// HLS AAC: the init segment starts the remux, each segment's samples go to the raw file.
struct RemuxSink {
    raw: PathBuf,
    remuxer: Option<remux::Remuxer>,
}

impl hls::SegmentSink for RemuxSink {
    fn init(&mut self, bytes: &[u8]) -> Result<(), NativeError> {
        self.remuxer = Some(remux::Remuxer::new(bytes, &self.raw).map_err(remux_error)?);
        Ok(())
    }
    fn segment(&mut self, bytes: &[u8]) -> Result<(), NativeError> {
        let r = self.remuxer.as_mut().ok_or_else(|| {
            NativeError::Unsupported("an AAC HLS stream without an init segment".into())
        })?;
        r.push_segment(bytes).map_err(remux_error)
    }
}

/// HLS MP3: the segments, concatenated, are the file.
struct FileSink(std::fs::File);

impl hls::SegmentSink for FileSink {
    fn init(&mut self, _: &[u8]) -> Result<(), NativeError> {
        Err(NativeError::Unsupported(
            "an MP3 HLS stream with an init segment".into(),
        ))
    }
    fn segment(&mut self, bytes: &[u8]) -> Result<(), NativeError> {
        use std::io::Write;
        self.0.write_all(bytes).map_err(NativeError::Io)
    }
}
