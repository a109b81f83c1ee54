//! `playlistd demo`: the real sync engine against the fake SoundCloud and Notion servers on
//! 127.0.0.1, so anyone can watch playlistd work with no account, no token and no network.
//!
//! It runs the same code paths as `playlistd sync` (config parsing, SoundCloud client id
//! scraping, stub batches, Notion lookup/adopt/create, yt-dlp downloads, state file); only
//! the addresses point at the fakes. Without yt-dlp it syncs Notion only and says so.

use crate::commands::ExitCode;
use crate::config::{self, Secret};
use crate::fake::notion::{FakeNotion, FakeNotionOptions};
use crate::fake::soundcloud::{FakePlaylist, FakeSoundCloud, FakeTrack, Policy};
use crate::notion::Notion;
use crate::paths::Paths;
use crate::state::StateStore;
use crate::sync::{Engine, SyncOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn demo_playlists(sc: &FakeSoundCloud) -> (String, String) {
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
            FakeTrack::new(110, "Gold Tier Only", "Premium Act").policy(Policy::Snip),
            FakeTrack::new(111, "Deleted Demo", "Gone Artist").deleted(),
            FakeTrack::new(112, "Headlights 🌙", "Lumen").genre("Synthwave"),
        ]);
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

fn config_text(
    sc: &FakeSoundCloud,
    notion: &FakeNotion,
    root: &Path,
    urls: &(String, String),
    ytdlp: Option<&Path>,
) -> String {
    let download = match ytdlp {
        Some(p) => format!("enabled = true\nytdlp = {:?}\n", p.display().to_string()),
        None => "enabled = false\n".to_string(),
    };
    format!(
        r#"# Written by `playlistd demo`: the real config format, pointed at the fakes.
[notion]
database = "{db}"
token_file = {token:?}
api_base = "{napi}"
requests_per_minute = 600

[soundcloud]
api_base = "{scapi}"
web_base = "{scweb}"

[download]
{download}dir = {music:?}
concurrency = 3

[paths]
state_dir = {state:?}
cache_dir = {cache:?}

[[playlist]]
name = "Night Drive"
url = "{a}"
schedule = "*/30 * * * *"

[[playlist]]
name = "Sunday Morning"
url = "{b}"
"#,
        db = notion.database_id(),
        token = root.join("notion-token").display().to_string(),
        napi = notion.api_base(),
        scapi = sc.api_base(),
        scweb = sc.web_base(),
        music = root.join("music").display().to_string(),
        state = root.join("state").display().to_string(),
        cache = root.join("cache").display().to_string(),
        a = urls.0,
        b = urls.1,
    )
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
    let temp;
    let root: PathBuf = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };

    let sc = FakeSoundCloud::start().await;
    let notion = FakeNotion::start(FakeNotionOptions::default()).await;
    let urls = demo_playlists(&sc);
    // A page someone added by hand earlier: the sync must adopt it, not duplicate it.
    let existing = sc.track_url(106).unwrap_or_default();
    notion.seed_track(
        "After Hours",
        "Mara Vell",
        &crate::model::normalize_url(&existing),
    );
    std::fs::write(root.join("notion-token"), notion.token())
        .context("cannot write the demo token")?;

    let ytdlp = find_ytdlp().await;
    let cfg_path = root.join("playlists.toml");
    std::fs::write(
        &cfg_path,
        config_text(&sc, &notion, &root, &urls, ytdlp.as_deref()),
    )
    .context("cannot write the demo config")?;

    println!("playlistd demo");
    println!(
        "  fake SoundCloud: {} (web {})",
        sc.api_base(),
        sc.web_base()
    );
    println!(
        "  fake Notion:     {} (\"Music Tracks\" + \"Playlists\" databases)",
        notion.api_base()
    );
    println!("  config:          {}", cfg_path.display());
    match &ytdlp {
        Some(p) => println!(
            "  downloads:       yt-dlp ({}) into {}",
            p.display(),
            root.join("music").display()
        ),
        None => println!(
            "  downloads:       off (yt-dlp not found on PATH; `pip install yt-dlp` to see them)"
        ),
    }
    println!(
        "  Notion already holds \"After Hours\" (added by hand): it will be adopted, not duplicated.\n"
    );

    let cfg = Arc::new(config::load(&cfg_path, &Paths::for_tests(&root))?);
    let token = cfg.notion.token.read().map(|t: Secret| t)?;
    let engine = |store| -> anyhow::Result<Engine> {
        Ok(Engine::new(
            cfg.clone(),
            Some(Notion::new(&cfg.notion, token.clone())?),
            store,
        ))
    };

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

    let run_all = |engine: Engine| {
        let cfg = cfg.clone();
        async move {
            let mut reports = vec![];
            for pl in &cfg.playlists {
                let (report, _) = engine.sync(pl, &SyncOptions::default()).await;
                reports.push(report);
            }
            reports
        }
    };

    let (store, _) = StateStore::load(&cfg.state_dir)?;
    pass(
        "First sync: every playlist, from scratch",
        run_all(engine(store)?).await,
    );

    let (store, _) = StateStore::load(&cfg.state_dir)?;
    pass(
        "Second sync: nothing changed upstream (no Notion request at all)",
        run_all(engine(store)?).await,
    );

    sc.add_track(
        9001,
        FakeTrack::new(113, "New Arrival", "Static Bloom").genre("Electronic"),
    );
    let (store, _) = StateStore::load(&cfg.state_dir)?;
    pass(
        "Third sync: one track added to \"Night Drive\" upstream",
        run_all(engine(store)?).await,
    );

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
        println!(
            "  {:<16} {:<14} {:<14} downloaded={:<5} playlists={}",
            p.text("Title"),
            p.text("Artist Name"),
            p.select("Genre").unwrap_or_default(),
            p.checkbox("Downloaded").unwrap_or(false),
            lists.join(", ")
        );
    }
    if ytdlp.is_some() {
        let mut files: Vec<String> = walk(&root.join("music"))
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap_or(&p).display().to_string())
            .collect();
        files.sort();
        println!("\n== {} files on disk", files.len());
        for f in files {
            println!("  {f}");
        }
    }
    println!(
        "\nState file: {}{}",
        StateStore::path_in(&cfg.state_dir).display(),
        if dir.is_some() {
            ""
        } else {
            " (a temporary directory, removed now; use --dir to keep it)"
        }
    );
    Ok(worst)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
