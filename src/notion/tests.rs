//! Scenario tests of the sink against the fake Notion server: discovery, mapping, batching,
//! writes, and every failure mode the retry policy must survive without duplicating a page:
//! lost answers, a query index that lags behind creates, a spent run budget, an unreachable
//! host, relations too long for one write. Also the texts of every error.

use super::*;
use crate::config::{PropertyNames, TokenSource};
use crate::model::{Track, TrackKey};
use playlistd_fakes::notion::{
    DatabaseSpec, Endpoint, FakeNotion, FakeNotionOptions, Fault, PropKind,
};
use std::time::{Duration, Instant};

/// What a page is told of a downloaded file alone (no copies, no analysis).
fn files(path: &str) -> crate::notion::PageFiles {
    crate::notion::PageFiles {
        original: Some(std::path::PathBuf::from(path)),
        ..Default::default()
    }
}

fn cfg(f: &FakeNotion) -> NotionConfig {
    NotionConfig {
        database_id: compact_id(&f.database_id()),
        data_source_id: None,
        token: TokenSource::Env("PLAYLISTD_TEST_TOKEN_UNUSED".into()),
        api_base: url::Url::parse(&f.api_base()).unwrap(),
        version: "2025-09-03".into(),
        requests_per_minute: 60_000,
        properties: PropertyNames::default(),
        lookup_batch: 100,
        match_title_artist: false,
        timeout: Duration::from_secs(5),
        key_notation: Default::default(),
        overwrite_analysis: false,
    }
}

fn client(f: &FakeNotion, c: &NotionConfig) -> Notion {
    client_with(f, c, ClientOptions::for_tests())
}

fn client_with(f: &FakeNotion, c: &NotionConfig, opts: ClientOptions) -> Notion {
    Notion::with_options(c, &Secret::new(f.token()), opts).unwrap()
}

async fn connect_cfg(f: &FakeNotion, c: &NotionConfig) -> Result<Sink, NotionError> {
    client(f, c).connect().await
}

async fn connect(f: &FakeNotion) -> Sink {
    connect_cfg(f, &cfg(f)).await.expect("connect")
}

fn track(i: u64) -> Track {
    let url = format!("https://soundcloud.com/artist/track-{i}");
    Track {
        key: TrackKey::soundcloud(i),
        soundcloud_id: Some(i),
        title: format!("Track {i}"),
        artist: "Artist".into(),
        url: url.clone(),
        download_url: url,
        duration_ms: Some(200_500),
        genre: None,
        artwork_url: None,
        media: None,
    }
}

#[tokio::test]
async fn discovers_single_and_multiple_data_sources() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    assert_eq!(
        compact_id(n.data_source_id()),
        compact_id(&f.data_source_id())
    );
    let who = client(&f, &cfg(&f)).whoami().await.unwrap();
    assert_eq!(who.workspace_name, "Fake Workspace");
    assert!(who.to_string().contains("Fake Workspace"));

    let mut o = FakeNotionOptions::default();
    o.databases[0] = DatabaseSpec::music_tracks().with_data_source(
        "Archive",
        vec![("Name", PropKind::Title), ("SoundCloud URL", PropKind::Url)],
    );
    let f = FakeNotion::start(o).await;
    let e = connect_cfg(&f, &cfg(&f)).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"Music Tracks\"")
            && msg.contains("\"Archive\"")
            && msg.contains("notion.data_source"),
        "{msg}"
    );
    assert!(e.is_fatal());
    let mut c = cfg(&f);
    c.data_source_id = Some(f.data_source_ids()[1].clone());
    let n = connect_cfg(&f, &c).await.unwrap();
    assert_eq!(n.mapping().get(Role::Title).unwrap().name, "Name");
    assert_eq!(n.data_sources().len(), 2);
}

