//! Deterministic labelled test music: chord progressions in a known key over drums at a known
//! tempo, so that playlistd's tempo and key analysis can be tested and benchmarked without
//! shipping copyrighted audio (reference audio.md §2: "a synthesized set does tell a good
//! implementation from a bad one").
//!
//! What an item contains, and why:
//! - an eight-bar chord progression in the labelled key, repeated; the tonic chord takes at
//!   least three of the eight bars and minor progressions use the raised leading tone or a
//!   tonic-heavy return, so the label is what a listener would say (an Aeolian i-VI-III-VII
//!   loop with equal bars is as much the relative major);
//! - voicings with harmonics (band-limited sawtooth and organ wavetables with envelopes), a bass
//!   line on the chord roots and, in some variants, an eighth-note arpeggio of chord tones;
//! - drums at the exact tempo: kick on every beat, snare or clap on 2 and 4, hi-hats on eighths,
//!   with deterministic velocity jitter, ghost notes and a fill every eight bars;
//! - optionally a drums-only intro and outro (`intro_bars`), as DJ edits have, white noise
//!   (`noise`) and a detuning of the whole harmony (`detune`) for robustness checks.
//!
//! Invariants: the same [`SynthSpec`] always renders the same samples (a private SplitMix64
//! generator, no global state, no dependency); beat `n` starts at sample `round(n * 60 / bpm *
//! rate)`; the mix is scaled so that its peak is -1 dBFS, so it never clips.
//!
//! The benchmark (`benches/`) encodes these items to AAC, as SoundCloud's HLS streams are, and
//! analyses the decoded audio, so that the numbers include a lossy codec.

use std::f64::consts::TAU;

/// A key as the synthesizer knows it: tonic pitch class (0 = C … 11 = B) and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SynthKey {
    /// Pitch class of the tonic, 0 = C, 1 = C#/Db, … 11 = B.
    pub tonic: u8,
    /// True for a minor key.
    pub minor: bool,
}

impl SynthKey {
    /// The major key on `tonic` (taken modulo 12).
    pub const fn major(tonic: u8) -> Self {
        Self {
            tonic: tonic % 12,
            minor: false,
        }
    }

    /// The minor key on `tonic` (taken modulo 12).
    pub const fn minor(tonic: u8) -> Self {
        Self {
            tonic: tonic % 12,
            minor: true,
        }
    }

    /// "A Minor", "F# Major", spelled as reference audio.md §6.
    pub fn name(&self) -> String {
        const MAJOR: [&str; 12] = [
            "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
        ];
        const MINOR: [&str; 12] = [
            "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "Bb", "B",
        ];
        let t = usize::from(self.tonic % 12);
        if self.minor {
            format!("{} Minor", MINOR[t])
        } else {
            format!("{} Major", MAJOR[t])
        }
    }
}

/// One item of labelled music.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// The key the harmony establishes.
    pub key: SynthKey,
    /// The tempo of the kick drum, in beats per minute.
    pub bpm: f64,
    /// Length in seconds.
    pub secs: f64,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Chooses the progression, the timbres and the drum variations; any value is valid.
    pub seed: u64,
    /// Bars of drums only at the start and at the end.
    pub intro_bars: u32,
    /// Transposition of all pitched parts in semitones (e.g. -0.3 for an off-tuned record).
    pub detune: f64,
    /// White noise RMS as a fraction of the music's RMS (0.1 is a signal-to-noise ratio of
    /// 20 dB).
    pub noise: f32,
}

impl SynthSpec {
    /// Three minutes at 44.1 kHz, variant 0, no intro, in tune, no noise.
    pub fn new(key: SynthKey, bpm: f64) -> Self {
        Self {
            key,
            bpm,
            secs: 180.0,
            rate: 44_100,
            seed: 0,
            intro_bars: 0,
            detune: 0.0,
            noise: 0.0,
        }
    }
}

