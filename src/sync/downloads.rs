//! The downloads of one sync, run beside its Notion stage.
//!
//! Invariants:
//! - downloads start as soon as the work is known and run beside the Notion stage, fed through
//!   a bounded window (a task per track spawned at once would hold 10,000 futures for a first
//!   sync of 10,000 tracks); the downloader's permits still bound yt-dlp runs across syncs;
//! - a download's outcome goes to the state as it lands, not after the Notion stage; a file
//!   whose page exists is written back at once, one that landed before its page is handed to
//!   the write-back stage;
//! - a create waits (briefly) only for the download of a track that also has Notion work
//!   ([`Settled`]), so that its page is created with the file in one request;
//! - a run-stopping error of either side (the feed, the collector, the Notion stage) cancels
//!   the other; an unusable music folder is said once, not charged to every track.

use super::failure::Charge;
use super::pending::Pending;
use super::writeback::page_files;
use super::{Event, Run, SyncError, track_ref};
use crate::audio::library::{Item, Library, Outcome, Prepared};
use crate::config::Config;
use crate::download::{DownloadError, Downloaded, Downloader, FailureReason, Fault, Request};
use crate::model::{Track, canonical_url};
use crate::notion::PageFiles;
use crate::report::{ProblemKind, RunReport, Stage, TrackRef};
use crate::state::{Analysis, PageKept};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A download's outcome, sent from the [`Feed`] to the sync that collects it: the pending
/// entry (its track is read back there), and what the downloader and the library stage said.
type Landed = (u32, Result<(Downloaded, Prepared), DownloadError>);

/// Downloads that have settled (finished or failed) during one sync, for the Notion stage.
/// Keyed by pending entry; only a download a create may still wait for is kept, so a track
/// that is linked, failed, or has no Notion work leaves nothing here.
pub(super) struct Settled {
    pub waits: Mutex<Waits>,
    pub notify: tokio::sync::Notify,
}

pub(super) struct Waits {
    /// Per pending entry (a byte each): a create may wait for this entry's download, which is
    /// under way and not yet taken.
    wanted: Vec<bool>,
    /// Settled and wanted: what the new page is told, or `None` when the download failed.
    done: HashMap<u32, Option<PageFiles>>,
}

impl Waits {
    /// The entry's create may go now: no download of it is awaited, or it has settled.
    pub fn ready(&self, id: u32) -> bool {
        !self.wanted.get(id as usize).copied().unwrap_or(false) || self.done.contains_key(&id)
    }

    /// Takes the entry's settled download (its files), and wants it no more.
    pub fn take(&mut self, id: u32) -> Option<PageFiles> {
        if let Some(w) = self.wanted.get_mut(id as usize) {
            *w = false;
        }
        self.done.remove(&id).flatten()
    }
}

