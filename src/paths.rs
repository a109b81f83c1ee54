//! Where playlistd keeps its files when the user does not say.
//!
//! Priority, highest first: command-line flag, `PLAYLISTD_*` environment variable, systemd's
//! `$STATE_DIRECTORY`/`$CACHE_DIRECTORY`/`$LOGS_DIRECTORY` (the `directories` crate ignores
//! them), then the platform directories (XDG on Linux, `~/Library/...` on macOS).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub log_dir: PathBuf,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Paths {
    /// The platform defaults, with environment overrides applied.
    pub fn discover() -> Paths {
        let dirs = directories::ProjectDirs::from("org", "playlistd", "playlistd");
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."));
        let (config_dir, state_dir, cache_dir, log_dir) = match &dirs {
            Some(d) => {
                let state = d
                    .state_dir()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| d.data_local_dir().to_path_buf());
                let logs = if cfg!(target_os = "macos") {
                    home.join("Library/Logs/playlistd")
                } else {
                    state.join("logs")
                };
                (
                    d.config_dir().to_path_buf(),
                    state,
                    d.cache_dir().to_path_buf(),
                    logs,
                )
            }
            None => {
                let base = home.join(".playlistd");
                (
                    base.clone(),
                    base.join("state"),
                    base.join("cache"),
                    base.join("logs"),
                )
            }
        };
        Paths {
            config_file: env_path("PLAYLISTD_CONFIG")
                .unwrap_or_else(|| config_dir.join("playlists.toml")),
            state_dir: env_path("PLAYLISTD_STATE_DIR")
                .or_else(|| env_path("STATE_DIRECTORY"))
                .unwrap_or(state_dir),
            cache_dir: env_path("PLAYLISTD_CACHE_DIR")
                .or_else(|| env_path("CACHE_DIRECTORY"))
                .unwrap_or(cache_dir),
            log_dir: env_path("PLAYLISTD_LOG_DIR")
                .or_else(|| env_path("LOGS_DIRECTORY"))
                .unwrap_or(log_dir),
        }
    }

    /// Everything under one root: for tests and the demo.
    pub fn for_tests(root: &Path) -> Paths {
        Paths {
            config_file: root.join("playlists.toml"),
            state_dir: root.join("state"),
            cache_dir: root.join("cache"),
            log_dir: root.join("logs"),
        }
    }
}

/// Expands a leading `~/` to the home directory; other paths are returned as written.
pub fn expand_tilde(p: &str) -> PathBuf {
    if (p == "~" || p.starts_with("~/"))
        && let Some(b) = directories::BaseDirs::new()
    {
        return b
            .home_dir()
            .join(p.trim_start_matches('~').trim_start_matches('/'));
    }
    PathBuf::from(p)
}
