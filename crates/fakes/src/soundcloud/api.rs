//! The API v2 host (`api-v2.soundcloud.com`, served by axum): `GET /resolve?url=`,
//! `/playlists/{id}`, `/tracks/{id}` and the `/tracks?ids=` batch, with the JSON shapes of
//! reference/soundcloud-api.md §2-5.
//!
//! Invariants: every request passes `api_prelude` first (counted and logged, latency, bot
//! protection, a scripted fault, then the client id: a stale one is a JSON 401); a playlist
//! lists full track objects for its `full_prefix` only and stubs after; the batch refuses more
//! than [`MAX_IDS`] ids, answers in a seeded shuffled order and leaves out deleted tracks and
//! private ones its secret set does not unlock; secret things need their token.

use super::catalog::{Policy, fnv, title_case};
use super::http::{ApiQuery, api_prelude, error_body, json_response, not_found};
use super::media::transcodings;
use super::{Endpoint, FakeTrack, Inner, Seen, Shared, StoredPlaylist, lock};
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use url::Url;

/// The most ids the real `/tracks?ids=` accepts (reference §2).
pub const MAX_IDS: usize = 50;

impl Inner {
    fn user_json(&self, permalink: &str, username: &str, avatar: Option<&str>) -> Value {
        let id = fnv(permalink) % 900_000_000 + 1_000_000;
        json!({
            "id": id,
            "kind": "user",
            "urn": format!("soundcloud:users:{id}"),
            "username": username,
            "permalink": permalink,
            "permalink_url": format!("{}/{}", self.web_shown(), permalink),
            "uri": format!("https://api.soundcloud.com/users/{id}"),
            "avatar_url": self.image_shown(avatar),
            "verified": false,
            "followers_count": 1000 + id % 5000,
        })
    }

    pub(super) fn track_json(&self, t: &FakeTrack) -> Value {
        let id = t.id;
        let snip = t.policy == Policy::Snip;
        let media = format!("{}/media/soundcloud:tracks:{id}", self.api_shown());
        let kind = if snip { "preview" } else { "stream" };
        let dur = if snip { 30_000 } else { t.duration_ms };
        // As on the real service, a private track's stream URLs carry its secret token.
        let query = t
            .secret_token()
            .map(|tok| format!("?secret_token={tok}"))
            .unwrap_or_default();
        // The real yt-dlp (2026.10.26) gives up a track on a 403 from any transcoding it asks,
        // and it works anonymously in 2026, so SoundCloud cannot be listing a login-only `hq`
        // to it: while the public hosts are shown (a yt-dlp run), `hq` is left out.
        let transcodings: Vec<Value> = transcodings(t)
            .iter()
            .filter(|tc| !(self.public_hosts && tc.quality == "hq"))
            .map(|tc| {
                json!({
                    "url": format!("{media}/{}/{kind}/{}{query}", tc.uuid, tc.protocol),
                    "preset": tc.preset,
                    "duration": dur,
                    "snipped": snip,
                    "format": {"protocol": tc.protocol, "mime_type": tc.mime},
                    "quality": tc.quality,
                    "is_legacy_transcoding": false,
                })
            })
            .collect();
        let secret = t.secret_token();
        json!({
            "kind": "track",
            "id": id,
            "urn": format!("soundcloud:tracks:{id}"),
            "title": t.title,
            "permalink": t.slug,
            "permalink_url": self.permalink(t),
            "uri": format!("https://api.soundcloud.com/tracks/{id}"),
            "duration": dur,
            "full_duration": t.duration_ms,
            "genre": t.genre,
            "tag_list": "",
            "description": "",
            "caption": null,
            "label_name": null,
            "artwork_url": self.image_shown(t.artwork_url.as_deref()),
            "waveform_url": format!("https://wave.sndcdn.com/{id}_m.json"),
            "created_at": "2024-05-01T12:00:00Z",
            "last_modified": "2024-05-02T12:00:00Z",
            "display_date": "2024-05-01T12:00:00Z",
            "release_date": null,
            "license": "all-rights-reserved",
            "public": !t.private,
            "sharing": if t.private { "private" } else { "public" },
            "secret_token": secret,
            "state": "finished",
            "streamable": t.streamable,
            "embeddable_by": "all",
            "downloadable": false,
            "has_downloads_left": true,
            "playback_count": id % 100_000,
            "likes_count": id % 1000,
            "reposts_count": id % 100,
            "comment_count": id % 10,
            "publisher_metadata": t.artist.as_ref().map(|a| json!({
                "id": id, "urn": format!("soundcloud:tracks:{id}"), "artist": a, "contains_music": true
            })),
            "track_format": "single-track",
            // A JWT on the real service; clients may send it with a stream request.
            "track_authorization": format!("eyJ0eXAiOiJKV1QifQ.fake-{id}"),
            "monetization_model": monetization(t.policy),
            "policy": t.policy.as_str(),
            "media": {"transcodings": transcodings},
            "user_id": fnv(&t.user_permalink) % 900_000_000 + 1_000_000,
            "user": self.user_json(&t.user_permalink, &t.username, t.avatar_url.as_deref()),
        })
    }

