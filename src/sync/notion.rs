//! The Notion stage: look every new track up, adopt or link the pages found, create the rest.
//!
//! Invariants:
//! - nothing is created without a lookup: the tracks are read back from the pending work a
//!   lookup query at a time, each chunk looked up and its found pages linked or adopted at
//!   once, and creates start only once every chunk has been looked up. A failed lookup creates
//!   nothing and fails every track that was new to Notion (pages adopted from the chunks
//!   before it stay adopted);
//! - only a chunk's tracks and pages are in memory, and at most [`NOTION_CONCURRENCY`]
//!   creates are in flight (the shared limiter sets the pace);
//! - a create whose track is still downloading waits for it, at most
//!   [`MAX_WAIT_FOR_DOWNLOAD`], so that the page carries the file in the same request;
//! - a fatal error (token, sharing) stops the stage after the creates in flight; a failure
//!   only a person can clear parks the track.

use super::downloads::Settled;
use super::pending::Pending;
use super::{Event, Run, SyncError, track_ref};
use crate::model::Track;
use crate::notion::{ExistingPage, NotionError, PlaylistTag, Sink};
use crate::report::{RunReport, TrackRef};
use crate::state::PageKept;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Creates in flight at once. The shared limiter sets the pace; a few requests in flight keep
/// a slow round trip from stretching the run beyond the rate-limit floor.
const NOTION_CONCURRENCY: usize = 4;
/// How long the next create may wait for its track's download before going without it.
const MAX_WAIT_FOR_DOWNLOAD: Duration = Duration::from_secs(10);

/// What the lookups and creates of one Notion stage share.
struct Shared<'a> {
    sink: &'a Sink,
    tag: PlaylistTag,
    pending: &'a Pending,
    downloads: &'a Settled,
}

/// A create's outcome: the track, whether the create carried its file, the page id.
type Created = (Track, bool, Result<String, NotionError>);

