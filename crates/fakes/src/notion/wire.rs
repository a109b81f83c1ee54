//! How Notion writes ids, timestamps and text on the wire: dashed lowercase UUIDs (accepted
//! with or without dashes, in any case), RFC 3339 timestamps with milliseconds, rich text as
//! arrays of `plain_text` items, lengths in UTF-16 code units.
//!
//! Invariant: every id the fake hands out comes from `uuid` (a version-4 shape drawn from the
//! store's seeded generator), so ids are repeatable for a given seed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

pub(super) fn request_id() -> String {
    uuid(&mut fastrand::Rng::new())
}

pub(super) fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = rng.u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Ids are accepted with or without dashes, in any case.
pub(super) fn compact(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

pub(super) fn valid_id(id: &str) -> bool {
    let c = compact(id);
    c.len() == 32 && c.chars().all(|x| x.is_ascii_hexdigit())
}

pub(super) fn dashed(id: &str) -> String {
    let h = compact(id);
    if h.len() != 32 {
        return id.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn plain_text(items: &Value) -> String {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["plain_text"].as_str().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default()
}

/// Notion measures text limits in UTF-16 code units (JavaScript string length).
pub(super) fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}