#[tokio::test]
async fn maps_properties_by_default_names_and_by_config() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let name = |r: Role| n.mapping().get(r).map(|p| p.name.clone());
    assert_eq!(name(Role::Title).as_deref(), Some("Title"));
    assert_eq!(name(Role::Artist).as_deref(), Some("Artist Name"));
    assert_eq!(name(Role::Url).as_deref(), Some("SoundCloud URL"));
    assert_eq!(name(Role::Playlists).as_deref(), Some("Playlists"));
    assert_eq!(
        name(Role::Duration).as_deref(),
        Some("Audio Duration (seconds)")
    );
    assert_eq!(name(Role::SoundCloudId), None);
    // The replaced system's columns (reference/seed-system.md §1).
    assert_eq!(name(Role::Tempo).as_deref(), Some("Tempo"));
    assert_eq!(name(Role::Key).as_deref(), Some("Key"));
    assert_eq!(name(Role::AiffPath).as_deref(), Some("AIFF File Path"));
    assert_eq!(name(Role::WavPath).as_deref(), Some("WAV File Path"));
    assert_eq!(name(Role::M4aPath).as_deref(), Some("M4A File Path"));
    assert_eq!(n.mapping_table().len(), 15);

    let f = FakeNotion::start(FakeNotionOptions::with_tracks(vec![
        ("Name", PropKind::Title),
        ("Artist", PropKind::RichText),
        ("SoundCloud", PropKind::Url),
        ("Playlists", PropKind::MultiSelect),
        ("Genre", PropKind::Number),
        ("Track Genre", PropKind::Select),
    ]))
    .await;
    let n = connect(&f).await;
    assert_eq!(n.mapping().get(Role::Title).unwrap().name, "Name");
    assert_eq!(n.mapping().get(Role::Artist).unwrap().name, "Artist");
    assert_eq!(n.mapping().get(Role::Url).unwrap().name, "SoundCloud");
    assert_eq!(
        n.mapping().get(Role::Playlists).unwrap().kind,
        PropType::MultiSelect
    );
    assert!(
        n.mapping().get(Role::Genre).is_none(),
        "a wrong-typed default is skipped"
    );
    assert_eq!(n.mapping().warnings().len(), 1);

    let mut c = cfg(&f);
    c.properties.genre = Some("Track Genre".into());
    c.properties.artist = Some("".into());
    let n = connect_cfg(&f, &c).await.unwrap();
    assert_eq!(n.mapping().get(Role::Genre).unwrap().name, "Track Genre");
    assert!(n.mapping().get(Role::Artist).is_none());

    c.properties.genre = Some("Genre".into());
    let e = connect_cfg(&f, &c).await.unwrap_err().to_string();
    assert!(
        e.contains("\"Genre\"")
            && e.contains("number")
            && e.contains("select or multi_select or rich_text")
            && e.contains("fix:"),
        "{e}"
    );

    let f = FakeNotion::start(FakeNotionOptions::with_tracks(vec![
        ("Name", PropKind::Title),
        ("Artist", PropKind::RichText),
    ]))
    .await;
    let e = connect_cfg(&f, &cfg(&f)).await.unwrap_err().to_string();
    assert!(e.contains("SoundCloud URL") && e.contains("fix:"), "{e}");
}

