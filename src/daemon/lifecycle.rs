//! The daemon's life once it holds the lock: start-up, the loop that hands every event to its
//! handler, and shutdown.
//!
//! Invariants:
//! - Nothing is scheduled before everything the loop listens to exists: a socket that cannot
//!   be bound, or a config file that cannot be watched, stops the start with no sync begun.
//! - SIGTERM/SIGINT: no new work, running syncs stop their downloads (yt-dlp children are
//!   killed, partial files removed) and finish the Notion requests in flight, the state is
//!   saved, exit 0 within 10 s. A second signal exits at once; the state database is whole anyway
//!   because every save is one SQLite transaction.

use super::health::{self, Heartbeat, Shared};
use super::metrics::Metrics;
use super::socket::serve_client;
use super::systemd::Systemd;
use super::tell::Tell;
use super::{Control, Daemon, LOG_TARGET, Trigger, build_engine, token_error};
use crate::config::Config;
use crate::control;
use crate::exit::ExitCode;
use crate::paths::Paths;
use crate::state::{LoadOutcome, StateStore};
use crate::sync::{Engine, WireError};
use crate::watch::ConfigWatcher;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for running syncs before abandoning them (the budget is 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// The scheduler loop's heartbeat when nothing asks for a faster one (`/healthz` only).
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What the daemon listens to besides its own syncs: config saves, the control socket and
/// the signals. Opened in this order, each step able to stop the start.
struct Inputs {
    watcher: ConfigWatcher,
    socket: PathBuf,
    listener: UnixListener,
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// The receiving ends of the daemon's own channels (the sending ends live in [`Daemon`] and in
/// the control clients), plus the sender each new control client gets a clone of.
struct Queues {
    triggers: mpsc::UnboundedReceiver<Trigger>,
    controls: mpsc::UnboundedReceiver<Control>,
    control_tx: mpsc::UnboundedSender<Control>,
}

pub(super) async fn run_locked(mut paths: Paths, cfg: Arc<Config>) -> Result<ExitCode, String> {
    paths.state_dir = cfg.state_dir.clone();
    let store = Arc::new(Mutex::new(open_store(&cfg)?));
    let root = CancellationToken::new();
    let engine = match build_engine(&cfg, &store, &root, None) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            let is_token = matches!(e, WireError::Token(_));
            let e = token_error(e);
            // systemd restarts a daemon that cannot start: the alert says why, once.
            if is_token {
                let kind = crate::report::ProblemKind::NotionToken;
                crate::notify::alert_at_start(&cfg.notify, &store, kind, &e).await;
            }
            return Err(e);
        }
    };
    let mut inputs = Inputs::open(&cfg)?;
    let outside = Outside::open(&cfg, &store, &root).await?;
    let (mut d, mut queues) = Daemon::start(paths, &cfg, engine, store, root, outside);
    if let Some(r) = d.engine.recheck_notion().await {
        d.tell.probe(&r, &d.store);
    }
    d.sd.ready();
    d.update_status();
    d.serve(&mut inputs, &mut queues).await;
    // `queues` outlives the shutdown: a control client that connects meanwhile still has its
    // request queued (and its answer comes with the exit), not a refusal.
    let code = d.shut_down(inputs).await;
    drop(queues);
    code
}

/// Loads the state (importing the JSON files of older versions once).
fn open_store(cfg: &Config) -> Result<StateStore, String> {
    match StateStore::load(&cfg.state_dir) {
        Ok((s, LoadOutcome::Imported(json))) => {
            tracing::info!(
                target: LOG_TARGET,
                "imported {} into the state database; kept beside it as *.migrated",
                json.display()
            );
            Ok(s)
        }
        Ok((s, _)) => Ok(s),
        Err(e) => Err(e.to_string()),
    }
}

/// What the daemon tells the outside: notifications and metrics ([`Tell`]), systemd, and the
/// health server. Opened after [`Inputs`]: an address in `daemon.listen` that cannot be bound,
/// or a `notify.*_file` that cannot be read, stops the start.
pub(super) struct Outside {
    tell: Tell,
    sd: Systemd,
    health: Option<CancellationToken>,
}

impl Outside {
    async fn open(
        cfg: &Config,
        store: &Mutex<StateStore>,
        root: &CancellationToken,
    ) -> Result<Outside, String> {
        let sd = Systemd::from_env();
        let beat = sd.watchdog_every().map_or(HEARTBEAT, |w| w.min(HEARTBEAT));
        let shared = Arc::new(Shared::new(Heartbeat::new(beat), Arc::new(Metrics::new())));
        let tell = Tell::new(&cfg.notify, shared.clone())?;
        tell.seed(store, cfg.playlists.iter().map(|p| p.name.as_str()));
        tell.load_alerts(store);
        let health = match cfg.daemon.listen {
            Some(addr) => {
                let listener = health::bind(addr).await?;
                tracing::info!(target: LOG_TARGET, "serving /healthz and /metrics on http://{addr}");
                let token = root.child_token();
                tokio::spawn(health::serve(listener, shared, token.clone()));
                Some(token)
            }
            None => None,
        };
        Ok(Outside { tell, sd, health })
    }
}

impl Inputs {
    fn open(cfg: &Config) -> Result<Inputs, String> {
        let mut watcher = ConfigWatcher::new(&cfg.path).map_err(|e| e.to_string())?;
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
        let term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        Ok(Inputs {
            watcher,
            socket,
            listener,
            term,
            int,
            hup,
        })
    }
}

