//! Why a download failed, decided in one place: a failed yt-dlp run (its exit code and last
//! stderr lines), a process that could not start, or a folder that could not be made becomes a
//! [`DownloadError`] with a [`FailureReason`].
//!
//! Invariants:
//! - [`FailureReason::fault`] is the only place that says whether a failure is the setup's,
//!   the track's for good ([`FailureReason::is_permanent`]), or the track's for now; the sync
//!   engine decides from it what a failure costs the track, and this module never retries.
//! - Only `ERROR:` lines decide a reason when there are any; a missing ffmpeg is never a
//!   missing track.
//! - A [`DownloadError`]'s message is one line.

use super::naming::truncate_bytes;
use crate::util::one_line;
use regex::Regex;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

/// Whose a failure is, which decides what it may cost the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The setup's (yt-dlp missing, its command line rejected, a full or unwritable disk):
    /// fixing the setup fixes every track, so the track is not charged for it.
    Setup,
    /// The track's, and retrying cannot help: it cannot be had from here.
    Permanent,
    /// The track's, or the network's, and a later attempt may pass.
    Transient,
}

/// Why a download failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The yt-dlp binary could not be started.
    YtDlpMissing,
    /// `download.timeout_secs` elapsed; the process group was killed.
    Timeout,
    /// The cancel token fired (shutdown); the process group was killed.
    Cancelled,
    GeoBlocked,
    NotFound,
    Unsupported,
    Drm,
    /// HTTP 429 from the site.
    RateLimited,
    DiskFull,
    PermissionDenied,
    /// yt-dlp exited with this code and no recognized message (128 + signal if it was killed by
    /// someone else).
    Exit(i32),
    /// yt-dlp reported success but no non-empty file could be found.
    NoOutput,
    /// A native download's file fell short of the track (missing segments, a preview's length).
    Incomplete,
    /// A native download's requests failed after their retries (the network, the CDN).
    Network,
    /// The file is complete, but its AIFF/WAV copies or its tags could not be written: the
    /// next run finds the file and makes what is missing.
    Library,
}

impl FailureReason {
    /// Whose fault this is; see [`Fault`].
    pub fn fault(self) -> Fault {
        match self {
            FailureReason::YtDlpMissing
            | FailureReason::Exit(2)
            | FailureReason::DiskFull
            | FailureReason::PermissionDenied => Fault::Setup,
            FailureReason::GeoBlocked
            | FailureReason::NotFound
            | FailureReason::Unsupported
            | FailureReason::Drm => Fault::Permanent,
            FailureReason::Timeout
            | FailureReason::Cancelled
            | FailureReason::RateLimited
            | FailureReason::Exit(_)
            | FailureReason::NoOutput
            | FailureReason::Incomplete
            | FailureReason::Network
            | FailureReason::Library => Fault::Transient,
        }
    }

    /// Retrying cannot help: the track itself cannot be had from here.
    pub fn is_permanent(self) -> bool {
        self.fault() == Fault::Permanent
    }

    /// Stable name for the state file and machine-readable output. `Exit(n)` is `"exit"`; the code
    /// is in the message.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::YtDlpMissing => "ytdlp_missing",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::GeoBlocked => "geo_blocked",
            FailureReason::NotFound => "not_found",
            FailureReason::Unsupported => "unsupported",
            FailureReason::Drm => "drm",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::DiskFull => "disk_full",
            FailureReason::PermissionDenied => "permission_denied",
            FailureReason::Exit(_) => "exit",
            FailureReason::NoOutput => "no_output",
            FailureReason::Incomplete => "incomplete",
            FailureReason::Network => "network",
            FailureReason::Library => "library",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FailureReason::Exit(code) => return write!(f, "yt-dlp exit {code}"),
            FailureReason::YtDlpMissing => "yt-dlp missing",
            FailureReason::Timeout => "timed out",
            FailureReason::Cancelled => "cancelled",
            FailureReason::GeoBlocked => "geo-blocked",
            FailureReason::NotFound => "not found",
            FailureReason::Unsupported => "unsupported",
            FailureReason::Drm => "DRM-protected",
            FailureReason::RateLimited => "rate-limited",
            FailureReason::DiskFull => "disk full",
            FailureReason::PermissionDenied => "permission denied",
            FailureReason::NoOutput => "no output file",
            FailureReason::Incomplete => "incomplete",
            FailureReason::Network => "network",
            FailureReason::Library => "copies or tags",
        };
        f.write_str(text)
    }
}

