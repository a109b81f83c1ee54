//! Bad input (issue 4, section 5): broken config files, tokens and databases, damaged state
//! files, odd titles and genres, empty and huge playlists, sets that vanished. Each case runs the
//! real binary (or the engine, where a fault can only be placed in-process) and checks what the
//! user sees: one error line naming the problem and, when it is the user's to fix, the fix; the
//! exit code; no panic; the Notion token never printed; nothing half-written.
//!
//! Disk full is simulated with `/dev/full` (every write to it fails with ENOSPC, also as root):
//! the state database's write-ahead log is made that device (`mknod`; SQLite does not follow
//! a symlink there), so the real save path meets a real "No space left on device". A tmpfs would need mount privileges; chmod does not stop root.

use crate::support::{World, failure_with_fix, records, text};
use playlistd::model::{TrackKey, canonical_url};
use playlistd::state::StateStore;
use playlistd::sync::SyncError;
use playlistd_fakes::notion::{DatabaseSpec, Endpoint, FakeNotionOptions, PropKind};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
use std::path::Path;
use std::process::Output;

fn songs(ids: std::ops::RangeInclusive<u64>) -> Vec<FakeTrack> {
    ids.map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band"))
        .collect()
}

/// A world watching one set "Set" of `n` tracks (playlist id 1), downloads off.
async fn world(n: u64) -> World {
    world_with(n, FakeNotionOptions::default()).await
}

async fn world_with(n: u64, opts: FakeNotionOptions) -> World {
    let mut w = World::with_notion(opts).await;
    w.downloads = false;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set")
            .title("The Set")
            .tracks(songs(1..=n)),
    );
    w.watch("Set", &url);
    w
}

/// Writes the world's config and token, then replaces the config with `edit` of it. Returns
/// the text on disk.
fn write_edited(w: &World, edit: impl FnOnce(String) -> String) -> String {
    w.write_config().expect("the unedited config is valid");
    let t = edit(w.config_text());
    std::fs::write(w.config_path(), &t).unwrap();
    t
}

/// A clean run: exit 0, no panic, no token, no error line.
fn success(w: &World, out: &Output) -> String {
    let all = text(out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("panicked"), "a panic:\n{all}");
    assert!(!all.contains(&w.notion.token()), "the token leaked:\n{all}");
    assert!(
        !String::from_utf8_lossy(&out.stderr)
            .lines()
            .any(|l| l.starts_with("playlistd:")),
        "an error line in a clean run:\n{all}"
    );
    all
}

/// A config mistake: exit 2 with the fix, the file untouched, and nothing done anywhere.
async fn config_error(w: &World, on_disk: &str) -> String {
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(w, &out, 2);
    assert_eq!(
        std::fs::read_to_string(w.config_path()).unwrap(),
        on_disk,
        "the config file is untouched"
    );
    assert!(!w.state_dir().exists(), "no state written");
    assert!(!w.music_dir().exists(), "no music folder");
    assert_eq!(w.notion.request_count(), 0, "Notion was not asked");
    assert_eq!(w.sc.total_requests(), 0, "SoundCloud was not asked");
    line
}

/// The `playlists.toml:<line>:` prefix of an error located on `needle`'s first line in `text`.
fn located_at(text: &str, needle: &str) -> String {
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in the config")
        + 1;
    format!("playlists.toml:{line}:")
}

fn state_file(w: &World) -> std::path::PathBuf {
    w.state_dir().join(playlistd::state::DB_FILE)
}

/// A character device like /dev/full (1, 7) at `path`: every write to it fails with ENOSPC.
fn full_device_at(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mknod with a valid C string; no memory is shared with the kernel call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 7)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// The config file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_toml_is_located_with_the_fix() {
    let w = world(1).await;
    let t = write_edited(&w, |t| t.replace("[download]", "[download"));
    let line = config_error(&w, &t).await;
    assert!(line.contains(&located_at(&t, "[download")), "{line}");
    assert!(line.contains("correct the TOML syntax"), "{line}");
}

#[tokio::test]
async fn unknown_key_is_located_and_named() {
    let w = world(1).await;
    let t = write_edited(&w, |t| {
        t.replace("requests_per_minute =", "request_per_minute =")
    });
    let line = config_error(&w, &t).await;
    assert!(
        line.contains(&located_at(&t, "request_per_minute")),
        "{line}"
    );
    assert!(
        line.contains("unknown field `request_per_minute`"),
        "{line}"
    );
    assert!(line.contains("remove or rename the key"), "{line}");
}

