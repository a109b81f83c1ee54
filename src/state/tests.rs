//! The state's tests: round trips, crash points, damage, the upgrade from JSON, and readers
//! while a writer writes.

use super::*;
use chrono::TimeZone;

/// A track's record, wherever it is kept.
fn rec(s: &State, key: &str) -> TrackState {
    s.tracks
        .get(&TrackKey::new(key))
        .unwrap()
        .unwrap()
        .into_owned()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 123_456_789)
        .unwrap()
}

/// A record with every field set, so a round trip checks every column.
fn full_track(i: u64) -> TrackState {
    TrackState {
        title: format!("Ünïcødé 曲 \"{i}\"\n"),
        artist: "A".into(),
        url: format!("https://soundcloud.com/a/t-{i}"),
        soundcloud_id: Some(i),
        unavailable: (i % 4 == 1).then_some(UnavailableReason::DrmProtected),
        drm: (i % 4 == 1).then_some(DrmVerdict::Protected),
        notion_page_id: Some(format!("page-{i}")),
        notion: Step {
            status: StepStatus::Done,
            attempts: 1,
            last_error: None,
            next_retry: None,
        },
        notion_playlists: ["b", "a"].into_iter().collect(),
        download_path: Some(PathBuf::from(format!("/music/a - t [{i}].m4a"))),
        download: Step {
            status: StepStatus::Failed,
            attempts: 2,
            last_error: Some("boom".into()),
            next_retry: Some(at(600)),
        },
        download_written_back: i.is_multiple_of(2),
        first_seen: at(0),
        duration_ms: (!i.is_multiple_of(3)).then_some(180_000 + i),
        analysis: match i % 3 {
            0 => None,
            1 => Some(Analysis::Measured {
                tempo: Some(124.5),
                key: i.is_multiple_of(2).then(|| "A Minor".into()),
            }),
            _ => Some(Analysis::Failed("cannot decode: Opus".into())),
        },
        page_kept: PageKept::from_bits((i % 4) as i64),
        analysis_written_back: i.is_multiple_of(5),
    }
}

