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
//!   the run with its fix. Finished steps are saved as they land. A failure only a person can
//!   clear (a relation too full to write) parks the track at once instead of retrying it.
//! - Each run has its own Notion [`RetryBudget`], grown by the tracks it plans to send to
//!   Notion and handed to every Notion step of that run (never shared with another sync).
//! - Downloads run beside the Notion stage; a download that finishes before its track's turn
//!   at Notion is written into the create itself, so it costs no extra request.
//! - Per-track memory is a few dozen bytes, whatever the playlist's size: the listing is
//!   streamed into the diff a batch at a time (never held whole), a track with work goes to
//!   the on-disk [`spool`] and is remembered by its entry number, the state's records are
//!   read without keeping a copy, and the report counts its routine lists beyond their first
//!   entries. What stays per track is the playlist's member keys and the work lists.
//! - A dry run writes nothing: neither the state (its diff works on per-track copies) nor
//!   anything else that outlives it.
//! - A track that may be under DRM (clear and encrypted streams listed) has its clear stream
//!   asked once, by the [`drm`] stage between the listing and the work, before it gets a page
//!   or a download; the verdict is kept in its record.

mod drm;
mod spool;

use crate::config::{Config, PlaylistConfig, RemovedPolicy, SourceKind};
use crate::download::{Downloader, Fault};
use crate::model::{ListedTrack, Track, TrackKey};
use crate::notion::{ExistingPage, Notion, NotionError, PlaylistTag, RetryBudget, Sink};
use crate::report::{RunReport, Stage, TrackFailure, TrackRef, TrackUnavailable};
use crate::source::soundcloud::SoundCloud;
use crate::source::{ListingEnd, SourceError};
use crate::state::{StateError, StateStore, TrackState};
use chrono::{DateTime, Utc};
pub use spool::SpoolError;
use spool::{EntryRef, Spool, SpoolWriter};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
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
/// Listed tracks between two state saves during the diff: the state then holds at most this
/// many changed records in memory, plus one listing batch (a first sync of 10,000 tracks
/// changes them all).
const DIFF_CHUNK: usize = 1024;
/// Tracks a dry run without Notion reads back from the spool at a time (with Notion, a chunk
/// is one lookup query: `Sink::lookup_batch`).
const PLAN_CHUNK: usize = 100;
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
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("interrupted")]
    Cancelled,
}

/// Downloads that have settled (finished or failed) during one sync, for the Notion stage.
/// Keyed by spool entry; only a download a create may still wait for is kept, so a track that
/// is linked, failed, or has no Notion work leaves nothing here.
struct Settled {
    waits: Mutex<Waits>,
    notify: tokio::sync::Notify,
}

struct Waits {
    /// Per spool entry (a byte each): a create may wait for this entry's download, which is
    /// under way and not yet taken.
    wanted: Vec<bool>,
    /// Settled and wanted: the file, or `None` when the download failed.
    done: HashMap<u32, Option<PathBuf>>,
}

impl Waits {
    /// The entry's create may go now: no download of it is awaited, or it has settled.
    fn ready(&self, id: u32) -> bool {
        !self.wanted.get(id as usize).copied().unwrap_or(false) || self.done.contains_key(&id)
    }

    /// Takes the entry's settled download (its file), and wants it no more.
    fn take(&mut self, id: u32) -> Option<PathBuf> {
        if let Some(w) = self.wanted.get_mut(id as usize) {
            *w = false;
        }
        self.done.remove(&id).flatten()
    }
}

