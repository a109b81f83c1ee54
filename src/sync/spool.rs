//! The pending work of one sync, on disk: why a first sync of 10,000 tracks does not hold
//! 10,000 tracks in memory while its pages are created one by one.
//!
//! The diff writes each track that has work here (one JSON line: the listed track, plus the
//! page id and file path its record had, and the stream to check when it may be under DRM),
//! and keeps only the entry's number in its work lists; the DRM check, the Notion stage, the
//! downloads and the dry run's plan read an entry back just before they use it. A spool rather than rebuilding a create from the state record: a
//! create needs what only the listing has (download URL, duration, genre, artwork), and the
//! state is not the place for it.
//!
//! Invariants:
//! - memory per entry is its end offset (8 bytes); the lines themselves are never all in
//!   memory, and nothing is written until the first entry (an unchanged playlist makes no
//!   file);
//! - the file is anonymous (unlinked at creation), so it disappears with the sync, crash or
//!   not, and a dry run leaves nothing behind;
//! - every failure is a [`SpoolError`] naming the folder, never a panic.

use crate::model::{DrmCheck, Track};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The spool could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot keep this sync's pending work in a scratch file in {}: {reason} (fix: make that folder (cache_dir) writable, with free space)",
    .dir.display()
)]
pub struct SpoolError {
    pub dir: PathBuf,
    pub reason: String,
}

/// One entry as read back: a listed track and what its record said when it was listed.
#[derive(Debug, Deserialize)]
pub struct Entry {
    pub track: Track,
    /// The record's page: the page a tag goes to, or a write-back's.
    pub page_id: Option<String>,
    /// The record's file: what a write-back sets on the page.
    pub download_path: Option<PathBuf>,
    /// The stream to ask before the track's work may go ahead (see `sync::drm`).
    #[serde(default)]
    pub drm_check: Option<DrmCheck>,
}

/// An entry as written: borrowed, so writing it copies nothing.
#[derive(Serialize)]
pub struct EntryRef<'a> {
    pub track: &'a Track,
    pub page_id: Option<&'a str>,
    pub download_path: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drm_check: Option<&'a DrmCheck>,
}

/// The spool while the diff fills it.
pub struct SpoolWriter {
    dir: PathBuf,
    out: Option<BufWriter<File>>,
    /// Where each entry ends; entry `i` starts where `i - 1` ends (0 for the first).
    ends: Vec<u64>,
    line: Vec<u8>,
}

impl SpoolWriter {
    /// A spool in `dir`, created on the first [`SpoolWriter::push`].
    pub fn new(dir: PathBuf) -> SpoolWriter {
        SpoolWriter {
            dir,
            out: None,
            ends: Vec::new(),
            line: Vec::new(),
        }
    }

    fn err(&self, reason: impl std::fmt::Display) -> SpoolError {
        SpoolError {
            dir: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    /// Appends an entry and returns its number.
    pub fn push(&mut self, entry: &EntryRef<'_>) -> Result<u32, SpoolError> {
        let id = u32::try_from(self.ends.len()).map_err(|_| self.err("too many entries"))?;
        if self.out.is_none() {
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.err(e))?;
            self.out = Some(BufWriter::new(file));
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry).map_err(|e| self.err(e))?;
        self.line.push(b'\n');
        let out = self.out.as_mut().expect("opened above");
        if let Err(e) = out.write_all(&self.line) {
            return Err(self.err(e));
        }
        let start = self.ends.last().copied().unwrap_or(0);
        self.ends.push(start + self.line.len() as u64);
        Ok(id)
    }

    /// Done writing: the spool to read from.
    pub fn finish(mut self) -> Result<Spool, SpoolError> {
        let file = match self.out.take() {
            None => None,
            Some(out) => Some(out.into_inner().map_err(|e| self.err(e.error()))?),
        };
        self.ends.shrink_to_fit();
        Ok(Spool {
            dir: self.dir,
            file,
            ends: self.ends,
        })
    }
}

/// The spool once written: entries read back by number, from any task.
pub struct Spool {
    dir: PathBuf,
    file: Option<File>,
    ends: Vec<u64>,
}

impl Spool {
    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Reads entry `id` back (positioned reads: no cursor is shared between readers).
    pub fn read(&self, id: u32) -> Result<Entry, SpoolError> {
        let err = |reason: String| SpoolError {
            dir: self.dir.clone(),
            reason,
        };
        let i = id as usize;
        let (Some(file), Some(&end)) = (&self.file, self.ends.get(i)) else {
            return Err(err(format!("no entry {id}")));
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&buf).map_err(|e| err(format!("entry {id} is unreadable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrackKey;

    fn track(i: u64) -> Track {
        Track {
            key: TrackKey::soundcloud(i),
            soundcloud_id: Some(i),
            title: format!("Track \"{i}\"\nwith a newline"),
            artist: "A".into(),
            url: format!("https://soundcloud.com/a/t{i}"),
            download_url: format!("https://soundcloud.com/a/t{i}"),
            duration_ms: Some(1000),
            genre: Some("Ambient".into()),
            artwork_url: None,
        }
    }

    #[test]
    fn entries_read_back_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path().to_path_buf());
        for i in 0..5u64 {
            let t = track(i);
            let path = PathBuf::from(format!("/music/{i}.m4a"));
            let id = w
                .push(&EntryRef {
                    track: &t,
                    page_id: (i % 2 == 0).then_some("page"),
                    download_path: Some(&path),
                    drm_check: None,
                })
                .unwrap();
            assert_eq!(id as u64, i);
        }
        let s = w.finish().unwrap();
        assert_eq!(s.len(), 5);
        for i in [4u64, 0, 2, 3, 1] {
            let e = s.read(i as u32).unwrap();
            assert_eq!(e.track, track(i));
            assert_eq!(e.page_id.as_deref(), (i % 2 == 0).then_some("page"));
            assert_eq!(
                e.download_path,
                Some(PathBuf::from(format!("/music/{i}.m4a")))
            );
        }
        assert!(s.read(5).is_err());
        // Anonymous: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn no_entry_no_file_and_an_unusable_folder_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = SpoolWriter::new(dir.path().to_path_buf()).finish().unwrap();
        assert_eq!(s.len(), 0);
        let missing = dir.path().join("missing");
        let mut w = SpoolWriter::new(missing.clone());
        let t = track(1);
        let e = w
            .push(&EntryRef {
                track: &t,
                page_id: None,
                download_path: None,
                drm_check: None,
            })
            .unwrap_err();
        assert_eq!(e.dir, missing);
        let m = e.to_string();
        assert!(m.contains("(fix: ") && !m.contains('\n'), "{m}");
    }
}
