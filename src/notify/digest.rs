//! The digest: what a person hears about the syncs of a while, gathered from their run
//! reports, and the window the daemon gathers them in.
//!
//! Invariants:
//! - A digest is worth sending only when tracks were created, adopted or downloaded
//!   (`new_tracks`) or something failed (`failures`), as `notify.events` asks; an unchanged
//!   run adds nothing to say, so a quiet day sends nothing.
//! - A run stopped by a setup problem (a revoked token, a full disk) is not a digest failure:
//!   it is an alert, said once while it lasts (see `alerts`), not at every slot.
//! - Its size does not grow with the playlists: each playlist keeps its counts, the first
//!   [`TITLES`] titles and the first [`ERRORS`] errors.
//! - [`Window`] is pure (instants come from the caller), so its timing is a table test.

use crate::config::NotifyEvents;
use crate::report::RunReport;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Titles kept per playlist.
pub const TITLES: usize = 5;
/// Errors kept per playlist.
pub const ERRORS: usize = 3;

/// One playlist's part of a digest, summed over the runs it had in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaylistDigest {
    pub name: String,
    pub url: String,
    pub runs: usize,
    /// Tracks that are new to the person: created, adopted or downloaded, each counted once
    /// (a track created and downloaded in one run is one new track).
    pub new_tracks: usize,
    pub created: usize,
    pub adopted: usize,
    pub downloaded: usize,
    pub failed: usize,
    /// The first titles that are new (created, adopted or downloaded), each once.
    pub titles: Vec<String>,
    /// The first errors: failed tracks ("title: error") and stopped runs.
    pub errors: Vec<String>,
}

impl PlaylistDigest {
    fn new_tracks(&self) -> usize {
        self.new_tracks
    }
    fn failures(&self) -> usize {
        self.failed + usize::from(!self.errors.is_empty() && self.failed == 0)
    }
}

/// The runs of one `playlistd sync`, or of the daemon's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub playlists: Vec<PlaylistDigest>,
    /// Runs that had nothing to say (no new track, no failure).
    pub quiet_runs: usize,
}

impl Default for Digest {
    fn default() -> Self {
        let now = Utc::now();
        Digest {
            since: now,
            until: now,
            playlists: vec![],
            quiet_runs: 0,
        }
    }
}

impl Digest {
    /// Adds one run. Dry runs are left out: they changed nothing.
    pub fn add(&mut self, r: &RunReport) {
        if r.dry_run {
            return;
        }
        if self.playlists.is_empty() && self.quiet_runs == 0 {
            self.since = r.started;
        }
        self.until = self.until.max(r.finished);
        // A stop that is a setup problem goes out as an alert instead.
        let stop = r.error.as_ref().filter(|_| r.problems.is_empty());
        let news = r.created.len() + r.adopted.len() + r.downloaded.len();
        if news == 0 && r.failed.is_empty() && stop.is_none() {
            self.quiet_runs += 1;
            return;
        }
        let p = match self.playlists.iter().position(|p| p.name == r.playlist) {
            Some(i) => &mut self.playlists[i],
            None => {
                self.playlists.push(PlaylistDigest {
                    name: r.playlist.clone(),
                    url: r.url.clone(),
                    ..PlaylistDigest::default()
                });
                self.playlists.last_mut().expect("just pushed")
            }
        };
        p.runs += 1;
        p.new_tracks += distinct_news(r);
        p.created += r.created.len();
        p.adopted += r.adopted.len();
        p.downloaded += r.downloaded.len();
        p.failed += r.failed.len();
        for t in r.created.iter().chain(&r.adopted).chain(&r.downloaded) {
            let title = display_title(&t.artist, &t.title);
            if p.titles.len() < TITLES && !p.titles.contains(&title) {
                p.titles.push(title);
            }
        }
        let errors = r
            .failed
            .iter()
            .map(|f| format!("{}: {}", f.title, f.error))
            .chain(stop.map(|e| format!("stopped: {e}")));
        for e in errors {
            if p.errors.len() < ERRORS {
                p.errors.push(crate::util::one_line(&e));
            }
        }
    }

    pub fn new_tracks(&self) -> usize {
        self.playlists.iter().map(PlaylistDigest::new_tracks).sum()
    }

    pub fn failures(&self) -> usize {
        self.playlists.iter().map(PlaylistDigest::failures).sum()
    }

    /// Whether `events` asks for this digest.
    pub fn worth_sending(&self, events: NotifyEvents) -> bool {
        (events.new_tracks && self.new_tracks() > 0) || (events.failures && self.failures() > 0)
    }

