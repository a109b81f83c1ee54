//! Tests of the fake SoundCloud against the contract in reference/soundcloud-api.md, through
//! real HTTP (reqwest, and the real yt-dlp when it is installed): what each host answers, the
//! stubs and the batch, secret sets, faults, bot protection, DRM tracks, the audio bytes.

use super::catalog::FRAME_HEADER;
use super::*;
use serde_json::Value;

/// A browser's user agent: the bot protection lets it through (see `bot_protection_...`).
/// A copy of playlistd's `source::soundcloud::DEFAULT_USER_AGENT` (this crate cannot depend on
/// playlistd); any `Mozilla/5.0 (` agent would do.
const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(BROWSER)
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let r = browser().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn web_root_hides_the_id_in_the_last_script() {
    let sc = FakeSoundCloud::start().await;
    let (status, html) = get(&sc.web_base()).await;
    assert_eq!(status, 200);
    let re = regex::Regex::new(r#"<script[^>]+src="([^"]+)""#).unwrap();
    let srcs: Vec<String> = re.captures_iter(&html).map(|c| c[1].to_string()).collect();
    assert_eq!(srcs.len(), 3);
    let id_re = regex::Regex::new(r#"client_id\s*:\s*"([0-9a-zA-Z]{32})""#).unwrap();
    for (i, s) in srcs.iter().enumerate() {
        let (_, js) = get(s).await;
        let found = id_re.captures(&js).map(|c| c[1].to_string());
        if i == srcs.len() - 1 {
            assert_eq!(found, Some(sc.client_id()));
        } else {
            assert_eq!(found, None);
        }
    }
    let old = sc.client_id();
    let new = sc.rotate_client_id();
    assert_ne!(old, new);
    let (_, js) = get(srcs.last().unwrap()).await;
    assert!(js.contains(&new));
}

#[tokio::test]
async fn public_hosts_are_named_in_answers_and_formats_resolve() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(3, "dj", "set");
    let (pid, tid) = (p.id, p.tracks[0].id);
    sc.add_playlist(p);
    sc.show_public_hosts(true);
    let url = sc.playlist_url(pid).unwrap();
    assert_eq!(url, "https://soundcloud.com/dj/sets/set");
    let (api, id) = (sc.api_base(), sc.client_id());
    let (s, body) = get(&format!("{api}/tracks/{tid}?client_id={id}")).await;
    assert_eq!(s, 200);
    let track: Value = serde_json::from_str(&body).unwrap();
    assert!(
        track["permalink_url"]
            .as_str()
            .unwrap()
            .starts_with(PUBLIC_WEB)
    );
    // No login-only `hq` while the public hosts are shown (yt-dlp gives up a track on its
    // 403): the broken `abr_sq` (which yt-dlp skips), then `aac_160k`.
    let presets: Vec<&str> = track["media"]["transcodings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["preset"].as_str().unwrap())
        .collect();
    assert_eq!(presets, ["abr_sq", "aac_160k"]);
    let media = track["media"]["transcodings"][1]["url"].as_str().unwrap();
    let path = media.strip_prefix(PUBLIC_API).expect("the public API host");
    let (s, body) = get(&format!("{api}{path}?client_id={id}")).await;
    assert_eq!(s, 200, "{body}");
    let stream: Value = serde_json::from_str(&body).unwrap();
    // The signed CDN URL names the fake's real address even now, so a native client can go.
    let signed = stream["url"].as_str().unwrap();
    let cdn = format!(
        "{}/cdn/{tid}/aac_160k/playlist.m3u8?expires=",
        sc.web_base()
    );
    assert!(signed.starts_with(&cdn), "{signed}");
    assert!(
        track["artwork_url"]
            .as_str()
            .unwrap()
            .starts_with("https://i1.sndcdn.com/artworks-"),
        "the public images host"
    );
    assert_eq!(sc.requests(Endpoint::Media), 1);
    let (s, _) = get(&format!(
        "{api}/media/soundcloud:tracks:1/x/stream/hls?client_id={id}"
    ))
    .await;
    assert_eq!(s, 404, "an unknown track has no stream");
    sc.show_public_hosts(false);
    assert!(sc.playlist_url(pid).unwrap().starts_with(&sc.web_base()));
}

#[tokio::test]
async fn api_needs_the_current_client_id_and_shapes_stubs() {
    let sc = FakeSoundCloud::start().await;
    let url = sc.add_playlist(playlist_of(8, "dj", "mix"));
    let api = sc.api_base();
    let (s, _) = get(&format!("{api}/resolve?url={url}")).await;
    assert_eq!(s, 401);
    let (s, body) = get(&format!(
        "{api}/resolve?url={url}&client_id={}",
        sc.client_id()
    ))
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "playlist");
    assert_eq!(v["track_count"], 8);
    let tracks = v["tracks"].as_array().unwrap();
    assert!(tracks[4]["title"].is_string() && tracks[4]["media"].is_object());
    let mut keys: Vec<&str> = tracks[5]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["id", "kind", "monetization_model", "policy"]);
    assert_eq!(sc.requests(Endpoint::Resolve), 2);
}

