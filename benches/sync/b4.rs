//! B4: the idle daemon (`playlistd run`, a child process) with 100 playlists of 2 tracks:
//! resident memory 20 s after the first syncs of all of them finished (the log says when),
//! and with every playlist up to date; wakeups a minute (context switches from /proc over a
//! measured interval).
//!
//! It keeps the daemon child (its log read line by line), the readings of its memory,
//! threads, context switches and CPU time from /proc, and the two sandboxes it runs in.

use crate::Ctx;
use crate::common::{ms, playlistd_argv, proc_status_kb};
use crate::record::{BenchResult, at_most, info, row};
use playlistd::sandbox::Sandbox;
use playlistd::state::{PlaylistState, State, StateStore};
use playlistd_fakes::notion::FakeNotionOptions;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub(crate) const B4_PLAYLISTS: usize = 100;
/// Tracks of each B4 playlist, all new to the first sync.
pub(crate) const B4_TRACKS: usize = 2;
/// How long after the last first sync B4 reads the daemon's memory.
pub(crate) const B4_SETTLE: Duration = Duration::from_secs(20);

/// Context switches of every thread of `pid`: each is a wakeup (or a preemption).
pub(crate) fn context_switches(pid: u32) -> u64 {
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

/// CPU time (user + system) of `pid`, from /proc/<pid>/stat, in clock ticks of 10 ms.
pub(crate) fn proc_cpu(pid: u32) -> Duration {
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
pub(crate) struct Observed {
    pub(crate) rss_kb: u64,
    pub(crate) hwm_kb: u64,
    pub(crate) anon_kb: u64,
    pub(crate) file_kb: u64,
    pub(crate) threads: usize,
}

pub(crate) fn observe(pid: u32) -> Observed {
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

pub(crate) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A `playlistd run` child of this process, its stderr (the log) read line by line.
pub(crate) struct DaemonChild {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// B4's world: [`B4_PLAYLISTS`] playlists of [`B4_TRACKS`] tracks each, on daily schedules at
/// 03:00, downloads off, the default logging (a file and stderr); the fakes answer at once,
/// 6000 requests a minute (the sandbox's default), so the first syncs take seconds, not
/// minutes (with the reference 180/min and 150/80 ms latencies they took 168 s and left the
/// same resident memory: 17.5 against 17.6 MiB, compared with file logging off). `up_to_date`
/// writes a state in which every playlist just succeeded (no catch-up run, nothing but
/// waiting); otherwise the state is empty and every playlist's first sync runs at start-up
/// (never succeeded: a catch-up), `daemon.max_concurrent_syncs` (2) at a time.
pub(crate) async fn b4_sandbox(up_to_date: bool) -> Sandbox {
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

/// Starts `playlistd run` on the sandbox's config and returns once it logged that it runs.
///
/// For profiling, as in MEM: `PLAYLISTD_BENCH_BIN` swaps in another build of playlistd (one
/// with debug symbols), `PLAYLISTD_BENCH_WRAP="valgrind --tool=massif --vgdb=yes"` runs it
/// under a tool (whose own memory the numbers then include), and
/// `PLAYLISTD_BENCH_DAEMON_LOG=PATH` copies the daemon's log to `PATH.<pid>`.
pub(crate) async fn start_daemon(sb: &Sandbox) -> DaemonChild {
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
pub(crate) struct FirstSyncs {
    pub(crate) finished: usize,
    /// Summaries that are not "every track new, none failed".
    pub(crate) unexpected: Vec<String>,
    pub(crate) took: Duration,
}

/// Reads the daemon's log until every playlist logged the summary of its sync (`synced
/// "P000": ...`), or `limit` passes. The summary is logged after the sync's last state save,
/// so when the last one is read every first sync is over.
pub(crate) async fn wait_for_first_syncs(d: &mut DaemonChild, limit: Duration) -> FirstSyncs {
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

pub(crate) async fn bench_b4(ctx: &Ctx) -> BenchResult {
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

    // (a)'s fakes stay up while (b) runs, as they always did.
    let _first = first_syncs_then_idle(secs, &mut res).await;
    up_to_date_idle(secs, &mut res).await;
    res
}

/// (a) The first syncs of every playlist, then idle: memory [`B4_SETTLE`] after the last.
/// Returns the sandbox it ran in.
async fn first_syncs_then_idle(secs: u64, res: &mut BenchResult) -> Sandbox {
    let settle = B4_SETTLE.as_secs();
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
    sb
}

/// (b) Every playlist up to date: no sync runs, the daemon only waits.
async fn up_to_date_idle(secs: u64, res: &mut BenchResult) {
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
}