/// A failed download, on one line: the reason, then what yt-dlp (or the system) said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct DownloadError {
    pub reason: FailureReason,
    pub message: String,
}

impl DownloadError {
    pub(crate) fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        DownloadError {
            reason,
            message: one_line(&message.into()),
        }
    }

    pub(super) fn cancelled() -> Self {
        DownloadError::new(FailureReason::Cancelled, "download cancelled")
    }
}

/// Runs yt-dlp for tracks. Cheap to clone; clones share the download pool.
/// Maps a failed yt-dlp run to a reason, from its exit code and its last stderr lines.
pub(super) fn classify(code: i32, stderr: &[String]) -> DownloadError {
    let detail = last_words(stderr).unwrap_or_else(|| "no message on stderr".to_string());
    if code == 2 {
        return DownloadError::new(
            FailureReason::Exit(2),
            format!("yt-dlp rejected its command line; check download.extra_args: {detail}"),
        );
    }
    // Only ERROR lines decide, when there are any: warnings mention "not found" and the like for
    // things that did not stop the download.
    let errors: Vec<&str> = stderr
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    let lines: Vec<&str> = if errors.is_empty() {
        stderr.iter().map(String::as_str).collect()
    } else {
        errors
    };
    for line in lines.iter().rev() {
        if let Some(reason) = reason_of(line) {
            return DownloadError::new(reason, detail);
        }
    }
    let message = if code > 128 && code < 128 + 65 {
        format!("yt-dlp was killed by signal {}: {detail}", code - 128)
    } else {
        detail
    };
    DownloadError::new(FailureReason::Exit(code), message)
}

fn reason_of(line: &str) -> Option<FailureReason> {
    // A missing ffmpeg says "not found" too, but is a setup problem, not a missing track.
    static FFMPEG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)\bff(mpeg|probe)\b").expect("regex"));
    static PATTERNS: LazyLock<Vec<(Regex, FailureReason)>> =
        LazyLock::new(|| {
            [
            (r"(?i)no space left on device|disk quota exceeded", FailureReason::DiskFull),
            (r"(?i)permission denied|read-only file system", FailureReason::PermissionDenied),
            (
                r"(?i)geo.?restrict|not available from your location|not available in your country",
                FailureReason::GeoBlocked,
            ),
            (r"\bDRM\b", FailureReason::Drm),
            (r"(?i)HTTP Error 429|too many requests|rate.?limit", FailureReason::RateLimited),
            (r"(?i)HTTP Error 404|HTTP Error 410|not found", FailureReason::NotFound),
            (r"(?i)unsupported url", FailureReason::Unsupported),
        ]
        .into_iter()
        .map(|(re, reason)| (Regex::new(re).expect("static regex"), reason))
        .collect()
        });
    if FFMPEG.is_match(line) {
        return None;
    }
    PATTERNS
        .iter()
        .find(|(re, _)| re.is_match(line))
        .map(|(_, reason)| *reason)
}

/// The most telling line of stderr ([`crate::ytdlp::last_error_line`]), without its `ERROR:`
/// and at most 400 bytes.
pub(super) fn last_words(stderr: &[String]) -> Option<String> {
    let line = crate::ytdlp::last_error_line(stderr)?;
    let line = line.strip_prefix("ERROR:").unwrap_or(line).trim();
    Some(truncate_bytes(line, 400).to_string())
}

