//! Databases: the specs a fake is started with (a database holds one or more data sources,
//! each with a schema of typed properties), and `GET /v1/databases/{id}` in the old shape (the
//! properties inline, before `2025-09-03`) and the new one (a list of data sources).
//!
//! Invariants: the first database of the options is "the" tracks database; a database the
//! integration is not shared with is a 404 with Notion's share hint; an old `Notion-Version`
//! against a database with several data sources gets the `multiple_data_sources_for_database`
//! error, as reference/notion-api.md §1.4 describes.

use super::reply::Reply;
use super::wire::{compact, dashed, request_id};
use super::{DATA_SOURCES_VERSION, Database, FakeState, NO_ARCHIVED_VERSION, SHARE_HINT};
use serde_json::{Value, json};

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
    pub(super) fn key(&self) -> &'static str {
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
                ("AIFF File Path", PropKind::RichText),
                ("WAV File Path", PropKind::RichText),
                ("M4A File Path", PropKind::RichText),
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

impl FakeState {
    pub(super) fn get_database(&self, id: &str, version: &str) -> Result<Reply, Reply> {
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
}

pub(super) fn multiple_sources_error(db: &Database) -> Reply {
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
