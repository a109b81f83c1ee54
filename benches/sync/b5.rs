//! B5: a 100,000-track / 200-playlist SQLite state: open, the diff of a 500-track playlist
//! and a run's writes, in a fresh process, with its peak memory against a state a tenth the
//! size.
//!
//! It keeps the generated state (`big_state`), one round of a run's state work
//! (`b5_round`), and that round in a fresh process of this binary (`--child-round`).

use crate::Ctx;
use crate::common::{kib, live_heap_kb, ms, proc_status_kb};
use crate::record::{BenchResult, below, info, row};
use playlistd::model::{TrackKey, UnavailableReason};
use playlistd::state::{
    Analysis, DB_FILE, PlaylistState, RunSummary, State, StateStore, Step, StepStatus, TrackState,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) const B5_TRACKS: usize = 100_000;
pub(crate) const B5_PLAYLISTS: usize = 200;
pub(crate) const B5_RUNS: usize = 5;

/// The generated state: `tracks` tracks in playlists of `B5_TRACKS / B5_PLAYLISTS`, from a
/// fixed seed.
pub(crate) fn big_state(tracks: usize) -> State {
    let mut rng = fastrand::Rng::with_seed(5);
    let now = chrono::Utc::now();
    let mut state = State::default();
    let lists = tracks / (B5_TRACKS / B5_PLAYLISTS);
    let per = tracks / lists;
    for p in 0..lists {
        let pname = format!("all:Playlist {p:03}");
        let mut members = Vec::with_capacity(per);
        for i in 0..per {
            let n = p * per + i;
            let id = 1_000_000_000u64 + n as u64 * 7;
            let key = TrackKey::soundcloud(id);
            let ts = big_track(&mut rng, now, n, id, p, lists);
            state.tracks.insert(key.clone(), ts);
            members.push(key);
        }
        let ps = big_playlist(&mut rng, now, p, per, members);
        state.playlists.insert(pname.clone(), ps);
    }
    state
}

/// A random Notion page id.
fn uuid(rng: &mut fastrand::Rng) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..),
        rng.u16(..),
        rng.u64(..) & 0xffff_ffff_ffff
    )
}

/// Track `n` (SoundCloud id `id`) of playlist `p` of `lists`: 1% geo-blocked, 3% with a
/// failed download, 5% in the next playlist too.
fn big_track(
    rng: &mut fastrand::Rng,
    now: chrono::DateTime<chrono::Utc>,
    n: usize,
    id: u64,
    p: usize,
    lists: usize,
) -> TrackState {
    let artists = playlistd_fakes::soundcloud::ARTISTS;
    let pname = format!("all:Playlist {p:03}");
    let artist = artists[n % artists.len()];
    let title = format!("Track {n:06} (Extended Mix)");
    let slug = format!("track-{n:06}-extended-mix");
    let user = artist.to_lowercase().replace(' ', "-");
    let unavailable = n
        .is_multiple_of(97)
        .then_some(UnavailableReason::GeoBlocked);
    let failed_download = n.is_multiple_of(31) && unavailable.is_none();
    let downloaded = unavailable.is_none() && !failed_download;
    let mut playlists = BTreeSet::from([pname.clone()]);
    if n.is_multiple_of(20) {
        playlists.insert(format!("all:Playlist {:03}", (p + 1) % lists));
    }
    TrackState {
        title: title.clone(),
        artist: artist.to_string(),
        url: format!("https://soundcloud.com/{user}/{slug}"),
        soundcloud_id: Some(id),
        unavailable,
        drm: None,
        notion_page_id: unavailable.is_none().then(|| uuid(rng)),
        notion: Step {
            status: if unavailable.is_some() {
                StepStatus::Pending
            } else {
                StepStatus::Done
            },
            ..Step::default()
        },
        notion_playlists: if unavailable.is_some() {
            Default::default()
        } else {
            playlists.into_iter().collect()
        },
        download_path: downloaded.then(|| {
            PathBuf::from(format!(
                "/home/user/Music/playlistd/all_Playlist {p:03}/{artist} - {title} [{id}].mp3"
            ))
        }),
        download: if failed_download {
            Step {
                status: StepStatus::Failed,
                attempts: 2,
                last_error: Some(format!(
                    "yt-dlp exited with 1: ERROR: [soundcloud] {id}: Unable to download JSON metadata: HTTP Error 404: Not Found"
                )),
                next_retry: Some(now + chrono::Duration::minutes(10)),
            }
        } else if downloaded {
            Step {
                status: StepStatus::Done,
                attempts: 1,
                ..Step::default()
            }
        } else {
            Step::default()
        },
        download_written_back: downloaded,
        first_seen: now - chrono::Duration::minutes(n as i64),
        duration_ms: Some(180_000 + id % 120_000),
        // A downloaded track of a library that analyses: its tempo and key, on its page.
        analysis: downloaded.then(|| Analysis::Measured {
            tempo: Some(90.0 + (id % 900) as f64 / 10.0),
            key: Some("A Minor".into()),
        }),
        page_kept: Default::default(),
        analysis_written_back: downloaded,
    }
}

