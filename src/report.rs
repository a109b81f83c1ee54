//! What one sync did, for the person (summary lines), for scripts (`--results-file` JSON) and
//! for `status` (the [`RunSummary`] kept in the state).
//!
//! Invariants:
//! - The report is built from what actually happened, track by track. Every count is exact:
//!   each list counts what is pushed into it, so a count and its list cannot disagree.
//! - Its size does not grow with the playlist. The routine lists (created, adopted, linked,
//!   downloaded) keep their first [`LIST_CAP`] tracks and count the rest; a first sync of
//!   10,000 tracks would otherwise hold (and print) 10,000 entries per list. What a person must
//!   act on is never cut: every failed, unavailable and removed track stays listed (the
//!   removed-track policy also works from the removed list).

use crate::model::{TrackKey, UnavailableReason};
use crate::state::RunSummary;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};

/// How many tracks each routine list keeps. Enough for any everyday sync to be listed in full;
/// past it a terminal would only scroll, and a script reads the exact counts.
pub const LIST_CAP: usize = 200;

/// A routine list of tracks: the first [`LIST_CAP`] entries and the exact count of all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackList {
    shown: Vec<TrackRef>,
    total: usize,
}

impl TrackList {
    pub fn push(&mut self, r: TrackRef) {
        self.total += 1;
        if self.shown.len() < LIST_CAP {
            self.shown.push(r);
        }
    }
    /// Appends another list, as if its tracks had been pushed here (a sync fills some lists
    /// from two stages running side by side, each in its own list).
    pub fn append(&mut self, other: TrackList) {
        let room = LIST_CAP.saturating_sub(self.shown.len());
        self.shown.extend(other.shown.into_iter().take(room));
        self.total += other.total;
    }
    /// Every track counted, shown or not.
    pub fn len(&self) -> usize {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
    /// The tracks kept, in the order they were pushed.
    pub fn iter(&self) -> std::slice::Iter<'_, TrackRef> {
        self.shown.iter()
    }
    /// Tracks counted but not kept.
    pub fn omitted(&self) -> usize {
        self.total - self.shown.len()
    }
}

impl<'a> IntoIterator for &'a TrackList {
    type Item = &'a TrackRef;
    type IntoIter = std::slice::Iter<'a, TrackRef>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// In JSON a list stays an array of the tracks kept (the shape scripts already read); the
/// exact numbers are in the report's `counts`.
impl Serialize for TrackList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown.serialize(s)
    }
}

/// The exact size of every list, for scripts: a routine list may show fewer tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: usize,
    pub adopted: usize,
    pub linked: usize,
    pub downloaded: usize,
    pub failed: usize,
    pub unavailable: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackRef {
    pub key: TrackKey,
    pub title: String,
    pub artist: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// For removed tracks: what the removed-track policy did (or, in a dry run, would do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For downloads: what fetched the file (`native`, `yt-dlp`), or `None` when it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<&'static str>,
    /// For downloads: what the analysis measured ("120.0 BPM, A Minor"), or why it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<String>,
}

