//! The bytes of the fake's streams, as SoundCloud's CDN serves them in 2026 (reference §9):
//! AAC-LC in fragmented MP4 for HLS (`aac_160k`: an `#EXT-X-MAP` init segment, then media
//! segments of about 10 s, as ffmpeg's `-hls_segment_type fmp4` makes them), and MP3 for the
//! older tracks' progressive and HLS MP3 streams. Public, so the main crate's unit tests can
//! feed a downloader or a remuxer the same bytes without a server.
//!
//! The AAC is real: the access units come from `fixtures/groove.aac` (eight bars of music in
//! A minor at 120 BPM, exactly 689 frames long, made once from the crate's own [`crate::synth`]
//! with ffmpeg, see `fixtures/README.md`), parsed out of their ADTS frames once, and tiled
//! (frame i of a track is fixture frame i mod N). The music loops seamlessly at that length, so
//! any duration decodes as a track whose tempo and key are known. The
//! boxes are written with the `mp4-atom` crate, which writes fragmented boxes (`moof`, `traf`,
//! `tfdt`, `trun`) as well as `moov`; nothing is hand-packed but the `mdat` payload.
//!
//! Invariants: everything is a pure function of the duration (and, for MP3, the track id), so
//! a test can rebuild the exact bytes a client fetched; a track of `d` ms has
//! `round(d * 44100 / 1000 / 1024)` AAC frames (at least one), cut into segments of
//! [`FRAMES_PER_SEGMENT`] frames with a shorter last one, and segment k's `tfdt` is the number of
//! samples before it, so init + segments concatenated is one continuous fragmented MP4.

use super::catalog::{FRAME_LEN, fill_audio};
use mp4_atom::{
    Audio, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a,
    Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun,
    TrunEntry, Url, esds,
};
use std::sync::LazyLock;

/// A track's HLS AAC stream: the `#EXT-X-MAP` init segment and the media segments, with each
/// segment's duration in seconds (what the playlist's `#EXTINF` says).
#[derive(Debug, Clone, PartialEq)]
pub struct HlsAudio {
    pub init: Vec<u8>,
    pub segments: Vec<Vec<u8>>,
    pub durations: Vec<f64>,
}

impl HlsAudio {
    /// `init` followed by every segment: the fragmented MP4 a client assembles.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut out = self.init.clone();
        for s in &self.segments {
            out.extend_from_slice(s);
        }
        out
    }
}

/// AAC-LC at 44.1 kHz: samples per frame (access unit), and the timescale of the track.
pub const AAC_FRAME_SAMPLES: u64 = 1024;
pub const AAC_SAMPLE_RATE: u64 = 44_100;
/// 431 frames of 1024 samples: 10.0077 s, the segment length SoundCloud's packager aims at.
pub const FRAMES_PER_SEGMENT: u64 = 431;

/// The MPEG-1 Layer III frames of the synthetic MP3 (128 kbit/s, 44.1 kHz): 417 bytes, 1152
/// samples, 26.1224 ms each; an HLS MP3 segment holds 383 of them (10.004 s).
pub const MP3_FRAME_BYTES: usize = FRAME_LEN;
const MP3_FRAME_SAMPLES: u64 = 1152;
const MP3_SAMPLE_RATE: u64 = 44_100;
pub const MP3_FRAMES_PER_SEGMENT: u64 = 383;

static FIXTURE: &[u8] = include_bytes!("../../fixtures/groove.aac");
/// The fixture cover, served as every track's artwork.
pub(super) static COVER_JPEG: &[u8] = include_bytes!("../../fixtures/cover.jpg");

/// The fixture's raw access units and the AudioSpecificConfig its ADTS headers describe.
struct Fixture {
    frames: Vec<Vec<u8>>,
    /// Object type, sampling frequency index, channel configuration (2, 4, 2 for the fixture).
    config: (u8, u8, u8),
}

static AAC: LazyLock<Fixture> = LazyLock::new(|| parse_adts(FIXTURE));

