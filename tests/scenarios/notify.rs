//! Notifications as a person receives them: `playlistd sync` runs against the fakes, with a
//! local webhook, ntfy topic and healthchecks check (`playlistd_fakes::receiver`) that refuse
//! what the real services refuse. The CLI waits for its sends before it exits, so every
//! message is in the receiver's log when the command returns.

use crate::support::band_set;
use crate::support::{World, text};
use playlistd_fakes::notion::{Endpoint as N, Fault as NF};
use playlistd_fakes::receiver::{FakeReceiver, Kind, ReceiverFault, ReceiverOptions, Signal};
use std::time::{Duration, Instant};

/// A world whose config sends to every target of `rx`.
async fn world(rx: &FakeReceiver, notify_extra: &str) -> World {
    let mut w = World::new().await;
    w.downloads = false;
    w.extra = format!(
        "\n[notify]\nwebhook = {:?}\nntfy = {:?}\nhealthchecks = {:?}\ntimeout_secs = 2\n{notify_extra}\n",
        rx.webhook_url("playlistd"),
        rx.ntfy_url("my-playlistd"),
        rx.healthchecks_url(FakeReceiver::CHECK_UUID),
    );
    w
}

fn signals(rx: &FakeReceiver) -> Vec<Signal> {
    rx.pings()
        .iter()
        .map(|p| p.ping.as_ref().expect("a ping").signal)
        .collect()
}

