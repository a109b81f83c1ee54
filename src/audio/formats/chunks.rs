//! The top-level chunks of a WAV (`RIFF`, little-endian) or AIFF (`FORM`, big-endian) file,
//! and replacing its tag chunks without touching the audio: neither hound nor aifc edits a
//! finished file, and `id3` writes only the `ID3 ` chunk (reference audio.md §4), while WAV
//! wants a RIFF `LIST/INFO` chunk too (§5).
//!
//! Invariants:
//! - the sample data is never read or rewritten: old tag chunks at the end of the file are cut
//!   off, old tag chunks before the audio become `JUNK` (skipped by every reader), and the new
//!   ones are appended, so a re-tag costs the size of the tags;
//! - the root size is patched last, and every chunk keeps the pad byte that makes the next one
//!   start at an even offset.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("not a {0} file (no {1} header)")]
    NotContainer(&'static str, &'static str),
    #[error("the {0} file would pass 4 GiB with its tags")]
    TooLarge(&'static str),
    #[error("a {0} chunk of {1} bytes does not fit in a chunk")]
    ChunkTooLarge(String, usize),
    #[error("the {0} file is cut short: its last chunk claims {1} bytes more than there are")]
    Truncated(&'static str, u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which container: it decides the byte order and the root chunk's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Riff,
    Aiff,
}

impl Family {
    fn root(self) -> &'static [u8; 4] {
        match self {
            Family::Riff => b"RIFF",
            Family::Aiff => b"FORM",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Riff => "WAV",
            Family::Aiff => "AIFF",
        }
    }

    pub fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Family::Riff => v.to_le_bytes(),
            Family::Aiff => v.to_be_bytes(),
        }
    }

    fn read_u32(self, b: [u8; 4]) -> u32 {
        match self {
            Family::Riff => u32::from_le_bytes(b),
            Family::Aiff => u32::from_be_bytes(b),
        }
    }
}

/// One top-level chunk: where its header starts, its id, its size (without the pad byte), and
/// for a `LIST` the list type (`INFO`, `adtl`, …).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offset: u64,
    pub id: [u8; 4],
    pub size: u32,
    pub list_type: Option<[u8; 4]>,
}

impl Chunk {
    /// Where the next chunk starts.
    pub fn end(&self) -> u64 {
        self.offset + 8 + u64::from(self.size) + u64::from(self.size % 2)
    }

    fn body(&self) -> u64 {
        self.offset + 8
    }
}

/// The chunks after the root header (`RIFF`/`FORM` + size + form type). A chunk that claims to
/// run past the end of the file is listed as it claims and ends the listing: a truncated tail
/// is the caller's to cut.
pub fn list(file: &mut File, family: Family) -> Result<Vec<Chunk>, ChunkError> {
    let len = file.metadata()?.len();
    let mut head = [0u8; 12];
    file.seek(SeekFrom::Start(0))?;
    if file.read_exact(&mut head).is_err() || &head[..4] != family.root() {
        return Err(ChunkError::NotContainer(
            family.name(),
            as_str(family.root()),
        ));
    }
    let mut out = Vec::new();
    let mut at = 12u64;
    while at + 8 <= len {
        let mut h = [0u8; 8];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut h)?;
        let id = [h[0], h[1], h[2], h[3]];
        let size = family.read_u32([h[4], h[5], h[6], h[7]]);
        let mut chunk = Chunk {
            offset: at,
            id,
            size,
            list_type: None,
        };
        if &id == b"LIST" && size >= 4 {
            let mut t = [0u8; 4];
            file.read_exact(&mut t)?;
            chunk.list_type = Some(t);
        }
        at = chunk.end();
        out.push(chunk);
    }
    Ok(out)
}

/// Reads one chunk's body.
pub fn read_body(file: &mut File, chunk: &Chunk) -> Result<Vec<u8>, ChunkError> {
    file.seek(SeekFrom::Start(chunk.body()))?;
    let mut body = Vec::with_capacity(chunk.size as usize);
    file.take(u64::from(chunk.size)).read_to_end(&mut body)?;
    Ok(body)
}

/// Replaces every chunk that `is_tag` picks with `new` (id, body) appended at the end, then
/// patches the root size.
pub fn replace_tags(
    file: &mut File,
    family: Family,
    is_tag: impl Fn(&Chunk) -> bool,
    new: &[([u8; 4], Vec<u8>)],
) -> Result<(), ChunkError> {
    let chunks = list(file, family)?;
    // The tag chunks that end the file are cut off; the others are turned into JUNK.
    let tail_from = chunks.iter().rposition(|c| !is_tag(c)).map_or(0, |i| i + 1);
    for c in chunks[..tail_from].iter().filter(|c| is_tag(c)) {
        file.seek(SeekFrom::Start(c.offset))?;
        file.write_all(b"JUNK")?;
    }
    let cut = chunks.get(tail_from).map_or_else(
        || chunks.last().map_or(12, Chunk::end),
        |first_tag| first_tag.offset,
    );
    let len = file.metadata()?.len();
    if cut > len + 1 {
        return Err(ChunkError::Truncated(family.name(), cut - len));
    }
    // set_len also adds the pad byte a writer left out after an odd-sized last chunk.
    file.set_len(cut)?;
    file.seek(SeekFrom::Start(cut))?;
    let mut tail = Vec::new();
    for (id, body) in new {
        let size = u32::try_from(body.len())
            .map_err(|_| ChunkError::ChunkTooLarge(as_str(id).into(), body.len()))?;
        tail.extend_from_slice(id);
        tail.extend_from_slice(&family.u32_bytes(size));
        tail.extend_from_slice(body);
        if size % 2 == 1 {
            tail.push(0);
        }
    }
    file.write_all(&tail)?;
    let total = cut + tail.len() as u64;
    let root = u32::try_from(total - 8).map_err(|_| ChunkError::TooLarge(family.name()))?;
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&family.u32_bytes(root))?;
    Ok(())
}

fn as_str(id: &[u8; 4]) -> &str {
    std::str::from_utf8(id).unwrap_or("????")
}
