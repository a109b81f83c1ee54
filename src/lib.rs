//! playlistd: keeps SoundCloud playlists mirrored into a Notion database and a music folder.
//!
//! The library holds everything; `main.rs` only parses the command line. One module per arrow
//! of the data flow in DESIGN.md: `source` lists a playlist, `sync` diffs it against `state`,
//! `notion` looks up and creates pages, `download` runs the download pool and picks the engine
//! for each track: `audio` (native SoundCloud HLS and MP3, remux, tags) or `ytdlp` (the one
//! supervised yt-dlp process, which the yt-dlp lister shares); `report` says what happened.
//! `util` keeps the helpers every part shares (atomic writes, one-line messages) and `exit`
//! the exit codes, so that no part below the CLI layer (`commands`) imports it. The SoundCloud
//! and Notion stand-ins that the tests, the demo and the benchmarks share are their own crate
//! (`playlistd_fakes`, which knows nothing of playlistd); `sandbox` wires a config and an engine
//! against them. It and `demo` are built with the default `demo` feature (and for unit tests):
//! `--no-default-features` builds the daemon without the fakes or the web framework serving them.

pub mod audio;
pub mod check;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(not(feature = "demo"))]
pub mod demo {
    //! `playlistd demo` in a build without the `demo` feature: it has no fake servers to run
    //! against, so it says so in one line, with the fix, and fails.

    use crate::exit::ExitCode;
    use std::path::Path;

    pub async fn run(_dir: Option<&Path>) -> ExitCode {
        eprintln!(
            "playlistd demo: this build has no demo (built with --no-default-features); \
             rebuild with the default `demo` feature (cargo install --path .) to run it"
        );
        ExitCode::Failed
    }
}
pub mod download;
pub mod edit;
pub mod exit;
pub mod logging;
pub mod model;
pub mod notify;
pub mod notion;
pub mod paths;
pub mod report;
#[cfg(any(test, feature = "demo"))]
pub mod sandbox;
pub mod schedule;
pub mod service;
pub mod source;
pub mod state;
pub mod status;
pub mod sync;
pub mod util;
pub mod watch;
pub mod ytdlp;
