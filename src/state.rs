//! The state: what playlistd has already done, so each run only does what is new.
//!
//! It lives in SQLite (`<state dir>/state.db`, WAL mode; schema and row mapping in [`db`]).
//! An older JSON state (`state.json` and its journal) is imported once ([`import`]).
//!
//! Invariants:
//! - Tracks are keyed by [`TrackKey`]; a track in two playlists has one record, one Notion
//!   page and one download.
//! - Reads go to the database; changes stay in memory (the tracks changed, the playlists
//!   marked through [`StateStore::playlist_mut`]) until [`StateStore::save`] writes them all
//!   in one transaction: one fsync per save, not per record, and a crash leaves either the
//!   whole save or none of it.
//! - Losing the changes since the last save (a crash between a step and the next save) never
//!   causes a duplicate: pages are looked up in Notion before being created and finished
//!   downloads are found on disk by their `[id]` file name. So saves can be batched.
//! - A damaged database is refused with the fix ([`StateError::Corrupt`]); nothing is
//!   overwritten silently, and a database written by a newer playlistd is not downgraded.
//! - Loading never creates files when there is nothing to load: `status` and `check` on a
//!   new machine leave the state directory as it is; the first save creates the database.

mod db;
mod import;
mod tracks;

pub use db::DB_FILE;
pub use import::{JOURNAL_FILE, STATE_FILE};
pub use tracks::Tracks;

use crate::model::{TrackKey, UnavailableReason};
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "playlistd.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state {path} was written by a newer playlistd (format {found}, this one reads {supported}) (fix: upgrade playlistd, or set PLAYLISTD_STATE_DIR to another directory)"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "state {path} is damaged ({reason}) (fix: move it aside, with its -wal and -shm files; the next run starts fresh and adopts existing Notion pages instead of duplicating them)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "cannot {action} {path}: {source} (fix: check that the directory exists, is writable and the disk is not full)"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {path}: {reason} (fix: check that the directory is writable, the disk is not full, and no other program holds the file)"
    )]
    Sql { path: PathBuf, reason: String },
    #[error(
        "another playlistd (pid {pid}) is using {dir} (fix: wait for it to finish, or stop it first)"
    )]
    Locked { dir: PathBuf, pid: String },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

/// Progress of one step (Notion or download) for one track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    Pending,
    Done,
    /// Failed; retried on a later run once `next_retry` has passed.
    Failed,
    /// Failed too often: left alone until `playlistd retry`.
    Parked,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Step {
    pub fn is_done(&self) -> bool {
        self.status == StepStatus::Done
    }

    /// Should this run attempt the step?
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            StepStatus::Pending => true,
            StepStatus::Done | StepStatus::Parked => false,
            StepStatus::Failed => self.next_retry.is_none_or(|t| t <= now),
        }
    }

    pub fn succeed(&mut self) {
        *self = Step {
            status: StepStatus::Done,
            attempts: self.attempts,
            last_error: None,
            next_retry: None,
        };
    }

    /// Records a failure with exponential backoff (5 min, 10, 20 ... capped at 24 h); parks
    /// the step after `max_attempts`.
    pub fn fail(&mut self, error: impl Into<String>, now: DateTime<Utc>, max_attempts: u32) {
        self.attempts += 1;
        self.last_error = Some(error.into());
        if self.attempts >= max_attempts {
            self.status = StepStatus::Parked;
            self.next_retry = None;
        } else {
            self.status = StepStatus::Failed;
            self.next_retry = Some(now + backoff(self.attempts));
        }
    }

    /// A failure that is not the track's fault (yt-dlp missing, its options wrong, the folder
    /// unwritable): recorded, due again next run, and never counted towards parking.
    pub fn fail_uncharged(&mut self, error: impl Into<String>) {
        self.status = StepStatus::Failed;
        self.last_error = Some(error.into());
        self.next_retry = None;
    }

    /// `playlistd retry`: forget the backoff and the parking, keep the history.
    pub fn clear_backoff(&mut self) -> bool {
        if matches!(self.status, StepStatus::Failed | StepStatus::Parked) {
            self.status = StepStatus::Failed;
            self.next_retry = None;
            true
        } else {
            false
        }
    }
}

