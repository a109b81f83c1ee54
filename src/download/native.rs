//! The native engine inside the download pool: runs [`crate::audio::Native`] in the track's
//! staging folder, under the same timeout and cancel as a yt-dlp run, and moves the finished
//! file into the music folder.
//!
//! Invariants: the file appears in the music folder only complete and tagged, by one rename on
//! the same file system followed by an fsync of the folder; every way out leaves the staging
//! folder to [`Scratch`]'s `Drop`; a native failure becomes a [`DownloadError`] whose reason is
//! [`FailureReason::Unsupported`] only when yt-dlp might do better.

use super::failure::{io_failure, io_reason};
use super::staging::{Scratch, create_dir_all_retry};
use super::{DownloadError, Downloaded, Downloader, Engine, FailureReason, Request};
use crate::audio::{Job, Native, NativeError};
use std::sync::Arc;

impl Downloader {
    pub(super) async fn run_native(
        &self,
        native: &Arc<Native>,
        req: &Request<'_>,
        stem: &str,
        scratch: &Scratch,
    ) -> Result<Downloaded, DownloadError> {
        scratch.clean();
        create_dir_all_retry(&scratch.staging).map_err(|e| io_failure(&e, &scratch.staging))?;
        let job = Job {
            track: req.track,
            album: req.album,
            staging: &scratch.staging,
            cancel: req.cancel,
        };
        let timeout = self.inner.timeout;
        let fetched = match tokio::time::timeout(timeout, native.fetch(&job)).await {
            Err(_) => {
                return Err(DownloadError::new(
                    FailureReason::Timeout,
                    format!(
                        "the native download did not finish within {} s (download.timeout_secs)",
                        timeout.as_secs()
                    ),
                ));
            }
            Ok(Err((e, requests))) => {
                tracing::debug!(track = %req.track.key, error = %e, ?requests, "native download failed");
                return Err(failure(e));
            }
            Ok(Ok(f)) => f,
        };
        let dest = req
            .dest_dir
            .join(format!("{stem}.{}", fetched.layout.extension()));
        let moved = std::fs::rename(&fetched.path, &dest)
            .and_then(|()| std::fs::File::open(req.dest_dir)?.sync_all());
        moved.map_err(|e| io_failure(&e, &dest))?;
        let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        tracing::debug!(track = %req.track.key, requests = ?fetched.requests, "fetched natively");
        Ok(Downloaded {
            path: dest,
            bytes,
            engine: Some(Engine::Native),
            requests: Some(fetched.requests),
        })
    }
}

fn failure(e: NativeError) -> DownloadError {
    let reason = match &e {
        NativeError::Unsupported(_) => FailureReason::Unsupported,
        NativeError::NotFound => FailureReason::NotFound,
        NativeError::Incomplete(_) | NativeError::Tag(_) => FailureReason::Incomplete,
        NativeError::Media(_) => FailureReason::Network,
        NativeError::RateLimited(_) => FailureReason::RateLimited,
        NativeError::Cancelled => return DownloadError::cancelled(),
        NativeError::Io(io) => io_reason(io).unwrap_or(FailureReason::Incomplete),
    };
    DownloadError::new(reason, format!("native download: {e}"))
}
