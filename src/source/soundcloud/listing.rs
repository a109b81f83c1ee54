//! Listing a set: one `/resolve`, then the stubs filled with `/tracks?ids=` in batches of
//! [`BATCH`], each batch handed on as soon as it answered.
//!
//! Invariants:
//! - the output keeps playlist order, whatever order `/tracks?ids=` answers in, and lists a
//!   track id once even when the set repeats it;
//! - a requested id missing from an answer is `NotReturned`;
//! - a stub batch that fails after retries leaves its tracks out and the listing
//!   `complete = false` (so the sync never reads them as removed); only what no later request
//!   could get past either (a bad client id, bot protection, a cancel) stops the listing.

use super::http::Failure;
use super::raw::{
    RawEntry, RawPlaylist, RawTrack, Resolved, bare_track, map_track, parse_resolved,
    parse_track_array,
};
use super::{BATCH, Call, LOG_TARGET, SoundCloud};
use crate::model::{ListedTrack, Listing, UnavailableReason};
use crate::source::{ListingEnd, SourceError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use url::Url;

impl SoundCloud {
    /// Lists a playlist ("set"), public or secret, in playlist order, whole. A collector over
    /// [`SoundCloud::list_streamed`] for the callers that want the whole listing (`check`,
    /// tests), which nothing cancels; the sync streams.
    pub async fn list(&self, url: &Url) -> Result<Listing, SourceError> {
        let mut tracks = Vec::new();
        let end = self
            .list_streamed(url, &CancellationToken::new(), |batch| {
                tracks.extend(batch);
                Ok::<(), SourceError>(())
            })
            .await?;
        Ok(end.into_listing(tracks))
    }

    /// Lists a playlist ("set") a batch at a time: `each` gets the tracks in playlist order,
    /// one call per `/tracks?ids=` answer (the full objects `/resolve` gave come with the batch
    /// they precede), so only the batch in hand is ever held as full tracks. The batches are
    /// fetched one after another: `each` runs between two requests. When `cancel` fires, the
    /// request or wait in progress ends and the listing returns [`SourceError::Cancelled`].
    pub async fn list_streamed<E: From<SourceError>>(
        &self,
        url: &Url,
        cancel: &CancellationToken,
        mut each: impl FnMut(Vec<ListedTrack>) -> Result<(), E>,
    ) -> Result<ListingEnd, E> {
        let call = Call::new(cancel);
        let target = self.canonical_set_url(url);
        let mut pl = self.resolve_set(&call, &target).await?;
        let entries = pl.tracks.len();
        let order = playlist_order(std::mem::take(&mut pl.tracks), &target);
        let stubs = order
            .iter()
            .filter(|e| matches!(e, RawEntry::Stub(_)))
            .count();
        let batches = stubs.div_ceil(BATCH);

        // A segment is the entries up to and including the next BATCH stubs: it is handed on
        // once its batch has answered, full objects and filled stubs in their places.
        let mut failures: Vec<String> = Vec::new();
        let mut order = order.into_iter().peekable();
        let mut batch_no = 0;
        while order.peek().is_some() {
            let mut segment: Vec<RawEntry> = Vec::new();
            let mut ids: Vec<u64> = Vec::with_capacity(BATCH);
            while ids.len() < BATCH {
                let Some(entry) = order.next() else { break };
                if let RawEntry::Stub(id) = entry {
                    ids.push(id);
                }
                segment.push(entry);
            }
            let answer = if ids.is_empty() {
                Some(HashMap::new())
            } else {
                batch_no += 1;
                let what = format!("track batch {batch_no} of {batches} of {target}");
                match self.fetch_batch(&call, &pl, &ids, &what).await? {
                    Ok(answer) => Some(answer),
                    Err(reason) => {
                        tracing::warn!(target: LOG_TARGET, playlist = %target, "{reason}");
                        failures.push(reason);
                        None
                    }
                }
            };
            let tracks = fill_segment(segment, answer);
            if !tracks.is_empty() {
                each(tracks)?;
            }
        }

        let incomplete_reason = match failures.len() {
            0 => None,
            1 => Some(failures.remove(0)),
            n => Some(format!("{n} track batches failed; first: {}", failures[0])),
        };
        Ok(ListingEnd {
            title: pl.title.unwrap_or_default(),
            url: pl
                .permalink_url
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| target.to_string()),
            complete: incomplete_reason.is_none(),
            incomplete_reason,
            hidden: pl.track_count.unwrap_or(0).saturating_sub(entries as u64),
            requests: call.requests.load(Ordering::Relaxed),
        })
    }

    /// One `/tracks?ids=` batch: `Ok(Ok(tracks by id))`, `Ok(Err(why))` for a batch that failed
    /// (the listing goes on, incomplete), or `Err` for what no other request can get past
    /// either (a bad client id, bot protection, a cancel): the listing stops.
    async fn fetch_batch(
        &self,
        call: &Call,
        pl: &RawPlaylist,
        ids: &[u64],
        what: &str,
    ) -> Result<Result<HashMap<u64, RawTrack>, String>, SourceError> {
        let mut query = vec![(
            "ids",
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        )];
        // A secret set's private tracks come back only with the set's id and token.
        if let (Some(token), Some(pid)) = (&pl.secret_token, pl.id) {
            query.push(("playlistId", pid.to_string()));
            query.push(("playlistSecretToken", token.clone()));
        }
        let url = self.endpoint("tracks");
        match self.api(call, url, &query, what, parse_track_array).await {
            // Ids not asked for are ignored, as is a full entry's id.
            Ok(tracks) => Ok(Ok(tracks
                .into_iter()
                .filter(|t| ids.contains(&t.id))
                .map(|t| (t.id, t))
                .collect())),
            Err(Failure::Gave(
                e @ (SourceError::ClientId { .. }
                | SourceError::StaleConfiguredClientId { .. }
                | SourceError::Blocked { .. }
                | SourceError::Cancelled),
            )) => Err(e),
            Err(Failure::Gave(e)) => Ok(Err(e.to_string())),
            Err(Failure::Auth(status) | Failure::Status(status)) => Ok(Err(SourceError::Http {
                status,
                what: what.to_string(),
            }
            .to_string())),
        }
    }

    /// `/resolve`s a set URL to the playlist, or says why it is not one.
    async fn resolve_set(&self, call: &Call, target: &Url) -> Result<RawPlaylist, SourceError> {
        let what = format!("resolving {target}");
        let query = [("url", target.to_string())];
        let url = self.endpoint("resolve");
        let resolved = match self.api(call, url, &query, &what, parse_resolved).await {
            Ok(v) => v,
            Err(Failure::Status(404)) => {
                return Err(SourceError::NotFound {
                    url: target.to_string(),
                });
            }
            Err(Failure::Status(status) | Failure::Auth(status)) => {
                return Err(SourceError::Http { status, what });
            }
            Err(Failure::Gave(e)) => return Err(e),
        };
        let (kind, pl) = match resolved {
            Resolved::Playlist(pl) => (pl.kind.clone().unwrap_or_default(), Ok(pl)),
            Resolved::Other { kind, reason } => (kind, Err(reason)),
        };
        if kind != "playlist" {
            let kind = if kind.is_empty() {
                "something else".to_string()
            } else {
                kind
            };
            return Err(SourceError::NotAPlaylist {
                url: target.to_string(),
                kind,
            });
        }
        pl.map_err(|reason| SourceError::Decode { what, reason })
    }
}

