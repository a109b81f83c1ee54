//! Where log lines go: an optional rotated file in the log directory, and stderr.
//!
//! Decisions and invariants:
//! - File lines pass through tracing-appender's worker thread with `lossy(false)`: under a
//!   burst the daemon waits for the disk rather than silently dropping lines (the default is
//!   lossy). The [`LogGuard`] flushes that thread when dropped, so `main` must hold it until it
//!   returns; `std::process::exit` skips the flush. Its queue holds [`FILE_QUEUE_LINES`] lines,
//!   not the crate's default 128,000, whose slots alone are 4 MiB resident for the daemon's life.
//! - Only playlistd's own targets follow the requested level; every other crate stays at
//!   `warn`, and the HTTP stack (hyper, reqwest, h2, rustls) stays at `warn` even when
//!   `PLAYLISTD_LOG` raises everything, unless it names them: their debug output carries request
//!   headers, and the Notion token is a header.
//! - Rotation happens at UTC midnight (or hour): tracing-appender 0.2.5 has no local-time
//!   rotation (tokio-rs/tracing#3102). Timestamps inside lines are UTC RFC 3339 as well.
//! - Old files beyond `keep` are pruned when the writer is built (every start) and at each
//!   rotation; only `playlistd.*.log` files are ever considered.
//! - Building the layers is separate from installing them ([`build`] vs [`init`]): a global
//!   subscriber can be installed once per process, so tests build and scope their own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation as AppenderRotation};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// Overrides the level and filter, in `EnvFilter` syntax (`playlistd=debug,warn`).
pub const LOG_ENV: &str = "PLAYLISTD_LOG";
pub const DEFAULT_FILTER: &str = "playlistd=info,warn";
pub const FILE_PREFIX: &str = "playlistd";
pub const FILE_SUFFIX: &str = "log";
pub const DEFAULT_KEEP: usize = 14;

/// Lines the file writer's queue holds before a logging call waits for the disk.
///
/// tracing-appender's default (128,000) allocates a 32-byte slot per line up front in a
/// crossbeam channel that touches every slot: 4 MiB resident for the whole life of the daemon,
/// which logs a few lines per sync (B4 in BENCHMARKS.md: it was a fifth of the idle daemon).
/// The writer thread drains a line in microseconds, so 1,024 (32 KiB) absorbs any burst this
/// program makes, even at `trace`; past it a caller waits briefly (the queue is not lossy).
pub const FILE_QUEUE_LINES: usize = 1024;

/// Targets whose verbose output may contain credentials.
/// Dependencies' targets and the level they are capped at unless a directive names them: the
/// HTTP stack's chatter, and mp4-atom, which warns about every iTunes tag atom it does not
/// model (the tags playlistd itself writes) whenever the analysis reads an `.m4a`, and
/// symphonia's probe, which reports the bytes it skips before a stream it then decodes.
const CAPPED_TARGETS: &[(&str, &str)] = &[
    ("hyper", "warn"),
    ("hyper_util", "warn"),
    ("reqwest", "warn"),
    ("h2", "warn"),
    ("rustls", "warn"),
    ("mp4_atom", "error"),
    ("symphonia_core", "error"),
];

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "invalid log filter {directives:?}: {reason} (fix: use a level such as \"debug\", or directives such as \"playlistd=debug,warn\")"
    )]
    BadFilter { directives: String, reason: String },
    #[error(
        "cannot open log files in {dir}: {reason} (fix: create the directory or make it writable, or choose another with PLAYLISTD_LOG_DIR)"
    )]
    Dir { dir: PathBuf, reason: String },
    #[error(
        "a logger is already installed in this process (fix: call logging::init once, at the start of main)"
    )]
    AlreadyInstalled,
}