/// Tempos of the labelled set: 48 values over 70-180 BPM, not all integers, denser around the
/// club tempos (120-130, 170-175) where DJ libraries are.
const TEMPOS: [f64; 48] = [
    70.0, 72.5, 75.0, 78.0, 80.0, 84.0, 87.5, 90.0, 94.0, 98.0, 100.0, 104.5, 108.0, 112.0, 115.0,
    118.0, 120.0, 122.0, 124.0, 125.0, 126.0, 127.5, 128.0, 130.0, 132.0, 135.0, 136.5, 138.0,
    140.0, 142.0, 145.0, 148.0, 150.0, 152.5, 155.0, 158.0, 160.0, 162.5, 165.0, 168.0, 170.0,
    172.5, 174.0, 175.0, 176.0, 178.0, 179.5, 180.0,
];

/// All 24 keys twice, each once at a slower and once at a faster tempo (48 items, every tempo
/// of the list once), 180 s at 44.1 kHz with an eight-bar intro and outro, seeds 0-47.
pub fn labelled_set() -> Vec<SynthSpec> {
    (0..48_u8)
        .map(|i| {
            let tonic = i % 12;
            let key = if (i / 12) % 2 == 0 {
                SynthKey::major(tonic)
            } else {
                SynthKey::minor(tonic)
            };
            let bpm = TEMPOS[(usize::from(i) * 5) % TEMPOS.len()];
            SynthSpec {
                seed: u64::from(i),
                intro_bars: 8,
                ..SynthSpec::new(key, bpm)
            }
        })
        .collect()
}

/// Renders `spec` as interleaved stereo (left, right, left, …) f32 samples at `spec.rate`.
pub fn render(spec: &SynthSpec) -> Vec<f32> {
    let rate = f64::from(spec.rate.max(1));
    let frames = (spec.secs.max(0.0) * rate).round() as usize;
    let mut mix = Mix {
        left: vec![0.0; frames],
        right: vec![0.0; frames],
        rate,
    };
    let mut rng = Rng::new(spec.seed ^ (u64::from(spec.key.tonic) << 32) ^ spec.bpm.to_bits());
    let plan = Plan::new(spec);
    render_drums(&mut mix, &plan, &mut rng);
    render_harmony(&mut mix, &plan, spec);
    if spec.noise > 0.0 {
        add_noise(&mut mix, spec.noise, &mut rng);
    }
    mix.normalize(10f32.powf(-1.0 / 20.0));
    mix.interleave()
}

/// Averages interleaved stereo to mono.
pub fn to_mono(interleaved: &[f32]) -> Vec<f32> {
    interleaved
        .chunks_exact(2)
        .map(|lr| 0.5 * (lr[0] + lr[1]))
        .collect()
}

/// A chord: root as semitones above the tonic, and whether its third is minor.
#[derive(Clone, Copy)]
struct Chord(u8, bool);

const I: Chord = Chord(0, false);
const II_MIN: Chord = Chord(2, true);
const IV: Chord = Chord(5, false);
const V: Chord = Chord(7, false);
const VI_MIN: Chord = Chord(9, true);
const I_MIN: Chord = Chord(0, true);
const IV_MIN: Chord = Chord(5, true);
const III_FLAT: Chord = Chord(3, false);
const VI_FLAT: Chord = Chord(8, false);
const VII_FLAT: Chord = Chord(10, false);

/// Eight bars each: I-IV-V-I, I-vi-IV-V, I-V-vi-IV, I-vi-ii-V.
const MAJOR_PROGRESSIONS: [[Chord; 8]; 4] = [
    [I, I, IV, IV, V, V, I, I],
    [I, I, VI_MIN, VI_MIN, IV, IV, V, V],
    [I, I, V, V, VI_MIN, VI_MIN, IV, I],
    [I, VI_MIN, II_MIN, V, I, IV, V, I],
];

