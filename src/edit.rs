//! `playlistd add` / `playlistd remove`: edits `playlists.toml` the way a person would.
//!
//! Invariants:
//! - Edits go through toml_edit, so every comment, blank line and key order the user wrote
//!   survives; only the one `[[playlist]]` table is added or removed.
//! - An edit never makes the file ambiguous: a name or URL (compared normalized) that is
//!   already there is refused, as is removing a name that is not there. The caller still
//!   validates the whole result with `config::parse` before writing it.
//! - Files are replaced atomically ([`write_atomically`]): the daemon's watcher and a reader
//!   racing with the write see the old file or the new one, never half of one. A symlinked
//!   config (dotfile managers) is written through the link, so the link survives.

use crate::config::Schedule;
use crate::model::{canonical_url, is_soundcloud_url};
use crate::util::write_atomically;
use std::path::{Path, PathBuf};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(
        "the config file is not valid TOML: {0} (fix: run `playlistd check` and correct the file first)"
    )]
    Parse(String),
    #[error(
        "`playlist` in the config file is not a list of [[playlist]] tables (fix: write each playlist as its own [[playlist]] table, as in playlists.toml.example)"
    )]
    NotTables,
    #[error(
        "{0:?} is not an http(s) URL (fix: paste the playlist's full link, e.g. https://soundcloud.com/user/sets/name)"
    )]
    BadUrl(String),
    #[error("cannot derive a playlist name from {0} (fix: give one with --name)")]
    NoName(String),
    #[error(
        "the playlist name is empty or contains control characters (fix: give a printable name with --name)"
    )]
    BadName,
    #[error(
        "bad cron expression {expr:?}: {reason} (fix: use 5 fields such as \"0 * * * *\", or 6 with seconds first)"
    )]
    BadSchedule { expr: String, reason: String },
    #[error("a playlist named {0:?} already exists (fix: choose another name with --name)")]
    DuplicateName(String),
    #[error(
        "playlist {name:?} already mirrors {url} (fix: nothing to do, or remove {name:?} first)"
    )]
    DuplicateUrl { name: String, url: String },
    #[error("no playlist named {name:?} (fix: use one of: {known})")]
    UnknownName { name: String, known: String },
    #[error("cannot write {path}: {source} (fix: check that the directory exists and is writable)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The name `add` gives a playlist when none is given: the slug after `/sets/`, so
/// `https://soundcloud.com/u/sets/late-night/s-AbC` is "late-night".
pub fn derive_name(url: &str) -> Option<String> {
    let u = Url::parse(url.trim()).ok()?;
    let segs: Vec<&str> = u.path_segments()?.filter(|s| !s.is_empty()).collect();
    let i = segs.iter().position(|s| *s == "sets")?;
    let slug = segs.get(i + 1)?;
    let slug = percent_decode(slug);
    (!slug.trim().is_empty()).then(|| slug.trim().to_string())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn parse_doc(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Parse(e.to_string().trim().replace('\n', " ")))
}

fn playlists_mut(doc: &mut DocumentMut) -> Result<Option<&mut ArrayOfTables>, EditError> {
    match doc.as_table_mut().get_mut("playlist") {
        None => Ok(None),
        Some(Item::ArrayOfTables(a)) => Ok(Some(a)),
        Some(_) => Err(EditError::NotTables),
    }
}

fn str_of<'a>(t: &'a Table, key: &str) -> Option<&'a str> {
    t.get(key).and_then(Item::as_str)
}

