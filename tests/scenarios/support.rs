//! The world every scenario runs in: the library's [`Sandbox`] (fake SoundCloud, fake Notion,
//! a temporary home with a config pointing at them) plus ways to run one sync or the binary.

use playlistd::fake::notion::FakeNotionOptions;
use playlistd::fake::sandbox::Sandbox;
use playlistd::report::RunReport;
use playlistd::sync::{Engine, SyncOptions};
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
        let engine = self.engine();
        let pl = engine
            .config
            .playlist(name)
            .expect("playlist in config")
            .clone();
        let (report, result) = engine.sync(&pl, &opts).await;
        if let Err(e) = result {
            panic!("sync of {name} failed: {e}\n{}", report.summary_line());
        }
        report
    }

    /// Runs the real `playlistd` binary with an isolated HOME and XDG directories.
    pub async fn playlistd(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run playlistd")
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.write_config().expect("config");
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

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
