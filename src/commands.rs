//! The subcommands behind `main.rs`: each turns a library outcome into lines for a person and
//! an exit code. Errors from the library arrive typed; here they become one line with the fix.
//!
//! Invariant: nothing printed here contains the Notion token (it only ever lives in a
//! `Secret`, whose `Display` and `Debug` are redacted).

use crate::config::{self, Config, PlaylistConfig};
pub use crate::exit::ExitCode;
use crate::notify::{self, RunTell};
use crate::paths::Paths;
use crate::report::ProblemKind;
use crate::report::{RunReport, write_results_file};
use crate::source::short_link::ShortLinkError;
use crate::state::{LoadOutcome, StateError, StateLock, StateStore};
use crate::sync::{Engine, Event, SyncError, SyncOptions, WireError, Wiring, wire};
use chrono::{Local, Utc};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options that apply to every subcommand.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub verbose: u8,
}

impl Global {
    fn paths(&self) -> Paths {
        let mut p = Paths::discover();
        if let Some(c) = &self.config {
            p.config_file = c.clone();
        }
        if let Some(s) = &self.state_dir {
            p.state_dir = s.clone();
        }
        p
    }

    fn load(&self) -> Result<Config, ExitCode> {
        let paths = self.paths();
        let mut cfg = config::load(&paths.config_file, &paths).map_err(|e| {
            eprintln!("playlistd: {e}");
            ExitCode::Config
        })?;
        if let Some(s) = &self.state_dir {
            cfg.state_dir = s.clone();
        }
        Ok(cfg)
    }
}

/// Logs go to stderr (journald under systemd): no colour unless stderr is a terminal.
/// Only playlistd's own targets are verbose, so HTTP internals never print headers.
pub fn init_logging(verbose: u8) -> Option<()> {
    use tracing_subscriber::EnvFilter;
    // On a terminal the report goes to stdout and a progress bar to stderr, so info lines
    // would only repeat them; under cron or a pipe they are the progress.
    let quiet = std::io::stderr().is_terminal();
    let level = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let default = crate::logging::filter_directives(level, None);
    let filter =
        EnvFilter::try_from_env("PLAYLISTD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init()
        .ok()
}

/// The playlists a `sync` names: by name or URL from the config. A SoundCloud playlist URL
/// that the config does not list is synced once, as the one-shot script did (the second
/// element says which ones those are).
fn select(cfg: &Config, names: &[String]) -> Result<(Vec<PlaylistConfig>, Vec<String>), ExitCode> {
    if names.is_empty() {
        if cfg.playlists.is_empty() {
            eprintln!(
                "playlistd: {} lists no playlists (fix: add a [[playlist]] with a name and url)",
                cfg.path.display()
            );
            return Err(ExitCode::Config);
        }
        return Ok((cfg.playlists.clone(), vec![]));
    }
    let mut selected = vec![];
    let mut ad_hoc = vec![];
    for n in names {
        if let Some(p) = cfg.playlist(n) {
            selected.push(p.clone());
            continue;
        }
        let url = url::Url::parse(n.trim())
            .ok()
            .filter(|u| config::is_soundcloud_set_url(u, &cfg.soundcloud.web_base));
        match (url, crate::edit::derive_name(n)) {
            (Some(url), Some(name)) => {
                ad_hoc.push(name.clone());
                selected.push(PlaylistConfig {
                    name,
                    url,
                    schedule: cfg.default_schedule.clone(),
                    download: true,
                    max_tracks: None,
                    source: config::SourceKind::SoundCloud,
                    dir: None,
                    removed: config::RemovedPolicy::Keep,
                });
            }
            _ => {
                let known: Vec<&str> = cfg.playlists.iter().map(|p| p.name.as_str()).collect();
                eprintln!(
                    "playlistd: no playlist named {n:?} in {} (fix: use one of {known:?}, a SoundCloud playlist URL, or add it to the file)",
                    cfg.path.display()
                );
                return Err(ExitCode::Config);
            }
        }
    }
    Ok((selected, ad_hoc))
}

fn open_state(dir: &Path) -> Result<StateStore, ExitCode> {
    match StateStore::load(dir) {
        Ok((store, outcome)) => {
            if let LoadOutcome::Imported(json) = outcome {
                tracing::info!(
                    "imported {} into {}; the JSON files are kept beside it as *.migrated",
                    json.display(),
                    StateStore::path_in(dir).display()
                );
            }
            Ok(store)
        }
        Err(e) => {
            eprintln!("playlistd: {e}");
            Err(ExitCode::Failed)
        }
    }
}

/// Ctrl-C stops starting work; what is in flight finishes and the state is saved.
fn cancel_on_ctrl_c(engine: &Engine) {
    let cancel = engine.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping after the steps in flight, saving the state");
            cancel.cancel();
        }
    });
}

