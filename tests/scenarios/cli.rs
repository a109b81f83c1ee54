//! The binary as a user meets it: dry runs, exit codes, one-line errors with their fix, and
//! the token never printed.

use crate::support::{World, failure_with_fix, records, text};
use playlistd_fakes::notion::Endpoint;
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};

async fn world_with_set(n: u64) -> World {
    let mut w = World::new().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set")
            .title("The Set")
            .tracks((1..=n).map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band"))),
    );
    w.watch("Set", &url);
    w
}

#[tokio::test]
async fn dry_run_leaves_notion_the_disk_and_the_state_untouched() {
    let w = world_with_set(4).await;
    let out = w.playlistd(&["sync", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("would create").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("would download").count(), 4, "{stdout}");
    assert!(stdout.contains("would sync \"Set\""), "{stdout}");
    let writes = w
        .notion
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.endpoint != Endpoint::Query)
        .count();
    assert_eq!(writes, 0, "{:?}", w.notion.requests());
    assert!(w.notion.all_pages().is_empty());
    assert!(!w.music_dir().exists(), "no file, no folder");
    assert!(
        !w.state_dir().join(playlistd::state::DB_FILE).exists(),
        "no state file"
    );
    assert!(
        !w.home().join("cache").exists(),
        "not even the client-id cache"
    );
}

#[tokio::test]
async fn sync_writes_a_results_file_and_status_reads_the_state() {
    let w = world_with_set(2).await;
    let results = w.home().join("report.json");
    let out = w
        .playlistd(&[
            "sync",
            "Set",
            "--no-download",
            "--results-file",
            results.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["playlists"][0]["created"].as_array().unwrap().len(),
        2
    );
    assert!(w.music_files().is_empty(), "--no-download");

    let out = w.playlistd(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "Set");
    assert_eq!(rows[0]["in_notion"], 2);
    assert_eq!(rows[0]["downloaded"], 0);
    assert_eq!(rows[0]["last_run"]["created"], 2);
}

#[tokio::test]
async fn bad_config_is_one_located_line_and_exit_2() {
    let w = world_with_set(1).await;
    w.write_config().unwrap();
    let text_with_typo = w.config_text().replace("concurrency = 4", "concurency = 4");
    std::fs::write(w.config_path(), &text_with_typo).unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 2);
    let line_no = text_with_typo
        .lines()
        .position(|l| l.starts_with("concurency"))
        .unwrap()
        + 1;
    let expected = format!("playlists.toml:{line_no}:1: unknown field `concurency`");
    assert!(line.contains(&expected), "{line}");
    assert!(!w.state_dir().exists(), "nothing written");
}

#[tokio::test]
async fn missing_token_is_one_line_and_exit_2() {
    let w = world_with_set(1).await;
    w.write_config().unwrap();
    std::fs::write(
        w.config_path(),
        w.config_text().replace(
            "token_file =",
            "token_env = \"PLAYLISTD_NO_SUCH_VAR\"\n# token_file =",
        ),
    )
    .unwrap();
    let out = w.playlistd_raw(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 2);
    assert!(line.contains("PLAYLISTD_NO_SUCH_VAR"), "{line}");
    assert_eq!(w.notion.request_count(), 0);
}

#[tokio::test]
async fn unshared_database_stops_with_the_sharing_fix_and_exit_3() {
    let w = world_with_set(2).await;
    w.notion.set_shared(false);
    let out = w.playlistd(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.to_lowercase().contains("share"), "{line}");
    assert!(w.notion.all_pages().is_empty());
    assert!(
        w.music_files().is_empty(),
        "the run stopped: no downloads either"
    );
}

