//! SoundCloud as it behaves since 2026 (reference/soundcloud-api.md §9): DRM label tracks whose
//! clear streams answer 404, bot protection that answers non-browsers and suspicious clients
//! with an HTML 403, 429 storms without `Retry-After`, 100 px artwork URLs, `streamable: false`
//! as a mere hint, and a client id shared with yt-dlp's cache. The exit code and the messages
//! are checked through the real binary; the rest through the engine with the tests' millisecond
//! retry policy.

use crate::support::{World, failure_with_fix, records, text};
use playlistd::model::{TrackKey, UnavailableReason, canonical_url};
use playlistd::source::SourceError;
use playlistd::source::soundcloud::DEFAULT_USER_AGENT;
use playlistd::state::DrmVerdict;
use playlistd::sync::SyncError;
use playlistd_fakes::soundcloud::{Endpoint as S, FakePlaylist, FakeTrack, Fault as SF};
use std::time::Duration;

fn set(n: u64, full: usize) -> FakePlaylist {
    FakePlaylist::new(1, "u", "set")
        .full_prefix(full)
        .tracks((1..=n).map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band")))
}

/// Uploads and label tracks, full objects and stubs: 1 and 3 play, 2 and 4 are DRM label
/// tracks (2 a full object, 4 a stub), 5 lists only encrypted streams.
fn label_mix() -> FakePlaylist {
    FakePlaylist::new(1, "label", "mix")
        .full_prefix(2)
        .track(FakeTrack::new(1, "Upload One", "Band"))
        .track(FakeTrack::new(2, "Label Full", "Label").drm())
        .track(FakeTrack::new(3, "Upload Two", "Band"))
        .track(FakeTrack::new(4, "Label Stub", "Label").drm())
        .track(FakeTrack::new(5, "Locked", "Label").drm_only())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drm_label_tracks_are_unavailable_asked_once_and_the_clear_ones_download() {
    let mut w = World::new().await;
    let url = w.sc.add_playlist(label_mix());
    w.watch("Mix", &url);

    let out = w.playlistd(&["sync"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "DRM is no failure:\n{all}");
    assert!(
        all.contains("unavailable Label Full (2): DRM-protected\n"),
        "{all}"
    );
    assert!(
        all.contains("unavailable Label Stub (4): DRM-protected\n"),
        "{all}"
    );
    assert!(
        all.contains("unavailable Locked (5): DRM-protected streams only"),
        "{all}"
    );
    assert!(
        all.contains("2 downloaded, 0 failed, 3 unavailable"),
        "{all}"
    );
    // The clear tracks have their pages and files; the DRM ones neither.
    assert_eq!(w.notion.pages().len(), 2);
    for id in [1, 3] {
        let page = canonical_url(&w.sc.track_url(id).unwrap());
        assert_eq!(w.notion.pages_with_url(&page).len(), 1);
    }
    let files = w.music_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.contains("Upload")), "{files:?}");
    // One request each told the DRM tracks apart; nothing asked the encrypted-only one.
    assert_eq!(
        [2, 4, 5].map(|id| w.sc.media_requests(id)),
        [1, 1, 0],
        "one stream check per DRM label track, no audio"
    );
    let state = w.state();
    let verdict = |id: u64| {
        let r = state
            .tracks
            .get(&TrackKey::soundcloud(id))
            .unwrap()
            .unwrap();
        (r.drm, r.unavailable)
    };
    assert_eq!(
        verdict(2),
        (
            Some(DrmVerdict::Protected),
            Some(UnavailableReason::DrmProtected)
        )
    );
    assert_eq!(verdict(1), (None, None), "an upload needs no check");

    let status = text(&w.playlistd(&["status"]).await);
    assert!(
        status.contains("3 unavailable") && status.contains("2 DRM-protected"),
        "{status}"
    );
    assert!(status.contains("1 DRM-protected streams only"), "{status}");

    // The next run asks nothing again, downloads nothing again, and still says why.
    let audio_before = [1, 3].map(|id| w.sc.media_requests(id));
    let out = w.playlistd(&["sync"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("unavailable Label Stub (4): DRM-protected\n"),
        "{all}"
    );
    assert_eq!([2, 4, 5].map(|id| w.sc.media_requests(id)), [1, 1, 0]);
    assert_eq!([1, 3].map(|id| w.sc.media_requests(id)), audio_before);
    assert_eq!(w.notion.pages().len(), 2);
}

#[tokio::test]
async fn a_label_track_whose_clear_stream_plays_is_mirrored_and_never_asked_again() {
    let mut w = World::new().await;
    w.downloads = false;
    let open = || FakeTrack::new(1, "Open Label", "Label").encrypted_too();
    let a = w.sc.add_playlist(
        FakePlaylist::new(1, "label", "a")
            .track(open())
            .track(FakeTrack::new(2, "Upload", "Band")),
    );
    let b =
        w.sc.add_playlist(FakePlaylist::new(2, "label", "b").track(open()));
    w.watch("A", &a);
    w.watch("B", &b);
    let r = w.sync("A").await;
    assert!(r.ok() && r.unavailable.is_empty(), "{:?}", r.unavailable);
    assert_eq!(r.created.len(), 2);
    assert_eq!(w.sc.media_requests(1), 1, "asked once");
    let state = w.state();
    let rec = state.tracks.get(&TrackKey::soundcloud(1)).unwrap().unwrap();
    assert_eq!(rec.drm, Some(DrmVerdict::Plays));
    // In another playlist it has work again (its tag), but its verdict is known.
    let r = w.sync("B").await;
    assert_eq!(r.linked.len(), 1);
    assert_eq!(w.sc.media_requests(1), 1, "not asked again");
}

#[tokio::test]
async fn a_bot_protection_403_is_blocked_in_one_line_with_the_fix_and_no_rescrape() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(60, 5));
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let scraped = w.sc.requests(S::WebRoot) + w.sc.requests(S::Asset);
    assert_eq!(scraped, 2, "page and the script with the id");

    w.sc.inject(S::Resolve, SF::BlockedHtml, 1);
    let out = w.playlistd(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("bot protection"), "{line}");
    assert!(line.contains("soundcloud.user_agent"), "{line}");
    assert_eq!(line.matches("(fix: ").count(), 1, "{line}");
    assert!(
        !text(&out).contains(&w.sc.client_id()),
        "the client id stays secret"
    );
    assert_eq!(
        w.sc.requests(S::WebRoot) + w.sc.requests(S::Asset),
        scraped,
        "no re-scrape"
    );

    // An XML one on a stub batch stops the sync the same way: nothing created or removed.
    w.sc.remove_track_from_playlist(1, 60);
    w.sc.inject(S::Tracks, SF::BlockedXml, 1);
    let (r, result) = w.try_sync("Set").await;
    assert!(
        matches!(&result, Err(SyncError::Source(SourceError::Blocked { .. }))),
        "{result:?}"
    );
    assert!(r.removed.is_empty() && r.created.is_empty());
    assert_eq!(w.sc.requests(S::WebRoot) + w.sc.requests(S::Asset), scraped);
    assert_eq!(w.state().playlists["Set"].members.len(), 60);

    // The web page itself behind bot protection, with nothing cached: blocked too, and the
    // scripts are not fetched.
    std::fs::remove_dir_all(w.cache_dir()).unwrap();
    w.sc.reset_counters();
    w.sc.inject(S::WebRoot, SF::BlockedHtml, 1);
    let out = w.playlistd(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(line.contains("bot protection"), "{line}");
    assert_eq!(w.sc.requests(S::Asset), 0);
}

#[tokio::test]
async fn requests_carry_a_browsers_user_agent_and_accept_language() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(60, 5));
    w.watch("Set", &url);
    assert!(w.sync("Set").await.ok());
    let log = w.sc.request_log();
    assert_eq!(log.len(), 5, "page, script, resolve, two batches: {log:?}");
    for r in &log {
        assert_eq!(r.user_agent.as_deref(), Some(DEFAULT_USER_AGENT), "{r:?}");
        assert!(
            r.accept_language
                .as_deref()
                .is_some_and(|l| l.starts_with("en"))
        );
    }

    // A configured user agent is the one sent, by the binary too.
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
    w.soundcloud_extra = format!("user_agent = {firefox:?}");
    w.sc.reset_counters();
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = w.sc.request_log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.user_agent.as_deref() == Some(firefox)),
        "{log:?}"
    );

    // One that bot protection does not take for a browser: blocked, and the line says what
    // to set.
    w.soundcloud_extra = "user_agent = \"playlistd/0.1\"".into();
    let out = w.playlistd(&["sync"]).await;
    let line = failure_with_fix(&w, &out, 3);
    assert!(
        line.contains("bot protection") && line.contains("soundcloud.user_agent"),
        "{line}"
    );
}

