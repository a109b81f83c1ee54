//! Property values in the shapes Notion accepts, within its limits (reference/notion-api.md §3).
//!
//! Invariants, so that a write is never refused for its shape:
//! - rich text is split into items of ≤ 2000 UTF-16 units, at most 100 items, with control
//!   characters removed (they are invisible in Notion and break title matching);
//! - URLs longer than 2000 characters, and empty strings, are never sent (Notion refuses `""`);
//! - select option names contain no commas and are ≤ 100 characters.

use super::schema::{PropType, Property};
use serde_json::{Value, json};

const MAX_TEXT: usize = 2000;
const MAX_ITEMS: usize = 100;
const MAX_OPTION: usize = 100;

/// A value for one role, before it is shaped for the property's type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Text(String),
    Number(f64),
    Bool(bool),
    /// Option names (multi_select / select / rich_text list).
    Names(Vec<String>),
    /// Related page ids.
    Pages(Vec<String>),
}

/// Control characters removed, whitespace runs kept as typed (only trimmed at the ends).
pub(crate) fn clean_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Rich text items of ≤ 2000 UTF-16 units each, never splitting a character.
pub(crate) fn rich_text(s: &str) -> Value {
    let s = clean_text(s);
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut units = 0;
    for c in s.chars() {
        let n = c.len_utf16();
        if units + n > MAX_TEXT {
            items.push(std::mem::take(&mut cur));
            units = 0;
        }
        cur.push(c);
        units += n;
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items.truncate(MAX_ITEMS);
    Value::Array(
        items
            .into_iter()
            .map(|t| json!({"type": "text", "text": {"content": t}}))
            .collect(),
    )
}

/// A select option name Notion accepts: commas become " /", whitespace collapsed, ≤ 100 chars.
pub(crate) fn option_name(s: &str) -> Option<String> {
    let s = clean_text(s).replace(',', " /");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut units = 0;
    for c in s.chars() {
        if units + c.len_utf16() > MAX_OPTION {
            break;
        }
        units += c.len_utf16();
        out.push(c);
    }
    let out = out.trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// A URL value, or `None` when it is empty or too long to store.
pub(crate) fn url(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s.encode_utf16().count() <= MAX_TEXT).then(|| s.to_string())
}

/// Shapes `v` for `prop`. `None` means "nothing to write" (empty text, unusable URL...).
pub(crate) fn encode(prop: &Property, v: &Val) -> Option<Value> {
    let key = prop.kind.key().to_string();
    let inner = match (&prop.kind, v) {
        (PropType::Title | PropType::RichText, Val::Text(s)) => {
            let items = rich_text(s);
            if items.as_array().is_some_and(|a| a.is_empty()) {
                return None;
            }
            items
        }
        (PropType::Title | PropType::RichText, Val::Names(n)) => {
            return encode(prop, &Val::Text(n.join(", ")));
        }
        (PropType::Title | PropType::RichText, Val::Number(n)) => {
            return encode(prop, &Val::Text(format_number(*n)));
        }
        (PropType::Url, Val::Text(s)) => json!(url(s)?),
        (PropType::Number, Val::Number(n)) => json!(n),
        (PropType::Number, Val::Text(s)) => json!(s.trim().parse::<f64>().ok()?),
        (PropType::Checkbox, Val::Bool(b)) => json!(b),
        (PropType::Select, Val::Text(s)) => json!({"name": option_name(s)?}),
        (PropType::Select, Val::Names(n)) => json!({"name": option_name(n.first()?)?}),
        (PropType::MultiSelect, Val::Text(s)) => {
            // A genre like "Rock, Pop" is two options, not one refused name.
            let names: Vec<String> = s.split(',').filter_map(option_name).collect();
            return encode(prop, &Val::Names(names));
        }
        (PropType::MultiSelect, Val::Names(n)) => {
            let mut names: Vec<String> = Vec::new();
            for x in n.iter().filter_map(|x| option_name(x)) {
                if !names.contains(&x) {
                    names.push(x);
                }
            }
            names.truncate(MAX_ITEMS);
            Value::Array(names.into_iter().map(|n| json!({"name": n})).collect())
        }
        (PropType::Relation, Val::Pages(ids)) => {
            let mut ids = ids.clone();
            ids.truncate(MAX_ITEMS);
            Value::Array(ids.into_iter().map(|id| json!({"id": id})).collect())
        }
        _ => return None,
    };
    let mut obj = serde_json::Map::new();
    obj.insert(key, inner);
    Some(Value::Object(obj))
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// Plain text of a title / rich_text value in a page object.
pub(crate) fn plain_text(items: &Value) -> String {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    i["plain_text"]
                        .as_str()
                        .or_else(|| i["text"]["content"].as_str())
                        .unwrap_or("")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a page property as text, whatever its type (url, rich_text, number...).
pub(crate) fn as_text(prop_value: &Value) -> Option<String> {
    let kind = prop_value["type"].as_str()?;
    let v = &prop_value[kind];
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map(format_number)?,
        Value::Array(_) => plain_text(v),
        Value::Object(o) => o.get("name").and_then(Value::as_str)?.to_string(),
        Value::Bool(b) => b.to_string(),
    };
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(kind: PropType) -> Property {
        Property {
            name: "P".into(),
            id: "p".into(),
            kind,
            relation_data_source: None,
            relation_database: None,
        }
    }

    #[test]
    fn long_text_is_chunked_and_capped() {
        let s = "é".repeat(4500) + "\u{7}";
        let v = rich_text(&s);
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0]["text"]["content"].as_str().unwrap().chars().count(),
            2000
        );
        assert!(!a[2]["text"]["content"].as_str().unwrap().contains('\u{7}'));
        assert_eq!(
            rich_text(&"x".repeat(300_000)).as_array().unwrap().len(),
            100
        );
        // Astral characters count twice in Notion's limit and are never split.
        let emoji = "🎵".repeat(1500);
        let a = rich_text(&emoji);
        assert_eq!(
            a[0]["text"]["content"].as_str().unwrap().chars().count(),
            1000
        );
    }

    #[test]
    fn select_names_and_urls() {
        assert_eq!(option_name("Rock, Pop").as_deref(), Some("Rock / Pop"));
        assert_eq!(option_name(&"a".repeat(150)).unwrap().len(), 100);
        assert_eq!(option_name("  "), None);
        assert_eq!(url(""), None);
        assert_eq!(url(&"h".repeat(2001)), None);
        let ms = encode(
            &prop(PropType::MultiSelect),
            &Val::Text("Rock, Pop, Rock".into()),
        )
        .unwrap();
        assert_eq!(
            ms,
            json!({"multi_select": [{"name": "Rock"}, {"name": "Pop"}]})
        );
        assert_eq!(encode(&prop(PropType::Url), &Val::Text("".into())), None);
        assert_eq!(
            encode(&prop(PropType::RichText), &Val::Number(42.0)).unwrap()["rich_text"][0]["text"]
                ["content"],
            "42"
        );
    }
}