/// Splits an ADTS stream into raw access units. Each frame has a 7-byte header (9 with a CRC)
/// whose 13-bit `frame_length` counts the header too. Panics on a malformed fixture: it is
/// committed, and the tests decode what comes out.
fn parse_adts(mut data: &[u8]) -> Fixture {
    let mut frames = Vec::new();
    let mut config = None;
    while data.len() >= 7 {
        assert!(
            data[0] == 0xFF && data[1] & 0xF0 == 0xF0,
            "ADTS sync word expected"
        );
        let protection_absent = data[1] & 1 == 1;
        let header = if protection_absent { 7 } else { 9 };
        let len = (usize::from(data[3] & 0x03) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        assert!(len > header && len <= data.len(), "ADTS frame length");
        let object_type = (data[2] >> 6) + 1;
        let freq_index = (data[2] >> 2) & 0x0F;
        let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
        config.get_or_insert((object_type, freq_index, channels));
        frames.push(data[header..len].to_vec());
        data = &data[len..];
    }
    Fixture {
        frames,
        config: config.expect("the fixture has frames"),
    }
}

/// The AudioSpecificConfig of the fixture: `0x12 0x10` for AAC-LC, 44.1 kHz, stereo.
pub fn audio_specific_config() -> [u8; 2] {
    let (ot, fi, ch) = AAC.config;
    [(ot << 3) | (fi >> 1), ((fi & 1) << 7) | (ch << 3)]
}

/// How many AAC frames a track of `duration_ms` has: the duration rounded to whole frames.
pub fn aac_frame_count(duration_ms: u64) -> u64 {
    // frames = ms * 44100 / 1000 / 1024, rounded, in integers.
    let per_frame = AAC_FRAME_SAMPLES * 1000;
    ((duration_ms * AAC_SAMPLE_RATE + per_frame / 2) / per_frame).max(1)
}

/// Frames of each segment: [`FRAMES_PER_SEGMENT`] each, the last one shorter.
fn segment_frames(total: u64, per_segment: u64) -> Vec<u64> {
    let mut out = vec![per_segment; (total / per_segment) as usize];
    if !total.is_multiple_of(per_segment) {
        out.push(total % per_segment);
    }
    out
}

/// The segment durations (seconds) of a track's HLS AAC stream, without building it.
pub fn aac_durations(duration_ms: u64) -> Vec<f64> {
    segment_frames(aac_frame_count(duration_ms), FRAMES_PER_SEGMENT)
        .into_iter()
        .map(|f| (f * AAC_FRAME_SAMPLES) as f64 / AAC_SAMPLE_RATE as f64)
        .collect()
}

/// A track's whole HLS AAC stream (see the module comment).
pub fn aac_hls(duration_ms: u64) -> HlsAudio {
    let count = aac_durations(duration_ms).len();
    HlsAudio {
        init: aac_init(),
        segments: (0..count)
            .map(|k| aac_segment(duration_ms, k).expect("k < count"))
            .collect(),
        durations: aac_durations(duration_ms),
    }
}

/// The init segment: `ftyp` + `moov` with one AAC track and an empty sample table (the
/// samples are in the fragments), and `mvex`/`trex` announcing fragments. The same for every
/// duration, as a fragmented file's `moov` carries no duration.
pub fn aac_init() -> Vec<u8> {
    let mut out = Vec::new();
    let ftyp = Ftyp {
        major_brand: b"iso5".into(),
        minor_version: 512,
        compatible_brands: vec![b"iso5".into(), b"iso6".into(), b"mp41".into()],
    };
    ftyp.encode(&mut out).expect("ftyp encodes");
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: 2,
            ..Default::default()
        },
        mvex: Some(Mvex {
            trex: vec![Trex {
                track_id: 1,
                default_sample_description_index: 1,
                default_sample_duration: AAC_FRAME_SAMPLES as u32,
                ..Default::default()
            }],
            ..Default::default()
        }),
        trak: vec![aac_trak()],
        ..Default::default()
    };
    moov.encode(&mut out).expect("moov encodes");
    out
}