#[tokio::test]
async fn bad_cron_is_located_with_the_fix() {
    let mut w = world(0).await;
    let url = w.sc.playlist_url(1).unwrap();
    w.playlists.clear();
    w.watch_with("Set", &url, "schedule = \"61 * * * *\"");
    std::fs::write(w.config_path(), w.config_text()).unwrap();
    std::fs::write(w.token_file(), w.notion.token()).unwrap();
    let t = w.config_text();
    let line = config_error(&w, &t).await;
    assert!(line.contains(&located_at(&t, "61 * * * *")), "{line}");
    assert!(
        line.contains("bad cron expression \"61 * * * *\" in schedule of playlist \"Set\""),
        "{line}"
    );
    assert!(line.contains("5 fields"), "{line}");
}

#[tokio::test]
async fn a_url_that_is_not_a_url_is_refused() {
    let w = world(1).await;
    let url = w.sc.playlist_url(1).unwrap();
    let t = write_edited(&w, |t| t.replace(&url, "soundcloud.com/u/sets/set"));
    let line = config_error(&w, &t).await;
    assert!(
        line.contains(&located_at(&t, "soundcloud.com/u/sets/set")),
        "{line}"
    );
    assert!(line.contains("is not an http(s) URL"), "{line}");
}

#[tokio::test]
async fn a_soundcloud_track_url_is_not_a_playlist() {
    let w = world(1).await;
    let set = w.sc.playlist_url(1).unwrap();
    let track = w.sc.track_url(1).unwrap();
    let t = write_edited(&w, |t| t.replace(&set, &track));
    let line = config_error(&w, &t).await;
    assert!(line.contains("is not a SoundCloud playlist URL"), "{line}");
    assert!(line.contains("/sets/"), "the fix shows a set URL: {line}");
}

#[tokio::test]
async fn a_duplicate_playlist_name_is_refused_at_the_second() {
    let mut w = world(1).await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(2, "u", "other").tracks(songs(5..=6)));
    w.watch("Set", &url);
    let t = w.config_text();
    std::fs::write(w.config_path(), &t).unwrap();
    std::fs::write(w.token_file(), w.notion.token()).unwrap();
    let line = config_error(&w, &t).await;
    let second = t.match_indices("name = \"Set\"").nth(1).unwrap().0;
    let line_no = t[..second].lines().count() + 1;
    assert!(
        line.contains(&format!("playlists.toml:{line_no}:")),
        "{line}"
    );
    assert!(line.contains("duplicate playlist name \"Set\""), "{line}");
    assert!(line.contains("unique name"), "{line}");
}

#[tokio::test]
async fn a_nonexistent_config_file_says_where_it_looked() {
    let w = world(1).await;
    // Nothing written: the config path does not exist.
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 2);
    assert!(
        line.contains(&w.config_path().display().to_string()),
        "{line}"
    );
    assert!(line.contains("cannot read the config file"), "{line}");
    assert!(line.contains("playlists.toml.example"), "{line}");
    assert!(!w.config_path().exists(), "no config is invented");
    assert!(!w.state_dir().exists());
}

#[tokio::test]
async fn an_empty_config_file_asks_for_the_notion_table() {
    let w = world(1).await;
    std::fs::write(w.config_path(), "").unwrap();
    let line = config_error(&w, "").await;
    assert!(line.contains("missing field `notion`"), "{line}");
    assert!(line.contains("add the key"), "{line}");
}

