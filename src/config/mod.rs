//! `playlists.toml`: parsed once into validated types, and compared on reload.
//!
//! A short pipeline, as in ripgrep's low/high args: [`raw`] mirrors the file with serde
//! (`deny_unknown_fields`, spans on every value we validate ourselves), [`validate`] turns each
//! section into the types here (parsed crons, parsed URLs, resolved paths, defaults applied),
//! and [`diff`] says what a reload changes.
//!
//! Invariants:
//! - A `Config` value is always whole and valid; every rejection is a [`ConfigError`] that
//!   names the file, line and column, the problem and the fix, on one line.
//! - Nothing here reads the CLI layer or does I/O beyond [`load`] reading the file (the token
//!   is read only when a client needs it).

mod diff;
mod raw;
mod validate;

pub use diff::{Changes, diff};
pub use validate::{
    DEFAULT_NOTION_VERSION, DEFAULT_REQUESTS_PER_MINUTE, is_soundcloud_set_url, parse_notion_id,
};

use crate::logging::{LogFormat, Rotation};
use crate::model::canonical_url;
use crate::paths::Paths;
use crate::schedule::Zone;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

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
    pub tempo: Option<String>,
    pub key: Option<String>,
    pub aiff_path: Option<String>,
    pub wav_path: Option<String>,
    pub m4a_path: Option<String>,
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
    /// How `Key` is written.
    pub key_notation: KeyNotation,
    /// Replace a `Tempo` or `Key` that is already on a page (default: keep it).
    pub overwrite_analysis: bool,
}

/// `notion.key_notation`: how a key is written to Notion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyNotation {
    /// "A Minor", "F# Major": what the replaced system wrote for years.
    #[default]
    Standard,
    /// "8A".
    Camelot,
    /// "1m".
    OpenKey,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoundCloudConfig {
    pub api_base: Url,
    pub web_base: Url,
    /// Where `on.soundcloud.com/<code>` short links are resolved (`playlistd add`).
    pub short_link_base: Url,
    pub client_id: Option<String>,
    /// The `User-Agent` sent on every SoundCloud request; `None` is playlistd's default, a
    /// current desktop browser's (bot protection refuses anything else).
    pub user_agent: Option<String>,
    pub timeout: Duration,
}

/// `download.prefer`: which codec the native engine tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    /// AAC (`aac_160k` in HLS), what nearly every track has since 2026 (reference §9).
    #[default]
    Aac,
    /// MP3, where a track still lists one (progressive first).
    Mp3,
}

/// `download.engine`: what fetches SoundCloud audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Native first; yt-dlp (when installed) only for a stream layout the native engine does
    /// not speak. Never for DRM, geo-blocks or missing tracks.
    #[default]
    Auto,
    Native,
    YtDlp,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Native => "native",
            Engine::YtDlp => "yt-dlp",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DownloadConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub concurrency: usize,
    pub engine: Engine,
    /// The native engine's codec preference.
    pub prefer: Prefer,
    pub ytdlp: PathBuf,
    pub extra_args: Vec<String>,
    /// File name template inside the playlist folder, without extension; see the example file.
    pub output_template: String,
    pub timeout: Duration,
    /// After this many failed attempts a track is parked until `playlistd retry`.
    pub max_attempts: u32,
    /// `download.m3u`: write `<playlist name>.m3u8` in each playlist's folder after a sync.
    pub m3u: bool,
    /// What is made of each downloaded file: tempo and key, AIFF/WAV copies.
    pub library: LibraryConfig,
}

/// A file format of the music folder (`download.formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The file as fetched (`.m4a` or `.mp3`, or what yt-dlp made): always kept.
    Original,
    Aiff,
    Wav,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Original => "original",
            Format::Aiff => "aiff",
            Format::Wav => "wav",
        }
    }
    /// The file extension of a copy; `None` for the original, which keeps its own.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Format::Original => None,
            Format::Aiff => Some("aiff"),
            Format::Wav => Some("wav"),
        }
    }
}

