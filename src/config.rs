//! `playlists.toml`: parsed once into validated types.
//!
//! Two stages, as in ripgrep's low/high args: [`raw`] mirrors the file with serde
//! (`deny_unknown_fields`, spans on every value we validate ourselves), and [`Config`] holds what
//! the rest of the program uses: parsed crons, parsed URLs, resolved paths, defaults applied.
//! Invariant: a `Config` value is always whole and valid; every rejection is a [`ConfigError`]
//! that names the file, line and column, the problem and the fix, on one line.

use crate::logging::{LogFormat, Rotation};
use crate::model::normalize_url;
use crate::paths::{Paths, expand_tilde};
use crate::schedule::Zone;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Notion's documented default budget for every plan below Business.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 180;
pub const DEFAULT_NOTION_VERSION: &str = "2025-09-03";

/// A configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column; `None` when the problem is not tied to a place (missing file).
    pub location: Option<(usize, usize)>,
    pub message: String,
    pub fix: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// Where a playlist's track list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// SoundCloud API v2, natively.
    SoundCloud,
    /// `yt-dlp --flat-playlist -J`: any site yt-dlp supports.
    YtDlp,
}

/// What happens to a track's page when the track leaves a playlist (seen in a complete
/// listing). Audio files are never deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedPolicy {
    /// Record it in the state; leave Notion alone.
    #[default]
    Keep,
    /// Take this playlist off the page's playlist property.
    Mark,
    /// Move the page to Notion's trash, unless another playlist still holds the track (then
    /// as `Mark`).
    Trash,
}

/// A parsed cron schedule; keeps the text the user wrote for messages and status.
#[derive(Clone)]
pub struct Schedule {
    pub expr: String,
    /// Shared, not copied, by the playlist's ticker and the daemon's syncs: croner keeps a
    /// bitfield for every year up to 5000 even when years are refused, so one parsed line is
    /// about 5 KiB, and two copies per playlist were 1 MiB of a 100-playlist daemon.
    pub cron: Arc<Cron>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Schedule {
    /// Accepts standard 5-field crontab lines and 6-field lines with seconds (croner 4), and
    /// the `@hourly`-style nicknames. Seven fields (years) are refused: no user means them.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        match parser.parse(expr) {
            Ok(cron) => Ok(Schedule {
                expr: expr.trim().to_string(),
                cron: Arc::new(cron),
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Where the Notion token comes from. The token itself is read only when needed, and is kept
/// in a [`Secret`] that never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why the token could not be read. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the Notion token is not set: environment variable {0} is empty or missing (fix: export {0}=<your integration secret>, or set notion.token_file)"
    )]
    EnvMissing(String),
    #[error(
        "cannot read the Notion token file {path}: {reason} (fix: check notion.token_file and the file's permissions)"
    )]
    FileUnreadable { path: PathBuf, reason: String },
    #[error(
        "the Notion token file {0} is empty (fix: put the integration secret on its first line)"
    )]
    FileEmpty(PathBuf),
}

impl TokenSource {
    pub fn read(&self) -> Result<Secret, TokenError> {
        match self {
            TokenSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                _ => Err(TokenError::EnvMissing(name.clone())),
            },
            TokenSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| TokenError::FileUnreadable {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    Err(TokenError::FileEmpty(path.clone()))
                } else {
                    Ok(Secret::new(token))
                }
            }
        }
    }
}

