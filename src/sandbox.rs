//! A whole playlistd world on one machine: the fake SoundCloud, the fake Notion, a directory
//! with a real `playlists.toml` pointing at them, a token file and a music folder.
//!
//! The scenario tests, `playlistd demo` and the benchmarks all start from here, so the three
//! exercise the same config format and the same engine wiring as `playlistd sync`.
//!
//! The fakes themselves are the `playlistd_fakes` crate, which does not know playlistd's types;
//! what turns a fake into playlistd configuration (a `[soundcloud]` section from the fake's
//! base URLs, [`FakeSoundCloudConfig`]) lives here. Built with the `demo` feature and for tests.

use crate::config::{self, Config, SoundCloudConfig};
use crate::paths::Paths;
use crate::state::{State, StateStore};
use crate::sync::{Engine, Wiring, wire};
use playlistd_fakes::notion::{FakeNotion, FakeNotionOptions};
use playlistd_fakes::soundcloud::FakeSoundCloud;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The `[soundcloud]` configuration of a fake SoundCloud (bring it into scope to call
/// `sc.config()`).
pub trait FakeSoundCloudConfig {
    /// A `[soundcloud]` config pointing at this fake, with no configured client id.
    fn config(&self) -> SoundCloudConfig;
}

impl FakeSoundCloudConfig for FakeSoundCloud {
    fn config(&self) -> SoundCloudConfig {
        SoundCloudConfig {
            api_base: Url::parse(&self.api_base()).unwrap(),
            web_base: Url::parse(&self.web_base()).unwrap(),
            short_link_base: Url::parse(&self.short_link_base()).unwrap(),
            client_id: None,
            user_agent: None,
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct Sandbox {
    pub sc: FakeSoundCloud,
    pub notion: FakeNotion,
    /// `[[playlist]]` entries: (name, url, extra TOML lines such as `schedule = "..."`).
    pub playlists: Vec<(String, String, String)>,
    pub downloads: bool,
    /// `download.engine`: `auto` (the default) downloads natively from the fake's CDN.
    pub engine: String,
    pub ytdlp: PathBuf,
    pub requests_per_minute: u32,
    /// `notion.timeout_secs`: how long a slow Notion answer is waited for.
    pub notion_timeout_secs: u64,
    pub download_concurrency: usize,
    /// `download.analyze`: off unless a test is about tempo and key, because decoding every
    /// fake track (hours of audio in the big scenarios) would dominate the suite's time.
    pub analyze: bool,
    /// Extra TOML appended to the generated file.
    pub extra: String,
    /// Extra TOML lines inside `[download]` (e.g. `extra_args = [...]`).
    pub download_extra: String,
    /// Extra TOML lines inside `[soundcloud]` (e.g. `user_agent = "..."`).
    pub soundcloud_extra: String,
    /// Extra TOML lines inside `[notion]` (e.g. `overwrite_analysis = true`).
    pub notion_extra: String,
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// Starts both fakes; files go to `root`, or to a temporary directory removed on drop.
    pub async fn start(root: Option<&Path>, notion: FakeNotionOptions) -> std::io::Result<Sandbox> {
        let (root, temp) = match root {
            Some(r) => {
                std::fs::create_dir_all(r)?;
                (r.to_path_buf(), None)
            }
            None => {
                let t = tempfile::tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Sandbox {
            sc: FakeSoundCloud::start().await,
            notion: FakeNotion::start(notion).await,
            playlists: vec![],
            downloads: true,
            engine: "auto".to_string(),
            ytdlp: PathBuf::from("yt-dlp"),
            requests_per_minute: 6000,
            notion_timeout_secs: 5,
            download_concurrency: 4,
            analyze: false,
            extra: String::new(),
            download_extra: String::new(),
            soundcloud_extra: String::new(),
            notion_extra: String::new(),
            root,
            _temp: temp,
        })
    }

    pub fn watch(&mut self, name: &str, url: &str) {
        self.watch_with(name, url, "");
    }

    /// A playlist with extra keys, e.g. `schedule = "*/2 * * * * *"`.
    pub fn watch_with(&mut self, name: &str, url: &str, extra: &str) {
        self.playlists
            .push((name.to_string(), url.to_string(), extra.to_string()));
    }

    pub fn home(&self) -> &Path {
        &self.root
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("playlists.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn music_dir(&self) -> PathBuf {
        self.root.join("music")
    }
    pub fn token_file(&self) -> PathBuf {
        self.root.join("notion-token")
    }

    /// A real `playlists.toml` pointing at the fakes.
    pub fn config_text(&self) -> String {
        let s = |p: PathBuf| format!("{:?}", p.display().to_string());
        let mut text = format!(
            r#"# Points playlistd at the fake SoundCloud and Notion servers on 127.0.0.1.
[notion]
database = "{db}"
token_file = {token}
api_base = "{napi}"
requests_per_minute = {rpm}
timeout_secs = {ntimeout}
{nextra}

[soundcloud]
api_base = "{scapi}"
web_base = "{scweb}"
short_link_base = "{scshort}"
timeout_secs = 5
{scextra}

[download]
enabled = {downloads}
dir = {music}
engine = {engine:?}
ytdlp = {ytdlp}
concurrency = {conc}
timeout_secs = 60
analyze = {analyze}
{dlextra}

[paths]
state_dir = {state}
cache_dir = {cache}
{extra}
"#,
            db = self.notion.database_id(),
            token = s(self.token_file()),
            napi = self.notion.api_base(),
            rpm = self.requests_per_minute,
            ntimeout = self.notion_timeout_secs,
            nextra = self.notion_extra,
            scapi = self.sc.api_base(),
            scweb = self.sc.web_base(),
            scshort = self.sc.short_link_base(),
            scextra = self.soundcloud_extra,
            downloads = self.downloads,
            engine = self.engine,
            music = s(self.music_dir()),
            ytdlp = s(self.ytdlp.clone()),
            conc = self.download_concurrency,
            analyze = self.analyze,
            dlextra = self.download_extra,
            state = s(self.state_dir()),
            cache = s(self.cache_dir()),
            extra = self.extra,
        );
        for (name, url, extra) in &self.playlists {
            text.push_str(&format!(
                "\n[[playlist]]\nname = {name:?}\nurl = {url:?}\n{extra}\n"
            ));
        }
        text
    }

    /// Writes the config and the token file, and parses the config as the binary would.
    pub fn write_config(&self) -> Result<Arc<Config>, config::ConfigError> {
        let io = |e: std::io::Error| config::ConfigError {
            path: self.config_path(),
            location: None,
            message: e.to_string(),
            fix: None,
        };
        std::fs::write(self.config_path(), self.config_text()).map_err(io)?;
        std::fs::write(self.token_file(), self.notion.token()).map_err(io)?;
        config::load(&self.config_path(), &Paths::for_tests(&self.root)).map(Arc::new)
    }

    /// An engine wired as `playlistd sync` wires it. `fast_retries` swaps the production
    /// backoffs (seconds) for milliseconds, for tests.
    pub fn engine(&self, fast_retries: bool) -> anyhow::Result<Engine> {
        let cfg = self.write_config()?;
        let (store, _) = StateStore::load(&cfg.state_dir)?;
        let wiring = Wiring {
            fast_retries,
            ..Wiring::new(store)
        };
        Ok(wire::engine(cfg, wiring)?)
    }

    pub fn state(&self) -> State {
        StateStore::load(&self.state_dir())
            .map(|(s, _)| s.state)
            .unwrap_or_default()
    }

    /// Every audio file under the music folder (not the `.m3u8` playlist files), relative to
    /// it, sorted.
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
        // The audio only: the playlist files (`<name>.m3u8`) are read by the tests about them.
        files.retain(|p| p.extension().is_none_or(|e| e != "m3u8"));
        let music = self.music_dir();
        let mut rel: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(&music).unwrap_or(p).display().to_string())
            .collect();
        rel.sort();
        rel
    }
}
