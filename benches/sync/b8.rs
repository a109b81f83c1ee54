//! B8: tempo and key, accuracy and speed. The labelled set is synthesized by the fakes crate's
//! deterministic generator (`playlistd_fakes::synth::labelled_set`: all 24 keys, tempos across
//! 70-180 BPM, 3 minutes each with drums-only intros and outros), encoded as SoundCloud's
//! streams are (AAC-LC, 160 kbit/s, 44.1 kHz stereo) by ffmpeg into `.m4a`, and measured by the
//! daemon's own path: `audio::library::prepare` (decode, the middle span, the analysis).
//!
//! ffmpeg is needed only here (Debian's `ffmpeg` package); without it the rows say skipped.
//! Key is scored exactly and by the MIREX weights (reference/audio.md §2); tempo within
//! ±0.5 BPM, and with half or double tempo counted. The speed row is one 5-minute track's CPU
//! time on one core (the analysis thread's own clock), decode included.

use crate::Ctx;
use crate::record::{BenchResult, at_most, info, row};
use playlistd::audio::analysis::{Key, mirex_score};
use playlistd::audio::library::{Item, Outcome, prepare};
use playlistd::config::{Format, LibraryConfig};
use playlistd_fakes::synth::{self, SynthKey, SynthSpec};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One item's labels and what the analysis said.
struct Scored {
    truth: Key,
    bpm: f64,
    key: Option<Key>,
    tempo: Option<f64>,
}

pub(crate) fn bench_b8(ctx: &Ctx) -> BenchResult {
    let mut res = ctx.result(
        "B8",
        "Tempo and key: accuracy and speed",
        "48 synthesized items (24 keys x 2, tempos 70-180 BPM, 180 s, 8-bar intro and outro), \
         AAC-LC 160 kbit/s in .m4a (ffmpeg), analysed through audio::library::prepare"
            .into(),
    );
    if !has_ffmpeg() {
        res.rows.push(row(
            "accuracy",
            "key ≥ 95 %, tempo ≥ 95 %",
            "—".into(),
            "skipped (install ffmpeg: apt-get install ffmpeg)".into(),
        ));
        return res;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let set = synth::labelled_set();
    let mut scored = Vec::new();
    for (i, spec) in set.iter().enumerate() {
        eprintln!(
            "B8: item {}/{}: {} at {} BPM",
            i + 1,
            set.len(),
            spec.key.name(),
            spec.bpm
        );
        let path = encode(dir.path(), &format!("item{i}"), spec);
        let (outcome, _) = measure(&path, spec.secs);
        let (tempo, key) = match outcome {
            Outcome::Measured { tempo, key } => (tempo, key),
            other => panic!("item {i}: {other:?}"),
        };
        scored.push(Scored {
            truth: Key::parse(&spec.key.name()).expect("a label"),
            bpm: spec.bpm,
            key,
            tempo,
        });
    }
    accuracy_rows(&mut res, &scored);
    speed_rows(&mut res, dir.path());
    res
}

fn has_ffmpeg() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Renders `spec` and encodes it as SoundCloud's AAC stream would be, into `<dir>/<name>.m4a`.
fn encode(dir: &Path, name: &str, spec: &SynthSpec) -> PathBuf {
    let out = dir.join(format!("{name}.m4a"));
    let pcm = synth::render(spec);
    let mut child = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "f32le", "-ar"])
        .arg(spec.rate.to_string())
        .args([
            "-ac",
            "2",
            "-i",
            "-",
            "-c:a",
            "aac",
            "-profile:a",
            "aac_low",
            "-b:a",
            "160k",
        ])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    for s in &pcm {
        stdin.write_all(&s.to_le_bytes()).expect("ffmpeg reads");
    }
    drop(stdin);
    assert!(
        child.wait().expect("ffmpeg ends").success(),
        "ffmpeg failed"
    );
    out
}

