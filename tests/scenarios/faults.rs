//! Faults from the services: Notion rate limits and 5xx, a stale SoundCloud client id, a
//! failed stub batch.

use crate::support::World;
use playlistd::fake::notion::{Endpoint as N, Fault as NF};
use playlistd::fake::soundcloud::{Endpoint as S, FakePlaylist, FakeTrack, Fault as SF};
use playlistd::model::normalize_url;

fn set(n: u64, full: usize) -> FakePlaylist {
    FakePlaylist::new(1, "u", "set")
        .full_prefix(full)
        .tracks((1..=n).map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band")))
}

#[tokio::test]
async fn notion_429_502_and_committed_503_complete_without_duplicates() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(12, 5));
    w.watch("Set", &url);
    w.notion.inject(
        N::Create,
        NF::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    w.notion.inject(N::Create, NF::Status(502), 2);
    w.notion.inject(N::Query, NF::Status(502), 1);
    w.notion.inject(N::Create, NF::SavedButUnavailable, 2);
    w.notion.inject(N::Create, NF::ResetAfter, 1);

    let r = w.sync("Set").await;
    assert!(r.ok(), "{:#?}", r.failed);
    assert_eq!(r.created.len(), 12);
    assert_eq!(w.notion.pages().len(), 12, "no duplicate page");
    for i in 1..=12u64 {
        assert_eq!(
            w.notion
                .pages_with_url(&normalize_url(&w.sc.track_url(i).unwrap()))
                .len(),
            1
        );
    }
    let statuses: Vec<u16> = w.notion.requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&502) && statuses.contains(&503),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_validation_error_fails_only_that_track() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(3, 3));
    w.watch("Set", &url);
    let engine = w.engine();
    let pl = engine.config.playlist("Set").unwrap().clone();
    // The property disappears after the schema was read: Notion refuses the creates.
    engine.sink().await.unwrap();
    w.notion.rename_property("Artist Name", "Performer");
    let (r, result) = engine.sync(&pl, &Default::default()).await;
    result.unwrap();
    assert_eq!(r.failed.len(), 3);
    assert!(
        r.failed[0].error.contains("Artist Name"),
        "{}",
        r.failed[0].error
    );
    let state = w.state();
    assert!(
        state
            .tracks
            .values()
            .all(|t| t.notion.last_error.is_some() && !t.notion.is_done())
    );
}

#[tokio::test]
async fn a_stale_client_id_is_refreshed_once() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(3, 3));
    w.watch("Set", &url);
    w.sync("Set").await;
    assert_eq!(
        w.sc.requests(S::WebRoot),
        1,
        "the client id was scraped once, then cached"
    );

    let old = w.sc.client_id();
    let new = w.sc.rotate_client_id();
    assert_ne!(old, new);
    w.sc.reset_counters();
    let r = w.sync("Set").await;
    assert!(r.ok() && r.complete);
    assert_eq!(w.sc.requests(S::WebRoot), 1, "one refresh");
    assert_eq!(
        w.sc.requests(S::Resolve),
        2,
        "401 with the stale id, then success"
    );
    let cached = std::fs::read_to_string(w.home().join("cache/soundcloud-client-id.json")).unwrap();
    assert!(cached.contains(&new));
}

#[tokio::test]
async fn a_failed_stub_batch_makes_the_listing_incomplete_and_removes_nothing() {
    let mut w = World::new().await;
    w.downloads = false;
    let url = w.sc.add_playlist(set(60, 5));
    w.watch("Set", &url);
    assert!(w.sync("Set").await.ok());

    // Track 1 leaves the playlist, and every stub batch now fails.
    w.sc.remove_track_from_playlist(1, 1);
    w.sc.inject(S::Tracks, SF::Status(500), 1000);
    let r = w.sync("Set").await;
    assert!(!r.complete);
    assert!(r.incomplete_reason.is_some());
    assert!(
        r.removed.is_empty(),
        "a partial listing never counts tracks as removed"
    );
    let state = w.state();
    assert_eq!(
        state.playlists["Set"].members.len(),
        60,
        "members the listing did not show are kept"
    );
    assert!(state.playlists["Set"].removed.is_empty());

    w.sc.clear_faults();
    let r = w.sync("Set").await;
    assert!(r.complete);
    assert_eq!(r.removed.len(), 1, "the complete listing shows the removal");
    assert_eq!(r.removed[0].key.0, "1");
    assert_eq!(
        w.notion.pages().len(),
        60,
        "the removed track's page is kept (policy keep)"
    );
}