/// Delay before the next attempt after `attempts` failures.
pub fn backoff(attempts: u32) -> chrono::Duration {
    let minutes = 5i64.saturating_mul(1i64 << attempts.saturating_sub(1).min(12));
    chrono::Duration::minutes(minutes.min(24 * 60))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackState {
    pub title: String,
    pub artist: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soundcloud_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<UnavailableReason>,
    /// For a track listing clear and encrypted streams: what its one stream check said. Kept
    /// while the track still lists encrypted streams, so it is never asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drm: Option<DrmVerdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notion_page_id: Option<String>,
    #[serde(default)]
    pub notion: Step,
    /// Playlists this page is known to carry in its playlist property.
    #[serde(default, skip_serializing_if = "PlaylistNames::is_empty")]
    pub notion_playlists: PlaylistNames,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_path: Option<PathBuf>,
    #[serde(default)]
    pub download: Step,
    /// `Downloaded` and the file path are on the Notion page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub download_written_back: bool,
    pub first_seen: DateTime<Utc>,
    /// How long the track plays, as SoundCloud lists it (for playlist files); `None` in
    /// records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tempo and key as measured from the file, or why the file could not be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// What the Notion page held of its own when it was last looked up: kept there.
    #[serde(default, skip_serializing_if = "PageKept::is_empty")]
    pub page_kept: PageKept,
    /// Tempo, Key and the copies' paths are on the Notion page (or there was nothing to write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub analysis_written_back: bool,
}

/// The outcome of a track's analysis. Stored as three columns: a mark (`measured`, or the
/// reason it could not be), the tempo and the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analysis {
    /// Either may be missing: a file without beats or without harmony says nothing.
    Measured {
        tempo: Option<f64>,
        /// Standard notation ("A Minor").
        key: Option<String>,
    },
    /// The file could not be decoded (e.g. Opus from yt-dlp): recorded once, never retried.
    Failed(String),
}

impl Analysis {
    const MEASURED: &'static str = "measured";

    pub fn mark(&self) -> &str {
        match self {
            Analysis::Measured { .. } => Self::MEASURED,
            Analysis::Failed(reason) => reason,
        }
    }
    pub fn tempo(&self) -> Option<f64> {
        match self {
            Analysis::Measured { tempo, .. } => *tempo,
            Analysis::Failed(_) => None,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            Analysis::Measured { key, .. } => key.as_deref(),
            Analysis::Failed(_) => None,
        }
    }
    /// One line for people: "120.0 BPM, A Minor", or why nothing was measured.
    pub fn describe(&self) -> String {
        match self {
            Analysis::Measured { tempo, key } => {
                let tempo = tempo.map_or("no beat".to_string(), |t| format!("{t:.1} BPM"));
                format!("{tempo}, {}", key.as_deref().unwrap_or("no key"))
            }
            Analysis::Failed(reason) => reason.clone(),
        }
    }
    pub(crate) fn from_columns(
        mark: Option<String>,
        tempo: Option<f64>,
        key: Option<String>,
    ) -> Option<Analysis> {
        Some(match mark? {
            m if m == Self::MEASURED => Analysis::Measured { tempo, key },
            reason => Analysis::Failed(reason),
        })
    }
}

/// Which of `Tempo` and `Key` a page held when it was looked up (a person's values, or the
/// replaced system's): playlistd writes neither unless `notion.overwrite_analysis`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageKept {
    pub tempo: bool,
    pub key: bool,
}

impl PageKept {
    pub fn is_empty(&self) -> bool {
        !self.tempo && !self.key
    }
    pub(crate) fn bits(self) -> i64 {
        i64::from(self.tempo) | (i64::from(self.key) << 1)
    }
    pub(crate) fn from_bits(b: i64) -> PageKept {
        PageKept {
            tempo: b & 1 != 0,
            key: b & 2 != 0,
        }
    }
}

/// The answer of a track's clear stream (see [`crate::model::DrmCheck`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrmVerdict {
    /// 404: a DRM label track, unavailable as `DrmProtected`.
    Protected,
    /// It answered with a stream: the track is mirrored like any other.
    Plays,
}

/// A small sorted set of playlist names.
///
/// A track is in one or two playlists; a `BTreeSet<String>` would allocate a whole tree node
/// (and a string) per track, which at 100,000 tracks dominated loading the state. A sorted
/// vector of inline strings holds the same set in one small allocation and has the same JSON
/// form (an array of strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PlaylistNames(Vec<CompactString>);

impl PlaylistNames {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }
    /// Adds `name`; false if it was already there.
    pub fn insert(&mut self, name: impl AsRef<str>) -> bool {
        match self.find(name.as_ref()) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, CompactString::from(name.as_ref()));
                true
            }
        }
    }
    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.find(name) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }
    pub fn clear(&mut self) {
        self.0.clear();
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|n| n.as_str())
    }
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|n| n.as_str().cmp(name))
    }
}