#[tokio::test]
async fn a_notion_database_that_is_not_an_id_is_refused() {
    let w = world(1).await;
    let db = w.notion.database_id();
    let t = write_edited(&w, |t| {
        t.replace(&db, "https://www.notion.so/myspace/Music-Tracks")
    });
    let line = config_error(&w, &t).await;
    assert!(
        line.contains("notion.database is not a Notion database URL or id"),
        "{line}"
    );
    assert!(line.contains("Copy link"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// The token
// ---------------------------------------------------------------------------------------------

/// A token problem: exit 2 with the fix, before any request or state write.
fn token_error(w: &World, out: &Output) -> String {
    let line = failure_with_fix(w, out, 2);
    assert_eq!(w.notion.request_count(), 0, "Notion was not asked");
    assert!(
        !state_file(w).exists(),
        "no state written before the token is known"
    );
    line
}

#[tokio::test]
async fn a_missing_token_file_is_named_with_the_fix() {
    let w = world(1).await;
    w.write_config().unwrap();
    std::fs::remove_file(w.token_file()).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = token_error(&w, &out);
    assert!(line.contains("cannot read the Notion token file"), "{line}");
    assert!(
        line.contains(&w.token_file().display().to_string()),
        "{line}"
    );
    assert!(line.contains("notion.token_file"), "{line}");
}

#[tokio::test]
async fn an_unreadable_token_file_is_named_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let w = world(1).await;
    w.write_config().unwrap();
    let token = w.token_file();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&token).is_ok() {
        // Root reads through mode 000: make the path unreadable another way, a directory.
        std::fs::remove_file(&token).unwrap();
        std::fs::create_dir(&token).unwrap();
    }
    let out = w.playlistd_raw(&["sync"]).await;
    let line = token_error(&w, &out);
    assert!(line.contains("cannot read the Notion token file"), "{line}");
    assert!(line.contains("permissions"), "{line}");
}

#[tokio::test]
async fn an_empty_token_file_asks_for_the_secret() {
    let w = world(1).await;
    w.write_config().unwrap();
    std::fs::write(w.token_file(), "\n  \n").unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = token_error(&w, &out);
    assert!(line.contains("is empty"), "{line}");
    assert!(line.contains("first line"), "{line}");
}

#[tokio::test]
async fn an_unset_token_variable_is_named_with_the_fix() {
    let w = world(1).await;
    write_edited(&w, |t| {
        t.replace(
            "token_file =",
            "token_env = \"PLAYLISTD_BAD_INPUT_TOKEN\"\n# token_file =",
        )
    });
    let out = w.playlistd_raw(&["sync"]).await;
    let line = token_error(&w, &out);
    assert!(line.contains("PLAYLISTD_BAD_INPUT_TOKEN"), "{line}");
    assert!(line.contains("export PLAYLISTD_BAD_INPUT_TOKEN="), "{line}");
}

#[tokio::test]
async fn a_blank_token_variable_counts_as_unset() {
    let w = world(1).await;
    write_edited(&w, |t| {
        t.replace(
            "token_file =",
            "token_env = \"PLAYLISTD_BAD_INPUT_TOKEN\"\n# token_file =",
        )
    });
    let out = w
        .command_raw(&["sync"])
        .env("PLAYLISTD_BAD_INPUT_TOKEN", "   ")
        .output()
        .await
        .unwrap();
    let line = token_error(&w, &out);
    assert!(line.contains("is empty or missing"), "{line}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_by_notion_and_never_printed() {
    let w = world(2).await;
    w.write_config().unwrap();
    let wrong = "ntn_wrong_secret_9999999999999999999999999";
    std::fs::write(w.token_file(), wrong).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(!text(&out).contains(wrong), "the wrong token leaked too");
    assert!(line.contains("401"), "{line}");
    assert!(line.contains("ntn_ or secret_"), "{line}");
    assert!(w.notion.all_pages().len() <= 1, "no track page");
    assert!(w.notion.pages().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The Notion database
// ---------------------------------------------------------------------------------------------

/// A run stopped by Notion: exit 3 with the fix, and no page created.
async fn notion_stop(w: &World) -> String {
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(w, &out, 3);
    assert!(
        line.starts_with("playlistd: Set: "),
        "names the playlist: {line}"
    );
    assert!(w.notion.pages().is_empty(), "no page created");
    assert_eq!(w.notion.count(Endpoint::Create), 0);
    // The state is whole, and remembers why the run stopped for `status`.
    let (store, _) = StateStore::load(&w.state_dir()).expect("a whole state file");
    let last = store.state.playlists["Set"].last_run.clone().unwrap();
    assert!(!last.ok, "{last:?}");
    assert!(
        records(&store.state)
            .into_iter()
            .all(|t| t.notion_page_id.is_none())
    );
    line
}

#[tokio::test]
async fn a_wrong_database_id_is_a_404_with_the_fix() {
    let w = world(2).await;
    let db = w.notion.database_id();
    write_edited(&w, |t| t.replace(&db, "0123456789abcdef0123456789abcdef"));
    let line = notion_stop(&w).await;
    assert!(line.contains("0123456789abcdef0123456789abcdef"), "{line}");
    assert!(line.contains("404"), "{line}");
    assert!(line.contains("check the id"), "{line}");
}

#[tokio::test]
async fn an_unshared_database_is_a_404_with_the_sharing_fix() {
    let w = world(2).await;
    w.notion.set_shared(false);
    w.write_config().unwrap();
    let line = notion_stop(&w).await;
    assert!(line.contains("404"), "{line}");
    assert!(
        line.contains("share the database with the integration"),
        "{line}"
    );
}

#[tokio::test]
async fn a_configured_property_of_the_wrong_type_is_named() {
    let w = world(2).await;
    write_edited(&w, |t| t + "\n[notion.properties]\ngenre = \"Tempo\"\n");
    let line = notion_stop(&w).await;
    assert!(
        line.contains("property \"Tempo\" (notion.properties.genre) is of type number"),
        "{line}"
    );
    assert!(line.contains("set it to \"\" to skip it"), "{line}");
}

#[tokio::test]
async fn a_dedup_property_of_the_wrong_type_is_named_and_the_run_refused() {
    let w = world_with(
        2,
        FakeNotionOptions::with_tracks(vec![
            ("Title", PropKind::Title),
            ("Artist Name", PropKind::RichText),
            ("SoundCloud URL", PropKind::Number),
        ]),
    )
    .await;
    w.write_config().unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(
        line.contains("no property to recognise tracks by"),
        "{line}"
    );
    assert_eq!(line.matches("is of type number").count(), 1, "{line}");
    assert!(
        line.contains("\"SoundCloud URL\" is of type number, not url or rich_text"),
        "the wrong type is named: {line}"
    );
    assert!(line.contains("change that property's type"), "{line}");
    assert!(
        w.notion.pages().is_empty(),
        "no page: it would be a duplicate next time"
    );
}

#[tokio::test]
async fn a_schema_without_a_dedup_key_is_refused() {
    let w = world_with(
        2,
        FakeNotionOptions::with_tracks(vec![
            ("Title", PropKind::Title),
            ("Artist Name", PropKind::RichText),
        ]),
    )
    .await;
    w.write_config().unwrap();
    let line = notion_stop(&w).await;
    assert!(
        line.contains("no property to recognise tracks by"),
        "{line}"
    );
    assert!(
        line.contains("add a url property named \"SoundCloud URL\""),
        "{line}"
    );
}

#[tokio::test]
async fn two_data_sources_and_none_configured_lists_them() {
    let mut opts = FakeNotionOptions::default();
    opts.databases[0] = DatabaseSpec::music_tracks().with_data_source(
        "Archive",
        vec![("Name", PropKind::Title), ("SoundCloud URL", PropKind::Url)],
    );
    let w = world_with(2, opts).await;
    w.write_config().unwrap();
    let line = notion_stop(&w).await;
    assert!(line.contains("has 2 data sources"), "{line}");
    for id in w.notion.data_source_ids() {
        assert!(line.contains(&id), "lists {id}: {line}");
    }
    assert!(line.contains("set notion.data_source"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// The disk
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_file_where_the_download_folder_should_be_fails_the_downloads_with_the_path() {
    let mut w = world(2).await;
    w.downloads = true;
    w.write_config().unwrap();
    std::fs::write(w.music_dir(), b"not a folder").unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "downloads did not happen:\n{all}"
    );
    assert!(!all.contains("panicked") && !all.contains(&w.notion.token()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Said once for the folder, not once per track, and not charged to the tracks.
    let line = stdout
        .lines()
        .find(|l| l.contains("downloads skipped"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        line.contains(&w.music_dir().display().to_string()),
        "names the path: {line}"
    );
    assert!(
        line.contains("Not a directory") && line.contains("(fix: make download.dir"),
        "{line}"
    );
    assert!(!stdout.contains("failed (Download)"), "{all}");
    assert!(
        records(&w.state())
            .into_iter()
            .all(|t| t.download.attempts == 0),
        "no attempt charged"
    );
    assert_eq!(
        read(&w.music_dir()),
        b"not a folder",
        "the file is untouched"
    );
    assert_eq!(w.notion.pages().len(), 2, "Notion still gets the tracks");

    // `check` says it once, with the fix.
    let out = w.playlistd_raw(&["check"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  download folder"))
        .unwrap_or_else(|| panic!("no download folder failure:\n{stdout}"));
    assert!(line.contains("(fix: "), "{line}");
}

#[tokio::test]
async fn a_state_folder_that_cannot_exist_stops_before_any_work() {
    let w = world(2).await;
    let state = Path::new("/dev/full/playlistd-state");
    write_edited(&w, |t| {
        t.replace(
            &format!("{:?}", w.state_dir().display().to_string()),
            &format!("{:?}", state.display().to_string()),
        )
    });
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("/dev/full/playlistd-state"), "{line}");
    assert!(line.contains("writable"), "{line}");
    assert_eq!(w.notion.request_count(), 0);
    assert_eq!(w.sc.total_requests(), 0);
}

#[tokio::test]
async fn disk_full_on_the_state_write_stops_the_run_and_leaves_a_whole_state_file() {
    let w = world(3).await;
    assert!(w.sync("Set").await.ok());
    // As at the end of a `playlistd sync` run: the write-ahead log folded into the database.
    StateStore::load(&w.state_dir())
        .unwrap()
        .0
        .save_full()
        .unwrap();
    let before = read(&state_file(&w));
    w.sc.add_track(1, FakeTrack::new(4, "Song 4", "Band"));
    // Saves during a run go to the write-ahead log first; here it reaches /dev/full.
    let journal = w.state_dir().join("state.db-wal");
    full_device_at(&journal);

    let (report, result) = w.try_sync("Set").await;
    let e = result.expect_err("a failed state write stops the run");
    assert!(matches!(e, SyncError::State(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains("(fix: ") && msg.contains("disk is not full"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        report.created.is_empty(),
        "nothing created after the failed save"
    );
    assert_eq!(w.notion.pages().len(), 3);
    // The database is untouched and whole.
    assert_eq!(read(&state_file(&w)), before);

    // The disk has room again: the next run picks up where it stopped, without duplicates.
    // (Closing the last connection may already have removed it.)
    let _ = std::fs::remove_file(&journal);
    let (store, _) = StateStore::load(&w.state_dir()).expect("a whole state file");
    assert_eq!(store.state.tracks.len(), 3);
    let r = w.sync("Set").await;
    assert!(r.ok(), "{:#?}", r.failed);
    assert_eq!(r.created.len(), 1);
    assert_eq!(w.notion.pages().len(), 4);
}

#[tokio::test]
async fn a_truncated_state_database_is_refused_and_moved_aside_adopts_the_pages() {
    let w = world(3).await;
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    let main = state_file(&w);
    let good = read(&main);
    std::fs::write(&main, &good[..good.len() / 2]).unwrap();

    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("is damaged"), "{line}");
    assert!(line.contains("move it aside"), "{line}");
    assert_eq!(read(&main), &good[..good.len() / 2], "left as it is");

    // The fix: move it aside. The next run adopts the pages instead of duplicating them.
    std::fs::rename(&main, w.state_dir().join("state.db.damaged")).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("panicked") && !all.contains(&w.notion.token()));
    assert_eq!(w.notion.pages().len(), 3, "no duplicate page after the fix");
    let state = w.state();
    assert_eq!(state.tracks.len(), 3);
    assert!(records(&state).into_iter().all(|t| t.notion.is_done()));
}

#[tokio::test]
async fn a_truncated_state_file_without_backup_is_refused_and_left_as_is() {
    let w = world(2).await;
    w.write_config().unwrap();
    std::fs::create_dir_all(w.state_dir()).unwrap();
    let damaged = br#"{"version":1,"tracks":{"1":{"title":"Song 1","art"#.repeat(100);
    let damaged = damaged.as_slice();
    std::fs::write(state_file(&w), damaged).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("is damaged"), "{line}");
    assert!(line.contains("move it aside"), "{line}");
    assert_eq!(read(&state_file(&w)), damaged, "the file is left as it is");
    assert!(!w.state_dir().join("state.json.bak").exists());
    assert_eq!(w.notion.request_count(), 0);
    assert_eq!(w.sc.total_requests(), 0);

    // `status` refuses the same way rather than showing an empty state.
    let out = w.playlistd_raw(&["status"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("is damaged"), "{line}");
    assert_eq!(read(&state_file(&w)), damaged);
}

#[tokio::test]
async fn a_state_file_from_a_newer_version_is_refused() {
    let w = world(2).await;
    w.write_config().unwrap();
    std::fs::create_dir_all(w.state_dir()).unwrap();
    let newer = br#"{"version":2,"tracks":{},"playlists":{},"shards":["a"]}"#;
    let json = w.state_dir().join(playlistd::state::STATE_FILE);
    std::fs::write(&json, newer).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("written by a newer playlistd"), "{line}");
    assert!(line.contains("format 2, this one reads 1"), "{line}");
    assert!(line.contains("upgrade playlistd"), "{line}");
    assert_eq!(read(&json), newer, "never downgraded");
    assert_eq!(w.notion.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Odd track data
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_title_of_5000_characters_fits_notion_and_the_file_system() {
    let mut w = World::new().await;
    let title: String = (0..1000).map(|i| format!("w{:03} ", i % 1000)).collect();
    let title = title.trim_end().to_string();
    assert!(title.chars().count() >= 4999);
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set")
            .track(FakeTrack::new(1, &title, "Band").permalink("band", "a-very-long-title")),
    );
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 1);
    assert_eq!(
        pages[0].text("Title"),
        title,
        "the whole title, split into items"
    );
    let files = w.music_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = Path::new(&files[0]).file_name().unwrap().to_str().unwrap();
    assert!(name.len() <= 255, "{} bytes", name.len());
    assert!(name.starts_with("Band - w000 w001"), "{name}");
    assert!(name.contains("[1]"), "the id survives the cut: {name}");

    // The next run finds the page and the file: nothing new.
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    assert_eq!(w.notion.pages().len(), 1);
    assert_eq!(w.music_files().len(), 1);
}

#[tokio::test]
async fn control_characters_in_a_title_reach_neither_notion_nor_file_names() {
    let mut w = World::new().await;
    let title = "Bell\u{7} Tab\there\u{1b}[31m Red\u{0}Nul\r\nNext";
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set").track(
            FakeTrack::new(1, title, "Ban\u{8}d")
                .permalink("band", "control")
                .genre("Tech\u{1}no"),
        ),
    );
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 1);
    for prop in ["Title", "Artist Name"] {
        let v = pages[0].text(prop);
        assert!(!v.chars().any(char::is_control), "{prop}: {v:?}");
    }
    assert!(
        pages[0].text("Title").contains("Red"),
        "{:?}",
        pages[0].text("Title")
    );
    assert_eq!(pages[0].select("Genre").as_deref(), Some("Techno"));
    let files = w.music_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!files[0].chars().any(char::is_control), "{:?}", files[0]);
    // The state keeps the title as SoundCloud gave it, as valid JSON.
    assert_eq!(
        w.state()
            .tracks
            .get(&TrackKey("1".into()))
            .unwrap()
            .unwrap()
            .title,
        title
    );
}

#[tokio::test]
async fn control_characters_in_a_title_are_not_printed_to_the_terminal() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set").track(
            FakeTrack::new(1, "Evil\u{1b}]0;pwned\u{7}\u{1b}[2J Title", "Band")
                .permalink("band", "evil"),
        ),
    );
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    let all = success(&w, &out);
    assert!(all.contains("Title"), "{all}");
    assert!(
        !all.contains('\u{1b}') && !all.contains('\u{7}'),
        "escape sequences from a title reach the terminal:\n{all:?}"
    );
}

#[tokio::test]
async fn commas_in_a_genre_become_a_valid_select_option() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(FakePlaylist::new(1, "u", "set").tracks([
        FakeTrack::new(1, "One", "Band").genre("Drum & Bass, Jungle, Breaks"),
        FakeTrack::new(2, "Two", "Band").genre(",,,"),
        FakeTrack::new(3, "Three", "Band").genre(&"Very, Long ".repeat(30)),
    ]));
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 3, "no track refused for its genre");
    let genre = |title: &str| {
        pages
            .iter()
            .find(|p| p.text("Title") == title)
            .unwrap()
            .select("Genre")
    };
    assert_eq!(
        genre("One").as_deref(),
        Some("Drum & Bass / Jungle / Breaks")
    );
    let long = genre("Three").unwrap();
    assert!(long.chars().count() <= 100 && !long.contains(','), "{long}");
    assert!(
        w.notion
            .select_options("Genre")
            .iter()
            .all(|o| !o.contains(',')),
        "{:?}",
        w.notion.select_options("Genre")
    );
}

#[tokio::test]
async fn unicode_everywhere_round_trips() {
    let mut w = World::new().await;
    let night = "夜のドライブ 🌙 Ñandú";
    let rtl = "שירים · موسيقى";
    let tracks = [
        (
            "Café del Mar — ☕ Señorita",
            "Sigur Rós",
            "cafe",
            "Électronique",
        ),
        ("東京 Nights 🌃", "坂本龍一", "tokyo", "シティポップ"),
        ("שלום עולם", "Мумий Тролль", "shalom", "Рок"),
        ("Zalgo z̷̢a̸l̵g̶o 👩‍🎤", "Ελληνικά", "zalgo", "Ñu-Disco"),
    ];
    let mut pl = FakePlaylist::new(1, "dj", "night").title("Ночной 🚗 プレイリスト");
    for (i, (title, artist, slug, genre)) in tracks.iter().enumerate() {
        pl = pl.track(
            FakeTrack::new(i as u64 + 1, title, artist)
                .permalink("dj", slug)
                .genre(genre),
        );
    }
    let a = w.sc.add_playlist(pl);
    let b = w.sc.add_playlist(
        FakePlaylist::new(2, "dj", "rtl")
            .tracks([FakeTrack::new(9, "نور", "فيروز").permalink("fairuz", "nour")]),
    );
    w.watch(night, &a);
    let folder = w.home().join("音楽").join("🎧 Ñ");
    w.watch_with(
        rtl,
        &b,
        &format!("dir = {:?}", folder.display().to_string()),
    );
    let out = w.playlistd(&["sync", night, rtl]).await;
    let all = success(&w, &out);
    assert!(all.contains(night) && all.contains(rtl), "{all}");

    let pages = w.notion.pages();
    assert_eq!(pages.len(), 5);
    for (title, artist, _, genre) in &tracks {
        let p = pages
            .iter()
            .find(|p| p.text("Title") == *title)
            .unwrap_or_else(|| panic!("no page titled {title}"));
        assert_eq!(p.text("Artist Name"), *artist);
        assert_eq!(p.select("Genre").as_deref(), Some(*genre));
    }
    let playlist_pages = w.notion.pages_in(&w.notion.playlists_data_source_id());
    let names: Vec<String> = playlist_pages.iter().map(|p| p.text("Name")).collect();
    assert!(
        names.iter().any(|n| n == night) && names.iter().any(|n| n == rtl),
        "{names:?}"
    );

    let files = w.music_files();
    assert_eq!(files.len(), 4, "{files:?}");
    for (title, artist, _, _) in &tracks {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("{night}/{artist} - {title} ["))),
            "{title}: {files:?}"
        );
    }
    // The audio file, beside the folder's playlist file.
    let rtl_files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_none_or(|x| x != "m3u8"))
        .collect();
    assert_eq!(rtl_files.len(), 1);
    assert!(
        rtl_files[0]
            .file_name()
            .to_str()
            .unwrap()
            .starts_with("فيروز - نور [9]")
    );

    let out = w.playlistd(&["status", "--json", night]).await;
    success(&w, &out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], night);
    assert_eq!(rows[0]["downloaded"], 4);
}

