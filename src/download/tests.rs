//! Against the real yt-dlp and a tiny HTTP server on 127.0.0.1 (yt-dlp's generic extractor
//! takes any `audio/*` response as a direct download).

use super::*;
use crate::model::TrackKey;
use crate::ytdlp::TERM_GRACE;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The machine may have two cores; yt-dlp tests running side by side would each take several
/// seconds to start Python and blur the timeout test.
static YTDLP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(super) const TEMPLATE: &str = "{artist} - {title} [{id}]";

/// MPEG-1 layer III frames (128 kbit/s, 44.1 kHz: 417 bytes each) of silence.
fn audio() -> Vec<u8> {
    let mut frame = vec![0u8; 417];
    frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    frame.repeat(64)
}

fn config(ytdlp: &str, concurrency: usize, timeout: Duration) -> DownloadConfig {
    DownloadConfig {
        enabled: true,
        dir: PathBuf::from("/unused"),
        concurrency,
        engine: Engine::YtDlp,
        prefer: Default::default(),
        ytdlp: PathBuf::from(ytdlp),
        extra_args: vec![],
        output_template: TEMPLATE.to_string(),
        timeout,
        max_attempts: 5,
        m3u: true,
        library: Default::default(),
    }
}

pub(super) fn track(id: &str, artist: &str, title: &str, url: &str) -> Track {
    Track {
        key: TrackKey::new(id.to_string()),
        soundcloud_id: None,
        title: title.to_string(),
        artist: artist.to_string(),
        url: url.to_string(),
        download_url: url.to_string(),
        duration_ms: None,
        genre: None,
        artwork_url: None,
        media: None,
    }
}

fn token() -> String {
    format!("t{:016x}", fastrand::u64(..))
}

#[derive(Debug)]
enum Event {
    HangStarted,
    HangClosed,
}

#[derive(Default)]
struct Counters {
    /// Open connections per path of `/slow/` tracks.
    active: Mutex<HashMap<String, usize>>,
    max_active: AtomicUsize,
}

struct Server {
    base: String,
    counters: Arc<Counters>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let counters = Arc::new(Counters::default());
        let (tx, events) = mpsc::unbounded_channel();
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock, c.clone(), tx.clone()));
            }
        });
        Server {
            base,
            counters,
            events,
        }
    }

    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("server event in time")
            .expect("server alive")
    }
}

/// `/ok/…` serves the audio, `/slow/…` serves it in paced chunks and counts concurrent
/// tracks, `/hang/…` sends the headers and a little data, then waits for the client to go
/// away; anything else is a 404.
async fn handle(
    mut sock: TcpStream,
    counters: Arc<Counters>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let body = audio();
    let ok = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    if path.starts_with("/ok/") {
        let _ = sock.write_all(ok(body.len()).as_bytes()).await;
        let _ = sock.write_all(&body).await;
    } else if path.starts_with("/hang/") {
        let _ = sock.write_all(ok(body.len() * 100).as_bytes()).await;
        let _ = sock.write_all(&body[..8192]).await;
        let _ = events.send(Event::HangStarted);
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = events.send(Event::HangClosed);
    } else if path.starts_with("/slow/") {
        {
            let mut active = counters.active.lock().unwrap();
            *active.entry(path.clone()).or_default() += 1;
            counters
                .max_active
                .fetch_max(active.len(), Ordering::SeqCst);
        }
        let _ = sock.write_all(ok(body.len()).as_bytes()).await;
        for chunk in body.chunks(body.len() / 8 + 1) {
            if sock.write_all(chunk).await.is_err() {
                break;
            }
            // Pacing, not synchronization: keeps each download open long enough to overlap.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let mut active = counters.active.lock().unwrap();
        let n = active.get_mut(&path).expect("counted");
        *n -= 1;
        if *n == 0 {
            active.remove(&path);
        }
    } else {
        let _ = sock
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
            .await;
    }
    let _ = sock.shutdown().await;
}

/// Every file and folder under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            out.push(
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Polls a file-system condition that no event announces (yt-dlp creating its `.part`).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_part_file(dir: &Path) -> bool {
    tree(dir).iter().any(|p| p.ends_with(".part"))
}

struct Setup {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    cache: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    // `%` and `:` in the folder: neither may be read as template or `-P` syntax.
    let dest = tmp.path().join("music").join("100% Hits: Vol. 1");
    let cache = tmp.path().join("cache");
    Setup {
        dest,
        cache,
        _tmp: tmp,
    }
}

#[tokio::test]
async fn downloads_to_the_templated_name() {
    let _serial = YTDLP.lock().await;
    let server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
    let t = track(
        "123",
        "Artist",
        "Title",
        &format!("{}/ok/{}.mp3", server.base, token()),
    );
    let got = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(got.path, s.dest.join("Artist - Title [123].mp3"));
    assert_eq!(got.bytes, audio().len() as u64);
    assert_eq!(std::fs::read(&got.path).unwrap(), audio());
    assert_eq!(
        tree(&s.dest),
        ["Artist - Title [123].mp3"],
        "no staging folder left behind"
    );
}

#[tokio::test]
async fn unicode_names_survive() {
    let _serial = YTDLP.lock().await;
    let server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
    let t = track(
        "soundcloud:7",
        "アーティスト",
        "東京の夜 🌃 café",
        &format!("{}/ok/{}.mp3", server.base, token()),
    );
    let got = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        got.path,
        s.dest
            .join("アーティスト - 東京の夜 🌃 café [soundcloud_7].mp3")
    );
    assert!(got.path.is_file());
}

