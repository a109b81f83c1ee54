//! What every benchmark shares: the sandbox (the real config and engine against the fakes,
//! with the latencies and rate a benchmark asks for), one measured `playlistd sync` with its
//! Notion and SoundCloud request counts, the process's CPU time (getrusage), readings from
//! /proc and the allocator, finding yt-dlp and the command that runs playlistd, and the
//! formatting of durations and sizes.

use crate::Args;
use crate::record::BenchResult;
use playlistd::report::RunReport;
use playlistd::sandbox::Sandbox;
use playlistd::sync::{Event, Observer, SyncOptions};
use playlistd_fakes::notion::{Endpoint as NotionEndpoint, FakeNotionOptions};
use playlistd_fakes::soundcloud::{Endpoint as ScEndpoint, playlist_of};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// "Unlimited" for set-up syncs and the download-only baseline: one request per millisecond.
pub(crate) const FAST_RPM: u32 = 60_000;

pub(crate) struct Setup {
    pub(crate) notion_latency: Duration,
    pub(crate) sc_latency: Duration,
    pub(crate) rpm: u32,
    pub(crate) downloads: bool,
}

pub(crate) async fn sandbox(args: &Args, s: &Setup) -> Sandbox {
    let opts = FakeNotionOptions {
        latency: s.notion_latency,
        ..FakeNotionOptions::default()
    };
    let mut sb = Sandbox::start(None, opts).await.expect("start the fakes");
    sb.sc.set_latency(s.sc_latency);
    sb.requests_per_minute = s.rpm;
    sb.downloads = s.downloads;
    sb.download_concurrency = args.download_concurrency;
    if let Some(y) = &args.ytdlp {
        sb.ytdlp = y.clone();
    }
    sb
}

/// Adds a generated playlist of `n` tracks to the fake and to the config; returns its name.
pub(crate) fn add_playlist(
    sb: &mut Sandbox,
    n: usize,
    slug: &str,
    track_ms: Option<u64>,
) -> String {
    let mut p = playlist_of(n, "bench", slug);
    if let Some(ms) = track_ms {
        p.tracks = p.tracks.into_iter().map(|t| t.duration_ms(ms)).collect();
    }
    let url = sb.sc.add_playlist(p);
    let name = format!("Bench {slug}");
    sb.watch(&name, &url);
    name
}

pub(crate) struct Run {
    pub(crate) report: RunReport,
    pub(crate) wall: Duration,
    /// getrusage(RUSAGE_SELF) user+sys around the sync: the fakes are in this process too.
    pub(crate) cpu: Duration,
    /// From the fake's log.
    pub(crate) notion_requests: usize,
    pub(crate) notion_breakdown: String,
    pub(crate) notion_errors: usize,
    pub(crate) sc_requests: u64,
}