// ---------------------------------------------------------------------------------------------
// Playlist sizes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_playlist_of_zero_tracks_is_a_quiet_success() {
    let w = world(0).await;
    let out = w.playlistd(&["sync"]).await;
    let all = success(&w, &out);
    assert!(all.contains("synced \"Set\": 0 listed, 0 new"), "{all}");
    assert_eq!(w.notion.request_count(), 0, "nothing to ask Notion");
    assert!(w.notion.all_pages().is_empty());
    let state = w.state();
    assert!(state.tracks.is_empty());
    assert!(state.playlists["Set"].members.is_empty());
    assert!(state.playlists["Set"].last_success.is_some());
}

/// 10,000 tracks in a database that already holds 10,000 other pages and 1,000 of the
/// playlist's tracks: every existing page is found (Notion caps one query at 10,000 results;
/// playlistd's lookups are `or` queries of at most 100 tracks, far below the cap).
#[tokio::test]
async fn slow_a_playlist_of_10000_tracks_in_a_database_past_the_query_cap() {
    let mut w = World::new().await;
    w.downloads = false;
    w.requests_per_minute = 100_000;
    let n = 10_000u64;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "big")
            .title("Big")
            .full_prefix(5)
            .tracks(songs(1..=n)),
    );
    w.watch("Big", &url);
    for i in 1..=10_000u64 {
        w.notion.seed_track(
            &format!("Old {i}"),
            "Someone",
            &format!("https://soundcloud.com/someone/old-{i}"),
        );
    }
    let mut seeded = 0;
    for i in (7..=n).step_by(10) {
        let track_url = canonical_url(&w.sc.track_url(i).unwrap());
        w.notion
            .seed_track(&format!("Song {i}"), "Band", &track_url);
        seeded += 1;
    }

    let r = w.sync("Big").await;
    assert!(r.ok(), "{:#?}", r.failed.first());
    assert!(r.complete);
    assert_eq!(r.listed, n as usize);
    assert_eq!(r.adopted.len(), seeded, "every existing page is found");
    assert_eq!(r.created.len(), n as usize - seeded);
    assert_eq!(w.notion.pages().len(), 10_000 + n as usize, "no duplicate");
    for i in [1, 7, 4_999, 5_007, 9_997, n] {
        let u = canonical_url(&w.sc.track_url(i).unwrap());
        assert_eq!(w.notion.pages_with_url(&u).len(), 1, "track {i}");
    }
    let state = w.state();
    assert_eq!(state.tracks.len(), n as usize);
    assert!(records(&state).into_iter().all(|t| t.notion.is_done()));

    // Unchanged: no Notion request at all.
    let r = w.sync("Big").await;
    assert!(r.ok());
    assert_eq!(r.notion_requests, 0);
    assert_eq!(w.notion.pages().len(), 10_000 + n as usize);
}