/// `download.formats`, `pcm_bits`, `sample_rate`, `analyze`, `tempo_range`.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryConfig {
    /// As configured, no format twice; the first is what playlist files list.
    pub formats: Vec<Format>,
    /// 16 or 24, for the AIFF and WAV copies.
    pub pcm_bits: u16,
    /// Resample the copies to this rate; `None` keeps the source's.
    pub sample_rate: Option<u32>,
    /// Measure tempo and key.
    pub analyze: bool,
    /// Tempos are folded into this range (BPM), e.g. 70-180.
    pub tempo_range: (f64, f64),
}

impl Default for LibraryConfig {
    fn default() -> Self {
        LibraryConfig {
            formats: vec![Format::Original],
            pcm_bits: 24,
            sample_rate: None,
            analyze: true,
            tempo_range: (70.0, 180.0),
        }
    }
}

impl LibraryConfig {
    /// The copies to make beside the original.
    pub fn copies(&self) -> impl Iterator<Item = Format> + '_ {
        self.formats
            .iter()
            .copied()
            .filter(|f| *f != Format::Original)
    }
    /// Anything to do with a downloaded file beyond keeping it.
    pub fn any_work(&self) -> bool {
        self.analyze || self.copies().next().is_some()
    }
    /// The format playlist files point at.
    pub fn listed(&self) -> Format {
        self.formats.first().copied().unwrap_or(Format::Original)
    }
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
    /// Where `/healthz` and `/metrics` are served; off when `None`.
    pub listen: Option<std::net::SocketAddr>,
}

/// A notification target's URL: in the file, or in a file of its own (`*_file`, for systemd
/// credentials). Whoever holds an ntfy or healthchecks URL can post to the topic or silence
/// the check, so it is a secret: `Debug` shows only its scheme and host ([`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretUrl {
    Inline(Url),
    File(PathBuf),
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretUrl::Inline(u) => write!(f, "Inline({})", redact_url(u)),
            SecretUrl::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// The URL as logs and status may show it: scheme and host, the rest hidden.
pub fn redact_url(u: &Url) -> String {
    format!(
        "{}://{}/[redacted]",
        u.scheme(),
        u.host_str().unwrap_or("?")
    )
}

impl SecretUrl {
    /// The URL, read from its file when it has one; `key` names it in the error.
    pub fn read(&self, key: &str) -> Result<Url, String> {
        let path = match self {
            SecretUrl::Inline(u) => return Ok(u.clone()),
            SecretUrl::File(p) => p,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read notify.{key}_file {}: {e} (fix: check the path and the file's permissions)",
                path.display()
            )
        })?;
        Url::parse(text.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                format!(
                    "notify.{key}_file {} does not hold an http(s) URL (fix: write the URL alone on the file's first line)",
                    path.display()
                )
            })
    }
}

/// Which notifications are sent (`notify.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyEvents {
    /// A digest when tracks were created, adopted or downloaded.
    pub new_tracks: bool,
    /// A digest when tracks failed or a run stopped.
    pub failures: bool,
    /// Setup problems a person must fix, at once, and their recovery.
    pub alerts: bool,
}

/// `[notify]`: where notifications go and when.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub webhook: Option<SecretUrl>,
    pub ntfy: Option<SecretUrl>,
    pub healthchecks: Option<SecretUrl>,
    pub events: NotifyEvents,
    /// The daemon sends at most one digest per this interval.
    pub digest: Duration,
    /// Each message's whole budget, its retry included.
    pub timeout: Duration,
}

impl NotifyConfig {
    pub fn any_target(&self) -> bool {
        self.webhook.is_some() || self.ntfy.is_some() || self.healthchecks.is_some()
    }
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
    pub notify: NotifyConfig,
    pub playlists: Vec<PlaylistConfig>,
}

