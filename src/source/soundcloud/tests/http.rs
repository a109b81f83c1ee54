//! One GET: headers, retries, 429 budgets, cancellation, unreachable hosts.

use super::*;

#[tokio::test]
async fn rate_limit_waits_retry_after_then_succeeds() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(3, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    c.client_id().await.unwrap();
    sc.inject(
        Endpoint::Resolve,
        Fault::TooManyRequests {
            retry_after_secs: Some(1),
        },
        1,
    );
    let t0 = Instant::now();
    let l = c.list(&url(&set)).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(l.tracks.len(), 3);
    assert_eq!(sc.requests(Endpoint::Resolve), 2);
    // A long Retry-After is capped, and once the budget is spent, reported: four waits
    // of 50 ms fill 200 ms, the fifth 429 ends it.
    let capped = RetryPolicy {
        max_retry_after: Duration::from_millis(50),
        rate_limit_budget: Duration::from_millis(200),
        ..FAST
    };
    let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(capped);
    sc.reset_counters();
    sc.inject(
        Endpoint::Resolve,
        Fault::TooManyRequests {
            retry_after_secs: Some(3600),
        },
        1000,
    );
    let t0 = Instant::now();
    let e = c.list(&url(&set)).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(
        e,
        SourceError::RateLimited {
            what: format!("resolving {set}"),
            waited: Duration::from_millis(200)
        }
    );
    assert_eq!(sc.requests(Endpoint::Resolve), 5);
}

#[tokio::test]
async fn truncated_json_and_server_errors_are_retried() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(70, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    sc.inject(Endpoint::Resolve, Fault::Truncated, 1);
    sc.inject(Endpoint::Resolve, Fault::Status(503), 1);
    sc.inject(Endpoint::Tracks, Fault::Truncated, 1);
    sc.inject(Endpoint::Tracks, Fault::Status(502), 1);
    sc.inject(Endpoint::WebRoot, Fault::Status(500), 1);
    let l = c.list(&url(&set)).await.unwrap();
    assert!(l.complete);
    assert_eq!(l.tracks.len(), 70);
    assert_eq!(sc.requests(Endpoint::Resolve), 3);
    // Two batches (65 stubs); the first needed three attempts.
    assert_eq!(sc.requests(Endpoint::Tracks), 3 + 1);
}

