//! Benchmarks of `playlistd sync` against the fake SoundCloud and Notion servers (issue 5).
//!
//! What it measures: the real config and engine wiring (`playlistd::sandbox::Sandbox`, the
//! same world the scenario tests and `playlistd demo` use) against the in-process fakes on
//! 127.0.0.1, with latency injected by the fakes (150 ms per Notion request and 80 ms per
//! SoundCloud request by default) and the real Notion rate limit (180 requests a minute):
//!
//! - B1 first sync of 500 new tracks, downloads off: Notion requests, wall time, floor
//!   (requests ÷ rate) and wall/floor;
//! - B2 unchanged re-sync of the same tracks: Notion and SoundCloud requests, CPU time
//!   (getrusage user+sys around `Engine::sync`, fake servers included), state file size;
//! - B3 first sync with downloads on (the real yt-dlp from PATH, audio served by the fake at a
//!   capped bandwidth): Notion requests per new track, wall time against
//!   max(Notion floor, download time), the download time measured by a second run with Notion
//!   latency 0 and an unlimited rate;
//! - B4 idle daemon (`playlistd run`, a child process) with 100 playlists of 2 tracks: resident
//!   memory 20 s after the first syncs of all of them finished (the log says when), and with
//!   every playlist up to date; wakeups a minute (context switches from /proc over a measured
//!   interval);
//! - B5 a 100,000-track / 200-playlist SQLite state: open, the diff of a 500-track playlist and
//!   a run's writes, in a fresh process, with its peak memory against a state a tenth the size;
//! - B6 listing a 500-track playlist with the native client (requests, wall time), and with the
//!   real yt-dlp (`--flat-playlist -J` and full `-J`) on the same fake playlist: its SoundCloud
//!   hosts are hard-coded, so `benches/ytdlp-plugins` redirects its requests to the fake;
//! - MEM peak resident memory (VmHWM) while syncing a 10,000-track playlist (in a child
//!   process, so the other benchmarks do not raise the peak).
//!
//! Run it with:
//!
//! ```sh
//! cargo bench --bench sync                                   # all (~15 min)
//! cargo bench --bench sync -- --only B1,B2 --rpm 180 --tracks 500
//! cargo bench --bench sync -- --only B2,B5,B6 --no-write     # print only
//! ```
//!
//! Flags (and environment variables): `--rpm` (`PLAYLISTD_BENCH_RPM`, default 180),
//! `--tracks` (`PLAYLISTD_BENCH_TRACKS`, 500), `--notion-latency-ms`
//! (`PLAYLISTD_BENCH_NOTION_LATENCY_MS`, 150), `--sc-latency-ms` (`PLAYLISTD_BENCH_SC_LATENCY_MS`,
//! 80), `--bandwidth` bytes/s for audio (`PLAYLISTD_BENCH_BANDWIDTH`, 200000), `--audio-size`
//! bytes (20480), `--download-concurrency` (3), `--ytdlp PATH` (`PLAYLISTD_BENCH_YTDLP`, else
//! `yt-dlp` on PATH), `--no-write`. Results are printed as a table and recorded in
//! `benches/sync-results.json`, from which `BENCHMARKS.md` is regenerated; a benchmark run with
//! other than the reference parameters (180/min, 500 tracks, 150/80 ms) is printed, not recorded.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then only says the
//! benchmarks are skipped.

use clap::Parser;
use playlistd::model::{TrackKey, UnavailableReason};
use playlistd::report::RunReport;
use playlistd::sandbox::{FakeSoundCloudConfig, Sandbox};
use playlistd::source::soundcloud::SoundCloud;
use playlistd::state::{
    DB_FILE, PlaylistState, RunSummary, State, StateStore, Step, StepStatus, TrackState,
};
use playlistd::sync::{Event, Observer, SyncOptions};
use playlistd_fakes::notion::{Endpoint as NotionEndpoint, FakeNotionOptions};
use playlistd_fakes::soundcloud::{Endpoint as ScEndpoint, playlist_of};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REFERENCE_RPM: u32 = 180;
const REFERENCE_TRACKS: usize = 500;
const REFERENCE_NOTION_LATENCY_MS: u64 = 150;
const REFERENCE_SC_LATENCY_MS: u64 = 80;
const REFERENCE_BANDWIDTH: u64 = 200_000;
const REFERENCE_AUDIO_SIZE: usize = 20 * 1024;
const REFERENCE_DOWNLOAD_CONCURRENCY: usize = 3;
const REFERENCE_MEMORY_TRACKS: usize = 10_000;
/// MEM's criterion for "flat": growth per extra track of the real process, in KiB.
const MEM_FLAT_KIB: f64 = 0.5;
/// "Unlimited" for set-up syncs and the download-only baseline: one request per millisecond.
const FAST_RPM: u32 = 60_000;
const B5_TRACKS: usize = 100_000;
const B5_PLAYLISTS: usize = 200;
const B2_RUNS: usize = 5;
const B5_RUNS: usize = 5;
const ALL: [&str; 7] = ["B1", "B2", "B3", "B4", "B5", "B6", "MEM"];
const B4_PLAYLISTS: usize = 100;
/// Tracks of each B4 playlist, all new to the first sync.
const B4_TRACKS: usize = 2;
/// How long after the last first sync B4 reads the daemon's memory.
const B4_SETTLE: Duration = Duration::from_secs(20);
/// B4's reference watch (`--idle-secs`).
const REFERENCE_IDLE_SECS: u64 = 60;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sync-bench",
    about = "playlistd sync benchmarks against the fakes"
)]
struct Args {
    /// Passed by `cargo bench`; without it the benchmarks are skipped.
    #[arg(long)]
    bench: bool,
    /// Comma-separated subset: B1,B2,B3,B4,B5,B6,MEM (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Notion requests per minute (the real limit is 180; more gives a quick, unrecorded pass).
    #[arg(long, env = "PLAYLISTD_BENCH_RPM", default_value_t = REFERENCE_RPM)]
    rpm: u32,
    /// Tracks in the synced playlist (B1, B2, B3, B6).
    #[arg(long, env = "PLAYLISTD_BENCH_TRACKS", default_value_t = REFERENCE_TRACKS)]
    tracks: usize,
    /// Latency the fake Notion adds to every answer.
    #[arg(long, env = "PLAYLISTD_BENCH_NOTION_LATENCY_MS", default_value_t = REFERENCE_NOTION_LATENCY_MS)]
    notion_latency_ms: u64,
    /// Latency the fake SoundCloud adds to every answer (API and audio host).
    #[arg(long, env = "PLAYLISTD_BENCH_SC_LATENCY_MS", default_value_t = REFERENCE_SC_LATENCY_MS)]
    sc_latency_ms: u64,
    /// Bytes per second the fake serves audio at (B3).
    #[arg(long, env = "PLAYLISTD_BENCH_BANDWIDTH", default_value_t = REFERENCE_BANDWIDTH)]
    bandwidth: u64,
    /// Size of each audio file in bytes (B3).
    #[arg(long, default_value_t = REFERENCE_AUDIO_SIZE)]
    audio_size: usize,
    /// yt-dlp processes at once (B3; the product default is 3).
    #[arg(long, env = "PLAYLISTD_BENCH_DOWNLOAD_CONCURRENCY", default_value_t = REFERENCE_DOWNLOAD_CONCURRENCY)]
    download_concurrency: usize,
    /// Tracks in the playlist of the memory benchmark.
    #[arg(long, default_value_t = REFERENCE_MEMORY_TRACKS)]
    memory_tracks: usize,
    /// The yt-dlp to run (default: `yt-dlp` on PATH).
    #[arg(long, env = "PLAYLISTD_BENCH_YTDLP")]
    ytdlp: Option<PathBuf>,
    /// Seconds the idle daemon is watched (B4).
    #[arg(long, default_value_t = REFERENCE_IDLE_SECS)]
    idle_secs: u64,
    /// Print the results only; leave BENCHMARKS.md and benches/sync-results.json alone.
    #[arg(long)]
    no_write: bool,
    /// Internal: sync this many tracks with the `playlistd` binary as a child of this process
    /// and report that child's peak memory.
    #[arg(long, hide = true)]
    child_binary: Option<usize>,
    /// Internal: run the memory probe with this many tracks in this (child) process.
    #[arg(long, hide = true)]
    child_memory: Option<usize>,
    /// Internal: load the state in this directory once, in this fresh process, and print how
    /// long it took (B5).
    #[arg(long, hide = true)]
    child_load: Option<PathBuf>,
    /// Internal: with `--child-load`, run one B5 round on this playlist instead.
    #[arg(long, hide = true)]
    child_round: Option<usize>,
    /// Internal: the probe fills the fakes directly instead of syncing (the fakes' share).
    #[arg(long, hide = true)]
    fakes_only: bool,
}