/// How often the file rolls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    #[default]
    Daily,
    Hourly,
    /// One file, `playlistd.log`, that grows: for users with their own logrotate.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// The log directory; `None` logs to stderr only (the right choice under systemd, whose
    /// journal already stores and rotates stderr).
    pub dir: Option<PathBuf>,
    pub rotation: Rotation,
    /// Rotated files kept, the current one included; 0 keeps all.
    pub keep: usize,
    /// A level for playlistd's own targets (`"debug"`), or full `EnvFilter` directives; empty
    /// means [`DEFAULT_FILTER`]. `PLAYLISTD_LOG` overrides it when set.
    pub level: String,
    pub format: LogFormat,
    pub stderr: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            dir: None,
            rotation: Rotation::Daily,
            keep: DEFAULT_KEEP,
            level: String::new(),
            format: LogFormat::Text,
            stderr: true,
        }
    }
}

/// Keeps the file writer's worker thread alive and flushes it on drop. Hold it in `main` for
/// the life of the process (`let _guard = logging::init(..)?;`, not `let _ = ..`), and return
/// from `main` instead of calling `std::process::exit`, or the last lines are lost.
#[must_use = "dropping the guard stops file logging; keep it until main returns"]
#[derive(Debug)]
pub struct LogGuard {
    file_dir: Option<PathBuf>,
    _worker: Option<WorkerGuard>,
}

impl LogGuard {
    /// The directory file logs go to, for a startup line such as "logging to ...".
    pub fn file_dir(&self) -> Option<&Path> {
        self.file_dir.as_deref()
    }
}

/// The filter directives in force: `PLAYLISTD_LOG` if set, else `level`, else the default. A
/// bare level applies to playlistd only; HTTP targets are capped unless named.
pub fn filter_directives(level: &str, env: Option<&str>) -> String {
    let requested = env
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(level.trim());
    let mut directives = if requested.is_empty() {
        DEFAULT_FILTER.to_string()
    } else if is_bare_level(requested) {
        format!("playlistd={},warn", requested.to_ascii_lowercase())
    } else {
        requested.to_string()
    };
    for (target, cap) in CAPPED_TARGETS {
        let named = directives.split(',').any(|d| {
            let d = d.trim();
            d.strip_prefix(target)
                .is_some_and(|rest| rest.starts_with(['=', ':', '[']))
        });
        if !named {
            directives.push_str(&format!(",{target}={cap}"));
        }
    }
    directives
}

fn is_bare_level(s: &str) -> bool {
    ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .any(|l| s.eq_ignore_ascii_case(l))
}

fn env_filter(directives: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LogError::BadFilter {
            directives: directives.to_string(),
            reason: e.to_string(),
        })
}

/// Opens the rotating file in `dir` (created if missing) behind a non-lossy background writer.
/// Pruning of files beyond `keep` happens here, before the first line is written.
pub fn build_file_writer(
    dir: &Path,
    rotation: Rotation,
    keep: usize,
) -> Result<(NonBlocking, WorkerGuard), LogError> {
    let dir_err = |reason: String| LogError::Dir {
        dir: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| dir_err(e.to_string()))?;
    let rotation = match rotation {
        Rotation::Daily => AppenderRotation::DAILY,
        Rotation::Hourly => AppenderRotation::HOURLY,
        Rotation::Never => AppenderRotation::NEVER,
    };
    // No `latest_symlink`: a file system without symlinks would then stop the daemon from
    // starting, for a convenience.
    let appender = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .max_log_files(keep)
        .build(dir)
        .map_err(|e| dir_err(e.to_string()))?;
    Ok(NonBlockingBuilder::default()
        .buffered_lines_limit(FILE_QUEUE_LINES)
        .lossy(false)
        .thread_name("playlistd-log")
        .finish(appender))
}

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

fn format_layer<S, W>(format: LogFormat, writer: W, ansi: bool, with_time: bool) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match (format, with_time) {
        (LogFormat::Json, _) => base.json().flatten_event(true).boxed(),
        (LogFormat::Text, true) => base.boxed(),
        (LogFormat::Text, false) => base.without_time().boxed(),
    }
}

