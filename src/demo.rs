//! `playlistd demo`: the real sync engine against the fake SoundCloud and Notion servers on
//! 127.0.0.1, so anyone can watch playlistd work with no account, no token and no network.
//!
//! It runs the same code paths as `playlistd sync` (config parsing, SoundCloud client id
//! scraping, stub batches, Notion lookup/adopt/create, native HLS downloads with yt-dlp as the
//! fallback, state database); only the addresses point at the fakes. Downloads need neither
//! Python nor yt-dlp; one track whose only stream is HLS Opus shows the fallback when yt-dlp is
//! installed (without it, that track is left out of the demo).
//! Built with the default `demo` feature only (`lib.rs` has the stand-in without it).

use crate::exit::ExitCode;
use crate::notify::RunTell;
use crate::sandbox::Sandbox;
use crate::state::StateStore;
use crate::sync::{Engine, SyncOptions};
use playlistd_fakes::notion::{FakeNotion, FakeNotionOptions};
use playlistd_fakes::receiver::{FakeReceiver, Kind, ReceiverOptions};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeSoundCloud, FakeTrack, Layout, Policy};
use std::path::{Path, PathBuf};

fn demo_playlists(sc: &FakeSoundCloud, with_ytdlp: bool) -> (String, String) {
    let night = FakePlaylist::new(9001, "demo-collective", "night-drive")
        .title("Night Drive")
        .full_prefix(5)
        .tracks([
            FakeTrack::new(101, "Neon Boulevard", "Lumen").genre("Synthwave"),
            FakeTrack::new(102, "東京の夜", "Kōji").genre("City Pop"),
            FakeTrack::new(103, "Rain on Glass", "Mara Vell").genre("Rock, Pop"),
            FakeTrack::new(104, "Overpass", "Lumen").genre("Synthwave"),
            FakeTrack::new(105, "Slow Lights", "Dune Theory"),
            FakeTrack::new(106, "After Hours", "Mara Vell").genre("Electronic"),
            FakeTrack::new(107, "Tunnel Vision", "Kōji"),
            FakeTrack::new(108, "Border Radio", "Static Bloom").policy(Policy::Block),
            FakeTrack::new(109, "Last Exit", "Dune Theory").genre("Ambient"),
            // An older upload that still lists MP3 next to AAC: AAC is preferred.
            FakeTrack::new(115, "Tape Hiss", "Static Bloom").layout(Layout::AacAndMp3),
            FakeTrack::new(110, "Gold Tier Only", "Premium Act").policy(Policy::Snip),
            FakeTrack::new(111, "Deleted Demo", "Gone Artist").deleted(),
            FakeTrack::new(112, "Headlights 🌙", "Lumen").genre("Synthwave"),
            // A label track under DRM (SoundCloud since 2026): its clear stream answers 404.
            FakeTrack::new(114, "Major Label Single", "Big Records").drm(),
        ]);
    // Only an HLS Opus stream: the native engine hands it to yt-dlp (shown when it is installed).
    let night = if with_ytdlp {
        night.track(FakeTrack::new(116, "Opus Only", "Dune Theory").layout(Layout::OpusOnly))
    } else {
        night
    };
    let sunday = FakePlaylist::new(9002, "demo-collective", "sunday-morning")
        .title("Sunday Morning")
        .full_prefix(2)
        .tracks([
            FakeTrack::new(201, "Coffee Steam", "Aria Lind").genre("Jazz"),
            FakeTrack::new(101, "Neon Boulevard", "Lumen").genre("Synthwave"),
            FakeTrack::new(202, "Open Window", "Aria Lind").genre("Jazz"),
            FakeTrack::new(109, "Last Exit", "Dune Theory").genre("Ambient"),
        ]);
    (sc.add_playlist(night), sc.add_playlist(sunday))
}

/// Finds yt-dlp the way a user's config would (`yt-dlp` on PATH).
async fn find_ytdlp() -> Option<PathBuf> {
    let p = PathBuf::from("yt-dlp");
    crate::download::ytdlp_version(&p).await.ok().map(|_| p)
}

pub async fn run(dir: Option<&Path>) -> ExitCode {
    match run_inner(dir).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("playlistd demo: {e:#}");
            ExitCode::Failed
        }
    }
}