#[tokio::test]
async fn lookup_is_batched_and_finds_seeded_pages() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let tracks: Vec<Track> = (1..=250).map(track).collect();
    let old = f.seed_track("Track 7", "Artist", "https://soundcloud.com/artist/track-7");
    let newer = f.seed_track(
        "Track 7 (dupe)",
        "Artist",
        "https://soundcloud.com/artist/track-7",
    );
    let p120 = f.seed_track(
        "Track 120",
        "Artist",
        "https://soundcloud.com/artist/track-120",
    );
    let p250 = f.seed_track(
        "Renamed upstream",
        "Someone",
        "https://soundcloud.com/artist/track-250",
    );
    f.seed_track("Unrelated", "X", "https://soundcloud.com/x/y");
    let n = connect(&f).await;
    f.clear_log();
    let found = n.lookup(&tracks).await.unwrap();
    assert_eq!(f.count(Endpoint::Query), 3, "250 tracks in batches of 100");
    assert_eq!(f.request_count(), 3);
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[&TrackKey::soundcloud(7)].page_id,
        old,
        "the oldest of two matches wins"
    );
    assert_ne!(old, newer);
    assert_eq!(found[&TrackKey::soundcloud(120)].page_id, p120);
    assert_eq!(found[&TrackKey::soundcloud(250)].page_id, p250);
    assert_eq!(found[&TrackKey::soundcloud(7)].downloaded, Some(false));

    // Title + artist matching, within the two-level nesting limit.
    let mut c = cfg(&f);
    c.match_title_artist = true;
    c.lookup_batch = 50;
    let n = connect_cfg(&f, &c).await.unwrap();
    let mut t = track(999);
    t.title = "Unrelated".into();
    t.artist = "X".into();
    let found = n.lookup(&[t]).await.unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn create_writes_the_right_properties_and_cover() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let tag = n
        .playlist_tag(
            "Late Night",
            "https://soundcloud.com/u/sets/late-night",
            None,
        )
        .await
        .unwrap();
    let playlist_page = tag.page_id().unwrap().to_string();
    let pl = f.pages_in(&f.playlists_data_source_id());
    assert_eq!(pl.len(), 1);
    assert_eq!(pl[0].text("Name"), "Late Night");
    assert_eq!(
        pl[0].url("Playlist URL").as_deref(),
        Some("https://soundcloud.com/u/sets/late-night")
    );
    // Found again by title, not created twice (fresh client, no cache).
    let again = connect(&f)
        .await
        .playlist_tag("Late Night", "", None)
        .await
        .unwrap();
    assert_eq!(again.page_id(), Some(playlist_page.as_str()));

    let mut t = track(42);
    t.title = format!("Long\u{0}{}", "x".repeat(4500));
    t.genre = Some("Rock, Pop".into());
    t.artwork_url = Some("https://i1.sndcdn.com/artworks-000-t500x500.jpg".into());
    let id = n
        .create(
            &t,
            &tag,
            "https://soundcloud.com/u/sets/late-night",
            Some(&files("/music/Late Night/x.m4a")),
        )
        .await
        .unwrap();
    let p = f.page(&id).unwrap();
    assert_eq!(p.text("Title"), format!("Long{}", "x".repeat(4500)));
    assert_eq!(p.properties["Title"]["title"].as_array().unwrap().len(), 3);
    assert_eq!(p.text("Artist Name"), "Artist");
    assert_eq!(
        p.url("SoundCloud URL").as_deref(),
        Some("https://soundcloud.com/artist/track-42")
    );
    assert_eq!(p.relation("Playlists"), vec![playlist_page.clone()]);
    assert_eq!(
        p.url("Playlist URL").as_deref(),
        Some("https://soundcloud.com/u/sets/late-night")
    );
    assert_eq!(p.select("Genre").as_deref(), Some("Rock / Pop"));
    assert_eq!(p.number("Audio Duration (seconds)"), Some(201.0));
    assert_eq!(p.checkbox("Downloaded"), Some(true));
    assert_eq!(p.text("File Path"), "/music/Late Night/x.m4a");
    assert_eq!(
        p.cover.as_deref(),
        Some("https://i1.sndcdn.com/artworks-000-t500x500.jpg")
    );
    assert_eq!(p.number("Tempo"), None, "untouched properties stay empty");

    // Without a download, no checkbox or path is sent; an empty playlist URL is not sent.
    let id2 = n.create(&track(43), &tag, "", None).await.unwrap();
    let p2 = f.page(&id2).unwrap();
    assert_eq!(p2.url("Playlist URL"), None);
    assert_eq!(p2.text("File Path"), "");

    // A cached playlist page id costs one read; a trashed one is replaced.
    f.clear_log();
    let fresh = connect(&f).await;
    let cached = fresh
        .playlist_tag("Late Night", "", Some(&playlist_page))
        .await
        .unwrap();
    assert_eq!(cached.page_id(), Some(playlist_page.as_str()));
    assert_eq!(
        (f.count(Endpoint::GetPage), f.request_count()),
        (1, 3),
        "database + data source + page"
    );
    f.trash_page(&playlist_page);
    let fresh = connect(&f).await;
    let replaced = fresh
        .playlist_tag("Late Night", "u", Some(&playlist_page))
        .await
        .unwrap();
    assert_ne!(replaced.page_id(), Some(playlist_page.as_str()));
    assert_eq!(f.pages_in(&f.playlists_data_source_id()).len(), 1);
}