impl Run<'_> {
    /// Looks up and creates pages for new tracks (`create`); adds this playlist to pages that
    /// exist (`tag`).
    pub(super) async fn notion_stage(
        &self,
        report: &mut RunReport,
        pending: &Pending,
        downloads: &Settled,
        create: Vec<u32>,
        tag: Vec<u32>,
    ) -> Result<(), SyncError> {
        if create.is_empty() && tag.is_empty() {
            return Ok(());
        }
        let sink = &self.sink().await?.ok_or_else(|| {
            SyncError::Notion(NotionError::Token(
                "no Notion token available (fix: export NOTION_TOKEN or set notion.token_file)"
                    .into(),
            ))
        })?;
        let stage = Shared {
            sink,
            tag: self.playlist_tag(sink).await?,
            pending,
            downloads,
        };
        match self.look_up(&stage, report, create, tag).await? {
            Some(to_create) => self.create_pages(&stage, report, to_create).await,
            None => Ok(()),
        }
    }

    /// Looks the tracks up a chunk at a time, new tracks first, then the ones to tag; links
    /// or adopts what it finds. Returns the entries to create, or `None` when a lookup failed
    /// (every new track not adopted yet has then failed).
    async fn look_up(
        &self,
        s: &Shared<'_>,
        report: &mut RunReport,
        create: Vec<u32>,
        tag: Vec<u32>,
    ) -> Result<Option<VecDeque<u32>>, SyncError> {
        let mut candidates = create
            .iter()
            .copied()
            .zip(std::iter::repeat(true))
            .chain(tag.iter().copied().zip(std::iter::repeat(false)))
            .peekable();
        let mut to_create: VecDeque<u32> = VecDeque::with_capacity(create.len());
        let mut looked_up = 0;
        while candidates.peek().is_some() {
            let entries = candidates
                .by_ref()
                .take(s.sink.lookup_batch())
                .map(|(id, new)| s.pending.read(id).map(|e| (id, new, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let from = looked_up.min(create.len());
            looked_up += entries.len();
            let mut found = match s
                .sink
                .lookup(entries.iter().map(|(_, _, e)| &e.track))
                .await
            {
                Ok(f) => f,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    // Without a lookup nothing may be created: that is how duplicates happen.
                    // Every new track not adopted yet fails: the ones queued so far and the
                    // ones from this chunk on.
                    let error = format!("lookup failed: {e}");
                    let queued = to_create
                        .iter()
                        .filter(|id| create.binary_search(id).is_ok());
                    for &id in queued.chain(&create[from..]) {
                        let t = s.pending.read(id)?.track;
                        self.fail_notion(report, &t, &error)?;
                        s.downloads.release(id);
                    }
                    return Ok(None);
                }
            };
            for (id, new, entry) in entries {
                let t = entry.track;
                let page = match (found.remove(&t.key), entry.page_id) {
                    (Some(page), _) => Some(page),
                    (None, _) if new => None,
                    // The URL changed (a renamed track): reach the page by its id.
                    (None, Some(page_id)) => match s.sink.page(&page_id).await {
                        Ok(page) => page,
                        Err(e) if e.is_fatal() => return Err(e.into()),
                        Err(e) => {
                            self.fail_notion(report, &t, &e.to_string())?;
                            s.downloads.release(id);
                            continue;
                        }
                    },
                    (None, None) => None,
                };
                match page {
                    Some(page) => {
                        if self.cancel.is_cancelled() {
                            return Err(SyncError::Cancelled);
                        }
                        s.downloads.release(id);
                        self.link(s, report, &t, page, new).await?;
                    }
                    None => to_create.push_back(id),
                }
            }
        }
        Ok(Some(to_create))
    }

    /// Creates the pages, a few in flight. A track whose download is still running waits for
    /// it (briefly), so its page is created with `Downloaded` and the file path in one request
    /// instead of a create and an update.
    async fn create_pages(
        &self,
        s: &Shared<'_>,
        report: &mut RunReport,
        mut queue: VecDeque<u32>,
    ) -> Result<(), SyncError> {
        let mut inflight: JoinSet<Created> = JoinSet::new();
        let mut fatal: Option<SyncError> = None;
        let mut idle_since: Option<Instant> = None;
        loop {
            while fatal.is_none()
                && !self.cancel.is_cancelled()
                && inflight.len() < NOTION_CONCURRENCY
            {
                match self.start_create(s, &mut queue, &mut idle_since, &mut inflight) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => fatal = Some(e),
                }
            }
            let stopping = fatal.is_some() || self.cancel.is_cancelled();
            if inflight.is_empty() && (queue.is_empty() || stopping) {
                break;
            }
            let waiting = !queue.is_empty() && !stopping && inflight.len() < NOTION_CONCURRENCY;
            let wait_left = idle_since
                .map(|s| MAX_WAIT_FOR_DOWNLOAD.saturating_sub(s.elapsed()))
                .unwrap_or(MAX_WAIT_FOR_DOWNLOAD);
            let joined = tokio::select! {
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => joined,
                _ = s.downloads.notify.notified(), if waiting => continue,
                _ = tokio::time::sleep(wait_left), if waiting => continue,
                _ = self.cancel.cancelled(), if waiting => continue,
            };
            let Ok(created) = joined else {
                continue;
            };
            if let Err(e) = self.record_create(report, created) {
                fatal.get_or_insert(e);
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        if self.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        Ok(())
    }

    /// Starts the next create whose download is not awaited (or has waited long enough).
    /// Returns false when none may start now.
    fn start_create(
        &self,
        s: &Shared<'_>,
        queue: &mut VecDeque<u32>,
        idle_since: &mut Option<Instant>,
        inflight: &mut JoinSet<Created>,
    ) -> Result<bool, SyncError> {
        if queue.is_empty() {
            return Ok(false);
        }
        let mut waits = s.downloads.waits.lock().expect("downloads");
        let idx = match queue.iter().position(|&id| waits.ready(id)) {
            Some(i) => i,
            // All that is left waits for downloads; a slow one must not hold its page back
            // for long.
            None if idle_since.is_some_and(|s| s.elapsed() >= MAX_WAIT_FOR_DOWNLOAD) => 0,
            None => {
                idle_since.get_or_insert_with(Instant::now);
                return Ok(false);
            }
        };
        *idle_since = None;
        let id = queue.remove(idx).expect("index in queue");
        // Taken, not copied: nothing looks at a track's download once it left the queue.
        let downloaded = waits.take(id);
        drop(waits);
        let t = s.pending.read(id)?.track;
        let sink = s.sink.clone();
        let tag = s.tag.clone();
        let playlist_url = self.pl.url.to_string();
        inflight.spawn(async move {
            let r = sink
                .create(&t, &tag, &playlist_url, downloaded.as_ref())
                .await;
            (t, downloaded.is_some(), r)
        });
        Ok(true)
    }

    /// A create came back: the page goes to the state, a failure to the track. Only a fatal
    /// error (or an unwritable state) is returned.
    fn record_create(
        &self,
        report: &mut RunReport,
        (t, with_download, r): Created,
    ) -> Result<(), SyncError> {
        let page_id = match r {
            Ok(page_id) => page_id,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => return self.fail_notion(report, &t, &e.to_string()),
        };
        let mut store = self.store();
        let ts = store.track_mut(&t.key)?.expect("listed track in state");
        ts.notion_page_id = Some(page_id.clone());
        ts.notion.succeed();
        ts.notion_playlists.insert(self.pl.name.clone());
        if with_download {
            super::writeback::mark_written_back(ts);
        }
        report.created.push(TrackRef {
            page_id: Some(page_id),
            ..track_ref(&t.key, ts)
        });
        drop(store);
        self.engine.emit(Event::NotionStep {
            playlist: self.pl.name.clone(),
            title: t.title.clone(),
        });
        self.checkpoint(false)?;
        Ok(())
    }

    /// Adds this playlist to a page that exists: one found by the lookup (`adopted` when the
    /// track was new to Notion) or the one the state knows.
    async fn link(
        &self,
        s: &Shared<'_>,
        report: &mut RunReport,
        t: &Track,
        page: ExistingPage,
        adopted: bool,
    ) -> Result<(), SyncError> {
        let linked = match s.sink.add_playlist(&page, &s.tag).await {
            Ok(changed) => changed,
            Err(e) if e.needs_a_person() => return self.park_notion(report, t, &e.to_string()),
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => return self.fail_notion(report, t, &e.to_string()),
        };
        let mut store = self.store();
        let ts = store.track_mut(&t.key)?.expect("listed track in state");
        ts.notion_page_id = Some(page.page_id.clone());
        ts.notion.succeed();
        ts.notion_playlists.insert(self.pl.name.clone());
        // A page that says it is downloaded (by the replaced system, or a person) keeps its
        // paths; its empty Tempo or Key may still be filled by `playlistd analyze`.
        if page.downloaded == Some(true) {
            super::writeback::mark_written_back(ts);
        }
        ts.page_kept = PageKept {
            tempo: page.analysis.tempo,
            key: page.analysis.key,
        };
        let r = TrackRef {
            page_id: Some(page.page_id),
            ..track_ref(&t.key, ts)
        };
        drop(store);
        if adopted {
            report.adopted.push(r);
        } else if linked {
            report.linked.push(r);
        }
        self.engine.emit(Event::NotionStep {
            playlist: self.pl.name.clone(),
            title: t.title.clone(),
        });
        self.checkpoint(false)?;
        Ok(())
    }

    /// The playlist's tag on pages: its relation page (created once, its id kept in the state)
    /// or its multi-select option.
    pub(super) async fn playlist_tag(&self, sink: &Sink) -> Result<PlaylistTag, NotionError> {
        let cached = self
            .store()
            .state
            .playlists
            .get(&self.pl.name)
            .and_then(|p| p.notion_page_id.clone());
        let tag = sink
            .playlist_tag(&self.pl.name, self.pl.url.as_str(), cached.as_deref())
            .await?;
        if let PlaylistTag::Relation { page_id, .. } = &tag {
            self.store().playlist_mut(&self.pl.name).notion_page_id = Some(page_id.clone());
        }
        Ok(tag)
    }
}
