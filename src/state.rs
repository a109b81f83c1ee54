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
//! - The snapshot holds one record per line (see [`write_snapshot`]), which lets a large one
//!   load on every core; any other layout of the same JSON still loads, on the general path.
//! - Losing the last few updates (a crash between a step and the next save) never causes a
//!   duplicate: pages are looked up in Notion before being created and finished downloads are
//!   found on disk by their `[id]` file name. So saves can be batched.

use crate::model::{TrackKey, UnavailableReason};
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    pub fn len(&self) -> usize {
        self.0.len()
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
    pub tracks: BTreeMap<TrackKey, TrackState>,
    #[serde(default)]
    pub playlists: BTreeMap<String, PlaylistState>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            generation: 0,
            tracks: BTreeMap::new(),
            playlists: BTreeMap::new(),
        }
    }
}

/// One journal line: a whole record, the newest value of that track or playlist.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum JournalEntry {
    Track { key: TrackKey, value: TrackState },
    Playlist { name: String, value: PlaylistState },
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum JournalRef<'a> {
    Track {
        key: &'a TrackKey,
        value: &'a TrackState,
    },
    Playlist {
        name: &'a str,
        value: &'a PlaylistState,
    },
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

/// Files at least this big are mapped rather than read.
const MAP_FROM: u64 = 1 << 20;

/// The bytes of a snapshot: mapped when large, read otherwise.
enum Snapshot {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Snapshot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Snapshot::Mapped(m) => m,
            Snapshot::Read(v) => v,
        }
    }
}

/// Reads a snapshot. A large one is mapped, pages populated up front: reading 50 MiB into a
/// fresh buffer costs a page fault, a zeroed page and a copy for every 4 KiB, which in a fresh
/// process was a fifth of the load (benchmark B5).
fn read_snapshot(path: &Path) -> std::io::Result<Snapshot> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() >= MAP_FROM {
        // SAFETY: the mapping is only read, and it stays valid because the file is never
        // changed in place: saves write a new file and rename it over this one (the old inode
        // lives on while mapped), and the state directory's lock keeps other playlistd
        // processes out. Only a hand edit that truncates the file in place during this load
        // could fault; the map is dropped as soon as the state is parsed.
        if let Ok(map) = unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
            return Ok(Snapshot::Mapped(map));
        }
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut &file, &mut bytes)?;
    Ok(Snapshot::Read(bytes))
}