impl Settled {
    /// `wanted`: the downloading entries that also have Notion work.
    fn new(entries: usize, wanted: impl IntoIterator<Item = u32>) -> Settled {
        let mut w = vec![false; entries];
        for id in wanted {
            w[id as usize] = true;
        }
        Settled {
            waits: Mutex::new(Waits {
                wanted: w,
                done: HashMap::new(),
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// A download settled: kept for its create if one may still want it.
    fn landed(&self, id: u32, path: Option<PathBuf>) {
        let mut w = self.waits.lock().expect("downloads");
        if w.wanted.get(id as usize).copied().unwrap_or(false) {
            w.done.insert(id, path);
        }
        drop(w);
        self.notify.notify_one();
    }

    /// The entry left the Notion stage without a create (linked, failed): nothing waits.
    fn release(&self, id: u32) {
        self.waits.lock().expect("downloads").take(id);
    }

    /// The Notion stage is over: nothing waits any more.
    fn close(&self) {
        let mut w = self.waits.lock().expect("downloads");
        w.wanted = Vec::new();
        w.done = HashMap::new();
    }
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

    /// The sink for one run: the shared connection, with retries taken from the run's budget.
    async fn run_sink(&self, budget: &Arc<RetryBudget>) -> Result<Option<Sink>, NotionError> {
        Ok(self.sink().await?.map(|s| s.for_run(budget.clone())))
    }

    fn notion_requests(&self) -> u64 {
        self.notion.as_ref().map(Notion::requests).unwrap_or(0)
    }

    /// Saves and folds the write-ahead log into `state.db` (the end of a `playlistd sync`
    /// run, the daemon's shutdown): the database file alone is then the whole truth.
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

    /// Lists the playlist into `each`, a batch at a time in playlist order (see
    /// [`crate::source`]); the yt-dlp listing comes whole and is replayed in batches.
    async fn list_streamed(
        &self,
        pl: &PlaylistConfig,
        cancel: &CancellationToken,
        each: impl FnMut(Vec<ListedTrack>) -> Result<(), SyncError>,
    ) -> Result<ListingEnd, SyncError> {
        match pl.source {
            // A SIGTERM must not wait for a 429 storm to blow over (up to 10 minutes).
            SourceKind::SoundCloud => {
                match self.soundcloud.list_streamed(&pl.url, cancel, each).await {
                    Err(SyncError::Source(SourceError::Cancelled)) => Err(SyncError::Cancelled),
                    other => other,
                }
            }
            SourceKind::YtDlp => {
                let listing = crate::source::ytdlp::list_with_ytdlp(
                    &self.config.download.ytdlp,
                    &pl.url,
                    self.config.download.timeout,
                )
                .await?;
                crate::source::replay(listing, each)
            }
        }
    }

    /// Where this sync's spool goes: the cache folder (created if need be), or for a dry run,
    /// which creates nothing, the system's temporary folder when there is no cache folder yet.
    fn spool_dir(&self, dry_run: bool) -> Result<PathBuf, SpoolError> {
        let dir = &self.config.cache_dir;
        if dry_run && !dir.is_dir() {
            return Ok(std::env::temp_dir());
        }
        std::fs::create_dir_all(dir).map_err(|e| SpoolError {
            dir: dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(dir.clone())
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
        let downloads_on = self.config.download.enabled && pl.download && !opts.no_download;
        let dest_dir = pl.dir.clone().unwrap_or_else(|| {
            self.config
                .download
                .dir
                .join(crate::download::sanitize_component(&pl.name))
        });

        // The diff runs as the listing streams in: each batch is compared with the state and
        // dropped, a track with work going to the spool.
        let mut diff = Diff {
            store: &self.store,
            playlist: &pl.name,
            now: Utc::now(),
            dry_run: opts.dry_run,
            downloads_on,
            max: opts.max_tracks.or(pl.max_tracks),
            truncated: false,
            members: Vec::new(),
            since_save: 0,
            spool: SpoolWriter::new(self.spool_dir(opts.dry_run)?),
            work: Work::default(),
            report,
        };
        let end = self
            .list_streamed(pl, cancel, |batch| diff.take(batch))
            .await?;
        let Diff {
            now,
            truncated,
            mut members,
            spool,
            mut work,
            report,
            ..
        } = diff;
        // Grown by doubling as the listing streamed in; the members stay in the state and the
        // work lists for the whole run, so they give back the slack now.
        members.shrink_to_fit();
        work.shrink_to_fit();
        let spool = Arc::new(spool.finish()?);
        report.title = end.title.clone();
        report.listed = members.len();
        report.complete = end.complete;
        report.incomplete_reason = end.incomplete_reason.clone();
        let listed = members.len();
        {
            let mut guard = self.store.lock().expect("state lock");
            settle_members(
                &mut guard,
                pl,
                &end.title,
                members,
                end.complete && !truncated,
                now,
                opts.dry_run,
                report,
            )?;
        }
        // After the members are settled, so a check that stops the sync loses nothing else.
        self.check_drm(report, &spool, &mut work, opts.dry_run, cancel)
            .await?;
        self.emit(Event::Listed {
            playlist: pl.name.clone(),
            tracks: listed,
            notion_work: work.create.len() + work.tag.len(),
            download_work: work.download.len(),
        });

        if opts.dry_run {
            return self.plan(pl, report, &spool, work, &dest_dir).await;
        }
        self.checkpoint(true)?;

        let Work {
            create,
            tag,
            mut download,
            writeback,
            ..
        } = work;
        // This run's Notion retries: a base and a few per track that may reach Notion (a
        // create or tag, a write-back after a download).
        let budget = RetryBudget::for_run();
        budget.plan_tracks(create.len() + tag.len() + download.len() + writeback.len());
        // An unusable folder is one problem, said once, not a failure charged to every track.
        if !download.is_empty()
            && let Err(e) = crate::check::probe_writable(&dest_dir)
        {
            report.downloads_skipped = Some(format!(
                "{} is not writable: {e} (fix: make download.dir, or the playlist's dir, a folder playlistd can write to, with free space)",
                dest_dir.display()
            ));
            download = Vec::new();
        }
        // A create waits (briefly) only for the download of a track that has Notion work.
        let settled = {
            let mut notion = vec![false; spool.len()];
            for &id in create.iter().chain(&tag) {
                notion[id as usize] = true;
            }
            let wanted = download.iter().copied().filter(|&id| notion[id as usize]);
            Arc::new(Settled::new(spool.len(), wanted))
        };
        // Downloads start now and run beside the Notion stage, fed through a bounded window:
        // a task per track spawned at once would hold 10,000 futures for a first sync of
        // 10,000 tracks, each waiting for one of a handful of permits.
        let (landed_tx, mut landed) = tokio::sync::mpsc::unbounded_channel();
        // Aborted if this sync returns early (or is dropped): the downloads stop with it.
        let feeder = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(feed_downloads(
            self.downloader.clone(),
            spool.clone(),
            download,
            (self.config.download.concurrency * 2).max(8),
            dest_dir,
            cancel.clone(),
            settled.clone(),
            landed_tx,
        )));

        // The Notion stage and the collection of landed downloads run side by side, so a
        // download's outcome goes to the state as it lands instead of waiting in the channel
        // for the whole Notion stage. Either one's run-stopping error stops the other.
        let mut landed_report = RunReport::new(&pl.name, pl.url.as_str(), false);
        let notion = async {
            let run = NotionRun {
                pl,
                spool: &spool,
                downloads: &settled,
                cancel,
                budget: &budget,
            };
            let r = self.notion_stage(&run, report, create, tag).await;
            settled.close();
            if r.is_err() {
                cancel.cancel();
            }
            r
        };
        let collect = async {
            let r = self
                .collect_downloads(pl, &spool, &mut landed, &mut landed_report, &budget)
                .await;
            if r.is_err() {
                cancel.cancel();
            }
            r
        };
        let (notion_result, collected) = tokio::join!(notion, collect);
        report.downloaded.append(landed_report.downloaded);
        report.failed.extend(landed_report.failed);
        let deferred = collected?;
        // The channel closes only when the feeder is done; a panic in it has been logged.
        let fed = feeder.await;
        notion_result?;
        if let Ok(Err(e)) = fed {
            return Err(e);
        }
        // Files that landed before their page existed: written back now that it does (unless
        // the create carried the file itself).
        for id in deferred {
            let t = spool.read(id)?.track;
            let due = {
                let store = self.store.lock().expect("state lock");
                store.state.tracks.get(&t.key)?.and_then(|ts| {
                    match (&ts.notion_page_id, &ts.download_path) {
                        (Some(page), Some(path)) if !ts.download_written_back => {
                            Some((page.clone(), path.clone()))
                        }
                        _ => None,
                    }
                })
            };
            if let Some((page, path)) = due {
                self.write_back(&t, &page, &path, &budget).await?;
            }
        }
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        self.apply_removed(pl, report, &budget).await?;

        // Write-backs left over from earlier runs; `write_back` connects only when called, so
        // an unchanged playlist makes no request.
        for id in writeback {
            let e = spool.read(id)?;
            if let (Some(page), Some(path)) = (&e.page_id, &e.download_path) {
                self.write_back(&e.track, page, path, &budget).await?;
            }
        }
        Ok(())
    }

    /// Records each download as it lands (until the feeder is done) and writes it back to its
    /// page. Returns the downloads that landed before their track had a page: the Notion stage
    /// may still create it (then, if the create did not carry the file, they are written back
    /// after it).
    async fn collect_downloads(
        &self,
        pl: &PlaylistConfig,
        spool: &Spool,
        landed: &mut tokio::sync::mpsc::UnboundedReceiver<Landed>,
        report: &mut RunReport,
        budget: &Arc<RetryBudget>,
    ) -> Result<Vec<u32>, SyncError> {
        let mut deferred = vec![];
        while let Some((id, r)) = landed.recv().await {
            let t = spool.read(id)?.track;
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
                        } else if ts.notion_page_id.is_none() {
                            deferred.push(id);
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
                        self.write_back(&t, &page, &d.path, budget).await?;
                    }
                }
                Err(e) if e.reason == crate::download::FailureReason::Cancelled => {}
                Err(e) => {
                    // The setup's fault, not the track's: retried next run, never parked. A
                    // permanent failure is charged like a transient one: parked once
                    // `max_attempts` are spent.
                    let charged = match e.reason.fault() {
                        Fault::Setup => false,
                        Fault::Permanent | Fault::Transient => true,
                    };
                    self.fail_step(report, &t, Stage::Download, &e.to_string(), charged)?;
                }
            }
            self.checkpoint(false)?;
        }
        Ok(deferred)
    }

    /// Sets `Downloaded` and the file path on a page. A failure is retried on the next run;
    /// the file itself is done either way.
    async fn write_back(
        &self,
        t: &Track,
        page: &str,
        path: &std::path::Path,
        budget: &Arc<RetryBudget>,
    ) -> Result<(), SyncError> {
        let Some(sink) = self.run_sink(budget).await? else {
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
    ///
    /// The tracks are read back from the spool a lookup query at a time: each
    /// chunk is looked up, its found pages linked or adopted at once, and the rest queued for
    /// creation, so only a chunk's tracks and pages are ever in memory. Creates start once every
    /// chunk has been looked up; a failed lookup creates nothing and fails every track that
    /// was new to Notion (as one lookup of everything did: pages adopted from the chunks before
    /// it stay adopted).
    async fn notion_stage(
        &self,
        run: &NotionRun<'_>,
        report: &mut RunReport,
        create: Vec<u32>,
        tag: Vec<u32>,
    ) -> Result<(), SyncError> {
        let NotionRun {
            pl,
            spool,
            downloads,
            cancel,
            budget,
        } = *run;
        if create.is_empty() && tag.is_empty() {
            return Ok(());
        }
        let sink = &self.run_sink(budget).await?.ok_or_else(|| {
            SyncError::Notion(NotionError::Token(
                "no Notion token available (fix: export NOTION_TOKEN or set notion.token_file)"
                    .into(),
            ))
        })?;
        let playlist_tag = self.playlist_tag(sink, pl).await?;

        // New tracks first, then the ones to tag, as one sequence of (entry, is new), read
        // back a lookup at a time.
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
                .take(sink.lookup_batch())
                .map(|(id, new)| spool.read(id).map(|e| (id, new, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let from = looked_up.min(create.len());
            looked_up += entries.len();
            let mut found = match sink.lookup(entries.iter().map(|(_, _, e)| &e.track)).await {
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
                        let t = spool.read(id)?.track;
                        self.fail_step(report, &t, Stage::Notion, &error, true)?;
                        downloads.release(id);
                    }
                    return Ok(());
                }
            };
            for (id, new, entry) in entries {
                let t = entry.track;
                let page = match (found.remove(&t.key), entry.page_id) {
                    (Some(page), _) => Some(page),
                    (None, _) if new => None,
                    // The URL changed (a renamed track): reach the page by its id.
                    (None, Some(page_id)) => match sink.page(&page_id).await {
                        Ok(page) => page,
                        Err(e) if e.is_fatal() => return Err(e.into()),
                        Err(e) => {
                            self.fail_notion(report, &t, &e.to_string())?;
                            downloads.release(id);
                            continue;
                        }
                    },
                    (None, None) => None,
                };
                match page {
                    Some(page) => {
                        if cancel.is_cancelled() {
                            return Err(SyncError::Cancelled);
                        }
                        downloads.release(id);
                        self.link(pl, report, sink, &playlist_tag, &t, page, new)
                            .await?;
                    }
                    None => to_create.push_back(id),
                }
            }
        }
        drop(candidates);
        drop((create, tag));

        // Creates, a few in flight; the shared limiter keeps the pace. A track whose download
        // is still running waits for it (briefly), so its page is created with `Downloaded`
        // and the file path in one request instead of a create and an update.
        let mut queue = to_create;
        let mut inflight: JoinSet<(Track, bool, Result<String, NotionError>)> = JoinSet::new();
        let playlist_url = pl.url.to_string();
        let mut fatal: Option<SyncError> = None;
        let mut idle_since: Option<Instant> = None;
        loop {
            while fatal.is_none() && !cancel.is_cancelled() && inflight.len() < NOTION_CONCURRENCY {
                if queue.is_empty() {
                    break;
                }
                let mut waits = downloads.waits.lock().expect("downloads");
                let ready = queue.iter().position(|&id| waits.ready(id));
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
                let id = queue.remove(idx).expect("index in queue");
                // Taken, not copied: nothing looks at a track's download once it left the queue.
                let downloaded = waits.take(id);
                drop(waits);
                let t = match spool.read(id) {
                    Ok(e) => e.track,
                    Err(e) => {
                        fatal = Some(e.into());
                        break;
                    }
                };
                let sink = sink.clone();
                let tag = playlist_tag.clone();
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
                    fatal.get_or_insert(e.into());
                }
                Err(e) => self.fail_notion(report, &t, &e.to_string())?,
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        Ok(())
    }

    /// Adds this playlist to a page that exists: one found by the lookup (`adopted` when the
    /// track was new to Notion) or the one the state knows.
    #[allow(clippy::too_many_arguments)]
    async fn link(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
        sink: &Sink,
        tag: &PlaylistTag,
        t: &Track,
        page: ExistingPage,
        adopted: bool,
    ) -> Result<(), SyncError> {
        let linked = match sink.add_playlist(&page, tag).await {
            Ok(changed) => changed,
            Err(e) if e.needs_a_person() => return self.park_notion(report, t, &e.to_string()),
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => return self.fail_notion(report, t, &e.to_string()),
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
            page_id: Some(page.page_id),
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
        Ok(())
    }

    /// The removed-track policy, for tracks that left the playlist in this (complete) listing.
    /// Audio files are never touched; a page is trashed only if no other playlist holds it.
    async fn apply_removed(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
        budget: &Arc<RetryBudget>,
    ) -> Result<(), SyncError> {
        let with_pages: Vec<(TrackKey, String)> = report
            .removed
            .iter()
            .filter_map(|r| r.page_id.clone().map(|p| (r.key.clone(), p)))
            .collect();
        if pl.removed == RemovedPolicy::Keep || with_pages.is_empty() {
            return Ok(());
        }
        let Some(sink) = &self.run_sink(budget).await? else {
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

    fn fail_notion(&self, report: &mut RunReport, t: &Track, error: &str) -> Result<(), SyncError> {
        self.fail_step(report, t, Stage::Notion, error, true)
    }

    /// A Notion failure that only a person can clear: parked at once (shown by `status`, left
    /// alone by later runs until `playlistd retry`) instead of failing again on every run.
    fn park_notion(&self, report: &mut RunReport, t: &Track, error: &str) -> Result<(), SyncError> {
        self.record_failure(report, t, Stage::Notion, error, Charge::Park)
    }

    /// Records a failed step of one track: its error, and its backoff when `charged`.
    fn fail_step(
        &self,
        report: &mut RunReport,
        t: &Track,
        stage: Stage,
        error: &str,
        charged: bool,
    ) -> Result<(), SyncError> {
        let charge = if charged {
            Charge::Backoff
        } else {
            Charge::None
        };
        self.record_failure(report, t, stage, error, charge)
    }

    fn record_failure(
        &self,
        report: &mut RunReport,
        t: &Track,
        stage: Stage,
        error: &str,
        charge: Charge,
    ) -> Result<(), SyncError> {
        let mut store = self.store.lock().expect("state lock");
        let ts = store.track_mut(&t.key)?.expect("listed track in state");
        let step = match stage {
            Stage::Notion => &mut ts.notion,
            Stage::Download => &mut ts.download,
        };
        match charge {
            Charge::Backoff => step.fail(error, Utc::now(), self.config.download.max_attempts),
            // One attempt is all a parked step is allowed.
            Charge::Park => step.fail(error, Utc::now(), 1),
            Charge::None => step.fail_uncharged(error),
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

    /// A dry run: say what would be created, adopted and downloaded. Reads only; the tracks
    /// come back from the spool a lookup at a time.
    async fn plan(
        &self,
        pl: &PlaylistConfig,
        report: &mut RunReport,
        spool: &Spool,
        work: Work,
        dest_dir: &std::path::Path,
    ) -> Result<(), SyncError> {
        let sink = match self.sink().await {
            Ok(Some(sink)) => Some(sink),
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
        for chunk in work
            .create
            .chunks(sink.map_or(PLAN_CHUNK, Sink::lookup_batch))
        {
            let tracks = chunk
                .iter()
                .map(|&id| spool.read(id).map(|e| e.track))
                .collect::<Result<Vec<_>, _>>()?;
            let found = match sink {
                Some(sink) => Some(sink.lookup(&tracks).await?),
                None => None,
            };
            for t in &tracks {
                match found.as_ref().and_then(|f| f.get(&t.key)) {
                    Some(page) => report.adopted.push(TrackRef {
                        page_id: Some(page.page_id.clone()),
                        ..r(t)
                    }),
                    None => report.created.push(r(t)),
                }
            }
        }
        for &id in &work.tag {
            let e = spool.read(id)?;
            report.linked.push(TrackRef {
                page_id: e.page_id,
                ..r(&e.track)
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
        for &id in &work.download {
            let e = spool.read(id)?;
            report.downloaded.push(TrackRef {
                path: Some(dest_dir.to_path_buf()),
                ..r(&e.track)
            });
        }
        Ok(())
    }
}

/// A download's outcome, sent from [`feed_downloads`] to the sync that collects it: the spool
/// entry (its track is read back there) and what the downloader said.
type Landed = (
    u32,
    Result<crate::download::Downloaded, crate::download::DownloadError>,
);

/// Runs the downloads of one sync in queue order, at most `window` at once, and sends each
/// outcome to `landed` (the sync collects them as they land, beside its Notion stage). The window
/// bounds this sync's own tasks; the downloader's permits still bound yt-dlp runs across all
/// syncs. Twice the permits keeps a track whose file already exists from waiting behind the
/// yt-dlp runs. A track is read back from the spool as its download starts, so only the
/// window's tracks are in memory; a spool that cannot be read stops the feed, with its error.
#[allow(clippy::too_many_arguments)]
async fn feed_downloads(
    dl: Downloader,
    spool: Arc<Spool>,
    queue: Vec<u32>,
    window: usize,
    dir: PathBuf,
    cancel: CancellationToken,
    settled: Arc<Settled>,
    landed: tokio::sync::mpsc::UnboundedSender<Landed>,
) -> Result<(), SyncError> {
    let mut queue = queue.into_iter();
    let mut running: JoinSet<Landed> = JoinSet::new();
    let mut failed = None;
    loop {
        // Once cancelled, what is left of the queue is not started at all.
        while failed.is_none() && running.len() < window && !cancel.is_cancelled() {
            let Some(id) = queue.next() else { break };
            let t = match spool.read(id) {
                Ok(e) => e.track,
                Err(e) => {
                    failed = Some(SyncError::from(e));
                    break;
                }
            };
            let (dl, dir, cancel, settled) =
                (dl.clone(), dir.clone(), cancel.clone(), settled.clone());
            running.spawn(async move {
                let r = dl.download(&t, &dir, &cancel).await;
                if !matches!(&r, Err(e) if e.reason == crate::download::FailureReason::Cancelled) {
                    settled.landed(id, r.as_ref().ok().map(|d| d.path.clone()));
                }
                (id, r)
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
    failed.map_or(Ok(()), Err)
}

/// What the Notion stage of one run works with besides its work lists.
#[derive(Clone, Copy)]
struct NotionRun<'a> {
    pl: &'a PlaylistConfig,
    spool: &'a Spool,
    downloads: &'a Settled,
    cancel: &'a CancellationToken,
    budget: &'a Arc<RetryBudget>,
}

/// What a failed step costs the track.
#[derive(Clone, Copy)]
enum Charge {
    /// Due again next run, never parked (the setup's fault, not the track's).
    None,
    /// Backoff, parked after `max_attempts`.
    Backoff,
    /// Parked at once: retrying cannot help until a person acts.
    Park,
}

/// The work the diff found, as spool entry numbers, each list in listing order.
#[derive(Default)]
struct Work {
    /// Not in Notion yet (or due again): looked up, then created or adopted.
    create: Vec<u32>,
    /// In Notion, but without this playlist on its page.
    tag: Vec<u32>,
    /// To download.
    download: Vec<u32>,
    /// Downloaded, but its page does not say so yet.
    writeback: Vec<u32>,
    /// Held back until their clear stream is checked (see [`drm`]).
    drm: Vec<drm::Pending>,
}

impl Work {
    fn shrink_to_fit(&mut self) {
        for list in [
            &mut self.create,
            &mut self.tag,
            &mut self.download,
            &mut self.writeback,
        ] {
            list.shrink_to_fit();
        }
        self.drm.shrink_to_fit();
    }
}

/// The diff of one listing against the state, fed a batch at a time as the listing streams.
///
/// A record is read without keeping a copy; only a record this listing changes is written
/// back (and, in a dry run, not even that: the change is made on a copy of that one record and
/// dropped). Every [`DIFF_CHUNK`] listed tracks (checked after each batch) the state is
/// saved, so the records this sync changes do not pile up in memory either.
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
    spool: SpoolWriter,
    work: Work,
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

    /// One listed track: its record brought up to date, and its work spooled.
    fn track(&mut self, store: &mut StateStore, lt: ListedTrack) -> Result<(), SyncError> {
        let state = &mut store.state;
        let now = self.now;
        let t = &lt.track;
        let key = &t.key;
        let (mut ts, mut is_changed) = match state.tracks.get(key)? {
            Some(ts) => (ts, false),
            None => (
                Cow::Owned(TrackState {
                    first_seen: now,
                    ..Default::default()
                }),
                true,
            ),
        };
        if !t.title.is_empty()
            && (ts.title != t.title
                || ts.artist != t.artist
                || ts.url != t.url
                || ts.soundcloud_id != t.soundcloud_id)
        {
            let ts = ts.to_mut();
            ts.title = t.title.clone();
            ts.artist = t.artist.clone();
            ts.url = t.url.clone();
            ts.soundcloud_id = t.soundcloud_id;
            is_changed = true;
        }
        let view = drm::view(&ts, &lt);
        if ts.unavailable != view.unavailable || ts.drm != view.verdict {
            let ts = ts.to_mut();
            ts.unavailable = view.unavailable;
            ts.drm = view.verdict;
            is_changed = true;
        }
        if let Some(reason) = view.unavailable {
            self.report.unavailable.push(TrackUnavailable {
                key: key.clone(),
                title: ts.title.clone(),
                reason,
            });
        } else {
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
                (page_and_file && !ts.download_written_back).then_some(DownloadDue::WriteBack)
            } else if ts.download.is_due(now) {
                Some(DownloadDue::Fetch)
            } else {
                self.report.waiting += 1;
                None
            };
            if notion.is_some() || download.is_some() {
                let id = self.spool.push(&EntryRef {
                    track: t,
                    page_id: ts.notion_page_id.as_deref(),
                    download_path: ts.download_path.as_deref(),
                    drm_check: lt.drm_check.as_ref().filter(|_| view.needs_check),
                })?;
                let pending = drm::Pending {
                    id,
                    notion,
                    download,
                };
                if view.needs_check {
                    self.work.drm.push(pending);
                } else {
                    self.work.release(&pending);
                }
            }
        }
        if is_changed && !self.dry_run {
            let ts = ts.into_owned();
            store.state.tracks.insert(key.clone(), ts);
        }
        Ok(())
    }
}

/// The playlist's members after this listing, and the tracks it no longer lists. A dry run
/// only reports; otherwise the playlist's record is updated and marked for the next save.
#[allow(clippy::too_many_arguments)]
fn settle_members(
    store: &mut StateStore,
    pl: &PlaylistConfig,
    title: &str,
    members: Vec<TrackKey>,
    complete: bool,
    now: DateTime<Utc>,
    dry_run: bool,
    report: &mut RunReport,
) -> Result<(), StateError> {
    let state = &mut store.state;
    let gone: Vec<TrackKey> = match state.playlists.get(&pl.name) {
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
    if complete {
        for k in &gone {
            if let Some(ts) = state.tracks.get(k)? {
                report.removed.push(track_ref(k, &ts));
            }
        }
    }
    if dry_run {
        return Ok(());
    }
    let ps = store.playlist_mut(&pl.name);
    ps.url = pl.url.to_string();
    ps.title = title.to_string();
    if complete {
        for k in gone {
            ps.removed.entry(k).or_insert(now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Sandbox;
    use playlistd_fakes::notion::{Endpoint as N, FakeNotionOptions, Fault};
    use playlistd_fakes::soundcloud::playlist_of;

    /// A sandbox watching one playlist of `n` new tracks, downloads off.
    async fn sandbox(n: usize) -> (Sandbox, Engine, PlaylistConfig) {
        let mut sb = Sandbox::start(None, FakeNotionOptions::default())
            .await
            .unwrap();
        sb.downloads = false;
        let url = sb.sc.add_playlist(playlist_of(n, "u", "big"));
        sb.watch("Big", &url);
        let engine = sb.engine(true).unwrap();
        let pl = engine.config.playlist("Big").unwrap().clone();
        (sb, engine, pl)
    }

    #[tokio::test]
    async fn a_failed_lookup_chunk_creates_nothing_and_fails_every_new_track() {
        // 150 new tracks are looked up in two chunks. How many queries a clean run makes (the
        // playlist's own page, the two lookups) is read from one, so that the second
        // lookup, the run's last query, is the one that fails below.
        let (sb, engine, pl) = sandbox(150).await;
        let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
        result.unwrap();
        assert_eq!(r.created.len(), 150);
        let queries = sb.notion.count(N::Query);

        let (sb, engine, pl) = sandbox(150).await;
        sb.notion
            .inject(N::Query, Fault::Delay(Duration::ZERO), queries as u32 - 1);
        sb.notion.inject(N::Query, Fault::Status(500), 50);
        let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
        result.unwrap();
        // (The one create is the playlist's own page, in the playlists database.)
        assert_eq!(
            sb.notion.pages().len(),
            0,
            "nothing created without a lookup"
        );
        assert_eq!(r.created.len() + r.adopted.len(), 0);
        assert_eq!(r.failed.len(), 150, "{:?}", r.failed.first());
        assert!(
            r.failed
                .iter()
                .all(|f| f.error.starts_with("lookup failed"))
        );
        // In listing order, each once.
        let keys: Vec<&TrackKey> = r.failed.iter().map(|f| &f.key).collect();
        let store = engine.store();
        let members = store.lock().unwrap().state.playlists["Big"].members.clone();
        assert_eq!(keys, members.iter().collect::<Vec<_>>());

        // Once the backoff is cleared, the next run creates each page once.
        sb.notion.clear_faults();
        store.lock().unwrap().clear_backoff(None).unwrap();
        let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
        result.unwrap();
        assert_eq!(r.created.len(), 150);
        assert_eq!(sb.notion.pages().len(), 150);
    }

    #[tokio::test]
    async fn a_dry_run_reports_the_work_and_leaves_the_state_and_notion_alone() {
        let (sb, engine, pl) = sandbox(120).await;
        let dry = SyncOptions {
            dry_run: true,
            ..Default::default()
        };
        let (r, result) = engine.sync(&pl, &dry).await;
        result.unwrap();
        assert_eq!((r.listed, r.created.len()), (120, 120));
        assert_eq!(sb.notion.count(N::Create), 0);
        let store = engine.store();
        assert_eq!(store.lock().unwrap().state.tracks.len(), 0);
        assert!(store.lock().unwrap().state.playlists.is_empty());
        assert_eq!(sb.state().tracks.len(), 0);
        // The spool left nothing behind (the client-id caches, ours and yt-dlp's, may be there).
        let cache = sb.cache_dir();
        let left: Vec<String> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n != crate::source::soundcloud::CACHE_FILE
                    && n != crate::ytdlp::cache::YTDLP_CACHE_DIR
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A real run after it does all of it.
        let (r, result) = engine.sync(&pl, &SyncOptions::default()).await;
        result.unwrap();
        assert_eq!(r.created.len(), 120);
        assert_eq!(sb.notion.pages().len(), 120);
    }
}
