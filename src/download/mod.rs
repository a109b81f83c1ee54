//! Downloads one track into a playlist's music folder, with the native engine
//! ([`crate::audio`], SoundCloud's HLS and MP3 streams) or the real yt-dlp as a subprocess.
//!
//! Which engine: `download.engine`. Under `auto` (the default) a SoundCloud track is fetched
//! natively, and handed to yt-dlp only when the native engine answers
//! [`FailureReason::Unsupported`] (a stream layout it does not speak); a `source = "yt-dlp"`
//! playlist, and `engine = "yt-dlp"`, always run yt-dlp. yt-dlp follows other sites' (and
//! SoundCloud's) changes faster than we could; we own only the plumbing around it. The pool
//! keeps these invariants, whichever engine runs:
//!
//! - One pool: every playlist shares one [`Downloader`] and its semaphore of
//!   `download.concurrency` permits, so the configured number is a global bound on downloads.
//! - One download per (folder, track) at a time, and never one for a track whose file is already in
//!   the folder: an earlier run whose state write was lost is healed without re-downloading.
//! - No partial file in the music folder, ever ([`staging`]).
//! - A timeout or a cancel ends the whole process group (yt-dlp and anything it started), first
//!   with SIGTERM, then SIGKILL; no yt-dlp outlives its `download` call ([`crate::ytdlp`]).
//! - Every failure is a [`DownloadError`] with a [`FailureReason`]; whether and when to retry is
//!   the sync engine's decision, never this module's.
//! - Every yt-dlp run gets `--cache-dir <cache_dir>/yt-dlp`, a cache it shares with the native
//!   SoundCloud lister: the lister writes the client id it scraped there, in yt-dlp's own
//!   format ([`crate::ytdlp::cache`]), so a run scrapes soundcloud.com once, not once per
//!   process.
//!
//! The parts: [`native`] (the native engine in the pool: timeout, the move into place),
//! [`pool`] (the shared concurrency), [`staging`] (temp files, the finished file,
//! removing partials), [`naming`] (the output template, sanitising, finding a finished file by
//! its `[id]`) and [`failure`] (what a failure is, and whether it is permanent).

mod failure;
mod naming;
mod native;
mod pool;
mod staging;
#[cfg(test)]
mod tests;

pub(crate) use failure::io_reason;
pub use failure::{DownloadError, FailureReason, Fault};
pub use naming::{MAX_NAME_BYTES, sanitize_component};
pub use staging::STAGING_DIR;

pub use crate::config::Engine;

use crate::audio::media_http::MediaRetry;
use crate::audio::{MediaRequests, Native};
use crate::config::DownloadConfig;
use crate::model::Track;
use crate::source::soundcloud::SoundCloud;
use crate::ytdlp::cache::YTDLP_CACHE_DIR;
use crate::ytdlp::{self, Ended};
use failure::{classify, io_failure, last_words, spawn_failure};
use naming::{Template, find_existing};
use pool::Pool;
use staging::{Scratch, create_dir_all_retry, finished_file};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `--version` starts Python and nothing else; longer means something is wrong.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// A finished download: the file in the playlist's folder, its size, and what fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// `None`: the file was already there.
    pub engine: Option<Engine>,
    /// The requests of a native download, by kind.
    pub requests: Option<MediaRequests>,
}

/// One download to make.
pub struct Request<'a> {
    pub track: &'a Track,
    pub dest_dir: &'a Path,
    /// The album tag of a native download: the playlist's name.
    pub album: &'a str,
    /// The playlist lists SoundCloud natively (`source = "soundcloud"`): the native engine may
    /// fetch it. A `source = "yt-dlp"` playlist keeps yt-dlp.
    pub native: bool,
    pub cancel: &'a CancellationToken,
}

/// Runs yt-dlp for tracks. Cheap to clone; clones share the download pool.
#[derive(Clone)]
pub struct Downloader {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    native: Option<Arc<Native>>,
    ytdlp: PathBuf,
    extra_args: Vec<String>,
    template: Template,
    timeout: Duration,
    ytdlp_cache: PathBuf,
    pool: Arc<Pool>,
}

