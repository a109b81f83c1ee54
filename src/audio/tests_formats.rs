//! Decoding, the DJ copies and their tags, on inputs the tests make themselves: the fake CDN's
//! real AAC (remuxed with `remux`, given the edit list an ffmpeg-made file carries), the fake's
//! MP3, and synthesized PCM. No ffmpeg, no fixtures.

use super::decode::{self, DecodeError};
use super::formats::{Job, Kind, Spec};
use super::remux::Remuxer;
use super::tags::{self, Mode, TagError, Tags};
use mp4_atom::{Atom, Decode, DecodeAtom, Edts, Elst, ElstEntry, Encode, Header, Moov};
use playlistd_fakes::soundcloud::aac_hls;
use playlistd_fakes::soundcloud::hls::aac_frame_count;
use std::path::{Path, PathBuf};

/// Starts like a JPEG and holds an MP3 frame sync, which a careless scan would take for audio.
const COVER: &[u8] =
    b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\xFF\xFB\x90\x64 not really a picture \xFF\xD9";

fn tags() -> Tags<'static> {
    Tags {
        title: "Night Drive",
        artist: "Someone",
        album: "Warm-up",
        genre: Some("House"),
        comment: "https://soundcloud.com/someone/night-drive",
        cover: Some(COVER),
        tempo: Some(127.6),
        key_short: Some("Am"),
        key_camelot: Some("8A"),
    }
}

/// The fake's init segment with the edit list of an ffmpeg encoding (`priming` samples), the
/// movie timescale set to `movie_ts`.
fn init_with_edit(priming: u64, movie_ts: u32) -> Vec<u8> {
    let init = aac_hls(1_000).init;
    let mut out = Vec::new();
    let mut buf = &init[..];
    while !buf.is_empty() {
        let start = init.len() - buf.len();
        let h = Header::decode(&mut buf).unwrap();
        let size = h.size.unwrap();
        if h.kind == Moov::KIND {
            let mut moov = Moov::decode_atom(&h, &mut &buf[..size]).unwrap();
            moov.mvhd.timescale = movie_ts;
            moov.trak[0].edts = Some(Edts {
                elst: Some(Elst {
                    entries: vec![ElstEntry {
                        segment_duration: 0,
                        media_time: Some(priming),
                        media_rate: 1.into(),
                    }],
                }),
            });
            moov.encode(&mut out).unwrap();
        } else {
            let end = init.len() - buf.len() + size;
            out.extend_from_slice(&init[start..end]);
        }
        buf = &buf[size..];
    }
    out
}

fn remuxed(dir: &Path, duration_ms: u64, priming: u64, movie_ts: u32) -> PathBuf {
    let hls = aac_hls(duration_ms);
    let mut r = Remuxer::new(&init_with_edit(priming, movie_ts), &dir.join("raw")).unwrap();
    for seg in &hls.segments {
        r.push_segment(seg).unwrap();
    }
    let out = dir.join("in.m4a");
    r.finish(&out).unwrap();
    out
}

fn decoded_frames(path: &Path) -> (u64, Option<u64>) {
    let mut r = decode::open(path).unwrap();
    let ch = u64::from(r.channels());
    let hint = r.frames_hint();
    let mut frames = 0;
    while let Some(block) = r.next_block().unwrap() {
        assert!(!block.is_empty());
        frames += block.len() as u64 / ch;
    }
    (frames, hint)
}

#[test]
fn a_remuxed_aac_decodes_to_its_exact_length_priming_and_padding_trimmed() {
    let tmp = tempfile::tempdir().unwrap();
    let total = aac_frame_count(12_000) * 1024;
    // A movie timescale equal to the sample rate: the edit's duration is exact.
    let path = remuxed(tmp.path(), 12_000, 2112, 44_100);
    assert_eq!(decoded_frames(&path), (total - 2112, Some(total - 2112)));
    // A millisecond timescale (what the fake's packager and ffmpeg write): the length is the
    // edit's duration, known to the millisecond, rounded to the nearest frame.
    let tmp = tempfile::tempdir().unwrap();
    let path = remuxed(tmp.path(), 12_000, 1024, 1000);
    let ms = (total - 1024) * 1000 / 44_100;
    let expected = (ms * 44_100 + 500) / 1000;
    assert_eq!(decoded_frames(&path).0, expected);
    assert!(expected.abs_diff(total - 1024) <= 44);
}

