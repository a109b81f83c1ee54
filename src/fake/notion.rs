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

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The first version that knows `/v1/data_sources`.
const DATA_SOURCES_VERSION: &str = "2025-09-03";
/// The version that removed `archived`.
const NO_ARCHIVED_VERSION: &str = "2026-03-11";
/// Related pages listed in a page object; more are behind the page property endpoint.
const RELATION_PAGE_LIMIT: usize = 25;
/// Conditions one query may hold. Notion documents no limit (reference/notion-api.md §10);
/// playlistd keeps to 100 and the fake refuses more, so a client that forgets is caught.
pub const MAX_FILTER_CONDITIONS: usize = 100;
const SHARE_HINT: &str =
    "Make sure the relevant pages and databases are shared with your integration.";

// ---------------------------------------------------------------------------------------------
// Schema specs
// ---------------------------------------------------------------------------------------------

/// A property type the fake understands. Read-only kinds exist so writes to them can be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropKind {
    Title,
    RichText,
    Url,
    Number,
    Checkbox,
    Select,
    MultiSelect,
    Date,
    Files,
    Email,
    Status,
    /// A relation to the first data source of the database with this title.
    Relation(String),
    CreatedTime,
    Formula,
}

impl PropKind {
    fn key(&self) -> &'static str {
        match self {
            PropKind::Title => "title",
            PropKind::RichText => "rich_text",
            PropKind::Url => "url",
            PropKind::Number => "number",
            PropKind::Checkbox => "checkbox",
            PropKind::Select => "select",
            PropKind::MultiSelect => "multi_select",
            PropKind::Date => "date",
            PropKind::Files => "files",
            PropKind::Email => "email",
            PropKind::Status => "status",
            PropKind::Relation(_) => "relation",
            PropKind::CreatedTime => "created_time",
            PropKind::Formula => "formula",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PropSpec {
    pub name: String,
    pub kind: PropKind,
}

impl PropSpec {
    pub fn new(name: &str, kind: PropKind) -> Self {
        PropSpec {
            name: name.to_string(),
            kind,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataSourceSpec {
    pub name: String,
    pub properties: Vec<PropSpec>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    pub title: String,
    pub data_sources: Vec<DataSourceSpec>,
}

impl DatabaseSpec {
    /// A database with one data source of the same name.
    pub fn single(title: &str, properties: Vec<(&str, PropKind)>) -> Self {
        DatabaseSpec {
            title: title.to_string(),
            data_sources: vec![DataSourceSpec {
                name: title.to_string(),
                properties: properties
                    .into_iter()
                    .map(|(n, k)| PropSpec::new(n, k))
                    .collect(),
            }],
        }
    }

    /// The real "Music Tracks" schema (reference/seed-system.md §1), trimmed to what playlistd
    /// touches plus a few columns it must leave alone.
    pub fn music_tracks() -> Self {
        Self::single(
            "Music Tracks",
            vec![
                ("Title", PropKind::Title),
                ("Artist Name", PropKind::RichText),
                ("SoundCloud URL", PropKind::Url),
                ("Playlists", PropKind::Relation("Playlists".into())),
                ("Playlist URL", PropKind::Url),
                ("Genre", PropKind::Select),
                ("Audio Duration (seconds)", PropKind::Number),
                ("Downloaded", PropKind::Checkbox),
                ("File Path", PropKind::RichText),
                ("Tempo", PropKind::Number),
                ("Key", PropKind::RichText),
                ("Eagle File ID", PropKind::RichText),
                ("Created time", PropKind::CreatedTime),
            ],
        )
    }

    /// The related "Playlists" database.
    pub fn playlists() -> Self {
        Self::single(
            "Playlists",
            vec![("Name", PropKind::Title), ("Playlist URL", PropKind::Url)],
        )
    }

    /// Adds a second (third...) data source to this database.
    pub fn with_data_source(mut self, name: &str, properties: Vec<(&str, PropKind)>) -> Self {
        self.data_sources.push(DataSourceSpec {
            name: name.to_string(),
            properties: properties
                .into_iter()
                .map(|(n, k)| PropSpec::new(n, k))
                .collect(),
        });
        self
    }
}

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
            token: opts.token.clone(),
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
        self.shared.token.clone()
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
    /// Renames a property of the tracks data source, as a user editing the schema would.
    pub fn rename_property(&self, old: &str, new: &str) {
        let mut s = self.state();
        let ds = s.databases[0].data_sources[0].clone();
        let i = s.ds_index(&ds).expect("tracks data source");
        if let Some(p) = s.data_sources[i].props.iter_mut().find(|p| p.name == old) {
            p.name = new.to_string();
        }
    }

    /// Select options currently defined on a property (auto-created ones included).
    pub fn select_options(&self, prop: &str) -> Vec<String> {
        let s = self.state();
        let ds = &s.data_sources[0];
        ds.props
            .iter()
            .find(|p| p.name == prop)
            .map(|p| p.options.iter().map(|o| o.1.clone()).collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Killable connections
// ---------------------------------------------------------------------------------------------

struct KillListener(TcpListener);

struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

/// Per-connection handle given to the handler through `ConnectInfo`.
#[derive(Clone, Debug)]
struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Listener for KillListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let killed = Arc::new(AtomicBool::new(false));
                    let handle = ConnHandle {
                        killed: killed.clone(),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            killed,
                        },
                        handle,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ConnHandle {
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl KillableStream {
    /// Once killed, every operation fails, so hyper drops the connection; zero linger turns the
    /// close into a TCP reset, which is what a client sees from a real middlebox dropping it.
    fn check(&mut self) -> std::io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault: connection reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    token: String,
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

/// A finished answer: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            headers: vec![],
        }
    }
    fn err(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::err_with(status, code, message, None)
    }
    fn err_with(
        status: u16,
        code: &str,
        message: impl Into<String>,
        additional: Option<Value>,
    ) -> Reply {
        let mut body = json!({
            "object": "error",
            "status": status,
            "code": code,
            "message": message.into(),
            "request_id": request_id(),
        });
        if let Some(a) = additional {
            body["additional_data"] = a;
        }
        Reply {
            status,
            body,
            headers: vec![],
        }
    }
    fn validation(message: impl Into<String>) -> Reply {
        Reply::err(400, "validation_error", message)
    }
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn request_id() -> String {
    uuid(&mut fastrand::Rng::new())
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = rng.u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Ids are accepted with or without dashes, in any case.
fn compact(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn valid_id(id: &str) -> bool {
    let c = compact(id);
    c.len() == 32 && c.chars().all(|x| x.is_ascii_hexdigit())
}

fn dashed(id: &str) -> String {
    let h = compact(id);
    if h.len() != 32 {
        return id.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn plain_text(items: &Value) -> String {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["plain_text"].as_str().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default()
}

/// Notion measures text limits in UTF-16 code units (JavaScript string length).
fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

const COLORS: [&str; 9] = [
    "default", "gray", "brown", "orange", "yellow", "green", "blue", "purple", "pink",
];

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

    fn fake_page(&self, p: &Page) -> FakePage {
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
    fn page_property(&self, page_id: &str, prop_id: &str, query: &str) -> Result<Reply, Reply> {
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

    fn page_json(&self, i: usize, version: &str) -> Value {
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

    fn schema_json(&self, ds: &DataSource) -> Map<String, Value> {
        let mut props = Map::new();
        for p in &ds.props {
            let key = p.kind.key();
            let config = match &p.kind {
                PropKind::Select | PropKind::MultiSelect | PropKind::Status => json!({
                    "options": p.options.iter().map(|(id, name, color)| json!({"id": id, "name": name, "color": color, "description": null})).collect::<Vec<_>>()
                }),
                PropKind::Number => json!({"format": "number"}),
                PropKind::Relation(_) => {
                    let target = p.target.clone().unwrap_or_default();
                    let db = self
                        .ds_index(&target)
                        .map(|i| self.data_sources[i].database_id.clone());
                    json!({"data_source_id": target, "database_id": db, "type": "single_property", "single_property": {}})
                }
                PropKind::Formula => json!({"expression": ""}),
                _ => json!({}),
            };
            let mut obj = json!({"id": p.id, "name": p.name, "description": null, "type": key});
            obj[key] = config;
            props.insert(p.name.clone(), obj);
        }
        props
    }

    /// Validates and stores a new page. All-or-nothing.
    fn create_page(
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

    /// Auto-created select options get their ids here, once the whole write is known to be valid.
    fn add_options(
        &mut self,
        ds_i: usize,
        new_options: Vec<(String, String)>,
        values: &mut HashMap<String, Value>,
    ) {
        for (pid, name) in new_options {
            let color = COLORS[self.rng.usize(..COLORS.len())].to_string();
            let oid = uuid(&mut self.rng);
            if let Some(p) = self.data_sources[ds_i]
                .props
                .iter_mut()
                .find(|p| p.id == pid)
                && !p.options.iter().any(|o| o.1 == name)
            {
                p.options.push((oid, name.clone(), color));
            }
        }
        // Fill option ids and colors into the stored values.
        let ds = &self.data_sources[ds_i];
        for (pid, v) in values.iter_mut() {
            let Some(p) = ds.props.iter().find(|p| &p.id == pid) else {
                continue;
            };
            let fill = |o: &mut Value| {
                if let Some(name) = o["name"].as_str()
                    && let Some(opt) = p.options.iter().find(|x| x.1 == name)
                {
                    *o = json!({"id": opt.0, "name": opt.1, "color": opt.2});
                }
            };
            match p.kind {
                PropKind::Select | PropKind::Status if v.is_object() => fill(v),
                PropKind::MultiSelect => {
                    if let Some(a) = v.as_array_mut() {
                        a.iter_mut().for_each(fill);
                    }
                }
                _ => {}
            }
        }
    }

    fn check_props(
        &self,
        ds_i: usize,
        props: &Map<String, Value>,
        out: &mut HashMap<String, Value>,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<(), Reply> {
        let ds = &self.data_sources[ds_i];
        for (key, value) in props {
            let Some(prop) = ds.props.iter().find(|p| &p.name == key || &p.id == key) else {
                return Err(Reply::validation(format!(
                    "{key} is not a property that exists."
                )));
            };
            let v = self.check_value(prop, value, new_options)?;
            out.insert(prop.id.clone(), v);
        }
        Ok(())
    }

    fn check_value(
        &self,
        prop: &PropSchema,
        value: &Value,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<Value, Reply> {
        let name = &prop.name;
        let key = prop.kind.key();
        let path = format!("body.properties.{name}.{key}");
        let inner = match value.as_object().and_then(|o| o.get(key)) {
            Some(v) => v,
            None => {
                return Err(Reply::validation(format!(
                    "body failed validation. Fix one: {path} should be defined, instead was `undefined`."
                )));
            }
        };
        let bad = |what: &str| {
            Reply::validation(format!(
                "body failed validation: {path} {what}, instead was `{inner}`."
            ))
        };
        match &prop.kind {
            PropKind::Title | PropKind::RichText => check_rich_text(inner, &path),
            PropKind::Url | PropKind::Email => match inner {
                Value::Null => Ok(Value::Null),
                Value::String(s) if s.is_empty() => {
                    Err(bad("should be a non-empty string or `null`"))
                }
                Value::String(s) if js_len(s) > 2000 => Err(too_long(&path, 2000, js_len(s))),
                Value::String(_) => Ok(inner.clone()),
                _ => Err(bad("should be a string or `null`")),
            },
            PropKind::Number => match inner {
                Value::Null | Value::Number(_) => Ok(inner.clone()),
                _ => Err(bad("should be a number or `null`")),
            },
            PropKind::Checkbox => match inner {
                Value::Bool(_) => Ok(inner.clone()),
                _ => Err(bad("should be a boolean")),
            },
            PropKind::Select | PropKind::Status => {
                if inner.is_null() {
                    return Ok(Value::Null);
                }
                self.check_option(prop, inner, &path, new_options)
            }
            PropKind::MultiSelect => {
                let arr = at_most_100(inner, &path)?;
                let mut out = Vec::new();
                for (i, o) in arr.iter().enumerate() {
                    out.push(self.check_option(prop, o, &format!("{path}[{i}]"), new_options)?);
                }
                Ok(Value::Array(out))
            }
            PropKind::Relation(_) => {
                let arr = at_most_100(inner, &path)?;
                let mut out = Vec::new();
                for (i, r) in arr.iter().enumerate() {
                    let Some(id) = r["id"].as_str().filter(|id| valid_id(id)) else {
                        return Err(Reply::validation(format!(
                            "body failed validation: {path}[{i}].id should be a valid uuid, instead was `{}`.",
                            r["id"]
                        )));
                    };
                    let pi = self.visible_page(id)?;
                    let target = prop.target.as_deref().unwrap_or("");
                    if compact(&self.pages[pi].data_source_id) != compact(target) {
                        return Err(Reply::validation(format!(
                            "Relation page {} is not in the related data source {}.",
                            dashed(id),
                            target
                        )));
                    }
                    out.push(json!({"id": self.pages[pi].id}));
                }
                Ok(Value::Array(out))
            }
            PropKind::Files => {
                let arr = inner.as_array().ok_or_else(|| bad("should be an array"))?;
                let mut out = Vec::new();
                for (i, f) in arr.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if f.get("external").is_some() && f["name"].as_str().is_none() {
                        return Err(Reply::validation(format!(
                            "body failed validation: {p}.name should be defined, instead was `undefined`."
                        )));
                    }
                    let checked = check_file_object(f, &p)?;
                    let mut c = checked;
                    c["name"] = f["name"].clone();
                    out.push(c);
                }
                Ok(Value::Array(out))
            }
            PropKind::Date => {
                if inner.is_null() {
                    return Ok(Value::Null);
                }
                let start = inner["start"]
                    .as_str()
                    .ok_or_else(|| bad("should have a `start` date"))?;
                if parse_date(start).is_none() {
                    return Err(bad("should have an ISO 8601 `start`"));
                }
                Ok(
                    json!({"start": start, "end": inner.get("end").cloned().unwrap_or(Value::Null), "time_zone": null}),
                )
            }
            PropKind::CreatedTime | PropKind::Formula => Err(Reply::validation(format!(
                "body failed validation: {path} is a read-only property and cannot be written."
            ))),
        }
    }

    fn check_option(
        &self,
        prop: &PropSchema,
        o: &Value,
        path: &str,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<Value, Reply> {
        if let Some(id) = o.get("id").and_then(Value::as_str) {
            return match prop.options.iter().find(|x| x.0 == id) {
                Some(x) => Ok(json!({"id": x.0, "name": x.1, "color": x.2})),
                None => Err(Reply::validation(format!(
                    "body failed validation: {path}.id `{id}` is not an existing option."
                ))),
            };
        }
        let Some(name) = o.get("name").and_then(Value::as_str) else {
            return Err(Reply::validation(format!(
                "body failed validation: {path}.name should be defined, instead was `undefined`."
            )));
        };
        let name = name.trim();
        if name.contains(',') {
            return Err(Reply::validation(format!(
                "Invalid select option, commas not allowed: {name}"
            )));
        }
        if name.is_empty() {
            return Err(Reply::validation(format!(
                "body failed validation: {path}.name should be a non-empty string."
            )));
        }
        if js_len(name) > 100 {
            return Err(too_long(&format!("{path}.name"), 100, js_len(name)));
        }
        if let Some(x) = prop.options.iter().find(|x| x.1 == name) {
            return Ok(json!({"id": x.0, "name": x.1, "color": x.2}));
        }
        if prop.kind == PropKind::Status {
            return Err(Reply::validation(format!("Invalid status option: {name}")));
        }
        if !new_options
            .iter()
            .any(|(pid, n)| pid == &prop.id && n == name)
        {
            new_options.push((prop.id.clone(), name.to_string()));
        }
        Ok(json!({"name": name}))
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

    fn users_me(&self) -> Reply {
        Reply::ok(json!({
            "object": "user",
            "id": self.bot_id,
            "name": self.bot_name,
            "avatar_url": null,
            "type": "bot",
            "bot": {
                "owner": {"type": "workspace", "workspace": true},
                "workspace_name": self.workspace_name,
                "workspace_id": self.workspace_id,
                "workspace_limits": {"max_file_upload_size_in_bytes": 5_242_880},
            },
            "request_id": request_id(),
        }))
    }

    fn get_database(&self, id: &str, version: &str) -> Result<Reply, Reply> {
        let not_found = || {
            Reply::err(
                404,
                "object_not_found",
                format!(
                    "Could not find database with ID: {}. {SHARE_HINT}",
                    dashed(id)
                ),
            )
        };
        let i = self.db_index(id).ok_or_else(not_found)?;
        let db = &self.databases[i];
        if !self.db_shared(&db.id) {
            return Err(not_found());
        }
        let title = json!([{"type": "text", "text": {"content": db.title, "link": null}, "plain_text": db.title, "href": null}]);
        let mut v = json!({
            "object": "database",
            "id": db.id,
            "title": title,
            "description": [],
            "parent": {"type": "workspace", "workspace": true},
            "is_inline": false,
            "in_trash": false,
            "is_locked": false,
            "created_time": "2025-10-05T10:54:59.296+00:00",
            "last_edited_time": "2025-10-05T10:54:59.296+00:00",
            "icon": null,
            "cover": null,
            "url": format!("https://www.notion.so/{}", compact(&db.id)),
            "public_url": null,
            "request_id": request_id(),
        });
        if version >= DATA_SOURCES_VERSION {
            let list: Vec<Value> = db
                .data_sources
                .iter()
                .filter_map(|d| self.ds_index(d))
                .map(|d| json!({"id": self.data_sources[d].id, "name": self.data_sources[d].name}))
                .collect();
            v["data_sources"] = Value::Array(list);
        } else if db.data_sources.len() > 1 {
            return Err(multiple_sources_error(db));
        } else if let Some(d) = self.ds_index(&db.data_sources[0]) {
            v["properties"] = Value::Object(self.schema_json(&self.data_sources[d]));
        }
        if version < NO_ARCHIVED_VERSION {
            v["archived"] = json!(false);
        }
        Ok(Reply::ok(v))
    }

    fn get_data_source(&self, id: &str) -> Result<Reply, Reply> {
        let i = self.visible_ds(id)?;
        let ds = &self.data_sources[i];
        let title = json!([{"type": "text", "text": {"content": ds.name, "link": null}, "plain_text": ds.name, "href": null}]);
        Ok(Reply::ok(json!({
            "object": "data_source",
            "id": ds.id,
            "title": title,
            "description": [],
            "is_inline": false,
            "properties": Value::Object(self.schema_json(ds)),
            "parent": {"type": "database_id", "database_id": ds.database_id},
            "database_parent": {"type": "workspace", "workspace": true},
            "created_time": "2025-10-05T10:54:59.296+00:00",
            "last_edited_time": "2025-10-05T10:54:59.296+00:00",
            "icon": null,
            "cover": null,
            "url": format!("https://www.notion.so/{}", compact(&ds.database_id)),
            "public_url": null,
            "archived": false,
            "in_trash": false,
            "request_id": request_id(),
        })))
    }

    fn query(&self, id: &str, body: &Map<String, Value>) -> Result<Reply, Reply> {
        let ds_i = self.visible_ds(id)?;
        let ds = &self.data_sources[ds_i];
        let page_size = match body.get("page_size") {
            None | Some(Value::Null) => 100,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if (1..=100).contains(&n) => n as usize,
                Some(n) if n > 100 => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.page_size should be ≤ `100`, instead was `{n}`."
                    )));
                }
                _ => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.page_size should be a positive integer, instead was `{n}`."
                    )));
                }
            },
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.page_size should be a number, instead was `{other}`."
                )));
            }
        };
        let filter = match body.get("filter") {
            None => None,
            Some(f) => {
                let n = filter_conditions(f);
                if n > MAX_FILTER_CONDITIONS {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.filter has {n} conditions, more than the {MAX_FILTER_CONDITIONS} allowed."
                    )));
                }
                Some(parse_filter(ds, f, 0, "body.filter")?)
            }
        };
        let sorts = parse_sorts(ds, body.get("sorts"))?;
        let now = Instant::now();
        let mut hits: Vec<&Page> = self
            .pages
            .iter()
            .filter(|p| !p.in_trash && compact(&p.data_source_id) == compact(&ds.id))
            .filter(|p| p.indexed_at <= now)
            .filter(|p| filter.as_ref().is_none_or(|f| f(p)))
            .collect();
        hits.sort_by(|a, b| {
            for s in &sorts {
                let o = s(a, b);
                if o != CmpOrdering::Equal {
                    return o;
                }
            }
            a.seq.cmp(&b.seq)
        });
        let capped = hits.len() > self.query_cap;
        hits.truncate(self.query_cap);
        let start = match body.get("start_cursor") {
            None => 0,
            Some(Value::String(c)) => {
                match hits.iter().position(|p| compact(&p.id) == compact(c)) {
                    Some(i) => i,
                    None => {
                        return Err(Reply::validation(format!(
                            "body failed validation: body.start_cursor `{c}` is not a valid cursor for this query."
                        )));
                    }
                }
            }
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.start_cursor should be a string, instead was `{other}`."
                )));
            }
        };
        let end = (start + page_size).min(hits.len());
        let has_more = end < hits.len();
        let results: Vec<Value> = hits[start..end]
            .iter()
            .map(|p| self.page_json(p.seq, NO_ARCHIVED_VERSION))
            .collect();
        let mut v = json!({
            "object": "list",
            "results": results,
            "next_cursor": if has_more { json!(hits[end].id) } else { Value::Null },
            "has_more": has_more,
            "type": "page_or_data_source",
            "page_or_data_source": {},
            "request_id": request_id(),
        });
        if capped {
            v["request_status"] =
                json!({"type": "incomplete", "incomplete_reason": "query_result_limit_reached"});
        }
        Ok(Reply::ok(v))
    }

    fn post_page(&mut self, body: &Map<String, Value>, version: &str) -> Result<Reply, Reply> {
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

    fn patch_page(
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

fn multiple_sources_error(db: &Database) -> Reply {
    Reply::err_with(
        400,
        "validation_error",
        "Databases with multiple data sources are not supported in this API version.",
        Some(json!({
            "error_type": "multiple_data_sources_for_database",
            "database_id": db.id,
            "child_data_source_ids": db.data_sources,
            "minimum_api_version": DATA_SOURCES_VERSION,
        })),
    )
}

fn empty_value(kind: &PropKind) -> Value {
    match kind {
        PropKind::Title
        | PropKind::RichText
        | PropKind::MultiSelect
        | PropKind::Relation(_)
        | PropKind::Files => json!([]),
        PropKind::Checkbox => json!(false),
        _ => Value::Null,
    }
}

/// Notion's answer to a value over its length limit.
fn too_long(path: &str, max: usize, was: usize) -> Reply {
    Reply::validation(format!(
        "body failed validation: {path}.length should be ≤ `{max}`, instead was `{was}`."
    ))
}

/// An array in a property value: Notion takes at most 100 items.
fn at_most_100<'a>(inner: &'a Value, path: &str) -> Result<&'a Vec<Value>, Reply> {
    let arr = inner.as_array().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path} should be an array, instead was `{inner}`."
        ))
    })?;
    if arr.len() > 100 {
        return Err(too_long(path, 100, arr.len()));
    }
    Ok(arr)
}

