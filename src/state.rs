//! The state file: what playlistd has already done, so each run only does what is new.
//!
//! Invariants:
//! - The file on disk is always whole: it is replaced atomically (temp file in the same
//!   directory, fsync, rename, fsync of the directory), and the previous good copy is kept
//!   beside it as `state.json.bak`. A file that does not parse is never overwritten silently:
//!   loading falls back to the backup with a loud warning, or refuses with the fix.
//! - A file written by a newer playlistd is refused rather than downgraded.
//! - Tracks are keyed by [`TrackKey`]; a track in two playlists has one entry, one Notion page
//!   and one download.
//! - Saves during a run cost what changed: changed tracks and playlists are appended to
//!   `state.journal` (whole records, fsynced), and the snapshot is rewritten only when the
//!   journal has grown to a quarter of it, or on [`StateStore::save_full`]. The journal names
//!   the snapshot generation it extends, so a journal left over from before a newer snapshot
//!   is ignored, and a torn last line (a crash mid-append) is dropped.
//! - The snapshot holds one record per line (see [`write_snapshot`]). Loading reads it a block
//!   at a time and checks every record, but keeps only each track's key and where its record
//!   is ([`Tracks`]): memory stays about 80 bytes a track, whatever the size of the state. Any
//!   other layout of the same JSON still loads, whole into memory, and the next save writes
//!   the usual layout.
//! - Files are never written in place: the journal is only appended to, snapshots are new
//!   files renamed into place. So the byte ranges [`Tracks`] reads records from stay valid
//!   for as long as it holds the files open.
//! - Fields added since the first format are optional (`serde(default)`, left out when
//!   empty), so older files load unchanged and an unchanged record is written as before.
//! - Losing the last few updates (a crash between a step and the next save) never causes a
//!   duplicate: pages are looked up in Notion before being created and finished downloads are
//!   found on disk by their `[id]` file name. So saves can be batched.

mod tracks;

pub use tracks::Tracks;
use tracks::{Backing, Range, Reader, Slot};

use crate::model::{TrackKey, UnavailableReason};
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const JOURNAL_FILE: &str = "state.journal";
const BACKUP_FILE: &str = "state.json.bak";
const LOCK_FILE: &str = "playlistd.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state file {path} was written by a newer playlistd (format {found}, this one reads {supported}) (fix: upgrade playlistd, or set PLAYLISTD_STATE_DIR to another directory)"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "state file {path} is damaged ({reason}) and no good backup exists (fix: move it aside; playlistd then starts fresh and adopts existing Notion pages instead of duplicating them)"
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
        "state file {path} was changed on disk while playlistd was using it ({reason}) (fix: stop playlistd before editing files in its state directory; the next start reads them again)"
    )]
    ChangedInUse { path: PathBuf, reason: String },
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Bumped by every snapshot; the journal names the one it extends.
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub tracks: Tracks,
    #[serde(default)]
    pub playlists: BTreeMap<String, PlaylistState>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            generation: 0,
            tracks: Tracks::default(),
            playlists: BTreeMap::new(),
        }
    }
}

/// A journal line holds one whole record, the newest value of a track or a playlist:
/// `{"kind":"track","key":"1234","value":{…}}` or `{"kind":"playlist","name":"…","value":{…}}`.
/// Track lines are written by hand, so that the save knows where the value starts: the track
/// is read back from there once it leaves memory.
#[derive(Serialize)]
struct JournalPlaylist<'a> {
    kind: &'static str,
    name: &'a str,
    value: &'a PlaylistState,
}

/// What loading found, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Fresh,
    Loaded,
    /// The main file was damaged; the backup was used. The string says why.
    RecoveredFromBackup(String),
}

/// The state file in its directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// Read freely; change it through [`StateStore::track_mut`] and
    /// [`StateStore::playlist_mut`] (or call [`StateStore::mark_all`]), so that the next save
    /// knows what to write.
    pub state: State,
    dirty_tracks: BTreeSet<TrackKey>,
    dirty_playlists: BTreeSet<String>,
    /// The next save writes the whole snapshot.
    full: bool,
    journal_len: u64,
    snapshot_len: u64,
    /// Loaded from the backup because the main file was damaged: the first save must not
    /// make the damaged file the new backup.
    damaged: std::sync::atomic::AtomicBool,
}

/// The loaded state, and whether its tracks are indexed on disk (the usual layout) or were
/// all parsed into memory (any other layout, which the next save rewrites).
struct Parsed {
    state: State,
    indexed: bool,
}

fn parse(path: &Path) -> Result<Option<Parsed>, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let too_new = |found| StateError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: STATE_VERSION,
    };
    let backing = Backing::new(file, path);
    // Only a regular file is indexed: its ranges must stay where they are.
    let regular = backing.file().metadata().is_ok_and(|m| m.is_file());
    if regular {
        match index_lines(&backing) {
            Some(Ok(state)) if state.version > STATE_VERSION => {
                return Err(too_new(state.version));
            }
            Some(Ok(state)) => {
                return Ok(Some(Parsed {
                    state,
                    indexed: true,
                }));
            }
            // Not the usual layout, or something in it is wrong: the general path reads
            // it, or says precisely what is wrong.
            Some(Err(_)) | None => {}
        }
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut backing.file(), &mut bytes).map_err(io_err("read", path))?;
    // One pass in the common case; the version alone is looked at only when the whole does
    // not parse, so a newer format is refused even if its shape changed.
    match decode_snapshot(&bytes) {
        Ok(state) if state.version > STATE_VERSION => Err(too_new(state.version)),
        Ok(state) => Ok(Some(Parsed {
            state,
            indexed: false,
        })),
        Err(reason) => {
            #[derive(Deserialize)]
            struct Version {
                version: u32,
            }
            match serde_json::from_slice::<Version>(&bytes) {
                Ok(v) if v.version > STATE_VERSION => Err(too_new(v.version)),
                _ => Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                }),
            }
        }
    }
}

