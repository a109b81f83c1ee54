//! The basic tags every native download gets: title, artist, album (the playlist), the track's
//! URL as comment, and the cover. iTunes atoms in `.m4a` (`mp4ameta`), ID3v2.3 in `.mp3` (`id3`),
//! the version DJ software reads best (reference audio.md §5).
//!
//! Invariant: tags are written into the file in the staging folder, before it is moved into
//! place, so a file in the music folder is always tagged and complete.

use super::NativeError;
use super::stream::Layout;
use std::path::Path;

pub struct Tags<'a> {
    pub title: &'a str,
    pub artist: &'a str,
    pub album: &'a str,
    pub comment: &'a str,
    /// JPEG bytes.
    pub cover: Option<&'a [u8]>,
}

pub fn write(path: &Path, layout: Layout, tags: &Tags<'_>) -> Result<(), NativeError> {
    match layout {
        Layout::AacHls => write_m4a(path, tags),
        Layout::Mp3Progressive | Layout::Mp3Hls => write_mp3(path, tags),
    }
}

fn write_m4a(path: &Path, t: &Tags<'_>) -> Result<(), NativeError> {
    let fail = |e: mp4ameta::Error| NativeError::Tag(format!("M4A tags: {e}"));
    let mut tag = mp4ameta::Tag::read_from_path(path).map_err(fail)?;
    tag.set_title(t.title);
    tag.set_artist(t.artist);
    tag.set_album(t.album);
    tag.set_comment(t.comment);
    if let Some(cover) = t.cover {
        tag.set_artwork(mp4ameta::Img::jpeg(cover.to_vec()));
    }
    tag.write_to_path(path).map_err(fail)
}

fn write_mp3(path: &Path, t: &Tags<'_>) -> Result<(), NativeError> {
    use id3::TagLike;
    let mut tag = id3::Tag::new();
    tag.set_title(t.title);
    tag.set_artist(t.artist);
    tag.set_album(t.album);
    tag.add_frame(id3::frame::Comment {
        lang: "eng".into(),
        description: String::new(),
        text: t.comment.into(),
    });
    if let Some(cover) = t.cover {
        tag.add_frame(id3::frame::Picture {
            mime_type: "image/jpeg".into(),
            picture_type: id3::frame::PictureType::CoverFront,
            description: String::new(),
            data: cover.to_vec(),
        });
    }
    tag.write_to_path(path, id3::Version::Id3v23)
        .map_err(|e| NativeError::Tag(format!("ID3 tags: {e}")))
}
