//! A stateful stand-in for the Notion REST API (2025-09-03 data-source model) on 127.0.0.1.
//!
//! Tests, `playlistd demo` and the benchmarks point the real client at it, so it must refuse what
//! the real service refuses (reference/notion-api.md is the contract): bearer token, the
//! `Notion-Version` header, shared-with-the-integration checks, property names and value shapes,
//! text and array limits, commas in select names, the two-level filter nesting limit (and at
//! most 100 conditions in one filter, playlistd's own cap), page_size
//! ≤ 100 and the 10,000-result cap of one query. Error bodies are the real error object.
//!
//! Invariants:
//! - Every request is logged and counted, including the ones a fault answers.
//! - `created_time` comes from a fake clock that ticks one second per created page, so creation
//!   times are strictly increasing and windowed queries by `created_time` are exact.
//! - A write is all-or-nothing: a request with one bad property changes nothing.
//! - Faults that model "the write happened but the answer got lost" (`SavedButUnavailable`,
//!   `Delay`, `ResetAfter`) apply the write first; the others leave the state untouched.
//! - With `index_lag` set (off by default), a page created through the API is invisible to
//!   `/query` for that long, as Notion's search index lags behind writes, while
//!   `GET /v1/pages/{id}` sees it at once. Seeded pages are indexed at once: they stand for
//!   pages made long before the test.
//! - Query strings are decoded as a real server decodes them (`+` is a space, `%2B` a plus),
//!   and the page-property cursors contain `+`, `/` and `=`, so a client that pastes a cursor
//!   into a URL without encoding it gets a 400, as it would from Notion.
//! - Writes take at most 100 relation items (400 `validation_error` otherwise), but a page can
//!   be seeded with more ([`FakeNotion::seed_relation`]), as people build them up over many
//!   edits; reads page through them like Notion's.
//!
//! Connection resets are real: the server runs on a listener whose streams can be killed from the
//! handler, so reqwest sees a genuine connection error, not a status code.
//!
//! Layout, by resource as the API reference is organised: `databases` (the specs the fake starts
//! with, `GET /v1/databases/{id}`), `data_sources` (`GET /v1/data_sources/{id}`, the query with
//! its filters and sorts), `pages` (create, read, update, property items), `properties` (what a
//! property value may be), `users` (`GET /v1/users/me`). `reply` builds Notion's answers and the
//! fault answers, `wire` its ids and texts; the killable connections are the crate's `conn`,
//! shared with the notification receivers. This file holds the server, the store every resource
//! works on, fault injection and the request log.

mod data_sources;
mod databases;
mod pages;
mod properties;
mod reply;
mod users;
mod wire;

#[cfg(test)]
mod tests;

pub use data_sources::MAX_FILTER_CONDITIONS;
pub use databases::{DataSourceSpec, DatabaseSpec, PropKind, PropSpec};
pub use pages::FakePage;

use crate::conn::{ConnHandle, KillListener};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use reply::{Reply, cloudflare_html, fault_reply, to_response};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wire::{compact, dashed, uuid, valid_id};

/// The first version that knows `/v1/data_sources`.
const DATA_SOURCES_VERSION: &str = "2025-09-03";
/// The version that removed `archived`.
const NO_ARCHIVED_VERSION: &str = "2026-03-11";
/// Related pages listed in a page object; more are behind the page property endpoint.
const RELATION_PAGE_LIMIT: usize = 25;
const SHARE_HINT: &str =
    "Make sure the relevant pages and databases are shared with your integration.";

#[derive(Debug, Clone)]
pub struct FakeNotionOptions {
    pub token: String,
    /// The first database is "the" tracks database that the accessors refer to.
    pub databases: Vec<DatabaseSpec>,
    /// Added before every answer (benchmarks).
    pub latency: Duration,
    /// Results one query (same filter and sort) may return in total; 10,000 in the real API.
    pub query_result_cap: usize,
    /// Seeds ids and random faults, so runs are reproducible.
    pub seed: u64,
    /// How long a page created through the API stays invisible to `/query` (zero: at once).
    pub index_lag: Duration,
    pub bot_name: String,
    pub workspace_name: String,
}

impl Default for FakeNotionOptions {
    fn default() -> Self {
        FakeNotionOptions {
            token: "ntn_fake_0123456789abcdef0123456789abcdef".into(),
            databases: vec![DatabaseSpec::music_tracks(), DatabaseSpec::playlists()],
            latency: Duration::ZERO,
            query_result_cap: 10_000,
            seed: 7,
            index_lag: Duration::ZERO,
            bot_name: "playlistd".into(),
            workspace_name: "Fake Workspace".into(),
        }
    }
}

