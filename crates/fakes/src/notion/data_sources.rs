//! Data sources (`GET /v1/data_sources/{id}`, `POST /v1/data_sources/{id}/query`): the schema
//! a data source shows, and the query with its filters, sorts and pagination.
//!
//! Invariants: a query sees only untrashed pages of its data source that the index has caught
//! up with (`indexed_at`), in the order of the sorts and then of creation; it refuses what
//! Notion refuses (page_size over 100, more than two levels of compound filters, a filter type
//! that is not the property's, a cursor from another query) and, as playlistd's own cap, more
//! than [`MAX_FILTER_CONDITIONS`] conditions; it returns at most the options' result cap and
//! then says `query_result_limit_reached`.

use super::properties::parse_date;
use super::reply::Reply;
use super::wire::{compact, plain_text, request_id};
use super::{DataSource, FakeNotion, FakeState, NO_ARCHIVED_VERSION, Page, PropKind};
use serde_json::{Map, Value, json};
use std::cmp::Ordering as CmpOrdering;
use std::time::Instant;

/// Conditions one query may hold. Notion documents no limit (reference/notion-api.md §10);
/// playlistd keeps to 100 and the fake refuses more, so a client that forgets is caught.
pub const MAX_FILTER_CONDITIONS: usize = 100;

impl FakeNotion {
    /// Renames a property of the tracks data source, as a user editing the schema would.
    pub fn rename_property(&self, old: &str, new: &str) {
        let mut s = self.state();
        let ds = s.databases[0].data_sources[0].clone();
        let i = s.ds_index(&ds).expect("tracks data source");
        if let Some(p) = s.data_sources[i].props.iter_mut().find(|p| p.name == old) {
            p.name = new.to_string();
        }
    }

    /// Select options currently defined on a property (auto-created ones included).
    pub fn select_options(&self, prop: &str) -> Vec<String> {
        let s = self.state();
        let ds = &s.data_sources[0];
        ds.props
            .iter()
            .find(|p| p.name == prop)
            .map(|p| p.options.iter().map(|o| o.1.clone()).collect())
            .unwrap_or_default()
    }
}

impl FakeState {
    pub(super) fn schema_json(&self, ds: &DataSource) -> Map<String, Value> {
        let mut props = Map::new();
        for p in &ds.props {
            let key = p.kind.key();
            let config = match &p.kind {
                PropKind::Select | PropKind::MultiSelect | PropKind::Status => json!({
                    "options": p.options.iter().map(|(id, name, color)| json!({"id": id, "name": name, "color": color, "description": null})).collect::<Vec<_>>()
                }),
                PropKind::Number => json!({"format": "number"}),
                PropKind::Relation(_) => {
                    let target = p.target.clone().unwrap_or_default();
                    let db = self
                        .ds_index(&target)
                        .map(|i| self.data_sources[i].database_id.clone());
                    json!({"data_source_id": target, "database_id": db, "type": "single_property", "single_property": {}})
                }
                PropKind::Formula => json!({"expression": ""}),
                _ => json!({}),
            };
            let mut obj = json!({"id": p.id, "name": p.name, "description": null, "type": key});
            obj[key] = config;
            props.insert(p.name.clone(), obj);
        }
        props
    }

    pub(super) fn get_data_source(&self, id: &str) -> Result<Reply, Reply> {
        let i = self.visible_ds(id)?;
        let ds = &self.data_sources[i];
        let title = json!([{"type": "text", "text": {"content": ds.name, "link": null}, "plain_text": ds.name, "href": null}]);
        Ok(Reply::ok(json!({
            "object": "data_source",
            "id": ds.id,
            "title": title,
            "description": [],
            "is_inline": false,
            "properties": Value::Object(self.schema_json(ds)),
            "parent": {"type": "database_id", "database_id": ds.database_id},
            "database_parent": {"type": "workspace", "workspace": true},
            "created_time": "2025-10-05T10:54:59.296+00:00",
            "last_edited_time": "2025-10-05T10:54:59.296+00:00",
            "icon": null,
            "cover": null,
            "url": format!("https://www.notion.so/{}", compact(&ds.database_id)),
            "public_url": null,
            "archived": false,
            "in_trash": false,
            "request_id": request_id(),
        })))
    }

