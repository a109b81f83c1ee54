//! `playlistd analyze`: the analysis + formats stage and the write-back, for the tracks of a
//! playlist that were downloaded before (by an earlier playlistd, or before `analyze` or
//! `formats` were set).
//!
//! Invariants:
//! - only files on disk are read, and only what is missing is made: a track already analysed
//!   is not analysed again, a copy that exists is not written again, and tags are filled in,
//!   never replaced (TBPM/TKEY stay unless `overwrite_analysis`);
//! - resumable: each track's outcome goes to the state as it lands, so an interrupted backfill
//!   goes on where it stopped;
//! - Notion sees the same budget as a sync: before any write, one lookup per batch of pages
//!   reads what they hold, so a `Tempo` or `Key` set by a person (since the page was made) is
//!   kept; then one write per page that has something new.

use super::downloads::state_analysis;
use super::{Run, SyncError, SyncOptions};
use crate::audio::library::{Item, Outcome, copy_path};
use crate::config::PlaylistConfig;
use crate::model::{Track, TrackKey};
use crate::state::{PageKept, TrackState};
use std::path::PathBuf;
use tokio::task::JoinSet;

/// What a backfill of one playlist did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub playlist: String,
    /// Tracks of the playlist with a file on disk.
    pub files: usize,
    /// Files analysed or given copies now.
    pub prepared: usize,
    pub cannot_decode: usize,
    /// Pages written.
    pub written_back: usize,
    /// Per track: its title and what went wrong (retried by the next backfill).
    pub failed: Vec<(String, String)>,
}

impl BackfillReport {
    pub fn summary_line(&self) -> String {
        format!(
            "{}: {} file(s); {} analysed or converted, {} cannot be decoded, {} page(s) updated, {} failed",
            self.playlist,
            self.files,
            self.prepared,
            self.cannot_decode,
            self.written_back,
            self.failed.len()
        )
    }
}

/// Told as the backfill goes: the tracks to prepare (once), then each one done.
pub enum BackfillStep<'a> {
    Planned(usize),
    Done(&'a str),
}

/// A track of the playlist with a file on disk.
struct OnDisk {
    track: Track,
    path: PathBuf,
    /// The library stage has something to do with it.
    needs_work: bool,
}

