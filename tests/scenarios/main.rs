//! Scenario tests: the real sync engine and the real binary against the fake SoundCloud and
//! Notion servers, with the real yt-dlp downloading the audio the fake serves.
//! Tests whose name starts with `slow_` run many yt-dlp processes and take tens of seconds.

mod bad_input;
mod cli;
mod crash;
mod daemon;
mod dedup;
mod faults;
mod first_sync;
mod removed;
mod soundcloud_2026;
mod support;
mod token_privacy;
mod upgrade;
