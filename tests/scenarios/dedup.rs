//! No duplicates: pages already in the database, one track in two playlists, and a process
//! killed between a page create and the state write.

use crate::support::{World, records, text};
use playlistd::model::{TrackKey, canonical_url};
use playlistd_fakes::notion::{Endpoint, Fault};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
use std::time::Duration;

fn tracks(ids: std::ops::RangeInclusive<u64>) -> Vec<FakeTrack> {
    ids.map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band"))
        .collect()
}

#[tokio::test]
async fn pages_already_in_the_database_are_adopted_not_duplicated() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set")
            .full_prefix(2)
            .tracks(tracks(1..=10)),
    );
    w.watch("Set", &url);
    let mut seeded = vec![];
    for id in [2u64, 5, 9] {
        let track_url = canonical_url(&w.sc.track_url(id).unwrap());
        seeded.push(
            w.notion
                .seed_track(&format!("Song {id}"), "Band", &track_url),
        );
    }

    let r = w.sync("Set").await;
    assert!(r.ok(), "{:#?}", r.failed);
    assert_eq!(r.adopted.len(), 3);
    assert_eq!(r.created.len(), 7);
    let pages = w.notion.pages();
    assert_eq!(pages.len(), 10);
    for id in &seeded {
        let p = w.notion.page(id).unwrap();
        assert_eq!(
            p.relation("Playlists").len(),
            1,
            "the adopted page carries the playlist"
        );
    }
    let state = w.state();
    let adopted = state
        .tracks
        .get(&playlistd::model::TrackKey("5".into()))
        .unwrap()
        .unwrap();
    assert_eq!(adopted.notion_page_id.as_deref(), Some(seeded[1].as_str()));
    // One lookup query for all ten new tracks, never one per track.
    assert_eq!(
        w.notion.count(Endpoint::Query),
        2,
        "one playlist-page query + one lookup"
    );
}

/// People paste share links into Notion by hand. Every form of a track's link (tracking
/// queries, `?in=`, timestamps, trailing slashes, `http://`, `www.`/`m.`, an IRI or its
/// encoded URI) is that track: its page is adopted, not duplicated, and the lookup stays one
/// query for the batch. The pages playlistd creates and the state hold the canonical URL.
#[tokio::test]
async fn pasted_share_links_in_every_form_are_adopted_not_duplicated() {
    let mut w = World::new().await;
    w.downloads = false;
    w.sc.show_public_hosts(true);
    let mut set = tracks(1..=11);
    set[8] = FakeTrack::new(9, "Café Con Leche", "Band").permalink("band", "café-con-leche");
    set[9] = FakeTrack::new(10, "Señorita", "Band").permalink("band", "señorita");
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "set").full_prefix(3).tracks(set));
    w.watch("Set", &url);
    let link = |id: u64| w.sc.track_url(id).unwrap();
    let pasted = [
        (
            1,
            format!(
                "{}?si=4f1e2d3c4b5a69788796a5b4c3d2e1f0&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing",
                link(1)
            ),
        ),
        (2, format!("{}?in=u/sets/set", link(2))),
        (3, format!("{}#t=1:23", link(3))),
        (4, format!("{}/", link(4))),
        (5, link(5).replacen("https://", "http://", 1)),
        (6, link(6).replacen("https://", "https://www.", 1)),
        (
            7,
            link(7).replacen("https://", "https://m.", 1) + "?in=u/sets/set",
        ),
        (
            8,
            link(8).to_uppercase().replacen("HTTPS://", "https://", 1),
        ),
        // The IRI a browser shows, and the encoded URI with lowercase hex.
        (9, "https://soundcloud.com/band/café-con-leche".to_string()),
        (
            10,
            "https://soundcloud.com/band/se%c3%b1orita?si=x".to_string(),
        ),
    ];
    let mut seeded = std::collections::HashMap::new();
    for (id, u) in &pasted {
        seeded.insert(
            *id,
            w.notion.seed_track(&format!("Pasted {id}"), "Someone", u),
        );
    }
    // A longer path that contains track 1's is a different track.
    w.notion
        .seed_track("Song 1 (remix)", "Band", &format!("{}-remix", link(1)));
    let before = w.notion.pages().len();

    let r = w.sync("Set").await;
    assert!(r.ok(), "{:#?}", r.failed);
    assert_eq!(r.adopted.len(), 10, "every pasted form is adopted");
    assert_eq!(r.created.len(), 1, "only track 11 is new");
    assert_eq!(w.notion.pages().len(), before + 1, "no duplicate page");
    let state = w.state();
    for (id, page) in &seeded {
        let rec = state
            .tracks
            .get(&TrackKey::soundcloud(*id))
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.notion_page_id.as_deref(),
            Some(page.as_str()),
            "track {id}"
        );
    }
    // The created page and the state hold the canonical form, encoded once.
    let t10 = state
        .tracks
        .get(&TrackKey::soundcloud(10))
        .unwrap()
        .unwrap();
    assert_eq!(t10.url, "https://soundcloud.com/band/se%C3%B1orita");
    let created = w.notion.pages_with_url(&link(11));
    assert_eq!(created.len(), 1);
    // One playlist-page query and one lookup for all eleven tracks: no query per track.
    assert_eq!(w.notion.count(Endpoint::Query), 2);
}

