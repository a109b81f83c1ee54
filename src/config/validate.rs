//! From [`raw`] to the validated types: one function per section of the file.
//!
//! Why: each section's rules, defaults and messages sit together, and [`super::parse`] reads
//! as the list of sections. Invariants:
//! - A default lives in a named `const` below, never as a literal in a function.
//! - Sections are checked in the order `parse` calls them (notion, soundcloud, download,
//!   defaults, playlists, daemon, log, paths) and each stops at its first problem, so a file
//!   with several problems always reports the same one.
//! - Every rejection is built by [`Ctx::err`]: file, line and column, message, fix; the
//!   message texts are part of the interface (tests and users match them).

use super::raw;
use super::{
    ConfigError, Ctx, DaemonConfig, DownloadConfig, Engine, Format, KeyNotation, LibraryConfig,
    LogConfig, NotifyConfig, NotifyEvents, NotionConfig, PlaylistConfig, Prefer, RemovedPolicy,
    Schedule, SecretUrl, SoundCloudConfig, SourceKind, TokenSource,
};
use crate::logging::{LogFormat, Rotation};
use crate::paths::{Paths, expand_tilde};
use crate::schedule::Zone;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use url::Url;

/// Notion's documented default budget for every plan below Business.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 180;
pub const DEFAULT_NOTION_VERSION: &str = "2025-09-03";
/// The first Notion version with data sources; older ones fail on multi-source databases.
const OLDEST_NOTION_VERSION: &str = "2025-09-03";
const DEFAULT_TOKEN_ENV: &str = "NOTION_TOKEN";
const DEFAULT_NOTION_API_BASE: &str = "https://api.notion.com";
/// Notion's limit on the conditions of one compound filter.
const DEFAULT_LOOKUP_BATCH: u64 = 100;
const DEFAULT_MATCH_TITLE_ARTIST: bool = false;
const DEFAULT_NOTION_TIMEOUT_SECS: u64 = 60;

const DEFAULT_SOUNDCLOUD_API_BASE: &str = "https://api-v2.soundcloud.com";
const DEFAULT_SOUNDCLOUD_WEB_BASE: &str = "https://soundcloud.com";
const DEFAULT_SOUNDCLOUD_SHORT_LINK_BASE: &str = "https://on.soundcloud.com";
const DEFAULT_SOUNDCLOUD_TIMEOUT_SECS: u64 = 30;

const DEFAULT_DOWNLOAD_ENABLED: bool = true;
const DEFAULT_DOWNLOAD_DIR: &str = "~/Music/playlistd";
const DEFAULT_DOWNLOAD_CONCURRENCY: u64 = 3;
const DEFAULT_YTDLP: &str = "yt-dlp";
const DEFAULT_OUTPUT_TEMPLATE: &str = "{artist} - {title} [{id}]";
const DEFAULT_DOWNLOAD_TIMEOUT_SECS: u64 = 600;
const DEFAULT_MAX_ATTEMPTS: u64 = 5;

const DEFAULT_SCHEDULE: &str = "0 * * * *";
const DEFAULT_PLAYLIST_DOWNLOAD: bool = true;

const DEFAULT_MAX_CONCURRENT_SYNCS: u64 = 2;
/// The loopback address `daemon.listen` binds when only a port is given.
const DEFAULT_LISTEN_HOST: [u8; 4] = [127, 0, 0, 1];

const DEFAULT_DIGEST_MINUTES: u64 = 15;
/// The old cron wrapper's webhook timeout (reference/seed-system.md §4).
const DEFAULT_NOTIFY_TIMEOUT_SECS: u64 = 10;
const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 600;

/// Rejects the value unless it is one of `options`; `unknown` words the message.
fn choice<T: Copy>(
    ctx: &Ctx<'_>,
    v: &Spanned<String>,
    options: &[(&str, T)],
    unknown: impl FnOnce(&str) -> String,
    fix: &str,
) -> Result<T, ConfigError> {
    let text = v.get_ref().as_str();
    match options.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => Ok(*value),
        None => Err(ctx.err(Some(v.span()), unknown(text), Some(fix))),
    }
}

fn url(ctx: &Ctx<'_>, v: &Spanned<String>, key: &str) -> Result<Url, ConfigError> {
    Url::parse(v.get_ref().trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| {
            ctx.err(
                Some(v.span()),
                format!("{key} is not an http(s) URL: {:?}", v.get_ref()),
                Some("write a full URL such as \"https://example.com\""),
            )
        })
}