#[test]
fn the_fragmented_file_decodes_with_its_priming_trimmed() {
    let tmp = tempfile::tempdir().unwrap();
    let hls = aac_hls(6_000);
    let mut bytes = init_with_edit(1024, 1000);
    for s in &hls.segments {
        bytes.extend_from_slice(s);
    }
    let path = tmp.path().join("frag.mp4");
    std::fs::write(&path, bytes).unwrap();
    // A fragmented file's edit says "to the end": only the priming is known.
    assert_eq!(
        decoded_frames(&path).0,
        aac_frame_count(6_000) * 1024 - 1024
    );
}

#[test]
fn what_cannot_be_decoded_is_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.m4a");
    std::fs::write(&junk, b"this is not an mp4 file at all, just words").unwrap();
    assert!(matches!(
        decode::open(&junk).err(),
        Some(DecodeError::Unsupported(_))
    ));
    // HE-AAC (audio object type 5, SBR), which symphonia does not decode: the fake's
    // AudioSpecificConfig with its object type changed.
    let mut bytes = aac_hls(2_000).concatenated();
    let lc = playlistd_fakes::soundcloud::hls::audio_specific_config();
    let esds = bytes.windows(4).position(|w| w == b"esds").unwrap();
    let at = esds + bytes[esds..].windows(2).position(|w| w == lc).unwrap();
    bytes[at] = (5 << 3) | (lc[0] & 0x07);
    let he = tmp.path().join("he.mp4");
    std::fs::write(&he, bytes).unwrap();
    let err = decode::open(&he).err().expect("HE-AAC refused");
    assert!(matches!(err, DecodeError::Unsupported(_)), "{err}");
    // A file with a track but not one packet.
    let empty = tmp.path().join("empty.mp4");
    std::fs::write(&empty, aac_hls(2_000).init).unwrap();
    let err = match decode::open(&empty) {
        Err(e) => e,
        Ok(mut r) => r.next_block().expect_err("no audio is an error"),
    };
    assert!(matches!(err, DecodeError::Unsupported(_)), "{err}");
}

/// A stereo test signal: a 1 kHz sine on the left, a slow ramp on the right.
fn signal(frames: usize, rate: f64) -> Vec<f32> {
    let mut v = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f64 / rate;
        v.push((0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as f32);
        v.push((i as f64 / frames as f64 * 1.6 - 0.8) as f32);
    }
    v
}

/// Pushes `input` in uneven blocks to an AIFF and a WAV copy, commits them with `tags()`.
fn convert(dir: &Path, input: &[f32], spec: Spec) -> (PathBuf, PathBuf) {
    let (aif, wav) = (dir.join("t.aiff"), dir.join("t.wav"));
    let outputs = [(Kind::Aiff, aif.clone()), (Kind::Wav, wav.clone())];
    let mut job = Job::create(&outputs, 44_100, 2, spec).unwrap();
    for block in input.chunks(777 * 2) {
        job.push(block).unwrap();
    }
    let written = job.finish().unwrap().commit(&tags()).unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[1].bytes, std::fs::metadata(&wav).unwrap().len());
    (aif, wav)
}

fn read_wav(path: &Path) -> (u32, Vec<i32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    (rate, r.samples::<i32>().map(Result::unwrap).collect())
}

