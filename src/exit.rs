//! The process exit codes: what a command's outcome means to a script, cron or a service
//! manager. They live apart from the CLI layer (`commands`) so that the parts which run a
//! whole command (the daemon, `check`, the demo) can return one without importing that layer.
//!
//! Invariant: the numbers are the README's table and never change meaning.

/// Process exit codes, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    TracksFailed = 1,
    Config = 2,
    Failed = 3,
    Locked = 4,
    Interrupted = 130,
}