/// The playlist's entries in order, each id once, entries without an id dropped; a stub is
/// 16 bytes here until its batch is fetched.
fn playlist_order(mut entries: Vec<RawEntry>, target: &Url) -> Vec<RawEntry> {
    let mut seen = HashSet::with_capacity(entries.len());
    entries.retain(|entry| match entry {
        RawEntry::Full(t) => seen.insert(t.id),
        RawEntry::Stub(id) => seen.insert(*id),
        RawEntry::NoId => {
            tracing::warn!(
                target: LOG_TARGET,
                playlist = %target,
                "skipping a playlist entry without a numeric id"
            );
            false
        }
    });
    entries
}

/// A segment's tracks in order once its batch answered (`None`: the batch failed). A failed
/// batch's stubs are left out: the listing is incomplete, so they are neither listed nor
/// removed. A stub missing from a good answer is `NotReturned`.
fn fill_segment(
    segment: Vec<RawEntry>,
    mut answer: Option<HashMap<u64, RawTrack>>,
) -> Vec<ListedTrack> {
    segment
        .into_iter()
        .filter_map(|entry| match entry {
            RawEntry::Full(t) => Some(map_track(*t)),
            RawEntry::Stub(id) => {
                let got = answer.as_mut()?.remove(&id);
                Some(match got {
                    Some(t) => map_track(t),
                    None => ListedTrack {
                        track: bare_track(id),
                        unavailable: Some(UnavailableReason::NotReturned),
                        drm_check: None,
                    },
                })
            }
            RawEntry::NoId => None,
        })
        .collect()
}
