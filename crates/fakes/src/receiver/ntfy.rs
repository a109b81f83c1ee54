//! The ntfy receiver (`/ntfy/…`), as ntfy's server (server/server.go `handlePublishInternal` and
//! `parsePublishParams`, server/util.go, util/util.go `ParsePriority`, server/errors.go) and
//! docs/publish.md ("Publishing") have it: `PUT`/`POST` to `/<topic>`, or `GET`
//! `/<topic>/publish` (`/send`, `/trigger`); a topic is 1 to 64 of `A-Za-z0-9_-`, anything else
//! matches no route (404 `{"code":40401,"http":404,"error":"page not found"}`); parameters come
//! from the headers (RFC 2047 encoded words decoded, an RFC 9218 `Priority: u=…` header
//! ignored), then from the query; a bad priority is 400 code 40007; the body is the message,
//! trimmed, `triggered` when empty; a body over 4,096 bytes (or not UTF-8) becomes an
//! attachment, which this fake flags (`too_long`) so tests can assert the client keeps messages
//! short; the answer is the message object as JSON. The web app is off (a `GET` of the topic is
//! 404), and publishing JSON to the root is not modelled.
//!
//! The RFC 2047 decoder (with its base64 and "Q" decoders) lives here too, as only ntfy reads
//! encoded words: it does what Go's `mime.WordDecoder` does for ntfy, malformed words left as
//! they are. Message ids come from the seeded generator in the shared state, so runs are
//! reproducible.

use super::{Answer, Incoming, NtfyMessage, Reply, Shared, State};
use axum::http::Method;
use serde_json::{Map, Value, json};

/// ntfy's `DefaultCacheDuration`: a cached message expires 12 h after it was sent.
const NTFY_CACHE_SECS: i64 = 12 * 3600;
/// ntfy's `DefaultAttachmentExpiryDuration`.
const NTFY_ATTACHMENT_SECS: i64 = 3 * 3600;
const NTFY_PRIORITY_LINK: &str = "https://ntfy.sh/docs/publish/#message-priority";

impl State {
    /// ntfy's `util.RandomString(12)`.
    fn message_id(&mut self) -> String {
        const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..12)
            .map(|_| CHARSET[self.rng.usize(..CHARSET.len())] as char)
            .collect()
    }
}

/// ntfy's `errHTTP` as JSON: `{"code":…,"http":…,"error":…,"link":…}` (`link` only if set).
pub(super) fn ntfy_error(code: u32, status: u16, error: &str, link: Option<&str>) -> Reply {
    let mut e = json!({ "code": code, "http": status, "error": error });
    if let Some(link) = link {
        e["link"] = json!(link);
    }
    Reply::json(status, &e).with_header("access-control-allow-origin", "*")
}

fn ntfy_not_found(why: &str) -> Answer {
    Answer::refuse(ntfy_error(40401, 404, "page not found", None), why)
}

/// ntfy's topic rule: `^[-_A-Za-z0-9]{1,64}$`.
fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Routes as ntfy does: `PUT`/`POST /<topic>` and `GET /<topic>/{publish,send,trigger}`
/// publish; anything else is no route.
pub(super) fn ntfy(shared: &Shared, req: &Incoming) -> Answer {
    let rest = req.path.strip_prefix("/ntfy/").unwrap_or("");
    let segs: Vec<&str> = rest.split('/').collect();
    let publish_put = matches!(req.method, Method::PUT | Method::POST);
    let topic = match (segs.as_slice(), publish_put, req.method == Method::GET) {
        ([topic], true, _) if valid_topic(topic) => *topic,
        ([topic, "publish" | "send" | "trigger"], _, true) if valid_topic(topic) => *topic,
        ([""], true, _) => return ntfy_not_found("publishing JSON to the root is not modelled"),
        ([topic], false, true) if valid_topic(topic) => {
            return ntfy_not_found("GET of a topic serves the web app (off here): not a publish");
        }
        _ => {
            return ntfy_not_found(&format!(
                "no route: {} {} (a topic is 1 to 64 of A-Za-z0-9_-)",
                req.method, req.path
            ));
        }
    };
    ntfy_publish(shared, req, topic)
}