/// The URL at `key`, or `default` when the key is absent.
fn url_or(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<String>>,
    key: &str,
    default: &str,
) -> Result<Url, ConfigError> {
    match v {
        Some(v) => url(ctx, v, key),
        None => Ok(Url::parse(default).expect("static url")),
    }
}

fn positive(ctx: &Ctx<'_>, v: &Spanned<i64>, key: &str, max: i64) -> Result<u64, ConfigError> {
    let n = *v.get_ref();
    if n < 1 || n > max {
        return Err(ctx.err(
            Some(v.span()),
            format!("{key} must be between 1 and {max}, got {n}"),
            None,
        ));
    }
    Ok(n as u64)
}

/// The number at `key` (1 to `max`), or `default` when the key is absent.
fn positive_or(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<i64>>,
    key: &str,
    max: i64,
    default: u64,
) -> Result<u64, ConfigError> {
    v.map_or(Ok(default), |v| positive(ctx, v, key, max))
}

/// A number of seconds at `key` (1 to `max`), or `default` seconds when the key is absent.
fn secs_or(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<i64>>,
    key: &str,
    max: i64,
    default: u64,
) -> Result<Duration, ConfigError> {
    positive_or(ctx, v, key, max, default).map(Duration::from_secs)
}

/// A directory the user wrote (with `~` expanded), or the platform's.
fn dir_or(v: Option<&str>, platform: &Path) -> PathBuf {
    v.map(expand_tilde)
        .unwrap_or_else(|| platform.to_path_buf())
}

fn engine(ctx: &Ctx<'_>, v: &Spanned<String>) -> Result<Engine, ConfigError> {
    choice(
        ctx,
        v,
        &[
            ("auto", Engine::Auto),
            ("native", Engine::Native),
            ("yt-dlp", Engine::YtDlp),
            ("ytdlp", Engine::YtDlp),
        ],
        |other| format!("unknown download.engine {other:?}"),
        "use \"auto\" (native, yt-dlp as fallback), \"native\" or \"yt-dlp\"",
    )
}

fn prefer(ctx: &Ctx<'_>, v: &Spanned<String>) -> Result<Prefer, ConfigError> {
    choice(
        ctx,
        v,
        &[("aac", Prefer::Aac), ("mp3", Prefer::Mp3)],
        |other| format!("unknown download.prefer {other:?}"),
        "use \"aac\" or \"mp3\"",
    )
}

fn key_notation(ctx: &Ctx<'_>, v: &Spanned<String>) -> Result<KeyNotation, ConfigError> {
    choice(
        ctx,
        v,
        &[
            ("standard", KeyNotation::Standard),
            ("camelot", KeyNotation::Camelot),
            ("open_key", KeyNotation::OpenKey),
        ],
        |other| format!("unknown notion.key_notation {other:?}"),
        "use \"standard\" (A Minor), \"camelot\" (8A) or \"open_key\" (1m)",
    )
}

/// `download.formats`: known names, each once, at least one.
fn formats(ctx: &Ctx<'_>, v: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Format>, ConfigError> {
    const FIX: &str =
        "list \"original\", \"aiff\" and/or \"wav\", e.g. formats = [\"original\", \"aiff\"]";
    if v.get_ref().is_empty() {
        return Err(ctx.err(
            Some(v.span()),
            "download.formats is empty".to_string(),
            Some(FIX),
        ));
    }
    let mut out = Vec::new();
    for f in v.get_ref() {
        let format = choice(
            ctx,
            f,
            &[
                ("original", Format::Original),
                ("aiff", Format::Aiff),
                ("wav", Format::Wav),
            ],
            |other| format!("unknown download.formats entry {other:?}"),
            FIX,
        )?;
        if out.contains(&format) {
            return Err(ctx.err(
                Some(f.span()),
                format!("download.formats lists {:?} twice", f.get_ref()),
                Some("list each format once"),
            ));
        }
        out.push(format);
    }
    Ok(out)
}

