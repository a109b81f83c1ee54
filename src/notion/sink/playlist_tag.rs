//! How a track is tagged with its playlist: a name for a select, multi_select or rich_text
//! property, or, for a relation, the playlist's own page in the related database.
//!
//! Invariant: a relation's playlist page is found by its title or created, one resolver at a
//! time, so two syncs of the same playlist never create two pages; a page id cached from a
//! previous run is confirmed by one read before it is used.

use super::create::page_id_of;
use super::{LOG_TARGET, PlaylistTag, Sink};
use crate::notion::NotionError;
use crate::notion::props::{self, Val};
use crate::notion::schema::{DataSourceSchema, PropType, Property, Role};
use reqwest::Method;
use serde_json::{Map, json};

impl Sink {
    /// The tag for a playlist. For a relation property, finds the playlist's page in the related
    /// database by title, or creates it; `cached_page_id` (from a previous run) skips that.
    pub async fn playlist_tag(
        &self,
        name: &str,
        url: &str,
        cached_page_id: Option<&str>,
    ) -> Result<PlaylistTag, NotionError> {
        let Some(p) = self.prop(Role::Playlists) else {
            return Ok(PlaylistTag::None);
        };
        let clean = props::clean_text(name);
        match p.kind {
            PropType::Relation => {}
            PropType::Select | PropType::MultiSelect => {
                return Ok(props::option_name(name)
                    .map(PlaylistTag::Name)
                    .unwrap_or(PlaylistTag::None));
            }
            _ => {
                return Ok(if clean.is_empty() {
                    PlaylistTag::None
                } else {
                    PlaylistTag::Name(clean)
                });
            }
        }
        // One resolver at a time, so two syncs of the same playlist don't create two pages.
        let mut cache = self.inner.playlists.lock().await;
        if let Some(id) = cache.pages.get(&clean) {
            return Ok(PlaylistTag::Relation {
                name: clean,
                page_id: id.clone(),
            });
        }
        if let Some(id) = cached_page_id {
            // One read confirms the page from a previous run still exists (a relation to a
            // deleted page would fail every create); it also survives a rename in Notion.
            let what = format!("the playlist page {id} of {clean:?}");
            match self
                .request(Method::GET, &format!("/v1/pages/{id}"), None, &what)
                .await
            {
                Ok(v) if v["in_trash"] != true && v["archived"] != true => {
                    cache.pages.insert(clean.clone(), id.to_string());
                    return Ok(PlaylistTag::Relation {
                        name: clean,
                        page_id: id.to_string(),
                    });
                }
                Ok(_) | Err(NotionError::NotFound { .. }) => {
                    tracing::info!(
                        target: LOG_TARGET,
                        playlist = %clean,
                        page = id,
                        "the cached playlist page is gone; finding it by name"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let target = match &cache.target {
            Some(t) => t.clone(),
            None => {
                let t = self.related_schema(p).await?;
                cache.target = Some(t.clone());
                t
            }
        };
        let id = self
            .find_or_create_playlist_page(p, &target, &clean, url)
            .await?;
        cache.pages.insert(clean.clone(), id.clone());
        Ok(PlaylistTag::Relation {
            name: clean,
            page_id: id,
        })
    }

    async fn related_schema(&self, p: &Property) -> Result<DataSourceSchema, NotionError> {
        let not_shared = |e: NotionError, what: String| match e {
            NotionError::NotFound { message, .. } => NotionError::NotFound { what, message },
            other => other,
        };
        let ds = match &p.relation_data_source {
            Some(ds) => ds.clone(),
            None => {
                let db = p.relation_database.clone().unwrap_or_default();
                let what = format!("the database {db} that property {:?} relates to", p.name);
                let v = self
                    .request(Method::GET, &format!("/v1/databases/{db}"), None, &what)
                    .await
                    .map_err(|e| not_shared(e, what.clone()))?;
                v["data_sources"][0]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
        };
        // NotFound's own fix says to share the database: `what` only names which one.
        let what = format!(
            "the playlists data source {ds} that property {:?} relates to",
            p.name
        );
        let v = self
            .request(Method::GET, &format!("/v1/data_sources/{ds}"), None, &what)
            .await
            .map_err(|e| not_shared(e, what.clone()))?;
        Ok(DataSourceSchema::from_json(&v))
    }

    async fn find_or_create_playlist_page(
        &self,
        p: &Property,
        target: &DataSourceSchema,
        name: &str,
        url: &str,
    ) -> Result<String, NotionError> {
        let Some(title) = target.title() else {
            return Err(NotionError::Schema {
                message: format!(
                    "the database related by property {:?} has no title property",
                    p.name
                ),
                fix: "point the playlists relation at a normal database".into(),
            });
        };
        let what = format!("the playlist page {name:?}");
        let filter = json!({"property": title.name, "title": {"equals": name}});
        let find = || async {
            let pages = self.query_all(&target.id, filter.clone(), &what).await?;
            pages.first().map(|p| page_id_of(p, &what)).transpose()
        };
        if let Some(id) = find().await? {
            return Ok(id);
        }
        let mut properties = Map::new();
        properties.insert(title.name.clone(), json!({"title": props::rich_text(name)}));
        let url_prop = Role::PlaylistUrl
            .candidates()
            .iter()
            .filter_map(|c| target.get(c))
            .find(|x| matches!(x.kind, PropType::Url | PropType::RichText));
        if let Some(up) = url_prop
            && let Some(v) = props::encode(up, &Val::Text(url.to_string()))
        {
            properties.insert(up.name.clone(), v);
        }
        let body = json!({"parent": {"type": "data_source_id", "data_source_id": target.id}, "properties": properties});
        self.create_resolved(&body, &what, find).await
    }
}