fn sample(n: u64) -> State {
    let mut s = State::default();
    let mut p = PlaylistState {
        url: "https://soundcloud.com/a/sets/p".into(),
        title: "P".into(),
        notion_page_id: Some("pl-page".into()),
        last_success: Some(at(5)),
        last_run: Some(RunSummary {
            started: at(1),
            finished: at(2),
            ok: true,
            listed: n as usize,
            created: 3,
            error: Some("one failed".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for i in 0..n {
        let key = TrackKey::soundcloud(i);
        s.tracks.insert(key.clone(), full_track(i));
        p.members.push(key);
    }
    p.removed.insert(TrackKey::new("gone"), at(3));
    s.playlists.insert("P".into(), p);
    s.playlists.insert("Empty".into(), PlaylistState::default());
    s
}

#[test]
fn save_then_load_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::new_in(dir.path(), sample(10));
    store.save().unwrap();
    assert_eq!(store.state.tracks.held(), 0, "written and let go");
    let (loaded, outcome) = StateStore::load(dir.path()).unwrap();
    assert_eq!(outcome, LoadOutcome::Loaded);
    assert_eq!(loaded.state, sample(10));
    assert_eq!(rec(&loaded.state, "3"), full_track(3));
    assert_eq!(loaded.state.tracks.len(), 10);
    assert!(dir.path().join(DB_FILE).exists());
}

#[test]
fn loading_nothing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, outcome) = StateStore::load(&dir.path().join("nope")).unwrap();
    assert_eq!(outcome, LoadOutcome::Fresh);
    assert!(s.state.tracks.is_empty());
    assert!(!dir.path().join("nope").exists());
}

#[test]
fn changes_stay_in_memory_until_the_save_writes_them_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(50)).save().unwrap();
    let (mut store, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(store.state.tracks.held(), 0);
    // Reading keeps nothing; changing keeps the one record until the save.
    assert_eq!(rec(&store.state, "7").artist, "A");
    assert_eq!(store.state.tracks.held(), 0);
    store.track_mut(&TrackKey::new("7")).unwrap().unwrap().title = "Seven".into();
    store
        .state
        .tracks
        .insert(TrackKey::new("new"), full_track(8));
    assert_eq!(store.state.tracks.held(), 2);
    assert_eq!(store.state.tracks.len(), 51);
    let keys = store.state.tracks.keys().unwrap();
    assert_eq!(keys.len(), 51, "the new key merged in order, none twice");
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    store.save().unwrap();
    assert_eq!(store.state.tracks.held(), 0);
    assert_eq!(
        rec(&store.state, "7").title,
        "Seven",
        "read back from SQLite"
    );
    let (loaded, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(loaded.state, store.state);
    assert_eq!(rec(&loaded.state, "new"), full_track(8));
}

/// Copies the database as a crash at this instant would leave it (the file and its WAL).
fn crash_copy(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for f in [DB_FILE, "state.db-wal"] {
        if from.join(f).exists() {
            fs::copy(from.join(f), to.path().join(f)).unwrap();
        }
    }
    to
}

#[test]
fn crash_points_keep_every_committed_save_and_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(20)).save().unwrap();
    let (mut store, _) = StateStore::load(dir.path()).unwrap();

    // A crash after a step, before the next save: the step is redone, nothing else lost.
    store.track_mut(&TrackKey::new("1")).unwrap().unwrap().title = "Unsaved".into();
    let crashed = crash_copy(dir.path());
    let (after, _) = StateStore::load(crashed.path()).unwrap();
    assert_eq!(rec(&after.state, "1"), full_track(1));

    // A crash right after a save, before any checkpoint: the save is in the WAL, and kept.
    store.save().unwrap();
    assert!(fs::metadata(dir.path().join("state.db-wal")).unwrap().len() > 0);
    let crashed = crash_copy(dir.path());
    let (after, _) = StateStore::load(crashed.path()).unwrap();
    assert_eq!(rec(&after.state, "1").title, "Unsaved");

    // A crash in the middle of a save's transaction: none of it is there.
    {
        let (conn, _) = store.state.tracks.db().unwrap();
        let mut conn = conn.lock().unwrap();
        let tx = conn.transaction().unwrap();
        let mut t = full_track(2);
        t.title = "Half".into();
        db::write_track(&tx, &TrackKey::new("2"), &t).unwrap();
        db::write_track(&tx, &TrackKey::new("fresh"), &t).unwrap();
        tx.execute_batch("PRAGMA cache_spill = 1").unwrap();
        let crashed = crash_copy(dir.path());
        let (after, _) = StateStore::load(crashed.path()).unwrap();
        assert_eq!(rec(&after.state, "2"), full_track(2));
        assert_eq!(after.state.tracks.len(), 20);
        tx.rollback().unwrap();
    }

    // A failed save keeps its changes in memory for the next one.
    store.track_mut(&TrackKey::new("3")).unwrap().unwrap().title = "Kept".into();
    fs::remove_dir_all(crash_copy(dir.path()).path()).unwrap();
    store.save_full().unwrap();
    assert_eq!(
        fs::metadata(dir.path().join("state.db-wal")).unwrap().len(),
        0,
        "save_full folds the WAL into state.db"
    );
    let (after, _) = StateStore::load(crash_copy(dir.path()).path()).unwrap();
    assert_eq!(rec(&after.state, "3").title, "Kept");
}

#[test]
fn a_save_that_fails_keeps_its_changes_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(3)).save().unwrap();
    let (mut store, _) = StateStore::load(dir.path()).unwrap();
    store.track_mut(&TrackKey::new("1")).unwrap().unwrap().title = "Kept".into();
    // Another connection holds the write lock past the busy timeout's reach.
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    {
        let (conn, _) = store.state.tracks.db().unwrap();
        conn.lock()
            .unwrap()
            .busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
    }
    let e = store.save().unwrap_err();
    assert!(e.to_string().contains("(fix: "), "{e}");
    assert_eq!(store.state.tracks.held(), 1);
    other.execute_batch("ROLLBACK").unwrap();
    store.save().unwrap();
    let (after, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(rec(&after.state, "1").title, "Kept");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_with_the_fix_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let junk = b"{\"version\": 1, \"tracks\": {".repeat(200);
    fs::write(&path, &junk).unwrap();
    let e = StateStore::load(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("fix: move it aside") && !m.contains('\n'), "{m}");
    assert!(m.contains("adopts existing Notion pages"), "{m}");
    assert_eq!(fs::read(&path).unwrap(), junk, "nothing overwritten");
}

