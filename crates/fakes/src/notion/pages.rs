//! Pages: `POST /v1/pages`, `GET /v1/pages/{id}`, `PATCH /v1/pages/{id}` and the paginated
//! `GET /v1/pages/{id}/properties/{property_id}`; the page object as Notion shows it; and the
//! handle's seeding and assertion helpers, which work on the same store without a request.
//!
//! Invariants: a create or update is all-or-nothing (every property is checked before any is
//! stored); creation times come from the store's clock, one second per page; a page object
//! lists at most 25 related pages per relation (`has_more`), the rest are behind the property
//! endpoint, whose cursors hold `+`, `/` and `=`; `archived` is shown before `2026-03-11` only,
//! and refused in a write from that version on; a trashed page cannot be edited.

use super::databases::multiple_sources_error;
use super::properties::{check_file_object, check_icon, empty_value};
use super::reply::Reply;
use super::wire::{compact, dashed, plain_text, request_id, ts, uuid};
use super::{
    DataSource, FakeNotion, FakeState, NO_ARCHIVED_VERSION, Page, PropKind, RELATION_PAGE_LIMIT,
    SHARE_HINT,
};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Instant;

/// A page as stored, for assertions. `properties` is keyed by name, in the response shape.
#[derive(Debug, Clone)]
pub struct FakePage {
    pub id: String,
    pub data_source_id: String,
    pub properties: Map<String, Value>,
    /// External cover URL, if any.
    pub cover: Option<String>,
    pub in_trash: bool,
    pub created_time: String,
}