    pub(super) fn query(&self, id: &str, body: &Map<String, Value>) -> Result<Reply, Reply> {
        let ds_i = self.visible_ds(id)?;
        let ds = &self.data_sources[ds_i];
        let page_size = match body.get("page_size") {
            None | Some(Value::Null) => 100,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if (1..=100).contains(&n) => n as usize,
                Some(n) if n > 100 => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.page_size should be ≤ `100`, instead was `{n}`."
                    )));
                }
                _ => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.page_size should be a positive integer, instead was `{n}`."
                    )));
                }
            },
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.page_size should be a number, instead was `{other}`."
                )));
            }
        };
        let filter = match body.get("filter") {
            None => None,
            Some(f) => {
                let n = filter_conditions(f);
                if n > MAX_FILTER_CONDITIONS {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.filter has {n} conditions, more than the {MAX_FILTER_CONDITIONS} allowed."
                    )));
                }
                Some(parse_filter(ds, f, 0, "body.filter")?)
            }
        };
        let sorts = parse_sorts(ds, body.get("sorts"))?;
        let now = Instant::now();
        let mut hits: Vec<&Page> = self
            .pages
            .iter()
            .filter(|p| !p.in_trash && compact(&p.data_source_id) == compact(&ds.id))
            .filter(|p| p.indexed_at <= now)
            .filter(|p| filter.as_ref().is_none_or(|f| f(p)))
            .collect();
        hits.sort_by(|a, b| {
            for s in &sorts {
                let o = s(a, b);
                if o != CmpOrdering::Equal {
                    return o;
                }
            }
            a.seq.cmp(&b.seq)
        });
        let capped = hits.len() > self.query_cap;
        hits.truncate(self.query_cap);
        let start = match body.get("start_cursor") {
            None => 0,
            Some(Value::String(c)) => {
                match hits.iter().position(|p| compact(&p.id) == compact(c)) {
                    Some(i) => i,
                    None => {
                        return Err(Reply::validation(format!(
                            "body failed validation: body.start_cursor `{c}` is not a valid cursor for this query."
                        )));
                    }
                }
            }
            Some(other) => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.start_cursor should be a string, instead was `{other}`."
                )));
            }
        };
        let end = (start + page_size).min(hits.len());
        let has_more = end < hits.len();
        let results: Vec<Value> = hits[start..end]
            .iter()
            .map(|p| self.page_json(p.seq, NO_ARCHIVED_VERSION))
            .collect();
        let mut v = json!({
            "object": "list",
            "results": results,
            "next_cursor": if has_more { json!(hits[end].id) } else { Value::Null },
            "has_more": has_more,
            "type": "page_or_data_source",
            "page_or_data_source": {},
            "request_id": request_id(),
        });
        if capped {
            v["request_status"] =
                json!({"type": "incomplete", "incomplete_reason": "query_result_limit_reached"});
        }
        Ok(Reply::ok(v))
    }
}

type Pred = Box<dyn Fn(&Page) -> bool + Send + Sync>;
type Cmp = Box<dyn Fn(&Page, &Page) -> CmpOrdering + Send + Sync>;

/// Leaf conditions in a filter (an `and`/`or` counts what it holds).
fn filter_conditions(f: &Value) -> usize {
    ["or", "and"]
        .iter()
        .find_map(|op| f.get(*op).and_then(Value::as_array))
        .map_or(1, |subs| subs.iter().map(filter_conditions).sum())
}

