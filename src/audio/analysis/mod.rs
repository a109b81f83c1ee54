//! Tempo and key of a track, for the BPM and key tags DJ software reads (reference audio.md §5)
//! and the Notion `Tempo` and `Key` properties (§1), computed natively instead of by librosa.
//!
//! [`analyze`] is a pure function of mono samples: the caller decodes, downmixes and cuts the
//! [`span`] to analyse. Internally the signal is decimated to about 11 kHz (`dsp`), then
//! `tempo` and `chroma` each run one STFT over it. The whole is std plus an FFT crate (and the
//! config's [`KeyNotation`]), so it is tested and benchmarked (B8) apart from the daemon; the
//! caller that feeds it is [`super::library`].
//!
//! Invariants:
//! - an estimate is given only when the signal supports one: silence, a steady tone or noise
//!   give `None`, never a made-up value;
//! - a tempo lies inside the configured [`TempoRange`] (octave errors are folded into it) and
//!   is rounded to 0.1 BPM; confidences are in 0..=1;
//! - key names follow audio.md §6 exactly ([`Key`]).

mod chroma;
mod dsp;
mod key;
mod tempo;
#[cfg(test)]
mod tests;

use std::ops::Range;

pub use key::{Key, KeyNotation, Mode, mirex_score};

/// How much of a track [`span`] picks, in seconds.
pub const SPAN_SECS: u64 = 90;

/// The tempos a track may have: estimates are chosen inside and octave errors folded into it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TempoRange {
    /// Slowest tempo in BPM.
    pub min: f64,
    /// Fastest tempo in BPM.
    pub max: f64,
}

impl Default for TempoRange {
    /// 70-180 BPM: downtempo to drum and bass (audio.md §3).
    fn default() -> Self {
        Self {
            min: 70.0,
            max: 180.0,
        }
    }
}

impl TempoRange {
    /// `bpm` doubled or halved until it lies inside the range. A range narrower than an octave
    /// may hold no octave of `bpm`; then the octave nearest to it (in ratio) comes back.
    /// Non-positive or non-finite input is returned as it is.
    pub fn fold(&self, bpm: f64) -> f64 {
        if !(bpm.is_finite() && bpm > 0.0) {
            return bpm;
        }
        let range = self.sanitized();
        let mut b = bpm;
        while b > range.max {
            b /= 2.0;
        }
        while b < range.min {
            b *= 2.0;
        }
        if b <= range.max {
            return b;
        }
        // `b` overshot the top while `b / 2` is under the bottom: take the closer in ratio.
        if b / range.max <= range.min / (b / 2.0) {
            b
        } else {
            b / 2.0
        }
    }

    /// This range if it is usable (finite, 20 BPM or more, min ≤ max), else the default.
    fn sanitized(&self) -> Self {
        let ok = self.min.is_finite() && self.max.is_finite() && self.min >= 20.0;
        if ok && self.min <= self.max {
            *self
        } else {
            Self::default()
        }
    }
}

/// An estimated tempo.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tempo {
    /// Beats per minute, rounded to one decimal.
    pub bpm: f64,
    /// How periodic the onsets are at that tempo: the normalised autocorrelation, 0..=1.
    pub confidence: f64,
}

/// An estimated key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyEstimate {
    /// The best-fitting key.
    pub key: Key,
    /// The best profile correlation's margin over the runner-up, 0..=1 (0 = a tie).
    pub confidence: f64,
}

/// What [`analyze`] found; each part is `None` when the signal gives no answer.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Analysis {
    /// The tempo, inside the requested range.
    pub tempo: Option<Tempo>,
    /// The key.
    pub key: Option<KeyEstimate>,
}

/// Tempo and key of `mono` (samples in -1..1) at `rate` Hz, the tempo searched in `range` (an
/// unusable range — non-finite, under 20 BPM, min > max — means the default).
pub fn analyze(mono: &[f32], rate: u32, range: TempoRange) -> Analysis {
    if mono.is_empty() || rate == 0 {
        return Analysis::default();
    }
    let (signal, internal_rate) = dsp::decimate(mono, rate);
    let envelope = tempo::onset_envelope(&signal, internal_rate);
    Analysis {
        tempo: tempo::estimate(&envelope, range.sanitized()),
        key: chroma::estimate(&signal, internal_rate),
    }
}

/// The frames of a `total_frames`-long track to analyse: [`SPAN_SECS`] from the middle, or all
/// of a shorter track. The middle because DJ edits open and close with sparse, often beatless
/// and chordless intros (audio.md §3); 90 s because that covers several 8- or 16-bar phrases
/// at any tempo of the range, within the 60-120 s that audio.md suggests for speed.
pub fn span(total_frames: u64, rate: u32) -> Range<u64> {
    let want = SPAN_SECS.saturating_mul(u64::from(rate));
    if total_frames <= want {
        return 0..total_frames;
    }
    let start = (total_frames - want) / 2;
    start..start + want
}
