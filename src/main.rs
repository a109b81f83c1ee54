//! The `playlistd` command line: parse, dispatch, turn the outcome into an exit code.
//! Everything else lives in the library so tests can drive it.

use clap::{CommandFactory, Parser, Subcommand};
use playlistd::commands::{self, Global};
use playlistd::exit::ExitCode;
use std::path::PathBuf;

/// Keeps SoundCloud playlists mirrored into a Notion database and a local music folder.
#[derive(Debug, Parser)]
#[command(name = "playlistd", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// The playlists file (default: PLAYLISTD_CONFIG, then the platform config directory).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Directory for the state database (default: PLAYLISTD_STATE_DIR, then the platform state directory).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

const EXIT_CODES: &str = "Exit codes: 0 done; 1 some tracks failed (they are retried on later runs); \
2 bad configuration or arguments; 3 a playlist could not be synced or a check failed; \
4 another playlistd holds the state directory; 130 interrupted.";

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sync playlists now: the named ones (by name or URL), or all of them.
    Sync {
        /// Playlist names or URLs from the config file.
        playlists: Vec<String>,
        /// Show what would be created and downloaded; write nothing anywhere.
        #[arg(long)]
        dry_run: bool,
        /// Only the first N tracks of each playlist.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_tracks: Option<u32>,
        /// Do not download audio this time.
        #[arg(long)]
        no_download: bool,
        /// Write a JSON report of the run to this file.
        #[arg(long, value_name = "PATH")]
        results_file: Option<PathBuf>,
    },
    /// Check the config, the Notion token and database, yt-dlp, the download folder and
    /// every playlist, and say how to fix what is wrong.
    Check,
    /// Run as a daemon: sync each playlist on its schedule, reload the config when it is
    /// saved, answer `playlistd sync` requests (for systemd, launchd or a terminal).
    Run,
    /// Add a playlist to the config file (comments and layout are kept).
    Add {
        /// The playlist URL.
        url: String,
        /// Its name (default: derived from the URL).
        #[arg(long)]
        name: Option<String>,
        /// Its cron schedule (default: defaults.schedule).
        #[arg(long)]
        schedule: Option<String>,
    },
    /// Remove a playlist from the config file (its state, pages and files are kept).
    Remove {
        /// The playlist's name.
        name: String,
    },
    /// Install or remove the systemd user unit (Linux) or LaunchAgent (macOS).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Show what the state database knows about each playlist.
    Status {
        /// Only this playlist.
        playlist: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Clear the backoff of failed and parked tracks so the next sync tries them again.
    Retry {
        /// Only the tracks of these playlists.
        playlists: Vec<String>,
    },
    /// Analyse tracks downloaded earlier: tempo and key, the missing AIFF/WAV copies, their
    /// tags, and the Notion properties (values already there are kept).
    Analyze {
        /// Playlist names or URLs from the config file (default: all).
        playlists: Vec<String>,
    },
    /// Run a real sync against built-in fake SoundCloud and Notion servers on 127.0.0.1.
    Demo {
        /// Keep the demo's files in this directory instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the shell completion script for bash, zsh or fish (the README says where it goes).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff), e.g. `playlistd man > ~/.local/share/man/man1/playlistd.1`.
    Man,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes a completion script or the manual page, generated from the definition above, so
/// they never drift from the real options. A closed pipe (`| head`) is not an error.
fn print_shell_integration(cmd: &Cmd) -> Option<std::process::ExitCode> {
    use std::io::Write;
    let mut def = Cli::command();
    // Generated into memory first: clap_complete panics on a failed write.
    let mut text = Vec::new();
    match cmd {
        Cmd::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut def, "playlistd", &mut text);
        }
        Cmd::Man => clap_mangen::Man::new(def)
            .render(&mut text)
            .expect("writing to memory"),
        _ => return None,
    }
    let written = std::io::stdout().lock().write_all(&text);
    Some(match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("playlistd: cannot write to standard output: {e}");
            std::process::ExitCode::from(3)
        }
        _ => std::process::ExitCode::SUCCESS,
    })
}

#[derive(Debug, Subcommand)]
enum ServiceAction {
    /// Write the service file for this binary and print the command that enables it.
    Install,
    /// Remove the service file and print the command that stops the service.
    Uninstall,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(code) = print_shell_integration(&cli.cmd) {
        return code;
    }
    let global = Global {
        config: cli.config,
        state_dir: cli.state_dir,
        verbose: cli.verbose,
    };
    // The daemon sets up its own logging (files, rotation) from the config.
    let _log = if matches!(cli.cmd, Cmd::Run) {
        None
    } else {
        commands::init_logging(global.verbose)
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("playlistd: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let code: ExitCode = runtime.block_on(async move {
        match cli.cmd {
            Cmd::Sync {
                playlists,
                dry_run,
                max_tracks,
                no_download,
                results_file,
            } => {
                let opts = playlistd::sync::SyncOptions {
                    dry_run,
                    max_tracks: max_tracks.map(|n| n as usize),
                    no_download,
                };
                commands::sync(&global, &playlists, opts, results_file.as_deref()).await
            }
            Cmd::Check => commands::check(&global).await,
            Cmd::Run => commands::run(&global).await,
            Cmd::Add {
                url,
                name,
                schedule,
            } => commands::add(&global, &url, name.as_deref(), schedule.as_deref()).await,
            Cmd::Remove { name } => commands::remove(&global, &name),
            Cmd::Service { action } => {
                commands::service(&global, matches!(action, ServiceAction::Install))
            }
            Cmd::Status { playlist, json } => commands::status(&global, playlist.as_deref(), json),
            Cmd::Retry { playlists } => commands::retry(&global, &playlists).await,
            Cmd::Analyze { playlists } => commands::analyze(&global, &playlists).await,
            Cmd::Demo { dir } => commands::demo(dir.as_deref()).await,
            Cmd::Completions { .. } | Cmd::Man => unreachable!("printed before the runtime"),
        }
    });
    std::process::ExitCode::from(code as u8)
}
