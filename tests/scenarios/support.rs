//! The world every scenario runs in: a fake SoundCloud, a fake Notion, a temporary home with
//! a config file pointing at them, and helpers to run the engine or the real binary.

use playlistd::config::{self, Config};
use playlistd::fake::notion::{FakeNotion, FakeNotionOptions};
use playlistd::fake::soundcloud::FakeSoundCloud;
use playlistd::notion::{ClientOptions, Notion};
use playlistd::paths::Paths;
use playlistd::report::RunReport;
use playlistd::source::soundcloud::{RetryPolicy, SoundCloud};
use playlistd::state::{State, StateStore};
use playlistd::sync::{Engine, SyncOptions};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

pub struct World {
    pub sc: FakeSoundCloud,
    pub notion: FakeNotion,
    pub root: tempfile::TempDir,
    /// `[[playlist]]` entries: (name, url).
    pub playlists: Vec<(String, String)>,
    pub downloads: bool,
    pub ytdlp: PathBuf,
    pub extra: String,
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
        World {
            sc: FakeSoundCloud::start().await,
            notion: FakeNotion::start(opts).await,
            root: tempfile::tempdir().expect("tempdir"),
            playlists: vec![],
            downloads: true,
            ytdlp: ytdlp(),
            extra: String::new(),
        }
    }

    pub fn watch(&mut self, name: &str, url: &str) {
        self.playlists.push((name.to_string(), url.to_string()));
    }

    pub fn home(&self) -> &Path {
        self.root.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.home().join("playlists.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.home().join("state")
    }
    pub fn music_dir(&self) -> PathBuf {
        self.home().join("music")
    }
    pub fn token_file(&self) -> PathBuf {
        self.home().join("notion-token")
    }

    pub fn config_text(&self) -> String {
        let mut s = format!(
            r#"[notion]
database = "{db}"
token_file = {token:?}
api_base = "{napi}"
requests_per_minute = 6000
timeout_secs = 5

[soundcloud]
api_base = "{scapi}"
web_base = "{scweb}"
timeout_secs = 5

[download]
enabled = {downloads}
dir = {music:?}
ytdlp = {ytdlp:?}
concurrency = 4
timeout_secs = 60

[paths]
state_dir = {state:?}
cache_dir = {cache:?}
{extra}
"#,
            db = self.notion.database_id(),
            token = self.token_file().display().to_string(),
            napi = self.notion.api_base(),
            scapi = self.sc.api_base(),
            scweb = self.sc.web_base(),
            downloads = self.downloads,
            music = self.music_dir().display().to_string(),
            ytdlp = self.ytdlp.display().to_string(),
            state = self.state_dir().display().to_string(),
            cache = self.home().join("cache").display().to_string(),
            extra = self.extra,
        );
        for (name, url) in &self.playlists {
            s.push_str(&format!("\n[[playlist]]\nname = {name:?}\nurl = {url:?}\n"));
        }
        s
    }

    /// Writes the config and the token file, and parses the config as the binary would.
    pub fn config(&self) -> Arc<Config> {
        std::fs::write(self.config_path(), self.config_text()).unwrap();
        std::fs::write(self.token_file(), self.notion.token()).unwrap();
        Arc::new(
            config::load(&self.config_path(), &Paths::for_tests(self.home()))
                .expect("config parses"),
        )
    }

    /// An engine as `playlistd sync` builds it, with millisecond backoffs.
    pub fn engine(&self) -> Engine {
        let cfg = self.config();
        let token = cfg.notion.token.read().unwrap();
        let notion = Notion::with_options(&cfg.notion, &token, ClientOptions::for_tests()).unwrap();
        let (store, _) = StateStore::load(&cfg.state_dir).unwrap();
        let retry = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(2),
        };
        let sc = SoundCloud::new(&cfg.soundcloud, &cfg.cache_dir).with_retry(retry);
        Engine::new(cfg, Some(notion), store).with_soundcloud(sc)
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

    pub fn state(&self) -> State {
        StateStore::load(&self.state_dir()).unwrap().0.state
    }

    /// Every file under the music folder (relative paths), sorted.
    pub fn music_files(&self) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out)
                    } else {
                        out.push(p)
                    }
                }
            }
        }
        let mut files = vec![];
        walk(&self.music_dir(), &mut files);
        let mut rel: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(self.music_dir())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        rel.sort();
        rel
    }

    /// Runs the real `playlistd` binary with an isolated HOME and XDG directories.
    pub async fn playlistd(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run playlistd")
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.config();
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
