//! The signal plumbing that tempo and key estimation share: decimation to the internal rate and
//! a short-time Fourier transform over magnitude frames.
//!
//! Both estimators need nothing above ~5 kHz (the onsets of kick, snare and chords, and pitches
//! up to C7), so the input is low-pass filtered and decimated by an integer factor to about
//! 11 kHz first: a quarter of the samples at 44.1 kHz, which is most of the speed budget.
//! Invariants: the internal rate is `rate / factor` exactly (no resampling drift, so a tempo
//! measured in frames converts back to BPM without error), and every FFT buffer comes from the
//! plan that uses it.

use std::borrow::Cow;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// The rate the estimators aim for; the actual internal rate is `rate / (rate / TARGET)`.
const TARGET_RATE: u32 = 11_025;

/// `mono` low-passed and decimated by an integer factor, with its new rate in Hz.
pub(super) fn decimate(mono: &[f32], rate: u32) -> (Cow<'_, [f32]>, f64) {
    let factor = (rate / TARGET_RATE).max(1) as usize;
    if factor == 1 {
        return (Cow::Borrowed(mono), f64::from(rate));
    }
    let taps = low_pass(factor);
    let half = taps.len() / 2;
    let mut padded = vec![0.0_f32; mono.len() + 2 * half];
    padded[half..half + mono.len()].copy_from_slice(mono);
    let out: Vec<f32> = (0..mono.len().div_ceil(factor))
        .map(|m| dot(&taps, &padded[m * factor..m * factor + taps.len()]))
        .collect();
    (Cow::Owned(out), f64::from(rate) / factor as f64)
}

/// A Blackman-windowed sinc with its cut-off at 90 % of the new Nyquist frequency and eight
/// zero crossings on each side: about 60 dB down in the stop band, plenty for onsets and peaks.
fn low_pass(factor: usize) -> Vec<f32> {
    let half = 8 * factor;
    let cutoff = 0.45 / factor as f64;
    let n = 2 * half + 1;
    let mut taps: Vec<f64> = (0..n)
        .map(|i| {
            let k = i as f64 - half as f64;
            let sinc = if k == 0.0 {
                2.0 * cutoff
            } else {
                (std::f64::consts::TAU * cutoff * k).sin() / (std::f64::consts::PI * k)
            };
            let w = std::f64::consts::TAU * i as f64 / (n - 1) as f64;
            sinc * (0.42 - 0.5 * w.cos() + 0.08 * (2.0 * w).cos())
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps.into_iter().map(|t| t as f32).collect()
}

/// A dot product in eight independent lanes, so that the compiler may vectorise it (a single
/// running sum is a dependency chain it must keep in order).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A Hann-windowed STFT that hands out magnitude spectra (`size / 2 + 1` bins).
pub(super) struct Stft {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    hop: usize,
    input: Vec<f32>,
    output: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    magnitudes: Vec<f32>,
}

impl Stft {
    pub(super) fn new(size: usize, hop: usize) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(size);
        let window = (0..size)
            .map(|i| {
                let x = std::f64::consts::TAU * i as f64 / size as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        Self {
            input: fft.make_input_vec(),
            output: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            magnitudes: vec![0.0; size / 2 + 1],
            fft,
            window,
            hop: hop.max(1),
        }
    }

    /// Calls `each` with the magnitude spectrum of every full frame of `x`, in order (a signal
    /// shorter than one frame gives one zero-padded frame).
    pub(super) fn frames(&mut self, x: &[f32], mut each: impl FnMut(&[f32])) {
        let size = self.window.len();
        let count = if x.len() <= size {
            1
        } else {
            (x.len() - size) / self.hop + 1
        };
        for f in 0..count {
            let start = f * self.hop;
            let frame = &x[start..(start + size).min(x.len())];
            self.input.fill(0.0);
            for ((d, &s), &w) in self.input.iter_mut().zip(frame).zip(&self.window) {
                *d = s * w;
            }
            self.fft
                .process_with_scratch(&mut self.input, &mut self.output, &mut self.scratch)
                .expect("buffers made by the plan itself");
            for (m, c) in self.magnitudes.iter_mut().zip(&self.output) {
                *m = c.norm();
            }
            each(&self.magnitudes);
        }
    }
}

/// Autocorrelation of `x` for lags `0..max_lag` (biased: each lag summed over the overlap), by
/// FFT (Wiener-Khinchin), since the envelopes are thousands of frames long.
pub(super) fn autocorrelation(x: &[f32], max_lag: usize) -> Vec<f32> {
    let n = (x.len() + max_lag).next_power_of_two().max(2);
    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut buf = forward.make_input_vec();
    buf[..x.len()].copy_from_slice(x);
    let mut spectrum = forward.make_output_vec();
    forward
        .process(&mut buf, &mut spectrum)
        .expect("buffers made by the plan itself");
    for c in &mut spectrum {
        *c = Complex::new(c.norm_sqr(), 0.0);
    }
    inverse
        .process(&mut spectrum, &mut buf)
        .expect("buffers made by the plan itself");
    buf.truncate(max_lag.min(x.len()));
    buf
}
