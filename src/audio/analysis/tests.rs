//! Unit tests of the analysis: key notations against reference audio.md §6, parsing, MIREX
//! scores, tempo folding, spans, and `analyze` on a few short synthesized items.
//!
//! They stay fast in a debug build (the crate itself at opt-level 0): the synthesized items are
//! 20 s at 22.05 kHz and few. Accuracy over the whole labelled set is measured in a release
//! build by the benchmark, not here.

use playlistd_fakes::synth::{self, SynthKey, SynthSpec};

use super::*;

/// audio.md §6, row by row: (major, minor, Camelot number, Open Key number).
const TABLE: [(&str, &str, u8, u8); 12] = [
    ("B", "G#", 1, 6),
    ("F#", "D#", 2, 7),
    ("Db", "Bb", 3, 8),
    ("Ab", "F", 4, 9),
    ("Eb", "C", 5, 10),
    ("Bb", "G", 6, 11),
    ("F", "D", 7, 12),
    ("C", "A", 8, 1),
    ("G", "E", 9, 2),
    ("D", "B", 10, 3),
    ("A", "F#", 11, 4),
    ("E", "C#", 12, 5),
];

#[test]
fn every_key_in_every_notation_matches_the_reference_table() {
    let mut seen = 0;
    for (major, minor, camelot, open) in TABLE {
        let rows = [
            (
                format!("{major} Major"),
                major.to_string(),
                format!("{camelot}B"),
                format!("{open}d"),
            ),
            (
                format!("{minor} Minor"),
                format!("{minor}m"),
                format!("{camelot}A"),
                format!("{open}m"),
            ),
        ];
        for (standard, short, cam, ok) in rows {
            let key = Key::parse(&standard).unwrap_or_else(|| panic!("{standard} parses"));
            assert_eq!(key.standard(), standard);
            assert_eq!(key.short(), short);
            assert_eq!(key.camelot(), cam);
            assert_eq!(key.open_key(), ok);
            assert_eq!(key.format(KeyNotation::Standard), standard);
            assert_eq!(key.format(KeyNotation::Camelot), cam);
            assert_eq!(key.format(KeyNotation::OpenKey), ok);
            assert_eq!(key.to_string(), standard);
            for text in [&standard, &short, &cam, &ok] {
                assert_eq!(Key::parse(text), Some(key), "{text}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 24);
    assert_eq!(Key::all().count(), 24);
    assert!(Key::all().all(|k| Key::parse(k.short()) == Some(k)));
}

#[test]
fn parse_accepts_case_spacing_and_enharmonic_variants() {
    let a_minor = Key::new(9, Mode::Minor);
    let bb_minor = Key::new(10, Mode::Minor);
    let fs_major = Key::new(6, Mode::Major);
    for text in [
        "a minor", "A MINOR", "Aminor", " A  min ", "am", "AM", "8a", "08A", "1M",
    ] {
        assert_eq!(Key::parse(text), Some(a_minor), "{text}");
    }
    for text in [
        "A#m",
        "a#m",
        "Bbm",
        "bb minor",
        "B♭m",
        "A♯ Minor",
        "B flat minor",
        "3A",
    ] {
        assert_eq!(Key::parse(text), Some(bb_minor), "{text}");
    }
    for text in ["F#", "Gb", "G♭ major", "f sharp major", "F#maj", "2B", "7d"] {
        assert_eq!(Key::parse(text), Some(fs_major), "{text}");
    }
    assert_eq!(Key::parse("Cb"), Some(Key::new(11, Mode::Major)));
    assert_eq!(Key::parse("E#m"), Some(Key::new(5, Mode::Minor)));
    for bad in ["", "H", "A dorian", "13A", "0B", "8C", "8", "m", "#", "Amm"] {
        assert_eq!(Key::parse(bad), None, "{bad}");
    }
}

#[test]
fn mirex_scores_give_partial_credit() {
    let c = Key::new(0, Mode::Major);
    let a_minor = Key::new(9, Mode::Minor);
    assert_eq!(mirex_score(c, c), 1.0);
    assert_eq!(mirex_score(Key::new(7, Mode::Major), c), 0.5);
    assert_eq!(mirex_score(Key::new(5, Mode::Major), c), 0.5);
    assert_eq!(mirex_score(Key::new(4, Mode::Minor), a_minor), 0.5);
    assert_eq!(mirex_score(Key::new(2, Mode::Minor), a_minor), 0.5);
    assert_eq!(mirex_score(a_minor, c), 0.3);
    assert_eq!(mirex_score(c, a_minor), 0.3);
    assert_eq!(mirex_score(Key::new(0, Mode::Minor), c), 0.2);
    assert_eq!(mirex_score(Key::new(9, Mode::Major), a_minor), 0.2);
    assert_eq!(mirex_score(Key::new(2, Mode::Major), c), 0.0);
    assert_eq!(mirex_score(Key::new(7, Mode::Minor), c), 0.0);
}

#[test]
fn tempos_fold_into_the_range() {
    let r = TempoRange::default();
    assert_eq!((r.min, r.max), (70.0, 180.0));
    assert_eq!(r.fold(128.0), 128.0);
    assert_eq!(r.fold(64.0), 128.0);
    assert_eq!(r.fold(43.5), 87.0);
    assert_eq!(r.fold(21.75), 87.0);
    assert_eq!(r.fold(350.0), 175.0);
    assert_eq!(r.fold(70.0), 70.0);
    assert_eq!(r.fold(180.0), 180.0);
    // Narrower than an octave: the nearest octave in ratio.
    let narrow = TempoRange {
        min: 120.0,
        max: 130.0,
    };
    assert_eq!(narrow.fold(70.0), 140.0);
    assert_eq!(narrow.fold(55.0), 110.0);
    // Nonsense stays nonsense rather than looping or inventing a tempo.
    assert_eq!(r.fold(0.0), 0.0);
    assert!(r.fold(f64::NAN).is_nan());
}

#[test]
fn span_is_ninety_seconds_from_the_middle() {
    assert_eq!(span(300 * 44_100, 44_100), 105 * 44_100..195 * 44_100);
    assert_eq!(span(60 * 48_000, 48_000), 0..60 * 48_000);
    assert_eq!(span(90 * 48_000, 48_000), 0..90 * 48_000);
    assert_eq!(span(0, 44_100), 0..0);
}

fn item(key: SynthKey, bpm: f64, seed: u64) -> (Vec<f32>, u32) {
    let spec = SynthSpec {
        secs: 20.0,
        rate: 22_050,
        seed,
        ..SynthSpec::new(key, bpm)
    };
    (synth::to_mono(&synth::render(&spec)), spec.rate)
}

#[test]
fn analyze_finds_the_labelled_key_and_tempo() {
    let cases = [
        (SynthKey::minor(9), 128.0, Key::new(9, Mode::Minor), 0),
        (SynthKey::major(6), 174.0, Key::new(6, Mode::Major), 5),
        (SynthKey::minor(3), 87.5, Key::new(3, Mode::Minor), 10),
    ];
    for (synth_key, bpm, key, seed) in cases {
        let (mono, rate) = item(synth_key, bpm, seed);
        let a = analyze(&mono, rate, TempoRange::default());
        let tempo = a.tempo.expect("a tempo");
        assert!(
            (tempo.bpm - bpm).abs() <= 0.5,
            "{bpm} BPM read as {}",
            tempo.bpm
        );
        assert_eq!(tempo.bpm, (tempo.bpm * 10.0).round() / 10.0);
        assert!((0.0..=1.0).contains(&tempo.confidence));
        let found = a.key.expect("a key");
        assert_eq!(found.key, key, "{} read as {}", key, found.key);
        assert!((0.0..=1.0).contains(&found.confidence));
    }
}

#[test]
fn a_narrow_range_picks_the_octave_inside_it() {
    let (mono, rate) = item(SynthKey::major(0), 150.0, 3);
    let slow = TempoRange {
        min: 60.0,
        max: 100.0,
    };
    let tempo = analyze(&mono, rate, slow).tempo.expect("a tempo");
    assert!((tempo.bpm - 75.0).abs() <= 0.5, "{}", tempo.bpm);
}

#[test]
fn no_answer_without_a_signal() {
    let rate = 22_050;
    let silence = vec![0.0_f32; 10 * rate as usize];
    assert_eq!(
        analyze(&silence, rate, TempoRange::default()),
        Analysis::default()
    );
    assert_eq!(
        analyze(&[], rate, TempoRange::default()),
        Analysis::default()
    );
    assert_eq!(
        analyze(&silence, 0, TempoRange::default()),
        Analysis::default()
    );
    let tone: Vec<f32> = (0..10 * rate as usize)
        .map(|i| 0.5 * (std::f32::consts::TAU * 440.0 * i as f32 / rate as f32).sin())
        .collect();
    assert_eq!(
        analyze(&tone, rate, TempoRange::default()),
        Analysis::default()
    );
}

#[test]
fn white_noise_has_neither_tempo_nor_key() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<f32> = (0..10 * 22_050)
        .map(|_| {
            // xorshift64 (Marsaglia 2003): uniform noise without a dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    assert_eq!(
        analyze(&noise, 22_050, TempoRange::default()),
        Analysis::default()
    );
}

#[test]
fn odd_input_gives_no_answer_and_no_panic() {
    let junk = [f32::NAN, f32::INFINITY, 0.0, -1.0];
    let nan: Vec<f32> = (0..44_100).map(|i| junk[i % 4]).collect();
    assert_eq!(analyze(&nan, 22_050, TempoRange::default()).tempo, None);
    let (mono, _) = item(SynthKey::major(0), 120.0, 1);
    for rate in [1, 100, 8_000, 384_000] {
        let _ = analyze(&mono[..40_000], rate, TempoRange::default());
    }
    let backwards = TempoRange {
        min: 180.0,
        max: 70.0,
    };
    let _ = analyze(&mono[..40_000], 22_050, backwards);
}