fn read_aiff(path: &Path) -> (f64, Vec<i32>) {
    let mut r =
        aifc::AifcReader::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    let rate = r.info().sample_rate;
    let samples = r
        .samples()
        .unwrap()
        .map(|s| match s.unwrap() {
            aifc::Sample::I16(v) => i32::from(v),
            aifc::Sample::I24(v) => v,
            other => panic!("{other:?}"),
        })
        .collect();
    (rate, samples)
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn copies_at_16_and_24_bits_have_the_exact_length_and_the_samples() {
    let input = signal(10_001, 44_100.0);
    for (bits, full, tolerance) in [(16u16, 32_768.0, 1.5), (24, 8_388_608.0, 0.5)] {
        let tmp = tempfile::tempdir().unwrap();
        let spec = Spec { bits, rate: None };
        let (aif, wav) = convert(tmp.path(), &input, spec);
        let (rate, from_wav) = read_wav(&wav);
        let (aif_rate, from_aif) = read_aiff(&aif);
        assert_eq!((rate, aif_rate), (44_100, 44_100.0));
        assert_eq!(from_wav.len(), input.len(), "{bits} bits");
        assert_eq!(from_aif.len(), input.len(), "{bits} bits");
        for (i, x) in input.iter().enumerate() {
            let want = f64::from(*x) * full;
            for got in [from_wav[i], from_aif[i]] {
                assert!(
                    (f64::from(got) - want).abs() <= tolerance,
                    "{bits} bits, sample {i}: {got} vs {want}"
                );
            }
        }
        no_temp_files(tmp.path());
    }
}

#[test]
fn full_scale_and_beyond_clip_instead_of_wrapping() {
    let tmp = tempfile::tempdir().unwrap();
    let input = [1.5f32, -1.5, 1.0, -1.0, f32::NAN, 0.0];
    let (aif, wav) = convert(
        tmp.path(),
        &input,
        Spec {
            bits: 24,
            rate: None,
        },
    );
    let want = [8_388_607, -8_388_608, 8_388_607, -8_388_608, 0, 0];
    assert_eq!(read_wav(&wav).1, want);
    assert_eq!(read_aiff(&aif).1, want);
}

#[test]
fn resampling_44100_to_48000_keeps_the_length_and_the_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = 44_100 * 2 + 333;
    let input = signal(frames, 44_100.0);
    let spec = Spec {
        bits: 24,
        rate: Some(48_000),
    };
    let (aif, wav) = convert(tmp.path(), &input, spec);
    let expected = (frames as u64 * 48_000 + 22_050) / 44_100;
    let (rate, out) = read_wav(&wav);
    assert_eq!(rate, 48_000);
    assert_eq!(out.len() as u64, expected * 2);
    assert_eq!(read_aiff(&aif).1.len() as u64, expected * 2);
    // The sine is where it should be in time (the resampler's delay is trimmed): compare the
    // middle second with the ideal 1 kHz sine at 48 kHz.
    let mut worst = 0.0f64;
    for i in 24_000..72_000 {
        let ideal = 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 48_000.0).sin();
        worst = worst.max((f64::from(out[i * 2]) / 8_388_608.0 - ideal).abs());
    }
    assert!(worst < 1e-3, "{worst}");
}

#[test]
fn copies_carry_id3_and_wav_carries_riff_info() {
    let tmp = tempfile::tempdir().unwrap();
    let (aif, wav) = convert(
        tmp.path(),
        &signal(5_000, 44_100.0),
        Spec {
            bits: 16,
            rate: None,
        },
    );
    for path in [&aif, &wav] {
        check_id3(&id3::Tag::read_from_path(path).unwrap());
    }
    let bytes = std::fs::read(&wav).unwrap();
    let at = (0..bytes.len() - 12)
        .find(|&p| &bytes[p..p + 4] == b"LIST" && &bytes[p + 8..p + 12] == b"INFO")
        .expect("a LIST/INFO chunk");
    let info = &bytes[at..];
    for (id, text) in [
        ("INAM", "Night Drive"),
        ("IART", "Someone"),
        ("IPRD", "Warm-up"),
    ] {
        let p = info.windows(4).position(|w| w == id.as_bytes()).unwrap();
        assert_eq!(&info[p + 8..p + 8 + text.len()], text.as_bytes());
    }
    assert!(
        bytes.windows(4).any(|w| w == b"id3 "),
        "the WAV id3 chunk is lowercase"
    );
    // The audio is untouched by the tags.
    assert_eq!(read_wav(&wav).1.len(), 10_000);
}

