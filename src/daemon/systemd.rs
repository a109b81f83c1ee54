//! systemd's notify protocol (`Type=notify`, sd_notify(3)): `READY=1` once the schedule is
//! loaded, `STATUS=` lines for `systemctl status`, `WATCHDOG=1` from the scheduler loop,
//! `RELOADING=1` then `READY=1` around a reload, and `STOPPING=1`.
//!
//! Invariants:
//! - Without `NOTIFY_SOCKET` (launchd, a terminal) every call does nothing, at no cost.
//! - `WATCHDOG=1` is sent only from the scheduler loop's own select (see `lifecycle`), every
//!   `WATCHDOG_USEC`/2: a loop that stalls stops the pings and systemd restarts it. Nothing
//!   else pings on its behalf.
//! - A `STATUS=` line is sent only when it changed, so a busy daemon does not flood the socket.
//! - Failures to send are logged once at debug level and otherwise ignored: systemd's view
//!   of the daemon is never a reason for the daemon to fail.

use crate::config::PlaylistConfig;
use crate::schedule::{Zone, next_after};
use chrono::{DateTime, Utc};
use sd_notify::NotifyState;
use std::time::Duration;

/// The daemon's link to its service manager.
#[derive(Debug, Default)]
pub struct Systemd {
    on: bool,
    watchdog: Option<Duration>,
    status: String,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (with `WATCHDOG_PID`, if set, naming us).
    pub fn from_env() -> Systemd {
        Systemd {
            on: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
            status: String::new(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.on
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::debug!(target: super::LOG_TARGET, "sd_notify: {e}");
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// A reload begins; [`Systemd::ready`] ends it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// Sends the status line if it changed.
    pub fn status(&mut self, line: String) {
        if self.on && line != self.status {
            self.send(&[NotifyState::Status(&line)]);
            self.status = line;
        }
    }

    /// How often the loop must ping: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) asks.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// The status line: "syncing 2 playlists" while any runs, else "idle, next: Okra Picks at
/// 14:00" (the time in the daemon's zone; a date is added when the slot is not within a day).
pub fn status_line(
    running: usize,
    playlists: &[PlaylistConfig],
    zone: Zone,
    now: DateTime<Utc>,
) -> String {
    if running > 0 {
        return format!(
            "syncing {running} playlist{}",
            if running == 1 { "" } else { "s" }
        );
    }
    let next = playlists
        .iter()
        .filter_map(|p| next_after(&p.schedule.cron, zone, now).map(|at| (at, p)))
        .min_by_key(|(at, _)| *at);
    let Some((at, pl)) = next else {
        return "idle, no playlist scheduled".into();
    };
    let fmt = if at - now < chrono::TimeDelta::hours(24) {
        "%H:%M"
    } else {
        "%Y-%m-%d %H:%M"
    };
    let shown = match zone {
        Zone::Local => at.with_timezone(&chrono::Local).format(fmt).to_string(),
        Zone::Named(tz) => at.with_timezone(&tz).format(fmt).to_string(),
    };
    format!("idle, next: {} at {shown}", pl.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RemovedPolicy, Schedule, SourceKind};

    fn pl(name: &str, cron: &str) -> PlaylistConfig {
        PlaylistConfig {
            name: name.into(),
            url: url::Url::parse("https://soundcloud.com/o/sets/p").unwrap(),
            schedule: Schedule::parse(cron).unwrap(),
            download: true,
            max_tracks: None,
            source: SourceKind::SoundCloud,
            dir: None,
            removed: RemovedPolicy::Keep,
        }
    }

    #[test]
    fn the_status_line_names_the_next_slot_or_the_running_syncs() {
        let utc = Zone::parse("UTC").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-02T13:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let lists = [
            pl("Night", "0 3 * * *"),
            pl("Okra Picks", "0 14 * * *"),
            pl("Weekly", "0 9 * * 1"),
        ];
        // (running, playlists, line)
        let cases: [(usize, &[PlaylistConfig], &str); 5] = [
            (0, &lists, "idle, next: Okra Picks at 14:00"),
            (0, &lists[..1], "idle, next: Night at 03:00"),
            (0, &lists[2..], "idle, next: Weekly at 2026-12-07 09:00"),
            (1, &lists, "syncing 1 playlist"),
            (2, &[], "syncing 2 playlists"),
        ];
        for (running, pls, want) in cases {
            assert_eq!(status_line(running, pls, utc, now), want);
        }
        assert_eq!(status_line(0, &[], utc, now), "idle, no playlist scheduled");
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            status_line(0, &lists[1..2], berlin, now),
            "idle, next: Okra Picks at 14:00"
        );
    }
}
