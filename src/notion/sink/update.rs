//! Changing pages that exist: their playlists, their downloaded state, the trash.
//!
//! Invariants:
//! - Updates only add or remove what was asked and keep every other value of the property
//!   (relation ids, option names). Playlist writes to one page are serialized and start from
//!   the values last written by this process, so two syncs tagging the same page from their
//!   own (stale) lookups don't undo each other.
//! - A playlist write never truncates: a relation or multi_select that would hold more than the
//!   100 values one PATCH takes is not written at all ([`NotionError::TooManyValues`]), because
//!   a PATCH replaces the whole array and a cut one would drop what a person put there.

use super::{ExistingPage, PageFiles, PageSlot, PlaylistTag, Sink};
use crate::notion::props;
use crate::notion::schema::{PropType, Property, Role};
use crate::notion::{NotionError, compact_id};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Values one PATCH of a relation or multi_select may carry (Notion's limit per request).
const MAX_VALUES_PER_WRITE: usize = 100;

impl Sink {
    async fn patch(&self, page_id: &str, body: Value, what: &str) -> Result<Value, NotionError> {
        self.request(
            Method::PATCH,
            &format!("/v1/pages/{page_id}"),
            Some(&body),
            what,
        )
        .await
    }

    fn page_lock(&self, page_id: &str) -> PageSlot {
        let mut m = self
            .inner
            .page_playlists
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.entry(compact_id(page_id)).or_default().clone()
    }

    /// Adds the playlist to the page's playlist property, keeping the values already there
    /// (also those another sync of this process wrote since `page` was looked up). Returns
    /// whether a request was sent.
    pub async fn add_playlist(
        &self,
        page: &ExistingPage,
        tag: &PlaylistTag,
    ) -> Result<bool, NotionError> {
        self.change_playlists(page, tag, |current, value, p| {
            // A select holds one playlist; the first one stays.
            if contains(current, value, p) || (p.kind == PropType::Select && !current.is_empty()) {
                return None;
            }
            let mut next = current.to_vec();
            next.push(value.to_string());
            Some(next)
        })
        .await
    }

    /// Removes the playlist from the page's playlist property, keeping the other values.
    pub async fn remove_playlist(
        &self,
        page: &ExistingPage,
        tag: &PlaylistTag,
    ) -> Result<bool, NotionError> {
        self.change_playlists(page, tag, |current, value, p| {
            contains(current, value, p).then(|| {
                current
                    .iter()
                    .filter(|x| !same(x, value, p))
                    .cloned()
                    .collect()
            })
        })
        .await
    }

    /// Writes of one page's playlists go one at a time and start from what this process last
    /// wrote, so two syncs tagging one page never erase each other. `change` returns the new
    /// values, or `None` when nothing needs writing.
    async fn change_playlists(
        &self,
        page: &ExistingPage,
        tag: &PlaylistTag,
        change: impl FnOnce(&[String], &str, &Property) -> Option<Vec<String>>,
    ) -> Result<bool, NotionError> {
        let (Some(p), Some(value)) = (self.prop(Role::Playlists), tag.value()) else {
            return Ok(false);
        };
        let lock = self.page_lock(&page.page_id);
        let mut known = lock.lock().await;
        let current = known.clone().unwrap_or_else(|| page.playlists.clone());
        let Some(next) = change(&current, value, p) else {
            return Ok(false);
        };
        self.write_playlists(&page.page_id, p, &next).await?;
        *known = Some(next);
        Ok(true)
    }

    async fn write_playlists(
        &self,
        page_id: &str,
        p: &Property,
        values: &[String],
    ) -> Result<(), NotionError> {
        // A PATCH replaces the whole array and takes at most 100 items: cutting the list to
        // fit would silently drop the rest of what a person put there, so nothing is written.
        let is_list = matches!(p.kind, PropType::Relation | PropType::MultiSelect);
        if is_list && values.len() > MAX_VALUES_PER_WRITE {
            return Err(NotionError::TooManyValues {
                page_url: format!("https://www.notion.so/{}", compact_id(page_id)),
                property: p.name.clone(),
                count: values.len(),
                limit: MAX_VALUES_PER_WRITE,
            });
        }
        let inner = match p.kind {
            PropType::Relation => Value::Array(values.iter().map(|id| json!({"id": id})).collect()),
            PropType::MultiSelect => {
                Value::Array(values.iter().map(|n| json!({"name": n})).collect())
            }
            PropType::Select => values
                .first()
                .map(|n| json!({"name": n}))
                .unwrap_or(Value::Null),
            PropType::RichText => props::rich_text(&values.join(", ")),
            _ => return Ok(()),
        };
        let mut prop = Map::new();
        prop.insert(p.kind.key().to_string(), inner);
        let mut properties = Map::new();
        properties.insert(p.name.clone(), Value::Object(prop));
        let what = format!("the playlists of page {page_id}");
        self.patch(page_id, json!({"properties": properties}), &what)
            .await?;
        Ok(())
    }

    /// Sets the downloaded checkbox, the files' paths, the tempo and the key, whichever are
    /// mapped, in one request. No request at all when none is.
    pub async fn set_downloaded(
        &self,
        page_id: &str,
        files: &PageFiles,
    ) -> Result<(), NotionError> {
        let properties = self.encode_all(files.values());
        if properties.is_empty() {
            return Ok(());
        }
        self.patch(
            page_id,
            json!({"properties": properties}),
            &format!("marking page {page_id} downloaded"),
        )
        .await?;
        Ok(())
    }

    /// Moves a page to the trash (Notion keeps it restorable for 30 days).
    pub async fn trash(&self, page_id: &str) -> Result<(), NotionError> {
        self.patch(
            page_id,
            json!({"in_trash": true}),
            &format!("moving page {page_id} to the trash"),
        )
        .await?;
        Ok(())
    }
}

fn same(a: &str, b: &str, p: &Property) -> bool {
    if p.kind == PropType::Relation {
        compact_id(a) == compact_id(b)
    } else {
        a == b
    }
}

fn contains(list: &[String], value: &str, p: &Property) -> bool {
    list.iter().any(|x| same(x, value, p))
}
