//! A streaming PCM reader over a downloaded file (`.m4a`/`.mp4` AAC-LC, fragmented MP4 too,
//! and `.mp3`), for the DJ-format copies and the tempo/key analysis that share one pass.
//!
//! Invariants:
//! - the reader yields the source's exact length: symphonia 0.6 ignores MP4 edit lists
//!   (reference audio.md §4), so the AAC priming (the edit's `media_time`) and the last
//!   frame's padding (the edit's `segment_duration`) are trimmed here, from the `moov` read
//!   with `mp4-atom`; MP3 gapless trimming (LAME/Xing delay and padding) is symphonia's own,
//!   switched on only when the file has a LAME tag, since without one symphonia's length is a
//!   bitrate estimate that could cut real audio;
//! - whatever cannot be decoded (another codec, HE-AAC, several channels beyond stereo, a
//!   corrupt packet) is [`DecodeError::Unsupported`], so the caller records "cannot decode"
//!   once instead of retrying;
//! - memory stays flat: one decoded packet is held at a time, never the whole track.

use mp4_atom::{Atom, Header, Moov, ReadAtom, ReadFrom};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not something this reader decodes (codec, profile, layout, or damaged data): record
    /// "cannot decode" and move on.
    #[error("cannot decode: {0}")]
    Unsupported(String),
    /// Reading the file failed (it may be retried).
    #[error("reading the audio file: {0}")]
    Io(#[from] std::io::Error),
}

/// A `moov` larger than this is not an audio file's (a 1-hour AAC track's is about 1 MiB).
const MAX_MOOV_BYTES: u64 = 64 << 20;

/// Frames to drop at the start and, when known, how many to yield in all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Trim {
    skip: u64,
    length: Option<u64>,
}

pub struct PcmReader {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    rate: u32,
    channels: u16,
    /// Frames still to drop (the priming), then frames still to yield (if the length is known).
    skip: u64,
    remaining: Option<u64>,
    hint: Option<u64>,
    packets: u64,
    yielded: u64,
    buf: Vec<f32>,
}

/// Opens `path` and prepares to decode its first audio track.
pub fn open(path: &Path) -> Result<PcmReader, DecodeError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let is_mp4 = matches!(ext.as_str(), "m4a" | "mp4" | "m4b");
    let edit = if is_mp4 {
        mp4_trim(&mut BufReader::new(File::open(path)?))?
    } else {
        None
    };
    let mut hint = Hint::new();
    hint.with_extension(&ext);
    let mss = MediaSourceStream::new(Box::new(File::open(path)?), Default::default());
    let format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| unsupported("container", e))?;
    PcmReader::new(format, edit)
}

