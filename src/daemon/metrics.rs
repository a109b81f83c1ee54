//! The counters and gauges that `/metrics` exposes, in the Prometheus text exposition format
//! (version 0.0.4), so that a scraper can graph and alert on the daemon without reading its log.
//!
//! Why it exists: the run reports say what each sync did, but only one at a time; a person
//! watching months of syncs wants rates and "how long since this playlist last synced". The
//! counters are fed from each finished sync's run report ([`Metrics::record_run`] with a
//! [`RunCounts`] the daemon fills from it), so they add up to exactly what the reports say.
//!
//! Invariants:
//! - Rendering never touches the network or the state database: it reads atomics and a map held
//!   here. The only lock it takes is this module's own, which a writer holds for the few
//!   microseconds of adding one run's numbers, never across a sync.
//! - A scrape sees each run's numbers wholly or not at all: [`Metrics::record_run`] adds them
//!   under the write side of that lock, rendering reads under the read side.
//! - A playlist has series exactly while it is known (seeded or recorded, and not forgotten):
//!   after [`Metrics::forget_playlist`] none of its series appear.
//! - Dry runs count in `playlistd_runs_total{result="dry_run"}` only: they write nothing, so the
//!   track and request counters stay those of the runs that did.
//! - `playlistd_last_success_*` follow the latest finished run that was ok and not a dry run; a
//!   playlist that never succeeded is absent from both families rather than shown with a made-up
//!   value (an alert on `absent(...)` or on the counters catches it).

use chrono::{DateTime, Utc};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::LOG_TARGET;

/// What one finished sync adds to the counters (the daemon fills it from its run report).
#[derive(Clone, Debug)]
pub struct RunCounts<'a> {
    pub playlist: &'a str,
    pub ok: bool,
    pub dry_run: bool,
    pub created: u64,
    pub adopted: u64,
    pub downloaded: u64,
    pub failed: u64,
    pub notion_requests: u64,
    pub soundcloud_requests: u64,
    pub finished: DateTime<Utc>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaylistLabels {
    playlist: String,
}

impl PlaylistLabels {
    fn new(playlist: &str) -> PlaylistLabels {
        PlaylistLabels {
            playlist: playlist.to_owned(),
        }
    }
}

/// How a run ended, as the `result` label of `playlistd_runs_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum RunResult {
    Ok,
    Failed,
    DryRun,
}

impl RunResult {
    const ALL: [RunResult; 3] = [RunResult::Ok, RunResult::Failed, RunResult::DryRun];

    fn of(run: &RunCounts<'_>) -> RunResult {
        match (run.dry_run, run.ok) {
            (true, _) => RunResult::DryRun,
            (false, true) => RunResult::Ok,
            (false, false) => RunResult::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Failed => "failed",
            RunResult::DryRun => "dry_run",
        }
    }
}

impl EncodeLabelValue for RunResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    playlist: String,
    result: RunResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type PerPlaylist = Family<PlaylistLabels, Counter>;
type SecondsGauge = Gauge<f64, AtomicU64>;

/// The per-playlist counters other than `runs`, in the order [`PlaylistCounters::of`] reads a
/// run's numbers.
struct PlaylistCounters {
    created: PerPlaylist,
    adopted: PerPlaylist,
    downloaded: PerPlaylist,
    failed: PerPlaylist,
    notion_requests: PerPlaylist,
    soundcloud_requests: PerPlaylist,
}

