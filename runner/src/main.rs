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
        #[command(flatten)]
        archive: Box<ArchiveFilter>,
        /// Point-in-time recovery (WAL jobs, --to-dir): replay to this
        /// time, "YYYY-MM-DD HH:MM:SS+ZZ" (a zone is required)
        #[arg(long, value_name = "TIME", group = "recovery")]
        to_time: Option<String>,
        /// ... to this WAL position (X/X)
        #[arg(long, value_name = "LSN", group = "recovery")]
        to_lsn: Option<String>,
        /// ... to this restore point (pg_create_restore_point)
        #[arg(long, value_name = "NAME", group = "recovery")]
        to_name: Option<String>,
        /// ... only until the snapshot is consistent
        #[arg(long, group = "recovery")]
        immediate: bool,
    },
    /// archive_command: store one WAL file durably (exit 0 only then)
    WalPush {
        job: String,
        /// The file PostgreSQL hands over (%p)
        path: PathBuf,
    },
    /// restore_command: 0 restored; 1 not archived; 200 on any other error
    WalFetch {
        job: String,
        /// The file PostgreSQL wants (%f)
        name: String,
        /// Where to write it (%p)
        path: PathBuf,
    },
    /// Archive jobs: which volumes and destinations hold matching files
    Find {
        job: String,
        /// A glob: with a `/`, over the whole path; else over file names
        /// (bytes as the OS gives them: names need not be UTF-8)
        pattern: std::ffi::OsString,
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
        /// The file's path as archived (any bytes the OS allows)
        path: std::ffi::OsString,
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

/// `restore` of an archive job: which files (boxed in `Command::Restore`,
/// which would be large otherwise).
#[derive(clap::Args)]
struct ArchiveFilter {
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
    // restore_command: a status up to 125 means "not archived" to
    // PostgreSQL, which may then end recovery early; a bad command line or
    // a panic in wal-fetch must stop recovery instead.
    let wal_fetch = std::env::args_os().any(|a| a == "wal-fetch");
    if wal_fetch {
        std::panic::set_hook(Box::new(|p| {
            eprintln!("offsite wal-fetch: internal error: {p}");
            std::process::exit(offsite::wal::fetch::EXIT_FATAL.into());
        }));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if wal_fetch && e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(offsite::wal::fetch::EXIT_FATAL);
        }
        Err(e) => e.exit(),
    };
    let path = Config::locate(cli.config.as_deref());
    if let Command::WalFetch {
        job,
        name,
        path: to,
    } = &cli.command
    {
        return wal_fetch_main(&path, job, name, to);
    }
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

/// `wal-fetch` owns its exit status: every failure, including a config
/// that cannot be read, is fatal (200), never "not archived" (1).
fn wal_fetch_main(
    config: &std::path::Path,
    job: &str,
    name: &str,
    to: &std::path::Path,
) -> ExitCode {
    use offsite::wal::fetch::EXIT_FATAL;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offsite wal-fetch: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    offsite::log::init(Some(&config.runner.log_file));
    match tokio::runtime::Runtime::new() {
        Ok(rt) => ExitCode::from(rt.block_on(commands::wal::fetch(&config, job, name, to))),
        Err(e) => {
            eprintln!("offsite wal-fetch: cannot start: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// The recovery target the restore flags name, if any.
fn recovery_target(
    time: Option<String>,
    lsn: Option<String>,
    name: Option<String>,
    immediate: bool,
) -> anyhow::Result<Option<offsite::wal::catalog::Target>> {
    use offsite::wal::catalog::{Target, parse_time};
    Ok(match (time, lsn, name) {
        (Some(t), _, _) => Some(Target::Time(
            parse_time(&t).map_err(|e| anyhow::anyhow!("--to-time: {e}"))?,
        )),
        (_, Some(l), _) => Some(Target::Lsn(
            l.parse().map_err(|e| anyhow::anyhow!("--to-lsn: {e}"))?,
        )),
        (_, _, Some(n)) => Some(Target::Name(n)),
        _ if immediate => Some(Target::Immediate),
        _ => None,
    })
}

/// `plugins` commands work without a config file (defaults apply); all
/// others need one.
fn load(path: &std::path::Path, optional: bool) -> anyhow::Result<Config> {
    if optional && !path.exists() {
        return Ok(Config::defaults(path));
    }
    Ok(Config::load(path)?)
}

/// `offsite plugins …`: needs no jobs, so a missing config file is the defaults.
async fn dispatch_plugins(command: PluginsCommand, path: &Path) -> anyhow::Result<bool> {
    offsite::log::init(None);
    let config = load(path, true)?;
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

async fn dispatch(command: Command, path: PathBuf) -> anyhow::Result<bool> {
    match command {
        Command::Plugins { command } => dispatch_plugins(command, &path).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            offsite::log::init(None);
            commands::config_check::check(&path).await
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
        Command::WalPush { job, path: file } => {
            let config = load(&path, false)?;
            offsite::log::init(Some(&config.runner.log_file));
            commands::wal::push(&config, &job, &file).await
        }
        Command::WalFetch { .. } => unreachable!("handled before the runtime starts"),
        c @ (Command::Find { .. } | Command::Cat { .. } | Command::Catalog { .. }) => {
            dispatch_archive(c, path).await
        }
        c @ Command::Restore { .. } => dispatch_restore(c, path).await,
    }
}

/// `restore` of an archive job: `filter` as given on the command line.
async fn restore_archive(
    config: &Config,
    job: &str,
    to_dir: Option<PathBuf>,
    from: Option<&str>,
    force: bool,
    filter: ArchiveFilter,
) -> anyhow::Result<bool> {
    let ArchiveFilter {
        matching,
        since,
        until,
        max_bytes,
    } = filter;
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
    let query = commands::archive::query(
        matching.as_deref().map(str::as_bytes),
        since.as_deref(),
        until.as_deref(),
    )?;
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
            let q = commands::archive::query(
                Some(std::os::unix::ffi::OsStrExt::as_bytes(pattern.as_os_str())),
                since.as_deref(),
                until.as_deref(),
            )?;
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

/// `restore`: a generation, a point in time (WAL jobs), or files of an
/// archive job.
async fn dispatch_restore(command: Command, path: PathBuf) -> anyhow::Result<bool> {
    let Command::Restore {
        job,
        generation,
        from,
        to_dsn,
        to_dir,
        output,
        force,
        archive,
        to_time,
        to_lsn,
        to_name,
        immediate,
    } = command
    else {
        unreachable!("dispatch_restore is called with Command::Restore")
    };
    let config = load(&path, false)?;
    offsite::log::init(Some(&config.runner.log_file));
    if config.job(&job).is_ok_and(|j| j.source.archive().is_some()) {
        anyhow::ensure!(
            to_time.is_none() && to_lsn.is_none() && to_name.is_none() && !immediate,
            "--to-time, --to-lsn, --to-name and --immediate apply to WAL jobs only; an archive job restores files (--match, --since, --until, --max-bytes)"
        );
        return restore_archive(&config, &job, to_dir, from.as_deref(), force, *archive).await;
    }
    let f = &archive;
    if f.matching.is_some() || f.since.is_some() || f.until.is_some() || f.max_bytes.is_some() {
        anyhow::bail!("--match, --since, --until and --max-bytes apply to archive jobs only");
    }
    if let Some(t) = recovery_target(to_time, to_lsn, to_name, immediate)? {
        let (Some(dir), None, None, None) = (&to_dir, &to_dsn, &output, &generation) else {
            anyhow::bail!(
                "point-in-time recovery writes a data directory: give --to-dir DIR (and no --generation: the snapshot is picked for the target)"
            );
        };
        anyhow::ensure!(
            from.is_none(),
            "point-in-time recovery restores from the local store; --from is not supported with a recovery target yet"
        );
        return commands::restore::pitr::restore(&config, &job, t, dir, force).await;
    }
    let target = match (to_dsn, to_dir, output) {
        (Some(d), None, None) => commands::restore::Target::Dsn(d),
        (None, Some(d), None) => commands::restore::Target::Dir(d),
        (None, None, Some(f)) => commands::restore::Target::File(f),
        _ => {
            anyhow::bail!("say where to restore: one of --to-dsn DSN, --to-dir DIR, --output FILE")
        }
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
