//! The tags of every file playlistd writes or backfills, the way DJ software reads them
//! (reference audio.md §5): ID3v2.3 in `.mp3`, an `ID3 ` chunk in AIFF, an `id3 ` chunk plus a
//! RIFF `LIST/INFO` chunk in WAV (players disagree on which one they read), and the iTunes atoms
//! in `.m4a` (`mp4ameta`).
//!
//! Fields: title TIT2/©nam/INAM, artist TPE1/©ART/IART, album (the playlist) TALB/©alb/IPRD,
//! genre TCON/©gen/IGNR, the track URL as the comment COMM/©cmt/ICMT, the cover APIC/covr, the
//! tempo TBPM/tmpo as an integer (the ID3 spec and iTunes both say integer), the key TKEY /
//! `----:com.apple.iTunes:initialkey` in short form ("Am"), and the Camelot code twice in ID3: a
//! COMM with description "Camelot" (Mixed In Key keeps Camelot in comments, and a described
//! comment stays apart from the URL one) and a TXXX "Camelot" (what the replaced system wrote,
//! so files it made keep one place for it). ICMT holds the URL only, not BPM or key: a tool that
//! reads the comment back as a link must get a link.
//!
//! Invariants:
//! - [`Mode::Replace`] is for a file playlistd just made: the tag is built fresh;
//!   [`Mode::FillMissing`] is for a person's file: only absent fields are added, and tempo and
//!   key already there stay unless `overwrite_analysis`;
//! - tagging AIFF and WAV never rewrites the audio (see `formats::chunks`);
//! - the container comes from the file extension; any other extension is an error naming it.

use super::formats::chunks::{self, Chunk, ChunkError, Family};
use id3::TagLike;
use std::path::Path;

#[derive(Debug, Clone, Copy, Default)]
pub struct Tags<'a> {
    pub title: &'a str,
    pub artist: &'a str,
    pub album: &'a str,
    pub genre: Option<&'a str>,
    /// The track's URL.
    pub comment: &'a str,
    /// JPEG bytes.
    pub cover: Option<&'a [u8]>,
    /// BPM to one decimal; written rounded to an integer.
    pub tempo: Option<f64>,
    /// TKEY form: "Am", "F#m", "Eb".
    pub key_short: Option<&'a str>,
    /// "8A".
    pub key_camelot: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Replace,
    FillMissing { overwrite_analysis: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    M4a,
    Mp3,
    Aiff,
    Wav,
}

