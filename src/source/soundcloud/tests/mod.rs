//! The client against the fake SoundCloud (127.0.0.1), split as the client is; here the helpers
//! every group shares and what `mod.rs` itself does (the canonical set URL).

mod client_id;
mod http;
mod listing;

use super::http::ACCEPT_LANGUAGE;
use super::raw::artwork_500;
use super::*;
use crate::model::{DrmCheck, Listing, TrackKey, UnavailableReason};
use crate::sandbox::FakeSoundCloudConfig;
use crate::ytdlp::cache::{parse_ytdlp_client_id, ytdlp_client_id_file};
use playlistd_fakes::soundcloud::{
    Endpoint, FakePlaylist, FakeSoundCloud, FakeTrack, Fault, Policy, playlist_of,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const FAST: RetryPolicy = RetryPolicy {
    attempts: 4,
    base: Duration::from_millis(1),
    max_backoff: Duration::from_millis(5),
    max_retry_after: Duration::from_secs(1),
    rate_limit_budget: Duration::from_secs(2),
};

fn client(sc: &FakeSoundCloud, cache: &Path) -> SoundCloud {
    SoundCloud::new(&sc.config(), cache).with_retry(FAST)
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn ids_of(l: &Listing) -> Vec<u64> {
    l.tracks
        .iter()
        .map(|t| t.track.soundcloud_id.unwrap())
        .collect()
}

/// The real hosts, for tests that send nothing.
fn offline_config() -> SoundCloudConfig {
    SoundCloudConfig {
        api_base: url("https://api-v2.soundcloud.com"),
        web_base: url("https://soundcloud.com"),
        short_link_base: url("https://on.soundcloud.com"),
        client_id: None,
        user_agent: None,
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn mobile_and_www_hosts_are_folded() {
    let c = SoundCloud::new(&offline_config(), Path::new("/nonexistent"));
    assert_eq!(
        c.canonical_set_url(&url("https://m.soundcloud.com/a/sets/b/?si=x#t"))
            .as_str(),
        "https://soundcloud.com/a/sets/b"
    );
    assert_eq!(
        c.canonical_set_url(&url(
            "https://www.soundcloud.com/a/sets/b/s-TOKEN?ref=clipboard"
        ))
        .as_str(),
        "https://soundcloud.com/a/sets/b/s-TOKEN"
    );
}
