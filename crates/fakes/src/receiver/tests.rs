//! Tests of the receivers against the real services' contracts, through real HTTP: what each
//! receiver accepts and refuses (webhook, ntfy's aliases, priorities, topics, long bodies and
//! encoded headers, healthchecks' routes and body limit), status, reset and hang faults, the
//! records and their order, `wait_for`, and the RFC 2047 decoders on their own.

use super::ntfy::{base64_decode, decode_rfc2047, is_rfc9218_priority, q_decode};
use super::*;
use reqwest::header::HeaderValue;
use serde_json::json;

const SECOND: Duration = Duration::from_secs(1);

async fn fake() -> FakeReceiver {
    FakeReceiver::start(ReceiverOptions::default()).await
}

async fn status_and_text(rb: reqwest::RequestBuilder) -> (u16, String) {
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn status_and_json(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let (s, t) = status_and_text(rb).await;
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

#[tokio::test]
async fn webhook_takes_posted_json_only() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let url = f.webhook_url("sync");
    let (s, b) = status_and_json(c.post(&url).json(&json!({"added": 3}))).await;
    assert_eq!((s, b), (200, json!({"ok": true})));
    let text = c.post(&url).header("content-type", "text/plain").body("{}");
    assert_eq!(status_and_json(text).await.0, 400);
    let bad = c
        .post(&url)
        .header("content-type", "application/json; charset=utf-8");
    assert_eq!(status_and_json(bad.body("{nope")).await.0, 400);
    let (s, _) = status_and_text(c.get(&url)).await;
    assert_eq!(s, 405);
    assert_eq!(status_and_text(c.post(f.webhook_url(""))).await.0, 404);
    let hooks = f.webhooks();
    assert_eq!(hooks.len(), 5);
    assert_eq!(hooks[0].json, Some(json!({"added": 3})));
    assert_eq!(hooks[0].header("content-type"), Some("application/json"));
    assert_eq!(hooks[0].path, "/hook/sync");
    let rejected: Vec<Option<u16>> = f.rejected().iter().map(|r| r.status).collect();
    assert_eq!(rejected, vec![Some(400), Some(400), Some(405), Some(404)]);
    assert!(
        f.rejected()[0]
            .error
            .as_deref()
            .unwrap()
            .contains("text/plain")
    );
}

#[tokio::test]
async fn ntfy_reads_title_priority_tags_and_markdown_from_any_alias() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let rb = c
        .post(f.ntfy_url("my-topic_1"))
        .header("Title", "Sync done")
        .header("Priority", "high")
        .header("Tags", "white_check_mark, music,")
        .header("Markdown", "yes")
        .body("  3 tracks **added**\n");
    let (s, b) = status_and_json(rb).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["event"], "message");
    assert_eq!(b["topic"], "my-topic_1");
    assert_eq!(b["title"], "Sync done");
    assert_eq!(b["message"], "3 tracks **added**");
    assert_eq!(b["priority"], 4);
    assert_eq!(b["tags"], json!(["white_check_mark", "music"]));
    assert_eq!(b["content_type"], "text/markdown");
    assert_eq!(b["id"].as_str().unwrap().len(), 12);
    assert!(b["time"].as_i64().unwrap() > 1_700_000_000);
    let short = c
        .put(f.ntfy_url("t2"))
        .header("t", "short")
        .header("p", "1")
        .header("ta", "a")
        .body("x");
    assert_eq!(status_and_json(short).await.0, 200);
    let query = c.post(format!(
        "{}?title=From+query&priority=urgent",
        f.ntfy_url("t3")
    ));
    assert_eq!(status_and_json(query.body("q")).await.0, 200);
    let n = f.ntfy();
    let m0 = n[0].ntfy.as_ref().unwrap();
    assert_eq!(m0.id, b["id"].as_str().unwrap());
    assert!(m0.markdown && !m0.too_long && !m0.attachment);
    let m1 = n[1].ntfy.as_ref().unwrap();
    assert_eq!((m1.title.as_deref(), m1.priority), (Some("short"), Some(1)));
    assert_eq!(m1.tags, vec!["a"]);
    assert!(!m1.markdown);
    let m2 = n[2].ntfy.as_ref().unwrap();
    assert_eq!(
        (m2.title.as_deref(), m2.priority),
        (Some("From query"), Some(5))
    );
    assert!(f.rejected().is_empty());
}

