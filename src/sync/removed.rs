//! The removed-track policy, for tracks that left the playlist in this (complete) listing.
//!
//! Invariants: audio files are never touched; `keep` sends nothing; `mark` takes this playlist
//! off the page; `trash` moves the page to the trash only if no other playlist holds the track
//! (and forgets the page, so a track that comes back gets a new one). A page already gone is
//! skipped, a failure is logged and retried by the next complete listing; only a fatal Notion
//! error stops the run.

use super::{Run, SyncError};
use crate::config::RemovedPolicy;
use crate::model::TrackKey;
use crate::notion::{ExistingPage, NotionError, PlaylistTag, Sink};
use crate::report::RunReport;

impl Run<'_> {
    pub(super) async fn apply_removed(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let with_pages: Vec<(TrackKey, String)> = report
            .removed
            .iter()
            .filter_map(|r| r.page_id.clone().map(|p| (r.key.clone(), p)))
            .collect();
        if self.pl.removed == RemovedPolicy::Keep || with_pages.is_empty() {
            return Ok(());
        }
        let Some(sink) = &self.sink().await? else {
            return Ok(());
        };
        let tag = self.playlist_tag(sink).await?;
        for (key, page_id) in with_pages {
            let page = match sink.page(&page_id).await {
                Ok(Some(page)) => page,
                Ok(None) => continue, // already gone from Notion
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    self.warn_removed(&page_id, &e);
                    continue;
                }
            };
            let trash = self.pl.removed == RemovedPolicy::Trash && !self.held_elsewhere(&key);
            match self.remove_one(sink, &tag, (&page_id, &page), trash).await {
                Ok(()) => self.removed(report, &key, trash)?,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => self.warn_removed(&page_id, &e),
            }
        }
        Ok(())
    }

    /// Another playlist of the state lists the track.
    fn held_elsewhere(&self, key: &TrackKey) -> bool {
        self.store()
            .state
            .playlists
            .iter()
            .any(|(name, ps)| name != &self.pl.name && ps.members.contains(key))
    }

    async fn remove_one(
        &self,
        sink: &Sink,
        tag: &PlaylistTag,
        (page_id, page): (&str, &ExistingPage),
        trash: bool,
    ) -> Result<(), NotionError> {
        if trash {
            sink.trash(page_id).await
        } else {
            sink.remove_playlist(page, tag).await.map(|_| ())
        }
    }

    /// The policy was applied to the track's page: the record and the report say so.
    fn removed(
        &self,
        report: &mut RunReport,
        key: &TrackKey,
        trash: bool,
    ) -> Result<(), SyncError> {
        if let Some(ts) = self.store().track_mut(key)? {
            ts.notion_playlists.remove(&self.pl.name);
            if trash {
                // Should the track come back, it gets a new page.
                ts.notion_page_id = None;
                ts.notion = Default::default();
                ts.notion_playlists.clear();
            }
        }
        if let Some(r) = report.removed.iter_mut().find(|r| &r.key == key) {
            r.action = Some(
                if trash {
                    "page moved to the trash"
                } else {
                    "playlist taken off its page"
                }
                .into(),
            );
        }
        Ok(())
    }

    fn warn_removed(&self, page_id: &str, e: &NotionError) {
        tracing::warn!(
            "{:?}: could not apply the removed-track policy to {page_id}: {e}",
            self.pl.name
        );
    }
}