#[tokio::test]
async fn a_track_in_two_playlists_has_one_page_with_both_and_one_file() {
    let mut w = World::new().await;
    let a =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "morning").tracks(tracks(1..=4)));
    let b =
        w.sc.add_playlist(FakePlaylist::new(2, "u", "evening").tracks(tracks(3..=6)));
    w.watch("Morning", &a);
    w.watch("Evening", &b);

    let ra = w.sync("Morning").await;
    let rb = w.sync("Evening").await;
    assert!(ra.ok() && rb.ok(), "{:#?} {:#?}", ra.failed, rb.failed);
    assert_eq!((rb.created.len(), rb.linked.len()), (2, 2));
    assert_eq!(w.notion.pages().len(), 6);
    let playlist_ids: Vec<String> = w
        .notion
        .pages_in(&w.notion.playlists_data_source_id())
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(playlist_ids.len(), 2);
    let shared = w
        .notion
        .pages_with_url(&canonical_url(&w.sc.track_url(3).unwrap()));
    assert_eq!(shared.len(), 1);
    let mut rel = shared[0].relation("Playlists");
    rel.sort();
    let mut expected = playlist_ids.clone();
    expected.sort();
    assert_eq!(
        rel, expected,
        "the shared track's page carries both playlists"
    );

    let files = w.music_files();
    assert_eq!(files.len(), 6, "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f.contains("[3]")).count(),
        1,
        "{files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_create_and_state_write_the_next_run_adopts_the_page() {
    let mut w = World::new().await;
    w.downloads = false;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "u", "set").tracks(tracks(1..=6)));
    w.watch("Set", &url);
    // The playlist's page exists, so the first create is a track's.
    w.notion.seed_page_in(
        &w.notion.playlists_data_source_id(),
        serde_json::json!({"Name": {"title": [{"text": {"content": "Set"}}]}}),
    );
    // The first create is saved by Notion but its answer never comes back in time.
    w.notion
        .inject(Endpoint::Create, Fault::Delay(Duration::from_secs(60)), 1);

    let mut child = w.command(&["sync", "Set"]).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Wait for the event "Notion saved a page whose answer is still pending".
    while w.notion.pages().len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pages were not created: {:?}",
            w.notion.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL: no chance to save anything more
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    let known = records(&w.state())
        .into_iter()
        .filter(|t| t.notion_page_id.is_some())
        .count();
    assert!(
        known < 6,
        "the delayed page cannot be in the state: {known}"
    );

    w.notion.clear_faults();
    let out = w.playlistd(&["sync", "Set"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" adopted"), "{}", text(&out));
    assert_eq!(w.notion.pages().len(), 6, "no duplicate page");
    for id in 1..=6u64 {
        assert_eq!(
            w.notion
                .pages_with_url(&canonical_url(&w.sc.track_url(id).unwrap()))
                .len(),
            1
        );
    }
    let state = w.state();
    assert_eq!(
        records(&state)
            .into_iter()
            .filter(|t| t.notion.is_done())
            .count(),
        6
    );
}