#[tokio::test]
async fn ntfy_priority_names_and_the_invalid_priority_error() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let url = f.ntfy_url("prio");
    for (given, want) in [("min", 1), ("LOW", 2), ("default", 3), ("4", 4), ("max", 5)] {
        let (s, b) = status_and_json(c.post(&url).header("X-Priority", given).body("m")).await;
        assert_eq!((s, b["priority"].clone()), (200, json!(want)), "{given}");
    }
    let (s, b) = status_and_json(c.post(&url).header("X-Priority", "6").body("m")).await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"code": 40007, "http": 400, "error": "invalid priority parameter",
            "link": "https://ntfy.sh/docs/publish/#message-priority"})
    );
    // Cloudflare's RFC 9218 header is ignored, and `p` then counts.
    let rb = c.post(&url).header("Priority", "u=3, i").header("p", "2");
    let (s, b) = status_and_json(rb.body("m")).await;
    assert_eq!((s, b["priority"].clone()), (200, json!(2)));
    let (s, b) = status_and_json(c.post(&url).body("no priority")).await;
    assert_eq!(s, 200);
    assert!(b.get("priority").is_none(), "{b}");
    let rejected = f.rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].status, Some(400));
    assert_eq!(rejected[0].header("x-priority"), Some("6"));
}

#[tokio::test]
async fn ntfy_topic_names_follow_the_server_rule() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let ok = "a".repeat(64);
    assert_eq!(
        status_and_json(c.post(f.ntfy_url(&ok)).body("m")).await.0,
        200
    );
    for bad in ["a".repeat(65), "dots.in.it".to_string(), "a/b".to_string()] {
        let (s, b) = status_and_json(c.post(f.ntfy_url(&bad)).body("m")).await;
        assert_eq!(s, 404, "{bad}");
        assert_eq!(
            b,
            json!({"code": 40401, "http": 404, "error": "page not found"})
        );
    }
    let (s, _) = status_and_json(c.get(f.ntfy_url("fine"))).await;
    assert_eq!(s, 404, "GET of a topic is not a publish");
    assert_eq!(f.rejected().len(), 4);
    assert_eq!(f.ntfy().len(), 5);
}

#[tokio::test]
async fn ntfy_empty_body_is_triggered_and_get_publish_works() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let (s, b) = status_and_json(c.post(f.ntfy_url("t"))).await;
    assert_eq!((s, b["message"].clone()), (200, json!("triggered")));
    let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body(" \n ")).await;
    assert_eq!((s, b["message"].clone()), (200, json!("triggered")));
    let url = format!("{}/trigger?message=Line+1%5CnLine+2", f.ntfy_url("t"));
    let (s, b) = status_and_json(c.get(url)).await;
    assert_eq!((s, b["message"].clone()), (200, json!("Line 1\nLine 2")));
    assert_eq!(f.ntfy()[0].ntfy.as_ref().unwrap().message, "triggered");
}

#[tokio::test]
async fn ntfy_long_body_is_flagged_and_answered_as_an_attachment() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let (s, _) = status_and_json(c.post(f.ntfy_url("t")).body("x".repeat(4096))).await;
    assert_eq!(s, 200);
    let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body("x".repeat(4097))).await;
    assert_eq!(s, 200);
    assert_eq!(b["message"], "You received a file: attachment.txt");
    assert_eq!(b["attachment"]["size"], 4097);
    assert_eq!(b["attachment"]["name"], "attachment.txt");
    let n = f.ntfy();
    let (at_limit, over) = (n[0].ntfy.as_ref().unwrap(), n[1].ntfy.as_ref().unwrap());
    assert!(!at_limit.too_long && !at_limit.attachment);
    assert!(over.too_long && over.attachment);
    assert_eq!(n[1].body.len(), 4097, "the whole body is recorded");
    let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body(vec![0xff, 0xfe])).await;
    assert_eq!(
        (s, b["attachment"]["name"].clone()),
        (200, json!("attachment.bin"))
    );
    let binary = f.ntfy()[2].ntfy.clone().unwrap();
    assert!(binary.attachment && !binary.too_long);
}