fn lock_state(dir: &Path) -> Result<StateLock, ExitCode> {
    StateLock::acquire(dir).map_err(|e| {
        eprintln!("playlistd: {e}");
        match e {
            StateError::Locked { .. } => ExitCode::Locked,
            _ => ExitCode::Failed,
        }
    })
}

/// A progress bar on a terminal, plain log lines otherwise.
fn observer() -> crate::sync::Observer {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Arc::new(move |e: &Event| match e {
            Event::Listed {
                playlist,
                tracks,
                notion_work,
                download_work,
            } => {
                bar.reset();
                bar.set_prefix(playlist.clone());
                bar.set_length((notion_work + download_work) as u64);
                bar.set_message(format!("{tracks} tracks listed"));
            }
            Event::NotionStep { title, .. } => {
                bar.inc(1);
                bar.set_message(format!("Notion: {}", crate::report::printable(title)));
            }
            Event::DownloadStep { title, .. } => {
                bar.inc(1);
                bar.set_message(format!("downloaded: {}", crate::report::printable(title)));
                if bar.position() >= bar.length().unwrap_or(0) {
                    bar.finish_and_clear();
                }
            }
        })
    } else {
        Arc::new(|e: &Event| match e {
            Event::Listed {
                playlist,
                tracks,
                notion_work,
                download_work,
            } => tracing::info!(
                "{playlist}: {tracks} tracks listed, {notion_work} for Notion, {download_work} to download"
            ),
            Event::NotionStep { title, .. } => tracing::debug!("notion: {title:?}"),
            Event::DownloadStep { title, ok, .. } => {
                tracing::debug!(
                    "download {}: {title:?}",
                    if *ok { "done" } else { "failed" }
                )
            }
        })
    }
}

/// `playlistd sync`.
pub async fn sync(
    g: &Global,
    names: &[String],
    opts: SyncOptions,
    results_file: Option<&Path>,
) -> ExitCode {
    let cfg = match g.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (selected, ad_hoc) = match select(&cfg, names) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for name in &ad_hoc {
        eprintln!(
            "playlistd: {name:?} is not in {}: syncing it once (run `playlistd add <url>` to keep it synced)",
            cfg.path.display()
        );
    }
    // A running daemon owns the state: ask it to sync instead of fighting over the file.
    // (It only knows the config's playlists; a one-off URL then meets its lock below.)
    if !opts.dry_run
        && ad_hoc.is_empty()
        && let Some(code) = sync_through_daemon(&cfg, &selected, &opts, results_file).await
    {
        return code;
    }
    // A dry run writes nothing, so it needs no lock and may run beside a daemon.
    let _lock = if opts.dry_run {
        None
    } else {
        match lock_state(&cfg.state_dir) {
            Ok(l) => Some(l),
            Err(code) => return code,
        }
    };
    let store = match open_state(&cfg.state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let wiring = Wiring {
        dry_run: opts.dry_run,
        ..Wiring::new(store)
    };
    let store = wiring.store.clone();
    let cfg = Arc::new(cfg);
    let engine = match wire::engine(cfg.clone(), wiring) {
        Ok(e) => e.with_observer(observer()),
        Err(e) => {
            eprintln!("playlistd: {e}");
            if let (WireError::Token(_), false) = (&e, opts.dry_run) {
                notify::alert_at_start(
                    &cfg.notify,
                    &store,
                    ProblemKind::NotionToken,
                    &e.to_string(),
                )
                .await;
            }
            return ExitCode::Config;
        }
    };
    cancel_on_ctrl_c(&engine);
    let mut tell = match RunTell::start(&engine.config.notify, engine.store(), opts.dry_run) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Config;
        }
    };
    if !opts.dry_run
        && let Some(r) = engine.recheck_notion().await
    {
        tell.probe(&r);
    }
    let (reports, code) = sync_each(&engine, &selected, &opts, &mut tell).await;
    let code = finish_run(&engine, &opts, results_file, &reports, code);
    tell.finish(&reports, code == ExitCode::Ok).await;
    code
}

