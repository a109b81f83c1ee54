//! The DJ-format copies of a track: AIFF (big-endian PCM, `aifc`) and WAV (PCM, `hound`) at 16
//! or 24 bits, at the source rate or resampled, written in the one decoding pass the tempo/key
//! analysis shares: the caller pulls blocks from `decode::PcmReader` and pushes each to a
//! [`Job`] and to its own analysis. Tempo and key are known only after the pass, so the tags
//! come at [`Pending::commit`], appended to the finished files without rewriting their audio
//! (`chunks`).
//!
//! Invariants:
//! - a file appears under its final name only complete and tagged: it is written to a
//!   temporary file in the destination folder, synced, linked to its final name, and the folder
//!   synced; dropping a `Job` or `Pending` removes the temporary files;
//! - a file already at a final path (a person's) is never overwritten: `create` skips that
//!   output, and `commit` fails rather than replace one that appeared meanwhile;
//! - the output is as long as the input (after resampling, `round(frames × out / in)`);
//!   samples are clipped to full scale, 16-bit gets TPDF dither, 24-bit is rounded (its
//!   quantisation noise is far below any decoded source's).

pub mod chunks;
mod resample;

use super::tags::{self, Container, Mode, Tags};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Aiff,
    Wav,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// 16 or 24.
    pub bits: u16,
    /// Output rate; `None` keeps the source's.
    pub rate: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub kind: Kind,
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("unsupported output: {0}")]
    Spec(String),
    #[error("{0} samples are not a whole number of {1}-channel frames")]
    Frames(usize, u16),
    #[error("resampling: {0}")]
    Resample(String),
    #[error("writing AIFF: {0}")]
    Aiff(String),
    #[error("writing WAV: {0}")]
    Wav(#[from] hound::Error),
    #[error("tagging {0}: {1}")]
    Tag(PathBuf, tags::TagError),
    #[error("{0} appeared while the copy was written; it is left as it is")]
    Exists(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |e| FormatError::Io(path.to_path_buf(), e)
}

fn aiff_err(e: aifc::AifcError) -> FormatError {
    FormatError::Aiff(format!("{e:?}"))
}

/// A temporary file that is removed unless it was moved into place.
struct Temp {
    kind: Kind,
    path: PathBuf,
    target: PathBuf,
    kept: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Sink {
    // Boxed: aifc's writer carries a 256-sample ADPCM buffer we never use.
    Aiff(Box<aifc::AifcWriter<BufWriter<File>>>),
    Wav(hound::WavWriter<BufWriter<File>>),
}

/// Conversions in progress: every output gets the same (resampled, quantised) samples.
pub struct Job {
    // Declared first, so the sinks close their files before the temps remove them.
    sinks: Vec<Sink>,
    temps: Vec<Temp>,
    skipped: Vec<PathBuf>,
    channels: u16,
    resampler: Option<resample::Stream>,
    quant: Quantiser,
}

/// Finished, untagged files waiting for their tags.
pub struct Pending {
    temps: Vec<Temp>,
}

impl Job {
    /// Starts the outputs whose final path is free; the others are skipped ([`Job::skipped`]).
    pub fn create(
        outputs: &[(Kind, PathBuf)],
        src_rate: u32,
        channels: u16,
        spec: Spec,
    ) -> Result<Job, FormatError> {
        if spec.bits != 16 && spec.bits != 24 {
            return Err(FormatError::Spec(format!("{} bits (16 or 24)", spec.bits)));
        }
        if channels == 0 || src_rate == 0 || spec.rate == Some(0) {
            return Err(FormatError::Spec(format!(
                "{channels} channels at {src_rate} Hz"
            )));
        }
        let out_rate = spec.rate.unwrap_or(src_rate);
        let resampler = (out_rate != src_rate)
            .then(|| resample::Stream::new(src_rate, out_rate, channels))
            .transpose()?;
        let mut job = Job {
            sinks: Vec::new(),
            temps: Vec::new(),
            skipped: Vec::new(),
            channels,
            resampler,
            quant: Quantiser::new(spec.bits),
        };
        for (kind, target) in outputs {
            if target.symlink_metadata().is_ok() {
                job.skipped.push(target.clone());
                continue;
            }
            let temp = temp_path(target)?;
            let file = File::options()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&temp)
                .map_err(io(&temp))?;
            job.temps.push(Temp {
                kind: *kind,
                path: temp,
                target: target.clone(),
                kept: false,
            });
            job.sinks
                .push(open_sink(*kind, file, channels, out_rate, spec.bits)?);
        }
        Ok(job)
    }

    /// The outputs `create` left alone because their final path already existed.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// True when every output was skipped: the caller need not push anything.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Appends interleaved samples (whole frames) to every output.
    pub fn push(&mut self, interleaved: &[f32]) -> Result<(), FormatError> {
        if !interleaved.len().is_multiple_of(usize::from(self.channels)) {
            return Err(FormatError::Frames(interleaved.len(), self.channels));
        }
        if self.sinks.is_empty() {
            return Ok(());
        }
        let (sinks, quant) = (&mut self.sinks, &mut self.quant);
        let mut write = |block: &[f32]| write_all(sinks, quant, block);
        match self.resampler.as_mut() {
            Some(r) => r.push(interleaved, &mut write),
            None => write(interleaved),
        }
    }

    /// Completes the audio of every output (headers patched, files closed).
    pub fn finish(mut self) -> Result<Pending, FormatError> {
        if let Some(r) = self.resampler.as_mut() {
            let (sinks, quant) = (&mut self.sinks, &mut self.quant);
            r.finish(&mut |block| write_all(sinks, quant, block))?;
        }
        for sink in self.sinks.drain(..) {
            match sink {
                Sink::Aiff(mut w) => {
                    w.finalize().map_err(aiff_err)?;
                    w.into_inner()
                        .into_inner()
                        .map_err(|e| FormatError::Aiff(e.error().to_string()))?;
                }
                Sink::Wav(w) => w.finalize()?,
            }
        }
        Ok(Pending {
            temps: std::mem::take(&mut self.temps),
        })
    }
}

impl Pending {
    /// Tags every file and moves it into place; returns what was written.
    pub fn commit(mut self, tags: &Tags<'_>) -> Result<Vec<Written>, FormatError> {
        let mut written = Vec::new();
        for temp in &mut self.temps {
            let container = match temp.kind {
                Kind::Aiff => Container::Aiff,
                Kind::Wav => Container::Wav,
            };
            tags::write_as(&temp.path, container, tags, Mode::Replace)
                .map_err(|e| FormatError::Tag(temp.target.clone(), e))?;
            let file = File::open(&temp.path).map_err(io(&temp.path))?;
            file.sync_all().map_err(io(&temp.path))?;
            let bytes = file.metadata().map_err(io(&temp.path))?.len();
            drop(file);
            place(&temp.path, &temp.target)?;
            temp.kept = true;
            written.push(Written {
                kind: temp.kind,
                path: temp.target.clone(),
                bytes,
            });
        }
        Ok(written)
    }
}

fn open_sink(
    kind: Kind,
    file: File,
    channels: u16,
    rate: u32,
    bits: u16,
) -> Result<Sink, FormatError> {
    let out = BufWriter::with_capacity(1 << 16, file);
    Ok(match kind {
        Kind::Aiff => {
            let info = aifc::AifcWriteInfo {
                file_format: aifc::FileFormat::Aiff,
                channels: i16::try_from(channels)
                    .map_err(|_| FormatError::Spec(format!("{channels} channels")))?,
                sample_rate: f64::from(rate),
                sample_format: if bits == 16 {
                    aifc::SampleFormat::I16
                } else {
                    aifc::SampleFormat::I24
                },
            };
            Sink::Aiff(Box::new(
                aifc::AifcWriter::new(out, &info).map_err(aiff_err)?,
            ))
        }
        Kind::Wav => {
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            Sink::Wav(hound::WavWriter::new(out, spec)?)
        }
    })
}

fn write_all(sinks: &mut [Sink], quant: &mut Quantiser, block: &[f32]) -> Result<(), FormatError> {
    quant.run(block);
    for sink in sinks {
        match sink {
            Sink::Aiff(w) if quant.bits == 16 => {
                w.write_samples_i16(&quant.i16s).map_err(aiff_err)?;
            }
            Sink::Aiff(w) => w.write_samples_i24(&quant.i32s).map_err(aiff_err)?,
            Sink::Wav(w) if quant.bits == 16 => {
                let mut s = w.get_i16_writer(quant.i16s.len() as u32);
                for v in &quant.i16s {
                    s.write_sample(*v);
                }
                s.flush()?;
            }
            Sink::Wav(w) => {
                for v in &quant.i32s {
                    w.write_sample(*v)?;
                }
            }
        }
    }
    Ok(())
}

/// Float samples to integers: clipped to full scale, TPDF-dithered at 16 bits.
struct Quantiser {
    bits: u16,
    rng: fastrand::Rng,
    i16s: Vec<i16>,
    i32s: Vec<i32>,
}

impl Quantiser {
    fn new(bits: u16) -> Quantiser {
        Quantiser {
            bits,
            // A fixed seed: the same input gives the same file.
            rng: fastrand::Rng::with_seed(0x5eed),
            i16s: Vec::new(),
            i32s: Vec::new(),
        }
    }

    fn run(&mut self, block: &[f32]) {
        if self.bits == 16 {
            self.i16s.clear();
            let rng = &mut self.rng;
            self.i16s.extend(block.iter().map(|x| {
                // Two uniform values in [0, 1) make a triangular dither of ±1 LSB.
                let dither = rng.f32() - rng.f32();
                to_int(*x, 32_768.0, dither) as i16
            }));
        } else {
            self.i32s.clear();
            self.i32s
                .extend(block.iter().map(|x| to_int(*x, 8_388_608.0, 0.0)));
        }
    }
}

/// `x` in [-1, 1] scaled to `full` and rounded, clipped to [-full, full - 1]. NaN becomes 0.
fn to_int(x: f32, full: f32, dither: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x };
    (x * full + dither).round().clamp(-full, full - 1.0) as i32
}

/// `.<name>.<pid>-<n>.part` beside `target`: hidden, unique, in the same folder (so the move
/// into place is a link, not a copy).
fn temp_path(target: &Path) -> Result<PathBuf, FormatError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FormatError::Spec(format!("{} has no file name", target.display())))?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(target.with_file_name(format!(".{name}.{}-{n}.part", std::process::id())))
}

/// Moves `temp` to `target` without replacing a file there: a hard link fails if the name is
/// taken. On a file system without hard links (exFAT, FAT32 USB sticks) a checked rename,
/// whose window is only the check.
fn place(temp: &Path, target: &Path) -> Result<(), FormatError> {
    match std::fs::hard_link(temp, target) {
        Ok(()) => std::fs::remove_file(temp).map_err(io(temp))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(FormatError::Exists(target.to_path_buf()));
        }
        Err(_) => {
            if target.symlink_metadata().is_ok() {
                return Err(FormatError::Exists(target.to_path_buf()));
            }
            std::fs::rename(temp, target).map_err(io(target))?;
        }
    }
    if let Some(dir) = target.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}
