//! Benchmarks of `playlistd sync` against the fake SoundCloud and Notion servers (issue 5).
//!
//! What it measures: the real config and engine wiring (`playlistd::sandbox::Sandbox`, the
//! same world the scenario tests and `playlistd demo` use) against the in-process fakes on
//! 127.0.0.1, with latency injected by the fakes (150 ms per Notion request and 80 ms per
//! SoundCloud request by default) and the real Notion rate limit (180 requests a minute):
//!
//! - B1 and B2 (`b1_b2.rs`): the first sync of 500 new tracks, downloads off, and its
//!   unchanged re-sync;
//! - B3 (`b3.rs`): the first sync with downloads on (the native engine);
//! - B4 (`b4.rs`): the idle daemon with 100 playlists;
//! - B5 (`b5.rs`): a 100,000-track / 200-playlist SQLite state;
//! - B6 (`b6.rs`): listing a 500-track playlist, natively and with yt-dlp;
//! - B7 (`b7.rs`): downloads, native against yt-dlp, per track;
//! - B8 (`b8.rs`): tempo and key, accuracy on a synthesized labelled set and speed;
//! - B9 (`b9.rs`): B3 with the DJ library on (3-minute tracks, analysis, AIFF and WAV);
//! - MEM (`memory.rs`): peak resident memory while syncing a 10,000-track playlist.
//!
//! `common.rs` holds the sandbox, one measured sync and the readings every benchmark shares,
//! `record.rs` the rows, verdicts and results table; this file parses the arguments, runs
//! the child probes and the chosen benchmarks, and records the results in `BENCHMARKS.md`.
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
//! 80), `--bandwidth` bytes/s for audio (`PLAYLISTD_BENCH_BANDWIDTH`, 200000), `--track-secs`
//! (30), `--download-concurrency` (3), `--ytdlp PATH` (`PLAYLISTD_BENCH_YTDLP`, else
//! `yt-dlp` on PATH), `--no-write`. Results are printed as a table and recorded in
//! `benches/sync-results.json`, from which `BENCHMARKS.md` is regenerated; a benchmark run with
//! other than the reference parameters (180/min, 500 tracks, 150/80 ms) is printed, not recorded.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then only says the
//! benchmarks are skipped.

mod b1_b2;
mod b3;
mod b4;
mod b5;
mod b6;
mod b7;
mod b8;
mod b9;
mod common;
mod memory;
mod record;

use clap::Parser;
use record::{BenchResult, ResultsFile, print_table};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REFERENCE_RPM: u32 = 180;
const REFERENCE_TRACKS: usize = 500;
const REFERENCE_NOTION_LATENCY_MS: u64 = 150;
const REFERENCE_SC_LATENCY_MS: u64 = 80;
const REFERENCE_BANDWIDTH: u64 = 200_000;
/// B3's tracks: 30 s of AAC in HLS (an init and 3 segments, ~130 KB).
const REFERENCE_TRACK_SECS: u64 = 30;
const REFERENCE_DOWNLOAD_CONCURRENCY: usize = 3;
const REFERENCE_MEMORY_TRACKS: usize = 10_000;
const ALL: [&str; 10] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "MEM"];
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
    /// Comma-separated subset: B1,B2,B3,B4,B5,B6,B7,B8,B9,MEM (default: all).
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
    /// Length of each track in seconds (B3): 30 s of AAC in HLS.
    #[arg(long, default_value_t = REFERENCE_TRACK_SECS)]
    track_secs: u64,
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
        if matches!(id, "B1" | "B3" | "B9") && self.rpm != REFERENCE_RPM {
            why.push(format!(
                "--rpm {} (the real limit is {REFERENCE_RPM})",
                self.rpm
            ));
        }
        if matches!(id, "B1" | "B2" | "B3" | "B6" | "B9") {
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
                || self.track_secs != REFERENCE_TRACK_SECS
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
        memory::measure_child(&raw[at + 1..]);
        return;
    }
    let args = Args::parse();
    if run_child(&args) {
        return;
    }
    for o in &args.only {
        if !ALL.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            eprintln!("unknown benchmark {o:?}; choose from {}", ALL.join(","));
            std::process::exit(2);
        }
    }
    let ctx = Ctx {
        machine: machine(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: command_line(&raw),
        args: args.clone(),
    };
    println!("playlistd sync benchmarks: {}", ctx.command);
    println!("machine: {}", ctx.machine);
    println!(
        "Notion {} ms/request at {}/min, SoundCloud {} ms/request, {} tracks\n",
        args.notion_latency_ms, args.rpm, args.sc_latency_ms, args.tracks
    );
    let results = run_benchmarks(&ctx);
    print_table(&results);
    write_results(&args, results);
}

