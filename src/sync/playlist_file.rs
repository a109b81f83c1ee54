//! The playlist file: after a sync, `<playlist folder>/<playlist name>.m3u8` lists the
//! playlist's downloaded tracks in SoundCloud's order, so that a player or DJ application opens
//! the playlist as it is on SoundCloud (extended M3U, UTF-8, paths relative to the file).
//!
//! Invariants: written only after a complete listing (a partial one would drop tracks from the
//! list) and only when this run downloads; replaced atomically; a track is listed only when its
//! file exists; a track stored once in another playlist's folder is listed by its path there;
//! a track that left the playlist leaves the list, and its file stays. The file listed is the
//! first of `download.formats`: its copy when that is on disk, else the original.

use super::Run;
use crate::download::sanitize_component;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One line pair of the file.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) title: String,
    pub(crate) artist: String,
    pub(crate) duration_ms: Option<u64>,
}

impl Run<'_> {
    /// Writes the playlist file; a failure is logged, never the sync's: the audio and Notion
    /// are what the run is for.
    pub(super) fn write_playlist_file(&self, complete: bool) {
        if !complete || !self.downloads_on || !self.engine.config.download.m3u {
            return;
        }
        let entries = match self.playlist_entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(playlist = %self.pl.name, "cannot read the playlist for its .m3u8: {e}");
                return;
            }
        };
        let file = self
            .dest_dir
            .join(format!("{}.m3u8", sanitize_component(&self.pl.name)));
        let text = render(&self.pl.name, &entries, &self.dest_dir);
        let written = std::fs::create_dir_all(&self.dest_dir)
            .and_then(|()| crate::util::write_atomically(&file, text.as_bytes(), 0o644));
        if let Err(e) = written {
            tracing::warn!(playlist = %self.pl.name, "cannot write {}: {e}", file.display());
        }
    }

    /// The members in playlist order that have a file on disk.
    fn playlist_entries(&self) -> Result<Vec<Entry>, crate::state::StateError> {
        let listed = self.engine.config.download.library.listed();
        let store = self.store();
        let Some(ps) = store.state.playlists.get(&self.pl.name) else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for key in &ps.members {
            let Some(ts) = store.state.tracks.get(key)? else {
                continue;
            };
            let Some(path) = ts.download_path.as_ref().filter(|p| p.is_file()) else {
                continue;
            };
            // A copy that could not be made (an undecodable file) leaves the original listed.
            let path = crate::audio::library::copy_path(path, listed)
                .filter(|c| c.is_file())
                .unwrap_or_else(|| path.clone());
            out.push(Entry {
                path,
                title: ts.title.clone(),
                artist: ts.artist.clone(),
                duration_ms: ts.duration_ms,
            });
        }
        Ok(out)
    }
}

/// The extended M3U text of `entries`, with paths relative to `dir` (the file's folder).
pub(crate) fn render(name: &str, entries: &[Entry], dir: &Path) -> String {
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let mut text = format!("#EXTM3U\n#PLAYLIST:{}\n", clean(name));
    for e in entries {
        let secs = e.duration_ms.map_or(-1, |ms| ((ms + 500) / 1000) as i64);
        let path = pathdiff::diff_paths(&e.path, dir).unwrap_or_else(|| e.path.clone());
        let _ = writeln!(
            text,
            "#EXTINF:{secs},{} - {}",
            clean(&e.artist),
            clean(&e.title)
        );
        let _ = writeln!(text, "{}", path.display());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_listed_in_order_with_paths_relative_to_the_file() {
        let e = |p: &str, title: &str, ms: Option<u64>| Entry {
            path: PathBuf::from(p),
            title: title.into(),
            artist: "Band".into(),
            duration_ms: ms,
        };
        let text = render(
            "Okra Picks",
            &[
                e("/music/Okra Picks/Band - B [2].m4a", "B", Some(183_400)),
                e("/music/Night Drive/Band - A [1].m4a", "A\nline", None),
            ],
            Path::new("/music/Okra Picks"),
        );
        assert_eq!(
            text,
            "#EXTM3U\n#PLAYLIST:Okra Picks\n\
             #EXTINF:183,Band - B\nBand - B [2].m4a\n\
             #EXTINF:-1,Band - A line\n../Night Drive/Band - A [1].m4a\n"
        );
    }
}
