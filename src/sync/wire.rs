//! The engine, wired from the config: the one place that turns a [`Config`] into the clients a
//! sync uses, for `playlistd sync`, the daemon, the demo and the benchmarks alike.
//!
//! Invariants: the token is read here and nowhere else on the way to a sync, and only its
//! error's text (which never holds the token) leaves; a dry run may go on without a token
//! (it then cannot tell new tracks from ones in Notion, and says so); a dry run's SoundCloud
//! client writes nothing (no client-id cache); an engine rebuilt by the daemon shares the old
//! one's Notion limiter, so a reload never doubles the request rate.

use super::Engine;
use crate::audio::media_http::MediaRetry;
use crate::config::{Config, TokenError};
use crate::notion::{ClientOptions, Notion, NotionError, RateLimiter};
use crate::source::Source;
use crate::source::soundcloud::{RetryPolicy, SoundCloud};
use crate::state::StateStore;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What the caller brings besides the config.
pub struct Wiring {
    pub store: Arc<Mutex<StateStore>>,
    /// Stops every sync of the engine (the daemon passes a child of its root token).
    pub cancel: CancellationToken,
    /// The limiter of the engine this one replaces (the daemon's reload).
    pub limiter: Option<Arc<RateLimiter>>,
    /// A dry run: no token is needed and SoundCloud's client writes nothing.
    pub dry_run: bool,
    /// Millisecond backoffs instead of the production seconds (tests).
    pub fast_retries: bool,
}

impl Wiring {
    /// A fresh engine over `store`: its own cancel token, no limiter to share, a real run.
    pub fn new(store: StateStore) -> Wiring {
        Wiring {
            store: Arc::new(Mutex::new(store)),
            cancel: CancellationToken::new(),
            limiter: None,
            dry_run: false,
            fast_retries: false,
        }
    }
}

/// Why the engine could not be wired: the token, or the Notion client built from it.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Notion(#[from] NotionError),
}

/// Builds the engine a sync runs on.
pub fn engine(cfg: Arc<Config>, w: Wiring) -> Result<Engine, WireError> {
    let notion = match cfg.notion.token.read() {
        Ok(token) => {
            let mut opts = if w.fast_retries {
                ClientOptions::for_tests()
            } else {
                ClientOptions::default()
            };
            opts.limiter = w.limiter;
            Some(Notion::with_options(&cfg.notion, &token, opts)?)
        }
        Err(e) if w.dry_run => {
            tracing::warn!("{e}");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut soundcloud = SoundCloud::new(&cfg.soundcloud, &cfg.cache_dir);
    if w.fast_retries {
        soundcloud = soundcloud.with_retry(RetryPolicy::FOR_TESTS);
    }
    if w.dry_run {
        soundcloud = soundcloud.read_only();
    }
    let source = Source::new(soundcloud, &cfg.download);
    let engine = Engine::new(cfg, source, notion, w.store, w.cancel);
    Ok(if w.fast_retries {
        engine.with_media_retry(MediaRetry::FOR_TESTS)
    } else {
        engine
    })
}