impl Daemon {
    /// The daemon with every playlist's ticker started (catching up on slots missed while it
    /// was down).
    fn start(
        paths: Paths,
        cfg: &Arc<Config>,
        engine: Arc<Engine>,
        store: Arc<Mutex<StateStore>>,
        root: CancellationToken,
        outside: Outside,
    ) -> (Daemon, Queues) {
        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let permits_total = cfg.daemon.max_concurrent_syncs;
        let mut d = Daemon {
            paths,
            config: cfg.clone(),
            engine,
            store,
            root,
            tickers: HashMap::new(),
            in_flight: HashMap::new(),
            triggers: trigger_tx,
            syncs: JoinSet::new(),
            permits: Arc::new(Semaphore::new(permits_total)),
            permits_total,
            tell: outside.tell,
            sd: outside.sd,
            health: outside.health,
        };
        for pl in cfg.playlists.clone() {
            d.spawn_ticker(&pl, true);
        }
        tracing::info!(
            target: LOG_TARGET,
            "playlistd {} running: {} playlists from {}, state in {}, pid {}",
            env!("CARGO_PKG_VERSION"),
            cfg.playlists.len(),
            cfg.path.display(),
            cfg.state_dir.display(),
            std::process::id()
        );
        let queues = Queues {
            triggers: trigger_rx,
            controls: control_rx,
            control_tx,
        };
        (d, queues)
    }

    /// The loop: each event to its handler, until SIGTERM or SIGINT. It also beats the
    /// heartbeat `/healthz` reads and pings systemd's watchdog, from here and nowhere else,
    /// so a stalled loop is seen as one.
    async fn serve(&mut self, inputs: &mut Inputs, queues: &mut Queues) {
        // Only while someone reads it (systemd's watchdog, `/healthz`): an idle daemon without
        // either wakes no more than before. A reload that adds `daemon.listen` turns it on.
        let watchdog = self.sd.watchdog_every();
        let mut beat = tokio::time::interval(self.tell.shared.heartbeat.interval());
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick(), if watchdog.is_some() || self.health.is_some() => {
                    self.tell.shared.heartbeat.beat();
                    if watchdog.is_some() {
                        self.sd.watchdog();
                    }
                }
                _ = until(self.tell.digest_due_at()) => self.tell.send_due_digest(),
                Some(t) = queues.triggers.recv() => self.dispatch(t),
                Some(c) = queues.controls.recv() => self.control(c),
                Some(joined) = self.syncs.join_next(), if !self.syncs.is_empty() => {
                    if let Ok(f) = joined { self.finished(f) }
                }
                accepted = inputs.listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_client(stream, queues.control_tx.clone()));
                    }
                }
                change = inputs.watcher.changed_content() => match change {
                    Some(Ok(text)) => self.reload(&text, false),
                    Some(Err(e)) => tracing::error!(target: LOG_TARGET, "config not reloaded, the running one stays: {e}"),
                    None => {}
                },
                _ = inputs.hup.recv() => match std::fs::read_to_string(&self.config.path) {
                    Ok(text) => {
                        tracing::info!(
                            target: LOG_TARGET,
                            "SIGHUP: reloading {}",
                            self.config.path.display()
                        );
                        inputs.watcher.acknowledge(&text);
                        self.reload(&text, true);
                    }
                    Err(e) => tracing::error!(target: LOG_TARGET, "SIGHUP: cannot read {}: {e}; the running config stays", self.config.path.display()),
                },
                _ = inputs.term.recv() => break,
                _ = inputs.int.recv() => break,
            }
        }
    }

    /// Stops everything (see the module's invariants) and saves the state.
    async fn shut_down(&mut self, inputs: Inputs) -> Result<ExitCode, String> {
        // The watcher and SIGHUP are no longer read, but stay registered until the state is
        // saved.
        let Inputs {
            watcher: _watcher,
            socket,
            listener,
            mut term,
            mut int,
            hup: _hup,
        } = inputs;
        self.sd.stopping();
        tracing::info!(
            target: LOG_TARGET,
            "stopping: no new syncs; running ones stop their downloads and save"
        );
        self.root.cancel();
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            tokio::select! {
                joined = self.syncs.join_next() => match joined {
                    Some(Ok(f)) => self.finished(f),
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        target: LOG_TARGET,
                        "syncs still running after {}s: abandoning them",
                        SHUTDOWN_GRACE.as_secs()
                    );
                    self.syncs.abort_all();
                    break;
                }
                _ = term.recv() => return Ok(exit_now()),
                _ = int.recv() => return Ok(exit_now()),
            }
        }
        self.store
            .lock()
            .expect("state lock")
            .save_full()
            .map_err(|e| e.to_string())?;
        self.tell.close().await;
        tracing::info!(target: LOG_TARGET, "stopped; state saved");
        Ok(ExitCode::Ok)
    }

    /// The `STATUS=` line systemd shows.
    pub(super) fn update_status(&mut self) {
        let line = super::systemd::status_line(
            self.in_flight.len(),
            &self.config.playlists,
            self.config.daemon.zone,
            chrono::Utc::now(),
        );
        self.sd.status(line);
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A second signal: leave at once. Every state write is atomic, so the file is whole.
fn exit_now() -> ExitCode {
    tracing::warn!(target: LOG_TARGET, "second signal: exiting now");
    std::process::exit(ExitCode::Interrupted as i32)
}
