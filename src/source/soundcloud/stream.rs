//! The stream check: the one request that tells a DRM label track (clear transcodings listed,
//! only the encrypted one served, reference §9) from a track that plays.
//!
//! Invariant: only a 404 from the clear stream says a track is DRM-protected; any other failure
//! is returned as an error, never read as an answer.

use super::http::Failure;
use super::{Call, SoundCloud};
use crate::model::DrmCheck;
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
    /// Asks a [`DrmCheck`] track's clear stream once: `GET <transcoding url>?client_id=…&
    /// track_authorization=…` answers `{"url": …}` for a track that plays and 404 for a DRM
    /// label track (reference §9). The transcoding URL is taken on the API host configured (in
    /// production the same host; a test or proxy `api_base` gets the same path).
    pub async fn check_stream(
        &self,
        track_id: u64,
        check: &DrmCheck,
        cancel: &CancellationToken,
    ) -> Result<StreamCheck, SourceError> {
        let what = format!("checking the stream of track {track_id}");
        let mut url = Url::parse(&check.transcoding_url).map_err(|e| SourceError::Decode {
            what: what.clone(),
            reason: format!("bad transcoding URL: {e}"),
        })?;
        if url.origin() != self.api_base.origin() {
            let path = url.path().to_string();
            url = self.api_base.clone();
            url.set_path(&path);
        }
        url.set_query(None);
        let query: Vec<(&str, String)> = check
            .track_authorization
            .iter()
            .map(|a| ("track_authorization", a.clone()))
            .collect();
        let call = Call::new(cancel);
        match self.api(&call, url, &query, &what, parse_stream).await {
            Ok(()) => Ok(StreamCheck::Plays),
            Err(Failure::Status(404)) => Ok(StreamCheck::DrmProtected),
            Err(Failure::Auth(status) | Failure::Status(status)) => {
                Err(SourceError::Http { status, what })
            }
            Err(Failure::Gave(e)) => Err(e),
        }
    }
}

/// A transcoding URL's answer, `{"url": "<signed stream URL>"}`: only that it is one matters.
fn parse_stream(body: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Stream {
        #[allow(dead_code)]
        url: String,
    }
    serde_json::from_slice::<Stream>(body)
        .map(|_| ())
        .map_err(|e| one_line(&e.to_string()))
}
