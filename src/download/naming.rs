//! File names: the output template, sanitising the values put into it, and finding a track's
//! finished file by its `[id]` whatever the name it was given before.
//!
//! Invariants:
//! - a rendered name is one safe component on every common file system (no separators, control
//!   characters, bidi overrides or leading dots), never empty, at most [`MAX_NAME_BYTES`] bytes,
//!   cut on a character boundary, with the id always whole;
//! - a file is taken as a track's only when its extension is audio, it is non-empty, and its
//!   name is the current one or one the template gives with the id fenced by literal text, so
//!   a track never claims another's file (`[4]` is not `[42]`).

use super::Downloaded;
use crate::model::Track;
use regex::Regex;
use std::path::Path;

/// File names stay well under every file system's 255-byte limit, with room for the extension
/// and yt-dlp's `.part`/`.ytdl` suffixes.
pub const MAX_NAME_BYTES: usize = 200;

/// Extensions a finished track may have; anything else next to it (artwork, `.part`) is not the
/// track.
const AUDIO_EXTENSIONS: &[&str] = &[
    "mp3", "m4a", "aac", "opus", "ogg", "oga", "flac", "wav", "webm", "weba", "mka", "mp4", "aiff",
    "aif", "wma", "alac",
];

/// Looks in `dir` for this track's file: first under its current name, then under any name the
/// template could have given it before (a rename upstream). Zero-byte matches are broken earlier
/// writes and are removed so that yt-dlp does not take them as done.
pub(super) async fn find_existing(
    dir: &Path,
    stem: &str,
    matcher: Option<&Regex>,
) -> Option<Downloaded> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    let mut by_template = None;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((file_stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !AUDIO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            continue;
        }
        let exact = file_stem == stem;
        if !exact && !matcher.is_some_and(|m| m.is_match(file_stem)) {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.len() == 0 {
            let _ = tokio::fs::remove_file(entry.path()).await;
            continue;
        }
        let found = Downloaded {
            path: entry.path(),
            bytes: meta.len(),
            engine: None,
            requests: None,
        };
        if exact {
            return Some(found);
        }
        by_template.get_or_insert(found);
    }
    by_template
}

/// Makes one value safe as (part of) a file name on every common file system: no separators, NUL
/// or control characters, none of Windows' reserved `<>:"|?*`, no bidi overrides, no leading dots
/// (hidden files), trimmed, and never empty. Everything else, Japanese and emoji included, stays.
pub fn sanitize_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => out.push('_'),
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    let trimmed = trim_name(&out);
    if trimmed.is_empty() {
        "untitled".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Leading dots hide a file; trailing dots and spaces are dropped by Windows.
fn trim_name(s: &str) -> &str {
    s.trim()
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .trim()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(super) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Artist,
    Title,
    Id,
    Playlist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

/// `download.output_template`, parsed once. Unknown `{words}` stay literal text.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub(super) fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let field = [
                ("{artist}", Field::Artist),
                ("{title}", Field::Title),
                ("{id}", Field::Id),
                ("{playlist}", Field::Playlist),
            ]
            .into_iter()
            .find(|(tag, _)| after.starts_with(tag));
            literal.push_str(&rest[..open]);
            match field {
                Some((tag, field)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(sanitize_literal(&std::mem::take(
                            &mut literal,
                        ))));
                    }
                    pieces.push(Piece::Field(field));
                    rest = &after[tag.len()..];
                }
                None => {
                    literal.push('{');
                    rest = &after[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(sanitize_literal(&literal)));
        }
        Template { pieces }
    }

    /// The file stem for `track`: sanitized values, the id kept whole, the other values shortened
    /// fairly (shortest first keeps its full length) so the name fits in [`MAX_NAME_BYTES`].
    pub(super) fn render(&self, track: &Track, playlist: &str) -> String {
        let id = sanitize_component(track.key.as_str());
        let value = |f: Field| match f {
            Field::Artist => sanitize_component(&track.artist),
            Field::Title => sanitize_component(&track.title),
            Field::Playlist => sanitize_component(playlist),
            Field::Id => id.clone(),
        };
        let mut parts: Vec<String> = Vec::with_capacity(self.pieces.len());
        let mut fixed = 0usize;
        let mut flexible: Vec<usize> = Vec::new();
        for piece in &self.pieces {
            let text = match piece {
                Piece::Literal(l) => l.clone(),
                Piece::Field(f) => value(*f),
            };
            if matches!(piece, Piece::Field(f) if *f != Field::Id) {
                flexible.push(parts.len());
            } else {
                fixed += text.len();
            }
            parts.push(text);
        }
        let mut budget = MAX_NAME_BYTES.saturating_sub(fixed);
        flexible.sort_by_key(|i| parts[*i].len());
        let mut left = flexible.len();
        for i in flexible {
            let share = budget / left;
            let cut = truncate_bytes(&parts[i], share);
            let cut = cut.trim_end_matches(['.', ' ']).to_string();
            budget -= cut.len();
            left -= 1;
            parts[i] = cut;
        }
        // Only a template whose own text (plus the id) is too long gets here.
        let name = parts.concat();
        let name = trim_name(truncate_bytes(&name, MAX_NAME_BYTES));
        if name.is_empty() {
            "untitled".to_string()
        } else {
            name.to_string()
        }
    }

    /// Matches any stem the template could have produced for this track's id, whatever its title
    /// and artist were then. `None` when the id is not fenced by literal text (e.g. `{title}{id}`),
    /// since the match could then claim another track's file.
    pub(super) fn matcher(&self, track: &Track) -> Option<Regex> {
        let at = self
            .pieces
            .iter()
            .position(|p| *p == Piece::Field(Field::Id))?;
        let fenced = |p: Option<&Piece>| !matches!(p, Some(Piece::Field(_)));
        if !fenced(at.checked_sub(1).and_then(|i| self.pieces.get(i)))
            || !fenced(self.pieces.get(at + 1))
        {
            return None;
        }
        let id = regex::escape(&sanitize_component(track.key.as_str()));
        let mut re = String::from("^");
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => re.push_str(&regex::escape(l)),
                Piece::Field(Field::Id) => re.push_str(&id),
                Piece::Field(_) => re.push_str(".*"),
            }
        }
        re.push('$');
        Regex::new(&re).ok()
    }
}

