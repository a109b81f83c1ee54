//! One sync of one playlist: list, diff against the state, Notion, downloads, write-back.
//!
//! [`Engine::sync`] runs the stages of [`Run::stages`] in order, one file each: [`listing`]
//! (the listing streamed into the diff), [`drm`] (the clear-stream check of label tracks),
//! [`plan`] (a dry run's report), [`notion`] and [`downloads`] side by side, [`writeback`],
//! [`removed`] (the removed-track policy) and [`playlist_file`] (the `.m3u8`). A [`Run`] is
//! what every stage of one sync works with; [`wire`] builds the engine from the config for
//! every caller.
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
//!   the [`pending`] table and its work lists are queries on it, the state's records are read
//!   without keeping a copy, and the report counts its routine lists beyond their first
//!   entries. What stays per track is the playlist's member keys and the work lists.
//! - A dry run writes nothing: neither the state (its diff works on per-track copies) nor
//!   anything else that outlives it.

mod backfill;
mod downloads;
mod drm;
mod failure;
mod listing;
mod notion;
mod pending;
mod plan;
mod playlist_file;
mod removed;
pub mod wire;
mod writeback;

use crate::audio::media_http::MediaRetry;
use crate::config::{Config, PlaylistConfig};
use crate::download::Downloader;
use crate::model::TrackKey;
use crate::notion::{Notion, NotionError, RetryBudget, Sink};
use crate::report::{ProblemKind, RunReport, TrackRef};
use crate::source::{Source, SourceError};
use crate::state::{StateError, StateStore, TrackState};
pub use backfill::{BackfillReport, BackfillStep};
use chrono::Utc;
pub use pending::PendingError;
use pending::Work;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
pub use wire::{WireError, Wiring};

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
    Pending(#[from] PendingError),
    #[error("interrupted")]
    Cancelled,
}

