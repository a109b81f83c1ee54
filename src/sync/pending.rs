//! The pending work of one sync, as a query: why a first sync of 10,000 tracks does not hold
//! 10,000 tracks in memory while its pages are created one by one.
//!
//! The diff writes each track that has work into a table (the listed track, the page id and
//! file path its record had, the stream to check when it may be under DRM, and which work it
//! has), and the stages ask for their work with a query: the DRM check for the held-back
//! tracks, then [`Pending::work`] for the lists of the Notion stage, the downloads and the
//! write-backs, and [`Pending::read`] for one entry just before it is used. The listing's
//! fields (download URL, duration, genre, artwork) are what a create needs and the state does
//! not keep, which is why the work has a table of its own rather than a query on `tracks`.
//!
//! Invariants:
//! - the table lives in a private temporary SQLite database of this sync (opened with an
//!   empty file name): it is never in `state.db`, disappears with the sync, crash or not, and
//!   a dry run leaves nothing behind. Its page cache is capped ([`CACHE_KIB`]), so memory stays
//!   flat with the playlist's size; the entries spill to SQLite's temporary file;
//! - entry numbers follow the listing, so every list comes back in listing order;
//! - a track held for its DRM check is in no list until [`Pending::checked`] releases it; a
//!   DRM-protected one is dropped, so it gets neither a page nor a download;
//! - every failure is a [`PendingError`], never a panic.

use crate::model::{DrmCheck, Track};
use rusqlite::{Connection, OptionalExtension, params};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The page cache of the work table, in KiB (SQLite's default is 2 MiB): entries past it
/// live in SQLite's temporary file.
const CACHE_KIB: u32 = 512;

const SCHEMA: &str = "
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE work (
    id INTEGER PRIMARY KEY,
    track TEXT NOT NULL,
    page_id TEXT,
    download_path BLOB,
    drm_check TEXT,
    notion TEXT CHECK (notion IN ('create', 'tag')),
    download TEXT CHECK (download IN ('fetch', 'writeback')),
    held INTEGER NOT NULL DEFAULT 0
);
BEGIN;
";

/// The pending work could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot keep this sync's pending work in a temporary database: {reason} (fix: make the temporary folder (TMPDIR, else /tmp) writable, with free space)"
)]
pub struct PendingError {
    pub reason: String,
}

impl From<rusqlite::Error> for PendingError {
    fn from(e: rusqlite::Error) -> Self {
        PendingError {
            reason: e.to_string(),
        }
    }
}

impl From<serde_json::Error> for PendingError {
    fn from(e: serde_json::Error) -> Self {
        PendingError {
            reason: e.to_string(),
        }
    }
}

/// One entry as read back: a listed track and what its record said when it was listed.
#[derive(Debug)]
pub struct Entry {
    pub track: Track,
    /// The record's page: the page a tag goes to, or a write-back's.
    pub page_id: Option<String>,
    /// The record's file: what a write-back sets on the page.
    pub download_path: Option<PathBuf>,
    /// The stream to ask before the track's work may go ahead (see `sync::drm`).
    pub drm_check: Option<DrmCheck>,
}

/// An entry as the diff writes it: borrowed, so writing it copies nothing.
pub struct EntryRef<'a> {
    pub track: &'a Track,
    pub page_id: Option<&'a str>,
    pub download_path: Option<&'a Path>,
    /// Set when the track's work waits for its DRM check.
    pub drm_check: Option<&'a DrmCheck>,
    pub notion: Option<NotionDue>,
    pub download: Option<DownloadDue>,
}

/// The Notion work a listed track has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotionDue {
    Create,
    /// Add this playlist to the page the state knows.
    Tag,
}

impl NotionDue {
    pub fn as_str(self) -> &'static str {
        match self {
            NotionDue::Create => "create",
            NotionDue::Tag => "tag",
        }
    }
}

/// The download work a listed track has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadDue {
    Fetch,
    /// The file is there; its page does not say so yet.
    WriteBack,
}

impl DownloadDue {
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadDue::Fetch => "fetch",
            DownloadDue::WriteBack => "writeback",
        }
    }
}

/// The work lists, as entry numbers in listing order (4 bytes a track).
#[derive(Debug, Default)]
pub struct Work {
    /// Not in Notion yet (or due again): looked up, then created or adopted.
    pub create: Vec<u32>,
    /// In Notion, but without this playlist on its page.
    pub tag: Vec<u32>,
    /// To download.
    pub download: Vec<u32>,
    /// Downloaded, but its page does not say so yet.
    pub writeback: Vec<u32>,
}

impl Work {
    /// Tracks that may reach Notion in this run (a run's retry budget grows by them).
    pub fn tracks(&self) -> usize {
        self.create.len() + self.tag.len() + self.download.len() + self.writeback.len()
    }
}

/// The pending work of one sync, read from any task.
pub struct Pending {
    conn: Mutex<Connection>,
    len: u32,
}

impl Pending {
    /// An empty table in a private temporary database (nothing is on disk until SQLite spills).
    pub fn open() -> Result<Pending, PendingError> {
        let conn = Connection::open("")?;
        conn.pragma_update(None, "cache_size", -i64::from(CACHE_KIB))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Pending {
            conn: Mutex::new(conn),
            len: 0,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("pending work")
    }

    /// Appends an entry and returns its number.
    pub fn push(&mut self, e: &EntryRef<'_>) -> Result<u32, PendingError> {
        let id = self.len;
        let check = e.drm_check.map(serde_json::to_string).transpose()?;
        self.conn
            .get_mut()
            .expect("pending work")
            .prepare_cached(
                "INSERT INTO work (id, track, page_id, download_path, drm_check, notion, download, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                serde_json::to_string(e.track)?,
                e.page_id,
                e.download_path.map(|p| p.as_os_str().as_bytes()),
                check,
                e.notion.map(NotionDue::as_str),
                e.download.map(DownloadDue::as_str),
                e.drm_check.is_some(),
            ])?;
        self.len += 1;
        Ok(id)
    }

