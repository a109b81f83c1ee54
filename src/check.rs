//! `playlistd check`: the pre-flight checks the old script never had. Every check prints one
//! line; a failure says what to fix. Nothing is written except a probe file in the download
//! folder, removed at once.

use crate::config::{self, Config};
use crate::exit::ExitCode;
use crate::notion::Notion;
use crate::paths::Paths;
use crate::source::Source;
use crate::source::soundcloud::SoundCloud;
use std::path::Path;

struct Checks {
    failed: usize,
}

impl Checks {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.failed += 1;
        println!("FAIL  {what}: {detail}");
    }
    fn warn(&self, what: &str, detail: impl std::fmt::Display) {
        println!("warn  {what}: {detail}");
    }
}

/// Free bytes on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// Creates the folder if needed and proves a file can be written there.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".playlistd-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

/// `playlistd check`: every check in turn, each independent of the others' outcome (only a
/// config that does not load stops the rest, since every other check reads it).
pub async fn run(paths: &Paths, state_dir: Option<&Path>) -> ExitCode {
    let mut c = Checks { failed: 0 };
    let mut cfg = match config::load(&paths.config_file, paths) {
        Ok(cfg) => {
            c.ok(
                "config",
                format!("{} ({} playlists)", cfg.path.display(), cfg.playlists.len()),
            );
            cfg
        }
        Err(e) => {
            c.fail("config", &e);
            return ExitCode::Config;
        }
    };
    if let Some(s) = state_dir {
        cfg.state_dir = s.to_path_buf();
    }
    check_state(&mut c, &cfg);
    check_notion(&mut c, &cfg).await;
    check_downloads(&mut c, &cfg).await;
    check_notify(&mut c, &cfg);
    check_playlists(&mut c, &cfg).await;

    if c.failed == 0 {
        println!("all checks passed");
        ExitCode::Ok
    } else {
        println!("{} check(s) failed", c.failed);
        ExitCode::Failed
    }
}

/// The state database opens (and says how many tracks it knows).
fn check_state(c: &mut Checks, cfg: &Config) {
    match crate::state::StateStore::load(&cfg.state_dir) {
        Ok((store, _)) => c.ok(
            "state",
            format!(
                "{} ({} tracks known)",
                cfg.state_dir.display(),
                store.state.tracks.len()
            ),
        ),
        Err(e) => c.fail("state", e),
    }
}

