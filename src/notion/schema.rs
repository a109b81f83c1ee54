//! Which property of the data source plays which role (title, artist, URL, ...).
//!
//! A role is filled from `notion.properties` when configured, else by the names the "Music
//! Tracks" database and its siblings use (reference/seed-system.md §1).
//!
//! Invariants:
//! - A configured name must exist with an acceptable type, else connecting fails with an error
//!   naming the property, its actual type and the expected types. An empty name disables the role.
//! - A default candidate with the wrong type is skipped with a warning, never an error: the user
//!   did not ask for it.
//! - At least one dedup key (url or soundcloud_id) is mapped, else nothing could ever be matched
//!   and every run would create duplicates: that is a fatal schema error.

use super::NotionError;
use crate::config::PropertyNames;
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Title,
    Artist,
    Url,
    SoundCloudId,
    Playlists,
    PlaylistUrl,
    Genre,
    Duration,
    Downloaded,
    FilePath,
    Tempo,
    Key,
    AiffPath,
    WavPath,
    M4aPath,
}

impl Role {
    pub const ALL: [Role; 15] = [
        Role::Title,
        Role::Artist,
        Role::Url,
        Role::SoundCloudId,
        Role::Playlists,
        Role::PlaylistUrl,
        Role::Genre,
        Role::Duration,
        Role::Downloaded,
        Role::FilePath,
        Role::Tempo,
        Role::Key,
        Role::AiffPath,
        Role::WavPath,
        Role::M4aPath,
    ];

    /// The key under `[notion.properties]`.
    pub fn config_key(self) -> &'static str {
        match self {
            Role::Title => "title",
            Role::Artist => "artist",
            Role::Url => "url",
            Role::SoundCloudId => "soundcloud_id",
            Role::Playlists => "playlists",
            Role::PlaylistUrl => "playlist_url",
            Role::Genre => "genre",
            Role::Duration => "duration",
            Role::Downloaded => "downloaded",
            Role::FilePath => "file_path",
            Role::Tempo => "tempo",
            Role::Key => "key",
            Role::AiffPath => "aiff_path",
            Role::WavPath => "wav_path",
            Role::M4aPath => "m4a_path",
        }
    }

    fn configured(self, p: &PropertyNames) -> Option<&str> {
        match self {
            Role::Title => p.title.as_deref(),
            Role::Artist => p.artist.as_deref(),
            Role::Url => p.url.as_deref(),
            Role::SoundCloudId => p.soundcloud_id.as_deref(),
            Role::Playlists => p.playlists.as_deref(),
            Role::PlaylistUrl => p.playlist_url.as_deref(),
            Role::Genre => p.genre.as_deref(),
            Role::Duration => p.duration.as_deref(),
            Role::Downloaded => p.downloaded.as_deref(),
            Role::FilePath => p.file_path.as_deref(),
            Role::Tempo => p.tempo.as_deref(),
            Role::Key => p.key.as_deref(),
            Role::AiffPath => p.aiff_path.as_deref(),
            Role::WavPath => p.wav_path.as_deref(),
            Role::M4aPath => p.m4a_path.as_deref(),
        }
    }

    /// Default names, most preferred first.
    pub fn candidates(self) -> &'static [&'static str] {
        match self {
            Role::Title => &["Title", "Name"],
            Role::Artist => &["Artist Name", "Artist", "Artists"],
            Role::Url => &["SoundCloud URL", "SoundCloud", "Soundcloud URL"],
            Role::SoundCloudId => &["SoundCloud ID", "SoundCloud Track ID"],
            Role::Playlists => &["Playlists", "Playlist"],
            Role::PlaylistUrl => &["Playlist URL", "SoundCloud Playlist URL", "Playlist Link"],
            Role::Genre => &["Genre", "Genres"],
            Role::Duration => &["Audio Duration (seconds)", "Duration (s)"],
            Role::Downloaded => &["Downloaded", "DL"],
            Role::FilePath => &[
                "File Path",
                "Local File Path",
                "Download Path",
                "Audio File Path",
            ],
            // The replaced system's names (reference/seed-system.md §1) and Rekordbox's export.
            Role::Tempo => &["Tempo", "BPM", "AverageBpm"],
            Role::Key => &["Key", "Key "],
            Role::AiffPath => &["AIFF File Path", "AIFF", "AIFF Path"],
            Role::WavPath => &["WAV File Path", "WAV", "WAV Path"],
            Role::M4aPath => &["M4A File Path", "M4A", "M4A Path"],
        }
    }

    pub fn accepted(self) -> &'static [PropType] {
        use PropType::*;
        match self {
            Role::Title => &[Title],
            Role::Artist => &[RichText],
            Role::Url => &[Url, RichText],
            Role::SoundCloudId => &[RichText, Number],
            Role::Playlists => &[Relation, MultiSelect, Select, RichText],
            Role::PlaylistUrl => &[Url, RichText],
            Role::Genre => &[Select, MultiSelect, RichText],
            Role::Duration => &[Number],
            Role::Downloaded => &[Checkbox],
            Role::FilePath | Role::AiffPath | Role::WavPath | Role::M4aPath => &[RichText, Url],
            Role::Tempo => &[Number],
            Role::Key => &[RichText, Select],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.config_key())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropType {
    Title,
    RichText,
    Url,
    Number,
    Checkbox,
    Select,
    MultiSelect,
    Relation,
    Other(String),
}

