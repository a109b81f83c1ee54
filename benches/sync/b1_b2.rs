//! B1 and B2: the first sync of the reference playlist and its unchanged re-sync.
//!
//! - B1 first sync of 500 new tracks, downloads off: Notion requests, wall time, floor
//!   (requests ÷ rate) and wall/floor;
//! - B2 unchanged re-sync of the same tracks: Notion and SoundCloud requests, CPU time
//!   (getrusage user+sys around `Engine::sync`, fake servers included), state file size.
//!
//! Each keeps its own sandbox; B2's set-up sync runs without latency at an unlimited rate,
//! then the re-syncs run at the benchmark's latencies and rate, each with a fresh engine.

use crate::Ctx;
use crate::common::{
    FAST_RPM, Setup, add_playlist, check_report, kib, ms, sandbox, secs, sync_once,
};
use crate::record::{BenchResult, at_most, below, info, ratio_row, row};
use playlistd::state::DB_FILE;
use std::time::Duration;

pub(crate) const B2_RUNS: usize = 5;

pub(crate) async fn bench_b1(ctx: &Ctx) -> BenchResult {
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

pub(crate) async fn bench_b2(ctx: &Ctx) -> BenchResult {
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
