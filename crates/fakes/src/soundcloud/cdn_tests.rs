//! Tests of the fake's 2026 media delivery (reference §9), through real HTTP: the transcodings
//! each [`Layout`] lists, stream URLs signed for the CDN, the playlists, init and segments
//! (decoded as AAC with symphonia, so the audio is proven real), the signatures' expiry, the
//! stream-URL limit, faults on segments, progressive ranges and the artwork.

use super::catalog::FRAME_HEADER;
use super::hls::{aac_hls, audio_specific_config, mp3_bytes};
use super::*;
use serde_json::Value;
use std::time::Instant;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(BROWSER)
        .build()
        .unwrap()
}

/// A GET's status, content type and body (the CDN needs no browser: it is not bot-protected).
async fn fetch(url: &str) -> (u16, String, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ctype,
        r.bytes().await.unwrap().to_vec(),
    )
}

async fn track_json(sc: &FakeSoundCloud, id: u64, query: &str) -> Value {
    let u = format!(
        "{}/tracks/{id}?client_id={}{query}",
        sc.api_base(),
        sc.client_id()
    );
    let body = browser()
        .get(&u)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// The transcoding of `preset` and `protocol` a track lists.
fn transcoding<'a>(t: &'a Value, protocol: &str, preset: &str) -> &'a Value {
    t["media"]["transcodings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tc| tc["preset"] == preset && tc["format"]["protocol"] == protocol)
        .unwrap_or_else(|| panic!("no {protocol} {preset} in {t}"))
}

/// Calls a transcoding's stream URL: the status and the JSON body.
async fn call_stream(sc: &FakeSoundCloud, tc: &Value) -> (u16, Value) {
    let url = tc["url"].as_str().unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let u = format!("{url}{sep}client_id={}", sc.client_id());
    let r = browser().get(&u).send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

/// A signed URL for one of a track's streams.
async fn signed(sc: &FakeSoundCloud, id: u64, protocol: &str, preset: &str) -> String {
    let t = track_json(sc, id, "").await;
    let (status, body) = call_stream(sc, transcoding(&t, protocol, preset)).await;
    assert_eq!(status, 200, "{body}");
    body["url"].as_str().unwrap().to_string()
}

/// The URIs of a media playlist (the `#EXT-X-MAP` one first, when there is one).
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|u| u.trim_end_matches('"').to_string())
                .or_else(|| (!l.starts_with('#') && !l.is_empty()).then(|| l.to_string()))
        })
        .collect()
}

/// Decodes a fragmented MP4 with symphonia: codec, sample rate, channels, decoded seconds.
fn decode_aac(bytes: Vec<u8>) -> (bool, u32, usize, f64) {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
    use symphonia::core::formats::TrackType;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::io::MediaSourceStream;
    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp4");
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, Default::default(), Default::default())
        .expect("an MP4 symphonia reads");
    let track = format
        .default_track(TrackType::Audio)
        .expect("an audio track");
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .expect("an AAC decoder");
    let mut frames = 0usize;
    while let Some(packet) = format.next_packet().expect("packets read") {
        if packet.track_id == id {
            frames += decoder
                .decode(&packet)
                .expect("the packet decodes")
                .frames();
        }
    }
    let channels = params.channels.map(|c| c.count()).unwrap_or(0);
    (
        params.codec == CODEC_ID_AAC,
        params.sample_rate.unwrap_or(0),
        channels,
        frames as f64 / 44_100.0,
    )
}

#[test]
fn aac_hls_is_real_aac_of_the_duration() {
    assert_eq!(audio_specific_config(), [0x12, 0x10]);
    for ms in [25_000, 10_100, 3_000] {
        let h = aac_hls(ms);
        assert_eq!(h.segments.len(), h.durations.len());
        assert_eq!(h.segments.len(), ms.div_ceil(10_008) as usize, "{ms}");
        assert!(
            h.durations[..h.durations.len() - 1]
                .iter()
                .all(|d| (*d - 10.0078).abs() < 1e-3)
        );
        let total: f64 = h.durations.iter().sum();
        assert!((total - ms as f64 / 1000.0).abs() < 0.05, "{ms}: {total}");
        let (aac, rate, channels, secs) = decode_aac(h.concatenated());
        assert!(aac && rate == 44_100 && channels == 2, "{ms}");
        assert!(
            (secs - ms as f64 / 1000.0).abs() < 0.05,
            "{ms}: decoded {secs} s"
        );
    }
    // The MP3: 417-byte frames of 26.1224 ms, the first carrying the track id.
    let mp3 = mp3_bytes(7, 10_000);
    assert_eq!(mp3.len(), 383 * 417);
    assert_eq!(&mp3[..4], &FRAME_HEADER);
    assert_eq!(mp3[4], 7);
}

