//! Fragmented MP4 (an HLS init segment plus `moof`/`mdat` media segments) into one standard
//! `.m4a`: `ftyp`, a `moov` with ordinary sample tables, one `mdat`. This is what yt-dlp gets
//! from ffmpeg (`-c copy -f mp4`), done with `mp4-atom` (which, unlike the `mp4` crate, reads
//! fragmented input correctly: reference audio.md §4).
//!
//! Invariants:
//! - memory stays flat: each segment's samples go to a raw file as it arrives, and only the
//!   sample tables (8 bytes a sample) are kept; the output is written in one pass;
//! - only AAC (`mp4a`) with one audio track is accepted; anything else is
//!   [`RemuxError::Unsupported`], so `engine = "auto"` can hand it to yt-dlp;
//! - the output's sample count and durations are exactly the segments'; the edit list (the
//!   AAC priming) is kept, with its duration made to fit.

use mp4_atom::{
    Atom, Co64, Decode, DecodeAtom, Encode, FourCC, Ftyp, Header, Moof, Moov, Stco, Stsc,
    StscEntry, Stsz, StszSamples, Stts, SttsEntry, Trex,
};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RemuxError {
    /// Not a layout this remuxer handles (another codec, several tracks, encryption).
    #[error("unsupported MP4 layout: {0}")]
    Unsupported(String),
    /// The bytes do not read as MP4 boxes.
    #[error("broken MP4 data: {0}")]
    Broken(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn broken(e: impl std::fmt::Display) -> RemuxError {
    RemuxError::Broken(e.to_string())
}

/// One chunk of the output: a segment's samples, contiguous in `mdat`.
struct Chunk {
    samples: u32,
    bytes: u64,
}

/// A remux in progress: the init segment read, media segments pushed in order.
pub struct Remuxer {
    moov: Moov,
    trex: Option<Trex>,
    sizes: Vec<u32>,
    durations: Vec<u32>,
    chunks: Vec<Chunk>,
    raw: BufWriter<File>,
    raw_path: std::path::PathBuf,
}

impl Remuxer {
    /// Reads the init segment (`ftyp` + `moov` with `mvex`); samples go to `raw_path`.
    pub fn new(init: &[u8], raw_path: &Path) -> Result<Remuxer, RemuxError> {
        let mut moov = None;
        for (header, _, body) in boxes(init)? {
            if header.kind == Moov::KIND {
                moov = Some(Moov::decode_atom(&header, &mut &body[..]).map_err(broken)?);
            }
        }
        let moov = moov.ok_or_else(|| RemuxError::Broken("no moov in the init segment".into()))?;
        if moov.trak.len() != 1 {
            return Err(RemuxError::Unsupported(format!(
                "{} tracks",
                moov.trak.len()
            )));
        }
        let codecs = &moov.trak[0].mdia.minf.stbl.stsd.codecs;
        if !matches!(codecs.as_slice(), [mp4_atom::Codec::Mp4a(_)]) {
            return Err(RemuxError::Unsupported(
                format!("sample entry {codecs:?}")
                    .chars()
                    .take(80)
                    .collect(),
            ));
        }
        let trex = moov.mvex.as_ref().and_then(|m| m.trex.first().cloned());
        Ok(Remuxer {
            moov,
            trex,
            sizes: Vec::new(),
            durations: Vec::new(),
            chunks: Vec::new(),
            raw: BufWriter::new(
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(raw_path)?,
            ),
            raw_path: raw_path.to_path_buf(),
        })
    }

    /// Appends one media segment (`styp`/`sidx` ignored, each `moof` read with the bytes its
    /// `trun` points at).
    pub fn push_segment(&mut self, seg: &[u8]) -> Result<(), RemuxError> {
        for (header, start, body) in boxes(seg)? {
            if header.kind != Moof::KIND {
                continue;
            }
            let moof = Moof::decode_atom(&header, &mut &body[..]).map_err(broken)?;
            for traf in &moof.traf {
                self.push_traf(traf, seg, start)?;
            }
        }
        Ok(())
    }

    fn push_traf(
        &mut self,
        traf: &mp4_atom::Traf,
        seg: &[u8],
        moof_start: usize,
    ) -> Result<(), RemuxError> {
        let tfhd = &traf.tfhd;
        if tfhd.base_data_offset.is_some() {
            return Err(RemuxError::Unsupported("tfhd base_data_offset".into()));
        }
        let trex = self.trex.as_ref();
        for trun in &traf.trun {
            let at = moof_start as i64 + i64::from(trun.data_offset.unwrap_or(0));
            let (mut n, mut bytes) = (0u32, 0u64);
            for e in trun.samples.iter() {
                let size = e
                    .size
                    .or(tfhd.default_sample_size)
                    .or(trex.map(|t| t.default_sample_size));
                let duration = e
                    .duration
                    .or(tfhd.default_sample_duration)
                    .or(trex.map(|t| t.default_sample_duration));
                let (Some(size), Some(duration)) = (size, duration) else {
                    return Err(RemuxError::Broken(
                        "a sample without size or duration".into(),
                    ));
                };
                self.sizes.push(size);
                self.durations.push(duration);
                n += 1;
                bytes += u64::from(size);
            }
            let from = usize::try_from(at).map_err(broken)?;
            let data = usize::try_from(bytes)
                .ok()
                .and_then(|len| seg.get(from..from.checked_add(len)?))
                .ok_or_else(|| RemuxError::Broken("trun points past the segment".into()))?;
            self.raw.write_all(data)?;
            self.chunks.push(Chunk { samples: n, bytes });
        }
        Ok(())
    }

    /// Seconds of audio pushed so far (the media timescale's).
    pub fn duration_secs(&self) -> f64 {
        let ts = self.moov.trak[0].mdia.mdhd.timescale.max(1);
        self.durations.iter().map(|d| u64::from(*d)).sum::<u64>() as f64 / f64::from(ts)
    }

    /// How many samples (AAC frames) were pushed.
    pub fn samples(&self) -> usize {
        self.sizes.len()
    }

    /// Writes the standard MP4 to `out` and removes the raw file.
    pub fn finish(mut self, out: &Path) -> Result<(), RemuxError> {
        self.raw.flush()?;
        let payload: u64 = self.chunks.iter().map(|c| c.bytes).sum();
        let ftyp = Ftyp {
            major_brand: FourCC::new(b"M4A "),
            minor_version: 512,
            compatible_brands: [b"M4A ", b"isom", b"iso2", b"mp41"]
                .map(FourCC::new)
                .to_vec(),
        };
        let mut head = Vec::new();
        ftyp.encode(&mut head).map_err(broken)?;
        // The moov's size does not depend on the chunk offsets' values, so encode once with
        // zero offsets to learn where mdat starts, then with the real ones.
        let moov = self.standard_moov(0, payload > u64::from(u32::MAX / 2))?;
        let mut probe = Vec::new();
        moov.encode(&mut probe).map_err(broken)?;
        let mdat_header = if payload + 8 > u64::from(u32::MAX) {
            16
        } else {
            8
        };
        let data_start = (head.len() + probe.len() + mdat_header) as u64;
        let moov = self.standard_moov(data_start, payload > u64::from(u32::MAX / 2))?;
        moov.encode(&mut head).map_err(broken)?;
        let mut w = BufWriter::new(File::create(out)?);
        w.write_all(&head)?;
        if mdat_header == 16 {
            w.write_all(&1u32.to_be_bytes())?;
            w.write_all(b"mdat")?;
            w.write_all(&(payload + 16).to_be_bytes())?;
        } else {
            w.write_all(&((payload + 8) as u32).to_be_bytes())?;
            w.write_all(b"mdat")?;
        }
        let mut raw = self.raw.into_inner().map_err(|e| e.into_error())?;
        raw.seek(SeekFrom::Start(0))?;
        let copied = std::io::copy(&mut (&mut raw).take(payload), &mut w)?;
        if copied != payload {
            return Err(RemuxError::Broken("the raw samples file is short".into()));
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        drop(raw);
        let _ = std::fs::remove_file(&self.raw_path);
        Ok(())
    }

    fn standard_moov(&self, data_start: u64, wide: bool) -> Result<Moov, RemuxError> {
        let mut moov = self.moov.clone();
        moov.mvex = None;
        let total: u64 = self.durations.iter().map(|d| u64::from(*d)).sum();
        let trak = &mut moov.trak[0];
        let media_ts = u64::from(trak.mdia.mdhd.timescale.max(1));
        let movie_ts = u64::from(moov.mvhd.timescale.max(1));
        let stbl = &mut trak.mdia.minf.stbl;
        stbl.stts = Stts {
            entries: run_lengths(&self.durations),
        };
        stbl.stsz = Stsz {
            samples: StszSamples::Different {
                sizes: self.sizes.clone(),
            },
        };
        stbl.stsc = Stsc {
            entries: chunk_runs(&self.chunks),
        };
        let mut offsets = Vec::with_capacity(self.chunks.len());
        let mut at = data_start;
        for c in &self.chunks {
            offsets.push(at);
            at += c.bytes;
        }
        if wide {
            stbl.stco = None;
            stbl.co64 = Some(Co64 { entries: offsets });
        } else {
            stbl.co64 = None;
            let entries = offsets
                .into_iter()
                .map(|o| u32::try_from(o).map_err(broken))
                .collect::<Result<_, _>>()?;
            stbl.stco = Some(Stco { entries });
        }
        trak.mdia.mdhd.duration = total;
        let movie_total = total * movie_ts / media_ts;
        if let Some(elst) = trak.edts.as_mut().and_then(|e| e.elst.as_mut())
            && let [entry] = elst.entries.as_mut_slice()
        {
            let skip = entry.media_time.unwrap_or(0);
            entry.segment_duration = total.saturating_sub(skip) * movie_ts / media_ts;
        }
        trak.tkhd.duration = movie_total;
        moov.mvhd.duration = movie_total;
        Ok(moov)
    }
}

/// A top-level box: its header, where it starts, its body.
type TopBox<'a> = (Header, usize, &'a [u8]);

/// The top-level boxes of `all`.
fn boxes(all: &[u8]) -> Result<Vec<TopBox<'_>>, RemuxError> {
    let mut out = Vec::new();
    let mut data = all;
    while !data.is_empty() {
        let start = all.len() - data.len();
        let header = Header::decode(&mut data).map_err(broken)?;
        let size = header.size.unwrap_or(data.len());
        let body = data
            .get(..size)
            .ok_or_else(|| RemuxError::Broken(format!("box {} is cut short", header.kind)))?;
        data = &data[size..];
        out.push((header, start, body));
    }
    Ok(out)
}

fn run_lengths(durations: &[u32]) -> Vec<SttsEntry> {
    let mut out: Vec<SttsEntry> = Vec::new();
    for &d in durations {
        match out.last_mut() {
            Some(e) if e.sample_delta == d => e.sample_count += 1,
            _ => out.push(SttsEntry {
                sample_count: 1,
                sample_delta: d,
            }),
        }
    }
    out
}

fn chunk_runs(chunks: &[Chunk]) -> Vec<StscEntry> {
    let mut out: Vec<StscEntry> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        if out.last().is_some_and(|e| e.samples_per_chunk == c.samples) {
            continue;
        }
        out.push(StscEntry {
            first_chunk: i as u32 + 1,
            samples_per_chunk: c.samples,
            sample_description_index: 1,
        });
    }
    out
}