pub(super) fn spawn_failure(e: &std::io::Error, ytdlp: &Path) -> DownloadError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => DownloadError::new(
            FailureReason::PermissionDenied,
            format!(
                "cannot execute yt-dlp at {}: {e} (fix: make it executable, or set download.ytdlp)",
                ytdlp.display()
            ),
        ),
        _ => DownloadError::new(
            FailureReason::YtDlpMissing,
            format!(
                "cannot run yt-dlp at {}: {e} (fix: install yt-dlp (pip install yt-dlp) or set download.ytdlp)",
                ytdlp.display()
            ),
        ),
    }
}

pub(super) fn io_failure(e: &std::io::Error, path: &Path) -> DownloadError {
    DownloadError::new(
        io_reason(e).unwrap_or(FailureReason::Exit(-1)),
        format!(
            "cannot create {}: {e} (fix: make download.dir, or the playlist's dir, a folder playlistd can write to, with free space)",
            path.display()
        ),
    )
}

/// A full disk or a refused folder is the setup's fault; `None` for any other I/O error.
pub(crate) fn io_reason(e: &std::io::Error) -> Option<FailureReason> {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => Some(FailureReason::DiskFull),
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => Some(FailureReason::PermissionDenied),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_maps_to_reasons() {
        let cases: &[(i32, &str, FailureReason)] = &[
            (
                1,
                "ERROR: [generic] a: Unable to download webpage: HTTP Error 404: Not Found",
                FailureReason::NotFound,
            ),
            (
                1,
                "ERROR: Unsupported URL: http://127.0.0.1:8799/",
                FailureReason::Unsupported,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: This video is not available from your location due to geo restriction",
                FailureReason::GeoBlocked,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: This video is DRM protected",
                FailureReason::Drm,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: HTTP Error 429: Too Many Requests",
                FailureReason::RateLimited,
            ),
            (
                1,
                "ERROR: unable to write data: [Errno 28] No space left on device",
                FailureReason::DiskFull,
            ),
            (
                1,
                "ERROR: unable to open for writing: [Errno 13] Permission denied: '/m/x.part'",
                FailureReason::PermissionDenied,
            ),
            (
                1,
                "ERROR: Postprocessing: ffprobe and ffmpeg not found. Please install",
                FailureReason::Exit(1),
            ),
            (
                1,
                "ERROR: [generic] a: Connection refused",
                FailureReason::Exit(1),
            ),
            (
                2,
                "yt-dlp: error: no such option: --bogus",
                FailureReason::Exit(2),
            ),
            (137, "", FailureReason::Exit(137)),
        ];
        for (code, line, want) in cases {
            let stderr = vec![
                "WARNING: [generic] Falling back on generic information extractor".to_string(),
                line.to_string(),
            ];
            assert_eq!(classify(*code, &stderr).reason, *want, "{line}");
        }
        // Warnings do not decide when an ERROR line exists.
        let stderr = vec![
            "WARNING: thumbnail not found".to_string(),
            "ERROR: Connection reset".to_string(),
        ];
        assert_eq!(classify(1, &stderr).reason, FailureReason::Exit(1));
        assert!(classify(137, &[]).message.contains("signal 9"));
    }

    #[test]
    fn reason_names_are_stable_and_distinct() {
        use FailureReason::*;
        let all = [
            YtDlpMissing,
            Timeout,
            Cancelled,
            GeoBlocked,
            NotFound,
            Unsupported,
            Drm,
            RateLimited,
            DiskFull,
            PermissionDenied,
            Exit(3),
            NoOutput,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(NotFound.as_str(), "not_found");
        assert_eq!(all.iter().filter(|r| r.is_permanent()).count(), 4);
        let e = DownloadError::new(Exit(1), "line one\nline two");
        assert_eq!(e.to_string(), "yt-dlp exit 1: line one line two");
    }
}