/// Playlist `p`, of `per` tracks: its members, 3 removed tracks and a successful run.
fn big_playlist(
    rng: &mut fastrand::Rng,
    now: chrono::DateTime<chrono::Utc>,
    p: usize,
    per: usize,
    members: Vec<TrackKey>,
) -> PlaylistState {
    let removed = (0..3)
        .map(|k| {
            (
                TrackKey::soundcloud(2_000_000_000 + (p * 3 + k) as u64),
                now,
            )
        })
        .collect();
    PlaylistState {
        url: format!("https://soundcloud.com/bench/sets/playlist-{p:03}"),
        title: format!("Playlist {p:03}"),
        members,
        removed,
        notion_page_id: Some(uuid(rng)),
        last_run: Some(RunSummary {
            started: now,
            finished: now,
            ok: true,
            listed: per,
            created: 3,
            adopted: 0,
            downloaded: 3,
            failed: 0,
            unavailable: per / 97,
            removed: 0,
            error: None,
        }),
        last_success: Some(now),
    }
}

/// One run's worth of state work on the state in `dir`, timed: open the database, the diff
/// of one 500-track playlist (each member's record read and compared, as the engine's diff
/// does), and the run's writes (every member's record changed, the playlist's run recorded,
/// one save).
pub(crate) struct B5Round {
    pub(crate) open: Duration,
    pub(crate) diff: Duration,
    pub(crate) writes: Duration,
}

impl B5Round {
    fn total(&self) -> Duration {
        self.open + self.diff + self.writes
    }
}

pub(crate) fn b5_round(dir: &Path, playlist: usize) -> B5Round {
    let t = Instant::now();
    let (mut store, _) = StateStore::load(dir).expect("open");
    let open = t.elapsed();
    let name = format!("all:Playlist {playlist:03}");
    let t = Instant::now();
    let members = store.state.playlists[&name].members.clone();
    let mut due = 0;
    for key in &members {
        let ts = store
            .state
            .tracks
            .get(key)
            .expect("read")
            .expect("a member");
        due += usize::from(!ts.download.is_done() || ts.notion_page_id.is_none());
    }
    std::hint::black_box(due);
    let diff = t.elapsed();
    let t = Instant::now();
    for key in &members {
        if let Some(ts) = store.track_mut(key).expect("read") {
            ts.download_written_back = !ts.download_written_back;
        }
    }
    let now = chrono::Utc::now();
    let ps = store.playlist_mut(&name);
    ps.last_success = Some(now);
    if let Some(run) = ps.last_run.as_mut() {
        run.started = now;
        run.finished = now;
    }
    store.save().expect("save");
    let writes = t.elapsed();
    B5Round { open, diff, writes }
}

/// A [`b5_round`] in a fresh process (as `playlistd sync` pays it), with the heap it kept and
/// the process's peak resident memory (KiB); `None` if it failed.
pub(crate) fn cold_round(dir: &Path, playlist: usize) -> Option<(B5Round, u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .arg("--child-round")
        .arg(playlist.to_string())
        .arg("--child-load")
        .arg(dir)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ROUND-PROBE "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [open, diff, writes, live, peak] = v[..] else {
        return None;
    };
    let round = B5Round {
        open: Duration::from_secs_f64(open),
        diff: Duration::from_secs_f64(diff),
        writes: Duration::from_secs_f64(writes),
    };
    Some((round, live as u64, peak as u64))
}

/// The child side of [`cold_round`].
pub(crate) fn round_child(dir: &Path, playlist: usize) -> ! {
    let live_before = live_heap_kb();
    let r = b5_round(dir, playlist);
    println!(
        "ROUND-PROBE {} {} {} {} {}",
        r.open.as_secs_f64(),
        r.diff.as_secs_f64(),
        r.writes.as_secs_f64(),
        live_heap_kb().saturating_sub(live_before),
        proc_status_kb(std::process::id(), "VmHWM:")
    );
    // Exit without freeing: that is not part of the run.
    std::process::exit(0);
}

/// The state of `tracks` tracks written to a new database: the directory and how long the
/// one transaction took.
pub(crate) fn b5_database(tracks: usize) -> (tempfile::TempDir, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = StateStore::new_in(dir.path(), big_state(tracks));
    let t = Instant::now();
    store.save_full().expect("first save");
    (dir, t.elapsed())
}

pub(crate) fn bench_b5(ctx: &Ctx) -> BenchResult {
    eprintln!("B5: state with {B5_TRACKS} tracks across {B5_PLAYLISTS} playlists");
    let m = measure_b5();
    record_b5(ctx, &m)
}

/// What B5 measured: the big state's rounds in this process and in fresh ones, and the
/// rounds on a state a tenth the size; both databases are kept until the result is recorded.
struct B5Measured {
    dir: tempfile::TempDir,
    /// Only kept: the small state's directory.
    _small: tempfile::TempDir,
    bulk: Duration,
    size: u64,
    warm: Vec<B5Round>,
    cold: Vec<(B5Round, u64, u64)>,
    small_tracks: usize,
    small_cold: Vec<(B5Round, u64, u64)>,
}

