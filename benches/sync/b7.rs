//! B7: downloads, native against yt-dlp, per track: CPU time, wall time, peak memory and
//! requests, on the same fake playlist (tracks of 3 minutes of real AAC in HLS, as SoundCloud
//! serves them in 2026). Each engine runs as `playlistd sync`, the real binary, in a process
//! of its own, and is measured by `wait4` (its CPU includes the yt-dlp and ffmpeg processes it
//! waited for; its peak memory is that of the largest one); the fakes stay in this process.
//!
//! yt-dlp downloads through its own SoundCloud extractor, as it would from soundcloud.com:
//! `benches/ytdlp-plugins` sends its requests for SoundCloud's hosts to the fake, which names
//! the real hosts in its answers meanwhile. The yt-dlp rows are left out without yt-dlp.

use crate::Ctx;
use crate::common::{FAST_RPM, Setup, find_ytdlp, ms, playlistd_argv, sandbox, sc_breakdown};
use crate::memory::measured_with;
use crate::record::{BenchResult, at_most_shown, info, row};
use playlistd::sandbox::Sandbox;
use playlistd_fakes::soundcloud::{Endpoint as ScEndpoint, FakePlaylist, FakeTrack};
use std::path::Path;
use std::time::{Duration, Instant};

/// Tracks per engine, and their length.
pub(crate) const B7_TRACKS: u64 = 10;
const B7_TRACK_MS: u64 = 180_000;

/// One engine's `playlistd sync`, measured.
struct EngineRun {
    ok: bool,
    wall: Duration,
    cpu: Duration,
    peak_kb: u64,
    files: usize,
    bytes: u64,
    requests: u64,
    kinds: String,
    /// Requests of the downloads themselves: stream URLs, HLS playlists, init and media
    /// segments, progressive files, artwork.
    download_requests: u64,
    /// `/tracks/{id}` calls (fresh track JSON), counted apart.
    track_json: u64,
    /// Stream URLs beyond one per track: renewals of expired signatures, counted apart.
    renewals: u64,
}

pub(crate) async fn bench_b7(ctx: &Ctx) -> BenchResult {
    let a = &ctx.args;
    let mut res = ctx.result(
        "B7",
        "Downloads: native against yt-dlp",
        format!(
            "{B7_TRACKS} tracks of {} s (AAC in HLS, ~10 s fMP4 segments), {} downloads at once, \
             no latency, no bandwidth cap; `playlistd sync` as its own process, the fakes outside it",
            B7_TRACK_MS / 1000,
            a.download_concurrency
        ),
    );
    eprintln!("B7: {B7_TRACKS} native downloads");
    let native = run_engine(ctx, "native", None).await;
    let per = |d: Duration| d / B7_TRACKS as u32;
    push_engine(&mut res, "native", &native);
    // 1 stream URL + 1 playlist + 1 init + the media segments + at most 1 cover, per track.
    let segments = B7_TRACK_MS.div_ceil(10_000);
    let budget = B7_TRACKS * (3 + segments + 1);
    res.rows.push(row(
        "native download requests per track (renewals and track JSON apart)",
        &format!("≤ {}", 3 + segments + 1),
        format!(
            "{:.1} ({} for {B7_TRACKS}; {} renewals, {} track JSON)",
            native.download_requests as f64 / B7_TRACKS as f64,
            native.download_requests,
            native.renewals,
            native.track_json
        ),
        at_most_shown(native.download_requests as f64, budget as f64),
    ));
    let Some((ytdlp, version)) = find_ytdlp(a) else {
        res.rows
            .push(info("yt-dlp", "not found: rows skipped".into()));
        return res;
    };
    eprintln!("B7: {B7_TRACKS} yt-dlp downloads (yt-dlp {version})");
    let y = run_engine(ctx, "yt-dlp", Some(&ytdlp)).await;
    push_engine(&mut res, &format!("yt-dlp {version}"), &y);
    let ratio = native.cpu.as_secs_f64() / y.cpu.as_secs_f64().max(1e-9);
    res.rows.push(row(
        "native CPU per track ÷ yt-dlp's",
        "≤ 0.1",
        format!("{ratio:.3} ({} ÷ {})", ms(per(native.cpu)), ms(per(y.cpu))),
        at_most_shown(ratio, 0.1),
    ));
    res.notes.push(format!(
        "yt-dlp runs its SoundCloud extractor (resolve, every format's stream URL, then the HLS \
         AAC stream) and remuxes with ffmpeg when it is installed ({}).",
        ffmpeg_version()
    ));
    res
}

