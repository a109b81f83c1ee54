//! The SQLite database behind the state: opening it, its schema and migrations, and the
//! mapping between rows and the records the engine works with.
//!
//! Invariants:
//! - The database is opened in WAL mode with `synchronous = FULL`: a committed save survives
//!   a crash or a power cut, readers (`status`) never block the writer, and a save costs one
//!   fsync however many records it writes.
//! - Every open runs `PRAGMA quick_check`; a file that is not SQLite or fails the check is
//!   refused with [`StateError::Corrupt`], never overwritten.
//! - The schema version is `PRAGMA user_version`; [`MIGRATIONS`] brings an older file up to
//!   date in one transaction each, and a newer one is refused ([`StateError::TooNew`]).
//! - Columns map one to one to the fields of [`TrackState`] and [`PlaylistState`]; a step's
//!   history (attempts, error, backoff) is a row of `failures` only while it has one, so
//!   the common record is one narrow row.

use super::{
    AlertRecord, Analysis, DrmVerdict, PageKept, PlaylistState, RunSummary, StateError, Step,
    StepStatus, TrackState,
};
use crate::model::{TrackKey, UnavailableReason};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file name of the database in the state directory.
pub const DB_FILE: &str = "state.db";

/// The connection, shared by the store and the tracks read through it.
pub type Db = Arc<Mutex<Connection>>;

/// Schema migrations, in order; entry `i` takes `user_version` from `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE tracks (
    key TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    artist TEXT NOT NULL,
    url TEXT NOT NULL,
    soundcloud_id INTEGER,
    unavailable TEXT,
    drm TEXT,
    notion_page_id TEXT,
    notion_status TEXT NOT NULL,
    notion_playlists TEXT NOT NULL DEFAULT '[]',
    download_path BLOB,
    download_status TEXT NOT NULL,
    download_written_back INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE failures (
    track_key TEXT NOT NULL REFERENCES tracks(key) ON DELETE CASCADE,
    step TEXT NOT NULL CHECK (step IN ('notion', 'download')),
    attempts INTEGER NOT NULL,
    last_error TEXT,
    next_retry TEXT,
    PRIMARY KEY (track_key, step)
) WITHOUT ROWID;
CREATE TABLE playlists (
    name TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    notion_page_id TEXT,
    last_success TEXT
) WITHOUT ROWID;
CREATE TABLE members (
    playlist TEXT NOT NULL REFERENCES playlists(name) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    track_key TEXT NOT NULL,
    PRIMARY KEY (playlist, position)
) WITHOUT ROWID;
CREATE INDEX members_by_track ON members(track_key);
CREATE TABLE removed (
    playlist TEXT NOT NULL REFERENCES playlists(name) ON DELETE CASCADE,
    track_key TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (playlist, track_key)
) WITHOUT ROWID;
CREATE TABLE runs (
    playlist TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    ok INTEGER NOT NULL,
    listed INTEGER NOT NULL,
    created INTEGER NOT NULL,
    adopted INTEGER NOT NULL,
    downloaded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    unavailable INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (playlist, started)
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
",
    r"
ALTER TABLE tracks ADD COLUMN duration_ms INTEGER;
",
    r"
ALTER TABLE tracks ADD COLUMN analysis TEXT;
ALTER TABLE tracks ADD COLUMN tempo REAL;
ALTER TABLE tracks ADD COLUMN musical_key TEXT;
ALTER TABLE tracks ADD COLUMN page_kept INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tracks ADD COLUMN analysis_written_back INTEGER NOT NULL DEFAULT 0;
",
    r"
CREATE TABLE alerts (kind TEXT PRIMARY KEY NOT NULL, detail TEXT NOT NULL, since TEXT NOT NULL) WITHOUT ROWID;
",
];

/// The schema version this playlistd writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Turns a SQLite error into the state's error for `path`: damage is [`StateError::Corrupt`],
/// a full disk the I/O error it is.
pub fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StateError::Io {
                action: "write",
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            };
        }
        let damaged = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        ) || matches!(e, rusqlite::Error::FromSqlConversionFailure(..));
        if damaged {
            StateError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        } else {
            StateError::Sql {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
    }
}