impl FakeNotionOptions {
    /// Default options with a custom tracks schema (the "Playlists" database is kept).
    pub fn with_tracks(properties: Vec<(&str, PropKind)>) -> Self {
        let mut o = Self::default();
        o.databases[0] = DatabaseSpec::single("Music Tracks", properties);
        o
    }
}

// ---------------------------------------------------------------------------------------------
// Faults and the request log
// ---------------------------------------------------------------------------------------------

/// Which requests a fault applies to; also how the log classifies requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Matcher only: every request.
    Any,
    UsersMe,
    GetDatabase,
    GetDataSource,
    Query,
    Create,
    Update,
    GetPage,
    Other,
}

impl Endpoint {
    fn matches(self, actual: Endpoint) -> bool {
        self == Endpoint::Any || self == actual
    }

    fn classify(method: &Method, path: &str) -> Endpoint {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "users", "me"]) => Endpoint::UsersMe,
            ("GET", ["v1", "databases", _]) => Endpoint::GetDatabase,
            ("GET", ["v1", "data_sources", _]) => Endpoint::GetDataSource,
            ("POST", ["v1", "data_sources", _, "query"]) => Endpoint::Query,
            ("POST", ["v1", "pages"]) => Endpoint::Create,
            ("PATCH", ["v1", "pages", _]) => Endpoint::Update,
            ("GET", ["v1", "pages", ..]) => Endpoint::GetPage,
            _ => Endpoint::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 500, 502, 503, 504 or 409 with Notion's code and message for that status.
    Status(u16),
    /// 429 `rate_limited` with `Retry-After` and `additional_data.retry_after`.
    RateLimited { retry_after_secs: u64 },
    /// 429 with `rate_limit_reason: public_api_request_blocked` (must not be retried).
    Blocked,
    /// 529 `service_overload` with `Retry-After`.
    Overloaded { retry_after_secs: u64 },
    /// The write is applied, then 503 "The change was saved..." with `committed_resource_id`.
    SavedButUnavailable,
    /// The request is processed, the answer is sent this much later.
    Delay(Duration),
    /// The connection is dropped before the request is processed.
    ResetBefore,
    /// The request is processed, then the connection is dropped instead of answering.
    ResetAfter,
    /// An HTML 502 from Cloudflare, no JSON body.
    CloudflareHtml,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Time since the fake started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub endpoint: Endpoint,
    /// 0 when the connection was dropped.
    pub status: u16,
}

// ---------------------------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------------------------

