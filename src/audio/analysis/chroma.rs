//! Key estimation: a chromagram from spectral peaks, tuned to the recording's reference pitch
//! and summed over the span, correlated with 24 rotated key profiles (reference audio.md §3).
//!
//! Decisions (each measured on the synthesized labelled set, `playlistd_fakes::synth`):
//! - peaks, not every bin: the whole log-compressed spectrum got 7 of 24 synthesized keys
//!   (mostly a fifth off) where linear spectral peaks got 24 of 24 (audio.md §2, the quick
//!   experiment); drums and noise spread their energy over many bins but make few stable peaks;
//! - tuning: the magnitude-weighted circular mean of every peak's deviation from the 440 Hz
//!   grid (after Harte & Sandler 2005, without the histogram), so that a record a third of a
//!   semitone flat still lands on its own pitch classes;
//! - harmonic weighting as in Gómez's HPCP (2006): a peak also counts, at 0.6^(h-1), for the
//!   pitch classes of its possible fundamentals f/h (h ≤ 4), which takes back the weight that
//!   the third harmonic (a fifth up) steals from the root — otherwise keys come out a fifth off;
//! - a bass chroma (under 250 Hz) and a treble chroma, each normalised and mixed 30/70 (after
//!   Mauch & Dixon 2010): a loud bass line on the roots then says where the harmony goes without
//!   outvoting it, which was the main source of "minor key read as its VI" errors;
//! - magnitudes compressed to |X|^0.7, so that the loudest few peaks do not decide alone;
//! - profiles: Krumhansl & Kessler's (1982) and Temperley's (2007, Kostka-Payne corpus), each
//!   correlated by Pearson's r and averaged: either alone misread 2-10 % of the set, in
//!   different items (Temperley's: minor keys as their VI; Krumhansl's: relative and parallel).
//!
//! Invariants: no key comes back for a signal without at least three clearly present pitch
//! classes (silence, a single tone, an interval) or whose chroma is nearly flat (noise): a key
//! is never made up from too little.

use super::KeyEstimate;
use super::dsp::Stft;
use super::key::{Key, Mode};

/// Peaks between C2 (65.4 Hz) and C7 (2093 Hz): bass roots to the upper harmonics of chords.
const LOWEST_HZ: f64 = 62.0;
const HIGHEST_HZ: f64 = 2200.0;
/// A peak counts when it is within 40 dB of the frame's strongest.
const PEAK_FLOOR: f32 = 0.01;
/// The top of the bass chroma as a MIDI pitch (59.2 is 250 Hz, about B3), and its share.
const BASS_TOP_PITCH: f32 = 59.2;
const BASS_SHARE: f64 = 0.3;
/// HPCP harmonic weighting: harmonics considered and the weight's decay per harmonic.
const HARMONICS: usize = 4;
const HARMONIC_DECAY: f64 = 0.6;
/// Below this contrast (coefficient of variation) the chroma is too flat to name a key: white
/// noise gives about 0.12, the synthesized set at 20 dB SNR 0.32 and more.
const MIN_CONTRAST: f64 = 0.2;
/// Exponent applied to peak magnitudes.
const COMPRESSION: f64 = 0.7;

/// Temperley (2007) and Krumhansl & Kessler (1982), major and minor, from the tonic up.
const TEMPERLEY: [[f64; 12]; 2] = [
    [
        0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400,
    ],
    [
        0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330,
    ],
];
const KRUMHANSL: [[f64; 12]; 2] = [
    [
        6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
    ],
    [
        6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
    ],
];

/// One spectral peak: fractional MIDI pitch and linear magnitude.
struct Peak {
    pitch: f32,
    magnitude: f32,
}