#[tokio::test]
async fn playlist_updates_preserve_other_values() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let pls = f.playlists_data_source_id();
    // 30 relations: more than the 25 a page object carries.
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(f.seed_page_in(
            &pls,
            serde_json::json!({"Name": {"title": [{"text": {"content": format!("P{i}")}}]}}),
        ));
    }
    let rel: Vec<_> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
    let page = f.seed_page(serde_json::json!({
        "Title": {"title": [{"text": {"content": "Track 1"}}]},
        "SoundCloud URL": {"url": "https://soundcloud.com/artist/track-1"},
        "Playlists": {"relation": rel},
    }));
    let existing = n
        .lookup(&[track(1)])
        .await
        .unwrap()
        .remove(&TrackKey::soundcloud(1))
        .unwrap();
    assert_eq!(existing.playlists.len(), 30);
    let tag = n.playlist_tag("New One", "", None).await.unwrap();
    let other = n.playlist_tag("Other", "", None).await.unwrap();
    f.clear_log();
    assert!(n.add_playlist(&existing, &tag).await.unwrap());
    assert!(
        !n.add_playlist(&existing, &tag).await.unwrap(),
        "already there: no request"
    );
    // A second sync holding the same (now stale) snapshot keeps the first one's playlist.
    assert!(n.clone().add_playlist(&existing, &other).await.unwrap());
    assert_eq!(f.count(Endpoint::Update), 2);
    assert_eq!(f.page(&page).unwrap().relation("Playlists").len(), 32);
    let first = PlaylistTag::Relation {
        name: "P0".into(),
        page_id: ids[0].clone(),
    };
    assert!(n.remove_playlist(&existing, &first).await.unwrap());
    let now = f.page(&page).unwrap().relation("Playlists");
    assert_eq!(now.len(), 31);
    assert!(!now.contains(&ids[0]));
    let fetched = n.page(&page).await.unwrap().unwrap();
    assert_eq!(fetched.playlists.len(), 31);
    assert_eq!(
        n.page("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap(),
        None
    );

    n.set_downloaded(&page, &files("/m/a.mp3")).await.unwrap();
    let p = f.page(&page).unwrap();
    assert_eq!(
        (p.checkbox("Downloaded"), p.text("File Path").as_str()),
        (Some(true), "/m/a.mp3")
    );
    n.trash(&page).await.unwrap();
    assert!(f.page(&page).unwrap().in_trash);
    assert!(
        n.lookup(&[track(1)]).await.unwrap().is_empty(),
        "trashed pages are not found"
    );
    assert_eq!(n.page(&page).await.unwrap(), None);

    // multi_select playlists keep their other names; nothing mapped means no request at all.
    let f = FakeNotion::start(FakeNotionOptions::with_tracks(vec![
        ("Name", PropKind::Title),
        ("SoundCloud", PropKind::Url),
        ("Playlists", PropKind::MultiSelect),
    ]))
    .await;
    let n = connect(&f).await;
    let page = f.seed_page(serde_json::json!({
        "SoundCloud": {"url": "https://soundcloud.com/artist/track-1"},
        "Playlists": {"multi_select": [{"name": "Old"}]},
    }));
    let tag = n.playlist_tag("Chill, Vibes", "", None).await.unwrap();
    assert_eq!(tag, PlaylistTag::Name("Chill / Vibes".into()));
    let existing = n
        .lookup(&[track(1)])
        .await
        .unwrap()
        .remove(&TrackKey::soundcloud(1))
        .unwrap();
    assert_eq!(existing.downloaded, None);
    n.add_playlist(&existing, &tag).await.unwrap();
    assert_eq!(
        f.page(&page).unwrap().multi_select("Playlists"),
        vec!["Old".to_string(), "Chill / Vibes".to_string()]
    );
    f.clear_log();
    n.set_downloaded(&page, &files("/x")).await.unwrap();
    assert_eq!(f.request_count(), 0);
}

#[tokio::test]
async fn unknown_property_is_a_validation_error_for_that_track_only() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    f.rename_property("Artist Name", "Artist (old)");
    let e = n
        .create(&track(1), &PlaylistTag::None, "", None)
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Validation { .. }), "{e:?}");
    assert!(!e.is_fatal());
    assert!(
        e.to_string()
            .contains("Artist Name is not a property that exists."),
        "{e}"
    );
    assert_eq!(f.count(Endpoint::Create), 1, "a 400 is not retried");
    assert!(f.pages().is_empty());
}

