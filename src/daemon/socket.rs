//! The control socket: `playlistd sync` and `playlistd retry` while a daemon owns the state.
//! One JSON request (one line) from the client, replies as JSON lines, a `Done` with the exit code
//! last.
//!
//! Invariants:
//! - A requested sync goes through the same dispatch as a scheduled one, so it never runs
//!   beside a sync of the same playlist: it gets that sync's outcome instead.
//! - A client that names several playlists gets one reply per playlist, then `Done` with the
//!   worst outcome's code; a bad request or a daemon shutting down is one `Error` reply.
//! - `retry` is done by the daemon itself, which holds the state: no second process writes it.

use super::{Control, Daemon, Trigger, Why};
use crate::control::{Reply, Request};
use crate::sync::SyncOptions;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

impl Daemon {
    pub(super) fn control(&mut self, c: Control) {
        let Control::Sync { req, reply } = c;
        let (playlists, max_tracks, no_download) = match req {
            Request::Sync {
                playlists,
                max_tracks,
                no_download,
            } => (playlists, max_tracks, no_download),
            Request::Retry { playlists } => {
                // The daemon holds the state: it clears the backoff itself and saves.
                let mut store = self.store.lock().expect("state lock");
                let text = match store.retry(&playlists) {
                    Ok(n) => format!("{n} failed step(s) will be retried on the next sync"),
                    Err(e) => format!("could not save the state: {e}"),
                };
                let _ = reply.send(Reply::Message { text });
                return;
            }
        };
        let selected: Result<Vec<String>, String> = if playlists.is_empty() {
            Ok(self
                .config
                .playlists
                .iter()
                .map(|p| p.name.clone())
                .collect())
        } else {
            playlists
                .iter()
                .map(|n| {
                    self.config
                        .playlist(n)
                        .map(|p| p.name.clone())
                        .ok_or_else(|| n.clone())
                })
                .collect()
        };
        match selected {
            Err(unknown) => {
                let known: Vec<&str> = self
                    .config
                    .playlists
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                let _ = reply.send(Reply::Error {
                    message: format!(
                        "no playlist named {unknown:?} in {} (fix: use one of {known:?}, or add it with `playlistd add`)",
                        self.config.path.display()
                    ),
                });
            }
            Ok(names) => {
                for name in names {
                    self.dispatch(Trigger {
                        name,
                        why: Why::Request,
                        opts: SyncOptions {
                            dry_run: false,
                            max_tracks,
                            no_download,
                        },
                        reply: Some(reply.clone()),
                    });
                }
            }
        }
    }
}

/// Serves one client of the control socket.
pub(super) async fn serve_client(stream: UnixStream, controls: mpsc::UnboundedSender<Control>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let send = |r: &Reply| {
        let mut s = serde_json::to_string(r).expect("reply serializes");
        s.push('\n');
        s
    };
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = write
                .write_all(
                    send(&Reply::Error {
                        message: format!("bad request: {e}"),
                    })
                    .as_bytes(),
                )
                .await;
            return;
        }
    };
    let expected = match &req {
        Request::Sync { playlists, .. } => playlists.len(),
        Request::Retry { .. } => 0,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    if controls.send(Control::Sync { req, reply: tx }).is_err() {
        let _ = write
            .write_all(
                send(&Reply::Error {
                    message: "the daemon is shutting down".into(),
                })
                .as_bytes(),
            )
            .await;
        return;
    }
    let mut code = 0u8;
    let mut seen = 0usize;
    while let Some(reply) = rx.recv().await {
        let done = match &reply {
            Reply::Playlist { ok, error, .. } => {
                seen += 1;
                code = code.max(if error.is_some() {
                    3
                } else if *ok {
                    0
                } else {
                    1
                });
                expected > 0 && seen >= expected
            }
            Reply::Message { .. } => false,
            Reply::Error { .. } => true,
            Reply::Done { .. } => true,
        };
        if write.write_all(send(&reply).as_bytes()).await.is_err() {
            return;
        }
        if done {
            break;
        }
    }
    // With no names, every playlist was asked for: the channel closes when all have answered.
    let _ = write
        .write_all(send(&Reply::Done { code }).as_bytes())
        .await;
}