impl SyncError {
    /// The setup problem behind a run-stopping error, if a person must fix one.
    pub fn problem(&self) -> Option<ProblemKind> {
        match self {
            SyncError::Notion(NotionError::Unauthorized { .. } | NotionError::Token(_)) => {
                Some(ProblemKind::NotionToken)
            }
            SyncError::Notion(NotionError::Forbidden { .. } | NotionError::NotFound { .. }) => {
                Some(ProblemKind::NotionAccess)
            }
            SyncError::Source(SourceError::Blocked { .. }) => Some(ProblemKind::SoundcloudBlocked),
            SyncError::Source(
                SourceError::ClientId { .. } | SourceError::StaleConfiguredClientId { .. },
            ) => Some(ProblemKind::SoundcloudClientId),
            SyncError::State(StateError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) =>
            {
                Some(ProblemKind::DiskFull)
            }
            _ => None,
        }
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

/// The shared parts of every sync: one source (SoundCloud client, yt-dlp lister), one Notion
/// connection and limiter, one download pool, one state.
pub struct Engine {
    pub config: Arc<Config>,
    source: Source,
    notion: Option<Notion>,
    sink: tokio::sync::OnceCell<Sink>,
    downloader: Downloader,
    /// The analysis + formats stage, shared by every sync.
    library: crate::audio::library::Library,
    store: Arc<Mutex<StateStore>>,
    last_save: Mutex<Instant>,
    observer: Option<Observer>,
    pub cancel: CancellationToken,
}

impl Engine {
    /// `notion` is `None` when no token is available; only a dry run can then proceed.
    /// Callers outside tests build it with [`wire::engine`], which reads the config once.
    pub fn new(
        config: Arc<Config>,
        source: Source,
        notion: Option<Notion>,
        store: Arc<Mutex<StateStore>>,
        cancel: CancellationToken,
    ) -> Engine {
        Engine {
            downloader: Downloader::for_config(
                &config.download,
                &config.cache_dir,
                source.soundcloud_shared(),
                MediaRetry::default(),
            ),
            library: crate::audio::library::Library::new(&config.download.library),
            source,
            notion,
            sink: tokio::sync::OnceCell::new(),
            store,
            last_save: Mutex::new(Instant::now()),
            observer: None,
            cancel,
            config,
        }
    }

    /// Millisecond backoffs on the media hosts, for tests.
    pub fn with_media_retry(mut self, retry: MediaRetry) -> Engine {
        self.downloader = Downloader::for_config(
            &self.config.download,
            &self.config.cache_dir,
            self.source.soundcloud_shared(),
            retry,
        );
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

    pub fn soundcloud(&self) -> &crate::source::soundcloud::SoundCloud {
        self.source.soundcloud()
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

    /// While a Notion alert is open, one connect (the database and its data source) tells
    /// whether it is over, so a fixed token clears its alert even when no playlist has work
    /// for Notion. The answer is a report with no playlist: what was met, and the requests.
    /// `None` (and no request) when no Notion alert is open.
    pub async fn recheck_notion(&self) -> Option<RunReport> {
        let open = {
            let store = self.store.lock().expect("state lock");
            [ProblemKind::NotionToken, ProblemKind::NotionAccess]
                .iter()
                .any(|k| store.state.alerts.contains_key(k.as_str()))
        };
        if !open {
            return None;
        }
        let mut r = RunReport::new("", "", false);
        let before = self.notion_requests();
        if let Err(e) = self.sink().await {
            let e = SyncError::Notion(e);
            if let Some(kind) = e.problem() {
                r.problem(kind, e.to_string());
            }
        }
        r.notion_requests = self.notion_requests() - before;
        r.finished = Utc::now();
        Some(r)
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
        let sc_before = self.soundcloud().requests();
        let run = Run::new(self, pl, opts);
        let result = run.stages(&mut report).await;
        report.finished = Utc::now();
        report.notion_requests = self.notion_requests() - notion_before;
        report.soundcloud_requests = self.soundcloud().requests() - sc_before;
        if let Err(e) = &result {
            report.error = Some(e.to_string());
            if let Some(kind) = e.problem() {
                report.problem(kind, e.to_string());
            }
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
}

/// What every stage of one sync works with: the engine's shared parts, the playlist and the
/// options, the run's own cancel token and Notion retry budget, and where its files go.
struct Run<'a> {
    engine: &'a Engine,
    pl: &'a PlaylistConfig,
    opts: &'a SyncOptions,
    /// A child of the engine's: a run-stopping error in one stage stops the others.
    cancel: CancellationToken,
    budget: Arc<RetryBudget>,
    /// Downloads are on for this run (the config, the playlist and the options agree).
    downloads_on: bool,
    dest_dir: PathBuf,
}

impl<'a> Run<'a> {
    fn new(engine: &'a Engine, pl: &'a PlaylistConfig, opts: &'a SyncOptions) -> Run<'a> {
        let download = &engine.config.download;
        Run {
            engine,
            pl,
            opts,
            cancel: engine.cancel.child_token(),
            budget: RetryBudget::for_run(),
            downloads_on: download.enabled && pl.download && !opts.no_download,
            dest_dir: pl.dir.clone().unwrap_or_else(|| {
                download
                    .dir
                    .join(crate::download::sanitize_component(&pl.name))
            }),
        }
    }

    /// The stages, in order; each lives in the file named after it.
    async fn stages(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let (pending, complete) = self.list_and_diff(report).await?;
        // After the members are settled, so a check that stops the sync loses nothing else.
        self.check_drm(report, &pending).await?;
        let work = pending.work()?;
        self.engine.emit(Event::Listed {
            playlist: self.pl.name.clone(),
            tracks: report.listed,
            notion_work: work.create.len() + work.tag.len(),
            download_work: work.download.len(),
        });
        if self.opts.dry_run {
            return self.plan(report, &pending, &work).await;
        }
        self.engine.checkpoint(true)?;
        // This run's Notion retries: a base and a few per track that may reach Notion (a
        // create or tag, a write-back after a download).
        self.budget.plan_tracks(work.tracks());
        let Work {
            create,
            tag,
            download,
            writeback,
        } = work;
        let pending = Arc::new(pending);
        let deferred = self
            .notion_beside_downloads(report, &pending, create, tag, download)
            .await?;
        self.write_back_deferred(&pending, deferred).await?;
        if self.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        self.apply_removed(report).await?;
        self.write_back_leftovers(&pending, writeback).await?;
        self.write_playlist_file(complete);
        Ok(())
    }

    fn store(&self) -> MutexGuard<'_, StateStore> {
        self.engine.store.lock().expect("state lock")
    }

    fn checkpoint(&self, force: bool) -> Result<(), StateError> {
        self.engine.checkpoint(force)
    }

    /// The sink for this run: the shared connection, with retries taken from the run's budget.
    async fn sink(&self) -> Result<Option<Sink>, NotionError> {
        Ok(self
            .engine
            .sink()
            .await?
            .map(|s| s.for_run(self.budget.clone())))
    }
}

fn track_ref(key: &TrackKey, ts: &TrackState) -> TrackRef {
    TrackRef {
        key: key.clone(),
        title: ts.title.clone(),
        artist: ts.artist.clone(),
        page_id: ts.notion_page_id.clone(),
        path: ts.download_path.clone(),
        action: None,
        engine: None,
        analysis: None,
    }
}

#[cfg(test)]
mod tests;