/// The snapshot as laid out on disk, with every track and the playlists still unparsed.
#[derive(Deserialize)]
struct Layout<'a> {
    version: u32,
    #[serde(default)]
    generation: u64,
    #[serde(default, borrow)]
    tracks: RawEntries<'a>,
    #[serde(default, borrow)]
    playlists: Option<&'a RawValue>,
}

/// A JSON object's entries in file order, values unparsed.
#[derive(Default)]
struct RawEntries<'a>(Vec<(TrackKey, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawEntries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Entries<'a> {
            type Value = RawEntries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of tracks")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<TrackKey, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(RawEntries(entries))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// Below this many bytes of track lines, starting threads costs more than it saves.
const PARALLEL_FROM_BYTES: u64 = 2 << 20;
/// Tracks per unit of work on the general path: small enough that the threads finish together.
const CHUNK: usize = 2048;

/// Parses a snapshot held in memory, whatever its layout, every record into memory: the
/// general path of loading, for a file reformatted or edited by hand (the usual layout is
/// indexed by [`index_lines`] instead). The file is skimmed once to find where each record
/// starts and ends, then the records are parsed on every core.
pub fn decode_snapshot(bytes: &[u8]) -> Result<State, String> {
    let layout: Layout = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if layout.version > STATE_VERSION {
        // Its tracks may not have this version's shape; the caller refuses it by version.
        return Ok(State {
            version: layout.version,
            ..State::default()
        });
    }
    let entries = layout.tracks.0;
    let tracks = parse_in_parallel(
        entries.chunks(CHUNK),
        bytes.len() as u64 >= PARALLEL_FROM_BYTES,
        |chunk| {
            chunk
                .iter()
                .map(|(key, raw)| {
                    serde_json::from_str::<TrackState>(raw.get())
                        .map(|t| (key.clone(), Slot::Mem(Box::new(t))))
                        .map_err(|e| format!("track {key}: {e}"))
                })
                .collect()
        },
    )?;
    let playlists = match layout.playlists {
        Some(raw) => serde_json::from_str::<BTreeMap<String, PlaylistState>>(raw.get())
            .map_err(|e| format!("playlists: {e}"))?,
        None => BTreeMap::new(),
    };
    Ok(State {
        version: layout.version,
        generation: layout.generation,
        tracks: Tracks::indexed(tracks, None),
        playlists,
    })
}

type Indexed = Result<Vec<(TrackKey, Slot)>, String>;

/// Runs `parse` over every unit `units` yields, on all cores when `parallel` (each thread
/// takes the next unit when done). At most one unit per thread waits to be parsed, so a
/// producer that reads units from a file holds a few of them at a time, never the file.
/// Results come back in unit order.
fn parse_in_parallel<U: Send>(
    units: impl Iterator<Item = U>,
    parallel: bool,
    parse: impl Fn(U) -> Indexed + Sync,
) -> Indexed {
    let threads = if parallel {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        0
    };
    let mut parsed: Vec<(usize, Indexed)> = if threads == 0 {
        units.map(&parse).enumerate().collect()
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, U)>(threads);
        let rx = std::sync::Mutex::new(rx);
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let next = rx.lock().expect("units").recv();
                        let Ok((i, unit)) = next else { break };
                        let r = parse(unit);
                        done.lock().expect("results").push((i, r));
                    }
                });
            }
            for unit in units.enumerate() {
                if tx.send(unit).is_err() {
                    break;
                }
            }
            drop(tx);
        });
        done.into_inner().expect("results")
    };
    parsed.sort_unstable_by_key(|(i, _)| *i);
    // Sized up front: growing a vector of 100,000 entries copies them each time.
    let total = parsed
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .map(Vec::len)
        .sum();
    let mut tracks = Vec::with_capacity(total);
    for (_, chunk) in parsed {
        tracks.extend(chunk?);
    }
    Ok(tracks)
}

const TRACKS_OPEN: &[u8] = b",\"tracks\":{";
/// The line between the tracks and the playlists.
const PLAYLISTS_LINE: &[u8] = b"},\"playlists\":{";
const SNAPSHOT_END: &[u8] = b"\n}}\n";
/// Bytes read at once when indexing a snapshot: a unit of work for one thread.
const BLOCK: usize = 1 << 20;
/// The write buffer of a snapshot. A save can run in the middle of a sync, so its buffers are
/// kept small: a few system calls more cost less than a megabyte held each time.
const SAVE_BUFFER: usize = 256 << 10;

