//! Crash anywhere: a first sync of 200 tracks killed with SIGKILL at 20 points (during the
//! listing, between lookup and create, mid-create, during downloads, and wherever a state
//! save happens to be), restarted each time. At the end: one page per available track, one
//! file per track, a whole state file, and no stray yt-dlp or partial file.

use crate::support::{World, text};
use playlistd::model::canonical_url;
use playlistd_fakes::notion::Endpoint as N;
use playlistd_fakes::soundcloud::{Endpoint as S, FakePlaylist, FakeTrack, Policy};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Point {
    /// After this many `/tracks?ids=` batches of the run (inside the listing).
    Listing(u64),
    /// After this many page creates of the run reached Notion (between lookup and create,
    /// mid-create).
    Creates(usize),
    /// After this many audio requests of the run (yt-dlp runs in flight).
    Audio(u64),
    /// After this long (wherever the process is, state saves included).
    After(Duration),
}

#[expect(
    clippy::too_many_lines,
    reason = "a scenario read top to bottom: the set-up, the 20 kill points and their loop, then every check of the end state in order; split, the checks would lose the run they follow"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sigkill_at_20_points_of_a_200_track_first_sync_loses_nothing_and_duplicates_nothing()
{
    let mut w = World::new().await;
    // The kill points count yt-dlp's audio requests, and yt-dlp must die with its parent.
    w.engine = "yt-dlp".into();
    w.requests_per_minute = 3000; // 50 a second: creates take a few seconds, so kills land among them
    let tracks = (1..=200u64).map(|i| {
        let t = FakeTrack::new(i, &format!("Track {i:03}"), "Band");
        if i % 25 == 0 {
            t.policy(Policy::Block)
        } else {
            t
        }
    });
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "big")
            .full_prefix(5)
            .tracks(tracks),
    );
    w.watch("Big", &url);
    let available: HashSet<u64> = (1..=200).filter(|i| i % 25 != 0).collect();

    // Each point counts from the start of its run.
    let points = [
        Point::Listing(1),
        Point::Listing(3),
        Point::Creates(1),
        Point::Creates(3),
        Point::After(Duration::from_millis(300)),
        Point::Creates(10),
        Point::Creates(15),
        Point::After(Duration::from_millis(600)),
        Point::Creates(20),
        Point::Creates(25),
        Point::Creates(30),
        Point::Audio(6),
        Point::Audio(20),
        Point::After(Duration::from_millis(1500)),
        Point::Audio(30),
        Point::Audio(40),
        Point::After(Duration::from_millis(2500)),
        Point::Audio(50),
        Point::Audio(60),
        Point::After(Duration::from_millis(3000)),
    ];
    let mut killed = 0;
    for point in points {
        let mut child = w.command(&["sync", "Big"]).spawn().unwrap();
        let start = tokio::time::Instant::now();
        let (tracks0, creates0, audio0) = (
            w.sc.requests(S::Tracks),
            w.notion.count(N::Create),
            w.sc.requests(S::Audio),
        );
        let reached = || match point {
            Point::Listing(n) => w.sc.requests(S::Tracks) >= tracks0 + n,
            Point::Creates(n) => w.notion.count(N::Create) >= creates0 + n,
            Point::Audio(n) => w.sc.requests(S::Audio) >= audio0 + n,
            Point::After(d) => start.elapsed() >= d,
        };
        // Wait for the point (an observed request count) or for the run to end by itself.
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if reached() {
                break None;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "run stuck at {point:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if let Some(status) = finished {
            eprintln!("{point:?}: the run ended by itself with {status}");
        }
        if finished.is_none() {
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
            killed += 1;
        }
        // Whatever the point, the state on disk is whole and yt-dlp died with its parent.
        let _ = w.state();
        // The kernel delivers the parent-death signal asynchronously: give it a moment.
        let gone = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let stray = std::process::Command::new("pgrep")
                .args(["-f", &w.sc.web_base()])
                .output()
                .unwrap();
            if stray.stdout.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < gone,
                "yt-dlp outlived playlistd at {point:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        killed >= 15,
        "most points must really interrupt a run (killed {killed})"
    );

    let out = w.playlistd(&["sync", "Big"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Exactly one page per available track.
    let pages = w.notion.pages();
    assert_eq!(pages.len(), available.len(), "{}", text(&out));
    let urls: HashSet<String> = pages
        .iter()
        .filter_map(|p| p.url("SoundCloud URL"))
        .collect();
    assert_eq!(urls.len(), available.len(), "no two pages for one track");
    for i in &available {
        assert!(
            urls.contains(&canonical_url(&w.sc.track_url(*i).unwrap())),
            "track {i} has no page"
        );
    }
    // One file per available track, no partial file, no staging folder.
    let files = w.music_files();
    assert_eq!(files.len(), available.len(), "{files:?}");
    for i in &available {
        assert_eq!(
            files
                .iter()
                .filter(|f| f.ends_with(&format!("[{i}].mp3")))
                .count(),
            1,
            "track {i}: {files:?}"
        );
    }
    // The state is whole and complete.
    let state = w.state();
    for i in &available {
        let t = state
            .tracks
            .get(&playlistd::model::TrackKey::new(i.to_string()))
            .unwrap()
            .unwrap();
        assert!(
            t.notion.is_done() && t.download.is_done(),
            "track {i}: {t:?}"
        );
        assert!(t.notion_page_id.is_some());
    }
    // And a run after that has nothing left to do.
    let before = w.notion.request_count();
    let out = w.playlistd(&["sync", "Big"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.notion.request_count(), before, "nothing left for Notion");
}