fn check_rich_text(inner: &Value, path: &str) -> Result<Value, Reply> {
    let arr = at_most_100(inner, path)?;
    let mut out = Vec::new();
    for (i, item) in arr.iter().enumerate() {
        let Some(content) = item["text"]["content"].as_str() else {
            return Err(Reply::validation(format!(
                "body failed validation: {path}[{i}].text.content should be defined, instead was `undefined`."
            )));
        };
        if js_len(content) > 2000 {
            return Err(too_long(
                &format!("{path}[{i}].text.content"),
                2000,
                js_len(content),
            ));
        }
        let link = item["text"].get("link").cloned().unwrap_or(Value::Null);
        out.push(json!({
            "type": "text",
            "text": {"content": content, "link": link},
            "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false, "code": false, "color": "default"},
            "plain_text": content,
            "href": link.get("url").cloned().unwrap_or(Value::Null),
        }));
    }
    Ok(Value::Array(out))
}

/// `cover` and `files[]` entries: external URLs only (uploads are out of scope for the fake).
fn check_file_object(v: &Value, path: &str) -> Result<Value, Reply> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let Some(url) = v["external"]["url"].as_str() else {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.external.url should be defined, instead was `undefined`."
        )));
    };
    if url.is_empty() || url::Url::parse(url).is_err() {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.external.url should be a valid URL, instead was `\"{url}\"`."
        )));
    }
    if js_len(url) > 2000 {
        return Err(too_long(&format!("{path}.external.url"), 2000, js_len(url)));
    }
    Ok(json!({"type": "external", "external": {"url": url}}))
}