/// Runs the child probe `args` asks for (MEM, B5), if it asks for one: true if one ran (the
/// state probes exit the process instead).
fn run_child(args: &Args) -> bool {
    if let Some(n) = args.child_memory {
        memory::memory_child(args, n);
        return true;
    }
    if let Some(n) = args.child_binary {
        memory::binary_child(args, n);
        return true;
    }
    if let (Some(dir), Some(playlist)) = (&args.child_load, args.child_round) {
        b5::round_child(dir, playlist);
    }
    if let Some(dir) = &args.child_load {
        memory::load_child(dir);
    }
    false
}

/// The command the results are recorded with: this run's arguments but `--bench`.
fn command_line(raw: &[String]) -> String {
    let shown: Vec<&String> = raw.iter().skip(1).filter(|a| *a != "--bench").collect();
    if shown.is_empty() {
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
    }
}

/// Runs the benchmarks `--only` chose, in their order, and returns their results.
fn run_benchmarks(ctx: &Ctx) -> Vec<BenchResult> {
    let args = &ctx.args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results: Vec<BenchResult> = vec![];
    // MEM first and in a child process: VmHWM is a process-wide high-water mark.
    if args.wants("MEM") {
        results.push(memory::bench_memory(ctx));
    }
    if args.wants("B1") {
        results.push(runtime.block_on(b1_b2::bench_b1(ctx)));
    }
    if args.wants("B2") {
        results.push(runtime.block_on(b1_b2::bench_b2(ctx)));
    }
    if args.wants("B3")
        && let Some(r) = runtime.block_on(b3::bench_b3(ctx))
    {
        results.push(r);
    }
    if args.wants("B4") {
        results.push(runtime.block_on(b4::bench_b4(ctx)));
    }
    if args.wants("B5") {
        results.push(b5::bench_b5(ctx));
    }
    if args.wants("B6") {
        results.push(runtime.block_on(b6::bench_b6(ctx)));
    }
    if args.wants("B7") {
        results.push(runtime.block_on(b7::bench_b7(ctx)));
    }
    if args.wants("B8") {
        results.push(b8::bench_b8(ctx));
    }
    if args.wants("B9") {
        results.push(runtime.block_on(b9::bench_b9(ctx)));
    }
    drop(runtime);
    results
}

/// Records the results run with the reference parameters, unless `--no-write`.
fn write_results(args: &Args, results: Vec<BenchResult>) {
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
        "Generated by `benches/sync/` (issue 5) from `benches/sync-results.json`; the part above \
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
        "Flags (environment variable, default): `--only B1,B2,B3,B4,B5,B6,B7,B8,B9,MEM` (all), `--idle-secs` (60, B4), `--rpm` \
         (`PLAYLISTD_BENCH_RPM`, 180), `--tracks` (`PLAYLISTD_BENCH_TRACKS`, 500), \
         `--notion-latency-ms` (`PLAYLISTD_BENCH_NOTION_LATENCY_MS`, 150), `--sc-latency-ms` \
         (`PLAYLISTD_BENCH_SC_LATENCY_MS`, 80), `--bandwidth` (`PLAYLISTD_BENCH_BANDWIDTH`, \
         200000 B/s), `--track-secs` (30, B3), `--download-concurrency` (3), `--ytdlp` \
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
