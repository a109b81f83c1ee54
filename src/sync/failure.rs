//! A failed step of one track, recorded the same way by every stage.
//!
//! Invariants: a failure is written to the track's record (its error, and the backoff or park
//! it is charged) and to the report, and is emitted as a progress event; what it costs the
//! track is one [`Charge`], decided by the stage from the error (a setup fault is never
//! charged, a failure only a person can clear is parked at once).

use super::{Event, Run, SyncError};
use crate::model::Track;
use crate::report::{RunReport, Stage, TrackFailure};
use crate::state::StepStatus;
use chrono::Utc;

/// What a failed step costs the track.
#[derive(Clone, Copy)]
pub(super) enum Charge {
    /// Due again next run, never parked (the setup's fault, not the track's).
    None,
    /// Backoff, parked after `max_attempts`.
    Backoff,
    /// Parked at once: retrying cannot help until a person acts.
    Park,
}

impl Run<'_> {
    pub(super) fn fail_notion(
        &self,
        report: &mut RunReport,
        t: &Track,
        error: &str,
    ) -> Result<(), SyncError> {
        self.record_failure(report, t, Stage::Notion, error, Charge::Backoff)
    }

    /// A Notion failure that only a person can clear: parked at once (shown by `status`, left
    /// alone by later runs until `playlistd retry`) instead of failing again on every run.
    pub(super) fn park_notion(
        &self,
        report: &mut RunReport,
        t: &Track,
        error: &str,
    ) -> Result<(), SyncError> {
        self.record_failure(report, t, Stage::Notion, error, Charge::Park)
    }

    pub(super) fn record_failure(
        &self,
        report: &mut RunReport,
        t: &Track,
        stage: Stage,
        error: &str,
        charge: Charge,
    ) -> Result<(), SyncError> {
        let mut store = self.store();
        let ts = store.track_mut(&t.key)?.expect("listed track in state");
        let step = match stage {
            Stage::Notion => &mut ts.notion,
            Stage::Download => &mut ts.download,
        };
        let max_attempts = self.engine.config.download.max_attempts;
        match charge {
            Charge::Backoff => step.fail(error, Utc::now(), max_attempts),
            // One attempt is all a parked step is allowed.
            Charge::Park => step.fail(error, Utc::now(), 1),
            Charge::None => step.fail_uncharged(error),
        }
        report.failed.push(TrackFailure {
            key: t.key.clone(),
            title: t.title.clone(),
            stage,
            error: error.to_string(),
            parked: step.status == StepStatus::Parked,
        });
        drop(store);
        let (playlist, title) = (report.playlist.clone(), t.title.clone());
        self.engine.emit(match stage {
            Stage::Notion => Event::NotionStep { playlist, title },
            Stage::Download => Event::DownloadStep {
                playlist,
                title,
                ok: false,
            },
        });
        Ok(())
    }
}