fn layout_track(id: u64, layout: Layout) -> FakeTrack {
    FakeTrack::new(id, &format!("Track {id}"), "A").layout(layout)
}

#[tokio::test]
async fn each_layout_lists_its_transcodings() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s")
            .track(layout_track(1, Layout::Aac))
            .track(layout_track(2, Layout::AacAndMp3))
            .track(layout_track(3, Layout::Mp3Only))
            .track(layout_track(4, Layout::OpusOnly))
            .track(layout_track(5, Layout::Aac).policy(Policy::Snip)),
    );
    let listed = |t: &Value| -> Vec<String> {
        t["media"]["transcodings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tc| {
                assert_eq!(tc["is_legacy_transcoding"], false);
                format!(
                    "{} {} {} {}",
                    tc["format"]["protocol"].as_str().unwrap(),
                    tc["preset"].as_str().unwrap(),
                    tc["quality"].as_str().unwrap(),
                    tc["format"]["mime_type"].as_str().unwrap()
                )
            })
            .collect()
    };
    let aac = [
        "hls aac_256k hq audio/mp4; codecs=\"mp4a.40.2\"",
        "hls abr_sq sq audio/mp4; codecs=\"mp4a.40.2\"",
        "hls aac_160k sq audio/mp4; codecs=\"mp4a.40.2\"",
    ];
    assert_eq!(listed(&track_json(&sc, 1, "").await), aac);
    let mp3 = [
        "progressive mp3_1_0 sq audio/mpeg",
        "hls mp3_1_0 sq audio/mpeg",
    ];
    assert_eq!(
        listed(&track_json(&sc, 2, "").await),
        [&aac[..], &mp3].concat()
    );
    assert_eq!(
        listed(&track_json(&sc, 3, "").await),
        [
            "hls mp3_0_0 sq audio/mpeg",
            "progressive mp3_0_0 sq audio/mpeg"
        ]
    );
    assert_eq!(
        listed(&track_json(&sc, 4, "").await),
        ["hls opus_0_0 sq audio/ogg; codecs=\"opus\""]
    );
    let snip = track_json(&sc, 5, "").await;
    for tc in snip["media"]["transcodings"].as_array().unwrap() {
        assert_eq!(
            (&tc["snipped"], &tc["duration"]),
            (&Value::Bool(true), &30_000.into())
        );
        assert!(tc["url"].as_str().unwrap().contains("/preview/hls"));
    }
    // A preview's stream is 30 s long.
    let url = signed(&sc, 5, "hls", "aac_160k").await;
    let (_, _, m3u8) = fetch(&url).await;
    assert_eq!(uris(&String::from_utf8(m3u8).unwrap()).len(), 1 + 3);
}