/// Template text between placeholders: the same character rules as values, without trimming
/// (the spaces around " - " are the point).
fn sanitize_literal(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        .map(|c| match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::tests::{TEMPLATE, track};

    #[test]
    fn sanitizing_keeps_text_and_drops_hazards() {
        assert_eq!(sanitize_component("  ..hidden. "), "hidden");
        assert_eq!(
            sanitize_component("a/b\\c:d*e?f\"g<h>i|j"),
            "a_b_c_d_e_f_g_h_i_j"
        );
        assert_eq!(
            sanitize_component("line\nbreak\r\n\ttab\0nul"),
            "line break tab nul"
        );
        assert_eq!(sanitize_component("\u{202E}evil\u{2066}"), "evil");
        assert_eq!(sanitize_component(" ... "), "untitled");
        assert_eq!(sanitize_component(""), "untitled");
        assert_eq!(sanitize_component("東京 🌃 👨‍👩‍👧 café"), "東京 🌃 👨‍👩‍👧 café");
    }

    #[test]
    fn names_are_capped_on_a_character_boundary() {
        let t = Template::parse(TEMPLATE);
        let tr = track("1", &"🎵".repeat(100), &"東".repeat(200), "u");
        let name = t.render(&tr, "p");
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        assert!(name.ends_with("東 [1]"), "{name}");
        assert!(name.starts_with("🎵🎵"), "{name}");
        // Short parts keep their full length; the long one gives way.
        let tr = track("1", "Short", &"t".repeat(1000), "u");
        let name = t.render(&tr, "p");
        assert!(
            name.starts_with("Short - ttt") && name.len() == MAX_NAME_BYTES,
            "{name}"
        );
        assert_eq!(
            Template::parse("{playlist} {x} {id}").render(&tr, "P/L"),
            "P_L {x} 1"
        );
        assert_eq!(
            Template::parse("{title}").render(&track("1", "", "", "u"), "p"),
            "untitled"
        );
    }

    #[test]
    fn the_id_must_be_fenced_to_match_old_names() {
        let tr = track("42", "a", "b", "u");
        let m = Template::parse(TEMPLATE).matcher(&tr).unwrap();
        assert!(m.is_match("Old - Name [42]"));
        assert!(!m.is_match("Old - Name [142]"));
        assert!(Template::parse("{title}{id}").matcher(&tr).is_none());
        assert!(
            Template::parse("{id} {title}")
                .matcher(&tr)
                .unwrap()
                .is_match("42 whatever")
        );
    }
}
