//! The file as written: serde structs that mirror `playlists.toml` key for key.
//!
//! Why a separate stage: serde checks types and refuses unknown keys (`deny_unknown_fields`
//! on every table, so a typo is an error at its line, never a silently ignored key); meaning
//! is checked afterwards by [`super::validate`]. Invariant: every value that validation
//! judges beyond its type is kept [`Spanned`], so its error can name the line and column.
//! Nothing here has defaults or rules; an absent key is `None`.

use super::{ConfigError, Ctx, PropertyNames};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub notion: Notion,
    #[serde(default)]
    pub soundcloud: SoundCloud,
    #[serde(default)]
    pub download: Download,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub daemon: Daemon,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default, rename = "playlist")]
    pub playlists: Vec<Playlist>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notion {
    pub database: Spanned<String>,
    pub data_source: Option<Spanned<String>>,
    pub token_env: Option<String>,
    pub token_file: Option<Spanned<String>>,
    pub api_base: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub requests_per_minute: Option<Spanned<i64>>,
    #[serde(default)]
    pub properties: PropertyNames,
    pub lookup_batch: Option<Spanned<i64>>,
    pub match_title_artist: Option<bool>,
    pub timeout_secs: Option<Spanned<i64>>,
    pub key_notation: Option<Spanned<String>>,
    pub overwrite_analysis: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoundCloud {
    pub api_base: Option<Spanned<String>>,
    pub web_base: Option<Spanned<String>>,
    pub short_link_base: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub user_agent: Option<Spanned<String>>,
    pub timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub enabled: Option<bool>,
    pub dir: Option<String>,
    pub concurrency: Option<Spanned<i64>>,
    pub engine: Option<Spanned<String>>,
    pub prefer: Option<Spanned<String>>,
    pub ytdlp: Option<String>,
    pub extra_args: Option<Vec<String>>,
    pub output_template: Option<Spanned<String>>,
    pub timeout_secs: Option<Spanned<i64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub m3u: Option<bool>,
    pub formats: Option<Spanned<Vec<Spanned<String>>>>,
    pub pcm_bits: Option<Spanned<i64>>,
    pub sample_rate: Option<Spanned<SampleRate>>,
    pub analyze: Option<bool>,
    pub tempo_range: Option<Spanned<Vec<f64>>>,
}

/// `download.sample_rate`: the word `"source"` or a rate in Hz.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SampleRate {
    Word(String),
    Hz(i64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub schedule: Option<Spanned<String>>,
    pub download: Option<bool>,
    pub max_tracks: Option<Spanned<i64>>,
    pub removed: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub state_dir: Option<String>,
    pub cache_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    pub max_concurrent_syncs: Option<Spanned<i64>>,
    pub timezone: Option<Spanned<String>>,
    pub after_sync: Option<Spanned<Vec<String>>>,
    pub hook_timeout_secs: Option<Spanned<i64>>,
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub webhook: Option<Spanned<String>>,
    pub webhook_file: Option<Spanned<String>>,
    pub ntfy: Option<Spanned<String>>,
    pub ntfy_file: Option<Spanned<String>>,
    pub healthchecks: Option<Spanned<String>>,
    pub healthchecks_file: Option<Spanned<String>>,
    pub events: Option<Spanned<Vec<Spanned<String>>>>,
    pub digest_minutes: Option<Spanned<i64>>,
    pub timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub dir: Option<String>,
    pub file: Option<bool>,
    pub rotation: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
    pub level: Option<String>,
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playlist {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    pub download: Option<bool>,
    pub max_tracks: Option<Spanned<i64>>,
    pub source: Option<Spanned<String>>,
    pub dir: Option<String>,
    pub removed: Option<Spanned<String>>,
}

/// Reads the text into [`File`]. A TOML or serde error keeps its place and gets a fix that
/// fits its kind (an unknown key, a missing key, or broken syntax).
pub(super) fn read(ctx: &Ctx<'_>) -> Result<File, ConfigError> {
    toml::from_str(ctx.text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let fix = if msg.contains("unknown field") {
            Some("remove or rename the key; playlists.toml.example lists every key")
        } else if msg.contains("missing field") {
            Some("add the key; playlists.toml.example shows it")
        } else {
            Some("correct the TOML syntax at that place")
        };
        ctx.err(e.span(), msg, fix)
    })
}