#[tokio::test]
async fn ntfy_header_values_may_be_utf8_or_rfc2047() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let raw = HeaderValue::from_bytes("Äpfel ✓".as_bytes()).unwrap();
    assert_eq!(
        status_and_json(c.post(f.ntfy_url("t")).header("Title", raw))
            .await
            .0,
        200
    );
    let b64 = c
        .post(f.ntfy_url("t"))
        .header("Title", "=?UTF-8?B?8J+HqfCfh6o=?= flags");
    assert_eq!(status_and_json(b64).await.0, 200);
    let q = c
        .post(f.ntfy_url("t"))
        .header("Title", "=?UTF-8?Q?=C3=84pfel?= =?utf-8?q?_und_Birnen?=")
        .header("Tags", "tag1,=?UTF-8?B?8J+HqfCfh6o=?=");
    assert_eq!(status_and_json(q).await.0, 200);
    let unknown = c.post(f.ntfy_url("t")).header("Title", "=?KOI8-R?B?AAAA?=");
    assert_eq!(status_and_json(unknown).await.0, 200);
    let titles: Vec<String> = f
        .ntfy()
        .iter()
        .map(|r| r.ntfy.as_ref().unwrap().title.clone().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Äpfel ✓",
            "🇩🇪 flags",
            "Äpfel und Birnen",
            "=?KOI8-R?B?AAAA?="
        ]
    );
    assert_eq!(f.ntfy()[2].ntfy.as_ref().unwrap().tags, ["tag1", "🇩🇪"]);
}

#[tokio::test]
async fn healthchecks_signals_by_path_with_any_method() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let base = f.healthchecks_url(FakeReceiver::CHECK_UUID);
    let sends = [
        c.get(&base),
        c.head(format!("{base}/")),
        c.post(format!("{base}/start")),
        c.post(format!("{base}/fail")).body("boom"),
        c.post(format!("{base}/log")).body("a line"),
        c.get(format!("{base}/0")),
        c.get(format!("{base}/3")),
    ];
    for rb in sends {
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ping-body-limit"], "100000");
    }
    let (s, t) = status_and_text(c.get(&base)).await;
    assert_eq!((s, t.as_str()), (200, "OK"));
    let signals: Vec<Signal> = f
        .pings()
        .iter()
        .map(|r| r.ping.as_ref().unwrap().signal)
        .collect();
    use Signal::*;
    assert_eq!(
        signals,
        [
            Success,
            Success,
            Start,
            Fail,
            Log,
            Exit(0),
            Exit(3),
            Success
        ]
    );
    assert!(!Exit(0).is_failure() && Exit(3).is_failure() && Fail.is_failure());
    let pings = f.pings();
    assert_eq!(pings[1].method, "HEAD");
    assert_eq!(pings[3].ping.as_ref().unwrap().stored_body, b"boom");
    assert!(f.rejected().is_empty());
}