impl PropType {
    pub fn parse(s: &str) -> PropType {
        match s {
            "title" => PropType::Title,
            "rich_text" => PropType::RichText,
            "url" => PropType::Url,
            "number" => PropType::Number,
            "checkbox" => PropType::Checkbox,
            "select" => PropType::Select,
            "multi_select" => PropType::MultiSelect,
            "relation" => PropType::Relation,
            other => PropType::Other(other.to_string()),
        }
    }
    /// Notion's name for the type, also the key of values and filters.
    pub fn key(&self) -> &str {
        match self {
            PropType::Title => "title",
            PropType::RichText => "rich_text",
            PropType::Url => "url",
            PropType::Number => "number",
            PropType::Checkbox => "checkbox",
            PropType::Select => "select",
            PropType::MultiSelect => "multi_select",
            PropType::Relation => "relation",
            PropType::Other(s) => s,
        }
    }
}

impl fmt::Display for PropType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.key())
    }
}

/// A property of the data source's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub id: String,
    pub kind: PropType,
    /// For relations: the related data source (2025-09-03 responses carry it) and database.
    pub relation_data_source: Option<String>,
    pub relation_database: Option<String>,
}

/// The properties of a data source, in schema order.
#[derive(Debug, Clone, Default)]
pub struct DataSourceSchema {
    pub id: String,
    pub name: String,
    pub properties: Vec<Property>,
}

impl DataSourceSchema {
    /// From a `GET /v1/data_sources/{id}` answer.
    pub fn from_json(v: &Value) -> DataSourceSchema {
        let mut properties: Vec<Property> = v["properties"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, p)| {
                        let kind = PropType::parse(p["type"].as_str().unwrap_or(""));
                        Property {
                            name: p["name"].as_str().unwrap_or(name).to_string(),
                            id: p["id"].as_str().unwrap_or(name).to_string(),
                            relation_data_source: p["relation"]["data_source_id"]
                                .as_str()
                                .map(str::to_string),
                            relation_database: p["relation"]["database_id"]
                                .as_str()
                                .map(str::to_string),
                            kind,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        properties.sort_by(|a, b| a.name.cmp(&b.name));
        let name = v["title"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["plain_text"].as_str())
                    .collect::<String>()
            })
            .unwrap_or_default();
        DataSourceSchema {
            id: v["id"].as_str().unwrap_or("").to_string(),
            name,
            properties,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    fn get_loose(&self, name: &str) -> Option<&Property> {
        self.get(name).or_else(|| {
            self.properties
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
        })
    }

    pub fn title(&self) -> Option<&Property> {
        self.properties.iter().find(|p| p.kind == PropType::Title)
    }
}

/// How a role got (or did not get) its property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Default,
    Disabled,
    Missing,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Origin::Configured => "configured",
            Origin::Default => "found by name",
            Origin::Disabled => "disabled",
            Origin::Missing => "not found",
        })
    }
}

