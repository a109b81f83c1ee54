//! The stream check: the one request that tells a DRM label track (clear transcodings listed,
//! only the encrypted one served, reference §9) from a track that plays.
//!
//! The same request, made by the native downloader, gives the signed stream URL it fetches
//! ([`SoundCloud::stream_url`]), and `/tracks/{id}` the fresh track JSON of a track whose listed
//! streams are missing ([`SoundCloud::track_media`]).
//!
//! Invariants: only a 404 from the clear stream says a track is DRM-protected; any other failure
//! is returned as an error, never read as an answer. Every transcoding-URL request, check or
//! download, waits its turn at one [`Pacer`](super::pace::Pacer), under SoundCloud's limit.

use super::http::Failure;
use super::raw::{RawTrack, map_track};
use super::{Call, SoundCloud};
use crate::model::{DrmCheck, Media, Stream};
use crate::source::{SourceError, one_line};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;

/// What a clear stream's transcoding URL said about a [`DrmCheck`] track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCheck {
    /// It answered with a stream URL: the track plays.
    Plays,
    /// It answered 404: the clear stream is gone, only the encrypted one plays (DRM).
    DrmProtected,
}

impl SoundCloud {
    /// Asks a [`DrmCheck`] track's clear stream once ([`SoundCloud::ask_stream`]): a stream
    /// URL for a track that plays, 404 for a DRM label track (reference §9).
    pub async fn check_stream(
        &self,
        track_id: u64,
        check: &DrmCheck,
        cancel: &CancellationToken,
    ) -> Result<StreamCheck, SourceError> {
        let what = format!("checking the stream of track {track_id}");
        let auth = check.track_authorization.as_deref();
        match self
            .ask_stream(&check.transcoding_url, auth, &what, cancel)
            .await
        {
            Ok(_) => Ok(StreamCheck::Plays),
            Err(Failure::Status(404)) => Ok(StreamCheck::DrmProtected),
            Err(Failure::Auth(status) | Failure::Status(status)) => {
                Err(SourceError::Http { status, what })
            }
            Err(Failure::Gave(e)) => Err(e),
        }
    }

    /// One paced request for a transcoding's stream: `GET <transcoding url>?client_id=…&
    /// track_authorization=…`, answered `{"url": "<signed URL>"}`. The transcoding URL is taken
    /// on the API host configured (in production the same host; a test or proxy `api_base`
    /// gets the same path), with its own query kept (a private track's `secret_token`).
    async fn ask_stream(
        &self,
        transcoding_url: &str,
        track_authorization: Option<&str>,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<String, Failure> {
        let mut url = Url::parse(transcoding_url).map_err(|e| {
            Failure::Gave(SourceError::Decode {
                what: what.to_string(),
                reason: format!("bad transcoding URL: {e}"),
            })
        })?;
        if url.origin() != self.api_base.origin() {
            let (path, query) = (url.path().to_string(), url.query().map(str::to_string));
            url = self.api_base.clone();
            url.set_path(&path);
            url.set_query(query.as_deref());
        }
        let query: Vec<(&str, String)> = track_authorization
            .map(|a| ("track_authorization", a.to_string()))
            .into_iter()
            .collect();
        self.pacer.wait(cancel).await.map_err(Failure::Gave)?;
        self.api(&Call::new(cancel), url, &query, what, parse_stream)
            .await
    }
}

/// Why a stream URL could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamUrlError {
    /// 404: the stream is gone (a deleted or private track, or DRM on a label track).
    NotFound,
    /// Another HTTP status, after the client id was refreshed where that could help.
    Http(u16),
    /// Anything else (bot protection, 429s past the budget, the network, a cancel).
    Source(SourceError),
}

impl SoundCloud {
    /// A transcoding's signed stream URL (reference §9: it expires within minutes), through
    /// the same paced request as the DRM check ([`SoundCloud::ask_stream`]).
    pub async fn stream_url(
        &self,
        track_id: u64,
        stream: &Stream,
        track_authorization: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Url, StreamUrlError> {
        let what = format!("the stream URL of track {track_id}");
        let asked = self
            .ask_stream(&stream.url, track_authorization, &what, cancel)
            .await;
        let signed = match asked {
            Ok(signed) => signed,
            Err(Failure::Status(404)) => return Err(StreamUrlError::NotFound),
            Err(Failure::Auth(status) | Failure::Status(status)) => {
                return Err(StreamUrlError::Http(status));
            }
            Err(Failure::Gave(e)) => return Err(StreamUrlError::Source(e)),
        };
        Url::parse(&signed).map_err(|e| {
            StreamUrlError::Source(SourceError::Decode {
                what,
                reason: format!("bad signed URL: {e}"),
            })
        })
    }

    /// A track's streams from its JSON as of now (`GET /tracks/{id}`), for a track whose
    /// listing carried none. `Ok(None)`: it lists no stream the downloader may use.
    pub async fn track_media(
        &self,
        track_id: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<Box<Media>>, StreamUrlError> {
        let what = format!("the JSON of track {track_id}");
        let call = Call::new(cancel);
        let url = self.endpoint(&format!("tracks/{track_id}"));
        match self.api(&call, url, &[], &what, parse_track).await {
            Ok(raw) => Ok(map_track(raw).track.media),
            Err(Failure::Status(404)) => Err(StreamUrlError::NotFound),
            Err(Failure::Auth(status) | Failure::Status(status)) => {
                Err(StreamUrlError::Http(status))
            }
            Err(Failure::Gave(e)) => Err(StreamUrlError::Source(e)),
        }
    }
}

fn parse_track(body: &[u8]) -> Result<RawTrack, String> {
    serde_json::from_slice(body).map_err(|e| one_line(&e.to_string()))
}

/// A transcoding URL's answer, `{"url": "<signed stream URL>"}`.
fn parse_stream(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Signed {
        url: String,
    }
    serde_json::from_slice::<Signed>(body)
        .map(|s| s.url)
        .map_err(|e| one_line(&e.to_string()))
}