impl fmt::Debug for Downloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloader")
            .field("ytdlp", &self.inner.ytdlp)
            .field("available_permits", &self.inner.pool.available_permits())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    pub fn new(cfg: &DownloadConfig, cache_dir: &Path) -> Downloader {
        Downloader {
            inner: Arc::new(Inner {
                engine: cfg.engine,
                native: None,
                ytdlp: cfg.ytdlp.clone(),
                extra_args: cfg.extra_args.clone(),
                template: Template::parse(&cfg.output_template),
                timeout: cfg.timeout,
                ytdlp_cache: cache_dir.join(YTDLP_CACHE_DIR),
                pool: Pool::new(cfg.concurrency),
            }),
        }
    }

    /// The downloader of `cfg`: with the native engine unless `download.engine = "yt-dlp"`
    /// (or its HTTP client cannot be built, which is logged: yt-dlp then does every download).
    pub fn for_config(
        cfg: &DownloadConfig,
        cache_dir: &Path,
        soundcloud: Arc<SoundCloud>,
        retry: MediaRetry,
    ) -> Downloader {
        let dl = Downloader::new(cfg, cache_dir);
        if cfg.engine == Engine::YtDlp {
            return dl;
        }
        match Native::new(soundcloud, cfg.prefer) {
            Ok(native) => dl.with_native(native.with_retry(retry)),
            Err(e) => {
                tracing::error!("the native download engine is off: {e}");
                dl
            }
        }
    }

    /// Gives the downloader the native engine (without it, every download runs yt-dlp).
    pub fn with_native(mut self, native: Native) -> Downloader {
        Arc::get_mut(&mut self.inner)
            .expect("the native engine is set before the downloader is shared")
            .native = Some(Arc::new(native));
        self
    }

    /// Downloads `track` into `dest_dir` (the album tag is the folder's name); see
    /// [`Downloader::fetch`].
    pub async fn download(
        &self,
        track: &Track,
        dest_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, DownloadError> {
        let album = dest_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.fetch(&Request {
            track,
            dest_dir,
            album: &album,
            native: true,
            cancel,
        })
        .await
    }

    /// Downloads `req.track` into `req.dest_dir`, or returns the file already there for it.
    ///
    /// `{playlist}` in the template is the folder's own name, which is the sanitized playlist
    /// name unless the playlist sets `dir`.
    pub async fn fetch(&self, req: &Request<'_>) -> Result<Downloaded, DownloadError> {
        let (track, dest_dir, cancel) = (req.track, req.dest_dir, req.cancel);
        let native = self.native_for(req);
        if native.is_none() && track.download_url.trim().is_empty() {
            return Err(DownloadError::new(
                FailureReason::Unsupported,
                format!("track {} has no download URL", track.key),
            ));
        }
        let playlist = dest_dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let stem = self.inner.template.render(track, &playlist);
        let staging = dest_dir
            .join(STAGING_DIR)
            .join(sanitize_component(track.key.as_str()));

        let _slot = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(DownloadError::cancelled()),
            slot = self.inner.pool.claim(staging.clone()) => slot,
        };
        let matcher = self.inner.template.matcher(track);
        if let Some(found) = find_existing(dest_dir, &stem, matcher.as_ref()).await {
            tracing::info!(track = %track.key, path = %found.path.display(), "already downloaded; reusing the file");
            // A process killed after the file was moved may have left its staging folder.
            Scratch {
                staging,
                dest_dir: dest_dir.to_path_buf(),
                stem: stem.clone(),
            }
            .clean();
            return Ok(found);
        }
        let _permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(DownloadError::cancelled()),
            p = self.inner.pool.permit() => p,
        };
        if cancel.is_cancelled() {
            return Err(DownloadError::cancelled());
        }
        let scratch = Scratch {
            staging,
            dest_dir: dest_dir.to_path_buf(),
            stem: stem.to_string(),
        };
        let Some(native) = native else {
            return self.run(track, dest_dir, &stem, scratch, cancel).await;
        };
        match self.run_native(native, req, &stem, &scratch).await {
            Err(e)
                if e.reason == FailureReason::Unsupported
                    && self.inner.engine == Engine::Auto
                    && !track.download_url.trim().is_empty() =>
            {
                tracing::info!(track = %track.key, "the native engine cannot fetch it ({}); trying yt-dlp", e.message);
                match self.run(track, dest_dir, &stem, scratch, cancel).await {
                    Err(y) if y.reason == FailureReason::YtDlpMissing => Err(DownloadError::new(
                        FailureReason::Unsupported,
                        format!(
                            "{} (fix: install yt-dlp, which playlistd uses for such tracks)",
                            e.message
                        ),
                    )),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The native engine, when it is the one to try first for this request.
    fn native_for(&self, req: &Request<'_>) -> Option<&Arc<Native>> {
        let wanted =
            req.native && req.track.soundcloud_id.is_some() && self.inner.engine != Engine::YtDlp;
        wanted.then_some(self.inner.native.as_ref()).flatten()
    }

    async fn run(
        &self,
        track: &Track,
        dest_dir: &Path,
        stem: &str,
        scratch: Scratch,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, DownloadError> {
        scratch.clean();
        create_dir_all_retry(&scratch.staging).map_err(|e| io_failure(&e, &scratch.staging))?;

        let args = self.args(track, dest_dir, stem, &scratch.staging);
        tracing::debug!(track = %track.key, ytdlp = %self.inner.ytdlp.display(), ?args, "starting yt-dlp");
        let ytdlp::Finished {
            ended,
            stdout,
            stderr,
        } = ytdlp::Run::new(&self.inner.ytdlp, self.inner.timeout)
            .args(args)
            .cancel_on(cancel)
            .run()
            .await
            .map_err(|e| spawn_failure(&e, &self.inner.ytdlp))?;

        let result = match ended {
            Ended::TimedOut => Err(DownloadError::new(
                FailureReason::Timeout,
                format!(
                    "yt-dlp did not finish within {} s (download.timeout_secs) and was stopped{}",
                    self.inner.timeout.as_secs(),
                    last_words(&stderr)
                        .map(|l| format!("; last said: {l}"))
                        .unwrap_or_default()
                ),
            )),
            Ended::Cancelled => Err(DownloadError::cancelled()),
            Ended::Exited(Err(e)) => Err(DownloadError::new(
                FailureReason::Exit(-1),
                format!("could not wait for yt-dlp: {e}"),
            )),
            Ended::Exited(Ok(status)) if status.success() => finished_file(&stdout).await,
            Ended::Exited(Ok(status)) => Err(classify(ytdlp::exit_code(status), &stderr)),
        };
        if let Err(e) = &result {
            tracing::debug!(track = %track.key, error = %e, stderr = ?stderr, "yt-dlp failed");
        }
        drop(scratch);
        result
    }

    fn args(&self, track: &Track, dest_dir: &Path, stem: &str, staging: &Path) -> Vec<OsString> {
        let mut home = OsString::from("home:");
        home.push(dest_dir);
        let mut temp = OsString::from("temp:");
        temp.push(staging);
        // `-P temp:` is ignored when `-o` is absolute, so the folder goes in `-P home:` and `-o`
        // is a bare name. yt-dlp reads `-o` as its own template: our `%` must be literal.
        let output = format!("{}.%(ext)s", stem.replace('%', "%%"));
        // `--ignore-config --no-update` come from [`ytdlp::Run`].
        let mut args: Vec<OsString> =
            ["--no-playlist", "--no-progress", "--newline", "--cache-dir"]
                .iter()
                .map(Into::into)
                .collect();
        args.push(self.inner.ytdlp_cache.clone().into_os_string());
        args.extend([
            "-P".into(),
            home,
            "-P".into(),
            temp,
            "-o".into(),
            output.into(),
        ]);
        args.extend(["--print".into(), "after_move:filepath".into()]);
        args.extend(self.inner.extra_args.iter().map(Into::into));
        args.push("--".into());
        args.push(track.download_url.clone().into());
        args
    }
}

/// Runs `yt-dlp --version`, for `playlistd check`.
pub async fn ytdlp_version(path: &Path) -> Result<String, DownloadError> {
    let out = ytdlp::Run::new(path, VERSION_TIMEOUT)
        .args(["--version"])
        .whole_stdout()
        .run()
        .await
        .map_err(|e| spawn_failure(&e, path))?;
    let status = match out.ended {
        Ended::Exited(Ok(status)) => status,
        Ended::Exited(Err(e)) => {
            return Err(DownloadError::new(
                FailureReason::Exit(-1),
                format!("could not wait for yt-dlp: {e}"),
            ));
        }
        Ended::TimedOut | Ended::Cancelled => {
            return Err(DownloadError::new(
                FailureReason::Timeout,
                format!(
                    "{} --version did not answer within {} s",
                    path.display(),
                    VERSION_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    if !status.success() {
        return Err(DownloadError::new(
            FailureReason::Exit(ytdlp::exit_code(status)),
            format!(
                "{} --version failed: {}",
                path.display(),
                last_words(&out.stderr).unwrap_or_else(|| "no message".into())
            ),
        ));
    }
    let version = out
        .stdout
        .iter()
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if version.is_empty() {
        return Err(DownloadError::new(
            FailureReason::NoOutput,
            format!("{} --version printed nothing", path.display()),
        ));
    }
    Ok(version)
}
