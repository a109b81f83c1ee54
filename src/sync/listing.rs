//! The first stage: the listing, streamed into the diff against the state.
//!
//! Invariants:
//! - the listing is never held whole: each batch is compared with the state and dropped; a
//!   track with work goes to the [`Pending`] table, the rest leaves nothing but its member key;
//! - a record is read without keeping a copy; only a record this listing changes is written
//!   back (in a dry run not even that: the change is made on a copy of that one record and
//!   dropped). Every [`DIFF_CHUNK`] listed tracks the state is saved, so the records this sync
//!   changes do not pile up in memory either;
//! - an incomplete or truncated listing never marks a track as removed, and keeps the members
//!   it did not show.

use super::pending::{DownloadDue, EntryRef, NotionDue, Pending};
use super::{Run, SyncError, drm, track_ref};
use crate::model::{ListedTrack, TrackKey};
use crate::report::{RunReport, TrackUnavailable};
use crate::source::ListingEnd;
use crate::state::{StateError, StateStore, TrackState};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;

/// Listed tracks between two state saves during the diff: the state then holds at most this
/// many changed records in memory, plus one listing batch (a first sync of 10,000 tracks
/// changes them all).
const DIFF_CHUNK: usize = 1024;

impl Run<'_> {
    /// Lists the playlist into the diff, settles its members, and returns the pending work.
    /// The listing diffed into the pending work, and whether it was complete (not cut short,
    /// not truncated by `max_tracks`): only a complete one may shorten the playlist file.
    pub(super) async fn list_and_diff(
        &self,
        report: &mut RunReport,
    ) -> Result<(Pending, bool), SyncError> {
        let mut diff = Diff {
            store: &self.engine.store,
            playlist: &self.pl.name,
            now: Utc::now(),
            dry_run: self.opts.dry_run,
            downloads_on: self.downloads_on,
            max: self.opts.max_tracks.or(self.pl.max_tracks),
            truncated: false,
            members: Vec::new(),
            since_save: 0,
            pending: Pending::open()?,
            report,
        };
        let end = self
            .engine
            .source
            .list_streamed(self.pl.source, &self.pl.url, &self.cancel, |batch| {
                diff.take(batch)
            })
            .await
            .map_err(|e| match e {
                // A SIGTERM must not wait for a 429 storm to blow over (up to 10 minutes).
                SyncError::Source(crate::source::SourceError::Cancelled) => SyncError::Cancelled,
                other => other,
            })?;
        let Diff {
            now,
            truncated,
            mut members,
            mut pending,
            report,
            ..
        } = diff;
        // Grown by doubling as the listing streamed in; the members stay in the state for the
        // whole run, so they give back the slack now.
        members.shrink_to_fit();
        pending.finish()?;
        report.title = end.title.clone();
        report.listed = members.len();
        report.complete = end.complete;
        report.incomplete_reason = end.incomplete_reason.clone();
        let settle = Settle {
            end: &end,
            complete: end.complete && !truncated,
            now,
        };
        let complete = settle.complete;
        self.settle_members(settle, members, report)?;
        Ok((pending, complete))
    }

    /// The playlist's members after this listing, and the tracks it no longer lists. A dry run
    /// only reports; otherwise the playlist's record is updated and marked for the next save.
    fn settle_members(
        &self,
        s: Settle<'_>,
        members: Vec<TrackKey>,
        report: &mut RunReport,
    ) -> Result<(), StateError> {
        let mut store = self.store();
        let state = &mut store.state;
        let gone: Vec<TrackKey> = match state.playlists.get(&self.pl.name) {
            None => vec![],
            Some(ps) => {
                let current: HashSet<&TrackKey> = members.iter().collect();
                ps.members
                    .iter()
                    .filter(|k| !current.contains(k))
                    .cloned()
                    .collect()
            }
        };
        if s.complete {
            for k in &gone {
                if let Some(ts) = state.tracks.get(k)? {
                    report.removed.push(track_ref(k, &ts));
                }
            }
        }
        if self.opts.dry_run {
            return Ok(());
        }
        let ps = store.playlist_mut(&self.pl.name);
        ps.url = self.pl.url.to_string();
        ps.title = s.end.title.clone();
        if s.complete {
            for k in gone {
                ps.removed.entry(k).or_insert(s.now);
            }
            for k in &members {
                ps.removed.remove(k);
            }
            ps.members = members;
        } else {
            // Keep members the partial listing did not show; nothing counts as removed.
            ps.members = members.into_iter().chain(gone).collect();
        }
        Ok(())
    }
}

/// How the listing ended, for [`Run::settle_members`].
#[derive(Clone, Copy)]
struct Settle<'a> {
    end: &'a ListingEnd,
    /// Complete and not truncated: the tracks it does not list have left the playlist.
    complete: bool,
    now: DateTime<Utc>,
}

