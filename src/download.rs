//! Downloads one track with the real yt-dlp, as a subprocess, into a playlist's music folder.
//!
//! Why a subprocess: yt-dlp follows SoundCloud's (and every other site's) changes faster than we
//! could; we own only the plumbing around it. That plumbing keeps these invariants:
//!
//! - One pool: every playlist shares one [`Downloader`] and its semaphore of
//!   `download.concurrency` permits, so the configured number is a global bound on yt-dlp runs.
//! - One yt-dlp per (folder, track) at a time, and never one for a track whose file is already in
//!   the folder: an earlier run whose state write was lost is healed without re-downloading.
//! - No partial file in the music folder, ever. yt-dlp writes into a hidden staging folder
//!   `<dest>/.playlistd-partial/<key>/` (`-P temp:`), on the same file system, and moves the
//!   finished file into place itself. Every way out (success, failure, timeout, cancel, even the
//!   future being dropped) removes that folder.
//! - A timeout or a cancel ends the whole process group (yt-dlp and anything it started), first
//!   with SIGTERM, then SIGKILL; no yt-dlp outlives its `download` call.
//! - Every failure is a [`DownloadError`] with a [`FailureReason`]; whether and when to retry is
//!   the sync engine's decision, never this module's.
//! - Every yt-dlp run gets `--cache-dir <cache_dir>/yt-dlp`, a cache it shares with the native
//!   SoundCloud lister: the lister writes the client id it scraped there, in yt-dlp's own
//!   format ([`ytdlp_client_id_entry`]), so a run scrapes soundcloud.com once, not once per
//!   process.
//!
//! Unix only: process groups and signals are how the tree is ended.

use crate::config::DownloadConfig;
use crate::model::Track;
use crate::util::one_line;
use regex::Regex;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;

/// File names stay well under every file system's 255-byte limit, with room for the extension
/// and yt-dlp's `.part`/`.ytdl` suffixes.
pub const MAX_NAME_BYTES: usize = 200;

/// The hidden folder, inside a playlist's folder, where yt-dlp writes unfinished files.
pub const STAGING_DIR: &str = ".playlistd-partial";

/// Extensions a finished track may have; anything else next to it (artwork, `.part`) is not the
/// track.
const AUDIO_EXTENSIONS: &[&str] = &[
    "mp3", "m4a", "aac", "opus", "ogg", "oga", "flac", "wav", "webm", "weba", "mka", "mp4", "aiff",
    "aif", "wma", "alac",
];

/// What yt-dlp leaves behind when it is stopped mid-download.
const PARTIAL_SUFFIXES: &[&str] = &[".part", ".ytdl", ".temp"];

/// SIGTERM lets yt-dlp (and ffmpeg, when extra_args use it) exit on their own; the file is
/// discarded anyway, so the wait is short.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// yt-dlp's errors come last, and the path we want is the last line of stdout; older lines are
/// context we do not need to keep.
const TAIL_LINES: usize = 20;

/// `--version` starts Python and nothing else; longer means something is wrong.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// A finished download: the file in the playlist's folder and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Why a download failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The yt-dlp binary could not be started.
    YtDlpMissing,
    /// `download.timeout_secs` elapsed; the process group was killed.
    Timeout,
    /// The cancel token fired (shutdown); the process group was killed.
    Cancelled,
    GeoBlocked,
    NotFound,
    Unsupported,
    Drm,
    /// HTTP 429 from the site.
    RateLimited,
    DiskFull,
    PermissionDenied,
    /// yt-dlp exited with this code and no recognized message (128 + signal if it was killed by
    /// someone else).
    Exit(i32),
    /// yt-dlp reported success but no non-empty file could be found.
    NoOutput,
}

impl FailureReason {
    /// Retrying cannot help: the track itself cannot be had from here.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            FailureReason::GeoBlocked
                | FailureReason::NotFound
                | FailureReason::Unsupported
                | FailureReason::Drm
        )
    }

    /// Stable name for the state file and machine-readable output. `Exit(n)` is `"exit"`; the code
    /// is in the message.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::YtDlpMissing => "ytdlp_missing",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::GeoBlocked => "geo_blocked",
            FailureReason::NotFound => "not_found",
            FailureReason::Unsupported => "unsupported",
            FailureReason::Drm => "drm",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::DiskFull => "disk_full",
            FailureReason::PermissionDenied => "permission_denied",
            FailureReason::Exit(_) => "exit",
            FailureReason::NoOutput => "no_output",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FailureReason::Exit(code) => return write!(f, "yt-dlp exit {code}"),
            FailureReason::YtDlpMissing => "yt-dlp missing",
            FailureReason::Timeout => "timed out",
            FailureReason::Cancelled => "cancelled",
            FailureReason::GeoBlocked => "geo-blocked",
            FailureReason::NotFound => "not found",
            FailureReason::Unsupported => "unsupported URL",
            FailureReason::Drm => "DRM-protected",
            FailureReason::RateLimited => "rate-limited",
            FailureReason::DiskFull => "disk full",
            FailureReason::PermissionDenied => "permission denied",
            FailureReason::NoOutput => "no output file",
        };
        f.write_str(text)
    }
}

/// A failed download, on one line: the reason, then what yt-dlp (or the system) said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct DownloadError {
    pub reason: FailureReason,
    pub message: String,
}

impl DownloadError {
    fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        DownloadError {
            reason,
            message: one_line(&message.into()),
        }
    }

    fn cancelled() -> Self {
        DownloadError::new(FailureReason::Cancelled, "download cancelled")
    }
}

/// Runs yt-dlp for tracks. Cheap to clone; clones share the download pool.
/// yt-dlp's cache folder inside playlistd's cache dir: every yt-dlp run gets `--cache-dir` so.
pub const YTDLP_CACHE_DIR: &str = "yt-dlp";

/// The version written into yt-dlp cache entries. yt-dlp's SoundCloud extractor loads its
/// client id without a minimum version, so any release reads it; this is the one whose
/// `cache.py` the format was taken from.
const YTDLP_CACHE_VERSION: &str = "2026.10.26";

