//! `playlistd run` as a real process against the fakes, with 6-field (seconds) schedules so
//! slots come quickly. Waits are on log lines (events), never fixed sleeps.

use crate::support::walk;
use crate::support::{World, records, text};
use crate::support::{YEARLY, band_set};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
use std::time::Duration;

async fn world() -> World {
    let mut w = World::new().await;
    w.downloads = false;
    w.extra = format!(
        "\n[log]\ndir = {:?}\n",
        w.home().join("logs").display().to_string()
    );
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_two_schedules_each_sync_on_their_slots_and_a_slow_one_never_overlaps() {
    let mut w = world().await;
    w.downloads = true;
    w.extra.push_str("\n[daemon]\nmax_concurrent_syncs = 2\n");
    w.extra = w.extra.replace("[log]", "[log]\nlevel = \"info\"");
    // "Slow" has a track whose audio never finishes: each sync lasts until the 3 s timeout.
    let slow = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "slow").tracks([FakeTrack::new(1, "Stuck", "Band").hang()]),
    );
    let fast = w.sc.add_playlist(band_set(2, "fast", 10..=11));
    w.watch_with("Slow", &slow, "schedule = \"*/1 * * * * *\"");
    w.watch_with("Fast", &fast, "schedule = \"*/2 * * * * *\"");
    w.write_config().unwrap();
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("timeout_secs = 60", "timeout_secs = 3");
    std::fs::write(w.config_path(), cfg).unwrap();
    let d = w.start_daemon_raw();

    d.wait_for(
        "\"Slow\": slot skipped, the previous sync is still running",
        10,
    )
    .await;
    d.wait_for_n("synced \"Fast\"", 3, 15).await;
    d.wait_for_n("synced \"Slow\"", 1, 15).await;
    let (status, _, log) = d.stop().await;
    assert!(status.success(), "{}", log.join("\n"));

    // "Slow" never started while it was running: starts and finishes alternate.
    let mut running = false;
    for l in log.iter().filter(|l| l.contains("\"Slow\"")) {
        if l.contains("sync starting") {
            assert!(!running, "Slow started twice at once:\n{}", log.join("\n"));
            running = true;
        } else if l.contains("synced \"Slow\"") {
            running = false;
        }
    }
    let fast_runs = log
        .iter()
        .filter(|l| l.contains("\"Fast\": sync starting"))
        .count();
    assert!(
        fast_runs >= 3,
        "Fast ran on its own slots while Slow was stuck"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_saves_add_break_and_remove_playlists_live() {
    let mut w = world().await;
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    let b = w.sc.add_playlist(band_set(2, "b", 3..=4));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    // Never synced: the catch-up runs it once at start.
    d.wait_for("synced \"A\"", 10).await;

    // An editor's atomic save (write a temp file, rename it over) that adds "B".
    w.watch_with("B", &b, YEARLY);
    let tmp = w.home().join(".playlists.toml.swp");
    std::fs::write(&tmp, w.config_text()).unwrap();
    std::fs::rename(&tmp, w.config_path()).unwrap();
    let line = d.wait_for(": reloaded ", 10).await;
    assert!(line.contains("added [\"B\"]"), "{line}");
    d.wait_for("synced \"B\"", 10).await;
    assert_eq!(w.notion.pages().len(), 4);

    // A save with a syntax error: logged with its place, the old config keeps running.
    let broken = w
        .config_text()
        .replace("[[playlist]]\nname = \"B\"", "[[playlist]\nname = \"B\"");
    let bad_line = broken.lines().position(|l| l == "[[playlist]").unwrap() + 1;
    std::fs::write(&tmp, &broken).unwrap();
    std::fs::rename(&tmp, w.config_path()).unwrap();
    let line = d.wait_for("config not reloaded", 10).await;
    assert!(
        line.contains(&format!("playlists.toml:{bad_line}:")),
        "{line}"
    );
    // The CLI cannot read the broken file, so ask the daemon over its socket directly.
    let req = playlistd::control::Request::Sync {
        playlists: vec!["B".into()],
        max_tracks: None,
        no_download: true,
    };
    let mut replies = vec![];
    let code = playlistd::control::request(&w.state_dir(), &req, |r| replies.push(r.clone())).await;
    assert_eq!(
        code.unwrap().unwrap(),
        0,
        "B still runs after the bad save: {replies:?}"
    );

    // A save that removes "B": it stops; asking for it is now an error.
    w.playlists.retain(|p| p.0 != "B");
    std::fs::write(&tmp, w.config_text()).unwrap();
    std::fs::rename(&tmp, w.config_path()).unwrap();
    let line = d.wait_for_n(": reloaded ", 2, 10).await;
    assert!(line.contains("removed [\"B\"]"), "{line}");
    let out = w.playlistd_raw(&["sync", "B"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let (status, elapsed, _) = d.stop().await;
    assert!(status.success());
    assert!(elapsed < Duration::from_secs(10));
    assert!(
        w.state().playlists.contains_key("B"),
        "a removed playlist's state is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_is_refused_and_sync_goes_through_the_running_one() {
    let mut w = world().await;
    let a = w.sc.add_playlist(band_set(1, "a", 1..=3));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    d.wait_for("synced \"A\"", 10).await;

    let out = w.playlistd(&["run"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let pid = d.child.id().unwrap().to_string();
    assert!(
        text(&out).contains(&pid),
        "says which process holds it: {}",
        text(&out)
    );

    w.sc.add_track(1, FakeTrack::new(9, "Fresh", "Band"));
    let out = w.playlistd_raw(&["sync", "A"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("synced \"A\": 4 listed, 1 new"),
        "{}",
        text(&out)
    );
    d.wait_for("\"A\": sync starting (requested)", 5).await;

    let out = w.playlistd_raw(&["status", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["in_notion"], 4);
    assert_eq!(rows[0]["last_run"]["created"], 1);
    let (status, _, _) = d.stop().await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_downloads_exits_cleanly_with_no_partial_files() {
    let mut w = world().await;
    w.downloads = true;
    w.engine = "yt-dlp".into(); // what this test is about
    // 200 KB at 20 KB/s: each download takes ~10 s, far longer than the shutdown.
    let a = w.sc.add_playlist(FakePlaylist::new(1, "u", "a").tracks(
        (1..=3).map(|i| FakeTrack::new(i, &format!("Long {i}"), "Band").audio_size(200_000)),
    ));
    w.sc.set_bandwidth(Some(20_000));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    d.wait_for("sync starting", 10).await;
    // Wait until yt-dlp is writing a partial file.
    let staging = w
        .music_dir()
        .join("A")
        .join(playlistd::download::STAGING_DIR);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !walk(&staging).iter().any(|p| p.ends_with(".part")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no download started:\n{}",
            d.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, elapsed, log) = d.stop().await;
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let left: Vec<String> = walk(&w.music_dir())
        .into_iter()
        .filter(|p| p.ends_with(".part") || p.contains(".playlistd-partial/"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
    let state = w.state();
    assert_eq!(
        state.tracks.len(),
        3,
        "the state file is whole and knows the tracks"
    );
    // Pages wait briefly for their downloads, so some may not exist yet; those that do are
    // all in the state, and no Notion step failed.
    let in_state = records(&state)
        .into_iter()
        .filter(|t| t.notion.is_done())
        .count();
    assert_eq!(
        w.notion.pages().len(),
        in_state,
        "every page Notion has is recorded"
    );
    assert!(
        records(&state)
            .into_iter()
            .all(|t| t.notion.last_error.is_none())
    );
    assert!(
        records(&state).into_iter().all(|t| !t.download.is_done()),
        "no download claims to be done"
    );
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", &w.sc.web_base()])
        .output()
        .unwrap();
    assert!(leftover.stdout.is_empty(), "yt-dlp children left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_missed_slot_runs_the_catch_up_once() {
    let mut w = world().await;
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    w.watch_with("A", &a, "schedule = \"0 0 3 * * *\"");
    let d = w.start_daemon();
    d.wait_for("synced \"A\"", 10).await;
    let (status, _, _) = d.stop().await;
    assert!(status.success());

    // Pretend the last success was two days ago: the 03:00 slot since then was missed.
    let (mut store, _) = playlistd::state::StateStore::load(&w.state_dir()).unwrap();
    let two_days_ago = chrono::Utc::now() - chrono::Duration::days(2);
    store.playlist_mut("A").last_success = Some(two_days_ago);
    store.save_full().unwrap();
    drop(store);

    let d = w.start_daemon();
    d.wait_for("\"A\": sync starting (catch-up after downtime)", 10)
        .await;
    d.wait_for("synced \"A\"", 10).await;
    let (_, _, log) = d.stop().await;
    assert_eq!(
        log.iter().filter(|l| l.contains("sync starting")).count(),
        1,
        "{}",
        log.join("\n")
    );

    // Up to date now: a restart runs nothing.
    let d = w.start_daemon();
    d.wait_for("running:", 10).await;
    let out = w.playlistd_raw(&["status", "--json"]).await;
    assert!(out.status.success());
    let (_, _, log) = d.stop().await;
    assert_eq!(
        log.iter().filter(|l| l.contains("sync starting")).count(),
        0,
        "{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_appear_and_old_ones_beyond_the_limit_are_removed() {
    let mut w = world().await;
    w.extra.push_str("keep = 2\n");
    let logs = w.home().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for day in 1..=4 {
        std::fs::write(logs.join(format!("playlistd.2020-01-0{day}.log")), "old\n").unwrap();
    }
    let a = w.sc.add_playlist(band_set(1, "a", 1..=1));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    d.wait_for("synced \"A\"", 10).await;
    let (status, _, _) = d.stop().await;
    assert!(status.success());
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() <= 2, "{names:?}");
    assert!(
        !names.contains(&"playlistd.2020-01-01.log".to_string()),
        "{names:?}"
    );
    let today: String = names
        .iter()
        .filter(|n| !n.contains("2020"))
        .map(|n| std::fs::read_to_string(logs.join(n)).unwrap())
        .collect();
    assert!(
        today.contains("synced \"A\""),
        "the summary line is in the file: {today}"
    );
}

#[tokio::test]
async fn add_and_remove_edit_the_file_keeping_its_comments() {
    let w = world().await;
    w.write_config().unwrap();
    let commented = format!(
        "# My playlists, curated by hand.\n{}\n# end of file\n",
        w.config_text()
    );
    std::fs::write(w.config_path(), &commented).unwrap();
    let url = w.sc.add_playlist(band_set(1, "late-night", 1..=1));
    let out = w
        .playlistd_raw(&["add", &url, "--schedule", "*/15 * * * *"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = std::fs::read_to_string(w.config_path()).unwrap();
    assert!(
        after.contains("# My playlists, curated by hand.") && after.contains("# end of file"),
        "{after}"
    );
    assert!(after.contains("name = \"late-night\""), "{after}");
    assert!(after.contains("schedule = \"*/15 * * * *\""), "{after}");

    let out = w.playlistd_raw(&["add", &url]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a duplicate is refused: {}",
        text(&out)
    );
    let out = w
        .playlistd_raw(&["add", &url, "--name", "x", "--schedule", "every day"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid result is refused: {}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(w.config_path()).unwrap(),
        after,
        "nothing half-written"
    );

    let out = w.playlistd_raw(&["remove", "late-night"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let removed = std::fs::read_to_string(w.config_path()).unwrap();
    assert!(!removed.contains("late-night"));
    assert!(
        removed.contains("# My playlists, curated by hand.") && removed.contains("# end of file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_the_after_sync_hook_gets_the_outcome() {
    let mut w = world().await;
    let hook = w.home().join("hook.sh");
    let out_file = w.home().join("hook.out");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$PLAYLISTD_PLAYLIST created=$PLAYLISTD_CREATED failed=$PLAYLISTD_FAILED report=$PLAYLISTD_REPORT\" >> {}\n",
            out_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w.extra.push_str(&format!(
        "\n[daemon]\nafter_sync = [{:?}]\n",
        hook.display().to_string()
    ));
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    d.wait_for("after_sync for \"A\" finished", 10).await;
    let line = std::fs::read_to_string(&out_file).unwrap();
    assert!(line.starts_with("A created=2 failed=0 report="), "{line}");
    let report_path = line.trim().rsplit("report=").next().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_path).unwrap()).unwrap();
    assert_eq!(
        report["playlists"][0]["created"].as_array().unwrap().len(),
        2
    );

    d.signal(libc::SIGHUP);
    d.wait_for("SIGHUP: reloading", 5).await;
    d.wait_for(": reloaded ", 5).await;
    let (status, _, _) = d.stop().await;
    assert!(status.success());
}

#[tokio::test]
async fn retry_clears_the_backoff_of_failed_tracks() {
    let mut w = world().await;
    w.downloads = true;
    w.engine = "yt-dlp".into(); // what this test is about
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    w.watch("A", &a);
    // The audio is gone (404): the real yt-dlp fails, and the tracks back off.
    w.sc.inject(
        playlistd_fakes::soundcloud::Endpoint::Audio,
        playlistd_fakes::soundcloud::Fault::Status(404),
        100,
    );
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let state = w.state();
    assert!(
        records(&state)
            .into_iter()
            .all(|t| t.download.next_retry.is_some() && t.download.attempts == 1),
        "backing off"
    );
    // Still backing off: the next sync does not try again.
    let out = w.playlistd(&["sync"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 waiting to retry"),
        "{}",
        text(&out)
    );

    let out = w.playlistd(&["retry", "A"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 failed step(s)"),
        "{}",
        text(&out)
    );
    assert!(
        records(&w.state())
            .into_iter()
            .all(|t| t.download.next_retry.is_none())
    );
    let out = w.playlistd(&["status"]).await;
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("2 failed") && s.contains("last error:") && s.contains("404"),
        "{s}"
    );

    // The audio is back: the retried downloads succeed.
    w.sc.clear_faults();
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.music_files().len(), 2);
}

#[tokio::test]
async fn a_missing_ytdlp_is_not_charged_to_the_tracks() {
    let mut w = world().await;
    w.downloads = true;
    w.engine = "yt-dlp".into(); // what this test is about
    w.ytdlp = w.home().join("no-such-yt-dlp");
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    w.watch("A", &a);
    for _ in 0..6 {
        let out = w.playlistd(&["sync"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
    let state = w.state();
    assert!(
        records(&state).into_iter().all(|t| t.download.attempts == 0
            && t.download.status == playlistd::state::StepStatus::Failed),
        "never parked for the setup's fault: {:?}",
        state.tracks
    );
    w.ytdlp = crate::support::ytdlp();
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "installing yt-dlp is enough: {}",
        text(&out)
    );
}

#[tokio::test]
async fn service_install_writes_the_unit_for_this_binary() {
    let w = world().await;
    let out = w.playlistd(&["service", "install"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let unit =
        std::fs::read_to_string(w.home().join(".config/systemd/user/playlistd.service")).unwrap();
    assert!(unit.contains(env!("CARGO_BIN_EXE_playlistd")), "{unit}");
    assert!(unit.contains("ExecReload="), "{unit}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("systemctl --user"),
        "{}",
        text(&out)
    );
    let out = w.playlistd(&["service", "uninstall"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !w.home()
            .join(".config/systemd/user/playlistd.service")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_download_settings_rebuild_the_clients_without_dropping_a_running_sync() {
    let mut w = world().await;
    w.downloads = true;
    // A download that takes ~2 s keeps the first sync running while the config changes.
    let a = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "a")
            .tracks([FakeTrack::new(1, "Long", "Band").audio_size(100_000)]),
    );
    w.sc.set_bandwidth(Some(50_000));
    w.watch_with("A", &a, YEARLY);
    let d = w.start_daemon();
    d.wait_for("\"A\": sync starting", 10).await;

    w.download_concurrency = 2;
    let tmp = w.home().join(".playlists.toml.new");
    std::fs::write(&tmp, w.config_text()).unwrap();
    std::fs::rename(&tmp, w.config_path()).unwrap();
    let line = d.wait_for(": reloaded ", 10).await;
    assert!(line.contains("clients rebuilt"), "{line}");
    // The sync that was running when the clients were rebuilt still finishes its download.
    let line = d.wait_for("synced \"A\"", 15).await;
    assert!(
        line.contains("1 downloaded") && line.contains("0 failed"),
        "{line}"
    );
    assert_eq!(w.music_files().len(), 1);
    let (status, _, log) = d.stop().await;
    assert!(status.success(), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_while_the_daemon_runs_goes_through_it() {
    let mut w = world().await;
    w.downloads = true;
    w.engine = "yt-dlp".into(); // what this test is about
    let a = w.sc.add_playlist(band_set(1, "a", 1..=2));
    w.watch_with("A", &a, YEARLY);
    // The audio is gone at first: both downloads fail and back off.
    w.sc.inject(
        playlistd_fakes::soundcloud::Endpoint::Audio,
        playlistd_fakes::soundcloud::Fault::Status(404),
        100,
    );
    let d = w.start_daemon();
    d.wait_for("synced \"A\"", 15).await;

    let out = w.playlistd_raw(&["retry", "A"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the daemon holds the lock, yet retry works: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 failed step(s) will be retried"),
        "{}",
        text(&out)
    );

    // The audio is back; the next sync (asked of the daemon) downloads both.
    w.sc.clear_faults();
    let out = w.playlistd_raw(&["sync", "A"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.music_files().len(), 2);
    let (status, _, _) = d.stop().await;
    assert!(status.success());
}
