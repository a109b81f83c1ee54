//! Tracks that leave a playlist: `keep` records them, `mark` takes the playlist off the page,
//! `trash` moves the page to Notion's trash unless another playlist holds the track. Audio
//! files are never deleted.

use crate::support::{World, text};
use playlistd::model::canonical_url;
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};

fn set(pid: u64, slug: &str, ids: &[u64]) -> FakePlaylist {
    FakePlaylist::new(pid, "u", slug).tracks(
        ids.iter()
            .map(|i| FakeTrack::new(*i, &format!("Song {i}"), "Band")),
    )
}

fn page_of(w: &World, id: u64) -> playlistd_fakes::notion::FakePage {
    let pages = w
        .notion
        .pages_with_url(&canonical_url(&w.sc.track_url(id).unwrap()));
    assert_eq!(pages.len(), 1);
    pages.into_iter().next().unwrap()
}

#[tokio::test]
async fn mark_takes_the_playlist_off_the_page_and_keeps_the_file() {
    let mut w = World::new().await;
    let a = w.sc.add_playlist(set(1, "a", &[1, 2]));
    w.watch_with("A", &a, "removed = \"mark\"");
    assert!(w.sync("A").await.ok());
    assert_eq!(page_of(&w, 1).relation("Playlists").len(), 1);

    w.sc.remove_track_from_playlist(1, 1);
    let r = w.sync("A").await;
    assert_eq!(r.removed.len(), 1);
    assert_eq!(
        r.removed[0].action.as_deref(),
        Some("playlist taken off its page")
    );
    let p = page_of(&w, 1);
    assert!(
        p.relation("Playlists").is_empty(),
        "the playlist is off the page"
    );
    assert!(!p.in_trash);
    assert_eq!(w.music_files().len(), 2, "audio files are never deleted");
}

#[tokio::test]
async fn trash_moves_the_page_only_when_no_other_playlist_holds_the_track() {
    let mut w = World::new().await;
    w.downloads = false;
    let a = w.sc.add_playlist(set(1, "a", &[1, 2, 3]));
    let b = w.sc.add_playlist(set(2, "b", &[3, 4]));
    w.watch_with("A", &a, "removed = \"trash\"");
    w.watch("B", &b);
    assert!(w.sync("A").await.ok());
    assert!(w.sync("B").await.ok());
    let page1 = page_of(&w, 1).id;

    w.sc.remove_track_from_playlist(1, 1);
    w.sc.remove_track_from_playlist(1, 3);
    // The dry run says what would happen and does nothing.
    let out = w.playlistd(&["sync", "A", "--dry-run"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would move the page to the trash"),
        "{}",
        text(&out)
    );
    assert!(!w.notion.page(&page1).unwrap().in_trash);

    let r = w.sync("A").await;
    assert_eq!(r.removed.len(), 2);
    assert!(
        w.notion.page(&page1).unwrap().in_trash,
        "only A held track 1: trashed"
    );
    let p3 = page_of(&w, 3);
    assert!(!p3.in_trash, "B still holds track 3");
    assert_eq!(p3.relation("Playlists").len(), 1, "only B is left on it");

    // Track 1 comes back: it gets a page again.
    w.sc.add_track(1, FakeTrack::new(1, "Song 1", "Band"));
    let r = w.sync("A").await;
    assert_eq!(r.created.len(), 1, "{}", r.summary_line());
}