    fn stub_json(&self, t: &FakeTrack) -> Value {
        json!({
            "id": t.id,
            "kind": "track",
            "monetization_model": monetization(t.policy),
            "policy": t.policy.as_str(),
        })
    }

    fn playlist_json(&self, sp: &StoredPlaylist) -> Value {
        let p = &sp.meta;
        let mut entries = Vec::with_capacity(sp.track_ids.len());
        let mut duration = 0;
        for (i, id) in sp.track_ids.iter().enumerate() {
            let Some(t) = self.tracks.get(id) else {
                continue;
            };
            duration += t.duration_ms;
            // A deleted track has nothing left to show in full; it stays listed as a stub.
            entries.push(if i < p.full_prefix && !t.deleted {
                self.track_json(t)
            } else {
                self.stub_json(t)
            });
        }
        let count = entries.len() as u64 + p.hidden;
        json!({
            "kind": "playlist",
            "id": p.id,
            "urn": format!("soundcloud:playlists:{}", p.id),
            "title": p.title,
            "description": "",
            "permalink": p.slug,
            "permalink_url": self.playlist_url(p.id),
            "uri": format!("https://api.soundcloud.com/playlists/{}", p.id),
            "sharing": if p.secret_token.is_some() { "private" } else { "public" },
            "secret_token": p.secret_token,
            "set_type": "",
            "is_album": false,
            "managed_by_feeds": false,
            "track_count": count,
            "duration": duration,
            "created_at": "2024-01-01T00:00:00Z",
            "last_modified": "2024-06-01T00:00:00Z",
            "genre": "",
            "artwork_url": null,
            "user_id": fnv(&p.user) % 900_000_000 + 1_000_000,
            "user": self.user_json(&p.user, &title_case(&p.user), None),
            "tracks": entries,
        })
    }

    fn find_playlist(&self, user: &str, slug: &str) -> Option<&StoredPlaylist> {
        self.playlists
            .values()
            .find(|p| !p.deleted && p.meta.user == user && p.meta.slug == slug)
    }

    fn resolve(&self, raw: &str) -> (StatusCode, Value) {
        let Ok(u) = Url::parse(raw) else {
            return (StatusCode::BAD_REQUEST, error_body(400, "invalid url"));
        };
        let segs: Vec<&str> = u
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        match segs.as_slice() {
            [user, "sets", slug] => match self.find_playlist(user, slug) {
                Some(p) if p.meta.secret_token.is_none() => (StatusCode::OK, self.playlist_json(p)),
                _ => not_found(),
            },
            [user, "sets", slug, token] => match self.find_playlist(user, slug) {
                Some(p) if p.meta.secret_token.as_deref() == Some(*token) => {
                    (StatusCode::OK, self.playlist_json(p))
                }
                _ => not_found(),
            },
            [user, slug] | [user, slug, _] => {
                let token = segs.get(2).copied();
                match self.paths.get(&(user.to_string(), slug.to_string())) {
                    Some(id) => {
                        let t = &self.tracks[id];
                        if t.deleted || t.secret_token().as_deref() != token {
                            not_found()
                        } else {
                            (StatusCode::OK, self.track_json(t))
                        }
                    }
                    None => not_found(),
                }
            }
            [user] => {
                if let Some(t) = self.tracks.values().find(|t| t.user_permalink == *user) {
                    (
                        StatusCode::OK,
                        self.user_json(user, &t.username, t.avatar_url.as_deref()),
                    )
                } else if self.playlists.values().any(|p| p.meta.user == *user) {
                    (
                        StatusCode::OK,
                        self.user_json(user, &title_case(user), None),
                    )
                } else {
                    not_found()
                }
            }
            _ => not_found(),
        }
    }

