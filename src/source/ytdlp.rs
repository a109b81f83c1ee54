//! The `source = "yt-dlp"` lister: any site yt-dlp supports, one `--flat-playlist -J` run per
//! listing. It exists for playlists the native SoundCloud client cannot read (other sites, RSS
//! feeds, SoundCloud outages of the API v2 path) and costs one invocation, no per-track calls.
//!
//! Invariants:
//! - keys are stable across runs: `"<extractor>:<id>"` (lowercased extractor), except that a
//!   SoundCloud entry with a numeric id gets the plain id, the same key the native client
//!   gives, so switching a playlist's source never duplicates its tracks; an entry without an
//!   id (RSS through the generic extractor) is keyed `"url:<normalized url>"`;
//! - yt-dlp's `#__youtubedl_smuggle=` fragment never reaches a key or `url`, but stays in
//!   `download_url`, since it carries data yt-dlp needs when it downloads that entry;
//! - yt-dlp runs supervised ([`crate::ytdlp::Run`]): its whole process group dies with the
//!   listing, on timeout, and with playlistd.

use super::{SourceError, error_chain, one_line};
use crate::model::{ListedTrack, Listing, Track, TrackKey, canonical_url, is_soundcloud_url};
use crate::ytdlp::Ended;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use url::Url;

const SMUGGLE: &str = "#__youtubedl_smuggle=";

/// Lists `url` with `yt-dlp --flat-playlist -J`.
pub async fn list_with_ytdlp(
    ytdlp: &Path,
    url: &Url,
    timeout: Duration,
) -> Result<Listing, SourceError> {
    let out = crate::ytdlp::Run::new(ytdlp, timeout)
        .args(["--no-cache-dir", "--flat-playlist", "-J", url.as_str()])
        .whole_stdout()
        .run()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::YtDlpMissing {
                path: ytdlp.to_path_buf(),
            },
            _ => SourceError::YtDlp {
                code: None,
                url: url.to_string(),
                message: format!("cannot start {}: {}", ytdlp.display(), error_chain(&e)),
            },
        })?;
    let status = match out.ended {
        Ended::Exited(Ok(status)) => status,
        Ended::Exited(Err(e)) => {
            return Err(SourceError::YtDlp {
                code: None,
                url: url.to_string(),
                message: error_chain(&e),
            });
        }
        // No cancel token is given: only the timeout ends a listing early.
        Ended::TimedOut | Ended::Cancelled => {
            return Err(SourceError::Timeout {
                what: format!("yt-dlp listing {url}"),
                secs: timeout.as_secs().max(1),
            });
        }
    };
    if !status.success() {
        return Err(SourceError::YtDlp {
            code: status.code(),
            url: url.to_string(),
            message: last_error_line(&out.stderr),
        });
    }
    let stdout = out.stdout.into_iter().collect::<Vec<_>>().join(&b'\n');
    let v: Value = serde_json::from_slice(&stdout).map_err(|e| SourceError::Decode {
        what: format!("yt-dlp's JSON for {url}"),
        reason: one_line(&e.to_string()),
    })?;
    parse_listing(&v, url)
}

/// The listing error's message: yt-dlp's last error line ([`crate::ytdlp::last_error_line`]),
/// on one line.
fn last_error_line(stderr: &[String]) -> String {
    match crate::ytdlp::last_error_line(stderr) {
        Some(l) => one_line(l),
        None => "yt-dlp printed nothing on stderr".to_string(),
    }
}

