//! One supervised yt-dlp process: every place that runs yt-dlp (the `source = "yt-dlp"`
//! lister, the downloader, `playlistd check`'s version probe) starts it through [`Run`], so
//! they all get the same guarantees.
//!
//! Invariants of every run:
//! - `--ignore-config --no-update` come first: a user's yt-dlp config or a self-update never
//!   changes what playlistd asked for.
//! - yt-dlp runs in its own process group, which keeps it out of a terminal's Ctrl-C; so that
//!   it still dies with playlistd (SIGKILL, OOM), Linux delivers `PR_SET_PDEATHSIG`, and a
//!   child whose parent died before the prctl never execs.
//! - Python speaks UTF-8 whatever the daemon's locale (`PYTHONUTF8`, `PYTHONIOENCODING`):
//!   titles reach the disk and come back on stdout unchanged.
//! - A timeout or a cancel ends the whole group (yt-dlp and anything it started), first with
//!   SIGTERM, then SIGKILL after [`TERM_GRACE`]; so does dropping the run's future. No yt-dlp
//!   outlives its [`Run::run`] call.
//! - Only the last [`TAIL_LINES`] non-blank lines of stderr are kept (and logged at debug), and
//!   of stdout unless the caller asks for all of it; [`last_error_line`] picks the telling one.
//!
//! Unix only: process groups and signals are how the tree is ended.

pub mod cache;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// SIGTERM lets yt-dlp (and ffmpeg, when extra_args use it) exit on their own; whatever it was
/// doing is discarded anyway, so the wait is short.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// yt-dlp's errors come last, and the path a download wants is the last line of stdout; older
/// lines are context nobody needs to keep.
pub const TAIL_LINES: usize = 20;

/// How one yt-dlp run ended.
#[derive(Debug)]
pub enum Ended {
    /// yt-dlp exited on its own (or waiting for it failed).
    Exited(std::io::Result<ExitStatus>),
    /// The timeout elapsed; the process group was ended.
    TimedOut,
    /// The cancel token fired; the process group was ended.
    Cancelled,
}

/// What a finished run leaves: how it ended and the lines it kept.
#[derive(Debug)]
pub struct Finished {
    pub ended: Ended,
    /// The last [`TAIL_LINES`] non-blank lines of stdout (all of them after
    /// [`Run::whole_stdout`]), without their line ends.
    pub stdout: VecDeque<Vec<u8>>,
    /// The last [`TAIL_LINES`] non-blank lines of stderr, decoded lossily.
    pub stderr: Vec<String>,
}

impl Finished {
    /// See [`last_error_line`].
    pub fn last_error_line(&self) -> Option<&str> {
        last_error_line(&self.stderr)
    }
}

/// One yt-dlp invocation, built up and then [`run`](Run::run).
#[derive(Debug)]
pub struct Run<'a> {
    program: &'a Path,
    args: Vec<OsString>,
    timeout: Duration,
    cancel: Option<&'a CancellationToken>,
    stdout_lines: usize,
}

impl<'a> Run<'a> {
    /// yt-dlp at `program`, ended if it has not finished within `timeout`.
    pub fn new(program: &'a Path, timeout: Duration) -> Self {
        Run {
            program,
            args: Vec::new(),
            timeout,
            cancel: None,
            stdout_lines: TAIL_LINES,
        }
    }

    /// Arguments after `--ignore-config --no-update`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Ends the run, like a timeout, when `cancel` fires.
    pub fn cancel_on(mut self, cancel: &'a CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Keeps every line of stdout (yt-dlp's `-J` JSON), not only the tail.
    pub fn whole_stdout(mut self) -> Self {
        self.stdout_lines = usize::MAX;
        self
    }

    /// Starts yt-dlp and waits until it exits or is ended. `Err` only when it could not be
    /// started; every other outcome is a [`Finished`].
    pub async fn run(self) -> std::io::Result<Finished> {
        let mut command = Command::new(self.program);
        command
            .args(["--ignore-config", "--no-update"])
            .args(&self.args)
            .env("PYTHONUTF8", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        // Declared after `child`, so it is dropped first, while the unreaped child still pins
        // its process-group id.
        let mut group = Group(child.id().and_then(|pid| i32::try_from(pid).ok()));

        let stdout = tokio::spawn(read_tail(
            child.stdout.take().expect("piped stdout"),
            self.stdout_lines,
            false,
        ));
        let stderr = tokio::spawn(read_tail(
            child.stderr.take().expect("piped stderr"),
            TAIL_LINES,
            true,
        ));
        let cancelled = async {
            match self.cancel {
                Some(cancel) => cancel.cancelled().await,
                None => std::future::pending().await,
            }
        };

        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            _ = tokio::time::sleep(self.timeout) => Ended::TimedOut,
            _ = cancelled => Ended::Cancelled,
        };
        if !matches!(ended, Ended::Exited(_)) {
            group.terminate(&mut child).await;
        }
        group.reap_stragglers();
        let stdout = join_tail(stdout).await;
        let stderr = join_tail(stderr)
            .await
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        Ok(Finished {
            ended,
            stdout,
            stderr,
        })
    }
}

/// The most telling line of yt-dlp's stderr, trimmed: the last `ERROR:` line (warnings may
/// follow it), else the last non-blank line.
pub fn last_error_line<S: AsRef<str>>(stderr: &[S]) -> Option<&str> {
    let mut lines = stderr
        .iter()
        .rev()
        .map(|l| l.as_ref().trim())
        .filter(|l| !l.is_empty());
    let last = lines.clone().next();
    lines.find(|l| l.starts_with("ERROR:")).or(last)
}

/// An exit code for every status: 128 + the signal when yt-dlp was killed by one.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Its own process group keeps yt-dlp out of a terminal's Ctrl-C, so if playlistd itself is
/// killed (SIGKILL, OOM) nothing would stop it: ask the kernel to. A parent that dies between
/// the fork and the prctl sends no signal: the child then sees another parent already, and
/// must not exec (prctl(2) names this race).
fn die_with_parent(command: &mut Command) {
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
    #[cfg(not(target_os = "linux"))]
    let _ = command;
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
    /// signals a group that still exists, since a group that still has members cannot have had
    /// its id reused.
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
    /// The run's future was dropped mid-run: `kill_on_drop` would only reach yt-dlp itself.
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

async fn read_tail<R: AsyncRead + Unpin>(reader: R, keep: usize, log: bool) -> VecDeque<Vec<u8>> {
    let mut reader = BufReader::new(reader);
    let mut tail = VecDeque::with_capacity(keep.min(TAIL_LINES));
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
            tracing::debug!(target: "playlistd::ytdlp", "{}", String::from_utf8_lossy(&line));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_line_prefers_errors() {
        let s = [
            "WARNING: [generic] Falling back",
            "ERROR: [generic] x: HTTP Error 404: Not Found",
            "WARNING: late",
        ];
        assert_eq!(
            last_error_line(&s),
            Some("ERROR: [generic] x: HTTP Error 404: Not Found")
        );
        assert_eq!(last_error_line(&["a", "", "b c "]), Some("b c"));
        assert_eq!(last_error_line::<&str>(&[]), None);
    }
}
