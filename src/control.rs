//! The daemon's local control socket: `playlistd sync NAME` asks a running daemon to sync now,
//! and `playlistd retry` asks it to clear backoffs, instead of fighting it over the state.
//!
//! Protocol: one JSON request line from the client; the daemon answers with one JSON line per
//! playlist as each sync finishes (a retry: one message), then a final line with the exit
//! code. The socket lives in
//! the state directory (0700 by virtue of the user's home), beside the lock the daemon holds,
//! so only the user can reach it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub const SOCKET_FILE: &str = "playlistd.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Sync {
        /// Names or URLs; empty means every playlist.
        playlists: Vec<String>,
        max_tracks: Option<usize>,
        no_download: bool,
    },
    /// Clear the backoff of failed tracks (of these playlists; all when empty).
    Retry { playlists: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// One playlist's sync finished (or was skipped).
    Playlist {
        name: String,
        ok: bool,
        details: Vec<String>,
        summary: String,
        error: Option<String>,
    },
    /// A line for the person who asked.
    Message { text: String },
    /// The request is complete; `code` is the exit code the client should use.
    Done { code: u8 },
    /// The request could not be served (unknown playlist, daemon shutting down).
    Error { message: String },
}

/// Sends a request to a running daemon and calls `on_reply` for every answer line.
/// Returns `None` when no daemon listens (no socket, or a stale one).
pub async fn request(
    state_dir: &Path,
    req: &Request,
    mut on_reply: impl FnMut(&Reply),
) -> Option<std::io::Result<u8>> {
    let stream = UnixStream::connect(socket_path(state_dir)).await.ok()?;
    Some(
        async move {
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(req).expect("request serializes");
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            write.flush().await?;
            let mut lines = BufReader::new(read).lines();
            while let Some(l) = lines.next_line().await? {
                let reply: Reply = serde_json::from_str(&l)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                on_reply(&reply);
                match reply {
                    Reply::Done { code } => return Ok(code),
                    Reply::Error { .. } => return Ok(2),
                    Reply::Playlist { .. } | Reply::Message { .. } => {}
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection before answering (it may be shutting down)",
            ))
        }
        .await,
    )
}