fn text(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match v.get(*k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn strip_smuggle(u: &str) -> &str {
    u.split_once(SMUGGLE).map(|(a, _)| a).unwrap_or(u)
}

/// [`canonical_url`], with the query put back, except on soundcloud.com, whose queries are
/// only share tracking (`?si=`, `?in=`): there the canonical form is the track's identity.
fn normalize_keeping_query(u: &str) -> String {
    let base = canonical_url(u);
    if is_soundcloud_url(&base) {
        return base;
    }
    match Url::parse(u.trim())
        .ok()
        .and_then(|p| p.query().map(str::to_string))
    {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base,
    }
}

/// Turns yt-dlp's `-J` playlist object into a listing; public for tests and for callers that
/// already hold yt-dlp's JSON.
pub fn parse_listing(v: &Value, url: &Url) -> Result<Listing, SourceError> {
    let Some(entries) = v.get("entries").and_then(Value::as_array) else {
        let kind = match text(v, &["_type"]) {
            Some(t) if t != "playlist" => format!("single {t}"),
            _ => "single item".to_string(),
        };
        return Err(SourceError::NotAPlaylist {
            url: url.to_string(),
            kind,
        });
    };
    let playlist_extractor = text(v, &["extractor_key", "extractor"]).map(|e| e.to_lowercase());
    let playlist_artist = text(v, &["uploader", "channel", "artist", "album_artist"]);
    let mut seen = HashSet::new();
    let mut tracks = Vec::with_capacity(entries.len());
    for e in entries.iter().filter(|e| e.is_object()) {
        let raw_url = text(e, &["url", "webpage_url", "original_url"]);
        let id = text(e, &["id"]);
        // Without an id the URL is the identity, so it is normalized like the key; with one,
        // the query stays, since sites like YouTube name the item there (`watch?v=`).
        let clean_url = raw_url.as_deref().map(strip_smuggle).map(|u| match id {
            Some(_) => normalize_keeping_query(u),
            None => canonical_url(u),
        });
        let extractor = text(e, &["ie_key", "extractor_key", "extractor"])
            .map(|x| x.to_lowercase())
            .or_else(|| playlist_extractor.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let soundcloud_id = id
            .as_deref()
            .filter(|_| extractor == "soundcloud")
            .and_then(|i| i.parse::<u64>().ok());
        let key = match (&id, soundcloud_id, &clean_url) {
            (_, Some(n), _) => TrackKey::soundcloud(n),
            (Some(id), None, _) => TrackKey::new(format!("{extractor}:{id}")),
            (None, _, Some(u)) if !u.is_empty() => TrackKey::new(format!("url:{u}")),
            _ => {
                tracing::warn!(playlist = %url, "skipping a yt-dlp entry with neither id nor url");
                continue;
            }
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        let clean_url = clean_url.unwrap_or_default();
        let title = text(e, &["title", "track"])
            .or_else(|| id.clone())
            .or_else(|| clean_url.rsplit('/').next().map(str::to_string))
            .unwrap_or_default();
        let thumbnail = text(e, &["thumbnail"]).or_else(|| {
            e.get("thumbnails")
                .and_then(Value::as_array)
                .and_then(|ts| ts.iter().rev().find_map(|t| text(t, &["url"])))
        });
        tracks.push(ListedTrack {
            track: Track {
                key,
                soundcloud_id,
                title,
                artist: text(e, &["uploader", "artist", "channel", "creator"])
                    .or_else(|| playlist_artist.clone())
                    .unwrap_or_default(),
                url: clean_url,
                download_url: raw_url.unwrap_or_default(),
                duration_ms: e
                    .get("duration")
                    .and_then(Value::as_f64)
                    .filter(|d| *d > 0.0)
                    .map(|d| (d * 1000.0).round() as u64),
                genre: None,
                artwork_url: thumbnail,
                media: None,
            },
            unavailable: None,
            drm_check: None,
        });
    }
    Ok(Listing {
        title: text(v, &["title", "id"]).unwrap_or_default(),
        url: text(v, &["webpage_url", "original_url"]).unwrap_or_else(|| url.to_string()),
        tracks,
        complete: true,
        incomplete_reason: None,
        hidden: 0,
        requests: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-file-per-path HTTP server, enough for yt-dlp's generic extractor.
    async fn serve(
        files: Vec<(&'static str, &'static str, Vec<u8>)>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let files = files.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let head_only = req.starts_with("HEAD");
                    let (status, ctype, body) = match files.iter().find(|f| f.0 == path) {
                        Some((_, c, b)) => ("200 OK", *c, b.clone()),
                        None => ("404 Not Found", "text/plain", b"nope".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    if !head_only {
                        let _ = s.write_all(&body).await;
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        (base, task)
    }

    fn have_ytdlp() -> bool {
        let ok = std::process::Command::new("yt-dlp")
            .arg("--version")
            .output()
            .is_ok();
        if !ok {
            eprintln!("yt-dlp not on PATH; skipped");
        }
        ok
    }

    const FEED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel>
<title>Local Test Feed</title><link>http://example.invalid/</link><description>test</description>
<item><title>Track A</title><guid>track-a-guid</guid><itunes:duration>65</itunes:duration>
<enclosure url="BASE/a.mp3" type="audio/mpeg" length="834"/></item>
<item><title>Track B</title><enclosure url="BASE/b.mp3?token=1" type="audio/mpeg" length="834"/></item>
</channel>
</rss>
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_ytdlp_lists_an_rss_feed() {
        if !have_ytdlp() {
            return;
        }
        // The enclosures point at a second server that is never asked: a flat listing reads
        // the feed only.
        let (base, _task) = serve(vec![]).await;
        let feed = FEED.replace("BASE", &base);
        let (feed_base, _task2) = serve(vec![(
            "/feed.xml",
            "application/rss+xml",
            feed.into_bytes(),
        )])
        .await;
        let url = Url::parse(&format!("{feed_base}/feed.xml")).unwrap();
        let l = list_with_ytdlp(Path::new("yt-dlp"), &url, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(l.title, "Local Test Feed");
        assert_eq!(l.requests, 1);
        assert!(l.complete);
        let keys: Vec<&str> = l.tracks.iter().map(|t| t.track.key.as_str()).collect();
        assert_eq!(
            keys,
            [format!("url:{base}/a.mp3"), format!("url:{base}/b.mp3")]
        );
        let a = &l.tracks[0].track;
        assert_eq!(a.title, "Track A");
        assert_eq!(a.url, format!("{base}/a.mp3"));
        assert!(
            a.download_url
                .starts_with(&format!("{base}/a.mp3{SMUGGLE}")),
            "{}",
            a.download_url
        );
        assert_eq!(a.duration_ms, Some(65_000));
        assert_eq!(a.soundcloud_id, None);
        assert_eq!(
            l.tracks[1].track.download_url,
            format!("{base}/b.mp3?token=1")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_ytdlp_failure_reports_its_error_line() {
        if !have_ytdlp() {
            return;
        }
        let (base, _task) = serve(vec![]).await;
        let url = Url::parse(&format!("{base}/missing.xml")).unwrap();
        let e = list_with_ytdlp(Path::new("yt-dlp"), &url, Duration::from_secs(60))
            .await
            .unwrap_err();
        match &e {
            SourceError::YtDlp {
                code: Some(1),
                message,
                ..
            } => {
                assert!(
                    message.starts_with("ERROR:") && message.contains("404"),
                    "{message}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!e.to_string().contains('\n'));
    }

    #[tokio::test]
    async fn missing_binary_says_how_to_install_it() {
        let url = Url::parse("https://example.com/list").unwrap();
        let e = list_with_ytdlp(
            Path::new("/nonexistent/yt-dlp"),
            &url,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, SourceError::YtDlpMissing { .. }));
        assert!(e.to_string().contains("pip install yt-dlp"), "{e}");
        assert!(e.to_string().contains("download.ytdlp"), "{e}");
    }

    #[cfg(unix)]
    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-yt-dlp");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_hanging_ytdlp_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "sleep 30");
        let url = Url::parse("https://example.com/list").unwrap();
        let t0 = std::time::Instant::now();
        let e = list_with_ytdlp(&bin, &url, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, SourceError::Timeout { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn soundcloud_set_entries_key_like_the_native_client() {
        // Shape from reference §6: set entries have id + ie_key + url, and no title.
        let v: Value = serde_json::json!({
            "_type": "playlist", "id": "1524158182", "title": "out of spite",
            "uploader": "Levi Ryan", "extractor": "soundcloud:set", "extractor_key": "SoundcloudSet",
            "webpage_url": "https://soundcloud.com/leviryan/sets/out-of-spite",
            "entries": [
                {"_type": "url_transparent", "ie_key": "Soundcloud", "id": "1773930186",
                 "url": "https://m.soundcloud.com/sebseb122/piinut?in=leviryan/sets/out-of-spite"},
                {"_type": "url_transparent", "ie_key": "Soundcloud", "id": "1773939519",
                 "url": "https://api-v2.soundcloud.com/tracks/1773939519"},
                {"_type": "url_transparent", "ie_key": "Youtube", "id": "dQw4w9WgXcQ",
                 "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "title": "Yt", "channel": "Rick",
                 "duration": 212.5},
                null,
                {"_type": "url_transparent", "ie_key": "Soundcloud", "id": "1773930186",
                 "url": "https://soundcloud.com/sebseb122/piinut"}
            ]
        });
        let url = Url::parse("https://soundcloud.com/leviryan/sets/out-of-spite?si=1").unwrap();
        let l = parse_listing(&v, &url).unwrap();
        assert_eq!(l.title, "out of spite");
        assert_eq!(l.url, "https://soundcloud.com/leviryan/sets/out-of-spite");
        let keys: Vec<&str> = l.tracks.iter().map(|t| t.track.key.as_str()).collect();
        assert_eq!(keys, ["1773930186", "1773939519", "youtube:dQw4w9WgXcQ"]);
        assert_eq!(l.tracks[0].track.soundcloud_id, Some(1773930186));
        assert_eq!(
            l.tracks[0].track.url, "https://soundcloud.com/sebseb122/piinut",
            "a SoundCloud link's share query is not its identity"
        );
        assert_eq!(
            l.tracks[0].track.title, "1773930186",
            "no title: the id stands in"
        );
        assert_eq!(l.tracks[0].track.artist, "Levi Ryan");
        assert_eq!(l.tracks[2].track.artist, "Rick");
        assert_eq!(l.tracks[2].track.duration_ms, Some(212_500));
        assert_eq!(
            l.tracks[2].track.url,
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
        );
        assert_eq!(
            l.tracks[2].track.download_url,
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
        );
    }

    #[test]
    fn a_single_video_is_not_a_playlist() {
        let v = serde_json::json!({"_type": "video", "id": "x", "title": "t"});
        let e = parse_listing(&v, &Url::parse("https://example.com/v").unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("is a single video, not a playlist"),
            "{e}"
        );
    }

    #[test]
    fn last_error_line_prefers_errors() {
        let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
        let s = "WARNING: [generic] Falling back\nERROR: [generic] x: HTTP Error 404: Not Found\nWARNING: late\n";
        assert_eq!(
            last_error_line(&lines(s)),
            "ERROR: [generic] x: HTTP Error 404: Not Found"
        );
        assert_eq!(last_error_line(&lines("a\n\nb c \n")), "b c");
        assert_eq!(
            last_error_line(&lines("")),
            "yt-dlp printed nothing on stderr"
        );
    }
}
