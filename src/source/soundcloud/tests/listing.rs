//! Listing: order, batches, secret sets, unavailable and DRM tracks, sets that are not there.

use super::*;

#[tokio::test]
async fn big_public_set_costs_one_resolve_and_three_batches_in_order() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(120, "all-lo", "big-set");
    let expected: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let l = c.list(&url(&set)).await.unwrap();
    assert_eq!(ids_of(&l), expected);
    assert!(l.complete && l.incomplete_reason.is_none());
    assert!(
        l.tracks
            .iter()
            .all(|t| t.unavailable.is_none() && !t.track.title.is_empty())
    );
    assert_eq!(sc.requests(Endpoint::Resolve), 1);
    assert_eq!(sc.requests(Endpoint::Tracks), 3);
    assert!(sc.max_ids_per_request() <= BATCH);
    // Scraping costs the page and the last script (which has the id), then 4 API calls.
    assert_eq!(sc.requests(Endpoint::WebRoot), 1);
    assert_eq!(sc.requests(Endpoint::Asset), 1);
    assert_eq!(l.requests, 6);
    assert_eq!(c.requests(), 6);
    assert_eq!(l.title, "Big Set");
    assert_eq!(l.hidden, 0);
    // Mapping of one track.
    let t = &l.tracks[7].track;
    assert_eq!(t.key, TrackKey::soundcloud(expected[7]));
    assert_eq!(t.title, "Big Set 008");
    assert_eq!(t.artist, "Lo Collective");
    assert_eq!(
        t.url,
        format!("{}/lo-collective/big-set-008", sc.web_base())
    );
    assert_eq!(t.download_url, t.url);
    assert!(t.duration_ms.unwrap() >= 180_000);
    assert_eq!(t.genre.as_deref(), Some("Ambient"));
    // The fake serves its covers itself (as SoundCloud's image host does), at 500 px.
    let cover = t.artwork_url.as_deref().unwrap();
    assert!(
        cover.starts_with(&format!("{}/images/artworks-", sc.web_base())),
        "{cover}"
    );
    assert!(cover.ends_with("-t500x500.jpg"), "{cover}");
}

#[tokio::test]
async fn secret_set_unlocks_its_private_tracks() {
    let sc = FakeSoundCloud::start().await;
    let p = FakePlaylist::new(4242, "me", "drafts")
        .secret("s-Zq9XyW3")
        .full_prefix(1)
        .track(FakeTrack::new(1, "Public One", "A"))
        .track(FakeTrack::new(2, "Private Two", "B").private())
        .track(FakeTrack::new(3, "Public Three", "C"));
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    // As a user would paste it: share tracking and a trailing slash.
    let l = c
        .list(&url(&format!("{set}/?si=abc123&utm_source=clipboard")))
        .await
        .unwrap();
    assert_eq!(ids_of(&l), [1, 2, 3]);
    assert!(
        l.tracks.iter().all(|t| t.unavailable.is_none()),
        "{:?}",
        l.tracks
    );
    assert_eq!(l.tracks[1].track.title, "Private Two");
    assert!(
        l.tracks[1].track.url.contains("/s-"),
        "a private track's permalink carries its token"
    );
    let log = sc.request_log();
    let batch = log.iter().find(|r| r.endpoint == Endpoint::Tracks).unwrap();
    assert!(batch.target.contains("playlistId=4242"), "{}", batch.target);
    assert!(
        batch.target.contains("playlistSecretToken=s-Zq9XyW3"),
        "{}",
        batch.target
    );
    let resolve = log
        .iter()
        .find(|r| r.endpoint == Endpoint::Resolve)
        .unwrap();
    assert!(
        resolve.target.contains("s-Zq9XyW3") && !resolve.target.contains("si%3D"),
        "{}",
        resolve.target
    );
    // Without its token the set does not exist.
    let public = set.trim_end_matches("/s-Zq9XyW3");
    assert!(matches!(
        c.list(&url(public)).await,
        Err(SourceError::NotFound { .. })
    ));
}

