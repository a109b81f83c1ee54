//! What the daemon tells the world about its syncs: notifications (healthchecks pings around
//! each run, alerts at once, digests gathered in a window), the `/metrics` counters and the
//! open alerts `/healthz` reports.
//!
//! Invariants:
//! - Everything here runs on the daemon's task and only queues: sends happen on the
//!   notifier's own tasks, so a receiver that hangs never delays a sync or the loop.
//! - Every finished run is counted in the metrics and applied to the open alerts, whether
//!   or not notifications are configured: `/healthz` and `/metrics` work without them.
//! - At most one digest goes out per `notify.digest_minutes` ([`Window`]).

use super::LOG_TARGET;
use super::health::{OpenAlert, Shared};
use super::metrics::RunCounts;
use crate::config::NotifyConfig;
use crate::notify::{self, Notifier, Window};
use crate::report::RunReport;
use crate::state::StateStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long the daemon's shutdown waits for unsent notifications (it must exit within 10 s).
const SHUTDOWN_SEND_BUDGET: Duration = Duration::from_millis(1500);

pub(super) struct Tell {
    notifier: Notifier,
    window: Window,
    /// The healthchecks run id of each running sync.
    rids: HashMap<String, String>,
    pub(super) shared: Arc<Shared>,
}

impl Tell {
    pub(super) fn new(cfg: &NotifyConfig, shared: Arc<Shared>) -> Result<Tell, String> {
        Ok(Tell {
            notifier: Notifier::new(cfg)?,
            window: Window::new(cfg.digest, cfg.events),
            rids: HashMap::new(),
            shared,
        })
    }

    /// The open alerts from the state, for `/healthz` from the first request on.
    pub(super) fn load_alerts(&self, store: &Mutex<StateStore>) {
        let store = store.lock().expect("state lock");
        self.shared.set_alerts(
            store
                .state
                .alerts
                .iter()
                .map(|(kind, a)| OpenAlert {
                    kind: kind.clone(),
                    detail: a.detail.clone(),
                    since: a.since,
                })
                .collect(),
        );
        drop(store);
    }

    pub(super) fn started(&mut self, playlist: &str) {
        let rid = notify::run_id();
        self.notifier.run_started(&rid);
        self.rids.insert(playlist.to_string(), rid);
    }

    /// A sync finished: ping, alerts, metrics, digest.
    pub(super) fn finished(&mut self, r: &RunReport, ok: bool, store: &Mutex<StateStore>) {
        if let Some(rid) = self.rids.remove(&r.playlist) {
            self.notifier.run_finished(&rid, ok, r.summary_line());
        }
        self.shared.metrics.record_run(&RunCounts {
            playlist: &r.playlist,
            ok,
            dry_run: r.dry_run,
            created: r.created.len() as u64,
            adopted: r.adopted.len() as u64,
            downloaded: r.downloaded.len() as u64,
            failed: r.failed.len() as u64,
            notion_requests: r.notion_requests,
            soundcloud_requests: r.soundcloud_requests,
            finished: r.finished,
        });
        self.probe(r, store);
        if let Some(d) = self.window.push(r, Instant::now()) {
            self.notifier.digest(d);
        }
    }

    /// Applies a report to the open alerts and sends what opened or cleared (a finished run,
    /// or the Notion recheck at start, which is not a run).
    pub(super) fn probe(&mut self, r: &RunReport, store: &Mutex<StateStore>) {
        match notify::alerts::record(store, r) {
            Ok(changes) if !changes.is_empty() => {
                for c in &changes {
                    tracing::warn!(target: LOG_TARGET, "{}", describe(c));
                }
                self.notifier.alerts(changes);
                self.load_alerts(store);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(target: LOG_TARGET, "cannot keep the open alerts: {e}"),
        }
    }

    /// When the digest window closes, if one is open.
    pub(super) fn digest_due_at(&self) -> Option<Instant> {
        self.window.closes()
    }

    /// The window closed: its digest goes out.
    pub(super) fn send_due_digest(&mut self) {
        if let Some(d) = self.window.due(Instant::now()) {
            self.notifier.digest(d);
        }
    }

    /// `[notify]` changed: the new targets take over; the old ones finish their queue in the
    /// background. On an error (a `*_file` that cannot be read) the running ones stay.
    pub(super) fn reconfigure(&mut self, cfg: &NotifyConfig) -> Result<(), String> {
        let fresh = Notifier::new(cfg)?;
        let old = std::mem::replace(&mut self.notifier, fresh);
        tokio::spawn(old.close(None));
        self.window.reconfigure(cfg.digest, cfg.events);
        Ok(())
    }

    /// Shutdown: the gathered digest goes out now, and the queues get a short while.
    pub(super) async fn close(&mut self) {
        if let Some(d) = self.window.take() {
            self.notifier.digest(d);
        }
        let notifier = std::mem::replace(&mut self.notifier, Notifier::none());
        notifier.close(Some(SHUTDOWN_SEND_BUDGET)).await;
    }

    /// A playlist left the config: its series leave `/metrics`.
    pub(super) fn forget(&self, playlist: &str) {
        self.shared.metrics.forget_playlist(playlist);
    }

    /// Playlists that join `/metrics` (at start, or added by a reload), with their last
    /// success from the state.
    pub(super) fn seed<'a>(
        &self,
        store: &Mutex<StateStore>,
        names: impl IntoIterator<Item = &'a str>,
    ) {
        let store = store.lock().expect("state lock");
        for name in names {
            let last = store.state.playlists.get(name).and_then(|p| p.last_success);
            self.shared.metrics.seed_playlist(name, last);
        }
    }
}

fn describe(c: &notify::AlertChange) -> String {
    match c {
        notify::AlertChange::Opened { kind, detail, .. } => {
            format!("alert: {}: {detail}", kind.title())
        }
        notify::AlertChange::Cleared { kind, .. } => {
            format!("alert cleared: {}", kind.title())
        }
    }
}
