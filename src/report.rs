//! What one sync did, for the person (summary lines), for scripts (`--results-file` JSON) and
//! for `status` (the [`RunSummary`] kept in the state).
//!
//! Invariant: the report is built from what actually happened, track by track; counts are
//! derived from the lists, never kept separately, so they cannot disagree.

use crate::model::{TrackKey, UnavailableReason};
use crate::state::RunSummary;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub created: Vec<TrackRef>,
    /// Pages that already existed in Notion and were adopted instead of created.
    pub adopted: Vec<TrackRef>,
    /// Existing pages that got this playlist added to their playlist property.
    pub linked: Vec<TrackRef>,
    pub downloaded: Vec<TrackRef>,
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
            created: vec![],
            adopted: vec![],
            linked: vec![],
            downloaded: vec![],
            failed: vec![],
            unavailable: vec![],
            removed: vec![],
            waiting: 0,
            notion_requests: 0,
            soundcloud_requests: 0,
            downloads_skipped: None,
            error: None,
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
        if !self.complete && self.error.is_none() {
            s.push_str(&format!(
                " (listing incomplete: {})",
                self.incomplete_reason
                    .as_deref()
                    .unwrap_or("unknown reason")
            ));
        }
        if let Some(d) = &self.downloads_skipped {
            s.push_str(&format!("; downloads skipped: {d}"));
        }
        if let Some(e) = &self.error {
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
        for t in &self.adopted {
            out.push(format!(
                "  {} {} - {}",
                w("adopted ", "would adopt  "),
                p(&t.artist),
                p(&t.title)
            ));
        }
        for t in &self.downloaded {
            let path = t
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push(format!(
                "  {} {} - {} {}",
                w("downloaded", "would download"),
                p(&t.artist),
                p(&t.title),
                path
            ));
        }
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
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
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
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}