/// `readParam`: the first non-empty header of `names` (RFC 2047 decoded, an RFC 9218
/// `Priority` ignored), else the first non-empty query parameter of `names`, trimmed.
fn ntfy_param(req: &Incoming, names: &[&str]) -> String {
    for name in names {
        let raw = req.header(name).unwrap_or_default();
        let decoded = decode_rfc2047(&raw).unwrap_or(raw);
        let value = decoded.trim();
        if *name == "priority" && is_rfc9218_priority(value) {
            continue;
        }
        if !value.is_empty() {
            return value.to_string();
        }
    }
    for name in names {
        if let Some(v) = req.query_values(name).into_iter().next()
            && !v.is_empty()
        {
            return v.trim().to_string();
        }
    }
    String::new()
}

fn ntfy_bool(req: &Incoming, default: bool, names: &[&str]) -> bool {
    match ntfy_param(req, names).to_lowercase().as_str() {
        "" => default,
        v => matches!(v, "1" | "yes" | "true"),
    }
}

/// `^u=\d,\s*(i|\d)$|^u=\d$`: what Cloudflare adds, which ntfy ignores.
pub(super) fn is_rfc9218_priority(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("u=") else {
        return false;
    };
    let mut chars = rest.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    let tail = chars.as_str();
    if tail.is_empty() {
        return true;
    }
    let Some(after) = tail.strip_prefix(',') else {
        return false;
    };
    let last = after.trim_start();
    last == "i" || (last.len() == 1 && last.as_bytes()[0].is_ascii_digit())
}

/// ntfy's `ParsePriority`: `None` for not given, `Err` for anything unknown.
fn ntfy_priority(v: &str) -> Result<Option<u8>, ()> {
    match v.trim().to_lowercase().as_str() {
        "" => Ok(None),
        "1" | "min" => Ok(Some(1)),
        "2" | "low" => Ok(Some(2)),
        "3" | "default" => Ok(Some(3)),
        "4" | "high" => Ok(Some(4)),
        "5" | "max" | "urgent" => Ok(Some(5)),
        _ => Err(()),
    }
}

fn ntfy_publish(shared: &Shared, req: &Incoming, topic: &str) -> Answer {
    let prio = ntfy_param(req, &["x-priority", "priority", "prio", "p"]);
    let Ok(priority) = ntfy_priority(&prio) else {
        let reply = ntfy_error(
            40007,
            400,
            "invalid priority parameter",
            Some(NTFY_PRIORITY_LINK),
        );
        return Answer::refuse(reply, format!("invalid priority {prio:?}"));
    };
    let title = Some(ntfy_param(req, &["x-title", "title", "t"])).filter(|t| !t.is_empty());
    let tags: Vec<String> = ntfy_param(req, &["x-tags", "tags", "tag", "ta"])
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let content_type = ntfy_param(req, &["content-type", "content_type"]);
    let markdown = ntfy_bool(req, false, &["x-markdown", "markdown", "md"])
        || content_type.eq_ignore_ascii_case("text/markdown");
    let cache = ntfy_bool(req, true, &["x-cache", "cache"]);
    let mut message = ntfy_param(req, &["x-message", "message", "m"]).replace("\\n", "\n");
    let too_long = req.body.len() > shared.ntfy_message_limit;
    let text = std::str::from_utf8(&req.body).ok().filter(|_| !too_long);
    if let Some(t) = text
        && !t.is_empty()
    {
        message = t.trim().to_string();
    }
    let attachment = text.is_none();
    let msg = NtfyMessage {
        topic: topic.to_string(),
        id: shared.lock().message_id(),
        title,
        message,
        priority,
        tags,
        markdown,
        too_long,
        attachment,
    };
    ntfy_reply(shared, req, msg, cache)
}

