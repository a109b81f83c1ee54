//! A dry run's plan: what a real run would create, adopt, link, remove and download.
//!
//! Invariants: it reads only (the Notion lookup, the pending work); nothing is written to the
//! state, Notion or the music folder. Without a Notion token it cannot tell new tracks from
//! ones already in Notion, says so, and reports them all as to be created.

use super::pending::{Pending, Work};
use super::{Run, SyncError};
use crate::config::RemovedPolicy;
use crate::model::Track;
use crate::notion::Sink;
use crate::report::{RunReport, TrackRef};

/// Tracks a dry run without Notion reads back at a time (with Notion, a chunk is one lookup
/// query: `Sink::lookup_batch`).
const PLAN_CHUNK: usize = 100;

fn planned(t: &Track) -> TrackRef {
    TrackRef {
        key: t.key.clone(),
        title: t.title.clone(),
        artist: t.artist.clone(),
        page_id: None,
        path: None,
        action: None,
        engine: None,
        analysis: None,
    }
}

impl Run<'_> {
    pub(super) async fn plan(
        &self,
        report: &mut RunReport,
        pending: &Pending,
        work: &Work,
    ) -> Result<(), SyncError> {
        let sink = match self.engine.sink().await? {
            Some(sink) => Some(sink),
            None => {
                tracing::warn!(
                    "no Notion token: the dry run cannot tell new tracks from ones already in Notion"
                );
                None
            }
        };
        self.plan_creates(report, pending, &work.create, sink)
            .await?;
        for &id in &work.tag {
            let e = pending.read(id)?;
            report.linked.push(TrackRef {
                page_id: e.page_id,
                ..planned(&e.track)
            });
        }
        for r in report.removed.iter_mut().filter(|r| r.page_id.is_some()) {
            r.action = match self.pl.removed {
                RemovedPolicy::Keep => None,
                RemovedPolicy::Mark => Some("would take the playlist off its page".into()),
                RemovedPolicy::Trash => Some(
                    "would move the page to the trash (unless another playlist holds it)".into(),
                ),
            };
        }
        for &id in &work.download {
            let e = pending.read(id)?;
            report.downloaded.push(TrackRef {
                path: Some(self.dest_dir.clone()),
                ..planned(&e.track)
            });
        }
        Ok(())
    }

    /// New tracks, looked up a chunk at a time: adopted when Notion has them, else created.
    async fn plan_creates(
        &self,
        report: &mut RunReport,
        pending: &Pending,
        create: &[u32],
        sink: Option<&Sink>,
    ) -> Result<(), SyncError> {
        for chunk in create.chunks(sink.map_or(PLAN_CHUNK, Sink::lookup_batch)) {
            let tracks = chunk
                .iter()
                .map(|&id| pending.read(id).map(|e| e.track))
                .collect::<Result<Vec<_>, _>>()?;
            let found = match sink {
                Some(sink) => Some(sink.lookup(&tracks).await?),
                None => None,
            };
            for t in &tracks {
                match found.as_ref().and_then(|f| f.get(&t.key)) {
                    Some(page) => report.adopted.push(TrackRef {
                        page_id: Some(page.page_id.clone()),
                        ..planned(t)
                    }),
                    None => report.created.push(planned(t)),
                }
            }
        }
        Ok(())
    }
}
