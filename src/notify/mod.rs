//! Notifications: telling a person what happened without being asked. A digest of new tracks
//! and failures, alerts for problems only a person can fix (and their recovery), and
//! healthchecks pings around each run, to a webhook, an ntfy topic and a healthchecks check.
//!
//! Split by job: [`digest`] gathers run reports into what is worth saying, [`alerts`] decides
//! when a setup problem opens and clears, [`message`] renders each target's request, and
//! [`send`] delivers them.
//!
//! Invariants:
//! - Sends run beside the syncs: [`Notifier`]'s methods only queue, each target's task sends
//!   its queue in order, and a hanging receiver costs a `playlistd sync` at most
//!   `notify.timeout_secs` at exit ([`Notifier::close`]) and the daemon nothing.
//! - The URLs are secrets (an ntfy topic URL lets anyone post, a healthchecks URL lets anyone
//!   silence the check): they are read from the config or their `*_file` here, kept in the
//!   target, and shown only as scheme and host.
//! - `notify.events` filters digests (`new_tracks`, `failures`) and alerts (`alerts`); the
//!   healthchecks pings are not events and always go to a configured check.

pub mod alerts;
pub mod digest;
pub mod message;
mod send;

pub use alerts::AlertChange;
pub use digest::{Digest, Window};
pub use message::{Kind, Message, run_id};

use crate::config::{NotifyConfig, NotifyEvents};
use crate::report::RunReport;
use crate::state::StateStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The configured targets, each with its queue and sending task. Built inside a runtime.
pub struct Notifier {
    queues: Vec<(Kind, mpsc::UnboundedSender<Arc<Message>>)>,
    tasks: JoinSet<()>,
    events: NotifyEvents,
    timeout: Duration,
}

impl Notifier {
    /// The targets of `cfg`, their `*_file`s read now; an error names the key and the fix.
    pub fn new(cfg: &NotifyConfig) -> Result<Notifier, String> {
        let mut n = Notifier {
            queues: vec![],
            tasks: JoinSet::new(),
            events: cfg.events,
            timeout: cfg.timeout,
        };
        let targets = [
            (Kind::Webhook, &cfg.webhook),
            (Kind::Ntfy, &cfg.ntfy),
            (Kind::Healthchecks, &cfg.healthchecks),
        ];
        let mut resolved = vec![];
        for (kind, url) in targets {
            if let Some(u) = url {
                resolved.push(send::Target {
                    kind,
                    url: u.read(kind.key())?,
                });
            }
        }
        if resolved.is_empty() {
            return Ok(n);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("playlistd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("cannot build the notification client: {e}"))?;
        for target in resolved {
            let (tx, rx) = mpsc::unbounded_channel();
            n.queues.push((target.kind, tx));
            n.tasks
                .spawn(send::run(target, http.clone(), cfg.timeout, rx));
        }
        Ok(n)
    }

    /// A notifier with no target: every method does nothing.
    pub fn none() -> Notifier {
        Notifier {
            queues: vec![],
            tasks: JoinSet::new(),
            events: NotifyEvents {
                new_tracks: false,
                failures: false,
                alerts: false,
            },
            timeout: Duration::ZERO,
        }
    }

    fn queue(&self, msg: Message) {
        let msg = Arc::new(msg);
        for (_, q) in &self.queues {
            let _ = q.send(msg.clone());
        }
    }

    pub fn has_healthchecks(&self) -> bool {
        self.queues.iter().any(|(k, _)| *k == Kind::Healthchecks)
    }

    /// Sends the digest if `notify.events` asks for what it holds.
    pub fn digest(&self, d: Digest) {
        if d.worth_sending(self.events) {
            self.queue(Message::Digest(d));
        }
    }

    /// Sends the alerts that opened or cleared, if `notify.events` has `alerts`.
    pub fn alerts(&self, changes: Vec<AlertChange>) {
        if self.events.alerts {
            for c in changes {
                self.queue(Message::Alert(c));
            }
        }
    }

    /// Healthchecks `/start` for the run `rid`.
    pub fn run_started(&self, rid: &str) {
        if self.has_healthchecks() {
            self.queue(Message::RunStarted {
                rid: rid.to_string(),
            });
        }
    }

    /// Healthchecks success or `/fail`, with the summary, for the run `rid`.
    pub fn run_finished(&self, rid: &str, ok: bool, summary: String) {
        if self.has_healthchecks() {
            self.queue(Message::RunFinished {
                rid: rid.to_string(),
                ok,
                summary,
            });
        }
    }

    /// Stops taking messages and waits for the queued ones, at most `notify.timeout_secs`
    /// or `limit` if shorter (the daemon's shutdown must end within 10 s); what is left then
    /// is dropped and logged. Returns whether everything went out.
    pub async fn close(mut self, limit: Option<Duration>) -> bool {
        self.queues.clear();
        let wait = limit.map_or(self.timeout, |l| l.min(self.timeout));
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => if joined.is_none() { return true },
                _ = &mut deadline => {
                    tracing::warn!(
                        target: "playlistd::notify",
                        "notifications still unsent after {:.1}s: dropped",
                        wait.as_secs_f64()
                    );
                    self.tasks.abort_all();
                    return false;
                }
            }
        }
    }
}

