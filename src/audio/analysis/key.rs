//! Musical keys and their notations: the standard name ("A Minor"), the ID3 `TKEY` form ("Am"),
//! Camelot ("8A") and Open Key ("1m"), and the MIREX score that compares two keys.
//!
//! Invariants: a [`Key`] always has a tonic in 0..12; every notation is spelled exactly as the
//! table in reference audio.md §6 (majors B, F#, Db, Ab, Eb, Bb, F, C, G, D, A, E; minors G#,
//! D#, Bb, F, C, G, D, A, E, B, F#, C#), and [`Key::parse`] reads back everything the formatters
//! write, in any case, as well as the other enharmonic spellings.

use std::fmt;

/// Major or minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A major key.
    Major,
    /// A (natural, harmonic or melodic) minor key.
    Minor,
}

/// A key: a tonic pitch class and a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    tonic: u8,
    mode: Mode,
}

/// How a key is written for people and DJ software: the config's `notion.key_notation`, one
/// type for both.
pub use crate::config::KeyNotation;

/// Tonic names by pitch class, as audio.md §6 spells them (the major ones double as `TKEY`).
const MAJOR_NAMES: [&str; 12] = [
    "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];
const STANDARD_MAJOR: [&str; 12] = [
    "C Major", "Db Major", "D Major", "Eb Major", "E Major", "F Major", "F# Major", "G Major",
    "Ab Major", "A Major", "Bb Major", "B Major",
];
const STANDARD_MINOR: [&str; 12] = [
    "C Minor", "C# Minor", "D Minor", "D# Minor", "E Minor", "F Minor", "F# Minor", "G Minor",
    "G# Minor", "A Minor", "Bb Minor", "B Minor",
];
const SHORT_MINOR: [&str; 12] = [
    "Cm", "C#m", "Dm", "D#m", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm",
];
/// Indexed by wheel number − 1.
const CAMELOT_A: [&str; 12] = [
    "1A", "2A", "3A", "4A", "5A", "6A", "7A", "8A", "9A", "10A", "11A", "12A",
];
const CAMELOT_B: [&str; 12] = [
    "1B", "2B", "3B", "4B", "5B", "6B", "7B", "8B", "9B", "10B", "11B", "12B",
];
const OPEN_M: [&str; 12] = [
    "1m", "2m", "3m", "4m", "5m", "6m", "7m", "8m", "9m", "10m", "11m", "12m",
];
const OPEN_D: [&str; 12] = [
    "1d", "2d", "3d", "4d", "5d", "6d", "7d", "8d", "9d", "10d", "11d", "12d",
];

impl Key {
    /// The key on pitch class `tonic` (0 = C … 11 = B, taken modulo 12).
    pub const fn new(tonic: u8, mode: Mode) -> Self {
        Self {
            tonic: tonic % 12,
            mode,
        }
    }

    /// All 24 keys: the majors on C … B, then the minors.
    pub fn all() -> impl Iterator<Item = Key> {
        [Mode::Major, Mode::Minor]
            .into_iter()
            .flat_map(|m| (0..12).map(move |t| Key::new(t, m)))
    }

    /// Pitch class of the tonic, 0 = C … 11 = B.
    pub const fn tonic(self) -> u8 {
        self.tonic
    }

    /// Major or minor.
    pub const fn mode(self) -> Mode {
        self.mode
    }

    /// The relative key: A Minor for C Major and back.
    pub const fn relative(self) -> Key {
        match self.mode {
            Mode::Major => Key::new(self.tonic + 9, Mode::Minor),
            Mode::Minor => Key::new(self.tonic + 3, Mode::Major),
        }
    }

    /// "A Minor", "F# Major".
    pub fn standard(self) -> &'static str {
        self.pick(&STANDARD_MAJOR, &STANDARD_MINOR)
    }

    /// The ID3 `TKEY` form (audio.md §5): "Am", "F#m", "Eb".
    pub fn short(self) -> &'static str {
        self.pick(&MAJOR_NAMES, &SHORT_MINOR)
    }

    /// Camelot: "8A" for A Minor, "8B" for C Major.
    pub fn camelot(self) -> &'static str {
        self.pick_wheel(&CAMELOT_B, &CAMELOT_A, self.camelot_number())
    }

    /// Open Key: "1m" for A Minor, "1d" for C Major.
    pub fn open_key(self) -> &'static str {
        // audio.md §6: Open Key number = ((Camelot number − 8) mod 12) + 1.
        let open = (self.camelot_number() + 12 - 8) % 12 + 1;
        self.pick_wheel(&OPEN_D, &OPEN_M, open)
    }

    /// The key in `notation`.
    pub fn format(self, notation: KeyNotation) -> &'static str {
        match notation {
            KeyNotation::Standard => self.standard(),
            KeyNotation::Camelot => self.camelot(),
            KeyNotation::OpenKey => self.open_key(),
        }
    }

    /// The Camelot wheel number, 1..=12: neighbours on the wheel are a fifth apart.
    pub const fn camelot_number(self) -> u8 {
        let major_tonic = match self.mode {
            Mode::Major => self.tonic,
            Mode::Minor => (self.tonic + 3) % 12,
        };
        // Position on the circle of fifths from C (0), shifted so that C Major is 8B.
        (major_tonic * 7 % 12 + 7) % 12 + 1
    }

    fn pick(
        self,
        major: &'static [&'static str; 12],
        minor: &'static [&'static str; 12],
    ) -> &'static str {
        match self.mode {
            Mode::Major => major[usize::from(self.tonic)],
            Mode::Minor => minor[usize::from(self.tonic)],
        }
    }

    fn pick_wheel(
        self,
        major: &'static [&'static str; 12],
        minor: &'static [&'static str; 12],
        n: u8,
    ) -> &'static str {
        let i = usize::from(n - 1);
        match self.mode {
            Mode::Major => major[i],
            Mode::Minor => minor[i],
        }
    }

    /// Reads a key in any of the four notations, in any case, with or without a space:
    /// "A Minor", "a min", "Am", "A#m", "Bbm", "F♯", "Eb major", "8A", "08a", "1m", "12d".
    pub fn parse(text: &str) -> Option<Key> {
        let s: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
            .map(|c| match c {
                '♯' => '#',
                '♭' => 'b',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            parse_wheel(&s)
        } else {
            parse_name(&s)
        }
    }
}