/// Appends a `[[playlist]]` table after the last one (or at the end of the file).
pub fn add_playlist(
    config_text: &str,
    url: &str,
    name: Option<&str>,
    schedule: Option<&str>,
) -> Result<String, EditError> {
    let url = url.trim();
    let parsed = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| EditError::BadUrl(url.to_string()))?;
    let name = match name {
        Some(n) => n.trim().to_string(),
        None => derive_name(url).ok_or_else(|| EditError::NoName(url.to_string()))?,
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(EditError::BadName);
    }
    let schedule = match schedule.map(str::trim) {
        Some(expr) => Some(
            Schedule::parse(expr)
                .map_err(|reason| EditError::BadSchedule {
                    expr: expr.to_string(),
                    reason,
                })?
                .expr,
        ),
        None => None,
    };

    let mut doc = parse_doc(config_text)?;
    let wanted = canonical_url(parsed.as_str());
    if let Some(list) = playlists_mut(&mut doc)? {
        for t in list.iter() {
            let existing = str_of(t, "name").unwrap_or("").trim();
            if existing == name {
                return Err(EditError::DuplicateName(name));
            }
            if str_of(t, "url").is_some_and(|u| canonical_url(u) == wanted) {
                return Err(EditError::DuplicateUrl {
                    name: existing.to_string(),
                    url: url.to_string(),
                });
            }
        }
    }

    let mut table = Table::new();
    table.insert("name", value(name.as_str()));
    // A soundcloud.com link is written in its canonical form (a share link's `?si=…` tracking
    // and `m.`/`www.` hosts gone; a secret set's `/s-…` token is part of the path and stays).
    // Other URLs stay as the user gave them: a feed's query may be what names it.
    let written = if is_soundcloud_url(&wanted) {
        wanted.as_str()
    } else {
        url
    };
    table.insert("url", value(written));
    if let Some(expr) = schedule {
        table.insert("schedule", value(expr));
    }
    let has_content = doc.as_table().iter().next().is_some() || !config_text.trim().is_empty();
    if has_content {
        table.decor_mut().set_prefix("\n");
    }
    match playlists_mut(&mut doc)? {
        Some(list) => list.push(table),
        None => {
            // Comments at the end of a file without playlists (such as the introduction left
            // by removing the last one) belong above the first table, not below it.
            let trailing = doc.trailing().as_str().unwrap_or("").to_string();
            if !trailing.trim().is_empty() {
                let end = if trailing.ends_with('\n') { "" } else { "\n" };
                table.decor_mut().set_prefix(format!("{trailing}{end}"));
                doc.set_trailing("");
            }
            let mut list = ArrayOfTables::new();
            list.push(table);
            doc.as_table_mut()
                .insert("playlist", Item::ArrayOfTables(list));
        }
    }
    Ok(doc.to_string())
}

/// Removes the `[[playlist]]` with this name, and the comments written directly above it.
/// Comments above the first playlist usually introduce the whole list, so they stay.
pub fn remove_playlist(config_text: &str, name: &str) -> Result<String, EditError> {
    let mut doc = parse_doc(config_text)?;
    let wanted = name.trim();
    let unknown = |names: Vec<String>| EditError::UnknownName {
        name: wanted.to_string(),
        known: if names.is_empty() {
            "(the file has no playlists)".to_string()
        } else {
            names.join(", ")
        },
    };
    let Some(list) = playlists_mut(&mut doc)? else {
        return Err(unknown(Vec::new()));
    };
    let names: Vec<String> = list
        .iter()
        .map(|t| str_of(t, "name").unwrap_or("").trim().to_string())
        .collect();
    let Some(index) = names.iter().position(|n| n == wanted) else {
        return Err(unknown(names.iter().map(|n| format!("{n:?}")).collect()));
    };
    let removed = list.remove(index);
    let leading = removed
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    if index == 0 && leading.trim() != "" {
        if let Some(next) = list.get_mut(0) {
            let own = next
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_string();
            let own = own.trim_start_matches(['\n', '\r']);
            next.decor_mut().set_prefix(format!("{leading}{own}"));
        } else {
            // The last playlist is gone: keep the introduction at the end of the file, where
            // the next `add` will put its table.
            let trailing = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing(format!(
                "{}{trailing}",
                leading.trim_end_matches([' ', '\t'])
            ));
        }
    }
    if list_is_empty(&mut doc) {
        doc.as_table_mut().remove("playlist");
    }
    Ok(doc.to_string())
}

fn list_is_empty(doc: &mut DocumentMut) -> bool {
    matches!(playlists_mut(doc), Ok(Some(list)) if list.is_empty())
}