impl PlaylistCounters {
    /// Registers each family; names leave out `_total`, which the encoder appends to counters.
    fn register(registry: &mut Registry) -> PlaylistCounters {
        let mut family = |name: &str, help: &str| {
            let family = PerPlaylist::default();
            registry.register(name, help, family.clone());
            family
        };
        PlaylistCounters {
            created: family(
                "playlistd_tracks_created",
                "Notion pages created for new tracks, by playlist",
            ),
            adopted: family(
                "playlistd_tracks_adopted",
                "Existing Notion pages adopted for tracks, by playlist",
            ),
            downloaded: family(
                "playlistd_tracks_downloaded",
                "Tracks downloaded into the music folder, by playlist",
            ),
            failed: family(
                "playlistd_tracks_failed",
                "Tracks a sync could not finish, by playlist",
            ),
            notion_requests: family(
                "playlistd_notion_requests",
                "Requests sent to the Notion API by syncs that were not dry runs, by playlist",
            ),
            soundcloud_requests: family(
                "playlistd_soundcloud_requests",
                "Requests sent to SoundCloud by syncs that were not dry runs, by playlist",
            ),
        }
    }

    fn all(&self) -> [&PerPlaylist; 6] {
        [
            &self.created,
            &self.adopted,
            &self.downloaded,
            &self.failed,
            &self.notion_requests,
            &self.soundcloud_requests,
        ]
    }

    /// Each family with what `run` adds to it.
    fn of<'s>(&'s self, run: &RunCounts<'_>) -> [(&'s PerPlaylist, u64); 6] {
        [
            (&self.created, run.created),
            (&self.adopted, run.adopted),
            (&self.downloaded, run.downloaded),
            (&self.failed, run.failed),
            (&self.notion_requests, run.notion_requests),
            (&self.soundcloud_requests, run.soundcloud_requests),
        ]
    }
}