/// Is stderr connected to journald? `JOURNAL_STREAM` alone is not enough: children of a
/// service (a shell in a terminal started by a systemd-managed terminal server) inherit it,
/// so its `device:inode` must match stderr's (systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        match std::fs::metadata("/proc/self/fd/2") {
            Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        false
    }
}

/// Builds the subscriber without installing it; `env_override` stands for `PLAYLISTD_LOG`.
/// Tests use this with `tracing::subscriber::with_default`.
pub fn build_with(
    opts: &LogOptions,
    env_override: Option<&str>,
) -> Result<(impl Subscriber + Send + Sync + use<>, LogGuard), LogError> {
    let filter = env_filter(&filter_directives(&opts.level, env_override))?;
    let mut layers: Vec<BoxedLayer<_>> = Vec::new();
    let mut worker = None;
    if let Some(dir) = &opts.dir {
        let (writer, guard) = build_file_writer(dir, opts.rotation, opts.keep)?;
        layers.push(format_layer(opts.format, writer, false, true));
        worker = Some(guard);
    }
    if opts.stderr {
        let tty = std::io::stderr().is_terminal();
        // The journal stamps every line already.
        layers.push(format_layer(
            opts.format,
            std::io::stderr,
            tty,
            !stderr_is_journal(),
        ));
    }
    let subscriber = Registry::default().with(filter).with(layers);
    Ok((
        subscriber,
        LogGuard {
            file_dir: opts.dir.clone(),
            _worker: worker,
        },
    ))
}

/// [`build_with`], reading `PLAYLISTD_LOG` from the environment.
pub fn build(
    opts: &LogOptions,
) -> Result<(impl Subscriber + Send + Sync + use<>, LogGuard), LogError> {
    let env = std::env::var(LOG_ENV).ok();
    build_with(opts, env.as_deref())
}