fn sample_rate(ctx: &Ctx<'_>, v: &Spanned<raw::SampleRate>) -> Result<Option<u32>, ConfigError> {
    const FIX: &str = "use \"source\" to keep each track's rate, or a rate such as 44100 or 48000";
    match v.get_ref() {
        raw::SampleRate::Word(w) if w == "source" => Ok(None),
        raw::SampleRate::Hz(hz) if (8_000..=384_000).contains(hz) => Ok(Some(*hz as u32)),
        raw::SampleRate::Word(w) => Err(ctx.err(
            Some(v.span()),
            format!("unknown download.sample_rate {w:?}"),
            Some(FIX),
        )),
        raw::SampleRate::Hz(hz) => Err(ctx.err(
            Some(v.span()),
            format!("download.sample_rate {hz} is not an audio rate (8000 to 384000 Hz)"),
            Some(FIX),
        )),
    }
}

fn tempo_range(ctx: &Ctx<'_>, v: &Spanned<Vec<f64>>) -> Result<(f64, f64), ConfigError> {
    match v.get_ref()[..] {
        // At least an octave, so that every tempo has a place in it.
        [lo, hi] if lo >= 20.0 && hi <= 400.0 && hi >= 2.0 * lo - 1e-9 => Ok((lo, hi)),
        _ => Err(ctx.err(
            Some(v.span()),
            format!("download.tempo_range {:?} is not a range of at least an octave", v.get_ref()),
            Some("give [low, high] in BPM, high at least twice low, within 20 to 400, e.g. [70, 180]"),
        )),
    }
}

/// The DJ-library keys of `[download]`.
fn library(ctx: &Ctx<'_>, d: &raw::Download) -> Result<LibraryConfig, ConfigError> {
    let mut lib = LibraryConfig::default();
    if let Some(f) = &d.formats {
        lib.formats = formats(ctx, f)?;
    }
    if let Some(b) = &d.pcm_bits {
        lib.pcm_bits = match b.get_ref() {
            16 => 16,
            24 => 24,
            n => {
                return Err(ctx.err(
                    Some(b.span()),
                    format!("download.pcm_bits {n} is not supported"),
                    Some("use 16 or 24"),
                ));
            }
        };
    }
    if let Some(r) = &d.sample_rate {
        lib.sample_rate = sample_rate(ctx, r)?;
    }
    if let Some(r) = &d.tempo_range {
        lib.tempo_range = tempo_range(ctx, r)?;
    }
    lib.analyze = d.analyze.unwrap_or(lib.analyze);
    Ok(lib)
}

fn removed(ctx: &Ctx<'_>, v: &Spanned<String>) -> Result<RemovedPolicy, ConfigError> {
    choice(
        ctx,
        v,
        &[
            ("keep", RemovedPolicy::Keep),
            ("mark", RemovedPolicy::Mark),
            ("trash", RemovedPolicy::Trash),
        ],
        |other| format!("unknown removed policy {other:?}"),
        "use \"keep\", \"mark\" or \"trash\"",
    )
}

fn schedule(ctx: &Ctx<'_>, v: &Spanned<String>, what: &str) -> Result<Schedule, ConfigError> {
    Schedule::parse(v.get_ref()).map_err(|e| {
        ctx.err(
            Some(v.span()),
            format!("bad cron expression {:?} in {what}: {e}", v.get_ref()),
            Some("use 5 fields (minute hour day month weekday) such as \"0 * * * *\", or 6 with seconds first"),
        )
    })
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

fn notion_token(ctx: &Ctx<'_>, n: &raw::Notion) -> Result<TokenSource, ConfigError> {
    match (&n.token_env, &n.token_file) {
        (Some(_), Some(f)) => Err(ctx.err(
            Some(f.span()),
            "notion.token_env and notion.token_file are both set",
            Some("keep only one of them"),
        )),
        (None, Some(f)) => Ok(TokenSource::File(expand_tilde(f.get_ref()))),
        (Some(env), None) => Ok(TokenSource::Env(env.clone())),
        (None, None) => Ok(TokenSource::Env(DEFAULT_TOKEN_ENV.to_string())),
    }
}

fn notion_version(ctx: &Ctx<'_>, v: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(DEFAULT_NOTION_VERSION.to_string());
    };
    let s = v.get_ref().trim();
    let valid_date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
    if !valid_date || s < OLDEST_NOTION_VERSION {
        return Err(ctx.err(
            Some(v.span()),
            format!("notion.version {s:?} is not supported: playlistd needs the data-source API"),
            Some("use \"2025-09-03\" or a later version such as \"2026-03-11\""),
        ));
    }
    Ok(s.to_string())
}