fn parse(path: &Path) -> Result<Option<State>, StateError> {
    let bytes = match read_snapshot(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let too_new = |found| StateError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: STATE_VERSION,
    };
    // One pass in the common case; the version alone is looked at only when the whole does
    // not parse, so a newer format is refused even if its shape changed.
    match decode_snapshot(&bytes) {
        Ok(state) if state.version > STATE_VERSION => Err(too_new(state.version)),
        Ok(state) => Ok(Some(state)),
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

/// Below this many tracks, starting threads costs more than it saves.
const PARALLEL_FROM: usize = 8192;
/// The same, in bytes of track lines (records are about 500 bytes).
const PARALLEL_FROM_BYTES: usize = 2 << 20;
/// Tracks per unit of work: small enough that the threads finish together.
const CHUNK: usize = 2048;

/// Parses a snapshot. Most of the work is the tracks, and each one is independent, so their
/// records are parsed in chunks by every core, each thread taking the next chunk when done; a
/// small state is parsed on the calling thread alone. A file in the layout
/// [`write_snapshot`] writes is split at its line breaks; any other JSON of the same shape (a
/// file reformatted or edited by hand) is first skimmed once to find where each record starts
/// and ends. At 100,000 tracks (52 MiB) on two cores this takes the parse from about 105 ms to
/// about 60 (benchmark B5).
pub fn decode_snapshot(bytes: &[u8]) -> Result<State, String> {
    match decode_lines(bytes) {
        Some(Ok(state)) => Ok(state),
        // Not the usual layout, or something in it is wrong: the general path parses it, or
        // says precisely what is wrong.
        _ => decode_any(bytes),
    }
}

fn decode_any(bytes: &[u8]) -> Result<State, String> {
    let layout: Layout = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if layout.version > STATE_VERSION {
        // Its tracks may not have this version's shape; the caller refuses it by version.
        return Ok(State {
            version: layout.version,
            ..State::default()
        });
    }
    let entries = layout.tracks.0;
    let parse_playlists = || match layout.playlists {
        Some(raw) => serde_json::from_str::<BTreeMap<String, PlaylistState>>(raw.get())
            .map_err(|e| format!("playlists: {e}")),
        None => Ok(BTreeMap::new()),
    };
    let chunks: Vec<_> = entries.chunks(CHUNK).collect();
    let (tracks, playlists) = parse_in_parallel(
        &chunks,
        entries.len() >= PARALLEL_FROM,
        |chunk| {
            chunk
                .iter()
                .map(|(key, raw)| {
                    serde_json::from_str::<TrackState>(raw.get())
                        .map(|t| (key.clone(), t))
                        .map_err(|e| format!("track {key}: {e}"))
                })
                .collect()
        },
        parse_playlists,
    );
    let tracks = tracks?;
    Ok(State {
        version: layout.version,
        generation: layout.generation,
        // Saved from a map, so already in order: collecting sorted entries builds the tree in
        // one linear pass. A repeated key keeps its last value, as a JSON object would.
        tracks: tracks.into_iter().collect(),
        playlists: playlists?,
    })
}

type Parsed = Result<Vec<(TrackKey, TrackState)>, String>;

/// Runs `parse` over every chunk on all cores (each thread takes the next chunk when done) and
/// `also` on the calling thread meanwhile. Results come back in chunk order.
fn parse_in_parallel<C: Sync, A>(
    chunks: &[C],
    parallel: bool,
    parse: impl Fn(&C) -> Parsed + Sync,
    also: impl FnOnce() -> A,
) -> (Parsed, A) {
    let threads = if parallel {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    let parsed: Vec<std::sync::OnceLock<Parsed>> =
        chunks.iter().map(|_| Default::default()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(chunk) = chunks.get(i) else { break };
            let _ = parsed[i].set(parse(chunk));
        }
    };
    let other = std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        let other = also();
        work();
        other
    });
    // Sized up front: growing a vector of 100,000 records copies them and faults in fresh
    // pages each time, which cost as much as a third of the load.
    let parsed: Vec<Option<Parsed>> = parsed.into_iter().map(|p| p.into_inner()).collect();
    let total = parsed
        .iter()
        .filter_map(|p| p.as_ref()?.as_ref().ok())
        .map(Vec::len)
        .sum();
    let mut tracks = Vec::with_capacity(total);
    for chunk in parsed {
        match chunk {
            Some(Ok(part)) => tracks.extend(part),
            Some(Err(e)) => return (Err(e), other),
            None => return (Err("a parser thread stopped".into()), other),
        }
    }
    (Ok(tracks), other)
}

const TRACKS_OPEN: &[u8] = b",\"tracks\":{";
const PLAYLISTS_OPEN: &[u8] = b"\n},\"playlists\":{";
const SNAPSHOT_END: &[u8] = b"\n}}\n";
/// Bytes of track lines per unit of work when splitting at line breaks.
const LINES_CHUNK: usize = 1 << 20;

/// Writes the snapshot as one JSON document with one track, or one playlist, per line:
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
/// loader can split the tracks between threads at line breaks without reading the file first.
/// serde_json escapes every control character, so a record never spans two lines.
fn write_snapshot(w: &mut impl Write, state: &State) -> std::io::Result<()> {
    write!(
        w,
        "{{\"version\":{},\"generation\":{}",
        state.version, state.generation
    )?;
    w.write_all(TRACKS_OPEN)?;
    write_lines(w, &state.tracks)?;
    w.write_all(PLAYLISTS_OPEN)?;
    write_lines(w, &state.playlists)?;
    w.write_all(SNAPSHOT_END)
}