/// The message object ntfy answers (`message` in server/types.go, empty fields left out).
fn ntfy_reply(shared: &Shared, req: &Incoming, mut msg: NtfyMessage, cache: bool) -> Answer {
    let now = chrono::Utc::now().timestamp();
    let mut m = Map::new();
    m.insert("id".into(), json!(msg.id));
    m.insert("time".into(), json!(now));
    if cache {
        m.insert("expires".into(), json!(now + NTFY_CACHE_SECS));
    }
    m.insert("event".into(), json!("message"));
    m.insert("topic".into(), json!(msg.topic));
    if let Some(t) = &msg.title {
        m.insert("title".into(), json!(t));
    }
    if msg.attachment {
        let utf8 = std::str::from_utf8(&req.body).is_ok();
        let (mime, ext) = if utf8 {
            ("text/plain; charset=utf-8", ".txt")
        } else {
            ("application/octet-stream", ".bin")
        };
        let name = format!("attachment{ext}");
        if msg.message.is_empty() {
            msg.message = format!("You received a file: {name}");
        }
        let url = format!("{}/ntfy/file/{}{ext}", shared.base, msg.id);
        let a = json!({"name": name, "type": mime, "size": req.body.len(),
            "expires": now + NTFY_ATTACHMENT_SECS, "url": url});
        m.insert("attachment".into(), a);
    }
    if msg.message.is_empty() {
        msg.message = "triggered".into();
    }
    m.insert("message".into(), json!(msg.message));
    if let Some(p) = msg.priority {
        m.insert("priority".into(), json!(p));
    }
    if !msg.tags.is_empty() {
        m.insert("tags".into(), json!(msg.tags));
    }
    if msg.markdown {
        m.insert("content_type".into(), json!("text/markdown"));
    }
    let reply = Reply::json(200, &Value::Object(m)).with_header("access-control-allow-origin", "*");
    Answer {
        ntfy: Some(msg),
        ..Answer::accept(reply)
    }
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?UTF-8?Q?…?=`), as ntfy does with Go's
/// `mime.WordDecoder`: malformed words are left as they are, the blanks between two words are
/// dropped, and a charset other than UTF-8, US-ASCII or ISO-8859-1 is an error (ntfy then
/// keeps the raw value).
pub(super) fn decode_rfc2047(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    let mut between_words = false;
    while let Some(start) = rest.find("=?") {
        let Some((charset, content, end)) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            between_words = false;
            continue;
        };
        let before = &rest[..start];
        if !between_words || !before.trim().is_empty() {
            out.push_str(before);
        }
        match charset.to_ascii_lowercase().as_str() {
            "utf-8" | "us-ascii" => out.push_str(&String::from_utf8_lossy(&content)),
            "iso-8859-1" => out.extend(content.iter().map(|&b| b as char)),
            _ => return None,
        }
        rest = &rest[start + end..];
        between_words = true;
    }
    out.push_str(rest);
    Some(out)
}

/// One encoded word at the start of `s`: (charset, decoded bytes, its length in `s`).
fn encoded_word(s: &str) -> Option<(&str, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, rest) = inner.split_once('?')?;
    let mut chars = rest.chars();
    let encoding = chars.next()?;
    let rest = chars.as_str().strip_prefix('?')?;
    let text_len = rest.find("?=")?;
    let text = &rest[..text_len];
    let content = match encoding {
        'B' | 'b' => base64_decode(text)?,
        'Q' | 'q' => q_decode(text)?,
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + encoding.len_utf8() + 1 + text_len + 2;
    Some((charset, content, len))
}

/// Standard base64 with padding.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad]);
    }
    Some(out)
}

/// RFC 2047 "Q": `_` is a space, `=XX` a byte.
pub(super) fn q_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}