#[test]
fn a_damaged_page_fails_the_check_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(2000))
        .save_full()
        .unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 8 * page);
    // Scribble over the middle pages (b-tree pages of the tracks and their index).
    for b in &mut bytes[3 * page..6 * page] {
        *b = 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    let e = StateStore::load(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("fix: move it aside"), "{e}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing overwritten");
}

#[test]
fn a_database_from_a_newer_playlistd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(1)).save().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = StateStore::load(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e}");
}

/// A fixture state directory copied to a temporary one.
fn fixture(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let to = tempfile::tempdir().unwrap();
    for e in fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

/// The fixture's JSON state as that release would have loaded it (journal applied).
fn legacy_state(dir: &Path) -> State {
    let text = fs::read_to_string(dir.join("state.json.migrated")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let journal = fs::read_to_string(dir.join("state.journal.migrated")).unwrap_or_default();
    // Up to a torn last line, as the JSON code read it.
    let whole = journal.split_inclusive('\n').skip(1).map_while(|l| {
        let l = l.strip_suffix('\n')?;
        serde_json::from_str::<serde_json::Value>(l).ok()
    });
    for l in whole {
        match l["kind"].as_str().unwrap() {
            "track" => v["tracks"][l["key"].as_str().unwrap()] = l["value"].clone(),
            _ => v["playlists"][l["name"].as_str().unwrap()] = l["value"].clone(),
        }
    }
    serde_json::from_value(v).unwrap()
}

fn imports(name: &str) -> State {
    let dir = fixture(name);
    let (store, outcome) = StateStore::load(dir.path()).unwrap();
    assert_eq!(
        outcome,
        LoadOutcome::Imported(dir.path().join(STATE_FILE)),
        "{name}"
    );
    assert!(!dir.path().join(STATE_FILE).exists());
    assert!(dir.path().join("state.json.migrated").exists());
    assert!(!dir.path().join(JOURNAL_FILE).exists());
    let expected = legacy_state(dir.path());
    assert!(!expected.tracks.is_empty() && !expected.playlists.is_empty());
    assert_eq!(store.state, expected, "{name}: everything imported");
    // Imported once: the next start just opens the database.
    drop(store);
    let (again, outcome) = StateStore::load(dir.path()).unwrap();
    assert_eq!(outcome, LoadOutcome::Loaded);
    assert_eq!(again.state, expected);
    expected
}

#[test]
fn a_json_state_of_release_0_1_0_is_imported_whole() {
    let state = imports("state-0.1.0");
    assert!(records_where(&state, |t| t.notion.is_done()) > 0);
}

#[test]
fn a_json_state_as_issue_6_left_it_is_imported_whole_with_drm_verdicts() {
    let state = imports("state-issue6");
    assert!(
        records_where(&state, |t| t.drm.is_some()) > 0,
        "the drm field"
    );
}

fn records_where(s: &State, f: impl Fn(&TrackState) -> bool) -> usize {
    s.tracks
        .iter()
        .filter(|r| f(&r.as_ref().unwrap().1))
        .count()
}

#[test]
fn an_import_cut_short_is_done_again_and_a_torn_journal_line_is_dropped() {
    let dir = fixture("state-issue6");
    // A crash mid-import leaves a database without the import's mark: it is redone.
    db::open(&dir.path().join(DB_FILE)).unwrap();
    let mut journal = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    journal.push_str("{\"kind\":\"track\",\"key\":\"1\",\"val");
    fs::write(dir.path().join(JOURNAL_FILE), journal).unwrap();
    let (store, outcome) = StateStore::load(dir.path()).unwrap();
    assert!(matches!(outcome, LoadOutcome::Imported(_)));
    assert_eq!(store.state, legacy_state(dir.path()));
}

#[test]
fn a_damaged_json_state_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(STATE_FILE),
        b"{\"version\": 1, \"tracks\": {",
    )
    .unwrap();
    let e = StateStore::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("fix: move it aside"), "{e}");
    assert!(dir.path().join(STATE_FILE).exists());
    fs::write(dir.path().join(STATE_FILE), b"{\"version\": 99}").unwrap();
    let e = StateStore::load(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e}");
}