/// "8a"/"8b" (Camelot) or "1m"/"1d" (Open Key), already lower-cased.
fn parse_wheel(s: &str) -> Option<Key> {
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u8 = s[..digits].parse().ok().filter(|n| (1..=12).contains(n))?;
    let (camelot, minor) = match &s[digits..] {
        "a" => (n, true),
        "b" => (n, false),
        // Inverse of the Open Key formula in audio.md §6.
        "m" => ((n + 6) % 12 + 1, true),
        "d" => ((n + 6) % 12 + 1, false),
        _ => return None,
    };
    // Camelot n major is the tonic 7 fifths (mod 12) past the wheel's start at B (1B).
    let major_tonic = (11 + 7 * (camelot - 1)) % 12;
    Some(if minor {
        Key::new(major_tonic + 9, Mode::Minor)
    } else {
        Key::new(major_tonic, Mode::Major)
    })
}

/// A note name with accidentals and an optional mode word, already lower-cased.
fn parse_name(s: &str) -> Option<Key> {
    let mut chars = s.chars();
    let base: i32 = match chars.next()? {
        'c' => 0,
        'd' => 2,
        'e' => 4,
        'f' => 5,
        'g' => 7,
        'a' => 9,
        'b' => 11,
        _ => return None,
    };
    let mut rest = chars.as_str();
    let mut shift = 0_i32;
    loop {
        if let Some(r) = rest
            .strip_prefix("sharp")
            .or_else(|| rest.strip_prefix('#'))
        {
            shift += 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("flat") {
            shift -= 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('b') {
            // No mode word starts with "b", so a "b" after the letter is always a flat.
            shift -= 1;
            rest = r;
        } else {
            break;
        }
    }
    let mode = match rest {
        "" | "maj" | "major" | "dur" => Mode::Major,
        "m" | "min" | "minor" | "moll" => Mode::Minor,
        _ => return None,
    };
    Some(Key::new((base + shift).rem_euclid(12) as u8, mode))
}

impl fmt::Display for Key {
    /// The standard name, "A Minor".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.standard())
    }
}

/// MIREX key score of `estimate` against `truth`: 1.0 exact, 0.5 a perfect fifth away (same
/// mode, tonic a fifth up or down), 0.3 the relative key, 0.2 the parallel key, else 0
/// (audio.md §2).
pub fn mirex_score(estimate: Key, truth: Key) -> f64 {
    let up = (estimate.tonic + 12 - truth.tonic) % 12;
    if estimate == truth {
        1.0
    } else if estimate.mode == truth.mode && (up == 7 || up == 5) {
        0.5
    } else if estimate == truth.relative() {
        0.3
    } else if estimate.tonic == truth.tonic {
        0.2
    } else {
        0.0
    }
}
