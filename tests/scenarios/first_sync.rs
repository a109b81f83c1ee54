//! A first sync, an unchanged re-sync and a sync after upstream additions.

use crate::support::World;
use playlistd::model::{UnavailableReason, canonical_url};
use playlistd_fakes::soundcloud::{Endpoint, FakePlaylist, FakeTrack, Policy};
use std::collections::HashMap;

/// 120 tracks, of which 6 are geo-blocked, 6 Go+ previews and 4 deleted: 104 available.
fn big_set() -> FakePlaylist {
    let tracks = (1..=120u64).map(|i| {
        let t = FakeTrack::new(
            5000 + i,
            &format!("Track {i:03}"),
            &format!("Artist {}", i % 7),
        )
        .genre(if i % 10 == 3 { "Rock, Pop" } else { "House" })
        .duration_ms(180_000 + i * 1000);
        match i {
            _ if i % 20 == 7 => t.policy(Policy::Block),
            _ if i % 20 == 13 => t.policy(Policy::Snip),
            _ if i % 30 == 29 => t.deleted(),
            _ => t,
        }
    });
    FakePlaylist::new(777, "crate-digger", "big-set")
        .title("Big Set")
        .full_prefix(5)
        .tracks(tracks)
}

#[expect(
    clippy::too_many_lines,
    reason = "a scenario read top to bottom: the first sync, the unchanged re-sync and the sync after three additions each check what the one before left"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_first_sync_of_120_tracks_then_unchanged_then_three_added() {
    let mut w = World::new().await;
    let url = w.sc.add_playlist(big_set());
    w.watch("Big Set", &url);

    // First sync: one page per available track, each file downloaded once.
    let r = w.sync("Big Set").await;
    assert!(r.ok(), "{}\n{:#?}", r.summary_line(), r.failed);
    assert_eq!(r.listed, 120);
    assert!(r.complete);
    assert_eq!(r.created.len(), 104, "{}", r.summary_line());
    assert_eq!(r.downloaded.len(), 104);
    assert!(
        w.sc.max_ids_per_request() <= 50,
        "a /tracks?ids= request asked for more than 50 ids"
    );
    assert_eq!(
        w.sc.requests(Endpoint::Tracks),
        3,
        "115 stubs are 3 batches"
    );

    let reasons: HashMap<u64, UnavailableReason> = r
        .unavailable
        .iter()
        .map(|u| (u.key.0.parse().unwrap(), u.reason))
        .collect();
    assert_eq!(reasons.len(), 16);
    assert_eq!(reasons[&5007], UnavailableReason::GeoBlocked);
    assert_eq!(reasons[&5013], UnavailableReason::PreviewOnly);
    assert_eq!(reasons[&5029], UnavailableReason::NotReturned);

    let pages = w.notion.pages();
    assert_eq!(pages.len(), 104, "exactly one page per available track");
    let playlist_pages = w.notion.pages_in(&w.notion.playlists_data_source_id());
    assert_eq!(playlist_pages.len(), 1);
    assert_eq!(playlist_pages[0].text("Name"), "Big Set");
    let by_url: HashMap<String, _> = pages
        .iter()
        .map(|p| (p.url("SoundCloud URL").unwrap(), p))
        .collect();
    assert_eq!(by_url.len(), 104, "no two pages share a URL");
    let p3 = by_url[&canonical_url(&w.sc.track_url(5003).unwrap())];
    assert_eq!(p3.text("Title"), "Track 003");
    assert_eq!(p3.text("Artist Name"), "Artist 3");
    assert_eq!(
        p3.select("Genre").as_deref(),
        Some("Rock / Pop"),
        "commas are not allowed in select options"
    );
    assert_eq!(p3.number("Audio Duration (seconds)"), Some(183.0));
    assert_eq!(p3.relation("Playlists"), vec![playlist_pages[0].id.clone()]);
    assert_eq!(p3.url("Playlist URL").as_deref(), Some(url.as_str()));
    assert_eq!(p3.checkbox("Downloaded"), Some(true));
    assert!(
        p3.text("File Path")
            .ends_with("Artist 3 - Track 003 [5003].m4a"),
        "{}",
        p3.text("File Path")
    );
    assert!(p3.cover.is_some(), "the artwork becomes the page cover");
    assert!(
        !by_url.contains_key(&canonical_url(&w.sc.track_url(5007).unwrap())),
        "geo-blocked: no page"
    );

    let files = w.music_files();
    assert_eq!(files.len(), 104, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("Big Set/") && f.ends_with(".m4a")),
        "{files:?}"
    );
    // Downloaded natively from the fake's HLS: the file plays as long as the track.
    let played = crate::audio_check::play(
        &w.music_dir()
            .join("Big Set/Artist 3 - Track 003 [5003].m4a"),
    );
    assert!(played.aac && played.errors == 0, "{played:?}");
    assert!((played.seconds - 183.0).abs() < 0.5, "{played:?}");

    // Unchanged: no Notion request at all, nothing downloaded, 1 resolve + 3 stub batches.
    w.notion.clear_log();
    w.sc.reset_counters();
    let r = w.sync("Big Set").await;
    assert!(r.ok());
    assert_eq!(w.notion.request_count(), 0, "{:?}", w.notion.requests());
    assert_eq!(r.notion_requests, 0);
    assert_eq!(w.sc.requests(Endpoint::Audio), 0);
    assert_eq!(w.sc.requests(Endpoint::CdnSegment), 0);
    assert_eq!(w.sc.total_requests(), 4);
    assert_eq!((r.created.len(), r.downloaded.len()), (0, 0));

    // Three tracks added upstream: exactly three pages and three downloads.
    for i in 121..=123u64 {
        w.sc.add_track(
            777,
            FakeTrack::new(5000 + i, &format!("Track {i:03}"), "Newcomer"),
        );
    }
    w.sc.reset_counters();
    let r = w.sync("Big Set").await;
    assert!(r.ok(), "{:#?}", r.failed);
    assert_eq!(r.created.len(), 3);
    assert_eq!(r.downloaded.len(), 3);
    assert_eq!(w.notion.pages().len(), 107);
    assert_eq!(w.music_files().len(), 107);
    // Each new track: one stream URL, one playlist, one init segment, once each.
    assert_eq!(w.sc.requests(Endpoint::Media), 3);
    assert_eq!(w.sc.requests(Endpoint::CdnPlaylist), 3);
    assert_eq!(w.sc.requests(Endpoint::CdnInit), 3);
    assert_eq!(w.sc.requests(Endpoint::Audio), 0, "yt-dlp was not needed");
}

#[tokio::test]
async fn an_empty_playlist_syncs_to_nothing() {
    let mut w = World::new().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "someone", "empty").title("Empty"));
    w.watch("Empty", &url);
    let r = w.sync("Empty").await;
    assert!(r.ok());
    assert_eq!((r.listed, r.created.len()), (0, 0));
    assert_eq!(w.notion.request_count(), 0, "nothing to send, nothing sent");
}