/// `[notion]`.
pub(super) fn notion(ctx: &Ctx<'_>, n: &raw::Notion) -> Result<NotionConfig, ConfigError> {
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
    let token = notion_token(ctx, n)?;
    let api_base = url_or(
        ctx,
        n.api_base.as_ref(),
        "notion.api_base",
        DEFAULT_NOTION_API_BASE,
    )?;
    let version = notion_version(ctx, n.version.as_ref())?;
    let requests_per_minute = positive_or(
        ctx,
        n.requests_per_minute.as_ref(),
        "notion.requests_per_minute",
        100_000,
        u64::from(DEFAULT_REQUESTS_PER_MINUTE),
    )? as u32;
    let lookup_batch = positive_or(
        ctx,
        n.lookup_batch.as_ref(),
        "notion.lookup_batch",
        100,
        DEFAULT_LOOKUP_BATCH,
    )? as usize;
    let timeout = secs_or(
        ctx,
        n.timeout_secs.as_ref(),
        "notion.timeout_secs",
        600,
        DEFAULT_NOTION_TIMEOUT_SECS,
    )?;
    Ok(NotionConfig {
        database_id,
        data_source_id,
        token,
        api_base,
        version,
        requests_per_minute,
        properties: n.properties.clone(),
        lookup_batch,
        match_title_artist: n.match_title_artist.unwrap_or(DEFAULT_MATCH_TITLE_ARTIST),
        timeout,
        key_notation: n
            .key_notation
            .as_ref()
            .map(|v| key_notation(ctx, v))
            .transpose()?
            .unwrap_or_default(),
        overwrite_analysis: n.overwrite_analysis.unwrap_or(false),
    })
}

/// A trimmed text that must pass `ok` character by character (and not be empty).
fn checked_text(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<String>>,
    ok: impl Fn(char) -> bool,
    message: &str,
    fix: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = v else {
        return Ok(None);
    };
    let s = v.get_ref().trim();
    if s.is_empty() || !s.chars().all(ok) {
        return Err(ctx.err(Some(v.span()), message, Some(fix)));
    }
    Ok(Some(s.to_string()))
}

/// `[soundcloud]`.
pub(super) fn soundcloud(
    ctx: &Ctx<'_>,
    sc: &raw::SoundCloud,
) -> Result<SoundCloudConfig, ConfigError> {
    let client_id = checked_text(
        ctx,
        sc.client_id.as_ref(),
        |c| c.is_ascii_alphanumeric(),
        "soundcloud.client_id must be letters and digits only",
        "remove it to let playlistd find one, or paste the 32-character id",
    )?;
    // Sent as a header on every request: one line of printable ASCII, or reqwest refuses it.
    let user_agent = checked_text(
        ctx,
        sc.user_agent.as_ref(),
        |c| c == ' ' || c.is_ascii_graphic(),
        "soundcloud.user_agent must be one line of printable ASCII",
        "paste the User-Agent of a current desktop browser, or remove the key to use playlistd's default",
    )?;
    Ok(SoundCloudConfig {
        api_base: url_or(
            ctx,
            sc.api_base.as_ref(),
            "soundcloud.api_base",
            DEFAULT_SOUNDCLOUD_API_BASE,
        )?,
        web_base: url_or(
            ctx,
            sc.web_base.as_ref(),
            "soundcloud.web_base",
            DEFAULT_SOUNDCLOUD_WEB_BASE,
        )?,
        short_link_base: url_or(
            ctx,
            sc.short_link_base.as_ref(),
            "soundcloud.short_link_base",
            DEFAULT_SOUNDCLOUD_SHORT_LINK_BASE,
        )?,
        client_id,
        user_agent,
        timeout: secs_or(
            ctx,
            sc.timeout_secs.as_ref(),
            "soundcloud.timeout_secs",
            600,
            DEFAULT_SOUNDCLOUD_TIMEOUT_SECS,
        )?,
    })
}

fn output_template(ctx: &Ctx<'_>, v: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(DEFAULT_OUTPUT_TEMPLATE.to_string());
    };
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
    Ok(t.clone())
}

