//! playlistd: keeps SoundCloud playlists mirrored into a Notion database and a music folder.
//!
//! The library holds everything; `main.rs` only parses the command line. One module per arrow
//! of the data flow in DESIGN.md: `source` lists a playlist, `sync` diffs it against `state`,
//! `notion` looks up and creates pages, `download` fetches the audio (through `ytdlp`, the one
//! supervised yt-dlp process, which the yt-dlp lister shares), `report` says what happened.
//! `util` keeps the helpers every part shares (atomic writes, one-line messages) and `exit`
//! the exit codes, so that no part below the CLI layer (`commands`) imports it. `fake` holds
//! the SoundCloud and Notion stand-ins that the tests, the demo and the benchmarks share.

pub mod check;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod download;
pub mod edit;
pub mod exit;
pub mod fake;
pub mod logging;
pub mod model;
pub mod notion;
pub mod paths;
pub mod report;
pub mod schedule;
pub mod service;
pub mod source;
pub mod state;
pub mod status;
pub mod sync;
pub mod util;
pub mod watch;
pub mod ytdlp;