impl TrackRef {
    /// A track as a routine list holds it, with only its key, title and artist (tests).
    #[cfg(test)]
    pub(crate) fn sample(
        key: impl Into<String>,
        title: impl Into<String>,
        artist: &str,
    ) -> TrackRef {
        TrackRef {
            key: TrackKey::new(key.into()),
            title: title.into(),
            artist: artist.into(),
            page_id: None,
            path: None,
            action: None,
            engine: None,
            analysis: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Notion,
    Download,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackFailure {
    pub key: TrackKey,
    pub title: String,
    pub stage: Stage,
    pub error: String,
    /// Failed too often: left alone until `playlistd retry`.
    pub parked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackUnavailable {
    pub key: TrackKey,
    pub title: String,
    pub reason: UnavailableReason,
}

/// A problem of the setup that only a person can fix, seen during a run. The daemon alerts on
/// each kind once while it lasts (`notify::alerts`), and `/healthz` turns unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Notion rejected the token (401), or no token could be read.
    NotionToken,
    /// Notion refused or could not find the database (not shared, capabilities).
    NotionAccess,
    /// SoundCloud's bot protection answered with a challenge page.
    SoundcloudBlocked,
    /// No SoundCloud client id could be found, or the configured one is stale.
    SoundcloudClientId,
    DiskFull,
    FolderNotWritable,
}

/// The service or resource a problem belongs to: a run that used it without meeting the
/// problem shows it cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Notion,
    SoundCloud,
    Disk,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 6] = [
        ProblemKind::NotionToken,
        ProblemKind::NotionAccess,
        ProblemKind::SoundcloudBlocked,
        ProblemKind::SoundcloudClientId,
        ProblemKind::DiskFull,
        ProblemKind::FolderNotWritable,
    ];

    /// The stable name, as stored in the state and sent in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::NotionToken => "notion_token",
            ProblemKind::NotionAccess => "notion_access",
            ProblemKind::SoundcloudBlocked => "soundcloud_blocked",
            ProblemKind::SoundcloudClientId => "soundcloud_client_id",
            ProblemKind::DiskFull => "disk_full",
            ProblemKind::FolderNotWritable => "folder_not_writable",
        }
    }

    pub fn parse(s: &str) -> Option<ProblemKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What a person reads as the alert's title.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::NotionToken => "Notion rejects the token",
            ProblemKind::NotionAccess => "Notion database not shared or not readable",
            ProblemKind::SoundcloudBlocked => "SoundCloud is blocking requests",
            ProblemKind::SoundcloudClientId => "SoundCloud client id not found",
            ProblemKind::DiskFull => "Disk full",
            ProblemKind::FolderNotWritable => "Download folder not writable",
        }
    }

    pub fn area(self) -> Area {
        match self {
            ProblemKind::NotionToken | ProblemKind::NotionAccess => Area::Notion,
            ProblemKind::SoundcloudBlocked | ProblemKind::SoundcloudClientId => Area::SoundCloud,
            ProblemKind::DiskFull | ProblemKind::FolderNotWritable => Area::Disk,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The error as the run met it, with its fix.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(remote = "Self")]
pub struct RunReport {
    pub playlist: String,
    pub url: String,
    pub title: String,
    pub dry_run: bool,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub listed: usize,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    /// Pages created (or, in a dry run, that would be created).
    pub created: TrackList,
    /// Pages that already existed in Notion and were adopted instead of created.
    pub adopted: TrackList,
    /// Existing pages that got this playlist added to their playlist property.
    pub linked: TrackList,
    pub downloaded: TrackList,
    pub failed: Vec<TrackFailure>,
    pub unavailable: Vec<TrackUnavailable>,
    /// Tracks that left the playlist since the last complete listing.
    pub removed: Vec<TrackRef>,
    /// Failed before and not yet due for another attempt.
    pub waiting: usize,
    pub notion_requests: u64,
    pub soundcloud_requests: u64,
    /// Why downloads were skipped this run (a folder problem: the tracks are not charged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloads_skipped: Option<String>,
    /// Why the run stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Setup problems met (at most one of each kind), for alerts and `/healthz`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// In JSON the report's fields are followed by `counts`, the exact size of every list, derived
/// as it is written (`remote = "Self"` above makes the derived code an inherent function, so
/// this impl can add the field without repeating the others).
impl Serialize for RunReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a RunReport);
        impl Serialize for Fields<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                RunReport::serialize(self.0, s)
            }
        }
        #[derive(Serialize)]
        struct WithCounts<'a> {
            #[serde(flatten)]
            report: Fields<'a>,
            counts: Counts,
        }
        WithCounts {
            report: Fields(self),
            counts: self.counts(),
        }
        .serialize(s)
    }
}

impl RunReport {
    pub fn new(playlist: &str, url: &str, dry_run: bool) -> RunReport {
        let now = Utc::now();
        RunReport {
            playlist: playlist.to_string(),
            url: url.to_string(),
            title: String::new(),
            dry_run,
            started: now,
            finished: now,
            listed: 0,
            complete: false,
            incomplete_reason: None,
            created: TrackList::default(),
            adopted: TrackList::default(),
            linked: TrackList::default(),
            downloaded: TrackList::default(),
            failed: vec![],
            unavailable: vec![],
            removed: vec![],
            waiting: 0,
            notion_requests: 0,
            soundcloud_requests: 0,
            downloads_skipped: None,
            error: None,
            problems: vec![],
        }
    }

