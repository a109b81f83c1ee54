//! Native SoundCloud audio (2026: AAC in HLS, signed URLs that expire within minutes, DRM label
//! tracks), with yt-dlp absent unless a test is about the fallback. Every file is read back
//! with symphonia: container, codec, and how long it plays against the source.

use crate::audio_check::play;
use crate::support::{World, records};
use playlistd_fakes::soundcloud::{Endpoint, FakePlaylist, FakeTrack, Fault, Layout, Policy};
use std::path::{Path, PathBuf};
use std::time::Duration;

const YEARLY: &str = "schedule = \"0 0 0 1 1 *\"";

/// A world whose yt-dlp does not exist.
async fn without_ytdlp() -> World {
    let mut w = World::new().await;
    w.ytdlp = w.home().join("no-such-yt-dlp");
    w
}

fn file_of(w: &World, playlist: &str, id: u64) -> PathBuf {
    let dir = w.music_dir().join(playlist);
    let tag = format!("[{id}].");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&tag))
        })
        .unwrap_or_else(|| {
            panic!(
                "no file of track {id} in {}: {:?}",
                dir.display(),
                w.music_files()
            )
        })
}

fn assert_plays(path: &Path, seconds: f64, aac: bool) {
    let p = play(path);
    assert_eq!(p.errors, 0, "{}: {p:?}", path.display());
    assert_eq!(p.aac, aac, "{}: {p:?}", path.display());
    assert_eq!(p.sample_rate, 44_100, "{}: {p:?}", path.display());
    assert_eq!(
        p.container,
        if aac { "isomp4" } else { "mp3" },
        "{}",
        path.display()
    );
    assert!(
        (p.seconds - seconds).abs() < 0.5,
        "{} plays {:.2} s, the source {seconds} s",
        path.display(),
        p.seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_without_ytdlp_downloads_every_clear_track_as_a_valid_tagged_file() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "crate", "picks")
            .title("Okra Picks")
            .full_prefix(2)
            .tracks([
                FakeTrack::new(1, "Aac One", "Band").duration_ms(41_500),
                FakeTrack::new(2, "Aac Two", "Band").duration_ms(12_000),
                FakeTrack::new(3, "Both", "Band")
                    .duration_ms(25_000)
                    .layout(Layout::AacAndMp3),
                FakeTrack::new(4, "Old Upload", "Band")
                    .duration_ms(20_000)
                    .layout(Layout::Mp3Only),
                FakeTrack::new(5, "Label Single", "Label")
                    .duration_ms(20_000)
                    .drm(),
                FakeTrack::new(6, "Go Plus", "Label").policy(Policy::Snip),
            ]),
    );
    w.watch("Okra Picks", &url);
    let report = w.sync("Okra Picks").await;
    assert!(report.ok(), "{}", report.summary_line());
    assert_eq!(report.downloaded.len(), 4, "{:?}", report.downloaded);
    assert!(
        report.downloaded.iter().all(|t| t.engine == Some("native")),
        "{:?}",
        report.downloaded
    );

    for (id, secs) in [(1, 41.5), (2, 12.0), (3, 25.0)] {
        let f = file_of(&w, "Okra Picks", id);
        assert_eq!(f.extension().unwrap(), "m4a");
        assert_plays(&f, secs, true);
        // One stream URL, one playlist, the init segment, ~10 s segments, one cover.
        let c = w.sc.cdn_requests(id);
        assert_eq!(w.sc.stream_url_requests(id), 1, "track {id}");
        assert_eq!(
            (c.playlist, c.init, c.artwork, c.progressive),
            (1, 1, 1, 0),
            "track {id}: {c:?}"
        );
        assert_eq!(c.segments, (secs / 10.0).ceil() as u64, "track {id}: {c:?}");
    }
    let mp3 = file_of(&w, "Okra Picks", 4);
    assert_eq!(mp3.extension().unwrap(), "mp3");
    assert_plays(&mp3, 20.0, false);

    let tag = mp4ameta::Tag::read_from_path(file_of(&w, "Okra Picks", 1)).unwrap();
    assert_eq!(tag.title(), Some("Aac One"));
    assert_eq!(tag.artist(), Some("Band"));
    assert_eq!(tag.album(), Some("Okra Picks"));
    assert_eq!(tag.comment(), w.sc.track_url(1).as_deref());
    let cover = tag.artwork().expect("a cover");
    assert!(cover.data.starts_with(&[0xff, 0xd8]), "a JPEG cover");
    let id3 = id3::Tag::read_from_path(&mp3).unwrap();
    use id3::TagLike;
    assert_eq!(
        (id3.title(), id3.artist(), id3.album()),
        (Some("Old Upload"), Some("Band"), Some("Okra Picks"))
    );
    assert_eq!(id3.pictures().count(), 1);

    // The DRM track was asked once (the check) and never downloaded; nothing is partial.
    assert_eq!(w.sc.media_requests(5), 1);
    assert_eq!(w.sc.cdn_requests(5).segments, 0);
    assert!(
        !w.music_files()
            .iter()
            .any(|f| f.contains(".playlistd-partial")),
        "{:?}",
        w.music_files()
    );
    let state = w.state();
    assert_eq!(
        records(&state)
            .iter()
            .filter(|t| t.download.is_done())
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_outlives_its_signed_url_renews_it_and_resumes_where_it_stopped() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "long")
            .tracks([FakeTrack::new(7, "Long Mix", "DJ").duration_ms(95_000)]),
    );
    w.watch("Long", &url);
    // Each signature works for 6 requests (the playlist and a few segments), then answers 403,
    // as a real one does a few minutes after it was issued.
    w.sc.set_signed_url_uses(Some(6));
    let report = w.sync("Long").await;
    assert!(
        report.ok(),
        "{}: {:?}",
        report.summary_line(),
        report.failed
    );
    assert_plays(&file_of(&w, "Long", 7), 95.0, true);
    let renewals = w.sc.stream_url_requests(7) - 1;
    assert!(
        renewals >= 2,
        "the signature expired mid-download: {renewals} renewals"
    );
    assert_eq!(
        w.sc.cdn_requests(7).init,
        1,
        "the init segment was not fetched again"
    );
    assert_eq!(
        w.sc.segment_requests(7, 0),
        1,
        "the download did not restart from zero"
    );
    assert_eq!(
        w.sc.segment_requests(7, 1),
        1,
        "the download did not restart from zero"
    );
    // Only the segments in flight when a signature ran out (at most 3 a time) are asked again.
    let segments = w.sc.cdn_requests(7).segments;
    assert!(
        segments <= 10 + 3 * renewals,
        "{segments} segment requests for 10 segments and {renewals} renewals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_5xx_cut_connections_and_a_failing_init_are_survived() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "f")
            .tracks([FakeTrack::new(8, "Flaky", "Band").duration_ms(50_000)]),
    );
    w.watch("F", &url);
    w.sc.inject(Endpoint::CdnInit, Fault::Status(500), 1);
    w.sc.inject_segment(8, 1, Fault::Status(503), 2);
    w.sc.inject_segment(8, 3, Fault::Reset, 1);
    w.sc.inject_segment(8, 4, Fault::Truncated, 1);
    let report = w.sync("F").await;
    assert!(report.ok(), "{}", report.summary_line());
    assert_plays(&file_of(&w, "F", 8), 50.0, true);
    assert_eq!(w.sc.segment_requests(8, 1), 3);
    assert_eq!(w.sc.segment_requests(8, 3), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_download_leaves_nothing_partial_and_the_next_run_completes() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(FakePlaylist::new(1, "u", "a").tracks(
        (1..=2).map(|i| FakeTrack::new(i, &format!("Long {i}"), "Band").duration_ms(60_000)),
    ));
    // About 1 MB at 40 KB/s: each download takes many seconds, far longer than the shutdown.
    w.sc.set_bandwidth(Some(40_000));
    w.watch_with("A", &url, YEARLY);
    let d = w.start_daemon();
    let staging = w
        .music_dir()
        .join("A")
        .join(playlistd::download::STAGING_DIR);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !crate::support::walk(&staging)
        .iter()
        .any(|p| p.ends_with("samples.raw"))
    {
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
    assert!(
        w.music_files().is_empty(),
        "nothing partial is left: {:?}",
        w.music_files()
    );
    assert!(records(&w.state()).iter().all(|t| !t.download.is_done()));

    w.sc.set_bandwidth(None);
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", crate::support::text(&out));
    for id in 1..=2 {
        assert_plays(&file_of(&w, "A", id), 60.0, true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_hands_a_layout_only_ytdlp_speaks_to_ytdlp_and_never_a_drm_track() {
    let mut w = World::new().await; // with the pinned yt-dlp
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "mix").tracks([
            FakeTrack::new(1, "Opus Only", "Band")
                .duration_ms(20_000)
                .layout(Layout::OpusOnly),
            FakeTrack::new(2, "Label Single", "Label")
                .duration_ms(20_000)
                .drm(),
            FakeTrack::new(3, "Plain", "Band").duration_ms(20_000),
        ]),
    );
    w.watch("Mix", &url);
    let report = w.sync("Mix").await;
    assert!(report.ok(), "{}", report.summary_line());
    let by: Vec<(String, Option<&str>)> = report
        .downloaded
        .iter()
        .map(|t| (t.title.clone(), t.engine))
        .collect();
    assert!(by.contains(&("Opus Only".into(), Some("yt-dlp"))), "{by:?}");
    assert!(by.contains(&("Plain".into(), Some("native"))), "{by:?}");
    assert_eq!(
        by.len(),
        2,
        "the DRM track is not downloaded by anything: {by:?}"
    );
    // yt-dlp fetches the permalink's audio; the DRM track's was never asked for.
    assert_eq!(w.sc.media_requests(2), w.sc.stream_url_requests(2));
    assert_eq!(w.sc.stream_url_requests(2), 1, "one request told DRM");
    assert!(
        w.sc.media_requests(1) > w.sc.stream_url_requests(1),
        "yt-dlp fetched the Opus-only track's audio"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ytdlp_a_layout_only_ytdlp_speaks_fails_with_the_fix_and_native_never_falls_back() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "o").tracks([FakeTrack::new(1, "Opus Only", "Band")
            .duration_ms(20_000)
            .layout(Layout::OpusOnly)]),
    );
    w.watch("O", &url);
    let report = w.sync("O").await;
    let failed = records(&w.state())
        .into_iter()
        .find_map(|t| t.download.last_error)
        .expect("a recorded failure");
    assert!(failed.contains("install yt-dlp"), "{failed}");
    assert!(report.downloaded.is_empty());

    let mut w = World::new().await;
    w.engine = "native".into();
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "o").tracks([FakeTrack::new(1, "Opus Only", "Band")
            .duration_ms(20_000)
            .layout(Layout::OpusOnly)]),
    );
    w.watch("O", &url);
    let report = w.sync("O").await;
    assert!(
        report.downloaded.is_empty(),
        "engine = \"native\" never runs yt-dlp"
    );
    assert_eq!(
        w.sc.media_requests(1),
        0,
        "nothing was fetched: no stream the native engine speaks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shorter_than_the_track_never_passes_for_it() {
    let mut w = without_ytdlp().await;
    // The CDN serves 30 s where the track is 3 minutes: a preview in place of the track.
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "p").tracks([
            FakeTrack::new(1, "Cut Short", "Band")
                .duration_ms(180_000)
                .stream_ms(30_000),
            FakeTrack::new(2, "Whole", "Band").duration_ms(20_000),
        ]),
    );
    w.watch("P", &url);
    let report = w.sync("P").await;
    assert_eq!(report.downloaded.len(), 1, "{:?}", report.downloaded);
    let error = &report
        .failed
        .iter()
        .find(|f| f.title == "Cut Short")
        .expect("failed")
        .error;
    assert!(
        error.contains("30.0 s") && error.contains("180.0 s"),
        "{error}"
    );
    let files = w.music_files();
    assert_eq!(
        files.len(),
        1,
        "no file for the cut track, nothing partial: {files:?}"
    );
    assert_eq!(
        w.sc.media_requests(1),
        w.sc.stream_url_requests(1),
        "no yt-dlp run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_mp3_takes_the_progressive_stream_and_a_cut_connection_resumes_with_a_range() {
    let mut w = without_ytdlp().await;
    w.download_extra = "prefer = \"mp3\"\n".into();
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "m").tracks([FakeTrack::new(1, "Both", "Band")
            .duration_ms(30_000)
            .layout(Layout::AacAndMp3)]),
    );
    w.watch("M", &url);
    w.sc.inject(Endpoint::CdnProgressive, Fault::Reset, 1);
    let report = w.sync("M").await;
    assert!(
        report.ok(),
        "{}: {:?}",
        report.summary_line(),
        report.failed
    );
    let f = file_of(&w, "M", 1);
    assert_eq!(f.extension().unwrap(), "mp3");
    assert_plays(&f, 30.0, false);
    let c = w.sc.cdn_requests(1);
    assert_eq!(
        (c.progressive, c.segments),
        (2, 0),
        "{c:?}: resumed, not restarted over HLS"
    );
    assert_eq!(w.sc.stream_url_requests(1), 1);
    // Tags first, then exactly the CDN's bytes: nothing lost or doubled at the cut.
    let bytes = std::fs::read(&f).unwrap();
    let audio = w.sc.progressive_of(1).unwrap();
    assert!(
        bytes.ends_with(&audio),
        "the file ends with the whole stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_track_of_a_secret_set_downloads_with_its_secret_token() {
    let mut w = without_ytdlp().await;
    let url = w.sc.add_playlist(
        FakePlaylist::new(4242, "me", "drafts")
            .secret("s-Zq9XyW3")
            .track(
                FakeTrack::new(1, "Private", "B")
                    .private()
                    .duration_ms(15_000),
            ),
    );
    w.watch("Drafts", &url);
    let report = w.sync("Drafts").await;
    assert!(
        report.ok(),
        "{}: {:?}",
        report.summary_line(),
        report.failed
    );
    assert_plays(&file_of(&w, "Drafts", 1), 15.0, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_url_429_fails_only_those_downloads_and_the_run_goes_on() {
    let mut w = without_ytdlp().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "r").tracks(
            (1..=3).map(|i| FakeTrack::new(i, &format!("T{i}"), "Band").duration_ms(10_000)),
        ));
    w.watch("R", &url);
    // One stream URL a minute: the first download gets it, the others meet 429s.
    w.sc.set_stream_url_limit(Some((1, Duration::from_secs(60))));
    let (report, result) = w.try_sync("R").await;
    assert!(result.is_ok(), "the run is not stopped by the 429s");
    assert_eq!(w.notion.pages().len(), 3, "every page was created");
    assert_eq!(report.downloaded.len(), 1);
    assert_eq!(report.failed.len(), 2);
    assert!(
        report.failed.iter().all(|f| f.error.contains("429")),
        "{:?}",
        report.failed
    );
    w.sc.set_stream_url_limit(None);
    let out = w.playlistd(&["retry"]).await;
    assert!(out.status.success(), "{}", crate::support::text(&out));
    let report = w.sync("R").await;
    assert_eq!(report.downloaded.len(), 2, "{}", report.summary_line());
}