fn write_lines<K: Serialize, V: Serialize>(
    w: &mut impl Write,
    map: &BTreeMap<K, V>,
) -> std::io::Result<()> {
    for (i, (k, v)) in map.iter().enumerate() {
        w.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *w, k)?;
        w.write_all(b":")?;
        serde_json::to_writer(&mut *w, v)?;
    }
    Ok(())
}

/// The fast path of [`decode_snapshot`], for the layout [`write_snapshot`] writes. `None` when
/// the file is laid out otherwise.
fn decode_lines(bytes: &[u8]) -> Option<Result<State, String>> {
    let header_end = memchr::memchr(b'\n', bytes)?;
    let header = bytes[..header_end].strip_suffix(TRACKS_OPEN)?;
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
    let body = bytes[header_end..].strip_suffix(SNAPSHOT_END)?;
    // A track line starts with `"`, so the first line starting with `}` ends the tracks.
    let split = memchr::memmem::find(body, PLAYLISTS_OPEN)?;
    let (lines, playlists) = (&body[..split], &body[split + PLAYLISTS_OPEN.len()..]);
    let parse_playlists = || {
        let mut object = Vec::with_capacity(playlists.len() + 2);
        object.push(b'{');
        object.extend_from_slice(playlists);
        object.push(b'}');
        serde_json::from_slice::<BTreeMap<String, PlaylistState>>(&object)
            .map_err(|e| format!("playlists: {e}"))
    };
    // Byte ranges of about LINES_CHUNK, each ending at a line break.
    let mut chunks = Vec::with_capacity(lines.len() / LINES_CHUNK + 1);
    let mut start = 0;
    while start < lines.len() {
        let end = match memchr::memchr(b'\n', &lines[(start + LINES_CHUNK).min(lines.len())..]) {
            Some(i) => (start + LINES_CHUNK).min(lines.len()) + i,
            None => lines.len(),
        };
        chunks.push(&lines[start..end]);
        start = end + 1;
    }
    let (tracks, playlists) = parse_in_parallel(
        &chunks,
        lines.len() >= PARALLEL_FROM_BYTES,
        |chunk| {
            let mut parsed = Vec::with_capacity(memchr::memchr_iter(b'\n', chunk).count() + 1);
            for line in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                parsed.push(parse_track_line(line)?);
            }
            Ok(parsed)
        },
        parse_playlists,
    );
    let tracks = match tracks {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    Some(playlists.map(|playlists| State {
        version,
        generation,
        tracks: tracks.into_iter().collect(),
        playlists,
    }))
}