#[tokio::test]
async fn unavailable_tracks_are_marked_and_the_rest_listed() {
    let sc = FakeSoundCloud::start().await;
    let p = FakePlaylist::new(9, "u", "mixed")
        .full_prefix(2)
        .track(FakeTrack::new(1, "Blocked Full", "A").policy(Policy::Block))
        .track(FakeTrack::new(2, "Snipped Full", "A").policy(Policy::Snip))
        .track(FakeTrack::new(3, "Fine", "A"))
        .track(FakeTrack::new(4, "Gone", "A").deleted())
        .track(FakeTrack::new(5, "Blocked Stub", "A").policy(Policy::Block))
        .track(FakeTrack::new(6, "Drm", "A").drm_only())
        .track(FakeTrack::new(7, "Private Elsewhere", "A").private())
        .track(FakeTrack::new(8, "Monetized", "A").policy(Policy::Monetize))
        .track(FakeTrack::new(9, "Muted", "A").not_streamable())
        .track(FakeTrack::new(10, "Label", "A").drm())
        .hidden(2);
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    use UnavailableReason::*;
    let reasons: Vec<Option<UnavailableReason>> = l.tracks.iter().map(|t| t.unavailable).collect();
    assert_eq!(
        reasons,
        [
            Some(GeoBlocked),
            Some(PreviewOnly),
            None,
            Some(NotReturned),
            Some(GeoBlocked),
            Some(DrmOnly),
            Some(NotReturned),
            None,
            None,
            None,
        ]
    );
    // `streamable: false` is a hint: nothing is decided without a download.
    assert!(l.tracks[8].drm_check.is_none());
    // A DRM label track is known only by asking its clear stream: it carries the check.
    let check = l.tracks[9].drm_check.as_ref().expect("a DRM check");
    assert!(
        check.transcoding_url.ends_with("/stream/hls"),
        "{}",
        check.transcoding_url
    );
    assert!(l.tracks.iter().take(9).all(|t| t.drm_check.is_none()));
    assert!(l.complete);
    assert_eq!(l.hidden, 2);
    assert_eq!(l.tracks[3].track.key, TrackKey::soundcloud(4));
    assert_eq!(l.tracks[4].track.title, "Blocked Stub");
    // SNIP reports the real length, not the 30 s preview.
    assert_eq!(
        l.tracks[1].track.duration_ms,
        Some(FakeTrack::new(2, "x", "y").duration_ms)
    );
}

