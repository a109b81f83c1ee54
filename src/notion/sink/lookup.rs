//! Finding the pages that already hold tracks, and reading a page's values.
//!
//! Invariants:
//! - Lookups are batched: one query (plus its pagination) per `lookup_batch` tracks, an `or`
//!   of the dedup keys, never one query per track; a batch whose conditions exceed
//!   [`MAX_CONDITIONS`] is asked in as few queries as fit. Compound filters stay within
//!   Notion's two levels (`or` of properties and of `and(title, artist)` pairs). A lookup
//!   whose answer hit Notion's result cap (10,000) is split in halves and asked again, so
//!   nothing is missed.
//! - A SoundCloud track's page is found whatever form of its link a person pasted: the query
//!   asks `contains` for the link's host and path, and a page is adopted only when its
//!   canonical URL ([`canonical_url`]) is the track's (compared by [`url_match_key`]), so a
//!   longer path that merely contains the track's is never taken.
//! - When two pages match one track the oldest (created_time) wins, with a warning.
//! - A page's playlist values are read whole: a relation Notion truncated (more than 25) is
//!   read again through the page-property endpoint, paginated, its cursor URL-encoded, since
//!   the values read are the ones written back.

use super::{ExistingPage, LOG_TARGET, PageAnalysis, Sink};
use crate::model::{Track, TrackKey, canonical_url, url_match_key};
use crate::notion::props;
use crate::notion::schema::{PropType, Property, Role};
use crate::notion::{NotionError, compact_id};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// The most conditions (leaf property filters) one lookup query carries. Notion documents no
/// limit (reference/notion-api.md §10), so this is playlistd's own cap, small enough to stay
/// clear of any: a chunk of tracks whose conditions exceed it is asked in several queries.
pub(crate) const MAX_CONDITIONS: usize = 100;

/// A track's keys as they are compared with pages.
struct Keys {
    /// [`url_match_key`] of the canonical URL; empty when the track has none.
    url: String,
    id: Option<String>,
    title: String,
    artist: String,
}

fn keys(t: &Track) -> Keys {
    Keys {
        url: url_match_key(&canonical_url(&t.url)),
        id: t.soundcloud_id.map(|i| i.to_string()),
        title: props::clean_text(&t.title),
        artist: props::clean_text(&t.artist),
    }
}

fn text_filter(p: &Property, op: &str, value: &str) -> Value {
    let key = if p.kind == PropType::Url {
        "url"
    } else {
        p.kind.key()
    };
    let mut cond = Map::new();
    cond.insert(key.to_string(), json!({ op: value }));
    cond.insert("property".into(), json!(p.name));
    Value::Object(cond)
}

/// What a `contains` condition looks for so that a page holding any pasted form of a
/// SoundCloud link matches: the host and path without the scheme (so `http://`, `www.` and
/// `m.` forms match, and any query or fragment after it), once per encoding the path may have
/// been pasted in. `equals` could only see the one form we write. The needle also matches
/// longer paths (`/a/track` in `/a/track-2`): [`Sink::match_pages`] compares canonical forms,
/// so such a page is read but never adopted.
fn url_needles(canonical: &str) -> Vec<String> {
    let bare = canonical
        .split_once("://")
        .map_or(canonical, |(_, rest)| rest);
    let mut needles = vec![bare.to_string()];
    if bare.contains('%') {
        let decoded = percent_encoding::percent_decode_str(bare)
            .decode_utf8_lossy()
            .into_owned();
        let lower_hex = LOWER_HEX.replace_all(bare, |c: &regex::Captures| c[0].to_lowercase());
        for n in [decoded, lower_hex.into_owned()] {
            if !needles.contains(&n) {
                needles.push(n);
            }
        }
    }
    needles
}

static LOWER_HEX: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new("%[0-9A-F]{2}").expect("valid regex"));

/// The leaf conditions of a filter: what [`MAX_CONDITIONS`] counts.
fn leaves(condition: &Value) -> usize {
    ["or", "and"]
        .iter()
        .find_map(|op| condition[*op].as_array())
        .map_or(1, |subs| subs.iter().map(leaves).sum())
}