impl Args {
    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(id))
    }
    fn notion_latency(&self) -> Duration {
        Duration::from_millis(self.notion_latency_ms)
    }
    fn sc_latency(&self) -> Duration {
        Duration::from_millis(self.sc_latency_ms)
    }
    fn latencies_are_reference(&self) -> bool {
        self.notion_latency_ms == REFERENCE_NOTION_LATENCY_MS
            && self.sc_latency_ms == REFERENCE_SC_LATENCY_MS
    }
    /// Why a benchmark's result must not be recorded, if it must not.
    fn not_reference(&self, id: &str) -> Option<String> {
        let mut why = vec![];
        if matches!(id, "B1" | "B3") && self.rpm != REFERENCE_RPM {
            why.push(format!(
                "--rpm {} (the real limit is {REFERENCE_RPM})",
                self.rpm
            ));
        }
        if matches!(id, "B1" | "B2" | "B3" | "B6") {
            if self.tracks != REFERENCE_TRACKS {
                why.push(format!("--tracks {}", self.tracks));
            }
            if !self.latencies_are_reference() {
                why.push(format!(
                    "latency {}/{} ms",
                    self.notion_latency_ms, self.sc_latency_ms
                ));
            }
        }
        if id == "B3"
            && (self.bandwidth != REFERENCE_BANDWIDTH
                || self.audio_size != REFERENCE_AUDIO_SIZE
                || self.download_concurrency != REFERENCE_DOWNLOAD_CONCURRENCY)
        {
            why.push("non-default download parameters".into());
        }
        if id == "B4" && self.idle_secs != REFERENCE_IDLE_SECS {
            why.push(format!("--idle-secs {}", self.idle_secs));
        }
        if id == "MEM" && self.memory_tracks != REFERENCE_MEMORY_TRACKS {
            why.push(format!("--memory-tracks {}", self.memory_tracks));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    metric: String,
    target: String,
    measured: String,
    /// "pass", "miss (...)", "info" or "skipped".
    verdict: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchResult {
    id: String,
    title: String,
    date: String,
    command: String,
    machine: String,
    params: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ResultsFile {
    results: BTreeMap<String, BenchResult>,
}

fn row(metric: &str, target: &str, measured: String, verdict: String) -> Row {
    Row {
        metric: metric.into(),
        target: target.into(),
        measured,
        verdict,
    }
}

fn info(metric: &str, measured: String) -> Row {
    row(metric, "—", measured, "info".into())
}

/// A ratio against its ceiling, shown and judged to three decimals (so a shown 1.050 passes
/// ≤ 1.05).
fn ratio_row(metric: &str, ratio: f64, limit: f64) -> Row {
    row(
        metric,
        &format!("≤ {limit}"),
        format!("{ratio:.3}"),
        at_most_shown(ratio, limit),
    )
}

/// [`at_most`] on the value rounded as shown, to three decimals.
fn at_most_shown(value: f64, limit: f64) -> String {
    at_most((value * 1000.0).round() / 1000.0, limit)
}

/// "pass" when `value <= limit`, else "miss (+x% over)".
fn at_most(value: f64, limit: f64) -> String {
    if value <= limit {
        "pass".into()
    } else if limit == 0.0 {
        format!("miss (+{value} over)")
    } else {
        format!("miss (+{:.1}% over)", (value / limit - 1.0) * 100.0)
    }
}

fn below(value: f64, limit: f64) -> String {
    if value < limit {
        "pass".into()
    } else {
        format!("miss (+{:.1}% over)", (value / limit - 1.0) * 100.0)
    }
}

struct Ctx {
    args: Args,
    command: String,
    machine: String,
    date: String,
}

impl Ctx {
    fn result(&self, id: &str, title: &str, params: String) -> BenchResult {
        BenchResult {
            id: id.into(),
            title: title.into(),
            date: self.date.clone(),
            command: self.command.clone(),
            machine: self.machine.clone(),
            params,
            rows: vec![],
            notes: vec![],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if !raw.iter().skip(1).any(|a| a == "--bench") {
        println!(
            "sync benchmarks skipped (not run with --bench); run `cargo bench --bench sync` to measure"
        );
        return;
    }
    // `--bench --child-measure CMD ARGS...`: run CMD and print its own peak memory (B5/MEM).
    if let Some(at) = raw.iter().position(|a| a == "--child-measure") {
        let mut cmd = std::process::Command::new(&raw[at + 1]);
        cmd.args(&raw[at + 2..]);
        let (ok, kb) = run_measured(cmd).expect("run the measured command");
        println!("MEASURED {kb} {ok}");
        return;
    }
    let args = Args::parse();
    if let Some(n) = args.child_memory {
        memory_child(&args, n);
        return;
    }
    if let Some(n) = args.child_binary {
        binary_child(&args, n);
        return;
    }
    if let (Some(dir), Some(playlist)) = (&args.child_load, args.child_round) {
        round_child(dir, playlist);
    }
    if let Some(dir) = &args.child_load {
        let live_before = live_heap_kb();
        let t = Instant::now();
        let (store, _) = StateStore::load(dir).expect("load");
        let took = t.elapsed();
        println!(
            "LOAD-PROBE {} {} {} {}",
            took.as_secs_f64(),
            store.state.tracks.len(),
            live_heap_kb().saturating_sub(live_before),
            proc_status_kb(std::process::id(), "VmHWM:")
        );
        // Exit without freeing: that is not part of loading.
        std::process::exit(0);
    }
    for o in &args.only {
        if !ALL.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            eprintln!("unknown benchmark {o:?}; choose from {}", ALL.join(","));
            std::process::exit(2);
        }
    }
    let shown: Vec<&String> = raw.iter().skip(1).filter(|a| *a != "--bench").collect();
    let command = if shown.is_empty() {
        "cargo bench --bench sync".to_string()
    } else {
        format!(
            "cargo bench --bench sync -- {}",
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let ctx = Ctx {
        machine: machine(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command,
        args: args.clone(),
    };
    println!("playlistd sync benchmarks: {}", ctx.command);
    println!("machine: {}", ctx.machine);
    println!(
        "Notion {} ms/request at {}/min, SoundCloud {} ms/request, {} tracks\n",
        args.notion_latency_ms, args.rpm, args.sc_latency_ms, args.tracks
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results: Vec<BenchResult> = vec![];
    // MEM first and in a child process: VmHWM is a process-wide high-water mark.
    if args.wants("MEM") {
        results.push(bench_memory(&ctx));
    }
    if args.wants("B1") {
        results.push(runtime.block_on(bench_b1(&ctx)));
    }
    if args.wants("B2") {
        results.push(runtime.block_on(bench_b2(&ctx)));
    }
    if args.wants("B3")
        && let Some(r) = runtime.block_on(bench_b3(&ctx))
    {
        results.push(r);
    }
    if args.wants("B4") {
        results.push(runtime.block_on(bench_b4(&ctx)));
    }
    if args.wants("B5") {
        results.push(bench_b5(&ctx));
    }
    if args.wants("B6") {
        results.push(runtime.block_on(bench_b6(&ctx)));
    }
    drop(runtime);

    print_table(&results);
    if args.no_write {
        println!("\n--no-write: BENCHMARKS.md left alone");
        return;
    }
    let mut recorded = vec![];
    for r in results {
        match args.not_reference(&r.id) {
            Some(why) => println!("{} not recorded: {why}", r.id),
            None => recorded.push(r),
        }
    }
    if recorded.is_empty() {
        return;
    }
    match record(recorded) {
        Ok(path) => println!("\nrecorded in {}", path.display()),
        Err(e) => {
            eprintln!("cannot write the results: {e}");
            std::process::exit(1);
        }
    }
}

fn print_table(results: &[BenchResult]) {
    let mut lines = vec![[
        "bench".to_string(),
        "metric".to_string(),
        "target".to_string(),
        "measured".to_string(),
        "result".to_string(),
    ]];
    for r in results {
        for (i, row) in r.rows.iter().enumerate() {
            lines.push([
                if i == 0 { r.id.clone() } else { String::new() },
                row.metric.clone(),
                row.target.clone(),
                row.measured.clone(),
                row.verdict.clone(),
            ]);
        }
    }
    let mut width = [0usize; 5];
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!();
    for (n, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
        if n == 0 {
            println!("{}", "-".repeat(width.iter().sum::<usize>() + 8));
        }
    }
    for r in results {
        for note in &r.notes {
            println!("{}: {note}", r.id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sandbox and one sync
// ---------------------------------------------------------------------------------------------

struct Setup {
    notion_latency: Duration,
    sc_latency: Duration,
    rpm: u32,
    downloads: bool,
}

async fn sandbox(args: &Args, s: &Setup) -> Sandbox {
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
fn add_playlist(sb: &mut Sandbox, n: usize, slug: &str, audio_size: Option<usize>) -> String {
    let mut p = playlist_of(n, "bench", slug);
    if let Some(size) = audio_size {
        p.tracks = p.tracks.into_iter().map(|t| t.audio_size(size)).collect();
    }
    let url = sb.sc.add_playlist(p);
    let name = format!("Bench {slug}");
    sb.watch(&name, &url);
    name
}

struct Run {
    report: RunReport,
    wall: Duration,
    /// getrusage(RUSAGE_SELF) user+sys around the sync: the fakes are in this process too.
    cpu: Duration,
    /// From the fake's log.
    notion_requests: usize,
    notion_breakdown: String,
    notion_errors: usize,
    sc_requests: u64,
}

fn progress(label: &'static str, total: usize) -> Observer {
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
async fn sync_once(sb: &Sandbox, name: &str, label: Option<(&'static str, usize)>) -> Run {
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

fn breakdown(sb: &Sandbox) -> String {
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

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; nothing else is touched.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn kib(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn check_report(r: &RunReport, expect_created: usize, res: &mut BenchResult) {
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

// ---------------------------------------------------------------------------------------------
// B1: first sync, downloads off
// ---------------------------------------------------------------------------------------------

async fn bench_b1(ctx: &Ctx) -> BenchResult {
    let a = &ctx.args;
    eprintln!(
        "B1: first sync of {} new tracks at {}/min (about {:.0} s)",
        a.tracks,
        a.rpm,
        (a.tracks as f64 + 10.0) * 60.0 / a.rpm as f64
    );
    let mut sb = sandbox(
        a,
        &Setup {
            notion_latency: a.notion_latency(),
            sc_latency: a.sc_latency(),
            rpm: a.rpm,
            downloads: false,
        },
    )
    .await;
    let name = add_playlist(&mut sb, a.tracks, "first-sync", None);
    let run = sync_once(&sb, &name, Some(("B1", a.tracks))).await;
    let floor = Duration::from_secs_f64(run.notion_requests as f64 * 60.0 / a.rpm as f64);
    let ratio = run.wall.as_secs_f64() / floor.as_secs_f64();
    let mut res = ctx.result(
        "B1",
        "First sync of new tracks, downloads off",
        format!(
            "{} tracks, Notion {} ms/request at {}/min, SoundCloud {} ms/request",
            a.tracks, a.notion_latency_ms, a.rpm, a.sc_latency_ms
        ),
    );
    let limit = a.tracks as f64 * 1.02;
    res.rows.push(row(
        "Notion requests",
        &format!("≤ {limit:.0}"),
        run.notion_requests.to_string(),
        at_most(run.notion_requests as f64, limit),
    ));
    res.rows.push(info("wall time", secs(run.wall)));
    res.rows.push(info(
        "floor (requests ÷ rate)",
        format!(
            "{} ({} ÷ {}/s)",
            secs(floor),
            run.notion_requests,
            a.rpm / 60
        ),
    ));
    res.rows.push(ratio_row("wall ÷ floor", ratio, 1.05));
    res.notes.push(format!(
        "Notion requests by kind: {}; non-2xx answers: {}",
        run.notion_breakdown, run.notion_errors
    ));
    res.notes.push(format!(
        "SoundCloud requests (client-id scrape included): {}; engine report: {}",
        run.sc_requests,
        run.report.summary_line()
    ));
    check_report(&run.report, a.tracks, &mut res);
    res
}

// ---------------------------------------------------------------------------------------------
// B2: unchanged re-sync
// ---------------------------------------------------------------------------------------------

async fn bench_b2(ctx: &Ctx) -> BenchResult {
    let a = &ctx.args;
    eprintln!(
        "B2: set-up sync of {} tracks (no latency, unlimited rate), then {B2_RUNS} unchanged re-syncs",
        a.tracks
    );
    let mut sb = sandbox(
        a,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: Duration::ZERO,
            rpm: FAST_RPM,
            downloads: false,
        },
    )
    .await;
    let name = add_playlist(&mut sb, a.tracks, "re-sync", None);
    let first = sync_once(&sb, &name, None).await;
    let mut res = ctx.result(
        "B2",
        "Unchanged re-sync",
        format!(
            "{} tracks already synced; Notion {} ms/request at {}/min, SoundCloud {} ms/request; \
             each re-sync is a fresh engine, as one `playlistd sync` run",
            a.tracks, a.notion_latency_ms, a.rpm, a.sc_latency_ms
        ),
    );
    check_report(&first.report, a.tracks, &mut res);
    sb.notion.set_latency(a.notion_latency());
    sb.sc.set_latency(a.sc_latency());
    sb.requests_per_minute = a.rpm;
    let mut runs = vec![];
    for _ in 0..B2_RUNS {
        runs.push(sync_once(&sb, &name, None).await);
    }
    let mut cpus: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    cpus.sort();
    let median = cpus[cpus.len() / 2];
    let max = *cpus.last().expect("runs");
    let notion_max = runs.iter().map(|r| r.notion_requests).max().unwrap_or(0);
    let sc_max = runs.iter().map(|r| r.sc_requests).max().unwrap_or(0);
    let size = std::fs::metadata(sb.state_dir().join(DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    res.rows.push(row(
        "Notion requests",
        "0",
        notion_max.to_string(),
        at_most(notion_max as f64, 0.0),
    ));
    res.rows.push(row(
        "SoundCloud requests",
        "≤ 11",
        sc_max.to_string(),
        at_most(sc_max as f64, 11.0),
    ));
    res.rows.push(row(
        "CPU time of the sync (median)",
        "< 50 ms",
        ms(median),
        below(median.as_secs_f64(), 0.050),
    ));
    res.rows.push(info(
        "wall time (median)",
        secs({
            let mut w: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
            w.sort();
            w[w.len() / 2]
        }),
    ));
    res.rows.push(info("state file size", kib(size)));
    res.notes.push(format!(
        "CPU per re-sync (user+sys of the whole process, in-process fake servers included): {} (max {})",
        runs.iter().map(|r| ms(r.cpu)).collect::<Vec<_>>().join(", "),
        ms(max)
    ));
    res.notes
        .push(format!("first re-sync: {}", runs[0].report.summary_line()));
    for r in &runs {
        if !r.report.created.is_empty() || !r.report.failed.is_empty() {
            res.notes.push(format!(
                "WARNING: a re-sync did work: {}",
                r.report.summary_line()
            ));
        }
    }
    res
}

// ---------------------------------------------------------------------------------------------
// B3: first sync with downloads
// ---------------------------------------------------------------------------------------------

fn find_ytdlp(args: &Args) -> Option<(PathBuf, String)> {
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

async fn bench_b3(ctx: &Ctx) -> Option<BenchResult> {
    let a = &ctx.args;
    let Some((ytdlp, version)) = find_ytdlp(a) else {
        println!(
            "B3 skipped: yt-dlp not found (install it, e.g. `python3 -m pip install yt-dlp`, or pass --ytdlp PATH)"
        );
        return None;
    };
    let mut args = a.clone();
    args.ytdlp = Some(ytdlp.clone());
    let per_file = Duration::from_secs_f64(a.audio_size as f64 / a.bandwidth as f64);

    // The download time: the same sync with Notion out of the way (no latency, unlimited rate).
    eprintln!(
        "B3: download-only baseline: {} tracks, {} B at {} B/s, {} yt-dlp at once",
        a.tracks, a.audio_size, a.bandwidth, a.download_concurrency
    );
    let mut base = sandbox(
        &args,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: a.sc_latency(),
            rpm: FAST_RPM,
            downloads: true,
        },
    )
    .await;
    base.sc.set_bandwidth(Some(a.bandwidth));
    let name = add_playlist(&mut base, a.tracks, "downloads", Some(a.audio_size));
    let baseline = sync_once(&base, &name, Some(("B3 baseline", a.tracks))).await;
    let files = base.music_files().len();
    drop(base);

    eprintln!("B3: the benchmark run at {}/min", a.rpm);
    let mut sb = sandbox(
        &args,
        &Setup {
            notion_latency: a.notion_latency(),
            sc_latency: a.sc_latency(),
            rpm: a.rpm,
            downloads: true,
        },
    )
    .await;
    sb.sc.set_bandwidth(Some(a.bandwidth));
    let name = add_playlist(&mut sb, a.tracks, "downloads", Some(a.audio_size));
    let run = sync_once(&sb, &name, Some(("B3", a.tracks))).await;

    let created = run.report.created.len().max(1);
    let per_track = run.notion_requests as f64 / created as f64;
    let floor = Duration::from_secs_f64(run.notion_requests as f64 * 60.0 / a.rpm as f64);
    let ideal_requests = run.notion_requests - sb.notion.count(NotionEndpoint::Update);
    let ideal_floor = Duration::from_secs_f64(ideal_requests as f64 * 60.0 / a.rpm as f64);
    let download_time = baseline.wall;
    let bound = floor.max(download_time);
    let ratio = run.wall.as_secs_f64() / bound.as_secs_f64();
    let mut res = ctx.result(
        "B3",
        "First sync with downloads",
        format!(
            "{} tracks of {} B served at {} B/s ({:.2} s of transfer each), {} yt-dlp at once \
             (yt-dlp {version}), Notion {} ms/request at {}/min, SoundCloud {} ms/request",
            a.tracks,
            a.audio_size,
            a.bandwidth,
            per_file.as_secs_f64(),
            a.download_concurrency,
            a.notion_latency_ms,
            a.rpm,
            a.sc_latency_ms
        ),
    );
    res.rows.push(row(
        "Notion requests per new track",
        "≤ 1.1",
        format!("{per_track:.3} ({} ÷ {created})", run.notion_requests),
        at_most_shown(per_track, 1.1),
    ));
    res.rows.push(info("wall time", secs(run.wall)));
    res.rows.push(info(
        "Notion floor (requests ÷ rate)",
        format!("{} ({} requests)", secs(floor), run.notion_requests),
    ));
    res.rows.push(info(
        "download time (measured, downloads only)",
        secs(download_time),
    ));
    res.rows
        .push(ratio_row("wall ÷ max(floor, download time)", ratio, 1.1));
    let ideal_bound = ideal_floor.max(download_time);
    let ideal_ratio = run.wall.as_secs_f64() / ideal_bound.as_secs_f64();
    res.rows.push(ratio_row(
        "wall ÷ max(floor without write-backs, download time)",
        ideal_ratio,
        1.1,
    ));
    res.notes.push(format!(
        "Notion requests by kind: {}; non-2xx answers: {}",
        run.notion_breakdown, run.notion_errors
    ));
    res.notes.push(format!(
        "without the {} write-back updates the floor would be {} ({} requests)",
        sb.notion.count(NotionEndpoint::Update),
        secs(ideal_floor),
        ideal_requests
    ));
    res.notes.push(format!(
        "download time = wall time of the same sync with Notion latency 0 and {FAST_RPM}/min \
         (measured, not estimated): {} for {} files ({:.0} ms per track at {} in parallel); \
         baseline run: {}",
        secs(download_time),
        files,
        download_time.as_secs_f64() * 1000.0 * a.download_concurrency as f64 / a.tracks as f64,
        a.download_concurrency,
        baseline.report.summary_line()
    ));
    res.notes
        .push(format!("benchmark run: {}", run.report.summary_line()));
    if run.report.downloaded.len() != a.tracks {
        res.notes.push(format!(
            "WARNING: {} of {} tracks downloaded",
            run.report.downloaded.len(),
            a.tracks
        ));
    }
    check_report(&run.report, a.tracks, &mut res);
    Some(res)
}

// ---------------------------------------------------------------------------------------------
// B5: a large state
// ---------------------------------------------------------------------------------------------

fn big_state(tracks: usize) -> State {
    let mut rng = fastrand::Rng::with_seed(5);
    let now = chrono::Utc::now();
    let artists = playlistd_fakes::soundcloud::ARTISTS;
    let uuid = |rng: &mut fastrand::Rng| {
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            rng.u32(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u64(..) & 0xffff_ffff_ffff
        )
    };
    let mut state = State::default();
    let lists = tracks / (B5_TRACKS / B5_PLAYLISTS);
    let per = tracks / lists;
    for p in 0..lists {
        let pname = format!("all:Playlist {p:03}");
        let mut members = Vec::with_capacity(per);
        for i in 0..per {
            let n = p * per + i;
            let id = 1_000_000_000u64 + n as u64 * 7;
            let key = TrackKey::soundcloud(id);
            let artist = artists[n % artists.len()];
            let title = format!("Track {n:06} (Extended Mix)");
            let slug = format!("track-{n:06}-extended-mix");
            let user = artist.to_lowercase().replace(' ', "-");
            let unavailable = n
                .is_multiple_of(97)
                .then_some(UnavailableReason::GeoBlocked);
            let failed_download = n.is_multiple_of(31) && unavailable.is_none();
            let downloaded = unavailable.is_none() && !failed_download;
            let mut playlists = BTreeSet::from([pname.clone()]);
            if n.is_multiple_of(20) {
                playlists.insert(format!("all:Playlist {:03}", (p + 1) % lists));
            }
            let ts = TrackState {
                title: title.clone(),
                artist: artist.to_string(),
                url: format!("https://soundcloud.com/{user}/{slug}"),
                soundcloud_id: Some(id),
                unavailable,
                drm: None,
                notion_page_id: unavailable.is_none().then(|| uuid(&mut rng)),
                notion: Step {
                    status: if unavailable.is_some() {
                        StepStatus::Pending
                    } else {
                        StepStatus::Done
                    },
                    ..Step::default()
                },
                notion_playlists: if unavailable.is_some() {
                    Default::default()
                } else {
                    playlists.into_iter().collect()
                },
                download_path: downloaded.then(|| {
                    PathBuf::from(format!(
                        "/home/user/Music/playlistd/all_Playlist {p:03}/{artist} - {title} [{id}].mp3"
                    ))
                }),
                download: if failed_download {
                    Step {
                        status: StepStatus::Failed,
                        attempts: 2,
                        last_error: Some(format!(
                            "yt-dlp exited with 1: ERROR: [soundcloud] {id}: Unable to download JSON metadata: HTTP Error 404: Not Found"
                        )),
                        next_retry: Some(now + chrono::Duration::minutes(10)),
                    }
                } else if downloaded {
                    Step {
                        status: StepStatus::Done,
                        attempts: 1,
                        ..Step::default()
                    }
                } else {
                    Step::default()
                },
                download_written_back: downloaded,
                first_seen: now - chrono::Duration::minutes(n as i64),
            };
            state.tracks.insert(key.clone(), ts);
            members.push(key);
        }
        let removed = (0..3)
            .map(|k| {
                (
                    TrackKey::soundcloud(2_000_000_000 + (p * 3 + k) as u64),
                    now,
                )
            })
            .collect();
        state.playlists.insert(
            pname.clone(),
            PlaylistState {
                url: format!("https://soundcloud.com/bench/sets/playlist-{p:03}"),
                title: format!("Playlist {p:03}"),
                members,
                removed,
                notion_page_id: Some(uuid(&mut rng)),
                last_run: Some(RunSummary {
                    started: now,
                    finished: now,
                    ok: true,
                    listed: per,
                    created: 3,
                    adopted: 0,
                    downloaded: 3,
                    failed: 0,
                    unavailable: per / 97,
                    removed: 0,
                    error: None,
                }),
                last_success: Some(now),
            },
        );
    }
    state
}

/// The heap (KiB) a load of the state in `dir` keeps, in a fresh process of this benchmark
/// binary (MEM: the state's share); `None` if it failed.
fn cold_load(dir: &Path) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .arg("--child-load")
        .arg(dir)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("LOAD-PROBE "))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// One run's worth of state work on the state in `dir`, timed: open the database, the diff
/// of one 500-track playlist (each member's record read and compared, as the engine's diff
/// does), and the run's writes (every member's record changed, the playlist's run recorded,
/// one save).
struct B5Round {
    open: Duration,
    diff: Duration,
    writes: Duration,
}

impl B5Round {
    fn total(&self) -> Duration {
        self.open + self.diff + self.writes
    }
}

fn b5_round(dir: &Path, playlist: usize) -> B5Round {
    let t = Instant::now();
    let (mut store, _) = StateStore::load(dir).expect("open");
    let open = t.elapsed();
    let name = format!("all:Playlist {playlist:03}");
    let t = Instant::now();
    let members = store.state.playlists[&name].members.clone();
    let mut due = 0;
    for key in &members {
        let ts = store
            .state
            .tracks
            .get(key)
            .expect("read")
            .expect("a member");
        due += usize::from(!ts.download.is_done() || ts.notion_page_id.is_none());
    }
    std::hint::black_box(due);
    let diff = t.elapsed();
    let t = Instant::now();
    for key in &members {
        if let Some(ts) = store.track_mut(key).expect("read") {
            ts.download_written_back = !ts.download_written_back;
        }
    }
    let now = chrono::Utc::now();
    let ps = store.playlist_mut(&name);
    ps.last_success = Some(now);
    if let Some(run) = ps.last_run.as_mut() {
        run.started = now;
        run.finished = now;
    }
    store.save().expect("save");
    let writes = t.elapsed();
    B5Round { open, diff, writes }
}

/// A [`b5_round`] in a fresh process (as `playlistd sync` pays it), with the heap it kept and
/// the process's peak resident memory (KiB); `None` if it failed.
fn cold_round(dir: &Path, playlist: usize) -> Option<(B5Round, u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .arg("--child-round")
        .arg(playlist.to_string())
        .arg("--child-load")
        .arg(dir)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ROUND-PROBE "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [open, diff, writes, live, peak] = v[..] else {
        return None;
    };
    let round = B5Round {
        open: Duration::from_secs_f64(open),
        diff: Duration::from_secs_f64(diff),
        writes: Duration::from_secs_f64(writes),
    };
    Some((round, live as u64, peak as u64))
}

/// The child side of [`cold_round`].
fn round_child(dir: &Path, playlist: usize) -> ! {
    let live_before = live_heap_kb();
    let r = b5_round(dir, playlist);
    println!(
        "ROUND-PROBE {} {} {} {} {}",
        r.open.as_secs_f64(),
        r.diff.as_secs_f64(),
        r.writes.as_secs_f64(),
        live_heap_kb().saturating_sub(live_before),
        proc_status_kb(std::process::id(), "VmHWM:")
    );
    // Exit without freeing: that is not part of the run.
    std::process::exit(0);
}

/// The state of `tracks` tracks written to a new database: the directory and how long the
/// one transaction took.
fn b5_database(tracks: usize) -> (tempfile::TempDir, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = StateStore::new_in(dir.path(), big_state(tracks));
    let t = Instant::now();
    store.save_full().expect("first save");
    (dir, t.elapsed())
}

fn bench_b5(ctx: &Ctx) -> BenchResult {
    eprintln!("B5: state with {B5_TRACKS} tracks across {B5_PLAYLISTS} playlists");
    let (dir, bulk) = b5_database(B5_TRACKS);
    let size = std::fs::metadata(dir.path().join(DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let warm: Vec<B5Round> = (0..B5_RUNS).map(|r| b5_round(dir.path(), r)).collect();
    let cold: Vec<(B5Round, u64, u64)> = (0..B5_RUNS)
        .filter_map(|r| cold_round(dir.path(), B5_RUNS + r))
        .collect();
    // The same run against a state a tenth the size: flat memory is the same peak.
    let small_tracks = B5_TRACKS / 10;
    let (small, _) = b5_database(small_tracks);
    let small_cold: Vec<(B5Round, u64, u64)> =
        (0..3).filter_map(|r| cold_round(small.path(), r)).collect();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let med = |rounds: &[&B5Round], f: fn(&B5Round) -> Duration| {
        median(rounds.iter().map(|r| f(r)).collect())
    };
    let warm_refs: Vec<&B5Round> = warm.iter().collect();
    let cold_refs: Vec<&B5Round> = cold.iter().map(|(r, _, _)| r).collect();
    // Judged on fresh processes (what a `playlistd sync` pays), else on this one.
    let judged = if cold_refs.is_empty() {
        &warm_refs
    } else {
        &cold_refs
    };
    let mut res = ctx.result(
        "B5",
        "Large state: open, diff and a run's writes",
        format!(
            "SQLite state.db with {B5_TRACKS} tracks across {B5_PLAYLISTS} playlists of {} \
             (page ids, file paths, 3% failed downloads with errors, 1% geo-blocked, 5% in two \
             playlists); a run is: open the database, read and compare the records of one \
             playlist, change every one of them and record the run in one save; {B5_RUNS} \
             rounds, each on another playlist, median; state directory on {}",
            B5_TRACKS / B5_PLAYLISTS,
            dir.path().display()
        ),
    );
    for (label, f) in [
        (
            "open (fresh process, median)",
            (|r: &B5Round| r.open) as fn(&B5Round) -> Duration,
        ),
        ("diff of 500 tracks (fresh process, median)", |r| r.diff),
        (
            "the run's writes: 500 records + the playlist, one transaction (fresh process, median)",
            |r| r.writes,
        ),
    ] {
        res.rows.push(info(label, ms(med(judged, f))));
    }
    let total = med(judged, B5Round::total);
    res.rows.push(row(
        "open + diff + writes",
        "< 150 ms",
        ms(total),
        below(total.as_secs_f64(), 0.150),
    ));
    res.rows.push(info(
        "open + diff + writes in this process, after earlier rounds (median)",
        ms(med(&warm_refs, B5Round::total)),
    ));
    res.rows.push(info(
        &format!("first save of all {B5_TRACKS} tracks, one transaction (as the JSON import)"),
        ms(bulk),
    ));
    res.rows.push(info("database size", kib(size)));
    let peak = |v: &[(B5Round, u64, u64)]| v.iter().map(|c| c.2).max();
    if let (Some(big), Some(little)) = (peak(&cold), peak(&small_cold)) {
        let flat = big.saturating_sub(little) * 1024 / (B5_TRACKS - small_tracks) as u64;
        res.rows.push(row(
            &format!("peak memory of a run, {small_tracks} → {B5_TRACKS} tracks in the state"),
            "flat (< 50 bytes per extra track)",
            format!(
                "{} → {} ({flat} bytes per extra track)",
                kib(little * 1024),
                kib(big * 1024)
            ),
            below(flat as f64, 50.0),
        ));
        res.notes.push(
            "what grows with the state is the playlists' member lists, read at open (a key \
             per track); no track record is held: the diff reads one row at a time and a save \
             lets the changed ones go"
                .to_string(),
        );
    }
    let show = |rounds: &[&B5Round]| {
        rounds
            .iter()
            .map(|r| format!("{} + {} + {}", ms(r.open), ms(r.diff), ms(r.writes)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    res.notes.push(format!(
        "rounds (open + diff + writes): fresh processes {}; this process {}",
        show(&cold_refs),
        show(&warm_refs)
    ));
    res
}

// ---------------------------------------------------------------------------------------------
// B6: listing
// ---------------------------------------------------------------------------------------------

/// One yt-dlp listing run against the fake (B6).
struct YtdlpRun {
    ok: bool,
    requests: u64,
    kinds: String,
    wall: Duration,
    entries: usize,
    titled: usize,
    stderr: String,
}

async fn bench_b6(ctx: &Ctx) -> BenchResult {
    let a = &ctx.args;
    eprintln!("B6: listing a {}-track playlist", a.tracks);
    let sb = sandbox(
        a,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: a.sc_latency(),
            rpm: a.rpm,
            downloads: false,
        },
    )
    .await;
    let p = playlist_of(a.tracks, "bench", "listing");
    let full_prefix = p.full_prefix;
    let playlist_id = p.id;
    let url = url::Url::parse(&sb.sc.add_playlist(p)).expect("set URL");
    let cache = tempfile::tempdir().expect("temp dir");
    let client = SoundCloud::new(&sb.sc.config(), cache.path());

    let by_endpoint = |sb: &Sandbox| {
        [
            (ScEndpoint::WebRoot, "web page"),
            (ScEndpoint::Asset, "script asset"),
            (ScEndpoint::Resolve, "resolve"),
            (ScEndpoint::Tracks, "tracks?ids="),
            (ScEndpoint::Track, "tracks/{id}"),
            (ScEndpoint::Playlist, "playlists/{id}"),
            (ScEndpoint::Media, "format info"),
            (ScEndpoint::Other, "other"),
        ]
        .iter()
        .filter_map(|(e, n)| {
            let c = sb.sc.requests(*e);
            (c > 0).then(|| format!("{c} {n}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
    };

    sb.sc.reset_counters();
    let t = Instant::now();
    let cold = client.list(&url).await.expect("cold listing");
    let cold_wall = t.elapsed();
    let cold_requests = sb.sc.total_requests();
    let cold_kinds = by_endpoint(&sb);

    sb.sc.reset_counters();
    let t = Instant::now();
    let warm = client.list(&url).await.expect("warm listing");
    let warm_wall = t.elapsed();
    let warm_requests = sb.sc.total_requests();
    let warm_kinds = by_endpoint(&sb);

    let stubs = a.tracks.saturating_sub(full_prefix);
    let batches = stubs.div_ceil(50);
    let mut res = ctx.result(
        "B6",
        "Listing a playlist",
        format!(
            "{} tracks ({full_prefix} full objects, {stubs} stubs), SoundCloud {} ms/request, \
             native client `SoundCloud::list`",
            a.tracks, a.sc_latency_ms
        ),
    );
    res.rows.push(row(
        "native: requests (client id known)",
        &format!("1 + ⌈stubs ÷ 50⌉ = {}", 1 + batches),
        warm_requests.to_string(),
        at_most(warm_requests as f64, (1 + batches) as f64),
    ));
    res.rows
        .push(info("native: wall time (client id known)", ms(warm_wall)));
    res.rows.push(info(
        "native: requests, wall (cold, client id scraped)",
        format!("{cold_requests}, {}", ms(cold_wall)),
    ));
    res.notes.push(format!(
        "native requests by kind: warm {warm_kinds}; cold {cold_kinds}; listed {} tracks, complete: {}",
        warm.tracks.len(),
        warm.complete && cold.complete
    ));

    // yt-dlp on the same playlist, through a plugin that sends its requests for SoundCloud's
    // hosts to the fake (the fake names the real hosts in its answers meanwhile).
    let Some((ytdlp, version)) = find_ytdlp(a) else {
        res.rows
            .push(info("yt-dlp", "not found: rows skipped".into()));
        return res;
    };
    sb.sc.show_public_hosts(true);
    let public_url = sb.sc.playlist_url(playlist_id).expect("playlist");
    let hosts = format!(
        "soundcloud.com={},api-v2.soundcloud.com={}",
        sb.sc.web_base(),
        sb.sc.api_base()
    );
    let ytdlp_cache = tempfile::tempdir().expect("temp dir");
    let run_ytdlp = |flat: bool| {
        let mut cmd = tokio::process::Command::new(&ytdlp);
        cmd.args([
            "--ignore-config",
            "--no-warnings",
            "-J",
            "--socket-timeout",
            "30",
        ])
        .arg("--plugin-dirs")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ytdlp-plugins"))
        .arg("--cache-dir")
        .arg(ytdlp_cache.path())
        .env("PLAYLISTD_FAKE_HOSTS", &hosts);
        if flat {
            cmd.arg("--flat-playlist");
        }
        cmd.arg(&public_url);
        let sb = &sb;
        async move {
            sb.sc.reset_counters();
            let t = Instant::now();
            let out = cmd.output().await.expect("run yt-dlp");
            let wall = t.elapsed();
            let entries: Vec<serde_json::Value> =
                serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .ok()
                    .and_then(|v| v.get("entries").and_then(|e| e.as_array()).cloned())
                    .unwrap_or_default();
            let titled = entries
                .iter()
                .filter(|e| e.get("title").and_then(|t| t.as_str()).is_some())
                .count();
            YtdlpRun {
                ok: out.status.success(),
                requests: sb.sc.total_requests(),
                kinds: by_endpoint(sb),
                wall,
                entries: entries.len(),
                titled,
                stderr: String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            }
        }
    };
    let flat_cold = run_ytdlp(true).await;
    let flat_warm = run_ytdlp(true).await;
    eprintln!(
        "B6: full yt-dlp -J extraction of {} tracks, one request after another…",
        a.tracks
    );
    let full = run_ytdlp(false).await;
    sb.sc.show_public_hosts(false);
    for (name, r) in [
        ("yt-dlp --flat-playlist -J (client id cached)", &flat_warm),
        (
            "yt-dlp --flat-playlist -J (cold, client id scraped)",
            &flat_cold,
        ),
        ("yt-dlp -J, full extraction (client id cached)", &full),
    ] {
        res.rows.push(info(
            &format!("{name}: requests, wall"),
            if r.ok {
                format!("{}, {}", r.requests, ms(r.wall))
            } else {
                format!("failed: {}", r.stderr)
            },
        ));
        res.notes.push(format!(
            "{name}: {} ({} entries, {} with a title)",
            r.kinds, r.entries, r.titled
        ));
    }
    res.notes.push(format!(
        "yt-dlp {version}, measured: `benches/ytdlp-plugins` redirects its requests for \
         soundcloud.com and api-v2.soundcloud.com to the fake, which names those hosts in its \
         answers during these runs; the extractor's own logic is untouched. Its wall times \
         include starting Python. `--flat-playlist` entries carry no title ({} of {} here), so a \
         listing with titles and artists needs the full extraction, which makes its requests \
         one after another: one per track plus one per requested format.",
        flat_warm.titled, flat_warm.entries
    ));
    res
}

// ---------------------------------------------------------------------------------------------
// Memory: a 10,000-track sync, in a child process
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct MemoryProbe {
    tracks: usize,
    hwm_start_kb: u64,
    hwm_before_kb: u64,
    hwm_after_kb: u64,
    rss_after_kb: u64,
    wall_s: f64,
    notion_requests: usize,
    summary: String,
}

/// Bytes the allocator holds for live allocations, in KiB: what a loaded state really takes,
/// free of the pages a load touched and gave back.
fn live_heap_kb() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

/// The memory probes' world: no latency, no rate limit to speak of, downloads off.
async fn memory_sandbox(args: &Args, tracks: usize) -> (Sandbox, String) {
    let mut sb = sandbox(
        args,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: Duration::ZERO,
            rpm: FAST_RPM,
            downloads: false,
        },
    )
    .await;
    let name = add_playlist(&mut sb, tracks, "memory", None);
    (sb, name)
}

fn memory_child(args: &Args, tracks: usize) {
    let hwm_start_kb = proc_status_kb(std::process::id(), "VmHWM:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let probe = runtime.block_on(async {
        let (sb, name) = memory_sandbox(args, tracks).await;
        let hwm_before_kb = proc_status_kb(std::process::id(), "VmHWM:");
        if args.fakes_only {
            // What the fakes alone hold after such a sync: one page per track, no engine.
            let t = Instant::now();
            let p = playlist_of(tracks, "bench", "memory");
            for ft in &p.tracks {
                let url = sb.sc.track_url(ft.id).unwrap_or_default();
                sb.notion.seed_track(&ft.title, "Artist", &url);
            }
            return MemoryProbe {
                tracks,
                hwm_start_kb,
                hwm_before_kb,
                hwm_after_kb: proc_status_kb(std::process::id(), "VmHWM:"),
                rss_after_kb: proc_status_kb(std::process::id(), "VmRSS:"),
                wall_s: t.elapsed().as_secs_f64(),
                notion_requests: 0,
                summary: format!("{tracks} pages seeded into the fake Notion"),
            };
        }
        let run = sync_once(&sb, &name, None).await;
        MemoryProbe {
            tracks,
            hwm_start_kb,
            hwm_before_kb,
            hwm_after_kb: proc_status_kb(std::process::id(), "VmHWM:"),
            rss_after_kb: proc_status_kb(std::process::id(), "VmRSS:"),
            wall_s: run.wall.as_secs_f64(),
            notion_requests: run.notion_requests,
            summary: run.report.summary_line(),
        }
    });
    println!(
        "MEMORY-PROBE {}",
        serde_json::to_string(&probe).expect("json")
    );
}

/// Runs `playlistd sync` (the real binary, the fakes in this process) and prints its peak
/// resident memory: the engine's own, with no fake server in the number.
fn binary_child(args: &Args, tracks: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let line = runtime.block_on(async {
        let (sb, name) = memory_sandbox(args, tracks).await;
        sb.write_config().expect("config");
        // For profiling: `PLAYLISTD_BENCH_WRAP="valgrind --tool=massif ..."` runs the binary
        // under a tool (the peak printed is then the tool's), and `PLAYLISTD_BENCH_BIN` swaps
        // in another build of playlistd (say, one with debug symbols).
        let argv = playlistd_argv();
        let config = sb.config_path().to_str().unwrap().to_string();
        let home = sb.home().to_path_buf();
        let sync: Vec<String> = argv
            .into_iter()
            .chain(["--config", &config, "sync", &name].map(String::from))
            .collect();
        let (sync_ok, sync_kb) = measured(sync, &home).await;
        // The state the sync leaves, loaded on its own: the part of the memory that is the
        // state itself (its index) rather than the sync's own work.
        let state_dir = sb.state_dir();
        match tokio::task::spawn_blocking(move || cold_load(&state_dir))
            .await
            .expect("the loading child")
        {
            Some(live_kb) => format!("{sync_kb} {sync_ok} {live_kb} true"),
            None => format!("{sync_kb} {sync_ok} none false"),
        }
    });
    println!("BINARY-PROBE {line}");
}

/// Runs `argv` through a fresh, small process of this binary (`--child-measure`) and returns
/// whether it succeeded and its peak resident memory in KiB.
///
/// Not spawned from here directly: Linux records the spawning process's own peak as the
/// child's when it execs (the exec replaces a copy of, or with vfork the very, memory of its
/// parent), and this process holds the fake servers' 100 MiB by now.
async fn measured(argv: Vec<String>, home: &Path) -> (bool, u64) {
    let exe = std::env::current_exe().expect("current exe");
    let out = tokio::process::Command::new(exe)
        .args(["--bench", "--child-measure"])
        .args(&argv)
        .env("HOME", home)
        .output()
        .await
        .expect("run the measuring child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEASURED "))
        .unwrap_or("0 false");
    let (kb, ok) = line.split_once(' ').unwrap_or(("0", "false"));
    (ok == "true", kb.parse().unwrap_or(0))
}

/// Runs a command to its end and returns whether it succeeded and its own peak resident
/// memory in KiB (from `wait4`, so other children do not count).
fn run_measured(mut cmd: std::process::Command) -> std::io::Result<(bool, u64)> {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and fills two values we own; `child` is not waited on
    // again (dropping a `Child` neither waits nor kills).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        return Err(std::io::Error::last_os_error());
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, usage.ru_maxrss as u64))
}

/// Peak resident memory (KiB) of `playlistd sync` over a playlist of `tracks`, and the live
/// heap (KiB) of the state it leaves, loaded on its own.
fn run_binary_child(tracks: usize) -> Result<(u64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["--bench", "--child-binary", &tracks.to_string()])
        .env_remove("PLAYLISTD_BENCH_TRACKS")
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BINARY-PROBE "))
        .ok_or("no result")?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [sync_kb, sync_ok, state_kb, load_ok] = parts[..] else {
        return Err("bad result".into());
    };
    if sync_ok != "true" || load_ok != "true" {
        return Err(format!("the sync or the state load failed: {line}"));
    }
    let kb = |s: &str| s.parse::<u64>().map_err(|e| e.to_string());
    Ok((kb(sync_kb)?, kb(state_kb)?))
}

fn run_memory_child(tracks: usize, fakes_only: bool) -> Result<MemoryProbe, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--bench", "--child-memory", &tracks.to_string()]);
    if fakes_only {
        cmd.arg("--fakes-only");
    }
    let out = cmd
        .env_remove("PLAYLISTD_BENCH_TRACKS")
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY-PROBE "))
        .ok_or_else(|| {
            format!(
                "the memory probe printed no result (status {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .and_then(|j| serde_json::from_str(j).map_err(|e| e.to_string()))
}

fn bench_memory(ctx: &Ctx) -> BenchResult {
    let n = ctx.args.memory_tracks;
    let small = (n / 10).max(1);
    eprintln!(
        "MEM: peak resident memory of a {n}-track sync (and a {small}-track one for scale), in child processes"
    );
    let mut res = ctx.result(
        "MEM",
        "Peak memory while syncing a large playlist",
        format!(
            "{n} tracks, downloads off, {FAST_RPM}/min, no latency; a fresh child process per \
             size; VmHWM from /proc/self/status (fake SoundCloud and Notion in the same process)"
        ),
    );
    match (
        run_memory_child(n, false),
        run_memory_child(small, false),
        run_memory_child(n, true),
    ) {
        (Ok(big), Ok(little), Ok(fakes)) => {
            let fakes_growth = fakes.hwm_after_kb.saturating_sub(fakes.hwm_before_kb);
            let growth = big.hwm_after_kb.saturating_sub(big.hwm_before_kb);
            let little_growth = little.hwm_after_kb.saturating_sub(little.hwm_before_kb);
            let mib = |kb: u64| format!("{:.1} MiB", kb as f64 / 1024.0);
            // The engine alone first: the real binary in its own process, the fakes outside
            // it. That is the number the target is about.
            match (run_binary_child(n), run_binary_child(small)) {
                (Ok((b_big, s_big)), Ok((b_small, s_small))) => {
                    let per = |big: u64, small_: u64| {
                        big.saturating_sub(small_) as f64 / (n - small) as f64
                    };
                    let per_track = per(b_big, b_small);
                    res.rows.push(row(
                        &format!("`playlistd sync` process peak (VmHWM), {small} → {n} tracks"),
                        &format!("flat: < {MEM_FLAT_KIB} KiB per extra track"),
                        format!(
                            "{} → {} ({:.2} KiB per extra track)",
                            mib(b_small),
                            mib(b_big),
                            per_track
                        ),
                        below(per_track, MEM_FLAT_KIB),
                    ));
                    res.rows.push(info(
                        "the state it leaves, live in memory once loaded",
                        format!(
                            "{} → {} ({:.2} KiB per extra track)",
                            mib(s_small),
                            mib(s_big),
                            per(s_big, s_small)
                        ),
                    ));
                    res.notes.push(format!(
                        "flat means the sync holds no track's data: under {MEM_FLAT_KIB} KiB per \
                         extra track, less than one track's record in the state file (about \
                         0.5 KiB); what may grow is a key per track"
                    ));
                    res.notes.push(format!(
                        "the state's share is the live heap (mallinfo2) of a fresh process \
                         after `StateStore::load` of the state the sync left (its index: a key \
                         and a place per track); the rest of the growth, {:.2} KiB per extra \
                         track, is the sync's own work and what the allocator keeps",
                        per_track - per(s_big, s_small)
                    ));
                }
                (Err(e), _) | (_, Err(e)) => res.notes.push(format!("binary probe: {e}")),
            }
            res.rows.push(info(
                "this process, fakes included: VmHWM before the sync",
                mib(big.hwm_before_kb),
            ));
            res.rows.push(info(
                "this process, fakes included: VmHWM after the sync (peak)",
                mib(big.hwm_after_kb),
            ));
            res.rows.push(info(
                "this process, fakes included: growth during the sync",
                format!(
                    "{} ({:.1} KiB per track)",
                    mib(growth),
                    growth as f64 / n as f64
                ),
            ));
            res.notes.push(format!(
                "{n} tracks: VmHWM at start {} → before sync {} → after {}, VmRSS after {}, {:.1} s, {} Notion requests; {}",
                mib(big.hwm_start_kb),
                mib(big.hwm_before_kb),
                mib(big.hwm_after_kb),
                mib(big.rss_after_kb),
                big.wall_s,
                big.notion_requests,
                big.summary
            ));
            res.notes.push(format!(
                "{small} tracks for scale: VmHWM before {} → after {} (growth {}, {:.1} KiB per track)",
                mib(little.hwm_before_kb),
                mib(little.hwm_after_kb),
                mib(little_growth),
                little_growth as f64 / small as f64
            ));
            res.rows.push(info(
                "this process: of which the fakes (estimate)",
                format!(
                    "{} for {n} pages seeded directly into the fake Notion, no sync",
                    mib(fakes_growth)
                ),
            ));
            res.notes.push(format!(
                "the fakes' share is estimated by a third child that seeds {n} pages straight \
                 into the fake Notion (no engine, no HTTP): VmHWM {} → {}; the rest of the growth \
                 ({}) is the engine, the HTTP traffic and the fakes' request handling",
                mib(fakes.hwm_before_kb),
                mib(fakes.hwm_after_kb),
                mib(growth.saturating_sub(fakes_growth))
            ));
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            res.rows
                .push(row("VmHWM", "—", "error".into(), "skipped".into()));
            res.notes.push(e);
        }
    }
    res
}

// ---------------------------------------------------------------------------------------------
// Machine, and recording in BENCHMARKS.md
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown RAM".into());
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "rustc unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    format!("{cpus} CPUs ({cpu}), {mem}, {kernel}, {rustc}")
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const ANALYSIS_MARKER: &str = "<!-- Everything below this line is written by hand and kept when the harness rewrites the file. -->";

fn record(new: Vec<BenchResult>) -> std::io::Result<PathBuf> {
    let json_path = manifest_dir().join("benches/sync-results.json");
    let mut file: ResultsFile = std::fs::read(&json_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for r in new {
        file.results.insert(r.id.clone(), r);
    }
    let mut json = serde_json::to_string_pretty(&file).expect("results serialize");
    json.push('\n');
    std::fs::write(&json_path, json)?;

    let md_path = manifest_dir().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&md_path).unwrap_or_default();
    let tail = match old.find(ANALYSIS_MARKER) {
        Some(i) => old[i..].to_string(),
        None => format!("{ANALYSIS_MARKER}\n\n## Analysis\n\nNothing written yet.\n"),
    };
    std::fs::write(&md_path, render(&file) + "\n" + &tail)?;
    Ok(md_path)
}

fn render(file: &ResultsFile) -> String {
    let results: Vec<&BenchResult> = ALL.iter().filter_map(|id| file.results.get(*id)).collect();
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(
        "Generated by `benches/sync.rs` (issue 5) from `benches/sync-results.json`; the part above \
         the hand-written analysis is rewritten whenever a benchmark is recorded.\n\n\
         The numbers come from the fakes, not from the real services: the harness drives the real \
         config and engine (`playlistd::sandbox::Sandbox`, the same wiring as \
         `playlistd sync`) against the in-process fake SoundCloud and Notion servers on \
         127.0.0.1 (loopback), with latency injected by the fakes: 150 ms per Notion request, \
         80 ms per SoundCloud request (API and audio host), and Notion's real limit of 180 \
         requests a minute. Request counts come from the fakes' own logs. B3 runs the real \
         yt-dlp.\n\n",
    );
    s.push_str("## Reproduce\n\n```sh\n");
    s.push_str(
        "cargo bench --bench sync                            # everything, about 15 minutes\n",
    );
    s.push_str("cargo bench --bench sync -- --only B1 --rpm 180 --tracks 500   # one benchmark\n");
    s.push_str("cargo bench --bench sync -- --only B1 --rpm 6000 --no-write    # a quick pass, not recorded\n");
    s.push_str("```\n\n");
    s.push_str(
        "Flags (environment variable, default): `--only B1,B2,B3,B4,B5,B6,MEM` (all), `--idle-secs` (60, B4), `--rpm` \
         (`PLAYLISTD_BENCH_RPM`, 180), `--tracks` (`PLAYLISTD_BENCH_TRACKS`, 500), \
         `--notion-latency-ms` (`PLAYLISTD_BENCH_NOTION_LATENCY_MS`, 150), `--sc-latency-ms` \
         (`PLAYLISTD_BENCH_SC_LATENCY_MS`, 80), `--bandwidth` (`PLAYLISTD_BENCH_BANDWIDTH`, \
         200000 B/s), `--audio-size` (20480 B), `--download-concurrency` (3), `--ytdlp` \
         (`PLAYLISTD_BENCH_YTDLP`, `yt-dlp` on PATH), `--no-write`. Only runs with the reference \
         parameters are recorded here.\n\n",
    );
    // Each machine once, in the order of the results (they need not be next to each other).
    let mut machines: Vec<&str> = vec![];
    for r in &results {
        if !machines.contains(&r.machine.as_str()) {
            machines.push(&r.machine);
        }
    }
    s.push_str("## Machine\n\n");
    for m in &machines {
        s.push_str(&format!("- {m}\n"));
    }
    s.push_str("\n## Results\n\n");
    s.push_str("| Benchmark | Metric | Target | Measured | Result |\n");
    s.push_str("| --- | --- | --- | --- | --- |\n");
    for r in &results {
        for (i, row) in r.rows.iter().enumerate() {
            let bench = if i == 0 {
                format!("**{}** {}", r.id, r.title)
            } else {
                String::new()
            };
            s.push_str(&format!(
                "| {bench} | {} | {} | {} | {} |\n",
                row.metric,
                row.target,
                row.measured,
                if row.verdict == "pass" {
                    "pass".to_string()
                } else if row.verdict.starts_with("miss") {
                    format!("**{}**", row.verdict)
                } else {
                    row.verdict.clone()
                }
            ));
        }
    }
    s.push_str("\n## Details\n");
    for r in &results {
        s.push_str(&format!("\n### {} {}\n\n", r.id, r.title));
        s.push_str(&format!("- Recorded {} with `{}`", r.date, r.command));
        if machines.len() > 1 {
            s.push_str(&format!(" on {}", r.machine));
        }
        s.push_str(".\n");
        s.push_str(&format!("- Set-up: {}.\n", r.params));
        for n in &r.notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// B4: the idle daemon
// ---------------------------------------------------------------------------------------------

/// Context switches of every thread of `pid`: each is a wakeup (or a preemption).
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches:")
                    || line.starts_with("nonvoluntary_ctxt_switches:")
                {
                    total += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    total
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of `pid`, from /proc/<pid>/stat, in clock ticks of 10 ms.
fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields after the command: state is not numeric, so utime/stime are at 10 and 11 here.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// What /proc says about a process's memory and threads at one moment, in KiB.
struct Observed {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    threads: usize,
}

fn observe(pid: u32) -> Observed {
    Observed {
        rss_kb: proc_status_kb(pid, "VmRSS:"),
        hwm_kb: proc_status_kb(pid, "VmHWM:"),
        anon_kb: proc_status_kb(pid, "RssAnon:"),
        file_kb: proc_status_kb(pid, "RssFile:"),
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0),
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A `playlistd run` child of this process, its stderr (the log) read line by line.
struct DaemonChild {
    child: tokio::process::Child,
    pid: u32,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// B4's world: [`B4_PLAYLISTS`] playlists of [`B4_TRACKS`] tracks each, on daily schedules at
/// 03:00, downloads off, the default logging (a file and stderr); the fakes answer at once,
/// 6000 requests a minute (the sandbox's default), so the first syncs take seconds, not
/// minutes (with the reference 180/min and 150/80 ms latencies they took 168 s and left the
/// same resident memory: 17.5 against 17.6 MiB, compared with file logging off). `up_to_date`
/// writes a state in which every playlist just succeeded (no catch-up run, nothing but
/// waiting); otherwise the state is empty and every playlist's first sync runs at start-up
/// (never succeeded: a catch-up), `daemon.max_concurrent_syncs` (2) at a time.
async fn b4_sandbox(up_to_date: bool) -> Sandbox {
    use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
    let mut sb = Sandbox::start(None, FakeNotionOptions::default())
        .await
        .expect("sandbox");
    sb.downloads = false;
    // The log as shipped: a rotated file (here in the sandbox) beside stderr. Its writer's
    // buffer is part of what the daemon holds.
    sb.extra = format!(
        "\n[log]\ndir = {:?}\n",
        sb.home().join("logs").display().to_string()
    );
    for i in 0..B4_PLAYLISTS as u64 {
        let tracks = (0..B4_TRACKS as u64).map(|j| {
            let id = 1_000 + i * B4_TRACKS as u64 + j;
            FakeTrack::new(id, &format!("t{id}"), &format!("a{i}"))
        });
        let url = sb
            .sc
            .add_playlist(FakePlaylist::new(i + 1, "u", &format!("p{i}")).tracks(tracks));
        sb.watch_with(&format!("P{i:03}"), &url, "schedule = \"0 3 * * *\"");
    }
    let cfg = sb.write_config().expect("config");
    if up_to_date {
        let mut state = State::default();
        for p in &cfg.playlists {
            state.playlists.insert(
                p.name.clone(),
                PlaylistState {
                    url: p.url.to_string(),
                    last_success: Some(chrono::Utc::now()),
                    ..Default::default()
                },
            );
        }
        StateStore::new_in(&cfg.state_dir, state)
            .save()
            .expect("state");
    }
    sb
}

/// The command that runs playlistd: `PLAYLISTD_BENCH_BIN` or this build, behind
/// `PLAYLISTD_BENCH_WRAP`'s tool if set (MEM and B4 share it).
fn playlistd_argv() -> Vec<String> {
    let bin = std::env::var("PLAYLISTD_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_playlistd").to_string());
    let mut argv: Vec<String> = std::env::var("PLAYLISTD_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    argv.push(bin);
    argv
}

/// Starts `playlistd run` on the sandbox's config and returns once it logged that it runs.
///
/// For profiling, as in MEM: `PLAYLISTD_BENCH_BIN` swaps in another build of playlistd (one
/// with debug symbols), `PLAYLISTD_BENCH_WRAP="valgrind --tool=massif --vgdb=yes"` runs it
/// under a tool (whose own memory the numbers then include), and
/// `PLAYLISTD_BENCH_DAEMON_LOG=PATH` copies the daemon's log to `PATH.<pid>`.
async fn start_daemon(sb: &Sandbox) -> DaemonChild {
    use tokio::io::AsyncBufReadExt;
    let argv = playlistd_argv();
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--config", sb.config_path().to_str().unwrap(), "run"])
        .env("HOME", sb.home())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn playlistd run");
    let pid = child.id().expect("pid");
    let mut copy = std::env::var("PLAYLISTD_BENCH_DAEMON_LOG")
        .ok()
        .and_then(|p| std::fs::File::create(format!("{p}.{pid}")).ok());
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = stderr.next_line().await {
            if let Some(f) = &mut copy {
                use std::io::Write;
                let _ = writeln!(f, "{l}");
            }
            let _ = tx.send(l);
        }
    });
    while let Some(l) = lines.recv().await {
        if l.contains("running:") {
            break;
        }
    }
    DaemonChild { child, pid, lines }
}

impl DaemonChild {
    /// Context switches and CPU time over `secs` of the daemon's life: (per minute, CPU).
    async fn wakeups(&self, secs: u64) -> (f64, Duration) {
        let (cs0, cpu0) = (context_switches(self.pid), proc_cpu(self.pid));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cs1, cpu1) = (context_switches(self.pid), proc_cpu(self.pid));
        (
            (cs1 - cs0) as f64 * 60.0 / secs as f64,
            cpu1.saturating_sub(cpu0),
        )
    }

    async fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = self.child.wait().await;
    }
}

/// How the first syncs went: the summary lines the daemon logged, one per playlist.
struct FirstSyncs {
    finished: usize,
    /// Summaries that are not "every track new, none failed".
    unexpected: Vec<String>,
    took: Duration,
}

/// Reads the daemon's log until every playlist logged the summary of its sync (`synced
/// "P000": ...`), or `limit` passes. The summary is logged after the sync's last state save,
/// so when the last one is read every first sync is over.
async fn wait_for_first_syncs(d: &mut DaemonChild, limit: Duration) -> FirstSyncs {
    let t = Instant::now();
    let expected =
        format!("{B4_TRACKS} listed, {B4_TRACKS} new, 0 adopted, 0 linked, 0 downloaded, 0 failed");
    let mut seen = BTreeSet::new();
    let mut unexpected = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < B4_PLAYLISTS {
        let line = match tokio::time::timeout_at(deadline, d.lines.recv()).await {
            Ok(Some(l)) => l,
            _ => break,
        };
        let Some(at) = line.find("synced \"P") else {
            continue;
        };
        let summary = &line[at..];
        let name = summary[8..].split('"').next().unwrap_or("").to_string();
        if !summary.contains(&expected) {
            unexpected.push(summary.to_string());
        }
        seen.insert(name);
    }
    FirstSyncs {
        finished: seen.len(),
        unexpected,
        took: t.elapsed(),
    }
}

async fn bench_b4(ctx: &Ctx) -> BenchResult {
    let secs = ctx.args.idle_secs;
    let settle = B4_SETTLE.as_secs();
    let mut res = ctx.result(
        "B4",
        "Idle daemon, 100 watched playlists",
        format!(
            "{B4_PLAYLISTS} playlists of {B4_TRACKS} tracks on daily schedules, downloads off, \
             `playlistd run` as a child process; (a) every playlist new: the first syncs run at \
             start-up, 2 at a time, and memory is read {settle} s after the log shows the last \
             one finished; (b) all up to date: no sync runs, watched {secs} s after start-up"
        ),
    );

    // (a) The first syncs of every playlist, then idle.
    eprintln!(
        "B4: daemon with {B4_PLAYLISTS} new playlists of {B4_TRACKS} tracks: first syncs, then {settle} s idle"
    );
    let sb = b4_sandbox(false).await;
    let mut d = start_daemon(&sb).await;
    let first = wait_for_first_syncs(&mut d, Duration::from_secs(600)).await;
    eprintln!(
        "B4: {} of {B4_PLAYLISTS} first syncs finished in {:.1} s (daemon pid {}); waiting {settle} s",
        first.finished,
        first.took.as_secs_f64(),
        d.pid
    );
    tokio::time::sleep(B4_SETTLE).await;
    let after = observe(d.pid);
    let (after_per_min, _) = d.wakeups(secs).await;
    d.stop().await;
    let all_done = first.finished == B4_PLAYLISTS && first.unexpected.is_empty();
    res.rows.push(row(
        &format!("resident memory (VmRSS) {settle} s after the first syncs of all playlists"),
        "≤ 20 MiB",
        format!(
            "{:.1} MiB (anonymous {:.1}, file-backed {:.1}; peak {:.1} MiB)",
            mib(after.rss_kb),
            mib(after.anon_kb),
            mib(after.file_kb),
            mib(after.hwm_kb)
        ),
        if all_done {
            at_most((mib(after.rss_kb) * 10.0).round() / 10.0, 20.0)
        } else {
            format!(
                "miss ({} of {B4_PLAYLISTS} synced as expected)",
                first.finished - first.unexpected.len().min(first.finished)
            )
        },
    ));
    res.rows.push(info(
        "first syncs: all finished after start-up",
        format!("{:.1} s", first.took.as_secs_f64()),
    ));
    res.rows.push(info(
        "after the first syncs: wakeups per minute, threads",
        format!(
            "{after_per_min:.0} over {secs} s, {} threads",
            after.threads
        ),
    ));
    for u in first.unexpected.iter().take(3) {
        res.notes.push(format!("unexpected sync summary: {u}"));
    }

    // (b) Every playlist up to date.
    eprintln!("B4: idle daemon with {B4_PLAYLISTS} playlists up to date, watched for {secs} s");
    let sb = b4_sandbox(true).await;
    let d = start_daemon(&sb).await;
    eprintln!("B4: daemon pid {} started", d.pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (per_min, cpu) = d.wakeups(secs).await;
    let idle = observe(d.pid);
    d.stop().await;
    res.rows.push(row(
        "resident memory (VmRSS), all up to date",
        "≤ 20 MiB",
        format!(
            "{:.1} MiB (anonymous {:.1}, file-backed {:.1}; peak {:.1} MiB)",
            mib(idle.rss_kb),
            mib(idle.anon_kb),
            mib(idle.file_kb),
            mib(idle.hwm_kb)
        ),
        at_most((mib(idle.rss_kb) * 10.0).round() / 10.0, 20.0),
    ));
    res.rows.push(row(
        "wakeups per minute (context switches, all threads), all up to date",
        &format!("<= {B4_PLAYLISTS}"),
        format!("{per_min:.0}"),
        at_most(per_min, B4_PLAYLISTS as f64),
    ));
    res.rows.push(info(
        "CPU time while idle, all up to date",
        format!("{} over {secs} s", ms(cpu)),
    ));
    res.rows
        .push(info("threads, all up to date", idle.threads.to_string()));
    res
}