#[tokio::test]
async fn the_stream_hands_on_one_batch_at_a_time_in_order_and_stops_when_told() {
    let sc = FakeSoundCloud::start().await;
    // 5 full objects, then 115 stubs: three batches.
    let p = playlist_of(120, "u", "s");
    let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let mut sizes = vec![];
    let mut ids = vec![];
    let end = c
        .list_streamed(&url(&set), &CancellationToken::new(), |batch| {
            sizes.push(batch.len());
            ids.extend(batch.iter().map(|t| t.track.soundcloud_id.unwrap()));
            Ok::<(), SourceError>(())
        })
        .await
        .unwrap();
    assert_eq!(sizes, [5 + BATCH, BATCH, 15]);
    assert_eq!(ids, all);
    assert!(end.complete && end.incomplete_reason.is_none());
    assert_eq!(sc.requests(Endpoint::Tracks), 3);
    // The whole listing is the stream collected.
    let whole = c.list(&url(&set)).await.unwrap();
    assert_eq!(ids_of(&whole), all);

    // An error from the consumer ends the listing there: no further batch is fetched.
    let before = sc.requests(Endpoint::Tracks);
    let e = c
        .list_streamed(&url(&set), &CancellationToken::new(), |_| {
            Err(SourceError::Setup {
                reason: "stop".into(),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(
        e,
        SourceError::Setup {
            reason: "stop".into()
        }
    );
    assert_eq!(sc.requests(Endpoint::Tracks), before + 1);
}

#[tokio::test]
async fn failing_batch_makes_the_listing_incomplete_without_marking_tracks() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(155, "u", "s");
    let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    c.client_id().await.unwrap();
    // 150 stubs: the first batch succeeds, the second fails on all 4 attempts, the third
    // succeeds.
    sc.inject(Endpoint::Tracks, Fault::Delay(Duration::ZERO), 1);
    sc.inject(Endpoint::Tracks, Fault::Status(500), 4);
    let l = c.list(&url(&set)).await.unwrap();
    assert!(!l.complete);
    let reason = l.incomplete_reason.as_deref().unwrap();
    assert!(
        reason.contains("HTTP 500") && reason.contains("batch 2 of 3"),
        "{reason}"
    );
    assert!(l.tracks.iter().all(|t| t.unavailable.is_none()));
    let expected: Vec<u64> = all[..55].iter().chain(&all[105..]).copied().collect();
    assert_eq!(ids_of(&l), expected);
    assert_eq!(sc.requests(Endpoint::Tracks), 1 + 4 + 1);
}

#[tokio::test]
async fn unknown_set_is_not_found_with_the_fix() {
    let sc = FakeSoundCloud::start().await;
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let e = c
        .list(&url(&format!("{}/nobody/sets/nothing", sc.web_base())))
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("secret /s-"), "{e}");
    assert_eq!(sc.requests(Endpoint::Resolve), 1, "404 is not retried");
}

#[tokio::test]
async fn deleted_or_privatized_set_is_not_found() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(3, "u", "s");
    let pid = p.id;
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let secret = sc.make_private(pid).unwrap();
    assert!(matches!(
        c.list(&url(&set)).await,
        Err(SourceError::NotFound { .. })
    ));
    assert_eq!(c.list(&url(&secret)).await.unwrap().tracks.len(), 3);
    sc.delete_playlist(pid);
    assert!(matches!(
        c.list(&url(&secret)).await,
        Err(SourceError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_track_or_user_url_is_not_a_playlist() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(playlist_of(1, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let track = sc.track_url(playlist_of(1, "u", "s").tracks[0].id).unwrap();
    let e = c.list(&url(&track)).await.unwrap_err();
    assert!(e.to_string().contains("is a track, not a playlist"), "{e}");
    let user = format!("{}/u", sc.web_base());
    let e = c.list(&url(&user)).await.unwrap_err();
    assert!(e.to_string().contains("is a user, not a playlist"), "{e}");
}

#[tokio::test]
async fn empty_set_and_all_full_and_all_stub_sets() {
    let sc = FakeSoundCloud::start().await;
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let empty = sc.add_playlist(FakePlaylist::new(1, "u", "empty"));
    let l = c.list(&url(&empty)).await.unwrap();
    assert!(l.tracks.is_empty() && l.complete);
    assert_eq!(l.requests, 3, "scrape (2) + resolve, no batch");
    let stubs = sc.add_playlist(playlist_of(51, "u", "stubs").full_prefix(0));
    let l = c.list(&url(&stubs)).await.unwrap();
    assert_eq!(l.tracks.len(), 51);
    assert_eq!(l.requests, 3, "resolve + 50 + 1");
    let full = sc.add_playlist(playlist_of(4, "u", "full"));
    assert_eq!(c.list(&url(&full)).await.unwrap().requests, 1);
}

#[tokio::test]
async fn artist_falls_back_to_uploader_and_artwork_to_avatar() {
    let sc = FakeSoundCloud::start().await;
    let p = FakePlaylist::new(3, "u", "s")
        .full_prefix(1)
        .track(FakeTrack::new(1, "One", "Label Artist").uploader("Uploader Name"))
        .track(
            FakeTrack::new(2, "Two", "x")
                .uploader("Only Uploader")
                .no_publisher_artist()
                .artwork(None),
        )
        .track(
            FakeTrack::new(3, "Three", "x")
                .no_publisher_artist()
                .artwork(None)
                .avatar(None)
                .genre(""),
        );
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    assert_eq!(l.tracks[0].track.artist, "Label Artist");
    assert_eq!(l.tracks[1].track.artist, "Only Uploader");
    let avatar = l.tracks[1].track.artwork_url.as_deref().unwrap();
    assert!(avatar.contains("avatars-"), "{avatar}");
    assert!(
        avatar.ends_with("-t500x500.jpg"),
        "the fallback is 500 px too: {avatar}"
    );
    let cover = l.tracks[0].track.artwork_url.as_deref().unwrap();
    assert!(cover.ends_with("-t500x500.jpg"), "{cover}");
    assert_eq!(l.tracks[2].track.artwork_url, None);
    assert_eq!(l.tracks[2].track.genre, None);
}

#[tokio::test]
async fn duplicate_entries_are_listed_once() {
    let sc = FakeSoundCloud::start().await;
    let t = FakeTrack::new(5, "Twice", "A");
    let set = sc.add_playlist(
        FakePlaylist::new(3, "u", "s")
            .full_prefix(0)
            .track(t.clone())
            .track(FakeTrack::new(6, "Once", "B"))
            .track(t),
    );
    let cache = tempfile::tempdir().unwrap();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    assert_eq!(ids_of(&l), [5, 6]);
}

#[test]
fn covers_are_asked_at_500_px() {
    let a = |u: &str| artwork_500(u.to_string());
    assert_eq!(
        a("https://i1.sndcdn.com/artworks-000484833429-0bon3i-large.jpg"),
        "https://i1.sndcdn.com/artworks-000484833429-0bon3i-t500x500.jpg"
    );
    assert_eq!(
        a("https://i1.sndcdn.com/avatars-0001-large.png"),
        "https://i1.sndcdn.com/avatars-0001-t500x500.png"
    );
    // Only the size in the file name: anything else is left as it is.
    for kept in [
        "https://i1.sndcdn.com/artworks-1-t500x500.jpg",
        "https://i1.sndcdn.com/artworks-1-original.jpg",
        "https://example.com/x-large.dir/cover.jpg",
    ] {
        assert_eq!(a(kept), kept);
    }
}

#[tokio::test]
async fn a_drm_check_asks_the_clear_stream_once() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(
        FakePlaylist::new(7, "u", "label")
            .full_prefix(1)
            .track(FakeTrack::new(1, "Label Full", "A").drm())
            .track(FakeTrack::new(2, "Label Stub", "A").drm())
            .track(FakeTrack::new(3, "Locked", "A").drm_only())
            .track(FakeTrack::new(4, "Upload", "A")),
    );
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    let l = c.list(&url(&set)).await.unwrap();
    let checks: Vec<bool> = l.tracks.iter().map(|t| t.drm_check.is_some()).collect();
    assert_eq!(checks, [true, true, false, false]);
    assert_eq!(l.tracks[2].unavailable, Some(UnavailableReason::DrmOnly));
    assert_eq!(
        sc.media_requests(1) + sc.media_requests(2),
        0,
        "listing asks nothing"
    );

    let never = CancellationToken::new();
    for i in [0, 1] {
        let check = l.tracks[i].drm_check.as_ref().unwrap();
        let id = l.tracks[i].track.soundcloud_id.unwrap();
        assert_eq!(
            c.check_stream(id, check, &never).await,
            Ok(StreamCheck::DrmProtected)
        );
        assert_eq!(sc.media_requests(id), 1);
    }
    let asked = sc
        .request_log()
        .into_iter()
        .rfind(|r| r.endpoint == Endpoint::Media)
        .unwrap();
    assert!(asked.target.contains("/stream/hls?"), "{}", asked.target);
    assert!(
        asked
            .target
            .contains("track_authorization=eyJ0eXAiOiJKV1QifQ.fake-2"),
        "{}",
        asked.target
    );
    // A clear stream that answers is a track that plays.
    let upload = DrmCheck {
        transcoding_url: format!("{}/media/soundcloud:tracks:4/a1/stream/hls", sc.api_base()),
        track_authorization: None,
    };
    assert_eq!(
        c.check_stream(4, &upload, &never).await,
        Ok(StreamCheck::Plays)
    );
    // A transcoding URL on the public host is asked on the configured API host.
    let public = DrmCheck {
        transcoding_url: "https://api-v2.soundcloud.com/media/soundcloud:tracks:2/d1/stream/hls"
            .into(),
        track_authorization: None,
    };
    assert_eq!(
        c.check_stream(2, &public, &never).await,
        Ok(StreamCheck::DrmProtected)
    );
    assert_eq!(sc.media_requests(2), 2);
}

#[tokio::test]
async fn only_clear_full_length_streams_reach_the_downloader() {
    use playlistd_fakes::soundcloud::Layout;
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(
        FakePlaylist::new(5, "me", "streams")
            .full_prefix(1)
            .track(FakeTrack::new(1, "Aac", "A"))
            .track(FakeTrack::new(2, "Both", "B").layout(Layout::AacAndMp3)),
    );
    let cache = tempfile::tempdir().unwrap();
    let l = client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    let presets = |i: usize| -> Vec<String> {
        let m = l.tracks[i].track.media.as_ref().expect("media");
        m.streams
            .iter()
            .map(|s| format!("{} {}", s.protocol, s.preset))
            .collect()
    };
    // The fake lists the login-only `hq` stream and an `abr_sq` one too: never taken.
    assert_eq!(presets(0), ["hls aac_160k"]);
    assert_eq!(
        presets(1),
        ["hls aac_160k", "progressive mp3_1_0", "hls mp3_1_0"]
    );
    assert!(
        l.tracks[0]
            .track
            .media
            .as_ref()
            .unwrap()
            .track_authorization
            .is_some()
    );
}
