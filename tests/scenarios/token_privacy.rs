//! The Notion token never appears anywhere a user or a log shipper could see it: command
//! output at every verbosity, error messages (a rejected token included), the daemon's log
//! files at trace level, the state, the results file, the caches, or Debug output.

use crate::support::{World, text};
use playlistd_fakes::soundcloud::{FakePlaylist, FakeTrack};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_appears_in_no_output_log_or_file() {
    let mut w = World::new().await;
    let token = w.notion.token();
    w.extra = format!(
        "\n[log]\ndir = {:?}\nlevel = \"trace\"\n",
        w.home().join("logs").display().to_string()
    );
    let url = w.sc.add_playlist(
        FakePlaylist::new(1, "u", "set")
            .tracks((1..=3).map(|i| FakeTrack::new(i, &format!("Song {i}"), "Band"))),
    );
    w.watch_with("Set", &url, "schedule = \"0 0 0 1 1 *\"");
    let results = w.home().join("results.json");
    let mut outputs = vec![];
    for args in [
        vec!["-vv", "sync", "--dry-run"],
        vec!["-vv", "sync", "--results-file", results.to_str().unwrap()],
        vec!["-vv", "check"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["retry"],
    ] {
        let mut cmd = w.command(&args);
        cmd.env("PLAYLISTD_LOG", "trace");
        outputs.push((args.join(" "), cmd.output().await.unwrap()));
    }
    // The daemon at trace level, into its log files.
    let d = w.start_daemon();
    d.wait_for("running:", 10).await;
    let (_, _, daemon_log) = d.stop().await;

    // A token Notion rejects is not printed either.
    let wrong = "ntn_WRONG_token_that_must_not_leak_0123456789";
    std::fs::write(w.token_file(), wrong).unwrap();
    let rejected = w.playlistd_raw(&["-vv", "check"]).await;
    assert!(
        String::from_utf8_lossy(&rejected.stdout).contains("FAIL  Notion token"),
        "{}",
        text(&rejected)
    );
    outputs.push(("check with a rejected token".into(), rejected));

    for (what, out) in &outputs {
        let all = text(out);
        assert!(
            !all.contains(&token) && !all.contains(wrong),
            "`playlistd {what}` printed the token:\n{all}"
        );
        assert!(!all.is_empty(), "`playlistd {what}` printed nothing");
    }
    assert!(!daemon_log.join("\n").contains(&token));
    let mut checked = 0;
    for f in files_under(w.home()) {
        if f == w.token_file() {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        let s = String::from_utf8_lossy(&bytes);
        assert!(!s.contains(&token), "{} holds the token", f.display());
        checked += 1;
    }
    assert!(
        checked >= 5,
        "state, results, cache and log files were checked ({checked})"
    );
    assert!(w.home().join("logs").read_dir().unwrap().count() > 0);
}

#[tokio::test]
async fn debug_output_of_the_config_and_clients_is_redacted() {
    let w = World::new().await;
    let cfg = w.write_config().unwrap();
    let token = cfg.notion.token.read().unwrap();
    assert_eq!(format!("{token:?} {token}"), "[redacted] [redacted]");
    let notion = playlistd::notion::Notion::new(&cfg.notion, token).unwrap();
    let engine = w.engine();
    for dump in [
        format!("{cfg:?}"),
        format!("{notion:?}"),
        format!("{:?}", engine.sink().await.unwrap().map(|_| ())),
    ] {
        assert!(!dump.contains(&w.notion.token()), "{dump}");
    }
}