/// One row of the mapping table shown by `playlistd check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    pub role: Role,
    pub property: Option<String>,
    pub kind: Option<PropType>,
    pub origin: Origin,
}

/// Role → property, resolved once at connect time.
#[derive(Debug, Clone)]
pub struct PropertyMap {
    slots: Vec<(Role, Option<Property>, Origin)>,
    warnings: Vec<String>,
}

impl PropertyMap {
    pub fn resolve(
        schema: &DataSourceSchema,
        names: &PropertyNames,
    ) -> Result<PropertyMap, NotionError> {
        let mut slots = Vec::new();
        let mut warnings = Vec::new();
        // Dedup candidates found under their usual name but of the wrong type, for the error.
        let mut mistyped_keys: Vec<String> = Vec::new();
        for role in Role::ALL {
            match role.configured(names).map(str::trim) {
                Some("") => slots.push((role, None, Origin::Disabled)),
                Some(name) => {
                    let p = configured(schema, role, name)?;
                    slots.push((role, Some(p), Origin::Configured));
                }
                None => match by_default_name(schema, role, &mut warnings, &mut mistyped_keys) {
                    Some(p) => slots.push((role, Some(p), Origin::Default)),
                    None => slots.push((role, None, Origin::Missing)),
                },
            }
        }
        let map = PropertyMap { slots, warnings };
        if map.get(Role::Url).is_none() && map.get(Role::SoundCloudId).is_none() {
            return Err(no_dedup_key(schema, &mistyped_keys));
        }
        Ok(map)
    }

