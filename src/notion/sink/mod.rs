//! The operations the sync engine calls: look tracks up, create pages, tag them with playlists,
//! mark them downloaded, trash them.
//!
//! One [`Sink`], its operations split by job; each file states the invariants it keeps:
//! - [`lookup`]: finding the pages that hold tracks (batched, every pasted form of a link);
//! - [`create`]: creating pages, never two for one track even when an answer is lost;
//! - [`update`]: changing existing pages without dropping what a person put there;
//! - [`playlist_tag`]: a playlist's name or related page, as the playlist property needs.
//!
//! This file holds the handle itself: cheap clones that share the client, the limiter and the
//! caches, each drawing its retries from the budget it carries.

mod create;
mod lookup;
mod playlist_tag;
mod update;

use super::budget::RetryBudget;
use super::client::Client;
use super::props::{self, Val};
use super::schema::{DataSourceSchema, MappingRow, PropType, Property, PropertyMap, Role};
use super::{DataSourceInfo, NotionError};
use reqwest::Method;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The target of this module's log lines, whichever file they come from: the module path it
/// had as one file, so log filters and whoever reads the log (or its JSON `target`) see the
/// same names as before the split.
const LOG_TARGET: &str = "playlistd::notion::sink";

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
    /// What the page already holds of the analysis: kept unless `overwrite_analysis`.
    pub analysis: PageAnalysis,
}

/// What a downloaded track puts on its page, in one request: `Downloaded`, the paths of its
/// files, and the tempo and key. The caller leaves out (as `None`) a tempo or key the page
/// keeps; the sink writes what it is given, to the properties that are mapped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageFiles {
    /// `None` when the page was told of the file before: only the rest is sent.
    pub original: Option<PathBuf>,
    pub aiff: Option<PathBuf>,
    pub wav: Option<PathBuf>,
    /// BPM, one decimal.
    pub tempo: Option<f64>,
    /// In the configured notation.
    pub key: Option<String>,
}

impl PageFiles {
    pub(crate) fn values(&self) -> Vec<(Role, Val)> {
        let text = |p: &Path| Val::Text(p.display().to_string());
        let mut vals = Vec::new();
        if let Some(original) = &self.original {
            vals.push((Role::Downloaded, Val::Bool(true)));
            vals.push((Role::FilePath, text(original)));
            if original
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("m4a"))
            {
                vals.push((Role::M4aPath, text(original)));
            }
        }
        if let Some(p) = &self.aiff {
            vals.push((Role::AiffPath, text(p)));
        }
        if let Some(p) = &self.wav {
            vals.push((Role::WavPath, text(p)));
        }
        if let Some(t) = self.tempo {
            vals.push((Role::Tempo, Val::Number((t * 10.0).round() / 10.0)));
        }
        if let Some(k) = &self.key {
            vals.push((Role::Key, Val::Text(k.clone())));
        }
        vals
    }
}

/// Whether a page's `Tempo` and `Key` hold a value (a person's, or the replaced system's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageAnalysis {
    pub tempo: bool,
    pub key: bool,
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
}