impl FakePage {
    /// Plain text of a title or rich_text property ("" when unset).
    pub fn text(&self, prop: &str) -> String {
        match self.properties.get(prop) {
            Some(v) => {
                let kind = v["type"].as_str().unwrap_or("");
                plain_text(&v[kind])
            }
            None => String::new(),
        }
    }
    pub fn url(&self, prop: &str) -> Option<String> {
        self.properties
            .get(prop)
            .and_then(|v| v["url"].as_str().map(str::to_string))
    }
    pub fn number(&self, prop: &str) -> Option<f64> {
        self.properties.get(prop).and_then(|v| v["number"].as_f64())
    }
    pub fn checkbox(&self, prop: &str) -> Option<bool> {
        self.properties
            .get(prop)
            .and_then(|v| v["checkbox"].as_bool())
    }
    pub fn select(&self, prop: &str) -> Option<String> {
        self.properties
            .get(prop)
            .and_then(|v| v["select"]["name"].as_str().map(str::to_string))
    }
    pub fn multi_select(&self, prop: &str) -> Vec<String> {
        self.array(prop, "multi_select", "name")
    }
    /// Related page ids, dashed.
    pub fn relation(&self, prop: &str) -> Vec<String> {
        self.array(prop, "relation", "id")
    }
    fn array(&self, prop: &str, kind: &str, field: &str) -> Vec<String> {
        self.properties
            .get(prop)
            .and_then(|v| v[kind].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x[field].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl FakeNotion {
    /// Creates a page in the tracks data source as another tool would (no request is logged).
    /// `properties` is the request shape, e.g. `{"Title": {"title": [{"text": {"content": "x"}}]}}`.
    /// Panics when Notion would refuse the properties.
    pub fn seed_page(&self, properties: Value) -> String {
        let ds = self.data_source_id();
        self.seed_page_in(&ds, properties)
    }
    pub fn seed_page_in(&self, data_source_id: &str, properties: Value) -> String {
        let mut s = self.state();
        let props = properties.as_object().cloned().unwrap_or_default();
        match s.create_page(data_source_id, &props, Value::Null, Value::Null) {
            Ok(i) => {
                // Made long before the test: already in the query index.
                s.pages[i].indexed_at = Instant::now();
                s.pages[i].id.clone()
            }
            Err(e) => panic!("seed_page refused: {}", e.body),
        }
    }
    /// Sets a relation property of a page to `related` page ids, however many: a person can
    /// build a relation past the 100 items one API write takes, over many edits.
    /// Panics when the page or property does not exist.
    pub fn seed_relation(&self, page_id: &str, property: &str, related: &[String]) {
        let mut s = self.state();
        let i = s.page_index(page_id).expect("seed_relation: no such page");
        let ds = s
            .ds_index(&s.pages[i].data_source_id)
            .expect("page's data source exists");
        let prop = s.data_sources[ds]
            .props
            .iter()
            .find(|p| p.name == property && matches!(p.kind, PropKind::Relation(_)))
            .map(|p| p.id.clone())
            .expect("seed_relation: no such relation property");
        let value = related.iter().map(|id| json!({"id": dashed(id)})).collect();
        s.pages[i].props.insert(prop, Value::Array(value));
    }
    /// Seeds a track in the default "Music Tracks" schema.
    pub fn seed_track(&self, title: &str, artist: &str, url: &str) -> String {
        self.seed_page(json!({
            "Title": {"title": [{"text": {"content": title}}]},
            "Artist Name": {"rich_text": [{"text": {"content": artist}}]},
            "SoundCloud URL": {"url": url},
        }))
    }
    /// Moves a page to the trash directly.
    pub fn trash_page(&self, page_id: &str) {
        let mut s = self.state();
        if let Some(i) = s.page_index(page_id) {
            s.pages[i].in_trash = true;
        }
    }

    /// All pages of every data source, trashed included, in creation order.
    pub fn all_pages(&self) -> Vec<FakePage> {
        let s = self.state();
        s.pages.iter().map(|p| s.fake_page(p)).collect()
    }
    /// Pages of the tracks data source that are not in the trash.
    pub fn pages(&self) -> Vec<FakePage> {
        let ds = self.data_source_id();
        self.pages_in(&ds)
    }
    pub fn pages_in(&self, data_source_id: &str) -> Vec<FakePage> {
        let key = compact(data_source_id);
        let s = self.state();
        s.pages
            .iter()
            .filter(|p| !p.in_trash && compact(&p.data_source_id) == key)
            .map(|p| s.fake_page(p))
            .collect()
    }
    pub fn page(&self, page_id: &str) -> Option<FakePage> {
        let s = self.state();
        s.page_index(page_id).map(|i| s.fake_page(&s.pages[i]))
    }
    /// Untrashed tracks pages whose url-typed (or "SoundCloud URL"-named) property equals `url`.
    pub fn pages_with_url(&self, url: &str) -> Vec<FakePage> {
        self.pages()
            .into_iter()
            .filter(|p| {
                p.properties
                    .iter()
                    .any(|(name, v)| match v["type"].as_str() {
                        Some("url") => v["url"].as_str() == Some(url),
                        Some("rich_text") if name.to_lowercase().contains("soundcloud") => {
                            plain_text(&v["rich_text"]) == url
                        }
                        _ => false,
                    })
            })
            .collect()
    }
}

impl FakeState {
    pub(super) fn fake_page(&self, p: &Page) -> FakePage {
        let ds = self
            .ds_index(&p.data_source_id)
            .map(|i| &self.data_sources[i]);
        FakePage {
            id: p.id.clone(),
            data_source_id: p.data_source_id.clone(),
            properties: ds
                .map(|d| self.page_properties(d, p, true))
                .unwrap_or_default(),
            cover: p.cover["external"]["url"].as_str().map(str::to_string),
            in_trash: p.in_trash,
            created_time: ts(p.created),
        }
    }

    fn page_properties(&self, ds: &DataSource, p: &Page, full: bool) -> Map<String, Value> {
        let mut out = Map::new();
        for prop in &ds.props {
            let key = prop.kind.key();
            let value = match prop.kind {
                PropKind::CreatedTime => json!(ts(p.created)),
                PropKind::Formula => json!({"type": "string", "string": null}),
                _ => p
                    .props
                    .get(&prop.id)
                    .cloned()
                    .unwrap_or_else(|| empty_value(&prop.kind)),
            };
            let mut obj = json!({"id": prop.id, "type": key});
            obj[key] = value;
            if let PropKind::Relation(_) = prop.kind {
                // Page objects carry at most 25 related pages; the rest is behind
                // GET /v1/pages/{id}/properties/{property_id}.
                let truncated = !full
                    && obj[key]
                        .as_array()
                        .is_some_and(|a| a.len() > RELATION_PAGE_LIMIT);
                if truncated {
                    obj[key]
                        .as_array_mut()
                        .expect("array")
                        .truncate(RELATION_PAGE_LIMIT);
                }
                obj["has_more"] = json!(truncated);
            }
            out.insert(prop.name.clone(), obj);
        }
        out
    }

    /// `GET /v1/pages/{id}/properties/{property_id}` for list-like properties, paginated.
    pub(super) fn page_property(
        &self,
        page_id: &str,
        prop_id: &str,
        query: &str,
    ) -> Result<Reply, Reply> {
        let i = self.visible_page(page_id)?;
        let p = &self.pages[i];
        let ds = &self.data_sources[self
            .ds_index(&p.data_source_id)
            .expect("page's data source exists")];
        let prop_id = prop_id.replace("%3A", ":").replace("%3a", ":");
        let Some(prop) = ds
            .props
            .iter()
            .find(|x| x.id.replace("%3A", ":") == prop_id || x.name == prop_id)
        else {
            return Err(Reply::err(
                404,
                "object_not_found",
                format!("Could not find property with ID: {prop_id}."),
            ));
        };
        let key = prop.kind.key();
        let value = p
            .props
            .get(&prop.id)
            .cloned()
            .unwrap_or_else(|| empty_value(&prop.kind));
        let Some(items) = value.as_array() else {
            let mut v = json!({"object": "property_item", "id": prop.id, "type": key, "request_id": request_id()});
            v[key] = value;
            return Ok(Reply::ok(v));
        };
        let mut start = 0;
        let mut size = 25;
        // Decoded as a server decodes a query string: `+` is a space, `%2B` a plus.
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "start_cursor" => {
                    start = parse_property_cursor(&v).ok_or_else(|| {
                        Reply::validation(format!(
                            "body failed validation: start_cursor `{v}` is not a valid cursor."
                        ))
                    })?
                }
                "page_size" => size = v.parse::<usize>().unwrap_or(25).clamp(1, 100),
                _ => {}
            }
        }
        let end = (start + size).min(items.len());
        let results: Vec<Value> = items[start.min(end)..end]
            .iter()
            .map(|x| {
                let mut item = json!({"object": "property_item", "id": prop.id, "type": key});
                item[key] = x.clone();
                item
            })
            .collect();
        let has_more = end < items.len();
        Ok(Reply::ok(json!({
            "object": "list",
            "results": results,
            "next_cursor": if has_more { json!(property_cursor(end)) } else { Value::Null },
            "has_more": has_more,
            "type": "property_item",
            "property_item": {"id": prop.id, "next_url": null, "type": key, key: {}},
            "request_id": request_id(),
        })))
    }

    pub(super) fn page_json(&self, i: usize, version: &str) -> Value {
        let p = &self.pages[i];
        let ds_i = self
            .ds_index(&p.data_source_id)
            .expect("page's data source exists");
        let ds = &self.data_sources[ds_i];
        let title: String = ds
            .props
            .iter()
            .find(|x| x.kind == PropKind::Title)
            .and_then(|x| p.props.get(&x.id))
            .map(plain_text)
            .unwrap_or_default();
        let slug: String = title
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '-' })
            .collect();
        let slug = slug.trim_matches('-');
        let url = if slug.is_empty() {
            format!("https://www.notion.so/{}", compact(&p.id))
        } else {
            format!("https://www.notion.so/{}-{}", slug, compact(&p.id))
        };
        let user = json!({"object": "user", "id": self.bot_id});
        let mut v = json!({
            "object": "page",
            "id": p.id,
            "created_time": ts(p.created),
            "last_edited_time": ts(p.edited),
            "created_by": user,
            "last_edited_by": user,
            "cover": p.cover,
            "icon": p.icon,
            "parent": {"type": "data_source_id", "data_source_id": ds.id, "database_id": ds.database_id},
            "in_trash": p.in_trash,
            "is_archived": false,
            "is_locked": false,
            "properties": Value::Object(self.page_properties(ds, p, false)),
            "url": url,
            "public_url": null,
            "request_id": request_id(),
        });
        if version < NO_ARCHIVED_VERSION {
            v["archived"] = json!(p.in_trash);
        }
        v
    }

    /// Validates and stores a new page. All-or-nothing.
    pub(super) fn create_page(
        &mut self,
        ds_id: &str,
        props: &Map<String, Value>,
        cover: Value,
        icon: Value,
    ) -> Result<usize, Reply> {
        let ds_i = self.visible_ds(ds_id)?;
        let mut values = HashMap::new();
        let mut new_options = Vec::new();
        self.check_props(ds_i, props, &mut values, &mut new_options)?;
        let cover = check_file_object(&cover, "cover")?;
        let icon = check_icon(&icon)?;
        self.add_options(ds_i, new_options, &mut values);
        let now = self.tick();
        let id = uuid(&mut self.rng);
        let seq = self.pages.len();
        self.pages.push(Page {
            id: id.clone(),
            data_source_id: self.data_sources[ds_i].id.clone(),
            props: values,
            cover,
            icon,
            in_trash: false,
            created: now,
            edited: now,
            seq,
            indexed_at: Instant::now() + self.index_lag,
        });
        self.index.insert(compact(&id), seq);
        Ok(seq)
    }

    pub(super) fn post_page(
        &mut self,
        body: &Map<String, Value>,
        version: &str,
    ) -> Result<Reply, Reply> {
        let parent = body.get("parent").ok_or_else(|| {
            Reply::validation(
                "body failed validation: body.parent should be defined, instead was `undefined`.",
            )
        })?;
        let ds_id = if let Some(ds) = parent.get("data_source_id").and_then(Value::as_str) {
            ds.to_string()
        } else if let Some(db) = parent.get("database_id").and_then(Value::as_str) {
            let i = self
                .db_index(db)
                .filter(|i| self.db_shared(&self.databases[*i].id))
                .ok_or_else(|| {
                    Reply::err(
                        404,
                        "object_not_found",
                        format!(
                            "Could not find database with ID: {}. {SHARE_HINT}",
                            dashed(db)
                        ),
                    )
                })?;
            if self.databases[i].data_sources.len() > 1 {
                return Err(multiple_sources_error(&self.databases[i]));
            }
            self.databases[i].data_sources[0].clone()
        } else {
            return Err(Reply::validation(
                "body failed validation: body.parent.data_source_id should be defined, instead was `undefined`.",
            ));
        };
        let props = match body.get("properties") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.properties should be an object, instead was `{other}`."
                )));
            }
        };
        let cover = body.get("cover").cloned().unwrap_or(Value::Null);
        let icon = body.get("icon").cloned().unwrap_or(Value::Null);
        let i = self.create_page(&ds_id, &props, cover, icon)?;
        Ok(Reply::ok(self.page_json(i, version)))
    }

    pub(super) fn patch_page(
        &mut self,
        id: &str,
        body: &Map<String, Value>,
        version: &str,
    ) -> Result<Reply, Reply> {
        let i = self.visible_page(id)?;
        if body.contains_key("archived") && version >= NO_ARCHIVED_VERSION {
            return Err(Reply::validation(
                "body failed validation: body.archived is not supported in this API version; use in_trash.",
            ));
        }
        let trash = match body.get("in_trash").or_else(|| body.get("archived")) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.in_trash should be a boolean, instead was `{other}`."
                )));
            }
        };
        let props = match body.get("properties") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.properties should be an object, instead was `{other}`."
                )));
            }
        };
        let will_be_trashed = trash.unwrap_or(self.pages[i].in_trash);
        if self.pages[i].in_trash && will_be_trashed && !props.is_empty() {
            return Err(Reply::validation(
                "Can't edit block that is archived. You must unarchive the block before editing.",
            ));
        }
        let ds_i = self
            .ds_index(&self.pages[i].data_source_id)
            .expect("page's data source exists");
        let mut values = HashMap::new();
        let mut new_options = Vec::new();
        self.check_props(ds_i, &props, &mut values, &mut new_options)?;
        let cover = match body.get("cover") {
            Some(c) => Some(check_file_object(c, "cover")?),
            None => None,
        };
        let icon = match body.get("icon") {
            Some(c) => Some(check_icon(c)?),
            None => None,
        };
        self.add_options(ds_i, new_options, &mut values);
        let now = self.tick();
        let page = &mut self.pages[i];
        page.props.extend(values);
        if let Some(c) = cover {
            page.cover = c;
        }
        if let Some(c) = icon {
            page.icon = c;
        }
        if let Some(t) = trash {
            page.in_trash = t;
        }
        page.edited = now;
        Ok(Reply::ok(self.page_json(i, version)))
    }
}

/// A page-property cursor: opaque, base64-looking, with the characters a URL must encode.
fn property_cursor(offset: usize) -> String {
    format!("Y3Vy+{offset}/w==")
}

fn parse_property_cursor(c: &str) -> Option<usize> {
    c.strip_prefix("Y3Vy+")?.strip_suffix("/w==")?.parse().ok()
}
