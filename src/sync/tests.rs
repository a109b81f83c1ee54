//! Engine-level scenarios that need the inside of a sync (its chunking, its dry run).
use super::*;
use crate::model::TrackKey;
use crate::sandbox::Sandbox;
use playlistd_fakes::notion::{Endpoint as N, FakeNotionOptions, Fault};
use playlistd_fakes::soundcloud::playlist_of;

/// A sandbox watching one playlist of `n` new tracks, downloads off.
async fn sandbox(n: usize) -> (Sandbox, Engine, PlaylistConfig) {
    let mut sb = Sandbox::start(None, FakeNotionOptions::default())
        .await
        .unwrap();
    sb.downloads = false;
    let url = sb.sc.add_playlist(playlist_of(n, "u", "big"));
    sb.watch("Big", &url);
    let engine = sb.engine(true).unwrap();
    let pl = engine.config.playlist("Big").unwrap().clone();
    (sb, engine, pl)
}

#[tokio::test]
async fn a_failed_lookup_chunk_creates_nothing_and_fails_every_new_track() {
    // 150 new tracks are looked up in two chunks. How many queries a clean run makes (the
    // playlist's own page, the two lookups) is read from one, so that the second
    // lookup, the run's last query, is the one that fails below.
    let (sb, engine, pl) = sandbox(150).await;
    let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
    result.unwrap();
    assert_eq!(r.created.len(), 150);
    let queries = sb.notion.count(N::Query);

    let (sb, engine, pl) = sandbox(150).await;
    sb.notion
        .inject(N::Query, Fault::Delay(Duration::ZERO), queries as u32 - 1);
    sb.notion.inject(N::Query, Fault::Status(500), 50);
    let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
    result.unwrap();
    // (The one create is the playlist's own page, in the playlists database.)
    assert_eq!(
        sb.notion.pages().len(),
        0,
        "nothing created without a lookup"
    );
    assert_eq!(r.created.len() + r.adopted.len(), 0);
    assert_eq!(r.failed.len(), 150, "{:?}", r.failed.first());
    assert!(
        r.failed
            .iter()
            .all(|f| f.error.starts_with("lookup failed"))
    );
    // In listing order, each once.
    let keys: Vec<&TrackKey> = r.failed.iter().map(|f| &f.key).collect();
    let store = engine.store();
    let members = store.lock().unwrap().state.playlists["Big"].members.clone();
    assert_eq!(keys, members.iter().collect::<Vec<_>>());

    // Once the backoff is cleared, the next run creates each page once.
    sb.notion.clear_faults();
    store.lock().unwrap().clear_backoff(None).unwrap();
    let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
    result.unwrap();
    assert_eq!(r.created.len(), 150);
    assert_eq!(sb.notion.pages().len(), 150);
}

#[tokio::test]
async fn a_dry_run_reports_the_work_and_leaves_the_state_and_notion_alone() {
    let (sb, engine, pl) = sandbox(120).await;
    let dry = SyncOptions {
        dry_run: true,
        ..Default::default()
    };
    let (r, result) = engine.sync(&pl, &dry).await;
    result.unwrap();
    assert_eq!((r.listed, r.created.len()), (120, 120));
    assert_eq!(sb.notion.count(N::Create), 0);
    let store = engine.store();
    assert_eq!(store.lock().unwrap().state.tracks.len(), 0);
    assert!(store.lock().unwrap().state.playlists.is_empty());
    assert_eq!(sb.state().tracks.len(), 0);
    // The pending work left nothing behind (the client-id caches, ours and yt-dlp's, may be there).
    let cache = sb.cache_dir();
    let left: Vec<String> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != crate::source::soundcloud::CACHE_FILE && n != crate::ytdlp::cache::YTDLP_CACHE_DIR
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A real run after it does all of it.
    let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
    result.unwrap();
    assert_eq!(r.created.len(), 120);
    assert_eq!(sb.notion.pages().len(), 120);
}

#[test]
fn run_stopping_errors_name_the_problem_a_person_must_fix() {
    use crate::source::SourceError;
    let notion = |e: NotionError| SyncError::Notion(e);
    let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
    let cases: Vec<(SyncError, Option<ProblemKind>)> = vec![
        (
            notion(NotionError::Unauthorized {
                message: "API token is invalid.".into(),
            }),
            Some(ProblemKind::NotionToken),
        ),
        (
            notion(NotionError::Token("no token".into())),
            Some(ProblemKind::NotionToken),
        ),
        (
            notion(NotionError::NotFound {
                what: "the database".into(),
                message: "not shared".into(),
            }),
            Some(ProblemKind::NotionAccess),
        ),
        (
            notion(NotionError::Forbidden {
                what: "x".into(),
                code: "restricted_resource".into(),
                message: "m".into(),
            }),
            Some(ProblemKind::NotionAccess),
        ),
        (notion(NotionError::Blocked), None),
        (
            SyncError::Source(SourceError::Blocked {
                what: "the playlist".into(),
                host: "soundcloud.com".into(),
            }),
            Some(ProblemKind::SoundcloudBlocked),
        ),
        (
            SyncError::Source(SourceError::ClientId {
                reason: "none of 3 scripts".into(),
            }),
            Some(ProblemKind::SoundcloudClientId),
        ),
        (
            SyncError::Source(SourceError::StaleConfiguredClientId { status: 401 }),
            Some(ProblemKind::SoundcloudClientId),
        ),
        (
            SyncError::Source(SourceError::NotFound { url: "u".into() }),
            None,
        ),
        (
            SyncError::State(StateError::Io {
                action: "write",
                path: "/s/state.db".into(),
                source: full,
            }),
            Some(ProblemKind::DiskFull),
        ),
        (SyncError::Cancelled, None),
    ];
    for (e, want) in cases {
        assert_eq!(e.problem(), want, "{e}");
    }
}
