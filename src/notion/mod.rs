//! The Notion sink: finds the tracks data source, maps its properties to roles, and looks up,
//! creates and updates track pages for the sync engine.
//!
//! Two stages: [`Notion::new`] builds the client (no request; `whoami` checks the token), and
//! [`Notion::connect`] discovers the data source and maps its schema, giving the [`Sink`].
//!
//! Layout: [`limiter`] paces every request, [`client`] sends them and retries what is safe to
//! retry, [`budget`] bounds the retries of one run, [`schema`] maps roles to properties, [`props`] shapes values within Notion's limits,
//! [`sink`] holds the operations the sync engine calls (`lookup`, `create`, `add_playlist`, ...).
//!
//! Invariants:
//! - A create is never blindly repeated: a lost answer is resolved by Notion's
//!   `committed_resource_id` or by looking the track up before trying again, so a flaky network
//!   does not create duplicate pages.
//! - Errors are one line, name the problem and the fix, and never contain the token.
//! - One [`RateLimiter`] paces all requests of a `Notion`, its clones and its sinks.
//! - Retries are bounded per run by a [`RetryBudget`] that the run hands to its sink
//!   ([`Sink::for_run`]); requests outside a run (`check`, the shared connect) are bounded by
//!   the per-request ceiling alone.

mod budget;
mod client;
pub mod limiter;
mod props;
pub mod schema;
mod sink;

pub use budget::RetryBudget;
pub use client::ClientOptions;
pub use limiter::RateLimiter;
pub use schema::{MappingRow, Origin, PropType, Property, PropertyMap, Role};
pub use sink::{ExistingPage, PageAnalysis, PageFiles, PlaylistTag, Sink};

use crate::config::{NotionConfig, Secret, TokenError};
use client::Client;
use reqwest::Method;
use schema::DataSourceSchema;
use std::fmt;
use std::sync::Arc;

/// What went wrong talking to Notion. See [`NotionError::is_fatal`] for what stops a run.
///
/// Every message is one line that names the problem and ends with exactly one `(fix: ...)`;
/// callers add context in front (`lookup failed: ...`) but never a second fix. Values that
/// come from outside (Notion's own message, a transport error) are flattened to one line.
#[derive(Debug, thiserror::Error)]
pub enum NotionError {
    /// No usable token (the message says which source and the fix).
    #[error("{0}")]
    Token(String),
    #[error(
        "Notion rejected the API token (401 unauthorized: {message}) (fix: check the token / NOTION_TOKEN: it must be the integration's internal secret, starting with ntn_ or secret_)"
    )]
    Unauthorized { message: String },
    #[error(
        "Notion refused {what} (403 {code}: {message}) (fix: give the integration read, insert and update content capabilities in its settings)"
    )]
    Forbidden {
        what: String,
        code: String,
        message: String,
    },
    #[error(
        "Notion cannot find {what} (404 object_not_found: {message}) (fix: share the database with the integration (••• > Connections > add your integration), and check the id)"
    )]
    NotFound { what: String, message: String },
    /// Notion refused the data of one write; only that track is affected.
    #[error(
        "Notion refused {what} (400 validation_error: {message}) (fix: check that the property named there exists in Notion with the type playlistd expects (`playlistd check` shows the mapping); the track is retried on a later run)"
    )]
    Validation { what: String, message: String },
    #[error("Notion refused {what} (HTTP {status} {code}: {message}) (fix: {fix})")]
    Request {
        what: String,
        status: u16,
        code: String,
        message: String,
        fix: String,
    },
    #[error(
        "Notion blocked this integration's requests (429 public_api_request_blocked) (fix: check the integration and the workspace in Notion's settings; playlistd will not retry)"
    )]
    Blocked,
    /// Retries ran out on 5xx, timeouts, broken connections or rate limits.
    #[error(
        "Notion did not complete {what} after {attempts} attempt(s); last error: {last} (fix: Notion may be down or slow; the next run retries)"
    )]
    Unavailable {
        what: String,
        attempts: u32,
        last: String,
    },
    /// No connection could be made at all (DNS, refused, no route): the network, not Notion.
    #[error(
        "cannot reach the Notion API at {host} for {what} after {attempts} attempt(s): {last} (fix: check the network connection, DNS and any proxy or firewall, and notion.api_base; the next run retries)"
    )]
    Unreachable {
        host: String,
        what: String,
        attempts: u32,
        last: String,
    },
    /// A playlist property would hold more values than one write takes. Nothing was written,
    /// so the values a person put there stay; retrying cannot help until someone removes some.
    #[error(
        "cannot tag page {page_url}: its {property:?} property would hold {count} values, more than the {limit} Notion takes in one write, so playlistd left the page unchanged (fix: remove some of that page's {property:?} values in Notion, then run `playlistd retry`)"
    )]
    TooManyValues {
        page_url: String,
        property: String,
        count: usize,
        limit: usize,
    },
    #[error("{message} (fix: {fix})")]
    Schema { message: String, fix: String },
    #[error(
        "unexpected answer from Notion to {what}: {message} (fix: if a proxy sits between playlistd and Notion, check it; otherwise report this as a playlistd bug; the next run retries)"
    )]
    Protocol { what: String, message: String },
    #[error("cannot set up the Notion client: {message} (fix: {fix})")]
    Setup { message: String, fix: String },
}

impl From<TokenError> for NotionError {
    fn from(e: TokenError) -> Self {
        NotionError::Token(e.to_string())
    }
}

