//! `playlistd run`: the sync engine on a schedule, for months, edited only through
//! `playlists.toml`.
//!
//! Invariants:
//! - One daemon per state directory: it holds the state lock for its whole life.
//! - A playlist never syncs twice at once; a slot that comes while it runs is skipped and
//!   logged. At most `daemon.max_concurrent_syncs` syncs run together, sharing one Notion
//!   limiter, one download pool and one state.
//! - A config save that does not parse changes nothing: the error is logged with its line and
//!   column and the running config stays. A good one is applied as a difference.
//! - SIGTERM/SIGINT: no new work, running syncs stop their downloads (yt-dlp children are
//!   killed, partial files removed) and finish the Notion requests in flight, the state is
//!   saved, exit 0 within 10 s. A second signal exits at once; the state database is whole anyway
//!   because every save is one SQLite transaction.

use crate::config::{self, Changes, Config, PlaylistConfig};
use crate::control::{self, Reply, Request};
use crate::exit::ExitCode;
use crate::logging::{self, LogOptions};
use crate::paths::Paths;
use crate::report::RunReport;
use crate::schedule::{SystemClock, Ticker, run_schedule};
use crate::state::{LoadOutcome, StateError, StateLock, StateStore};
use crate::sync::{Engine, SyncOptions, Wiring, wire};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for running syncs before abandoning them (the budget is 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Why a sync was asked for; shown in the log.
#[derive(Debug, Clone)]
enum Why {
    Slot { catch_up: bool },
    Added,
    Request,
}

struct Trigger {
    name: String,
    why: Why,
    opts: SyncOptions,
    reply: Option<mpsc::UnboundedSender<Reply>>,
}

enum Control {
    Sync {
        req: Request,
        reply: mpsc::UnboundedSender<Reply>,
    },
}

type Finished = (String, RunReport, Result<(), String>);

struct Daemon {
    paths: Paths,
    config: Arc<Config>,
    engine: Arc<Engine>,
    store: Arc<Mutex<StateStore>>,
    root: CancellationToken,
    tickers: HashMap<String, CancellationToken>,
    /// Running syncs, with whoever waits for their outcome.
    in_flight: HashMap<String, Vec<mpsc::UnboundedSender<Reply>>>,
    triggers: mpsc::UnboundedSender<Trigger>,
    syncs: JoinSet<Finished>,
    permits: Arc<Semaphore>,
    permits_total: usize,
}

fn token_error(e: impl std::fmt::Display) -> String {
    format!("cannot start the Notion client: {e}")
}

fn build_engine(
    cfg: &Arc<Config>,
    store: &Arc<Mutex<StateStore>>,
    root: &CancellationToken,
    limiter: Option<Arc<crate::notion::RateLimiter>>,
) -> Result<Engine, String> {
    let wiring = Wiring {
        store: store.clone(),
        cancel: root.child_token(),
        limiter,
        dry_run: false,
        fast_retries: false,
    };
    wire::engine(cfg.clone(), wiring).map_err(token_error)
}

fn reply_for(name: &str, report: &RunReport, result: &Result<(), String>) -> Reply {
    Reply::Playlist {
        name: name.to_string(),
        ok: result.is_ok() && report.ok(),
        details: report.details(),
        summary: report.summary_line(),
        error: result.clone().err(),
    }
}

impl Daemon {
    fn spawn_ticker(&mut self, pl: &PlaylistConfig, catch_up: bool) {
        let token = self.root.child_token();
        if let Some(old) = self.tickers.insert(pl.name.clone(), token.clone()) {
            old.cancel();
        }
        let last_success = if catch_up {
            let store = self.store.lock().expect("state lock");
            Some(
                store
                    .state
                    .playlists
                    .get(&pl.name)
                    .and_then(|p| p.last_success),
            )
        } else {
            None
        };
        let mut ticker = Ticker::new(
            pl.schedule.cron.clone(),
            self.config.daemon.zone,
            SystemClock,
        );
        if let Some(last) = last_success {
            ticker = ticker.with_catch_up(last);
        }
        let tx = self.triggers.clone();
        let name = pl.name.clone();
        tokio::spawn(run_schedule(ticker, token, move |tick| {
            let _ = tx.send(Trigger {
                name: name.clone(),
                why: Why::Slot {
                    catch_up: tick.catch_up,
                },
                opts: SyncOptions::default(),
                reply: None,
            });
        }));
    }

    fn dispatch(&mut self, t: Trigger) {
        let Some(at) = self.config.playlists.iter().position(|p| p.name == t.name) else {
            if let Some(r) = t.reply {
                let _ = r.send(Reply::Error {
                    message: format!("no playlist named {:?}", t.name),
                });
            }
            return;
        };
        let pl = &self.config.playlists[at];
        if let Some(waiters) = self.in_flight.get_mut(&pl.name) {
            match t.reply {
                // Someone asked for it: they get the outcome of the sync already running.
                Some(r) => waiters.push(r),
                None => tracing::info!(
                    "{:?}: slot skipped, the previous sync is still running",
                    pl.name
                ),
            }
            return;
        }
        tracing::info!(
            "{:?}: sync starting ({})",
            pl.name,
            match t.why {
                Why::Slot { catch_up: true } => "catch-up after downtime",
                Why::Slot { catch_up: false } => "scheduled",
                Why::Added => "new in the config",
                Why::Request => "requested",
            }
        );
        let name = pl.name.clone();
        self.in_flight
            .insert(name.clone(), t.reply.into_iter().collect());
        // A sync waiting for its permit holds only handles: the config it was dispatched from
        // (not a copy of its playlist) and no sync future yet (8.5 KiB), which is boxed once
        // the permit is there. At start-up every
        // playlist due for a catch-up waits here at once; 100 full-size waiting tasks were
        // 1.4 MiB of heap, freed as they ran but, interleaved with what the syncs kept, left
        // in the allocator (B4 in BENCHMARKS.md).
        let engine = self.engine.clone();
        let permits = self.permits.clone();
        let config = self.config.clone();
        let opts = t.opts;
        self.syncs.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (report, result) = Box::pin(engine.sync(&config.playlists[at], &opts)).await;
            (name, report, result.map_err(|e| e.to_string()))
        });
    }

    fn finished(&mut self, f: Finished) {
        let (name, report, result) = f;
        let reply = reply_for(&name, &report, &result);
        for w in self.in_flight.remove(&name).unwrap_or_default() {
            let _ = w.send(reply.clone());
        }
        if let Err(e) = &result {
            tracing::error!("{name:?}: sync failed: {e}");
        }
        let added = report.created.len() + report.adopted.len() + report.downloaded.len();
        if let (Some(cmd), true) = (
            self.config.daemon.after_sync.clone(),
            added > 0 && !report.dry_run,
        ) {
            let dir = self.config.state_dir.join("reports");
            let timeout = self.config.daemon.hook_timeout;
            tokio::spawn(run_hook(cmd, report, dir, timeout));
        }
    }

    /// Applies a new config text as a difference from the running one ([`config::diff`]); on
    /// any error the running config stays.
    fn reload(&mut self, text: &str) {
        let mut new = match config::parse(text, &self.config.path, &self.paths) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config not reloaded, the running one stays: {e}");
                return;
            }
        };
        let changes = config::diff(&self.config, &new);
        if changes.state_dir {
            tracing::warn!(
                "paths.state_dir changed: that takes a restart; the running daemon keeps {}",
                self.config.state_dir.display()
            );
            new.state_dir = self.config.state_dir.clone();
        }
        let new = Arc::new(new);
        let mut engine = None;
        if changes.clients() {
            // Keep the limiter when the budget is unchanged, so old and new clients share it.
            let limiter = (!changes.notion_budget)
                .then(|| self.engine.notion_limiter())
                .flatten();
            match build_engine(&new, &self.store, &self.root, limiter) {
                Ok(e) => engine = Some(Arc::new(e)),
                Err(e) => {
                    tracing::error!("config not reloaded, the running one stays: {e}");
                    return;
                }
            }
        }

        self.config = new.clone();
        if let Some(e) = engine {
            self.engine = e;
        }
        if changes.daemon {
            self.resize_pool(new.daemon.max_concurrent_syncs);
        }
        self.restart_tickers(&changes, &new);
        if changes.log {
            tracing::warn!("log settings changed: they apply after a restart");
        }
        tracing::info!(
            "reloaded {}: {changes}{}",
            new.path.display(),
            if changes.clients() {
                "; Notion/SoundCloud/download clients rebuilt"
            } else {
                ""
            }
        );
    }

    /// Lets `wanted` syncs run at once from now on; running ones keep their permits.
    fn resize_pool(&mut self, wanted: usize) {
        if wanted > self.permits_total {
            self.permits.add_permits(wanted - self.permits_total);
        } else if wanted < self.permits_total {
            self.permits.forget_permits(self.permits_total - wanted);
        }
        self.permits_total = wanted;
    }

    /// Stops the tickers of removed playlists, starts (and syncs at once) added ones, and
    /// starts again the tickers of playlists whose timing may have changed.
    fn restart_tickers(&mut self, changes: &Changes, new: &Config) {
        for name in &changes.removed {
            if let Some(t) = self.tickers.remove(name) {
                t.cancel();
            }
        }
        for pl in &new.playlists {
            if changes.added.contains(&pl.name) {
                self.spawn_ticker(pl, false);
                let _ = self.triggers.send(Trigger {
                    name: pl.name.clone(),
                    why: Why::Added,
                    opts: SyncOptions::default(),
                    reply: None,
                });
            } else if changes.retimes(&pl.name) {
                self.spawn_ticker(pl, false);
            }
        }
    }

    fn control(&mut self, c: Control) {
        let Control::Sync { req, reply } = c;
        let (playlists, max_tracks, no_download) = match req {
            Request::Sync {
                playlists,
                max_tracks,
                no_download,
            } => (playlists, max_tracks, no_download),
            Request::Retry { playlists } => {
                // The daemon holds the state: it clears the backoff itself and saves.
                let mut store = self.store.lock().expect("state lock");
                let text = match store.retry(&playlists) {
                    Ok(n) => format!("{n} failed step(s) will be retried on the next sync"),
                    Err(e) => format!("could not save the state: {e}"),
                };
                let _ = reply.send(Reply::Message { text });
                return;
            }
        };
        let selected: Result<Vec<String>, String> = if playlists.is_empty() {
            Ok(self
                .config
                .playlists
                .iter()
                .map(|p| p.name.clone())
                .collect())
        } else {
            playlists
                .iter()
                .map(|n| {
                    self.config
                        .playlist(n)
                        .map(|p| p.name.clone())
                        .ok_or_else(|| n.clone())
                })
                .collect()
        };
        match selected {
            Err(unknown) => {
                let known: Vec<&str> = self
                    .config
                    .playlists
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                let _ = reply.send(Reply::Error {
                    message: format!(
                        "no playlist named {unknown:?} in {} (fix: use one of {known:?}, or add it with `playlistd add`)",
                        self.config.path.display()
                    ),
                });
            }
            Ok(names) => {
                for name in names {
                    self.dispatch(Trigger {
                        name,
                        why: Why::Request,
                        opts: SyncOptions {
                            dry_run: false,
                            max_tracks,
                            no_download,
                        },
                        reply: Some(reply.clone()),
                    });
                }
            }
        }
    }
}

