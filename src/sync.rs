//! One sync of one playlist: list, diff against the state, Notion, downloads, write-back.
//!
//! Invariants (DESIGN.md, "Reliability rules"):
//! - Only tracks not yet in Notion go to Notion; only tracks not yet downloaded go to the
//!   downloader; failed ones wait for their backoff, parked ones for `playlistd retry`.
//! - No duplicates: every batch of new tracks is looked up in Notion (one query per batch)
//!   before anything is created, so a page created just before a crash is adopted next time.
//! - A track in two playlists has one page (this playlist is added to its playlist property)
//!   and one file.
//! - An incomplete or truncated listing never marks tracks as removed.
//! - A per-track failure fails that track only; a fatal Notion error (token, sharing) stops
//!   the run with its fix. Finished steps are saved as they land.
//! - Downloads run beside the Notion stage; a download that finishes before its track's turn
//!   at Notion is written into the create itself, so it costs no extra request.
//! - Per-track memory is the state and the pending work only: the listing is consumed by the
//!   diff (never copied), a track without work is dropped there, downloads go through a
//!   bounded window, and the report counts its routine lists beyond their first entries.

use crate::config::{Config, PlaylistConfig, RemovedPolicy, SourceKind};
use crate::download::Downloader;
use crate::model::{Listing, Track, TrackKey};
use crate::notion::{ExistingPage, Notion, NotionError, PlaylistTag, Sink};
use crate::report::{RunReport, Stage, TrackFailure, TrackRef, TrackUnavailable};
use crate::source::SourceError;
use crate::source::soundcloud::SoundCloud;
use crate::state::{StateError, StateStore, TrackState};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Creates in flight at once. The shared limiter sets the pace; a few requests in flight keep
/// a slow round trip from stretching the run beyond the rate-limit floor.
const NOTION_CONCURRENCY: usize = 4;
/// How long the next create may wait for its track's download before going without it.
const MAX_WAIT_FOR_DOWNLOAD: Duration = Duration::from_secs(10);
/// Listing entries consumed between two shrinks of the listing (see `sync_inner`).
const DIFF_CHUNK: usize = 1024;
/// Saves are batched: at most one state write per interval while a sync runs.
const SAVE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Notion(#[from] NotionError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("interrupted")]
    Cancelled,
}

/// Downloads that have settled (finished or failed) during one sync, for the Notion stage.
#[derive(Default)]
struct Settled {
    /// Tracks this sync downloads.
    pending: HashSet<TrackKey>,
    /// Settled ones: the file, or `None` when the download failed.
    done: Mutex<HashMap<TrackKey, Option<PathBuf>>>,
    notify: tokio::sync::Notify,
}

/// Options of one `sync` invocation.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub dry_run: bool,
    pub max_tracks: Option<usize>,
    pub no_download: bool,
}

/// Progress events, for a progress bar or log lines.
#[derive(Debug, Clone)]
pub enum Event {
    Listed {
        playlist: String,
        tracks: usize,
        notion_work: usize,
        download_work: usize,
    },
    NotionStep {
        playlist: String,
        title: String,
    },
    DownloadStep {
        playlist: String,
        title: String,
        ok: bool,
    },
}

pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// The shared parts of every sync: one SoundCloud client, one Notion connection and limiter,
/// one download pool, one state.
pub struct Engine {
    pub config: Arc<Config>,
    soundcloud: SoundCloud,
    notion: Option<Notion>,
    sink: tokio::sync::OnceCell<Sink>,
    downloader: Downloader,
    store: Arc<Mutex<StateStore>>,
    last_save: Mutex<Instant>,
    observer: Option<Observer>,
    pub cancel: CancellationToken,
}

impl Engine {
    /// `notion` is `None` when no token is available; only a dry run can then proceed.
    pub fn new(config: Arc<Config>, notion: Option<Notion>, store: StateStore) -> Engine {
        Engine::shared(
            config,
            notion,
            Arc::new(Mutex::new(store)),
            CancellationToken::new(),
        )
    }

    /// An engine over a state shared with others: the daemon builds a new engine when the
    /// Notion or download settings change, while syncs already running finish on the old one.
    /// `cancel` stops every sync of this engine (the daemon passes a child of its root token).
    pub fn shared(
        config: Arc<Config>,
        notion: Option<Notion>,
        store: Arc<Mutex<StateStore>>,
        cancel: CancellationToken,
    ) -> Engine {
        Engine {
            soundcloud: SoundCloud::new(&config.soundcloud, &config.cache_dir),
            downloader: Downloader::new(&config.download, &config.cache_dir),
            notion,
            sink: tokio::sync::OnceCell::new(),
            store,
            last_save: Mutex::new(Instant::now()),
            observer: None,
            cancel,
            config,
        }
    }