/// The daemon's analysis of one file, and the CPU time this thread spent on it.
fn measure(path: &Path, secs: f64) -> (Outcome, Duration) {
    let cfg = LibraryConfig {
        formats: vec![Format::Original],
        analyze: true,
        ..LibraryConfig::default()
    };
    let item = Item {
        path: path.to_path_buf(),
        title: "item".into(),
        artist: "synth".into(),
        album: "B8".into(),
        genre: None,
        url: "https://soundcloud.com/synth/item".into(),
        duration_ms: Some((secs * 1000.0) as u64),
        overwrite_analysis: false,
    };
    let before = thread_cpu();
    let p = prepare(&cfg, &item).expect("prepare");
    (p.analysis, thread_cpu() - before)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pct(n: usize, of: usize) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

fn accuracy_rows(res: &mut BenchResult, scored: &[Scored]) {
    let n = scored.len();
    let exact = scored.iter().filter(|s| s.key == Some(s.truth)).count();
    let mirex: f64 = scored
        .iter()
        .map(|s| s.key.map_or(0.0, |k| mirex_score(k, s.truth)))
        .sum::<f64>()
        / n as f64;
    let near = |s: &Scored, f: f64| s.tempo.is_some_and(|t| (t - s.bpm * f).abs() <= 0.5);
    let tempo_ok = scored.iter().filter(|s| near(s, 1.0)).count();
    let octave_ok = scored
        .iter()
        .filter(|s| near(s, 1.0) || near(s, 0.5) || near(s, 2.0))
        .count();
    let ge = |v: f64, t: f64| {
        if v >= t {
            "pass".to_string()
        } else {
            format!("miss ({v:.1} < {t})")
        }
    };
    res.rows.push(row(
        "key exact",
        "≥ 95 %",
        format!("{:.1} % ({exact}/{n})", pct(exact, n)),
        ge(pct(exact, n), 95.0),
    ));
    res.rows.push(row(
        "key MIREX weighted score",
        "≥ 0.97",
        format!("{mirex:.3}"),
        ge(mirex, 0.97),
    ));
    res.rows.push(row(
        "tempo within ±0.5 BPM",
        "≥ 95 %",
        format!("{:.1} % ({tempo_ok}/{n})", pct(tempo_ok, n)),
        ge(pct(tempo_ok, n), 95.0),
    ));
    res.rows.push(row(
        "tempo, half or double counted",
        "100 %",
        format!("{:.1} % ({octave_ok}/{n})", pct(octave_ok, n)),
        ge(pct(octave_ok, n), 100.0),
    ));
    confusion_notes(res, scored);
}

/// The per-class confusion: each key's estimates, by relation; tempo by band.
fn confusion_notes(res: &mut BenchResult, scored: &[Scored]) {
    let relation = |s: &Scored| match s.key {
        None => "none",
        Some(k) if k == s.truth => "exact",
        Some(k) => match mirex_score(k, s.truth) {
            x if x >= 0.5 => "fifth",
            x if x >= 0.3 => "relative",
            x if x >= 0.2 => "parallel",
            _ => "other",
        },
    };
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in scored {
        let said = s
            .key
            .map_or("none".to_string(), |k| k.standard().to_string());
        by_key
            .entry(s.truth.standard().to_string())
            .or_default()
            .push(format!("{said} ({})", relation(s)));
    }
    let cells: Vec<String> = by_key
        .iter()
        .map(|(truth, said)| format!("{truth} → {}", said.join(", ")))
        .collect();
    res.notes.push(format!(
        "Key, each true key's two items: {}.",
        cells.join("; ")
    ));
    let bands = [
        (70.0, 100.0),
        (100.0, 130.0),
        (130.0, 160.0),
        (160.0, 180.1),
    ];
    let mut tempo_cells = Vec::new();
    for (lo, hi) in bands {
        let in_band: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.bpm >= lo && s.bpm < hi)
            .collect();
        let ok = in_band
            .iter()
            .filter(|s| s.tempo.is_some_and(|t| (t - s.bpm).abs() <= 0.5))
            .count();
        let wrong: Vec<String> = in_band
            .iter()
            .filter(|s| !s.tempo.is_some_and(|t| (t - s.bpm).abs() <= 0.5))
            .map(|s| {
                format!(
                    "{} → {}",
                    s.bpm,
                    s.tempo.map_or("none".into(), |t| format!("{t:.1}"))
                )
            })
            .collect();
        tempo_cells.push(format!(
            "{lo:.0}-{hi:.0} BPM: {ok}/{}{}",
            in_band.len(),
            if wrong.is_empty() {
                String::new()
            } else {
                format!(" (misses: {})", wrong.join(", "))
            }
        ));
    }
    res.notes.push(format!(
        "Tempo by band (±0.5 BPM): {}.",
        tempo_cells.join("; ")
    ));
}

/// A 5-minute item: decode and analysis CPU on one core, and the real-time factor.
fn speed_rows(res: &mut BenchResult, dir: &Path) {
    let spec = SynthSpec {
        secs: 300.0,
        seed: 7,
        intro_bars: 8,
        ..SynthSpec::new(SynthKey::minor(9), 124.0)
    };
    let path = encode(dir, "five-minutes", &spec);
    // The best of three: the first run also pays for page faults of a cold file.
    let cpu = (0..3)
        .map(|_| measure(&path, spec.secs).1)
        .min()
        .expect("three runs");
    res.rows.push(row(
        "5-minute track, decode + analysis, CPU on one core",
        "< 3 s",
        format!("{:.0} ms", cpu.as_secs_f64() * 1000.0),
        if cpu < Duration::from_secs(3) {
            "pass".into()
        } else {
            at_most(cpu.as_secs_f64(), 3.0)
        },
    ));
    res.rows.push(info(
        "real-time factor (track length / CPU)",
        format!("{:.0}x", 300.0 / cpu.as_secs_f64().max(1e-6)),
    ));
}