/// Property names configured by the user; `None` means "find it by the usual names", and an
/// empty string means "do not write this property".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyNames {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub url: Option<String>,
    pub soundcloud_id: Option<String>,
    pub playlists: Option<String>,
    pub playlist_url: Option<String>,
    pub genre: Option<String>,
    pub duration: Option<String>,
    pub downloaded: Option<String>,
    pub file_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotionConfig {
    /// The database id, 32 lowercase hex digits without dashes.
    pub database_id: String,
    /// Pinned data source; discovered from the database when `None`.
    pub data_source_id: Option<String>,
    pub token: TokenSource,
    pub api_base: Url,
    pub version: String,
    pub requests_per_minute: u32,
    pub properties: PropertyNames,
    /// New tracks checked against the database per lookup query.
    pub lookup_batch: usize,
    /// Also match existing pages by title + artist when URL and id do not match.
    pub match_title_artist: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoundCloudConfig {
    pub api_base: Url,
    pub web_base: Url,
    pub client_id: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DownloadConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub concurrency: usize,
    pub ytdlp: PathBuf,
    pub extra_args: Vec<String>,
    /// File name template inside the playlist folder, without extension; see the example file.
    pub output_template: String,
    pub timeout: Duration,
    /// After this many failed attempts a track is parked until `playlistd retry`.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistConfig {
    pub name: String,
    pub url: Url,
    pub schedule: Schedule,
    pub download: bool,
    pub max_tracks: Option<usize>,
    pub source: SourceKind,
    /// Folder for this playlist's files; default `<download.dir>/<sanitized name>`.
    pub dir: Option<PathBuf>,
    pub removed: RemovedPolicy,
}

/// How `playlistd run` behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Syncs running at once; all share one Notion limiter and one download pool.
    pub max_concurrent_syncs: usize,
    /// The zone cron lines are read in.
    pub zone: Zone,
    /// Run after a sync that added tracks: program and arguments.
    pub after_sync: Option<Vec<String>>,
    pub hook_timeout: Duration,
}

/// Where and how `playlistd run` logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `None`: stderr only (journald keeps it).
    pub dir: Option<PathBuf>,
    pub rotation: Rotation,
    pub keep: usize,
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub notion: NotionConfig,
    pub soundcloud: SoundCloudConfig,
    pub download: DownloadConfig,
    pub default_schedule: Schedule,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    pub playlists: Vec<PlaylistConfig>,
}

impl Config {
    pub fn playlist(&self, name_or_url: &str) -> Option<&PlaylistConfig> {
        let norm = normalize_url(name_or_url);
        self.playlists
            .iter()
            .find(|p| p.name == name_or_url || normalize_url(p.url.as_str()) == norm)
    }
}

pub mod raw {
    //! The file as written. Spans are kept on the values that are validated beyond their type.
    use super::PropertyNames;
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
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SoundCloud {
        pub api_base: Option<Spanned<String>>,
        pub web_base: Option<Spanned<String>>,
        pub client_id: Option<Spanned<String>>,
        pub timeout_secs: Option<Spanned<i64>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Download {
        pub enabled: Option<bool>,
        pub dir: Option<String>,
        pub concurrency: Option<Spanned<i64>>,
        pub ytdlp: Option<String>,
        pub extra_args: Option<Vec<String>>,
        pub output_template: Option<Spanned<String>>,
        pub timeout_secs: Option<Spanned<i64>>,
        pub max_attempts: Option<Spanned<i64>>,
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
}

/// Turns a byte offset into a 1-based (line, column), counting columns in characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Extracts the 32-hex-digit id from a Notion URL or a bare id (with or without dashes).
pub fn parse_notion_id(input: &str) -> Option<String> {
    let s = input.trim();
    let candidate = if s.contains("://") {
        let u = Url::parse(s).ok()?;
        u.path_segments()?.rfind(|seg| !seg.is_empty())?.to_string()
    } else {
        s.to_string()
    };
    // A page-style URL ends in "Title-<id>"; the id is the last 32 hex digits.
    let hex: String = candidate.chars().filter(|c| *c != '-').collect();
    if hex.len() >= 32 {
        let tail = &hex[hex.len() - 32..];
        if tail.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(tail.to_ascii_lowercase());
        }
    }
    None
}

/// Is this a SoundCloud playlist ("set") URL, public or secret? `web_base` is accepted as a
/// SoundCloud host too, so tests and proxies can stand in for soundcloud.com.
pub fn is_soundcloud_set_url(u: &Url, web_base: &Url) -> bool {
    let host_ok = matches!(
        u.host_str(),
        Some("soundcloud.com") | Some("www.soundcloud.com") | Some("m.soundcloud.com")
    ) || (u.host_str() == web_base.host_str()
        && u.port_or_known_default() == web_base.port_or_known_default());
    let segs: Vec<&str> = u
        .path_segments()
        .map(|s| s.filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    host_ok && (segs.len() == 3 || segs.len() == 4) && segs[1] == "sets"
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
        fix: Option<&str>,
    ) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            location: span.map(|s| line_col(self.text, s.start)),
            message: message.into(),
            fix: fix.map(str::to_string),
        }
    }

    fn url(&self, v: &toml::Spanned<String>, key: &str) -> Result<Url, ConfigError> {
        Url::parse(v.get_ref().trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                self.err(
                    Some(v.span()),
                    format!("{key} is not an http(s) URL: {:?}", v.get_ref()),
                    Some("write a full URL such as \"https://example.com\""),
                )
            })
    }

    fn positive(&self, v: &toml::Spanned<i64>, key: &str, max: i64) -> Result<u64, ConfigError> {
        let n = *v.get_ref();
        if n < 1 || n > max {
            return Err(self.err(
                Some(v.span()),
                format!("{key} must be between 1 and {max}, got {n}"),
                None,
            ));
        }
        Ok(n as u64)
    }
}