/// Serves one client of the control socket.
async fn serve_client(stream: UnixStream, controls: mpsc::UnboundedSender<Control>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let send = |r: &Reply| {
        let mut s = serde_json::to_string(r).expect("reply serializes");
        s.push('\n');
        s
    };
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = write
                .write_all(
                    send(&Reply::Error {
                        message: format!("bad request: {e}"),
                    })
                    .as_bytes(),
                )
                .await;
            return;
        }
    };
    let expected = match &req {
        Request::Sync { playlists, .. } => playlists.len(),
        Request::Retry { .. } => 0,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    if controls.send(Control::Sync { req, reply: tx }).is_err() {
        let _ = write
            .write_all(
                send(&Reply::Error {
                    message: "the daemon is shutting down".into(),
                })
                .as_bytes(),
            )
            .await;
        return;
    }
    let mut code = 0u8;
    let mut seen = 0usize;
    while let Some(reply) = rx.recv().await {
        let done = match &reply {
            Reply::Playlist { ok, error, .. } => {
                seen += 1;
                code = code.max(if error.is_some() {
                    3
                } else if *ok {
                    0
                } else {
                    1
                });
                expected > 0 && seen >= expected
            }
            Reply::Message { .. } => false,
            Reply::Error { .. } => true,
            Reply::Done { .. } => true,
        };
        if write.write_all(send(&reply).as_bytes()).await.is_err() {
            return;
        }
        if done {
            break;
        }
    }
    // With no names, every playlist was asked for: the channel closes when all have answered.
    let _ = write
        .write_all(send(&Reply::Done { code }).as_bytes())
        .await;
}

