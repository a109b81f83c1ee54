//! The client id: its caches (ours and yt-dlp's), its refresh, a stale configured one.

use super::*;

#[tokio::test]
async fn client_id_is_cached_on_disk_for_the_next_instance() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(3, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(
        client(&sc, cache.path()).client_id().await.unwrap(),
        sc.client_id()
    );
    let text = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
    assert!(text.contains(&sc.client_id()));
    let web_before = sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset);
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    assert_eq!(l.tracks.len(), 3);
    assert_eq!(
        sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
        web_before
    );
    assert_eq!(l.requests, 1);
}

#[tokio::test]
async fn rotated_client_id_is_refreshed_once() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(50, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    c.list(&url(&set)).await.unwrap();
    let new_id = sc.rotate_client_id();
    sc.reset_counters();
    let l = c.list(&url(&set)).await.unwrap();
    assert_eq!(l.tracks.len(), 50);
    // 401 on resolve, page + script, resolve again, one batch.
    assert_eq!(sc.requests(Endpoint::Resolve), 2);
    assert_eq!(sc.requests(Endpoint::WebRoot), 1);
    assert_eq!(sc.requests(Endpoint::Tracks), 1);
    assert_eq!(l.requests, 5);
    assert_eq!(c.client_id().await.unwrap(), new_id);
    let cached = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
    assert!(cached.contains(&new_id));
}

#[tokio::test]
async fn stale_cache_file_is_replaced() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(2, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    client(&sc, cache.path()).client_id().await.unwrap();
    sc.rotate_client_id();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    assert_eq!(l.tracks.len(), 2);
}

#[tokio::test]
async fn configured_stale_client_id_says_how_to_fix_it() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(2, "u", "s"));
    let mut cfg = sc.config();
    cfg.client_id = Some("x".repeat(32));
    let cache = tempfile::tempdir().unwrap();
    let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
    let e = c.list(&url(&set)).await.unwrap_err();
    assert_eq!(e, SourceError::StaleConfiguredClientId { status: 401 });
    assert!(e.to_string().contains("remove soundcloud.client_id"), "{e}");
    assert_eq!(sc.requests(Endpoint::WebRoot), 0);
    cfg.client_id = Some(sc.client_id());
    let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
    assert_eq!(c.list(&url(&set)).await.unwrap().tracks.len(), 2);
}

#[tokio::test]
async fn a_scraped_id_is_shared_with_ytdlps_cache_in_its_format() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(3, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let theirs = ytdlp_client_id_file(cache.path());
    client(&sc, cache.path())
        .read_only()
        .client_id()
        .await
        .unwrap();
    assert!(!theirs.exists(), "a dry run writes no cache");
    let id = client(&sc, cache.path()).client_id().await.unwrap();
    let entry: Value = serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap();
    assert_eq!(entry["data"], id.as_str());
    assert!(entry["yt-dlp_version"].is_string(), "{entry}");
    assert_eq!(
        theirs,
        cache.path().join("yt-dlp/soundcloud/client_id.json")
    );

    // Our own cache gone: yt-dlp's is read, nothing is scraped.
    std::fs::remove_file(cache.path().join(CACHE_FILE)).unwrap();
    sc.reset_counters();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    assert_eq!(l.tracks.len(), 3);
    assert_eq!(
        sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
        0
    );

    // A refresh replaces both.
    let new = sc.rotate_client_id();
    client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    let text = std::fs::read_to_string(&theirs).unwrap();
    assert_eq!(parse_ytdlp_client_id(&text), Some(new.clone()));
    let ours = std::fs::read_to_string(cache.path().join(CACHE_FILE)).unwrap();
    assert!(ours.contains(&new));
    // No temporary file left beside them.
    let names: Vec<String> = std::fs::read_dir(theirs.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["client_id.json"]);
}
