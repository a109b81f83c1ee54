//! Fake services on 127.0.0.1 that behave like the real APIs (see reference/).
pub mod notion;
pub mod sandbox;
pub mod soundcloud;
