//! The DJ library: every download measured for tempo and key, AIFF and WAV copies beside it with
//! the tags DJ software reads, Notion told in the request that already carries the file, and
//! `playlistd analyze` for the files downloaded before. The fake's audio is a real groove
//! (A minor, 120 BPM: `crates/fakes/fixtures/README.md`), so the values are checked, not just
//! their presence.

use crate::audio_check::play;
use crate::support::{World, text};
use id3::TagLike;
use playlistd_fakes::notion::{Endpoint, FakePage};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
use std::path::{Path, PathBuf};

/// What the fake's groove measures as.
const KEY: &str = "A Minor";
const BPM: f64 = 120.0;

fn base(dir: &Path, id: u64) -> PathBuf {
    let tag = format!("[{id}].m4a");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&tag))
        .unwrap_or_else(|| panic!("no .m4a of track {id} in {}", dir.display()))
}

fn page_of(w: &World, id: u64) -> FakePage {
    let url = playlistd::model::canonical_url(&w.sc.track_url(id).unwrap());
    let mut pages = w.notion.pages_with_url(&url);
    assert_eq!(pages.len(), 1, "one page for track {id}");
    pages.remove(0)
}

fn two_tracks(w: &mut World) -> String {
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "dj", "warmup").tracks([
            FakeTrack::new(1, "First Groove", "Band")
                .duration_ms(40_000)
                .genre("House"),
            FakeTrack::new(2, "Second Groove", "Band").duration_ms(33_000),
        ]),
    );
    w.watch("Warmup", &url);
    url
}