#[tokio::test]
async fn a_signed_playlist_gives_init_and_segments_that_decode() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s").track(FakeTrack::new(9, "T", "A").duration_ms(25_000)),
    );
    let url = signed(&sc, 9, "hls", "aac_160k").await;
    let prefix = format!("{}/cdn/9/aac_160k/playlist.m3u8?expires=", sc.web_base());
    assert!(url.starts_with(&prefix), "{url}");
    let query = url.split_once('?').unwrap().1.to_string();
    let (status, ctype, body) = fetch(&url).await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/vnd.apple.mpegurl")
    );
    let m3u8 = String::from_utf8(body).unwrap();
    for tag in [
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:11\n",
        "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
        "#EXTINF:10.007800,\n",
        "#EXTINF:4.992290,\n",
        "#EXT-X-ENDLIST\n",
    ] {
        assert!(m3u8.contains(tag), "{tag} in {m3u8}");
    }
    let uris = uris(&m3u8);
    assert_eq!(uris.len(), 4, "{m3u8}");
    assert!(uris[0].ends_with(&format!("/cdn/9/aac_160k/init.mp4?{query}")));
    assert!(uris[3].ends_with(&format!("/cdn/9/aac_160k/seg/2.m4s?{query}")));
    let mut mp4 = Vec::new();
    for u in &uris {
        let (status, _, body) = fetch(u).await;
        assert_eq!(status, 200, "{u}");
        mp4.extend(body);
    }
    assert_eq!(mp4, sc.hls_of(9).unwrap().concatenated());
    let (aac, rate, channels, secs) = decode_aac(mp4);
    assert!(aac && rate == 44_100 && channels == 2);
    assert!((secs - 25.0).abs() < 0.05, "{secs}");
    let counts = sc.cdn_requests(9);
    assert_eq!((counts.playlist, counts.init, counts.segments), (1, 1, 3));
    assert_eq!(sc.segment_requests(9, 2), 1);
    assert_eq!((sc.stream_url_requests(9), sc.media_requests(9)), (1, 1));
    assert_eq!(sc.requests(Endpoint::CdnSegment), 3);
    sc.reset_counters();
    assert_eq!(
        (sc.cdn_requests(9), sc.stream_url_requests(9)),
        (CdnCounts::default(), 0)
    );
}

fn is_expired(status: u16, ctype: &str, body: &[u8]) -> bool {
    let expired = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
    status == 403 && ctype == "application/xml" && body == expired.as_bytes()
}

#[tokio::test]
async fn signatures_expire_by_time_and_by_uses_and_a_fresh_one_works() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(FakePlaylist::new(1, "u", "s").track(FakeTrack::new(9, "T", "A")));
    sc.set_signed_url_uses(Some(2));
    let url = signed(&sc, 9, "hls", "aac_160k").await;
    let (_, _, m3u8) = fetch(&url).await;
    let init = uris(&String::from_utf8(m3u8).unwrap())[0].clone();
    assert_eq!(fetch(&init).await.0, 200, "the second use");
    let (status, ctype, body) = fetch(&init).await;
    assert!(is_expired(status, &ctype, &body), "{status} {ctype}");
    let fresh = signed(&sc, 9, "hls", "aac_160k").await;
    assert_ne!(fresh, url);
    assert_eq!(fetch(&fresh).await.0, 200);
    sc.set_signed_url_uses(None);

    sc.set_signed_url_ttl(Duration::from_millis(200));
    let url = signed(&sc, 9, "hls", "aac_160k").await;
    assert_eq!(fetch(&url).await.0, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, ctype, body) = fetch(&url).await;
    assert!(is_expired(status, &ctype, &body), "{status}");
    // A signature that was never issued, or for another file, is refused outright.
    let forged = url.replace("sig=", "sig=0");
    let (status, _, body) = fetch(&forged).await;
    assert_eq!(status, 403);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("<Message>Access denied</Message>")
    );
    sc.set_signed_url_ttl(DEFAULT_SIGNED_URL_TTL);
    let hls = signed(&sc, 9, "hls", "aac_160k").await;
    let other = hls.replace("aac_160k/playlist.m3u8", "aac_256k/playlist.m3u8");
    assert_eq!(fetch(&other).await.0, 403);
}