#[tokio::test]
async fn honours_retry_after_and_retries_query_failures() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    f.seed_track("Track 1", "Artist", "https://soundcloud.com/artist/track-1");
    f.clear_log();
    f.inject(
        Endpoint::Query,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    let t0 = Instant::now();
    assert_eq!(n.lookup(&[track(1)]).await.unwrap().len(), 1);
    assert!(
        t0.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(f.count(Endpoint::Query), 2);

    f.clear_log();
    f.inject(Endpoint::Query, Fault::Status(500), 1);
    f.inject(Endpoint::Query, Fault::Status(502), 1);
    f.inject(Endpoint::Query, Fault::CloudflareHtml, 1);
    f.inject(Endpoint::Query, Fault::ResetBefore, 1);
    f.inject(Endpoint::Query, Fault::Status(409), 1);
    assert_eq!(n.lookup(&[track(1)]).await.unwrap().len(), 1);
    assert_eq!(f.count(Endpoint::Query), 6);

    // Retries are bounded by the per-request ceiling: the error says what failed and that
    // the next run retries.
    f.clear_log();
    f.inject(Endpoint::Query, Fault::Status(503), 20);
    let e = n.lookup(&[track(1)]).await.unwrap_err();
    assert!(e.is_transient() && !e.is_fatal(), "{e:?}");
    assert!(e.to_string().contains("after 12 attempt(s)"), "{e}");
    assert!(e.to_string().contains("Notion may be down or slow"), "{e}");
    assert_eq!(f.count(Endpoint::Query), 12);
    f.clear_faults();

    // A connection that broke after it was made is Notion's trouble, not the network's: the
    // full ceiling, and no "check the network".
    f.clear_log();
    f.inject(Endpoint::Query, Fault::ResetBefore, 20);
    let e = n.lookup(&[track(1)]).await.unwrap_err();
    assert!(matches!(e, NotionError::Unavailable { .. }), "{e:?}");
    assert_eq!(f.count(Endpoint::Query), 12);
    f.clear_faults();

    // A blocked integration is never retried.
    f.clear_log();
    f.inject(Endpoint::Query, Fault::Blocked, 1);
    let e = n.lookup(&[track(1)]).await.unwrap_err();
    assert!(matches!(e, NotionError::Blocked) && e.is_fatal());
    assert_eq!(f.count(Endpoint::Query), 1);
}

#[tokio::test]
async fn create_adopts_the_committed_page_on_503() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    f.inject(Endpoint::Create, Fault::SavedButUnavailable, 1);
    let id = n
        .create(&track(5), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    assert_eq!(f.pages().len(), 1);
    assert_eq!(f.pages()[0].id, id);
    assert_eq!(f.count(Endpoint::Create), 1);
    assert_eq!(
        f.count(Endpoint::Query),
        0,
        "the committed id needs no lookup"
    );
}

#[tokio::test]
async fn create_with_lost_answer_adopts_the_saved_page() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let mut c = cfg(&f);
    c.timeout = Duration::from_millis(500);
    let n = connect_cfg(&f, &c).await.unwrap();

    f.inject(Endpoint::Create, Fault::ResetAfter, 1);
    let id = n
        .create(&track(1), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    assert_eq!(
        f.pages_with_url("https://soundcloud.com/artist/track-1")
            .len(),
        1
    );
    assert_eq!(
        f.pages_with_url("https://soundcloud.com/artist/track-1")[0].id,
        id
    );
    assert_eq!(f.count(Endpoint::Create), 1);

    f.inject(Endpoint::Create, Fault::Delay(Duration::from_secs(2)), 1);
    let id = n
        .create(&track(2), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    let pages = f.pages_with_url("https://soundcloud.com/artist/track-2");
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].id, id);

    // A 500 that did not save: the lookup finds nothing, the create is sent again, once.
    f.inject(Endpoint::Create, Fault::Status(500), 1);
    n.create(&track(3), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    assert_eq!(
        f.pages_with_url("https://soundcloud.com/artist/track-3")
            .len(),
        1
    );
    assert_eq!(f.pages().len(), 3);
    assert_eq!(f.count(Endpoint::Create), 4);
}

#[tokio::test]
async fn fatal_errors_name_the_fix_and_never_the_token() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let token = "ntn_wrong_but_secret_123456";
    let bad =
        Notion::with_options(&cfg(&f), &Secret::new(token), ClientOptions::for_tests()).unwrap();
    assert!(!format!("{bad:?}").contains(token));
    let e = bad.connect().await.unwrap_err();
    assert!(matches!(e, NotionError::Unauthorized { .. }) && e.is_fatal());
    let (msg, dbg) = (e.to_string(), format!("{e:?}"));
    assert!(msg.contains("NOTION_TOKEN"), "{msg}");
    assert!(!msg.contains(token) && !dbg.contains(token));
    assert!(!msg.contains('\n'));
    assert_eq!(f.request_count(), 1, "a 401 is not retried");

    let n = connect(&f).await;
    assert!(!format!("{n:?}").contains(&f.token()));
    assert_eq!(n.mapping_table()[0].1, "Title");
    f.set_shared(false);
    let e = connect_cfg(&f, &cfg(&f)).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, NotionError::NotFound { .. }) && e.is_fatal());
    assert!(
        msg.contains("Connections") && msg.contains("share the database"),
        "{msg}"
    );
    assert!(!msg.contains(&f.token()));

    // The related Playlists database not shared: fatal, with the sharing fix.
    f.set_shared(true);
    f.set_database_shared(&f.playlists_database_id(), false);
    let e = n.playlist_tag("X", "", None).await.unwrap_err();
    assert!(matches!(e, NotionError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("playlists data source"), "{e}");
}

#[tokio::test]
async fn random_faults_never_duplicate_pages() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let mut c = cfg(&f);
    c.timeout = Duration::from_millis(300);
    let n = connect_cfg(&f, &c).await.unwrap();
    let kinds = vec![
        Fault::Status(500),
        Fault::Status(502),
        Fault::Status(503),
        Fault::Status(504),
        Fault::Status(409),
        Fault::SavedButUnavailable,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::CloudflareHtml,
        Fault::Delay(Duration::from_millis(400)),
    ];
    f.set_random_faults(0.2, 11, kinds);
    let tracks: Vec<Track> = (1..=20).map(track).collect();
    let existing = n.lookup(&tracks).await.unwrap();
    assert!(existing.is_empty());
    let mut created = 0;
    for t in &tracks {
        if n.create(t, &PlaylistTag::None, "", None).await.is_ok() {
            created += 1;
        }
    }
    f.clear_faults();
    for t in &tracks {
        assert!(
            f.pages_with_url(&t.url).len() <= 1,
            "duplicate for {}",
            t.url
        );
    }
    assert_eq!(created, 20, "transient faults are healed within the run");
    assert_eq!(n.requests() as usize, f.request_count());
}

