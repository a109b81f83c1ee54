//! MEM: peak resident memory (VmHWM) while syncing a 10,000-track playlist, in child
//! processes so that the other benchmarks do not raise the peak: the real `playlistd sync`
//! in a process of its own (`--child-binary`, measured through `--child-measure`), the
//! engine with the fakes in one process (`--child-memory`), the fakes alone
//! (`--fakes-only`), and the state the sync leaves, loaded on its own (`--child-load`).
//!
//! It keeps both sides of each of those child probes (the child's run and the parent's
//! reading of the line it prints) and the rows computed from them.

use crate::common::{
    FAST_RPM, Setup, add_playlist, live_heap_kb, playlistd_argv, proc_status_kb, sandbox, sync_once,
};
use crate::record::{BenchResult, below, info, row};
use crate::{Args, Ctx};
use playlistd::sandbox::Sandbox;
use playlistd::state::StateStore;
use playlistd_fakes::soundcloud::playlist_of;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// MEM's criterion for "flat": growth per extra track of the real process, in KiB.
pub(crate) const MEM_FLAT_KIB: f64 = 0.5;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MemoryProbe {
    pub(crate) tracks: usize,
    pub(crate) hwm_start_kb: u64,
    pub(crate) hwm_before_kb: u64,
    pub(crate) hwm_after_kb: u64,
    pub(crate) rss_after_kb: u64,
    pub(crate) wall_s: f64,
    pub(crate) notion_requests: usize,
    pub(crate) summary: String,
}

/// The heap (KiB) a load of the state in `dir` keeps, in a fresh process of this benchmark
/// binary (MEM: the state's share); `None` if it failed.
pub(crate) fn cold_load(dir: &Path) -> Option<u64> {
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

/// The child side of [`cold_load`] (`--child-load`): loads the state in `dir` once and prints
/// how long it took, its tracks, the heap the load kept and the process's peak (KiB).
pub(crate) fn load_child(dir: &Path) -> ! {
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

/// `--child-measure CMD ARGS...`: runs CMD and prints whether it succeeded and its own peak
/// resident memory (B5/MEM; see [`measured`]).
pub(crate) fn measure_child(argv: &[String]) {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let (ok, kb, cpu) = run_measured(cmd).expect("run the measured command");
    println!("MEASURED {kb} {ok} {}", cpu.as_micros());
}

/// The memory probes' world: no latency, no rate limit to speak of, downloads off.
pub(crate) async fn memory_sandbox(args: &Args, tracks: usize) -> (Sandbox, String) {
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

pub(crate) fn memory_child(args: &Args, tracks: usize) {
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
pub(crate) fn binary_child(args: &Args, tracks: usize) {
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
pub(crate) async fn measured(argv: Vec<String>, home: &Path) -> (bool, u64) {
    let (ok, kb, _) = measured_with(argv, home, &[]).await;
    (ok, kb)
}

/// [`measured`], with extra environment for the command, and its CPU time too (its waited
/// children's included: B7's yt-dlp and ffmpeg).
pub(crate) async fn measured_with(
    argv: Vec<String>,
    home: &Path,
    env: &[(String, String)],
) -> (bool, u64, std::time::Duration) {
    let exe = std::env::current_exe().expect("current exe");
    let out = tokio::process::Command::new(exe)
        .args(["--bench", "--child-measure"])
        .args(&argv)
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("run the measuring child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEASURED "))
        .unwrap_or("0 false 0");
    // `kb ok cpu_us`.
    let mut parts = line.split_whitespace();
    let kb = parts.next().and_then(|k| k.parse().ok()).unwrap_or(0);
    let ok = parts.next() == Some("true");
    let cpu_us = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (ok, kb, std::time::Duration::from_micros(cpu_us))
}

/// Runs a command to its end and returns whether it succeeded, its own peak resident memory in
/// KiB and its CPU time (from `wait4`, so other children do not count; the ones it waited for
/// do, and the peak is then the largest process's).
pub(crate) fn run_measured(
    mut cmd: std::process::Command,
) -> std::io::Result<(bool, u64, std::time::Duration)> {
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
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((
        ok,
        usage.ru_maxrss as u64,
        tv(usage.ru_utime) + tv(usage.ru_stime),
    ))
}

/// Peak resident memory (KiB) of `playlistd sync` over a playlist of `tracks`, and the live
/// heap (KiB) of the state it leaves, loaded on its own.
pub(crate) fn run_binary_child(tracks: usize) -> Result<(u64, u64), String> {
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

pub(crate) fn run_memory_child(tracks: usize, fakes_only: bool) -> Result<MemoryProbe, String> {
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

pub(crate) fn bench_memory(ctx: &Ctx) -> BenchResult {
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
            // The engine alone first: the real binary in its own process, the fakes outside
            // it. That is the number the target is about.
            binary_rows(&mut res, n, small);
            in_process_rows(&mut res, n, small, &big, &little, &fakes);
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            res.rows
                .push(row("VmHWM", "—", "error".into(), "skipped".into()));
            res.notes.push(e);
        }
    }
    res
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// The real `playlistd sync` in a process of its own, `small` then `n` tracks: its peak and
/// the state it leaves.
fn binary_rows(res: &mut BenchResult, n: usize, small: usize) {
    match (run_binary_child(n), run_binary_child(small)) {
        (Ok((b_big, s_big)), Ok((b_small, s_small))) => {
            let per =
                |big: u64, small_: u64| big.saturating_sub(small_) as f64 / (n - small) as f64;
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
}

/// This process's own memory, the fakes in it: the `n`-track sync, the `small` one for
/// scale, and the fakes' share.
fn in_process_rows(
    res: &mut BenchResult,
    n: usize,
    small: usize,
    big: &MemoryProbe,
    little: &MemoryProbe,
    fakes: &MemoryProbe,
) {
    let fakes_growth = fakes.hwm_after_kb.saturating_sub(fakes.hwm_before_kb);
    let growth = big.hwm_after_kb.saturating_sub(big.hwm_before_kb);
    let little_growth = little.hwm_after_kb.saturating_sub(little.hwm_before_kb);
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