    pub fn get(&self, role: Role) -> Option<&Property> {
        self.slots
            .iter()
            .find(|s| s.0 == role)
            .and_then(|s| s.1.as_ref())
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn table(&self) -> Vec<MappingRow> {
        self.slots
            .iter()
            .map(|(role, p, origin)| MappingRow {
                role: *role,
                property: p.as_ref().map(|p| p.name.clone()),
                kind: p.as_ref().map(|p| p.kind.clone()),
                origin: *origin,
            })
            .collect()
    }
}

/// The types `role` accepts, as an error message names them.
fn expected_types(role: Role) -> String {
    role.accepted()
        .iter()
        .map(|t| t.key())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The property `notion.properties` names for `role`: it must exist and be of a type the role
/// accepts, since the user asked for it.
fn configured(schema: &DataSourceSchema, role: Role, name: &str) -> Result<Property, NotionError> {
    let accepted = role.accepted();
    let expected = expected_types(role);
    let Some(p) = schema.get(name) else {
        let available = schema
            .properties
            .iter()
            .map(|p| format!("{:?} ({})", p.name, p.kind))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NotionError::Schema {
            message: format!(
                "notion.properties.{} names the property {name:?}, which does not exist in data source {:?}; it has {available}",
                role.config_key(),
                schema.name
            ),
            fix: format!(
                "fix the name (it is case-sensitive), create a {expected} property {name:?} in Notion, or set notion.properties.{} = \"\" to skip it",
                role.config_key()
            ),
        });
    };
    if !accepted.contains(&p.kind) {
        return Err(NotionError::Schema {
            message: format!(
                "property {name:?} (notion.properties.{}) is of type {}, but the {} role needs {expected}",
                role.config_key(),
                p.kind,
                role.config_key()
            ),
            fix: format!(
                "change the property's type in Notion, point notion.properties.{} at a {expected} property, or set it to \"\" to skip it",
                role.config_key()
            ),
        });
    }
    Ok(p.clone())
}

/// The first of the role's usual names that exists with an accepted type (the title role
/// falls back on the title property, whatever its name). A usual name of the wrong type is
/// skipped with a warning; for a dedup key it is also kept for [`no_dedup_key`].
fn by_default_name(
    schema: &DataSourceSchema,
    role: Role,
    warnings: &mut Vec<String>,
    mistyped_keys: &mut Vec<String>,
) -> Option<Property> {
    let accepted = role.accepted();
    let expected = expected_types(role);
    let mut found = None;
    for cand in role.candidates() {
        if let Some(p) = schema.get_loose(cand) {
            if accepted.contains(&p.kind) {
                found = Some(p.clone());
                break;
            }
            let mistyped = format!("{:?} is of type {}, not {expected}", p.name, p.kind);
            if matches!(role, Role::Url | Role::SoundCloudId) && !mistyped_keys.contains(&mistyped)
            {
                mistyped_keys.push(mistyped);
            }
            warnings.push(format!(
                "property {:?} looks like the {} role but is of type {} (expected {expected}); not writing it",
                p.name,
                role.config_key(),
                p.kind
            ));
        }
    }
    // The title is whatever the title property is called.
    if found.is_none() && role == Role::Title {
        found = schema.title().cloned();
    }
    found
}

/// Neither dedup key is mapped: every run would create duplicates, so connecting fails.
fn no_dedup_key(schema: &DataSourceSchema, mistyped_keys: &[String]) -> NotionError {
    let (mistyped, fix) = if mistyped_keys.is_empty() {
        (
            String::new(),
            "add a url property named \"SoundCloud URL\" to the database, or set notion.properties.url (or soundcloud_id) to an existing property",
        )
    } else {
        (
            format!("; {}", mistyped_keys.join("; ")),
            "change that property's type in Notion, or set notion.properties.url (or soundcloud_id) to a url or rich_text property",
        )
    };
    NotionError::Schema {
        message: format!(
            "data source {:?} has no property to recognise tracks by: neither a SoundCloud URL (url or rich_text, e.g. \"SoundCloud URL\") nor a SoundCloud ID property is mapped, so every run would create duplicates{mistyped}",
            schema.name
        ),
        fix: fix.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(props: &[(&str, &str)]) -> DataSourceSchema {
        let mut m = serde_json::Map::new();
        for (n, t) in props {
            m.insert(n.to_string(), json!({"id": n, "name": n, "type": t}));
        }
        DataSourceSchema::from_json(&json!({"id": "ds", "properties": m}))
    }

    #[test]
    fn default_names_and_wrong_type_candidates() {
        let s = schema(&[
            ("Name", "title"),
            ("Artist", "rich_text"),
            ("SoundCloud", "url"),
            ("Genre", "number"),
            ("Genres", "multi_select"),
        ]);
        let m = PropertyMap::resolve(&s, &PropertyNames::default()).unwrap();
        assert_eq!(m.get(Role::Title).unwrap().name, "Name");
        assert_eq!(m.get(Role::Artist).unwrap().name, "Artist");
        assert_eq!(m.get(Role::Url).unwrap().name, "SoundCloud");
        assert_eq!(m.get(Role::Genre).unwrap().name, "Genres");
        assert!(m.get(Role::Playlists).is_none());
        assert_eq!(m.warnings().len(), 1, "{:?}", m.warnings());
    }

    #[test]
    fn configured_wrong_type_names_property_types() {
        let s = schema(&[
            ("Title", "title"),
            ("SoundCloud URL", "url"),
            ("Genre", "number"),
        ]);
        let names = PropertyNames {
            genre: Some("Genre".into()),
            ..Default::default()
        };
        let e = PropertyMap::resolve(&s, &names).unwrap_err().to_string();
        assert!(
            e.contains("\"Genre\"")
                && e.contains("number")
                && e.contains("select or multi_select or rich_text"),
            "{e}"
        );
        let names = PropertyNames {
            url: Some("".into()),
            ..Default::default()
        };
        let e = PropertyMap::resolve(&s, &names).unwrap_err().to_string();
        assert!(e.contains("fix:"), "{e}");
    }
}