/// Syncs the playlists one after another, printing each report as it comes; stops early on a
/// cancel or on an error that every playlist would meet.
async fn sync_each(
    engine: &Engine,
    selected: &[PlaylistConfig],
    opts: &SyncOptions,
    tell: &mut RunTell,
) -> (Vec<RunReport>, ExitCode) {
    let mut reports: Vec<RunReport> = vec![];
    let mut code = ExitCode::Ok;
    for pl in selected {
        let (report, result) = engine.sync(pl, opts).await;
        tell.report(&report);
        for line in report.details() {
            println!("{line}");
        }
        println!("{}", report.summary_line());
        match result {
            Ok(()) if !report.ok() => code = code.max_with(ExitCode::TracksFailed),
            Ok(()) => {}
            Err(SyncError::Cancelled) => {
                reports.push(report);
                code = ExitCode::Interrupted;
                break;
            }
            Err(e) => {
                eprintln!("playlistd: {}: {e}", pl.name);
                code = code.max_with(ExitCode::Failed);
                if matches!(&e, SyncError::Notion(n) if n.is_fatal())
                    || matches!(e, SyncError::State(_))
                {
                    // The same token and database serve every playlist: no point going on.
                    reports.push(report);
                    break;
                }
            }
        }
        reports.push(report);
    }
    (reports, code)
}

/// After the syncs: the state compacted (a real run only) and the results file written.
fn finish_run(
    engine: &Engine,
    opts: &SyncOptions,
    results_file: Option<&Path>,
    reports: &[RunReport],
    mut code: ExitCode,
) -> ExitCode {
    if !opts.dry_run
        && let Err(e) = engine.compact()
    {
        eprintln!("playlistd: {e}");
        code = code.max_with(ExitCode::Failed);
    }
    if let Some(path) = results_file
        && (!opts.dry_run || path.as_os_str() != "-")
        && let Err(e) = write_results_file(path, reports)
    {
        eprintln!(
            "playlistd: cannot write the results file {}: {e} (fix: choose a writable path)",
            path.display()
        );
        code = code.max_with(ExitCode::Failed);
    }
    code
}

/// `sync` through a running daemon: `None` when there is none (the caller syncs itself).
async fn sync_through_daemon(
    cfg: &Config,
    selected: &[PlaylistConfig],
    opts: &SyncOptions,
    results_file: Option<&Path>,
) -> Option<ExitCode> {
    let req = crate::control::Request::Sync {
        playlists: selected.iter().map(|p| p.name.clone()).collect(),
        max_tracks: opts.max_tracks,
        no_download: opts.no_download,
    };
    let asked = crate::control::request(&cfg.state_dir, &req, |reply| match reply {
        crate::control::Reply::Playlist {
            details,
            summary,
            error,
            name,
            ..
        } => {
            for line in details {
                println!("{line}");
            }
            println!("{summary}");
            if let Some(e) = error {
                eprintln!("playlistd: {name}: {e}");
            }
        }
        crate::control::Reply::Message { text } => println!("{text}"),
        crate::control::Reply::Error { message } => eprintln!("playlistd: {message}"),
        crate::control::Reply::Done { .. } => {}
    })
    .await;
    match asked {
        Some(Ok(code)) => {
            tracing::debug!("synced through the running daemon");
            if results_file.is_some() {
                eprintln!(
                    "playlistd: note: --results-file is not written when the daemon runs the sync; see `playlistd status --json`"
                );
            }
            Some(match code {
                0 => ExitCode::Ok,
                1 => ExitCode::TracksFailed,
                2 => ExitCode::Config,
                _ => ExitCode::Failed,
            })
        }
        Some(Err(e)) => {
            eprintln!(
                "playlistd: the running daemon did not answer: {e} (fix: check `playlistd status` and the daemon's log)"
            );
            Some(ExitCode::Failed)
        }
        None => None,
    }
}

impl ExitCode {
    fn max_with(self, other: ExitCode) -> ExitCode {
        if (other as u8) > (self as u8) {
            other
        } else {
            self
        }
    }
}