/// Eight bars each: i-iv-V-i, i-VI-III-VII (returning to i), i-VII-VI-V, i-iv-V-i-VI-iv-V-i.
const MINOR_PROGRESSIONS: [[Chord; 8]; 4] = [
    [I_MIN, I_MIN, IV_MIN, IV_MIN, V, V, I_MIN, I_MIN],
    [
        I_MIN, I_MIN, VI_FLAT, VI_FLAT, III_FLAT, VII_FLAT, I_MIN, I_MIN,
    ],
    [I_MIN, I_MIN, VII_FLAT, VI_FLAT, V, V, I_MIN, I_MIN],
    [I_MIN, IV_MIN, V, I_MIN, VI_FLAT, IV_MIN, V, I_MIN],
];

/// The choices an item's seed makes, fixed before rendering.
struct Plan {
    progression: [Chord; 8],
    beat: f64,
    bars: usize,
    intro_bars: usize,
    /// 0: organ pad, 1: detuned sawtooth pad, 2: sawtooth pad with arpeggio.
    timbre: u64,
    /// 0: bass on every beat, 1: off-beat eighths, 2: root and octave.
    bass_style: u64,
    clap: bool,
}

impl Plan {
    fn new(spec: &SynthSpec) -> Self {
        let progressions = if spec.key.minor {
            &MINOR_PROGRESSIONS
        } else {
            &MAJOR_PROGRESSIONS
        };
        let beat = 60.0 / spec.bpm.clamp(20.0, 400.0);
        let bars = (spec.secs.max(0.0) / (4.0 * beat)).ceil() as usize;
        Self {
            progression: progressions[(spec.seed % 4) as usize],
            beat,
            bars,
            intro_bars: spec.intro_bars as usize,
            timbre: (spec.seed / 4) % 3,
            bass_style: (spec.seed / 3) % 3,
            clap: spec.seed % 2 == 1,
        }
    }

    fn has_harmony(&self, bar: usize) -> bool {
        bar >= self.intro_bars && bar + self.intro_bars < self.bars
    }
}

/// Kick on every beat, snare or clap on 2 and 4, hats on eighths, all through the item.
fn render_drums(mix: &mut Mix, plan: &Plan, rng: &mut Rng) {
    let kit = Kit::new(mix.rate, rng);
    let backbeat = if plan.clap { &kit.clap } else { &kit.snare };
    let step = plan.beat / 4.0;
    for bar in 0..plan.bars {
        let t0 = bar as f64 * 4.0 * plan.beat;
        let fill = bar % 8 == 7;
        for s in 0..16_usize {
            let t = t0 + s as f64 * step;
            let jitter = 1.0 + 0.08 * (rng.unit() - 0.5);
            if s % 4 == 0 {
                mix.add(t, &kit.kick, 0.95 * jitter, 0.0);
            }
            if s == 4 || s == 12 {
                mix.add(t, backbeat, 0.5 * jitter, 0.0);
            } else if (fill && s >= 13) || ((s == 7 || s == 15) && rng.unit() < 0.12) {
                mix.add(t, &kit.snare, 0.18 * jitter, 0.0);
            }
            if s % 2 == 0 {
                let accent = if s % 4 == 2 { 0.16 } else { 0.1 };
                let open = s == 14 && bar % 4 == 3;
                let hat = if open { &kit.open_hat } else { &kit.hat };
                mix.add(t, hat, accent * jitter, 0.3);
            }
        }
    }
}