#[tokio::test]
async fn hostile_and_huge_titles_become_one_safe_name() {
    let _serial = YTDLP.lock().await;
    let server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
    let title = format!("AC/DC\\ 100% %(id)s\n\t\0:<>|?*\"{}", "x".repeat(5000));
    let t = track(
        "777",
        "..Dots",
        &title,
        &format!("{}/ok/{}.mp3", server.base, token()),
    );
    let got = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(got.path.parent().unwrap(), s.dest);
    let name = got.path.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".mp3").unwrap();
    assert_eq!(stem.len(), MAX_NAME_BYTES, "{name}");
    assert!(
        stem.starts_with("Dots - AC_DC_ 100% %(id)s _______xxx"),
        "{name}"
    );
    assert!(stem.ends_with("x [777]"), "{name}");
    assert!(!name.chars().any(|c| c.is_control() || c == '/'), "{name}");
    assert_eq!(tree(&s.dest), [name]);
}

#[tokio::test]
async fn http_404_is_not_found_and_leaves_nothing() {
    let _serial = YTDLP.lock().await;
    let server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
    let t = track(
        "404",
        "A",
        "B",
        &format!("{}/missing/{}.mp3", server.base, token()),
    );
    let e = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::NotFound, "{e}");
    assert!(e.reason.is_permanent());
    assert!(e.message.contains("HTTP Error 404"), "{e}");
    assert!(!e.to_string().contains('\n'));
    assert!(tree(&s.dest).is_empty(), "{:?}", tree(&s.dest));
}

#[tokio::test]
async fn bad_extra_args_point_at_the_config_key() {
    let _serial = YTDLP.lock().await;
    let s = setup();
    let mut cfg = config("yt-dlp", 1, Duration::from_secs(30));
    cfg.extra_args = vec!["--no-such-option-anywhere".into()];
    let dl = Downloader::new(&cfg, &s.cache);
    let t = track("1", "A", "B", "http://127.0.0.1:9/a.mp3");
    let e = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::Exit(2), "{e}");
    assert!(
        e.message.contains("download.extra_args") && e.message.contains("no such option"),
        "{e}"
    );
}

/// Runs a download against `/hang/`, waits until yt-dlp has a `.part` file, lets `stop` end
/// it, and checks that neither a process nor a file is left. Returns how long the stop took,
/// and how long the whole run took from the moment it held [`YTDLP`] (the wait for other
/// yt-dlp tests is not the download's time).
async fn hang_and_stop(
    timeout: Duration,
    stop: impl AsyncFnOnce(&CancellationToken),
    expected: FailureReason,
) -> (Duration, Duration) {
    let _serial = YTDLP.lock().await;
    let started = Instant::now();
    let mut server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 1, timeout), &s.cache);
    let tok = token();
    let t = track("55", "A", "B", &format!("{}/hang/{tok}.mp3", server.base));
    let cancel = CancellationToken::new();
    let task = {
        let (dl, dest, cancel) = (dl.clone(), s.dest.clone(), cancel.clone());
        tokio::spawn(async move { dl.download(&t, &dest, &cancel).await })
    };
    assert!(matches!(server.next_event().await, Event::HangStarted));
    let pids = processes_with(&tok);
    assert!(!pids.is_empty(), "yt-dlp should be running");
    eventually("a .part file in staging", || has_part_file(&s.dest)).await;
    assert!(
        tree(&s.dest).iter().all(|p| p.starts_with(STAGING_DIR)),
        "{:?}",
        tree(&s.dest)
    );

    let stopped = Instant::now();
    stop(&cancel).await;
    let e = task.await.unwrap().unwrap_err();
    let took = stopped.elapsed();
    assert_eq!(e.reason, expected, "{e}");
    assert!(!e.reason.is_permanent());
    assert_eq!(processes_with(&tok), Vec::<i32>::new(), "yt-dlp survived");
    for pid in pids {
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(
            !alive || !processes_with(&tok).contains(&pid),
            "pid {pid} still alive"
        );
    }
    // The server sees the connection closed: the process really is gone.
    loop {
        if matches!(server.next_event().await, Event::HangClosed) {
            break;
        }
    }
    assert!(
        tree(&s.dest).is_empty(),
        "partial files left: {:?}",
        tree(&s.dest)
    );
    (took, started.elapsed())
}