impl Config {
    pub fn playlist(&self, name_or_url: &str) -> Option<&PlaylistConfig> {
        let norm = canonical_url(name_or_url);
        self.playlists
            .iter()
            .find(|p| p.name == name_or_url || canonical_url(p.url.as_str()) == norm)
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

/// Where a problem is reported: the file's path and its text (to turn spans into places).
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
}

/// Parses and validates the text of a config file. `paths` supplies the platform directories
/// used when the file does not override them.
pub fn parse(text: &str, path: &Path, paths: &Paths) -> Result<Config, ConfigError> {
    let ctx = Ctx { path, text };
    let file = raw::read(&ctx)?;
    let notion = validate::notion(&ctx, &file.notion)?;
    let soundcloud = validate::soundcloud(&ctx, &file.soundcloud)?;
    let download = validate::download(&ctx, &file.download)?;
    let defaults = validate::defaults(&ctx, &file.defaults)?;
    let playlists = validate::playlists(&ctx, &file.playlists, &defaults, &soundcloud.web_base)?;
    let daemon = validate::daemon(&ctx, &file.daemon)?;
    let log = validate::log(&ctx, &file.log, paths)?;
    let notify = validate::notify(&ctx, &file.notify)?;
    let (state_dir, cache_dir) = validate::paths(&file.paths, paths);
    Ok(Config {
        path: path.to_path_buf(),
        notion,
        soundcloud,
        download,
        default_schedule: defaults.schedule,
        state_dir,
        cache_dir,
        daemon,
        log,
        notify,
        playlists,
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

    pub(super) const MINIMAL: &str = r#"
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
    fn soundcloud_user_agent_is_read_and_checked() {
        let c = parse(MINIMAL, Path::new("p.toml"), &paths()).unwrap();
        assert_eq!(c.soundcloud.user_agent, None, "the default is the client's");
        let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        let text = format!("{MINIMAL}\n[soundcloud]\nuser_agent = \"  {ua} \"\n");
        let c = parse(&text, Path::new("p.toml"), &paths()).unwrap();
        assert_eq!(c.soundcloud.user_agent.as_deref(), Some(ua));
        for bad in ["", "Mozilla/5.0\\nX-Injected: 1", "Mozilla/5.0 (Ünïcode)"] {
            let text = format!("{MINIMAL}\n[soundcloud]\nuser_agent = \"{bad}\"\n");
            let e = parse(&text, Path::new("p.toml"), &paths()).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("soundcloud.user_agent must be one line"), "{m}");
            assert_eq!(m.matches("(fix: ").count(), 1, "{m}");
        }
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
            (
                format!("{MINIMAL}\n[download]\nformats = [\"original\", \"flac\"]\n"),
                "unknown download.formats entry \"flac\"",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\nformats = [\"wav\", \"wav\"]\n"),
                "lists \"wav\" twice",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\nformats = []\n"),
                "download.formats is empty",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\npcm_bits = 32\n"),
                "pcm_bits 32 is not supported",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\nsample_rate = \"native\"\n"),
                "unknown download.sample_rate",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\nsample_rate = 12\n"),
                "not an audio rate",
                11,
            ),
            (
                format!("{MINIMAL}\n[download]\ntempo_range = [100, 150]\n"),
                "at least an octave",
                11,
            ),
            (
                MINIMAL.replace("?v=abc\"", "?v=abc\"\nkey_notation = \"traktor\""),
                "unknown notion.key_notation",
                4,
            ),
        ];
        assert_located(&cases);
    }

