//! B3: the first sync with downloads on (the native engine: AAC in HLS from the fake's CDN, at a
//! capped bandwidth per connection): Notion requests per new track, wall time against
//! max(Notion floor, download time), the download time measured by a second run with Notion
//! latency 0 and an unlimited rate.
//!
//! It keeps the two runs (the download-only baseline, then the benchmark run, each in its
//! own sandbox) and the rows computed from them.

use crate::common::Run;
use crate::common::{FAST_RPM, Setup, add_playlist, check_report, sandbox, secs, sync_once};
use crate::record::{BenchResult, at_most_shown, info, ratio_row, row};
use crate::{Args, Ctx};
use playlistd::sandbox::Sandbox;
use playlistd_fakes::notion::Endpoint as NotionEndpoint;
use playlistd_fakes::soundcloud::aac_hls;
use std::time::Duration;

pub(crate) async fn bench_b3(ctx: &Ctx) -> Option<BenchResult> {
    let args = ctx.args.clone();
    let (baseline, files) = download_baseline(&args).await;
    let (sb, run) = benchmark_run(&args).await;
    Some(record_b3(ctx, &sb, &run, &baseline, files))
}

/// Bytes of one B3 track on the CDN: its init and media segments.
fn hls_bytes(args: &Args) -> usize {
    let hls = aac_hls(args.track_secs * 1000);
    hls.init.len() + hls.segments.iter().map(Vec::len).sum::<usize>()
}

/// The download time: the same sync with Notion out of the way (no latency, unlimited
/// rate). Returns the run and the files it left.
async fn download_baseline(args: &Args) -> (Run, usize) {
    let a = args;
    eprintln!(
        "B3: download-only baseline: {} tracks of {} s, {} B/s per connection, {} at once",
        a.tracks, a.track_secs, a.bandwidth, a.download_concurrency
    );
    let mut base = sandbox(
        args,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: a.sc_latency(),
            rpm: FAST_RPM,
            downloads: true,
        },
    )
    .await;
    base.sc.set_bandwidth(Some(a.bandwidth));
    let name = add_playlist(&mut base, a.tracks, "downloads", Some(a.track_secs * 1000));
    let baseline = sync_once(&base, &name, Some(("B3 baseline", a.tracks))).await;
    let files = base.music_files().len();
    drop(base);
    (baseline, files)
}

/// The benchmark run, at the benchmark's latencies and rate; its sandbox is kept for the
/// fake Notion's counts.
async fn benchmark_run(args: &Args) -> (Sandbox, Run) {
    let a = args;
    eprintln!("B3: the benchmark run at {}/min", a.rpm);
    let mut sb = sandbox(
        args,
        &Setup {
            notion_latency: a.notion_latency(),
            sc_latency: a.sc_latency(),
            rpm: a.rpm,
            downloads: true,
        },
    )
    .await;
    sb.sc.set_bandwidth(Some(a.bandwidth));
    let name = add_playlist(&mut sb, a.tracks, "downloads", Some(a.track_secs * 1000));
    let run = sync_once(&sb, &name, Some(("B3", a.tracks))).await;
    (sb, run)
}

fn record_b3(ctx: &Ctx, sb: &Sandbox, run: &Run, baseline: &Run, files: usize) -> BenchResult {
    let a = &ctx.args;
    let bytes = hls_bytes(a);
    let per_file = Duration::from_secs_f64(bytes as f64 / a.bandwidth as f64);
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
            "{} tracks of {} s of AAC in HLS ({} B: init + {} segments) served at {} B/s per \
             connection ({:.2} s of transfer each), {} downloads at once (native engine), Notion \
             {} ms/request at {}/min, SoundCloud {} ms/request (CDN included)",
            a.tracks,
            a.track_secs,
            bytes,
            (a.track_secs as f64 / 10.0).ceil(),
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
    res
}
