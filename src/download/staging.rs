//! The staging folder: where yt-dlp writes an unfinished file, and how a finished one is
//! checked once yt-dlp has moved it into the playlist's folder.
//!
//! Invariants: no partial file is ever in the music folder. yt-dlp writes into a hidden folder
//! `<dest>/.playlistd-partial/<key>/` (`-P temp:`), on the same file system, and moves the
//! finished file into place itself; every way out of a run (success, failure, timeout, cancel,
//! even the future being dropped) removes that folder, through [`Scratch`]'s `Drop`, and any
//! `.part`-like leftovers of the track next to it.

use super::Downloaded;
use super::failure::{DownloadError, FailureReason};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The hidden folder, inside a playlist's folder, where yt-dlp writes unfinished files.
pub const STAGING_DIR: &str = ".playlistd-partial";

/// What yt-dlp leaves behind when it is stopped mid-download.
const PARTIAL_SUFFIXES: &[&str] = &[".part", ".ytdl", ".temp"];

/// The staging folder of one run, removed on every way out (including the future being dropped,
/// which is why this is a `Drop` and uses blocking calls on a tiny folder).
pub(super) struct Scratch {
    pub(super) staging: PathBuf,
    pub(super) dest_dir: PathBuf,
    pub(super) stem: String,
}

impl Scratch {
    pub(super) fn clean(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
        if let Some(parent) = self.staging.parent() {
            // Fails while other tracks stage there, which is what we want.
            let _ = std::fs::remove_dir(parent);
        }
        // yt-dlp never writes these into the music folder with our `-P temp:`, but a run with
        // other extra_args, or an older version of us, may have.
        let Ok(entries) = std::fs::read_dir(&self.dest_dir) else {
            return;
        };
        let prefix = format!("{}.", self.stem);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && is_partial_name(name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean();
    }
}

fn is_partial_name(name: &str) -> bool {
    PARTIAL_SUFFIXES.iter().any(|s| name.ends_with(s)) || name.contains(".part-Frag")
}

/// Another task may remove the shared staging parent between `create_dir_all`'s two `mkdir`s.
pub(super) fn create_dir_all_retry(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = std::fs::create_dir_all(dir);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// The last line yt-dlp printed is the path after all moves; it must name a non-empty file.
pub(super) async fn finished_file(stdout: &VecDeque<Vec<u8>>) -> Result<Downloaded, DownloadError> {
    let Some(line) = stdout.back() else {
        return Err(DownloadError::new(
            FailureReason::NoOutput,
            "yt-dlp succeeded but printed no file path (does download.extra_args disable --print?)",
        ));
    };
    let path = PathBuf::from(OsStr::from_bytes(line));
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(Downloaded {
            path,
            bytes: m.len(),
            engine: Some(super::Engine::YtDlp),
            requests: None,
        }),
        Ok(_) => Err(DownloadError::new(
            FailureReason::NoOutput,
            format!(
                "yt-dlp reported {} but it is empty or not a file",
                path.display()
            ),
        )),
        Err(e) => Err(DownloadError::new(
            FailureReason::NoOutput,
            format!(
                "yt-dlp reported {} but it cannot be read: {e}",
                path.display()
            ),
        )),
    }
}