/// A running fake. Dropping it stops the server.
pub struct FakeNotion {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeNotion {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNotion {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(opts: FakeNotionOptions) -> FakeNotion {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            token: Mutex::new(opts.token.clone()),
            started: Instant::now(),
            state: Mutex::new(FakeState::new(&opts)),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                KillListener(listener),
                app.into_make_service_with_connect_info::<ConnHandle>(),
            )
            .await;
        });
        FakeNotion { addr, shared, task }
    }

    /// Base URL to configure as `notion.api_base` (no trailing `/v1`).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token(&self) -> String {
        self.shared
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Makes `token` the integration's only valid secret, as when a person rotates or revokes
    /// it in Notion's settings: requests with the old one get 401 `unauthorized` from now on.
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap_or_else(|e| e.into_inner()) = token.to_string();
    }
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The tracks database id (dashed, as Notion returns it).
    pub fn database_id(&self) -> String {
        self.state().databases[0].id.clone()
    }
    /// The tracks database's first data source.
    pub fn data_source_id(&self) -> String {
        self.state().databases[0].data_sources[0].clone()
    }
    /// All data sources of the tracks database, in order.
    pub fn data_source_ids(&self) -> Vec<String> {
        self.state().databases[0].data_sources.clone()
    }
    pub fn database_id_of(&self, title: &str) -> Option<String> {
        self.state()
            .databases
            .iter()
            .find(|d| d.title == title)
            .map(|d| d.id.clone())
    }
    pub fn data_source_id_of(&self, database_title: &str) -> Option<String> {
        let s = self.state();
        s.databases
            .iter()
            .find(|d| d.title == database_title)
            .map(|d| d.data_sources[0].clone())
    }
    /// The "Playlists" database's data source. Panics if the options have none.
    pub fn playlists_data_source_id(&self) -> String {
        self.data_source_id_of("Playlists")
            .expect("no Playlists database in this fake")
    }
    pub fn playlists_database_id(&self) -> String {
        self.database_id_of("Playlists")
            .expect("no Playlists database in this fake")
    }

    /// Shares or unshares the tracks database with the integration.
    pub fn set_shared(&self, shared: bool) {
        let id = self.database_id();
        self.set_database_shared(&id, shared);
    }
    pub fn set_database_shared(&self, database_id: &str, shared: bool) {
        let key = compact(database_id);
        let mut s = self.state();
        if shared {
            s.unshared.remove(&key);
        } else {
            s.unshared.insert(key);
        }
    }

    /// Answers the next `times` requests matching `endpoint` with `fault`. Scripted faults are
    /// used in the order they were injected, before any random fault.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        self.state().injections.push(Injection {
            endpoint,
            fault,
            remaining: times,
        });
    }
    /// Every request (any endpoint) gets a fault with probability `rate`, drawn from `kinds`.
    pub fn set_random_faults(&self, rate: f64, seed: u64, kinds: Vec<Fault>) {
        self.state().random = if kinds.is_empty() || rate <= 0.0 {
            None
        } else {
            Some(RandomFaults {
                rate,
                rng: fastrand::Rng::with_seed(seed),
                kinds,
            })
        };
    }
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.injections.clear();
        s.random = None;
    }
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }
    /// Pages created from now on stay out of `/query` answers for `lag`.
    pub fn set_index_lag(&self, lag: Duration) {
        self.state().index_lag = lag;
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.clone()
    }
    pub fn request_count(&self) -> usize {
        self.state().log.len()
    }
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.state()
            .log
            .iter()
            .filter(|r| endpoint.matches(r.endpoint))
            .count()
    }
    pub fn clear_log(&self) {
        self.state().log.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    token: Mutex<String>,
    started: Instant,
    state: Mutex<FakeState>,
}

struct Injection {
    endpoint: Endpoint,
    fault: Fault,
    remaining: u32,
}

struct RandomFaults {
    rate: f64,
    rng: fastrand::Rng,
    kinds: Vec<Fault>,
}

struct Database {
    id: String,
    title: String,
    data_sources: Vec<String>,
}

struct PropSchema {
    id: String,
    name: String,
    kind: PropKind,
    /// Relation target data source id (dashed).
    target: Option<String>,
    /// (id, name, color) of select / multi_select / status options.
    options: Vec<(String, String, String)>,
}

struct DataSource {
    id: String,
    name: String,
    database_id: String,
    props: Vec<PropSchema>,
}

struct Page {
    id: String,
    data_source_id: String,
    /// Keyed by property id; values in the response shape without `id`/`type`.
    props: HashMap<String, Value>,
    cover: Value,
    icon: Value,
    in_trash: bool,
    created: DateTime<Utc>,
    edited: DateTime<Utc>,
    seq: usize,
    /// From when `/query` sees the page (`index_lag` after an API create).
    indexed_at: Instant,
}

struct FakeState {
    databases: Vec<Database>,
    data_sources: Vec<DataSource>,
    pages: Vec<Page>,
    index: HashMap<String, usize>,
    unshared: HashSet<String>,
    clock: DateTime<Utc>,
    rng: fastrand::Rng,
    injections: Vec<Injection>,
    random: Option<RandomFaults>,
    latency: Duration,
    index_lag: Duration,
    log: Vec<RequestRecord>,
    query_cap: usize,
    bot_id: String,
    bot_name: String,
    workspace_id: String,
    workspace_name: String,
}

