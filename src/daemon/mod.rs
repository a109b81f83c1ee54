//! `playlistd run`: the sync engine on a schedule, for months, edited only through
//! `playlists.toml`.
//!
//! The daemon is one task owning a [`Daemon`]; everything else reaches it through channels.
//! Split by job:
//! - [`lifecycle`]: start-up, the loop that hands each event to its handler, and shutdown;
//! - [`dispatch`]: tickers, starting a sync, and what happens when one finishes;
//! - [`reload`]: applying a changed `playlists.toml` as a difference;
//! - [`socket`]: the control socket (`playlistd sync` and `retry` while the daemon runs);
//! - [`tell`]: notifications, metrics and open alerts after each sync;
//! - [`systemd`]: the notify protocol (readiness, status, watchdog);
//! - [`health`] and [`metrics`]: `/healthz` and `/metrics` on `daemon.listen`.
//!
//! Invariant kept here: one daemon per state directory; it holds the state lock for its whole
//! life (taken in [`run`] before anything else touches the state).

mod dispatch;
pub mod health;
mod lifecycle;
pub mod metrics;
mod reload;
mod socket;
pub mod systemd;
mod tell;

use crate::config::{self, Config};
use crate::control::{Reply, Request};
use crate::exit::ExitCode;
use crate::logging::{self, LogOptions};

use crate::paths::Paths;
use crate::report::RunReport;
use crate::state::{StateError, StateLock, StateStore};
use crate::sync::{Engine, SyncOptions, WireError, Wiring, wire};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The target of this module's log lines, whichever file they come from: the module path it
/// had as one file, so log filters and whoever reads the log (or its JSON `target`) see the
/// same names as before the split.
const LOG_TARGET: &str = "playlistd::daemon";

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
    tell: tell::Tell,
    sd: systemd::Systemd,
    /// The `/healthz` and `/metrics` server, while `daemon.listen` is set.
    health: Option<CancellationToken>,
}

fn token_error(e: impl std::fmt::Display) -> String {
    format!("cannot start the Notion client: {e}")
}

fn build_engine(
    cfg: &Arc<Config>,
    store: &Arc<Mutex<StateStore>>,
    root: &CancellationToken,
    limiter: Option<Arc<crate::notion::RateLimiter>>,
) -> Result<Engine, WireError> {
    let wiring = Wiring {
        store: store.clone(),
        cancel: root.child_token(),
        limiter,
        dry_run: false,
        fast_retries: false,
    };
    wire::engine(cfg.clone(), wiring)
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
    match lifecycle::run_locked(paths, cfg).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("playlistd: {e}");
            ExitCode::Failed
        }
    }
}