/// Opens (creating if needed) the database at `path`, checks it and migrates it.
pub fn open(path: &Path) -> Result<Db, StateError> {
    let err = sql_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(&err)?;
    check(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(&err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(&err)?;
    migrate(&conn, path)?;
    Ok(Arc::new(Mutex::new(conn)))
}

/// `PRAGMA quick_check`: the file is SQLite and its pages and indexes are whole.
fn check(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let result: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql_err(path))?;
    if result == "ok" {
        Ok(())
    } else {
        Err(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("quick_check: {result}"),
        })
    }
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let err = sql_err(path);
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&err)?;
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let batch = format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        );
        conn.execute_batch(&batch).map_err(&err)?;
    }
    Ok(())
}

/// A value stored as its serde name (`"done"`, `"drm_protected"`, …).
fn to_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit enum serializes to a string, not {other:?}"),
    }
}

fn from_text<T: serde::de::DeserializeOwned>(i: usize, s: String) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

fn path_bytes(p: &Option<PathBuf>) -> Option<&[u8]> {
    p.as_ref().map(|p| p.as_os_str().as_bytes())
}

/// The columns [`track_from_row`] reads, joined with the two steps' failures.
const TRACK_SELECT: &str = "SELECT t.key, t.title, t.artist, t.url, t.soundcloud_id, \
     t.unavailable, t.drm, t.notion_page_id, t.notion_status, t.notion_playlists, \
     t.download_path, t.download_status, t.download_written_back, t.first_seen, \
     t.duration_ms, n.attempts, n.last_error, n.next_retry, d.attempts, d.last_error, d.next_retry, \
     t.analysis, t.tempo, t.musical_key, t.page_kept, t.analysis_written_back \
     FROM tracks t \
     LEFT JOIN failures n ON n.track_key = t.key AND n.step = 'notion' \
     LEFT JOIN failures d ON d.track_key = t.key AND d.step = 'download'";

fn step_from_row(row: &Row, status: usize, history: usize) -> rusqlite::Result<Step> {
    Ok(Step {
        status: from_text::<StepStatus>(status, row.get(status)?)?,
        attempts: row.get::<_, Option<u32>>(history)?.unwrap_or(0),
        last_error: row.get(history + 1)?,
        next_retry: row.get(history + 2)?,
    })
}

fn track_from_row(row: &Row) -> rusqlite::Result<(TrackKey, TrackState)> {
    let opt_enum = |i: usize| -> rusqlite::Result<Option<String>> { row.get(i) };
    let playlists: String = row.get(9)?;
    let track = TrackState {
        title: row.get(1)?,
        artist: row.get(2)?,
        url: row.get(3)?,
        soundcloud_id: row.get::<_, Option<i64>>(4)?.map(|n| n as u64),
        unavailable: opt_enum(5)?
            .map(|s| from_text::<UnavailableReason>(5, s))
            .transpose()?,
        drm: opt_enum(6)?
            .map(|s| from_text::<DrmVerdict>(6, s))
            .transpose()?,
        notion_page_id: row.get(7)?,
        notion: step_from_row(row, 8, 15)?,
        notion_playlists: serde_json::from_str(&playlists).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, e.into())
        })?,
        download_path: row
            .get::<_, Option<Vec<u8>>>(10)?
            .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b))),
        download: step_from_row(row, 11, 18)?,
        download_written_back: row.get(12)?,
        first_seen: row.get(13)?,
        duration_ms: row.get::<_, Option<i64>>(14)?.map(|n| n as u64),
        analysis: Analysis::from_columns(row.get(21)?, row.get(22)?, row.get(23)?),
        page_kept: PageKept::from_bits(row.get(24)?),
        analysis_written_back: row.get(25)?,
    };
    Ok((TrackKey::new(row.get::<_, String>(0)?), track))
}

/// One track's record.
pub fn read_track(conn: &Connection, key: &TrackKey) -> rusqlite::Result<Option<TrackState>> {
    let mut stmt = conn.prepare_cached(&format!("{TRACK_SELECT} WHERE t.key = ?1"))?;
    stmt.query_row([key.as_str()], track_from_row)
        .optional()
        .map(|r| r.map(|(_, t)| t))
}

/// Up to `limit` records in key order, after `after` (from the first when `None`).
pub fn read_tracks_after(
    conn: &Connection,
    after: Option<&TrackKey>,
    limit: usize,
) -> rusqlite::Result<Vec<(TrackKey, TrackState)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{TRACK_SELECT} WHERE ?1 IS NULL OR t.key > ?1 ORDER BY t.key LIMIT ?2"
    ))?;
    let rows = stmt.query_map(
        params![after.map(TrackKey::as_str), limit as i64],
        track_from_row,
    )?;
    rows.collect()
}