#[tokio::test]
async fn refusals_hq_abr_private_blocked_drm_and_the_stream_url_limit() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s")
            .track(FakeTrack::new(1, "Plain", "A"))
            .track(FakeTrack::new(2, "Secret", "A").private())
            .track(FakeTrack::new(3, "Blocked", "A").policy(Policy::Block))
            .track(FakeTrack::new(4, "Label", "A").encrypted_too()),
    );
    let t = track_json(&sc, 1, "").await;
    let (status, body) = call_stream(&sc, transcoding(&t, "hls", "aac_256k")).await;
    assert_eq!(
        (status, &body["code"]),
        (403, &403.into()),
        "hq needs a login"
    );
    // abr_sq: a playlist whose media is gone.
    let (status, body) = call_stream(&sc, transcoding(&t, "hls", "abr_sq")).await;
    assert_eq!(status, 200);
    let (_, _, m3u8) = fetch(body["url"].as_str().unwrap()).await;
    for u in uris(&String::from_utf8(m3u8).unwrap()).iter().take(2) {
        assert_eq!(fetch(u).await.0, 404, "{u}");
    }
    // A private track's stream URLs carry its token, and need it.
    let token = FakeTrack::new(2, "", "").private().secret_token().unwrap();
    let secret = track_json(&sc, 2, &format!("&secret_token={token}")).await;
    let tc = transcoding(&secret, "hls", "aac_160k");
    let url = tc["url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/stream/hls?secret_token={token}")),
        "{url}"
    );
    assert_eq!(call_stream(&sc, tc).await.0, 200);
    let bare = serde_json::json!({"url": url.split('?').next().unwrap()});
    assert_eq!(call_stream(&sc, &bare).await.0, 404);
    let blocked = track_json(&sc, 3, "").await;
    assert_eq!(
        call_stream(&sc, transcoding(&blocked, "hls", "aac_160k"))
            .await
            .0,
        404
    );
    // A label track whose clear streams still play: they play from the CDN too.
    let label = signed(&sc, 4, "progressive", "mp3_1_0").await;
    assert_eq!(fetch(&label).await.0, 200);
    sc.update_track(4, |t| t.drm = true);
    assert_eq!(fetch(&label).await.0, 404, "under DRM now");

    sc.set_stream_url_limit(Some((2, Duration::from_secs(60))));
    let tc = transcoding(&t, "hls", "aac_160k");
    assert_eq!(call_stream(&sc, tc).await.0, 200);
    assert_eq!(call_stream(&sc, tc).await.0, 200);
    let r = browser()
        .get(format!(
            "{}?client_id={}",
            tc["url"].as_str().unwrap(),
            sc.client_id()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 429);
    sc.set_stream_url_limit(None);
    assert_eq!(call_stream(&sc, tc).await.0, 200);
}

#[tokio::test]
async fn segment_faults_cuts_and_resets_are_counted() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s").track(FakeTrack::new(9, "T", "A").duration_ms(25_000)),
    );
    let url = signed(&sc, 9, "hls", "aac_160k").await;
    let (_, _, m3u8) = fetch(&url).await;
    let u = uris(&String::from_utf8(m3u8).unwrap());
    sc.inject_segment(9, 1, Fault::Status(503), 1);
    sc.inject(Endpoint::CdnSegment, Fault::Status(500), 1);
    assert_eq!(fetch(&u[2]).await.0, 503, "the segment's own goes first");
    assert_eq!(fetch(&u[2]).await.0, 500, "then the endpoint's");
    assert_eq!(fetch(&u[2]).await.0, 200);
    sc.inject(Endpoint::CdnSegment, Fault::Reset, 1);
    // The endpoint's reset: headers, part of the body, then the connection is gone.
    let r = reqwest::get(&u[1]).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.bytes().await.is_err(), "a reset body");
    sc.inject(Endpoint::CdnInit, Fault::Truncated, 1);
    assert!(reqwest::get(&u[0]).await.unwrap().bytes().await.is_err());
    assert_eq!(sc.segment_requests(9, 1), 3);
    assert_eq!(sc.segment_requests(9, 0), 1);
    assert_eq!(sc.requests(Endpoint::CdnSegment), 4);
    assert_eq!(sc.cdn_requests(9).init, 1);
    // The API's reset: the connection ends mid-body.
    sc.inject(Endpoint::Track, Fault::Reset, 1);
    let u = format!("{}/tracks/9?client_id={}", sc.api_base(), sc.client_id());
    let r = browser().get(&u).send().await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err());
}

