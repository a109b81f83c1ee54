//! The operations the sync engine calls: look tracks up, create pages, tag them with playlists,
//! mark them downloaded, trash them.
//!
//! Invariants:
//! - Lookups are batched: one query (plus its pagination) per `lookup_batch` tracks, an `or`
//!   of the dedup keys, never one query per track; a batch whose conditions exceed
//!   [`MAX_CONDITIONS`] is asked in as few queries as fit. Compound filters stay within
//!   Notion's two levels (`or` of properties and of `and(title, artist)` pairs). A lookup
//!   whose answer hit Notion's result cap (10,000) is split in halves and asked again, so
//!   nothing is missed.
//! - A SoundCloud track's page is found whatever form of its link a person pasted: the query
//!   asks `contains` for the link's host and path, and a page is adopted only when its
//!   canonical URL ([`canonical_url`]) is the track's (compared by [`url_match_key`]), so a
//!   longer path that merely contains the track's is never taken.
//! - A create whose outcome is unknown (5xx, 409, timeout, reset) is resolved by a lookup before
//!   it is sent again, and, because Notion's query index can lag behind a fresh write, by a
//!   second lookup once `index_lag` has passed since the failure; only then is it re-sent.
//!   Notion's `committed_resource_id` is adopted as is. Every re-send takes one retry from the
//!   run's [`RetryBudget`] (carried by the handle [`Sink::for_run`] returns), as does every
//!   retry of the requests underneath; with the budget spent the create fails and the track
//!   waits for a later run.
//! - Updates only add or remove what was asked and keep every other value of the property
//!   (relation ids, option names), reading the full relation when Notion truncated it (the
//!   page-property endpoint, paginated, its cursor URL-encoded). Playlist writes to one page are
//!   serialized and start from the values last written by this process, so two syncs tagging
//!   the same page from their own (stale) lookups don't undo each other.
//! - A playlist write never truncates: a relation or multi_select that would hold more than the
//!   100 values one PATCH takes is not written at all ([`NotionError::TooManyValues`]), because
//!   a PATCH replaces the whole array and a cut one would drop what a person put there.
//! - When two pages match one track the oldest (created_time) wins, with a warning.

use super::budget::RetryBudget;
use super::client::{Client, CreateFailure};
use super::props::{self, Val};
use super::schema::{DataSourceSchema, MappingRow, PropType, Property, PropertyMap, Role};
use super::{DataSourceInfo, NotionError, compact_id};
use crate::model::{Track, TrackKey, canonical_url, url_match_key};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Values one PATCH of a relation or multi_select may carry (Notion's limit per request).
const MAX_VALUES_PER_WRITE: usize = 100;

/// The connected sink: the tracks data source, its property map, and the operations. Cheap to
/// clone; clones share the client, the limiter and the caches. Each handle carries the retry
/// budget its requests draw from: unbounded as connected, a run's own after [`Sink::for_run`].
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
    budget: Arc<RetryBudget>,
}

struct Inner {
    client: Arc<Client>,
    database_id: String,
    data_sources: Vec<DataSourceInfo>,
    schema: DataSourceSchema,
    map: PropertyMap,
    lookup_batch: usize,
    match_title_artist: bool,
    playlists: tokio::sync::Mutex<PlaylistCache>,
    /// Per page: a lock for its playlist property and the values we last wrote. Two syncs
    /// tagging the same page hold snapshots from their own lookups; writing from a stale
    /// snapshot would drop the other's playlist, so writes go through this.
    page_playlists: Mutex<HashMap<String, PageSlot>>,
}

/// The playlist values we last wrote to one page (`None`: not written by this process yet).
type PageSlot = Arc<tokio::sync::Mutex<Option<Vec<String>>>>;

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("client", &self.inner.client)
            .field("database_id", &self.inner.database_id)
            .field("data_source_id", &self.inner.schema.id)
            .finish_non_exhaustive()
    }
}

/// A page that already holds a track.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingPage {
    pub page_id: String,
    /// The playlist property's current values: related page ids, or option names.
    pub playlists: Vec<String>,
    /// `None` when no downloaded property is mapped.
    pub downloaded: Option<bool>,
    pub file_path: Option<String>,
    pub created_time: String,
}