fn push_engine(res: &mut BenchResult, name: &str, r: &EngineRun) {
    let n = B7_TRACKS as f64;
    if !r.ok || r.files as u64 != B7_TRACKS {
        res.notes.push(format!(
            "WARNING: {name}: the sync failed or left {} files",
            r.files
        ));
    }
    res.rows.push(info(
        &format!("{name}: CPU per track"),
        format!(
            "{} ({} for {B7_TRACKS})",
            ms(r.cpu / B7_TRACKS as u32),
            ms(r.cpu)
        ),
    ));
    res.rows.push(info(
        &format!("{name}: wall per track (sync ÷ tracks)"),
        ms(r.wall / B7_TRACKS as u32),
    ));
    res.rows.push(info(
        &format!("{name}: peak memory (largest process)"),
        format!("{:.1} MiB", r.peak_kb as f64 / 1024.0),
    ));
    res.rows.push(info(
        &format!("{name}: SoundCloud requests per track"),
        format!("{:.1} ({})", r.requests as f64 / n, r.kinds),
    ));
    res.notes.push(format!(
        "{name}: {} files, {:.2} MB in all",
        r.files,
        r.bytes as f64 / 1e6
    ));
}

async fn run_engine(ctx: &Ctx, engine: &str, ytdlp: Option<&Path>) -> EngineRun {
    let mut sb = sandbox(
        &ctx.args,
        &Setup {
            notion_latency: Duration::ZERO,
            sc_latency: Duration::ZERO,
            rpm: FAST_RPM,
            downloads: true,
        },
    )
    .await;
    sb.engine = engine.into();
    let tracks = (1..=B7_TRACKS).map(|i| {
        FakeTrack::new(7000 + i, &format!("Bench Track {i}"), "Bench Artist")
            .duration_ms(B7_TRACK_MS)
    });
    let url = sb
        .sc
        .add_playlist(FakePlaylist::new(77, "bench", "engines").tracks(tracks));
    sb.watch("Engines", &url);
    let mut env = vec![];
    if let Some(y) = ytdlp {
        sb.ytdlp = y.to_path_buf();
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ytdlp-plugins");
        sb.download_extra = format!(
            "extra_args = [\"--plugin-dirs\", {:?}]\n",
            plugins.display().to_string()
        );
        env.push((
            "PLAYLISTD_FAKE_HOSTS".to_string(),
            format!(
                "soundcloud.com={},api-v2.soundcloud.com={}",
                sb.sc.web_base(),
                sb.sc.api_base()
            ),
        ));
        // yt-dlp's extractor knows SoundCloud's hosts only; the fake names them meanwhile.
        sb.sc.show_public_hosts(true);
    }
    // Listing and Notion first, downloads off, so that the measured run is the downloads (and
    // their write-backs, and one unchanged listing).
    let engine = sb.engine(false).expect("engine");
    let pl = engine.config.playlist("Engines").expect("playlist").clone();
    let opts = playlistd::sync::SyncOptions {
        no_download: true,
        ..Default::default()
    };
    let (report, result) = engine.sync(&pl, &opts).await;
    assert!(
        result.is_ok() && report.created.len() as u64 == B7_TRACKS,
        "{}",
        report.summary_line()
    );
    drop(engine);
    sb.sc.reset_counters();
    let argv: Vec<String> = playlistd_argv()
        .into_iter()
        .chain(["--config", sb.config_path().to_str().unwrap(), "sync"].map(String::from))
        .collect();
    let t0 = Instant::now();
    let (ok, peak_kb, cpu) = measured_with(argv, sb.home(), &env).await;
    let wall = t0.elapsed();
    let (files, bytes) = music(&sb);
    let renewals = sb.sc.requests(ScEndpoint::Media).saturating_sub(B7_TRACKS);
    let download_requests: u64 = [
        ScEndpoint::Media,
        ScEndpoint::CdnPlaylist,
        ScEndpoint::CdnInit,
        ScEndpoint::CdnSegment,
        ScEndpoint::CdnProgressive,
        ScEndpoint::Artwork,
    ]
    .iter()
    .map(|e| sb.sc.requests(*e))
    .sum();
    EngineRun {
        ok,
        wall,
        cpu,
        peak_kb,
        files,
        bytes,
        requests: sb.sc.total_requests(),
        kinds: sc_breakdown(&sb),
        download_requests: download_requests - renewals,
        track_json: sb.sc.requests(ScEndpoint::Track),
        renewals,
    }
}

fn music(sb: &Sandbox) -> (usize, u64) {
    let files: Vec<String> = sb
        .music_files()
        .into_iter()
        .filter(|f| f.contains("Bench Track"))
        .collect();
    let bytes = files
        .iter()
        .map(|f| {
            std::fs::metadata(sb.music_dir().join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    (files.len(), bytes)
}

fn ffmpeg_version() -> String {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "ffmpeg not found".into())
}