fn check_id3(tag: &id3::Tag) {
    use id3::TagLike;
    assert_eq!(tag.title(), Some("Night Drive"));
    assert_eq!(tag.artist(), Some("Someone"));
    assert_eq!(tag.album(), Some("Warm-up"));
    assert_eq!(tag.genre_parsed().as_deref(), Some("House"));
    assert_eq!(
        tag.get("TBPM").and_then(|f| f.content().text()),
        Some("128")
    );
    assert_eq!(tag.get("TKEY").and_then(|f| f.content().text()), Some("Am"));
    let comments: Vec<_> = tag
        .comments()
        .map(|c| (c.description.as_str(), c.text.as_str()))
        .collect();
    assert!(comments.contains(&("", "https://soundcloud.com/someone/night-drive")));
    assert!(comments.contains(&("Camelot", "8A")));
    assert!(
        tag.extended_texts()
            .any(|x| x.description == "Camelot" && x.value == "8A")
    );
    let pic = tag.pictures().next().unwrap();
    assert_eq!(
        (pic.mime_type.as_str(), &pic.data[..]),
        ("image/jpeg", COVER)
    );
}

#[test]
fn an_mp3_gets_id3v23_and_still_decodes_past_its_cover() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.mp3");
    std::fs::write(&path, playlistd_fakes::soundcloud::mp3_bytes(7, 3_000)).unwrap();
    let untagged = decoded_frames(&path).0;
    tags::write(&path, &tags(), Mode::Replace).unwrap();
    let tag = id3::Tag::read_from_path(&path).unwrap();
    assert_eq!(tag.version(), id3::Version::Id3v23);
    check_id3(&tag);
    assert_eq!(decoded_frames(&path).0, untagged);
    assert_eq!(
        untagged,
        playlistd_fakes::soundcloud::hls::mp3_frame_count(3_000) * 1152
    );
}

#[test]
fn an_m4a_gets_the_itunes_atoms() {
    let tmp = tempfile::tempdir().unwrap();
    let path = remuxed(tmp.path(), 3_000, 1024, 1000);
    tags::write(&path, &tags(), Mode::Replace).unwrap();
    let tag = mp4ameta::Tag::read_from_path(&path).unwrap();
    assert_eq!(tag.title(), Some("Night Drive"));
    assert_eq!(tag.artist(), Some("Someone"));
    assert_eq!(tag.album(), Some("Warm-up"));
    assert_eq!(tag.genre(), Some("House"));
    assert_eq!(
        tag.comment(),
        Some("https://soundcloud.com/someone/night-drive")
    );
    assert_eq!(tag.bpm(), Some(128));
    let key = mp4ameta::FreeformIdent::new_borrowed("com.apple.iTunes", "initialkey");
    assert_eq!(tag.strings_of(&key).next(), Some("Am"));
    assert_eq!(tag.artwork().map(|a| a.data.to_vec()), Some(COVER.to_vec()));
    // Still the same audio.
    let total = aac_frame_count(3_000) * 1024;
    assert!(decoded_frames(&path).0.abs_diff(total - 1024) <= 44);
}