/// A writer that counts, so the snapshot knows where each record lands.
struct Counting<W> {
    inner: W,
    at: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot as one JSON document with one track, or one playlist, per line, and
/// returns where each track's record is in it (in key order):
///
/// ```text
/// {"version":1,"generation":7,"tracks":{
/// "1234":{"title":…},
/// "1240":{"title":…}
/// },"playlists":{
/// "Deep House":{"url":…}
/// }}
/// ```
///
/// Any JSON tool still reads it, `grep` finds a track and a diff shows what changed, and the
/// loader can index it a block at a time, split between threads at line breaks. serde_json
/// escapes every control character, so a record never spans two lines. Records still on disk
/// are copied as they are, read in file order through a window.
fn write_snapshot(
    w: &mut Counting<impl Write>,
    state: &State,
    out: &Path,
) -> Result<Vec<Range>, StateError> {
    let io = |e| io_err("write", out)(e);
    write!(
        w,
        "{{\"version\":{},\"generation\":{}",
        state.version, state.generation
    )
    .map_err(io)?;
    w.write_all(TRACKS_OPEN).map_err(io)?;
    let tracks = &state.tracks;
    let mut ranges = Vec::with_capacity(tracks.len());
    let mut snapshot = Reader::new(tracks.snapshot());
    let mut journal = Reader::new(tracks.journal());
    let mut record = Vec::new();
    for (i, (key, slot)) in tracks.slots().iter().enumerate() {
        w.write_all(if i == 0 { b"\n" } else { b",\n" })
            .map_err(io)?;
        serde_json::to_writer(&mut *w, key).map_err(|e| io(e.into()))?;
        w.write_all(b":").map_err(io)?;
        let at = w.at;
        match slot {
            Slot::Mem(t) => {
                record.clear();
                serde_json::to_writer(&mut record, t).expect("state serializes");
                w.write_all(&record).map_err(io)?;
            }
            Slot::Snapshot(r) => w.write_all(snapshot.read(*r)?).map_err(io)?,
            Slot::Journal(r) => w.write_all(journal.read(*r)?).map_err(io)?,
        }
        ranges.push(Range {
            at,
            len: (w.at - at) as u32,
        });
    }
    w.write_all(b"\n").map_err(io)?;
    w.write_all(PLAYLISTS_LINE).map_err(io)?;
    for (i, (k, v)) in state.playlists.iter().enumerate() {
        w.write_all(if i == 0 { b"\n" } else { b",\n" })
            .map_err(io)?;
        serde_json::to_writer(&mut *w, k).map_err(|e| io(e.into()))?;
        w.write_all(b":").map_err(io)?;
        serde_json::to_writer(&mut *w, v).map_err(|e| io(e.into()))?;
    }
    w.write_all(SNAPSHOT_END).map_err(io)?;
    Ok(ranges)
}

/// The usual way a snapshot loads, for the layout [`write_snapshot`] writes: read a block
/// at a time, every record parsed (so a damaged file is found now, not halfway through a
/// sync) on every core, and only its key and place kept. `None` when the file is laid out
/// otherwise.
fn index_lines(backing: &Arc<Backing>) -> Option<Result<State, String>> {
    let file = backing.file();
    let len = file.metadata().ok()?.len();
    let mut head = vec![0; (len as usize).min(4096)];
    file.read_exact_at(&mut head, 0).ok()?;
    let header_end = memchr::memchr(b'\n', &head)?;
    let header = head[..header_end].strip_suffix(TRACKS_OPEN)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        version: u32,
        generation: u64,
    }
    let mut closed = header.to_vec();
    closed.push(b'}');
    let Header {
        version,
        generation,
    } = serde_json::from_slice(&closed).ok()?;
    if version > STATE_VERSION {
        // The rest may have another shape: the caller refuses it by its version.
        return Some(Ok(State {
            version,
            ..State::default()
        }));
    }
    let body_at = header_end as u64 + 1;
    let mut tail = [0u8; SNAPSHOT_END.len()];
    if len < body_at + tail.len() as u64 {
        return None;
    }
    file.read_exact_at(&mut tail, len - SNAPSHOT_END.len() as u64)
        .ok()?;
    if tail != SNAPSHOT_END {
        return None;
    }
    // Units of whole track lines, read in order; the playlists, once the line between them
    // and the tracks is reached.
    let mut playlists: Option<Result<Vec<u8>, ()>> = None;
    let units = Lines {
        file,
        at: body_at,
        len,
        carry: Vec::new(),
        rest: &mut playlists,
    };
    let tracks = parse_in_parallel(
        units,
        len >= PARALLEL_FROM_BYTES,
        |(at, unit): (u64, Vec<u8>)| {
            let mut indexed = Vec::with_capacity(memchr::memchr_iter(b'\n', &unit).count());
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &unit) {
                let line = &unit[start..end];
                let (key, value) = parse_track_line(line)?;
                indexed.push((
                    key,
                    Slot::Snapshot(Range {
                        at: at + (start + value.start) as u64,
                        len: value.len() as u32,
                    }),
                ));
                start = end + 1;
            }
            Ok(indexed)
        },
    );
    let Ok(rest) = playlists? else {
        return None;
    };
    let tracks = match tracks {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    // `rest` is the playlist lines and the end: `"name":{…},\n…\n}}\n`.
    let body = rest.strip_suffix(&SNAPSHOT_END[1..])?;
    let mut object = Vec::with_capacity(body.len() + 2);
    object.push(b'{');
    object.extend_from_slice(body);
    object.push(b'}');
    let playlists = match serde_json::from_slice::<BTreeMap<String, PlaylistState>>(&object) {
        Ok(p) => p,
        Err(e) => return Some(Err(format!("playlists: {e}"))),
    };
    Some(Ok(State {
        version,
        generation,
        tracks: Tracks::indexed(tracks, Some(backing.clone())),
        playlists,
    }))
}

/// The track lines of a snapshot, a block of whole lines at a time with the offset of its
/// first byte. When the line between tracks and playlists comes, what follows it is read into
/// `rest` (`Err` when the file ends without it) and the iteration stops.
struct Lines<'a> {
    file: &'a File,
    at: u64,
    len: u64,
    /// A line begun in the last block, and where it starts in the file.
    carry: Vec<u8>,
    rest: &'a mut Option<Result<Vec<u8>, ()>>,
}