#[tokio::test]
async fn missing_ytdlp_fails_the_tracks_with_the_fix_and_exit_1() {
    let mut w = world_with_set(2).await;
    w.ytdlp = w.home().join("no-such-yt-dlp");
    w.engine = "yt-dlp".into(); // what this test is about
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains(&w.notion.token()));
    assert!(all.contains("install yt-dlp"), "{all}");
    assert_eq!(w.notion.pages().len(), 2, "Notion still gets the tracks");
    let state = w.state();
    assert!(records(&state).into_iter().all(|t| {
        t.download
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("yt-dlp")
    }));

    let out = w.playlistd(&["check"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL  yt-dlp"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn check_passes_and_shows_the_property_mapping() {
    let w = world_with_set(3).await;
    let out = w.playlistd(&["check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(&w.notion.token()));
    for needle in [
        "ok    Notion token",
        "ok    Notion database",
        "SoundCloud URL",
        "ok    yt-dlp",
        "3 tracks",
        "all checks passed",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn an_unknown_playlist_name_is_refused() {
    let w = world_with_set(1).await;
    let out = w.playlistd(&["sync", "Nope"]).await;
    let line = failure_with_fix(&w, &out, 2);
    assert!(
        line.contains("\"Nope\"") && line.contains("\"Set\""),
        "{line}"
    );
}

#[tokio::test]
async fn a_playlist_url_not_in_the_config_is_synced_once() {
    let w = world_with_set(1).await;
    let other = w.sc.add_playlist(
        FakePlaylist::new(2, "someone", "one-off")
            .title("One Off")
            .tracks((10..=12).map(|i| FakeTrack::new(i, &format!("Extra {i}"), "Guest"))),
    );
    w.write_config().unwrap();
    let before = std::fs::read_to_string(w.config_path()).unwrap();
    let out = w.playlistd_raw(&["sync", &other, "--no-download"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("\"one-off\" is not in") && all.contains("playlistd add"),
        "{all}"
    );
    assert!(all.contains("synced \"one-off\": 3 listed, 3 new"), "{all}");
    assert_eq!(w.notion.pages().len(), 3);
    assert_eq!(
        std::fs::read_to_string(w.config_path()).unwrap(),
        before,
        "the config is not edited"
    );
    assert!(!all.contains(&w.notion.token()));
}

/// `playlistd add` with an `on.soundcloud.com` link (what the app's share button copies)
/// resolves it with one request and writes the playlist's canonical URL, not the redirect or
/// its tracking query; a dead short link changes nothing and says what to do.
#[tokio::test]
async fn add_resolves_a_short_link_once_and_writes_the_canonical_url() {
    use playlistd_fakes::soundcloud::Endpoint as Sc;
    let w = World::new().await;
    w.sc.show_public_hosts(true);
    let p = FakePlaylist::new(7, "okra", "late-night")
        .tracks((1..=2).map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band")));
    w.sc.add_playlist(p);
    let short = w.sc.add_short_link(7).unwrap();
    assert!(short.starts_with("https://on.soundcloud.com/"), "{short}");
    w.write_config().unwrap();

    let out = w.playlistd_raw(&["add", &short]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = std::fs::read_to_string(w.config_path()).unwrap();
    assert!(
        written.contains(
            "name = \"late-night\"\nurl = \"https://soundcloud.com/okra/sets/late-night\"\n"
        ),
        "{written}"
    );
    assert_eq!(w.sc.requests(Sc::ShortLink), 1, "one request, no more");

    let dead = "https://on.soundcloud.com/NoSuchCode";
    let out = w.playlistd_raw(&["add", dead, "--name", "Dead"]).await;
    let line = failure_with_fix(&w, &out, 2);
    assert!(
        line.contains("does not lead to a SoundCloud page"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(w.config_path()).unwrap(),
        written,
        "nothing written"
    );
}

/// The README's first command: the demo runs the whole flow against the fakes and says what
/// happened, with nothing failed (a share-link page adopted, a DRM track unavailable, a second
/// run with no Notion request, the Opus-only track fetched by yt-dlp).
#[tokio::test]
async fn slow_the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_playlistd"))
        .args(["demo", "--dir", dir.path().to_str().unwrap()])
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("adopted  Mara Vell - After Hours"), "{all}");
    assert!(
        all.contains("Major Label Single (114): DRM-protected"),
        "{all}"
    );
    assert!(all.contains("0 failed"), "{all}");
    assert!(!all.contains(" 1 failed"), "{all}");
    assert!(
        all.contains("downloaded (native) Lumen - Neon Boulevard"),
        "{all}"
    );
    assert!(
        all.contains("downloaded (yt-dlp) Dune Theory - Opus Only"),
        "{all}"
    );
}

/// On a fresh machine without Python or yt-dlp, the demo still downloads every clear track,
/// natively, says so per file, and exits 0.
#[tokio::test]
async fn the_demo_downloads_natively_without_ytdlp() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let without: Vec<_> = std::env::split_paths(&path)
        .filter(|d| !d.join("yt-dlp").exists())
        .collect();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_playlistd"))
        .args(["demo", "--dir", dir.path().to_str().unwrap()])
        .env("PATH", std::env::join_paths(without).unwrap())
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("yt-dlp not on PATH"), "{all}");
    assert!(
        all.contains("downloaded (native) Lumen - Neon Boulevard"),
        "{all}"
    );
    assert!(!all.contains("downloaded (yt-dlp)"), "{all}");
    // 13 tracks, each an .m4a and its .aiff copy, measured (the fake's groove) on the way.
    assert!(all.contains("== 26 files on disk"), "{all}");
    assert!(all.contains("[120.0 BPM, A Minor]"), "{all}");
    assert!(
        all.contains("120.0 BPM A Minor"),
        "the pages hold them: {all}"
    );
    // One digest per sync that brought news, to each target: the first and the third.
    assert!(
        all.contains("  webhook  12 new tracks in 2 playlists (sync_complete)"),
        "{all}"
    );
    assert!(
        all.contains("  ntfy     playlistd: 1 new track in Night Drive"),
        "{all}"
    );
    assert_eq!(all.matches("  webhook  ").count(), 2, "{all}");
}