/// When one lookup query does hit the result cap (here lowered to 30, below a lookup batch of
/// 100, so a small database shows what 10,000 would), the lookup narrows its window and still
/// finds every existing page instead of creating duplicates.
#[tokio::test]
async fn a_capped_lookup_query_is_narrowed_until_nothing_is_missing() {
    let opts = FakeNotionOptions {
        query_result_cap: 30,
        ..FakeNotionOptions::default()
    };
    let w = world_with(100, opts).await;
    for i in 1..=100u64 {
        let track_url = canonical_url(&w.sc.track_url(i).unwrap());
        w.notion
            .seed_track(&format!("Song {i}"), "Band", &track_url);
    }
    let r = w.sync("Set").await;
    assert!(r.ok(), "{:#?}", r.failed.first());
    assert_eq!(r.adopted.len(), 100, "every existing page is found");
    assert!(r.created.is_empty(), "no duplicate created");
    assert_eq!(w.notion.pages().len(), 100);
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_playlist_name_lists_the_known_ones() {
    let w = world(1).await;
    let out = w.playlistd(&["sync", "Nope"]).await;
    let line = failure_with_fix(&w, &out, 2);
    assert!(line.contains("no playlist named \"Nope\""), "{line}");
    assert!(line.contains("\"Set\""), "{line}");
    assert!(!w.state_dir().exists(), "nothing written");
    assert_eq!(w.notion.request_count() + w.sc.total_requests() as usize, 0);
}

#[tokio::test]
async fn a_max_tracks_cut_removes_no_member() {
    let w = world(3).await;
    assert_eq!(w.playlistd(&["sync"]).await.status.code(), Some(0));
    let before = w.state();
    let out = w.playlistd(&["sync", "--max-tracks", "1"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("panicked") && !all.contains(&w.notion.token()));
    assert_eq!(w.notion.pages().len(), 3);
    let after = w.state();
    assert_eq!(
        after.playlists["Set"].members, before.playlists["Set"].members,
        "a cut listing removes no member"
    );
    assert!(after.playlists["Set"].removed.is_empty());
}

#[tokio::test]
async fn max_tracks_zero_is_refused_like_in_the_config() {
    let w = world(3).await;
    let out = w.playlistd(&["sync", "--max-tracks", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("max-tracks"), "{}", text(&out));
    assert!(!w.state_dir().exists());
}

#[tokio::test]
async fn the_same_url_under_two_names_makes_one_page_and_one_file_per_track() {
    let mut w = World::new().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "set").tracks(songs(1..=2)));
    w.watch("Morning", &url);
    w.watch("Evening", &url);
    let out = w.playlistd(&["sync"]).await;
    success(&w, &out);
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 2, "one page per track");
    for p in &pages {
        assert_eq!(p.relation("Playlists").len(), 2, "both names on the page");
    }
    assert_eq!(
        w.music_files().len(),
        2,
        "one file per track: {:?}",
        w.music_files()
    );
    let state = w.state();
    assert_eq!(state.playlists["Morning"].members.len(), 2);
    assert_eq!(state.playlists["Evening"].members.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Sets that changed under us
// ---------------------------------------------------------------------------------------------

/// A first sync of 3 tracks, then `change` to the set, then a sync through the binary: exit 3
/// with SoundCloud's answer and the fix, and nothing counted as removed.
async fn vanished(change: impl FnOnce(&World)) -> (World, String) {
    let w = world(3).await;
    assert!(w.sync("Set").await.ok());
    change(&w);
    let out = w.playlistd(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    let state = w.state();
    assert_eq!(state.playlists["Set"].members.len(), 3, "members kept");
    assert!(state.playlists["Set"].removed.is_empty(), "nothing removed");
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 3, "pages kept");
    assert!(pages.iter().all(|p| !p.in_trash));
    let last = state.playlists["Set"].last_run.clone().unwrap();
    assert!(!last.ok && last.error.is_some(), "status shows the error");
    (w, line)
}

#[tokio::test]
async fn a_deleted_set_is_a_404_with_the_fix_and_removes_nothing() {
    let (_w, line) = vanished(|w| w.sc.delete_playlist(1)).await;
    assert!(line.contains("SoundCloud has no playlist at"), "{line}");
    assert!(line.contains("deleted"), "{line}");
}

#[tokio::test]
async fn a_set_made_private_asks_for_the_secret_link() {
    let (_w, line) = vanished(|w| {
        w.sc.make_private(1).unwrap();
    })
    .await;
    assert!(line.contains("SoundCloud has no playlist at"), "{line}");
    assert!(line.contains("secret /s-"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// yt-dlp
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_extra_args_make_ytdlp_exit_2_and_the_failure_names_them() {
    let mut w = world(2).await;
    w.downloads = true;
    w.engine = "yt-dlp".into(); // what this test is about
    write_edited(&w, |t| {
        t.replace(
            "[download]\n",
            "[download]\nextra_args = [\"--no-such-option\"]\n",
        )
    });
    let out = w.playlistd_raw(&["sync"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked") && !all.contains(&w.notion.token()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("failed (Download)"))
        .collect();
    assert_eq!(failed.len(), 2, "{all}");
    for l in failed {
        assert!(l.contains("yt-dlp exit 2"), "{l}");
        assert!(l.contains("download.extra_args"), "{l}");
        assert!(l.contains("--no-such-option"), "yt-dlp's own words: {l}");
    }
    assert!(
        w.music_files().is_empty(),
        "no partial file: {:?}",
        w.music_files()
    );
    assert_eq!(w.notion.pages().len(), 2, "Notion still gets the tracks");
    let state = w.state();
    assert!(records(&state).into_iter().all(|t| {
        t.download
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("extra_args"))
    }));
}