impl<'de> Deserialize<'de> for PlaylistNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A hand-edited file may hold them in any order, or twice.
        let mut names = Vec::<CompactString>::deserialize(d)?;
        names.sort_unstable();
        names.dedup();
        Ok(PlaylistNames(names))
    }
}

impl<S: AsRef<str>> FromIterator<S> for PlaylistNames {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut names = PlaylistNames::default();
        for n in iter {
            names.insert(n);
        }
        names
    }
}

/// The summary of one run, kept per playlist for `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub ok: bool,
    pub listed: usize,
    pub created: usize,
    pub adopted: usize,
    pub downloaded: usize,
    pub failed: usize,
    pub unavailable: usize,
    pub removed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaylistState {
    pub url: String,
    #[serde(default)]
    pub title: String,
    /// Track keys in playlist order, as of the last listing.
    #[serde(default)]
    pub members: Vec<TrackKey>,
    /// Tracks that left the playlist (seen in a complete listing), with when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<TrackKey, DateTime<Utc>>,
    /// The page representing this playlist in a related Playlists database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notion_page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
}

/// An alert that is open: a setup problem a person was told about and that no run has seen
/// cleared yet. Kept so that separate runs (a CLI run after another) alert once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub detail: String,
    pub since: DateTime<Utc>,
}

/// The whole state: the tracks (read from the database on demand), the playlists and the
/// open alerts (by the kind's stable name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub tracks: Tracks,
    #[serde(default)]
    pub playlists: BTreeMap<String, PlaylistState>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<String, AlertRecord>,
}

/// What loading found, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Fresh,
    Loaded,
    /// A JSON state (this file) was imported into the database and set aside as `*.migrated`.
    Imported(PathBuf),
}

/// The state in its directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// Read freely; change tracks through [`StateStore::track_mut`] or `state.tracks.insert`
    /// and playlists through [`StateStore::playlist_mut`], so that the next save writes them.
    pub state: State,
    dirty_playlists: BTreeSet<String>,
    alerts_dirty: bool,
}