#[tokio::test]
async fn check_shows_the_engine_says_ytdlp_is_optional_and_warns_about_unused_extra_args() {
    let mut w = without_ytdlp().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "c").tracks([FakeTrack::new(1, "T", "B")]));
    w.watch("C", &url);
    w.download_extra = "extra_args = [\"-f\", \"ba\"]\n".into();
    let out = w.playlistd(&["check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", crate::support::text(&out));
    for needle in [
        "ok    download engine: auto: native SoundCloud downloads, yt-dlp as the fallback",
        "ok    yt-dlp:",
        "optional",
        "warn  download.extra_args",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // The yt-dlp engine needs yt-dlp: then its absence fails the check.
    w.engine = "yt-dlp".into();
    let out = w.playlistd(&["check"]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  yt-dlp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_playlist_gets_an_m3u8_in_soundcloud_order_and_a_shared_track_is_stored_once() {
    let mut w = without_ytdlp().await;
    let t =
        |id: u64, title: &str| FakeTrack::new(id, title, "Band").duration_ms(12_000 + id * 1000);
    let a =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "a").title("Night Drive").tracks([
            t(1, "One"),
            t(2, "Two"),
            t(3, "Three"),
        ]));
    let b = w.sc.add_playlist(
        FakePlaylist::new(2, "u", "b")
            .title("Sunday")
            .tracks([t(3, "Three"), t(4, "Four")]),
    );
    w.watch("Night Drive", &a);
    w.watch("Sunday", &b);
    assert!(w.sync("Night Drive").await.ok());
    assert!(w.sync("Sunday").await.ok());
    let read = |name: &str| {
        std::fs::read_to_string(w.music_dir().join(name).join(format!("{name}.m3u8"))).unwrap()
    };
    assert_eq!(
        read("Night Drive"),
        "#EXTM3U\n#PLAYLIST:Night Drive\n\
         #EXTINF:13,Band - One\nBand - One [1].m4a\n\
         #EXTINF:14,Band - Two\nBand - Two [2].m4a\n\
         #EXTINF:15,Band - Three\nBand - Three [3].m4a\n"
    );
    // Track 3 is stored once, in the folder that downloaded it first; both lists point at it.
    let sunday = read("Sunday");
    assert_eq!(
        sunday,
        "#EXTM3U\n#PLAYLIST:Sunday\n\
         #EXTINF:15,Band - Three\n../Night Drive/Band - Three [3].m4a\n\
         #EXTINF:16,Band - Four\nBand - Four [4].m4a\n"
    );
    let m3u_dir = w.music_dir().join("Sunday");
    for line in sunday.lines().filter(|l| !l.starts_with('#')) {
        assert!(m3u_dir.join(line).is_file(), "{line} exists");
    }
    assert_eq!(w.sc.cdn_requests(3).playlist, 1, "downloaded once");

    // Track 1 leaves "Night Drive" upstream: it leaves the list, its file stays.
    w.sc.remove_track_from_playlist(1, 1);
    assert!(w.sync("Night Drive").await.ok());
    let night = read("Night Drive");
    assert!(!night.contains("One"), "{night}");
    assert!(night.contains("Band - Two [2].m4a"), "{night}");
    assert!(
        w.music_dir()
            .join("Night Drive/Band - One [1].m4a")
            .is_file(),
        "the file stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_listing_leaves_the_playlist_file_as_it_was_and_m3u_false_writes_none() {
    let mut w = without_ytdlp().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "p").full_prefix(1).tracks(
            (1..=3).map(|i| FakeTrack::new(i, &format!("T{i}"), "Band").duration_ms(10_000)),
        ));
    w.watch("P", &url);
    assert!(w.sync("P").await.ok());
    let file = w.music_dir().join("P/P.m3u8");
    let before = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        before.lines().filter(|l| l.ends_with(".m4a")).count(),
        3,
        "{before}"
    );
    // The stub batch fails: the listing shows only the first track, and is incomplete.
    w.sc.inject(Endpoint::Tracks, Fault::Status(500), 20);
    let (report, _) = w.try_sync("P").await;
    assert!(!report.complete, "{}", report.summary_line());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "a partial listing shortens nothing"
    );
    w.sc.clear_faults();

    let mut w = without_ytdlp().await;
    w.download_extra = "m3u = false\n".into();
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "q").tracks([FakeTrack::new(1, "T", "B").duration_ms(5_000)]),
    );
    w.watch("Q", &url);
    assert!(w.sync("Q").await.ok());
    assert_eq!(w.music_files().len(), 1);
    assert!(!w.music_dir().join("Q/Q.m3u8").exists());
}