#[tokio::test]
async fn healthchecks_refuses_as_the_service_does() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let base = f.healthchecks_url(FakeReceiver::CHECK_UUID);
    let unknown = f.healthchecks_url("00000000-0000-4000-8000-000000000000");
    let upper = f.healthchecks_url(&FakeReceiver::CHECK_UUID.to_uppercase());
    let cases = [
        (upper, 404, "Not Found"),
        (f.healthchecks_url("not-a-uuid"), 404, "Not Found"),
        (format!("{base}/-1"), 404, "Not Found"),
        (format!("{base}/start/"), 404, "Not Found"),
        (unknown.clone(), 404, "not found"),
        (format!("{base}/256"), 400, "invalid url format"),
        (format!("{base}?rid=nope"), 400, "invalid uuid format"),
        (format!("{base}?rid="), 400, "invalid uuid format"),
    ];
    for (url, status, text) in &cases {
        let (s, t) = status_and_text(c.get(url)).await;
        assert_eq!(s, *status, "{url}");
        if *text == "Not Found" {
            assert!(t.contains("<h1>Not Found</h1>"), "{url}: {t}");
        } else {
            assert_eq!(t, *text, "{url}");
        }
    }
    assert_eq!(f.rejected().len(), cases.len());
    let rid = "123E4567-E89B-12D3-A456-426614174000";
    let (s, _) = status_and_text(c.get(format!("{base}/start?rid={rid}"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        f.pings()
            .last()
            .unwrap()
            .ping
            .as_ref()
            .unwrap()
            .rid
            .as_deref(),
        Some(rid)
    );
    f.add_check("00000000-0000-4000-8000-000000000000");
    assert_eq!(status_and_text(c.get(&unknown)).await.0, 200);
}

#[tokio::test]
async fn healthchecks_keeps_the_first_bytes_of_a_long_body() {
    let opts = ReceiverOptions {
        ping_body_limit: 10,
        ..ReceiverOptions::default()
    };
    let f = FakeReceiver::start(opts).await;
    let c = reqwest::Client::new();
    let url = f.healthchecks_url(FakeReceiver::CHECK_UUID);
    let resp = c.post(&url).body("0123456789abc").send().await.unwrap();
    assert_eq!(resp.headers()["ping-body-limit"], "10");
    let p = f.pings()[0].clone();
    assert_eq!(p.body, b"0123456789abc");
    let ping = p.ping.unwrap();
    assert_eq!(ping.stored_body, b"0123456789");
    assert!(ping.truncated);
}

#[tokio::test]
async fn status_faults_apply_per_kind_and_are_recorded() {
    let f = fake().await;
    let c = reqwest::Client::new();
    f.inject(Kind::Ntfy, ReceiverFault::Status(500), 2);
    f.inject(Kind::Webhook, ReceiverFault::Status(503), 1);
    let ntfy = || c.post(f.ntfy_url("t")).header("p", "9").body("m");
    let (s, b) = status_and_json(ntfy()).await;
    assert_eq!((s, b["code"].clone()), (500, json!(50001)));
    let hook = c.post(f.webhook_url("w")).json(&json!({}));
    assert_eq!(
        status_and_text(hook).await,
        (503, "Service Unavailable".into())
    );
    let ping = c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID));
    assert_eq!(status_and_text(ping).await.0, 200);
    assert_eq!(status_and_json(ntfy()).await.0, 500);
    assert_eq!(status_and_json(ntfy()).await.0, 400, "faults used up");
    let log = f.requests();
    let faults: Vec<_> = log.iter().map(|r| r.fault).collect();
    let st = ReceiverFault::Status;
    assert_eq!(
        faults,
        [Some(st(500)), Some(st(503)), None, Some(st(500)), None]
    );
    // The faulted publishes were still checked: the bad priority shows.
    assert_eq!(f.rejected().len(), 3);
    assert_eq!(f.rejected()[0].status, Some(500));
}

#[tokio::test]
async fn reset_drops_the_connection_and_is_recorded() {
    let f = fake().await;
    let c = reqwest::Client::new();
    f.inject(Kind::Healthchecks, ReceiverFault::Reset, 1);
    let url = f.healthchecks_url(FakeReceiver::CHECK_UUID);
    let r = c.post(&url).body("log").send().await;
    let err = r.expect_err("a reset, not an answer");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(status_and_text(c.get(&url)).await.0, 200);
    let pings = f.pings();
    assert_eq!(pings[0].fault, Some(ReceiverFault::Reset));
    assert_eq!(pings[0].status, None);
    assert_eq!(pings[0].body, b"log");
    assert_eq!(pings[1].status, Some(200));
}

#[tokio::test]
async fn a_hanging_request_ends_by_client_timeout_and_blocks_nothing() {
    let f = fake().await;
    f.inject(Kind::Ntfy, ReceiverFault::Hang, 1);
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let hung = tokio::spawn(patient.post(f.ntfy_url("t")).body("first").send());
    f.wait_for(1, SECOND).await;
    let c = reqwest::Client::new();
    let others = async {
        let (s, b) = status_and_json(c.post(f.ntfy_url("t")).body("second")).await;
        assert_eq!((s, b["message"].clone()), (200, json!("second")));
        let hook = c.post(f.webhook_url("w")).json(&json!(1));
        assert_eq!(status_and_json(hook).await.0, 200);
    };
    tokio::time::timeout(SECOND, others)
        .await
        .expect("not blocked by the hang");
    let err = hung.await.unwrap().expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    let first = &f.requests()[0];
    assert_eq!(
        (first.fault, first.status),
        (Some(ReceiverFault::Hang), None)
    );
    assert_eq!(first.ntfy.as_ref().unwrap().message, "first");
}

#[tokio::test]
async fn a_receiver_down_for_good_hangs_until_the_fake_stops() {
    let f = fake().await;
    f.set_hang(Kind::Webhook, true);
    let c = reqwest::Client::builder()
        .timeout(5 * SECOND)
        .build()
        .unwrap();
    let first = tokio::spawn(c.post(f.webhook_url("a")).json(&json!(1)).send());
    let second = tokio::spawn(c.post(f.webhook_url("b")).json(&json!(2)).send());
    let ping = c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID));
    assert_eq!(
        status_and_text(ping).await.0,
        200,
        "other kinds still answer"
    );
    let log = f.wait_for(3, SECOND).await;
    assert_eq!(
        log.iter()
            .filter(|r| r.fault == Some(ReceiverFault::Hang))
            .count(),
        2
    );
    let started = Instant::now();
    drop(f);
    for pending in [first, second] {
        let err = pending
            .await
            .unwrap()
            .expect_err("reset when the fake stops");
        assert!(!err.is_timeout(), "{err:?}");
    }
    assert!(started.elapsed() < SECOND);
}