impl Settled {
    /// `downloads`: the entries to download; `notion`: the entries with Notion work.
    fn new(entries: usize, downloads: &[u32], notion: &[&[u32]]) -> Settled {
        let mut has_notion = vec![false; entries];
        for &id in notion.iter().flat_map(|l| l.iter()) {
            has_notion[id as usize] = true;
        }
        let mut wanted = vec![false; entries];
        for &id in downloads.iter().filter(|&&id| has_notion[id as usize]) {
            wanted[id as usize] = true;
        }
        Settled {
            waits: Mutex::new(Waits {
                wanted,
                done: HashMap::new(),
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// A download settled: kept for its create if one may still want it.
    fn landed(&self, id: u32, files: Option<PageFiles>) {
        let mut w = self.waits.lock().expect("downloads");
        if w.wanted.get(id as usize).copied().unwrap_or(false) {
            w.done.insert(id, files);
        }
        drop(w);
        self.notify.notify_one();
    }

    /// The entry left the Notion stage without a create (linked, failed): nothing waits.
    pub fn release(&self, id: u32) {
        self.waits.lock().expect("downloads").take(id);
    }

    /// The Notion stage is over: nothing waits any more.
    fn close(&self) {
        let mut w = self.waits.lock().expect("downloads");
        w.wanted = Vec::new();
        w.done = HashMap::new();
    }
}

impl Run<'_> {
    /// Runs the Notion stage and the downloads side by side. Returns the downloads that
    /// landed before their track had a page (see [`Run::write_back_deferred`]).
    pub(super) async fn notion_beside_downloads(
        &self,
        report: &mut RunReport,
        pending: &Arc<Pending>,
        create: Vec<u32>,
        tag: Vec<u32>,
        mut download: Vec<u32>,
    ) -> Result<Vec<u32>, SyncError> {
        if !download.is_empty()
            && let Err(e) = crate::check::probe_writable(&self.dest_dir)
        {
            let why = format!(
                "{} is not writable: {e} (fix: make download.dir, or the playlist's dir, a folder playlistd can write to, with free space)",
                self.dest_dir.display()
            );
            let kind = crate::download::io_reason(&e)
                .and_then(problem_of)
                .unwrap_or(ProblemKind::FolderNotWritable);
            report.problem(kind, why.clone());
            report.downloads_skipped = Some(why);
            download = Vec::new();
        }
        let settled = Arc::new(Settled::new(pending.len(), &download, &[&create, &tag]));
        let (landed_tx, mut landed) = tokio::sync::mpsc::unbounded_channel();
        let feed = Feed {
            dl: self.engine.downloader.clone(),
            pending: pending.clone(),
            queue: download,
            // Twice the permits keeps a track whose file already exists from waiting behind
            // the yt-dlp runs.
            window: (self.engine.config.download.concurrency * 2).max(8),
            dir: self.dest_dir.clone(),
            album: Arc::from(self.pl.name.as_str()),
            native: self.pl.source == crate::config::SourceKind::SoundCloud,
            library: self
                .engine
                .library
                .has_work()
                .then(|| self.engine.library.clone()),
            config: self.engine.config.clone(),
            cancel: self.cancel.clone(),
            settled: settled.clone(),
            landed: landed_tx,
        };
        // Aborted if this sync returns early (or is dropped): the downloads stop with it.
        let feeder = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(feed.run()));

        let mut landed_report = RunReport::new(&self.pl.name, self.pl.url.as_str(), false);
        let notion = async {
            let r = self
                .notion_stage(report, pending, &settled, create, tag)
                .await;
            settled.close();
            if r.is_err() {
                self.cancel.cancel();
            }
            r
        };
        let collect = async {
            let r = self
                .collect_downloads(pending, &mut landed, &mut landed_report)
                .await;
            if r.is_err() {
                self.cancel.cancel();
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
        Ok(deferred)
    }

    /// Records each download as it lands (until the feeder is done) and writes it back to its
    /// page. Returns the downloads that landed before their track had a page: the Notion stage
    /// may still create it (then, if the create did not carry the file, they are written back
    /// after it).
    async fn collect_downloads(
        &self,
        pending: &Pending,
        landed: &mut UnboundedReceiver<Landed>,
        report: &mut RunReport,
    ) -> Result<Vec<u32>, SyncError> {
        let mut deferred = vec![];
        while let Some((id, r)) = landed.recv().await {
            let t = pending.read(id)?.track;
            match r {
                Ok((d, prepared)) => {
                    let page = {
                        let mut store = self.store();
                        let ts = store.track_mut(&t.key)?.expect("listed track in state");
                        ts.download.succeed();
                        ts.download_path = Some(d.path.clone());
                        // It reaches the page with the file: in the create, or in the
                        // write-back below or after the Notion stage.
                        if let Some(a) = state_analysis(&prepared.analysis) {
                            ts.analysis = Some(a);
                        }
                        report.downloaded.push(TrackRef {
                            path: Some(d.path.clone()),
                            engine: d.engine.map(crate::config::Engine::as_str),
                            analysis: ts.analysis.as_ref().map(Analysis::describe),
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
                    self.engine.emit(Event::DownloadStep {
                        playlist: self.pl.name.clone(),
                        title: t.title.clone(),
                        ok: true,
                    });
                    // Written back as it lands, while the other downloads go on.
                    if let Some(page) = page {
                        self.write_back(&t, &page).await?;
                    }
                }
                Err(e) if e.reason == FailureReason::Cancelled => {}
                Err(e) => {
                    // The setup's fault, not the track's: retried next run, never parked. A
                    // permanent failure is charged like a transient one: parked once
                    // `max_attempts` are spent.
                    if let Some(kind) = problem_of(e.reason) {
                        report.problem(kind, e.to_string());
                    }
                    let charge = match e.reason.fault() {
                        Fault::Setup => Charge::None,
                        Fault::Permanent | Fault::Transient => Charge::Backoff,
                    };
                    self.record_failure(report, &t, Stage::Download, &e.to_string(), charge)?;
                }
            }
            self.checkpoint(false)?;
        }
        Ok(deferred)
    }
}

/// The setup problem behind a download failure, if a person must fix one (an alert).
fn problem_of(reason: FailureReason) -> Option<ProblemKind> {
    match reason {
        FailureReason::DiskFull => Some(ProblemKind::DiskFull),
        FailureReason::PermissionDenied => Some(ProblemKind::FolderNotWritable),
        _ => None,
    }
}

/// The downloads of one sync in queue order, at most `window` at once, each outcome sent to
/// `landed`. A track is read back from the pending work as its download starts, so only the
/// window's tracks are in memory; an entry that cannot be read stops the feed, with its error.
struct Feed {
    dl: Downloader,
    pending: Arc<Pending>,
    queue: Vec<u32>,
    window: usize,
    dir: PathBuf,
    /// The album tag of native downloads: the playlist's name.
    album: Arc<str>,
    /// The playlist lists SoundCloud natively, so the native engine may fetch its tracks.
    native: bool,
    /// The analysis + formats stage, when it has work.
    library: Option<Library>,
    config: Arc<Config>,
    cancel: CancellationToken,
    settled: Arc<Settled>,
    landed: UnboundedSender<Landed>,
}

impl Feed {
    async fn run(self) -> Result<(), SyncError> {
        let mut queue = self.queue.iter().copied();
        let mut running: JoinSet<Landed> = JoinSet::new();
        let mut failed = None;
        loop {
            // Once cancelled, what is left of the queue is not started at all.
            while failed.is_none() && running.len() < self.window && !self.cancel.is_cancelled() {
                let Some(id) = queue.next() else { break };
                let t = match self.pending.read(id) {
                    Ok(e) => e.track,
                    Err(e) => {
                        failed = Some(SyncError::from(e));
                        break;
                    }
                };
                running.spawn(self.one(id, t));
            }
            match running.join_next().await {
                Some(Ok(outcome)) => {
                    // The receiver lives as long as the sync that reads it.
                    let _ = self.landed.send(outcome);
                }
                Some(Err(e)) => tracing::error!("a download task failed: {e}"),
                None => break,
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// One track: its download, then the library stage on the file, then what a page created
    /// in this run may carry.
    fn one(&self, id: u32, t: Track) -> impl Future<Output = Landed> + use<> {
        let (dl, dir, album, native, cancel, settled, library, config) = (
            self.dl.clone(),
            self.dir.clone(),
            self.album.clone(),
            self.native,
            self.cancel.clone(),
            self.settled.clone(),
            self.library.clone(),
            self.config.clone(),
        );
        async move {
            let req = Request {
                track: &t,
                dest_dir: &dir,
                album: &album,
                native,
                cancel: &cancel,
            };
            let r = match dl.fetch(&req).await {
                Ok(d) => match &library {
                    Some(lib) => lib
                        .prepare(item(&t, &d, &album, &config))
                        .await
                        .map(|p| (d, p))
                        .map_err(|e| DownloadError::new(FailureReason::Library, e.to_string())),
                    None => Ok((d, Prepared::default())),
                },
                Err(e) => Err(e),
            };
            if !matches!(&r, Err(e) if e.reason == FailureReason::Cancelled) {
                // For a page created in this run: it holds nothing of its own yet.
                let files = r.as_ref().ok().map(|(d, p)| {
                    page_files(
                        &config,
                        &d.path,
                        state_analysis(&p.analysis).as_ref(),
                        PageKept::default(),
                        false,
                    )
                });
                settled.landed(id, files);
            }
            (id, r)
        }
    }
}

/// The library stage's view of a downloaded track.
fn item(t: &Track, d: &Downloaded, album: &str, config: &Config) -> Item {
    Item {
        path: d.path.clone(),
        title: t.title.clone(),
        artist: t.artist.clone(),
        album: album.to_string(),
        genre: t.genre.clone(),
        url: canonical_url(&t.url),
        duration_ms: t.duration_ms,
        overwrite_analysis: config.notion.overwrite_analysis,
    }
}

/// What the state keeps of an analysis; `None` when none was asked for.
pub(super) fn state_analysis(o: &Outcome) -> Option<Analysis> {
    match o {
        Outcome::NotAsked => None,
        Outcome::Measured { tempo, key } => Some(Analysis::Measured {
            tempo: *tempo,
            key: key.map(|k| k.standard().to_string()),
        }),
        Outcome::CannotDecode(why) => Some(Analysis::Failed(format!("cannot decode: {why}"))),
    }
}