/// The diff of one listing against the state, fed a batch at a time as the listing streams.
struct Diff<'a> {
    store: &'a Mutex<StateStore>,
    playlist: &'a str,
    now: DateTime<Utc>,
    dry_run: bool,
    downloads_on: bool,
    /// `max_tracks`: tracks past it are listed but ignored.
    max: Option<usize>,
    /// Some tracks were ignored for `max`.
    truncated: bool,
    /// The playlist's members, in listing order.
    members: Vec<TrackKey>,
    /// Listed tracks since the last save.
    since_save: usize,
    pending: Pending,
    report: &'a mut RunReport,
}

impl Diff<'_> {
    fn take(&mut self, batch: Vec<ListedTrack>) -> Result<(), SyncError> {
        let store = self.store;
        let mut guard = store.lock().expect("state lock");
        for lt in batch {
            if self.max.is_some_and(|m| self.members.len() >= m) {
                self.truncated = true;
                break;
            }
            self.members.push(lt.track.key.clone());
            self.track(&mut guard, lt)?;
            self.since_save += 1;
        }
        if !self.dry_run && self.since_save >= DIFF_CHUNK {
            guard.save()?;
            self.since_save = 0;
        }
        Ok(())
    }

    /// One listed track: its record brought up to date, and its work written to the table.
    fn track(&mut self, store: &mut StateStore, lt: ListedTrack) -> Result<(), SyncError> {
        let (mut ts, mut is_changed) = match store.state.tracks.get(&lt.track.key)? {
            Some(ts) => (ts, false),
            None => (
                Cow::Owned(TrackState {
                    first_seen: self.now,
                    ..Default::default()
                }),
                true,
            ),
        };
        is_changed |= refresh(&mut ts, &lt);
        let view = drm::view(&ts, &lt);
        if ts.unavailable != view.unavailable || ts.drm != view.verdict {
            let ts = ts.to_mut();
            ts.unavailable = view.unavailable;
            ts.drm = view.verdict;
            is_changed = true;
        }
        if let Some(reason) = view.unavailable {
            self.report.unavailable.push(TrackUnavailable {
                key: lt.track.key.clone(),
                title: ts.title.clone(),
                reason,
            });
        } else {
            let (notion, download) = self.due(&ts);
            if notion.is_some() || download.is_some() {
                self.pending.push(&EntryRef {
                    track: &lt.track,
                    page_id: ts.notion_page_id.as_deref(),
                    download_path: ts.download_path.as_deref(),
                    drm_check: lt.drm_check.as_ref().filter(|_| view.needs_check),
                    notion,
                    download,
                })?;
            }
        }
        if is_changed && !self.dry_run {
            let ts = ts.into_owned();
            store.state.tracks.insert(lt.track.key, ts);
        }
        Ok(())
    }

    /// The work a listed, available track has in this run; a step waiting for its backoff is
    /// counted as waiting.
    fn due(&mut self, ts: &TrackState) -> (Option<NotionDue>, Option<DownloadDue>) {
        let now = self.now;
        let notion = if ts.notion.is_done() {
            (!ts.notion_playlists.contains(self.playlist)).then_some(NotionDue::Tag)
        } else if ts.notion.is_due(now) {
            Some(NotionDue::Create)
        } else {
            self.report.waiting += 1;
            None
        };
        let download = if !self.downloads_on {
            None
        } else if ts.download.is_done() {
            let page_and_file = ts.notion_page_id.is_some() && ts.download_path.is_some();
            // The analysis goes to the page with the file, or after it when it came later.
            let told =
                ts.download_written_back && (ts.analysis_written_back || ts.analysis.is_none());
            (page_and_file && !told).then_some(DownloadDue::WriteBack)
        } else if ts.download.is_due(now) {
            Some(DownloadDue::Fetch)
        } else {
            self.report.waiting += 1;
            None
        };
        (notion, download)
    }
}

/// Brings the record's copy of the listing's fields up to date; true when it changed. A
/// listing without a title (a stub SoundCloud would not fill) changes nothing.
fn refresh(ts: &mut Cow<'_, TrackState>, lt: &ListedTrack) -> bool {
    let t = &lt.track;
    let stale = ts.title != t.title
        || ts.artist != t.artist
        || ts.url != t.url
        || ts.soundcloud_id != t.soundcloud_id
        || (t.duration_ms.is_some() && ts.duration_ms != t.duration_ms);
    if t.title.is_empty() || !stale {
        return false;
    }
    let ts = ts.to_mut();
    ts.title = t.title.clone();
    ts.artist = t.artist.clone();
    ts.url = t.url.clone();
    ts.soundcloud_id = t.soundcloud_id;
    ts.duration_ms = t.duration_ms.or(ts.duration_ms);
    true
}