/// `[download]`.
pub(super) fn download(ctx: &Ctx<'_>, d: &raw::Download) -> Result<DownloadConfig, ConfigError> {
    let output_template = output_template(ctx, d.output_template.as_ref())?;
    Ok(DownloadConfig {
        enabled: d.enabled.unwrap_or(DEFAULT_DOWNLOAD_ENABLED),
        dir: expand_tilde(d.dir.as_deref().unwrap_or(DEFAULT_DOWNLOAD_DIR)),
        concurrency: positive_or(
            ctx,
            d.concurrency.as_ref(),
            "download.concurrency",
            64,
            DEFAULT_DOWNLOAD_CONCURRENCY,
        )? as usize,
        m3u: d.m3u.unwrap_or(true),
        library: library(ctx, d)?,
        engine: d
            .engine
            .as_ref()
            .map(|v| engine(ctx, v))
            .transpose()?
            .unwrap_or_default(),
        prefer: d
            .prefer
            .as_ref()
            .map(|v| prefer(ctx, v))
            .transpose()?
            .unwrap_or_default(),
        ytdlp: expand_tilde(d.ytdlp.as_deref().unwrap_or(DEFAULT_YTDLP)),
        extra_args: d.extra_args.clone().unwrap_or_default(),
        output_template,
        timeout: secs_or(
            ctx,
            d.timeout_secs.as_ref(),
            "download.timeout_secs",
            86_400,
            DEFAULT_DOWNLOAD_TIMEOUT_SECS,
        )?,
        max_attempts: positive_or(
            ctx,
            d.max_attempts.as_ref(),
            "download.max_attempts",
            1000,
            DEFAULT_MAX_ATTEMPTS,
        )? as u32,
    })
}

/// `[defaults]`: what a `[[playlist]]` gets for the keys it leaves out.
#[derive(Debug, Clone)]
pub(super) struct PlaylistDefaults {
    pub schedule: Schedule,
    pub download: bool,
    pub max_tracks: Option<usize>,
    pub removed: RemovedPolicy,
}

/// `[defaults]`.
pub(super) fn defaults(ctx: &Ctx<'_>, d: &raw::Defaults) -> Result<PlaylistDefaults, ConfigError> {
    Ok(PlaylistDefaults {
        schedule: match &d.schedule {
            Some(v) => schedule(ctx, v, "defaults.schedule")?,
            None => Schedule::parse(DEFAULT_SCHEDULE).expect("static cron"),
        },
        download: d.download.unwrap_or(DEFAULT_PLAYLIST_DOWNLOAD),
        max_tracks: match &d.max_tracks {
            Some(v) => Some(positive(ctx, v, "defaults.max_tracks", 1_000_000)? as usize),
            None => None,
        },
        removed: match &d.removed {
            Some(v) => removed(ctx, v)?,
            None => RemovedPolicy::default(),
        },
    })
}

/// The playlist's name: trimmed, printable, and not taken by an earlier `[[playlist]]`.
fn playlist_name(
    ctx: &Ctx<'_>,
    v: &Spanned<String>,
    seen: &mut HashSet<String>,
) -> Result<String, ConfigError> {
    let name = v.get_ref().trim().to_string();
    let problem = if name.is_empty() {
        Some((
            "playlist name is empty".to_string(),
            "give every playlist a name",
        ))
    } else if name.chars().any(char::is_control) {
        Some((
            "playlist name contains control characters".to_string(),
            "use printable characters only",
        ))
    } else if !seen.insert(name.clone()) {
        Some((
            format!("duplicate playlist name {name:?}"),
            "give each [[playlist]] a unique name",
        ))
    } else {
        None
    };
    match problem {
        Some((message, fix)) => Err(ctx.err(Some(v.span()), message, Some(fix))),
        None => Ok(name),
    }
}