/// `depth` counts compound levels already entered; Notion allows two.
fn parse_filter(ds: &DataSource, f: &Value, depth: usize, path: &str) -> Result<Pred, Reply> {
    let obj = f.as_object().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path} should be an object, instead was `{f}`."
        ))
    })?;
    for op in ["or", "and"] {
        if let Some(list) = obj.get(op) {
            if depth >= 2 {
                return Err(Reply::validation(format!(
                    "body failed validation: {path}.{op} exceeds the maximum filter nesting depth of 2."
                )));
            }
            let arr = list.as_array().ok_or_else(|| {
                Reply::validation(format!(
                    "body failed validation: {path}.{op} should be an array."
                ))
            })?;
            let mut preds = Vec::new();
            for (i, sub) in arr.iter().enumerate() {
                preds.push(parse_filter(
                    ds,
                    sub,
                    depth + 1,
                    &format!("{path}.{op}[{i}]"),
                )?);
            }
            return Ok(if op == "or" {
                Box::new(move |p| preds.iter().any(|x| x(p)))
            } else {
                Box::new(move |p| preds.iter().all(|x| x(p)))
            });
        }
    }
    if let Some(t) = obj.get("timestamp").and_then(Value::as_str) {
        return timestamp_filter(obj, t, path);
    }
    property_filter(ds, obj, path)
}

/// A `{"timestamp": "created_time" | "last_edited_time", ...}` condition.
fn timestamp_filter(obj: &Map<String, Value>, t: &str, path: &str) -> Result<Pred, Reply> {
    if t != "created_time" && t != "last_edited_time" {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.timestamp should be `created_time` or `last_edited_time`, instead was `\"{t}\"`."
        )));
    }
    let cond = obj.get(t).and_then(Value::as_object).ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path}.{t} should be defined, instead was `undefined`."
        ))
    })?;
    let (op, val) = cond.iter().next().ok_or_else(|| {
        Reply::validation(format!("body failed validation: {path}.{t} is empty."))
    })?;
    let created = t == "created_time";
    let when = move |p: &Page| if created { p.created } else { p.edited };
    let bound = val.as_str().and_then(parse_date);
    match (op.as_str(), bound) {
        ("after", Some(b)) => Ok(Box::new(move |p| when(p) > b)),
        ("on_or_after", Some(b)) => Ok(Box::new(move |p| when(p) >= b)),
        ("before", Some(b)) => Ok(Box::new(move |p| when(p) < b)),
        ("on_or_before", Some(b)) => Ok(Box::new(move |p| when(p) <= b)),
        ("equals", Some(b)) => Ok(Box::new(move |p| when(p) == b)),
        _ => Err(Reply::validation(format!(
            "body failed validation: {path}.{t}.{op} is not a supported date condition or value `{val}`."
        ))),
    }
}

/// The filter type keys Notion knows; one of them names the condition of a property filter.
const FILTER_TYPES: [&str; 16] = [
    "title",
    "rich_text",
    "url",
    "email",
    "phone_number",
    "number",
    "checkbox",
    "select",
    "multi_select",
    "status",
    "date",
    "relation",
    "files",
    "people",
    "formula",
    "unique_id",
];

/// A `{"property": name, "<type>": {"<op>": value}}` condition: checks its shape against the
/// property, then builds the predicate for the property's kind.
fn property_filter(ds: &DataSource, obj: &Map<String, Value>, path: &str) -> Result<Pred, Reply> {
    let Some(name) = obj.get("property").and_then(Value::as_str) else {
        return Err(Reply::validation(format!(
            "body failed validation: {path} should have `property`, `timestamp`, `or` or `and`."
        )));
    };
    let Some(prop) = ds.props.iter().find(|p| p.name == name || p.id == name) else {
        return Err(Reply::validation(format!(
            "Could not find property with name or id: {name}"
        )));
    };
    let Some(used) = FILTER_TYPES.iter().find(|k| obj.contains_key(**k)) else {
        return Err(Reply::validation(format!(
            "body failed validation: {path} should define a filter condition for property {name}."
        )));
    };
    let key = prop.kind.key();
    if *used != key {
        return Err(Reply::validation(format!(
            "body failed validation: the filter on property \"{name}\" uses type `{used}`, but the property is of type `{key}`."
        )));
    }
    let cond = obj[*used].as_object().ok_or_else(|| {
        Reply::validation(format!(
            "body failed validation: {path}.{used} should be an object."
        ))
    })?;
    if cond.len() != 1 {
        return Err(Reply::validation(format!(
            "body failed validation: {path}.{used} should have exactly one condition."
        )));
    }
    let (op, val) = cond.iter().next().expect("one condition");
    let bad = || {
        Reply::validation(format!(
            "body failed validation: {path}.{used}.{op} is not valid for a {key} filter (value `{val}`)."
        ))
    };
    let pid = prop.id.clone();
    let pred = match &prop.kind {
        PropKind::Title | PropKind::RichText | PropKind::Url | PropKind::Email => {
            text_condition(pid, op, val)
        }
        PropKind::Number => number_condition(pid, op, val),
        PropKind::Checkbox => checkbox_condition(pid, op, val),
        PropKind::Select | PropKind::Status => select_condition(pid, op, val),
        PropKind::MultiSelect | PropKind::Relation(_) => {
            let relation = matches!(prop.kind, PropKind::Relation(_));
            list_condition(pid, relation, op, val)
        }
        _ => {
            return Err(Reply::validation(format!(
                "body failed validation: filtering on {key} properties is not supported by the fake."
            )));
        }
    };
    pred.ok_or_else(bad)
}