/// `playlistd status`.
pub fn status(g: &Global, only: Option<&str>, json: bool) -> ExitCode {
    let cfg = match g.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_state(&cfg.state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rows = match crate::status::collect(&cfg, &store.state, Utc::now()) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Failed;
        }
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| only.is_none_or(|o| r.name == o))
        .collect();
    if let Some(o) = only
        && rows.is_empty()
    {
        eprintln!("playlistd: no playlist named {o:?} (fix: see `playlistd status` for the names)");
        return ExitCode::Config;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("status serializes")
        );
    } else {
        // What a person must fix comes first (`/healthz` has the same as JSON).
        for (kind, a) in &store.state.alerts {
            let title =
                crate::report::ProblemKind::parse(kind).map_or(kind.as_str(), |k| k.title());
            println!(
                "open alert since {}: {title}: {}",
                a.since.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
                a.detail
            );
        }
        for r in &rows {
            println!("{}", r.render(&Local));
        }
    }
    ExitCode::Ok
}

/// `playlistd retry`: through the running daemon when there is one (it owns the state).
pub async fn retry(g: &Global, names: &[String]) -> ExitCode {
    let cfg = match g.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = crate::control::Request::Retry {
        playlists: names.to_vec(),
    };
    let asked = crate::control::request(&cfg.state_dir, &req, |reply| match reply {
        crate::control::Reply::Message { text } => println!("{text}"),
        crate::control::Reply::Error { message } => eprintln!("playlistd: {message}"),
        _ => {}
    })
    .await;
    match asked {
        Some(Ok(0)) => return ExitCode::Ok,
        Some(Ok(_)) => return ExitCode::Config,
        Some(Err(e)) => {
            eprintln!(
                "playlistd: the running daemon did not answer: {e} (fix: check `playlistd status` and the daemon's log)"
            );
            return ExitCode::Failed;
        }
        None => {}
    }
    let _lock = match lock_state(&cfg.state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut store = match open_state(&cfg.state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let n = match store.retry(names) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Failed;
        }
    };
    println!("{n} failed step(s) will be retried on the next sync");
    ExitCode::Ok
}

/// `playlistd analyze`: tempo, key, copies, tags and Notion for files downloaded earlier.
pub async fn analyze(g: &Global, names: &[String]) -> ExitCode {
    let cfg = match g.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (selected, ad_hoc) = match select(&cfg, names) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(name) = ad_hoc.first() {
        eprintln!(
            "playlistd: {name:?} is not in {} (fix: analyze a playlist of the config, by name or URL; `playlistd status` lists them)",
            cfg.path.display()
        );
        return ExitCode::Config;
    }
    let _lock = match lock_state(&cfg.state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let store = match open_state(&cfg.state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let engine = match wire::engine(Arc::new(cfg), Wiring::new(store)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Config;
        }
    };
    cancel_on_ctrl_c(&engine);
    let mut code = ExitCode::Ok;
    for pl in &selected {
        // Hidden when stderr is not a terminal.
        let bar = indicatif::ProgressBar::new(0).with_prefix(pl.name.clone());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        let progress = |step: crate::sync::BackfillStep<'_>| match step {
            crate::sync::BackfillStep::Planned(n) => bar.set_length(n as u64),
            crate::sync::BackfillStep::Done(title) => {
                bar.inc(1);
                bar.set_message(crate::report::printable(title).to_string());
            }
        };
        let result = engine.backfill(pl, &progress).await;
        bar.finish_and_clear();
        match result {
            Ok(r) => {
                for (title, e) in &r.failed {
                    println!("  failed: {}: {e}", crate::report::printable(title));
                }
                println!("{}", r.summary_line());
                if !r.failed.is_empty() {
                    code = code.max_with(ExitCode::TracksFailed);
                }
            }
            Err(SyncError::Cancelled) => return ExitCode::Interrupted,
            Err(e) => {
                eprintln!("playlistd: {}: {e}", pl.name);
                code = code.max_with(ExitCode::Failed);
            }
        }
    }
    if let Err(e) = engine.compact() {
        eprintln!("playlistd: {e}");
        code = code.max_with(ExitCode::Failed);
    }
    code
}