    /// The digest's one-line headline: "3 new tracks in Okra Picks", "2 failed in 2 playlists".
    pub fn headline(&self) -> String {
        let where_ = |n: usize| match &self.playlists[..] {
            [one] => format!("in {}", one.name),
            _ => format!("in {n} playlists"),
        };
        let n = self.playlists.len();
        let mut parts = vec![];
        if self.new_tracks() > 0 {
            parts.push(plural(self.new_tracks(), "new track", "new tracks"));
        }
        if self.failures() > 0 {
            parts.push(format!("{} failed", self.failures()));
        }
        format!("{} {}", parts.join(", "), where_(n))
    }

    /// The lines under the headline: per playlist its counts, titles and errors.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![];
        for p in &self.playlists {
            out.push(format!(
                "{}: {} created, {} adopted, {} downloaded, {} failed",
                p.name, p.created, p.adopted, p.downloaded, p.failed
            ));
            let more = p.new_tracks().saturating_sub(p.titles.len());
            for t in &p.titles {
                out.push(format!("  + {t}"));
            }
            if more > 0 && !p.titles.is_empty() {
                out.push(format!("  … and {more} more"));
            }
            for e in &p.errors {
                out.push(format!("  ! {e}"));
            }
        }
        out
    }
}

/// The tracks a run created, adopted or downloaded, each once: exact for the entries the
/// report keeps, and the largest list's uncounted rest beyond them.
fn distinct_news(r: &RunReport) -> usize {
    let lists = [&r.created, &r.adopted, &r.downloaded];
    let keys: std::collections::HashSet<_> = lists
        .iter()
        .flat_map(|l| l.iter().map(|t| &t.key))
        .collect();
    keys.len() + lists.iter().map(|l| l.omitted()).max().unwrap_or(0)
}

