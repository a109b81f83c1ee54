//! `playlistd status`: a per-playlist view of the state file, safe to read while a sync runs
//! (the file is only ever replaced whole).

use crate::config::Config;
use crate::state::{RunSummary, State, StepStatus};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

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
    pub removed: usize,
    pub last_error: Option<String>,
}

pub fn collect(cfg: &Config, state: &State, now: DateTime<Utc>) -> Vec<PlaylistStatus> {
    cfg.playlists
        .iter()
        .map(|p| {
            let ps = state.playlists.get(&p.name);
            let members = ps.map(|s| s.members.as_slice()).unwrap_or(&[]);
            let tracks: Vec<_> = members.iter().filter_map(|k| state.tracks.get(k)).collect();
            let count = |f: &dyn Fn(&crate::state::TrackState) -> bool| {
                tracks.iter().filter(|t| f(t)).count()
            };
            let last_error = tracks
                .iter()
                .filter_map(|t| {
                    t.download
                        .last_error
                        .as_ref()
                        .or(t.notion.last_error.as_ref())
                })
                .next_back()
                .cloned()
                .or_else(|| {
                    ps.and_then(|s| s.last_run.as_ref())
                        .and_then(|r| r.error.clone())
                });
            PlaylistStatus {
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
                tracks: tracks.len(),
                in_notion: count(&|t| t.notion.is_done()),
                downloaded: count(&|t| t.download.is_done()),
                failed: count(&|t| {
                    t.notion.status == StepStatus::Failed || t.download.status == StepStatus::Failed
                }),
                parked: count(&|t| {
                    t.notion.status == StepStatus::Parked || t.download.status == StepStatus::Parked
                }),
                unavailable: count(&|t| t.unavailable.is_some()),
                removed: ps.map(|s| s.removed.len()).unwrap_or(0),
                last_error,
            }
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
        if let Some(e) = &self.last_error {
            s.push_str(&format!("\n  last error: {e}"));
        }
        s
    }
}