/// How a track is tagged with a playlist, depending on the playlist property's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistTag {
    /// Relation: the playlist's page in the related database.
    Relation { name: String, page_id: String },
    /// multi_select / select / rich_text: the (sanitized) playlist name.
    Name(String),
    /// No playlist property is mapped: nothing is written.
    None,
}

impl PlaylistTag {
    /// The related page id, for the caller to cache across runs.
    pub fn page_id(&self) -> Option<&str> {
        match self {
            PlaylistTag::Relation { page_id, .. } => Some(page_id),
            _ => None,
        }
    }
    fn value(&self) -> Option<&str> {
        match self {
            PlaylistTag::Relation { page_id, .. } => Some(page_id),
            PlaylistTag::Name(n) => Some(n),
            PlaylistTag::None => None,
        }
    }
}

/// The related playlists data source and the pages found or created in it, by name.
#[derive(Default)]
pub(crate) struct PlaylistCache {
    target: Option<DataSourceSchema>,
    pages: HashMap<String, String>,
}

/// The most conditions (leaf property filters) one lookup query carries. Notion documents no
/// limit (reference/notion-api.md §10), so this is playlistd's own cap, small enough to stay
/// clear of any: a chunk of tracks whose conditions exceed it is asked in several queries.
pub(crate) const MAX_CONDITIONS: usize = 100;

/// A track's keys as they are compared with pages.
struct Keys {
    /// [`url_match_key`] of the canonical URL; empty when the track has none.
    url: String,
    id: Option<String>,
    title: String,
    artist: String,
}

fn keys(t: &Track) -> Keys {
    Keys {
        url: url_match_key(&canonical_url(&t.url)),
        id: t.soundcloud_id.map(|i| i.to_string()),
        title: props::clean_text(&t.title),
        artist: props::clean_text(&t.artist),
    }
}

fn text_filter(p: &Property, op: &str, value: &str) -> Value {
    let key = if p.kind == PropType::Url {
        "url"
    } else {
        p.kind.key()
    };
    let mut cond = Map::new();
    cond.insert(key.to_string(), json!({ op: value }));
    cond.insert("property".into(), json!(p.name));
    Value::Object(cond)
}

/// What a `contains` condition looks for so that a page holding any pasted form of a
/// SoundCloud link matches: the host and path without the scheme (so `http://`, `www.` and
/// `m.` forms match, and any query or fragment after it), once per encoding the path may have
/// been pasted in. `equals` could only see the one form we write. The needle also matches
/// longer paths (`/a/track` in `/a/track-2`): [`Sink::match_pages`] compares canonical forms,
/// so such a page is read but never adopted.
fn url_needles(canonical: &str) -> Vec<String> {
    let bare = canonical
        .split_once("://")
        .map_or(canonical, |(_, rest)| rest);
    let mut needles = vec![bare.to_string()];
    if bare.contains('%') {
        let decoded = percent_encoding::percent_decode_str(bare)
            .decode_utf8_lossy()
            .into_owned();
        let lower_hex = LOWER_HEX.replace_all(bare, |c: &regex::Captures| c[0].to_lowercase());
        for n in [decoded, lower_hex.into_owned()] {
            if !needles.contains(&n) {
                needles.push(n);
            }
        }
    }
    needles
}

static LOWER_HEX: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new("%[0-9A-F]{2}").expect("valid regex"));

/// The leaf conditions of a filter: what [`MAX_CONDITIONS`] counts.
fn leaves(condition: &Value) -> usize {
    ["or", "and"]
        .iter()
        .find_map(|op| condition[*op].as_array())
        .map_or(1, |subs| subs.iter().map(leaves).sum())
}

impl Sink {
    pub(crate) fn new(
        client: Arc<Client>,
        database_id: String,
        data_sources: Vec<DataSourceInfo>,
        schema: DataSourceSchema,
        map: PropertyMap,
        lookup_batch: usize,
        match_title_artist: bool,
    ) -> Sink {
        Sink {
            inner: Arc::new(Inner {
                client,
                database_id,
                data_sources,
                schema,
                map,
                lookup_batch,
                match_title_artist,
                playlists: tokio::sync::Mutex::new(PlaylistCache::default()),
                page_playlists: Mutex::new(HashMap::new()),
            }),
            budget: RetryBudget::unbounded(),
        }
    }

