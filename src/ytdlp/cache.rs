//! yt-dlp's own cache folder, which playlistd shares with it: every yt-dlp run gets
//! `--cache-dir <cache_dir>/yt-dlp`, and the native SoundCloud lister writes the client id it
//! scraped there, in yt-dlp's format, so a run scrapes soundcloud.com once, not once per
//! yt-dlp process.
//!
//! Invariant: what is written here is exactly what yt-dlp's `cache.py` writes and reads.

use std::path::{Path, PathBuf};

/// yt-dlp's cache folder inside playlistd's cache dir: every yt-dlp run gets `--cache-dir` so.
pub const YTDLP_CACHE_DIR: &str = "yt-dlp";

/// The version written into yt-dlp cache entries. yt-dlp's SoundCloud extractor loads its
/// client id without a minimum version, so any release reads it; this is the one whose
/// `cache.py` the format was taken from.
const YTDLP_CACHE_VERSION: &str = "2026.10.26";

/// Where yt-dlp keeps SoundCloud's client id (`cache.store('soundcloud', 'client_id', id)`
/// writes `<cache dir>/<section>/<key>.json`). playlistd writes it after a scrape, so the
/// downloads' yt-dlp runs start with the id instead of scraping soundcloud.com again, and
/// reads it when its own cache is empty.
pub fn ytdlp_client_id_file(cache_dir: &Path) -> PathBuf {
    cache_dir
        .join(YTDLP_CACHE_DIR)
        .join("soundcloud")
        .join("client_id.json")
}

/// A yt-dlp cache entry for a client id, in yt-dlp's own format:
/// `{"yt-dlp_version": "…", "data": "<id>"}`.
pub fn ytdlp_client_id_entry(client_id: &str) -> String {
    serde_json::json!({"yt-dlp_version": YTDLP_CACHE_VERSION, "data": client_id}).to_string()
}

/// The client id in a yt-dlp cache entry: `None` when it holds none (yt-dlp writes `null` while
/// it refreshes) or anything but a 32-character id. An entry without `yt-dlp_version` is
/// yt-dlp's pre-2022 form, the bare value, which yt-dlp still reads; so does this.
pub fn parse_ytdlp_client_id(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let data = if v.get("yt-dlp_version").is_some() {
        v.get("data")?
    } else {
        &v
    };
    let id = data.as_str()?;
    (id.len() == 32 && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ytdlp_client_id_entries_read_and_write_ytdlps_format() {
        let id = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let entry = ytdlp_client_id_entry(id);
        let v: serde_json::Value = serde_json::from_str(&entry).unwrap();
        assert_eq!(v["data"], id);
        assert_eq!(v["yt-dlp_version"], YTDLP_CACHE_VERSION);
        assert_eq!(parse_ytdlp_client_id(&entry).as_deref(), Some(id));
        // What yt-dlp writes while refreshing, its pre-2022 bare form, and junk.
        assert_eq!(
            parse_ytdlp_client_id(r#"{"yt-dlp_version": "2026.10.26", "data": null}"#),
            None
        );
        assert_eq!(
            parse_ytdlp_client_id(&format!("\"{id}\"")).as_deref(),
            Some(id)
        );
        for bad in ["", "{", r#"{"yt-dlp_version": "1", "data": "short"}"#] {
            assert_eq!(parse_ytdlp_client_id(bad), None, "{bad}");
        }
        assert_eq!(
            ytdlp_client_id_file(Path::new("/c")),
            Path::new("/c/yt-dlp/soundcloud/client_id.json")
        );
    }
}