/// Parses and validates the text of a config file. `paths` supplies the platform directories
/// used when the file does not override them.
pub fn parse(text: &str, path: &Path, paths: &Paths) -> Result<Config, ConfigError> {
    let ctx = Ctx { path, text };
    let file: raw::File = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let fix = if msg.contains("unknown field") {
            Some("remove or rename the key; playlists.toml.example lists every key")
        } else if msg.contains("missing field") {
            Some("add the key; playlists.toml.example shows it")
        } else {
            Some("correct the TOML syntax at that place")
        };
        ctx.err(e.span(), msg, fix)
    })?;

    let n = &file.notion;
    let database_id = parse_notion_id(n.database.get_ref()).ok_or_else(|| {
        ctx.err(
            Some(n.database.span()),
            format!(
                "notion.database is not a Notion database URL or id: {:?}",
                n.database.get_ref()
            ),
            Some("copy the database's link from Notion (Share > Copy link) or its 32-character id"),
        )
    })?;
    let data_source_id = match &n.data_source {
        None => None,
        Some(ds) => Some(parse_notion_id(ds.get_ref()).ok_or_else(|| {
            ctx.err(
                Some(ds.span()),
                format!("notion.data_source is not a data source id: {:?}", ds.get_ref()),
                Some("copy it from the database's settings > Manage data sources > Copy data source ID"),
            )
        })?),
    };
    let token = match (&n.token_env, &n.token_file) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                Some(f.span()),
                "notion.token_env and notion.token_file are both set",
                Some("keep only one of them"),
            ));
        }
        (None, Some(f)) => TokenSource::File(expand_tilde(f.get_ref())),
        (Some(env), None) => TokenSource::Env(env.clone()),
        (None, None) => TokenSource::Env("NOTION_TOKEN".to_string()),
    };
    let api_base = match &n.api_base {
        Some(v) => ctx.url(v, "notion.api_base")?,
        None => Url::parse("https://api.notion.com").expect("static url"),
    };
    let version = match &n.version {
        None => DEFAULT_NOTION_VERSION.to_string(),
        Some(v) => {
            let s = v.get_ref().trim();
            let valid_date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
            if !valid_date || s < "2025-09-03" {
                return Err(ctx.err(
                    Some(v.span()),
                    format!(
                        "notion.version {s:?} is not supported: playlistd needs the data-source API"
                    ),
                    Some("use \"2025-09-03\" or a later version such as \"2026-03-11\""),
                ));
            }
            s.to_string()
        }
    };
    let requests_per_minute = match &n.requests_per_minute {
        Some(v) => ctx.positive(v, "notion.requests_per_minute", 100_000)? as u32,
        None => DEFAULT_REQUESTS_PER_MINUTE,
    };
    let lookup_batch = match &n.lookup_batch {
        Some(v) => ctx.positive(v, "notion.lookup_batch", 100)? as usize,
        None => 100,
    };
    let notion_timeout = match &n.timeout_secs {
        Some(v) => Duration::from_secs(ctx.positive(v, "notion.timeout_secs", 600)?),
        None => Duration::from_secs(60),
    };
    let notion = NotionConfig {
        database_id,
        data_source_id,
        token,
        api_base,
        version,
        requests_per_minute,
        properties: n.properties.clone(),
        lookup_batch,
        match_title_artist: n.match_title_artist.unwrap_or(false),
        timeout: notion_timeout,
    };

    let sc = &file.soundcloud;
    let client_id = match &sc.client_id {
        None => None,
        Some(v) => {
            let s = v.get_ref().trim();
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ctx.err(
                    Some(v.span()),
                    "soundcloud.client_id must be letters and digits only",
                    Some("remove it to let playlistd find one, or paste the 32-character id"),
                ));
            }
            Some(s.to_string())
        }
    };
    let soundcloud = SoundCloudConfig {
        api_base: match &sc.api_base {
            Some(v) => ctx.url(v, "soundcloud.api_base")?,
            None => Url::parse("https://api-v2.soundcloud.com").expect("static url"),
        },
        web_base: match &sc.web_base {
            Some(v) => ctx.url(v, "soundcloud.web_base")?,
            None => Url::parse("https://soundcloud.com").expect("static url"),
        },
        client_id,
        timeout: match &sc.timeout_secs {
            Some(v) => Duration::from_secs(ctx.positive(v, "soundcloud.timeout_secs", 600)?),
            None => Duration::from_secs(30),
        },
    };

    let d = &file.download;
    let output_template = match &d.output_template {
        None => "{artist} - {title} [{id}]".to_string(),
        Some(v) => {
            let t = v.get_ref();
            if !t.contains("{id}") {
                return Err(ctx.err(
                    Some(v.span()),
                    "download.output_template must contain {id}",
                    Some("add {id}: it keeps file names unique and lets an interrupted download be found again"),
                ));
            }
            if t.contains('/') || t.contains('\\') {
                return Err(ctx.err(
                    Some(v.span()),
                    "download.output_template must be a file name, not a path",
                    Some("set a playlist's folder with `dir` instead"),
                ));
            }
            t.clone()
        }
    };
    let download = DownloadConfig {
        enabled: d.enabled.unwrap_or(true),
        dir: expand_tilde(d.dir.as_deref().unwrap_or("~/Music/playlistd")),
        concurrency: match &d.concurrency {
            Some(v) => ctx.positive(v, "download.concurrency", 64)? as usize,
            None => 3,
        },
        ytdlp: expand_tilde(d.ytdlp.as_deref().unwrap_or("yt-dlp")),
        extra_args: d.extra_args.clone().unwrap_or_default(),
        output_template,
        timeout: match &d.timeout_secs {
            Some(v) => Duration::from_secs(ctx.positive(v, "download.timeout_secs", 86_400)?),
            None => Duration::from_secs(600),
        },
        max_attempts: match &d.max_attempts {
            Some(v) => ctx.positive(v, "download.max_attempts", 1000)? as u32,
            None => 5,
        },
    };

    let default_schedule = match &file.defaults.schedule {
        Some(v) => parse_schedule(&ctx, v, "defaults.schedule")?,
        None => Schedule::parse("0 * * * *").expect("static cron"),
    };
    let default_download = file.defaults.download.unwrap_or(true);
    let default_max = match &file.defaults.max_tracks {
        Some(v) => Some(ctx.positive(v, "defaults.max_tracks", 1_000_000)? as usize),
        None => None,
    };
    let default_removed = match &file.defaults.removed {
        Some(v) => parse_removed(&ctx, v)?,
        None => RemovedPolicy::Keep,
    };

    let mut seen = HashSet::new();
    let mut playlists = Vec::with_capacity(file.playlists.len());
    for p in &file.playlists {
        let name = p.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(ctx.err(
                Some(p.name.span()),
                "playlist name is empty",
                Some("give every playlist a name"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ctx.err(
                Some(p.name.span()),
                "playlist name contains control characters",
                Some("use printable characters only"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(ctx.err(
                Some(p.name.span()),
                format!("duplicate playlist name {name:?}"),
                Some("give each [[playlist]] a unique name"),
            ));
        }
        let url = ctx.url(&p.url, &format!("url of playlist {name:?}"))?;
        let source = match p.source.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("soundcloud", _)) => SourceKind::SoundCloud,
            Some(("yt-dlp", _)) => SourceKind::YtDlp,
            Some((other, span)) => {
                return Err(ctx.err(
                    Some(span),
                    format!("unknown source {other:?} for playlist {name:?}"),
                    Some("use \"soundcloud\" or \"yt-dlp\""),
                ));
            }
        };
        if source == SourceKind::SoundCloud && !is_soundcloud_set_url(&url, &soundcloud.web_base) {
            return Err(ctx.err(
                Some(p.url.span()),
                format!("playlist {name:?}: {url} is not a SoundCloud playlist URL"),
                Some("use https://soundcloud.com/<user>/sets/<playlist>, or set source = \"yt-dlp\" for other sites"),
            ));
        }
        let schedule = match &p.schedule {
            Some(s) => parse_schedule(&ctx, s, &format!("schedule of playlist {name:?}"))?,
            None => default_schedule.clone(),
        };
        let max_tracks = match &p.max_tracks {
            Some(v) => Some(ctx.positive(v, "max_tracks", 1_000_000)? as usize),
            None => default_max,
        };
        playlists.push(PlaylistConfig {
            name,
            url,
            schedule,
            download: p.download.unwrap_or(default_download),
            max_tracks,
            source,
            dir: p.dir.as_deref().map(expand_tilde),
            removed: match &p.removed {
                Some(v) => parse_removed(&ctx, v)?,
                None => default_removed,
            },
        });
    }

    let dm = &file.daemon;
    let daemon = DaemonConfig {
        max_concurrent_syncs: match &dm.max_concurrent_syncs {
            Some(v) => ctx.positive(v, "daemon.max_concurrent_syncs", 64)? as usize,
            None => 2,
        },
        zone: match &dm.timezone {
            None => Zone::Local,
            Some(v) => Zone::parse(v.get_ref())
                .map_err(|e| ctx.err(Some(v.span()), e.to_string(), None))?,
        },
        after_sync: match &dm.after_sync {
            None => None,
            Some(v) if v.get_ref().is_empty() || v.get_ref()[0].trim().is_empty() => {
                return Err(ctx.err(
                    Some(v.span()),
                    "daemon.after_sync is empty",
                    Some("give the program and its arguments, e.g. [\"/home/me/bin/tag-new\", \"--quiet\"], or remove the key"),
                ));
            }
            Some(v) => Some(
                v.get_ref()
                    .iter()
                    .map(|a| expand_tilde(a).display().to_string())
                    .collect(),
            ),
        },
        hook_timeout: match &dm.hook_timeout_secs {
            Some(v) => Duration::from_secs(ctx.positive(v, "daemon.hook_timeout_secs", 86_400)?),
            None => Duration::from_secs(600),
        },
    };
    let lg = &file.log;
    let log = LogConfig {
        dir: if lg.file == Some(false) {
            None
        } else {
            Some(
                lg.dir
                    .as_deref()
                    .map(expand_tilde)
                    .unwrap_or_else(|| paths.log_dir.clone()),
            )
        },
        rotation: match lg
            .rotation
            .as_ref()
            .map(|r| (r.get_ref().as_str(), r.span()))
        {
            None | Some(("daily", _)) => Rotation::Daily,
            Some(("hourly", _)) => Rotation::Hourly,
            Some(("never", _)) => Rotation::Never,
            Some((other, span)) => {
                return Err(ctx.err(
                    Some(span),
                    format!("unknown log.rotation {other:?}"),
                    Some("use \"daily\", \"hourly\" or \"never\""),
                ));
            }
        },
        keep: match &lg.keep {
            Some(v) if *v.get_ref() == 0 => 0,
            Some(v) => ctx.positive(v, "log.keep", 100_000)? as usize,
            None => crate::logging::DEFAULT_KEEP,
        },
        level: lg.level.clone().unwrap_or_default(),
        format: match lg.format.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
            None | Some(("text", _)) => LogFormat::Text,
            Some(("json", _)) => LogFormat::Json,
            Some((other, span)) => {
                return Err(ctx.err(
                    Some(span),
                    format!("unknown log.format {other:?}"),
                    Some("use \"text\" or \"json\""),
                ));
            }
        },
    };

    let state_dir = file
        .paths
        .state_dir
        .as_deref()
        .map(expand_tilde)
        .unwrap_or_else(|| paths.state_dir.clone());
    let cache_dir = file
        .paths
        .cache_dir
        .as_deref()
        .map(expand_tilde)
        .unwrap_or_else(|| paths.cache_dir.clone());
    Ok(Config {
        path: path.to_path_buf(),
        notion,
        soundcloud,
        download,
        default_schedule,
        state_dir,
        cache_dir,
        daemon,
        log,
        playlists,
    })
}

