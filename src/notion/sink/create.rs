//! Creating pages (a track's, or a playlist's in the related database), never two for one.
//!
//! Invariant: a create whose outcome is unknown (5xx, 409, timeout, reset) is resolved by a
//! lookup before it is sent again, and, because Notion's query index can lag behind a fresh
//! write, by a second lookup once `index_lag` has passed since the failure; only then is it
//! re-sent. Notion's `committed_resource_id` is adopted as is. Every re-send takes one retry
//! from the run's [`RetryBudget`](crate::notion::RetryBudget) (carried by the handle
//! [`Sink::for_run`] returns), as does every retry of the requests underneath; with the budget
//! spent the create fails and the track waits for a later run.

use super::{LOG_TARGET, PageFiles, PlaylistTag, Sink};
use crate::model::{Track, canonical_url};
use crate::notion::NotionError;
use crate::notion::client::CreateFailure;
use crate::notion::props::{self, Val};
use crate::notion::schema::Role;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::time::Instant;

impl Sink {
    fn track_properties(
        &self,
        track: &Track,
        tag: &PlaylistTag,
        playlist_url: &str,
        downloaded: Option<&PageFiles>,
    ) -> Map<String, Value> {
        let mut vals: Vec<(Role, Val)> = vec![
            (Role::Title, Val::Text(track.title.clone())),
            (Role::Artist, Val::Text(track.artist.clone())),
            (Role::Url, Val::Text(canonical_url(&track.url))),
            (Role::PlaylistUrl, Val::Text(playlist_url.to_string())),
        ];
        if let Some(id) = track.soundcloud_id {
            vals.push((Role::SoundCloudId, Val::Text(id.to_string())));
        }
        match tag {
            PlaylistTag::Relation { page_id, .. } => {
                vals.push((Role::Playlists, Val::Pages(vec![page_id.clone()])))
            }
            PlaylistTag::Name(n) => vals.push((Role::Playlists, Val::Names(vec![n.clone()]))),
            PlaylistTag::None => {}
        }
        if let Some(g) = &track.genre {
            vals.push((Role::Genre, Val::Text(g.clone())));
        }
        if let Some(ms) = track.duration_ms {
            vals.push((Role::Duration, Val::Number((ms as f64 / 1000.0).round())));
        }
        if let Some(files) = downloaded {
            vals.extend(files.values());
        }
        self.encode_all(vals)
    }

    /// Creates the page for a track and returns its id. A lost answer never leads to a second
    /// page: see the module invariants.
    pub async fn create(
        &self,
        track: &Track,
        tag: &PlaylistTag,
        playlist_url: &str,
        downloaded: Option<&PageFiles>,
    ) -> Result<String, NotionError> {
        let mut body = json!({
            "parent": {"type": "data_source_id", "data_source_id": self.inner.schema.id},
            "properties": self.track_properties(track, tag, playlist_url, downloaded),
        });
        if let Some(art) = track
            .artwork_url
            .as_deref()
            .and_then(props::url)
            .filter(|u| url::Url::parse(u).is_ok())
        {
            body["cover"] = json!({"type": "external", "external": {"url": art}});
        }
        let what = format!(
            "the new page for track {} ({:?})",
            track.key,
            props::clean_text(&track.title)
        );
        let find = || async {
            let mut found = self.lookup(std::slice::from_ref(track)).await?;
            Ok(found.remove(&track.key).map(|p| p.page_id))
        };
        self.create_resolved(&body, &what, find).await
    }

    /// Creates a page and returns its id, never leaving two: a lost answer is resolved by
    /// `find` (the caller's lookup) before the create is sent again; see the module invariants.
    pub(super) async fn create_resolved<F, Fut>(
        &self,
        body: &Value,
        what: &str,
        find: F,
    ) -> Result<String, NotionError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<String>, NotionError>>,
    {
        let client = &self.inner.client;
        let mut sends = 0u32;
        loop {
            sends += 1;
            let lost = match client.create_page(body, what, &self.budget).await {
                Ok(v) => return page_id_of(&v, what),
                Err(CreateFailure::Committed(id)) => {
                    tracing::info!(
                        target: LOG_TARGET,
                        what,
                        page = %id,
                        "Notion saved the page but could not answer; using the saved page"
                    );
                    return Ok(id);
                }
                Err(CreateFailure::Failed(e)) => return Err(e),
                Err(CreateFailure::Uncertain(a)) => a,
            };
            // Whatever the lost request wrote, it wrote before we saw it fail.
            let failed_at = Instant::now();
            tracing::warn!(
                target: LOG_TARGET,
                what,
                "the create's outcome is unknown; looking the page up before trying again"
            );
            tokio::time::sleep(client.backoff(sends)).await;
            if let Some(id) = find().await? {
                tracing::info!(
                    target: LOG_TARGET,
                    what,
                    page = %id,
                    "the page was saved after all; using it"
                );
                return Ok(id);
            }
            // Notion's query index can lag behind a fresh write: a page saved a moment ago may
            // not be found yet. Look once more when the lag has passed, or a re-send would
            // make a duplicate.
            let lag = client.opts.index_lag.saturating_sub(failed_at.elapsed());
            if !lag.is_zero() {
                tokio::time::sleep(lag).await;
                if let Some(id) = find().await? {
                    tracing::info!(
                        target: LOG_TARGET,
                        what,
                        page = %id,
                        "the page showed up in a second lookup; using it"
                    );
                    return Ok(id);
                }
            }
            // The backoff is already behind us: the re-send only needs its retry.
            client.may_retry(what, &lost, sends, &self.budget)?;
        }
    }
}

pub(super) fn page_id_of(v: &Value, what: &str) -> Result<String, NotionError> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| NotionError::Protocol {
            what: what.to_string(),
            message: "the answer has no page id".into(),
        })
}
