//! `on.soundcloud.com/<code>` short links, which SoundCloud's share buttons copy: `playlistd
//! add` turns one into the playlist's canonical URL before writing it to `playlists.toml`, so
//! the file holds the link the sync resolves (and compares with) rather than a redirect.
//!
//! Invariants: exactly one request per short link; the redirect is read, not followed (its
//! target is a soundcloud.com page, whose HTML we do not need); the answer must name a
//! soundcloud.com URL, else the link is refused with a fix. Short links already inside Notion
//! pages are not resolved (each would cost a request per page at every lookup).

use crate::config::SoundCloudConfig;
use crate::model::{canonical_url, is_soundcloud_url};
use std::time::Duration;
use url::Url;

/// The host SoundCloud's short links live on.
pub const SHORT_LINK_HOST: &str = "on.soundcloud.com";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortLinkError {
    #[error(
        "cannot reach {host} to resolve the short link {link}: {reason} (fix: check the network, or paste the full soundcloud.com link)"
    )]
    Unreachable {
        host: String,
        link: String,
        reason: String,
    },
    #[error(
        "the short link {link} does not lead to a SoundCloud page ({answer}) (fix: open it in a browser and paste the soundcloud.com link it shows)"
    )]
    Dead { link: String, answer: String },
}

/// Is this an `on.soundcloud.com` short link?
pub fn is_short_link(u: &Url) -> bool {
    u.host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(SHORT_LINK_HOST))
        && u.path().trim_matches('/').len() > 1
}

/// The canonical soundcloud.com URL a short link redirects to, with one request.
/// `cfg.short_link_base` stands in for `https://on.soundcloud.com` (tests and proxies).
pub async fn resolve(cfg: &SoundCloudConfig, link: &Url) -> Result<String, ShortLinkError> {
    let mut asked = cfg.short_link_base.clone();
    let base_path = asked.path().trim_end_matches('/').to_string();
    asked.set_path(&format!(
        "{base_path}/{}",
        link.path().trim_start_matches('/')
    ));
    let unreachable = |reason: String| ShortLinkError::Unreachable {
        host: SHORT_LINK_HOST.to_string(),
        link: link.to_string(),
        reason,
    };
    let agent = cfg
        .user_agent
        .as_deref()
        .unwrap_or(super::soundcloud::DEFAULT_USER_AGENT);
    let headers =
        super::soundcloud::browser_headers(agent).map_err(|e| unreachable(e.to_string()))?;
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout.min(Duration::from_secs(30)))
        .build()
        .map_err(|e| unreachable(super::error_chain(&e)))?;
    let resp = http
        .get(asked)
        .send()
        .await
        .map_err(|e| unreachable(super::error_chain(&e)))?;
    let status = resp.status();
    let dead = |answer: String| ShortLinkError::Dead {
        link: link.to_string(),
        answer,
    };
    if !status.is_redirection() {
        return Err(dead(format!("HTTP {}", status.as_u16())));
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| dead(format!("HTTP {} without a Location", status.as_u16())))?;
    let canonical = canonical_url(location);
    if is_soundcloud_url(&canonical) {
        Ok(canonical)
    } else {
        Err(dead(format!("it redirects to {}", one_host(location))))
    }
}

/// The host of a redirect target, or the target itself when it has none: enough to say where
/// it went without echoing a long tracking URL.
fn one_host(location: &str) -> String {
    Url::parse(location)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| super::one_line(location))
}