impl StateStore {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(DB_FILE)
    }

    /// Opens the state in `dir`: the database, after importing a JSON state found beside it.
    /// Nothing is created when there is neither.
    pub fn load(dir: &Path) -> Result<(StateStore, LoadOutcome), StateError> {
        let path = Self::path_in(dir);
        let legacy = import::legacy_file(dir);
        if !path.exists() && legacy.is_none() {
            return Ok((
                StateStore::new_in(dir, State::default()),
                LoadOutcome::Fresh,
            ));
        }
        let conn = db::open(&path)?;
        let imported = match &legacy {
            Some(json) => import::import(&conn, &path, json)?,
            None => false,
        };
        let (playlists, alerts) = {
            let c = conn.lock().expect("state database");
            (db::read_playlists(&c), db::read_alerts(&c))
        };
        let playlists = playlists.map_err(db::sql_err(&path))?;
        let alerts = alerts.map_err(db::sql_err(&path))?;
        let store = StateStore {
            dir: dir.to_path_buf(),
            state: State {
                tracks: Tracks::backed_by(conn, path),
                playlists,
                alerts,
            },
            dirty_playlists: BTreeSet::new(),
            alerts_dirty: false,
        };
        let outcome = match legacy {
            Some(json) if imported => LoadOutcome::Imported(json),
            _ => LoadOutcome::Loaded,
        };
        Ok((store, outcome))
    }

    /// A store holding `state` that [`save`](Self::save) writes to `dir` as a whole.
    pub fn new_in(dir: &Path, state: State) -> StateStore {
        let dirty_playlists = state.playlists.keys().cloned().collect();
        StateStore {
            dir: dir.to_path_buf(),
            alerts_dirty: !state.alerts.is_empty(),
            state,
            dirty_playlists,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A track to change, kept for the next save.
    pub fn track_mut(&mut self, key: &TrackKey) -> Result<Option<&mut TrackState>, StateError> {
        self.state.tracks.get_mut(key)
    }

    /// A playlist to change (created if new), recorded for the next save.
    pub fn playlist_mut(&mut self, name: &str) -> &mut PlaylistState {
        self.dirty_playlists.insert(name.to_string());
        self.state.playlists.entry(name.to_string()).or_default()
    }

    /// Replaces the open alerts, kept for the next save.
    pub fn set_alerts(&mut self, alerts: BTreeMap<String, AlertRecord>) {
        if alerts != self.state.alerts {
            self.state.alerts = alerts;
            self.alerts_dirty = true;
        }
    }

    /// Writes what changed since the last save in one transaction (creating the database on
    /// the first save). The track records written leave memory.
    pub fn save(&mut self) -> Result<(), StateError> {
        if !self.state.tracks.has_changes() && self.dirty_playlists.is_empty() && !self.alerts_dirty
        {
            return Ok(());
        }
        let (conn, path) = match self.state.tracks.db() {
            Some((conn, path)) => (conn.clone(), path.clone()),
            None => {
                fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
                let path = Self::path_in(&self.dir);
                let conn = db::open(&path)?;
                let pending = self.state.tracks.take_changed();
                self.state.tracks = Tracks::backed_by(conn.clone(), path.clone());
                self.state.tracks.restore_changed(pending);
                (conn, path)
            }
        };
        let records = self.state.tracks.take_changed();
        let mut guard = conn.lock().expect("state database");
        let write = |conn: &mut rusqlite::Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for (key, t) in &records {
                db::write_track(&tx, key, t)?;
            }
            for name in &self.dirty_playlists {
                if let Some(p) = self.state.playlists.get(name) {
                    db::write_playlist(&tx, name, p)?;
                }
            }
            if self.alerts_dirty {
                db::write_alerts(&tx, &self.state.alerts)?;
            }
            tx.commit()
        };
        if let Err(e) = write(&mut guard) {
            drop(guard);
            self.state.tracks.restore_changed(records);
            return Err(db::sql_err(&path)(e));
        }
        self.dirty_playlists.clear();
        self.alerts_dirty = false;
        Ok(())
    }

    /// Saves, then folds the write-ahead log into the database file (the end of a
    /// `playlistd sync` run, the daemon's shutdown): `state.db` alone is then the whole truth.
    pub fn save_full(&mut self) -> Result<(), StateError> {
        self.save()?;
        if let Some((conn, path)) = self.state.tracks.db() {
            conn.lock()
                .expect("state database")
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .map_err(db::sql_err(path))?;
        }
        Ok(())
    }

    /// `playlistd retry`: clears the backoff of the named playlists (all when none is named)
    /// and saves. Returns how many steps were cleared.
    pub fn retry(&mut self, playlists: &[String]) -> Result<usize, StateError> {
        let n = self.clear_backoff((!playlists.is_empty()).then_some(playlists))?;
        self.save()?;
        Ok(n)
    }

    /// Sets every failed or parked step of the given playlists (all when `None`) back to due.
    /// Returns how many steps were cleared.
    pub fn clear_backoff(&mut self, playlists: Option<&[String]>) -> Result<usize, StateError> {
        let keys: BTreeSet<TrackKey> = match playlists {
            None => self.stuck_keys()?,
            Some(names) => names
                .iter()
                .filter_map(|n| self.state.playlists.get(n))
                .flat_map(|p| p.members.iter().cloned())
                .collect(),
        };
        let mut n = 0;
        for k in keys {
            // Read first: only the records that change are brought into memory.
            let stuck = |s: &Step| matches!(s.status, StepStatus::Failed | StepStatus::Parked);
            let due = match self.state.tracks.get(&k)? {
                Some(t) => stuck(&t.notion) || stuck(&t.download),
                None => false,
            };
            if due && let Some(t) = self.track_mut(&k)? {
                n +=
                    usize::from(t.notion.clear_backoff()) + usize::from(t.download.clear_backoff());
            }
        }
        Ok(n)
    }

    /// Tracks with a failed or parked step: a query, plus the ones changed in memory.
    fn stuck_keys(&self) -> Result<BTreeSet<TrackKey>, StateError> {
        let mut keys: BTreeSet<TrackKey> = match self.state.tracks.db() {
            Some((conn, path)) => db::stuck_keys(&conn.lock().expect("state database"))
                .map_err(db::sql_err(path))?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        };
        keys.extend(self.state.tracks.changed_keys());
        Ok(keys)
    }
}

/// An exclusive advisory lock on the state directory, held for the life of the value.
/// One writer at a time: a second `sync` (or the daemon) is told who holds it. Readers
/// (`status`) need no lock: SQLite lets them read while the writer writes.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(dir: &Path) -> Result<StateLock, StateError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let pid = fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string();
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid
                },
            });
        }
        file.set_len(0).map_err(io_err("write", &path))?;
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests;