/// Whether `key` has a record, and how many records there are.
pub fn has_track(conn: &Connection, key: &TrackKey) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM tracks WHERE key = ?1")?;
    stmt.exists([key.as_str()])
}

pub fn count_tracks(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM tracks", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
}

/// Keys of the tracks with a failed or parked step: the ones `retry` may clear.
pub fn stuck_keys(conn: &Connection) -> rusqlite::Result<Vec<TrackKey>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key FROM tracks WHERE notion_status IN ('failed', 'parked') \
         OR download_status IN ('failed', 'parked') ORDER BY key",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0).map(TrackKey::new))?;
    rows.collect()
}

fn write_step(tx: &Transaction, key: &TrackKey, name: &str, step: &Step) -> rusqlite::Result<()> {
    if step.attempts == 0 && step.last_error.is_none() && step.next_retry.is_none() {
        let mut del =
            tx.prepare_cached("DELETE FROM failures WHERE track_key = ?1 AND step = ?2")?;
        del.execute(params![key.as_str(), name])?;
        return Ok(());
    }
    let mut up = tx.prepare_cached(
        "INSERT INTO failures (track_key, step, attempts, last_error, next_retry) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (track_key, step) DO UPDATE SET \
         attempts = excluded.attempts, last_error = excluded.last_error, \
         next_retry = excluded.next_retry",
    )?;
    up.execute(params![
        key.as_str(),
        name,
        step.attempts,
        step.last_error,
        step.next_retry
    ])?;
    Ok(())
}

/// Inserts or replaces one track's record.
pub fn write_track(tx: &Transaction, key: &TrackKey, t: &TrackState) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO tracks (key, title, artist, url, soundcloud_id, unavailable, drm, \
         notion_page_id, notion_status, notion_playlists, download_path, download_status, \
         download_written_back, first_seen, duration_ms, analysis, tempo, musical_key, page_kept, \
         analysis_written_back) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
         ?19, ?20) \
         ON CONFLICT (key) DO UPDATE SET title = excluded.title, artist = excluded.artist, \
         url = excluded.url, soundcloud_id = excluded.soundcloud_id, \
         unavailable = excluded.unavailable, drm = excluded.drm, \
         notion_page_id = excluded.notion_page_id, notion_status = excluded.notion_status, \
         notion_playlists = excluded.notion_playlists, download_path = excluded.download_path, \
         download_status = excluded.download_status, \
         download_written_back = excluded.download_written_back, first_seen = excluded.first_seen, \
         duration_ms = excluded.duration_ms, analysis = excluded.analysis, tempo = excluded.tempo, \
         musical_key = excluded.musical_key, page_kept = excluded.page_kept, \
         analysis_written_back = excluded.analysis_written_back",
    )?;
    stmt.execute(params![
        key.as_str(),
        t.title,
        t.artist,
        t.url,
        t.soundcloud_id.map(|n| n as i64),
        t.unavailable.as_ref().map(to_text),
        t.drm.as_ref().map(to_text),
        t.notion_page_id,
        to_text(&t.notion.status),
        serde_json::to_string(&t.notion_playlists).expect("names serialize"),
        path_bytes(&t.download_path),
        to_text(&t.download.status),
        t.download_written_back,
        t.first_seen,
        t.duration_ms.map(|n| n as i64),
        t.analysis.as_ref().map(Analysis::mark),
        t.analysis.as_ref().and_then(Analysis::tempo),
        t.analysis.as_ref().and_then(Analysis::key),
        t.page_kept.bits(),
        t.analysis_written_back,
    ])?;
    write_step(tx, key, "notion", &t.notion)?;
    write_step(tx, key, "download", &t.download)
}