    /// This sink for one run: the same connection and caches, with every retry taken from
    /// `budget`, which the run grows as it plans its Notion work.
    pub fn for_run(&self, budget: Arc<RetryBudget>) -> Sink {
        Sink {
            inner: self.inner.clone(),
            budget,
        }
    }

    /// The retry budget this handle's requests draw from.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// A request that is safe to repeat, retried within this handle's budget.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, NotionError> {
        self.inner
            .client
            .request(method, path, body, what, &self.budget)
            .await
    }

    /// Tracks per lookup query (`notion.lookup_batch`).
    pub fn lookup_batch(&self) -> usize {
        self.inner.lookup_batch
    }
    pub fn database_id(&self) -> &str {
        &self.inner.database_id
    }
    pub fn data_source_id(&self) -> &str {
        &self.inner.schema.id
    }
    /// All data sources of the database, as discovered.
    pub fn data_sources(&self) -> &[DataSourceInfo] {
        &self.inner.data_sources
    }
    pub fn mapping(&self) -> &PropertyMap {
        &self.inner.map
    }
    /// (role, property, type) for `playlistd check`; "-" and the reason when a role is unmapped.
    pub fn mapping_table(&self) -> Vec<(Role, String, String)> {
        self.inner
            .map
            .table()
            .into_iter()
            .map(|r| match (r.property, r.kind) {
                (Some(p), Some(k)) => (r.role, p, k.to_string()),
                _ => (r.role, "-".to_string(), format!("({})", r.origin)),
            })
            .collect()
    }
    /// The same with how each role was resolved.
    pub fn mapping_rows(&self) -> Vec<MappingRow> {
        self.inner.map.table()
    }
    /// Every property of the data source: name → type.
    pub fn schema_properties(&self) -> HashMap<String, PropType> {
        self.inner
            .schema
            .properties
            .iter()
            .map(|p| (p.name.clone(), p.kind.clone()))
            .collect()
    }
    /// HTTP attempts sent so far by the client this sink shares.
    pub fn requests(&self) -> u64 {
        self.inner.client.requests()
    }

    fn prop(&self, role: Role) -> Option<&Property> {
        self.inner.map.get(role)
    }

    /// The page by id, or `None` when it is gone (trashed, deleted, or not in this data source).
    pub async fn page(&self, page_id: &str) -> Result<Option<ExistingPage>, NotionError> {
        let what = format!("page {page_id}");
        match self
            .request(Method::GET, &format!("/v1/pages/{page_id}"), None, &what)
            .await
        {
            Ok(v) => {
                let ours = v["parent"]["data_source_id"]
                    .as_str()
                    .is_some_and(|d| compact_id(d) == compact_id(&self.inner.schema.id));
                if v["in_trash"] == true || v["archived"] == true || !ours {
                    return Ok(None);
                }
                Ok(Some(self.existing_page(&v).await?))
            }
            // The database itself was checked at connect; a missing page is just gone.
            Err(NotionError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Finds the pages that already hold these tracks, keyed by track. Takes the tracks by
    /// reference, so a sync looks up the chunk it read back without copying it.
    pub async fn lookup<'t>(
        &self,
        tracks: impl IntoIterator<Item = &'t Track>,
    ) -> Result<HashMap<TrackKey, ExistingPage>, NotionError> {
        let mut seen: HashSet<&TrackKey> = HashSet::new();
        let unique: Vec<&Track> = tracks.into_iter().filter(|t| seen.insert(&t.key)).collect();
        drop(seen);
        let mut out = HashMap::new();
        // Windows still to query, last first: `lookup_batch` tracks at most, and no more
        // tracks than fit in MAX_CONDITIONS. A window whose answer hit Notion's result cap is
        // split in two and both halves are asked again, so no existing page goes unseen (and
        // no duplicate is created) however many pages one window matches.
        let mut windows: Vec<&[&Track]> = unique
            .chunks(self.inner.lookup_batch)
            .flat_map(|chunk| self.split_by_conditions(chunk))
            .rev()
            .collect();
        while let Some(chunk) = windows.pop() {
            let conditions: Vec<Value> = chunk
                .iter()
                .flat_map(|t| self.track_conditions(t))
                .collect();
            if conditions.is_empty() {
                continue;
            }
            let filter = json!({"or": conditions});
            let what = format!("the lookup of {} track(s)", chunk.len());
            let (pages, capped) = self
                .query_all_capped(&self.inner.schema.id, filter, &what)
                .await?;
            if capped && chunk.len() > 1 {
                let (first, second) = chunk.split_at(chunk.len() / 2);
                windows.push(second);
                windows.push(first);
                continue;
            }
            if capped {
                tracing::warn!(
                    what,
                    "Notion capped the query at 10,000 results; some matches may be missing"
                );
            }
            self.match_pages(chunk, &pages, &mut out).await?;
        }
        Ok(out)
    }

    /// Consecutive runs of `chunk` whose conditions fit in one query. A track whose own
    /// conditions exceed the cap (it cannot: at most five) still gets a query of its own.
    fn split_by_conditions<'c, 't>(&self, chunk: &'c [&'t Track]) -> Vec<&'c [&'t Track]> {
        let mut out = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, t) in chunk.iter().enumerate() {
            let n: usize = self.track_conditions(t).iter().map(leaves).sum();
            if used + n > MAX_CONDITIONS && i > start {
                out.push(&chunk[start..i]);
                (start, used) = (i, 0);
            }
            used += n;
        }
        if start < chunk.len() {
            out.push(&chunk[start..]);
        }
        out
    }

    /// The conditions that find one track's page: its URL in any pasted form (SoundCloud
    /// tracks; other sites' URLs by `equals`), its SoundCloud id, and optionally its title and
    /// artist together. Compound filters stay within Notion's two levels: an `or` of these.
    fn track_conditions(&self, t: &Track) -> Vec<Value> {
        let mut conditions = Vec::new();
        let canonical = canonical_url(&t.url);
        if let Some(p) = self.prop(Role::Url).filter(|_| !canonical.is_empty()) {
            if t.soundcloud_id.is_some() {
                for needle in url_needles(&canonical) {
                    conditions.push(text_filter(p, "contains", &needle));
                }
            } else {
                conditions.push(text_filter(p, "equals", &canonical));
            }
        }
        if let (Some(p), Some(sid)) = (self.prop(Role::SoundCloudId), t.soundcloud_id) {
            conditions.push(if p.kind == PropType::Number {
                json!({"property": p.name, "number": {"equals": sid}})
            } else {
                text_filter(p, "equals", &sid.to_string())
            });
        }
        if let (true, Some(tp), Some(ap)) = (
            self.inner.match_title_artist,
            self.prop(Role::Title),
            self.prop(Role::Artist),
        ) {
            let (title, artist) = (props::clean_text(&t.title), props::clean_text(&t.artist));
            if !title.is_empty() && !artist.is_empty() {
                conditions.push(json!({"and": [
                    text_filter(tp, "equals", &title),
                    text_filter(ap, "equals", &artist),
                ]}));
            }
        }
        conditions
    }

    /// Every page matching `filter`, oldest first.
    pub(super) async fn query_all(
        &self,
        data_source: &str,
        filter: Value,
        what: &str,
    ) -> Result<Vec<Value>, NotionError> {
        let (pages, capped) = self.query_all_capped(data_source, filter, what).await?;
        if capped {
            tracing::warn!(
                what,
                "Notion capped the query at 10,000 results; some matches may be missing"
            );
        }
        Ok(pages)
    }

    /// The pages matching `filter`, oldest first, and whether Notion capped the results.
    async fn query_all_capped(
        &self,
        data_source: &str,
        filter: Value,
        what: &str,
    ) -> Result<(Vec<Value>, bool), NotionError> {
        let path = format!("/v1/data_sources/{data_source}/query");
        let mut body = json!({
            "filter": filter,
            "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
            "page_size": 100,
        });
        let mut pages = Vec::new();
        let mut capped = false;
        loop {
            let v = self.request(Method::POST, &path, Some(&body), what).await?;
            if let Some(r) = v["results"].as_array() {
                pages.extend(r.iter().cloned());
            }
            capped |= v["request_status"]["type"] == "incomplete";
            match v["next_cursor"].as_str() {
                Some(c) if v["has_more"] == true => body["start_cursor"] = json!(c),
                _ => break,
            }
        }
        Ok((pages, capped))
    }

    /// Which of `pages` hold which of `chunk`'s tracks: the same canonical URL (compared by
    /// [`url_match_key`], so a share link or another host is the same track and a longer path
    /// is not), the same SoundCloud id, or (when enabled) the same title and artist.
    async fn match_pages(
        &self,
        chunk: &[&Track],
        pages: &[Value],
        out: &mut HashMap<TrackKey, ExistingPage>,
    ) -> Result<(), NotionError> {
        let url = self.prop(Role::Url);
        let id = self.prop(Role::SoundCloudId);
        let title = self.prop(Role::Title);
        let artist = self.prop(Role::Artist);
        let text = |page: &Value, p: Option<&Property>| {
            p.and_then(|p| props::as_text(&page["properties"][&p.name]))
        };
        // The chunk's keys, indexed once, so each page costs a few map lookups.
        let keys: Vec<Keys> = chunk.iter().map(|t| keys(t)).collect();
        let mut by_url: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if !k.url.is_empty() {
                by_url.entry(&k.url).or_default().push(i);
            }
            if let Some(sid) = &k.id {
                by_id.entry(sid).or_default().push(i);
            }
            if self.inner.match_title_artist && !k.title.is_empty() {
                by_pair.entry((&k.title, &k.artist)).or_default().push(i);
            }
        }
        let mut candidates: HashMap<&TrackKey, Vec<&Value>> = HashMap::new();
        for page in pages {
            let page_url = text(page, url).map(|u| url_match_key(&canonical_url(&u)));
            let page_id = text(page, id);
            let page_title = text(page, title).map(|s| props::clean_text(&s));
            let page_artist = text(page, artist).map(|s| props::clean_text(&s));
            let mut hits: Vec<usize> = Vec::new();
            if let Some(found) = page_url.as_deref().and_then(|u| by_url.get(u)) {
                hits.extend(found);
            }
            if let Some(found) = page_id.as_deref().and_then(|i| by_id.get(i)) {
                hits.extend(found);
            }
            if let (Some(t), Some(a)) = (&page_title, &page_artist)
                && let Some(found) = by_pair.get(&(t.as_str(), a.as_str()))
            {
                hits.extend(found);
            }
            hits.sort_unstable();
            hits.dedup();
            for i in hits {
                candidates.entry(&chunk[i].key).or_default().push(page);
            }
        }
        for (key, mut found) in candidates {
            found.sort_by(|a, b| a["created_time"].as_str().cmp(&b["created_time"].as_str()));
            found.dedup_by(|a, b| a["id"] == b["id"]);
            if found.len() > 1 {
                let ids: Vec<&str> = found.iter().filter_map(|p| p["id"].as_str()).collect();
                tracing::warn!(track = %key, pages = ?ids, "several Notion pages hold this track; using the oldest");
            }
            let existing = self.existing_page(found[0]).await?;
            out.insert(key.clone(), existing);
        }
        Ok(())
    }

    async fn existing_page(&self, page: &Value) -> Result<ExistingPage, NotionError> {
        let page_id = page["id"].as_str().unwrap_or("").to_string();
        let prop_value = |role: Role| self.prop(role).map(|p| &page["properties"][&p.name]);
        let playlists = match (self.prop(Role::Playlists), prop_value(Role::Playlists)) {
            (Some(p), Some(v)) => self.playlist_values(&page_id, p, v).await?,
            _ => Vec::new(),
        };
        Ok(ExistingPage {
            playlists,
            downloaded: prop_value(Role::Downloaded)
                .map(|v| v["checkbox"].as_bool().unwrap_or(false)),
            file_path: prop_value(Role::FilePath).and_then(props::as_text),
            created_time: page["created_time"].as_str().unwrap_or("").to_string(),
            page_id,
        })
    }

    async fn playlist_values(
        &self,
        page_id: &str,
        p: &Property,
        v: &Value,
    ) -> Result<Vec<String>, NotionError> {
        Ok(match p.kind {
            PropType::Relation => {
                if v["has_more"] == true {
                    // Page objects carry at most 25 relations; writing back a truncated list
                    // would drop the others, so read the whole property.
                    self.full_relation(page_id, p).await?
                } else {
                    v["relation"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r["id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                }
            }
            PropType::MultiSelect => v["multi_select"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            PropType::Select => v["select"]["name"]
                .as_str()
                .map(|s| vec![s.to_string()])
                .unwrap_or_default(),
            PropType::RichText => split_list(&props::plain_text(&v["rich_text"])),
            _ => Vec::new(),
        })
    }

    /// Every related page id, through the page-property endpoint, 100 at a time. The cursor
    /// is opaque and may hold `+`, `/` or `=`: it is URL-encoded, or a server would read a `+`
    /// as a space and refuse it.
    async fn full_relation(&self, page_id: &str, p: &Property) -> Result<Vec<String>, NotionError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        let what = format!("the {:?} property of page {page_id}", p.name);
        loop {
            let query = {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("page_size", "100");
                if let Some(c) = &cursor {
                    q.append_pair("start_cursor", c);
                }
                q.finish()
            };
            let path = format!("/v1/pages/{page_id}/properties/{}?{query}", p.id);
            let v = self.request(Method::GET, &path, None, &what).await?;
            if let Some(r) = v["results"].as_array() {
                ids.extend(
                    r.iter()
                        .filter_map(|x| x["relation"]["id"].as_str().map(str::to_string)),
                );
            }
            match v["next_cursor"].as_str() {
                Some(c) if v["has_more"] == true => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(ids)
    }

    fn track_properties(
        &self,
        track: &Track,
        tag: &PlaylistTag,
        playlist_url: &str,
        downloaded: Option<&Path>,
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
        if let Some(path) = downloaded {
            vals.push((Role::Downloaded, Val::Bool(true)));
            vals.push((Role::FilePath, Val::Text(path.display().to_string())));
        }
        self.encode_all(vals)
    }

    fn encode_all(&self, vals: Vec<(Role, Val)>) -> Map<String, Value> {
        let mut out = Map::new();
        for (role, v) in vals {
            if let Some(p) = self.prop(role)
                && let Some(value) = props::encode(p, &v)
            {
                out.insert(p.name.clone(), value);
            }
        }
        out
    }

    /// Creates the page for a track and returns its id. A lost answer never leads to a second
    /// page: see the module invariants.
    pub async fn create(
        &self,
        track: &Track,
        tag: &PlaylistTag,
        playlist_url: &str,
        downloaded: Option<&Path>,
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
    async fn create_resolved<F, Fut>(
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
                    tracing::info!(what, page = %id, "Notion saved the page but could not answer; using the saved page");
                    return Ok(id);
                }
                Err(CreateFailure::Failed(e)) => return Err(e),
                Err(CreateFailure::Uncertain(a)) => a,
            };
            // Whatever the lost request wrote, it wrote before we saw it fail.
            let failed_at = Instant::now();
            tracing::warn!(
                what,
                "the create's outcome is unknown; looking the page up before trying again"
            );
            tokio::time::sleep(client.backoff(sends)).await;
            if let Some(id) = find().await? {
                tracing::info!(what, page = %id, "the page was saved after all; using it");
                return Ok(id);
            }
            // Notion's query index can lag behind a fresh write: a page saved a moment ago may
            // not be found yet. Look once more when the lag has passed, or a re-send would
            // make a duplicate.
            let lag = client.opts.index_lag.saturating_sub(failed_at.elapsed());
            if !lag.is_zero() {
                tokio::time::sleep(lag).await;
                if let Some(id) = find().await? {
                    tracing::info!(what, page = %id, "the page showed up in a second lookup; using it");
                    return Ok(id);
                }
            }
            // The backoff is already behind us: the re-send only needs its retry.
            client.may_retry(what, &lost, sends, &self.budget)?;
        }
    }

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

    /// Sets the downloaded checkbox and the file path, whichever are mapped. No request at all
    /// when neither is.
    pub async fn set_downloaded(&self, page_id: &str, path: &Path) -> Result<(), NotionError> {
        let properties = self.encode_all(vec![
            (Role::Downloaded, Val::Bool(true)),
            (Role::FilePath, Val::Text(path.display().to_string())),
        ]);
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
                    tracing::info!(playlist = %clean, page = id, "the cached playlist page is gone; finding it by name");
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

fn page_id_of(v: &Value, what: &str) -> Result<String, NotionError> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| NotionError::Protocol {
            what: what.to_string(),
            message: "the answer has no page id".into(),
        })
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

/// A rich_text playlist list is written as "a, b, c".
fn split_list(s: &str) -> Vec<String> {
    s.split(", ")
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}
