//! The JSON webhook receiver (`/hook/<name>`). There is no one real webhook service: this is the
//! common contract of JSON webhook receivers. `POST` only (405 otherwise, with `Allow: POST`),
//! `Content-Type: application/json` and a body that parses as JSON (400 otherwise); the answer
//! is 200 `{"ok":true}`, and the parsed body is recorded in [`Received::json`].
//!
//! [`Received::json`]: super::Received::json

use super::{Answer, Incoming, Reply};
use axum::http::Method;
use serde_json::{Value, json};

pub(super) fn webhook(req: &Incoming) -> Answer {
    let refuse =
        |status: u16, why: &str| Answer::refuse(Reply::json(status, &json!({ "error": why })), why);
    let name = req.path.strip_prefix("/hook/").unwrap_or("");
    if name.is_empty() {
        return refuse(404, "no webhook name in the path (/hook/<name>)");
    }
    if req.method != Method::POST {
        let mut a = refuse(405, "webhooks take POST only");
        a.reply = a.reply.with_header("allow", "POST");
        return a;
    }
    let content_type = req.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return refuse(
            400,
            &format!("Content-Type must be application/json, was {content_type:?}"),
        );
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => Answer {
            json: Some(v),
            ..Answer::accept(Reply::json(200, &json!({ "ok": true })))
        },
        Err(e) => refuse(400, &format!("the body is not JSON: {e}")),
    }
}