fn check_icon(v: &Value) -> Result<Value, Reply> {
    if let Some(e) = v.get("emoji").and_then(Value::as_str) {
        return Ok(json!({"type": "emoji", "emoji": e}));
    }
    check_file_object(v, "icon")
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

// ---------------------------------------------------------------------------------------------
// Filters and sorts
// ---------------------------------------------------------------------------------------------

type Pred = Box<dyn Fn(&Page) -> bool + Send + Sync>;
type Cmp = Box<dyn Fn(&Page, &Page) -> CmpOrdering + Send + Sync>;

/// `depth` counts compound levels already entered; Notion allows two.
/// Leaf conditions in a filter (an `and`/`or` counts what it holds).
fn filter_conditions(f: &Value) -> usize {
    ["or", "and"]
        .iter()
        .find_map(|op| f.get(*op).and_then(Value::as_array))
        .map_or(1, |subs| subs.iter().map(filter_conditions).sum())
}

fn parse_filter(ds: &DataSource, f: &Value, depth: usize, path: &str) -> Result<Pred, Reply> {
    let obj = f.as_object().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path} should be an object, instead was `{f}`."
        ))
    })?;
    for op in ["or", "and"] {
        if let Some(list) = obj.get(op) {
            if depth >= 2 {
                return Err(Reply::validation(format!(
                    "body failed validation: {path}.{op} exceeds the maximum filter nesting depth of 2."
                )));
            }
            let arr = list.as_array().ok_or_else(|| {
                Reply::validation(format!(
                    "body failed validation: {path}.{op} should be an array."
                ))
            })?;
            let mut preds = Vec::new();
            for (i, sub) in arr.iter().enumerate() {
                preds.push(parse_filter(
                    ds,
                    sub,
                    depth + 1,
                    &format!("{path}.{op}[{i}]"),
                )?);
            }
            return Ok(if op == "or" {
                Box::new(move |p| preds.iter().any(|x| x(p)))
            } else {
                Box::new(move |p| preds.iter().all(|x| x(p)))
            });
        }
    }
    if let Some(t) = obj.get("timestamp").and_then(Value::as_str) {
        if t != "created_time" && t != "last_edited_time" {
            return Err(Reply::validation(format!(
                "body failed validation: {path}.timestamp should be `created_time` or `last_edited_time`, instead was `\"{t}\"`."
            )));
        }
        let cond = obj.get(t).and_then(Value::as_object).ok_or_else(|| {
            Reply::validation(format!(
                "body failed validation: {path}.{t} should be defined, instead was `undefined`."
            ))
        })?;
        let (op, val) = cond.iter().next().ok_or_else(|| {
            Reply::validation(format!("body failed validation: {path}.{t} is empty."))
        })?;
        let created = t == "created_time";
        let when = move |p: &Page| if created { p.created } else { p.edited };
        let bound = val.as_str().and_then(parse_date);
        return match (op.as_str(), bound) {
            ("after", Some(b)) => Ok(Box::new(move |p| when(p) > b)),
            ("on_or_after", Some(b)) => Ok(Box::new(move |p| when(p) >= b)),
            ("before", Some(b)) => Ok(Box::new(move |p| when(p) < b)),
            ("on_or_before", Some(b)) => Ok(Box::new(move |p| when(p) <= b)),
            ("equals", Some(b)) => Ok(Box::new(move |p| when(p) == b)),
            _ => Err(Reply::validation(format!(
                "body failed validation: {path}.{t}.{op} is not a supported date condition or value `{val}`."
            ))),
        };
    }
    let Some(name) = obj.get("property").and_then(Value::as_str) else {
        return Err(Reply::validation(format!(
            "body failed validation: {path} should have `property`, `timestamp`, `or` or `and`."
        )));
    };
    let Some(prop) = ds.props.iter().find(|p| p.name == name || p.id == name) else {
        return Err(Reply::validation(format!(
            "Could not find property with name or id: {name}"
        )));
    };
    let type_keys = [
        "title",
        "rich_text",
        "url",
        "email",
        "phone_number",
        "number",
        "checkbox",
        "select",
        "multi_select",
        "status",
        "date",
        "relation",
        "files",
        "people",
        "formula",
        "unique_id",
    ];
    let Some(used) = type_keys.iter().find(|k| obj.contains_key(**k)) else {
        return Err(Reply::validation(format!(
            "body failed validation: {path} should define a filter condition for property {name}."
        )));
    };
    let key = prop.kind.key();
    if *used != key {
        return Err(Reply::validation(format!(
            "body failed validation: the filter on property \"{name}\" uses type `{used}`, but the property is of type `{key}`."
        )));
    }
    let cond = obj[*used].as_object().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path}.{used} should be an object."
        ))
    })?;
    if cond.len() != 1 {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.{used} should have exactly one condition."
        )));
    }
    let (op, val) = cond.iter().next().expect("one condition");
    let pid = prop.id.clone();
    let bad = || {
        Reply::validation(format!(
            "body failed validation: {path}.{used}.{op} is not valid for a {key} filter (value `{val}`)."
        ))
    };
    let get = move |p: &Page| p.props.get(&pid).cloned().unwrap_or(Value::Null);
    match &prop.kind {
        PropKind::Title | PropKind::RichText | PropKind::Url | PropKind::Email => {
            let text_of = move |p: &Page| -> String {
                let v = get(p);
                match v {
                    Value::String(s) => s,
                    Value::Array(_) => plain_text(&v),
                    _ => String::new(),
                }
            };
            let s = val.as_str().map(str::to_string);
            let lower = s.clone().map(|x| x.to_lowercase());
            Ok(match (op.as_str(), s, lower) {
                ("equals", Some(s), _) => Box::new(move |p| text_of(p) == s),
                ("does_not_equal", Some(s), _) => Box::new(move |p| text_of(p) != s),
                ("contains", _, Some(l)) => {
                    Box::new(move |p| text_of(p).to_lowercase().contains(&l))
                }
                ("does_not_contain", _, Some(l)) => {
                    Box::new(move |p| !text_of(p).to_lowercase().contains(&l))
                }
                ("starts_with", _, Some(l)) => {
                    Box::new(move |p| text_of(p).to_lowercase().starts_with(&l))
                }
                ("ends_with", _, Some(l)) => {
                    Box::new(move |p| text_of(p).to_lowercase().ends_with(&l))
                }
                ("is_empty", ..) if val == &json!(true) => Box::new(move |p| text_of(p).is_empty()),
                ("is_not_empty", ..) if val == &json!(true) => {
                    Box::new(move |p| !text_of(p).is_empty())
                }
                _ => return Err(bad()),
            })
        }
        PropKind::Number => {
            let n = val.as_f64();
            let num = move |p: &Page| get(p).as_f64();
            Ok(match (op.as_str(), n) {
                ("equals", Some(n)) => Box::new(move |p| num(p) == Some(n)),
                ("does_not_equal", Some(n)) => Box::new(move |p| num(p) != Some(n)),
                ("greater_than", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x > n)),
                ("less_than", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x < n)),
                ("greater_than_or_equal_to", Some(n)) => {
                    Box::new(move |p| num(p).is_some_and(|x| x >= n))
                }
                ("less_than_or_equal_to", Some(n)) => {
                    Box::new(move |p| num(p).is_some_and(|x| x <= n))
                }
                ("is_empty", _) => Box::new(move |p| num(p).is_none()),
                ("is_not_empty", _) => Box::new(move |p| num(p).is_some()),
                _ => return Err(bad()),
            })
        }
        PropKind::Checkbox => {
            let b = val.as_bool().ok_or_else(bad)?;
            let cb = move |p: &Page| get(p).as_bool().unwrap_or(false);
            Ok(match op.as_str() {
                "equals" => Box::new(move |p| cb(p) == b),
                "does_not_equal" => Box::new(move |p| cb(p) != b),
                _ => return Err(bad()),
            })
        }
        PropKind::Select | PropKind::Status => {
            let s = val.as_str().map(str::to_string);
            let sel = move |p: &Page| get(p)["name"].as_str().map(str::to_string);
            Ok(match (op.as_str(), s) {
                ("equals", Some(s)) => Box::new(move |p| sel(p).as_deref() == Some(s.as_str())),
                ("does_not_equal", Some(s)) => {
                    Box::new(move |p| sel(p).as_deref() != Some(s.as_str()))
                }
                ("is_empty", _) => Box::new(move |p| sel(p).is_none()),
                ("is_not_empty", _) => Box::new(move |p| sel(p).is_some()),
                _ => return Err(bad()),
            })
        }
        PropKind::MultiSelect | PropKind::Relation(_) => {
            let relation = matches!(prop.kind, PropKind::Relation(_));
            let field = if relation { "id" } else { "name" };
            let norm = move |s: &str| if relation { compact(s) } else { s.to_string() };
            let items = move |p: &Page| -> Vec<String> {
                get(p)
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x[field].as_str().map(norm))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let s = val.as_str().map(norm);
            Ok(match (op.as_str(), s) {
                ("contains", Some(s)) => Box::new(move |p| items(p).contains(&s)),
                ("does_not_contain", Some(s)) => Box::new(move |p| !items(p).contains(&s)),
                ("is_empty", _) => Box::new(move |p| items(p).is_empty()),
                ("is_not_empty", _) => Box::new(move |p| !items(p).is_empty()),
                _ => return Err(bad()),
            })
        }
        _ => Err(Reply::validation(format!(
            "body failed validation: filtering on {key} properties is not supported by the fake."
        ))),
    }
}

