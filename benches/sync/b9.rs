//! B9: B3 with the DJ library on: 3-minute tracks of real encoded audio (the fake's AAC groove,
//! not stubs), analysis and the two extra formats (AIFF and WAV, 24-bit), as a DJ would run
//! it. The same two runs as B3: the download-and-library baseline (Notion out of the way), then
//! the benchmark run at the real Notion rate; wall time is judged against max(Notion floor,
//! download + analysis time). Disk written is what the process wrote (`/proc/self/io`), per
//! track; throughput is tracks analysed and converted per second of wall per core.

use crate::common::{FAST_RPM, Run, Setup, add_playlist, check_report, sandbox, secs, sync_once};
use crate::record::{BenchResult, at_most_shown, info, ratio_row, row};
use crate::{Args, Ctx};
use playlistd::sandbox::Sandbox;
use playlistd_fakes::notion::Endpoint as NotionEndpoint;
use std::time::Duration;

/// B9's tracks: 3 minutes each.
pub(crate) const B9_TRACK_SECS: u64 = 180;
/// Per connection: fast enough that the library, not the network, is the work to keep pace.
const B9_BANDWIDTH: u64 = 1_000_000;
const FORMATS: &str = r#"formats = ["original", "aiff", "wav"]"#;

pub(crate) async fn bench_b9(ctx: &Ctx) -> BenchResult {
    let a = &ctx.args;
    let (_, baseline) = run(a, true).await;
    let written0 = written_bytes();
    let (sb, bench) = run(a, false).await;
    let written = written_bytes().saturating_sub(written0);
    record(ctx, &sb, &bench, &baseline, written)
}

/// One sync of the playlist, DJ library on; `baseline`: Notion without latency or limit.
async fn run(a: &Args, baseline: bool) -> (Sandbox, Run) {
    let setup = Setup {
        notion_latency: if baseline {
            Duration::ZERO
        } else {
            a.notion_latency()
        },
        sc_latency: a.sc_latency(),
        rpm: if baseline { FAST_RPM } else { a.rpm },
        downloads: true,
    };
    eprintln!(
        "B9: {} run: {} tracks of {B9_TRACK_SECS} s, analysis + AIFF + WAV",
        if baseline {
            "download-and-library baseline"
        } else {
            "benchmark"
        },
        a.tracks
    );
    let mut sb = sandbox(a, &setup).await;
    sb.analyze = true;
    sb.download_extra = FORMATS.into();
    sb.sc.set_bandwidth(Some(B9_BANDWIDTH));
    let name = add_playlist(&mut sb, a.tracks, "library", Some(B9_TRACK_SECS * 1000));
    let label = if baseline { "B9 baseline" } else { "B9" };
    let run = sync_once(&sb, &name, Some((label, a.tracks))).await;
    (sb, run)
}

/// Bytes this process has caused to be written to storage so far.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn record(ctx: &Ctx, sb: &Sandbox, run: &Run, baseline: &Run, written: u64) -> BenchResult {
    let a = &ctx.args;
    let created = run.report.created.len().max(1);
    let per_track = run.notion_requests as f64 / created as f64;
    let floor = Duration::from_secs_f64(run.notion_requests as f64 * 60.0 / a.rpm as f64);
    let bound = floor.max(baseline.wall);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let analysed = run
        .report
        .downloaded
        .iter()
        .filter(|t| t.analysis.as_deref().is_some_and(|s| s.contains("BPM")))
        .count();
    let mut res = ctx.result(
        "B9",
        "First sync with downloads and the DJ library",
        format!(
            "{} tracks of {B9_TRACK_SECS} s of real AAC in HLS (the fake's groove) at {B9_BANDWIDTH} B/s \
             per connection, {} downloads at once, analysis on, formats original + AIFF + WAV \
             (24-bit, source rate); Notion {} ms/request at {}/min, SoundCloud {} ms/request",
            a.tracks, a.download_concurrency, a.notion_latency_ms, a.rpm, a.sc_latency_ms
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
        "download + analysis + formats time (measured, Notion out of the way)",
        secs(baseline.wall),
    ));
    res.rows.push(ratio_row(
        "wall ÷ max(floor, download + analysis time)",
        run.wall.as_secs_f64() / bound.as_secs_f64(),
        1.1,
    ));
    res.rows.push(info(
        "tracks analysed and converted per second per core (baseline)",
        format!(
            "{:.2} ({} tracks in {} on {cores} cores)",
            a.tracks as f64 / baseline.wall.as_secs_f64() / cores as f64,
            a.tracks,
            secs(baseline.wall)
        ),
    ));
    res.rows.push(info(
        "disk written per track (benchmark run)",
        format!(
            "{:.1} MB ({:.2} GB in all: .m4a + .aiff + .wav, the state)",
            written as f64 / a.tracks as f64 / 1e6,
            written as f64 / 1e9
        ),
    ));
    res.rows.push(info(
        "tracks with a tempo and key",
        format!("{analysed} of {}", run.report.downloaded.len()),
    ));
    res.notes.push(format!(
        "Notion requests by kind: {}; {} updates (write-backs); non-2xx answers: {}",
        run.notion_breakdown,
        sb.notion.count(NotionEndpoint::Update),
        run.notion_errors
    ));
    res.notes
        .push(format!("baseline run: {}", baseline.report.summary_line()));
    res.notes
        .push(format!("benchmark run: {}", run.report.summary_line()));
    check_report(&run.report, a.tracks, &mut res);
    res
}