/// Builds and installs the process-wide subscriber (also routing `log` records from
/// dependencies). Call once, first thing in `main`, and keep the guard.
pub fn init(opts: &LogOptions) -> Result<LogGuard, LogError> {
    let (subscriber, guard) = build(opts)?;
    subscriber
        .try_init()
        .map_err(|_| LogError::AlreadyInstalled)?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("playlistd") && n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    fn read_all(dir: &Path) -> String {
        log_files(dir)
            .iter()
            .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
            .collect()
    }

    fn file_only(dir: &Path, format: LogFormat) -> LogOptions {
        LogOptions {
            dir: Some(dir.to_path_buf()),
            format,
            stderr: false,
            ..LogOptions::default()
        }
    }

    #[test]
    fn directives_default_level_and_env() {
        let caps = ",hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,mp4_atom=error,symphonia_core=error";
        assert_eq!(
            filter_directives("", None),
            format!("playlistd=info,warn{caps}")
        );
        assert_eq!(
            filter_directives("DEBUG", None),
            format!("playlistd=debug,warn{caps}")
        );
        assert_eq!(
            filter_directives("debug", Some("trace")),
            format!("playlistd=trace,warn{caps}")
        );
        assert_eq!(
            filter_directives("debug", Some("  ")),
            format!("playlistd=debug,warn{caps}")
        );
        // Naming an HTTP target explicitly is respected.
        assert_eq!(
            filter_directives("", Some("debug,reqwest=debug")),
            "debug,reqwest=debug,hyper=warn,hyper_util=warn,h2=warn,rustls=warn,mp4_atom=error,symphonia_core=error"
        );
        assert!(matches!(
            build_with(
                &LogOptions {
                    stderr: false,
                    ..LogOptions::default()
                },
                Some("playlistd=loud")
            ),
            Err(LogError::BadFilter { .. })
        ));
    }

    #[test]
    fn text_lines_reach_the_file_and_other_crates_stay_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let (sub, guard) = build_with(&file_only(&logs, LogFormat::Text), Some("debug")).unwrap();
        assert_eq!(guard.file_dir(), Some(logs.as_path()));
        tracing::subscriber::with_default(sub, || {
            tracing::debug!(target: "playlistd::sync", playlist = "late-night", "listing playlist");
            tracing::debug!(target: "hyper::proto", "authorization: Bearer secret");
            tracing::info!(target: "some_crate", "chatter");
            tracing::warn!(target: "some_crate", "a real problem");
        });
        drop(guard);
        let files = log_files(&logs);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].starts_with("playlistd.2") && files[0].ends_with(".log"),
            "{files:?}"
        );
        let text = read_all(&logs);
        assert!(
            text.contains("listing playlist") && text.contains("late-night"),
            "{text}"
        );
        assert!(text.contains("a real problem"), "{text}");
        assert!(
            !text.contains("Bearer"),
            "HTTP internals must stay quiet: {text}"
        );
        assert!(!text.contains("chatter"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no ANSI escapes in files: {text:?}"
        );
    }

    #[test]
    fn json_format_writes_one_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let (sub, guard) = build_with(&file_only(dir.path(), LogFormat::Json), None).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "playlistd::daemon", new_tracks = 3, "sync finished");
            tracing::info!(target: "playlistd::daemon", "second line");
        });
        drop(guard);
        let text = read_all(dir.path());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "sync finished");
        assert_eq!(lines[0]["new_tracks"], 3);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["target"], "playlistd::daemon");
    }

    #[test]
    fn old_files_beyond_keep_are_pruned_at_start() {
        let dir = tempfile::tempdir().unwrap();
        // Oldest first, so creation times (what the appender sorts by) follow the dates.
        for day in ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"] {
            std::fs::write(dir.path().join(format!("playlistd.{day}.log")), "old\n").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a log").unwrap();
        let (_writer, guard) = build_file_writer(dir.path(), Rotation::Daily, 2).unwrap();
        drop(guard);
        let files = log_files(dir.path());
        assert_eq!(files.len(), 2, "the newest old file and today's: {files:?}");
        assert!(
            files.contains(&"playlistd.2026-01-04.log".to_string()),
            "{files:?}"
        );
        assert!(
            dir.path().join("notes.txt").exists(),
            "other files are never pruned"
        );
    }

    #[test]
    fn keep_zero_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
            std::fs::write(dir.path().join(format!("playlistd.{day}.log")), "old\n").unwrap();
        }
        let (_writer, guard) = build_file_writer(dir.path(), Rotation::Daily, 0).unwrap();
        drop(guard);
        assert_eq!(log_files(dir.path()).len(), 4);
    }

    #[test]
    fn never_rotation_uses_one_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sub, guard) = build_with(
            &LogOptions {
                rotation: Rotation::Never,
                ..file_only(dir.path(), LogFormat::Text)
            },
            None,
        )
        .unwrap();
        tracing::subscriber::with_default(sub, || tracing::info!(target: "playlistd", "hello"));
        drop(guard);
        assert_eq!(log_files(dir.path()), vec!["playlistd.log".to_string()]);
    }

    #[test]
    fn a_burst_longer_than_the_queue_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let (sub, guard) = build_with(&file_only(dir.path(), LogFormat::Text), None).unwrap();
        let lines = FILE_QUEUE_LINES * 5;
        tracing::subscriber::with_default(sub, || {
            for i in 0..lines {
                tracing::info!(target: "playlistd", "burst line {i}");
            }
        });
        drop(guard);
        let text = read_all(dir.path());
        assert_eq!(text.matches("burst line ").count(), lines);
        assert!(text.contains(&format!("burst line {}", lines - 1)));
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let e = build_file_writer(&blocker.join("logs"), Rotation::Daily, 2).unwrap_err();
        assert!(e.to_string().contains("PLAYLISTD_LOG_DIR"), "{e}");
    }
}