fn parse_removed(ctx: &Ctx<'_>, v: &toml::Spanned<String>) -> Result<RemovedPolicy, ConfigError> {
    match v.get_ref().as_str() {
        "keep" => Ok(RemovedPolicy::Keep),
        "mark" => Ok(RemovedPolicy::Mark),
        "trash" => Ok(RemovedPolicy::Trash),
        other => Err(ctx.err(
            Some(v.span()),
            format!("unknown removed policy {other:?}"),
            Some("use \"keep\", \"mark\" or \"trash\""),
        )),
    }
}

fn parse_schedule(
    ctx: &Ctx<'_>,
    v: &toml::Spanned<String>,
    what: &str,
) -> Result<Schedule, ConfigError> {
    Schedule::parse(v.get_ref()).map_err(|e| {
        ctx.err(
            Some(v.span()),
            format!("bad cron expression {:?} in {what}: {e}", v.get_ref()),
            Some("use 5 fields (minute hour day month weekday) such as \"0 * * * *\", or 6 with seconds first"),
        )
    })
}

/// Reads and parses a config file.
pub fn load(path: &Path, paths: &Paths) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        location: None,
        message: format!("cannot read the config file: {e}"),
        fix: Some(if e.kind() == std::io::ErrorKind::NotFound {
            "create it from playlists.toml.example, or point --config / PLAYLISTD_CONFIG at it"
                .to_string()
        } else {
            "check the file's permissions".to_string()
        }),
    })?;
    parse(&text, path, paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths::for_tests(Path::new("/tmp/playlistd-test"))
    }

    const MINIMAL: &str = r#"