impl Sink {
    /// The page by id, or `None` when it is gone (trashed, deleted, or not in this data source).
    pub async fn page(&self, page_id: &str) -> Result<Option<ExistingPage>, NotionError> {
        let what = format!("page {page_id}");
        match self
            .request(Method::GET, &format!("/v1/pages/{page_id}"), None, &what)
            .await
        {
            Ok(v) => {
                let ours = v["parent"]["data_source_id"]
                    .as_str()
                    .is_some_and(|d| compact_id(d) == compact_id(&self.inner.schema.id));
                if v["in_trash"] == true || v["archived"] == true || !ours {
                    return Ok(None);
                }
                Ok(Some(self.existing_page(&v).await?))
            }
            // The database itself was checked at connect; a missing page is just gone.
            Err(NotionError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Finds the pages that already hold these tracks, keyed by track. Takes the tracks by
    /// reference, so a sync looks up the chunk it read back without copying it.
    pub async fn lookup<'t>(
        &self,
        tracks: impl IntoIterator<Item = &'t Track>,
    ) -> Result<HashMap<TrackKey, ExistingPage>, NotionError> {
        let mut seen: HashSet<&TrackKey> = HashSet::new();
        let unique: Vec<&Track> = tracks.into_iter().filter(|t| seen.insert(&t.key)).collect();
        drop(seen);
        let mut out = HashMap::new();
        // Windows still to query, last first: `lookup_batch` tracks at most, and no more
        // tracks than fit in MAX_CONDITIONS. A window whose answer hit Notion's result cap is
        // split in two and both halves are asked again, so no existing page goes unseen (and
        // no duplicate is created) however many pages one window matches.
        let mut windows: Vec<&[&Track]> = unique
            .chunks(self.inner.lookup_batch)
            .flat_map(|chunk| self.split_by_conditions(chunk))
            .rev()
            .collect();
        while let Some(chunk) = windows.pop() {
            let conditions: Vec<Value> = chunk
                .iter()
                .flat_map(|t| self.track_conditions(t))
                .collect();
            if conditions.is_empty() {
                continue;
            }
            let filter = json!({"or": conditions});
            let what = format!("the lookup of {} track(s)", chunk.len());
            let (pages, capped) = self
                .query_all_capped(&self.inner.schema.id, filter, &what)
                .await?;
            if capped && chunk.len() > 1 {
                let (first, second) = chunk.split_at(chunk.len() / 2);
                windows.push(second);
                windows.push(first);
                continue;
            }
            if capped {
                tracing::warn!(
                    target: LOG_TARGET,
                    what,
                    "Notion capped the query at 10,000 results; some matches may be missing"
                );
            }
            self.match_pages(chunk, &pages, &mut out).await?;
        }
        Ok(out)
    }

    /// Consecutive runs of `chunk` whose conditions fit in one query. A track whose own
    /// conditions exceed the cap (it cannot: at most five) still gets a query of its own.
    fn split_by_conditions<'c, 't>(&self, chunk: &'c [&'t Track]) -> Vec<&'c [&'t Track]> {
        let mut out = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, t) in chunk.iter().enumerate() {
            let n: usize = self.track_conditions(t).iter().map(leaves).sum();
            if used + n > MAX_CONDITIONS && i > start {
                out.push(&chunk[start..i]);
                (start, used) = (i, 0);
            }
            used += n;
        }
        if start < chunk.len() {
            out.push(&chunk[start..]);
        }
        out
    }

    /// The conditions that find one track's page: its URL in any pasted form (SoundCloud
    /// tracks; other sites' URLs by `equals`), its SoundCloud id, and optionally its title and
    /// artist together. Compound filters stay within Notion's two levels: an `or` of these.
    fn track_conditions(&self, t: &Track) -> Vec<Value> {
        let mut conditions = Vec::new();
        let canonical = canonical_url(&t.url);
        if let Some(p) = self.prop(Role::Url).filter(|_| !canonical.is_empty()) {
            if t.soundcloud_id.is_some() {
                for needle in url_needles(&canonical) {
                    conditions.push(text_filter(p, "contains", &needle));
                }
            } else {
                conditions.push(text_filter(p, "equals", &canonical));
            }
        }
        if let (Some(p), Some(sid)) = (self.prop(Role::SoundCloudId), t.soundcloud_id) {
            conditions.push(if p.kind == PropType::Number {
                json!({"property": p.name, "number": {"equals": sid}})
            } else {
                text_filter(p, "equals", &sid.to_string())
            });
        }
        if let (true, Some(tp), Some(ap)) = (
            self.inner.match_title_artist,
            self.prop(Role::Title),
            self.prop(Role::Artist),
        ) {
            let (title, artist) = (props::clean_text(&t.title), props::clean_text(&t.artist));
            if !title.is_empty() && !artist.is_empty() {
                conditions.push(json!({"and": [
                    text_filter(tp, "equals", &title),
                    text_filter(ap, "equals", &artist),
                ]}));
            }
        }
        conditions
    }

    /// Every page matching `filter`, oldest first.
    pub(in crate::notion) async fn query_all(
        &self,
        data_source: &str,
        filter: Value,
        what: &str,
    ) -> Result<Vec<Value>, NotionError> {
        let (pages, capped) = self.query_all_capped(data_source, filter, what).await?;
        if capped {
            tracing::warn!(
                target: LOG_TARGET,
                what,
                "Notion capped the query at 10,000 results; some matches may be missing"
            );
        }
        Ok(pages)
    }

    /// The pages matching `filter`, oldest first, and whether Notion capped the results.
    async fn query_all_capped(
        &self,
        data_source: &str,
        filter: Value,
        what: &str,
    ) -> Result<(Vec<Value>, bool), NotionError> {
        let path = format!("/v1/data_sources/{data_source}/query");
        let mut body = json!({
            "filter": filter,
            "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
            "page_size": 100,
        });
        let mut pages = Vec::new();
        let mut capped = false;
        loop {
            let v = self.request(Method::POST, &path, Some(&body), what).await?;
            if let Some(r) = v["results"].as_array() {
                pages.extend(r.iter().cloned());
            }
            capped |= v["request_status"]["type"] == "incomplete";
            match v["next_cursor"].as_str() {
                Some(c) if v["has_more"] == true => body["start_cursor"] = json!(c),
                _ => break,
            }
        }
        Ok((pages, capped))
    }

    /// Which of `pages` hold which of `chunk`'s tracks: the same canonical URL (compared by
    /// [`url_match_key`], so a share link or another host is the same track and a longer path
    /// is not), the same SoundCloud id, or (when enabled) the same title and artist.
    async fn match_pages(
        &self,
        chunk: &[&Track],
        pages: &[Value],
        out: &mut HashMap<TrackKey, ExistingPage>,
    ) -> Result<(), NotionError> {
        let url = self.prop(Role::Url);
        let id = self.prop(Role::SoundCloudId);
        let title = self.prop(Role::Title);
        let artist = self.prop(Role::Artist);
        let text = |page: &Value, p: Option<&Property>| {
            p.and_then(|p| props::as_text(&page["properties"][&p.name]))
        };
        // The chunk's keys, indexed once, so each page costs a few map lookups.
        let keys: Vec<Keys> = chunk.iter().map(|t| keys(t)).collect();
        let mut by_url: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if !k.url.is_empty() {
                by_url.entry(&k.url).or_default().push(i);
            }
            if let Some(sid) = &k.id {
                by_id.entry(sid).or_default().push(i);
            }
            if self.inner.match_title_artist && !k.title.is_empty() {
                by_pair.entry((&k.title, &k.artist)).or_default().push(i);
            }
        }
        let mut candidates: HashMap<&TrackKey, Vec<&Value>> = HashMap::new();
        for page in pages {
            let page_url = text(page, url).map(|u| url_match_key(&canonical_url(&u)));
            let page_id = text(page, id);
            let page_title = text(page, title).map(|s| props::clean_text(&s));
            let page_artist = text(page, artist).map(|s| props::clean_text(&s));
            let mut hits: Vec<usize> = Vec::new();
            if let Some(found) = page_url.as_deref().and_then(|u| by_url.get(u)) {
                hits.extend(found);
            }
            if let Some(found) = page_id.as_deref().and_then(|i| by_id.get(i)) {
                hits.extend(found);
            }
            if let (Some(t), Some(a)) = (&page_title, &page_artist)
                && let Some(found) = by_pair.get(&(t.as_str(), a.as_str()))
            {
                hits.extend(found);
            }
            hits.sort_unstable();
            hits.dedup();
            for i in hits {
                candidates.entry(&chunk[i].key).or_default().push(page);
            }
        }
        for (key, mut found) in candidates {
            found.sort_by(|a, b| a["created_time"].as_str().cmp(&b["created_time"].as_str()));
            found.dedup_by(|a, b| a["id"] == b["id"]);
            if found.len() > 1 {
                let ids: Vec<&str> = found.iter().filter_map(|p| p["id"].as_str()).collect();
                tracing::warn!(
                    target: LOG_TARGET,
                    track = %key,
                    pages = ?ids,
                    "several Notion pages hold this track; using the oldest"
                );
            }
            let existing = self.existing_page(found[0]).await?;
            out.insert(key.clone(), existing);
        }
        Ok(())
    }

    async fn existing_page(&self, page: &Value) -> Result<ExistingPage, NotionError> {
        let page_id = page["id"].as_str().unwrap_or("").to_string();
        let prop_value = |role: Role| self.prop(role).map(|p| &page["properties"][&p.name]);
        let playlists = match (self.prop(Role::Playlists), prop_value(Role::Playlists)) {
            (Some(p), Some(v)) => self.playlist_values(&page_id, p, v).await?,
            _ => Vec::new(),
        };
        Ok(ExistingPage {
            playlists,
            downloaded: prop_value(Role::Downloaded)
                .map(|v| v["checkbox"].as_bool().unwrap_or(false)),
            file_path: prop_value(Role::FilePath).and_then(props::as_text),
            analysis: PageAnalysis {
                tempo: prop_value(Role::Tempo).and_then(props::as_text).is_some(),
                key: prop_value(Role::Key).and_then(props::as_text).is_some(),
            },
            created_time: page["created_time"].as_str().unwrap_or("").to_string(),
            page_id,
        })
    }

    async fn playlist_values(
        &self,
        page_id: &str,
        p: &Property,
        v: &Value,
    ) -> Result<Vec<String>, NotionError> {
        Ok(match p.kind {
            PropType::Relation => {
                if v["has_more"] == true {
                    // Page objects carry at most 25 relations; writing back a truncated list
                    // would drop the others, so read the whole property.
                    self.full_relation(page_id, p).await?
                } else {
                    v["relation"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r["id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                }
            }
            PropType::MultiSelect => v["multi_select"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            PropType::Select => v["select"]["name"]
                .as_str()
                .map(|s| vec![s.to_string()])
                .unwrap_or_default(),
            PropType::RichText => split_list(&props::plain_text(&v["rich_text"])),
            _ => Vec::new(),
        })
    }

    /// Every related page id, through the page-property endpoint, 100 at a time. The cursor
    /// is opaque and may hold `+`, `/` or `=`: it is URL-encoded, or a server would read a `+`
    /// as a space and refuse it.
    async fn full_relation(&self, page_id: &str, p: &Property) -> Result<Vec<String>, NotionError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        let what = format!("the {:?} property of page {page_id}", p.name);
        loop {
            let query = {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("page_size", "100");
                if let Some(c) = &cursor {
                    q.append_pair("start_cursor", c);
                }
                q.finish()
            };
            let path = format!("/v1/pages/{page_id}/properties/{}?{query}", p.id);
            let v = self.request(Method::GET, &path, None, &what).await?;
            if let Some(r) = v["results"].as_array() {
                ids.extend(
                    r.iter()
                        .filter_map(|x| x["relation"]["id"].as_str().map(str::to_string)),
                );
            }
            match v["next_cursor"].as_str() {
                Some(c) if v["has_more"] == true => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(ids)
    }
}

/// A rich_text playlist list is written as "a, b, c".
fn split_list(s: &str) -> Vec<String> {
    s.split(", ")
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}