#[tokio::test]
async fn covers_are_500_px() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "art")
            .full_prefix(1)
            .track(FakeTrack::new(1, "Cover", "A"))
            .track(FakeTrack::new(2, "Avatar Only", "A").artwork(None)),
    );
    w.watch("Art", &url);
    assert!(w.sync("Art").await.ok());
    let cover = |id: u64| {
        let page = canonical_url(&w.sc.track_url(id).unwrap());
        w.notion.pages_with_url(&page)[0].cover.clone().unwrap()
    };
    // The fake serves its images itself, named as SoundCloud's are.
    assert_eq!(
        cover(1),
        format!(
            "{}/images/artworks-000000000001-t500x500.jpg",
            w.sc.web_base()
        )
    );
    assert_eq!(
        cover(2),
        format!(
            "{}/images/avatars-000000000002-t500x500.jpg",
            w.sc.web_base()
        )
    );
}

#[tokio::test]
async fn a_429_storm_without_retry_after_is_waited_out_and_past_the_budget_nothing_is_removed() {
    let mut w = World::new().await;
    w.downloads = false;
    // 5 full objects and 55 stubs: two batches.
    let url = w.sc.add_playlist(set(60, 5));
    w.watch("Set", &url);
    assert!(w.sync("Set").await.ok());

    // More 429s than the attempts any other error gets: waited out, the batch kept.
    w.sc.remove_track_from_playlist(1, 60);
    w.sc.reset_counters();
    let storm = SF::TooManyRequests {
        retry_after_secs: None,
    };
    w.sc.inject(S::Tracks, storm.clone(), 8);
    let r = w.sync("Set").await;
    assert!(r.complete, "{:?}", r.incomplete_reason);
    assert_eq!(r.listed, 59);
    assert_eq!(w.sc.requests(S::Tracks), 8 + 2);
    assert_eq!(r.removed.len(), 1, "a complete listing may remove track 60");

    // Past the budget (300 ms in the tests' policy, 10 minutes in production) the batch is
    // given up: the listing is incomplete and removes nothing.
    w.sc.remove_track_from_playlist(1, 59);
    w.sc.inject(S::Tracks, SF::Delay(Duration::ZERO), 1);
    w.sc.inject(S::Tracks, storm.clone(), 100_000);
    let r = w.sync("Set").await;
    assert!(!r.complete);
    let why = r.incomplete_reason.as_deref().unwrap();
    assert!(why.contains("429") && why.contains("batch 2 of 2"), "{why}");
    assert!(r.removed.is_empty(), "{:?}", r.removed);
    let members = &w.state().playlists["Set"].members;
    assert!(
        members.contains(&TrackKey::soundcloud(59)),
        "kept as a member"
    );
    w.sc.clear_faults();

    // On /resolve there is nothing to list: the sync fails, in one line with the fix.
    w.sc.inject(S::Resolve, storm, 100_000);
    let (_, result) = w.try_sync("Set").await;
    let e = result.unwrap_err();
    assert!(
        matches!(&e, SyncError::Source(SourceError::RateLimited { .. })),
        "{e}"
    );
    let m = e.to_string();
    assert!(m.contains("429") && !m.contains('\n'), "{m}");
    assert_eq!(m.matches("(fix: ").count(), 1, "{m}");
    w.sc.clear_faults();
    assert_eq!(records(&w.state()).len(), 60, "nothing forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_up_by_a_429_wait() {
    let mut w = World::new().await;
    w.downloads = false;
    w.extra = format!(
        "\n[log]\ndir = {:?}\n",
        w.home().join("logs").display().to_string()
    );
    let url = w.sc.add_playlist(set(3, 3));
    w.watch_with("Set", &url, "schedule = \"0 0 0 1 1 *\"");
    // The daemon runs the production policy: a minute per wait, ten in all.
    w.sc.inject(
        S::Resolve,
        SF::TooManyRequests {
            retry_after_secs: Some(3600),
        },
        100_000,
    );
    let d = w.start_daemon();
    d.wait_for("SoundCloud answered 429", 15).await;
    let (status, elapsed, log) = d.stop().await;
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn a_streamable_false_track_gets_its_page() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "hint")
            .full_prefix(1)
            .track(FakeTrack::new(1, "Muted Full", "A").not_streamable())
            .track(FakeTrack::new(2, "Muted Stub", "A").not_streamable()),
    );
    w.watch("Hint", &url);
    let r = w.sync("Hint").await;
    assert!(r.unavailable.is_empty(), "{:?}", r.unavailable);
    assert_eq!(r.created.len(), 2);
    assert_eq!(w.notion.pages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_writes_ytdlps_cache_and_ytdlp_reads_it() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(3, 1));
    w.watch("Set", &url);
    assert!(w.sync("Set").await.ok());
    let ytdlp_cache = w.cache_dir().join("yt-dlp");
    let entry = std::fs::read_to_string(ytdlp_cache.join("soundcloud/client_id.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(v["data"], w.sc.client_id().as_str(), "{entry}");

    // The real yt-dlp's SoundCloud extractor, sent to the fake by the benchmark's plugin (the
    // fake names the real hosts meanwhile), with the cache dir the downloads give it: it
    // lists the set without scraping, so it read the id.
    w.sc.show_public_hosts(true);
    w.sc.reset_counters();
    let public = w.sc.playlist_url(1).unwrap();
    let out = tokio::process::Command::new(crate::support::ytdlp())
        .args(["--ignore-config", "--no-update", "--flat-playlist", "-J"])
        .arg("--plugin-dirs")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/ytdlp-plugins"
        ))
        .arg("--cache-dir")
        .arg(&ytdlp_cache)
        .env(
            "PLAYLISTD_FAKE_HOSTS",
            format!(
                "soundcloud.com={},api-v2.soundcloud.com={}",
                w.sc.web_base(),
                w.sc.api_base()
            ),
        )
        .arg(&public)
        .output()
        .await
        .expect("run yt-dlp");
    w.sc.show_public_hosts(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "yt-dlp failed: {stderr}");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["entries"].as_array().unwrap().len(), 3, "{stderr}");
    assert_eq!(w.sc.requests(S::Resolve), 1, "{stderr}");
    assert_eq!(
        w.sc.requests(S::WebRoot) + w.sc.requests(S::Asset),
        0,
        "yt-dlp took the cached id: {stderr}"
    );

    // And the other way round: with only yt-dlp's entry, playlistd does not scrape either.
    std::fs::remove_file(
        w.cache_dir()
            .join(playlistd::source::soundcloud::CACHE_FILE),
    )
    .unwrap();
    w.sc.reset_counters();
    assert!(w.sync("Set").await.ok());
    assert_eq!(w.sc.requests(S::WebRoot) + w.sc.requests(S::Asset), 0);
}