/// Where yt-dlp keeps SoundCloud's client id (`cache.store('soundcloud', 'client_id', id)`
/// writes `<cache dir>/<section>/<key>.json`). playlistd writes it after a scrape, so the
/// downloads' yt-dlp runs start with the id instead of scraping soundcloud.com again, and
/// reads it when its own cache is empty.
pub fn ytdlp_client_id_file(cache_dir: &Path) -> PathBuf {
    cache_dir
        .join(YTDLP_CACHE_DIR)
        .join("soundcloud")
        .join("client_id.json")
}

/// A yt-dlp cache entry for a client id, in yt-dlp's own format:
/// `{"yt-dlp_version": "…", "data": "<id>"}`.
pub fn ytdlp_client_id_entry(client_id: &str) -> String {
    serde_json::json!({"yt-dlp_version": YTDLP_CACHE_VERSION, "data": client_id}).to_string()
}

/// The client id in a yt-dlp cache entry: `None` when it holds none (yt-dlp writes `null` while
/// it refreshes) or anything but a 32-character id. An entry without `yt-dlp_version` is
/// yt-dlp's pre-2022 form, the bare value, which yt-dlp still reads; so does this.
pub fn parse_ytdlp_client_id(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let data = if v.get("yt-dlp_version").is_some() {
        v.get("data")?
    } else {
        &v
    };
    let id = data.as_str()?;
    (id.len() == 32 && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_string())
}

#[derive(Clone)]
pub struct Downloader {
    inner: Arc<Inner>,
}