/// One `[[playlist]]`; `seen` holds the names of the ones before it.
fn playlist(
    ctx: &Ctx<'_>,
    p: &raw::Playlist,
    defaults: &PlaylistDefaults,
    web_base: &Url,
    seen: &mut HashSet<String>,
) -> Result<PlaylistConfig, ConfigError> {
    let name = playlist_name(ctx, &p.name, seen)?;
    let url = url(ctx, &p.url, &format!("url of playlist {name:?}"))?;
    let source = match &p.source {
        None => SourceKind::SoundCloud,
        Some(v) => choice(
            ctx,
            v,
            &[
                ("soundcloud", SourceKind::SoundCloud),
                ("yt-dlp", SourceKind::YtDlp),
            ],
            |other| format!("unknown source {other:?} for playlist {name:?}"),
            "use \"soundcloud\" or \"yt-dlp\"",
        )?,
    };
    if source == SourceKind::SoundCloud && !is_soundcloud_set_url(&url, web_base) {
        return Err(ctx.err(
            Some(p.url.span()),
            format!("playlist {name:?}: {url} is not a SoundCloud playlist URL"),
            Some("use https://soundcloud.com/<user>/sets/<playlist>, or set source = \"yt-dlp\" for other sites"),
        ));
    }
    let schedule = match &p.schedule {
        Some(s) => schedule(ctx, s, &format!("schedule of playlist {name:?}"))?,
        None => defaults.schedule.clone(),
    };
    let max_tracks = match &p.max_tracks {
        Some(v) => Some(positive(ctx, v, "max_tracks", 1_000_000)? as usize),
        None => defaults.max_tracks,
    };
    Ok(PlaylistConfig {
        name,
        url,
        schedule,
        download: p.download.unwrap_or(defaults.download),
        max_tracks,
        source,
        dir: p.dir.as_deref().map(expand_tilde),
        removed: match &p.removed {
            Some(v) => removed(ctx, v)?,
            None => defaults.removed,
        },
    })
}

/// Every `[[playlist]]`, in file order; a duplicate name is refused at the second.
pub(super) fn playlists(
    ctx: &Ctx<'_>,
    list: &[raw::Playlist],
    defaults: &PlaylistDefaults,
    web_base: &Url,
) -> Result<Vec<PlaylistConfig>, ConfigError> {
    let mut seen = HashSet::new();
    list.iter()
        .map(|p| playlist(ctx, p, defaults, web_base, &mut seen))
        .collect()
}

fn after_sync(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<Vec<String>>>,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = v else {
        return Ok(None);
    };
    let argv = v.get_ref();
    if argv.is_empty() || argv[0].trim().is_empty() {
        return Err(ctx.err(
            Some(v.span()),
            "daemon.after_sync is empty",
            Some("give the program and its arguments, e.g. [\"/home/me/bin/tag-new\", \"--quiet\"], or remove the key"),
        ));
    }
    Ok(Some(
        argv.iter()
            .map(|a| expand_tilde(a).display().to_string())
            .collect(),
    ))
}

/// `[daemon]`.
pub(super) fn daemon(ctx: &Ctx<'_>, dm: &raw::Daemon) -> Result<DaemonConfig, ConfigError> {
    Ok(DaemonConfig {
        max_concurrent_syncs: positive_or(
            ctx,
            dm.max_concurrent_syncs.as_ref(),
            "daemon.max_concurrent_syncs",
            64,
            DEFAULT_MAX_CONCURRENT_SYNCS,
        )? as usize,
        zone: match &dm.timezone {
            None => Zone::Local,
            Some(v) => Zone::parse(v.get_ref())
                .map_err(|e| ctx.err(Some(v.span()), e.to_string(), None))?,
        },
        after_sync: after_sync(ctx, dm.after_sync.as_ref())?,
        hook_timeout: secs_or(
            ctx,
            dm.hook_timeout_secs.as_ref(),
            "daemon.hook_timeout_secs",
            86_400,
            DEFAULT_HOOK_TIMEOUT_SECS,
        )?,
        listen: dm.listen.as_ref().map(|v| listen(ctx, v)).transpose()?,
    })
}

/// `daemon.listen`: `host:port`, or a port alone for the loopback address.
fn listen(ctx: &Ctx<'_>, v: &Spanned<String>) -> Result<std::net::SocketAddr, ConfigError> {
    let text = v.get_ref().trim();
    let parsed = match text.parse::<u16>() {
        Ok(port) => Ok(std::net::SocketAddr::from((DEFAULT_LISTEN_HOST, port))),
        Err(_) => text
            .replace("localhost:", "127.0.0.1:")
            .parse::<std::net::SocketAddr>(),
    };
    parsed.map_err(|_| {
        ctx.err(
            Some(v.span()),
            format!("daemon.listen is not an address and port: {text:?}"),
            Some("write \"127.0.0.1:9817\" (loopback keeps /metrics on this machine), or remove the key"),
        )
    })
}