impl NotionError {
    /// True when no further request can succeed until the user fixes something (token, sharing,
    /// capabilities, schema, configuration). `Validation` and `TooManyValues` affect one track;
    /// `Unavailable`, `Unreachable` and `Protocol` are worth retrying on the next run.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            NotionError::Validation { .. }
                | NotionError::TooManyValues { .. }
                | NotionError::Unavailable { .. }
                | NotionError::Unreachable { .. }
                | NotionError::Protocol { .. }
        )
    }
    /// Notion is down or slow, or the network is: stop this run's Notion work, try again next run.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NotionError::Unavailable { .. }
                | NotionError::Unreachable { .. }
                | NotionError::Protocol { .. }
        )
    }
    /// The track cannot get further until a person changes its page: retrying on every run
    /// would only repeat the failure, so the track is parked until `playlistd retry`.
    pub fn needs_a_person(&self) -> bool {
        matches!(self, NotionError::TooManyValues { .. })
    }
}

/// The integration's identity, for `playlistd check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub bot_name: String,
    pub workspace_name: String,
}

impl fmt::Display for WhoAmI {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "integration {:?} in workspace {:?}",
            self.bot_name, self.workspace_name
        )
    }
}

/// A data source of the configured database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceInfo {
    pub id: String,
    pub name: String,
}

/// The Notion client: token, limiter, retry policy. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Notion {
    client: Arc<Client>,
    cfg: Arc<NotionConfig>,
}

impl fmt::Debug for Notion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notion")
            .field("client", &self.client)
            .field("database_id", &self.cfg.database_id)
            .finish_non_exhaustive()
    }
}

/// Ids compare without dashes and case.
pub(crate) fn compact_id(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

impl Notion {
    /// Builds the client. Sends nothing.
    pub fn new(cfg: &NotionConfig, token: Secret) -> Result<Notion, NotionError> {
        Self::with_options(cfg, &token, ClientOptions::default())
    }

    /// Like [`Notion::new`] with client options (tests, demo, benchmarks).
    pub fn with_options(
        cfg: &NotionConfig,
        token: &Secret,
        opts: ClientOptions,
    ) -> Result<Notion, NotionError> {
        let client = Client::new(
            &cfg.api_base,
            token,
            &cfg.version,
            cfg.timeout,
            cfg.requests_per_minute,
            opts,
        )?;
        Ok(Notion {
            client: Arc::new(client),
            cfg: Arc::new(cfg.clone()),
        })
    }

    /// HTTP attempts sent so far by this client and its sinks (retries included).
    pub fn requests(&self) -> u64 {
        self.client.requests()
    }

    pub fn limiter(&self) -> Arc<RateLimiter> {
        self.client.limiter()
    }

    /// Checks the token: `GET /v1/users/me`. Says nothing about sharing (see [`Notion::connect`]).
    pub async fn whoami(&self) -> Result<WhoAmI, NotionError> {
        let v = self
            .client
            .request(
                Method::GET,
                "/v1/users/me",
                None,
                "the integration's identity (users/me)",
                &RetryBudget::unbounded(),
            )
            .await?;
        Ok(WhoAmI {
            bot_name: v["name"].as_str().unwrap_or("").to_string(),
            workspace_name: v["bot"]["workspace_name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        })
    }

    /// Finds the data source (the configured one, or the database's only one), reads its
    /// schema and maps roles to properties.
    pub async fn connect(&self) -> Result<Sink, NotionError> {
        let cfg = &self.cfg;
        let client = &self.client;
        let db = &cfg.database_id;
        // The sink outlives any one run (an engine connects once); its two reads are bounded
        // by the per-request ceiling alone.
        let budget = RetryBudget::unbounded();
        let v = client
            .request(
                Method::GET,
                &format!("/v1/databases/{db}"),
                None,
                &format!("the database {db}"),
                &budget,
            )
            .await?;
        let data_sources: Vec<DataSourceInfo> = v["data_sources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| DataSourceInfo {
                        id: d["id"].as_str().unwrap_or("").to_string(),
                        name: d["name"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let list = || {
            data_sources
                .iter()
                .map(|d| format!("{:?} ({})", d.name, d.id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ds_id = match &cfg.data_source_id {
            Some(want) => match data_sources
                .iter()
                .find(|d| compact_id(&d.id) == compact_id(want))
            {
                Some(d) => d.id.clone(),
                None => {
                    return Err(NotionError::Schema {
                        message: format!("notion.data_source {want} is not a data source of database {db}; it has {}", list()),
                        fix: "set notion.data_source to one of these ids, or remove it when the database has only one".into(),
                    });
                }
            },
            None => match data_sources.as_slice() {
                [only] => only.id.clone(),
                [] => {
                    return Err(NotionError::Schema {
                        message: format!("database {db} lists no data sources"),
                        fix: "check that notion.database is the tracks database and notion.version is \"2025-09-03\" or later".into(),
                    });
                }
                _ => {
                    return Err(NotionError::Schema {
                        message: format!(
                            "database {db} has {} data sources: {}",
                            data_sources.len(),
                            list()
                        ),
                        fix: "set notion.data_source to the id of the one that holds the tracks"
                            .into(),
                    });
                }
            },
        };
        let v = client
            .request(
                Method::GET,
                &format!("/v1/data_sources/{ds_id}"),
                None,
                &format!("the data source {ds_id}"),
                &budget,
            )
            .await?;
        let schema = DataSourceSchema::from_json(&v);
        let map = PropertyMap::resolve(&schema, &cfg.properties)?;
        for w in map.warnings() {
            tracing::warn!("{w}");
        }
        let database_id = v["parent"]["database_id"]
            .as_str()
            .unwrap_or(db)
            .to_string();
        Ok(Sink::new(
            client.clone(),
            database_id,
            data_sources,
            schema,
            map,
            cfg.lookup_batch.clamp(1, 100),
            cfg.match_title_artist,
        ))
    }
}

#[cfg(test)]
mod tests;