pub(crate) fn progress(label: &'static str, total: usize) -> Observer {
    let start = Instant::now();
    let pages = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(AtomicUsize::new(0));
    Arc::new(move |e: &Event| {
        let (counter, what) = match e {
            Event::NotionStep { .. } => (&pages, "pages"),
            Event::DownloadStep { .. } => (&files, "downloads"),
            Event::Listed { .. } => return,
        };
        let k = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if k % 100 == 0 || k == total {
            eprintln!(
                "  {label}: {k}/{total} {what} after {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
    })
}

/// One `playlistd sync` of `name` with a fresh engine (production backoffs), measured.
pub(crate) async fn sync_once(
    sb: &Sandbox,
    name: &str,
    label: Option<(&'static str, usize)>,
) -> Run {
    sb.notion.clear_log();
    sb.sc.reset_counters();
    let mut engine = sb.engine(false).expect("engine");
    if let Some((label, total)) = label {
        engine = engine.with_observer(progress(label, total));
    }
    let pl = engine
        .config
        .playlist(name)
        .expect("playlist in config")
        .clone();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let (report, result) = engine.sync(&pl, &SyncOptions::default()).await;
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    if let Err(e) = result {
        panic!("sync of {name} failed: {e}\n{}", report.summary_line());
    }
    let log = sb.notion.requests();
    Run {
        wall,
        cpu,
        notion_requests: log.len(),
        notion_breakdown: breakdown(sb),
        notion_errors: log
            .iter()
            .filter(|r| !(200..300).contains(&r.status))
            .count(),
        sc_requests: sb.sc.total_requests(),
        report,
    }
}

pub(crate) fn breakdown(sb: &Sandbox) -> String {
    let kinds = [
        (NotionEndpoint::UsersMe, "users/me"),
        (NotionEndpoint::GetDatabase, "get database"),
        (NotionEndpoint::GetDataSource, "get data source"),
        (NotionEndpoint::Query, "query"),
        (NotionEndpoint::Create, "create"),
        (NotionEndpoint::Update, "update"),
        (NotionEndpoint::GetPage, "get page"),
        (NotionEndpoint::Other, "other"),
    ];
    let parts: Vec<String> = kinds
        .iter()
        .filter_map(|(e, n)| {
            let c = sb.notion.count(*e);
            (c > 0).then(|| format!("{c} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The requests the fake SoundCloud counted, by kind (B6, B7).
pub(crate) fn sc_breakdown(sb: &Sandbox) -> String {
    [
        (ScEndpoint::WebRoot, "web page"),
        (ScEndpoint::Asset, "script asset"),
        (ScEndpoint::Resolve, "resolve"),
        (ScEndpoint::Tracks, "tracks?ids="),
        (ScEndpoint::Track, "tracks/{id}"),
        (ScEndpoint::Playlist, "playlists/{id}"),
        (ScEndpoint::Media, "stream URL"),
        (ScEndpoint::CdnPlaylist, "HLS playlist"),
        (ScEndpoint::CdnInit, "init segment"),
        (ScEndpoint::CdnSegment, "media segment"),
        (ScEndpoint::CdnProgressive, "progressive"),
        (ScEndpoint::Artwork, "artwork"),
        (ScEndpoint::Audio, "permalink audio"),
        (ScEndpoint::Other, "other"),
    ]
    .iter()
    .filter_map(|(e, n)| {
        let c = sb.sc.requests(*e);
        (c > 0).then(|| format!("{c} {n}"))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; nothing else is touched.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn kib(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

pub(crate) fn check_report(r: &RunReport, expect_created: usize, res: &mut BenchResult) {
    if r.created.len() != expect_created || !r.failed.is_empty() || !r.complete {
        res.notes.push(format!(
            "WARNING: the sync did not do what was expected ({expect_created} new pages): {}",
            r.summary_line()
        ));
        for f in r.failed.iter().take(5) {
            res.notes
                .push(format!("  failed ({:?}) {}: {}", f.stage, f.title, f.error));
        }
    }
}

pub(crate) fn find_ytdlp(args: &Args) -> Option<(PathBuf, String)> {
    let candidate = args
        .ytdlp
        .clone()
        .unwrap_or_else(|| PathBuf::from("yt-dlp"));
    let out = std::process::Command::new(&candidate)
        .arg("--version")
        .output()
        .ok()?;
    out.status.success().then(|| {
        (
            candidate,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    })
}

/// Bytes the allocator holds for live allocations, in KiB: what a loaded state really takes,
/// free of the pages a load touched and gave back.
pub(crate) fn live_heap_kb() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

pub(crate) fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The command that runs playlistd: `PLAYLISTD_BENCH_BIN` or this build, behind
/// `PLAYLISTD_BENCH_WRAP`'s tool if set (MEM and B4 share it).
pub(crate) fn playlistd_argv() -> Vec<String> {
    let bin = std::env::var("PLAYLISTD_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_playlistd").to_string());
    let mut argv: Vec<String> = std::env::var("PLAYLISTD_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    argv.push(bin);
    argv
}