/// Runs the user's after-sync command with the outcome in its environment.
async fn run_hook(cmd: Vec<String>, report: RunReport, dir: PathBuf, timeout: Duration) {
    let file = dir.join(format!(
        "{}.json",
        crate::download::sanitize_component(&report.playlist)
    ));
    if let Err(e) = crate::report::write_results_file(&file, std::slice::from_ref(&report)) {
        tracing::warn!(
            "after_sync: cannot write the run report {}: {e}",
            file.display()
        );
    }
    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .env("PLAYLISTD_PLAYLIST", &report.playlist)
        .env("PLAYLISTD_PLAYLIST_URL", &report.url)
        .env("PLAYLISTD_CREATED", report.created.len().to_string())
        .env("PLAYLISTD_ADOPTED", report.adopted.len().to_string())
        .env("PLAYLISTD_DOWNLOADED", report.downloaded.len().to_string())
        .env("PLAYLISTD_FAILED", report.failed.len().to_string())
        .env("PLAYLISTD_REPORT", &file)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "after_sync: cannot run {:?}: {e} (fix: check daemon.after_sync)",
                cmd[0]
            );
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!("after_sync for {:?} finished", report.playlist)
        }
        Ok(Ok(out)) => tracing::warn!(
            "after_sync for {:?} exited with {}",
            report.playlist,
            out.status
        ),
        Ok(Err(e)) => tracing::error!("after_sync for {:?} failed: {e}", report.playlist),
        Err(_) => tracing::error!(
            "after_sync for {:?} killed after {}s",
            report.playlist,
            timeout.as_secs()
        ),
    }
}

