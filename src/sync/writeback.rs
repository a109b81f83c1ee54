//! Write-back: telling a page that its track's file is on disk (`Downloaded`, the path).
//!
//! Invariants: a write-back is due only for a track with a page and a file whose page does not
//! say so yet, and is retried on a later run when it fails; the file itself is done either way.
//! Only a fatal Notion error stops the run. `write_back` connects to Notion only when called,
//! so an unchanged playlist makes no request.

use super::pending::Pending;
use super::{Run, SyncError};
use crate::model::Track;
use std::path::Path;

impl Run<'_> {
    /// Sets `Downloaded` and the file path on a page.
    pub(super) async fn write_back(
        &self,
        t: &Track,
        page: &str,
        path: &Path,
    ) -> Result<(), SyncError> {
        let Some(sink) = self.sink().await? else {
            return Ok(());
        };
        match sink.set_downloaded(page, path).await {
            Ok(()) => {
                if let Some(ts) = self.store().track_mut(&t.key)? {
                    ts.download_written_back = true;
                }
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => tracing::warn!("could not mark {:?} as downloaded in Notion: {e}", t.title),
        }
        self.checkpoint(false)?;
        Ok(())
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
                    (Some(page), Some(path)) if !ts.download_written_back => {
                        Some((page.clone(), path.clone()))
                    }
                    _ => None,
                }
            });
            if let Some((page, path)) = due {
                self.write_back(&t, &page, &path).await?;
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
            if let (Some(page), Some(path)) = (&e.page_id, &e.download_path) {
                self.write_back(&e.track, page, path).await?;
            }
        }
        Ok(())
    }
}
