//! `playlistd service install|uninstall`: runs the daemon under the user's service manager.
//!
//! The unit and the plist are templates in the repository (`systemd/`, `launchd/`), embedded
//! here so the binary can install itself. Decisions and invariants:
//! - Installed files name the real binary by absolute path: service managers do not search
//!   the login shell's PATH, and launchd requires an absolute program path.
//! - The config path goes in as `PLAYLISTD_CONFIG`, not a flag, so the file keeps working
//!   whatever the command line grows.
//! - Paths are escaped for their format (systemd quoting with `%%` and `$$`; XML entities), so
//!   paths with spaces, `%`, `&` or quotes produce a valid file. Paths that no escaping can
//!   carry (relative, not UTF-8, control characters) are refused before anything is written.
//! - Files are written atomically, so a half-written unit is never loaded.
//! - Nothing here runs `systemctl` or `launchctl`: the caller prints (or runs) the returned
//!   command, so install and uninstall stay testable in a temporary home.

use crate::util::write_atomically;
use std::path::{Path, PathBuf};

pub const SYSTEMD_UNIT: &str = "playlistd.service";
pub const LAUNCHD_LABEL: &str = "org.playlistd.playlistd";
pub const SYSTEMD_TEMPLATE: &str = include_str!("../systemd/playlistd.service");
pub const LAUNCHD_TEMPLATE: &str = include_str!("../launchd/org.playlistd.playlistd.plist");

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the {what} path {path} is not absolute (fix: give an absolute path)")]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error(
        "the {what} path {path:?} cannot be written into a service file: it is not UTF-8 or has control characters (fix: move it to a plainer path)"
    )]
    Unrepresentable { what: &'static str, path: PathBuf },
    #[error(
        "the playlistd binary {0} does not exist (fix: install playlistd first, e.g. `cargo install --path .`)"
    )]
    NoBinary(PathBuf),
    #[error("cannot {action} {path}: {source} (fix: check that the directory is writable)")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// A systemd user unit in `~/.config/systemd/user/`.
    Systemd,
    /// A launchd agent in `~/Library/LaunchAgents/`.
    Launchd,
}

impl Platform {
    /// The service manager of the platform this binary was built for.
    pub fn current() -> Option<Platform> {
        if cfg!(target_os = "macos") {
            Some(Platform::Launchd)
        } else if cfg!(target_os = "linux") {
            Some(Platform::Systemd)
        } else {
            None
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Platform::Systemd => SYSTEMD_TEMPLATE,
            Platform::Launchd => LAUNCHD_TEMPLATE,
        }
    }

    /// Where the installed file goes.
    pub fn service_file(self, home: &Path) -> PathBuf {
        match self {
            Platform::Systemd => home.join(".config/systemd/user").join(SYSTEMD_UNIT),
            Platform::Launchd => home
                .join("Library/LaunchAgents")
                .join(format!("{LAUNCHD_LABEL}.plist")),
        }
    }
}

/// Which service manager started this process, if any: lets the daemon avoid duplicating
/// what the manager already does (journald timestamps, launchd's unrotated stdout files).
pub fn running_under() -> Option<Platform> {
    if std::env::var("XPC_SERVICE_NAME").is_ok_and(|v| v == LAUNCHD_LABEL) {
        Some(Platform::Launchd)
    } else if crate::logging::stderr_is_journal() {
        Some(Platform::Systemd)
    } else {
        None
    }
}

