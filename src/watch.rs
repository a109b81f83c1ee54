//! Config hot reload: tells the daemon when `playlists.toml` may have changed.
//!
//! Why the directory and not the file: editors save by renaming a new file over the old one
//! (or the old one aside, as vim does), and a watch on the file itself dies at the first such
//! save (notify #113, #531; research notes §2.3). So this watches the file's parent directory,
//! non-recursively, and keeps only events whose path names the config file.
//!
//! Invariants:
//! - Debouncing (300 ms of quiet) folds an editor's burst of events into one notification.
//!   It happens here, on tokio timers that exist only while events arrive: an idle daemon
//!   has no watcher wakeups at all (notify-debouncer-full polls every 75 ms, 800 times a
//!   minute, which is why it is not used).
//! - `Access` events never count: reading the file (the daemon's own reload) must not
//!   trigger another reload.
//! - A notification only says "maybe": the caller re-reads, validates fully, and keeps the
//!   old config on any error. [`ConfigWatcher::changed_content`] also skips saves that leave
//!   the text as it was (editors and `touch` produce those).
//! - The watcher lives exactly as long as the [`ConfigWatcher`]; dropping it stops the
//!   notify thread and closes the channel.
//! - A symlinked config is watched at both ends: the link's directory (the link replaced) and
//!   the target's directory (the dotfile edited where it lives).

use notify_debouncer_full::notify::{self, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {dir} for config changes: {reason} (fix: make sure the directory exists; on Linux raise fs.inotify.max_user_watches if it is exhausted; SIGHUP still reloads)"
    )]
    Watch { dir: PathBuf, reason: String },
    #[error("{0} has no file name (fix: point --config at the config file itself)")]
    NotAFile(PathBuf),
    #[error(
        "cannot read the changed config file {path}: {source} (fix: restore the file; the daemon keeps running with the previous config)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Watches one config file. Poll [`ConfigWatcher::changed`] (cancel-safe, so it fits in
