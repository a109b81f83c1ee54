//! Applying a changed `playlists.toml` to the running daemon, as a difference from the running
//! config ([`config::diff`]).
//!
//! Invariants:
//! - A config save that does not parse changes nothing: the error is logged with its line and
//!   column and the running config stays. A good one is applied as a difference.
//! - Nothing of a new config is applied until everything it needs is built: clients that
//!   cannot be rebuilt (a Notion token that cannot be read) leave the running config whole.
//! - What only a restart can change (`paths.state_dir`, log settings) is said in the log and
//!   kept as it runs.

use super::{Daemon, LOG_TARGET, Trigger, Why, build_engine, token_error};
use crate::config::{self, Changes, Config};
use crate::sync::SyncOptions;
use std::sync::Arc;

impl Daemon {
    /// Applies a new config text (see [`Daemon::apply`]), telling systemd it reloads.
    /// `reread` (SIGHUP, `systemctl reload`) builds the clients and notifiers again even when
    /// the text is unchanged, so a fixed token file or `notify.*_file` is read again.
    pub(super) fn reload(&mut self, text: &str, reread: bool) {
        self.sd.reloading();
        self.apply(text, reread);
        self.sd.ready();
        self.update_status();
    }

    /// Applies a new config text as a difference from the running one ([`config::diff`]); on
    /// any error the running config stays.
    fn apply(&mut self, text: &str, reread: bool) {
        let mut new = match config::parse(text, &self.config.path, &self.paths) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    target: LOG_TARGET,
                    "config not reloaded, the running one stays: {e}"
                );
                return;
            }
        };
        let mut changes = config::diff(&self.config, &new);
        if reread {
            changes.notion = true;
            changes.notify |= new.notify.any_target();
        }
        if changes.state_dir {
            tracing::warn!(
                target: LOG_TARGET,
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
                    tracing::error!(
                        target: LOG_TARGET,
                        "config not reloaded, the running one stays: {}",
                        token_error(e)
                    );
                    return;
                }
            }
        }

        if changes.notify
            && let Err(e) = self.tell.reconfigure(&new.notify)
        {
            tracing::error!(
                target: LOG_TARGET,
                "config not reloaded, the running one stays: {e}"
            );
            return;
        }
        self.config = new.clone();
        if let Some(e) = engine {
            self.engine = e;
        }
        if changes.listen {
            self.restart_health(new.daemon.listen);
        }
        self.reseed_metrics(&changes);
        if changes.daemon {
            self.resize_pool(new.daemon.max_concurrent_syncs);
        }
        self.restart_tickers(&changes, &new);
        if changes.log {
            tracing::warn!(target: LOG_TARGET, "log settings changed: they apply after a restart");
        }
        tracing::info!(
            target: LOG_TARGET,
            "reloaded {}: {changes}{}",
            new.path.display(),
            if changes.clients() {
                "; Notion/SoundCloud/download clients rebuilt"
            } else {
                ""
            }
        );
    }

    /// `daemon.listen` changed: the old server stops, the new one binds in the background (an
    /// address that cannot be bound is logged; the daemon goes on without it).
    fn restart_health(&mut self, listen: Option<std::net::SocketAddr>) {
        if let Some(old) = self.health.take() {
            old.cancel();
        }
        let Some(addr) = listen else { return };
        // The loop has not been beating without a reader: start the heartbeat fresh.
        self.tell.shared.heartbeat.beat();
        let token = self.root.child_token();
        let shared = self.tell.shared.clone();
        self.health = Some(token.clone());
        tokio::spawn(async move {
            match super::health::bind(addr).await {
                Ok(l) => super::health::serve(l, shared, token).await,
                Err(e) => tracing::error!(target: LOG_TARGET, "{e}"),
            }
        });
    }

    fn reseed_metrics(&self, changes: &Changes) {
        for name in &changes.removed {
            self.tell.forget(name);
        }
        self.tell
            .seed(&self.store, changes.added.iter().map(String::as_str));
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
}