#[tokio::test]
async fn set_hang_false_and_clear_faults_bring_a_receiver_back() {
    let f = fake().await;
    let c = reqwest::Client::new();
    f.set_hang(Kind::Ntfy, true);
    f.set_hang(Kind::Ntfy, false);
    assert_eq!(status_and_json(c.post(f.ntfy_url("t"))).await.0, 200);
    f.inject(Kind::Ntfy, ReceiverFault::Status(429), 5);
    let (s, b) = status_and_json(c.post(f.ntfy_url("t"))).await;
    assert_eq!((s, b["code"].clone()), (429, json!(42901)));
    f.clear_faults();
    assert_eq!(status_and_json(c.post(f.ntfy_url("t"))).await.0, 200);
}

#[tokio::test]
async fn records_keep_arrival_order_and_filters_split_them() {
    let f = fake().await;
    let c = reqwest::Client::new();
    c.post(f.ntfy_url("t")).body("1").send().await.unwrap();
    c.post(f.webhook_url("w"))
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    c.get(f.healthchecks_url(FakeReceiver::CHECK_UUID))
        .send()
        .await
        .unwrap();
    c.post(format!("{}/elsewhere", f.url()))
        .send()
        .await
        .unwrap();
    c.post(f.ntfy_url("t")).body("5").send().await.unwrap();
    let log = f.requests();
    let kinds: Vec<Kind> = log.iter().map(|r| r.kind).collect();
    use Kind::*;
    assert_eq!(kinds, [Ntfy, Webhook, Healthchecks, Other, Ntfy]);
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        f.ntfy().iter().map(|r| r.body_text()).collect::<Vec<_>>(),
        ["1", "5"]
    );
    assert_eq!((f.webhooks().len(), f.pings().len()), (1, 1));
    assert_eq!(f.rejected()[0].kind, Other);
    assert_eq!(f.rejected()[0].status, Some(404));
    f.clear_log();
    assert!(f.requests().is_empty());
}

#[tokio::test]
async fn wait_for_returns_as_soon_as_requests_arrive() {
    let f = fake().await;
    let urls = [f.ntfy_url("t"), f.webhook_url("w")];
    let sender = tokio::spawn(async move {
        let c = reqwest::Client::new();
        c.post(&urls[0]).body("a").send().await.unwrap();
        c.post(&urls[1]).json(&json!({})).send().await.unwrap();
    });
    let log = f.wait_for(2, 5 * SECOND).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].kind, Kind::Webhook);
    sender.await.unwrap();
    assert_eq!(
        f.wait_for(1, Duration::ZERO).await.len(),
        2,
        "already there"
    );
}

#[tokio::test]
#[should_panic(expected = "waiting for 2 requests, got 1")]
async fn wait_for_panics_with_the_log_on_timeout() {
    let f = fake().await;
    reqwest::Client::new()
        .post(f.ntfy_url("t"))
        .send()
        .await
        .unwrap();
    f.wait_for(2, Duration::from_millis(50)).await;
}

#[test]
fn base64_and_q_decoding() {
    assert_eq!(base64_decode("8J+HqfCfh6o=").unwrap(), "🇩🇪".as_bytes());
    assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
    assert_eq!(base64_decode("YQ==").unwrap(), b"a");
    assert!(base64_decode("YQ=").is_none());
    assert_eq!(q_decode("a_b=3Dc").unwrap(), b"a b=c");
    assert!(q_decode("=4").is_none());
    assert_eq!(decode_rfc2047("plain").unwrap(), "plain");
    assert_eq!(decode_rfc2047("=?bad").unwrap(), "=?bad");
    assert_eq!(decode_rfc2047("=?iso-8859-1?q?=E4?=").unwrap(), "ä");
    assert!(is_rfc9218_priority("u=1") && is_rfc9218_priority("u=0,  i"));
    assert!(!is_rfc9218_priority("u=12") && !is_rfc9218_priority("high"));
}
