//! B6: listing a 500-track playlist with the native client (requests, wall time), and with
//! the real yt-dlp (`--flat-playlist -J` and full `-J`) on the same fake playlist: its
//! SoundCloud hosts are hard-coded, so `benches/ytdlp-plugins` redirects its requests to the
//! fake. The yt-dlp rows are left out when yt-dlp is not found.
//!
//! It keeps the native listing (cold, then warm, with one client) and the yt-dlp runs
//! (`YtdlpCommand`) with their counts by endpoint.

use crate::Ctx;
use crate::common::{Setup, find_ytdlp, ms, sandbox, sc_breakdown};
use crate::record::{BenchResult, at_most, info, row};
use playlistd::sandbox::{FakeSoundCloudConfig, Sandbox};
use playlistd::source::soundcloud::SoundCloud;
use playlistd_fakes::soundcloud::playlist_of;
use std::path::Path;
use std::time::{Duration, Instant};

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

pub(crate) async fn bench_b6(ctx: &Ctx) -> BenchResult {
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
    let mut res = native_listing(ctx, &sb, &client, &url, full_prefix).await;

    // yt-dlp on the same playlist, through a plugin that sends its requests for SoundCloud's
    // hosts to the fake (the fake names the real hosts in its answers meanwhile).
    let Some((ytdlp, version)) = find_ytdlp(a) else {
        res.rows
            .push(info("yt-dlp", "not found: rows skipped".into()));
        return res;
    };
    ytdlp_listing(ctx, &sb, &ytdlp, &version, playlist_id, &mut res).await;
    res
}

/// The native client's listing of `url`, cold (client id scraped) then warm: the result
/// with its rows.
async fn native_listing(
    ctx: &Ctx,
    sb: &Sandbox,
    client: &SoundCloud,
    url: &url::Url,
    full_prefix: usize,
) -> BenchResult {
    let a = &ctx.args;

    sb.sc.reset_counters();
    let t = Instant::now();
    let cold = client.list(url).await.expect("cold listing");
    let cold_wall = t.elapsed();
    let cold_requests = sb.sc.total_requests();
    let cold_kinds = sc_breakdown(sb);

    sb.sc.reset_counters();
    let t = Instant::now();
    let warm = client.list(url).await.expect("warm listing");
    let warm_wall = t.elapsed();
    let warm_requests = sb.sc.total_requests();
    let warm_kinds = sc_breakdown(sb);

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
    res
}

/// The real yt-dlp on the same playlist: flat listings cold and warm, then the full
/// extraction, recorded in `res`.
async fn ytdlp_listing(
    ctx: &Ctx,
    sb: &Sandbox,
    ytdlp: &Path,
    version: &str,
    playlist_id: u64,
    res: &mut BenchResult,
) {
    sb.sc.show_public_hosts(true);
    let public_url = sb.sc.playlist_url(playlist_id).expect("playlist");
    let hosts = format!(
        "soundcloud.com={},api-v2.soundcloud.com={}",
        sb.sc.web_base(),
        sb.sc.api_base()
    );
    let ytdlp_cache = tempfile::tempdir().expect("temp dir");
    let run = |flat: bool| {
        YtdlpCommand {
            ytdlp,
            cache: ytdlp_cache.path(),
            hosts: &hosts,
            url: &public_url,
            flat,
        }
        .run(sb)
    };
    let flat_cold = run(true).await;
    let flat_warm = run(true).await;
    eprintln!(
        "B6: full yt-dlp -J extraction of {} tracks, one request after another…",
        ctx.args.tracks
    );
    let full = run(false).await;
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
}

/// One `yt-dlp -J` of the fake playlist, its SoundCloud hosts sent to the fake.
struct YtdlpCommand<'a> {
    ytdlp: &'a Path,
    cache: &'a Path,
    hosts: &'a str,
    url: &'a str,
    /// `--flat-playlist`.
    flat: bool,
}

impl YtdlpCommand<'_> {
    async fn run(self, sb: &Sandbox) -> YtdlpRun {
        let mut cmd = tokio::process::Command::new(self.ytdlp);
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
        .arg(self.cache)
        .env("PLAYLISTD_FAKE_HOSTS", self.hosts);
        if self.flat {
            cmd.arg("--flat-playlist");
        }
        cmd.arg(self.url);
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
            kinds: sc_breakdown(sb),
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
}
