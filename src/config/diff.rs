//! What a reload changes: a pure comparison of the running config with the new one.
//!
//! Why apart from the daemon: deciding what changed is logic that a table-driven test can
//! pin down (rathole's `calculate_events`); the daemon only applies the answer (restart
//! tickers, rebuild clients, resize the sync pool, warn about what needs a restart).
//!
//! Invariants:
//! - [`diff`] reads its two arguments and nothing else: no clock, no file, no state.
//! - Playlists are matched by name; a renamed playlist is one removed and one added. Their
//!   order in the file does not matter.
//! - A changed `[defaults]` shows up through the playlists that inherit it (each playlist
//!   holds its resolved values), never on its own.

use super::{Config, PlaylistConfig};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// The difference between two configs, as the daemon needs it. Name sets are sorted, so the
/// log line is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Playlists only in the new config.
    pub added: BTreeSet<String>,
    /// Playlists only in the old config.
    pub removed: BTreeSet<String>,
    /// Playlists in both whose schedule differs.
    pub rescheduled: BTreeSet<String>,
    /// Playlists in both that differ in anything but the schedule (they may be rescheduled
    /// too).
    pub changed: BTreeSet<String>,
    /// Anything under `[notion]`.
    pub notion: bool,
    /// `notion.requests_per_minute`: the shared limiter cannot be kept.
    pub notion_budget: bool,
    /// Anything under `[soundcloud]`.
    pub soundcloud: bool,
    /// Anything under `[download]`.
    pub download: bool,
    /// Anything under `[log]`.
    pub log: bool,
    /// Anything under `[daemon]`.
    pub daemon: bool,
    /// Anything under `[notify]`: the senders are built again.
    pub notify: bool,
    /// `daemon.listen`: the health server moves (or starts, or stops).
    pub listen: bool,
    /// `daemon.timezone`: every schedule is read in another zone.
    pub zone: bool,
    /// `paths.state_dir`.
    pub state_dir: bool,
    /// `paths.cache_dir`.
    pub cache_dir: bool,
}

impl Changes {
    /// Do the Notion, SoundCloud and download clients need building again?
    pub fn clients(&self) -> bool {
        self.notion || self.soundcloud || self.download || self.cache_dir
    }

    /// Does this playlist, present before and after, need its ticker started again?
    pub fn retimes(&self, name: &str) -> bool {
        self.zone || self.rescheduled.contains(name) || self.changed.contains(name)
    }
}

/// `added [..], removed [..], changed [..]`, where changed counts rescheduled playlists too.
impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: Vec<&String>| {
            if names.is_empty() {
                "none".to_string()
            } else {
                format!("{names:?}")
            }
        };
        write!(
            f,
            "added {}, removed {}, changed {}",
            list(self.added.iter().collect()),
            list(self.removed.iter().collect()),
            list(self.rescheduled.union(&self.changed).collect())
        )
    }
}