/// [`write_atomically`] for the config file (new files are private: 0600).
pub fn write_config_atomically(path: &Path, text: &str) -> Result<(), EditError> {
    write_atomically(path, text.as_bytes(), 0o600).map_err(|source| EditError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::paths::Paths;

    const EXAMPLE: &str = include_str!("../playlists.toml.example");

    const MINIMAL: &str = "# my playlists\n[notion]\ndatabase = \"27ce73616c2780fbb40efefdd47d6640\" # the Music Tracks db\n";

    fn parse(text: &str) -> config::Config {
        let paths = Paths::for_tests(Path::new("/tmp/playlistd-edit-test"));
        config::parse(text, Path::new("playlists.toml"), &paths)
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
    }

    #[test]
    fn names_come_from_the_set_slug() {
        assert_eq!(
            derive_name("https://soundcloud.com/u/sets/late-night").as_deref(),
            Some("late-night")
        );
        assert_eq!(
            derive_name("https://soundcloud.com/u/sets/late-night/s-AbCdE?si=1").as_deref(),
            Some("late-night")
        );
        assert_eq!(
            derive_name("https://soundcloud.com/u/sets/caf%C3%A9-mix/").as_deref(),
            Some("café-mix")
        );
        assert_eq!(derive_name("https://soundcloud.com/u/some-track"), None);
        assert_eq!(derive_name("not a url"), None);
    }

    #[test]
    fn add_writes_a_soundcloud_link_in_canonical_form_and_others_as_given() {
        let url_of = |out: &str| parse(out).playlists[0].url.to_string();
        let out = add_playlist(
            MINIMAL,
            "http://m.soundcloud.com/dj/sets/late-night/s-AbCdE/?si=123&utm_source=clipboard#t=1",
            None,
            None,
        )
        .unwrap();
        assert!(
            out.contains("url = \"https://soundcloud.com/dj/sets/late-night/s-AbCdE\"\n"),
            "{out}"
        );
        assert_eq!(
            url_of(&out),
            "https://soundcloud.com/dj/sets/late-night/s-AbCdE"
        );
        let feed = "https://www.youtube.com/playlist?list=PLabc";
        let out = add_playlist(MINIMAL, feed, Some("Feed"), None).unwrap();
        assert!(out.contains(&format!("url = \"{feed}\"")), "{out}");
    }

    #[test]
    fn add_to_the_example_keeps_comments_and_parses() {
        let out = add_playlist(
            EXAMPLE,
            "https://soundcloud.com/dj/sets/late-night",
            None,
            Some("0 4 * * *"),
        )
        .unwrap();
        for line in EXAMPLE.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(out.contains(line), "lost comment {line:?}");
        }
        assert!(
            out.starts_with(EXAMPLE.trim_end()),
            "existing text unchanged:\n{out}"
        );
        assert!(out.ends_with(
            "\n\n[[playlist]]\nname = \"late-night\"\nurl = \"https://soundcloud.com/dj/sets/late-night\"\nschedule = \"0 4 * * *\"\n"
        ), "{out}");
        let c = parse(&out);
        assert_eq!(c.playlists.len(), 4);
        let p = c.playlist("late-night").unwrap();
        assert_eq!(p.schedule.expr, "0 4 * * *");
        assert_eq!(p.url.as_str(), "https://soundcloud.com/dj/sets/late-night");
    }

    #[test]
    fn add_goes_after_the_last_playlist_even_when_tables_follow() {
        let text = format!(
            "{MINIMAL}\n[[playlist]]\nname = \"a\"\nurl = \"https://soundcloud.com/u/sets/a\"\n\n# where state lives\n[paths]\nstate_dir = \"/tmp/s\"\n"
        );
        let out = add_playlist(&text, "https://soundcloud.com/u/sets/b", None, None).unwrap();
        let a = out.find("name = \"a\"").unwrap();
        let b = out.find("name = \"b\"").unwrap();
        let paths = out.find("[paths]").unwrap();
        assert!(a < b && b < paths, "{out}");
        assert!(out.contains("# where state lives\n[paths]"), "{out}");
        let c = parse(&out);
        assert_eq!(
            c.playlists
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(c.playlists[1].schedule == c.default_schedule);
    }

    #[test]
    fn add_to_a_file_without_playlists() {
        let out = add_playlist(
            MINIMAL,
            "https://soundcloud.com/u/sets/first",
            Some(" My First "),
            None,
        )
        .unwrap();
        assert!(out.starts_with(MINIMAL), "{out}");
        assert!(out.contains("# the Music Tracks db"));
        assert_eq!(parse(&out).playlists[0].name, "My First");
    }

    #[test]
    fn duplicates_and_bad_input_are_refused() {
        let e = add_playlist(
            EXAMPLE,
            "https://soundcloud.com/x/sets/y",
            Some("Radio show"),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, EditError::DuplicateName(_)), "{e}");
        // Same playlist, written differently (www., trailing slash, tracking query).
        let e = add_playlist(
            EXAMPLE,
            "https://www.soundcloud.com/all-lo_collective/sets/3017480e-bba1-40a3-8e0f-085ee846799b/?si=abc",
            Some("again"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string().split(" (fix").next().unwrap(),
            "playlist \"all:Lo Collective\" already mirrors https://www.soundcloud.com/all-lo_collective/sets/3017480e-bba1-40a3-8e0f-085ee846799b/?si=abc"
        );
        let e = add_playlist(EXAMPLE, "https://soundcloud.com/u/track", None, None).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        let e = add_playlist(EXAMPLE, "soundcloud.com/u/sets/x", None, None).unwrap_err();
        assert!(matches!(e, EditError::BadUrl(_)), "{e}");
        let e = add_playlist(
            EXAMPLE,
            "https://soundcloud.com/u/sets/x",
            None,
            Some("61 * * * *"),
        )
        .unwrap_err();
        assert!(matches!(e, EditError::BadSchedule { .. }), "{e}");
        let e =
            add_playlist("[notion\n", "https://soundcloud.com/u/sets/x", None, None).unwrap_err();
        assert!(
            matches!(e, EditError::Parse(_)) && !e.to_string().contains('\n'),
            "{e}"
        );
        let e = add_playlist(
            "playlist = []\n",
            "https://soundcloud.com/u/sets/x",
            None,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, EditError::NotTables), "{e}");
        for e in [EditError::BadName, EditError::NoName("u".into())] {
            assert!(
                !e.to_string().contains('\n') && e.to_string().contains("(fix: "),
                "{e}"
            );
        }
    }

    #[test]
    fn remove_keeps_the_rest_and_its_comments() {
        let out = remove_playlist(EXAMPLE, "Late night (secret set)").unwrap();
        assert!(!out.contains("Late night"), "{out}");
        assert!(
            !out.contains("# A private set is reached"),
            "its own comment goes with it"
        );
        assert!(out.contains("# Any page yt-dlp can list"), "{out}");
        assert!(out.contains("# One [[playlist]] per watched playlist."));
        let c = parse(&out);
        assert_eq!(
            c.playlists
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["all:Lo Collective", "Radio show"]
        );
    }

    #[test]
    fn removing_the_first_keeps_the_section_introduction() {
        let out = remove_playlist(EXAMPLE, "all:Lo Collective").unwrap();
        assert!(
            out.contains(
                "# One [[playlist]] per watched playlist.\n[[playlist]]\nname = \"Late night"
            ),
            "{out}"
        );
        assert_eq!(parse(&out).playlists.len(), 2);
        // Removing them all leaves the introduction, and a file that still parses.
        let out = remove_playlist(&out, "Late night (secret set)").unwrap();
        let out = remove_playlist(&out, "Radio show").unwrap();
        assert!(
            out.contains("# One [[playlist]] per watched playlist."),
            "{out}"
        );
        assert!(!out.contains("[[playlist]]\n"), "{out}");
        assert!(parse(&out).playlists.is_empty());
        // And adding again puts the table after it, without disturbing the layout.
        let out = add_playlist(&out, "https://soundcloud.com/u/sets/again", None, None).unwrap();
        let paths = out.find("[paths]").unwrap();
        assert_eq!(
            &out[paths..],
            "[paths]\n# state_dir = \"~/.local/state/playlistd\"\n# cache_dir = \"~/.cache/playlistd\"\n\n\
             # One [[playlist]] per watched playlist.\n[[playlist]]\nname = \"again\"\n\
             url = \"https://soundcloud.com/u/sets/again\"\n"
        );
        assert_eq!(parse(&out).playlists.len(), 1);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = remove_playlist(EXAMPLE, "Nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no playlist named \"Nope\" (fix: use one of: \"all:Lo Collective\", \"Late night (secret set)\", \"Radio show\")"
        );
        let e = remove_playlist(MINIMAL, "x").unwrap_err();
        assert!(e.to_string().contains("has no playlists"), "{e}");
    }

    #[test]
    fn atomic_write_replaces_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("playlists.toml");
        write_config_atomically(&path, "a = 1\n").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_config_atomically(&path, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    #[test]
    fn atomic_write_goes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("dotfiles");
        std::fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("playlists.toml");
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("playlists.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_config_atomically(&link, "new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn write_errors_name_the_fix() {
        let e = write_config_atomically(Path::new("/nonexistent-dir/x/playlists.toml"), "a")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot write /nonexistent-dir/x/playlists.toml:"),
            "{e}"
        );
    }
}