struct Inner {
    ytdlp: PathBuf,
    extra_args: Vec<String>,
    template: Template,
    timeout: Duration,
    ytdlp_cache: PathBuf,
    permits: Semaphore,
    /// One lock per staging folder, i.e. per (playlist folder, track); the last holder to leave
    /// removes the entry.
    in_flight: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for Downloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloader")
            .field("ytdlp", &self.inner.ytdlp)
            .field("available_permits", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    pub fn new(cfg: &DownloadConfig, cache_dir: &Path) -> Downloader {
        Downloader {
            inner: Arc::new(Inner {
                ytdlp: cfg.ytdlp.clone(),
                extra_args: cfg.extra_args.clone(),
                template: Template::parse(&cfg.output_template),
                timeout: cfg.timeout,
                ytdlp_cache: cache_dir.join(YTDLP_CACHE_DIR),
                // The config refuses 0; a zero here would hang every download forever.
                permits: Semaphore::new(cfg.concurrency.max(1)),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Downloads `track` into `dest_dir`, or returns the file already there for it.
    ///
    /// `{playlist}` in the template is the folder's own name, which is the sanitized playlist
    /// name unless the playlist sets `dir`.
    pub async fn download(
        &self,
        track: &Track,
        dest_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, DownloadError> {
        if track.download_url.trim().is_empty() {
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
            slot = self.claim(staging.clone()) => slot,
        };
        let matcher = self.inner.template.matcher(track);
        if let Some(found) = find_existing(dest_dir, &stem, matcher.as_ref()).await {
            tracing::info!(track = %track.key, path = %found.path.display(), "already downloaded; reusing the file");
            // A process killed after yt-dlp moved the file may have left its staging folder.
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
            p = self.inner.permits.acquire() => p.expect("the download semaphore is never closed"),
        };
        if cancel.is_cancelled() {
            return Err(DownloadError::cancelled());
        }
        self.run(track, dest_dir, &stem, staging, cancel).await
    }

    /// Waits until no other download of the same track into the same folder runs: two yt-dlp runs
    /// would share the staging folder, and the second should find the first one's file instead.
    async fn claim(&self, staging: PathBuf) -> Slot {
        let lock = {
            let mut map = self.inner.in_flight.lock().expect("in-flight map");
            map.entry(staging.clone()).or_default().clone()
        };
        let mut slot = Slot {
            inner: self.inner.clone(),
            key: staging,
            guard: None,
        };
        slot.guard = Some(lock.lock_owned().await);
        slot
    }

    async fn run(
        &self,
        track: &Track,
        dest_dir: &Path,
        stem: &str,
        staging: PathBuf,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, DownloadError> {
        let scratch = Scratch {
            staging,
            dest_dir: dest_dir.to_path_buf(),
            stem: stem.to_string(),
        };
        scratch.clean();
        create_dir_all_retry(&scratch.staging).map_err(|e| io_failure(&e, &scratch.staging))?;

        let args = self.args(track, dest_dir, stem, &scratch.staging);
        let mut command = Command::new(&self.inner.ytdlp);
        command
            .args(&args)
            // UTF-8 whatever the daemon's locale: titles must reach the disk and come back on
            // stdout unchanged.
            .env("PYTHONUTF8", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // Its own process group keeps yt-dlp out of a terminal's Ctrl-C, so if playlistd itself
        // is killed (SIGKILL, OOM) nothing would stop it: ask the kernel to.
        // A parent that dies between the fork and the prctl sends no signal: the child then
        // sees another parent already, and must not exec (prctl(2) names this race).
        #[cfg(target_os = "linux")]
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
        unsafe {
            let parent = libc::getpid();
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    return Err(std::io::Error::other(
                        "playlistd exited before yt-dlp started",
                    ));
                }
                Ok(())
            });
        }
        tracing::debug!(track = %track.key, ytdlp = %self.inner.ytdlp.display(), ?args, "starting yt-dlp");
        let mut child = command
            .spawn()
            .map_err(|e| spawn_failure(&e, &self.inner.ytdlp))?;
        // Declared after `child`, so it is dropped first, while the unreaped child still pins its
        // process-group id.
        let mut group = Group(child.id().and_then(|pid| i32::try_from(pid).ok()));

        let stdout = tokio::spawn(read_tail(
            child.stdout.take().expect("piped stdout"),
            TAIL_LINES,
            false,
        ));
        let stderr = tokio::spawn(read_tail(
            child.stderr.take().expect("piped stderr"),
            TAIL_LINES,
            true,
        ));

        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            _ = tokio::time::sleep(self.inner.timeout) => Ended::TimedOut,
            _ = cancel.cancelled() => Ended::Cancelled,
        };
        if !matches!(ended, Ended::Exited(_)) {
            group.terminate(&mut child).await;
        }
        group.reap_stragglers();
        let stdout = join_tail(stdout).await;
        let stderr = join_tail(stderr).await;
        let stderr: Vec<String> = stderr
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();

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
            Ended::Exited(Ok(status)) => Err(classify(status_code(status), &stderr)),
        };
        if let Err(e) = &result {
            tracing::debug!(track = %track.key, error = %e, stderr = ?stderr, "yt-dlp failed");
        }
        drop(scratch);
        result
    }

    fn args(
        &self,
        track: &Track,
        dest_dir: &Path,
        stem: &str,
        staging: &Path,
    ) -> Vec<std::ffi::OsString> {
        let mut home = std::ffi::OsString::from("home:");
        home.push(dest_dir);
        let mut temp = std::ffi::OsString::from("temp:");
        temp.push(staging);
        // `-P temp:` is ignored when `-o` is absolute, so the folder goes in `-P home:` and `-o`
        // is a bare name. yt-dlp reads `-o` as its own template: our `%` must be literal.
        let output = format!("{}.%(ext)s", stem.replace('%', "%%"));
        let mut args: Vec<std::ffi::OsString> = [
            "--ignore-config",
            "--no-update",
            "--no-playlist",
            "--no-progress",
            "--newline",
            "--cache-dir",
        ]
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

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Holds the per-track lock; dropping it forgets the lock once nobody else waits for it.
struct Slot {
    inner: Arc<Inner>,
    key: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.inner.in_flight.lock().expect("in-flight map");
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// The staging folder of one run, removed on every way out (including the future being dropped,
/// which is why this is a `Drop` and uses blocking calls on a tiny folder).
struct Scratch {
    staging: PathBuf,
    dest_dir: PathBuf,
    stem: String,
}

impl Scratch {
    fn clean(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
        if let Some(parent) = self.staging.parent() {
            // Fails while other tracks stage there, which is what we want.
            let _ = std::fs::remove_dir(parent);
        }
        // yt-dlp never writes these into the music folder with our `-P temp:`, but a run with
        // other extra_args, or an older version of us, may have.
        let Ok(entries) = std::fs::read_dir(&self.dest_dir) else {
            return;
        };
        let prefix = format!("{}.", self.stem);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && is_partial_name(name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean();
    }
}

fn is_partial_name(name: &str) -> bool {
    PARTIAL_SUFFIXES.iter().any(|s| name.ends_with(s)) || name.contains(".part-Frag")
}

/// Another task may remove the shared staging parent between `create_dir_all`'s two `mkdir`s.
fn create_dir_all_retry(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = std::fs::create_dir_all(dir);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// yt-dlp's process group (its pid, thanks to `process_group(0)`).
struct Group(Option<i32>);

impl Group {
    /// SIGTERM to the whole group, a short grace, then SIGKILL; returns once yt-dlp is reaped.
    async fn terminate(&mut self, child: &mut Child) {
        signal_group(self.0, libc::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            signal_group(self.0, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }

    /// After yt-dlp itself is gone: kills whatever it started that is still in its group. Only
    /// signals a group that still exists, since a group that still has members cannot have had its
    /// id reused.
    fn reap_stragglers(&mut self) {
        if let Some(pgid) = self.0.take()
            && pgid > 1
            && unsafe { libc::kill(-pgid, 0) } == 0
        {
            signal_group(Some(pgid), libc::SIGKILL);
        }
    }
}

impl Drop for Group {
    /// The download future was dropped mid-run: `kill_on_drop` would only reach yt-dlp itself.
    fn drop(&mut self) {
        signal_group(self.0.take(), libc::SIGKILL);
    }
}

fn signal_group(pgid: Option<i32>, signal: i32) {
    // kill(-1) would signal every process we may signal, and kill(-0) our own group.
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

async fn read_tail<R: AsyncRead + Unpin>(reader: R, keep: usize, log: bool) -> VecDeque<Vec<u8>> {
    let mut reader = BufReader::new(reader);
    let mut tail = VecDeque::with_capacity(keep);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if log {
            tracing::debug!(target: "playlistd::download::ytdlp", "{}", String::from_utf8_lossy(&line));
        }
        if tail.len() == keep {
            tail.pop_front();
        }
        tail.push_back(line.clone());
    }
    tail
}

/// The readers end when the pipes close; a process outside the group that inherited them must
/// not hold us up.
async fn join_tail(task: tokio::task::JoinHandle<VecDeque<Vec<u8>>>) -> VecDeque<Vec<u8>> {
    match tokio::time::timeout(TERM_GRACE, task).await {
        Ok(Ok(tail)) => tail,
        _ => VecDeque::new(),
    }
}

/// The last line yt-dlp printed is the path after all moves; it must name a non-empty file.
async fn finished_file(stdout: &VecDeque<Vec<u8>>) -> Result<Downloaded, DownloadError> {
    let Some(line) = stdout.back() else {
        return Err(DownloadError::new(
            FailureReason::NoOutput,
            "yt-dlp succeeded but printed no file path (does download.extra_args disable --print?)",
        ));
    };
    let path = PathBuf::from(OsStr::from_bytes(line));
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(Downloaded {
            path,
            bytes: m.len(),
        }),
        Ok(_) => Err(DownloadError::new(
            FailureReason::NoOutput,
            format!(
                "yt-dlp reported {} but it is empty or not a file",
                path.display()
            ),
        )),
        Err(e) => Err(DownloadError::new(
            FailureReason::NoOutput,
            format!(
                "yt-dlp reported {} but it cannot be read: {e}",
                path.display()
            ),
        )),
    }
}

/// Looks in `dir` for this track's file: first under its current name, then under any name the
/// template could have given it before (a rename upstream). Zero-byte matches are broken earlier
/// writes and are removed so that yt-dlp does not take them as done.
async fn find_existing(dir: &Path, stem: &str, matcher: Option<&Regex>) -> Option<Downloaded> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    let mut by_template = None;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((file_stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !AUDIO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            continue;
        }
        let exact = file_stem == stem;
        if !exact && !matcher.is_some_and(|m| m.is_match(file_stem)) {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.len() == 0 {
            let _ = tokio::fs::remove_file(entry.path()).await;
            continue;
        }
        let found = Downloaded {
            path: entry.path(),
            bytes: meta.len(),
        };
        if exact {
            return Some(found);
        }
        by_template.get_or_insert(found);
    }
    by_template
}

/// Maps a failed yt-dlp run to a reason, from its exit code and its last stderr lines.
fn classify(code: i32, stderr: &[String]) -> DownloadError {
    let detail = last_words(stderr).unwrap_or_else(|| "no message on stderr".to_string());
    if code == 2 {
        return DownloadError::new(
            FailureReason::Exit(2),
            format!("yt-dlp rejected its command line; check download.extra_args: {detail}"),
        );
    }
    // Only ERROR lines decide, when there are any: warnings mention "not found" and the like for
    // things that did not stop the download.
    let errors: Vec<&str> = stderr
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    let lines: Vec<&str> = if errors.is_empty() {
        stderr.iter().map(String::as_str).collect()
    } else {
        errors
    };
    for line in lines.iter().rev() {
        if let Some(reason) = reason_of(line) {
            return DownloadError::new(reason, detail);
        }
    }
    let message = if code > 128 && code < 128 + 65 {
        format!("yt-dlp was killed by signal {}: {detail}", code - 128)
    } else {
        detail
    };
    DownloadError::new(FailureReason::Exit(code), message)
}

fn reason_of(line: &str) -> Option<FailureReason> {
    // A missing ffmpeg says "not found" too, but is a setup problem, not a missing track.
    static FFMPEG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)\bff(mpeg|probe)\b").expect("regex"));
    static PATTERNS: LazyLock<Vec<(Regex, FailureReason)>> =
        LazyLock::new(|| {
            [
            (r"(?i)no space left on device|disk quota exceeded", FailureReason::DiskFull),
            (r"(?i)permission denied|read-only file system", FailureReason::PermissionDenied),
            (
                r"(?i)geo.?restrict|not available from your location|not available in your country",
                FailureReason::GeoBlocked,
            ),
            (r"\bDRM\b", FailureReason::Drm),
            (r"(?i)HTTP Error 429|too many requests|rate.?limit", FailureReason::RateLimited),
            (r"(?i)HTTP Error 404|HTTP Error 410|not found", FailureReason::NotFound),
            (r"(?i)unsupported url", FailureReason::Unsupported),
        ]
        .into_iter()
        .map(|(re, reason)| (Regex::new(re).expect("static regex"), reason))
        .collect()
        });
    if FFMPEG.is_match(line) {
        return None;
    }
    PATTERNS
        .iter()
        .find(|(re, _)| re.is_match(line))
        .map(|(_, reason)| *reason)
}

/// The most telling line of stderr: the last ERROR line, else the last line.
fn last_words(stderr: &[String]) -> Option<String> {
    let line = stderr
        .iter()
        .rev()
        .find(|l| l.starts_with("ERROR:"))
        .or_else(|| stderr.last())?;
    let line = line.strip_prefix("ERROR:").unwrap_or(line).trim();
    let mut end = line.len().min(400);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(line[..end].to_string())
}

fn spawn_failure(e: &std::io::Error, ytdlp: &Path) -> DownloadError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => DownloadError::new(
            FailureReason::PermissionDenied,
            format!(
                "cannot execute yt-dlp at {}: {e} (fix: make it executable, or set download.ytdlp)",
                ytdlp.display()
            ),
        ),
        _ => DownloadError::new(
            FailureReason::YtDlpMissing,
            format!(
                "cannot run yt-dlp at {}: {e} (fix: install yt-dlp (pip install yt-dlp) or set download.ytdlp)",
                ytdlp.display()
            ),
        ),
    }
}

fn io_failure(e: &std::io::Error, path: &Path) -> DownloadError {
    let reason = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => FailureReason::DiskFull,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            FailureReason::PermissionDenied
        }
        _ => FailureReason::Exit(-1),
    };
    DownloadError::new(
        reason,
        format!(
            "cannot create {}: {e} (fix: make download.dir, or the playlist's dir, a folder playlistd can write to, with free space)",
            path.display()
        ),
    )
}

/// Runs `yt-dlp --version`, for `playlistd check`.
pub async fn ytdlp_version(path: &Path) -> Result<String, DownloadError> {
    let child = Command::new(path)
        .arg("--version")
        .env("PYTHONUTF8", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_failure(&e, path))?;
    let output = match tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(DownloadError::new(
                FailureReason::Exit(-1),
                format!("could not wait for yt-dlp: {e}"),
            ));
        }
        Err(_) => {
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if !output.status.success() {
        let stderr: Vec<String> = String::from_utf8_lossy(&output.stderr)
            .lines()
            .map(str::to_string)
            .collect();
        return Err(DownloadError::new(
            FailureReason::Exit(status_code(output.status)),
            format!(
                "{} --version failed: {}",
                path.display(),
                last_words(&stderr).unwrap_or_else(|| "no message".into())
            ),
        ));
    }
    if version.is_empty() {
        return Err(DownloadError::new(
            FailureReason::NoOutput,
            format!("{} --version printed nothing", path.display()),
        ));
    }
    Ok(version.to_string())
}

/// Makes one value safe as (part of) a file name on every common file system: no separators, NUL
/// or control characters, none of Windows' reserved `<>:"|?*`, no bidi overrides, no leading dots
/// (hidden files), trimmed, and never empty. Everything else, Japanese and emoji included, stays.
pub fn sanitize_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => out.push('_'),
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    let trimmed = trim_name(&out);
    if trimmed.is_empty() {
        "untitled".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Leading dots hide a file; trailing dots and spaces are dropped by Windows.
fn trim_name(s: &str) -> &str {
    s.trim()
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .trim()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Artist,
    Title,
    Id,
    Playlist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

/// `download.output_template`, parsed once. Unknown `{words}` stay literal text.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let field = [
                ("{artist}", Field::Artist),
                ("{title}", Field::Title),
                ("{id}", Field::Id),
                ("{playlist}", Field::Playlist),
            ]
            .into_iter()
            .find(|(tag, _)| after.starts_with(tag));
            literal.push_str(&rest[..open]);
            match field {
                Some((tag, field)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(sanitize_literal(&std::mem::take(
                            &mut literal,
                        ))));
                    }
                    pieces.push(Piece::Field(field));
                    rest = &after[tag.len()..];
                }
                None => {
                    literal.push('{');
                    rest = &after[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(sanitize_literal(&literal)));
        }
        Template { pieces }
    }

    /// The file stem for `track`: sanitized values, the id kept whole, the other values shortened
    /// fairly (shortest first keeps its full length) so the name fits in [`MAX_NAME_BYTES`].
    fn render(&self, track: &Track, playlist: &str) -> String {
        let id = sanitize_component(track.key.as_str());
        let value = |f: Field| match f {
            Field::Artist => sanitize_component(&track.artist),
            Field::Title => sanitize_component(&track.title),
            Field::Playlist => sanitize_component(playlist),
            Field::Id => id.clone(),
        };
        let mut parts: Vec<String> = Vec::with_capacity(self.pieces.len());
        let mut fixed = 0usize;
        let mut flexible: Vec<usize> = Vec::new();
        for piece in &self.pieces {
            let text = match piece {
                Piece::Literal(l) => l.clone(),
                Piece::Field(f) => value(*f),
            };
            if matches!(piece, Piece::Field(f) if *f != Field::Id) {
                flexible.push(parts.len());
            } else {
                fixed += text.len();
            }
            parts.push(text);
        }
        let mut budget = MAX_NAME_BYTES.saturating_sub(fixed);
        flexible.sort_by_key(|i| parts[*i].len());
        let mut left = flexible.len();
        for i in flexible {
            let share = budget / left;
            let cut = truncate_bytes(&parts[i], share);
            let cut = cut.trim_end_matches(['.', ' ']).to_string();
            budget -= cut.len();
            left -= 1;
            parts[i] = cut;
        }
        // Only a template whose own text (plus the id) is too long gets here.
        let name = parts.concat();
        let name = trim_name(truncate_bytes(&name, MAX_NAME_BYTES));
        if name.is_empty() {
            "untitled".to_string()
        } else {
            name.to_string()
        }
    }

    /// Matches any stem the template could have produced for this track's id, whatever its title
    /// and artist were then. `None` when the id is not fenced by literal text (e.g. `{title}{id}`),
    /// since the match could then claim another track's file.
    fn matcher(&self, track: &Track) -> Option<Regex> {
        let at = self
            .pieces
            .iter()
            .position(|p| *p == Piece::Field(Field::Id))?;
        let fenced = |p: Option<&Piece>| !matches!(p, Some(Piece::Field(_)));
        if !fenced(at.checked_sub(1).and_then(|i| self.pieces.get(i)))
            || !fenced(self.pieces.get(at + 1))
        {
            return None;
        }
        let id = regex::escape(&sanitize_component(track.key.as_str()));
        let mut re = String::from("^");
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => re.push_str(&regex::escape(l)),
                Piece::Field(Field::Id) => re.push_str(&id),
                Piece::Field(_) => re.push_str(".*"),
            }
        }
        re.push('$');
        Regex::new(&re).ok()
    }
}

