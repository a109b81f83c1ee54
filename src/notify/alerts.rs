//! Alerts: setup problems a person must fix (a rejected token, a database not shared,
//! SoundCloud blocking, no client id, a full disk, a folder that cannot be written), said once
//! when they start and once when they clear, however many runs meet them in between.
//!
//! Invariants:
//! - [`settle`] is pure: the open alerts and one run's report in, the open alerts after it and
//!   what changed out. A table test pins it down.
//! - An alert opens at the first run that meets its problem and stays open, silent, while
//!   runs keep meeting it or cannot tell (an unchanged playlist asks Notion nothing).
//! - It clears only when a run used the problem's area and did not meet it
//!   ([`RunReport::healthy_areas`]), or met a problem that proves it over (Notion refusing the
//!   database means it accepted the token).
//! - The open alerts live in the state ([`AlertRecord`]), so separate `playlistd sync` runs
//!   alert once too, and a restarted daemon does not alert again.

use crate::report::{ProblemKind, RunReport};
use crate::state::{AlertRecord, StateError, StateStore};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The open alerts, by the kind's stable name (as the state keeps them).
pub type Open = BTreeMap<String, AlertRecord>;

/// A change to tell a person about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    Opened {
        kind: ProblemKind,
        detail: String,
        playlist: String,
        since: DateTime<Utc>,
    },
    Cleared {
        kind: ProblemKind,
        detail: String,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl AlertChange {
    pub fn kind(&self) -> ProblemKind {
        match self {
            AlertChange::Opened { kind, .. } | AlertChange::Cleared { kind, .. } => *kind,
        }
    }
}

/// Problems whose presence proves another kind over.
fn proves_over(met: ProblemKind) -> Option<ProblemKind> {
    match met {
        ProblemKind::NotionAccess => Some(ProblemKind::NotionToken),
        _ => None,
    }
}

/// The open alerts after one run, and what changed. Dry runs change nothing.
pub fn settle(open: &Open, r: &RunReport, now: DateTime<Utc>) -> (Open, Vec<AlertChange>) {
    let mut next = open.clone();
    let mut changes = vec![];
    if r.dry_run {
        return (next, changes);
    }
    let met: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
    let healthy = r.healthy_areas();
    let over = |k: ProblemKind| {
        !met.contains(&k)
            && (healthy.contains(&k.area()) || met.iter().any(|m| proves_over(*m) == Some(k)))
    };
    for (name, rec) in open {
        match ProblemKind::parse(name) {
            Some(kind) if over(kind) => {
                next.remove(name);
                changes.push(AlertChange::Cleared {
                    kind,
                    detail: rec.detail.clone(),
                    since: rec.since,
                    at: now,
                });
            }
            // A kind this version does not know (a newer one wrote it): left as it is.
            _ => {}
        }
    }
    for p in &r.problems {
        if !next.contains_key(p.kind.as_str()) {
            next.insert(
                p.kind.as_str().to_string(),
                AlertRecord {
                    detail: p.detail.clone(),
                    since: now,
                },
            );
            changes.push(AlertChange::Opened {
                kind: p.kind,
                detail: p.detail.clone(),
                playlist: r.playlist.clone(),
                since: now,
            });
        }
    }
    (next, changes)
}

/// Applies one run to the state's open alerts, saving only when they changed.
pub fn record(store: &Mutex<StateStore>, r: &RunReport) -> Result<Vec<AlertChange>, StateError> {
    let mut store = store.lock().expect("state lock");
    let (next, changes) = settle(&store.state.alerts, r, Utc::now());
    if !changes.is_empty() {
        store.set_alerts(next);
        store.save()?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TrackRef;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    /// A run that met `problems` and used the areas `used` says (n: Notion, s: SoundCloud,
    /// d: a downloaded file).
    fn run(problems: &[ProblemKind], used: &str) -> RunReport {
        let mut r = RunReport::new("Okra Picks", "https://soundcloud.com/o/sets/p", false);
        for p in problems {
            r.problem(*p, format!("{} (fix: …)", p.title()));
        }
        if used.contains('n') {
            r.notion_requests = 3;
        }
        if used.contains('s') {
            r.soundcloud_requests = 2;
            r.complete = true;
        }
        if used.contains('d') {
            r.downloaded.push(TrackRef {
                engine: Some("native"),
                ..TrackRef::sample("soundcloud:1", "t", "a")
            });
        }
        r
    }

    fn open(kinds: &[ProblemKind]) -> Open {
        kinds
            .iter()
            .map(|k| {
                (
                    k.as_str().to_string(),
                    AlertRecord {
                        detail: "earlier".into(),
                        since: at(0),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn alerts_open_once_stay_silent_and_clear_when_a_run_proves_them_over() {
        use ProblemKind::*;
        // (open before, the run, open after, opened, cleared)
        type Case = (
            Vec<ProblemKind>,
            RunReport,
            Vec<ProblemKind>,
            Vec<ProblemKind>,
            Vec<ProblemKind>,
        );
        let cases: Vec<Case> = vec![
            (vec![], run(&[], "nsd"), vec![], vec![], vec![]),
            (
                vec![],
                run(&[NotionToken], "ns"),
                vec![NotionToken],
                vec![NotionToken],
                vec![],
            ),
            // Met again: stays open, says nothing.
            (
                vec![NotionToken],
                run(&[NotionToken], "ns"),
                vec![NotionToken],
                vec![],
                vec![],
            ),
            // An unchanged playlist asked Notion nothing: cannot tell, stays open.
            (
                vec![NotionToken],
                run(&[], "s"),
                vec![NotionToken],
                vec![],
                vec![],
            ),
            (
                vec![NotionToken],
                run(&[], "ns"),
                vec![],
                vec![],
                vec![NotionToken],
            ),
            // The database not shared means the token was accepted.
            (
                vec![NotionToken],
                run(&[NotionAccess], "n"),
                vec![NotionAccess],
                vec![NotionAccess],
                vec![NotionToken],
            ),
            // Each area clears its own.
            (
                vec![SoundcloudBlocked, DiskFull],
                run(&[], "ns"),
                vec![DiskFull],
                vec![],
                vec![SoundcloudBlocked],
            ),
            (
                vec![DiskFull],
                run(&[], "d"),
                vec![],
                vec![],
                vec![DiskFull],
            ),
            // A full disk while the folder alert is open: the disk area is not healthy.
            (
                vec![FolderNotWritable],
                run(&[DiskFull], "nd"),
                vec![DiskFull, FolderNotWritable],
                vec![DiskFull],
                vec![],
            ),
            // An incomplete listing does not prove SoundCloud fine.
            (
                vec![SoundcloudClientId],
                run(&[], "n"),
                vec![SoundcloudClientId],
                vec![],
                vec![],
            ),
        ];
        for (i, (before, r, after, opened, cleared)) in cases.into_iter().enumerate() {
            let (next, changes) = settle(&open(&before), &r, at(60));
            let mut got: Vec<&str> = next.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = after.iter().map(|k| k.as_str()).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "case {i}: open after");
            let o: Vec<ProblemKind> = changes
                .iter()
                .filter(|c| matches!(c, AlertChange::Opened { .. }))
                .map(AlertChange::kind)
                .collect();
            let c: Vec<ProblemKind> = changes
                .iter()
                .filter(|c| matches!(c, AlertChange::Cleared { .. }))
                .map(AlertChange::kind)
                .collect();
            assert_eq!((o, c), (opened, cleared), "case {i}: changes");
        }
    }

    #[test]
    fn a_dry_run_and_an_unknown_stored_kind_change_nothing() {
        let mut dry = run(&[ProblemKind::NotionToken], "ns");
        dry.dry_run = true;
        let (next, changes) = settle(&Open::new(), &dry, at(1));
        assert!(next.is_empty() && changes.is_empty());
        let mut stored = open(&[]);
        stored.insert(
            "from_the_future".into(),
            AlertRecord {
                detail: "x".into(),
                since: at(0),
            },
        );
        let (next, changes) = settle(&stored, &run(&[], "nsd"), at(1));
        assert_eq!(next, stored);
        assert!(changes.is_empty());
    }
}
