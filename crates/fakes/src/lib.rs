//! Fake SoundCloud and Notion servers on 127.0.0.1 that behave like the real services, for
//! playlistd's tests, `playlistd demo` and the benchmarks, and receivers for its notifications
//! (a JSON webhook, ntfy, healthchecks.io) that validate and record what the daemon sends.
//!
//! This crate exists so that the daemon does not carry a web framework: the fakes are served by
//! axum, and only a build with playlistd's `demo` feature (or its tests) links this crate. It
//! knows nothing of playlistd (no dependency on it, so no cycle): the contract is the real APIs
//! as `reference/notion-api.md` and `reference/soundcloud-api.md` describe them, and the wiring
//! of a playlistd config against the fakes lives in `playlistd::sandbox`.
//!
//! Each fake is split by resource the way its real API is organised; the `mod.rs` of each holds
//! the server, the shared state, fault injection and request counting. `receiver` is split the
//! same way: three small receivers behind one server, one file each. `conn` holds the killable
//! connections the Notion fake and the receivers reset with.

mod conn;
pub mod notion;
pub mod receiver;
pub mod soundcloud;
pub mod synth;