impl Container {
    pub fn from_path(path: &Path) -> Result<Container, TagError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "m4a" | "mp4" => Ok(Container::M4a),
            "mp3" => Ok(Container::Mp3),
            "aif" | "aiff" => Ok(Container::Aiff),
            "wav" => Ok(Container::Wav),
            _ => Err(TagError::Extension(ext)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("no tag writer for the extension {0:?}")]
    Extension(String),
    #[error("ID3 tags: {0}")]
    Id3(#[from] id3::Error),
    #[error("M4A tags: {0}")]
    Mp4(#[from] mp4ameta::Error),
    #[error("tag chunks: {0}")]
    Chunks(#[from] ChunkError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const CAMELOT: &str = "Camelot";

/// Tags the file at `path`, the container picked from its extension.
pub fn write(path: &Path, tags: &Tags<'_>, mode: Mode) -> Result<(), TagError> {
    write_as(path, Container::from_path(path)?, tags, mode)
}

/// Tags the file at `path` as `container` (for a temporary file whose name says nothing).
pub fn write_as(
    path: &Path,
    container: Container,
    tags: &Tags<'_>,
    mode: Mode,
) -> Result<(), TagError> {
    match container {
        Container::M4a => write_m4a(path, tags, mode),
        Container::Mp3 => {
            let (tag, version) = id3_tag(existing_id3(path, mode)?, tags, mode);
            Ok(tag.write_to_path(path, version)?)
        }
        Container::Aiff | Container::Wav => write_chunked(path, container, tags, mode),
    }
}

/// The tag already in the file, for [`Mode::FillMissing`]; `None` if there is none.
fn existing_id3(path: &Path, mode: Mode) -> Result<Option<id3::Tag>, TagError> {
    if mode == Mode::Replace {
        return Ok(None);
    }
    match id3::Tag::read_from_path(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if matches!(e.kind, id3::ErrorKind::NoTag) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The policy of one field: whether a value already in the file stays.
fn keeps(mode: Mode, analysis: bool) -> bool {
    match mode {
        Mode::Replace => false,
        Mode::FillMissing { overwrite_analysis } => !(analysis && overwrite_analysis),
    }
}

fn bpm_text(tempo: Option<f64>) -> Option<String> {
    tempo
        .filter(|t| t.is_finite() && *t >= 0.5 && *t < 10_000.0)
        .map(|t| format!("{}", t.round() as u32))
}

/// The ID3 tag to write, and its version: v2.3 for a new tag (what DJ software reads best),
/// the file's own version when filling in a v2.3/v2.4 tag.
fn id3_tag(base: Option<id3::Tag>, t: &Tags<'_>, mode: Mode) -> (id3::Tag, id3::Version) {
    let version = match base.as_ref().map(id3::Tag::version) {
        Some(id3::Version::Id3v24) => id3::Version::Id3v24,
        _ => id3::Version::Id3v23,
    };
    let mut tag = base.unwrap_or_default();
    let keep = keeps(mode, false);
    let keep_analysis = keeps(mode, true);
    let mut text = |id: &str, value: Option<&str>, keep: bool| {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && !(keep && tag.get(id).is_some())
        {
            tag.set_text(id, v);
        }
    };
    text("TIT2", Some(t.title), keep);
    text("TPE1", Some(t.artist), keep);
    text("TALB", Some(t.album), keep);
    text("TCON", t.genre, keep);
    text("TBPM", bpm_text(t.tempo).as_deref(), keep_analysis);
    text("TKEY", t.key_short, keep_analysis);
    put_comment(&mut tag, "", Some(t.comment), keep);
    put_comment(&mut tag, CAMELOT, t.key_camelot, keep_analysis);
    if let Some(code) = t.key_camelot.filter(|c| !c.is_empty())
        && !(keep_analysis && tag.extended_texts().any(|x| x.description == CAMELOT))
    {
        tag.add_frame(id3::frame::ExtendedText {
            description: CAMELOT.into(),
            value: code.into(),
        });
    }
    if let Some(cover) = t.cover
        && !(keep && tag.pictures().next().is_some())
    {
        tag.remove_picture_by_type(id3::frame::PictureType::CoverFront);
        tag.add_frame(id3::frame::Picture {
            mime_type: "image/jpeg".into(),
            picture_type: id3::frame::PictureType::CoverFront,
            description: String::new(),
            data: cover.to_vec(),
        });
    }
    (tag, version)
}

fn put_comment(tag: &mut id3::Tag, description: &str, value: Option<&str>, keep: bool) {
    let Some(text) = value.filter(|v| !v.is_empty()) else {
        return;
    };
    if keep && tag.comments().any(|c| c.description == description) {
        return;
    }
    tag.remove_comment(Some(description), None);
    tag.add_frame(id3::frame::Comment {
        lang: "eng".into(),
        description: description.into(),
        text: text.into(),
    });
}

fn write_m4a(path: &Path, t: &Tags<'_>, mode: Mode) -> Result<(), TagError> {
    let mut tag = mp4ameta::Tag::read_from_path(path)?;
    let keep = keeps(mode, false);
    let keep_analysis = keeps(mode, true);
    fn fill(present: bool, value: Option<&str>, keep: bool) -> Option<&str> {
        value.filter(|v| !(v.is_empty() || keep && present))
    }
    if let Some(v) = fill(tag.title().is_some(), Some(t.title), keep) {
        tag.set_title(v);
    }
    if let Some(v) = fill(tag.artist().is_some(), Some(t.artist), keep) {
        tag.set_artist(v);
    }
    if let Some(v) = fill(tag.album().is_some(), Some(t.album), keep) {
        tag.set_album(v);
    }
    if let Some(v) = fill(tag.genre().is_some(), t.genre, keep) {
        tag.set_genre(v);
    }
    if let Some(v) = fill(tag.comment().is_some(), Some(t.comment), keep) {
        tag.set_comment(v);
    }
    let bpm = bpm_text(t.tempo).and_then(|b| b.parse::<u16>().ok());
    if let Some(bpm) = bpm
        && !(keep_analysis && tag.bpm().is_some())
    {
        tag.set_bpm(bpm);
    }
    let key_ident = mp4ameta::FreeformIdent::new_borrowed("com.apple.iTunes", "initialkey");
    let has_key = tag.strings_of(&key_ident).next().is_some();
    if let Some(key) = fill(has_key, t.key_short, keep_analysis) {
        tag.set_data(key_ident, mp4ameta::Data::Utf8(key.into()));
    }
    if let Some(cover) = t.cover
        && !(keep && tag.artwork().is_some())
    {
        tag.set_artwork(mp4ameta::Img::jpeg(cover.to_vec()));
    }
    Ok(tag.write_to_path(path)?)
}

/// AIFF and WAV: the ID3 chunk (and for WAV the INFO list) replaced, the audio untouched.
fn write_chunked(
    path: &Path,
    container: Container,
    t: &Tags<'_>,
    mode: Mode,
) -> Result<(), TagError> {
    let family = if container == Container::Wav {
        Family::Riff
    } else {
        Family::Aiff
    };
    let (tag, version) = id3_tag(existing_id3(path, mode)?, t, mode);
    let mut id3_bytes = Vec::new();
    tag.write_to(&mut id3_bytes, version)?;
    let mut file = std::fs::File::options().read(true).write(true).open(path)?;
    let mut new = Vec::new();
    if family == Family::Riff {
        let old_info = match mode {
            Mode::Replace => Vec::new(),
            Mode::FillMissing { .. } => read_info(&mut file)?,
        };
        new.push((*b"LIST", info_chunk(&old_info, t, keeps(mode, false))));
        new.push((*b"id3 ", id3_bytes));
    } else {
        new.push((*b"ID3 ", id3_bytes));
    }
    chunks::replace_tags(&mut file, family, is_tag_chunk, &new)?;
    file.sync_all()?;
    Ok(())
}

fn is_tag_chunk(c: &Chunk) -> bool {
    c.id.eq_ignore_ascii_case(b"id3 ") || (&c.id == b"LIST" && c.list_type == Some(*b"INFO"))
}

/// One `LIST/INFO` entry: its id (`INAM`, …) and text.
type InfoEntry = ([u8; 4], Vec<u8>);

/// The sub-chunks of the file's `LIST/INFO` chunks: (id, body without its NUL).
fn read_info(file: &mut std::fs::File) -> Result<Vec<InfoEntry>, TagError> {
    let mut out = Vec::new();
    let lists: Vec<Chunk> = chunks::list(file, Family::Riff)?
        .into_iter()
        .filter(|c| &c.id == b"LIST" && c.list_type == Some(*b"INFO"))
        .collect();
    for c in lists {
        let body = chunks::read_body(file, &c)?;
        let mut rest = body.get(4..).unwrap_or_default();
        while rest.len() >= 8 {
            let id = [rest[0], rest[1], rest[2], rest[3]];
            let size = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let Some(value) = rest.get(8..8 + size) else {
                break;
            };
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            out.push((id, text.to_vec()));
            rest = rest.get(8 + size + size % 2..).unwrap_or_default();
        }
    }
    Ok(out)
}

/// The body of a `LIST/INFO` chunk: the old entries (kept when `keep`, else those we do not
/// write), ours, each a NUL-terminated string padded to an even size.
fn info_chunk(old: &[InfoEntry], t: &Tags<'_>, keep: bool) -> Vec<u8> {
    let ours: [(&[u8; 4], Option<&str>); 5] = [
        (b"INAM", Some(t.title)),
        (b"IART", Some(t.artist)),
        (b"IPRD", Some(t.album)),
        (b"IGNR", t.genre),
        (b"ICMT", Some(t.comment)),
    ];
    let mut entries: Vec<InfoEntry> = Vec::new();
    for (id, value) in old {
        let replaced = ours
            .iter()
            .any(|(o, v)| *o == id && v.is_some_and(|v| !v.is_empty()));
        if (keep || !replaced) && !value.is_empty() {
            entries.push((*id, value.clone()));
        }
    }
    for (id, value) in ours {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && !entries.iter().any(|(e, _)| e == id)
        {
            entries.push((*id, v.as_bytes().to_vec()));
        }
    }
    let mut body = b"INFO".to_vec();
    for (id, value) in entries {
        let size = value.len() + 1;
        body.extend_from_slice(&id);
        body.extend_from_slice(&(size as u32).to_le_bytes());
        body.extend_from_slice(&value);
        body.push(0);
        if size % 2 == 1 {
            body.push(0);
        }
    }
    body
}
