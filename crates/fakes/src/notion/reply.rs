//! Notion's answers: the JSON error object (`object: "error"`, `status`, `code`, `message`,
//! `request_id`, and `additional_data` where the real one has it), and the answers of the
//! injectable faults (5xx with Notion's codes, 429 with and without `Retry-After`, 529, the
//! Cloudflare HTML 502).
//!
//! Invariant: every answer carries an `x-notion-request-id` header, faulted ones included.

use super::Fault;
use super::wire::request_id;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A finished answer: status, JSON body, extra headers.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            headers: vec![],
        }
    }
    pub(super) fn err(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::err_with(status, code, message, None)
    }
    pub(super) fn err_with(
        status: u16,
        code: &str,
        message: impl Into<String>,
        additional: Option<Value>,
    ) -> Reply {
        let mut body = json!({
            "object": "error",
            "status": status,
            "code": code,
            "message": message.into(),
            "request_id": request_id(),
        });
        if let Some(a) = additional {
            body["additional_data"] = a;
        }
        Reply {
            status,
            body,
            headers: vec![],
        }
    }
    pub(super) fn validation(message: impl Into<String>) -> Reply {
        Reply::err(400, "validation_error", message)
    }
    pub(super) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub(super) fn fault_reply(fault: &Fault) -> Option<Reply> {
    Some(match fault {
        Fault::Status(500) => {
            Reply::err(500, "internal_server_error", "Unexpected error occurred.")
        }
        Fault::Status(502) => Reply::err(502, "bad_gateway", "Bad Gateway"),
        Fault::Status(503) => Reply::err(
            503,
            "service_unavailable",
            "Public API service is temporarily unavailable, please try again later.",
        ),
        Fault::Status(504) => Reply::err(504, "gateway_timeout", "Gateway Timeout"),
        Fault::Status(409) => Reply::err(
            409,
            "conflict_error",
            "Conflict occurred while saving. Please try again.",
        ),
        Fault::Status(429) => rate_limited(1, "public_api_request_rate_limit"),
        Fault::Status(529) => overloaded(1),
        Fault::Status(400) => Reply::err(
            400,
            "validation_error",
            "body failed validation: body.properties.Title.title[0].text.content.length should be ≤ `2000`, instead was `2088`.",
        ),
        Fault::Status(other) => Reply::err(
            *other,
            "internal_server_error",
            "Unexpected error occurred.",
        ),
        Fault::RateLimited { retry_after_secs } => {
            rate_limited(*retry_after_secs, "public_api_request_rate_limit")
        }
        Fault::Blocked => {
            let mut r = Reply::err_with(
                429,
                "rate_limited",
                "You have been rate limited. Please try again in a few minutes.",
                Some(json!({"rate_limit_reason": "public_api_request_blocked"})),
            );
            r.headers.clear();
            r
        }
        Fault::Overloaded { retry_after_secs } => overloaded(*retry_after_secs),
        _ => return None,
    })
}

fn rate_limited(secs: u64, reason: &str) -> Reply {
    let mut r = Reply::err_with(
        429,
        "rate_limited",
        "You have been rate limited. Please try again in a few minutes.",
        Some(json!({"rate_limit_reason": reason, "retry_after": secs.to_string()})),
    );
    r.headers.push(("retry-after", secs.to_string()));
    r
}

fn overloaded(secs: u64) -> Reply {
    let mut r = Reply::err_with(
        529,
        "service_overload",
        "Notion is temporarily overloaded. Please try again later.",
        Some(json!({"retry_after": secs.to_string()})),
    );
    r.headers.push(("retry-after", secs.to_string()));
    r
}

pub(super) fn to_response(r: Reply) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(r.body),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-notion-request-id",
        axum::http::HeaderValue::from_str(&request_id()).expect("uuid header"),
    );
    for (k, v) in r.headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

pub(super) fn cloudflare_html() -> Response {
    let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";
    Response::builder()
        .status(502)
        .header("content-type", "text/html")
        .header("server", "cloudflare")
        .header("cf-ray", "8f0e1d2c3b4a5968-FRA")
        .body(Body::from(body))
        .expect("static response")
}