fn events(rx: &FakeReceiver) -> Vec<String> {
    rx.webhooks()
        .iter()
        .map(|r| {
            r.json.as_ref().expect("json")["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// No request carries the Notion token, in its path, headers or body, and the receiver had
/// nothing to refuse.
fn assert_clean(w: &World, rx: &FakeReceiver) {
    let token = w.notion.token();
    for r in rx.requests() {
        let all = format!("{} {:?} {}", r.path, r.headers, r.body_text());
        assert!(!all.contains(&token), "the token leaked: {all}");
    }
    assert!(rx.rejected().is_empty(), "refused: {:#?}", rx.rejected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_new_tracks_sends_one_digest_to_each_target_and_an_unchanged_one_none() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=3));
    w.watch("Okra Picks", &url);

    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let hooks = rx.webhooks();
    assert_eq!(hooks.len(), 1, "one digest: {hooks:#?}");
    let body = hooks[0].json.as_ref().unwrap();
    assert_eq!(body["event"], "sync_complete");
    assert_eq!(body["source"], "playlistd");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["totals"]["created"], 3);
    assert_eq!(body["data"]["playlists"][0]["name"], "Okra Picks");
    let titles = body["data"]["playlists"][0]["titles"].as_array().unwrap();
    assert_eq!(titles.len(), 3);
    assert!(titles.contains(&"Band - Song 1".into()), "{titles:?}");
    let ntfy = rx.ntfy();
    assert_eq!(ntfy.len(), 1);
    let msg = ntfy[0].ntfy.as_ref().unwrap();
    assert_eq!(
        msg.title.as_deref(),
        Some("playlistd: 3 new tracks in Okra Picks")
    );
    assert!(
        msg.message.contains("Okra Picks: 3 created"),
        "{}",
        msg.message
    );
    assert!(msg.message.contains("+ Band - Song 2"), "{}", msg.message);
    assert!(!msg.too_long);
    assert_eq!(signals(&rx), [Signal::Start, Signal::Success]);
    let rids: Vec<_> = rx
        .pings()
        .iter()
        .map(|p| p.ping.clone().unwrap().rid)
        .collect();
    assert!(
        rids[0].is_some() && rids[0] == rids[1],
        "one run id: {rids:?}"
    );
    assert_clean(&w, &rx);

    // Nothing new: no digest; healthchecks still hears that the run happened.
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rx.webhooks().len(), 1);
    assert_eq!(rx.ntfy().len(), 1);
    assert_eq!(
        signals(&rx),
        [
            Signal::Start,
            Signal::Success,
            Signal::Start,
            Signal::Success
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_track_is_a_sync_error_digest_and_a_healthchecks_fail_with_the_summary() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=3));
    w.watch("Okra Picks", &url);
    w.write_config().unwrap();
    // The playlist's page exists, so the first create is a track's, which Notion refuses.
    let title = serde_json::json!({"Name": {"title": [{"text": {"content": "Okra Picks"}}]}});
    w.notion
        .seed_page_in(&w.notion.playlists_data_source_id(), title);
    w.notion.inject(N::Create, NF::Status(400), 1);

    let out = w.playlistd_raw(&["sync"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(events(&rx), ["sync_error"]);
    let data = &rx.webhooks()[0].json.clone().unwrap()["data"];
    assert_eq!(data["totals"]["created"], 2);
    assert_eq!(data["totals"]["failed"], 1);
    assert!(
        data["playlists"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("400 validation_error"),
        "{data}"
    );
    assert_eq!(signals(&rx), [Signal::Start, Signal::Fail]);
    let fail = rx.pings()[1].body_text();
    assert!(
        fail.contains("synced \"Okra Picks\": 3 listed, 2 new"),
        "{fail}"
    );
    assert!(fail.contains("1 failed"), "{fail}");
    assert_clean(&w, &rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_alerts_once_across_runs_and_once_more_when_fixed() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch("Okra Picks", &url);
    w.write_config().unwrap();
    let token = w.notion.token();
    // Someone revoked the integration's secret in Notion's settings.
    w.notion
        .set_token("ntn_rotated_0000000000000000000000000000000");
    for run in 0..3 {
        let out = w.playlistd_raw(&["sync"]).await;
        assert_eq!(out.status.code(), Some(3), "run {run}: {}", text(&out));
    }
    assert_eq!(events(&rx), ["alert"], "one alert for three runs");
    let alert = rx.webhooks()[0].json.clone().unwrap();
    assert_eq!(alert["data"]["kind"], "notion_token");
    assert!(
        alert["data"]["detail"].as_str().unwrap().contains("(fix: "),
        "{alert}"
    );
    let ntfy = rx.ntfy();
    assert_eq!(ntfy.len(), 1);
    let msg = ntfy[0].ntfy.as_ref().unwrap();
    assert_eq!(
        msg.title.as_deref(),
        Some("playlistd alert: Notion rejects the token")
    );
    assert_eq!(msg.priority, Some(4));
    // healthchecks hears every run fail.
    assert_eq!(
        signals(&rx).iter().filter(|s| **s == Signal::Fail).count(),
        3
    );

    // The token works again: the tracks are created, and the alert clears once.
    w.notion.set_token(&token);
    for _ in 0..2 {
        let out = w.playlistd_raw(&["sync"]).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(events(&rx), ["alert", "alert_cleared", "sync_complete"]);
    assert_eq!(rx.ntfy().len(), 3);
    assert!(w.state().alerts.is_empty());
    assert_clean(&w, &rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_costs_the_sync_at_most_the_send_timeout() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    w.extra = w.extra.replace("timeout_secs = 2", "timeout_secs = 1");
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch("Okra Picks", &url);
    for kind in [Kind::Webhook, Kind::Ntfy, Kind::Healthchecks] {
        rx.set_hang(kind, true);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), w.playlistd(&["sync"]))
        .await
        .expect("a hanging receiver must not hold the sync");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "the sync itself succeeded: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("notifications still unsent after 1.0s: dropped"),
        "{}",
        text(&out)
    );
    // Every target was tried while it hung (the start ping went out with the run).
    let kinds: Vec<Kind> = rx.requests().iter().map(|r| r.kind).collect();
    for kind in [Kind::Webhook, Kind::Ntfy, Kind::Healthchecks] {
        assert!(kinds.contains(&kind), "{kind:?} not tried: {kinds:?}");
    }
    assert_eq!(w.state().tracks.len(), 2, "the sync's work is saved");
    assert_no_secret_urls(&text(&out));
    // The bound, loosely: the sync is quick against the fakes; 1 s of send timeout is added.
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_once_and_each_target_keeps_its_order() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch("Okra Picks", &url);
    rx.inject(Kind::Healthchecks, ReceiverFault::Status(503), 1);
    rx.inject(Kind::Webhook, ReceiverFault::Reset, 1);
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    // The start ping failed once and was sent again before the success ping.
    assert_eq!(
        signals(&rx),
        [Signal::Start, Signal::Start, Signal::Success]
    );
    let hooks = rx.webhooks();
    assert_eq!(hooks.len(), 2, "the reset digest was sent again");
    assert_eq!(hooks[0].body, hooks[1].body);
    assert_eq!(rx.webhooks().last().unwrap().status, Some(200));
}

#[tokio::test]
async fn an_unreadable_url_file_is_one_line_with_the_fix_and_no_sync() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    w.extra = w.extra.replace(
        &format!("ntfy = {:?}", rx.ntfy_url("my-playlistd")),
        "ntfy_file = \"/nonexistent/ntfy-url\"",
    );
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch("Okra Picks", &url);
    let out = w.playlistd(&["sync"]).await;
    let line = crate::support::failure_with_fix(&w, &out, 2);
    assert!(
        line.contains("notify.ntfy_file /nonexistent/ntfy-url"),
        "{line}"
    );
    assert_eq!(w.sc.total_requests(), 0, "nothing synced");
    assert!(rx.requests().is_empty());
}

/// The ntfy topic and the healthchecks UUID are secrets: whoever has them can post to the
/// topic or silence the check.
fn assert_no_secret_urls(output: &str) {
    assert!(
        !output.contains("my-playlistd"),
        "the ntfy topic leaked:\n{output}"
    );
    assert!(
        !output.contains(FakeReceiver::CHECK_UUID),
        "the check's UUID leaked:\n{output}"
    );
}

#[tokio::test]
async fn check_shows_the_targets_by_host_only() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "events = [\"alerts\"]").await;
    w.extra
        .push_str("\n[daemon]\nlisten = \"127.0.0.1:9817\"\n");
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=1));
    w.watch("Okra Picks", &url);
    let out = w.playlistd(&["check"]).await;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let host = rx.url().replace("http://", "");
    let host = host.split(':').next().unwrap();
    assert!(
        all.contains(&format!("ntfy http://{host}/[redacted]")) && all.contains("events: alerts"),
        "{all}"
    );
    assert!(all.contains("http://127.0.0.1:9817/healthz"), "{all}");
    assert_no_secret_urls(&all);
    assert!(rx.requests().is_empty(), "check sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_folder_that_cannot_be_written_alerts_once_and_clears_when_files_land() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    w.downloads = true;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    // A file where the playlist's folder should be: nothing can be written under it.
    let blocker = w.home().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    w.watch_with(
        "Okra Picks",
        &url,
        &format!("dir = {:?}", blocker.join("okra").display().to_string()),
    );
    for _ in 0..2 {
        let out = w.playlistd(&["sync"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
    // The pages were created (a digest), the folder alert went out once.
    assert_eq!(events(&rx), ["alert", "sync_complete"]);
    let alert = rx.webhooks()[0].json.clone().unwrap();
    assert_eq!(alert["data"]["kind"], "folder_not_writable");

    std::fs::remove_file(&blocker).unwrap();
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        events(&rx),
        ["alert", "sync_complete", "alert_cleared", "sync_complete"]
    );
    assert_clean(&w, &rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_read_alerts_once_and_a_fixed_one_clears_without_new_tracks() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world(&rx, "").await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch("Okra Picks", &url);
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(events(&rx), ["sync_complete"]);

    // The credential file is gone (a systemd credential not set up after a reinstall, say).
    std::fs::remove_file(w.token_file()).unwrap();
    for _ in 0..2 {
        let out = w.playlistd_raw(&["sync"]).await;
        crate::support::failure_with_fix(&w, &out, 2);
    }
    assert_eq!(events(&rx), ["sync_complete", "alert"]);

    // Fixed; the playlist is unchanged, so no sync asks Notion anything: the open alert makes
    // one check of the database, and that clears it.
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(events(&rx), ["sync_complete", "alert", "alert_cleared"]);
    assert!(w.state().alerts.is_empty());
    // With no alert open, an unchanged sync is back to no Notion request at all.
    let before = w.notion.requests().len();
    let out = w.playlistd(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.notion.requests().len(), before);
    assert_clean(&w, &rx);
}