    /// Done writing: the entries are committed to the table for the stages to query.
    pub fn finish(&mut self) -> Result<(), PendingError> {
        self.conn().execute_batch("COMMIT")?;
        Ok(())
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Reads entry `id` back.
    pub fn read(&self, id: u32) -> Result<Entry, PendingError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT track, page_id, download_path, drm_check FROM work WHERE id = ?1",
        )?;
        let row = stmt
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        let Some((track, page_id, path, check)) = row else {
            return Err(PendingError {
                reason: format!("no entry {id}"),
            });
        };
        let drm_check = check.map(|s| serde_json::from_str(&s)).transpose()?;
        Ok(Entry {
            track: serde_json::from_str(&track)?,
            page_id,
            download_path: path.map(|b| PathBuf::from(std::ffi::OsString::from_vec(b))),
            drm_check,
        })
    }

    /// The entries held back for their DRM check, in listing order.
    pub fn held(&self) -> Result<Vec<u32>, PendingError> {
        self.ids("SELECT id FROM work WHERE held = 1 ORDER BY id")
    }

    /// A held-back entry's check is done: its work joins the lists when its stream plays,
    /// and is dropped when it is under DRM.
    pub fn checked(&self, id: u32, plays: bool) -> Result<(), PendingError> {
        let sql = if plays {
            "UPDATE work SET held = 0 WHERE id = ?1"
        } else {
            "DELETE FROM work WHERE id = ?1"
        };
        self.conn().prepare_cached(sql)?.execute([id])?;
        Ok(())
    }

    /// The work lists of the entries not held back, each in listing order.
    pub fn work(&self) -> Result<Work, PendingError> {
        Ok(Work {
            create: self
                .ids("SELECT id FROM work WHERE held = 0 AND notion = 'create' ORDER BY id")?,
            tag: self.ids("SELECT id FROM work WHERE held = 0 AND notion = 'tag' ORDER BY id")?,
            download: self
                .ids("SELECT id FROM work WHERE held = 0 AND download = 'fetch' ORDER BY id")?,
            writeback: self
                .ids("SELECT id FROM work WHERE held = 0 AND download = 'writeback' ORDER BY id")?,
        })
    }

    fn ids(&self, sql: &str) -> Result<Vec<u32>, PendingError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(ids)
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
            media: None,
        }
    }

    fn entry<'a>(t: &'a Track, path: &'a Path, check: Option<&'a DrmCheck>) -> EntryRef<'a> {
        let i = t.soundcloud_id.unwrap();
        EntryRef {
            track: t,
            page_id: i.is_multiple_of(2).then_some("page"),
            download_path: Some(path),
            drm_check: check,
            notion: Some(if i.is_multiple_of(2) {
                NotionDue::Tag
            } else {
                NotionDue::Create
            }),
            download: (i != 3).then_some(DownloadDue::Fetch),
        }
    }

    #[test]
    fn entries_read_back_in_any_order_and_the_lists_are_queries_in_listing_order() {
        let mut p = Pending::open().unwrap();
        for i in 0..5u64 {
            let t = track(i);
            let path = PathBuf::from(format!("/music/{i}.m4a"));
            assert_eq!(p.push(&entry(&t, &path, None)).unwrap() as u64, i);
        }
        p.finish().unwrap();
        assert_eq!(p.len(), 5);
        for i in [4u64, 0, 2, 3, 1] {
            let e = p.read(i as u32).unwrap();
            assert_eq!(e.track, track(i));
            assert_eq!(e.page_id.as_deref(), i.is_multiple_of(2).then_some("page"));
            assert_eq!(
                e.download_path,
                Some(PathBuf::from(format!("/music/{i}.m4a")))
            );
        }
        assert!(p.read(5).unwrap_err().to_string().contains("no entry 5"));
        let w = p.work().unwrap();
        assert_eq!(w.create, [1, 3]);
        assert_eq!(w.tag, [0, 2, 4]);
        assert_eq!(w.download, [0, 1, 2, 4]);
        assert!(w.writeback.is_empty());
    }

    #[test]
    fn a_held_entry_is_in_no_list_until_checked_and_gone_when_under_drm() {
        let check = DrmCheck {
            transcoding_url: "https://api-v2.soundcloud.com/media/x/stream/hls".into(),
            track_authorization: Some("auth".into()),
        };
        let mut p = Pending::open().unwrap();
        let path = PathBuf::from("/music/x.m4a");
        for i in 1..=3u64 {
            let t = track(i);
            p.push(&entry(&t, &path, (i != 2).then_some(&check)))
                .unwrap();
        }
        p.finish().unwrap();
        assert_eq!(p.held().unwrap(), [0, 2]);
        assert_eq!(p.read(0).unwrap().drm_check, Some(check.clone()));
        assert_eq!(p.work().unwrap().create, Vec::<u32>::new());
        p.checked(0, true).unwrap();
        p.checked(2, false).unwrap();
        let w = p.work().unwrap();
        assert_eq!(
            (w.create, w.tag, w.download),
            (vec![0], vec![1], vec![0, 1])
        );
        assert!(p.held().unwrap().is_empty());
    }
}