/// `tokio::select!`) or [`ConfigWatcher::changed_content`].
pub struct ConfigWatcher {
    path: PathBuf,
    rx: UnboundedReceiver<()>,
    last_text: Option<String>,
    debounce: Duration,
    /// An event arrived and its quiet period is not over (survives a cancelled `changed`).
    pending: bool,
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Does this event concern the config file? `names` are the file names watched for.
pub fn is_relevant(kind: &EventKind, paths: &[PathBuf], names: &[OsString]) -> bool {
    if matches!(kind, EventKind::Access(_)) {
        return false;
    }
    paths
        .iter()
        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl ConfigWatcher {
    /// Starts watching. Create the watcher *before* the first load of the config, then pass
    /// the loaded text to [`ConfigWatcher::acknowledge`]: a save between the two is then
    /// reported instead of lost.
    pub fn new(path: &Path) -> Result<ConfigWatcher, WatchError> {
        ConfigWatcher::with_debounce(path, DEFAULT_DEBOUNCE)
    }

    pub fn with_debounce(path: &Path, debounce: Duration) -> Result<ConfigWatcher, WatchError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let name = path
            .file_name()
            .ok_or_else(|| WatchError::NotAFile(path.clone()))?
            .to_os_string();
        let mut watched = vec![(dir_of(&path), name.clone())];
        if let Ok(target) = std::fs::canonicalize(&path)
            && let Some(target_name) = target.file_name()
        {
            let target_dir = dir_of(&target);
            let same_dir = std::fs::canonicalize(dir_of(&path)).is_ok_and(|d| d == target_dir);
            if !same_dir || target_name != name {
                watched.push((target_dir, target_name.to_os_string()));
            }
        }
        let names: Vec<OsString> = watched.iter().map(|(_, n)| n.clone()).collect();

        let (tx, rx) = unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match res {
                Ok(event) => is_relevant(&event.kind, &event.paths, &names),
                // A watcher error (event queue overflow) may have hidden a save: report a
                // possible change and let the content check decide.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })
        .map_err(|e| WatchError::Watch {
            dir: dir_of(&path),
            reason: e.to_string(),
        })?;
        let mut dirs: Vec<PathBuf> = watched.into_iter().map(|(d, _)| d).collect();
        dirs.dedup();
        for dir in dirs {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError::Watch {
                    dir: dir.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(ConfigWatcher {
            path,
            rx,
            last_text: None,
            debounce,
            pending: false,
            _watcher: watcher,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the text the daemon is running with, so that a save which does not change it
    /// is skipped by [`ConfigWatcher::changed_content`].
    pub fn acknowledge(&mut self, text: &str) {
        self.last_text = Some(text.to_string());
    }

    /// Waits for the next "maybe changed" and swallows any already queued behind it. `None`
    /// means the watcher has stopped (it will not report again).
    pub async fn changed(&mut self) -> Option<()> {
        if !self.pending {
            self.rx.recv().await?;
            self.pending = true;
        }
        // Wait for a quiet period; every further event restarts it.
        loop {
            match tokio::time::timeout(self.debounce, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => {
                    self.pending = false;
                    return Some(());
                }
            }
        }
    }

    /// Waits until the file's text differs from the acknowledged one and returns it (and
    /// acknowledges it). An unreadable file (deleted, or mid-save on an unusual editor) is
    /// reported as an error once per event; the next save is reported normally. Not
    /// cancel-safe in one respect only: a change read just before cancellation is kept as
    /// acknowledged.
    pub async fn changed_content(&mut self) -> Option<Result<String, WatchError>> {
        loop {
            self.changed().await?;
            match std::fs::read_to_string(&self.path) {
                Ok(text) if self.last_text.as_deref() == Some(text.as_str()) => continue,
                Ok(text) => {
                    self.last_text = Some(text.clone());
                    return Some(Ok(text));
                }
                Err(source) => {
                    return Some(Err(WatchError::Read {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{AccessKind, CreateKind, ModifyKind};
    use std::fs;
    use tokio::time::timeout;

    /// Long enough for a loaded CI machine; notifications normally arrive in ~0.4 s.
    const WAIT: Duration = Duration::from_secs(5);
    /// How long a test waits to conclude that no notification is coming.
    const QUIET: Duration = Duration::from_millis(1500);

    fn setup() -> (tempfile::TempDir, PathBuf, ConfigWatcher) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("playlists.toml");
        fs::write(&path, "a = 1\n").unwrap();
        let watcher = ConfigWatcher::new(&path).unwrap();
        (dir, path, watcher)
    }

    async fn expect_change(w: &mut ConfigWatcher) {
        timeout(WAIT, w.changed())
            .await
            .expect("a notification within 5 s")
            .expect("watcher alive");
    }

    async fn expect_quiet(w: &mut ConfigWatcher) {
        assert!(
            timeout(QUIET, w.changed()).await.is_err(),
            "unexpected notification"
        );
    }

    #[test]
    fn filter_keeps_the_config_and_drops_access() {
        let names = vec![OsString::from("playlists.toml")];
        let cfg = vec![PathBuf::from("/c/playlists.toml")];
        assert!(is_relevant(
            &EventKind::Modify(ModifyKind::Any),
            &cfg,
            &names
        ));
        assert!(is_relevant(
            &EventKind::Create(CreateKind::File),
            &cfg,
            &names
        ));
        assert!(!is_relevant(
            &EventKind::Access(AccessKind::Any),
            &cfg,
            &names
        ));
        assert!(!is_relevant(
            &EventKind::Modify(ModifyKind::Any),
            &[PathBuf::from("/c/other.toml")],
            &names
        ));
        // A rename carries both names; the config's is enough.
        let both = vec![
            PathBuf::from("/c/.tmp123"),
            PathBuf::from("/c/playlists.toml"),
        ];
        assert!(is_relevant(
            &EventKind::Modify(ModifyKind::Any),
            &both,
            &names
        ));
    }

    #[tokio::test]
    async fn in_place_write_notifies_once() {
        let (_dir, path, mut w) = setup();
        fs::write(&path, "a = 2\n").unwrap();
        expect_change(&mut w).await;
        expect_quiet(&mut w).await;
    }

    #[tokio::test]
    async fn atomic_rename_save_notifies() {
        let (dir, path, mut w) = setup();
        let tmp = dir.path().join(".playlists.toml.tmp");
        fs::write(&tmp, "a = 3\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        expect_change(&mut w).await;
        // And the watch survives the replacement.
        fs::write(&path, "a = 4\n").unwrap();
        expect_change(&mut w).await;
    }

    #[tokio::test]
    async fn vim_style_save_notifies() {
        let (dir, path, mut w) = setup();
        let backup = dir.path().join("playlists.toml~");
        fs::rename(&path, &backup).unwrap();
        fs::write(&path, "a = 5\n").unwrap();
        fs::remove_file(&backup).unwrap();
        expect_change(&mut w).await;
        // A second vim save is seen too (the failure mode of watching the file itself).
        fs::rename(&path, &backup).unwrap();
        fs::write(&path, "a = 6\n").unwrap();
        fs::remove_file(&backup).unwrap();
        expect_change(&mut w).await;
    }

    #[tokio::test]
    async fn our_own_atomic_write_notifies() {
        let (_dir, path, mut w) = setup();
        crate::edit::write_config_atomically(&path, "a = 7\n").unwrap();
        expect_change(&mut w).await;
    }

    #[tokio::test]
    async fn other_files_and_reads_are_ignored() {
        let (dir, path, mut w) = setup();
        fs::write(dir.path().join("notes.toml"), "x").unwrap();
        fs::write(dir.path().join("playlists.toml.bak"), "x").unwrap();
        let _ = fs::read_to_string(&path).unwrap();
        expect_quiet(&mut w).await;
    }

    #[tokio::test]
    async fn unchanged_content_is_skipped() {
        let (_dir, path, mut w) = setup();
        w.acknowledge("a = 1\n");
        fs::write(&path, "a = 1\n").unwrap(); // a save without changes
        let next = timeout(QUIET, w.changed_content()).await;
        assert!(next.is_err(), "a no-op save is not a change");
        fs::write(&path, "a = 9\n").unwrap();
        let text = timeout(WAIT, w.changed_content())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(text, "a = 9\n");
    }

    #[tokio::test]
    async fn deleted_file_is_reported_as_unreadable() {
        let (_dir, path, mut w) = setup();
        fs::remove_file(&path).unwrap();
        let e = timeout(WAIT, w.changed_content())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("keeps running with the previous config"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn symlinked_config_is_watched_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let dotfiles = dir.path().join("dotfiles");
        let conf = dir.path().join("config");
        fs::create_dir(&dotfiles).unwrap();
        fs::create_dir(&conf).unwrap();
        let real = dotfiles.join("playlistd.toml");
        fs::write(&real, "a = 1\n").unwrap();
        let link = conf.join("playlists.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut w = ConfigWatcher::new(&link).unwrap();
        fs::write(&real, "a = 2\n").unwrap();
        expect_change(&mut w).await;
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let e = ConfigWatcher::new(Path::new("/nonexistent-playlistd/playlists.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot watch /nonexistent-playlistd"),
            "{e}"
        );
    }
}