/// Compares the running config with a new one.
pub fn diff(old: &Config, new: &Config) -> Changes {
    let before: HashMap<&str, &PlaylistConfig> =
        old.playlists.iter().map(|p| (p.name.as_str(), p)).collect();
    let after: HashSet<&str> = new.playlists.iter().map(|p| p.name.as_str()).collect();
    let mut changes = Changes {
        removed: before
            .keys()
            .filter(|n| !after.contains(*n))
            .map(|n| n.to_string())
            .collect(),
        notion: old.notion != new.notion,
        notion_budget: old.notion.requests_per_minute != new.notion.requests_per_minute,
        soundcloud: old.soundcloud != new.soundcloud,
        download: old.download != new.download,
        log: old.log != new.log,
        daemon: old.daemon != new.daemon,
        notify: old.notify != new.notify,
        listen: old.daemon.listen != new.daemon.listen,
        zone: old.daemon.zone != new.daemon.zone,
        state_dir: old.state_dir != new.state_dir,
        cache_dir: old.cache_dir != new.cache_dir,
        ..Changes::default()
    };
    for p in &new.playlists {
        let Some(o) = before.get(p.name.as_str()) else {
            changes.added.insert(p.name.clone());
            continue;
        };
        if o.schedule != p.schedule {
            changes.rescheduled.insert(p.name.clone());
        }
        let o_with_new_schedule = PlaylistConfig {
            schedule: p.schedule.clone(),
            ..(*o).clone()
        };
        if o_with_new_schedule != *p {
            changes.changed.insert(p.name.clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MINIMAL;
    use crate::config::{Schedule, parse};
    use crate::paths::Paths;
    use crate::schedule::Zone;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// The first playlist of `MINIMAL`.
    const A: &str = "all:Lo Collective";

    fn base() -> Config {
        let paths = Paths::for_tests(Path::new("/tmp/playlistd-test"));
        let text = format!(
            "{MINIMAL}\n[[playlist]]\nname = \"B\"\nurl = \"https://soundcloud.com/u/sets/b\"\n"
        );
        parse(&text, Path::new("p.toml"), &paths).unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn pl<'a>(c: &'a mut Config, name: &str) -> &'a mut PlaylistConfig {
        c.playlists.iter_mut().find(|p| p.name == name).unwrap()
    }

    fn cron(expr: &str) -> Schedule {
        Schedule::parse(expr).unwrap()
    }

    #[expect(
        clippy::too_many_lines,
        reason = "a table: one row per kind of change, each read on its own; split, the rows would only be spread over several tests"
    )]
    #[test]
    fn diff_says_what_changed() {
        type Edit = fn(&mut Config);
        let cases: Vec<(&str, Edit, Changes)> = vec![
            ("nothing", |_| {}, Changes::default()),
            (
                "a playlist added",
                |c| {
                    let mut p = c.playlists[0].clone();
                    p.name = "C".into();
                    c.playlists.push(p);
                },
                Changes {
                    added: set(&["C"]),
                    ..Changes::default()
                },
            ),
            (
                "a playlist removed",
                |c| c.playlists.retain(|p| p.name != A),
                Changes {
                    removed: set(&[A]),
                    ..Changes::default()
                },
            ),
            (
                "a playlist renamed is removed and added",
                |c| pl(c, "B").name = "B2".into(),
                Changes {
                    added: set(&["B2"]),
                    removed: set(&["B"]),
                    ..Changes::default()
                },
            ),
            (
                "playlists reordered",
                |c| c.playlists.reverse(),
                Changes::default(),
            ),
            (
                "a schedule",
                |c| pl(c, A).schedule = cron("0 3 * * *"),
                Changes {
                    rescheduled: set(&[A]),
                    ..Changes::default()
                },
            ),
            (
                "a playlist setting",
                |c| pl(c, "B").max_tracks = Some(10),
                Changes {
                    changed: set(&["B"]),
                    ..Changes::default()
                },
            ),
            (
                "a schedule and a setting of one playlist",
                |c| {
                    let p = pl(c, A);
                    p.schedule = cron("0 3 * * *");
                    p.download = false;
                },
                Changes {
                    rescheduled: set(&[A]),
                    changed: set(&[A]),
                    ..Changes::default()
                },
            ),
            (
                "the default schedule alone",
                |c| c.default_schedule = cron("0 3 * * *"),
                Changes::default(),
            ),
            (
                "a Notion setting",
                |c| c.notion.lookup_batch = 10,
                Changes {
                    notion: true,
                    ..Changes::default()
                },
            ),
            (
                "the Notion budget",
                |c| c.notion.requests_per_minute = 60,
                Changes {
                    notion: true,
                    notion_budget: true,
                    ..Changes::default()
                },
            ),
            (
                "a SoundCloud setting",
                |c| c.soundcloud.timeout = Duration::from_secs(5),
                Changes {
                    soundcloud: true,
                    ..Changes::default()
                },
            ),
            (
                "a download setting",
                |c| c.download.concurrency = 1,
                Changes {
                    download: true,
                    ..Changes::default()
                },
            ),
            (
                "a log setting",
                |c| c.log.keep = 2,
                Changes {
                    log: true,
                    ..Changes::default()
                },
            ),
            (
                "a daemon setting",
                |c| c.daemon.max_concurrent_syncs = 5,
                Changes {
                    daemon: true,
                    ..Changes::default()
                },
            ),
            (
                "the time zone",
                |c| c.daemon.zone = Zone::parse("Europe/Berlin").unwrap(),
                Changes {
                    daemon: true,
                    zone: true,
                    ..Changes::default()
                },
            ),
            (
                "the health server's address",
                |c| c.daemon.listen = Some("127.0.0.1:9817".parse().unwrap()),
                Changes {
                    daemon: true,
                    listen: true,
                    ..Changes::default()
                },
            ),
            (
                "a notification setting",
                |c| c.notify.digest = Duration::from_secs(60),
                Changes {
                    notify: true,
                    ..Changes::default()
                },
            ),
            (
                "the state directory",
                |c| c.state_dir = PathBuf::from("/elsewhere"),
                Changes {
                    state_dir: true,
                    ..Changes::default()
                },
            ),
            (
                "the cache directory",
                |c| c.cache_dir = PathBuf::from("/elsewhere"),
                Changes {
                    cache_dir: true,
                    ..Changes::default()
                },
            ),
        ];
        let old = base();
        for (what, edit, expected) in cases {
            let mut new = base();
            edit(&mut new);
            assert_eq!(diff(&old, &new), expected, "{what}");
            assert_eq!(diff(&old, &old), Changes::default(), "{what}: same config");
        }
    }

    #[test]
    fn clients_and_tickers_follow_the_changes() {
        let none = Changes::default();
        assert!(!none.clients() && !none.retimes(A));
        for c in [
            Changes {
                notion: true,
                ..Changes::default()
            },
            Changes {
                soundcloud: true,
                ..Changes::default()
            },
            Changes {
                download: true,
                ..Changes::default()
            },
            Changes {
                cache_dir: true,
                ..Changes::default()
            },
        ] {
            assert!(c.clients(), "{c:?}");
        }
        let zone = Changes {
            zone: true,
            ..Changes::default()
        };
        assert!(zone.retimes(A) && zone.retimes("B"));
        let one = Changes {
            changed: set(&[A]),
            ..Changes::default()
        };
        assert!(one.retimes(A) && !one.retimes("B"));
    }

    #[test]
    fn the_summary_names_every_playlist_once() {
        assert_eq!(
            Changes::default().to_string(),
            "added none, removed none, changed none"
        );
        let c = Changes {
            added: set(&["C"]),
            rescheduled: set(&["A", "B"]),
            changed: set(&["B"]),
            ..Changes::default()
        };
        assert_eq!(
            c.to_string(),
            "added [\"C\"], removed none, changed [\"A\", \"B\"]"
        );
    }
}