impl Iterator for Lines<'_> {
    type Item = (u64, Vec<u8>);

    fn next(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.rest.is_some() {
            return None;
        }
        let start = self.at - self.carry.len() as u64;
        let mut block = std::mem::take(&mut self.carry);
        loop {
            let have = block.len();
            let want = BLOCK.min((self.len - self.at) as usize);
            if want == 0 {
                *self.rest = Some(Err(()));
                return None;
            }
            block.resize(have + want, 0);
            if self
                .file
                .read_exact_at(&mut block[have..], self.at)
                .is_err()
            {
                *self.rest = Some(Err(()));
                return None;
            }
            self.at += want as u64;
            // The line after the tracks starts with `}`, which no track line does.
            let boundary = memchr::memmem::find_iter(&block, PLAYLISTS_LINE)
                .find(|&i| i == 0 || block[i - 1] == b'\n');
            if let Some(i) = boundary {
                let mut rest = block.split_off(i);
                let more = (self.len - self.at) as usize;
                let have = rest.len();
                rest.resize(have + more, 0);
                let read = self.file.read_exact_at(&mut rest[have..], self.at);
                *self.rest = Some(match read {
                    Ok(()) if rest.len() > PLAYLISTS_LINE.len() => {
                        Ok(rest.split_off(PLAYLISTS_LINE.len() + 1))
                    }
                    _ => Err(()),
                });
                self.at = self.len;
                return (!block.is_empty()).then_some((start, block));
            }
            if let Some(last) = memchr::memrchr(b'\n', &block) {
                self.carry = block.split_off(last + 1);
                return Some((start, block));
            }
            // A line longer than a block: read on.
        }
    }
}

