//! Scenario tests: the real sync engine and the real binary against the fake SoundCloud and
//! Notion servers; downloads are native (HLS from the fake's CDN), with the real yt-dlp where a
//! test is about yt-dlp (`engine = "yt-dlp"`, or the fallback).
//! Tests whose name starts with `slow_` run many yt-dlp processes and take tens of seconds.

mod audio_check;
mod bad_input;
mod cli;
mod crash;
mod daemon;
mod dedup;
mod dj_library;
mod faults;
mod first_sync;
mod native_audio;
mod notify;
mod operability;
mod removed;
mod soundcloud_2026;
mod support;
mod token_privacy;
mod upgrade;