/// A page's stored value of the property `pid` (null when unset).
fn value_of(pid: String) -> impl Fn(&Page) -> Value + Send + Sync + 'static {
    move |p: &Page| p.props.get(&pid).cloned().unwrap_or(Value::Null)
}

/// Title, rich text, URL and email conditions (`None`: not valid for these types).
fn text_condition(pid: String, op: &str, val: &Value) -> Option<Pred> {
    let get = value_of(pid);
    let text_of = move |p: &Page| -> String {
        let v = get(p);
        match v {
            Value::String(s) => s,
            Value::Array(_) => plain_text(&v),
            _ => String::new(),
        }
    };
    let s = val.as_str().map(str::to_string);
    let lower = s.clone().map(|x| x.to_lowercase());
    Some(match (op, s, lower) {
        ("equals", Some(s), _) => Box::new(move |p| text_of(p) == s),
        ("does_not_equal", Some(s), _) => Box::new(move |p| text_of(p) != s),
        ("contains", _, Some(l)) => Box::new(move |p| text_of(p).to_lowercase().contains(&l)),
        ("does_not_contain", _, Some(l)) => {
            Box::new(move |p| !text_of(p).to_lowercase().contains(&l))
        }
        ("starts_with", _, Some(l)) => Box::new(move |p| text_of(p).to_lowercase().starts_with(&l)),
        ("ends_with", _, Some(l)) => Box::new(move |p| text_of(p).to_lowercase().ends_with(&l)),
        ("is_empty", ..) if val == &json!(true) => Box::new(move |p| text_of(p).is_empty()),
        ("is_not_empty", ..) if val == &json!(true) => Box::new(move |p| !text_of(p).is_empty()),
        _ => return None,
    })
}

fn number_condition(pid: String, op: &str, val: &Value) -> Option<Pred> {
    let get = value_of(pid);
    let n = val.as_f64();
    let num = move |p: &Page| get(p).as_f64();
    Some(match (op, n) {
        ("equals", Some(n)) => Box::new(move |p| num(p) == Some(n)),
        ("does_not_equal", Some(n)) => Box::new(move |p| num(p) != Some(n)),
        ("greater_than", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x > n)),
        ("less_than", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x < n)),
        ("greater_than_or_equal_to", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x >= n)),
        ("less_than_or_equal_to", Some(n)) => Box::new(move |p| num(p).is_some_and(|x| x <= n)),
        ("is_empty", _) => Box::new(move |p| num(p).is_none()),
        ("is_not_empty", _) => Box::new(move |p| num(p).is_some()),
        _ => return None,
    })
}

fn checkbox_condition(pid: String, op: &str, val: &Value) -> Option<Pred> {
    let get = value_of(pid);
    let b = val.as_bool()?;
    let cb = move |p: &Page| get(p).as_bool().unwrap_or(false);
    Some(match op {
        "equals" => Box::new(move |p| cb(p) == b),
        "does_not_equal" => Box::new(move |p| cb(p) != b),
        _ => return None,
    })
}