/// The notification targets' URLs read (shown as scheme and host only: they are secrets),
/// what is sent, and where `/healthz` and `/metrics` are served. Nothing is sent.
fn check_notify(c: &mut Checks, cfg: &Config) {
    let n = &cfg.notify;
    let mut shown = vec![];
    let targets = [
        ("webhook", &n.webhook),
        ("ntfy", &n.ntfy),
        ("healthchecks", &n.healthchecks),
    ];
    for (key, url) in targets {
        let Some(url) = url else { continue };
        match url.read(key) {
            Ok(u) => shown.push(format!("{key} {}", config::redact_url(&u))),
            Err(e) => c.fail("notifications", e),
        }
    }
    if !n.any_target() {
        c.ok(
            "notifications",
            "none configured (see [notify] in playlists.toml.example)",
        );
    } else if !shown.is_empty() {
        let events: Vec<&str> = [
            (n.events.new_tracks, "new_tracks"),
            (n.events.failures, "failures"),
            (n.events.alerts, "alerts"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        c.ok(
            "notifications",
            format!(
                "{}; events: {}; the daemon's digest at most every {} min",
                shown.join(", "),
                if events.is_empty() {
                    "none".to_string()
                } else {
                    events.join(", ")
                },
                n.digest.as_secs() / 60
            ),
        );
    }
    c.ok(
        "health server",
        match cfg.daemon.listen {
            Some(addr) => format!("the daemon serves http://{addr}/healthz and /metrics"),
            None => "off (set daemon.listen to serve /healthz and /metrics)".to_string(),
        },
    );
}

/// The token reads, Notion accepts it, and the database is shared and maps its properties.
async fn check_notion(c: &mut Checks, cfg: &Config) {
    match cfg.notion.token.read() {
        Err(e) => c.fail("Notion token", e),
        Ok(token) => match Notion::new(&cfg.notion, token) {
            Err(e) => c.fail("Notion client", e),
            Ok(notion) => {
                match notion.whoami().await {
                    Ok(me) => c.ok("Notion token", me),
                    Err(e) => c.fail("Notion token", e),
                }
                match notion.connect().await {
                    Ok(sink) => {
                        c.ok(
                            "Notion database",
                            format!("shared; data source {}", sink.data_source_id()),
                        );
                        println!("      {:<14} {:<28} type", "role", "property");
                        for (role, name, kind) in sink.mapping_table() {
                            println!("      {role:<14} {name:<28} {kind}");
                        }
                    }
                    Err(e) => c.fail("Notion database", e),
                }
            }
        },
    }
}

/// The download engine, yt-dlp where it is needed (optional under `engine = "auto"`), and the
/// download folder takes files, with room for about 100 tracks.
async fn check_downloads(c: &mut Checks, cfg: &Config) {
    if cfg.download.enabled {
        check_engine(c, cfg).await;
        c.ok("DJ library", library_line(&cfg.download.library));
        match probe_writable(&cfg.download.dir) {
            Ok(()) => {
                let free = free_space(&cfg.download.dir).unwrap_or(0);
                let gib = free as f64 / (1u64 << 30) as f64;
                let line = format!("{} is writable, {gib:.1} GiB free", cfg.download.dir.display());
                // About 10 MB a track at SoundCloud's bitrates: warn below room for 100.
                if free < 1_000_000_000 {
                    c.warn("download folder", format!("{line} (fix: free some space, or set download.dir elsewhere)"));
                } else {
                    c.ok("download folder", line);
                }
            }
            Err(e) => c.fail(
                "download folder",
                format!("{} is not writable: {e} (fix: create it with your user as owner, or set download.dir)", cfg.download.dir.display()),
            ),
        }
    } else {
        c.ok("downloads", "disabled in the config");
    }
}

/// Which engine fetches what, and whether yt-dlp is needed: by `engine = "yt-dlp"` and by
/// `source = "yt-dlp"` playlists it is; under `auto` it is the optional fallback.
async fn check_engine(c: &mut Checks, cfg: &Config) {
    use crate::config::{Engine, SourceKind};
    let d = &cfg.download;
    let ytdlp_lists = cfg.playlists.iter().any(|p| p.source == SourceKind::YtDlp);
    let needed = d.engine == Engine::YtDlp || ytdlp_lists;
    let engine = match d.engine {
        Engine::Auto => {
            "auto: native SoundCloud downloads, yt-dlp as the fallback for streams the native engine does not speak"
        }
        Engine::Native => "native: SoundCloud downloads without yt-dlp (no fallback)",
        Engine::YtDlp => "yt-dlp: every download runs yt-dlp",
    };
    c.ok(
        "download engine",
        format!("{engine}; prefers {}", prefer_name(d.prefer)),
    );
    match (crate::download::ytdlp_version(&d.ytdlp).await, needed, d.engine) {
        (Ok(v), _, _) => c.ok("yt-dlp", format!("{} version {v}", d.ytdlp.display())),
        (Err(e), true, _) => c.fail("yt-dlp", e),
        (Err(_), false, Engine::Native) => c.ok("yt-dlp", "not used (download.engine = \"native\")"),
        (Err(_), false, _) => c.ok(
            "yt-dlp",
            format!("{} not found; optional: only a stream layout the native engine does not speak needs it", d.ytdlp.display()),
        ),
    }
    if !d.extra_args.is_empty() && d.engine != Engine::YtDlp {
        c.warn(
            "download.extra_args",
            "set, but the native engine does not use them: they apply to yt-dlp runs only (fix: set download.engine = \"yt-dlp\" if every download needs them)",
        );
    }
}

/// What is made of each download: the analysis and the copies.
fn library_line(lib: &crate::config::LibraryConfig) -> String {
    let analysis = if lib.analyze {
        format!(
            "tempo ({}-{} BPM) and key measured",
            lib.tempo_range.0, lib.tempo_range.1
        )
    } else {
        "no analysis (download.analyze = false)".to_string()
    };
    let copies: Vec<&str> = lib.copies().map(crate::config::Format::as_str).collect();
    let copies = if copies.is_empty() {
        "no copies".to_string()
    } else {
        let rate = lib
            .sample_rate
            .map_or("the source rate".to_string(), |r| format!("{r} Hz"));
        format!(
            "{} copies at {} bits, {rate}",
            copies.join(" and "),
            lib.pcm_bits
        )
    };
    format!(
        "{analysis}; {copies}; playlist files list the {} files",
        lib.listed().as_str()
    )
}

fn prefer_name(p: crate::config::Prefer) -> &'static str {
    match p {
        crate::config::Prefer::Aac => "AAC (download.prefer = \"aac\")",
        crate::config::Prefer::Mp3 => "MP3 where listed (download.prefer = \"mp3\")",
    }
}

/// Every playlist lists (through SoundCloud's API or yt-dlp, as configured).
async fn check_playlists(c: &mut Checks, cfg: &Config) {
    let source = Source::new(
        SoundCloud::new(&cfg.soundcloud, &cfg.cache_dir),
        &cfg.download,
    );
    for pl in &cfg.playlists {
        let what = format!("playlist {:?}", pl.name);
        let listing = source.list(pl.source, &pl.url).await;
        match listing {
            Ok(l) => {
                let unavailable = l.tracks.iter().filter(|t| t.unavailable.is_some()).count();
                let mut line = format!(
                    "{:?}, {} tracks ({unavailable} unavailable)",
                    l.title,
                    l.tracks.len()
                );
                if !l.complete {
                    line.push_str(&format!(
                        "; listing incomplete: {}",
                        l.incomplete_reason.as_deref().unwrap_or("unknown")
                    ));
                }
                c.ok(&what, line);
            }
            Err(e) => c.fail(&what, e),
        }
    }
}