/// `[notify]`.
pub(super) fn notify(ctx: &Ctx<'_>, n: &raw::Notify) -> Result<NotifyConfig, ConfigError> {
    Ok(NotifyConfig {
        webhook: secret_url(ctx, n.webhook.as_ref(), n.webhook_file.as_ref(), "webhook")?,
        ntfy: secret_url(ctx, n.ntfy.as_ref(), n.ntfy_file.as_ref(), "ntfy")?,
        healthchecks: secret_url(
            ctx,
            n.healthchecks.as_ref(),
            n.healthchecks_file.as_ref(),
            "healthchecks",
        )?,
        events: match &n.events {
            None => NotifyEvents {
                new_tracks: true,
                failures: true,
                alerts: true,
            },
            Some(v) => notify_events(ctx, v)?,
        },
        digest: match &n.digest_minutes {
            // No gathering: each sync's digest goes out when it finishes.
            Some(v) if *v.get_ref() == 0 => Duration::ZERO,
            v => Duration::from_secs(
                60 * positive_or(
                    ctx,
                    v.as_ref(),
                    "notify.digest_minutes",
                    10_080,
                    DEFAULT_DIGEST_MINUTES,
                )?,
            ),
        },
        timeout: secs_or(
            ctx,
            n.timeout_secs.as_ref(),
            "notify.timeout_secs",
            300,
            DEFAULT_NOTIFY_TIMEOUT_SECS,
        )?,
    })
}

/// `notify.<key>` or `notify.<key>_file`, not both.
fn secret_url(
    ctx: &Ctx<'_>,
    inline: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    key: &str,
) -> Result<Option<SecretUrl>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(f)) => Err(ctx.err(
            Some(f.span()),
            format!("notify.{key} and notify.{key}_file are both set"),
            Some("keep only one of them"),
        )),
        (Some(u), None) => {
            url(ctx, u, &format!("notify.{key}")).map(|u| Some(SecretUrl::Inline(u)))
        }
        (None, Some(f)) => Ok(Some(SecretUrl::File(expand_tilde(f.get_ref())))),
        (None, None) => Ok(None),
    }
}

fn notify_events(
    ctx: &Ctx<'_>,
    v: &Spanned<Vec<Spanned<String>>>,
) -> Result<NotifyEvents, ConfigError> {
    let mut e = NotifyEvents {
        new_tracks: false,
        failures: false,
        alerts: false,
    };
    for word in v.get_ref() {
        let slot = match word.get_ref().as_str() {
            "new_tracks" => &mut e.new_tracks,
            "failures" => &mut e.failures,
            "alerts" => &mut e.alerts,
            other => {
                return Err(ctx.err(
                    Some(word.span()),
                    format!("unknown notify.events entry {other:?}"),
                    Some("use \"new_tracks\", \"failures\" and \"alerts\" (or [] for none)"),
                ));
            }
        };
        *slot = true;
    }
    Ok(e)
}

/// `[log]`; `paths` gives the log directory when the file names none.
pub(super) fn log(ctx: &Ctx<'_>, lg: &raw::Log, paths: &Paths) -> Result<LogConfig, ConfigError> {
    Ok(LogConfig {
        dir: (lg.file != Some(false)).then(|| dir_or(lg.dir.as_deref(), &paths.log_dir)),
        rotation: match &lg.rotation {
            None => Rotation::Daily,
            Some(v) => choice(
                ctx,
                v,
                &[
                    ("daily", Rotation::Daily),
                    ("hourly", Rotation::Hourly),
                    ("never", Rotation::Never),
                ],
                |other| format!("unknown log.rotation {other:?}"),
                "use \"daily\", \"hourly\" or \"never\"",
            )?,
        },
        keep: match &lg.keep {
            Some(v) if *v.get_ref() == 0 => 0,
            Some(v) => positive(ctx, v, "log.keep", 100_000)? as usize,
            None => crate::logging::DEFAULT_KEEP,
        },
        level: lg.level.clone().unwrap_or_default(),
        format: match &lg.format {
            None => LogFormat::Text,
            Some(v) => choice(
                ctx,
                v,
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
                |other| format!("unknown log.format {other:?}"),
                "use \"text\" or \"json\"",
            )?,
        },
    })
}

/// `[paths]`: the state and cache directories, the platform's unless the file names them.
pub(super) fn paths(p: &raw::Paths, platform: &Paths) -> (PathBuf, PathBuf) {
    (
        dir_or(p.state_dir.as_deref(), &platform.state_dir),
        dir_or(p.cache_dir.as_deref(), &platform.cache_dir),
    )
}