impl super::Engine {
    /// Backfills one playlist (see the module invariants).
    pub async fn backfill(
        &self,
        pl: &PlaylistConfig,
        progress: &(dyn Fn(BackfillStep<'_>) + Sync),
    ) -> Result<BackfillReport, SyncError> {
        let opts = SyncOptions::default();
        let run = Run::new(self, pl, &opts);
        let mut report = BackfillReport {
            playlist: pl.name.clone(),
            ..BackfillReport::default()
        };
        let on_disk = run.on_disk()?;
        report.files = on_disk.len();
        let work: Vec<&OnDisk> = on_disk.iter().filter(|o| o.needs_work).collect();
        progress(BackfillStep::Planned(work.len()));
        run.prepare_all(&work, &mut report, progress).await?;
        run.tell_pages(&on_disk, &mut report).await?;
        self.checkpoint(true)?;
        Ok(report)
    }
}

impl Run<'_> {
    /// The playlist's tracks whose file is on disk, in playlist order.
    fn on_disk(&self) -> Result<Vec<OnDisk>, SyncError> {
        let lib = &self.engine.config.download.library;
        let store = self.store();
        let members: Vec<TrackKey> = store
            .state
            .playlists
            .get(&self.pl.name)
            .map(|p| p.members.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for key in members {
            let Some(ts) = store.state.tracks.get(&key)? else {
                continue;
            };
            let Some(path) = ts.download_path.clone().filter(|p| p.is_file()) else {
                continue;
            };
            let decodable = !matches!(ts.analysis, Some(crate::state::Analysis::Failed(_)));
            let unmeasured = lib.analyze && ts.analysis.is_none();
            let copy_missing = lib
                .copies()
                .filter_map(|f| copy_path(&path, f))
                .any(|p| !p.exists());
            out.push(OnDisk {
                track: track_of(&key, &ts),
                path,
                needs_work: decodable && (unmeasured || copy_missing),
            });
        }
        Ok(out)
    }

    /// The library stage on each file, a few at once (the stage's own pool bounds the work).
    async fn prepare_all(
        &self,
        work: &[&OnDisk],
        report: &mut BackfillReport,
        progress: &(dyn Fn(BackfillStep<'_>) + Sync),
    ) -> Result<(), SyncError> {
        let lib = self.engine.library.clone();
        let window = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        let mut queue = work.iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < window && !self.cancel.is_cancelled() {
                let Some(o) = queue.next() else { break };
                let item = Item {
                    path: o.path.clone(),
                    title: o.track.title.clone(),
                    artist: o.track.artist.clone(),
                    album: self.pl.name.clone(),
                    genre: None,
                    url: o.track.url.clone(),
                    duration_ms: o.track.duration_ms,
                    overwrite_analysis: self.engine.config.notion.overwrite_analysis,
                };
                let (lib, track) = (lib.clone(), o.track.clone());
                running.spawn(async move { (track, lib.prepare(item).await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let Ok((t, r)) = joined else { continue };
            self.record_prepared(&t, r, report)?;
            progress(BackfillStep::Done(&t.title));
        }
        if self.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        Ok(())
    }

    fn record_prepared(
        &self,
        t: &Track,
        r: Result<crate::audio::library::Prepared, crate::audio::library::LibraryError>,
        report: &mut BackfillReport,
    ) -> Result<(), SyncError> {
        match r {
            Ok(p) => {
                report.prepared += 1;
                if matches!(p.analysis, Outcome::CannotDecode(_)) {
                    report.cannot_decode += 1;
                }
                let mut store = self.store();
                if let Some(ts) = store.track_mut(&t.key)? {
                    if let Some(a) = state_analysis(&p.analysis) {
                        ts.analysis = Some(a);
                    }
                    // New copies or a new analysis: the page is told again below.
                    ts.analysis_written_back = false;
                }
            }
            Err(e) => report.failed.push((t.title.clone(), e.to_string())),
        }
        self.checkpoint(false)?;
        Ok(())
    }

    /// Pages not told of their files or analysis: read what they hold, then one write each.
    async fn tell_pages(
        &self,
        on_disk: &[OnDisk],
        report: &mut BackfillReport,
    ) -> Result<(), SyncError> {
        let due: Vec<&OnDisk> = {
            let store = self.store();
            let mut due = Vec::new();
            for o in on_disk {
                if let Some(ts) = store.state.tracks.get(&o.track.key)?
                    && ts.notion_page_id.is_some()
                    && !(ts.download_written_back && ts.analysis_written_back)
                {
                    due.push(o);
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(());
        }
        let Some(sink) = self.sink().await? else {
            return Ok(());
        };
        self.budget.plan_tracks(due.len());
        for batch in due.chunks(sink.lookup_batch()) {
            let pages = sink.lookup(batch.iter().map(|o| &o.track)).await?;
            for o in batch {
                let Some(page) = pages.get(&o.track.key) else {
                    continue;
                };
                if let Some(ts) = self.store().track_mut(&o.track.key)? {
                    ts.page_kept = PageKept {
                        tempo: page.analysis.tempo,
                        key: page.analysis.key,
                    };
                }
                if self.write_back(&o.track, &page.page_id).await? {
                    report.written_back += 1;
                }
            }
        }
        Ok(())
    }
}

/// The track a state record describes, enough to look its page up and tag its files.
fn track_of(key: &TrackKey, ts: &TrackState) -> Track {
    Track {
        key: key.clone(),
        soundcloud_id: ts.soundcloud_id,
        title: ts.title.clone(),
        artist: ts.artist.clone(),
        url: ts.url.clone(),
        download_url: ts.url.clone(),
        duration_ms: ts.duration_ms,
        genre: None,
        artwork_url: None,
        media: None,
    }
}
