//! The healthchecks receiver (`/hc/…`), as hc/api/urls.py and hc/api/views.py `ping` and the
//! "Pinging API" docs have it: `/<uuid>`, `/<uuid>/`, `/<uuid>/start`, `/fail`, `/log` and
//! `/<exit status>`; the uuid must be Django's `<uuid:>` (lowercase canonical form) or no route
//! matches (404, Django's own page); an unknown check is 404 `not found`; an exit status over
//! 255 is 400 `invalid url format`; a `rid` that is not a UUID is 400 `invalid uuid format`; any
//! method pings; the first 100,000 bytes of the body are kept (healthchecks.io's limit, see
//! "Attaching logs"; a self-hosted instance keeps 10,000 by default); the answer is `OK` with
//! `Ping-Body-Limit`. The checks that exist are the shared state's, so a test can add one.

use super::{Answer, Incoming, Ping, Reply, Shared, Signal};

/// Django's answer when no URL pattern matches: `page_not_found`'s own page (django/views/
/// defaults.py), as healthchecks has no 404.html template.
const DJANGO_NOT_FOUND: &str = "\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n";

/// Django's `<uuid:>` converter: lowercase canonical form only.
fn django_uuid(s: &str) -> bool {
    canonical_uuid(s, false)
}

/// `8-4-4-4-12` hex digits; upper case too when `any_case` (healthchecks' `rid` check).
fn canonical_uuid(s: &str, any_case: bool) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => {
                c.is_ascii_digit()
                    || (b'a'..=b'f').contains(&c)
                    || (any_case && (b'A'..=b'F').contains(&c))
            }
        })
}

/// The signal of the part after the uuid: `Err` when no URL pattern matches, `Ok(Err(n))` for
/// an exit status over 255.
fn hc_signal(suffix: Option<&str>) -> Result<Result<Signal, u128>, ()> {
    Ok(Ok(match suffix {
        None | Some("") => Signal::Success,
        Some("start") => Signal::Start,
        Some("fail") => Signal::Fail,
        Some("log") => Signal::Log,
        Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
            let n = d.parse::<u128>().unwrap_or(u128::MAX);
            match u8::try_from(n) {
                Ok(n) => Signal::Exit(n),
                Err(_) => return Ok(Err(n)),
            }
        }
        Some(_) => return Err(()),
    }))
}

/// healthchecks' `ping` view behind hc/api/urls.py's routes: the check, then the exit status,
/// then `rid`.
pub(super) fn healthchecks(shared: &Shared, req: &Incoming) -> Answer {
    let no_route = |why: &str| Answer::refuse(Reply::text(404, "text/html", DJANGO_NOT_FOUND), why);
    let rest = req.path.strip_prefix("/hc/").unwrap_or("");
    let (uuid, suffix) = match rest.split_once('/') {
        Some((u, s)) => (u, Some(s)),
        None => (rest, None),
    };
    if !django_uuid(uuid) {
        return no_route(&format!("{uuid:?} is not a lowercase canonical UUID"));
    }
    let Ok(signal) = hc_signal(suffix) else {
        return no_route(&format!("no ping route {}", req.path));
    };
    let limit = shared.ping_body_limit;
    let rid = req.query_values("rid").pop();
    let ping = Ping {
        uuid: uuid.to_string(),
        signal: *signal.as_ref().unwrap_or(&Signal::Fail),
        rid: rid.clone(),
        stored_body: req.body[..req.body.len().min(limit)].to_vec(),
        truncated: req.body.len() > limit,
    };
    let text = |status: u16, body: &str| Reply::text(status, "text/html; charset=utf-8", body);
    let refused = |reply: Reply, why: String| Answer {
        ping: Some(ping.clone()),
        ..Answer::refuse(reply, why)
    };
    if !shared.lock().checks.contains(uuid) {
        return refused(text(404, "not found"), format!("no check {uuid}"));
    }
    if let Err(n) = signal {
        return refused(
            text(400, "invalid url format"),
            format!("exit status {n} > 255"),
        );
    }
    if let Some(r) = rid.filter(|r| !canonical_uuid(r, true)) {
        return refused(
            text(400, "invalid uuid format"),
            format!("rid {r:?} is not a UUID"),
        );
    }
    let reply = Reply::text(200, "text/plain; charset=utf-8", "OK")
        .with_header("ping-body-limit", limit.to_string())
        .with_header("access-control-allow-origin", "*");
    Answer {
        ping: Some(ping),
        ..Answer::accept(reply)
    }
}
