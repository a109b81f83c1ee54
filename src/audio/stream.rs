//! Which of a track's transcodings the native engine fetches, decided from the listing alone.
//!
//! Invariants: the choice is a pure function of the track's [`Media`] and the configured
//! preference; only the layouts the native engine speaks are ever chosen (AAC in HLS, MP3
//! progressive, MP3 in HLS); a track with clear streams but none of those (e.g. only HLS Opus)
//! is [`Choice::Unsupported`], which is the one case `engine = "auto"` hands to yt-dlp.

pub use crate::config::Prefer;
use crate::model::{Media, Stream};

/// What the native engine can do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// HLS of fragmented-MP4 AAC segments behind an `#EXT-X-MAP` init segment.
    AacHls,
    /// One MP3 file, fetched with ranged GETs.
    Mp3Progressive,
    /// HLS of MP3 segments (no init segment): their concatenation is the MP3 file.
    Mp3Hls,
}

impl Layout {
    /// The file extension of what this layout becomes.
    pub fn extension(self) -> &'static str {
        match self {
            Layout::AacHls => "m4a",
            Layout::Mp3Progressive | Layout::Mp3Hls => "mp3",
        }
    }

    fn of(s: &Stream) -> Option<Layout> {
        let mime = s.mime_type.to_ascii_lowercase();
        let aac = mime.starts_with("audio/mp4") && (mime.contains("mp4a") || !mime.contains(';'));
        match s.protocol.as_str() {
            "hls" if aac || s.preset.starts_with("aac_") => Some(Layout::AacHls),
            "hls" if mime.starts_with("audio/mpeg") => Some(Layout::Mp3Hls),
            "progressive" if mime.starts_with("audio/mpeg") => Some(Layout::Mp3Progressive),
            _ => None,
        }
    }

    fn rank(self, prefer: Prefer) -> u8 {
        match (prefer, self) {
            (Prefer::Aac, Layout::AacHls) | (Prefer::Mp3, Layout::Mp3Progressive) => 0,
            (Prefer::Aac, Layout::Mp3Progressive) | (Prefer::Mp3, Layout::Mp3Hls) => 1,
            (Prefer::Aac, Layout::Mp3Hls) | (Prefer::Mp3, Layout::AacHls) => 2,
        }
    }
}

/// The native engine's verdict on a track's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    /// The best stream it speaks, and its layout.
    Native(&'a Stream, Layout),
    /// Clear streams, but none it speaks: named for the error (e.g. `hls audio/ogg`).
    Unsupported(String),
}

/// The best stream of `media` for `prefer`: `aac_160k` before other AAC presets, then by
/// layout rank, then in SoundCloud's order.
pub fn choose(media: &Media, prefer: Prefer) -> Choice<'_> {
    let best = media
        .streams
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Layout::of(s).map(|l| (l.rank(prefer), s.preset != "aac_160k", i, s, l))
        })
        .min_by_key(|(rank, not_160k, i, _, _)| (*rank, *not_160k, *i));
    match best {
        Some((_, _, _, s, layout)) => Choice::Native(s, layout),
        None => Choice::Unsupported(
            media
                .streams
                .iter()
                .map(|s| format!("{} {}", s.protocol, s.mime_type))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(protocol: &str, mime: &str, preset: &str) -> Stream {
        Stream {
            url: format!("https://api-v2.soundcloud.com/media/x/{preset}/stream/{protocol}"),
            protocol: protocol.into(),
            mime_type: mime.into(),
            preset: preset.into(),
        }
    }

    const AAC: &str = "audio/mp4; codecs=\"mp4a.40.2\"";
    const OPUS: &str = "audio/ogg; codecs=\"opus\"";

    #[test]
    fn the_best_stream_is_chosen_per_preference() {
        let aac = s("hls", AAC, "aac_160k");
        let aac96 = s("hls", AAC, "aac_96k");
        let prog = s("progressive", "audio/mpeg", "mp3_1_0");
        let hls_mp3 = s("hls", "audio/mpeg", "mp3_1_0");
        let opus = s("hls", OPUS, "opus_0_0");
        type Case<'a> = (Vec<&'a Stream>, Prefer, Option<(&'a Stream, Layout)>);
        #[rustfmt::skip]
        let table: Vec<Case<'_>> = vec![
            (vec![&aac], Prefer::Aac, Some((&aac, Layout::AacHls))),
            (vec![&hls_mp3, &prog, &aac], Prefer::Aac, Some((&aac, Layout::AacHls))),
            (vec![&aac96, &aac], Prefer::Aac, Some((&aac, Layout::AacHls))),
            (vec![&aac, &hls_mp3, &prog], Prefer::Mp3, Some((&prog, Layout::Mp3Progressive))),
            (vec![&aac, &hls_mp3], Prefer::Mp3, Some((&hls_mp3, Layout::Mp3Hls))),
            (vec![&hls_mp3, &prog], Prefer::Aac, Some((&prog, Layout::Mp3Progressive))),
            (vec![&opus, &hls_mp3], Prefer::Aac, Some((&hls_mp3, Layout::Mp3Hls))),
            (vec![&opus], Prefer::Aac, None),
            (vec![&opus], Prefer::Mp3, None),
        ];
        for (streams, prefer, want) in table {
            let media = Media {
                streams: streams.into_iter().cloned().collect(),
                track_authorization: None,
            };
            let got = choose(&media, prefer);
            match want {
                Some((stream, layout)) => {
                    assert_eq!(got, Choice::Native(stream, layout), "{media:?} {prefer:?}")
                }
                None => assert!(
                    matches!(got, Choice::Unsupported(ref w) if w.contains("opus")),
                    "{got:?}"
                ),
            }
        }
    }
}