/// Template text between placeholders: the same character rules as values, without trimming
/// (the spaces around " - " are the point).
fn sanitize_literal(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        .map(|c| match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Against the real yt-dlp and a tiny HTTP server on 127.0.0.1 (yt-dlp's generic extractor
    //! takes any `audio/*` response as a direct download).

    use super::*;
    use crate::model::TrackKey;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// The machine may have two cores; yt-dlp tests running side by side would each take several
    /// seconds to start Python and blur the timeout test.
    static YTDLP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    const TEMPLATE: &str = "{artist} - {title} [{id}]";

    /// MPEG-1 layer III frames (128 kbit/s, 44.1 kHz: 417 bytes each) of silence.
    fn audio() -> Vec<u8> {
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        frame.repeat(64)
    }

    fn config(ytdlp: &str, concurrency: usize, timeout: Duration) -> DownloadConfig {
        DownloadConfig {
            enabled: true,
            dir: PathBuf::from("/unused"),
            concurrency,
            ytdlp: PathBuf::from(ytdlp),
            extra_args: vec![],
            output_template: TEMPLATE.to_string(),
            timeout,
            max_attempts: 5,
        }
    }

    fn track(id: &str, artist: &str, title: &str, url: &str) -> Track {
        Track {
            key: TrackKey::new(id.to_string()),
            soundcloud_id: None,
            title: title.to_string(),
            artist: artist.to_string(),
            url: url.to_string(),
            download_url: url.to_string(),
            duration_ms: None,
            genre: None,
            artwork_url: None,
        }
    }

    fn token() -> String {
        format!("t{:016x}", fastrand::u64(..))
    }

    #[test]
    fn ytdlp_client_id_entries_read_and_write_ytdlps_format() {
        let id = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let entry = ytdlp_client_id_entry(id);
        let v: serde_json::Value = serde_json::from_str(&entry).unwrap();
        assert_eq!(v["data"], id);
        assert_eq!(v["yt-dlp_version"], YTDLP_CACHE_VERSION);
        assert_eq!(parse_ytdlp_client_id(&entry).as_deref(), Some(id));
        // What yt-dlp writes while refreshing, its pre-2022 bare form, and junk.
        assert_eq!(
            parse_ytdlp_client_id(r#"{"yt-dlp_version": "2026.10.26", "data": null}"#),
            None
        );
        assert_eq!(
            parse_ytdlp_client_id(&format!("\"{id}\"")).as_deref(),
            Some(id)
        );
        for bad in ["", "{", r#"{"yt-dlp_version": "1", "data": "short"}"#] {
            assert_eq!(parse_ytdlp_client_id(bad), None, "{bad}");
        }
        assert_eq!(
            ytdlp_client_id_file(Path::new("/c")),
            Path::new("/c/yt-dlp/soundcloud/client_id.json")
        );
    }

    #[derive(Debug)]
    enum Event {
        HangStarted,
        HangClosed,
    }

    #[derive(Default)]
    struct Counters {
        /// Open connections per path of `/slow/` tracks.
        active: Mutex<HashMap<String, usize>>,
        max_active: AtomicUsize,
    }

    struct Server {
        base: String,
        counters: Arc<Counters>,
        events: mpsc::UnboundedReceiver<Event>,
    }

    impl Server {
        async fn start() -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let counters = Arc::new(Counters::default());
            let (tx, events) = mpsc::unbounded_channel();
            let c = counters.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(handle(sock, c.clone(), tx.clone()));
                }
            });
            Server {
                base,
                counters,
                events,
            }
        }

        async fn next_event(&mut self) -> Event {
            tokio::time::timeout(Duration::from_secs(20), self.events.recv())
                .await
                .expect("server event in time")
                .expect("server alive")
        }
    }

    /// `/ok/…` serves the audio, `/slow/…` serves it in paced chunks and counts concurrent
    /// tracks, `/hang/…` sends the headers and a little data, then waits for the client to go
    /// away; anything else is a 404.
    async fn handle(
        mut sock: TcpStream,
        counters: Arc<Counters>,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let path = String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let body = audio();
        let ok = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        if path.starts_with("/ok/") {
            let _ = sock.write_all(ok(body.len()).as_bytes()).await;
            let _ = sock.write_all(&body).await;
        } else if path.starts_with("/hang/") {
            let _ = sock.write_all(ok(body.len() * 100).as_bytes()).await;
            let _ = sock.write_all(&body[..8192]).await;
            let _ = events.send(Event::HangStarted);
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = events.send(Event::HangClosed);
        } else if path.starts_with("/slow/") {
            {
                let mut active = counters.active.lock().unwrap();
                *active.entry(path.clone()).or_default() += 1;
                counters
                    .max_active
                    .fetch_max(active.len(), Ordering::SeqCst);
            }
            let _ = sock.write_all(ok(body.len()).as_bytes()).await;
            for chunk in body.chunks(body.len() / 8 + 1) {
                if sock.write_all(chunk).await.is_err() {
                    break;
                }
                // Pacing, not synchronization: keeps each download open long enough to overlap.
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            let mut active = counters.active.lock().unwrap();
            let n = active.get_mut(&path).expect("counted");
            *n -= 1;
            if *n == 0 {
                active.remove(&path);
            }
        } else {
            let _ = sock
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
                .await;
        }
        let _ = sock.shutdown().await;
    }

    /// Every file and folder under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                if e.file_type().unwrap().is_dir() {
                    walk(root, &e.path(), out);
                }
            }
        }
        let mut out = vec![];
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// Pids of live processes whose command line mentions `needle`.
    fn processes_with(needle: &str) -> Vec<i32> {
        let mut pids = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            if cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Polls a file-system condition that no event announces (yt-dlp creating its `.part`).
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn has_part_file(dir: &Path) -> bool {
        tree(dir).iter().any(|p| p.ends_with(".part"))
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        dest: PathBuf,
        cache: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        // `%` and `:` in the folder: neither may be read as template or `-P` syntax.
        let dest = tmp.path().join("music").join("100% Hits: Vol. 1");
        let cache = tmp.path().join("cache");
        Setup {
            dest,
            cache,
            _tmp: tmp,
        }
    }

    #[tokio::test]
    async fn downloads_to_the_templated_name() {
        let _serial = YTDLP.lock().await;
        let server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
        let t = track(
            "123",
            "Artist",
            "Title",
            &format!("{}/ok/{}.mp3", server.base, token()),
        );
        let got = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(got.path, s.dest.join("Artist - Title [123].mp3"));
        assert_eq!(got.bytes, audio().len() as u64);
        assert_eq!(std::fs::read(&got.path).unwrap(), audio());
        assert_eq!(
            tree(&s.dest),
            ["Artist - Title [123].mp3"],
            "no staging folder left behind"
        );
    }

    #[tokio::test]
    async fn unicode_names_survive() {
        let _serial = YTDLP.lock().await;
        let server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
        let t = track(
            "soundcloud:7",
            "アーティスト",
            "東京の夜 🌃 café",
            &format!("{}/ok/{}.mp3", server.base, token()),
        );
        let got = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            got.path,
            s.dest
                .join("アーティスト - 東京の夜 🌃 café [soundcloud_7].mp3")
        );
        assert!(got.path.is_file());
    }

    #[tokio::test]
    async fn hostile_and_huge_titles_become_one_safe_name() {
        let _serial = YTDLP.lock().await;
        let server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
        let title = format!("AC/DC\\ 100% %(id)s\n\t\0:<>|?*\"{}", "x".repeat(5000));
        let t = track(
            "777",
            "..Dots",
            &title,
            &format!("{}/ok/{}.mp3", server.base, token()),
        );
        let got = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(got.path.parent().unwrap(), s.dest);
        let name = got.path.file_name().unwrap().to_str().unwrap();
        let stem = name.strip_suffix(".mp3").unwrap();
        assert_eq!(stem.len(), MAX_NAME_BYTES, "{name}");
        assert!(
            stem.starts_with("Dots - AC_DC_ 100% %(id)s _______xxx"),
            "{name}"
        );
        assert!(stem.ends_with("x [777]"), "{name}");
        assert!(!name.chars().any(|c| c.is_control() || c == '/'), "{name}");
        assert_eq!(tree(&s.dest), [name]);
    }

    #[tokio::test]
    async fn http_404_is_not_found_and_leaves_nothing() {
        let _serial = YTDLP.lock().await;
        let server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(30)), &s.cache);
        let t = track(
            "404",
            "A",
            "B",
            &format!("{}/missing/{}.mp3", server.base, token()),
        );
        let e = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::NotFound, "{e}");
        assert!(e.reason.is_permanent());
        assert!(e.message.contains("HTTP Error 404"), "{e}");
        assert!(!e.to_string().contains('\n'));
        assert!(tree(&s.dest).is_empty(), "{:?}", tree(&s.dest));
    }

    #[tokio::test]
    async fn bad_extra_args_point_at_the_config_key() {
        let _serial = YTDLP.lock().await;
        let s = setup();
        let mut cfg = config("yt-dlp", 1, Duration::from_secs(30));
        cfg.extra_args = vec!["--no-such-option-anywhere".into()];
        let dl = Downloader::new(&cfg, &s.cache);
        let t = track("1", "A", "B", "http://127.0.0.1:9/a.mp3");
        let e = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::Exit(2), "{e}");
        assert!(
            e.message.contains("download.extra_args") && e.message.contains("no such option"),
            "{e}"
        );
    }

    /// Runs a download against `/hang/`, waits until yt-dlp has a `.part` file, lets `stop` end
    /// it, and checks that neither a process nor a file is left.
    async fn hang_and_stop(
        timeout: Duration,
        stop: impl AsyncFnOnce(&CancellationToken),
        expected: FailureReason,
    ) -> Duration {
        let _serial = YTDLP.lock().await;
        let mut server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 1, timeout), &s.cache);
        let tok = token();
        let t = track("55", "A", "B", &format!("{}/hang/{tok}.mp3", server.base));
        let cancel = CancellationToken::new();
        let task = {
            let (dl, dest, cancel) = (dl.clone(), s.dest.clone(), cancel.clone());
            tokio::spawn(async move { dl.download(&t, &dest, &cancel).await })
        };
        assert!(matches!(server.next_event().await, Event::HangStarted));
        let pids = processes_with(&tok);
        assert!(!pids.is_empty(), "yt-dlp should be running");
        eventually("a .part file in staging", || has_part_file(&s.dest)).await;
        assert!(
            tree(&s.dest).iter().all(|p| p.starts_with(STAGING_DIR)),
            "{:?}",
            tree(&s.dest)
        );

        let stopped = Instant::now();
        stop(&cancel).await;
        let e = task.await.unwrap().unwrap_err();
        let took = stopped.elapsed();
        assert_eq!(e.reason, expected, "{e}");
        assert!(!e.reason.is_permanent());
        assert_eq!(processes_with(&tok), Vec::<i32>::new(), "yt-dlp survived");
        for pid in pids {
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            assert!(
                !alive || !processes_with(&tok).contains(&pid),
                "pid {pid} still alive"
            );
        }
        // The server sees the connection closed: the process really is gone.
        loop {
            if matches!(server.next_event().await, Event::HangClosed) {
                break;
            }
        }
        assert!(
            tree(&s.dest).is_empty(),
            "partial files left: {:?}",
            tree(&s.dest)
        );
        took
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group_and_removes_partials() {
        let started = Instant::now();
        hang_and_stop(Duration::from_secs(2), async |_| {}, FailureReason::Timeout).await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group_and_removes_partials() {
        let took = hang_and_stop(
            Duration::from_secs(60),
            async |cancel| cancel.cancel(),
            FailureReason::Cancelled,
        )
        .await;
        assert!(took < TERM_GRACE, "cancel took {took:?}");
    }

    #[tokio::test]
    async fn missing_binary_says_how_to_fix_it() {
        let s = setup();
        let dl = Downloader::new(
            &config(
                "/nonexistent/yt-dlp-for-playlistd",
                1,
                Duration::from_secs(5),
            ),
            &s.cache,
        );
        let t = track("1", "A", "B", "http://127.0.0.1:9/a.mp3");
        let e = dl
            .download(&t, &s.dest, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::YtDlpMissing);
        assert!(
            e.message.contains("pip install yt-dlp") && e.message.contains("download.ytdlp"),
            "{e}"
        );
        assert!(tree(&s.dest).is_empty());

        let e = ytdlp_version(Path::new("/nonexistent/yt-dlp-for-playlistd"))
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::YtDlpMissing);
    }

    #[tokio::test]
    async fn version_of_the_installed_ytdlp() {
        let _serial = YTDLP.lock().await;
        let v = ytdlp_version(Path::new("yt-dlp")).await.unwrap();
        assert!(v.starts_with("20") && v.contains('.'), "{v}");
    }

    #[tokio::test]
    async fn an_existing_file_is_reused_without_running_ytdlp() {
        let s = setup();
        // A yt-dlp that cannot start proves no process was needed.
        let dl = Downloader::new(
            &config(
                "/nonexistent/yt-dlp-for-playlistd",
                1,
                Duration::from_secs(5),
            ),
            &s.cache,
        );
        std::fs::create_dir_all(&s.dest).unwrap();
        std::fs::write(s.dest.join("Artist - Title [42].m4a"), b"audio").unwrap();
        std::fs::write(s.dest.join("Artist - Title [42].jpg"), b"art").unwrap();
        std::fs::write(s.dest.join("X - Y [9].mp3"), b"").unwrap();
        let cancel = CancellationToken::new();

        let got = dl
            .download(
                &track("42", "Artist", "Title", "http://x/"),
                &s.dest,
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            Downloaded {
                path: s.dest.join("Artist - Title [42].m4a"),
                bytes: 5
            }
        );

        // Renamed upstream since: still found by its id.
        let got = dl
            .download(
                &track("42", "New Name", "Remaster", "http://x/"),
                &s.dest,
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(got.path, s.dest.join("Artist - Title [42].m4a"));

        // Another id that is a prefix of 42 does not take its file.
        let e = dl
            .download(
                &track("4", "Artist", "Title", "http://x/"),
                &s.dest,
                &cancel,
            )
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::YtDlpMissing);

        // A zero-byte leftover is not a download: removed, and yt-dlp would be run.
        let e = dl
            .download(&track("9", "X", "Y", "http://x/"), &s.dest, &cancel)
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::YtDlpMissing);
        assert!(!s.dest.join("X - Y [9].mp3").exists());
    }

    #[tokio::test]
    async fn one_pool_bounds_concurrent_ytdlp_runs() {
        let _serial = YTDLP.lock().await;
        let server = Server::start().await;
        let s = setup();
        let dl = Downloader::new(&config("yt-dlp", 2, Duration::from_secs(60)), &s.cache);
        let tok = token();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..4 {
            let (dl, base, dest) = (
                dl.clone(),
                server.base.clone(),
                s.dest.join(format!("pl{}", i % 2)),
            );
            let t = track(
                &i.to_string(),
                "A",
                "B",
                &format!("{base}/slow/{tok}-{i}.mp3"),
            );
            set.spawn(async move { dl.download(&t, &dest, &CancellationToken::new()).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(server.counters.max_active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn sanitizing_keeps_text_and_drops_hazards() {
        assert_eq!(sanitize_component("  ..hidden. "), "hidden");
        assert_eq!(
            sanitize_component("a/b\\c:d*e?f\"g<h>i|j"),
            "a_b_c_d_e_f_g_h_i_j"
        );
        assert_eq!(
            sanitize_component("line\nbreak\r\n\ttab\0nul"),
            "line break tab nul"
        );
        assert_eq!(sanitize_component("\u{202E}evil\u{2066}"), "evil");
        assert_eq!(sanitize_component(" ... "), "untitled");
        assert_eq!(sanitize_component(""), "untitled");
        assert_eq!(sanitize_component("東京 🌃 👨‍👩‍👧 café"), "東京 🌃 👨‍👩‍👧 café");
    }

    #[test]
    fn names_are_capped_on_a_character_boundary() {
        let t = Template::parse(TEMPLATE);
        let tr = track("1", &"🎵".repeat(100), &"東".repeat(200), "u");
        let name = t.render(&tr, "p");
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        assert!(name.ends_with("東 [1]"), "{name}");
        assert!(name.starts_with("🎵🎵"), "{name}");
        // Short parts keep their full length; the long one gives way.
        let tr = track("1", "Short", &"t".repeat(1000), "u");
        let name = t.render(&tr, "p");
        assert!(
            name.starts_with("Short - ttt") && name.len() == MAX_NAME_BYTES,
            "{name}"
        );
        assert_eq!(
            Template::parse("{playlist} {x} {id}").render(&tr, "P/L"),
            "P_L {x} 1"
        );
        assert_eq!(
            Template::parse("{title}").render(&track("1", "", "", "u"), "p"),
            "untitled"
        );
    }

    #[test]
    fn the_id_must_be_fenced_to_match_old_names() {
        let tr = track("42", "a", "b", "u");
        let m = Template::parse(TEMPLATE).matcher(&tr).unwrap();
        assert!(m.is_match("Old - Name [42]"));
        assert!(!m.is_match("Old - Name [142]"));
        assert!(Template::parse("{title}{id}").matcher(&tr).is_none());
        assert!(
            Template::parse("{id} {title}")
                .matcher(&tr)
                .unwrap()
                .is_match("42 whatever")
        );
    }

    #[test]
    fn stderr_maps_to_reasons() {
        let cases: &[(i32, &str, FailureReason)] = &[
            (
                1,
                "ERROR: [generic] a: Unable to download webpage: HTTP Error 404: Not Found",
                FailureReason::NotFound,
            ),
            (
                1,
                "ERROR: Unsupported URL: http://127.0.0.1:8799/",
                FailureReason::Unsupported,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: This video is not available from your location due to geo restriction",
                FailureReason::GeoBlocked,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: This video is DRM protected",
                FailureReason::Drm,
            ),
            (
                1,
                "ERROR: [soundcloud] 1: HTTP Error 429: Too Many Requests",
                FailureReason::RateLimited,
            ),
            (
                1,
                "ERROR: unable to write data: [Errno 28] No space left on device",
                FailureReason::DiskFull,
            ),
            (
                1,
                "ERROR: unable to open for writing: [Errno 13] Permission denied: '/m/x.part'",
                FailureReason::PermissionDenied,
            ),
            (
                1,
                "ERROR: Postprocessing: ffprobe and ffmpeg not found. Please install",
                FailureReason::Exit(1),
            ),
            (
                1,
                "ERROR: [generic] a: Connection refused",
                FailureReason::Exit(1),
            ),
            (
                2,
                "yt-dlp: error: no such option: --bogus",
                FailureReason::Exit(2),
            ),
            (137, "", FailureReason::Exit(137)),
        ];
        for (code, line, want) in cases {
            let stderr = vec![
                "WARNING: [generic] Falling back on generic information extractor".to_string(),
                line.to_string(),
            ];
            assert_eq!(classify(*code, &stderr).reason, *want, "{line}");
        }
        // Warnings do not decide when an ERROR line exists.
        let stderr = vec![
            "WARNING: thumbnail not found".to_string(),
            "ERROR: Connection reset".to_string(),
        ];
        assert_eq!(classify(1, &stderr).reason, FailureReason::Exit(1));
        assert!(classify(137, &[]).message.contains("signal 9"));
    }

    #[test]
    fn reason_names_are_stable_and_distinct() {
        use FailureReason::*;
        let all = [
            YtDlpMissing,
            Timeout,
            Cancelled,
            GeoBlocked,
            NotFound,
            Unsupported,
            Drm,
            RateLimited,
            DiskFull,
            PermissionDenied,
            Exit(3),
            NoOutput,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(NotFound.as_str(), "not_found");
        assert_eq!(all.iter().filter(|r| r.is_permanent()).count(), 4);
        let e = DownloadError::new(Exit(1), "line one\nline two");
        assert_eq!(e.to_string(), "yt-dlp exit 1: line one line two");
    }
}
