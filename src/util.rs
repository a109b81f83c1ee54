//! The two jobs every part of playlistd shares, done one way: replacing a file so that a crash
//! or a reader never sees half of it, and turning any message into the one line a log, a
//! status table or an error shows.
//!
//! Invariants: [`write_atomically`] either leaves the old file or puts the whole new one in its
//! place, fsynced with its directory; [`one_line`] never returns a line break or a control
//! character, and never a run of spaces.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents` atomically: a temp file in the same directory, fsync,
/// rename, fsync of the directory. An existing file keeps its permissions; a new one gets
/// `new_file_mode` (Unix). A symlink is followed, so the link itself stays a link.
pub fn write_atomically(path: &Path, contents: &[u8], new_file_mode: u32) -> std::io::Result<()> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".playlistd-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(new_file_mode);
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = new_file_mode;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is; not every platform can open a
    // directory, and the data itself is already safe, so a failure here is not reported.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whitespace runs and control characters (newlines included) become single spaces, trimmed.
pub fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_breaks_controls_and_runs() {
        assert_eq!(one_line("  a\n\tb\u{0}c   d\r\n"), "a b c d");
        assert_eq!(one_line(""), "");
    }
}
