//! The remux against real AAC: the fake CDN's HLS (init + fMP4 segments of a real encoding)
//! becomes a standard `.m4a` that a player reads back (symphonia) as long as the source.

use super::remux::Remuxer;
use mp4_atom::{Any, Decode, Header, Moov};
use playlistd_fakes::soundcloud::aac_hls;
use playlistd_fakes::soundcloud::hls::aac_frame_count;

pub(super) fn remux(duration_ms: u64) -> (tempfile::TempDir, std::path::PathBuf, usize) {
    let hls = aac_hls(duration_ms);
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Remuxer::new(&hls.init, &tmp.path().join("samples.raw")).unwrap();
    for seg in &hls.segments {
        r.push_segment(seg).unwrap();
    }
    let listed: f64 = hls.durations.iter().sum();
    assert!(
        (r.duration_secs() - listed).abs() < 0.01,
        "{} vs {listed}",
        r.duration_secs()
    );
    let samples = r.samples();
    let out = tmp.path().join("out.m4a");
    r.finish(&out).unwrap();
    assert!(
        !tmp.path().join("samples.raw").exists(),
        "the raw samples are removed"
    );
    (tmp, out, samples)
}

#[test]
fn hls_segments_become_a_standard_m4a_with_every_sample() {
    let (_tmp, out, samples) = remux(47_300);
    assert_eq!(samples as u64, aac_frame_count(47_300));
    let bytes = std::fs::read(&out).unwrap();
    // ftyp, then moov (no mvex: not fragmented), then one mdat.
    let mut buf = &bytes[..];
    let mut kinds = vec![];
    let mut moov = None;
    while !buf.is_empty() {
        let before = buf;
        let h = Header::decode(&mut buf).unwrap();
        kinds.push(h.kind.to_string());
        let size = h.size.unwrap();
        if h.kind.to_string() == "moov" {
            let mut whole = &before[..before.len() - buf.len() + size];
            if let Any::Moov(m) = Any::decode(&mut whole).unwrap() {
                moov = Some(m);
            }
        }
        buf = &buf[size..];
    }
    assert_eq!(kinds, ["ftyp", "moov", "mdat"]);
    let moov: Moov = moov.unwrap();
    assert!(moov.mvex.is_none());
    let stbl = &moov.trak[0].mdia.minf.stbl;
    let stsz = match &stbl.stsz.samples {
        mp4_atom::StszSamples::Different { sizes } => sizes.len(),
        mp4_atom::StszSamples::Identical { count, .. } => *count as usize,
    };
    assert_eq!(stsz, samples);
    assert_eq!(
        stbl.stco.as_ref().unwrap().entries.len(),
        5,
        "one chunk per segment"
    );
}

#[test]
fn the_remuxed_file_plays_as_long_as_the_source() {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    let (_tmp, out, _) = remux(21_000);
    let mss = MediaSourceStream::new(
        Box::new(std::fs::File::open(&out).unwrap()),
        Default::default(),
    );
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            Default::default(),
        )
        .unwrap();
    let track = format.default_track(TrackType::Audio).unwrap();
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let mut dec = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .unwrap();
    let mut frames = 0;
    while let Some(p) = format.next_packet().unwrap() {
        frames += dec.decode(&p).unwrap().frames();
    }
    let secs = frames as f64 / 44_100.0;
    assert!((secs - 21.0).abs() < 0.1, "{secs}");
}

#[test]
fn an_init_segment_of_another_codec_is_unsupported_not_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let mut init = aac_hls(1_000).init;
    // The sample entry's four-character code, `mp4a`, becomes one the remuxer does not speak.
    let at = init.windows(4).position(|w| w == b"mp4a").unwrap();
    init[at..at + 4].copy_from_slice(b"Opus");
    let err = Remuxer::new(&init, &tmp.path().join("raw"))
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            super::remux::RemuxError::Unsupported(_) | super::remux::RemuxError::Broken(_)
        ),
        "{err}"
    );
}
