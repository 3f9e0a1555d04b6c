//! The `offsite` command: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use offsite::commands;
use offsite::config::Config;

#[derive(Parser)]
#[command(
    name = "offsite",
    version,
    about = "Backups on a schedule, verified, shipped off-site through sandboxed plugins"
)]
struct Cli {
    /// Config file [default: $OFFSITE_CONFIG, else /etc/offsite/offsite.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take one backup of JOB now; exit 0 only if every step succeeded
    Run { job: String },
    /// Run the schedules until SIGTERM
    Daemon,
    /// Generations, local and per destination, with status
    List {
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Verify a generation on demand
    Verify {
        job: String,
        #[arg(long, value_name = "NAME")]
        generation: Option<String>,
        /// Fetch it from this destination and compare
        #[arg(long, value_name = "DEST")]
        remote: Option<String>,
    },
    /// Restore a generation
    Restore {
        job: String,
        /// A generation name, or `latest`
        #[arg(long, value_name = "NAME")]
        generation: Option<String>,
        /// Fetch from this destination when the local copy is missing
        #[arg(long, value_name = "DEST")]
        from: Option<String>,
        #[arg(long, value_name = "DSN", group = "target")]
        to_dsn: Option<String>,
        #[arg(long, value_name = "DIR", group = "target")]
        to_dir: Option<PathBuf>,
        #[arg(long, value_name = "FILE", group = "target")]
        output: Option<PathBuf>,
        /// Restore into a non-empty directory
        #[arg(long)]
        force: bool,
    },
    /// Installed plugins
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The config file
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Every plugin in plugins_dir: name, version, kind, sha256, file
    List,
    /// A plugin's settings
    Inspect { name: String },
    /// Whether a file is a plugin this offsite can run (one line)
    Check { file: PathBuf },
    /// The contract suite: upload, list, prefix filtering, fetch, overwrite,
    /// missing names, an interrupted upload, remove
    Test {
        file: PathBuf,
        /// A setting, KEY=VALUE (KEY_file=PATH reads a secret); repeat
        #[arg(long = "setting", short = 's', value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Bytes of random data to round-trip
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
        /// Run the whole suite N times, each on a fresh instance
        #[arg(long, default_value_t = 1, value_name = "N")]
        repeat: u32,
        /// Show the plugin's own stdout and stderr (panics, tracebacks)
        #[arg(long)]
        debug: bool,
    },
    /// Write a new plugin project into ./NAME (builds with `cargo build --release`)
    New {
        name: String,
        /// A destination over HTTP (WebDAV), on the SDK's http module
        #[arg(long)]
        http: bool,
        /// The language (Rust only for now)
        #[arg(long, default_value = "rust", value_parser = ["rust"])]
        lang: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and every plugin's settings
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = Config::locate(cli.config.as_deref());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("offsite: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli.command, path));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("offsite: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `plugins` commands work without a config file (defaults apply); all
/// others need one.
fn load(path: &std::path::Path, optional: bool) -> anyhow::Result<Config> {
    if optional && !path.exists() {
        return Ok(Config::defaults(path));
    }
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn dispatch(command: Command, path: PathBuf) -> anyhow::Result<bool> {
    match command {
        Command::Plugins { command } => {
            offsite::log::init(None);
            let config = load(&path, true)?;
            match command {
                PluginsCommand::List => commands::plugins::list(&config).await.map(|_| true),
                PluginsCommand::Inspect { name } => commands::plugins::inspect(&config, &name)
                    .await
                    .map(|_| true),
                PluginsCommand::Check { file } => commands::plugins::check(&config, &file).await,
                PluginsCommand::Test {
                    file,
                    settings,
                    size,
                    repeat,
                    debug,
                } => {
                    let opts = commands::plugins::SuiteOptions {
                        size,
                        repeat,
                        debug,
                    };
                    commands::plugins::test(&config, &file, &settings, opts).await
                }
                PluginsCommand::New { name, http, lang } => {
                    commands::plugins::new(&name, &lang, http, Path::new(".")).map(|_| true)
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            offsite::log::init(None);
            commands::config_check(&path).await
        }
        Command::Run { job } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            commands::run::run(&config, &job).await
        }
        Command::Daemon => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            commands::daemon::daemon(path, config).await
        }
        Command::List { job, json } => {
            let config = load(&path, false)?;
            offsite::log::init(None);
            commands::list::list(&config, job.as_deref(), json).await
        }
        Command::Verify {
            job,
            generation,
            remote,
        } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            commands::verify::verify(&config, &job, generation.as_deref(), remote.as_deref()).await
        }
        Command::Restore {
            job,
            generation,
            from,
            to_dsn,
            to_dir,
            output,
            force,
        } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            let target = match (to_dsn, to_dir, output) {
                (Some(d), None, None) => commands::restore::Target::Dsn(d),
                (None, Some(d), None) => commands::restore::Target::Dir(d),
                (None, None, Some(f)) => commands::restore::Target::File(f),
                _ => anyhow::bail!(
                    "say where to restore: one of --to-dsn DSN, --to-dir DIR, --output FILE"
                ),
            };
            commands::restore::restore(
                &config,
                &job,
                generation.as_deref(),
                from.as_deref(),
                target,
                force,
            )
            .await
        }
    }
}