/// The key of `x` at `rate` Hz, or `None` when the signal names no key.
pub(super) fn estimate(x: &[f32], rate: f64) -> Option<KeyEstimate> {
    let peaks = spectral_peaks(x, rate);
    let chroma = chromagram(&peaks, tuning(&peaks));
    let top = chroma.iter().copied().fold(0.0, f64::max);
    let present = chroma.iter().filter(|&&c| c >= 0.1 * top).count();
    if top.is_nan() || top <= 0.0 || present < 3 || contrast(&chroma) < MIN_CONTRAST {
        return None;
    }
    let mut scores: Vec<(Key, f64)> = Key::all()
        .map(|key| {
            let m = usize::from(key.mode() == Mode::Minor);
            let t = usize::from(key.tonic());
            let fit = |profile: &[f64; 12]| {
                let rotated: [f64; 12] = std::array::from_fn(|pc| profile[(pc + 12 - t) % 12]);
                pearson(&chroma, &rotated)
            };
            (key, 0.5 * (fit(&TEMPERLEY[m]) + fit(&KRUMHANSL[m])))
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (key, best) = scores[0];
    let second = scores[1].1;
    if best.is_nan() || best <= 0.0 {
        return None;
    }
    // The winner's margin as a share of the headroom the runner-up left: 0 for a tie, 1 when
    // the best profile fits perfectly.
    let confidence = ((best - second) / (1.0 - second).max(1e-9)).clamp(0.0, 1.0);
    Some(KeyEstimate { key, confidence })
}

/// Local maxima of each frame's magnitude spectrum within the pitch range, with their
/// frequencies refined by parabolic interpolation on the log magnitude (Smith & Serra 1987).
fn spectral_peaks(x: &[f32], rate: f64) -> Vec<Peak> {
    // ~0.74 s at 11 kHz: 1.35 Hz bins, a third of a semitone at C2.
    let size = ((rate / 2.0) as usize).next_power_of_two().max(256);
    let hop = size / 2;
    let bin_hz = rate / size as f64;
    let lo = ((LOWEST_HZ / bin_hz) as usize).max(1);
    let mut peaks = Vec::new();
    Stft::new(size, hop).frames(x, |mags| {
        let hi = ((HIGHEST_HZ / bin_hz) as usize).min(mags.len() - 2);
        if hi <= lo {
            // A rate too low to hold the pitch range at all.
            return;
        }
        let strongest = mags[lo..=hi].iter().copied().fold(0.0_f32, f32::max);
        let floor = (strongest * PEAK_FLOOR).max(1e-7);
        for k in lo..=hi {
            let m = mags[k];
            if m < floor || m < mags[k - 1] || m <= mags[k + 1] {
                continue;
            }
            let (a, b, c) = (
                mags[k - 1].max(1e-12).ln(),
                m.ln(),
                mags[k + 1].max(1e-12).ln(),
            );
            let denom = a - 2.0 * b + c;
            let delta = if denom < 0.0 {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            let hz = (k as f64 + f64::from(delta)) * bin_hz;
            let pitch = (69.0 + 12.0 * (hz / 440.0).log2()) as f32;
            peaks.push(Peak {
                pitch,
                magnitude: (b - 0.25 * (a - c) * delta).exp(),
            });
        }
    });
    peaks
}

/// The reference pitch offset in semitones, in [-0.5, 0.5): the circular mean of every peak's
/// deviation from the equal-tempered A440 grid, weighted by magnitude.
fn tuning(peaks: &[Peak]) -> f64 {
    let (mut s, mut c) = (0.0_f64, 0.0_f64);
    for p in peaks {
        let angle = std::f64::consts::TAU * f64::from(p.pitch);
        s += f64::from(p.magnitude) * angle.sin();
        c += f64::from(p.magnitude) * angle.cos();
    }
    if s == 0.0 && c == 0.0 {
        0.0
    } else {
        s.atan2(c) / std::f64::consts::TAU
    }
}

/// Twelve pitch-class weights: the bass and treble chromas, each summed over every peak and
/// normalised to a total of 1, mixed [`BASS_SHARE`] to the rest. A peak adds its compressed
/// magnitude to the pitch class of each possible fundamental, tapered by cos² of the distance
/// from that class's centre so that peaks between semitones (noise, drums) count little.
fn chromagram(peaks: &[Peak], tuning: f64) -> [f64; 12] {
    let (mut bass, mut treble) = ([0.0; 12], [0.0; 12]);
    for p in peaks {
        let chroma = if p.pitch < BASS_TOP_PITCH {
            &mut bass
        } else {
            &mut treble
        };
        let weight = f64::from(p.magnitude).powf(COMPRESSION);
        let mut harmonic_weight = 1.0;
        for h in 1..=HARMONICS {
            let pitch = f64::from(p.pitch) - tuning - 12.0 * (h as f64).log2();
            let nearest = pitch.round();
            let taper = (std::f64::consts::PI * (pitch - nearest)).cos().powi(2);
            chroma[(nearest as i64).rem_euclid(12) as usize] += weight * harmonic_weight * taper;
            harmonic_weight *= HARMONIC_DECAY;
        }
    }
    let total = |c: &[f64; 12]| c.iter().sum::<f64>();
    let (b, t) = (total(&bass), total(&treble));
    let share = |sum: f64, w: f64| if sum > 0.0 { w / sum } else { 0.0 };
    let (wb, wt) = (share(b, BASS_SHARE), share(t, 1.0 - BASS_SHARE));
    std::array::from_fn(|i| wb * bass[i] + wt * treble[i])
}

/// The coefficient of variation of the chroma: how far it is from flat.
fn contrast(chroma: &[f64; 12]) -> f64 {
    let mean = chroma.iter().sum::<f64>() / 12.0;
    let var = chroma.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / 12.0;
    if mean > 0.0 { var.sqrt() / mean } else { 0.0 }
}

/// Pearson's correlation coefficient; 0 when either side is constant.
fn pearson(x: &[f64; 12], y: &[f64; 12]) -> f64 {
    let mx = x.iter().sum::<f64>() / 12.0;
    let my = y.iter().sum::<f64>() / 12.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}