    /// Each text is refused with its needle in the message, at its line, on one line.
    fn assert_located(cases: &[(String, &str, usize)]) {
        for (text, needle, line) in cases {
            let e = parse(text, Path::new("p.toml"), &paths()).unwrap_err();
            assert!(e.message.contains(needle), "{e}");
            assert_eq!(e.location.map(|l| l.0), Some(*line), "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn bad_notify_and_listen_values_are_located_with_a_fix() {
        let cases = [
            (
                format!("{MINIMAL}\n[notify]\nntfy = \"ntfy.sh/my-topic\"\n"),
                "notify.ntfy is not an http(s) URL",
                11,
            ),
            (
                format!(
                    "{MINIMAL}\n[notify]\nwebhook = \"https://a.example/h\"\nwebhook_file = \"/run/h\"\n"
                ),
                "notify.webhook and notify.webhook_file are both set",
                12,
            ),
            (
                format!("{MINIMAL}\n[notify]\nevents = [\"new_tracks\", \"errors\"]\n"),
                "unknown notify.events entry \"errors\"",
                11,
            ),
            (
                format!("{MINIMAL}\n[notify]\ntimeout_secs = 0\n"),
                "notify.timeout_secs must be between 1 and 300",
                11,
            ),
            (
                format!("{MINIMAL}\n[daemon]\nlisten = \"everywhere:80\"\n"),
                "daemon.listen is not an address and port",
                11,
            ),
        ];
        assert_located(&cases);
    }

    #[test]
    fn library_keys_are_read_with_their_defaults() {
        let c = parse(MINIMAL, Path::new("p.toml"), &paths()).unwrap();
        assert_eq!(c.download.library, LibraryConfig::default());
        assert_eq!(c.download.library.formats, [Format::Original]);
        assert!(c.download.library.analyze);
        assert_eq!(c.notion.key_notation, KeyNotation::Standard);
        assert!(!c.notion.overwrite_analysis);
        let text = format!(
            "{}\n[download]\nformats = [\"aiff\", \"original\", \"wav\"]\npcm_bits = 16\n\
             sample_rate = 48000\nanalyze = false\ntempo_range = [85, 170]\n",
            MINIMAL.replace(
                "?v=abc\"",
                "?v=abc\"\nkey_notation = \"camelot\"\noverwrite_analysis = true"
            )
        );
        let c = parse(&text, Path::new("p.toml"), &paths()).unwrap();
        let lib = &c.download.library;
        assert_eq!(lib.formats, [Format::Aiff, Format::Original, Format::Wav]);
        assert_eq!(lib.listed(), Format::Aiff);
        assert_eq!(
            lib.copies().collect::<Vec<_>>(),
            [Format::Aiff, Format::Wav]
        );
        assert_eq!((lib.pcm_bits, lib.sample_rate), (16, Some(48_000)));
        assert_eq!((lib.analyze, lib.tempo_range), (false, (85.0, 170.0)));
        assert!(lib.any_work(), "copies are work even without analysis");
        assert_eq!(c.notion.key_notation, KeyNotation::Camelot);
        assert!(c.notion.overwrite_analysis);
        let text = format!("{MINIMAL}\n[download]\nsample_rate = \"source\"\nanalyze = false\n");
        let lib = parse(&text, Path::new("p.toml"), &paths())
            .unwrap()
            .download
            .library;
        assert_eq!(lib.sample_rate, None);
        assert!(!lib.any_work());
    }

    #[test]
    fn notify_and_listen_are_read_with_their_defaults_and_urls_never_print() {
        let c = parse(MINIMAL, Path::new("p.toml"), &paths()).unwrap();
        assert!(!c.notify.any_target());
        assert_eq!(c.notify.digest, Duration::from_secs(15 * 60));
        assert_eq!(c.notify.timeout, Duration::from_secs(10));
        assert!(c.notify.events.new_tracks && c.notify.events.failures && c.notify.events.alerts);
        assert_eq!(c.daemon.listen, None);
        let text = format!(
            "{MINIMAL}\n[daemon]\nlisten = \"9817\"\n\n[notify]\nntfy = \"https://ntfy.sh/secret-topic\"\n\
             healthchecks_file = \"~/hc-url\"\nevents = [\"alerts\"]\ndigest_minutes = 0\n"
        );
        let c = parse(&text, Path::new("p.toml"), &paths()).unwrap();
        assert_eq!(c.daemon.listen, Some("127.0.0.1:9817".parse().unwrap()));
        assert_eq!(c.notify.digest, Duration::ZERO);
        assert!(!c.notify.events.new_tracks && c.notify.events.alerts);
        assert!(
            matches!(&c.notify.healthchecks, Some(SecretUrl::File(p)) if p.ends_with("hc-url"))
        );
        let shown = format!("{:?}", c.notify);
        assert!(!shown.contains("secret-topic"), "{shown}");
        assert!(shown.contains("https://ntfy.sh/[redacted]"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "https://hc-ping.com/abc\n").unwrap();
        assert_eq!(
            SecretUrl::File(file.clone())
                .read("healthchecks")
                .unwrap()
                .as_str(),
            "https://hc-ping.com/abc"
        );
        std::fs::write(&file, "not a url").unwrap();
        let e = SecretUrl::File(file).read("healthchecks").unwrap_err();
        assert!(
            e.contains("notify.healthchecks_file") && e.contains("(fix: "),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
    }
}