/// Inserts or replaces one playlist, its members, its removed tracks and its last run.
pub fn write_playlist(tx: &Transaction, name: &str, p: &PlaylistState) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO playlists (name, url, title, notion_page_id, last_success) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET url = excluded.url, \
         title = excluded.title, notion_page_id = excluded.notion_page_id, \
         last_success = excluded.last_success",
    )?
    .execute(params![
        name,
        p.url,
        p.title,
        p.notion_page_id,
        p.last_success
    ])?;
    tx.prepare_cached("DELETE FROM members WHERE playlist = ?1")?
        .execute([name])?;
    let mut member = tx.prepare_cached(
        "INSERT INTO members (playlist, position, track_key) VALUES (?1, ?2, ?3)",
    )?;
    for (i, key) in p.members.iter().enumerate() {
        member.execute(params![name, i as i64, key.as_str()])?;
    }
    tx.prepare_cached("DELETE FROM removed WHERE playlist = ?1")?
        .execute([name])?;
    let mut removed =
        tx.prepare_cached("INSERT INTO removed (playlist, track_key, at) VALUES (?1, ?2, ?3)")?;
    for (key, at) in &p.removed {
        removed.execute(params![name, key.as_str(), at])?;
    }
    if let Some(r) = &p.last_run {
        write_run(tx, name, r)?;
    }
    Ok(())
}

fn write_run(tx: &Transaction, name: &str, r: &RunSummary) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO runs (playlist, started, finished, ok, listed, created, \
         adopted, downloaded, failed, unavailable, removed, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        name,
        r.started,
        r.finished,
        r.ok,
        r.listed as i64,
        r.created as i64,
        r.adopted as i64,
        r.downloaded as i64,
        r.failed as i64,
        r.unavailable as i64,
        r.removed as i64,
        r.error
    ])?;
    Ok(())
}

/// Every playlist, with its members in order, its removed tracks and its latest run.
pub fn read_playlists(conn: &Connection) -> rusqlite::Result<BTreeMap<String, PlaylistState>> {
    let mut out = BTreeMap::new();
    let mut stmt =
        conn.prepare("SELECT name, url, title, notion_page_id, last_success FROM playlists")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PlaylistState {
                url: r.get(1)?,
                title: r.get(2)?,
                notion_page_id: r.get(3)?,
                last_success: r.get(4)?,
                ..Default::default()
            },
        ))
    })?;
    for row in rows {
        let (name, p) = row?;
        out.insert(name, p);
    }
    let mut stmt =
        conn.prepare("SELECT playlist, track_key FROM members ORDER BY playlist, position")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(p) = out.get_mut(&r.get::<_, String>(0)?) {
            p.members.push(TrackKey::new(r.get::<_, String>(1)?));
        }
    }
    let mut stmt = conn.prepare("SELECT playlist, track_key, at FROM removed")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(p) = out.get_mut(&r.get::<_, String>(0)?) {
            p.removed
                .insert(TrackKey::new(r.get::<_, String>(1)?), r.get(2)?);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT playlist, started, finished, ok, listed, created, adopted, downloaded, failed, \
         unavailable, removed, error FROM runs r WHERE started = \
         (SELECT max(started) FROM runs WHERE playlist = r.playlist)",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let n = |i: usize| r.get::<_, i64>(i).map(|n| n as usize);
        let run = RunSummary {
            started: r.get(1)?,
            finished: r.get(2)?,
            ok: r.get(3)?,
            listed: n(4)?,
            created: n(5)?,
            adopted: n(6)?,
            downloaded: n(7)?,
            failed: n(8)?,
            unavailable: n(9)?,
            removed: n(10)?,
            error: r.get(11)?,
        };
        if let Some(p) = out.get_mut(&r.get::<_, String>(0)?) {
            p.last_run = Some(run);
        }
    }
    Ok(out)
}

/// The open alerts, by kind.
pub fn read_alerts(conn: &Connection) -> rusqlite::Result<BTreeMap<String, AlertRecord>> {
    let mut stmt = conn.prepare("SELECT kind, detail, since FROM alerts")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            AlertRecord {
                detail: r.get(1)?,
                since: r.get(2)?,
            },
        ))
    })?;
    rows.collect()
}

/// Replaces the open alerts with `alerts`.
pub fn write_alerts(
    tx: &Transaction,
    alerts: &BTreeMap<String, AlertRecord>,
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM alerts", [])?;
    for (kind, a) in alerts {
        tx.execute(
            "INSERT INTO alerts (kind, detail, since) VALUES (?1, ?2, ?3)",
            params![kind, a.detail, a.since],
        )?;
    }
    Ok(())
}

/// A value of the `meta` table (what the database was imported from, for instance).
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn set_meta(tx: &Transaction, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(())
}