#[tokio::test]
async fn an_unreachable_host_says_so_with_one_fix() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(1, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = sc.config();
    cfg.web_base = url("http://127.0.0.1:9/");
    let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
    let e = c.list(&url(&set)).await.unwrap_err();
    assert!(matches!(e, SourceError::Unreachable { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.starts_with("cannot reach 127.0.0.1 (loading http://127.0.0.1:9 to find a client id): "),
        "{m}"
    );
    assert!(m.contains("check the network connection"), "{m}");
    assert!(!m.contains('\n'));
    assert_eq!(m.matches("(fix: ").count(), 1, "{m}");
    assert!(e.is_transient());
    // (A name that does not resolve is a connect error too in reqwest; no test looks up
    // a name, since none may leave the machine.)
}

#[test]
fn backoff_grows_to_its_cap() {
    let c = SoundCloud::new(&offline_config(), Path::new("/nonexistent"));
    let cap = Duration::from_secs(60);
    for (n, ceiling) in [(1, 500), (2, 1000), (4, 4000), (8, 60_000), (30, 60_000)] {
        let d = c.backoff(n, cap);
        let ceiling = Duration::from_millis(ceiling);
        assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
    }
}

#[tokio::test]
async fn requests_carry_a_browsers_headers_and_the_configured_user_agent() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(60, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    client(&sc, cache.path()).list(&url(&set)).await.unwrap();
    let log = sc.request_log();
    assert_eq!(log.len(), 5, "page, script, resolve, two batches");
    for r in &log {
        assert_eq!(r.user_agent.as_deref(), Some(DEFAULT_USER_AGENT), "{r:?}");
        assert_eq!(r.accept_language.as_deref(), Some(ACCEPT_LANGUAGE), "{r:?}");
    }

    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
    let mut cfg = sc.config();
    cfg.user_agent = Some(firefox.into());
    sc.reset_counters();
    let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
    c.list(&url(&set)).await.unwrap();
    assert!(
        sc.request_log()
            .iter()
            .all(|r| r.user_agent.as_deref() == Some(firefox))
    );

    // What bot protection does to anything else, and what playlistd then says.
    cfg.user_agent = Some("playlistd/0.1".into());
    let c = SoundCloud::new(&cfg, cache.path()).with_retry(FAST);
    let e = c.list(&url(&set)).await.unwrap_err();
    assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
    assert!(e.to_string().contains("soundcloud.user_agent"), "{e}");
}

#[tokio::test]
async fn a_web_page_403_is_bot_protection_and_never_rescraped() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(60, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    c.client_id().await.unwrap();
    sc.reset_counters();
    sc.inject(Endpoint::Resolve, Fault::BlockedHtml, 1);
    let e = c.list(&url(&set)).await.unwrap_err();
    let host = url(&sc.api_base()).host_str().unwrap().to_string();
    assert_eq!(
        e,
        SourceError::Blocked {
            what: format!("resolving {set}"),
            host
        }
    );
    let m = e.to_string();
    assert!(!m.contains('\n') && m.matches("(fix: ").count() == 1, "{m}");
    assert!(!e.is_transient());
    assert_eq!(sc.requests(Endpoint::Resolve), 1, "not retried");
    assert_eq!(
        sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
        0
    );

    // An XML one on a batch stops the listing (no other batch would get through either).
    sc.inject(Endpoint::Tracks, Fault::BlockedXml, 1);
    let e = c.list(&url(&set)).await.unwrap_err();
    assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
    assert_eq!(
        sc.requests(Endpoint::Tracks),
        1,
        "the second batch is not asked"
    );
    assert_eq!(
        sc.requests(Endpoint::WebRoot) + sc.requests(Endpoint::Asset),
        0
    );

    // A JSON 403 is a stale client id: refreshed once, as before.
    sc.inject(Endpoint::Resolve, Fault::Status(403), 1);
    assert_eq!(c.list(&url(&set)).await.unwrap().tracks.len(), 60);
    assert_eq!(sc.requests(Endpoint::WebRoot), 1);

    // The web page itself behind bot protection: said as such, not "no client id".
    let cache = tempfile::tempdir().unwrap();
    sc.reset_counters();
    sc.inject(Endpoint::WebRoot, Fault::BlockedHtml, 1);
    let e = client(&sc, cache.path())
        .list(&url(&set))
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
    assert_eq!(sc.requests(Endpoint::Asset), 0);
    assert_eq!(e.to_string().matches("(fix: ").count(), 1, "{e}");
}

#[tokio::test]
async fn a_429_storm_without_retry_after_is_waited_out_within_the_budget() {
    let sc = FakeSoundCloud::start().await;
    let p = playlist_of(60, "u", "s");
    let all: Vec<u64> = p.tracks.iter().map(|t| t.id).collect();
    let set = sc.add_playlist(p);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&sc, cache.path());
    c.client_id().await.unwrap();
    // More 429s than `attempts` allows for other errors: waited out, nothing dropped.
    sc.inject(
        Endpoint::Tracks,
        Fault::TooManyRequests {
            retry_after_secs: None,
        },
        8,
    );
    let l = c.list(&url(&set)).await.unwrap();
    assert!(l.complete, "{:?}", l.incomplete_reason);
    assert_eq!(ids_of(&l), all);
    assert_eq!(sc.requests(Endpoint::Tracks), 8 + 2);

    // Past the budget the batch is given up: the listing is incomplete, not failed.
    let tight = RetryPolicy {
        rate_limit_budget: Duration::from_millis(100),
        ..FAST
    };
    let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(tight);
    sc.inject(Endpoint::Tracks, Fault::Delay(Duration::ZERO), 1);
    sc.inject(
        Endpoint::Tracks,
        Fault::TooManyRequests {
            retry_after_secs: None,
        },
        10_000,
    );
    let t0 = Instant::now();
    let l = c.list(&url(&set)).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert!(!l.complete);
    let reason = l.incomplete_reason.as_deref().unwrap();
    assert!(
        reason.contains("429") && reason.contains("batch 2 of 2"),
        "{reason}"
    );
    assert_eq!(ids_of(&l), all[..55].to_vec());
    sc.clear_faults();

    // `Retry-After: 0` forever must not spin: every wait spends budget.
    sc.inject(
        Endpoint::Resolve,
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
        100_000,
    );
    let e = c.list(&url(&set)).await.unwrap_err();
    assert!(matches!(e, SourceError::RateLimited { .. }), "{e}");
    assert!(sc.requests(Endpoint::Resolve) < 1000);
    sc.clear_faults();
}

#[tokio::test]
async fn a_cancel_ends_a_429_wait_at_once() {
    let sc = FakeSoundCloud::start().await;
    let set = sc.add_playlist(playlist_of(3, "u", "s"));
    let cache = tempfile::tempdir().unwrap();
    let slow = RetryPolicy {
        max_retry_after: Duration::from_secs(600),
        ..RetryPolicy::default()
    };
    let c = SoundCloud::new(&sc.config(), cache.path()).with_retry(slow);
    c.client_id().await.unwrap();
    sc.inject(
        Endpoint::Resolve,
        Fault::TooManyRequests {
            retry_after_secs: Some(300),
        },
        1,
    );
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let target = url(&set);
    let listing = c.list_streamed(&target, &cancel, |_| Ok::<(), SourceError>(()));
    // Cancelled once the 429 has been answered: the client is in its 300 s wait then.
    let canceller = async {
        while sc.requests(Endpoint::Resolve) == 0 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
    };
    let (e, ()) = tokio::join!(listing, canceller);
    assert_eq!(e.unwrap_err(), SourceError::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