/// Inside a double-quoted systemd word: C-style escapes, and `%` is a specifier everywhere.
/// `$` starts a variable only in command lines, so it is doubled only there.
fn systemd_quoted(s: &str, in_command: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if in_command => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn xml_escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The service file for `platform`. Paths should be absolute and printable; [`install`]
/// checks that, this does not.
pub fn render(platform: Platform, binary_path: &Path, home: &Path, config_path: &Path) -> String {
    let (bin, home, config) = (
        binary_path.to_string_lossy(),
        home.to_string_lossy(),
        config_path.to_string_lossy(),
    );
    let home = home.trim_end_matches('/');
    match platform {
        Platform::Systemd => SYSTEMD_TEMPLATE
            .replace("@BIN@", &systemd_quoted(&bin, true))
            .replace("@HOME@", &systemd_quoted(home, false))
            .replace("@CONFIG@", &systemd_quoted(&config, false)),
        Platform::Launchd => LAUNCHD_TEMPLATE
            .replace("@BIN@", &xml_escaped(&bin))
            .replace("@HOME@", &xml_escaped(home))
            .replace("@CONFIG@", &xml_escaped(&config)),
    }
}

/// What [`install`] did, and what the user runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    pub path: PathBuf,
    /// A file was already there and was replaced (so the command restarts the service).
    pub replaced: bool,
    /// A shell command line that loads and starts the service.
    pub enable_command: String,
    /// Something else worth saying, on one line.
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallOutcome {
    /// Files removed; empty when the service was not installed.
    pub removed: Vec<PathBuf>,
    /// A shell command line that stops the service and makes the manager forget it. Works
    /// after the files are gone: a loaded unit or agent stays addressable until then.
    pub stop_command: String,
}

fn check_path(what: &'static str, path: &Path) -> Result<(), ServiceError> {
    if !path.is_absolute() {
        return Err(ServiceError::NotAbsolute {
            what,
            path: path.to_path_buf(),
        });
    }
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => Ok(()),
        _ => Err(ServiceError::Unrepresentable {
            what,
            path: path.to_path_buf(),
        }),
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_path_buf();
    move |source| ServiceError::Io {
        action,
        path,
        source,
    }
}

/// Single-quotes a word for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Writes the service file for `binary_path` (normally `std::env::current_exe()`).
pub fn install(
    platform: Platform,
    binary_path: &Path,
    home: &Path,
    config_path: &Path,
) -> Result<InstallOutcome, ServiceError> {
    check_path("playlistd binary", binary_path)?;
    check_path("home", home)?;
    check_path("config file", config_path)?;
    if !binary_path.is_file() {
        return Err(ServiceError::NoBinary(binary_path.to_path_buf()));
    }
    let path = platform.service_file(home);
    let dir = path.parent().expect("service file has a directory");
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    if platform == Platform::Launchd {
        // launchd opens StandardOutPath/StandardErrorPath but does not create their folder.
        let logs = home.join("Library/Logs/playlistd");
        std::fs::create_dir_all(&logs).map_err(io("create", &logs))?;
    }
    let replaced = path.exists();
    let text = render(platform, binary_path, home, config_path);
    write_atomically(&path, text.as_bytes(), 0o644).map_err(io("write", &path))?;

    let (enable_command, note) = match platform {
        Platform::Systemd => (
            if replaced {
                "systemctl --user daemon-reload && systemctl --user enable playlistd && systemctl --user restart playlistd"
                    .to_string()
            } else {
                "systemctl --user daemon-reload && systemctl --user enable --now playlistd"
                    .to_string()
            },
            Some(
                "to keep it running while you are logged out: loginctl enable-linger \"$USER\""
                    .to_string(),
            ),
        ),
        Platform::Launchd => {
            let bootstrap = format!(
                "launchctl bootstrap gui/$(id -u) {}",
                shell_word(&path.to_string_lossy())
            );
            let cmd = if replaced {
                // bootstrap refuses a label that is already loaded.
                format!("launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL} 2>/dev/null; {bootstrap}")
            } else {
                bootstrap
            };
            (cmd, None)
        }
    };
    Ok(InstallOutcome {
        path,
        replaced,
        enable_command,
        note,
    })
}

/// Removes the service file (and, for systemd, the `enable` symlink, which `disable` could no
/// longer remove once the unit file is gone).
pub fn uninstall(platform: Platform, home: &Path) -> Result<UninstallOutcome, ServiceError> {
    let mut candidates = vec![platform.service_file(home)];
    if platform == Platform::Systemd {
        candidates.push(
            home.join(".config/systemd/user/default.target.wants")
                .join(SYSTEMD_UNIT),
        );
    }
    let mut removed = Vec::new();
    for path in candidates {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    let stop_command = match platform {
        Platform::Systemd => {
            "systemctl --user stop playlistd; systemctl --user daemon-reload".to_string()
        }
        Platform::Launchd => format!("launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}"),
    };
    Ok(UninstallOutcome {
        removed,
        stop_command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: &str = "/Users/Jane Doe/My Apps/playlistd";
    const HOME: &str = "/Users/Jane Doe";
    const CONFIG: &str =
        "/Users/Jane Doe/Library/Application Support/org.playlistd.playlistd/playlists & more.toml";

    fn render_sample(p: Platform) -> String {
        render(p, Path::new(BIN), Path::new(HOME), Path::new(CONFIG))
    }

    /// The value of every `Key=` line in the [Service] section, in order.
    fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    #[test]
    fn systemd_unit_quotes_paths_with_spaces() {
        let unit = render_sample(Platform::Systemd);
        assert!(!unit.contains('@'), "all placeholders replaced:\n{unit}");
        assert_eq!(unit_values(&unit, "ExecStart"), [format!("\"{BIN}\" run")]);
        assert_eq!(
            unit_values(&unit, "Environment"),
            [
                format!("\"PLAYLISTD_CONFIG={CONFIG}\""),
                format!("\"PATH={HOME}/.local/bin:/usr/local/bin:/usr/bin:/bin\""),
            ]
        );
        for (key, value) in [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("WatchdogSec", "3min"),
            ("ExecReload", "/bin/kill -HUP $MAINPID"),
            ("Restart", "on-failure"),
            ("RestartSec", "30"),
            ("KillMode", "mixed"),
            ("TimeoutStopSec", "15"),
            ("NoNewPrivileges", "yes"),
            ("WantedBy", "default.target"),
        ] {
            assert_eq!(unit_values(&unit, key), [value], "{key}");
        }
        assert!(
            unit_values(&unit, "PrivateTmp").is_empty(),
            "needs user namespaces in a user unit"
        );
    }

    #[test]
    fn systemd_specials_are_escaped() {
        let unit = render(
            Platform::Systemd,
            Path::new("/opt/100%/pl$d \"x\"/playlistd"),
            Path::new("/home/u/"),
            Path::new("/home/u/50%.toml"),
        );
        assert_eq!(
            unit_values(&unit, "ExecStart"),
            ["\"/opt/100%%/pl$$d \\\"x\\\"/playlistd\" run"]
        );
        assert!(
            unit.contains("Environment=\"PLAYLISTD_CONFIG=/home/u/50%%.toml\""),
            "{unit}"
        );
        assert!(
            unit.contains("Environment=\"PATH=/home/u/.local/bin:"),
            "no double slash: {unit}"
        );
    }

    #[test]
    fn launchd_plist_is_well_formed_with_the_expected_keys() {
        let plist = render_sample(Platform::Launchd);
        assert!(!plist.contains('@'), "all placeholders replaced:\n{plist}");
        let root = xml::parse(&plist).unwrap_or_else(|e| panic!("{e}\n{plist}"));
        assert_eq!(root.name, "plist");
        let dict = xml::as_dict(&root.children[0]);
        assert_eq!(xml::text(dict["Label"]), "org.playlistd.playlistd");
        let args: Vec<String> = dict["ProgramArguments"]
            .children
            .iter()
            .map(xml::text)
            .collect();
        assert_eq!(args, [BIN, "run"]);
        assert_eq!(dict["RunAtLoad"].name, "true");
        assert_eq!(
            xml::as_dict(dict["KeepAlive"])["SuccessfulExit"].name,
            "false"
        );
        let env = xml::as_dict(dict["EnvironmentVariables"]);
        let path = xml::text(env["PATH"]);
        assert!(
            path.contains("/opt/homebrew/bin") && path.contains("/usr/local/bin"),
            "{path}"
        );
        assert!(path.starts_with(&format!("{HOME}/.local/bin:")), "{path}");
        assert_eq!(
            xml::text(env["PLAYLISTD_CONFIG"]),
            CONFIG,
            "& survives escaping"
        );
        assert_eq!(
            xml::text(dict["StandardOutPath"]),
            format!("{HOME}/Library/Logs/playlistd/launchd.out.log")
        );
        assert_eq!(
            xml::text(dict["StandardErrorPath"]),
            format!("{HOME}/Library/Logs/playlistd/launchd.err.log")
        );
        assert_eq!(dict["ExitTimeOut"].name, "integer");
        assert_eq!(xml::text(dict["ExitTimeOut"]), "15");
        assert_eq!(xml::text(dict["ProcessType"]), "Background");
    }

    #[test]
    fn install_and_uninstall_in_a_temp_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home dir");
        let bin = tmp.path().join("bin dir/playlistd");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let config = home.join(".config/playlistd/playlists.toml");

        for platform in [Platform::Systemd, Platform::Launchd] {
            let first = install(platform, &bin, &home, &config).unwrap();
            assert_eq!(first.path, platform.service_file(&home));
            assert!(!first.replaced);
            let text = std::fs::read_to_string(&first.path).unwrap();
            assert_eq!(text, render(platform, &bin, &home, &config));
            let second = install(platform, &bin, &home, &config).unwrap();
            assert!(second.replaced);
            match platform {
                Platform::Systemd => {
                    assert_eq!(
                        first.enable_command,
                        "systemctl --user daemon-reload && systemctl --user enable --now playlistd"
                    );
                    assert!(second.enable_command.contains("restart playlistd"));
                    assert!(
                        first
                            .path
                            .ends_with(".config/systemd/user/playlistd.service")
                    );
                    // What `systemctl enable` creates; uninstall must not leave it dangling.
                    let wants = home.join(".config/systemd/user/default.target.wants");
                    std::fs::create_dir_all(&wants).unwrap();
                    std::os::unix::fs::symlink(&first.path, wants.join(SYSTEMD_UNIT)).unwrap();
                }
                Platform::Launchd => {
                    assert_eq!(
                        first.enable_command,
                        format!(
                            "launchctl bootstrap gui/$(id -u) '{}'",
                            first.path.display()
                        )
                    );
                    assert!(
                        second
                            .enable_command
                            .starts_with("launchctl bootout gui/$(id -u)/org.playlistd.playlistd")
                    );
                    assert!(home.join("Library/Logs/playlistd").is_dir());
                }
            }
            let gone = uninstall(platform, &home).unwrap();
            let expected = if platform == Platform::Systemd { 2 } else { 1 };
            assert_eq!(gone.removed.len(), expected, "{gone:?}");
            assert!(!first.path.exists());
            assert!(
                uninstall(platform, &home).unwrap().removed.is_empty(),
                "idempotent"
            );
        }
    }

    #[test]
    fn install_refuses_paths_it_cannot_write() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let cfg = home.join("p.toml");
        let e = install(
            Platform::Systemd,
            Path::new("target/debug/playlistd"),
            home,
            &cfg,
        )
        .unwrap_err();
        assert!(matches!(e, ServiceError::NotAbsolute { .. }), "{e}");
        let e = install(Platform::Systemd, &home.join("a\nb"), home, &cfg).unwrap_err();
        assert!(matches!(e, ServiceError::Unrepresentable { .. }), "{e}");
        let e = install(Platform::Launchd, &home.join("missing"), home, &cfg).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not exist (fix: install playlistd first"),
            "{e}"
        );
        assert!(!Platform::Launchd.service_file(home).exists());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/a/b.plist"), "/a/b.plist");
        assert_eq!(shell_word("/a b/it's"), "'/a b/it'\\''s'");
    }

    /// `systemd-analyze verify` on a rendered unit, when this machine has systemd-analyze.
    #[test]
    fn rendered_unit_passes_systemd_analyze_verify() {
        let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
        else {
            // CI installs it (scripts/test), so there a missing tool is a failure.
            assert!(
                std::env::var("CI").is_err(),
                "systemd-analyze is missing under CI"
            );
            eprintln!("skipped: systemd-analyze is not installed");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        // A real executable: verify checks that ExecStart can be run.
        let bin = tmp.path().join("my bin/playlistd");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy("/bin/true", &bin).unwrap();
        let unit = tmp.path().join(SYSTEMD_UNIT);
        let home = Path::new("/home/jane doe");
        let text = render(
            Platform::Systemd,
            &bin,
            home,
            &home.join(".config/playlistd/50% off.toml"),
        );
        std::fs::write(&unit, text).unwrap();
        let runtime = tmp.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        for scope in ["--system", "--user"] {
            let out = std::process::Command::new(analyze)
                .arg(scope)
                .arg("verify")
                .arg(&unit)
                .env("XDG_RUNTIME_DIR", &runtime)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Unknown keys and bad values are only warnings: any mention of the unit fails too.
            assert!(
                out.status.success() && !stderr.contains(SYSTEMD_UNIT),
                "systemd-analyze {scope} verify: {}\n{stderr}",
                out.status
            );
        }
    }

    /// Just enough XML to check the plist's structure without a dependency: elements, text,
    /// comments, the prolog and the five predefined entities.
    mod xml {
        use std::collections::HashMap;

        #[derive(Debug)]
        pub struct Node {
            pub name: String,
            pub children: Vec<Node>,
            pub text: String,
        }

        pub fn text(n: &Node) -> String {
            n.text.clone()
        }

        /// A plist `<dict>` as key -> value node; panics on anything else.
        pub fn as_dict(n: &Node) -> HashMap<String, &Node> {
            assert_eq!(n.name, "dict");
            assert!(
                n.children.len().is_multiple_of(2),
                "dict with an odd child count"
            );
            n.children
                .chunks(2)
                .map(|kv| {
                    assert_eq!(kv[0].name, "key");
                    (kv[0].text.clone(), &kv[1])
                })
                .collect()
        }

        fn unescape(s: &str) -> Result<String, String> {
            let mut out = String::new();
            let mut rest = s;
            while let Some(i) = rest.find('&') {
                out.push_str(&rest[..i]);
                let end = rest[i..].find(';').ok_or("unterminated entity")? + i;
                out.push(match &rest[i + 1..end] {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    other => return Err(format!("unknown entity &{other};")),
                });
                rest = &rest[end + 1..];
            }
            if rest.contains('<') {
                return Err("raw < in text".into());
            }
            out.push_str(rest);
            Ok(out)
        }

        pub fn parse(src: &str) -> Result<Node, String> {
            let mut stack: Vec<Node> = vec![Node {
                name: String::new(),
                children: vec![],
                text: String::new(),
            }];
            let mut rest = src;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix("<!--") {
                    let end = after.find("-->").ok_or("unterminated comment")?;
                    if after[..end].contains("--") {
                        return Err("-- inside a comment".into());
                    }
                    rest = &after[end + 3..];
                } else if rest.starts_with("<?") || rest.starts_with("<!DOCTYPE") {
                    rest = &rest[rest.find('>').ok_or("unterminated declaration")? + 1..];
                } else if let Some(after) = rest.strip_prefix("</") {
                    let end = after.find('>').ok_or("unterminated end tag")?;
                    let node = stack.pop().ok_or("unbalanced")?;
                    if node.name != after[..end].trim() {
                        return Err(format!("</{}> closes <{}>", &after[..end], node.name));
                    }
                    stack.last_mut().ok_or("unbalanced")?.children.push(node);
                    rest = &after[end + 1..];
                } else if let Some(after) = rest.strip_prefix('<') {
                    let end = after.find('>').ok_or("unterminated tag")?;
                    let tag = &after[..end];
                    let (tag, empty) = match tag.strip_suffix('/') {
                        Some(t) => (t, true),
                        None => (tag, false),
                    };
                    let name = tag
                        .split_whitespace()
                        .next()
                        .ok_or("empty tag")?
                        .to_string();
                    let node = Node {
                        name,
                        children: vec![],
                        text: String::new(),
                    };
                    if empty {
                        stack.last_mut().ok_or("unbalanced")?.children.push(node);
                    } else {
                        stack.push(node);
                    }
                    rest = &after[end + 1..];
                } else {
                    let end = rest.find('<').unwrap_or(rest.len());
                    let t = unescape(&rest[..end])?;
                    if !t.trim().is_empty() {
                        stack.last_mut().ok_or("unbalanced")?.text.push_str(&t);
                    }
                    rest = &rest[end..];
                }
            }
            let mut top = stack.pop().ok_or("unbalanced")?;
            if !stack.is_empty() || top.children.len() != 1 {
                return Err("expected exactly one root element".into());
            }
            Ok(top.children.remove(0))
        }
    }
}
