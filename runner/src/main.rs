//! The `offsite` command: parses arguments and calls the library.

use std::path::PathBuf;
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
        /// Archive jobs: only paths matching this glob
        #[arg(long = "match", value_name = "GLOB")]
        matching: Option<String>,
        /// Archive jobs: only files whose content (mtime) is at least this recent
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Archive jobs: only files whose content (mtime) is at most this recent
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Archive jobs: newest first, at most this much (e.g. 2GiB)
        #[arg(long, value_name = "SIZE")]
        max_bytes: Option<String>,
    },
    /// Archive jobs: which volumes and destinations hold matching files
    Find {
        job: String,
        /// A glob: with a `/`, over the whole path; else over file names
        pattern: String,
        /// Content time (mtime) at least T (RFC 3339, a date, or an age like 3d)
        #[arg(long, value_name = "T")]
        since: Option<String>,
        #[arg(long, value_name = "T")]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Archive jobs: one archived file to stdout, read from its volume
    Cat {
        job: String,
        path: String,
        /// The version that was at the source at T (default: the newest)
        #[arg(long, value_name = "T")]
        at: Option<String>,
        /// Read the volume from this destination
        #[arg(long, value_name = "DEST")]
        from: Option<String>,
    },
    /// Archive jobs: the catalog
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
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
    /// Conformance round trip: upload, list, fetch, remove, list
    Test {
        file: PathBuf,
        /// A setting, KEY=VALUE (KEY_file=PATH reads a secret); repeat
        #[arg(long = "setting", short = 's', value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Bytes of random data to round-trip
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Rebuild the catalog from the volumes at a destination alone
    Rebuild {
        job: String,
        #[arg(long, value_name = "DEST")]
        from: String,
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
                } => commands::plugins::test(&config, &file, &settings, size).await,
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
        c @ (Command::Find { .. } | Command::Cat { .. } | Command::Catalog { .. }) => {
            dispatch_archive(c, path).await
        }
        Command::Restore {
            job,
            generation,
            from,
            to_dsn,
            to_dir,
            output,
            force,
            matching,
            since,
            until,
            max_bytes,
        } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            if config.job(&job).is_ok_and(|j| j.source.archive().is_some()) {
                let filter = [matching, since, until, max_bytes];
                return restore_archive(&config, &job, to_dir, from.as_deref(), force, filter)
                    .await;
            }
            if matching.is_some() || since.is_some() || until.is_some() || max_bytes.is_some() {
                anyhow::bail!(
                    "--match, --since, --until and --max-bytes apply to archive jobs only"
                );
            }
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

/// `restore` of an archive job: `filter` is `--match`, `--since`,
/// `--until`, `--max-bytes` as given.
async fn restore_archive(
    config: &Config,
    job: &str,
    to_dir: Option<PathBuf>,
    from: Option<&str>,
    force: bool,
    filter: [Option<String>; 4],
) -> anyhow::Result<bool> {
    let [matching, since, until, max_bytes] = filter;
    let to_dir = to_dir.ok_or_else(|| {
        anyhow::anyhow!("an archive job restores files: say where with --to-dir DIR")
    })?;
    let max_bytes = max_bytes
        .map(|m| {
            offsite::limits::parse_size(&m)
                .map(|n| n as u64)
                .ok_or_else(|| {
                    anyhow::anyhow!("--max-bytes `{m}` is not a size; write e.g. 2GiB or 500MiB")
                })
        })
        .transpose()?;
    let query = commands::archive::query(matching.as_deref(), since.as_deref(), until.as_deref())?;
    let args = commands::archive::RestoreArgs {
        to_dir: &to_dir,
        query,
        max_bytes,
        from,
        force,
    };
    commands::archive::restore(config, job, args).await
}

/// `find`, `cat` and `catalog` (archive jobs).
async fn dispatch_archive(command: Command, path: PathBuf) -> anyhow::Result<bool> {
    match command {
        Command::Find {
            job,
            pattern,
            since,
            until,
            json,
        } => {
            let config = load(&path, false)?;
            offsite::log::init(None);
            let q = commands::archive::query(Some(&pattern), since.as_deref(), until.as_deref())?;
            commands::archive::find(&config, &job, &q, json)
        }
        Command::Cat {
            job,
            path: p,
            at,
            from,
        } => {
            let config = load(&path, false)?;
            offsite::log::init(None);
            commands::archive::cat(&config, &job, &p, at.as_deref(), from.as_deref()).await
        }
        Command::Catalog {
            command: CatalogCommand::Rebuild { job, from },
        } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            commands::archive::rebuild(&config, &job, &from).await
        }
        _ => unreachable!("dispatch sends only find, cat and catalog here"),
    }
}
