//! Streaming sample-rate conversion for the DJ copies (rubato's synchronous FFT resampler:
//! the ratio is fixed, and it is both the fastest and a high-quality choice, rubato's docs,
//! "Choosing a resampler").
//!
//! Invariants: the output is exactly `round(frames_in × out_rate / in_rate)` frames, aligned
//! with the input (the resampler's start-up delay is dropped, its tail flushed with silence);
//! memory is one chunk in and one chunk out.

use super::FormatError;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames per FFT call: rubato's suggested starting point, a few ms of audio.
const CHUNK: usize = 1024;

pub struct Stream {
    fft: Fft<f32>,
    channels: usize,
    in_rate: u64,
    out_rate: u64,
    /// Input waiting for a full chunk (interleaved).
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Start-up delay frames still to drop.
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl Stream {
    pub fn new(in_rate: u32, out_rate: u32, channels: u16) -> Result<Stream, FormatError> {
        let ch = usize::from(channels);
        let fft = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            CHUNK,
            ch,
            FixedSync::Input,
        )
        .map_err(|e| FormatError::Resample(e.to_string()))?;
        let out = vec![0.0; fft.output_frames_max() * ch];
        Ok(Stream {
            to_trim: fft.output_delay(),
            fft,
            channels: ch,
            in_rate: u64::from(in_rate),
            out_rate: u64::from(out_rate),
            pending: Vec::with_capacity(CHUNK * ch),
            out,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Resamples `block` (whole frames), handing finished output to `sink`.
    pub fn push(
        &mut self,
        mut block: &[f32],
        sink: &mut dyn FnMut(&[f32]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        self.frames_in += (block.len() / self.channels) as u64;
        let full = CHUNK * self.channels;
        while !block.is_empty() {
            let take = (full - self.pending.len()).min(block.len());
            self.pending.extend_from_slice(&block[..take]);
            block = &block[take..];
            if self.pending.len() == full {
                self.process(None, None, sink)?;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Flushes the last partial chunk and the filter's tail, to the exact output length.
    pub fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let expected = (self.frames_in * self.out_rate + self.in_rate / 2) / self.in_rate;
        let partial = self.pending.len() / self.channels;
        self.pending.resize(CHUNK * self.channels, 0.0);
        let mut partial_len = Some(partial);
        while self.frames_out < expected {
            self.process(partial_len, Some(expected), sink)?;
            partial_len = Some(0);
        }
        Ok(())
    }

    fn process(
        &mut self,
        partial_len: Option<usize>,
        limit: Option<u64>,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let fail = |e: &dyn std::fmt::Display| FormatError::Resample(e.to_string());
        let input =
            InterleavedSlice::new(&self.pending[..], self.channels, CHUNK).map_err(|e| fail(&e))?;
        let capacity = self.out.len() / self.channels;
        let mut output = InterleavedSlice::new_mut(&mut self.out[..], self.channels, capacity)
            .map_err(|e| fail(&e))?;
        let indexing = partial_len.map(|n| Indexing {
            partial_len: Some(n),
            ..Indexing::new()
        });
        let (_, written) = self
            .fft
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| fail(&e))?;
        let trimmed = self.to_trim.min(written);
        self.to_trim -= trimmed;
        let mut frames = (written - trimmed) as u64;
        if let Some(limit) = limit {
            frames = frames.min(limit - self.frames_out);
        }
        self.frames_out += frames;
        let from = trimmed * self.channels;
        sink(&self.out[from..from + frames as usize * self.channels])
    }
}