fn parse_sorts(ds: &DataSource, sorts: Option<&Value>) -> Result<Vec<Cmp>, Reply> {
    let Some(sorts) = sorts else {
        return Ok(vec![]);
    };
    let arr = sorts.as_array().ok_or_else(|| {
        Reply::validation("body failed validation: body.sorts should be an array.")
    })?;
    let mut out: Vec<Cmp> = Vec::new();
    for (i, s) in arr.iter().enumerate() {
        let desc = match s["direction"].as_str() {
            Some("ascending") => false,
            Some("descending") => true,
            _ => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.sorts[{i}].direction should be `ascending` or `descending`."
                )));
            }
        };
        let base: Cmp = if let Some(t) = s["timestamp"].as_str() {
            match t {
                "created_time" => Box::new(|a: &Page, b: &Page| a.created.cmp(&b.created)),
                "last_edited_time" => Box::new(|a: &Page, b: &Page| a.edited.cmp(&b.edited)),
                _ => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.sorts[{i}].timestamp `{t}` is not supported."
                    )));
                }
            }
        } else if let Some(name) = s["property"].as_str() {
            let Some(prop) = ds.props.iter().find(|p| p.name == name || p.id == name) else {
                return Err(Reply::validation(format!(
                    "Could not find sort property with name or id: {name}"
                )));
            };
            let pid = prop.id.clone();
            let key = move |p: &Page| -> (Option<f64>, String) {
                let v = p.props.get(&pid).cloned().unwrap_or(Value::Null);
                match &v {
                    Value::Number(n) => (n.as_f64(), String::new()),
                    Value::String(s) => (None, s.clone()),
                    Value::Array(_) => (None, plain_text(&v)),
                    _ => (None, v["name"].as_str().unwrap_or("").to_string()),
                }
            };
            Box::new(move |a: &Page, b: &Page| {
                let (ka, kb) = (key(a), key(b));
                ka.0.partial_cmp(&kb.0)
                    .unwrap_or(CmpOrdering::Equal)
                    .then_with(|| ka.1.cmp(&kb.1))
            })
        } else {
            return Err(Reply::validation(format!(
                "body failed validation: body.sorts[{i}] should have `property` or `timestamp`."
            )));
        };
        out.push(if desc {
            Box::new(move |a: &Page, b: &Page| base(b, a))
        } else {
            base
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------------

fn fault_reply(fault: &Fault) -> Option<Reply> {
    Some(match fault {
        Fault::Status(500) => {
            Reply::err(500, "internal_server_error", "Unexpected error occurred.")
        }
        Fault::Status(502) => Reply::err(502, "bad_gateway", "Bad Gateway"),
        Fault::Status(503) => Reply::err(
            503,
            "service_unavailable",
            "Public API service is temporarily unavailable, please try again later.",
        ),
        Fault::Status(504) => Reply::err(504, "gateway_timeout", "Gateway Timeout"),
        Fault::Status(409) => Reply::err(
            409,
            "conflict_error",
            "Conflict occurred while saving. Please try again.",
        ),
        Fault::Status(429) => rate_limited(1, "public_api_request_rate_limit"),
        Fault::Status(529) => overloaded(1),
        Fault::Status(400) => Reply::err(
            400,
            "validation_error",
            "body failed validation: body.properties.Title.title[0].text.content.length should be ≤ `2000`, instead was `2088`.",
        ),
        Fault::Status(other) => Reply::err(
            *other,
            "internal_server_error",
            "Unexpected error occurred.",
        ),
        Fault::RateLimited { retry_after_secs } => {
            rate_limited(*retry_after_secs, "public_api_request_rate_limit")
        }
        Fault::Blocked => {
            let mut r = Reply::err_with(
                429,
                "rate_limited",
                "You have been rate limited. Please try again in a few minutes.",
                Some(json!({"rate_limit_reason": "public_api_request_blocked"})),
            );
            r.headers.clear();
            r
        }
        Fault::Overloaded { retry_after_secs } => overloaded(*retry_after_secs),
        _ => return None,
    })
}

fn rate_limited(secs: u64, reason: &str) -> Reply {
    let mut r = Reply::err_with(
        429,
        "rate_limited",
        "You have been rate limited. Please try again in a few minutes.",
        Some(json!({"rate_limit_reason": reason, "retry_after": secs.to_string()})),
    );
    r.headers.push(("retry-after", secs.to_string()));
    r
}

fn overloaded(secs: u64) -> Reply {
    let mut r = Reply::err_with(
        529,
        "service_overload",
        "Notion is temporarily overloaded. Please try again later.",
        Some(json!({"retry_after": secs.to_string()})),
    );
    r.headers.push(("retry-after", secs.to_string()));
    r
}

fn to_response(r: Reply) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(r.body),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-notion-request-id",
        axum::http::HeaderValue::from_str(&request_id()).expect("uuid header"),
    );
    for (k, v) in r.headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

fn cloudflare_html() -> Response {
    let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";
    Response::builder()
        .status(502)
        .header("content-type", "text/html")
        .header("server", "cloudflare")
        .header("cf-ray", "8f0e1d2c3b4a5968-FRA")
        .body(Body::from(body))
        .expect("static response")
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

    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let version = headers
        .get("notion-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let reply = if auth.strip_prefix("Bearer ") != Some(shared.token.as_str()) {
        Reply::err(401, "unauthorized", "API token is invalid.")
    } else if let Some(version) = version {
        if chrono::NaiveDate::parse_from_str(&version, "%Y-%m-%d").is_err() {
            Reply::validation(format!(
                "Notion-Version header failed validation: `{version}` is not a valid version."
            ))
        } else {
            lock().process(&method, &path, uri.query().unwrap_or(""), &version, &body)
        }
    } else {
        Reply::err(
            400,
            "missing_version",
            "Notion-Version header should be defined, instead was `undefined`.",
        )
    };

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

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(
        f: &FakeNotion,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method, format!("{}{}", f.api_base(), path))
            .header("Authorization", format!("Bearer {}", f.token()))
            .header("Notion-Version", "2025-09-03");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn refuses_page_size_over_100_and_unknown_properties() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        let ds = f.data_source_id();
        let (s, b) = call(
            &f,
            reqwest::Method::POST,
            &format!("/v1/data_sources/{ds}/query"),
            Some(json!({"page_size": 101})),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(b["code"], "validation_error");
        let filter = json!({"filter": {"property": "Nope", "url": {"equals": "x"}}});
        let (s, b) = call(
            &f,
            reqwest::Method::POST,
            &format!("/v1/data_sources/{ds}/query"),
            Some(filter),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(
            b["message"],
            "Could not find property with name or id: Nope"
        );
        let body = json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": {"Nope": {"url": "x"}}});
        let (s, b) = call(&f, reqwest::Method::POST, "/v1/pages", Some(body)).await;
        assert_eq!(s, 400);
        assert_eq!(b["message"], "Nope is not a property that exists.");
        assert_eq!(f.pages().len(), 0);
    }

    #[tokio::test]
    async fn checks_auth_version_and_sharing() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        let client = reqwest::Client::new();
        let r = client
            .get(format!("{}/v1/users/me", f.api_base()))
            .header("Notion-Version", "2025-09-03")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = client
            .get(format!("{}/v1/users/me", f.api_base()))
            .bearer_auth(f.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let r = client
            .get(format!(
                "{}/v1/data_sources/{}",
                f.api_base(),
                f.data_source_id()
            ))
            .bearer_auth(f.token())
            .header("Notion-Version", "2022-06-28")
            .send()
            .await
            .unwrap();
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["code"], "invalid_request_url");
        // A database id where a data source id belongs is a 404.
        let (s, _) = call(
            &f,
            reqwest::Method::GET,
            &format!("/v1/data_sources/{}", f.database_id()),
            None,
        )
        .await;
        assert_eq!(s, 404);
        f.set_shared(false);
        let (s, b) = call(
            &f,
            reqwest::Method::GET,
            &format!("/v1/databases/{}", compact(&f.database_id())),
            None,
        )
        .await;
        assert_eq!(s, 404);
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("shared with your integration")
        );
    }

    #[tokio::test]
    async fn filters_paginate_and_cap() {
        let f = FakeNotion::start(FakeNotionOptions {
            query_result_cap: 25,
            ..Default::default()
        })
        .await;
        for i in 0..30 {
            f.seed_track(
                &format!("t{i}"),
                "a",
                &format!("https://soundcloud.com/a/t{i}"),
            );
        }
        let ds = f.data_source_id();
        let q = format!("/v1/data_sources/{ds}/query");
        let filter = json!({"or": [
            {"property": "SoundCloud URL", "url": {"equals": "https://soundcloud.com/a/t3"}},
            {"and": [{"property": "Title", "title": {"equals": "t4"}}, {"property": "Artist Name", "rich_text": {"equals": "a"}}]},
        ]});
        let (_, b) = call(
            &f,
            reqwest::Method::POST,
            &q,
            Some(json!({"filter": filter})),
        )
        .await;
        assert_eq!(b["results"].as_array().unwrap().len(), 2);
        let too_deep = json!({"or": [{"and": [{"or": []}]}]});
        let (s, _) = call(
            &f,
            reqwest::Method::POST,
            &q,
            Some(json!({"filter": too_deep})),
        )
        .await;
        assert_eq!(s, 400);
        let wrong_type = json!({"property": "SoundCloud URL", "rich_text": {"equals": "x"}});
        let (s, _) = call(
            &f,
            reqwest::Method::POST,
            &q,
            Some(json!({"filter": wrong_type})),
        )
        .await;
        assert_eq!(s, 400);
        let mut seen = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut body = json!({"page_size": 10, "sorts": [{"timestamp": "created_time", "direction": "descending"}]});
            if let Some(c) = &cursor {
                body["start_cursor"] = json!(c);
            }
            let (_, b) = call(&f, reqwest::Method::POST, &q, Some(body)).await;
            seen += b["results"].as_array().unwrap().len();
            if seen == 10 {
                assert_eq!(
                    b["results"][0]["properties"]["Title"]["title"][0]["plain_text"],
                    "t29"
                );
            }
            assert_eq!(
                b["request_status"]["incomplete_reason"],
                "query_result_limit_reached"
            );
            if !b["has_more"].as_bool().unwrap() {
                break;
            }
            cursor = b["next_cursor"].as_str().map(str::to_string);
        }
        assert_eq!(seen, 25);
    }

    #[tokio::test]
    async fn create_validates_values_and_saves_on_committed_503() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        let ds = f.data_source_id();
        let mk = |props: Value| json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": props});
        let (s, b) = call(
            &f,
            reqwest::Method::POST,
            "/v1/pages",
            Some(mk(json!({"Genre": {"select": {"name": "Rock, Pop"}}}))),
        )
        .await;
        assert_eq!((s, b["code"].as_str()), (400, Some("validation_error")));
        let (s, _) = call(
            &f,
            reqwest::Method::POST,
            "/v1/pages",
            Some(mk(json!({"SoundCloud URL": {"url": ""}}))),
        )
        .await;
        assert_eq!(s, 400);
        let long = "x".repeat(2001);
        let (s, _) = call(
            &f,
            reqwest::Method::POST,
            "/v1/pages",
            Some(mk(
                json!({"Title": {"title": [{"text": {"content": long}}]}}),
            )),
        )
        .await;
        assert_eq!(s, 400);
        let (s, _) = call(
            &f,
            reqwest::Method::POST,
            "/v1/pages",
            Some(mk(
                json!({"Playlists": {"relation": [{"id": "00000000000040008000000000000000"}]}}),
            )),
        )
        .await;
        assert_eq!(s, 404);
        assert_eq!(f.pages().len(), 0);
        f.inject(Endpoint::Create, Fault::SavedButUnavailable, 1);
        let (s, b) = call(
            &f,
            reqwest::Method::POST,
            "/v1/pages",
            Some(mk(json!({"Genre": {"select": {"name": "House"}}}))),
        )
        .await;
        assert_eq!(s, 503);
        let id = b["additional_data"]["committed_resource_id"]
            .as_str()
            .unwrap();
        assert_eq!(
            f.page(id).unwrap().select("Genre").as_deref(),
            Some("House")
        );
        assert_eq!(f.select_options("Genre"), vec!["House".to_string()]);
    }

    #[tokio::test]
    async fn relations_take_100_a_write_and_page_with_cursors_that_need_encoding() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        let pls = f.playlists_data_source_id();
        let ids: Vec<String> = (0..130)
            .map(|i| {
                f.seed_page_in(
                    &pls,
                    json!({"Name": {"title": [{"text": {"content": format!("P{i}")}}]}}),
                )
            })
            .collect();
        let page = f.seed_track("t", "a", "https://soundcloud.com/a/t");
        f.seed_relation(&page, "Playlists", &ids);
        // A write of 101 is Notion's validation error, and changes nothing.
        let rel: Vec<Value> = ids[..101].iter().map(|id| json!({"id": id})).collect();
        let (s, b) = call(
            &f,
            reqwest::Method::PATCH,
            &format!("/v1/pages/{page}"),
            Some(json!({"properties": {"Playlists": {"relation": rel}}})),
        )
        .await;
        assert_eq!((s, b["code"].as_str()), (400, Some("validation_error")));
        assert!(b["message"].as_str().unwrap().contains("should be ≤ `100`"));
        assert_eq!(f.page(&page).unwrap().relation("Playlists").len(), 130);
        // The page object carries 25; the property endpoint pages through all of them.
        let (_, b) = call(&f, reqwest::Method::GET, &format!("/v1/pages/{page}"), None).await;
        let prop = &b["properties"]["Playlists"];
        assert_eq!(prop["relation"].as_array().unwrap().len(), 25);
        assert_eq!(prop["has_more"], true);
        let pid = prop["id"].as_str().unwrap();
        let base = format!("/v1/pages/{page}/properties/{pid}?page_size=100");
        let (_, b) = call(&f, reqwest::Method::GET, &base, None).await;
        assert_eq!(b["results"].as_array().unwrap().len(), 100);
        let cursor = b["next_cursor"].as_str().unwrap().to_string();
        assert!(
            cursor.contains('+') && cursor.contains('/') && cursor.contains('='),
            "{cursor}"
        );
        // Pasted raw, the `+` reads as a space, as on a real server.
        let (s, _) = call(
            &f,
            reqwest::Method::GET,
            &format!("{base}&start_cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(s, 400);
        let encoded: String = url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
        let (s, b) = call(
            &f,
            reqwest::Method::GET,
            &format!("{base}&start_cursor={encoded}"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(b["results"].as_array().unwrap().len(), 30);
        assert_eq!(b["has_more"], false);
    }

    #[tokio::test]
    async fn a_lagging_index_hides_fresh_pages_from_query_only() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        let ds = f.data_source_id();
        let seeded = f.seed_track("old", "a", "https://soundcloud.com/a/old");
        // Long enough never to pass during the test: nothing here waits for it.
        f.set_index_lag(Duration::from_secs(600));
        let body = json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": {"Title": {"title": [{"text": {"content": "new"}}]}}});
        let (s, b) = call(&f, reqwest::Method::POST, "/v1/pages", Some(body)).await;
        assert_eq!(s, 200);
        let fresh = b["id"].as_str().unwrap().to_string();
        let q = format!("/v1/data_sources/{ds}/query");
        let (_, b) = call(&f, reqwest::Method::POST, &q, Some(json!({}))).await;
        let found: Vec<&str> = b["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            found,
            vec![seeded.as_str()],
            "the fresh page is not indexed yet"
        );
        let (s, _) = call(
            &f,
            reqwest::Method::GET,
            &format!("/v1/pages/{fresh}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "but it can be read by id");
        assert_eq!(f.pages().len(), 2);
    }

    #[tokio::test]
    async fn connection_reset_is_a_transport_error() {
        let f = FakeNotion::start(FakeNotionOptions::default()).await;
        f.inject(Endpoint::UsersMe, Fault::ResetBefore, 1);
        let client = reqwest::Client::new();
        let r = client
            .get(format!("{}/v1/users/me", f.api_base()))
            .bearer_auth(f.token())
            .header("Notion-Version", "2025-09-03")
            .send()
            .await;
        assert!(r.is_err(), "{r:?}");
        let (s, b) = call(&f, reqwest::Method::GET, "/v1/users/me", None).await;
        assert_eq!(s, 200);
        assert_eq!(b["bot"]["workspace_name"], "Fake Workspace");
        assert_eq!(
            f.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![0, 200]
        );
    }
}