#[test]
fn status_reads_while_a_sync_writes() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::new_in(dir.path(), sample(300)).save().unwrap();
    let (mut writer, _) = StateStore::load(dir.path()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            let mut last = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                // What `status` does: open, read every member.
                let (store, _) = StateStore::load(dir.path()).unwrap();
                let done = store.state.playlists["P"]
                    .members
                    .iter()
                    .filter(|k| {
                        store
                            .state
                            .tracks
                            .get(k)
                            .unwrap()
                            .unwrap()
                            .download
                            .is_done()
                    })
                    .count();
                assert!(done >= last, "a reader sees whole saves, in order");
                last = done;
                reads += 1;
            }
            reads
        });
        // The sync: a step done, a save, over and over, while the reader reads.
        for i in 0..300u64 {
            writer
                .track_mut(&TrackKey::soundcloud(i))
                .unwrap()
                .unwrap()
                .download
                .succeed();
            if i % 10 == 9 {
                writer.save().unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}

#[test]
fn retry_clears_only_the_stuck_and_keeps_only_those_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = sample(40);
    for i in 0..40 {
        let mut t = full_track(i);
        t.download = Step::default();
        if i == 3 {
            t.download.status = StepStatus::Parked;
        }
        state.tracks.insert(TrackKey::soundcloud(i), t);
    }
    StateStore::new_in(dir.path(), state).save().unwrap();
    let (mut store, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(store.clear_backoff(None).unwrap(), 1);
    assert_eq!(store.state.tracks.held(), 1);
    assert_eq!(rec(&store.state, "3").download.status, StepStatus::Failed);
    assert_eq!(store.retry(&["P".into()]).unwrap(), 1);
    let (after, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(rec(&after.state, "3").download.status, StepStatus::Failed);
    assert_eq!(rec(&after.state, "3").download.next_retry, None);
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

#[test]
fn a_state_of_the_first_schema_gains_the_duration_column_and_keeps_its_tracks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(StateStore::path_in(dir.path())).unwrap();
        conn.execute_batch(&format!(
            "{}; PRAGMA user_version = 1;",
            super::db::MIGRATIONS[0]
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO tracks (key, title, artist, url, notion_status, download_status, first_seen) \
             VALUES ('7', 'Old', 'Band', 'https://soundcloud.com/band/old', 'done', 'done', ?1)",
            [at(0)],
        )
        .unwrap();
    }
    let (store, _) = StateStore::load(dir.path()).unwrap();
    let t = store
        .state
        .tracks
        .get(&TrackKey::new("7"))
        .unwrap()
        .unwrap();
    assert_eq!((t.title.as_str(), t.duration_ms), ("Old", None));
}

#[test]
fn open_alerts_survive_a_reload_and_closing_them_is_saved_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::new_in(dir.path(), State::default());
    let open: BTreeMap<String, AlertRecord> = [(
        "notion_token".to_string(),
        AlertRecord {
            detail: "Notion rejected the API token".into(),
            since: at(5),
        },
    )]
    .into();
    store.set_alerts(open.clone());
    store.save().unwrap();
    let (mut again, _) = StateStore::load(dir.path()).unwrap();
    assert_eq!(again.state.alerts, open);
    // Only the alerts changed: the save must still write them.
    again.set_alerts(BTreeMap::new());
    again.save().unwrap();
    let (third, _) = StateStore::load(dir.path()).unwrap();
    assert!(third.state.alerts.is_empty());
}