/// Pads, bass and arpeggio over the bars that are not intro or outro.
fn render_harmony(mix: &mut Mix, plan: &Plan, spec: &SynthSpec) {
    let rate = mix.rate;
    let harmonics = |top_hz: f64, wanted: usize| wanted.min((0.45 * rate / top_hz) as usize).max(1);
    let saw = Wavetable::new(&sawtooth(harmonics(1100.0, 24)));
    let organ = Wavetable::new(&organ(harmonics(1100.0, 8)));
    let bass = Wavetable::new(&bass_partials(harmonics(250.0, 8)));
    let bar_len = 4.0 * plan.beat;
    let tonic = 48.0 + f64::from(spec.key.tonic % 12) + spec.detune;
    for bar in 0..plan.bars {
        if !plan.has_harmony(bar) {
            continue;
        }
        let chord = plan.progression[bar % 8];
        let t0 = bar as f64 * bar_len;
        let root = tonic + f64::from(chord.0);
        let tones = voicing(root, chord.1);
        let pad_env = Envelope {
            attack: 0.02,
            decay: 0.6,
            sustain: 0.7,
            release: 0.08,
        };
        for (i, &m) in tones.iter().enumerate() {
            let pan = (i as f32 - 1.0) * 0.3;
            match plan.timbre {
                0 => mix.note(&organ, m, t0, bar_len, 0.12, pan, pad_env),
                _ => {
                    mix.note(&saw, m - 0.06, t0, bar_len, 0.07, pan - 0.2, pad_env);
                    mix.note(&saw, m + 0.06, t0, bar_len, 0.07, pan + 0.2, pad_env);
                }
            }
        }
        if plan.timbre == 2 {
            render_arpeggio(mix, &saw, &tones, t0, plan.beat);
        }
        render_bass(mix, &bass, root - 12.0, t0, plan);
    }
}

/// Eighth notes up and down the chord tones, an octave above the pad.
fn render_arpeggio(mix: &mut Mix, table: &Wavetable, tones: &[f64; 3], t0: f64, beat: f64) {
    const ORDER: [usize; 8] = [0, 1, 2, 3, 2, 1, 0, 1];
    let env = Envelope {
        attack: 0.004,
        decay: 0.12,
        sustain: 0.0,
        release: 0.05,
    };
    for (k, &o) in ORDER.iter().enumerate() {
        let m = if o == 3 {
            tones[0] + 24.0
        } else {
            tones[o] + 12.0
        };
        mix.note(
            table,
            m,
            t0 + k as f64 * beat / 2.0,
            beat / 2.0,
            0.06,
            -0.4,
            env,
        );
    }
}

fn render_bass(mix: &mut Mix, table: &Wavetable, root: f64, t0: f64, plan: &Plan) {
    let beat = plan.beat;
    let env = Envelope {
        attack: 0.005,
        decay: 0.15,
        sustain: 0.5,
        release: 0.04,
    };
    for b in 0..4 {
        let t = t0 + f64::from(b) * beat;
        match plan.bass_style {
            0 => mix.note(table, root, t, 0.9 * beat, 0.32, 0.0, env),
            1 => mix.note(table, root, t + beat / 2.0, 0.45 * beat, 0.36, 0.0, env),
            _ => {
                let m = if b % 2 == 0 { root } else { root + 12.0 };
                mix.note(table, m, t, 0.45 * beat, 0.32, 0.0, env);
                mix.note(table, m, t + beat / 2.0, 0.45 * beat, 0.22, 0.0, env);
            }
        }
    }
}

/// A close triad on `root` (MIDI number), inverted so that it sits around middle C.
fn voicing(root: f64, minor: bool) -> [f64; 3] {
    let third = if minor { 3.0 } else { 4.0 };
    let mut tones = [root + 12.0, root + 12.0 + third, root + 19.0];
    // Inversions keep every voice within an octave of G3-G4 whatever the tonic.
    while tones[2] > 69.0 {
        tones.sort_by(f64::total_cmp);
        tones[2] -= 12.0;
        tones.sort_by(f64::total_cmp);
    }
    tones
}

fn sawtooth(n: usize) -> Vec<f32> {
    (1..=n).map(|k| 1.0 / k as f32).collect()
}

