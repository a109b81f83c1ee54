//! The client id every API request carries: where it comes from, where it is kept, and how a
//! stale one is replaced.
//!
//! Invariants:
//! - the client id comes from the config, else the on-disk cache, else yt-dlp's cache (the one
//!   the downloads' yt-dlp runs use), else a scrape of the web page; a scrape is written to both
//!   caches, so one run scrapes once. On a JSON 401/403 a scraped id is replaced once per API
//!   call (a configured one is reported as stale instead, since scraping cannot fix the user's
//!   file);
//! - a dry run ([`SoundCloud::read_only`]) reads the caches but never writes them;
//! - the client id never appears in an error message.

use super::http::Failure;
use super::{Call, LOG_TARGET, SoundCloud};
use crate::source::SourceError;
use crate::ytdlp::cache::{parse_ytdlp_client_id, ytdlp_client_id_entry};
use regex::Regex;
use serde::Deserialize;
use std::path::Path;
use std::sync::LazyLock;
use url::Url;

static SCRIPT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<script[^>]+src="([^"]+)""#).unwrap());
static CLIENT_ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"client_id\s*:\s*"([0-9a-zA-Z]{32})""#).unwrap());

#[derive(Debug, Deserialize, serde::Serialize)]
struct CacheFile {
    client_id: String,
    /// The web site the id was scraped from: an id from the demo's fake is no use for the real
    /// site, and the other way round.
    web_base: String,
    saved_at: String,
}