async fn run_inner(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let mut sb = Sandbox::start(dir, FakeNotionOptions::default())
        .await
        .context("cannot start the fake servers")?;
    let ytdlp = find_ytdlp().await;
    let urls = demo_playlists(&sb.sc, ytdlp.is_some());
    sb.watch("Night Drive", &urls.0);
    sb.watch("Sunday Morning", &urls.1);
    // A Business-plan budget keeps the demo quick; the limiter still paces every request.
    sb.requests_per_minute = 600;
    sb.download_concurrency = 3;
    // The DJ library as a user turns it on: tempo and key of every file, and an AIFF copy.
    sb.analyze = true;
    sb.download_extra = r#"formats = ["original", "aiff"]"#.to_string();
    // A page someone added by hand earlier, with the share link the app copies: the sync must
    // know it for the same track and adopt it, not duplicate it.
    let existing = sb.sc.track_url(106).unwrap_or_default();
    sb.notion.seed_track(
        "After Hours",
        "Mara Vell",
        &format!("{existing}/?si=5d1c0ffee0c4b3a2&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing"),
    );
    if let Some(p) = &ytdlp {
        sb.ytdlp = p.clone();
    }
    // A local webhook and ntfy topic stand in for the user's: each sync that brings news
    // sends one digest to each.
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    sb.extra = format!(
        "\n[notify]\nwebhook = {:?}\nntfy = {:?}\n",
        rx.webhook_url("demo"),
        rx.ntfy_url("playlistd-demo")
    );
    let cfg = sb.write_config().context("cannot write the demo config")?;

    banner(&sb, ytdlp.as_deref());

    let mut worst = ExitCode::Ok;
    let mut pass = |title: &str, reports: Vec<crate::report::RunReport>| {
        println!("== {title}");
        for r in &reports {
            for line in r.details() {
                println!("{line}");
            }
            println!("  {}", r.summary_line());
            if !r.ok() {
                worst = ExitCode::TracksFailed;
            }
        }
        println!();
    };
    // Each pass is one `playlistd sync` run: a fresh engine reading the saved state, and
    // what that run tells the notification targets.
    let run_all = |engine: Engine| {
        let cfg = cfg.clone();
        async move {
            let mut tell =
                RunTell::start(&cfg.notify, engine.store(), false).map_err(anyhow::Error::msg)?;
            let mut reports = vec![];
            for pl in &cfg.playlists {
                let report = engine.sync(pl, &SyncOptions::default()).await.0;
                tell.report(&report);
                reports.push(report);
            }
            tell.finish(&reports, reports.iter().all(|r| r.ok())).await;
            anyhow::Ok(reports)
        }
    };

    pass(
        "First sync: every playlist, from scratch",
        run_all(sb.engine(false)?).await?,
    );
    pass(
        "Second sync: nothing changed upstream (no Notion request at all)",
        run_all(sb.engine(false)?).await?,
    );
    sb.sc.add_track(
        9001,
        FakeTrack::new(113, "New Arrival", "Static Bloom").genre("Electronic"),
    );
    pass(
        "Third sync: one track added to \"Night Drive\" upstream",
        run_all(sb.engine(false)?).await?,
    );

    show_database(&sb.notion);
    show_notifications(&rx);
    let files = sb.music_files();
    println!(
        "\n== {} files on disk under {}",
        files.len(),
        sb.music_dir().display()
    );
    for f in files {
        println!("  {f}");
    }
    println!(
        "\nState database: {}{}",
        StateStore::path_in(&cfg.state_dir).display(),
        if dir.is_some() {
            ""
        } else {
            " (a temporary directory, removed now; use --dir to keep it)"
        }
    );
    Ok(worst)
}

/// What the demo runs against, and what to watch for.
fn banner(sb: &Sandbox, ytdlp: Option<&Path>) {
    println!("playlistd demo");
    println!(
        "  fake SoundCloud: {} (web {})",
        sb.sc.api_base(),
        sb.sc.web_base()
    );
    println!(
        "  fake Notion:     {} (\"Music Tracks\" + \"Playlists\" databases)",
        sb.notion.api_base()
    );
    println!("  config:          {}", sb.config_path().display());
    println!(
        "  downloads:       native (HLS AAC into .m4a) into {}",
        sb.music_dir().display()
    );
    println!(
        "  DJ library:      tempo and key of each file (tags and Notion), an .aiff copy beside it"
    );
    match ytdlp {
        Some(p) => println!(
            "  fallback:        {} (for streams the native engine does not speak)",
            p.display()
        ),
        None => println!(
            "  fallback:        none (yt-dlp not on PATH: optional, only needed for streams the native engine does not speak)"
        ),
    }
    println!(
        "  Notion already holds \"After Hours\", pasted by hand as a share link: it is adopted, not duplicated.\n  \"Major Label Single\" is a DRM label track: one request tells, and it is reported unavailable.\n"
    );
}

/// What the local webhook and ntfy topic received: a digest from each sync that brought news.
fn show_notifications(rx: &FakeReceiver) {
    println!("\n== Notifications: what the webhook and the ntfy topic received");
    for r in rx.requests() {
        match (r.kind, &r.json, &r.ntfy) {
            (Kind::Webhook, Some(j), _) => println!(
                "  webhook  {} ({})",
                j["data"]["headline"].as_str().unwrap_or_default(),
                j["event"].as_str().unwrap_or_default()
            ),
            (Kind::Ntfy, _, Some(m)) => {
                println!("  ntfy     {}", m.title.as_deref().unwrap_or_default())
            }
            _ => {}
        }
    }
    println!("  (the second sync found nothing new, so it sent nothing)");
}

/// The pages the syncs left in the fake "Music Tracks" database, with their playlists.
fn show_database(notion: &FakeNotion) {
    println!(
        "== The \"Music Tracks\" database now holds {} pages",
        notion.pages().len()
    );
    let playlist_names: std::collections::HashMap<String, String> = notion
        .pages_in(&notion.playlists_data_source_id())
        .into_iter()
        .map(|p| (p.id.clone(), p.text("Name")))
        .collect();
    let mut pages = notion.pages();
    pages.sort_by_key(|p| p.text("Title"));
    for p in &pages {
        let lists: Vec<&str> = p
            .relation("Playlists")
            .iter()
            .filter_map(|id| playlist_names.get(id).map(String::as_str))
            .collect();
        let tempo = p.number("Tempo").map(|t| format!("{t:.1} BPM"));
        println!(
            "  {:<16} {:<14} {:<14} {:<9} {:<8} downloaded={:<5} playlists={}",
            p.text("Title"),
            p.text("Artist Name"),
            p.select("Genre").unwrap_or_default(),
            tempo.unwrap_or_default(),
            p.text("Key"),
            p.checkbox("Downloaded").unwrap_or(false),
            lists.join(", ")
        );
    }
}