/// `playlistd run`.
pub async fn run(paths: Paths, state_dir: Option<PathBuf>) -> ExitCode {
    let cfg = match config::load(&paths.config_file, &paths) {
        Ok(mut c) => {
            if let Some(s) = &state_dir {
                c.state_dir = s.clone();
            }
            Arc::new(c)
        }
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Config;
        }
    };
    let _lock = match StateLock::acquire(&cfg.state_dir) {
        Ok(l) => l,
        Err(e @ StateError::Locked { .. }) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Locked;
        }
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Failed;
        }
    };
    let log_opts = LogOptions {
        dir: cfg.log.dir.clone(),
        rotation: cfg.log.rotation,
        keep: cfg.log.keep,
        level: cfg.log.level.clone(),
        format: cfg.log.format,
        stderr: true,
    };
    // Held until `run` returns, so buffered lines reach the file.
    let _log = match logging::init(&log_opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("playlistd: {e}");
            return ExitCode::Config;
        }
    };
    match run_locked(paths, cfg).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("playlistd: {e}");
            ExitCode::Failed
        }
    }
}

async fn run_locked(mut paths: Paths, cfg: Arc<Config>) -> Result<ExitCode, String> {
    use tokio::signal::unix::{SignalKind, signal};
    paths.state_dir = cfg.state_dir.clone();
    let store = match StateStore::load(&cfg.state_dir) {
        Ok((s, LoadOutcome::Imported(json))) => {
            tracing::info!(
                "imported {} into the state database; kept beside it as *.migrated",
                json.display()
            );
            s
        }
        Ok((s, _)) => s,
        Err(e) => return Err(e.to_string()),
    };
    let store = Arc::new(Mutex::new(store));
    let root = CancellationToken::new();
    let engine = Arc::new(build_engine(&cfg, &store, &root, None)?);

    let mut watcher = crate::watch::ConfigWatcher::new(&cfg.path).map_err(|e| e.to_string())?;
    if let Ok(text) = std::fs::read_to_string(&cfg.path) {
        watcher.acknowledge(&text);
    }
    let socket = control::socket_path(&cfg.state_dir);
    // We hold the lock, so a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| {
        format!(
            "cannot listen on {}: {e} (fix: check the state directory)",
            socket.display()
        )
    })?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;

    let (trigger_tx, mut trigger_rx) = mpsc::unbounded_channel();
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let permits_total = cfg.daemon.max_concurrent_syncs;
    let mut d = Daemon {
        paths,
        config: cfg.clone(),
        engine,
        store: store.clone(),
        root: root.clone(),
        tickers: HashMap::new(),
        in_flight: HashMap::new(),
        triggers: trigger_tx,
        syncs: JoinSet::new(),
        permits: Arc::new(Semaphore::new(permits_total)),
        permits_total,
    };
    for pl in cfg.playlists.clone() {
        d.spawn_ticker(&pl, true);
    }
    tracing::info!(
        "playlistd {} running: {} playlists from {}, state in {}, pid {}",
        env!("CARGO_PKG_VERSION"),
        cfg.playlists.len(),
        cfg.path.display(),
        cfg.state_dir.display(),
        std::process::id()
    );

    loop {
        tokio::select! {
            Some(t) = trigger_rx.recv() => d.dispatch(t),
            Some(c) = control_rx.recv() => d.control(c),
            Some(joined) = d.syncs.join_next(), if !d.syncs.is_empty() => {
                if let Ok(f) = joined { d.finished(f) }
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_client(stream, control_tx.clone()));
                }
            }
            change = watcher.changed_content() => match change {
                Some(Ok(text)) => d.reload(&text),
                Some(Err(e)) => tracing::error!("config not reloaded, the running one stays: {e}"),
                None => {}
            },
            _ = hup.recv() => match std::fs::read_to_string(&d.config.path) {
                Ok(text) => {
                    tracing::info!("SIGHUP: reloading {}", d.config.path.display());
                    watcher.acknowledge(&text);
                    d.reload(&text);
                }
                Err(e) => tracing::error!("SIGHUP: cannot read {}: {e}; the running config stays", d.config.path.display()),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!("stopping: no new syncs; running ones stop their downloads and save");
    root.cancel();
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        tokio::select! {
            joined = d.syncs.join_next() => match joined {
                Some(Ok(f)) => d.finished(f),
                Some(Err(_)) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("syncs still running after {}s: abandoning them", SHUTDOWN_GRACE.as_secs());
                d.syncs.abort_all();
                break;
            }
            _ = term.recv() => return Ok(exit_now()),
            _ = int.recv() => return Ok(exit_now()),
        }
    }
    store
        .lock()
        .expect("state lock")
        .save_full()
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped; state saved");
    Ok(ExitCode::Ok)
}

/// A second signal: leave at once. Every state write is atomic, so the file is whole.
fn exit_now() -> ExitCode {
    tracing::warn!("second signal: exiting now");
    std::process::exit(ExitCode::Interrupted as i32)
}