impl FakeState {
    fn new(opts: &FakeNotionOptions) -> FakeState {
        let mut rng = fastrand::Rng::with_seed(opts.seed);
        let mut databases = Vec::new();
        let mut data_sources = Vec::new();
        let mut pending_relations = Vec::new();
        for spec in &opts.databases {
            let db_id = uuid(&mut rng);
            let mut ds_ids = Vec::new();
            for ds_spec in &spec.data_sources {
                let ds_id = uuid(&mut rng);
                let mut props = Vec::new();
                for (i, p) in ds_spec.properties.iter().enumerate() {
                    let id = if p.kind == PropKind::Title {
                        "title".to_string()
                    } else {
                        // Real property ids are short, URL-encoded strings.
                        format!(
                            "%3A{}{:02}",
                            p.name
                                .chars()
                                .filter(|c| c.is_ascii_alphanumeric())
                                .take(3)
                                .collect::<String>(),
                            i
                        )
                    };
                    if let PropKind::Relation(target) = &p.kind {
                        pending_relations.push((data_sources.len(), props.len(), target.clone()));
                    }
                    props.push(PropSchema {
                        id,
                        name: p.name.clone(),
                        kind: p.kind.clone(),
                        target: None,
                        options: vec![],
                    });
                }
                data_sources.push(DataSource {
                    id: ds_id.clone(),
                    name: ds_spec.name.clone(),
                    database_id: db_id.clone(),
                    props,
                });
                ds_ids.push(ds_id);
            }
            databases.push(Database {
                id: db_id,
                title: spec.title.clone(),
                data_sources: ds_ids,
            });
        }
        for (ds, prop, target) in pending_relations {
            let t = databases
                .iter()
                .find(|d| d.title == target)
                .map(|d| d.data_sources[0].clone());
            data_sources[ds].props[prop].target = Some(t.unwrap_or_else(|| {
                panic!("relation target database {target:?} is not in the fake's options")
            }));
        }
        let bot_id = uuid(&mut rng);
        let workspace_id = uuid(&mut rng);
        FakeState {
            databases,
            data_sources,
            pages: Vec::new(),
            index: HashMap::new(),
            unshared: HashSet::new(),
            clock: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("static date"),
            rng,
            injections: Vec::new(),
            random: None,
            latency: opts.latency,
            index_lag: opts.index_lag,
            log: Vec::new(),
            query_cap: opts.query_result_cap,
            bot_id,
            bot_name: opts.bot_name.clone(),
            workspace_id,
            workspace_name: opts.workspace_name.clone(),
        }
    }

    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += chrono::Duration::seconds(1);
        self.clock
    }

    fn take_fault(&mut self, ep: Endpoint) -> Option<Fault> {
        let mut found = None;
        for inj in self.injections.iter_mut() {
            if inj.remaining > 0 && inj.endpoint.matches(ep) {
                inj.remaining -= 1;
                found = Some(inj.fault.clone());
                break;
            }
        }
        self.injections.retain(|i| i.remaining > 0);
        if found.is_some() {
            return found;
        }
        let r = self.random.as_mut()?;
        if r.rng.f64() < r.rate {
            let i = r.rng.usize(..r.kinds.len());
            return Some(r.kinds[i].clone());
        }
        None
    }

    fn page_index(&self, id: &str) -> Option<usize> {
        self.index.get(&compact(id)).copied()
    }

    fn db_index(&self, id: &str) -> Option<usize> {
        let k = compact(id);
        self.databases.iter().position(|d| compact(&d.id) == k)
    }

    fn ds_index(&self, id: &str) -> Option<usize> {
        let k = compact(id);
        self.data_sources.iter().position(|d| compact(&d.id) == k)
    }

    fn db_shared(&self, db_id: &str) -> bool {
        !self.unshared.contains(&compact(db_id))
    }

    /// A data source the integration can see.
    fn visible_ds(&self, id: &str) -> Result<usize, Reply> {
        match self.ds_index(id) {
            Some(i) if self.db_shared(&self.data_sources[i].database_id) => Ok(i),
            _ => Err(Reply::err(
                404,
                "object_not_found",
                format!(
                    "Could not find data_source with ID: {}. {SHARE_HINT}",
                    dashed(id)
                ),
            )),
        }
    }

    fn visible_page(&self, id: &str) -> Result<usize, Reply> {
        let not_found = || {
            Reply::err(
                404,
                "object_not_found",
                format!("Could not find page with ID: {}. {SHARE_HINT}", dashed(id)),
            )
        };
        let i = self.page_index(id).ok_or_else(not_found)?;
        let ds = self
            .ds_index(&self.pages[i].data_source_id)
            .ok_or_else(not_found)?;
        if !self.db_shared(&self.data_sources[ds].database_id) {
            return Err(not_found());
        }
        Ok(i)
    }

    // ----- request processing -----

    fn process(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        version: &str,
        body: &[u8],
    ) -> Reply {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let data_sources_path = segs.get(1) == Some(&"data_sources");
        if data_sources_path && version < DATA_SOURCES_VERSION {
            return Reply::err(400, "invalid_request_url", "Invalid request URL.");
        }
        let parsed_body = || -> Result<Map<String, Value>, Reply> {
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(Map::new());
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(Reply::validation(
                    "body failed validation: body should be an object.",
                )),
                Err(_) => Err(Reply::err(400, "invalid_json", "Error parsing JSON body.")),
            }
        };
        let id_check = |what: &str, id: &str| -> Result<(), Reply> {
            if valid_id(id) {
                Ok(())
            } else {
                Err(Reply::validation(format!(
                    "path failed validation: path.{what} should be a valid uuid, instead was `\"{id}\"`."
                )))
            }
        };
        let result = match (method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "users", "me"]) => Ok(self.users_me()),
            ("GET", ["v1", "databases", id]) => {
                id_check("database_id", id).and_then(|_| self.get_database(id, version))
            }
            ("GET", ["v1", "data_sources", id]) => {
                id_check("data_source_id", id).and_then(|_| self.get_data_source(id))
            }
            ("POST", ["v1", "data_sources", id, "query"]) => id_check("data_source_id", id)
                .and_then(|_| parsed_body())
                .and_then(|b| self.query(id, &b)),
            ("POST", ["v1", "pages"]) => parsed_body().and_then(|b| self.post_page(&b, version)),
            ("GET", ["v1", "pages", id]) => id_check("page_id", id)
                .and_then(|_| self.visible_page(id))
                .map(|i| Reply::ok(self.page_json(i, version))),
            ("GET", ["v1", "pages", id, "properties", pid]) => {
                id_check("page_id", id).and_then(|_| self.page_property(id, pid, query))
            }
            ("PATCH", ["v1", "pages", id]) => id_check("page_id", id)
                .and_then(|_| parsed_body())
                .and_then(|b| self.patch_page(id, &b, version)),
            _ => Err(Reply::err(
                400,
                "invalid_request_url",
                "Invalid request URL.",
            )),
        };
        result.unwrap_or_else(|e| e)
    }
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = shared.started.elapsed();
    let path = uri.path().to_string();
    let endpoint = Endpoint::classify(&method, &path);
    let lock = || shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let (latency, fault) = {
        let mut s = lock();
        (s.latency, s.take_fault(endpoint))
    };
    let log = |status: u16| {
        lock().log.push(RequestRecord {
            at,
            method: method.to_string(),
            path: path.clone(),
            endpoint,
            status,
        });
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    // Faults that answer without processing.
    match &fault {
        Some(Fault::ResetBefore) => {
            log(0);
            conn.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::CloudflareHtml) => {
            log(502);
            return cloudflare_html();
        }
        Some(f) => {
            if let Some(r) = fault_reply(f) {
                log(r.status);
                return to_response(r);
            }
        }
        None => {}
    }

    let reply = answer(&shared, &method, &uri, &headers, &body);

    match fault {
        Some(Fault::SavedButUnavailable) => {
            let committed =
                if reply.is_success() && method != Method::GET && endpoint != Endpoint::Query {
                    reply.body["id"].as_str().map(str::to_string)
                } else {
                    None
                };
            let r = match committed {
                Some(id) => Reply::err_with(
                    503,
                    "service_unavailable",
                    "The change was saved, but the response could not be built in time. Read the object again instead of repeating the write.",
                    Some(json!({
                        "retry_guidance": ["Read the object again to confirm the saved change.", "Do not repeat the write."],
                        "committed_resource_id": id,
                    })),
                ),
                None => Reply::err(
                    503,
                    "service_unavailable",
                    "Public API service is temporarily unavailable, please try again later.",
                ),
            };
            log(r.status);
            to_response(r)
        }
        Some(Fault::Delay(d)) => {
            log(reply.status);
            tokio::time::sleep(d).await;
            to_response(reply)
        }
        Some(Fault::ResetAfter) => {
            log(0);
            conn.kill();
            to_response(reply)
        }
        _ => {
            log(reply.status);
            to_response(reply)
        }
    }
}

/// The answer when no fault cuts in: bearer token, then `Notion-Version`, then the request.
fn answer(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let version = headers
        .get("notion-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = shared
        .token
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if auth.strip_prefix("Bearer ") != Some(token.as_str()) {
        Reply::err(401, "unauthorized", "API token is invalid.")
    } else if let Some(version) = version {
        if chrono::NaiveDate::parse_from_str(&version, "%Y-%m-%d").is_err() {
            Reply::validation(format!(
                "Notion-Version header failed validation: `{version}` is not a valid version."
            ))
        } else {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.process(
                method,
                uri.path(),
                uri.query().unwrap_or(""),
                &version,
                body,
            )
        }
    } else {
        Reply::err(
            400,
            "missing_version",
            "Notion-Version header should be defined, instead was `undefined`.",
        )
    }
}
