//! The daemon as an operator sees it: systemd's notify protocol on a test `NOTIFY_SOCKET`,
//! `/healthz` and `/metrics` on `daemon.listen` (parsed as Prometheus parses them), alerts
//! across slots, and the shell integration (completions that load in their shells, a manual
//! page that renders). Waits are on events (datagrams, log lines, receiver requests).

use crate::support::{World, text};
use crate::support::{YEARLY, band_set};
use playlistd_fakes::receiver::{FakeReceiver, ReceiverOptions};
use playlistd_fakes::soundcloud::FakeTrack;
use std::time::Duration;

async fn world() -> World {
    let mut w = World::new().await;
    w.downloads = false;
    w
}

/// A port nobody listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads datagrams until `done` holds for what has arrived; panics with them after 10 s.
async fn read_until(
    sock: &tokio::net::UnixDatagram,
    got: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let mut buf = vec![0u8; 4096];
    while !done(got) {
        match tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            ),
            _ => panic!("not all notifications came; got {got:#?}"),
        }
    }
}

fn count(got: &[String], line: &str) -> usize {
    got.iter().filter(|l| *l == line).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_daemon_says_ready_status_watchdog_reloading_and_stopping() {
    let mut w = world().await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch_with("Okra Picks", &url, YEARLY);
    w.write_config().unwrap();
    let path = w.home().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let d = w.start_daemon_env(&[
        ("NOTIFY_SOCKET", path.as_os_str()),
        ("WATCHDOG_USEC", std::ffi::OsStr::new("200000")),
    ]);
    let mut got = vec![];
    read_until(&sock, &mut got, |g| {
        count(g, "READY=1") == 1
            && g.iter()
                .any(|l| l.starts_with("STATUS=idle, next: Okra Picks at "))
            && count(g, "WATCHDOG=1") >= 2
    })
    .await;
    // Never synced: the catch-up run shows in the status, after READY.
    let ready = got.iter().position(|l| l == "READY=1").unwrap();
    let syncing = got.iter().position(|l| l == "STATUS=syncing 1 playlist");
    assert!(syncing.is_some_and(|s| s > ready), "{got:#?}");

    d.signal(libc::SIGHUP);
    read_until(&sock, &mut got, |g| count(g, "READY=1") == 2).await;
    let reloading = got
        .iter()
        .position(|l| l == "RELOADING=1")
        .expect("RELOADING=1");
    let ready_again = got.iter().rposition(|l| l == "READY=1").unwrap();
    assert!(reloading < ready_again, "{got:#?}");
    assert!(
        got[reloading + 1].starts_with("MONOTONIC_USEC="),
        "{got:#?}"
    );

    let (status, _, log) = d.stop().await;
    assert!(status.success(), "{}", log.join("\n"));
    read_until(&sock, &mut got, |g| count(g, "STOPPING=1") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watchdog_nothing_pings_it() {
    let mut w = world().await;
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=1));
    w.watch_with("Okra Picks", &url, YEARLY);
    w.write_config().unwrap();
    let path = w.home().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let d = w.start_daemon_env(&[("NOTIFY_SOCKET", path.as_os_str())]);
    let mut got = vec![];
    read_until(&sock, &mut got, |g| {
        g.iter()
            .any(|l| l.starts_with("STATUS=idle, next: Okra Picks"))
    })
    .await;
    let (status, _, _) = d.stop().await;
    assert!(status.success());
    read_until(&sock, &mut got, |g| count(g, "STOPPING=1") == 1).await;
    assert_eq!(count(&got, "WATCHDOG=1"), 0, "{got:#?}");
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("the health server answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of one series of a parsed scrape.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {:#?}", scrape.samples));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn scrape(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// "…; 4 Notion and 2 SoundCloud requests in 0.1s" → (4, 2).
fn requests_in(summary: &str) -> (f64, f64) {
    let tail = summary
        .rsplit("; ")
        .find(|p| p.contains("Notion and"))
        .unwrap();
    let words: Vec<&str> = tail.split_whitespace().collect();
    (words[0].parse().unwrap(), words[3].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_metrics_match_the_run_reports_and_healthz_is_503_while_an_alert_is_open() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world().await;
    let port = free_port();
    w.extra = format!(
        "\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n\n[notify]\nwebhook = {:?}\ndigest_minutes = 0\n",
        rx.webhook_url("ops")
    );
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=3));
    w.watch_with("Okra Picks", &url, YEARLY);
    let d = w.start_daemon();
    d.wait_for("serving /healthz and /metrics", 10).await;
    // The catch-up run of a playlist that never synced.
    let first = d.wait_for("synced \"Okra Picks\"", 10).await;
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let m = scrape(&get(port, "/metrics").await.1);
    let pl = [("playlist", "Okra Picks")];
    let (notion, soundcloud) = requests_in(&first);
    assert_eq!(
        value(
            &m,
            "playlistd_runs_total",
            &[("playlist", "Okra Picks"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(value(&m, "playlistd_tracks_created_total", &pl), 3.0);
    assert_eq!(value(&m, "playlistd_tracks_failed_total", &pl), 0.0);
    assert_eq!(value(&m, "playlistd_notion_requests_total", &pl), notion);
    assert_eq!(
        value(&m, "playlistd_soundcloud_requests_total", &pl),
        soundcloud
    );
    assert!(value(&m, "playlistd_last_success_seconds_ago", &pl) < 60.0);

    // The token is revoked and two new tracks wait: two requested syncs, one alert.
    let token = w.notion.token();
    w.notion
        .set_token("ntn_rotated_0000000000000000000000000000000");
    w.sc.add_track(1, FakeTrack::new(4, "Song 4", "Band"));
    for _ in 0..2 {
        let out = w.playlistd(&["sync", "Okra Picks"]).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["alerts"][0]["kind"], "notion_token");
    let hooks = rx.wait_for(2, Duration::from_secs(10)).await;
    let events: Vec<&str> = hooks
        .iter()
        .map(|h| h.json.as_ref().unwrap()["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["sync_complete", "alert"]);

    w.notion.set_token(&token);
    let out = w.playlistd(&["sync", "Okra Picks"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(get(port, "/healthz").await.0, 200);
    let hooks = rx.wait_for(4, Duration::from_secs(10)).await;
    let events: Vec<&str> = hooks
        .iter()
        .map(|h| h.json.as_ref().unwrap()["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["sync_complete", "alert", "alert_cleared", "sync_complete"]
    );

    let m = scrape(&get(port, "/metrics").await.1);
    let runs = |result| {
        value(
            &m,
            "playlistd_runs_total",
            &[("playlist", "Okra Picks"), ("result", result)],
        )
    };
    assert_eq!((runs("ok"), runs("failed")), (2.0, 2.0));
    assert_eq!(value(&m, "playlistd_tracks_created_total", &pl), 4.0);
    let logged: f64 = d
        .log()
        .iter()
        .filter(|l| l.contains("synced \"Okra Picks\""))
        .map(|l| requests_in(l).0)
        .sum();
    assert_eq!(value(&m, "playlistd_notion_requests_total", &pl), logged);
    let (status, _, log) = d.stop().await;
    assert!(status.success(), "{}", log.join("\n"));
    assert!(
        !log.join("\n").contains(&token),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_a_revoked_token_alerts_once_across_slots_and_clears_once() {
    let rx = FakeReceiver::start(ReceiverOptions::default()).await;
    let mut w = world().await;
    w.extra = format!(
        "\n[notify]\nwebhook = {:?}\nntfy = {:?}\ndigest_minutes = 0\n",
        rx.webhook_url("ops"),
        rx.ntfy_url("ops")
    );
    let url = w.sc.add_playlist(band_set(1, "okra", 1..=2));
    w.watch_with("Okra Picks", &url, "schedule = \"*/1 * * * * *\"");
    w.write_config().unwrap();
    let token = w.notion.token();
    w.notion
        .set_token("ntn_rotated_0000000000000000000000000000000");
    let d = w.start_daemon_raw();
    d.wait_for_n("sync failed", 3, 15).await;
    let alerts: Vec<_> = rx.webhooks();
    assert_eq!(alerts.len(), 1, "one alert for three slots: {alerts:#?}");
    assert_eq!(alerts[0].json.as_ref().unwrap()["event"], "alert");

    w.notion.set_token(&token);
    d.wait_for("alert cleared: Notion rejects the token", 15)
        .await;
    // Two more slots: nothing more to say.
    let before = d
        .log()
        .iter()
        .filter(|l| l.contains("synced \"Okra Picks\""))
        .count();
    d.wait_for_n("synced \"Okra Picks\"", before + 2, 15).await;
    let events: Vec<String> = rx
        .webhooks()
        .iter()
        .map(|h| {
            h.json.as_ref().unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(events, ["alert", "alert_cleared", "sync_complete"]);
    assert_eq!(rx.ntfy().len(), 3);
    let (status, _, log) = d.stop().await;
    assert!(status.success(), "{}", log.join("\n"));
}

/// Runs `script` in `shell` with the completion script on stdin's place; `None` when the
/// shell is not installed here (CI installs bash, zsh and fish: there it is a failure).
fn in_shell(shell: &str, script: &str) -> Option<std::process::Output> {
    let found = std::process::Command::new(shell)
        .arg("-c")
        .arg("exit 0")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").is_err(), "{shell} is missing under CI");
        eprintln!("skipped: {shell} is not installed");
        return None;
    }
    Some(
        std::process::Command::new(shell)
            .arg("-c")
            .arg(script)
            .env("PLAYLISTD", env!("CARGO_BIN_EXE_playlistd"))
            .output()
            .unwrap(),
    )
}

#[test]
fn the_completion_scripts_load_in_their_shells() {
    if let Some(out) = in_shell(
        "bash",
        r#"source <("$PLAYLISTD" completions bash) && complete -p playlistd"#,
    ) {
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("-F _playlistd"),
            "{out:?}"
        );
    }
    if let Some(out) = in_shell(
        "zsh",
        r#"autoload -U compinit && compinit -u && eval "$("$PLAYLISTD" completions zsh)" && print -r -- ${_comps[playlistd]}"#,
    ) {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "_playlistd",
            "{out:?}"
        );
    }
    if let Some(out) = in_shell(
        "fish",
        r#""$PLAYLISTD" completions fish | source; and complete -C 'playlistd sy'"#,
    ) {
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sync"),
            "{out:?}"
        );
    }
}

#[test]
fn the_manual_page_renders_and_lists_every_command() {
    let man = std::process::Command::new(env!("CARGO_BIN_EXE_playlistd"))
        .arg("man")
        .output()
        .unwrap();
    assert!(man.status.success());
    let roff = String::from_utf8(man.stdout).unwrap();
    assert!(roff.contains(".TH playlistd 1"), "{roff}");
    let Ok(mut groff) = std::process::Command::new("groff")
        // -P-bu: plain text, no overstriking for bold and underline.
        .args(["-man", "-Tutf8", "-ww", "-P-bu"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var("CI").is_err(), "groff is missing under CI");
        eprintln!("skipped: groff is not installed");
        return;
    };
    use std::io::Write;
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(roff.as_bytes())
        .unwrap();
    let out = groff.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(page.contains("SUBCOMMANDS"), "{page}");
    for command in ["sync", "run", "status", "analyze", "completions", "man"] {
        assert!(
            page.contains(&format!("playlistd-{command}(1)")),
            "{command}: {page}"
        );
    }
}