impl PcmReader {
    fn new(format: Box<dyn FormatReader>, edit: Option<Trim>) -> Result<PcmReader, DecodeError> {
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| DecodeError::Unsupported("no audio track".into()))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| DecodeError::Unsupported("no audio codec parameters".into()))?
            .clone();
        let mut opts = AudioDecoderOptions::default();
        // symphonia trims MP3 delay/padding itself when the LAME tag gave them (`delay` is set
        // only then); otherwise its end is an estimate, so nothing is trimmed.
        opts.gapless = track.delay.is_some();
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &opts)
            .map_err(|e| unsupported("codec", e))?;
        let rate = params
            .sample_rate
            .filter(|r| *r > 0)
            .ok_or_else(|| DecodeError::Unsupported("no sample rate".into()))?;
        let channels = params
            .channels
            .as_ref()
            .map(|c| c.count())
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| DecodeError::Unsupported("no channel layout".into()))?;
        let trim = edit.unwrap_or_default();
        let hint = trim
            .length
            .or_else(|| track.num_frames.filter(|n| *n > 0))
            .map(|n| n.saturating_sub(if trim.length.is_some() { 0 } else { trim.skip }));
        Ok(PcmReader {
            track_id: track.id,
            format,
            decoder,
            rate,
            channels,
            skip: trim.skip,
            remaining: trim.length,
            hint,
            packets: 0,
            yielded: 0,
            buf: Vec::new(),
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The track's length in frames after trimming, when the container says it (exact for an
    /// MP4 with an edit list and an MP3 with a Xing/LAME tag; an estimate for a bare CBR MP3).
    pub fn frames_hint(&self) -> Option<u64> {
        self.hint
    }

    /// The next block of interleaved samples, `None` at the end. Blocks are one packet's worth
    /// (1024 or 1152 frames), shorter at the trimmed edges, never empty.
    pub fn next_block(&mut self) -> Result<Option<&[f32]>, DecodeError> {
        let ch = usize::from(self.channels);
        let (start, end) = loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return self.end(),
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return self.end();
                }
                Err(SymphoniaError::IoError(e)) => return Err(DecodeError::Io(e)),
                Err(e) => return Err(unsupported("demuxing", e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            self.packets += 1;
            let decoded = self
                .decoder
                .decode(&packet)
                .map_err(|e| DecodeError::Unsupported(format!("packet {}: {e}", self.packets)))?;
            if decoded.spec().rate() != self.rate || decoded.spec().channels().count() != ch {
                return Err(DecodeError::Unsupported(
                    "the stream changes rate or channels midway".into(),
                ));
            }
            decoded.copy_to_vec_interleaved(&mut self.buf);
            let frames = (self.buf.len() / ch) as u64;
            let drop = self.skip.min(frames);
            self.skip -= drop;
            let mut keep = frames - drop;
            if let Some(left) = self.remaining.as_mut() {
                keep = keep.min(*left);
                *left -= keep;
            }
            if keep > 0 {
                self.yielded += keep;
                let start = drop as usize * ch;
                break (start, start + keep as usize * ch);
            }
        };
        Ok(Some(&self.buf[start..end]))
    }

    /// The end of the stream: a file that gave no audio at all is one this reader cannot
    /// decode, not a silent track.
    fn end(&self) -> Result<Option<&[f32]>, DecodeError> {
        if self.yielded == 0 {
            return Err(DecodeError::Unsupported(format!(
                "no audio in {} packets",
                self.packets
            )));
        }
        Ok(None)
    }
}

fn unsupported(what: &str, e: SymphoniaError) -> DecodeError {
    DecodeError::Unsupported(format!("{what}: {e}"))
}

/// The trim an MP4's edit list asks for, from its `moov` (wherever it is in the file). `None`
/// when there is no edit list or it cannot be read: symphonia may still decode the file, only
/// untrimmed.
fn mp4_trim<R: Read + Seek>(file: &mut R) -> Result<Option<Trim>, DecodeError> {
    loop {
        let header = match <Option<Header>>::read_from(file) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => return Ok(None),
        };
        let Some(size) = header.size else {
            // Only the last box may run to the end of the file; `moov` was not before it.
            if header.kind == Moov::KIND {
                return Ok(read_moov(&header, file));
            }
            return Ok(None);
        };
        if header.kind == Moov::KIND {
            if size as u64 > MAX_MOOV_BYTES {
                return Err(DecodeError::Unsupported(format!("a moov of {size} bytes")));
            }
            return Ok(read_moov(&header, &mut file.take(size as u64)));
        }
        file.seek(SeekFrom::Current(size as i64))?;
    }
}

fn read_moov<R: Read>(header: &Header, body: &mut R) -> Option<Trim> {
    let moov = Moov::read_atom(header, body).ok()?;
    let movie_ts = u64::from(moov.mvhd.timescale);
    let trak = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"soun"))?;
    let media_ts = u64::from(trak.mdia.mdhd.timescale);
    let elst = trak.edts.as_ref()?.elst.as_ref()?;
    // Empty edits (`media_time` -1) delay the presentation; the one real edit says what of the
    // media plays.
    let edit = elst.entries.iter().find(|e| e.media_time.is_some())?;
    Some(edit_trim(
        edit.media_time.unwrap_or(0),
        edit.segment_duration,
        media_ts,
        movie_ts,
    ))
}

/// The edit in sample frames. The media timescale of an AAC track is its sample rate; the
/// segment duration is in the movie's timescale (often 1000, so the length is then known to the
/// millisecond only: rounded to the nearest frame). A duration of 0 means "to the end" (what
/// fragmented files carry).
fn edit_trim(media_time: u64, segment_duration: u64, media_ts: u64, movie_ts: u64) -> Trim {
    let length = (segment_duration > 0 && media_ts > 0 && movie_ts > 0).then(|| {
        let scaled = u128::from(segment_duration) * u128::from(media_ts);
        let half = u128::from(movie_ts) / 2;
        u64::try_from((scaled + half) / u128::from(movie_ts)).unwrap_or(u64::MAX)
    });
    Trim {
        skip: media_time,
        length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_durations_in_a_millisecond_timescale_round_to_frames() {
        let t = edit_trim(1024, 1000, 44_100, 1000);
        assert_eq!(t.skip, 1024);
        assert_eq!(t.length, Some(44_100));
        assert_eq!(edit_trim(2112, 0, 44_100, 1000).length, None);
        assert_eq!(edit_trim(0, 12_345, 44_100, 44_100).length, Some(12_345));
    }
}
