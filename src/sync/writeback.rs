//! Write-back: telling a page that its track's files are on disk (`Downloaded`, the paths of
//! the original and its copies) and what the analysis measured (`Tempo`, `Key`), in one request.
//!
//! Invariants: a write-back is due only for a track with a page and a file whose page does not
//! say so yet, and is retried on a later run when it fails; the file itself is done either way.
//! A `Tempo` or `Key` the page held when it was looked up is never sent, unless
//! `notion.overwrite_analysis`. Only a fatal Notion error stops the run. `write_back` connects
//! to Notion only when called, so an unchanged playlist makes no request.

use super::pending::Pending;
use super::{Run, SyncError};
use crate::audio::analysis::Key;
use crate::audio::library::copy_path;
use crate::config::{Config, Format};
use crate::model::Track;
use crate::notion::PageFiles;
use crate::state::{Analysis, PageKept, TrackState};
use std::path::Path;

/// What a page is told of a track's files and analysis. `kept`: what the page holds of its
/// own (nothing, for a page being created); `file_told`: the page knows of the file already.
pub fn page_files(
    config: &Config,
    original: &Path,
    analysis: Option<&Analysis>,
    kept: PageKept,
    file_told: bool,
) -> PageFiles {
    let lib = &config.download.library;
    // A copy is named when it is on disk: one that could not be made is not claimed.
    let copy = |f: Format| {
        lib.formats
            .contains(&f)
            .then(|| copy_path(original, f))
            .flatten()
            .filter(|p| p.exists())
    };
    let n = &config.notion;
    let kept = if n.overwrite_analysis {
        PageKept::default()
    } else {
        kept
    };
    PageFiles {
        original: (!file_told).then(|| original.to_path_buf()),
        aiff: copy(Format::Aiff),
        wav: copy(Format::Wav),
        tempo: analysis.and_then(Analysis::tempo).filter(|_| !kept.tempo),
        key: analysis
            .and_then(Analysis::key)
            .and_then(Key::parse)
            .map(|k| k.format(n.key_notation).to_string())
            .filter(|_| !kept.key),
    }
}

impl Run<'_> {
    /// Tells a page about its track's files and analysis, as the state has them. Returns
    /// whether the page was told (a failure is retried on a later run).
    pub(super) async fn write_back(&self, t: &Track, page: &str) -> Result<bool, SyncError> {
        let files = {
            let store = self.store();
            let Some(ts) = store.state.tracks.get(&t.key)? else {
                return Ok(false);
            };
            let Some(path) = ts.download_path.as_deref() else {
                return Ok(false);
            };
            let file_told = ts.download_written_back;
            page_files(
                &self.engine.config,
                path,
                ts.analysis.as_ref(),
                ts.page_kept,
                file_told,
            )
        };
        if files == PageFiles::default() {
            // Nothing new for the page (what it holds stays): no request.
            if let Some(ts) = self.store().track_mut(&t.key)? {
                mark_written_back(ts);
            }
            return Ok(false);
        }
        let Some(sink) = self.sink().await? else {
            return Ok(false);
        };
        let told = match sink.set_downloaded(page, &files).await {
            Ok(()) => {
                if let Some(ts) = self.store().track_mut(&t.key)? {
                    mark_written_back(ts);
                }
                true
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!("could not mark {:?} as downloaded in Notion: {e}", t.title);
                false
            }
        };
        self.checkpoint(false)?;
        Ok(told)
    }

    /// Files that landed before their page existed: written back now that it does (unless
    /// the create carried the file itself).
    pub(super) async fn write_back_deferred(
        &self,
        pending: &Pending,
        deferred: Vec<u32>,
    ) -> Result<(), SyncError> {
        for id in deferred {
            let t = pending.read(id)?.track;
            let due = self.store().state.tracks.get(&t.key)?.and_then(|ts| {
                match (&ts.notion_page_id, &ts.download_path) {
                    (Some(page), Some(_)) if !ts.download_written_back => Some(page.clone()),
                    _ => None,
                }
            });
            if let Some(page) = due {
                self.write_back(&t, &page).await?;
            }
        }
        Ok(())
    }

    /// Write-backs left over from earlier runs (the file landed, the page was not told).
    pub(super) async fn write_back_leftovers(
        &self,
        pending: &Pending,
        writeback: Vec<u32>,
    ) -> Result<(), SyncError> {
        for id in writeback {
            let e = pending.read(id)?;
            if let (Some(page), Some(_)) = (&e.page_id, &e.download_path) {
                self.write_back(&e.track, page).await?;
            }
        }
        Ok(())
    }
}

/// The page holds what the state holds: the files and the analysis.
pub fn mark_written_back(ts: &mut TrackState) {
    ts.download_written_back = true;
    ts.analysis_written_back = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyNotation, LibraryConfig};

    fn config(notation: KeyNotation, overwrite: bool, formats: Vec<Format>) -> Config {
        let text = "[notion]\ndatabase = \"27ce73616c2780fbb40efefdd47d6640\"\n";
        let paths = crate::paths::Paths::for_tests(Path::new("/tmp/playlistd-test"));
        let mut c = crate::config::parse(text, Path::new("p.toml"), &paths).unwrap();
        c.notion.key_notation = notation;
        c.notion.overwrite_analysis = overwrite;
        c.download.library = LibraryConfig {
            formats,
            ..LibraryConfig::default()
        };
        c
    }

    #[test]
    fn a_page_is_told_what_it_does_not_hold_in_the_configured_notation() {
        let tmp = tempfile::tempdir().unwrap();
        let original = tmp.path().join("Band - Groove [1].m4a");
        std::fs::write(&original, b"m4a").unwrap();
        std::fs::write(original.with_extension("aiff"), b"aiff").unwrap();
        let measured = Analysis::Measured {
            tempo: Some(124.0),
            key: Some("A Minor".into()),
        };
        let both = vec![Format::Original, Format::Aiff, Format::Wav];
        let kept_tempo = PageKept {
            tempo: true,
            key: false,
        };
        let aiff = Some(original.with_extension("aiff"));
        // (notation, overwrite, kept, file told) → (original sent, tempo, key)
        let cases = [
            (
                KeyNotation::Standard,
                false,
                PageKept::default(),
                false,
                true,
                Some(124.0),
                Some("A Minor"),
            ),
            (
                KeyNotation::Camelot,
                false,
                PageKept::default(),
                false,
                true,
                Some(124.0),
                Some("8A"),
            ),
            (
                KeyNotation::OpenKey,
                false,
                kept_tempo,
                true,
                false,
                None,
                Some("1m"),
            ),
            (
                KeyNotation::Standard,
                true,
                kept_tempo,
                true,
                false,
                Some(124.0),
                Some("A Minor"),
            ),
        ];
        for (notation, overwrite, kept, told, sends_file, tempo, key) in cases {
            let c = config(notation, overwrite, both.clone());
            let f = page_files(&c, &original, Some(&measured), kept, told);
            assert_eq!(f.original.is_some(), sends_file, "{notation:?}");
            assert_eq!(f.tempo, tempo, "{notation:?} {kept:?} {overwrite}");
            assert_eq!(f.key.as_deref(), key, "{notation:?}");
            // The WAV copy was not made (not on disk): it is not claimed.
            assert_eq!((f.aiff.clone(), f.wav.clone()), (aiff.clone(), None));
        }
        // Copies not asked for are not named, whatever is on disk.
        let c = config(KeyNotation::Standard, false, vec![Format::Original]);
        let f = page_files(&c, &original, None, PageKept::default(), false);
        assert_eq!((f.aiff, f.tempo, f.key), (None, None, None));
    }
}