/// Hammond-like drawbars 8', 4', 2 2/3', 2', 1 3/5' (partials 1-5) and 1' (partial 8).
fn organ(n: usize) -> Vec<f32> {
    [1.0, 0.7, 0.5, 0.35, 0.2, 0.0, 0.0, 0.15]
        .into_iter()
        .take(n)
        .collect()
}

fn bass_partials(n: usize) -> Vec<f32> {
    (1..=n).map(|k| 1.0 / (k * k) as f32).collect()
}

#[derive(Clone, Copy)]
struct Envelope {
    attack: f64,
    /// Time constant (s) of the fall from peak to sustain.
    decay: f64,
    sustain: f32,
    /// Time constant (s) of the fall after the note's end.
    release: f64,
}

/// One cycle of a waveform, 2048 points plus a wrap-around guard point.
struct Wavetable(Vec<f32>);

impl Wavetable {
    const SIZE: usize = 2048;

    fn new(partials: &[f32]) -> Self {
        let mut t: Vec<f32> = (0..=Self::SIZE)
            .map(|i| {
                let x = TAU * i as f64 / Self::SIZE as f64;
                partials
                    .iter()
                    .enumerate()
                    .map(|(k, &a)| f64::from(a) * ((k + 1) as f64 * x).sin())
                    .sum::<f64>() as f32
            })
            .collect();
        let peak = t.iter().fold(0.0_f32, |m, v| m.max(v.abs())).max(1e-9);
        t.iter_mut().for_each(|v| *v /= peak);
        Self(t)
    }
}

/// Pre-rendered drum hits of one item (mono).
struct Kit {
    kick: Vec<f32>,
    snare: Vec<f32>,
    clap: Vec<f32>,
    hat: Vec<f32>,
    open_hat: Vec<f32>,
}

impl Kit {
    fn new(rate: f64, rng: &mut Rng) -> Self {
        let len = |secs: f64| (secs * rate) as usize;
        let mut phase = 0.0;
        let kick = (0..len(0.35))
            .map(|i| {
                let t = i as f64 / rate;
                phase += TAU * (48.0 + 110.0 * (-t / 0.03).exp()) / rate;
                let attack = (t / 0.002).min(1.0);
                (attack * phase.sin() * (-t / 0.14).exp()) as f32
            })
            .collect();
        let snare = (0..len(0.22))
            .map(|i| {
                let t = i as f64 / rate;
                let tone = 0.5 * (TAU * 185.0 * t).sin() * (-t / 0.05).exp();
                (tone + 0.7 * rng.noise() * (-t / 0.07).exp()) as f32
            })
            .collect();
        let clap = (0..len(0.2))
            .map(|i| {
                let t = i as f64 / rate;
                let burst = (t % 0.011) < 0.004 && t < 0.033;
                let env = if burst { 1.0 } else { (-t / 0.06).exp() * 0.6 };
                (rng.noise() * env) as f32
            })
            .collect();
        let hat = high_pass_noise(len(0.06), rate, 0.015, rng);
        let open_hat = high_pass_noise(len(0.3), rate, 0.09, rng);
        Self {
            kick,
            snare,
            clap,
            hat,
            open_hat,
        }
    }
}

/// Second difference of white noise (rising 12 dB an octave), decaying with `tau`.
fn high_pass_noise(n: usize, rate: f64, tau: f64, rng: &mut Rng) -> Vec<f32> {
    let (mut a, mut b) = (0.0, 0.0);
    (0..n)
        .map(|i| {
            let x = rng.noise();
            let y = 0.25 * (x - 2.0 * a + b);
            (b, a) = (a, x);
            (y * (-(i as f64) / rate / tau).exp()) as f32
        })
        .collect()
}