#[tokio::test]
async fn tracks_batch_refuses_51_ids_and_shuffles() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(60, "dj", "big");
    let ids: Vec<String> = p.tracks.iter().map(|t| t.id.to_string()).collect();
    sc.add_playlist(p);
    let base = format!("{}/tracks?client_id={}&ids=", sc.api_base(), sc.client_id());
    let (s, _) = get(&format!("{base}{}", ids[..51].join(","))).await;
    assert_eq!(s, 400);
    let (s, body) = get(&format!("{base}{}", ids[..50].join(","))).await;
    assert_eq!(s, 200);
    let got: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|t| t["id"].to_string())
        .collect();
    assert_eq!(got.len(), 50);
    assert_ne!(got, ids[..50].to_vec(), "answers come shuffled");
    assert_eq!(sc.max_ids_per_request(), 51);
}

#[tokio::test]
async fn secret_sets_and_private_tracks() {
    let sc = FakeSoundCloud::start().await;
    let p = FakePlaylist::new(77, "me", "hidden")
        .secret("s-AbC123")
        .full_prefix(0)
        .track(FakeTrack::new(1, "Open", "A"))
        .track(FakeTrack::new(2, "Closed", "B").private());
    let url = sc.add_playlist(p);
    assert!(url.ends_with("/me/sets/hidden/s-AbC123"), "{url}");
    let cid = sc.client_id();
    let api = sc.api_base();
    let public = url.trim_end_matches("/s-AbC123");
    assert_eq!(
        get(&format!("{api}/resolve?client_id={cid}&url={public}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get(&format!("{api}/resolve?client_id={cid}&url={url}"))
            .await
            .0,
        200
    );
    let (_, b) = get(&format!("{api}/tracks?client_id={cid}&ids=1,2")).await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&b).unwrap().len(), 1);
    let (_, b) = get(&format!(
        "{api}/tracks?client_id={cid}&ids=1,2&playlistId=77&playlistSecretToken=s-AbC123"
    ))
    .await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&b).unwrap().len(), 2);
}

#[tokio::test]
async fn faults_are_consumed_in_order() {
    let sc = FakeSoundCloud::start().await;
    let url = sc.add_playlist(playlist_of(1, "dj", "one"));
    sc.inject(
        Endpoint::Resolve,
        Fault::TooManyRequests {
            retry_after_secs: Some(3),
        },
        1,
    );
    sc.inject(Endpoint::Resolve, Fault::Truncated, 1);
    let u = format!(
        "{}/resolve?client_id={}&url={url}",
        sc.api_base(),
        sc.client_id()
    );
    let r = browser().get(&u).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let (s, body) = get(&u).await;
    assert_eq!(s, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let (s, body) = get(&u).await;
    assert_eq!(s, 200);
    assert!(serde_json::from_str::<Value>(&body).is_ok());
}

#[tokio::test]
async fn audio_is_served_as_mpeg_with_ranges_and_policies() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(5, "u", "s")
            .track(FakeTrack::new(10, "Good", "Art").audio_size(5000))
            .track(FakeTrack::new(11, "Gone", "Art").deleted())
            .track(FakeTrack::new(12, "Far", "Art").policy(Policy::Block)),
    );
    let url = sc.track_url(10).unwrap();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 5000);
    assert_eq!(&body[..4], &FRAME_HEADER);
    assert_eq!(&body[417..421], &FRAME_HEADER);
    assert_eq!(body.to_vec(), sc.audio_of(10).unwrap());
    let r = reqwest::Client::new()
        .get(&url)
        .header("Range", "bytes=4000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 1000);
    let r = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "5000");
    assert_eq!(get(&sc.track_url(11).unwrap()).await.0, 404);
    assert_eq!(get(&sc.track_url(12).unwrap()).await.0, 403);
    assert_eq!(sc.requests(Endpoint::Audio), 5);
}

