//! How long an MP3 file plays, from its frame headers (no decoding): what the completeness check
//! compares with the track's `full_duration`, so that a preview or a cut file never passes.
//!
//! Invariant: only a run of valid, back-to-back MPEG audio Layer III frame headers counts; a
//! leading ID3v2 tag is skipped; the walk stops at the first byte that is not a frame.

/// Seconds of audio in `data`, and the number of frames.
pub fn duration(data: &[u8]) -> (f64, u64) {
    let mut at = id3v2_len(data);
    let (mut secs, mut frames) = (0.0, 0u64);
    while let Some((len, samples, rate)) = data.get(at..at + 4).and_then(frame) {
        if at + len > data.len() {
            break;
        }
        secs += f64::from(samples) / f64::from(rate);
        frames += 1;
        at += len;
    }
    (secs, frames)
}

fn id3v2_len(data: &[u8]) -> usize {
    match data {
        [b'I', b'D', b'3', _, _, flags, a, b, c, d, ..] => {
            let size = [*a, *b, *c, *d]
                .iter()
                .fold(0usize, |n, x| (n << 7) | usize::from(x & 0x7f));
            10 + size + if flags & 0x10 != 0 { 10 } else { 0 }
        }
        _ => 0,
    }
}

/// A Layer III frame header: (frame length in bytes, samples, sample rate).
fn frame(h: &[u8]) -> Option<(usize, u32, u32)> {
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    let layer = (h[1] >> 1) & 3; // 1 = Layer III
    if version == 1 || layer != 1 {
        return None;
    }
    let (bitrate_i, rate_i, padding) = (h[2] >> 4, (h[2] >> 2) & 3, u32::from((h[2] >> 1) & 1));
    const V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let kbps = *if version == 3 { &V1 } else { &V2 }.get(usize::from(bitrate_i))?;
    let base = *[44100u32, 48000, 32000].get(usize::from(rate_i))?;
    let rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    if kbps == 0 {
        return None;
    }
    let (samples, factor) = if version == 3 { (1152, 144) } else { (576, 72) };
    let len = (factor * kbps * 1000 / rate + padding) as usize;
    Some((len, samples, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_after_an_id3_tag_and_junk_ends_the_walk() {
        // MPEG-1 Layer III, 128 kbps, 44.1 kHz, no padding: 417-byte frames of 1152 samples.
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x00]);
        let mut data = b"ID3\x03\x00\x00\x00\x00\x00\x05hello".to_vec();
        for _ in 0..100 {
            data.extend_from_slice(&frame);
        }
        data.extend_from_slice(b"TAG junk");
        let (secs, frames) = duration(&data);
        assert_eq!(frames, 100);
        assert!((secs - 100.0 * 1152.0 / 44100.0).abs() < 1e-9);
        assert_eq!(duration(b"not an mp3 at all").1, 0);
    }
}