impl SoundCloud {
    /// One API GET of `base` + `query` + the client id, refreshing a scraped id once on a
    /// JSON 401/403 (a web-page 403 is bot protection: [`SoundCloud::get`] reports it as is).
    pub(super) async fn api<T>(
        &self,
        call: &Call,
        base: Url,
        query: &[(&str, String)],
        what: &str,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let mut id = self.client_id_with(call).await.map_err(Failure::Gave)?;
        let mut refreshed = false;
        loop {
            let mut url = base.clone();
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in query {
                    pairs.append_pair(k, v);
                }
                pairs.append_pair("client_id", &id);
            }
            match self.get(call, url, what, decode).await {
                Err(Failure::Auth(status)) => {
                    if self.configured_id.is_some() {
                        return Err(Failure::Gave(SourceError::StaleConfiguredClientId {
                            status,
                        }));
                    }
                    if refreshed {
                        return Err(Failure::Gave(SourceError::ClientId {
                            reason: format!(
                                "SoundCloud still answers HTTP {status} to {what} with a freshly scraped id"
                            ),
                        }));
                    }
                    tracing::info!(
                        target: LOG_TARGET,
                        "SoundCloud answered HTTP {status}: refreshing the client id"
                    );
                    id = self
                        .refresh_client_id(call, &id)
                        .await
                        .map_err(Failure::Gave)?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// The id in use: the configured one, else the one found before, else our cache, else
    /// yt-dlp's (a yt-dlp run may have scraped one), else a fresh scrape.
    pub(super) async fn client_id_with(&self, call: &Call) -> Result<String, SourceError> {
        if let Some(id) = &self.configured_id {
            return Ok(id.clone());
        }
        let mut cur = self.current.lock().await;
        if let Some(id) = cur.as_ref() {
            return Ok(id.clone());
        }
        if let Some(id) = self.read_cache().await {
            *cur = Some(id.clone());
            return Ok(id);
        }
        if let Some(id) = self.read_ytdlp_cache().await {
            tracing::debug!(
                target: LOG_TARGET,
                "using the SoundCloud client id from yt-dlp's cache"
            );
            *cur = Some(id.clone());
            return Ok(id);
        }
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// Replaces `stale` by a fresh scrape, unless another call already did. Neither cache may
    /// hand the stale id out again, even if the scrape fails.
    async fn refresh_client_id(&self, call: &Call, stale: &str) -> Result<String, SourceError> {
        let mut cur = self.current.lock().await;
        if let Some(id) = cur.as_ref().filter(|id| id.as_str() != stale) {
            return Ok(id.clone());
        }
        *cur = None;
        let _ = tokio::fs::remove_file(&self.cache_path).await;
        if self.write_cache && self.read_ytdlp_cache().await.as_deref() == Some(stale) {
            let _ = tokio::fs::remove_file(&self.ytdlp_cache_path).await;
        }
        let id = self.scrape(call).await?;
        self.write_cache(&id).await;
        *cur = Some(id.clone());
        Ok(id)
    }

    /// yt-dlp's method: the web page's `<script src>`s, last to first (the id lives in a late
    /// bundle), first `client_id:"<32 alphanumerics>"` wins. A script that fails to load is
    /// skipped, unless bot protection refused it (the rest would be refused too).
    async fn scrape(&self, call: &Call) -> Result<String, SourceError> {
        let web = self.web_base.as_str().trim_end_matches('/');
        let what = format!("loading {web} to find a client id");
        let html = match self
            .get(call, self.web_base.clone(), &what, parse_text)
            .await
        {
            Ok(h) => h,
            Err(Failure::Gave(SourceError::Http { status, .. }))
            | Err(Failure::Auth(status) | Failure::Status(status)) => {
                return Err(SourceError::ClientId {
                    reason: format!("{web} answered HTTP {status}"),
                });
            }
            // Already one line with its own fix: wrapped, it would carry two.
            Err(Failure::Gave(e)) => return Err(e),
        };
        let scripts: Vec<Url> = SCRIPT_RE
            .captures_iter(&html)
            .filter_map(|c| self.web_base.join(&c[1]).ok())
            .collect();
        if scripts.is_empty() {
            return Err(SourceError::ClientId {
                reason: format!("{web} has no <script src> to search"),
            });
        }
        for src in scripts.iter().rev() {
            let what = format!("loading script {src}");
            match self.get(call, src.clone(), &what, parse_text).await {
                Ok(js) => {
                    if let Some(c) = CLIENT_ID_RE.captures(&js) {
                        tracing::info!(
                            target: LOG_TARGET,
                            "scraped a SoundCloud client id from {src}"
                        );
                        return Ok(c[1].to_string());
                    }
                }
                Err(Failure::Gave(e @ (SourceError::Blocked { .. } | SourceError::Cancelled))) => {
                    return Err(e);
                }
                Err(_) => {
                    tracing::debug!(target: LOG_TARGET, "could not load {src}; trying the previous script")
                }
            }
        }
        Err(SourceError::ClientId {
            reason: format!(
                "none of the {} scripts on {web} contains a client_id",
                scripts.len()
            ),
        })
    }

    async fn read_cache(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(&self.cache_path).await.ok()?;
        let c: CacheFile = serde_json::from_str(&text).ok()?;
        let valid =
            c.client_id.len() == 32 && c.client_id.chars().all(|ch| ch.is_ascii_alphanumeric());
        (valid && c.web_base == self.web_base.as_str()).then_some(c.client_id)
    }

    /// yt-dlp's entry names no web site: an id from elsewhere (the real site, for the demo's
    /// fake) costs one 401 and a refresh, as a stale id does.
    async fn read_ytdlp_cache(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(&self.ytdlp_cache_path)
            .await
            .ok()?;
        parse_ytdlp_client_id(&text)
    }

    /// Writes the id to our cache and to yt-dlp's, each replaced atomically; a cache that
    /// cannot be written only costs a scrape next time.
    async fn write_cache(&self, id: &str) {
        if !self.write_cache {
            return;
        }
        let c = CacheFile {
            client_id: id.to_string(),
            web_base: self.web_base.to_string(),
            saved_at: chrono::Utc::now().to_rfc3339(),
        };
        let ours = serde_json::to_string_pretty(&c).expect("serializable");
        for (path, text) in [
            (&self.cache_path, ours),
            (&self.ytdlp_cache_path, ytdlp_client_id_entry(id)),
        ] {
            if let Err(e) = write_atomically(path, text.as_bytes()).await {
                tracing::warn!(
                    target: LOG_TARGET,
                    "cannot cache the SoundCloud client id in {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// [`crate::util::write_atomically`] off the async threads, its folder made first.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::util::write_atomically(&path, &bytes, 0o600)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn parse_text(body: &[u8]) -> Result<String, String> {
    Ok(String::from_utf8_lossy(body).into_owned())
}