#[tokio::test]
async fn bandwidth_limit_slows_audio() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(5, "u", "s").track(FakeTrack::new(10, "Slow", "A").audio_size(20_000)),
    );
    sc.set_bandwidth(Some(100_000));
    let t0 = std::time::Instant::now();
    let (s, _) = get(&sc.track_url(10).unwrap()).await;
    assert_eq!(s, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn a_hanging_track_sends_headers_then_stalls() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(5, "u", "s")
            .track(FakeTrack::new(10, "Stuck", "A").audio_size(100_000).hang()),
    );
    let r = reqwest::get(&sc.track_url(10).unwrap()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = tokio::time::timeout(Duration::from_millis(300), r.bytes()).await;
    assert!(body.is_err(), "the body never completes");
}

#[tokio::test]
async fn latency_applies_to_every_request() {
    let sc = FakeSoundCloud::start().await;
    sc.set_latency(Duration::from_millis(80));
    let t0 = std::time::Instant::now();
    assert_eq!(
        get(&format!("{}/resolve?url=x", sc.api_base())).await.0,
        401
    );
    assert_eq!(get(&sc.web_base()).await.0, 200);
    assert!(t0.elapsed() >= Duration::from_millis(160));
    assert_eq!(sc.total_requests(), 2);
}

#[tokio::test]
async fn bot_protection_refuses_non_browsers_with_an_html_403_and_logs_headers() {
    let sc = FakeSoundCloud::start().await;
    let url = sc.add_playlist(playlist_of(1, "dj", "one"));
    let track = sc
        .track_url(playlist_of(1, "dj", "one").tracks[0].id)
        .unwrap();
    let resolve = format!(
        "{}/resolve?client_id={}&url={url}",
        sc.api_base(),
        sc.client_id()
    );
    let bare = reqwest::Client::new();
    let curl = reqwest::Client::builder()
        .user_agent("curl/8.5")
        .build()
        .unwrap();
    for (client, target) in [
        (&bare, &resolve),
        (&curl, &resolve),
        (&bare, &sc.web_base()),
    ] {
        let r = client.get(target).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{target}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().starts_with("<html>"));
    }
    // The permalink plays the media CDN: no bot protection there.
    assert_eq!(
        bare.get(&track).send().await.unwrap().status().as_u16(),
        200
    );
    let r = browser()
        .get(&resolve)
        .header("accept-language", "en-US,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = sc.request_log();
    assert_eq!(log[0].user_agent, None);
    assert_eq!(log[1].user_agent.as_deref(), Some("curl/8.5"));
    let last = log.last().unwrap();
    assert_eq!(last.user_agent.as_deref(), Some(BROWSER));
    assert_eq!(last.accept_language.as_deref(), Some("en-US,en;q=0.5"));
    // Switched off, a bare client reaches the API (and its client-id check) again.
    sc.set_bot_protection(false);
    assert_eq!(
        bare.get(&resolve).send().await.unwrap().status().as_u16(),
        200
    );
}

#[tokio::test]
async fn injected_blocks_are_web_pages_and_a_stale_id_is_json() {
    let sc = FakeSoundCloud::start().await;
    let url = sc.add_playlist(playlist_of(1, "dj", "one"));
    let resolve = format!(
        "{}/resolve?client_id={}&url={url}",
        sc.api_base(),
        sc.client_id()
    );
    sc.inject(Endpoint::Resolve, Fault::BlockedHtml, 1);
    sc.inject(Endpoint::Resolve, Fault::BlockedXml, 1);
    sc.inject(Endpoint::Resolve, Fault::Status(403), 1);
    sc.inject(Endpoint::WebRoot, Fault::BlockedXml, 1);
    let answer = |r: reqwest::Response| async move {
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (r.status().as_u16(), ct, r.text().await.unwrap())
    };
    let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
    assert_eq!((s, ct.starts_with("text/html")), (403, true));
    assert!(body.contains("captcha-delivery"), "{body}");
    let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
    assert_eq!((s, ct.as_str()), (403, "application/xml"));
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    let (s, ct, body) = answer(browser().get(&resolve).send().await.unwrap()).await;
    assert_eq!((s, ct.starts_with("application/json")), (403, true));
    assert!(serde_json::from_str::<Value>(&body).is_ok());
    let (s, ct, _) = answer(browser().get(sc.web_base()).send().await.unwrap()).await;
    assert_eq!((s, ct.as_str()), (403, "application/xml"));
    assert_eq!(get(&resolve).await.0, 200, "faults are used up");
}

