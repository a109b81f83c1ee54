//! Listing a playlist.
pub mod soundcloud;
