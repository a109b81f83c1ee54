//! `playlistd status`: a per-playlist view of the state database, read directly and safe to
//! read while a sync or the daemon writes (SQLite in WAL mode: a reader sees the last whole
//! save and never blocks the writer).
//!
//! Unavailable tracks are counted by reason, so a person sees why (DRM-protected label tracks,
//! geo-blocks, deleted tracks) without reading the state; none of them is a failure.

use crate::config::Config;
use crate::model::UnavailableReason;
use crate::state::{RunSummary, State, StateError, StepStatus};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct PlaylistStatus {
    pub name: String,
    pub url: String,
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<RunSummary>,
    pub last_success: Option<DateTime<Utc>>,
    pub tracks: usize,
    pub in_notion: usize,
    pub downloaded: usize,
    pub failed: usize,
    pub parked: usize,
    pub unavailable: usize,
    /// `unavailable`, by reason.
    pub unavailable_by_reason: BTreeMap<UnavailableReason, usize>,
    pub removed: usize,
    pub last_error: Option<String>,
}

/// The status of every configured playlist. Each track's record is read once and counted;
/// none is kept, so this costs the same memory for 10 tracks as for 100,000.
pub fn collect(
    cfg: &Config,
    state: &State,
    now: DateTime<Utc>,
) -> Result<Vec<PlaylistStatus>, StateError> {
    cfg.playlists
        .iter()
        .map(|p| {
            let ps = state.playlists.get(&p.name);
            let members = ps.map(|s| s.members.as_slice()).unwrap_or(&[]);
            let mut row = PlaylistStatus {
                name: p.name.clone(),
                url: p.url.to_string(),
                schedule: p.schedule.expr.clone(),
                next_run: p
                    .schedule
                    .cron
                    .find_next_occurrence(&now.with_timezone(&chrono::Local), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                last_run: ps.and_then(|s| s.last_run.clone()),
                last_success: ps.and_then(|s| s.last_success),
                tracks: 0,
                in_notion: 0,
                downloaded: 0,
                failed: 0,
                parked: 0,
                unavailable: 0,
                unavailable_by_reason: BTreeMap::new(),
                removed: ps.map(|s| s.removed.len()).unwrap_or(0),
                last_error: None,
            };
            for key in members {
                let Some(t) = state.tracks.get(key)? else {
                    continue;
                };
                let either = |s: StepStatus| t.notion.status == s || t.download.status == s;
                row.tracks += 1;
                row.in_notion += usize::from(t.notion.is_done());
                row.downloaded += usize::from(t.download.is_done());
                row.failed += usize::from(either(StepStatus::Failed));
                row.parked += usize::from(either(StepStatus::Parked));
                if let Some(reason) = t.unavailable {
                    row.unavailable += 1;
                    *row.unavailable_by_reason.entry(reason).or_default() += 1;
                }
                // The last member's error in playlist order.
                if let Some(e) = t
                    .download
                    .last_error
                    .as_ref()
                    .or(t.notion.last_error.as_ref())
                {
                    row.last_error = Some(e.clone());
                }
            }
            if row.last_error.is_none() {
                row.last_error = ps
                    .and_then(|s| s.last_run.as_ref())
                    .and_then(|r| r.error.clone());
            }
            Ok(row)
        })
        .collect()
}

impl PlaylistStatus {
    pub fn render<Tz: TimeZone>(&self, tz: &Tz) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        let t = |d: Option<DateTime<Utc>>| {
            d.map(|d| d.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "never".into())
        };
        let last = match &self.last_run {
            None => "never".to_string(),
            Some(r) => format!(
                "{} ({}: {} new, {} adopted, {} downloaded, {} failed)",
                t(Some(r.finished)),
                if r.ok { "ok" } else { "with errors" },
                r.created,
                r.adopted,
                r.downloaded,
                r.failed
            ),
        };
        let mut s = format!(
            "{}\n  url:        {}\n  schedule:   {} (next {})\n  last run:   {last}\n  tracks:     {} known, {} in Notion, {} downloaded, {} failed, {} parked, {} unavailable, {} removed",
            self.name,
            self.url,
            self.schedule,
            t(self.next_run),
            self.tracks,
            self.in_notion,
            self.downloaded,
            self.failed,
            self.parked,
            self.unavailable,
            self.removed
        );
        if !self.unavailable_by_reason.is_empty() {
            let why: Vec<String> = self
                .unavailable_by_reason
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            s.push_str(&format!("\n  unavailable: {}", why.join(", ")));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!("\n  last error: {e}"));
        }
        s
    }
}