/// A problem met before any run could start (the Notion token cannot be read, so neither
/// `playlistd sync` nor the daemon gets going): alerted once, kept open in the state like a
/// run's, and cleared by the first run that reaches Notion. Waits for the send, as an exit does.
/// Only where something already ran unattended: with targets configured and a state database.
pub async fn alert_at_start(
    cfg: &NotifyConfig,
    store: &Mutex<StateStore>,
    kind: crate::report::ProblemKind,
    detail: &str,
) {
    // Nobody to tell, or a first set-up (no state yet: the person is at the terminal, and a
    // bad token must leave nothing behind): the one-line error is all.
    let first_setup = {
        let s = store.lock().expect("state lock");
        !StateStore::path_in(s.dir()).exists()
    };
    if !cfg.any_target() || first_setup {
        return;
    }
    let mut r = RunReport::new("", "", false);
    r.problem(kind, detail);
    let changes = match alerts::record(store, &r) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(target: "playlistd::notify", "cannot keep the open alerts: {e}");
            return;
        }
    };
    if let Ok(n) = Notifier::new(cfg) {
        n.alerts(changes);
        n.close(None).await;
    }
}

/// What one `playlistd sync` (or one pass of the demo) tells the targets: alerts as each
/// playlist's run meets or clears a problem, then one digest and the healthchecks success or
/// failure at the end. A dry run tells nothing.
pub struct RunTell {
    notifier: Notifier,
    digest: Digest,
    rid: String,
    store: Arc<Mutex<StateStore>>,
}

impl RunTell {
    /// Reads the targets (an error names the key and the fix) and pings healthchecks' `/start`.
    pub fn start(
        cfg: &NotifyConfig,
        store: Arc<Mutex<StateStore>>,
        dry_run: bool,
    ) -> Result<RunTell, String> {
        let notifier = if dry_run {
            Notifier::none()
        } else {
            Notifier::new(cfg)?
        };
        let rid = run_id();
        notifier.run_started(&rid);
        Ok(RunTell {
            notifier,
            digest: Digest::default(),
            rid,
            store,
        })
    }

    /// One playlist's run is over: its alerts go out now, its news joins the digest.
    pub fn report(&mut self, r: &RunReport) {
        if r.dry_run {
            return;
        }
        self.probe(r);
        self.digest.add(r);
    }

    /// Applies a report to the open alerts and sends what opened or cleared (a playlist's
    /// run, or the Notion recheck at start, which is not a run).
    pub fn probe(&self, r: &RunReport) {
        match alerts::record(&self.store, r) {
            Ok(changes) => self.notifier.alerts(changes),
            Err(e) => {
                tracing::error!(target: "playlistd::notify", "cannot keep the open alerts: {e}")
            }
        }
    }

    /// Queues the digest and the final ping, and waits for them (at most the send timeout).
    pub async fn finish(self, reports: &[RunReport], ok: bool) {
        let summary: Vec<String> = reports.iter().map(RunReport::summary_line).collect();
        self.notifier.digest(self.digest);
        self.notifier
            .run_finished(&self.rid, ok, summary.join("\n"));
        self.notifier.close(None).await;
    }
}
