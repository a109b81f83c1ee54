//! The upgrade from the JSON state of release 0.1.0 and of issue 6 (`state.json`, its
//! `state.journal` and `state.json.bak`) into `state.db`.
//!
//! Invariants:
//! - Everything is imported in one transaction, which also records that it happened
//!   (`meta.imported_from`); a crash mid-import leaves no half state, and the next start
//!   imports again.
//! - Only after the commit are the JSON files renamed to `*.migrated`: nothing is deleted, and
//!   a start that finds the JSON beside an imported database only finishes the renames.
//! - The journal is replayed as the JSON code did: only when it names the snapshot's
//!   generation, up to its first line that does not read (a crash mid-append).
//! - A JSON file that does not parse is refused with the fix, never skipped silently.

use super::db::{self, Db};
use super::{PlaylistState, StateError, TrackState, io_err};
use crate::model::TrackKey;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const JOURNAL_FILE: &str = "state.journal";
const BACKUP_FILE: &str = "state.json.bak";
/// The highest JSON format version there was.
const JSON_VERSION: u32 = 1;
const IMPORTED: &str = "imported_from";

/// The JSON state as both releases wrote it (fields added later are optional).
#[derive(Deserialize)]
struct Legacy {
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    tracks: BTreeMap<TrackKey, TrackState>,
    #[serde(default)]
    playlists: BTreeMap<String, PlaylistState>,
}

/// One journal line: `{"kind":"track","key":…,"value":…}` or `{"kind":"playlist","name":…}`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Track { key: TrackKey, value: TrackState },
    Playlist { name: String, value: PlaylistState },
}

/// The JSON file to import from in `dir`, if any: the state file, else the backup a crash
/// between the two renames of a save left alone.
pub fn legacy_file(dir: &Path) -> Option<PathBuf> {
    [STATE_FILE, BACKUP_FILE]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Imports `json` (and the journal beside it) into `db` unless that was done already, then
/// sets the JSON files aside. Returns whether anything was imported.
pub fn import(db: &Db, db_path: &Path, json: &Path) -> Result<bool, StateError> {
    let err = db::sql_err(db_path);
    let dir = json.parent().unwrap_or(Path::new("."));
    let mut conn = db.lock().expect("state database");
    let done = db::meta(&conn, IMPORTED).map_err(&err)?.is_some();
    if !done {
        let legacy = read(json, &dir.join(JOURNAL_FILE))?;
        let tx = conn.transaction().map_err(&err)?;
        for (key, t) in &legacy.tracks {
            db::write_track(&tx, key, t).map_err(&err)?;
        }
        for (name, p) in &legacy.playlists {
            db::write_playlist(&tx, name, p).map_err(&err)?;
        }
        db::set_meta(&tx, IMPORTED, &json.display().to_string()).map_err(&err)?;
        tx.commit().map_err(&err)?;
    }
    for f in [STATE_FILE, JOURNAL_FILE, BACKUP_FILE] {
        let from = dir.join(f);
        if from.exists() {
            let to = dir.join(format!("{f}.migrated"));
            fs::rename(&from, &to).map_err(io_err("set aside", &from))?;
        }
    }
    Ok(!done)
}

/// The JSON snapshot with its journal applied.
fn read(json: &Path, journal: &Path) -> Result<Legacy, StateError> {
    let bytes = fs::read(json).map_err(io_err("read", json))?;
    let corrupt = |reason: String| StateError::Corrupt {
        path: json.to_path_buf(),
        reason,
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version = serde_json::from_slice::<Version>(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if version.version > JSON_VERSION {
        return Err(StateError::TooNew {
            path: json.to_path_buf(),
            found: version.version,
            supported: JSON_VERSION,
        });
    }
    let mut legacy: Legacy = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    // The journal extends the snapshot it names; it is absent next to a backup.
    if json.file_name() == Some(STATE_FILE.as_ref())
        && let Ok(text) = fs::read_to_string(journal)
    {
        replay(&mut legacy, &text);
    }
    Ok(legacy)
}

fn replay(legacy: &mut Legacy, journal: &str) {
    #[derive(Deserialize)]
    struct Header {
        generation: u64,
    }
    let mut lines = journal.split_inclusive('\n');
    let current = lines
        .next()
        .and_then(|h| serde_json::from_str::<Header>(h).ok())
        .is_some_and(|h| h.generation == legacy.generation);
    if !current {
        return;
    }
    for line in lines {
        // A line without its line break, or that does not read, is torn: the end.
        let Some(Ok(entry)) = line.strip_suffix('\n').map(serde_json::from_str::<Line>) else {
            break;
        };
        match entry {
            Line::Track { key, value } => {
                legacy.tracks.insert(key, value);
            }
            Line::Playlist { name, value } => {
                legacy.playlists.insert(name, value);
            }
        }
    }
}