fn display_title(artist: &str, title: &str) -> String {
    if artist.is_empty() {
        title.to_string()
    } else {
        format!("{artist} - {title}")
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The daemon's gathering of runs into digests: the first run worth telling opens a window of
/// `notify.digest_minutes`, and every run that finishes in it joins the digest sent when it
/// closes. So at most one digest goes out per window, and a slot at which every playlist runs
/// gives one message, not one per playlist. A window of zero sends each run's digest at once.
#[derive(Debug)]
pub struct Window {
    length: Duration,
    events: NotifyEvents,
    digest: Digest,
    closes: Option<Instant>,
}

impl Window {
    pub fn new(length: Duration, events: NotifyEvents) -> Window {
        Window {
            length,
            events,
            digest: Digest::default(),
            closes: None,
        }
    }

    /// Adds a finished run; returns the digest when it is due at once (a zero window).
    pub fn push(&mut self, r: &RunReport, now: Instant) -> Option<Digest> {
        if self.closes.is_none() && self.digest.playlists.is_empty() {
            // Quiet runs before anything worth telling do not stretch the window back.
            self.digest = Digest::default();
        }
        self.digest.add(r);
        if self.closes.is_none() && self.digest.worth_sending(self.events) {
            self.closes = Some(now + self.length);
        }
        self.due(now)
    }

    /// When the open window closes, if one is open.
    pub fn closes(&self) -> Option<Instant> {
        self.closes
    }

    /// The digest, once its window has closed; the next window opens with the next news.
    pub fn due(&mut self, now: Instant) -> Option<Digest> {
        match self.closes {
            Some(at) if at <= now => {
                self.closes = None;
                Some(std::mem::take(&mut self.digest))
            }
            _ => None,
        }
    }

    /// Whatever is gathered, at once (the daemon's shutdown), if it is worth sending.
    pub fn take(&mut self) -> Option<Digest> {
        self.closes = None;
        let d = std::mem::take(&mut self.digest);
        d.worth_sending(self.events).then_some(d)
    }

    /// `notify` was reloaded: new length and events apply from the next window.
    pub fn reconfigure(&mut self, length: Duration, events: NotifyEvents) {
        self.length = length;
        self.events = events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrackKey;
    use crate::report::{ProblemKind, Stage, TrackFailure, TrackRef};

    const ALL: NotifyEvents = NotifyEvents {
        new_tracks: true,
        failures: true,
        alerts: true,
    };

    fn track(i: u32) -> TrackRef {
        TrackRef::sample(format!("soundcloud:{i}"), format!("Song {i}"), "Okra")
    }

    fn run(name: &str, created: u32, failed: u32) -> RunReport {
        let mut r = RunReport::new(name, "https://soundcloud.com/o/sets/p", false);
        for i in 0..created {
            r.created.push(track(i));
        }
        for i in 0..failed {
            r.failed.push(TrackFailure {
                key: TrackKey::new(format!("soundcloud:9{i}")),
                title: format!("Bad {i}"),
                stage: Stage::Download,
                error: "network: reset".into(),
                parked: false,
            });
        }
        r
    }

    #[test]
    fn what_a_digest_says_and_when_it_is_worth_sending() {
        let only_new = NotifyEvents {
            failures: false,
            alerts: false,
            ..ALL
        };
        let only_failures = NotifyEvents {
            new_tracks: false,
            alerts: false,
            ..ALL
        };
        let mut revoked = run("A", 0, 0);
        revoked.error = Some("Notion rejected the API token".into());
        revoked.problem(ProblemKind::NotionToken, "Notion rejected the API token");
        let mut stopped = run("A", 0, 0);
        stopped.error = Some("cannot reach api-v2.soundcloud.com".into());
        let mut dry = run("A", 3, 0);
        dry.dry_run = true;
        // (runs, events, worth sending, headline)
        let cases: Vec<(Vec<RunReport>, NotifyEvents, bool, &str)> = vec![
            (vec![run("A", 0, 0)], ALL, false, ""),
            (vec![run("A", 1, 0)], ALL, true, "1 new track in A"),
            (
                vec![run("A", 7, 0), run("B", 0, 2)],
                ALL,
                true,
                "7 new tracks, 2 failed in 2 playlists",
            ),
            (
                vec![run("A", 2, 0), run("A", 1, 0)],
                ALL,
                true,
                "3 new tracks in A",
            ),
            (vec![run("A", 0, 2)], only_new, false, "2 failed in A"),
            (
                vec![run("A", 2, 0)],
                only_failures,
                false,
                "2 new tracks in A",
            ),
            (vec![run("A", 0, 1)], only_failures, true, "1 failed in A"),
            (vec![revoked], ALL, false, ""),
            (vec![stopped], ALL, true, "1 failed in A"),
            (vec![dry], ALL, false, ""),
        ];
        for (i, (runs, events, worth, headline)) in cases.into_iter().enumerate() {
            let mut d = Digest::default();
            for r in &runs {
                d.add(r);
            }
            assert_eq!(d.worth_sending(events), worth, "case {i}");
            if !d.playlists.is_empty() {
                assert_eq!(d.headline(), headline, "case {i}");
            }
        }
    }

    #[test]
    fn a_track_created_and_downloaded_in_one_run_is_one_new_track() {
        let mut r = run("A", 2, 0);
        r.downloaded.push(track(0));
        r.downloaded.push(track(1));
        r.downloaded.push(track(7));
        let mut d = Digest::default();
        d.add(&r);
        assert_eq!(d.new_tracks(), 3);
        assert_eq!(d.headline(), "3 new tracks in A");
    }

    #[test]
    fn titles_and_errors_are_capped_and_the_rest_counted() {
        let mut d = Digest::default();
        d.add(&run("A", 40, 10));
        let p = &d.playlists[0];
        assert_eq!((p.created, p.failed), (40, 10));
        assert_eq!(p.titles.len(), TITLES);
        assert_eq!(p.errors.len(), ERRORS);
        let lines = d.lines();
        assert_eq!(
            lines[0],
            "A: 40 created, 0 adopted, 0 downloaded, 10 failed"
        );
        assert!(
            lines.contains(&"  + Okra - Song 0".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"  … and 35 more".to_string()), "{lines:?}");
        assert!(
            lines.contains(&"  ! Bad 0: network: reset".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn the_window_opens_with_news_gathers_and_sends_once_when_it_closes() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut w = Window::new(15 * min, ALL);
        assert_eq!(w.push(&run("A", 0, 0), t0), None, "quiet: no window");
        assert_eq!(w.closes(), None);
        assert_eq!(w.push(&run("A", 2, 0), t0 + min), None);
        assert_eq!(w.closes(), Some(t0 + 16 * min));
        assert_eq!(
            w.push(&run("B", 1, 0), t0 + 5 * min),
            None,
            "joins, no new window"
        );
        assert_eq!(w.closes(), Some(t0 + 16 * min));
        assert_eq!(w.due(t0 + 15 * min), None);
        let d = w.due(t0 + 16 * min).expect("closed");
        assert_eq!(d.new_tracks(), 3);
        assert_eq!(d.playlists.len(), 2);
        assert_eq!(d.quiet_runs, 0, "the quiet run came before the window");
        assert_eq!(w.due(t0 + 17 * min), None, "sent once");
        assert_eq!(w.closes(), None);

        let mut at_once = Window::new(Duration::ZERO, ALL);
        assert!(at_once.push(&run("A", 1, 0), t0).is_some());
        assert!(at_once.push(&run("A", 0, 0), t0).is_none());
        assert!(at_once.take().is_none(), "nothing worth sending is left");
    }
}