fn assert_id3(path: &Path, title: &str, url: &str) {
    let tag = id3::Tag::read_from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(tag.title(), Some(title), "{}", path.display());
    assert_eq!(tag.artist(), Some("Band"));
    assert_eq!(tag.album(), Some("Warmup"));
    assert_eq!(
        tag.get("TBPM").and_then(|f| f.content().text()),
        Some("120")
    );
    assert_eq!(tag.get("TKEY").and_then(|f| f.content().text()), Some("Am"));
    let comments: Vec<String> = tag.comments().map(|c| c.text.clone()).collect();
    assert!(comments.iter().any(|c| c == url), "{comments:?}");
    assert!(comments.iter().any(|c| c == "8A"), "Camelot: {comments:?}");
    assert!(tag.pictures().next().is_some(), "the cover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_makes_three_tagged_files_per_track_and_pages_with_tempo_key_and_paths() {
    let mut w = World::new().await;
    w.analyze = true;
    w.download_extra = r#"formats = ["aiff", "original", "wav"]"#.into();
    two_tracks(&mut w);
    let r = w.sync("Warmup").await;
    assert!(r.ok(), "{}", r.summary_line());
    assert_eq!(r.downloaded.len(), 2);

    let dir = w.music_dir().join("Warmup");
    for (id, title, secs) in [(1, "First Groove", 40.0), (2, "Second Groove", 33.0)] {
        let m4a = base(&dir, id);
        let (aiff, wav) = (m4a.with_extension("aiff"), m4a.with_extension("wav"));
        let url = playlistd::model::canonical_url(&w.sc.track_url(id).unwrap());
        // The copies are 24-bit PCM at the source rate, exactly as long as the original plays.
        let source = play(&m4a);
        let reader = hound::WavReader::open(&wav).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.bits_per_sample, spec.sample_rate, spec.channels),
            (24, 44_100, 2)
        );
        let wav_secs = f64::from(reader.duration()) / 44_100.0;
        assert!(
            (wav_secs - source.seconds).abs() < 0.002,
            "{wav_secs} vs {source:?}"
        );
        assert!((wav_secs - secs).abs() < 0.05, "{wav_secs}");
        let aiff_audio =
            aifc::AifcReader::new(std::io::BufReader::new(std::fs::File::open(&aiff).unwrap()))
                .unwrap()
                .info();
        assert_eq!(aiff_audio.channels, 2);
        // aifc counts samples over all channels.
        assert_eq!(
            aiff_audio.sample_len,
            Some(2 * u64::from(reader.duration()))
        );
        assert_id3(&aiff, title, &url);
        assert_id3(&wav, title, &url);
        let riff = std::fs::read(&wav).unwrap();
        assert!(
            riff.windows(4).any(|w| w == b"INFO"),
            "RIFF INFO in the WAV"
        );
        // The original keeps its tags and gains the analysis, the iTunes way.
        let m4a_tag = mp4ameta::Tag::read_from_path(&m4a).unwrap();
        assert_eq!(m4a_tag.title(), Some(title));
        assert_eq!(m4a_tag.bpm(), Some(120));
        let initialkey = mp4ameta::FreeformIdent::new_static("com.apple.iTunes", "initialkey");
        assert_eq!(m4a_tag.strings_of(&initialkey).next(), Some("Am"));

        let p = page_of(&w, id);
        let tempo = p.number("Tempo").expect("Tempo");
        assert!((tempo - BPM).abs() <= 0.2, "{tempo}");
        assert_eq!(p.text("Key"), KEY);
        assert_eq!(p.checkbox("Downloaded"), Some(true));
        assert_eq!(p.text("File Path"), m4a.display().to_string());
        assert_eq!(p.text("M4A File Path"), m4a.display().to_string());
        assert_eq!(p.text("AIFF File Path"), aiff.display().to_string());
        assert_eq!(p.text("WAV File Path"), wav.display().to_string());
    }
    // Tempo and key cost no request of their own: each track's page is one create (which
    // waited for its download) or a create and the one write-back of the file; one more
    // create is the playlist's page.
    let (creates, updates) = (
        w.notion.count(Endpoint::Create),
        w.notion.count(Endpoint::Update),
    );
    assert_eq!(creates, 3, "{:?}", w.notion.requests());
    assert!(updates <= 2, "{:?}", w.notion.requests());

    // The playlist file lists the first format, and every entry is there.
    let m3u = std::fs::read_to_string(dir.join("Warmup.m3u8")).unwrap();
    let entries: Vec<&str> = m3u.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(entries.len(), 2, "{m3u}");
    for e in entries {
        assert!(e.ends_with(".aiff"), "{m3u}");
        assert!(dir.join(e).is_file(), "{e}");
    }

    // Nothing changed upstream: no Notion request, nothing analysed again.
    w.notion.clear_log();
    let r = w.sync("Warmup").await;
    assert!(r.ok());
    assert_eq!(w.notion.request_count(), 0, "{:?}", w.notion.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tempo_typed_by_hand_is_kept_and_the_empty_key_is_filled_unless_overwrite_is_on() {
    for overwrite in [false, true] {
        let mut w = World::new().await;
        w.analyze = true;
        if overwrite {
            w.notion_extra = "overwrite_analysis = true".into();
        }
        let url = w.sc.add_playlist(
            FakePlaylist::new(1, "dj", "warmup").tracks([FakeTrack::new(
                1,
                "First Groove",
                "Band",
            )
            .duration_ms(30_000)]),
        );
        w.watch("Warmup", &url);
        let track_url = w.sc.track_url(1).unwrap();
        w.notion.seed_page(serde_json::json!({
            "Title": {"title": [{"text": {"content": "First Groove"}}]},
            "SoundCloud URL": {"url": track_url},
            "Tempo": {"number": 126},
        }));
        let r = w.sync("Warmup").await;
        assert!(r.ok(), "{}", r.summary_line());
        assert_eq!(r.adopted.len(), 1, "{}", r.summary_line());
        let p = page_of(&w, 1);
        assert_eq!(p.text("Key"), KEY, "an empty Key is filled");
        let tempo = p.number("Tempo").unwrap();
        if overwrite {
            assert!(
                (tempo - BPM).abs() <= 0.2,
                "overwrite_analysis replaces it: {tempo}"
            );
        } else {
            assert_eq!(tempo, 126.0, "the tempo a person typed stays");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_backfills_earlier_downloads_keeping_what_a_person_set() {
    let mut w = World::new().await;
    w.analyze = false;
    two_tracks(&mut w);
    // A page a person made for the second track, with the key they hear.
    w.notion.seed_page(serde_json::json!({
        "Title": {"title": [{"text": {"content": "Second Groove"}}]},
        "SoundCloud URL": {"url": w.sc.track_url(2).unwrap()},
        "Key": {"rich_text": [{"text": {"content": "E Minor"}}]},
    }));
    let r = w.sync("Warmup").await;
    assert!(r.ok(), "{}", r.summary_line());
    let dir = w.music_dir().join("Warmup");
    let (first, second) = (base(&dir, 1), base(&dir, 2));
    assert!(
        page_of(&w, 1).number("Tempo").is_none(),
        "nothing measured yet"
    );
    assert!(!first.with_extension("aiff").exists());
    // Since then, DJ software wrote a BPM into one file.
    let mut tag = mp4ameta::Tag::read_from_path(&second).unwrap();
    tag.set_bpm(99);
    tag.write_to_path(&second).unwrap();

    w.analyze = true;
    w.download_extra = r#"formats = ["original", "aiff"]"#.into();
    w.write_config().unwrap();
    w.notion.clear_log();
    let out = w.playlistd(&["analyze", "Warmup"]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Warmup: 2 file(s); 2 analysed or converted, 0 cannot be decoded, 2 page(s) updated, 0 failed"), "{said}");

    for (id, m4a) in [(1, &first), (2, &second)] {
        let aiff = m4a.with_extension("aiff");
        assert!(aiff.is_file(), "{}", aiff.display());
        let tag = id3::Tag::read_from_path(&aiff).unwrap();
        assert_eq!(tag.get("TKEY").and_then(|f| f.content().text()), Some("Am"));
        let p = page_of(&w, id);
        assert_eq!(p.text("AIFF File Path"), aiff.display().to_string());
        let tempo = p.number("Tempo").unwrap();
        assert!((tempo - BPM).abs() <= 0.2, "{tempo}");
    }
    assert_eq!(
        page_of(&w, 2).text("Key"),
        "E Minor",
        "a person's key stays"
    );
    assert_eq!(page_of(&w, 1).text("Key"), KEY);
    let m4a_tag = mp4ameta::Tag::read_from_path(&second).unwrap();
    assert_eq!(m4a_tag.bpm(), Some(99), "the BPM DJ software wrote stays");
    let initialkey = mp4ameta::FreeformIdent::new_static("com.apple.iTunes", "initialkey");
    assert_eq!(
        m4a_tag.strings_of(&initialkey).next(),
        Some("Am"),
        "a missing key is added"
    );
    // One lookup, then one write per page.
    assert_eq!(
        w.notion.count(Endpoint::Query),
        1,
        "{:?}",
        w.notion.requests()
    );
    assert_eq!(
        w.notion.count(Endpoint::Update),
        2,
        "{:?}",
        w.notion.requests()
    );

    // Run again: nothing is left to do, and Notion is not asked.
    w.notion.clear_log();
    let out = w.playlistd(&["analyze"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warmup: 2 file(s); 0 analysed"),
        "{}",
        text(&out)
    );
    assert_eq!(w.notion.request_count(), 0, "{:?}", w.notion.requests());
}