fn measure_b5() -> B5Measured {
    let (dir, bulk) = b5_database(B5_TRACKS);
    let size = std::fs::metadata(dir.path().join(DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let warm: Vec<B5Round> = (0..B5_RUNS).map(|r| b5_round(dir.path(), r)).collect();
    let cold: Vec<(B5Round, u64, u64)> = (0..B5_RUNS)
        .filter_map(|r| cold_round(dir.path(), B5_RUNS + r))
        .collect();
    // The same run against a state a tenth the size: flat memory is the same peak.
    let small_tracks = B5_TRACKS / 10;
    let (small, _) = b5_database(small_tracks);
    let small_cold: Vec<(B5Round, u64, u64)> =
        (0..3).filter_map(|r| cold_round(small.path(), r)).collect();
    B5Measured {
        dir,
        _small: small,
        bulk,
        size,
        warm,
        cold,
        small_tracks,
        small_cold,
    }
}

/// The median of `f` over `rounds`.
fn median(rounds: &[&B5Round], f: fn(&B5Round) -> Duration) -> Duration {
    let mut v: Vec<Duration> = rounds.iter().map(|r| f(r)).collect();
    v.sort();
    v[v.len() / 2]
}

fn record_b5(ctx: &Ctx, m: &B5Measured) -> BenchResult {
    let warm_refs: Vec<&B5Round> = m.warm.iter().collect();
    let cold_refs: Vec<&B5Round> = m.cold.iter().map(|(r, _, _)| r).collect();
    // Judged on fresh processes (what a `playlistd sync` pays), else on this one.
    let judged = if cold_refs.is_empty() {
        &warm_refs
    } else {
        &cold_refs
    };
    let mut res = ctx.result(
        "B5",
        "Large state: open, diff and a run's writes",
        format!(
            "SQLite state.db with {B5_TRACKS} tracks across {B5_PLAYLISTS} playlists of {} \
             (page ids, file paths, 3% failed downloads with errors, 1% geo-blocked, 5% in two \
             playlists); a run is: open the database, read and compare the records of one \
             playlist, change every one of them and record the run in one save; {B5_RUNS} \
             rounds, each on another playlist, median; state directory on {}",
            B5_TRACKS / B5_PLAYLISTS,
            m.dir.path().display()
        ),
    );
    for (label, f) in [
        (
            "open (fresh process, median)",
            (|r: &B5Round| r.open) as fn(&B5Round) -> Duration,
        ),
        ("diff of 500 tracks (fresh process, median)", |r| r.diff),
        (
            "the run's writes: 500 records + the playlist, one transaction (fresh process, median)",
            |r| r.writes,
        ),
    ] {
        res.rows.push(info(label, ms(median(judged, f))));
    }
    let total = median(judged, B5Round::total);
    res.rows.push(row(
        "open + diff + writes",
        "< 150 ms",
        ms(total),
        below(total.as_secs_f64(), 0.150),
    ));
    res.rows.push(info(
        "open + diff + writes in this process, after earlier rounds (median)",
        ms(median(&warm_refs, B5Round::total)),
    ));
    res.rows.push(info(
        &format!("first save of all {B5_TRACKS} tracks, one transaction (as the JSON import)"),
        ms(m.bulk),
    ));
    res.rows.push(info("database size", kib(m.size)));
    memory_row(&mut res, m);
    let show = |rounds: &[&B5Round]| {
        rounds
            .iter()
            .map(|r| format!("{} + {} + {}", ms(r.open), ms(r.diff), ms(r.writes)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    res.notes.push(format!(
        "rounds (open + diff + writes): fresh processes {}; this process {}",
        show(&cold_refs),
        show(&warm_refs)
    ));
    res
}

/// A run's peak memory against the state a tenth the size, if both were measured.
fn memory_row(res: &mut BenchResult, m: &B5Measured) {
    let small_tracks = m.small_tracks;
    let peak = |v: &[(B5Round, u64, u64)]| v.iter().map(|c| c.2).max();
    if let (Some(big), Some(little)) = (peak(&m.cold), peak(&m.small_cold)) {
        let flat = big.saturating_sub(little) * 1024 / (B5_TRACKS - small_tracks) as u64;
        res.rows.push(row(
            &format!("peak memory of a run, {small_tracks} → {B5_TRACKS} tracks in the state"),
            "flat (< 50 bytes per extra track)",
            format!(
                "{} → {} ({flat} bytes per extra track)",
                kib(little * 1024),
                kib(big * 1024)
            ),
            below(flat as f64, 50.0),
        ));
        res.notes.push(
            "what grows with the state is the playlists' member lists, read at open (a key \
             per track); no track record is held: the diff reads one row at a time and a save \
             lets the changed ones go"
                .to_string(),
        );
    }
}
