//! Starting syncs and seeing them finish: the tickers that fire on each playlist's schedule,
//! the dispatch of a sync (by a slot, a config change or a request), and what follows one.
//!
//! Invariants:
//! - A playlist never syncs twice at once; a slot that comes while it runs is skipped and
//!   logged, and a request that comes meanwhile gets the outcome of the sync already running.
//! - At most `daemon.max_concurrent_syncs` syncs run together, sharing one Notion limiter, one
//!   download pool and one state.
//! - The after-sync hook runs only for a real run that added something, off the daemon's task,
//!   and is killed when it outlives `daemon.hook_timeout`.

use super::{Daemon, Finished, LOG_TARGET, Trigger, Why};
use crate::config::PlaylistConfig;
use crate::control::Reply;
use crate::report::RunReport;
use crate::schedule::{SystemClock, Ticker, run_schedule};
use crate::sync::SyncOptions;
use std::path::PathBuf;
use std::time::Duration;

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
    pub(super) fn spawn_ticker(&mut self, pl: &PlaylistConfig, catch_up: bool) {
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

    pub(super) fn dispatch(&mut self, t: Trigger) {
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
                    target: LOG_TARGET,
                    "{:?}: slot skipped, the previous sync is still running",
                    pl.name
                ),
            }
            return;
        }
        tracing::info!(
            target: LOG_TARGET,
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
        self.tell.started(&name);
        self.update_status();
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

    pub(super) fn finished(&mut self, f: Finished) {
        let (name, report, result) = f;
        let reply = reply_for(&name, &report, &result);
        for w in self.in_flight.remove(&name).unwrap_or_default() {
            let _ = w.send(reply.clone());
        }
        if let Err(e) = &result {
            tracing::error!(target: LOG_TARGET, "{name:?}: sync failed: {e}");
        }
        self.tell
            .finished(&report, result.is_ok() && report.ok(), &self.store);
        self.update_status();
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
}

/// Runs the user's after-sync command with the outcome in its environment.
async fn run_hook(cmd: Vec<String>, report: RunReport, dir: PathBuf, timeout: Duration) {
    let file = dir.join(format!(
        "{}.json",
        crate::download::sanitize_component(&report.playlist)
    ));
    if let Err(e) = crate::report::write_results_file(&file, std::slice::from_ref(&report)) {
        tracing::warn!(
            target: LOG_TARGET,
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
                target: LOG_TARGET,
                "after_sync: cannot run {:?}: {e} (fix: check daemon.after_sync)",
                cmd[0]
            );
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!(target: LOG_TARGET, "after_sync for {:?} finished", report.playlist)
        }
        Ok(Ok(out)) => tracing::warn!(
            target: LOG_TARGET,
            "after_sync for {:?} exited with {}",
            report.playlist,
            out.status
        ),
        Ok(Err(e)) => {
            tracing::error!(target: LOG_TARGET, "after_sync for {:?} failed: {e}", report.playlist)
        }
        Err(_) => tracing::error!(
            target: LOG_TARGET,
            "after_sync for {:?} killed after {}s",
            report.playlist,
            timeout.as_secs()
        ),
    }
}