#[test]
fn fill_missing_keeps_tempo_and_key_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let (aif, wav) = convert(
        tmp.path(),
        &signal(2_000, 44_100.0),
        Spec {
            bits: 16,
            rate: None,
        },
    );
    let m4a = remuxed(tmp.path(), 2_000, 1024, 1000);
    let theirs = Tags {
        title: "Their Title",
        tempo: Some(100.0),
        key_short: Some("C"),
        ..Tags::default()
    };
    let fill = Mode::FillMissing {
        overwrite_analysis: false,
    };
    for path in [&aif, &wav, &m4a] {
        tags::write(path, &theirs, Mode::Replace).unwrap();
        tags::write(path, &tags(), fill).unwrap();
    }
    for path in [&aif, &wav] {
        use id3::TagLike;
        let tag = id3::Tag::read_from_path(path).unwrap();
        assert_eq!(tag.title(), Some("Their Title"));
        assert_eq!(tag.artist(), Some("Someone"), "a missing field is added");
        assert_eq!(
            tag.get("TBPM").and_then(|f| f.content().text()),
            Some("100")
        );
        assert_eq!(tag.get("TKEY").and_then(|f| f.content().text()), Some("C"));
        assert_eq!(tag.pictures().count(), 1);
    }
    let tag = mp4ameta::Tag::read_from_path(&m4a).unwrap();
    assert_eq!((tag.title(), tag.bpm()), (Some("Their Title"), Some(100)));
    let overwrite = Mode::FillMissing {
        overwrite_analysis: true,
    };
    tags::write(&wav, &tags(), overwrite).unwrap();
    tags::write(&m4a, &tags(), overwrite).unwrap();
    let tag = id3::Tag::read_from_path(&wav).unwrap();
    use id3::TagLike;
    assert_eq!(
        tag.get("TBPM").and_then(|f| f.content().text()),
        Some("128")
    );
    assert_eq!(
        mp4ameta::Tag::read_from_path(&m4a).unwrap().bpm(),
        Some(128)
    );
    // Re-tagging twice left one id3 chunk and one INFO list, and the audio as it was.
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(
        bytes
            .windows(4)
            .filter(|w| w.eq_ignore_ascii_case(b"id3 "))
            .count(),
        1
    );
    assert_eq!(bytes.windows(4).filter(|w| w == b"INFO").count(), 1);
    assert_eq!(read_wav(&wav).1.len(), 4_000);
    assert_eq!(read_aiff(&aif).1.len(), 4_000);
}

#[test]
fn an_existing_destination_is_skipped_and_nothing_is_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (aif, wav) = (tmp.path().join("a.aiff"), tmp.path().join("a.wav"));
    std::fs::write(&aif, b"a person's file").unwrap();
    let outputs = [(Kind::Aiff, aif.clone()), (Kind::Wav, wav.clone())];
    let spec = Spec {
        bits: 16,
        rate: None,
    };
    let mut job = Job::create(&outputs, 44_100, 2, spec).unwrap();
    assert_eq!(job.skipped(), std::slice::from_ref(&aif));
    job.push(&signal(100, 44_100.0)).unwrap();
    let written = job.finish().unwrap().commit(&tags()).unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].path, wav);
    assert_eq!(std::fs::read(&aif).unwrap(), b"a person's file");
    no_temp_files(tmp.path());

    // Dropped before commit, at either stage: no file, no temporary file.
    std::fs::remove_file(&wav).unwrap();
    let mut job = Job::create(&outputs, 44_100, 2, spec).unwrap();
    job.push(&signal(100, 44_100.0)).unwrap();
    drop(job);
    let pending = Job::create(&outputs, 44_100, 2, spec)
        .unwrap()
        .finish()
        .unwrap();
    drop(pending);
    assert!(!wav.exists());
    no_temp_files(tmp.path());
}

#[test]
fn an_unknown_extension_is_named() {
    let err = tags::write(Path::new("/tmp/x.flac"), &tags(), Mode::Replace).unwrap_err();
    assert!(
        matches!(&err, TagError::Extension(e) if e == "flac"),
        "{err}"
    );
    assert!(err.to_string().contains("flac"));
}