/// `playlistd check`.
pub async fn check(g: &Global) -> ExitCode {
    crate::check::run(&g.paths(), g.state_dir.as_deref()).await
}

/// `playlistd run`.
pub async fn run(g: &Global) -> ExitCode {
    crate::daemon::run(g.paths(), g.state_dir.clone()).await
}

/// `playlistd add`: edits the file in place (comments kept), validates the result, and
/// replaces the file atomically so a running daemon reloads one complete file. An
/// `on.soundcloud.com` short link is resolved first (one request), so the file holds the
/// playlist's own URL.
pub async fn add(g: &Global, url: &str, name: Option<&str>, schedule: Option<&str>) -> ExitCode {
    let short = url::Url::parse(url.trim())
        .ok()
        .filter(crate::source::short_link::is_short_link);
    let resolved = match short {
        None => url.to_string(),
        Some(link) => {
            let cfg = match g.load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::source::short_link::resolve(&cfg.soundcloud, &link).await {
                Ok(u) => {
                    println!("{link} leads to {u}");
                    u
                }
                Err(e) => {
                    eprintln!("playlistd: {e}");
                    return match e {
                        ShortLinkError::Dead { .. } => ExitCode::Config,
                        ShortLinkError::Unreachable { .. } => ExitCode::Failed,
                    };
                }
            }
        }
    };
    edit_config(g, |text| {
        crate::edit::add_playlist(text, &resolved, name, schedule).map_err(|e| e.to_string())
    })
}

/// `playlistd remove`: the playlist's state is kept; its files and pages are untouched.
pub fn remove(g: &Global, name: &str) -> ExitCode {
    edit_config(g, |text| {
        crate::edit::remove_playlist(text, name).map_err(|e| e.to_string())
    })
}

fn edit_config(g: &Global, change: impl FnOnce(&str) -> Result<String, String>) -> ExitCode {
    let paths = g.paths();
    let path = &paths.config_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "playlistd: cannot read {}: {e} (fix: create it from playlists.toml.example, or pass --config)",
                path.display()
            );
            return ExitCode::Config;
        }
    };
    let new = match change(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Config;
        }
    };
    if let Err(e) = config::parse(&new, path, &paths) {
        eprintln!("playlistd: the edited file would not be valid, nothing was written: {e}");
        return ExitCode::Config;
    }
    if let Err(e) = crate::edit::write_config_atomically(path, &new) {
        eprintln!("playlistd: {e}");
        return ExitCode::Failed;
    }
    println!(
        "updated {} (a running daemon picks it up by itself)",
        path.display()
    );
    ExitCode::Ok
}

/// `playlistd service install|uninstall`.
pub fn service(g: &Global, install: bool) -> ExitCode {
    use crate::service::{Platform, install as do_install, uninstall};
    let Some(platform) = Platform::current() else {
        eprintln!(
            "playlistd: no service manager known for this platform (fix: run `playlistd run` under your own supervisor)"
        );
        return ExitCode::Failed;
    };
    let Some(home) = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf()) else {
        eprintln!("playlistd: cannot find the home directory (fix: set HOME)");
        return ExitCode::Failed;
    };
    if install {
        let bin = match std::env::current_exe() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("playlistd: cannot find this binary's path: {e}");
                return ExitCode::Failed;
            }
        };
        match do_install(platform, &bin, &home, &g.paths().config_file) {
            Ok(out) => {
                println!("wrote {}", out.path.display());
                if let Some(note) = out.note {
                    println!("{note}");
                }
                println!("enable it with:\n  {}", out.enable_command);
                ExitCode::Ok
            }
            Err(e) => {
                eprintln!("playlistd: {e}");
                ExitCode::Failed
            }
        }
    } else {
        match uninstall(platform, &home) {
            Ok(out) => {
                if out.removed.is_empty() {
                    println!("no service file was installed");
                } else {
                    for p in &out.removed {
                        println!("removed {}", p.display());
                    }
                }
                println!("stop it with:\n  {}", out.stop_command);
                ExitCode::Ok
            }
            Err(e) => {
                eprintln!("playlistd: {e}");
                ExitCode::Failed
            }
        }
    }
}

/// `playlistd demo`.
pub async fn demo(dir: Option<&Path>) -> ExitCode {
    crate::demo::run(dir).await
}