/// One `"key":{record},` line.
fn parse_track_line(line: &[u8]) -> Result<(TrackKey, TrackState), String> {
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
    let value = serde_json::from_slice(&line[i + 2..]).map_err(|e| format!("track {key}: {e}"))?;
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
        let store = |state| StateStore::new_in(dir, state);
        match parse(&main) {
            Ok(Some(state)) => {
                let mut s = store(state);
                s.full = false;
                s.snapshot_len = fs::metadata(&main).map(|m| m.len()).unwrap_or(0);
                s.replay_journal();
                Ok((s, LoadOutcome::Loaded))
            }
            Ok(None) => match parse(&backup) {
                // A crash between the two renames of a save leaves only the backup.
                Ok(Some(state)) => Ok((store(state), LoadOutcome::Loaded)),
                Ok(None) => Ok((store(State::default()), LoadOutcome::Fresh)),
                Err(e) => Err(e),
            },
            Err(StateError::Corrupt { reason, .. }) => match parse(&backup) {
                Ok(Some(state)) => {
                    let s = store(state);
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

    /// A track to change, recorded for the next save.
    pub fn track_mut(&mut self, key: &TrackKey) -> Option<&mut TrackState> {
        let t = self.state.tracks.get_mut(key)?;
        self.dirty_tracks.insert(key.clone());
        Some(t)
    }

    /// A playlist to change (created if new), recorded for the next save.
    pub fn playlist_mut(&mut self, name: &str) -> &mut PlaylistState {
        self.dirty_playlists.insert(name.to_string());
        self.state.playlists.entry(name.to_string()).or_default()
    }

    /// Records tracks changed through `state` directly.
    pub fn mark_tracks<'a>(&mut self, keys: impl IntoIterator<Item = &'a TrackKey>) {
        self.dirty_tracks.extend(keys.into_iter().cloned());
    }

    /// After changes made through `state` that were not recorded: the next save writes the
    /// whole snapshot.
    pub fn mark_all(&mut self) {
        self.full = true;
    }

    /// Applies `state.journal` on top of the snapshot just loaded.
    fn replay_journal(&mut self) {
        let path = self.dir.join(JOURNAL_FILE);
        // Only a regular file: a device in its place would be read forever.
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            return;
        };
        self.journal_len = text.len() as u64;
        let mut lines = text.lines();
        #[derive(Deserialize)]
        struct Header {
            generation: u64,
        }
        match lines.next().map(serde_json::from_str::<Header>) {
            Some(Ok(h)) if h.generation == self.state.generation => {}
            _ => {
                // Written before the snapshot now on disk (or unreadable): already folded in.
                self.journal_len = 0;
                self.full = true;
                return;
            }
        }
        for line in lines {
            match serde_json::from_str::<JournalEntry>(line) {
                Ok(JournalEntry::Track { key, value }) => {
                    self.state.tracks.insert(key, value);
                }
                Ok(JournalEntry::Playlist { name, value }) => {
                    self.state.playlists.insert(name, value);
                }
                // A torn last line from a crash mid-append: what it held is redone. The next
                // save writes a whole snapshot, so nothing is ever appended after the tear.
                Err(_) => {
                    self.full = true;
                    break;
                }
            }
        }
    }

    /// Saves what changed since the last save: appended to the journal, or a whole new
    /// snapshot when the journal has grown too long (or nothing is on disk yet).
    pub fn save(&mut self) -> Result<(), StateError> {
        if self.full || self.journal_len > (self.snapshot_len / 4).max(256 * 1024) {
            return self.save_full();
        }
        if self.dirty_tracks.is_empty() && self.dirty_playlists.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(JOURNAL_FILE);
        let mut buf = Vec::new();
        if self.journal_len == 0 {
            buf.extend_from_slice(
                format!("{{\"generation\":{}}}\n", self.state.generation).as_bytes(),
            );
        }
        for key in &self.dirty_tracks {
            if let Some(value) = self.state.tracks.get(key) {
                serde_json::to_writer(&mut buf, &JournalRef::Track { key, value })
                    .expect("state serializes");
                buf.push(b'\n');
            }
        }
        for name in &self.dirty_playlists {
            if let Some(value) = self.state.playlists.get(name) {
                serde_json::to_writer(&mut buf, &JournalRef::Playlist { name, value })
                    .expect("state serializes");
                buf.push(b'\n');
            }
        }
        let append = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(&buf)?;
            f.sync_data()
        };
        append().map_err(io_err("append to", &path))?;
        self.journal_len += buf.len() as u64;
        self.dirty_tracks.clear();
        self.dirty_playlists.clear();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the snapshot atomically, keeping the previous version as the backup, and
    /// folds the journal into it.
    pub fn save_full(&mut self) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        self.state.generation += 1;
        let main = self.dir.join(STATE_FILE);
        let tmp = self
            .dir
            .join(format!(".{STATE_FILE}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            write_snapshot(&mut w, &self.state)?;
            w.flush()?;
            w.get_ref().sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
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
            io_err("replace", &main)(e)
        })?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        // The journal extends the previous generation: it is folded in now (and would be
        // ignored on load anyway).
        let _ = fs::remove_file(self.dir.join(JOURNAL_FILE));
        self.snapshot_len = fs::metadata(&main).map(|m| m.len()).unwrap_or(0);
        self.journal_len = 0;
        self.full = false;
        self.dirty_tracks.clear();
        self.dirty_playlists.clear();
        Ok(())
    }

    /// Sets every failed or parked step of the given playlists (all when `None`) back to due.
    /// Returns how many steps were cleared.
    pub fn clear_backoff(&mut self, playlists: Option<&[String]>) -> usize {
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
            if let Some(t) = self.track_mut(&k) {
                n +=
                    usize::from(t.notion.clear_backoff()) + usize::from(t.download.clear_backoff());
            }
        }
        n
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
        store.track_mut(&TrackKey("1".into())).unwrap().title = "Renamed".into();
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
        older.tracks.get_mut(&TrackKey("1".into())).unwrap().title = "Stale".into();
        fs::write(
            dir.path().join(JOURNAL_FILE),
            format!(
                "{{\"generation\":{}}}\n{{\"kind\":\"track\",\"key\":\"1\",\"value\":{}}}\n",
                store.state.generation - 1,
                serde_json::to_string(&older.tracks[&TrackKey("1".into())]).unwrap()
            ),
        )
        .unwrap();
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state.tracks[&TrackKey("1".into())].title, "Renamed");
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
        let n = PARALLEL_FROM * 3 + 17;
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), large(n));
        store.save_full().unwrap();
        let (loaded, _) = StateStore::load(dir.path()).unwrap();
        assert_eq!(loaded.state.tracks.len(), n);
        assert_eq!(loaded.state, store.state);
        assert_eq!(
            loaded.state.tracks[&TrackKey::soundcloud(5)]
                .notion_playlists
                .iter()
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn snapshots_hold_one_record_per_line_and_load_by_lines() {
        let mut state = large(PARALLEL_FROM * 2);
        // Keys and names that need escaping stay on their line and come back intact.
        let odd = TrackKey::new("url:https://example.com/a\"b\\c\nd");
        state
            .tracks
            .insert(odd.clone(), state.tracks[&TrackKey::soundcloud(1)].clone());
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
                serde_json::to_string(&store.state.tracks[&TrackKey::new("0")]).unwrap()
            )
        );
        assert!(
            text.contains("\n\"url:https://example.com/a\\\"b\\\\c\\nd\":{"),
            "escaped in place"
        );
        // The line path is the one taken, and it reads what was written.
        assert_eq!(decode_lines(&bytes).unwrap().unwrap(), store.state);
        // Reformatted by another tool (here pretty-printed): the general path reads it.
        let pretty = serde_json::to_vec_pretty(&store.state).unwrap();
        assert!(decode_lines(&pretty).is_none());
        assert_eq!(decode_snapshot(&pretty).unwrap(), store.state);
        // Empty sections keep the layout.
        let empty = State::default();
        let mut out = Vec::new();
        write_snapshot(&mut out, &empty).unwrap();
        assert_eq!(decode_lines(&out).unwrap().unwrap(), empty);
        assert_eq!(serde_json::from_slice::<State>(&out).unwrap(), empty);
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
            .map(|(k, t)| (k.as_str(), t.title.as_str()))
            .collect();
        assert_eq!(titles, [("1", "one"), ("2", "two again")]);
        assert_eq!(
            loaded.state.tracks[&TrackKey::new("1")]
                .notion_playlists
                .iter()
                .collect::<Vec<_>>(),
            ["a", "z"]
        );
    }

    #[test]
    fn a_damaged_record_deep_in_a_large_file_is_named() {
        let n = PARALLEL_FROM * 2 + 1;
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
    fn truncated_file_recovers_from_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new_in(dir.path(), sample());
        store.save_full().unwrap();
        store.save_full().unwrap();
        let main = dir.path().join(STATE_FILE);
        let bytes = fs::read(&main).unwrap();
        fs::write(&main, &bytes[..bytes.len() / 2]).unwrap();
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
