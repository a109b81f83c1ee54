//! The upgrade from the JSON state (`state.json` + `state.journal`) to SQLite: a user who
//! upgrades sees an unchanged playlist make no Notion request and download nothing.

use crate::support::{World, records, text};
use playlistd::state::{DB_FILE, STATE_FILE};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};

#[tokio::test]
async fn an_upgraded_json_state_makes_an_unchanged_playlist_ask_nothing_and_download_nothing() {
    let mut w = World::new().await;
    let url =
        w.sc.add_playlist(FakePlaylist::new(1, "crew", "set").tracks([
            FakeTrack::new(1, "One", "A"),
            FakeTrack::new(2, "Two", "B").genre("Ambient"),
            FakeTrack::new(3, "Three", "A"),
        ]));
    w.watch("Set", &url);
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = w.state();
    let files = w.music_files();
    assert_eq!(files.len(), 3, "{files:?}");

    // The state as the JSON releases kept it (the same records, serialized as they did),
    // and no database: the first start after the upgrade.
    let json = serde_json::json!({
        "version": 1,
        "generation": 1,
        "tracks": before.tracks,
        "playlists": before.playlists,
    });
    let dir = w.state_dir();
    for f in [DB_FILE, "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&json).unwrap()).unwrap();

    let notion = w.notion.request_count();
    let audio: Vec<u64> = (1..=3).map(|id| w.sc.media_requests(id)).collect();
    let out = w.playlistd(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.notion.request_count(), notion, "no Notion request");
    let after: Vec<u64> = (1..=3).map(|id| w.sc.media_requests(id)).collect();
    assert_eq!(after, audio, "nothing downloaded");
    assert_eq!(w.music_files(), files);
    assert!(dir.join("state.json.migrated").exists());
    assert!(!dir.join(STATE_FILE).exists());
    assert_eq!(records(&w.state()), records(&before), "nothing lost");
}
