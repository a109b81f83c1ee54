//! What each kind of target is sent: the request for a webhook, an ntfy topic or a
//! healthchecks check, built from one [`Message`]. Pure: no client, no clock but the one given.
//!
//! Invariants:
//! - The webhook body keeps the old cron wrapper's shape, `{event, source, timestamp, data}`
//!   (reference/seed-system.md §4), with `source` = `playlistd`.
//! - An ntfy message stays under ntfy's 4,096-byte limit (longer ones become attachments) and
//!   its headers are plain ASCII (a title with other characters is an RFC 2047 encoded word).
//! - A healthchecks ping body stays under 10,000 bytes, what the service keeps of a ping.
//! - Nothing here reads a secret: the payloads carry reports, whose errors never hold the
//!   Notion token.

use super::alerts::AlertChange;
use super::digest::Digest;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use url::Url;

/// ntfy's message limit (bytes); we keep a margin under it.
pub const NTFY_MAX: usize = 4_000;
/// What healthchecks keeps of a ping body (bytes).
pub const PING_MAX: usize = 10_000;

/// The kinds of target `[notify]` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Ntfy,
    Healthchecks,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Ntfy => "ntfy",
            Kind::Healthchecks => "healthchecks",
        }
    }
}

/// Something to tell the targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Digest(Digest),
    Alert(AlertChange),
    /// A run started (healthchecks `/start`); `rid` tells concurrent runs apart.
    RunStarted {
        rid: String,
    },
    /// A run ended: the plain ping on success, `/fail` otherwise, with the summary.
    RunFinished {
        rid: String,
        ok: bool,
        summary: String,
    },
}

/// One HTTP request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub post: bool,
    pub url: Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(Value),
    Text(String),
}

/// The request `kind` at `base` gets for `msg`, if that kind is told about it.
pub fn render(kind: Kind, base: &Url, msg: &Message, now: DateTime<Utc>) -> Option<Outgoing> {
    match kind {
        Kind::Webhook => webhook(base, msg, now),
        Kind::Ntfy => ntfy(base, msg),
        Kind::Healthchecks => healthchecks(base, msg),
    }
}

fn webhook(base: &Url, msg: &Message, now: DateTime<Utc>) -> Option<Outgoing> {
    let (event, data) = match msg {
        Message::Digest(d) => (
            if d.failures() > 0 {
                "sync_error"
            } else {
                "sync_complete"
            },
            digest_data(d),
        ),
        Message::Alert(AlertChange::Opened {
            kind,
            detail,
            playlist,
            since,
        }) => (
            "alert",
            json!({"kind": kind, "title": kind.title(), "detail": detail, "playlist": playlist, "since": since}),
        ),
        Message::Alert(AlertChange::Cleared {
            kind,
            detail,
            since,
            at,
        }) => (
            "alert_cleared",
            json!({"kind": kind, "title": kind.title(), "detail": detail, "since": since, "cleared": at}),
        ),
        Message::RunStarted { .. } | Message::RunFinished { .. } => return None,
    };
    Some(Outgoing {
        post: true,
        url: base.clone(),
        headers: vec![],
        body: Body::Json(json!({
            "event": event,
            "source": "playlistd",
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "data": data,
        })),
    })
}

fn digest_data(d: &Digest) -> Value {
    let sum =
        |f: fn(&super::digest::PlaylistDigest) -> usize| d.playlists.iter().map(f).sum::<usize>();
    json!({
        "headline": d.headline(),
        "since": d.since,
        "until": d.until,
        "totals": {
            "created": sum(|p| p.created),
            "adopted": sum(|p| p.adopted),
            "downloaded": sum(|p| p.downloaded),
            "failed": sum(|p| p.failed),
        },
        "playlists": d.playlists,
        "quiet_runs": d.quiet_runs,
    })
}

fn ntfy(base: &Url, msg: &Message) -> Option<Outgoing> {
    let (title, body, tags, priority) = match msg {
        Message::Digest(d) => (
            format!("playlistd: {}", d.headline()),
            d.lines().join("\n"),
            if d.failures() > 0 {
                "warning"
            } else {
                "musical_note"
            },
            "default",
        ),
        Message::Alert(AlertChange::Opened { kind, detail, .. }) => (
            format!("playlistd alert: {}", kind.title()),
            detail.clone(),
            "rotating_light",
            "high",
        ),
        Message::Alert(AlertChange::Cleared {
            kind, since, at, ..
        }) => (
            format!("playlistd: {}: resolved", kind.title()),
            format!("Cleared at {at}, open since {since}."),
            "white_check_mark",
            "default",
        ),
        Message::RunStarted { .. } | Message::RunFinished { .. } => return None,
    };
    let title = if title.is_ascii() {
        title
    } else {
        // Header values are ASCII: an RFC 2047 encoded word, which ntfy decodes.
        use base64::Engine;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(title)
        )
    };
    Some(Outgoing {
        post: true,
        url: base.clone(),
        headers: vec![
            ("Title", title),
            ("Tags", tags.to_string()),
            ("Priority", priority.to_string()),
        ],
        body: Body::Text(cap(&body, NTFY_MAX)),
    })
}