#[tokio::test]
async fn drm_label_tracks_list_clear_streams_that_answer_404() {
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(
        FakePlaylist::new(5, "u", "s")
            .track(FakeTrack::new(10, "Label", "A").drm())
            .track(FakeTrack::new(11, "Locked", "A").drm_only())
            .track(FakeTrack::new(12, "Upload", "A")),
    );
    let (api, cid) = (sc.api_base(), sc.client_id());
    let track = |id: u64| {
        let u = format!("{api}/tracks/{id}?client_id={cid}");
        async move { serde_json::from_str::<Value>(&get(&u).await.1).unwrap() }
    };
    let t = track(10).await;
    assert!(t["artwork_url"].as_str().unwrap().ends_with("-large.jpg"));
    let tcs = t["media"]["transcodings"].as_array().unwrap().clone();
    let protocols: Vec<&str> = tcs
        .iter()
        .map(|t| t["format"]["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(
        protocols,
        [
            "hls",
            "progressive",
            "ctr-encrypted-hls",
            "cbc-encrypted-hls"
        ]
    );
    let cid = sc.client_id();
    for (tc, status) in tcs.iter().zip([404, 404, 200, 200]) {
        let u = format!("{}?client_id={cid}", tc["url"].as_str().unwrap());
        assert_eq!(get(&u).await.0, status, "{u}");
    }
    assert_eq!(get(&sc.track_url(10).unwrap()).await.0, 404, "no audio");
    assert_eq!(sc.media_requests(10), 5);
    let locked = track(11).await;
    let u = locked["media"]["transcodings"][0]["url"].as_str().unwrap();
    assert_eq!(get(&format!("{u}?client_id={cid}")).await.0, 200);
    assert_eq!(get(&sc.track_url(11).unwrap()).await.0, 404);
    let upload = track(12).await;
    // Layout::Aac: the Go+ `hq` one, the broken `abr_sq`, then `aac_160k`, which plays.
    let u = upload["media"]["transcodings"][2]["url"].as_str().unwrap();
    assert_eq!(get(&format!("{u}?client_id={cid}")).await.0, 200);
    assert_eq!(get(&sc.track_url(12).unwrap()).await.0, 200);
    assert_eq!((sc.media_requests(11), sc.media_requests(12)), (2, 2));
    sc.reset_counters();
    assert_eq!(sc.media_requests(10), 0);
}

/// What the downloader does: the real yt-dlp, generic extractor, against the fake's audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ytdlp_downloads_the_fake_audio() {
    if std::process::Command::new("yt-dlp")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("yt-dlp not on PATH; skipped");
        return;
    }
    let sc = FakeSoundCloud::start().await;
    sc.add_playlist(FakePlaylist::new(5, "u", "s").track(FakeTrack::new(
        10,
        "Real Download",
        "Art",
    )));
    let dir = tempfile::tempdir().unwrap();
    let url = sc.track_url(10).unwrap();
    // First as a person would run it, to see what yt-dlp says.
    let plain = tokio::process::Command::new("yt-dlp")
        .args(["--ignore-config", "--no-update", "--no-cache-dir", "-o"])
        .arg(dir.path().join("plain-%(title)s.%(ext)s"))
        .arg(&url)
        .output()
        .await
        .unwrap();
    eprintln!(
        "plain yt-dlp stdout:\n{}\nplain yt-dlp stderr:\n{}",
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(plain.status.success());
    sc.reset_counters();
    let out = tokio::process::Command::new("yt-dlp")
        .args([
            "--ignore-config",
            "--no-update",
            "--no-cache-dir",
            "--print",
            "after_move:filepath",
            "-o",
        ])
        .arg(dir.path().join("%(title)s.%(ext)s"))
        .arg(&url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("yt-dlp stdout:\n{stdout}\nyt-dlp stderr:\n{stderr}");
    assert!(out.status.success(), "yt-dlp failed: {stderr}");
    let path = std::path::PathBuf::from(stdout.trim());
    assert_eq!(path, dir.path().join("real-download.mp3"));
    assert_eq!(std::fs::read(&path).unwrap(), sc.audio_of(10).unwrap());
    // The generic extractor probes the URL once, then downloads it.
    let audio: Vec<String> = sc
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Audio)
        .map(|r| r.target)
        .collect();
    assert_eq!(audio.len(), 2, "{audio:?}");
}