    /// Replaces the SoundCloud client (tests use one with millisecond backoffs).
    pub fn with_soundcloud(mut self, soundcloud: SoundCloud) -> Engine {
        self.soundcloud = soundcloud;
        self
    }

    pub fn with_observer(mut self, observer: Observer) -> Engine {
        self.observer = Some(observer);
        self
    }

    /// The Notion limiter, for a rebuilt engine to share with this one.
    pub fn notion_limiter(&self) -> Option<Arc<crate::notion::RateLimiter>> {
        self.notion.as_ref().map(Notion::limiter)
    }

    pub fn soundcloud(&self) -> &SoundCloud {
        &self.soundcloud
    }

    pub fn store(&self) -> Arc<Mutex<StateStore>> {
        self.store.clone()
    }

    fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o(&e);
        }
    }

    /// The Notion sink, connected (data source discovered, schema mapped) on first use.
    pub async fn sink(&self) -> Result<Option<&Sink>, NotionError> {
        let Some(notion) = &self.notion else {
            return Ok(None);
        };
        self.sink
            .get_or_try_init(|| notion.connect())
            .await
            .map(Some)
    }

    fn notion_requests(&self) -> u64 {
        self.notion.as_ref().map(Notion::requests).unwrap_or(0)
    }

    /// Folds everything into a new snapshot (the end of a `playlistd sync` run, the
    /// daemon's shutdown): the state file alone is then the whole truth.
    pub fn compact(&self) -> Result<(), StateError> {
        self.store.lock().expect("state lock").save_full()
    }

    /// Saves the state if the last save is older than [`SAVE_INTERVAL`] (or `force`).
    pub fn checkpoint(&self, force: bool) -> Result<(), StateError> {
        let mut last = self.last_save.lock().expect("save clock");
        if force || last.elapsed() >= SAVE_INTERVAL {
            self.store.lock().expect("state lock").save()?;
            *last = Instant::now();
        }
        Ok(())
    }

    async fn list(&self, pl: &PlaylistConfig) -> Result<Listing, SourceError> {
        match pl.source {
            SourceKind::SoundCloud => self.soundcloud.list(&pl.url).await,
            SourceKind::YtDlp => {
                crate::source::ytdlp::list_with_ytdlp(
                    &self.config.download.ytdlp,
                    &pl.url,
                    self.config.download.timeout,
                )
                .await
            }
        }
    }

    /// Syncs one playlist. Per-track failures are in the report; an `Err` means the run
    /// could not proceed (source unreachable, Notion token or sharing, state not writable).
    pub async fn sync(
        &self,
        pl: &PlaylistConfig,
        opts: &SyncOptions,
    ) -> (RunReport, Result<(), SyncError>) {
        let mut report = RunReport::new(&pl.name, pl.url.as_str(), opts.dry_run);
        let notion_before = self.notion_requests();
        let sc_before = self.soundcloud.requests();
        let cancel = self.cancel.child_token();
        let result = self.sync_inner(pl, opts, &mut report, &cancel).await;
        report.finished = Utc::now();
        report.notion_requests = self.notion_requests() - notion_before;
        report.soundcloud_requests = self.soundcloud.requests() - sc_before;
        if let Err(e) = &result {
            report.error = Some(e.to_string());
        }
        if !opts.dry_run {
            let mut store = self.store.lock().expect("state lock");
            let ps = store.playlist_mut(&pl.name);
            ps.url = pl.url.to_string();
            ps.last_run = Some(report.summary());
            if result.is_ok() {
                ps.last_success = Some(report.finished);
            }
            drop(store);
            if let Err(e) = self.checkpoint(true) {
                report.error.get_or_insert_with(|| e.to_string());
                return (report, Err(e.into()));
            }
        }
        tracing::info!(target: "playlistd::sync", "{}", report.summary_line());
        (report, result)
    }

    async fn sync_inner(
        &self,
        pl: &PlaylistConfig,
        opts: &SyncOptions,
        report: &mut RunReport,
        cancel: &CancellationToken,
    ) -> Result<(), SyncError> {
        let mut listing = self.list(pl).await?;
        let now = Utc::now();
        let max = opts.max_tracks.or(pl.max_tracks);
        let truncated = max.is_some_and(|m| listing.tracks.len() > m);
        if let Some(m) = max {
            listing.tracks.truncate(m);
        }
        report.title = listing.title.clone();
        report.listed = listing.tracks.len();
        report.complete = listing.complete;
        report.incomplete_reason = listing.incomplete_reason.clone();

        let downloads_on = self.config.download.enabled && pl.download && !opts.no_download;
        let dest_dir = pl.dir.clone().unwrap_or_else(|| {
            self.config
                .download
                .dir
                .join(crate::download::sanitize_component(&pl.name))
        });

        // The playlist's members, in listing order (a track listed twice is there twice).
        let keys: Vec<TrackKey> = listing
            .tracks
            .iter()
            .map(|lt| lt.track.key.clone())
            .collect();
        let listed = keys.len();

        // Diff against the state, in two passes. In a dry run the state is a scratch copy.
        //
        // The first pass updates the state and notes, per track, what is due. The second
        // consumes the listing: a track with work moves into the work lists behind one `Arc`
        // (a track new to Notion is usually also new to the folder), the others are dropped,
        // and the listing is shrunk as it goes, so it and the work lists never both hold the
        // whole playlist. Two passes rather than one so the `Arc`s are allocated together, not
        // between the state's new records: freed in turn as the Notion stage works through
        // them, they leave room the state's later growth can reuse (one pass left them as
        // isolated holes, and the process grew instead).
        let mut needs_notion: Vec<Arc<Track>> = vec![];
        let mut needs_tag: Vec<(Arc<Track>, Option<String>)> = vec![];
        let mut needs_download: Vec<Arc<Track>> = vec![];
        let mut needs_writeback: Vec<(Arc<Track>, String, PathBuf)> = vec![];
        {
            let mut guard = self.store.lock().expect("state lock");
            let mut scratch = opts.dry_run.then(|| guard.state.clone());
            let state = match &mut scratch {
                Some(s) => s,
                None => &mut guard.state,
            };
            let mut seen: HashSet<&TrackKey> = HashSet::with_capacity(keys.len());
            // Tracks whose record this listing changes (indices into `keys`): the next save
            // writes only those.
            let mut changed: Vec<usize> = vec![];
            // What is due, for the tracks with any work, in listing order.
            let mut due: Vec<Due> = vec![];
            for (at, (lt, key)) in listing.tracks.iter().zip(&keys).enumerate() {
                if !seen.insert(key) {
                    continue; // a track listed twice in one playlist is one track
                }
                let t = &lt.track;
                let mut is_changed = false;
                let mut ts = match state.tracks.get(key)? {
                    Some(ts) => ts.into_owned(),
                    None => {
                        is_changed = true;
                        TrackState {
                            first_seen: now,
                            ..Default::default()
                        }
                    }
                };
                if !t.title.is_empty()
                    && (ts.title != t.title
                        || ts.artist != t.artist
                        || ts.url != t.url
                        || ts.soundcloud_id != t.soundcloud_id)
                {
                    ts.title = t.title.clone();
                    ts.artist = t.artist.clone();
                    ts.url = t.url.clone();
                    ts.soundcloud_id = t.soundcloud_id;
                    is_changed = true;
                }
                if ts.unavailable != lt.unavailable {
                    ts.unavailable = lt.unavailable;
                    is_changed = true;
                }
                if is_changed {
                    changed.push(at);
                    state.tracks.insert(key.clone(), ts.clone());
                }
                if let Some(reason) = lt.unavailable {
                    report.unavailable.push(TrackUnavailable {
                        key: key.clone(),
                        title: ts.title.clone(),
                        reason,
                    });
                    continue;
                }
                let notion = if ts.notion.is_done() {
                    (!ts.notion_playlists.contains(&pl.name)).then_some(NotionDue::Tag)
                } else if ts.notion.is_due(now) {
                    Some(NotionDue::Create)
                } else {
                    report.waiting += 1;
                    None
                };
                let download = if !downloads_on {
                    None
                } else if ts.download.is_done() {
                    let page_and_file = ts.notion_page_id.is_some() && ts.download_path.is_some();
                    (page_and_file && !ts.download_written_back).then_some(DownloadDue::WriteBack)
                } else if ts.download.is_due(now) {
                    Some(DownloadDue::Fetch)
                } else {
                    report.waiting += 1;
                    None
                };
                if notion.is_some() || download.is_some() {
                    due.push(Due {
                        at,
                        notion,
                        download,
                    });
                }
            }
            let mut due = due.into_iter().peekable();
            let mut rest = std::mem::take(&mut listing.tracks);
            let mut at = 0;
            while !rest.is_empty() {
                let n = rest.len().min(DIFF_CHUNK);
                for lt in rest.drain(..n) {
                    if let Some(d) = due.next_if(|d| d.at == at) {
                        // The page id and file path are read again here rather than kept in
                        // `due`, which then takes 16 bytes a track.
                        let ts = state.tracks.get(&keys[at])?.expect("listed track in state");
                        let t = Arc::new(lt.track);
                        match d.notion {
                            None => {}
                            Some(NotionDue::Create) => needs_notion.push(t.clone()),
                            Some(NotionDue::Tag) => {
                                needs_tag.push((t.clone(), ts.notion_page_id.clone()))
                            }
                        }
                        match (d.download, &ts.notion_page_id, &ts.download_path) {
                            (Some(DownloadDue::Fetch), _, _) => needs_download.push(t),
                            (Some(DownloadDue::WriteBack), Some(page), Some(path)) => {
                                needs_writeback.push((t, page.clone(), path.clone()))
                            }
                            _ => {}
                        }
                    }
                    at += 1;
                }
                rest.shrink_to_fit();
            }
            drop(seen);
            if !opts.dry_run {
                guard.mark_tracks(changed.iter().map(|&at| &keys[at]));
            }
            let state = match &mut scratch {
                Some(s) => s,
                None => &mut guard.state,
            };
            let ps = state.playlists.entry(pl.name.clone()).or_default();
            ps.url = pl.url.to_string();
            ps.title = listing.title.clone();
            if listing.complete && !truncated {
                let current: HashSet<&TrackKey> = keys.iter().collect();
                for old in ps.members.iter().filter(|k| !current.contains(k)) {
                    ps.removed.entry(old.clone()).or_insert(now);
                    if let Some(ts) = state.tracks.get(old)? {
                        report.removed.push(track_ref(old, &ts));
                    }
                }
                for k in &keys {
                    ps.removed.remove(k);
                }
                drop(current);
                ps.members = keys;
            } else {
                // Keep members the partial listing did not show; nothing counts as removed.
                let current: HashSet<&TrackKey> = keys.iter().collect();
                let kept: Vec<TrackKey> = ps
                    .members
                    .iter()
                    .filter(|k| !current.contains(k))
                    .cloned()
                    .collect();
                drop(current);
                ps.members = keys.into_iter().chain(kept).collect();
            }
            if !opts.dry_run {
                guard.playlist_mut(&pl.name);
            }
        }
        drop(listing);
        self.emit(Event::Listed {
            playlist: pl.name.clone(),
            tracks: listed,
            notion_work: needs_notion.len() + needs_tag.len(),
            download_work: needs_download.len(),
        });

        if opts.dry_run {
            return self
                .plan(
                    pl,
                    report,
                    needs_notion,
                    needs_tag,
                    needs_download,
                    &dest_dir,
                )
                .await;
        }
        if !opts.dry_run {
            self.checkpoint(true)?;
        }

        // An unusable folder is one problem, said once, not a failure charged to every track.
        if !needs_download.is_empty() {
            if let Err(e) = crate::check::probe_writable(&dest_dir) {
                report.downloads_skipped = Some(format!(
                    "{} is not writable: {e} (fix: make download.dir, or the playlist's dir, a folder playlistd can write to, with free space)",
                    dest_dir.display()
                ));
                needs_download.clear();
            }
        }
        // Downloads start now and run beside the Notion stage, fed through a bounded window:
        // a task per track spawned at once would hold 10,000 futures for a first sync of
        // 10,000 tracks, each waiting for one of a handful of permits.
        let settled = Arc::new(Settled {
            pending: needs_download.iter().map(|t| t.key.clone()).collect(),
            ..Default::default()
        });
        let (landed_tx, mut landed) = tokio::sync::mpsc::unbounded_channel();
        // Aborted if this sync returns early (or is dropped): the downloads stop with it.
        let feeder = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(feed_downloads(
            self.downloader.clone(),
            needs_download,
            (self.config.download.concurrency * 2).max(8),
            dest_dir,
            cancel.clone(),
            settled.clone(),
            landed_tx,
        )));

        let notion_result = self
            .notion_stage(pl, report, needs_notion, needs_tag, &settled, cancel)
            .await;
        if notion_result.is_err() {
            // Only run-stopping errors come back from the Notion stage: stop the downloads too.
            cancel.cancel();
        }

        // Collect downloads as they land; write each one back to its page.
        while let Some((t, r)) = landed.recv().await {
            match r {
                Ok(d) => {
                    let page = {
                        let mut store = self.store.lock().expect("state lock");
                        let ts = store.track_mut(&t.key)?.expect("listed track in state");
                        ts.download.succeed();
                        ts.download_path = Some(d.path.clone());
                        report.downloaded.push(TrackRef {
                            path: Some(d.path.clone()),
                            ..track_ref(&t.key, ts)
                        });
                        if ts.download_written_back {
                            None
                        } else {
                            ts.notion_page_id.clone()
                        }
                    };
                    self.emit(Event::DownloadStep {
                        playlist: pl.name.clone(),
                        title: t.title.clone(),
                        ok: true,
                    });
                    // Written back as it lands, while the other downloads go on.
                    if let Some(page) = page {
                        self.write_back(&t, &page, &d.path).await?;
                    }
                }
                Err(e) if e.reason == crate::download::FailureReason::Cancelled => {}
                Err(e) => {
                    use crate::download::FailureReason as R;
                    // The setup's fault, not the track's: retried next run, never parked.
                    let setup = matches!(
                        e.reason,
                        R::YtDlpMissing | R::Exit(2) | R::DiskFull | R::PermissionDenied
                    );
                    self.fail_step(report, &t, Stage::Download, &e.to_string(), !setup)?;
                }
            }
            self.checkpoint(false)?;
        }
        // The channel closes only when the feeder is done; a panic in it has been logged.
        let _ = feeder.await;
        notion_result?;
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        self.apply_removed(pl, report).await?;

        // Write-backs left over from earlier runs; `write_back` connects only when called, so
        // an unchanged playlist makes no request.
        for (t, page, path) in needs_writeback {
            self.write_back(&t, &page, &path).await?;
        }
        Ok(())
    }

    /// Sets `Downloaded` and the file path on a page. A failure is retried on the next run;
    /// the file itself is done either way.
    async fn write_back(
        &self,
        t: &Track,
        page: &str,
        path: &std::path::Path,
    ) -> Result<(), SyncError> {
        let Some(sink) = self.sink().await? else {
            return Ok(());
        };
        match sink.set_downloaded(page, path).await {
            Ok(()) => {
                let mut store = self.store.lock().expect("state lock");
                if let Some(ts) = store.track_mut(&t.key)? {
                    ts.download_written_back = true;
                }
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => tracing::warn!("could not mark {:?} as downloaded in Notion: {e}", t.title),
        }
        self.checkpoint(false)?;
        Ok(())
    }

    /// Looks up and creates pages for new tracks; adds this playlist to pages that exist.
    async fn notion_stage(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
        needs_notion: Vec<Arc<Track>>,
        needs_tag: Vec<(Arc<Track>, Option<String>)>,
        downloads: &Arc<Settled>,
        cancel: &CancellationToken,
    ) -> Result<(), SyncError> {
        if needs_notion.is_empty() && needs_tag.is_empty() {
            return Ok(());
        }
        let sink = self.sink().await?.ok_or_else(|| {
            SyncError::Notion(NotionError::Token(
                "no Notion token available (fix: export NOTION_TOKEN or set notion.token_file)"
                    .into(),
            ))
        })?;
        let tag = self.playlist_tag(sink, pl).await?;

        let candidates = needs_notion
            .iter()
            .chain(needs_tag.iter().map(|(t, _)| t))
            .map(|t| &**t);
        let mut found = match sink.lookup(candidates).await {
            Ok(f) => f,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                // Without a lookup nothing may be created: that is how duplicates happen.
                for t in &needs_notion {
                    self.fail_step(
                        report,
                        t,
                        Stage::Notion,
                        &format!("lookup failed: {e}"),
                        true,
                    )?;
                }
                return Ok(());
            }
        };

        // Existing pages this playlist must be added to.
        // Each found page moves to the track that needs it (a track is in one list only).
        let mut to_link: Vec<(Arc<Track>, ExistingPage, bool)> = vec![];
        let mut to_create: Vec<Arc<Track>> = vec![];
        for t in needs_notion {
            match found.remove(&t.key) {
                Some(page) => to_link.push((t, page, true)),
                None => to_create.push(t),
            }
        }
        for (t, page_id) in needs_tag {
            match found.remove(&t.key) {
                Some(page) => to_link.push((t, page, false)),
                None => match page_id {
                    // The URL changed (a renamed track): reach the page by its id.
                    Some(id) => match sink.page(&id).await {
                        Ok(Some(page)) => to_link.push((t, page, false)),
                        Ok(None) => to_create.push(t),
                        Err(e) if e.is_fatal() => return Err(e.into()),
                        Err(e) => self.fail_notion(report, &t, &e.to_string())?,
                    },
                    None => to_create.push(t),
                },
            }
        }

        for (t, page, adopted) in to_link {
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            let linked = match sink.add_playlist(&page, &tag).await {
                Ok(changed) => changed,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    self.fail_notion(report, &t, &e.to_string())?;
                    continue;
                }
            };
            let mut store = self.store.lock().expect("state lock");
            let ts = store.track_mut(&t.key)?.expect("listed track in state");
            ts.notion_page_id = Some(page.page_id.clone());
            ts.notion.succeed();
            ts.notion_playlists.insert(pl.name.clone());
            if page.downloaded == Some(true) {
                ts.download_written_back = true;
            }
            let r = TrackRef {
                page_id: Some(page.page_id.clone()),
                ..track_ref(&t.key, ts)
            };
            drop(store);
            if adopted {
                report.adopted.push(r);
            } else if linked {
                report.linked.push(r);
            }
            self.emit(Event::NotionStep {
                playlist: pl.name.clone(),
                title: t.title.clone(),
            });
            self.checkpoint(false)?;
        }

        // Creates, a few in flight; the shared limiter keeps the pace. A track whose download
        // is still running waits for it (briefly), so its page is created with `Downloaded`
        // and the file path in one request instead of a create and an update.
        let mut queue: std::collections::VecDeque<Arc<Track>> = to_create.into();
        let mut inflight: JoinSet<(Arc<Track>, bool, Result<String, NotionError>)> = JoinSet::new();
        let playlist_url = pl.url.to_string();
        let mut fatal = None;
        let mut idle_since: Option<Instant> = None;
        loop {
            while fatal.is_none() && !cancel.is_cancelled() && inflight.len() < NOTION_CONCURRENCY {
                if queue.is_empty() {
                    break;
                }
                let mut done = downloads.done.lock().expect("downloads");
                let ready = queue
                    .iter()
                    .position(|t| !downloads.pending.contains(&t.key) || done.contains_key(&t.key));
                let idx = match ready {
                    Some(i) => i,
                    // All that is left waits for downloads; a slow one must not hold its page
                    // back for long.
                    None if idle_since.is_some_and(|s| s.elapsed() >= MAX_WAIT_FOR_DOWNLOAD) => 0,
                    None => {
                        idle_since.get_or_insert_with(Instant::now);
                        break;
                    }
                };
                idle_since = None;
                let t = queue.remove(idx).expect("index in queue");
                // Taken, not copied: nothing looks at a track's download once it left the queue.
                let downloaded = done.remove(&t.key).flatten();
                drop(done);
                let sink = sink.clone();
                let tag = tag.clone();
                let playlist_url = playlist_url.clone();
                inflight.spawn(async move {
                    let r = sink
                        .create(&t, &tag, &playlist_url, downloaded.as_deref())
                        .await;
                    (t, downloaded.is_some(), r)
                });
            }
            let stopping = fatal.is_some() || cancel.is_cancelled();
            if inflight.is_empty() && (queue.is_empty() || stopping) {
                break;
            }
            let waiting = !queue.is_empty() && !stopping && inflight.len() < NOTION_CONCURRENCY;
            let wait_left = idle_since
                .map(|s| MAX_WAIT_FOR_DOWNLOAD.saturating_sub(s.elapsed()))
                .unwrap_or(MAX_WAIT_FOR_DOWNLOAD);
            let joined = tokio::select! {
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => joined,
                _ = downloads.notify.notified(), if waiting => continue,
                _ = tokio::time::sleep(wait_left), if waiting => continue,
                _ = cancel.cancelled(), if waiting => continue,
            };
            let Ok((t, with_download, r)) = joined else {
                continue;
            };
            match r {
                Ok(page_id) => {
                    let mut store = self.store.lock().expect("state lock");
                    let ts = store.track_mut(&t.key)?.expect("listed track in state");
                    ts.notion_page_id = Some(page_id.clone());
                    ts.notion.succeed();
                    ts.notion_playlists.insert(pl.name.clone());
                    ts.download_written_back |= with_download;
                    report.created.push(TrackRef {
                        page_id: Some(page_id),
                        ..track_ref(&t.key, ts)
                    });
                    drop(store);
                    self.emit(Event::NotionStep {
                        playlist: pl.name.clone(),
                        title: t.title.clone(),
                    });
                    self.checkpoint(false)?;
                }
                Err(e) if e.is_fatal() => {
                    fatal.get_or_insert(e);
                }
                Err(e) => self.fail_notion(report, &t, &e.to_string())?,
            }
        }
        if let Some(e) = fatal {
            return Err(e.into());
        }
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        Ok(())
    }

    /// The removed-track policy, for tracks that left the playlist in this (complete) listing.
    /// Audio files are never touched; a page is trashed only if no other playlist holds it.
    async fn apply_removed(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let with_pages: Vec<(TrackKey, String)> = report
            .removed
            .iter()
            .filter_map(|r| r.page_id.clone().map(|p| (r.key.clone(), p)))
            .collect();
        if pl.removed == RemovedPolicy::Keep || with_pages.is_empty() {
            return Ok(());
        }
        let Some(sink) = self.sink().await? else {
            return Ok(());
        };
        let tag = self.playlist_tag(sink, pl).await?;
        for (key, page_id) in with_pages {
            let held_elsewhere = {
                let store = self.store.lock().expect("state lock");
                store
                    .state
                    .playlists
                    .iter()
                    .any(|(name, ps)| name != &pl.name && ps.members.contains(&key))
            };
            let page = match sink.page(&page_id).await {
                Ok(Some(page)) => page,
                Ok(None) => continue, // already gone from Notion
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(
                        "{:?}: could not apply the removed-track policy to {page_id}: {e}",
                        pl.name
                    );
                    continue;
                }
            };
            let trash = pl.removed == RemovedPolicy::Trash && !held_elsewhere;
            let done = if trash {
                sink.trash(&page_id).await
            } else {
                sink.remove_playlist(&page, &tag).await.map(|_| ())
            };
            match done {
                Ok(()) => {
                    let mut store = self.store.lock().expect("state lock");
                    if let Some(ts) = store.track_mut(&key)? {
                        ts.notion_playlists.remove(&pl.name);
                        if trash {
                            // Should the track come back, it gets a new page.
                            ts.notion_page_id = None;
                            ts.notion = Default::default();
                            ts.notion_playlists.clear();
                        }
                    }
                    drop(store);
                    if let Some(r) = report.removed.iter_mut().find(|r| r.key == key) {
                        r.action = Some(
                            if trash {
                                "page moved to the trash"
                            } else {
                                "playlist taken off its page"
                            }
                            .into(),
                        );
                    }
                }
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => tracing::warn!(
                    "{:?}: could not apply the removed-track policy to {page_id}: {e}",
                    pl.name
                ),
            }
        }
        Ok(())
    }

    async fn playlist_tag(
        &self,
        sink: &Sink,
        pl: &PlaylistConfig,
    ) -> Result<PlaylistTag, NotionError> {
        let cached = {
            let store = self.store.lock().expect("state lock");
            store
                .state
                .playlists
                .get(&pl.name)
                .and_then(|p| p.notion_page_id.clone())
        };
        let tag = sink
            .playlist_tag(&pl.name, pl.url.as_str(), cached.as_deref())
            .await?;
        if let PlaylistTag::Relation { page_id, .. } = &tag {
            let mut store = self.store.lock().expect("state lock");
            store.playlist_mut(&pl.name).notion_page_id = Some(page_id.clone());
        }
        Ok(tag)
    }

    fn fail_notion(
        &self,
        report: &mut RunReport,
        t: &Track,
        error: &str,
    ) -> Result<(), StateError> {
        self.fail_step(report, t, Stage::Notion, error, true)
    }

    /// Records a failed step of one track: its error, and its backoff when `charged`.
    fn fail_step(
        &self,
        report: &mut RunReport,
        t: &Track,
        stage: Stage,
        error: &str,
        charged: bool,
    ) -> Result<(), StateError> {
        let mut store = self.store.lock().expect("state lock");
        let ts = store.track_mut(&t.key)?.expect("listed track in state");
        let step = match stage {
            Stage::Notion => &mut ts.notion,
            Stage::Download => &mut ts.download,
        };
        if charged {
            step.fail(error, Utc::now(), self.config.download.max_attempts);
        } else {
            step.fail_uncharged(error);
        }
        report.failed.push(TrackFailure {
            key: t.key.clone(),
            title: t.title.clone(),
            stage,
            error: error.to_string(),
            parked: step.status == crate::state::StepStatus::Parked,
        });
        drop(store);
        let (playlist, title) = (report.playlist.clone(), t.title.clone());
        self.emit(match stage {
            Stage::Notion => Event::NotionStep { playlist, title },
            Stage::Download => Event::DownloadStep {
                playlist,
                title,
                ok: false,
            },
        });
        Ok(())
    }

    /// A dry run: say what would be created, adopted and downloaded. Reads only.
    async fn plan(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
        needs_notion: Vec<Arc<Track>>,
        needs_tag: Vec<(Arc<Track>, Option<String>)>,
        needs_download: Vec<Arc<Track>>,
        dest_dir: &std::path::Path,
    ) -> Result<(), SyncError> {
        let found = match self.sink().await {
            Ok(Some(sink)) => Some(sink.lookup(needs_notion.iter().map(|t| &**t)).await?),
            Ok(None) => {
                tracing::warn!(
                    "no Notion token: the dry run cannot tell new tracks from ones already in Notion"
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let r = |t: &Track| TrackRef {
            key: t.key.clone(),
            title: t.title.clone(),
            artist: t.artist.clone(),
            page_id: None,
            path: None,
            action: None,
        };
        for t in &needs_notion {
            match found.as_ref().and_then(|f| f.get(&t.key)) {
                Some(page) => report.adopted.push(TrackRef {
                    page_id: Some(page.page_id.clone()),
                    ..r(t)
                }),
                None => report.created.push(r(t)),
            }
        }
        for (t, page) in &needs_tag {
            report.linked.push(TrackRef {
                page_id: page.clone(),
                ..r(t)
            });
        }
        for r in report.removed.iter_mut().filter(|r| r.page_id.is_some()) {
            r.action = match pl.removed {
                RemovedPolicy::Keep => None,
                RemovedPolicy::Mark => Some("would take the playlist off its page".into()),
                RemovedPolicy::Trash => Some(
                    "would move the page to the trash (unless another playlist holds it)".into(),
                ),
            };
        }
        for t in &needs_download {
            report.downloaded.push(TrackRef {
                path: Some(dest_dir.to_path_buf()),
                ..r(t)
            });
        }
        Ok(())
    }
}

/// A download's outcome, sent from [`feed_downloads`] to the sync that collects it.
type Landed = (
    Arc<Track>,
    Result<crate::download::Downloaded, crate::download::DownloadError>,
);

/// Runs the downloads of one sync in queue order, at most `window` at once, and sends each
/// outcome to `landed` (the sync collects them once its Notion stage is done). The window
/// bounds this sync's own tasks; the downloader's permits still bound yt-dlp runs across all
/// syncs. Twice the permits keeps a track whose file already exists from waiting behind the
/// yt-dlp runs.
async fn feed_downloads(
    dl: Downloader,
    queue: Vec<Arc<Track>>,
    window: usize,
    dir: PathBuf,
    cancel: CancellationToken,
    settled: Arc<Settled>,
    landed: tokio::sync::mpsc::UnboundedSender<Landed>,
) {
    let mut queue = queue.into_iter();
    let mut running: JoinSet<Landed> = JoinSet::new();
    loop {
        // Once cancelled, what is left of the queue is not started at all.
        while running.len() < window && !cancel.is_cancelled() {
            let Some(t) = queue.next() else { break };
            let (dl, dir, cancel, settled) =
                (dl.clone(), dir.clone(), cancel.clone(), settled.clone());
            running.spawn(async move {
                let r = dl.download(&t, &dir, &cancel).await;
                if !matches!(&r, Err(e) if e.reason == crate::download::FailureReason::Cancelled) {
                    let path = r.as_ref().ok().map(|d| d.path.clone());
                    settled
                        .done
                        .lock()
                        .expect("downloads")
                        .insert(t.key.clone(), path);
                    settled.notify.notify_one();
                }
                (t, r)
            });
        }
        match running.join_next().await {
            Some(Ok(outcome)) => {
                // The receiver lives as long as the sync that reads it.
                let _ = landed.send(outcome);
            }
            Some(Err(e)) => tracing::error!("a download task failed: {e}"),
            None => break,
        }
    }
}

/// What the diff found due for one listed track (see `sync_inner`).
struct Due {
    /// Its index in the listing.
    at: usize,
    notion: Option<NotionDue>,
    download: Option<DownloadDue>,
}

#[derive(Clone, Copy)]
enum NotionDue {
    Create,
    /// Add this playlist to the page the state knows.
    Tag,
}

#[derive(Clone, Copy)]
enum DownloadDue {
    Fetch,
    /// The file is there; its page does not say so yet.
    WriteBack,
}

fn track_ref(key: &TrackKey, ts: &TrackState) -> TrackRef {
    TrackRef {
        key: key.clone(),
        title: ts.title.clone(),
        artist: ts.artist.clone(),
        page_id: ts.notion_page_id.clone(),
        path: ts.download_path.clone(),
        action: None,
    }
}