fn healthchecks(base: &Url, msg: &Message) -> Option<Outgoing> {
    let (suffix, rid, body) = match msg {
        Message::RunStarted { rid } => ("/start", rid, None),
        Message::RunFinished { rid, ok, summary } => (
            if *ok { "" } else { "/fail" },
            rid,
            Some(cap(summary, PING_MAX)),
        ),
        Message::Digest(_) | Message::Alert(_) => return None,
    };
    let mut url = base.clone();
    let path = format!("{}{suffix}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut().append_pair("rid", rid);
    Some(Outgoing {
        post: body.is_some(),
        url,
        headers: vec![],
        body: body.map_or(Body::None, Body::Text),
    })
}

/// `s`, cut at a character boundary to at most `max` bytes, marked when cut.
fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A random version-4 UUID, for healthchecks' run ids.
pub fn run_id() -> String {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ProblemKind, RunReport, TrackRef};

    fn digest(name: &str, created: usize) -> Digest {
        let mut r = RunReport::new(name, "https://soundcloud.com/o/sets/p", false);
        for i in 0..created {
            r.created.push(TrackRef::sample(
                format!("soundcloud:{i}"),
                format!("Track {i} {}", "x".repeat(300)),
                "Okra",
            ));
        }
        let mut d = Digest::default();
        d.add(&r);
        d
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    #[test]
    fn the_webhook_keeps_the_old_wrappers_shape() {
        let base = Url::parse("http://127.0.0.1:1/hook").unwrap();
        let out = render(
            Kind::Webhook,
            &base,
            &Message::Digest(digest("Okra Picks", 2)),
            now(),
        )
        .unwrap();
        let Body::Json(v) = &out.body else { panic!() };
        assert_eq!(v["event"], "sync_complete");
        assert_eq!(v["source"], "playlistd");
        assert_eq!(v["timestamp"], "2026-09-21T14:13:20Z");
        assert_eq!(v["data"]["totals"]["created"], 2);
        assert_eq!(v["data"]["playlists"][0]["name"], "Okra Picks");
        let alert = Message::Alert(AlertChange::Opened {
            kind: ProblemKind::NotionToken,
            detail: "Notion rejected the API token".into(),
            playlist: "Okra Picks".into(),
            since: now(),
        });
        let Body::Json(v) = render(Kind::Webhook, &base, &alert, now()).unwrap().body else {
            panic!()
        };
        assert_eq!(
            (v["event"].as_str(), v["data"]["kind"].as_str()),
            (Some("alert"), Some("notion_token"))
        );
        let start = Message::RunStarted { rid: run_id() };
        assert_eq!(render(Kind::Webhook, &base, &start, now()), None);
    }

    #[test]
    fn ntfy_messages_stay_under_the_limit_with_ascii_headers() {
        let base = Url::parse("http://127.0.0.1:1/ntfy/topic").unwrap();
        let out = render(Kind::Ntfy, &base, &Message::Digest(digest("Été", 5)), now()).unwrap();
        let Body::Text(body) = &out.body else {
            panic!()
        };
        assert!(body.len() <= NTFY_MAX);
        assert!(body.contains("Été"));
        assert!(
            out.headers.iter().all(|(_, v)| v.is_ascii()),
            "{:?}",
            out.headers
        );
        assert_eq!(
            out.headers[0].1,
            "=?UTF-8?B?cGxheWxpc3RkOiA1IG5ldyB0cmFja3MgaW4gw4l0w6k=?="
        );
        let long = "é".repeat(5_000);
        assert!(cap(&long, NTFY_MAX).len() <= NTFY_MAX);
        assert!(cap(&long, NTFY_MAX).ends_with('…'));
    }

    #[test]
    fn healthchecks_gets_start_success_and_fail_with_the_run_id() {
        let base =
            Url::parse("http://127.0.0.1:1/hc/5a1b1b8e-0000-4000-8000-000000000000/").unwrap();
        let rid = run_id();
        assert_eq!(rid.len(), 36);
        assert_eq!(&rid[14..15], "4");
        let start = render(
            Kind::Healthchecks,
            &base,
            &Message::RunStarted { rid: rid.clone() },
            now(),
        )
        .unwrap();
        assert_eq!(
            start.url.path(),
            "/hc/5a1b1b8e-0000-4000-8000-000000000000/start"
        );
        assert_eq!(start.url.query(), Some(format!("rid={rid}").as_str()));
        assert!(!start.post);
        let fin = |ok| {
            render(
                Kind::Healthchecks,
                &base,
                &Message::RunFinished {
                    rid: rid.clone(),
                    ok,
                    summary: "synced".into(),
                },
                now(),
            )
            .unwrap()
        };
        assert_eq!(
            fin(true).url.path(),
            "/hc/5a1b1b8e-0000-4000-8000-000000000000"
        );
        assert_eq!(
            fin(false).url.path(),
            "/hc/5a1b1b8e-0000-4000-8000-000000000000/fail"
        );
        assert_eq!(fin(false).body, Body::Text("synced".into()));
        assert_eq!(
            render(
                Kind::Healthchecks,
                &base,
                &Message::Digest(digest("A", 1)),
                now()
            ),
            None
        );
    }
}
