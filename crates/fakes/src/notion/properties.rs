//! Page property values: what a write may put in each property type, checked as Notion checks
//! it (reference/notion-api.md §3.1: text of at most 2,000 UTF-16 units, at most 100 array items,
//! select names without commas, existing status options, relations into the related data
//! source, external file URLs), and the options a select write creates.
//!
//! Invariant: checking never changes the store. New select options are only collected while a
//! write is checked and added (`add_options`) once the whole write is known to be valid, so a
//! write with one bad property changes nothing.

use super::reply::Reply;
use super::wire::{compact, dashed, js_len, uuid, valid_id};
use super::{FakeState, PropKind, PropSchema};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

const COLORS: [&str; 9] = [
    "default", "gray", "brown", "orange", "yellow", "green", "blue", "purple", "pink",
];

impl FakeState {
    /// Auto-created select options get their ids here, once the whole write is known to be valid.
    pub(super) fn add_options(
        &mut self,
        ds_i: usize,
        new_options: Vec<(String, String)>,
        values: &mut HashMap<String, Value>,
    ) {
        for (pid, name) in new_options {
            let color = COLORS[self.rng.usize(..COLORS.len())].to_string();
            let oid = uuid(&mut self.rng);
            if let Some(p) = self.data_sources[ds_i]
                .props
                .iter_mut()
                .find(|p| p.id == pid)
                && !p.options.iter().any(|o| o.1 == name)
            {
                p.options.push((oid, name.clone(), color));
            }
        }
        // Fill option ids and colors into the stored values.
        let ds = &self.data_sources[ds_i];
        for (pid, v) in values.iter_mut() {
            let Some(p) = ds.props.iter().find(|p| &p.id == pid) else {
                continue;
            };
            let fill = |o: &mut Value| {
                if let Some(name) = o["name"].as_str()
                    && let Some(opt) = p.options.iter().find(|x| x.1 == name)
                {
                    *o = json!({"id": opt.0, "name": opt.1, "color": opt.2});
                }
            };
            match p.kind {
                PropKind::Select | PropKind::Status if v.is_object() => fill(v),
                PropKind::MultiSelect => {
                    if let Some(a) = v.as_array_mut() {
                        a.iter_mut().for_each(fill);
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn check_props(
        &self,
        ds_i: usize,
        props: &Map<String, Value>,
        out: &mut HashMap<String, Value>,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<(), Reply> {
        let ds = &self.data_sources[ds_i];
        for (key, value) in props {
            let Some(prop) = ds.props.iter().find(|p| &p.name == key || &p.id == key) else {
                return Err(Reply::validation(format!(
                    "{key} is not a property that exists."
                )));
            };
            let v = self.check_value(prop, value, new_options)?;
            out.insert(prop.id.clone(), v);
        }
        Ok(())
    }

    fn check_value(
        &self,
        prop: &PropSchema,
        value: &Value,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<Value, Reply> {
        let name = &prop.name;
        let key = prop.kind.key();
        let path = format!("body.properties.{name}.{key}");
        let inner = match value.as_object().and_then(|o| o.get(key)) {
            Some(v) => v,
            None => {
                return Err(Reply::validation(format!(
                    "body failed validation. Fix one: {path} should be defined, instead was `undefined`."
                )));
            }
        };
        let bad = |what: &str| {
            Reply::validation(format!(
                "body failed validation: {path} {what}, instead was `{inner}`."
            ))
        };
        match &prop.kind {
            PropKind::Title | PropKind::RichText => check_rich_text(inner, &path),
            PropKind::Url | PropKind::Email => match inner {
                Value::Null => Ok(Value::Null),
                Value::String(s) if s.is_empty() => {
                    Err(bad("should be a non-empty string or `null`"))
                }
                Value::String(s) if js_len(s) > 2000 => Err(too_long(&path, 2000, js_len(s))),
                Value::String(_) => Ok(inner.clone()),
                _ => Err(bad("should be a string or `null`")),
            },
            PropKind::Number => match inner {
                Value::Null | Value::Number(_) => Ok(inner.clone()),
                _ => Err(bad("should be a number or `null`")),
            },
            PropKind::Checkbox => match inner {
                Value::Bool(_) => Ok(inner.clone()),
                _ => Err(bad("should be a boolean")),
            },
            PropKind::Select | PropKind::Status => {
                if inner.is_null() {
                    return Ok(Value::Null);
                }
                self.check_option(prop, inner, &path, new_options)
            }
            PropKind::MultiSelect => {
                let arr = at_most_100(inner, &path)?;
                let mut out = Vec::new();
                for (i, o) in arr.iter().enumerate() {
                    out.push(self.check_option(prop, o, &format!("{path}[{i}]"), new_options)?);
                }
                Ok(Value::Array(out))
            }
            PropKind::Relation(_) => self.check_relation(prop, inner, &path),
            PropKind::Files => {
                let arr = inner.as_array().ok_or_else(|| bad("should be an array"))?;
                check_files(arr, &path)
            }
            PropKind::Date => {
                if inner.is_null() {
                    return Ok(Value::Null);
                }
                let start = inner["start"]
                    .as_str()
                    .ok_or_else(|| bad("should have a `start` date"))?;
                if parse_date(start).is_none() {
                    return Err(bad("should have an ISO 8601 `start`"));
                }
                Ok(
                    json!({"start": start, "end": inner.get("end").cloned().unwrap_or(Value::Null), "time_zone": null}),
                )
            }
            PropKind::CreatedTime | PropKind::Formula => Err(Reply::validation(format!(
                "body failed validation: {path} is a read-only property and cannot be written."
            ))),
        }
    }

    /// A relation value: valid page ids of pages the integration sees, in the related data
    /// source, at most 100 in one write.
    fn check_relation(&self, prop: &PropSchema, inner: &Value, path: &str) -> Result<Value, Reply> {
        let arr = at_most_100(inner, path)?;
        let mut out = Vec::new();
        for (i, r) in arr.iter().enumerate() {
            let Some(id) = r["id"].as_str().filter(|id| valid_id(id)) else {
                return Err(Reply::validation(format!(
                    "body failed validation: {path}[{i}].id should be a valid uuid, instead was `{}`.",
                    r["id"]
                )));
            };
            let pi = self.visible_page(id)?;
            let target = prop.target.as_deref().unwrap_or("");
            if compact(&self.pages[pi].data_source_id) != compact(target) {
                return Err(Reply::validation(format!(
                    "Relation page {} is not in the related data source {}.",
                    dashed(id),
                    target
                )));
            }
            out.push(json!({"id": self.pages[pi].id}));
        }
        Ok(Value::Array(out))
    }

    fn check_option(
        &self,
        prop: &PropSchema,
        o: &Value,
        path: &str,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<Value, Reply> {
        if let Some(id) = o.get("id").and_then(Value::as_str) {
            return match prop.options.iter().find(|x| x.0 == id) {
                Some(x) => Ok(json!({"id": x.0, "name": x.1, "color": x.2})),
                None => Err(Reply::validation(format!(
                    "body failed validation: {path}.id `{id}` is not an existing option."
                ))),
            };
        }
        let Some(name) = o.get("name").and_then(Value::as_str) else {
            return Err(Reply::validation(format!(
                "body failed validation: {path}.name should be defined, instead was `undefined`."
            )));
        };
        let name = name.trim();
        if name.contains(',') {
            return Err(Reply::validation(format!(
                "Invalid select option, commas not allowed: {name}"
            )));
        }
        if name.is_empty() {
            return Err(Reply::validation(format!(
                "body failed validation: {path}.name should be a non-empty string."
            )));
        }
        if js_len(name) > 100 {
            return Err(too_long(&format!("{path}.name"), 100, js_len(name)));
        }
        if let Some(x) = prop.options.iter().find(|x| x.1 == name) {
            return Ok(json!({"id": x.0, "name": x.1, "color": x.2}));
        }
        if prop.kind == PropKind::Status {
            return Err(Reply::validation(format!("Invalid status option: {name}")));
        }
        if !new_options
            .iter()
            .any(|(pid, n)| pid == &prop.id && n == name)
        {
            new_options.push((prop.id.clone(), name.to_string()));
        }
        Ok(json!({"name": name}))
    }
}

pub(super) fn empty_value(kind: &PropKind) -> Value {
    match kind {
        PropKind::Title
        | PropKind::RichText
        | PropKind::MultiSelect
        | PropKind::Relation(_)
        | PropKind::Files => json!([]),
        PropKind::Checkbox => json!(false),
        _ => Value::Null,
    }
}

/// Notion's answer to a value over its length limit.
fn too_long(path: &str, max: usize, was: usize) -> Reply {
    Reply::validation(format!(
        "body failed validation: {path}.length should be ≤ `{max}`, instead was `{was}`."
    ))
}

/// An array in a property value: Notion takes at most 100 items.
fn at_most_100<'a>(inner: &'a Value, path: &str) -> Result<&'a Vec<Value>, Reply> {
    let arr = inner.as_array().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path} should be an array, instead was `{inner}`."
        ))
    })?;
    if arr.len() > 100 {
        return Err(too_long(path, 100, arr.len()));
    }
    Ok(arr)
}

fn check_rich_text(inner: &Value, path: &str) -> Result<Value, Reply> {
    let arr = at_most_100(inner, path)?;
    let mut out = Vec::new();
    for (i, item) in arr.iter().enumerate() {
        let Some(content) = item["text"]["content"].as_str() else {
            return Err(Reply::validation(format!(
                "body failed validation: {path}[{i}].text.content should be defined, instead was `undefined`."
            )));
        };
        if js_len(content) > 2000 {
            return Err(too_long(
                &format!("{path}[{i}].text.content"),
                2000,
                js_len(content),
            ));
        }
        let link = item["text"].get("link").cloned().unwrap_or(Value::Null);
        out.push(json!({
            "type": "text",
            "text": {"content": content, "link": link},
            "annotations": {"bold": false, "italic": false, "strikethrough": false, "underline": false, "code": false, "color": "default"},
            "plain_text": content,
            "href": link.get("url").cloned().unwrap_or(Value::Null),
        }));
    }
    Ok(Value::Array(out))
}

/// A files value: named external files (uploads are out of scope for the fake).
fn check_files(arr: &[Value], path: &str) -> Result<Value, Reply> {
    let mut out = Vec::new();
    for (i, f) in arr.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if f.get("external").is_some() && f["name"].as_str().is_none() {
            return Err(Reply::validation(format!(
                "body failed validation: {p}.name should be defined, instead was `undefined`."
            )));
        }
        let checked = check_file_object(f, &p)?;
        let mut c = checked;
        c["name"] = f["name"].clone();
        out.push(c);
    }
    Ok(Value::Array(out))
}

/// `cover` and `files[]` entries: external URLs only (uploads are out of scope for the fake).
pub(super) fn check_file_object(v: &Value, path: &str) -> Result<Value, Reply> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let Some(url) = v["external"]["url"].as_str() else {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.external.url should be defined, instead was `undefined`."
        )));
    };
    if url.is_empty() || url::Url::parse(url).is_err() {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.external.url should be a valid URL, instead was `\"{url}\"`."
        )));
    }
    if js_len(url) > 2000 {
        return Err(too_long(&format!("{path}.external.url"), 2000, js_len(url)));
    }
    Ok(json!({"type": "external", "external": {"url": url}}))
}

pub(super) fn check_icon(v: &Value) -> Result<Value, Reply> {
    if let Some(e) = v.get("emoji").and_then(Value::as_str) {
        return Ok(json!({"type": "emoji", "emoji": e}));
    }
    check_file_object(v, "icon")
}

pub(super) fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}