[notion]
database = "https://www.notion.so/myspace/27ce73616c2780fbb40efefdd47d6640?v=abc"

[[playlist]]
name = "all:Lo Collective"
url = "https://soundcloud.com/all-lo_collective/sets/3017480e-bba1-40a3-8e0f-085ee846799b"
schedule = "*/30 * * * *"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL, Path::new("p.toml"), &paths()).unwrap();
        assert_eq!(c.notion.database_id, "27ce73616c2780fbb40efefdd47d6640");
        assert_eq!(c.notion.requests_per_minute, 180);
        assert_eq!(c.notion.token, TokenSource::Env("NOTION_TOKEN".into()));
        assert_eq!(c.download.concurrency, 3);
        assert_eq!(c.playlists[0].schedule.expr, "*/30 * * * *");
        assert_eq!(c.default_schedule.expr, "0 * * * *");
        assert_eq!(c.playlists[0].source, SourceKind::SoundCloud);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("schedule = \"*/30", "shedule = \"*/30");
        let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(8));
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(e.to_string().starts_with("p.toml:8:"), "{e}");
    }

    #[test]
    fn bad_cron_is_located() {
        let text = MINIMAL.replace("*/30 * * * *", "61 * * * *");
        let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
        assert_eq!(e.location, Some((8, 12)));
        assert!(e.message.contains("bad cron"), "{e}");
    }

    #[test]
    fn six_field_seconds_cron_is_accepted() {
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
        assert!(Schedule::parse("0 3 * * *").is_ok());
        assert!(Schedule::parse("@hourly").is_ok());
        assert!(Schedule::parse("0 0 3 * * * 2027").is_err());
        assert!(Schedule::parse("every hour").is_err());
    }

    #[test]
    fn notion_ids_from_urls() {
        assert_eq!(
            parse_notion_id(
                "https://www.notion.so/myspace/Music-Tracks-27ce73616c2780fbb40efefdd47d6640?v=1"
            ),
            Some("27ce73616c2780fbb40efefdd47d6640".into())
        );
        assert_eq!(
            parse_notion_id("27ce7361-6c27-80fb-b40e-fefdd47d6640"),
            Some("27ce73616c2780fbb40efefdd47d6640".into())
        );
        assert_eq!(parse_notion_id("not-an-id"), None);
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playlists.toml.example"
        ));
        let c = load(path, &paths()).unwrap();
        assert_eq!(c.playlists.len(), 3);
        assert_eq!(c.playlists[1].max_tracks, Some(200));
        assert!(!c.playlists[1].download);
        assert_eq!(c.playlists[2].source, SourceKind::YtDlp);
        assert_eq!(c.notion.properties.artist.as_deref(), Some("Artist Name"));
        assert_eq!(c.download.extra_args, vec!["-f", "ba[ext=mp3]/ba"]);
        assert_eq!(c.daemon.max_concurrent_syncs, 2);
        assert_eq!(c.daemon.zone, Zone::Local);
        assert_eq!(c.log.keep, 14);
        assert_eq!(c.log.rotation, Rotation::Daily);
    }

    #[test]
    fn non_playlist_soundcloud_url_is_refused() {
        let text = MINIMAL.replace("/sets/3017480e-bba1-40a3-8e0f-085ee846799b", "/some-track");
        let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
        assert!(
            e.to_string().contains("not a SoundCloud playlist URL"),
            "{e}"
        );
        assert_eq!(e.location.map(|l| l.0), Some(7));
    }

    #[test]
    fn duplicate_names_are_refused_at_the_second() {
        let text = format!(
            "{MINIMAL}\n[[playlist]]\nname = \"all:Lo Collective\"\nurl = \"https://soundcloud.com/a/sets/b\"\n"
        );
        let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
        assert!(e.message.contains("duplicate playlist name"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(11));
    }

    #[test]
    fn bad_values_are_located_with_a_fix() {
        let cases = [
            (
                MINIMAL.replace(
                    "https://soundcloud.com/all-lo_collective",
                    "soundcloud dot com",
                ),
                "not an http(s) URL",
                7,
            ),
            (
                format!("{MINIMAL}\n[daemon]\ntimezone = \"Mars/Olympus\"\n"),
                "unknown time zone",
                11,
            ),
            (
                format!("{MINIMAL}\n[log]\nrotation = \"weekly\"\n"),
                "unknown log.rotation",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\nconcurrency = 0\n"),
                "between 1 and 64",
                11,
            ),
            (
                MINIMAL.replace(
                    "27ce73616c2780fbb40efefdd47d6640?v=abc",
                    "not-a-notion-link",
                ),
                "not a Notion database",
                3,
            ),
            (
                format!("{MINIMAL}\n[daemon]\nafter_sync = []\n"),
                "after_sync is empty",
                11,
            ),
        ];
        for (text, needle, line) in cases {
            let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
            assert!(e.message.contains(needle), "{e}");
            assert_eq!(e.location.map(|l| l.0), Some(line), "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
    }
}