fn add_noise(mix: &mut Mix, relative_rms: f32, rng: &mut Rng) {
    let n = mix.left.len().max(1) as f64;
    let power: f64 = mix
        .left
        .iter()
        .chain(&mix.right)
        .map(|&v| f64::from(v).powi(2))
        .sum();
    let rms = (power / (2.0 * n)).sqrt();
    // Uniform noise on [-1, 1) has an RMS of 1/sqrt(3).
    let gain = (f64::from(relative_rms) * rms * 3f64.sqrt()) as f32;
    for v in mix.left.iter_mut().chain(mix.right.iter_mut()) {
        *v += gain * rng.noise() as f32;
    }
}

struct Mix {
    left: Vec<f32>,
    right: Vec<f32>,
    rate: f64,
}

impl Mix {
    /// Adds a pre-rendered hit at time `t`, with `pan` in -1 (left) … 1 (right).
    fn add(&mut self, t: f64, hit: &[f32], gain: f64, pan: f32) {
        let start = (t * self.rate).round() as usize;
        let (gl, gr) = pan_gains(gain as f32, pan);
        let end = (start + hit.len()).min(self.left.len());
        for (i, &h) in (start..end).zip(hit) {
            self.left[i] += gl * h;
            self.right[i] += gr * h;
        }
    }

    /// Plays a wavetable note (MIDI number `midi`, fractional allowed) for `dur` seconds plus
    /// its release.
    #[expect(
        clippy::too_many_arguments,
        reason = "a note's parameters, used by three voices"
    )]
    fn note(
        &mut self,
        table: &Wavetable,
        midi: f64,
        t: f64,
        dur: f64,
        gain: f32,
        pan: f32,
        env: Envelope,
    ) {
        let start = (t * self.rate).round() as usize;
        let held = (dur * self.rate) as usize;
        let end = (start + held + (5.0 * env.release * self.rate) as usize).min(self.left.len());
        let step = 440.0 * 2f64.powf((midi - 69.0) / 12.0) / self.rate * Wavetable::SIZE as f64;
        let attack = (env.attack * self.rate).max(1.0) as usize;
        let decay = (-1.0 / (env.decay * self.rate)).exp() as f32;
        let release = (-1.0 / (env.release * self.rate)).exp() as f32;
        let (gl, gr) = pan_gains(gain, pan);
        let (mut phase, mut amp) = (0.0_f64, 0.0_f32);
        for (n, i) in (start..end).enumerate() {
            amp = if n < attack {
                n as f32 / attack as f32
            } else if n < held {
                env.sustain + (amp - env.sustain) * decay
            } else {
                amp * release
            };
            let idx = phase as usize;
            let frac = (phase - idx as f64) as f32;
            let v = table.0[idx] + frac * (table.0[idx + 1] - table.0[idx]);
            self.left[i] += gl * amp * v;
            self.right[i] += gr * amp * v;
            phase += step;
            if phase >= Wavetable::SIZE as f64 {
                phase -= Wavetable::SIZE as f64;
            }
        }
    }

    fn normalize(&mut self, peak: f32) {
        let max = self
            .left
            .iter()
            .chain(&self.right)
            .fold(0.0_f32, |m, v| m.max(v.abs()));
        if max > 0.0 {
            let g = peak / max;
            self.left
                .iter_mut()
                .chain(self.right.iter_mut())
                .for_each(|v| *v *= g);
        }
    }

    fn interleave(self) -> Vec<f32> {
        self.left
            .iter()
            .zip(&self.right)
            .flat_map(|(&l, &r)| [l, r])
            .collect()
    }
}

/// Constant-power panning.
fn pan_gains(gain: f32, pan: f32) -> (f32, f32) {
    let angle = (pan.clamp(-1.0, 1.0) + 1.0) * std::f32::consts::FRAC_PI_4;
    (
        gain * angle.cos() * std::f32::consts::SQRT_2,
        gain * angle.sin() * std::f32::consts::SQRT_2,
    )
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fixed here, so items never change
/// with a dependency's version.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    fn noise(&mut self) -> f64 {
        2.0 * self.unit() - 1.0
    }
}