#[tokio::test]
async fn timeout_kills_the_process_group_and_removes_partials() {
    let (_, whole) =
        hang_and_stop(Duration::from_secs(5), async |_| {}, FailureReason::Timeout).await;
    // The timeout, not the hanging server (which never answers), ended the download. The
    // timeout and the bound are loose: yt-dlp's own start-up (which the timeout counts) takes
    // seconds on a loaded machine, and it must reach the server before it is killed.
    assert!(whole < Duration::from_secs(30), "{whole:?}");
}

#[tokio::test]
async fn cancel_kills_the_process_group_and_removes_partials() {
    let (took, _) = hang_and_stop(
        Duration::from_secs(60),
        async |cancel| cancel.cancel(),
        FailureReason::Cancelled,
    )
    .await;
    assert!(took < TERM_GRACE, "cancel took {took:?}");
}

#[tokio::test]
async fn missing_binary_says_how_to_fix_it() {
    let s = setup();
    let dl = Downloader::new(
        &config(
            "/nonexistent/yt-dlp-for-playlistd",
            1,
            Duration::from_secs(5),
        ),
        &s.cache,
    );
    let t = track("1", "A", "B", "http://127.0.0.1:9/a.mp3");
    let e = dl
        .download(&t, &s.dest, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::YtDlpMissing);
    assert!(
        e.message.contains("pip install yt-dlp") && e.message.contains("download.ytdlp"),
        "{e}"
    );
    assert!(tree(&s.dest).is_empty());

    let e = ytdlp_version(Path::new("/nonexistent/yt-dlp-for-playlistd"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::YtDlpMissing);
}

#[tokio::test]
async fn version_of_the_installed_ytdlp() {
    let _serial = YTDLP.lock().await;
    let v = ytdlp_version(Path::new("yt-dlp")).await.unwrap();
    assert!(v.starts_with("20") && v.contains('.'), "{v}");
}

#[tokio::test]
async fn an_existing_file_is_reused_without_running_ytdlp() {
    let s = setup();
    // A yt-dlp that cannot start proves no process was needed.
    let dl = Downloader::new(
        &config(
            "/nonexistent/yt-dlp-for-playlistd",
            1,
            Duration::from_secs(5),
        ),
        &s.cache,
    );
    std::fs::create_dir_all(&s.dest).unwrap();
    std::fs::write(s.dest.join("Artist - Title [42].m4a"), b"audio").unwrap();
    std::fs::write(s.dest.join("Artist - Title [42].jpg"), b"art").unwrap();
    std::fs::write(s.dest.join("X - Y [9].mp3"), b"").unwrap();
    let cancel = CancellationToken::new();

    let got = dl
        .download(
            &track("42", "Artist", "Title", "http://x/"),
            &s.dest,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        Downloaded {
            path: s.dest.join("Artist - Title [42].m4a"),
            bytes: 5,
            engine: None,
            requests: None,
        }
    );

    // Renamed upstream since: still found by its id.
    let got = dl
        .download(
            &track("42", "New Name", "Remaster", "http://x/"),
            &s.dest,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(got.path, s.dest.join("Artist - Title [42].m4a"));

    // Another id that is a prefix of 42 does not take its file.
    let e = dl
        .download(
            &track("4", "Artist", "Title", "http://x/"),
            &s.dest,
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::YtDlpMissing);

    // A zero-byte leftover is not a download: removed, and yt-dlp would be run.
    let e = dl
        .download(&track("9", "X", "Y", "http://x/"), &s.dest, &cancel)
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailureReason::YtDlpMissing);
    assert!(!s.dest.join("X - Y [9].mp3").exists());
}

#[tokio::test]
async fn one_pool_bounds_concurrent_ytdlp_runs() {
    let _serial = YTDLP.lock().await;
    let server = Server::start().await;
    let s = setup();
    let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(60)), &s.cache);
    let tok = token();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..4 {
        let (dl, base, dest) = (
            dl.clone(),
            server.base.clone(),
            s.dest.join(format!("pl{}", i % 2)),
        );
        let t = track(
            &i.to_string(),
            "A",
            "B",
            &format!("{base}/slow/{tok}-{i}.mp3"),
        );
        set.spawn(async move { dl.download(&t, &dest, &CancellationToken::new()).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(server.counters.max_active.load(Ordering::SeqCst), 2);
}