/// One `"key":{record},` line: the key, and where the record is in the line.
fn parse_track_line(line: &[u8]) -> Result<(TrackKey, std::ops::Range<usize>), String> {
    let line = line.strip_suffix(b",").unwrap_or(line);
    let bad = || {
        format!(
            "a track line does not start with its key: {}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        )
    };
    if line.first() != Some(&b'"') {
        return Err(bad());
    }
    let mut i = 1;
    while i < line.len() && line[i] != b'"' {
        i += if line[i] == b'\\' { 2 } else { 1 };
    }
    if line.get(i + 1) != Some(&b':') {
        return Err(bad());
    }
    let key: TrackKey = serde_json::from_slice(&line[..=i]).map_err(|e| e.to_string())?;
    let value = i + 2..line.len();
    // Checked now, so that a damaged file is refused at load, not halfway through a sync.
    serde_json::from_slice::<TrackState>(&line[value.clone()])
        .map_err(|e| format!("track {key}: {e}"))?;
    Ok((key, value))
}

impl StateStore {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Loads the state in `dir`, falling back to the last good copy if the file is damaged.
    pub fn load(dir: &Path) -> Result<(StateStore, LoadOutcome), StateError> {
        let main = dir.join(STATE_FILE);
        let backup = dir.join(BACKUP_FILE);
        // A file in another layout was read whole into memory: the next save rewrites it.
        let store = |p: Parsed| {
            let mut s = StateStore::new_in(dir, p.state);
            s.full = !p.indexed;
            s
        };
        match parse(&main) {
            Ok(Some(parsed)) => {
                let mut s = store(parsed);
                s.snapshot_len = fs::metadata(&main).map(|m| m.len()).unwrap_or(0);
                s.replay_journal()?;
                Ok((s, LoadOutcome::Loaded))
            }
            Ok(None) => match parse(&backup) {
                // A crash between the two renames of a save leaves only the backup.
                Ok(Some(parsed)) => {
                    let mut s = store(parsed);
                    s.full = true;
                    Ok((s, LoadOutcome::Loaded))
                }
                Ok(None) => Ok((
                    StateStore::new_in(dir, State::default()),
                    LoadOutcome::Fresh,
                )),
                Err(e) => Err(e),
            },
            Err(StateError::Corrupt { reason, .. }) => match parse(&backup) {
                Ok(Some(parsed)) => {
                    let mut s = store(parsed);
                    s.full = true;
                    s.damaged.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok((s, LoadOutcome::RecoveredFromBackup(reason)))
                }
                _ => Err(StateError::Corrupt { path: main, reason }),
            },
            Err(e) => Err(e),
        }
    }

    /// An in-memory store that [`save`](Self::save) writes to `dir`.
    pub fn new_in(dir: &Path, state: State) -> StateStore {
        StateStore {
            dir: dir.to_path_buf(),
            state,
            dirty_tracks: BTreeSet::new(),
            dirty_playlists: BTreeSet::new(),
            full: true,
            journal_len: 0,
            snapshot_len: 0,
            damaged: Default::default(),
        }
    }

    /// A track to change, recorded for the next save (which writes it and lets it go from
    /// memory).
    pub fn track_mut(&mut self, key: &TrackKey) -> Result<Option<&mut TrackState>, StateError> {
        let t = self.state.tracks.get_mut(key)?;
        if t.is_some() {
            self.dirty_tracks.insert(key.clone());
        }
        Ok(t)
    }

    /// A playlist to change (created if new), recorded for the next save.
    pub fn playlist_mut(&mut self, name: &str) -> &mut PlaylistState {
        self.dirty_playlists.insert(name.to_string());
        self.state.playlists.entry(name.to_string()).or_default()
    }

    /// Records tracks changed through `state` directly (`state.tracks.insert`).
    pub fn mark_tracks<'a>(&mut self, keys: impl IntoIterator<Item = &'a TrackKey>) {
        self.dirty_tracks.extend(keys.into_iter().cloned());
    }

    /// After changes made through `state` that were not recorded: the next save writes the
    /// whole snapshot.
    pub fn mark_all(&mut self) {
        self.full = true;
    }

    /// Applies `state.journal` on top of the snapshot just loaded: its track records are
    /// checked and indexed where they are, like the snapshot's.
    fn replay_journal(&mut self) -> Result<(), StateError> {
        let path = self.dir.join(JOURNAL_FILE);
        // Only a regular file: a device in its place would be read forever.
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        // Read-only: `status` loads the state too, and may not be allowed to write it.
        let Ok(file) = File::open(&path) else {
            self.full = true;
            return Ok(());
        };
        let journal = Backing::new(file, &path);
        let mut lines = std::io::BufReader::with_capacity(1 << 16, journal.file());
        let mut line = Vec::new();
        let mut read_line = |line: &mut Vec<u8>| -> Result<bool, StateError> {
            line.clear();
            let n = std::io::BufRead::read_until(&mut lines, b'\n', line)
                .map_err(io_err("read", &path))?;
            // A line without its line break is torn (a crash mid-append).
            Ok(n > 0 && line.last() == Some(&b'\n'))
        };
        #[derive(Deserialize)]
        struct Header {
            generation: u64,
        }
        let current = read_line(&mut line)?
            && serde_json::from_slice::<Header>(&line)
                .is_ok_and(|h| h.generation == self.state.generation);
        if !current {
            // Written before the snapshot now on disk (or unreadable): already folded in.
            self.full = true;
            return Ok(());
        }
        let mut at = line.len() as u64;
        /// One journal line, its value unparsed (a tagged enum would buffer it).
        #[derive(Deserialize)]
        struct Entry<'a> {
            kind: &'a str,
            #[serde(default)]
            key: Option<TrackKey>,
            #[serde(default)]
            name: Option<String>,
            #[serde(borrow)]
            value: &'a RawValue,
        }
        enum Applied {
            Track(TrackKey, Range),
            Playlist(String, Box<PlaylistState>),
        }
        let torn;
        loop {
            if !read_line(&mut line)? {
                torn = !line.is_empty();
                break;
            }
            let applied = serde_json::from_slice::<Entry>(&line).ok().and_then(|e| {
                match (e.kind, e.key, e.name) {
                    ("track", Some(key), _) => {
                        serde_json::from_str::<TrackState>(e.value.get()).ok()?;
                        let start = e.value.get().as_ptr() as usize - line.as_ptr() as usize;
                        let range = Range {
                            at: at + start as u64,
                            len: e.value.get().len() as u32,
                        };
                        Some(Applied::Track(key, range))
                    }
                    ("playlist", _, Some(name)) => serde_json::from_str(e.value.get())
                        .ok()
                        .map(|v| Applied::Playlist(name, Box::new(v))),
                    _ => None,
                }
            });
            match applied {
                Some(Applied::Track(key, range)) => self.state.tracks.journaled(key, range),
                Some(Applied::Playlist(name, value)) => {
                    self.state.playlists.insert(name, *value);
                }
                None => {
                    torn = true;
                    break;
                }
            }
            at += line.len() as u64;
        }
        if torn {
            // A torn last line from a crash mid-append: what it held is redone. The next save
            // writes a whole snapshot, so nothing is ever appended after the tear.
            self.full = true;
        }
        self.journal_len = at;
        self.state.tracks.set_journal(journal);
        Ok(())
    }

    /// Saves what changed since the last save: appended to the journal, or a whole new
    /// snapshot when the journal has grown too long (or nothing is on disk yet). The track
    /// records written leave memory; they are read back from the journal when needed.
    pub fn save(&mut self) -> Result<(), StateError> {
        if self.full || self.journal_len > (self.snapshot_len / 4).max(256 * 1024) {
            return self.save_full();
        }
        if self.dirty_tracks.is_empty() && self.dirty_playlists.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(JOURNAL_FILE);
        // A new journal (whatever is at its name extends an older snapshot), or the one the
        // tracks already read from, opened again for writing: it may have been opened
        // read-only at load.
        let fresh = self.journal_len == 0 || self.state.tracks.journal().is_none();
        let mut open = OpenOptions::new();
        if fresh {
            open.read(true).write(true).create(true).truncate(true);
            self.journal_len = 0;
        } else {
            open.write(true);
        }
        let file = open.open(&path).map_err(io_err("open", &path))?;
        let mut buf = Vec::new();
        if self.journal_len == 0 {
            buf.extend_from_slice(
                format!("{{\"generation\":{}}}\n", self.state.generation).as_bytes(),
            );
        }
        let mut written = Vec::new();
        for key in &self.dirty_tracks {
            // Only a record in memory changed; one on disk is already there as it is.
            if let Some(value) = self.state.tracks.in_memory(key) {
                buf.extend_from_slice(b"{\"kind\":\"track\",\"key\":");
                serde_json::to_writer(&mut buf, key).expect("keys serialize");
                buf.extend_from_slice(b",\"value\":");
                let at = buf.len();
                serde_json::to_writer(&mut buf, value).expect("state serializes");
                let len = (buf.len() - at) as u32;
                buf.extend_from_slice(b"}\n");
                let at = self.journal_len + at as u64;
                written.push((key.clone(), Range { at, len }));
            }
        }
        for name in &self.dirty_playlists {
            if let Some(value) = self.state.playlists.get(name) {
                let line = JournalPlaylist {
                    kind: "playlist",
                    name,
                    value,
                };
                serde_json::to_writer(&mut buf, &line).expect("state serializes");
                buf.push(b'\n');
            }
        }
        let append = || -> std::io::Result<()> {
            file.write_all_at(&buf, self.journal_len)?;
            file.sync_data()
        };
        append().map_err(io_err("append to", &path))?;
        self.journal_len += buf.len() as u64;
        if fresh {
            self.state.tracks.set_journal(Backing::new(file, &path));
        }
        for (key, range) in written {
            self.state.tracks.journaled(key, range);
        }
        self.dirty_tracks.clear();
        self.dirty_playlists.clear();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the snapshot atomically, keeping the previous version as the backup, and
    /// folds the journal into it. Records are copied from the old files as they are, so this
    /// costs about a copy of the file, and no more memory than a window of it.
    pub fn save_full(&mut self) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        self.state.generation += 1;
        let main = self.dir.join(STATE_FILE);
        let tmp = self
            .dir
            .join(format!(".{STATE_FILE}.tmp.{}", std::process::id()));
        let write = || -> Result<(File, Vec<Range>), StateError> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err("write", &tmp))?;
            let mut w = Counting {
                inner: std::io::BufWriter::with_capacity(SAVE_BUFFER, &file),
                at: 0,
            };
            let ranges = write_snapshot(&mut w, &self.state, &tmp)?;
            w.flush().map_err(io_err("write", &tmp))?;
            drop(w);
            file.sync_all().map_err(io_err("write", &tmp))?;
            Ok((file, ranges))
        };
        let (file, ranges) = match write() {
            Ok(written) => written,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                self.state.generation -= 1;
                return Err(e);
            }
        };
        if self
            .damaged
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            // Keep the damaged file for inspection; the good backup stays the backup.
            let _ = fs::rename(&main, self.dir.join("state.json.damaged"));
        } else if main.exists() {
            // A hard link keeps the last good copy without a window where no file exists.
            let bak_tmp = self
                .dir
                .join(format!(".{BACKUP_FILE}.tmp.{}", std::process::id()));
            let _ = fs::remove_file(&bak_tmp);
            if fs::hard_link(&main, &bak_tmp).is_ok() {
                let _ = fs::rename(&bak_tmp, self.dir.join(BACKUP_FILE));
            }
        }
        fs::rename(&tmp, &main).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.state.generation -= 1;
            io_err("replace", &main)(e)
        })?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        // The journal extends the previous generation: it is folded in now (and would be
        // ignored on load anyway).
        let _ = fs::remove_file(self.dir.join(JOURNAL_FILE));
        self.snapshot_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.state.tracks.rebased(Backing::new(file, &main), ranges);
        self.journal_len = 0;
        self.full = false;
        self.dirty_tracks.clear();
        self.dirty_playlists.clear();
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
            None => self.state.tracks.keys().cloned().collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| self.state.playlists.get(n))
                .flat_map(|p| p.members.iter().cloned())
                .collect(),
        };
        let mut n = 0;
        for k in keys {
            // Read first: only the records that change are brought into memory.
            let due = |s: &Step| matches!(s.status, StepStatus::Failed | StepStatus::Parked);
            let stuck = match self.state.tracks.get(&k)? {
                Some(t) => due(&t.notion) || due(&t.download),
                None => false,
            };
            if stuck && let Some(t) = self.track_mut(&k)? {
                n +=
                    usize::from(t.notion.clear_backoff()) + usize::from(t.download.clear_backoff());
            }
        }
        Ok(n)
    }
}