fn aac_trak() -> Trak {
    let (object_type, freq_index, chan_conf) = AAC.config;
    let esds = Esds {
        es_desc: esds::EsDescriptor {
            es_id: 1,
            dec_config: esds::DecoderConfig {
                // MPEG-4 Audio in an audio stream.
                object_type_indication: 0x40,
                stream_type: 5,
                max_bitrate: 160_000,
                avg_bitrate: 160_000,
                dec_specific: Some(esds::DecoderSpecific {
                    profile: object_type,
                    freq_index,
                    chan_conf,
                    raw: audio_specific_config().to_vec(),
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let mp4a = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(chan_conf),
            sample_size: 16,
            sample_rate: (AAC_SAMPLE_RATE as u16).into(),
        },
        esds,
        btrt: None,
        taic: None,
    };
    let stbl = Stbl {
        stsd: Stsd {
            codecs: vec![mp4a.into()],
        },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    };
    let minf = Minf {
        smhd: Some(Smhd::default()),
        dinf: Dinf {
            dref: Dref {
                entries: vec![
                    Url {
                        location: String::new(),
                    }
                    .into(),
                ],
            },
        },
        stbl,
        ..Default::default()
    };
    Trak {
        tkhd: Tkhd {
            track_id: 1,
            alternate_group: 1,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: AAC_SAMPLE_RATE as u32,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: b"soun".into(),
                name: "SoundHandler".into(),
            },
            minf,
        },
        ..Default::default()
    }
}

/// Media segment `k` (0-based) of a track of `duration_ms`: `moof` + `mdat`, or `None` past the
/// last one. Frame i of the track is fixture frame i mod N.
pub fn aac_segment(duration_ms: u64, k: usize) -> Option<Vec<u8>> {
    let frames = segment_frames(aac_frame_count(duration_ms), FRAMES_PER_SEGMENT);
    let count = *frames.get(k)?;
    let first = k as u64 * FRAMES_PER_SEGMENT;
    let fixture = &AAC.frames;
    let units: Vec<&[u8]> = (first..first + count)
        .map(|i| fixture[(i % fixture.len() as u64) as usize].as_slice())
        .collect();
    let moof = |data_offset| Moof {
        mfhd: Mfhd {
            sequence_number: k as u32 + 1,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: 1,
                default_sample_duration: Some(AAC_FRAME_SAMPLES as u32),
                // Every AAC frame is a sync sample (sample_depends_on = 2).
                default_sample_flags: Some(0x0200_0000),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: first * AAC_FRAME_SAMPLES,
            }),
            trun: vec![Trun {
                data_offset: Some(data_offset),
                samples: units
                    .iter()
                    .map(|u| TrunEntry {
                        size: Some(u.len() as u32),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
                    .into(),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the start of the moof (default-base-is-moof) to the first
    // byte of the mdat payload; its own size does not depend on its value.
    let mut probe = Vec::new();
    moof(0).encode(&mut probe).expect("moof encodes");
    let mut out = Vec::new();
    moof(probe.len() as i32 + 8)
        .encode(&mut out)
        .expect("moof encodes");
    Mdat {
        data: units.concat(),
    }
    .encode(&mut out)
    .expect("mdat encodes");
    Some(out)
}

/// How many frames the synthetic MP3 of a track of `duration_ms` has (26.1224 ms each).
pub fn mp3_frame_count(duration_ms: u64) -> u64 {
    // frames = ms * 44100 / 1000 / 1152, rounded, in integers.
    let per_frame = MP3_FRAME_SAMPLES * 1000;
    ((duration_ms * MP3_SAMPLE_RATE + per_frame / 2) / per_frame).max(1)
}

/// The synthetic MP3 of a track sized to its duration: the bytes of the web permalink's audio
/// (`fill_audio`: frame headers every 417 bytes, the track id in the first frame), as many
/// frames as the duration holds. What the CDN serves for `progressive` and, cut in segments,
/// for HLS MP3.
pub fn mp3_bytes(track_id: u64, duration_ms: u64) -> Vec<u8> {
    let mut v = vec![0; mp3_frame_count(duration_ms) as usize * MP3_FRAME_BYTES];
    fill_audio(track_id, 0, &mut v);
    v
}

/// The byte ranges and durations (seconds) of the HLS MP3 segments of a track.
pub fn mp3_segments(duration_ms: u64) -> Vec<(std::ops::Range<usize>, f64)> {
    let mut start = 0;
    segment_frames(mp3_frame_count(duration_ms), MP3_FRAMES_PER_SEGMENT)
        .into_iter()
        .map(|f| {
            let len = f as usize * MP3_FRAME_BYTES;
            start += len;
            let secs = (f * MP3_FRAME_SAMPLES) as f64 / MP3_SAMPLE_RATE as f64;
            (start - len..start, secs)
        })
        .collect()
}
