//! The DRM check: why a label track that lists a clear stream gets neither a page nor a
//! download when that stream is gone.
//!
//! Since 2026 SoundCloud lists label tracks with clear `hls`/`progressive` transcodings beside
//! `ctr-`/`cbc-encrypted-hls` ones, and the clear ones answer 404 (reference §9). The listing
//! cannot tell such a track from one whose clear stream plays; one request for the clear stream
//! can. This stage makes that request, after the listing and before any Notion or download
//! work, for the tracks the diff held back.
//!
//! Invariants:
//! - at most one request per track, whatever the downloader: only a track with work and no
//!   verdict in the state is checked, and its verdict is recorded at once. A verdict is kept
//!   while the track still lists encrypted streams ([`view`]), so a DRM track is never asked
//!   again, and no download ever tries it;
//! - a `DrmProtected` track is unavailable like a geo-blocked one: no page, no download, no
//!   failure (it does not change the exit code), shown by `status`;
//! - a check that cannot be made (429 past its budget, the network) decides nothing: that
//!   track and the ones after it wait for the next run, counted as waiting; bot protection, a
//!   bad client id or a cancel stop the sync, as they would stop its listing;
//! - a dry run asks (a read) but records nothing.

use super::pending::Pending;
use super::{Run, SyncError};
use crate::model::{ListedTrack, UnavailableReason};
use crate::report::{RunReport, TrackUnavailable};
use crate::source::SourceError;
use crate::source::soundcloud::StreamCheck;
use crate::state::{DrmVerdict, TrackState};

/// What a listed track is, given the state's verdict on it.
pub(super) struct View {
    pub unavailable: Option<UnavailableReason>,
    /// The verdict to keep in the state.
    pub verdict: Option<DrmVerdict>,
    /// No verdict yet: its work waits for the check.
    pub needs_check: bool,
}

/// A verdict holds while the track still lists encrypted streams (the listing carries a
/// check); a track that stopped listing them is back to what the listing says.
pub(super) fn view(ts: &TrackState, lt: &ListedTrack) -> View {
    if lt.drm_check.is_none() {
        return View {
            unavailable: lt.unavailable,
            verdict: None,
            needs_check: false,
        };
    }
    match ts.drm {
        Some(DrmVerdict::Protected) => View {
            unavailable: Some(UnavailableReason::DrmProtected),
            verdict: ts.drm,
            needs_check: false,
        },
        verdict => View {
            unavailable: None,
            verdict,
            needs_check: verdict.is_none(),
        },
    }
}

impl Run<'_> {
    /// Checks the held-back tracks one after another (each check counts against SoundCloud's
    /// stream-URL limit, so they are not fired at once), and releases the work of the ones
    /// that play into the lists.
    pub(super) async fn check_drm(
        &self,
        report: &mut RunReport,
        pending: &Pending,
    ) -> Result<(), SyncError> {
        let held = pending.held()?;
        for (n, &id) in held.iter().enumerate() {
            let e = pending.read(id)?;
            let (Some(check), Some(track_id)) = (&e.drm_check, e.track.soundcloud_id) else {
                continue;
            };
            let soundcloud = self.engine.soundcloud();
            let answer = match soundcloud.check_stream(track_id, check, &self.cancel).await {
                Ok(a) => a,
                Err(SourceError::Cancelled) => return Err(SyncError::Cancelled),
                Err(
                    e @ (SourceError::Blocked { .. }
                    | SourceError::ClientId { .. }
                    | SourceError::StaleConfiguredClientId { .. }),
                ) => return Err(e.into()),
                Err(e) => {
                    let left = held.len() - n;
                    report.waiting += left;
                    tracing::warn!(
                        "{:?}: {left} track(s) wait for their DRM check until the next run: {e}",
                        report.playlist
                    );
                    return Ok(());
                }
            };
            let verdict = match answer {
                StreamCheck::Plays => DrmVerdict::Plays,
                StreamCheck::DrmProtected => DrmVerdict::Protected,
            };
            if !self.opts.dry_run {
                let mut store = self.store();
                if let Some(ts) = store.track_mut(&e.track.key)? {
                    ts.drm = Some(verdict);
                    if verdict == DrmVerdict::Protected {
                        ts.unavailable = Some(UnavailableReason::DrmProtected);
                    }
                }
            }
            if verdict == DrmVerdict::Protected {
                report.unavailable.push(TrackUnavailable {
                    key: e.track.key.clone(),
                    title: e.track.title.clone(),
                    reason: UnavailableReason::DrmProtected,
                });
            }
            pending.checked(id, verdict == DrmVerdict::Plays)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DrmCheck, Track, TrackKey};

    fn listed(check: bool, unavailable: Option<UnavailableReason>) -> ListedTrack {
        ListedTrack {
            track: Track {
                key: TrackKey::soundcloud(1),
                soundcloud_id: Some(1),
                title: "T".into(),
                artist: "A".into(),
                url: String::new(),
                download_url: String::new(),
                duration_ms: None,
                genre: None,
                artwork_url: None,
                media: None,
            },
            unavailable,
            drm_check: check.then(|| DrmCheck {
                transcoding_url: "https://api-v2.soundcloud.com/media/x/stream/hls".into(),
                track_authorization: None,
            }),
        }
    }

    fn state(drm: Option<DrmVerdict>) -> TrackState {
        TrackState {
            drm,
            unavailable: (drm == Some(DrmVerdict::Protected))
                .then_some(UnavailableReason::DrmProtected),
            ..Default::default()
        }
    }

    #[test]
    fn a_verdict_sticks_while_the_track_lists_encrypted_streams() {
        let v = view(&state(None), &listed(true, None));
        assert_eq!(
            (v.unavailable, v.verdict, v.needs_check),
            (None, None, true)
        );
        let v = view(&state(Some(DrmVerdict::Protected)), &listed(true, None));
        assert_eq!(
            (v.unavailable, v.verdict, v.needs_check),
            (
                Some(UnavailableReason::DrmProtected),
                Some(DrmVerdict::Protected),
                false
            )
        );
        let v = view(&state(Some(DrmVerdict::Plays)), &listed(true, None));
        assert_eq!(
            (v.unavailable, v.verdict, v.needs_check),
            (None, Some(DrmVerdict::Plays), false)
        );
        // No encrypted streams listed any more: the listing decides again, the verdict goes.
        let v = view(&state(Some(DrmVerdict::Protected)), &listed(false, None));
        assert_eq!(
            (v.unavailable, v.verdict, v.needs_check),
            (None, None, false)
        );
        let geo = Some(UnavailableReason::GeoBlocked);
        let v = view(&state(Some(DrmVerdict::Protected)), &listed(false, geo));
        assert_eq!((v.unavailable, v.verdict), (geo, None));
    }
}