/// The daemon's counters; `Send + Sync`, shared as `Arc<Metrics>` between the loop that records
/// runs and the listener that renders them.
pub struct Metrics {
    /// Everything whose value is kept as it changes: the counters, `up` and `build_info`.
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    counters: PlaylistCounters,
    /// The known playlists and each one's last success (`None`: never). Also the lock that makes
    /// a run's numbers appear to a scrape all at once.
    playlists: RwLock<HashMap<String, Option<DateTime<Utc>>>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "playlistd_runs",
            "Finished syncs, by playlist and result (ok, failed, dry_run)",
            runs.clone(),
        );
        let counters = PlaylistCounters::register(&mut registry);
        let up = Gauge::<i64>::default();
        up.set(1);
        registry.register("playlistd_up", "1 while the daemon answers", up);
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "playlistd_build_info",
            "Always 1; the version label is the running playlistd's",
            build,
        );
        Metrics {
            registry,
            runs,
            counters,
            playlists: RwLock::new(HashMap::new()),
        }
    }

    /// Seeds a playlist's last success from the state at start (None: never succeeded) so the
    /// gauge exists from the first scrape.
    ///
    /// Its counters are created at zero too, so that `increase()` sees the first run. A seed
    /// never moves a later success back.
    pub fn seed_playlist(&self, playlist: &str, last_success: Option<DateTime<Utc>>) {
        let mut playlists = self.write();
        let labels = PlaylistLabels::new(playlist);
        // Creating a series is all that is wanted here: it starts at zero.
        for result in RunResult::ALL {
            drop(self.runs.get_or_create(&RunLabels {
                playlist: playlist.to_owned(),
                result,
            }));
        }
        for family in self.counters.all() {
            drop(family.get_or_create(&labels));
        }
        let known = playlists.entry(playlist.to_owned()).or_default();
        *known = (*known).max(last_success);
    }

    /// A playlist removed from the config stops being reported.
    pub fn forget_playlist(&self, playlist: &str) {
        let mut playlists = self.write();
        let labels = PlaylistLabels::new(playlist);
        for result in RunResult::ALL {
            self.runs.remove(&RunLabels {
                playlist: playlist.to_owned(),
                result,
            });
        }
        for family in self.counters.all() {
            family.remove(&labels);
        }
        playlists.remove(playlist);
    }

    /// Adds one finished sync. Dry runs count in `runs_total{result="dry_run"}` only. A playlist
    /// not seeded becomes known here.
    pub fn record_run(&self, run: &RunCounts<'_>) {
        let mut playlists = self.write();
        let result = RunResult::of(run);
        self.runs
            .get_or_create(&RunLabels {
                playlist: run.playlist.to_owned(),
                result,
            })
            .inc();
        let last_success = playlists.entry(run.playlist.to_owned()).or_default();
        if result == RunResult::DryRun {
            return;
        }
        let labels = PlaylistLabels::new(run.playlist);
        for (family, n) in self.counters.of(run) {
            family.get_or_create(&labels).inc_by(n);
        }
        if result == RunResult::Ok {
            // The latest finish wins even if reports arrive out of order.
            *last_success = (*last_success).max(Some(run.finished));
        }
    }

    /// The Prometheus text exposition format (0.0.4) of every metric, with the
    /// `last_success_seconds_ago` gauge computed against `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let playlists = self.read();
        // The gauges that depend on `now` live in a registry of this render's own, so two
        // scrapes racing with different `now`s cannot see each other's values.
        let successes = success_registry(&playlists, now);
        let mut text = String::with_capacity(4096);
        let encoded = prometheus_text::encode(&mut text, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut text, &successes));
        drop(playlists);
        if encoded.is_err() {
            // Writing into a String does not fail and our label values never do; should that
            // change, a scrape gets what was encoded rather than a panic in the listener.
            tracing::error!(target: LOG_TARGET, "could not encode the metrics");
        }
        text
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Option<DateTime<Utc>>>> {
        // A panic elsewhere while holding the lock leaves counters that are still valid.
        self.playlists
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Option<DateTime<Utc>>>> {
        self.playlists
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `playlistd_last_success_seconds_ago` and `_timestamp_seconds` for each playlist that has
/// succeeded, as of `now`.
fn success_registry(
    playlists: &HashMap<String, Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Registry {
    let ago = Family::<PlaylistLabels, SecondsGauge>::default();
    let at = Family::<PlaylistLabels, SecondsGauge>::default();
    for (playlist, last) in playlists {
        let Some(last) = last else { continue };
        let labels = PlaylistLabels::new(playlist);
        // A success stamped after `now` (the clock stepped back) reads as just now.
        let millis_ago = (now - *last).num_milliseconds().max(0);
        ago.get_or_create(&labels).set(millis_ago as f64 / 1e3);
        at.get_or_create(&labels)
            .set(last.timestamp_millis() as f64 / 1e3);
    }
    let mut registry = Registry::default();
    registry.register(
        "playlistd_last_success_seconds_ago",
        "Seconds since the playlist's last successful sync that was not a dry run; \
         a playlist that never succeeded is absent",
        ago,
    );
    registry.register(
        "playlistd_last_success_timestamp_seconds",
        "Unix time of the playlist's last successful sync that was not a dry run; \
         a playlist that never succeeded is absent",
        at,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use prometheus_parse::{Sample, Scrape, Value};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("a valid test time")
    }

    fn run(playlist: &str, ok: bool, n: u64, finished: DateTime<Utc>) -> RunCounts<'_> {
        RunCounts {
            playlist,
            ok,
            dry_run: false,
            created: n,
            adopted: n + 1,
            downloaded: n + 2,
            failed: n + 3,
            notion_requests: 10 * n,
            soundcloud_requests: 100 * n,
            finished,
        }
    }

    fn scrape(metrics: &Metrics, now: DateTime<Utc>) -> Scrape {
        let text = metrics.render(now);
        Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parseable metrics")
    }

    fn find<'s>(scrape: &'s Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'s Sample> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }

    fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        find(scrape, metric, labels).map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is neither a counter nor a gauge"),
        })
    }

    fn playlist_value(scrape: &Scrape, metric: &str, playlist: &str) -> Option<f64> {
        value(scrape, metric, &[("playlist", playlist)])
    }

    const COUNTERS: [&str; 6] = [
        "playlistd_tracks_created_total",
        "playlistd_tracks_adopted_total",
        "playlistd_tracks_downloaded_total",
        "playlistd_tracks_failed_total",
        "playlistd_notion_requests_total",
        "playlistd_soundcloud_requests_total",
    ];

    fn counts(run: &RunCounts<'_>) -> [u64; 6] {
        [
            run.created,
            run.adopted,
            run.downloaded,
            run.failed,
            run.notion_requests,
            run.soundcloud_requests,
        ]
    }

    #[test]
    fn counters_are_the_sums_of_the_runs_fed() {
        let metrics = Metrics::new();
        let runs = [
            run("house", true, 1, at(0)),
            run("house", false, 5, at(10)),
            run("house", true, 7, at(20)),
            run("techno", true, 2, at(5)),
        ];
        for r in &runs {
            metrics.record_run(r);
        }
        let scrape = scrape(&metrics, at(60));
        for playlist in ["house", "techno"] {
            let fed: Vec<&RunCounts<'_>> = runs.iter().filter(|r| r.playlist == playlist).collect();
            for (i, name) in COUNTERS.iter().enumerate() {
                let sum: u64 = fed.iter().map(|r| counts(r)[i]).sum();
                assert_eq!(
                    playlist_value(&scrape, name, playlist),
                    Some(sum as f64),
                    "{name}{{playlist={playlist}}}"
                );
            }
            for (result, ok) in [("ok", true), ("failed", false)] {
                let n = fed.iter().filter(|r| r.ok == ok).count();
                let labels = [("playlist", playlist), ("result", result)];
                let got = value(&scrape, "playlistd_runs_total", &labels);
                assert_eq!(got.unwrap_or(0.0), n as f64, "runs {playlist} {result}");
            }
        }
    }

    #[test]
    fn exposition_names_help_and_type_lines() {
        let metrics = Metrics::new();
        metrics.record_run(&run("house", true, 1, at(0)));
        let text = metrics.render(at(1));
        let families = [
            ("playlistd_runs_total", "counter"),
            ("playlistd_last_success_seconds_ago", "gauge"),
            ("playlistd_last_success_timestamp_seconds", "gauge"),
            ("playlistd_up", "gauge"),
            ("playlistd_build_info", "gauge"),
        ];
        let counters = COUNTERS.map(|name| (name, "counter"));
        for (name, kind) in families.iter().chain(counters.iter()) {
            let help = format!("# HELP {name} ");
            assert!(
                text.lines().any(|l| l.starts_with(&help)),
                "{name}:\n{text}"
            );
            let kind = format!("# TYPE {name} {kind}");
            assert!(text.lines().any(|l| l == kind), "{name}:\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(
            !text.contains("# EOF"),
            "OpenMetrics framing in a 0.0.4 body"
        );
        let scrape = scrape(&metrics, at(1));
        assert_eq!(value(&scrape, "playlistd_up", &[]), Some(1.0));
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&scrape, "playlistd_build_info", &version), Some(1.0));
    }

    #[test]
    fn last_success_follows_the_latest_ok_run_only() {
        let metrics = Metrics::new();
        metrics.record_run(&run("house", true, 1, at(100)));
        metrics.record_run(&run("house", false, 1, at(200)));
        // Reported out of order: an older success does not move the gauge back.
        metrics.record_run(&run("house", true, 1, at(50)));
        let scrape = scrape(&metrics, at(250));
        let ago = playlist_value(&scrape, "playlistd_last_success_seconds_ago", "house");
        assert_eq!(ago, Some(150.0), "now - finished of the last ok run");
        let stamp = playlist_value(&scrape, "playlistd_last_success_timestamp_seconds", "house");
        assert_eq!(stamp, Some(at(100).timestamp() as f64));
        // Computed at render time: a later scrape sees it grow.
        let later = scrape_value_ago(&metrics, at(260), "house");
        assert_eq!(later, Some(160.0));
    }

    fn scrape_value_ago(metrics: &Metrics, now: DateTime<Utc>, playlist: &str) -> Option<f64> {
        playlist_value(
            &scrape(metrics, now),
            "playlistd_last_success_seconds_ago",
            playlist,
        )
    }

    #[test]
    fn a_playlist_that_never_succeeded_has_no_last_success() {
        let metrics = Metrics::new();
        metrics.record_run(&run("house", false, 1, at(0)));
        metrics.seed_playlist("techno", None);
        let scrape = scrape(&metrics, at(10));
        for playlist in ["house", "techno"] {
            for name in [
                "playlistd_last_success_seconds_ago",
                "playlistd_last_success_timestamp_seconds",
            ] {
                assert_eq!(playlist_value(&scrape, name, playlist), None, "{name}");
            }
        }
    }

    #[test]
    fn dry_runs_count_in_runs_total_only() {
        let metrics = Metrics::new();
        metrics.seed_playlist("house", Some(at(0)));
        let mut dry = run("house", true, 3, at(50));
        dry.dry_run = true;
        metrics.record_run(&dry);
        let scrape = scrape(&metrics, at(100));
        let runs = |result| value(&scrape, "playlistd_runs_total", &[("result", result)]);
        assert_eq!(runs("dry_run"), Some(1.0));
        assert_eq!(runs("ok"), Some(0.0));
        assert_eq!(runs("failed"), Some(0.0));
        for name in COUNTERS {
            assert_eq!(playlist_value(&scrape, name, "house"), Some(0.0), "{name}");
        }
        let ago = playlist_value(&scrape, "playlistd_last_success_seconds_ago", "house");
        assert_eq!(ago, Some(100.0), "a dry run is not a success");
    }

    #[test]
    fn seeding_makes_every_series_exist_from_the_first_scrape() {
        let metrics = Metrics::new();
        metrics.seed_playlist("house", Some(at(0)));
        let scrape = scrape(&metrics, at(30));
        for name in COUNTERS {
            assert_eq!(playlist_value(&scrape, name, "house"), Some(0.0), "{name}");
        }
        for result in ["ok", "failed", "dry_run"] {
            let labels = [("playlist", "house"), ("result", result)];
            assert_eq!(value(&scrape, "playlistd_runs_total", &labels), Some(0.0));
        }
        let ago = playlist_value(&scrape, "playlistd_last_success_seconds_ago", "house");
        assert_eq!(ago, Some(30.0));
    }

    #[test]
    fn forgetting_a_playlist_removes_all_its_series() {
        let metrics = Metrics::new();
        metrics.seed_playlist("house", Some(at(0)));
        metrics.record_run(&run("house", true, 1, at(10)));
        metrics.record_run(&run("techno", true, 1, at(10)));
        metrics.forget_playlist("house");
        let scrape = scrape(&metrics, at(20));
        let house: Vec<&Sample> = scrape
            .samples
            .iter()
            .filter(|s| s.labels.get("playlist") == Some("house"))
            .collect();
        assert!(house.is_empty(), "{house:?}");
        let techno = playlist_value(&scrape, "playlistd_tracks_created_total", "techno");
        assert_eq!(techno, Some(1.0));
        let ago = playlist_value(&scrape, "playlistd_last_success_seconds_ago", "techno");
        assert_eq!(ago, Some(10.0));
    }

    #[test]
    fn racing_scrapes_each_see_their_own_now() {
        let metrics = Metrics::new();
        metrics.record_run(&run("house", true, 1, at(0)));
        std::thread::scope(|s| {
            let scrapes: Vec<_> = (1..=4)
                .map(|i| {
                    let metrics = &metrics;
                    s.spawn(move || {
                        for _ in 0..50 {
                            let got = scrape_value_ago(metrics, at(i * 100), "house");
                            assert_eq!(got, Some((i * 100) as f64));
                        }
                    })
                })
                .collect();
            for scrape in scrapes {
                scrape.join().expect("a scrape thread");
            }
        });
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.seed_playlist("say \"hi\"\\\n", None);
        let text = metrics.render(at(0));
        assert!(text.contains(r#"playlist="say \"hi\"\\\n""#), "{text}");
    }

    #[test]
    fn metrics_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Metrics>();
    }
}