/// An exclusive advisory lock on the state directory, held for the life of the value.
/// One writer at a time: a second `sync` (or, later, the daemon) is told who holds it.
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
mod tests {
    use super::*;

    /// A track's record, wherever it is kept.
    fn rec(s: &State, key: &str) -> TrackState {
        s.tracks
            .get(&TrackKey::new(key))
            .unwrap()
            .unwrap()
            .into_owned()
    }

    /// Replaces a file the way saves and most editors do (a new file renamed over it), so a
    /// store that has the old one open keeps reading the old one.
    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("edit");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    /// Enough tracks that the snapshot is indexed on several threads.
    const LARGE: usize = 24_593;

    fn sample() -> State {
        let mut s = State::default();
        s.tracks.insert(
            TrackKey("1".into()),
            TrackState {
                title: "Ünïcødé 曲".into(),
                first_seen: Utc::now(),
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn save_then_load_round_trips_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), sample());
        store.save().unwrap();
        store.playlist_mut("p");
        store.save_full().unwrap();
        let (loaded, outcome) = StateStore::load(dir.path()).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded);
        assert_eq!(loaded.state, store.state);
        let backup: State =
            serde_json::from_slice(&fs::read(dir.path().join(BACKUP_FILE)).unwrap()).unwrap();
        assert!(
            backup.playlists.is_empty(),
            "the backup is the previous version"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn saves_append_what_changed_and_loads_replay_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), sample());
        store.save().unwrap(); // nothing on disk yet: a snapshot
        let snapshot = fs::read(dir.path().join(STATE_FILE)).unwrap();
        store
            .track_mut(&TrackKey("1".into()))
            .unwrap()
            .unwrap()
            .title = "Renamed".into();
        store.playlist_mut("p").url = "https://example.com/p".into();
        store.save().unwrap();
        assert_eq!(
            fs::read(dir.path().join(STATE_FILE)).unwrap(),
            snapshot,
            "only the journal grew"
        );
        let journal = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(
            journal.lines().count(),
            3,
            "header, one track, one playlist: {journal}"
        );
        store.save().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap(),
            journal,
            "nothing changed, nothing written"
        );

        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state, store.state);

        // A crash mid-append leaves a torn last line: it is dropped, the rest is kept.
        let mut torn = journal.clone();
        torn.push_str("{\"kind\":\"track\",\"key\":\"1\",\"val");
        fs::write(dir.path().join(JOURNAL_FILE), torn).unwrap();
        let (mut loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state, store.state);
        loaded.save().unwrap();
        assert!(
            !dir.path().join(JOURNAL_FILE).exists(),
            "the tear is folded into a snapshot"
        );
        let (reloaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(reloaded.state.tracks, store.state.tracks);

        // A snapshot folds the journal in; a journal from before it is ignored.
        store.save_full().unwrap();
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        let mut older = store.state.clone();
        older
            .tracks
            .get_mut(&TrackKey("1".into()))
            .unwrap()
            .unwrap()
            .title = "Stale".into();
        fs::write(
            dir.path().join(JOURNAL_FILE),
            format!(
                "{{\"generation\":{}}}\n{{\"kind\":\"track\",\"key\":\"1\",\"value\":{}}}\n",
                store.state.generation - 1,
                serde_json::to_string(&rec(&older, "1")).unwrap()
            ),
        )
        .unwrap();
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(rec(&loaded.state, "1").title, "Renamed");
    }

    /// Enough tracks that loading splits them across threads.
    fn large(n: usize) -> State {
        let mut s = State::default();
        for i in 0..n {
            let key = TrackKey::soundcloud(i as u64);
            s.tracks.insert(
                key.clone(),
                TrackState {
                    title: format!("Track {i} \"quoted\" ü"),
                    url: format!("https://soundcloud.com/a/t-{i}"),
                    soundcloud_id: Some(i as u64),
                    notion_page_id: (i % 3 == 0).then(|| format!("page-{i}")),
                    notion_playlists: ["b", "a"].into_iter().take(i % 3).collect(),
                    first_seen: Utc::now(),
                    ..Default::default()
                },
            );
            s.playlists
                .entry(format!("p{}", i % 7))
                .or_default()
                .members
                .push(key);
        }
        s
    }

    #[test]
    fn a_large_state_parsed_on_several_threads_is_the_state_saved() {
        let n = LARGE;
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), large(n));
        store.save_full().unwrap();
        assert!(
            fs::metadata(dir.path().join(STATE_FILE)).unwrap().len() > PARALLEL_FROM_BYTES,
            "large enough to be indexed on several threads"
        );
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state.tracks.len(), n);
        assert_eq!(loaded.state.tracks.held(), 0, "no record kept in memory");
        assert_eq!(loaded.state, store.state);
        assert_eq!(
            rec(&loaded.state, "5")
                .notion_playlists
                .iter()
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn snapshots_hold_one_record_per_line_and_load_by_lines() {
        let mut state = large(LARGE);
        // Keys and names that need escaping stay on their line and come back intact.
        let odd = TrackKey::new("url:https://example.com/a\"b\\c\nd");
        let one = rec(&state, "1");
        state.tracks.insert(odd.clone(), one);
        state
            .playlists
            .insert("quote \" and \\".into(), PlaylistState::default());
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), state);
        store.save_full().unwrap();
        let bytes = fs::read(dir.path().join(STATE_FILE)).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let n = store.state.tracks.len();
        assert_eq!(lines.len(), 1 + n + 1 + store.state.playlists.len() + 1);
        assert_eq!(
            lines[1],
            format!(
                "\"0\":{},",
                serde_json::to_string(&rec(&store.state, "0")).unwrap()
            )
        );
        assert!(
            text.contains("\n\"url:https://example.com/a\\\"b\\\\c\\nd\":{"),
            "escaped in place"
        );
        // The line path is the one taken (every record stays on disk), and it reads what was
        // written.
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state.tracks.held(), 0);
        assert!(!loaded.full);
        assert_eq!(loaded.state, store.state);
        assert_eq!(rec(&loaded.state, odd.as_str()), rec(&store.state, "1"));
        // Reformatted by another tool (here pretty-printed): the general path reads it, into
        // memory, and the next save writes the usual layout again.
        let pretty = serde_json::to_vec_pretty(&store.state).unwrap();
        replace(&dir.path().join(STATE_FILE), &pretty);
        let (mut loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state.tracks.held(), n);
        assert_eq!(loaded.state, store.state);
        assert!(loaded.full, "the next save rewrites it");
        loaded.save().unwrap();
        assert_eq!(loaded.state.tracks.held(), 0);
        let rewritten = fs::read(dir.path().join(STATE_FILE)).unwrap();
        let after_header = |b: &[u8]| b[memchr::memchr(b'\n', b).unwrap()..].to_vec();
        assert_eq!(
            after_header(&rewritten),
            after_header(&bytes),
            "the same lines; only the generation moved on"
        );
        // Empty sections keep the layout.
        let empty = State::default();
        let mut out = Counting {
            inner: Vec::new(),
            at: 0,
        };
        write_snapshot(&mut out, &empty, Path::new("memory")).unwrap();
        replace(&dir.path().join(STATE_FILE), &out.inner);
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert!(!loaded.full, "read on the line path");
        assert_eq!(loaded.state, empty);
        assert_eq!(serde_json::from_slice::<State>(&out.inner).unwrap(), empty);
    }

    #[test]
    fn a_hand_edited_file_in_any_order_loads_as_a_map_would() {
        let dir = tempfile::tempdir().unwrap();
        let t = |title: &str| {
            format!(
                r#"{{"title":"{title}","artist":"","url":"","notion":{{"status":"pending"}},"notion_playlists":["z","a","z"],"download":{{"status":"pending"}},"first_seen":"2026-01-01T00:00:00Z"}}"#
            )
        };
        fs::write(
            dir.path().join(STATE_FILE),
            format!(
                r#"{{"version":1,"tracks":{{"2":{},"1":{},"2":{}}}}}"#,
                t("two"),
                t("one"),
                t("two again")
            ),
        )
        .unwrap();
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        let titles: Vec<_> = loaded
            .state
            .tracks
            .iter()
            .map(|r| r.map(|(k, t)| (k.to_string(), t.title.clone())).unwrap())
            .collect();
        assert_eq!(
            titles,
            [("1".into(), "one".into()), ("2".into(), "two again".into())]
        );
        assert_eq!(
            rec(&loaded.state, "1")
                .notion_playlists
                .iter()
                .collect::<Vec<_>>(),
            ["a", "z"]
        );
    }

    #[test]
    fn a_damaged_record_deep_in_a_large_file_is_named() {
        let n = LARGE;
        let dir = tempfile::tempdir().unwrap();
        StateStore::new_in(dir.path(), large(n))
            .save_full()
            .unwrap();
        let main = dir.path().join(STATE_FILE);
        let text = fs::read_to_string(&main).unwrap();
        let victim = format!("\"title\":\"Track {} ", n - 2);
        assert!(text.contains(&victim));
        fs::write(&main, text.replacen(&victim, "\"title\":42,\"x\":\"", 1)).unwrap();
        let e = StateStore::load(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&format!("track {}", n - 2)), "{e}");
    }

    #[test]
    fn saved_records_leave_memory_and_are_read_back_from_where_they_went() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), large(50));
        store.save().unwrap();
        assert_eq!(store.state.tracks.held(), 0, "the first save is a snapshot");
        let (mut store, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(store.state.tracks.held(), 0);
        // Reading keeps nothing; changing keeps the one record until the save writes it.
        assert_eq!(rec(&store.state, "7").title, "Track 7 \"quoted\" ü");
        assert_eq!(store.state.tracks.held(), 0);
        store.track_mut(&TrackKey::new("7")).unwrap().unwrap().title = "Seven".into();
        store
            .state
            .tracks
            .insert(TrackKey::new("new"), rec(&store.state, "8"));
        store.mark_tracks([&TrackKey::new("new")]);
        assert_eq!(store.state.tracks.held(), 2);
        store.save().unwrap();
        assert!(dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(
            store.state.tracks.held(),
            0,
            "written to the journal, let go"
        );
        assert_eq!(
            rec(&store.state, "7").title,
            "Seven",
            "read from the journal"
        );
        assert_eq!(rec(&store.state, "new"), rec(&store.state, "8"));
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state, store.state);
        assert_eq!(loaded.state.tracks.held(), 0, "the journal is indexed too");
        // A copy taken before a snapshot still reads the files it was taken from.
        let before = store.state.clone();
        store.save_full().unwrap();
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(
            rec(&store.state, "7").title,
            "Seven",
            "read from the new snapshot"
        );
        assert_eq!(before.tracks, store.state.tracks);
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state, store.state);
    }

    #[test]
    fn retry_reads_every_record_but_keeps_only_the_ones_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = large(40);
        let stuck = TrackKey::new("3");
        state
            .tracks
            .get_mut(&stuck)
            .unwrap()
            .unwrap()
            .download
            .status = StepStatus::Parked;
        StateStore::new_in(dir.path(), state).save_full().unwrap();
        let (mut store, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(store.clear_backoff(None).unwrap(), 1);
        assert_eq!(store.state.tracks.held(), 1);
        assert_eq!(rec(&store.state, "3").download.status, StepStatus::Failed);
    }

    #[test]
    fn a_state_file_written_in_place_while_in_use_is_an_error_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        StateStore::new_in(dir.path(), large(40))
            .save_full()
            .unwrap();
        let (store, _) = StateStore::load(dir.path()).unwrap();
        let main = dir.path().join(STATE_FILE);
        // An editor that saves in place (not by rename): shorter, then shifted.
        let text = fs::read_to_string(&main).unwrap();
        fs::write(&main, &text[..text.len() / 3]).unwrap();
        let e = store.state.tracks.get(&TrackKey::new("39")).unwrap_err();
        assert!(matches!(e, StateError::ChangedInUse { .. }), "{e}");
        assert!(e.to_string().contains("fix: stop playlistd"), "{e}");
        fs::write(&main, format!(" {text}")).unwrap();
        let e = store.state.tracks.get(&TrackKey::new("5")).unwrap_err();
        assert!(e.to_string().contains("track 5 no longer reads"), "{e}");
    }

    #[test]
    fn truncated_file_recovers_from_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), sample());
        store.save_full().unwrap();
        store.save_full().unwrap();
        let main = dir.path().join(STATE_FILE);
        let bytes = fs::read(&main).unwrap();
        replace(&main, &bytes[..bytes.len() / 2]);
        let (mut loaded, outcome) = StateStore::load(dir.path()).unwrap();
        assert!(matches!(outcome, LoadOutcome::RecoveredFromBackup(_)));
        assert_eq!(loaded.state.tracks, store.state.tracks);
        // The first save after a recovery keeps the good backup and sets the damage aside.
        loaded.save().unwrap();
        let backup = fs::read(dir.path().join(BACKUP_FILE)).unwrap();
        assert!(
            serde_json::from_slice::<State>(&backup).is_ok(),
            "the backup is still good"
        );
        assert_eq!(
            fs::read(dir.path().join("state.json.damaged")).unwrap(),
            bytes[..bytes.len() / 2]
        );
    }

    #[test]
    fn damaged_without_backup_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\": 1, \"tracks\": {",
        )
        .unwrap();
        let e = StateStore::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("fix: move it aside"), "{e}");
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\": 99, \"whatever\": []}",
        )
        .unwrap();
        let e = StateStore::load(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e}");
    }

    #[test]
    fn missing_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let (s, outcome) = StateStore::load(&dir.path().join("nope")).unwrap();
        assert_eq!(outcome, LoadOutcome::Fresh);
        assert!(s.state.tracks.is_empty());
    }

    #[test]
    fn failures_back_off_then_park() {
        let now = Utc::now();
        let mut step = Step::default();
        step.fail("boom", now, 3);
        assert_eq!(step.status, StepStatus::Failed);
        assert!(!step.is_due(now));
        assert!(step.is_due(now + chrono::Duration::minutes(6)));
        step.fail("boom", now, 3);
        assert_eq!(step.next_retry, Some(now + chrono::Duration::minutes(10)));
        step.fail("boom", now, 3);
        assert_eq!(step.status, StepStatus::Parked);
        assert!(!step.is_due(now + chrono::Duration::days(365)));
        assert!(step.clear_backoff());
        assert!(step.is_due(now));
    }

    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path()).unwrap();
        let e = StateLock::acquire(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
    }
}