    fn tracks_batch(&mut self, q: &HashMap<String, String>) -> (StatusCode, Value) {
        let raw = q.get("ids").map(String::as_str).unwrap_or("");
        let mut ids = Vec::new();
        for part in raw.split(',').filter(|p| !p.is_empty()) {
            match part.trim().parse::<u64>() {
                Ok(id) => ids.push(id),
                Err(_) => return (StatusCode::BAD_REQUEST, error_body(400, "invalid ids")),
            }
        }
        self.max_ids = self.max_ids.max(ids.len());
        if ids.len() > MAX_IDS {
            return (
                StatusCode::BAD_REQUEST,
                error_body(400, "ids: should be less than 50"),
            );
        }
        let unlocked: HashSet<u64> = match (q.get("playlistId"), q.get("playlistSecretToken")) {
            (Some(pid), Some(tok)) => pid
                .parse::<u64>()
                .ok()
                .and_then(|pid| self.playlists.get(&pid))
                .filter(|p| !p.deleted && p.meta.secret_token.as_deref() == Some(tok.as_str()))
                .map(|p| p.track_ids.iter().copied().collect())
                .unwrap_or_default(),
            _ => HashSet::new(),
        };
        let mut seen = HashSet::new();
        let mut out: Vec<Value> = ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| self.tracks.get(id))
            .filter(|t| !t.deleted && (!t.private || unlocked.contains(&t.id)))
            .map(|t| self.track_json(t))
            .collect();
        self.shuffles += 1;
        fastrand::Rng::with_seed(self.seed ^ self.shuffles.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .shuffle(&mut out);
        (StatusCode::OK, Value::Array(out))
    }
}

fn monetization(p: Policy) -> &'static str {
    match p {
        Policy::Allow => "NOT_APPLICABLE",
        Policy::Monetize => "AD_SUPPORTED",
        Policy::Snip => "SUB_HIGH_TIER",
        Policy::Block => "BLACKBOX",
    }
}

pub(super) async fn api_resolve(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Resolve, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (status, body) = match q.get("url") {
        Some(u) => lock(&st).resolve(u),
        None => (StatusCode::BAD_REQUEST, error_body(400, "url is required")),
    };
    json_response(status, &body, truncate)
}

pub(super) async fn api_tracks(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Tracks, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (status, body) = lock(&st).tracks_batch(&q);
    json_response(status, &body, truncate)
}

pub(super) async fn api_track(
    State(st): State<Shared>,
    AxPath(id): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Track, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = lock(&st);
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| s.tracks.get(&id))
        .filter(|t| {
            !t.deleted
                && (!t.private
                    || t.secret_token().as_deref() == q.get("secret_token").map(String::as_str))
        });
    let (status, body) = match found {
        Some(t) => (StatusCode::OK, s.track_json(t)),
        None => not_found(),
    };
    json_response(status, &body, truncate)
}

pub(super) async fn api_playlist(
    State(st): State<Shared>,
    AxPath(id): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): ApiQuery,
) -> Response {
    let truncate = match api_prelude(&st, Endpoint::Playlist, (&uri, &headers), &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = lock(&st);
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| s.playlists.get(&id))
        .filter(|p| {
            !p.deleted
                && (p.meta.secret_token.is_none()
                    || p.meta.secret_token.as_deref() == q.get("secret_token").map(String::as_str))
        });
    let (status, body) = match found {
        Some(p) => (StatusCode::OK, s.playlist_json(p)),
        None => not_found(),
    };
    json_response(status, &body, truncate)
}

pub(super) async fn api_fallback(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let target = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    lock(&st).record(Endpoint::Other, &target, &Seen::from_headers(&headers));
    json_response(StatusCode::NOT_FOUND, &error_body(404, "Not Found"), false)
}
