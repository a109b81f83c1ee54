//! Reads a downloaded file back the way a player would, with symphonia (a crate of its own, not
//! playlistd's code): container, codec, and how long it plays, by decoding every packet.

use std::path::Path;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

#[derive(Debug)]
pub struct Played {
    /// symphonia's short name of the container, e.g. `isomp4`, `mp3`.
    pub container: &'static str,
    pub aac: bool,
    pub sample_rate: u32,
    pub seconds: f64,
    /// Packets the decoder refused.
    pub errors: usize,
}

pub fn play(path: &Path) -> Played {
    let src = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mss = MediaSourceStream::new(Box::new(src), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{} does not open as audio: {e}", path.display()));
    let container = format.format_info().short_name;
    let track = format
        .default_track(TrackType::Audio)
        .expect("an audio track");
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .expect("audio codec parameters")
        .clone();
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .expect("a decoder for the codec");
    let (mut frames, mut errors) = (0usize, 0usize);
    while let Some(packet) = format.next_packet().expect("packets read") {
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => frames += buf.frames(),
            Err(_) => errors += 1,
        }
    }
    let sample_rate = params.sample_rate.expect("a sample rate");
    Played {
        container,
        aac: params.codec == symphonia::core::codecs::audio::well_known::CODEC_ID_AAC,
        sample_rate,
        seconds: frames as f64 / f64::from(sample_rate),
        errors,
    }
}
