//! The world every scenario runs in: the library's [`Sandbox`] (fake SoundCloud, fake Notion,
//! a temporary home with a config pointing at them) plus ways to run one sync or the binary.

use playlistd::report::RunReport;
use playlistd::sandbox::Sandbox;
use playlistd::sync::{Engine, SyncError, SyncOptions};
use playlistd_fakes::notion::FakeNotionOptions;
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Output;

pub struct World(Sandbox);

impl Deref for World {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.0
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.0
    }
}

/// The yt-dlp the tests use: `scripts/test` exports the pinned one.
pub fn ytdlp() -> PathBuf {
    std::env::var_os("PLAYLISTD_TEST_YTDLP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("yt-dlp"))
}

impl World {
    pub async fn new() -> World {
        World::with_notion(FakeNotionOptions::default()).await
    }

    pub async fn with_notion(opts: FakeNotionOptions) -> World {
        let mut s = Sandbox::start(None, opts).await.expect("sandbox");
        s.ytdlp = ytdlp();
        World(s)
    }

    /// An engine as `playlistd sync` builds it, with millisecond backoffs.
    pub fn engine(&self) -> Engine {
        self.0.engine(true).expect("engine")
    }

    /// One sync of the named playlist with a fresh engine (as one `playlistd sync` run).
    pub async fn sync(&self, name: &str) -> RunReport {
        self.sync_with(name, SyncOptions::default()).await
    }

    pub async fn sync_with(&self, name: &str, opts: SyncOptions) -> RunReport {
        let (report, result) = self.try_sync_with(name, opts).await;
        if let Err(e) = result {
            panic!("sync of {name} failed: {e}\n{}", report.summary_line());
        }
        report
    }

    /// One sync that may stop: its report and its result.
    pub async fn try_sync(&self, name: &str) -> (RunReport, Result<(), SyncError>) {
        self.try_sync_with(name, SyncOptions::default()).await
    }

    pub async fn try_sync_with(
        &self,
        name: &str,
        opts: SyncOptions,
    ) -> (RunReport, Result<(), SyncError>) {
        let engine = self.engine();
        let pl = engine
            .config
            .playlist(name)
            .expect("playlist in config")
            .clone();
        engine.sync(&pl, &opts).await
    }

    /// Runs the real `playlistd` binary with an isolated HOME and XDG directories.
    pub async fn playlistd(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run playlistd")
    }

    /// Writes the config from the world's fields, then builds the command.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.write_config().expect("config");
        self.command_raw(args)
    }

    /// Runs the binary on the config file as it is on disk (for tests that edit it by hand).
    pub async fn playlistd_raw(&self, args: &[&str]) -> Output {
        self.command_raw(args)
            .output()
            .await
            .expect("run playlistd")
    }

    pub fn command_raw(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_playlistd"));
        cmd.args(["--config", self.config_path().to_str().unwrap()])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join("xdg-config"))
            .env("XDG_STATE_HOME", self.home().join("xdg-state"))
            .env("XDG_CACHE_HOME", self.home().join("xdg-cache"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Every track record of a state, read from its files: the scenarios look at all of them.
pub fn records(state: &playlistd::state::State) -> Vec<playlistd::state::TrackState> {
    state
        .tracks
        .iter()
        .map(|r| r.expect("a readable state").1.into_owned())
        .collect()
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `playlistd run`, with its stderr (the log) collected line by line so tests can
/// wait for events instead of sleeping.
pub struct Daemon {
    pub child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl World {
    pub fn start_daemon(&self) -> Daemon {
        self.write_config().expect("config");
        self.start_daemon_raw()
    }

    /// Starts the daemon on the config file as it is on disk.
    pub fn start_daemon_raw(&self) -> Daemon {
        self.start_daemon_env(&[])
    }

    /// Starts the daemon on the config file as it is on disk, with these variables set too
    /// (`NOTIFY_SOCKET`, `WATCHDOG_USEC`: what systemd would set).
    pub fn start_daemon_env(&self, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let mut cmd = self.command_raw(&["run"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn playlistd run");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let (l, n) = (lines.clone(), notify.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                l.lock().unwrap().push(line);
                n.notify_waiters();
            }
        });
        Daemon {
            child,
            lines,
            notify,
        }
    }
}

impl Daemon {
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `n` log lines contain `needle`; panics with the log after `secs`.
    pub async fn wait_for_n(&self, needle: &str, n: usize, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let notified = self.notify.notified();
            let found: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no {n}x {needle:?} within {secs}s; log:\n{}",
                    self.log().join("\n")
                );
            }
        }
    }

    pub async fn wait_for(&self, needle: &str, secs: u64) -> String {
        self.wait_for_n(needle, 1, secs).await
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, sig) };
    }

    /// SIGTERM, then the exit status and how long the exit took.
    pub async fn stop(mut self) -> (std::process::ExitStatus, std::time::Duration, Vec<String>) {
        let t = std::time::Instant::now();
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait())
            .await
            .expect("daemon exits after SIGTERM")
            .unwrap();
        let elapsed = t.elapsed();
        // Let the reader drain the last lines.
        tokio::task::yield_now().await;
        (status, elapsed, self.log())
    }
}

/// The failure as the user meets it: the exit code, no panic, the token nowhere in the output,
/// and exactly one `playlistd:` error line, which is returned.
pub fn failure(w: &World, out: &Output, code: i32) -> String {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "exit code; output:\n{all}");
    assert!(!all.contains("panicked"), "a panic:\n{all}");
    assert!(!all.contains(&w.notion.token()), "the token leaked:\n{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("playlistd:"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{all}");
    errors[0].to_string()
}

/// Like [`failure`], and the line carries the fix.
pub fn failure_with_fix(w: &World, out: &Output, code: i32) -> String {
    let line = failure(w, out, code);
    assert!(line.contains("(fix: "), "the error names the fix: {line}");
    line
}

/// Every path under `dir`, folders included.
pub fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p.display().to_string());
        }
    }
    out
}

/// A set of `ids` by "Band", titled "Song {id}".
pub fn band_set(pid: u64, slug: &str, ids: std::ops::RangeInclusive<u64>) -> FakePlaylist {
    FakePlaylist::new(pid, "u", slug)
        .tracks(ids.map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band")))
}

/// A schedule that never comes during a test (1 January, midnight).
pub const YEARLY: &str = "schedule = \"0 0 0 1 1 *\"";