#[tokio::test]
async fn progressive_and_hls_mp3_ranges_and_bandwidth() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s")
            .track(layout_track(9, Layout::AacAndMp3).duration_ms(12_000))
            .track(layout_track(8, Layout::OpusOnly).duration_ms(12_000)),
    );
    let whole = sc.progressive_of(9).unwrap();
    assert_eq!(whole, mp3_bytes(9, 12_000));
    let url = signed(&sc, 9, "progressive", "mp3_1_0").await;
    assert!(url.starts_with(&format!(
        "{}/cdn/9/mp3_1_0/audio.mp3?expires=",
        sc.web_base()
    )));
    let (status, ctype, body) = fetch(&url).await;
    assert_eq!((status, ctype.as_str()), (200, "audio/mpeg"));
    assert_eq!(body, whole);
    let r = reqwest::Client::new()
        .get(&url)
        .header("Range", "bytes=417-833")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let range = format!("bytes 417-833/{}", whole.len());
    assert_eq!(r.headers()["content-range"].to_str().unwrap(), range);
    assert_eq!(r.bytes().await.unwrap(), &whole[417..834]);
    // HLS MP3: no init, `.mp3` segments that add up to the same file.
    let (_, _, m3u8) = fetch(&signed(&sc, 9, "hls", "mp3_1_0").await).await;
    let m3u8 = String::from_utf8(m3u8).unwrap();
    assert!(
        !m3u8.contains("EXT-X-MAP") && m3u8.contains("#EXTINF:10.004898,"),
        "{m3u8}"
    );
    let mut joined = Vec::new();
    for u in uris(&m3u8) {
        assert!(u.contains(".mp3?"));
        joined.extend(fetch(&u).await.2);
    }
    assert_eq!(joined, whole);
    let (_, _, opus) = fetch(&signed(&sc, 8, "hls", "opus_0_0").await).await;
    let opus = uris(&String::from_utf8(opus).unwrap());
    assert!(
        opus.len() == 2 && opus[0].contains("/seg/0.opus?"),
        "{opus:?}"
    );
    // The bandwidth cap applies to CDN bodies: 60 KB at 200 KB/s takes 0.3 s.
    sc.set_bandwidth(Some(200_000));
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(&url)
        .header("Range", "bytes=0-59999")
        .send()
        .await;
    assert_eq!(r.unwrap().bytes().await.unwrap().len(), 60_000);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn artwork_is_served_at_both_sizes() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(1, "u", "s")
            .track(FakeTrack::new(9, "T", "A"))
            .track(FakeTrack::new(8, "No cover", "A").artwork(None)),
    );
    let t = track_json(&sc, 9, "").await;
    let large = t["artwork_url"].as_str().unwrap();
    assert_eq!(
        large,
        format!("{}/images/artworks-000000000009-large.jpg", sc.web_base())
    );
    let cover = include_bytes!("../../fixtures/cover.jpg");
    for u in [
        large.to_string(),
        large.replace("-large.jpg", "-t500x500.jpg"),
    ] {
        let (status, ctype, body) = fetch(&u).await;
        assert_eq!((status, ctype.as_str()), (200, "image/jpeg"), "{u}");
        assert_eq!(body, cover);
    }
    let missing = format!("{}/images/artworks-000000000008-large.jpg", sc.web_base());
    assert_eq!(fetch(&missing).await.0, 404);
    // The uploader's avatar is served the same way.
    let avatar = t["user"]["avatar_url"].as_str().unwrap();
    assert_eq!(
        avatar,
        format!("{}/images/avatars-000000000009-large.jpg", sc.web_base())
    );
    let (status, _, body) = fetch(&avatar.replace("-large.", "-t500x500.")).await;
    assert_eq!((status, body.as_slice()), (200, &cover[..]));
    assert_eq!(sc.cdn_requests(9).artwork, 3);
    sc.inject(Endpoint::Artwork, Fault::Status(500), 1);
    assert_eq!(fetch(large).await.0, 500);
    assert_eq!(sc.requests(Endpoint::Artwork), 5);
    // The public hosts shown: SoundCloud's images host again.
    sc.show_public_hosts(true);
    let t = track_json(&sc, 9, "").await;
    let public = "https://i1.sndcdn.com/artworks-000000000009-large.jpg";
    assert_eq!(t["artwork_url"], public);
}

#[tokio::test]
async fn a_hanging_track_stalls_its_media_not_its_playlist() {
    let sc = FakeSoundCloud::start().await;
    let track = FakeTrack::new(9, "T", "A").duration_ms(25_000).hang();
    sc.add_playlist(FakePlaylist::new(1, "u", "s").track(track));
    let url = signed(&sc, 9, "hls", "aac_160k").await;
    let (status, _, m3u8) = fetch(&url).await;
    assert_eq!(status, 200);
    let segment = uris(&String::from_utf8(m3u8).unwrap())[1].clone();
    let r = reqwest::get(&segment).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the headers come");
    let body = tokio::time::timeout(Duration::from_millis(300), r.bytes()).await;
    assert!(body.is_err(), "the body never ends");
}