    /// Records a setup problem; the first of each kind is kept.
    pub fn problem(&mut self, kind: ProblemKind, detail: impl Into<String>) {
        if !self.problems.iter().any(|p| p.kind == kind) {
            self.problems.push(Problem {
                kind,
                detail: detail.into(),
            });
        }
    }

    /// The areas this run used without meeting a problem there: open alerts of those areas
    /// are over. Notion counts only when it was asked something (an unchanged playlist asks
    /// nothing), SoundCloud when the listing came back whole, the disk when a file landed.
    pub fn healthy_areas(&self) -> Vec<Area> {
        let met = |a: Area| self.problems.iter().any(|p| p.kind.area() == a);
        let mut out = vec![];
        if self.notion_requests > 0 && !met(Area::Notion) {
            out.push(Area::Notion);
        }
        if self.complete && self.soundcloud_requests > 0 && !met(Area::SoundCloud) {
            out.push(Area::SoundCloud);
        }
        if self.downloaded.iter().any(|d| d.engine.is_some()) && !met(Area::Disk) {
            out.push(Area::Disk);
        }
        out
    }

    /// The exact size of every list.
    pub fn counts(&self) -> Counts {
        Counts {
            created: self.created.len(),
            adopted: self.adopted.len(),
            linked: self.linked.len(),
            downloaded: self.downloaded.len(),
            failed: self.failed.len(),
            unavailable: self.unavailable.len(),
            removed: self.removed.len(),
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty() && self.downloads_skipped.is_none()
    }

    pub fn summary(&self) -> RunSummary {
        RunSummary {
            started: self.started,
            finished: self.finished,
            ok: self.ok(),
            listed: self.listed,
            created: self.created.len(),
            adopted: self.adopted.len(),
            downloaded: self.downloaded.len(),
            failed: self.failed.len(),
            unavailable: self.unavailable.len(),
            removed: self.removed.len(),
            error: self.error.clone().or_else(|| {
                self.failed
                    .last()
                    .map(|f| format!("{} ({}): {}", f.title, f.key, f.error))
            }),
        }
    }

    pub fn duration(&self) -> std::time::Duration {
        (self.finished - self.started).to_std().unwrap_or_default()
    }

    /// The one line logged per sync.
    pub fn summary_line(&self) -> String {
        let verb = if self.dry_run { "would sync" } else { "synced" };
        let mut s = format!(
            "{verb} {:?}: {} listed, {} new, {} adopted, {} linked, {} downloaded, {} failed, {} unavailable, {} removed",
            self.playlist,
            self.listed,
            self.created.len(),
            self.adopted.len(),
            self.linked.len(),
            self.downloaded.len(),
            self.failed.len(),
            self.unavailable.len(),
            self.removed.len(),
        );
        if self.waiting > 0 {
            s.push_str(&format!(", {} waiting to retry", self.waiting));
        }
        s.push_str(&format!(
            "; {} Notion and {} SoundCloud requests in {:.1}s",
            self.notion_requests,
            self.soundcloud_requests,
            self.duration().as_secs_f64()
        ));
        // Each reason may carry its fix; the line keeps one: the stop's, which is what the
        // user must act on first, else the first one given.
        let incomplete = (!self.complete && self.error.is_none()).then(|| {
            self.incomplete_reason
                .as_deref()
                .unwrap_or("unknown reason")
        });
        let keep_fix_of_stop = self.error.as_deref().is_some_and(has_fix);
        let mut fixed = keep_fix_of_stop;
        let mut reason = |text: &str| -> String {
            if fixed {
                without_fix(text)
            } else {
                fixed = has_fix(text);
                text.to_string()
            }
        };
        if let Some(r) = incomplete {
            s.push_str(&format!(" (listing incomplete: {})", reason(r)));
        }
        if let Some(d) = &self.downloads_skipped {
            s.push_str(&format!("; downloads skipped: {}", reason(d)));
        }
        if let Some(e) = &self.error {
            let e = if keep_fix_of_stop {
                e.clone()
            } else {
                reason(e)
            };
            s.push_str(&format!("; stopped: {e}"));
        }
        s
    }

    /// The detailed lines for a person at a terminal.
    pub fn details(&self) -> Vec<String> {
        let w = |done: &str, would: &str| {
            if self.dry_run {
                would.to_string()
            } else {
                done.to_string()
            }
        };
        let mut out = vec![];
        let p = printable;
        for t in &self.created {
            out.push(format!(
                "  {} {} - {}",
                w("created ", "would create "),
                p(&t.artist),
                p(&t.title)
            ));
        }
        more(&mut out, &self.created, w("created", "to create"));
        for t in &self.adopted {
            out.push(format!(
                "  {} {} - {}",
                w("adopted ", "would adopt  "),
                p(&t.artist),
                p(&t.title)
            ));
        }
        more(&mut out, &self.adopted, w("adopted", "to adopt"));
        for t in &self.downloaded {
            let path = t
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let by = t.engine.map(|e| format!(" ({e})")).unwrap_or_default();
            let measured = t
                .analysis
                .as_deref()
                .map(|a| format!(" [{a}]"))
                .unwrap_or_default();
            out.push(format!(
                "  {}{by} {} - {} {}{measured}",
                w("downloaded", "would download"),
                p(&t.artist),
                p(&t.title),
                path
            ));
        }
        more(&mut out, &self.downloaded, w("downloaded", "to download"));
        for f in &self.failed {
            let parked = if f.parked {
                " [parked: run `playlistd retry` to try again]"
            } else {
                ""
            };
            out.push(format!(
                "  failed ({:?}) {}: {}{parked}",
                f.stage,
                p(&f.title),
                p(&f.error)
            ));
        }
        for u in &self.unavailable {
            let title = if u.title.is_empty() {
                "untitled track".into()
            } else {
                p(&u.title)
            };
            out.push(format!("  unavailable {title} ({}): {}", u.key, u.reason));
        }
        for r in &self.removed {
            let action = r.action.as_deref().unwrap_or("page kept");
            out.push(format!(
                "  left the playlist: {} - {} ({action}; the file is kept)",
                p(&r.artist),
                p(&r.title)
            ));
        }
        out
    }
}

/// The line that stands for the tracks a capped list counted but did not keep.
fn has_fix(text: &str) -> bool {
    text.contains("(fix: ")
}

/// `text` without its `(fix: …)` parts (parentheses inside a fix are matched).
fn without_fix(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("(fix: ") {
        out.push_str(rest[..at].trim_end());
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[at..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn more(out: &mut Vec<String>, list: &TrackList, what: String) {
    if list.omitted() > 0 {
        out.push(format!(
            "  ... and {} more {what} (the counts are exact; see the summary line)",
            list.omitted()
        ));
    }
}

/// Titles come from strangers: control characters (terminal escape sequences included) are
/// shown as spaces, so printing a report can never drive the user's terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// Writes the reports as JSON, atomically, so a reader never sees half a file.
pub fn write_results_file(path: &Path, reports: &[RunReport]) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Results<'a> {
        ok: bool,
        playlists: &'a [RunReport],
    }
    let body = serde_json::to_vec_pretty(&Results {
        ok: reports.iter().all(RunReport::ok),
        playlists: reports,
    })
    .expect("reports serialize");
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::write_atomically(path, &body, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(i: usize) -> TrackRef {
        TrackRef::sample(i.to_string(), format!("Title {i}"), "Artist")
    }

    fn failure(i: usize) -> TrackFailure {
        TrackFailure {
            key: TrackKey::new(i.to_string()),
            title: format!("Title {i}"),
            stage: Stage::Notion,
            error: "boom".into(),
            parked: false,
        }
    }

    /// A summary line gathers several reasons, each with its fix: it keeps one fix, the
    /// stop's when the run stopped, else the first.
    #[test]
    fn the_summary_line_carries_one_fix() {
        let mut r = RunReport::new("pl", "https://soundcloud.com/a/sets/b", false);
        r.complete = false;
        r.incomplete_reason = Some("batch 2 timed out (fix: check the network)".into());
        r.downloads_skipped =
            Some("/music is not writable (fix: make it writable (or free space))".into());
        let line = r.summary_line();
        assert_eq!(line.matches("(fix: ").count(), 1, "{line}");
        assert!(
            line.contains(
                "timed out (fix: check the network)); downloads skipped: /music is not writable"
            ),
            "{line}"
        );
        assert!(!line.contains("free space"), "{line}");

        r.error = Some("Notion refused the token (fix: check NOTION_TOKEN)".into());
        let line = r.summary_line();
        assert_eq!(line.matches("(fix: ").count(), 1, "{line}");
        assert!(
            line.ends_with("stopped: Notion refused the token (fix: check NOTION_TOKEN)"),
            "{line}"
        );
        assert_eq!(without_fix("no fix here"), "no fix here");
    }

    #[test]
    fn routine_lists_keep_exact_counts_but_only_the_first_entries() {
        let n = LIST_CAP * 3 + 7;
        let mut r = RunReport::new("pl", "https://soundcloud.com/a/sets/b", false);
        for i in 0..n {
            r.created.push(track(i));
            r.failed.push(failure(i));
        }
        r.listed = n;
        assert_eq!(r.created.len(), n);
        assert_eq!(r.created.iter().count(), LIST_CAP);
        assert_eq!(r.created.omitted(), n - LIST_CAP);
        // The first ones are kept, in order.
        assert_eq!(r.created.iter().next().unwrap().key.as_str(), "0");
        assert_eq!(
            r.created.iter().last().unwrap().key.as_str(),
            (LIST_CAP - 1).to_string()
        );
        // Failures are never cut.
        assert_eq!(r.failed.len(), n);
        assert_eq!(r.summary().created, n);
        assert_eq!(r.summary().failed, n);
        assert!(r.summary_line().contains(&format!("{n} new")));

        let details = r.details();
        let created_lines = details
            .iter()
            .filter(|l| l.starts_with("  created "))
            .count();
        assert_eq!(created_lines, LIST_CAP);
        assert!(
            details
                .iter()
                .any(|l| l.contains(&format!("... and {} more created", n - LIST_CAP))),
            "{details:?}"
        );
        assert_eq!(details.iter().filter(|l| l.contains("failed (")).count(), n);

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["created"].as_array().unwrap().len(), LIST_CAP);
        assert_eq!(json["failed"].as_array().unwrap().len(), n);
        assert_eq!(json["counts"]["created"], n);
        assert_eq!(json["counts"]["failed"], n);
        assert_eq!(json["counts"]["downloaded"], 0);
        assert_eq!(json["playlist"], "pl");
        assert_eq!(json["listed"], n);
    }

    #[test]
    fn a_short_list_is_whole_and_says_nothing_more() {
        let mut r = RunReport::new("pl", "u", true);
        for i in 0..3 {
            r.downloaded.push(track(i));
        }
        assert_eq!((r.downloaded.len(), r.downloaded.omitted()), (3, 0));
        let details = r.details();
        assert_eq!(details.len(), 3, "{details:?}");
        assert!(details.iter().all(|l| l.contains("would download")));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["downloaded"].as_array().unwrap().len(), 3);
        assert_eq!(json["counts"]["downloaded"], 3);
    }

    #[test]
    fn an_appended_list_is_the_list_both_pushes_would_make() {
        let (mut a, mut b, mut whole) = (
            TrackList::default(),
            TrackList::default(),
            TrackList::default(),
        );
        for i in 0..LIST_CAP - 3 {
            a.push(track(i));
            whole.push(track(i));
        }
        for i in LIST_CAP - 3..LIST_CAP + 9 {
            b.push(track(i));
            whole.push(track(i));
        }
        a.append(b);
        assert_eq!(a, whole);
        assert_eq!((a.len(), a.omitted()), (LIST_CAP + 9, 9));
    }
}