/// Pages a person filled by hand hold share links in every form; each is found by one batched
/// query and adopted, a page for a longer path (`…/track-1` vs `…/track-10`) is read but not
/// taken, and a track with no page stays new.
#[tokio::test]
async fn pasted_share_links_in_any_form_are_found_in_one_query() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let pasted = [
        (
            1,
            "https://soundcloud.com/artist/track-1?si=0a1b2c3d4e5f&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing",
        ),
        (
            2,
            "https://soundcloud.com/artist/track-2?in=artist/sets/late-night",
        ),
        (3, "https://soundcloud.com/artist/track-3#t=1:23"),
        (4, "https://soundcloud.com/artist/track-4/"),
        (5, "http://soundcloud.com/artist/track-5"),
        (6, "https://www.soundcloud.com/artist/track-6"),
        (7, "https://m.soundcloud.com/artist/track-7"),
        (8, "https://soundcloud.com/Artist/Track-8"),
        (9, "https://soundcloud.com/artist/café-9"),
        (10, "https://soundcloud.com/artist/caf%c3%a9-10"),
    ];
    let mut seeded = std::collections::HashMap::new();
    for (i, url) in pasted {
        seeded.insert(i, f.seed_track(&format!("Hand {i}"), "Someone", url));
    }
    // Prefix traps: longer paths that contain a track's path.
    let trap = f.seed_track("Other", "X", "https://soundcloud.com/artist/track-11-remix");
    let mut tracks: Vec<Track> = (1..=12).map(track).collect();
    tracks[8].url = "https://soundcloud.com/artist/caf%C3%A9-9".into();
    tracks[9].url = "https://soundcloud.com/artist/café-10".into();
    f.clear_log();

    let found = n.lookup(&tracks).await.unwrap();
    for (i, page) in &seeded {
        assert_eq!(
            found
                .get(&TrackKey::soundcloud(*i))
                .map(|p| p.page_id.as_str()),
            Some(page.as_str()),
            "track {i}"
        );
    }
    assert_eq!(
        found.len(),
        10,
        "track-11's remix and track-12 are not theirs"
    );
    assert!(found.values().all(|p| p.page_id != trap));
    assert_eq!(f.count(Endpoint::Query), 1, "one query for the whole batch");
}

/// A batch whose conditions exceed the cap is asked in several queries that the fake (which
/// refuses more than 100 conditions) accepts; `lookup_batch` still counts tracks.
#[tokio::test]
async fn a_lookup_over_one_hundred_conditions_is_split() {
    let mut o = FakeNotionOptions::default();
    o.databases[0] = DatabaseSpec::single(
        "Music Tracks",
        vec![
            ("Title", PropKind::Title),
            ("Artist Name", PropKind::RichText),
            ("SoundCloud URL", PropKind::Url),
            ("SoundCloud ID", PropKind::RichText),
        ],
    );
    let f = FakeNotion::start(o).await;
    let n = connect(&f).await;
    let tracks: Vec<Track> = (1..=100).map(track).collect();
    let by_id = f.seed_page(serde_json::json!({
        "Title": {"title": [{"text": {"content": "By id"}}]},
        "SoundCloud ID": {"rich_text": [{"text": {"content": "77"}}]},
    }));
    f.clear_log();
    let found = n.lookup(&tracks).await.unwrap();
    assert_eq!(found[&TrackKey::soundcloud(77)].page_id, by_id);
    // 100 tracks × (url + id) = 200 conditions: two queries of 100.
    assert_eq!(f.count(Endpoint::Query), 2);
    assert!(f.requests().iter().all(|r| r.status == 200));

    // The fake really refuses a filter over the cap.
    let conditions: Vec<serde_json::Value> = (0..101)
        .map(|i| serde_json::json!({"property": "SoundCloud ID", "rich_text": {"equals": i.to_string()}}))
        .collect();
    let e = n
        .query_all(
            n.data_source_id(),
            serde_json::json!({"or": conditions}),
            "a big query",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("101 conditions"), "{e}");
}

