//! The config file: DESIGN.md's user-facing contract.
//!
//! Read in two steps, like ripgrep's LowArgs → HiArgs: serde reads the file
//! into the shapes as written (`raw`, unknown keys refused there), then
//! one small parser per key turns each value into a type that cannot be
//! wrong (a [`JobSource`] instead of optional keys, a [`PgFormat`] and a
//! [`Compression`] instead of strings), collecting every problem.
//!
//! Every error names the file, the line and the key, and says what would be
//! accepted. Plugin settings are checked later against each plugin's
//! `describe()` (`plugin::configured`), since only the plugin knows its keys.
//!
//! - `runner`: `[runner]`, and the plugin limits it sets.
//! - `plugins`: `[destinations.NAME]`, `[notifiers.NAME]`, secret files.
//! - `job`: `[jobs.NAME]`, with `dsn` for the connection string.
//! - `archive`: the keys of a `source = "archive"` job (`ArchiveSpec`).
//! - [`suggest`]: the "did you mean" ending of every "no such name" error.
//! - `error`: located errors and the parsers every table shares.
//!
//! Adding a job key: a field in `raw::RawJob` and its name in `JOB_KEYS`
//! (for "did you mean"); one small parser in `job` (`cx.one_of` for a
//! name out of a list, `cx.ranged` for a count, a `limits::DurationRange`
//! for a duration) called from `build_job` in the order the keys are
//! documented; the typed value goes in [`Job`] if every source has it, or in
//! that source's struct (e.g. [`PostgresJob`]) if only one does — then
//! `check_source_keys` refuses it for the other kinds ("only used with
//! source = ..."). A test beside it in `config/tests.rs`; the key in the
//! README.
//!
//! Adding a source kind: a [`JobSource`] variant holding only its own keys
//! (a struct like [`PostgresJob`]), its name in `JobSource::KINDS`, a `Kind`
//! in `job.rs`, what it requires and refuses in `check_source_keys`, and its
//! assembly at the end of `build_job`. The compiler then names every
//! consumer that matches on the source.
//!
//! [`PgFormat`]: crate::source::postgres::PgFormat
//! [`Compression`]: crate::pipeline::Compression

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

mod archive;
mod dsn;
mod error;
mod job;
mod plugins;
mod raw;
mod runner;
pub mod suggest;
pub mod wal;

pub use archive::ArchiveSpec;
pub use dsn::{Dsn, redact_dsn};
pub use error::{ConfigError, ConfigErrors};
pub use job::{Job, JobSource, PostgresJob, Verify};
pub use plugins::{Event, NotifierRef, PluginRef, read_secret_file};
pub use runner::Runner;
pub use wal::WalSettings;

use error::Ctx;

pub const DEFAULT_PATH: &str = "/etc/offsite/offsite.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub runner: Runner,
    pub destinations: BTreeMap<String, PluginRef>,
    pub notifiers: BTreeMap<String, NotifierRef>,
    pub jobs: BTreeMap<String, Job>,
}

impl Config {
    /// The path to read: `--config`, else `OFFSITE_CONFIG`, else the default.
    pub fn locate(cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| std::env::var_os("OFFSITE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the config: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut cx = Ctx {
            file: path,
            text,
            errors: vec![],
        };
        let raw: raw::RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                cx.err(
                    e.span().map(|s| s.start),
                    "",
                    raw::explain_serde(e.message(), text, e.span()),
                );
                return Err(ConfigErrors(cx.errors));
            }
        };
        let runner = runner::build_runner(&mut cx, raw.runner.map(Spanned::into_inner));
        let mut destinations = BTreeMap::new();
        for (name, table) in &raw.destinations {
            if let Some(p) = plugins::build_plugin_ref(&mut cx, "destinations", name, table, &[]) {
                destinations.insert(name.clone(), p);
            }
        }
        let mut notifiers = BTreeMap::new();
        for (name, table) in &raw.notifiers {
            let on = plugins::build_on(&mut cx, name, table);
            if let Some(p) = plugins::build_plugin_ref(&mut cx, "notifiers", name, table, &["on"]) {
                notifiers.insert(name.clone(), NotifierRef { plugin: p, on });
            }
        }
        let mut jobs = BTreeMap::new();
        for (name, raw_job) in raw.jobs {
            if let Some(j) = job::build_job(&mut cx, &name, raw_job, &destinations, &notifiers) {
                jobs.insert(name, j);
            }
        }
        if cx.errors.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                runner,
                destinations,
                notifiers,
                jobs,
            })
        } else {
            Err(ConfigErrors(cx.errors))
        }
    }

    pub fn job(&self, name: &str) -> Result<&Job, String> {
        self.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            let hint = suggest::hint(name, &known, "it defines no jobs", "jobs defined");
            format!("no job `{name}` in {}; {hint}", self.path.display())
        })
    }

    /// A config with only defaults, for commands that need none (`plugins`).
    pub fn defaults(path: &Path) -> Config {
        Config {
            path: path.to_path_buf(),
            runner: Runner::default(),
            destinations: BTreeMap::new(),
            notifiers: BTreeMap::new(),
            jobs: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests;