fn select_condition(pid: String, op: &str, val: &Value) -> Option<Pred> {
    let get = value_of(pid);
    let s = val.as_str().map(str::to_string);
    let sel = move |p: &Page| get(p)["name"].as_str().map(str::to_string);
    Some(match (op, s) {
        ("equals", Some(s)) => Box::new(move |p| sel(p).as_deref() == Some(s.as_str())),
        ("does_not_equal", Some(s)) => Box::new(move |p| sel(p).as_deref() != Some(s.as_str())),
        ("is_empty", _) => Box::new(move |p| sel(p).is_none()),
        ("is_not_empty", _) => Box::new(move |p| sel(p).is_some()),
        _ => return None,
    })
}

/// Multi-select (by option name) and relation (by page id, dashes and case ignored) conditions.
fn list_condition(pid: String, relation: bool, op: &str, val: &Value) -> Option<Pred> {
    let get = value_of(pid);
    let field = if relation { "id" } else { "name" };
    let norm = move |s: &str| if relation { compact(s) } else { s.to_string() };
    let items = move |p: &Page| -> Vec<String> {
        get(p)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x[field].as_str().map(norm))
                    .collect()
            })
            .unwrap_or_default()
    };
    let s = val.as_str().map(norm);
    Some(match (op, s) {
        ("contains", Some(s)) => Box::new(move |p| items(p).contains(&s)),
        ("does_not_contain", Some(s)) => Box::new(move |p| !items(p).contains(&s)),
        ("is_empty", _) => Box::new(move |p| items(p).is_empty()),
        ("is_not_empty", _) => Box::new(move |p| !items(p).is_empty()),
        _ => return None,
    })
}

fn parse_sorts(ds: &DataSource, sorts: Option<&Value>) -> Result<Vec<Cmp>, Reply> {
    let Some(sorts) = sorts else {
        return Ok(vec![]);
    };
    let arr = sorts.as_array().ok_or_else(|| {
        Reply::validation("body failed validation: body.sorts should be an array.")
    })?;
    let mut out: Vec<Cmp> = Vec::new();
    for (i, s) in arr.iter().enumerate() {
        let desc = match s["direction"].as_str() {
            Some("ascending") => false,
            Some("descending") => true,
            _ => {
                return Err(Reply::validation(format!(
                    "body failed validation: body.sorts[{i}].direction should be `ascending` or `descending`."
                )));
            }
        };
        let base: Cmp = if let Some(t) = s["timestamp"].as_str() {
            match t {
                "created_time" => Box::new(|a: &Page, b: &Page| a.created.cmp(&b.created)),
                "last_edited_time" => Box::new(|a: &Page, b: &Page| a.edited.cmp(&b.edited)),
                _ => {
                    return Err(Reply::validation(format!(
                        "body failed validation: body.sorts[{i}].timestamp `{t}` is not supported."
                    )));
                }
            }
        } else if let Some(name) = s["property"].as_str() {
            let Some(prop) = ds.props.iter().find(|p| p.name == name || p.id == name) else {
                return Err(Reply::validation(format!(
                    "Could not find sort property with name or id: {name}"
                )));
            };
            let pid = prop.id.clone();
            let key = move |p: &Page| -> (Option<f64>, String) {
                let v = p.props.get(&pid).cloned().unwrap_or(Value::Null);
                match &v {
                    Value::Number(n) => (n.as_f64(), String::new()),
                    Value::String(s) => (None, s.clone()),
                    Value::Array(_) => (None, plain_text(&v)),
                    _ => (None, v["name"].as_str().unwrap_or("").to_string()),
                }
            };
            Box::new(move |a: &Page, b: &Page| {
                let (ka, kb) = (key(a), key(b));
                ka.0.partial_cmp(&kb.0)
                    .unwrap_or(CmpOrdering::Equal)
                    .then_with(|| ka.1.cmp(&kb.1))
            })
        } else {
            return Err(Reply::validation(format!(
                "body failed validation: body.sorts[{i}] should have `property` or `timestamp`."
            )));
        };
        out.push(if desc {
            Box::new(move |a: &Page, b: &Page| base(b, a))
        } else {
            base
        });
    }
    Ok(out)
}