#[tokio::test]
async fn a_lagging_query_index_is_looked_at_again_before_a_create_is_resent() {
    // The create is saved but its answer is lost; the page stays out of `/query` for longer
    // than the first backoff (5-10 ms), so the first lookup misses it.
    let lag = Duration::from_millis(300);
    let opts = |index_lag| ClientOptions {
        index_lag,
        ..ClientOptions::for_tests()
    };
    let f = FakeNotion::start(FakeNotionOptions {
        index_lag: lag,
        ..Default::default()
    })
    .await;
    let n = client_with(&f, &cfg(&f), opts(Duration::from_millis(400)))
        .connect()
        .await
        .unwrap();
    f.inject(Endpoint::Create, Fault::ResetAfter, 1);
    let id = n
        .create(&track(1), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    let pages = f.pages_with_url("https://soundcloud.com/artist/track-1");
    assert_eq!(pages.len(), 1, "exactly one page");
    assert_eq!(pages[0].id, id);
    assert_eq!(f.count(Endpoint::Create), 1, "never re-sent");
    assert_eq!(
        f.count(Endpoint::Query),
        2,
        "looked up, then again after the lag"
    );

    // The same lost answer without the second look: the lag makes a duplicate.
    let n = client_with(&f, &cfg(&f), opts(Duration::ZERO))
        .connect()
        .await
        .unwrap();
    f.inject(Endpoint::Create, Fault::ResetAfter, 1);
    n.create(&track(2), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    assert_eq!(
        f.pages_with_url("https://soundcloud.com/artist/track-2")
            .len(),
        2,
        "without the second lookup the lagging index hides the saved page"
    );
}

#[tokio::test]
async fn a_run_budget_bounds_the_retries_of_all_its_requests() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let budget = RetryBudget::new(3);
    let run = n.for_run(budget.clone());
    f.clear_log();
    // Two 503s: two retries from the budget, then the answer.
    f.inject(Endpoint::Query, Fault::Status(503), 2);
    assert!(run.lookup(&[track(1)]).await.unwrap().is_empty());
    assert_eq!((budget.left(), budget.spent()), (1, 2));
    // A create whose 500 saved nothing: looked up (twice: the index may lag), then re-sent
    // with the last retry.
    f.inject(Endpoint::Create, Fault::Status(500), 1);
    run.create(&track(1), &PlaylistTag::None, "", None)
        .await
        .unwrap();
    assert_eq!(budget.left(), 0);
    assert_eq!(f.count(Endpoint::Create), 2);
    // Spent: the next failure is not retried, and says so, once, with one fix.
    f.clear_log();
    f.inject(Endpoint::Create, Fault::Status(502), 1);
    let e = run
        .create(&track(2), &PlaylistTag::None, "", None)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(e.is_transient(), "{e:?}");
    assert!(msg.contains("retry budget is spent"), "{msg}");
    assert_eq!(msg.matches("(fix: ").count(), 1, "{msg}");
    assert_eq!(f.count(Endpoint::Create), 1);
    assert!(f.pages_with_url(&track(2).url).is_empty());
    // The connected sink itself is not bound by any run's budget.
    f.inject(Endpoint::Query, Fault::Status(503), 5);
    assert!(n.lookup(&[track(3)]).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_host_says_to_check_the_network() {
    // A port nothing listens on: the connection is refused, as for a host that is down or a
    // name that does not resolve.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let mut c = cfg(&f);
    c.api_base = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let n = client(&f, &c);
    let e = n.connect().await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, NotionError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient() && !e.is_fatal());
    assert!(
        msg.contains(&format!("cannot reach the Notion API at 127.0.0.1:{port}"))
            && msg.contains("check the network")
            && msg.contains("after 4 attempt(s)"),
        "{msg}"
    );
    assert!(!msg.contains("Notion may be down"), "{msg}");
    assert_eq!(msg.matches("(fix: ").count(), 1, "{msg}");
    assert!(!msg.contains(&f.token()));
}

#[tokio::test]
async fn a_relation_over_100_is_read_whole_and_never_written_cut() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let n = connect(&f).await;
    let pls = f.playlists_data_source_id();
    let ids: Vec<String> = (0..150)
        .map(|i| {
            f.seed_page_in(
                &pls,
                serde_json::json!({"Name": {"title": [{"text": {"content": format!("P{i}")}}]}}),
            )
        })
        .collect();
    let page = f.seed_track("Track 1", "Artist", "https://soundcloud.com/artist/track-1");
    f.seed_relation(&page, "Playlists", &ids);
    f.clear_log();
    let existing = n
        .lookup(&[track(1)])
        .await
        .unwrap()
        .remove(&TrackKey::soundcloud(1))
        .unwrap();
    assert_eq!(existing.playlists, ids, "all 150, in order");
    assert_eq!(
        f.count(Endpoint::GetPage),
        2,
        "100 a page; the second page's cursor (with + / =) was URL-encoded"
    );
    let tag = n.playlist_tag("One More", "", None).await.unwrap();
    f.clear_log();
    let e = n.add_playlist(&existing, &tag).await.unwrap_err();
    let msg = e.to_string();
    assert!(e.needs_a_person() && !e.is_fatal(), "{e:?}");
    assert!(
        msg.contains(&format!("https://www.notion.so/{}", compact_id(&page)))
            && msg.contains("151 values")
            && msg.contains("\"Playlists\""),
        "{msg}"
    );
    assert_eq!(f.count(Endpoint::Update), 0, "nothing is written");
    assert_eq!(f.page(&page).unwrap().relation("Playlists"), ids);
    // Removing one would still leave more than one write takes: also refused, not cut.
    let first = PlaylistTag::Relation {
        name: "P0".into(),
        page_id: ids[0].clone(),
    };
    assert!(n.remove_playlist(&existing, &first).await.is_err());
    assert_eq!(f.count(Endpoint::Update), 0);
    assert_eq!(f.page(&page).unwrap().relation("Playlists").len(), 150);
}

/// Every error a user can meet: one line, exactly one fix, never the token.
#[test]
fn every_error_text_is_one_line_with_one_fix() {
    let s = |x: &str| x.to_string();
    let token = "ntn_secret_never_shown";
    let mut errors = vec![
        NotionError::Unauthorized {
            message: s("API token is invalid."),
        },
        NotionError::Forbidden {
            what: s("the database x"),
            code: s("restricted_resource"),
            message: s("no access"),
        },
        NotionError::NotFound {
            what: s("the playlists data source d that property \"Playlists\" relates to"),
            message: s("Could not find data_source"),
        },
        NotionError::Validation {
            what: s("the new page"),
            message: s("Artist Name is not a property that exists."),
        },
        NotionError::Request {
            what: s("x"),
            status: 400,
            code: s("invalid_request_url"),
            message: s("Invalid request URL."),
            fix: s("set notion.version"),
        },
        NotionError::Blocked,
        NotionError::Unavailable {
            what: s("the lookup of 3 track(s)"),
            attempts: 12,
            last: s("HTTP 503 service_unavailable: down; this run's retry budget is spent"),
        },
        NotionError::Unreachable {
            host: s("api.notion.com"),
            what: s("the database x"),
            attempts: 4,
            last: s("could not connect: dns error: failed to lookup address information"),
        },
        NotionError::TooManyValues {
            page_url: s("https://www.notion.so/abc"),
            property: s("Playlists"),
            count: 131,
            limit: 100,
        },
        NotionError::Schema {
            message: s("database d lists no data sources"),
            fix: s("check notion.database"),
        },
        NotionError::Protocol {
            what: s("page p"),
            message: s("the answer has no page id"),
        },
        NotionError::Setup {
            message: s("invalid notion.version \"x\""),
            fix: s("set notion.version"),
        },
    ];
    for t in [
        TokenSource::Env("PLAYLISTD_TEST_UNSET_TOKEN_VAR".into()),
        TokenSource::File("/nonexistent/playlistd-token".into()),
    ] {
        errors.push(t.read().unwrap_err().into());
    }
    errors.push(
        Notion::with_options(
            &NotionConfig {
                version: "bad\nversion".into(),
                ..cfg_for_texts()
            },
            &Secret::new(token),
            ClientOptions::for_tests(),
        )
        .unwrap_err(),
    );
    errors.push(
        Notion::with_options(
            &cfg_for_texts(),
            &Secret::new("ntn_bad\ntoken"),
            ClientOptions::for_tests(),
        )
        .unwrap_err(),
    );
    for e in &errors {
        let msg = e.to_string();
        assert_eq!(msg.matches("(fix: ").count(), 1, "one fix: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg:?}");
        assert!(!msg.contains(token) && !format!("{e:?}").contains(token));
        // In a lookup failure, the one context playlistd adds, there is still one fix.
        let wrapped = format!("lookup failed: {e}");
        assert_eq!(wrapped.matches("(fix: ").count(), 1, "{wrapped}");
    }
    let network = errors
        .iter()
        .find(|e| matches!(e, NotionError::Unreachable { .. }))
        .unwrap()
        .to_string();
    assert!(network.contains("check the network") && !network.contains("may be down"));
}

fn cfg_for_texts() -> NotionConfig {
    NotionConfig {
        database_id: "0".repeat(32),
        data_source_id: None,
        token: TokenSource::Env("PLAYLISTD_TEST_TOKEN_UNUSED".into()),
        api_base: url::Url::parse("http://127.0.0.1:9").unwrap(),
        version: "2025-09-03".into(),
        requests_per_minute: 60,
        properties: PropertyNames::default(),
        lookup_batch: 100,
        match_title_artist: false,
        timeout: Duration::from_secs(5),
        key_notation: Default::default(),
        overwrite_analysis: false,
    }
}
