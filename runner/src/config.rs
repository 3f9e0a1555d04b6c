//! The config file: DESIGN.md's user-facing contract.
//!
//! Every error names the file, the line and the key, and says what would be
//! accepted. Plugin settings are checked later against each plugin's
//! `describe()` (see `check_plugins`), since only the plugin knows its keys.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::plugin::settings::suggest;
use crate::schedule::Schedule;

pub const DEFAULT_PATH: &str = "/etc/offsite/offsite.toml";

/// One problem in the config, located.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- WAL archiving (issue 17): its keys live in config/wal.rs ----
pub mod wal;
pub use wal::WalSettings;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub runner: Runner,
    pub destinations: BTreeMap<String, PluginRef>,
    pub notifiers: BTreeMap<String, NotifierRef>,
    pub jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub backup_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
    /// Jobs running at once in the daemon (a backup loads the server).
    pub max_parallel: usize,
    pub plugin_memory: usize,
    pub plugin_timeout: Duration,
    pub transfer_timeout: Duration,
    /// An upload or fetch that moves no byte this long is stopped.
    pub stall_timeout: Duration,
    /// Let plugins write to stdout/stderr.
    pub debug_plugins: bool,
    /// How long `offsite daemon` lets running jobs finish after SIGTERM
    /// before cancelling them (their partial files are removed).
    pub shutdown_grace: Duration,
}

impl Default for Runner {
    fn default() -> Self {
        let limits = crate::plugin::Limits::default();
        Runner {
            backup_dir: "/var/backups".into(),
            plugins_dir: "/usr/lib/offsite/plugins".into(),
            state_dir: "/var/lib/offsite".into(),
            log_file: "/var/log/backup.log".into(),
            max_parallel: 1,
            plugin_memory: limits.memory_bytes,
            plugin_timeout: limits.call_timeout,
            transfer_timeout: limits.transfer_timeout,
            stall_timeout: limits.stall_timeout,
            debug_plugins: false,
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

impl Runner {
    pub fn limits(&self) -> crate::plugin::Limits {
        crate::plugin::Limits {
            memory_bytes: self.plugin_memory,
            call_timeout: self.plugin_timeout,
            transfer_timeout: self.transfer_timeout,
            stall_timeout: self.stall_timeout,
            debug_stdio: self.debug_plugins,
        }
    }

    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.state_dir.join("plugin-cache")
    }
}

/// A destination or notifier: a plugin and its settings (`KEY_file` read).
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub plugin: String,
    pub settings: BTreeMap<String, String>,
    /// Line of each setting, for errors found by the plugin's description.
    pub lines: BTreeMap<String, usize>,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct NotifierRef {
    pub plugin: PluginRef,
    pub on: Vec<Event>,
}

/// Events a notifier can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Success,
    Failure,
    VerifyFailed,
    UploadFailed,
    NotEnabled,
}

impl Event {
    pub const ALL: [(&'static str, Event); 5] = [
        ("success", Event::Success),
        ("failure", Event::Failure),
        ("verify-failed", Event::VerifyFailed),
        ("upload-failed", Event::UploadFailed),
        ("not-enabled", Event::NotEnabled),
    ];
    pub const DEFAULT: [Event; 4] = [
        Event::Failure,
        Event::VerifyFailed,
        Event::UploadFailed,
        Event::NotEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(s, _)| *s)
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    None,
    Checksum,
    Restore,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub source: SourceKind,
    /// Connection string; may hold a password, so never print it raw.
    pub dsn: Option<String>,
    /// sql | custom | tar | directory | snapshot
    pub format: String,
    /// Parallel jobs for the directory format.
    pub jobs: u32,
    pub paths: Vec<PathBuf>,
    pub compression: Compression,
    pub level: i32,
    /// Compression threads (zstd); 0 = one per core.
    pub threads: u32,
    pub keep: usize,
    /// Most good generations kept on local disk, counting those held
    /// because a destination still lacks them (default 2 × keep). Past it
    /// the oldest held one is dropped anyway, with an error and a notice.
    pub max_local: usize,
    pub schedule: Schedule,
    pub enabled: bool,
    pub destinations: Vec<String>,
    pub notifiers: Vec<String>,
    pub verify: Verify,
    pub verify_dsn: Option<String>,
    pub before: Option<PathBuf>,
    pub after: Option<PathBuf>,
    pub complete: Option<PathBuf>,
    pub hook_timeout: Duration,
    /// A file tree that is missing, empty, or on another filesystem than at
    /// the last good run is backed up as it is instead of failing the run.
    pub allow_empty: bool,
    /// Continuous WAL archiving (`wal = true`): snapshot jobs only.
    pub wal: Option<WalSettings>,
    pub line: usize,
}

// ---- raw shapes, as written ------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    runner: Option<Spanned<RawRunner>>,
    #[serde(default)]
    destinations: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    notifiers: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    jobs: BTreeMap<String, Spanned<RawJob>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRunner {
    backup_dir: Option<Spanned<PathBuf>>,
    plugins_dir: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    log_file: Option<Spanned<PathBuf>>,
    max_parallel: Option<Spanned<i64>>,
    plugin_memory: Option<Spanned<String>>,
    plugin_timeout: Option<Spanned<String>>,
    transfer_timeout: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<String>>,
    debug_plugins: Option<bool>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    source: Option<Spanned<String>>,
    dsn: Option<Spanned<String>>,
    dsn_file: Option<Spanned<PathBuf>>,
    format: Option<Spanned<String>>,
    jobs: Option<Spanned<i64>>,
    #[serde(default)]
    paths: Vec<Spanned<PathBuf>>,
    compression: Option<Spanned<String>>,
    level: Option<Spanned<i64>>,
    threads: Option<Spanned<i64>>,
    keep: Option<Spanned<i64>>,
    max_local: Option<Spanned<i64>>,
    schedule: Option<Spanned<String>>,
    enabled: Option<bool>,
    #[serde(default)]
    destinations: Vec<Spanned<String>>,
    #[serde(default)]
    notifiers: Vec<Spanned<String>>,
    verify: Option<Spanned<String>>,
    verify_dsn: Option<Spanned<String>>,
    before: Option<Spanned<PathBuf>>,
    after: Option<Spanned<PathBuf>>,
    complete: Option<Spanned<PathBuf>>,
    hook_timeout: Option<Spanned<String>>,
    allow_empty: Option<bool>,
    // WAL archiving keys (config/wal.rs); serde cannot flatten them here
    // because unknown keys are denied.
    wal: Option<Spanned<bool>>,
    wal_dir: Option<Spanned<PathBuf>>,
    wal_store_limit: Option<Spanned<String>>,
    wal_lag: Option<Spanned<String>>,
    wal_prefetch: Option<Spanned<i64>>,
}

const TOP_KEYS: &[&str] = &["runner", "destinations", "notifiers", "jobs"];
const RUNNER_KEYS: &[&str] = &[
    "backup_dir",
    "plugins_dir",
    "state_dir",
    "log_file",
    "max_parallel",
    "plugin_memory",
    "plugin_timeout",
    "transfer_timeout",
    "stall_timeout",
    "debug_plugins",
    "shutdown_grace",
];
const JOB_KEYS: &[&str] = &[
    "source",
    "dsn",
    "dsn_file",
    "format",
    "jobs",
    "paths",
    "compression",
    "level",
    "threads",
    "keep",
    "max_local",
    "schedule",
    "enabled",
    "destinations",
    "notifiers",
    "verify",
    "verify_dsn",
    "before",
    "after",
    "complete",
    "hook_timeout",
    "allow_empty",
];
pub const FORMATS: &[&str] = &["sql", "custom", "tar", "directory", "snapshot"];

/// Where problems are collected while the file is read.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&mut self, offset: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = offset.map(|o| self.line(o));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn at<T>(&mut self, s: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.err(Some(s.span().start), key, message);
    }
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
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                cx.err(
                    e.span().map(|s| s.start),
                    "",
                    explain_serde(e.message(), text, e.span()),
                );
                return Err(ConfigErrors(cx.errors));
            }
        };
        let runner = build_runner(&mut cx, raw.runner.map(Spanned::into_inner));
        let mut destinations = BTreeMap::new();
        for (name, table) in &raw.destinations {
            if let Some(p) = build_plugin_ref(&mut cx, "destinations", name, table, &[]) {
                destinations.insert(name.clone(), p);
            }
        }
        let mut notifiers = BTreeMap::new();
        for (name, table) in &raw.notifiers {
            let on = build_on(&mut cx, name, table);
            if let Some(p) = build_plugin_ref(&mut cx, "notifiers", name, table, &["on"]) {
                notifiers.insert(name.clone(), NotifierRef { plugin: p, on });
            }
        }
        let mut jobs = BTreeMap::new();
        for (name, raw_job) in raw.jobs {
            if let Some(j) = build_job(&mut cx, &name, raw_job, &destinations, &notifiers) {
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
            let hint = match suggest(name, &known) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "it defines no jobs".to_string(),
                None => format!("jobs defined: {}", known.join(", ")),
            };
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

/// serde's "unknown field `kep`, expected one of ..." plus a suggestion.
fn explain_serde(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let msg = message.trim().to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let word = rest.split('`').next().unwrap_or_default();
        // Which table the key is in decides which keys are accepted.
        let section = span.map(|s| section_of(text, s.start)).unwrap_or_default();
        let job_keys: Vec<&str> = JOB_KEYS.iter().chain(wal::KEYS).copied().collect();
        let known: &[&str] = if section.starts_with("jobs.") {
            &job_keys
        } else if section == "runner" {
            RUNNER_KEYS
        } else {
            TOP_KEYS
        };
        return match suggest(word, known) {
            Some(s) => format!("unknown key `{word}`: did you mean `{s}`?"),
            None => format!("unknown key `{word}`; accepted here: {}", known.join(", ")),
        };
    }
    msg
}

/// The `[table]` header in force at `offset`.
fn section_of(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

fn build_runner(cx: &mut Ctx, raw: Option<RawRunner>) -> Runner {
    let mut r = Runner::default();
    let Some(raw) = raw else { return r };
    for (slot, v) in [
        (&mut r.backup_dir, raw.backup_dir),
        (&mut r.plugins_dir, raw.plugins_dir),
        (&mut r.state_dir, raw.state_dir),
        (&mut r.log_file, raw.log_file),
    ] {
        if let Some(v) = v {
            *slot = v.into_inner();
        }
    }
    if let Some(m) = raw.max_parallel {
        match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=256).contains(&n) => r.max_parallel = n,
            _ => cx.at(
                &m,
                "runner.max_parallel",
                "must be a whole number from 1 to 256",
            ),
        }
    }
    if let Some(m) = raw.plugin_memory {
        match crate::limits::plugin_memory(m.get_ref()) {
            Ok(n) => r.plugin_memory = n,
            Err(e) => cx.at(&m, "runner.plugin_memory", e),
        }
    }
    use crate::limits::{PLUGIN_TIMEOUT, SHUTDOWN_GRACE, STALL_TIMEOUT, TRANSFER_TIMEOUT};
    for (slot, v, range) in [
        (&mut r.plugin_timeout, raw.plugin_timeout, PLUGIN_TIMEOUT),
        (
            &mut r.transfer_timeout,
            raw.transfer_timeout,
            TRANSFER_TIMEOUT,
        ),
        (&mut r.stall_timeout, raw.stall_timeout, STALL_TIMEOUT),
        (&mut r.shutdown_grace, raw.shutdown_grace, SHUTDOWN_GRACE),
    ] {
        if let Some(v) = v {
            match range.parse(v.get_ref()) {
                Ok(d) => *slot = d,
                Err(e) => cx.at(&v, &format!("runner.{}", range.key), e),
            }
        }
    }
    r.debug_plugins = raw.debug_plugins.unwrap_or(false);
    r
}

/// `256MiB`, `1GiB`, `512MB`, or plain bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..split].parse().ok()?;
    let mult = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn build_on(cx: &mut Ctx, name: &str, table: &Spanned<toml::Table>) -> Vec<Event> {
    let key = format!("notifiers.{name}.on");
    let Some(v) = table.get_ref().get("on") else {
        return Event::DEFAULT.to_vec();
    };
    let accepted: Vec<&str> = Event::ALL.iter().map(|(s, _)| *s).collect();
    // The line of `on = [...]` itself, not the table's header.
    let table_line = cx.line(table.span().start);
    let line = Some(find_key_line(cx.text, table_line, "on").unwrap_or(table_line));
    let file = cx.file.to_path_buf();
    let err = |key: &str, message: String| ConfigError {
        file: file.clone(),
        line,
        key: key.to_string(),
        message,
    };
    let Some(items) = v.as_array() else {
        cx.errors.push(err(
            &key,
            format!(
                "must be a list, e.g. on = [\"failure\", \"success\"]; events: {}",
                accepted.join(", ")
            ),
        ));
        return vec![];
    };
    let mut out = vec![];
    for item in items {
        match item
            .as_str()
            .and_then(|s| Event::ALL.iter().find(|(n, _)| *n == s))
        {
            Some((_, e)) => out.push(*e),
            None => {
                let hint = match item.as_str().and_then(|s| suggest(s, &accepted)) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                cx.errors.push(err(
                    &key,
                    format!(
                        "unknown event {item}; {hint}events: {}",
                        accepted.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

fn build_plugin_ref(
    cx: &mut Ctx,
    section: &str,
    name: &str,
    table: &Spanned<toml::Table>,
    runner_keys: &[&str],
) -> Option<PluginRef> {
    let line = cx.line(table.span().start);
    let t = table.get_ref();
    let Some(plugin) = t.get("plugin").and_then(|v| v.as_str()) else {
        cx.err(
            Some(table.span().start),
            format!("{section}.{name}.plugin"),
            "missing: name the plugin, e.g. plugin = \"local-dir\" (see `offsite plugins list`)",
        );
        return None;
    };
    let mut settings = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (k, v) in t {
        if k == "plugin" || runner_keys.contains(&k.as_str()) {
            continue;
        }
        let full = format!("{section}.{name}.{k}");
        let key_line = find_key_line(cx.text, line, k).unwrap_or(line);
        let value = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                cx.errors.push(ConfigError {
                    file: cx.file.to_path_buf(),
                    line: Some(key_line),
                    key: full,
                    message: "plugin settings are strings, numbers or booleans".into(),
                });
                continue;
            }
        };
        if let Some(base) = k.strip_suffix("_file") {
            if t.contains_key(base) {
                cx.errors.push(ConfigError {
                    file: cx.file.to_path_buf(),
                    line: Some(key_line),
                    key: full,
                    message: format!("give either `{base}` or `{k}`, not both"),
                });
                continue;
            }
            match read_secret_file(Path::new(&value)) {
                Ok(secret) => {
                    settings.insert(base.to_string(), secret);
                    lines.insert(base.to_string(), key_line);
                }
                Err(e) => cx.errors.push(ConfigError {
                    file: cx.file.to_path_buf(),
                    line: Some(key_line),
                    key: full,
                    message: e,
                }),
            }
            continue;
        }
        settings.insert(k.clone(), value);
        lines.insert(k.clone(), key_line);
    }
    Some(PluginRef {
        plugin: plugin.to_string(),
        settings,
        lines,
        line,
    })
}

/// A secret file holds the value; one trailing newline is not part of it.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    crate::limits::secret_file_mode(path)?;
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_string())
}

/// The line of `key = ` at or after a table's header line.
fn find_key_line(text: &str, from_line: usize, key: &str) -> Option<usize> {
    for (i, l) in text.lines().enumerate().skip(from_line.saturating_sub(1)) {
        let t = l.trim_start();
        if i + 1 > from_line && t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}

fn one_of<'a>(
    cx: &mut Ctx,
    v: &Spanned<String>,
    key: &str,
    accepted: &[&'a str],
) -> Option<&'a str> {
    let s = v.get_ref().as_str();
    if let Some(a) = accepted.iter().find(|a| **a == s) {
        return Some(a);
    }
    let hint = match suggest(s, accepted) {
        Some(x) => format!("did you mean `{x}`? "),
        None => String::new(),
    };
    cx.at(
        v,
        key,
        format!(
            "`{s}` is not accepted; {hint}accepted: {}",
            accepted.join(" | ")
        ),
    );
    None
}

fn build_job(
    cx: &mut Ctx,
    name: &str,
    raw: Spanned<RawJob>,
    destinations: &BTreeMap<String, PluginRef>,
    notifiers: &BTreeMap<String, NotifierRef>,
) -> Option<Job> {
    let start = raw.span().start;
    let line = cx.line(start);
    let raw = raw.into_inner();
    let errors_before = cx.errors.len();
    let k = |key: &str| format!("jobs.{name}.{key}");
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || name.is_empty()
    {
        cx.err(
            Some(start),
            format!("jobs.{name}"),
            "a job name is letters, digits, - and _ (it names files and folders)",
        );
    }
    let source = match &raw.source {
        None => {
            cx.err(
                Some(start),
                k("source"),
                "missing; accepted: postgres | files",
            );
            SourceKind::Files
        }
        Some(s) => match one_of(cx, s, &k("source"), &["postgres", "files"]) {
            Some("postgres") => SourceKind::Postgres,
            _ => SourceKind::Files,
        },
    };
    let dsn = match (&raw.dsn, &raw.dsn_file) {
        (Some(_), Some(f)) => {
            cx.at(
                f,
                &k("dsn_file"),
                "give either `dsn` or `dsn_file`, not both",
            );
            None
        }
        (Some(d), None) => Some(d.get_ref().clone()),
        (None, Some(f)) => match read_secret_file(f.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                cx.at(f, &k("dsn_file"), e);
                None
            }
        },
        (None, None) => None,
    };
    if let Some(d) = &raw.dsn
        && !(d.get_ref().starts_with("postgresql://")
            || d.get_ref().starts_with("postgres://")
            || d.get_ref().contains('='))
    {
        cx.at(
            d,
            &k("dsn"),
            "not a PostgreSQL connection string; write e.g. \"postgresql://postgres@127.0.0.1:5432/calls\"",
        );
    }
    if let Some(d) = &dsn
        && let Err(e) = crate::limits::dsn_ports(d)
    {
        // A DSN read from dsn_file is reported at that key, never echoed.
        match (&raw.dsn, &raw.dsn_file) {
            (Some(v), _) => cx.at(v, &k("dsn"), e),
            (None, Some(f)) => cx.at(f, &k("dsn_file"), e),
            (None, None) => {}
        }
    }
    if source == SourceKind::Postgres && dsn.is_none() && raw.dsn_file.is_none() {
        cx.err(
            Some(start),
            k("dsn"),
            "required with source = \"postgres\", e.g. dsn = \"postgresql://postgres@127.0.0.1:5432/calls\"",
        );
    }
    if source == SourceKind::Files && raw.paths.is_empty() {
        cx.err(
            Some(start),
            k("paths"),
            "required with source = \"files\": the trees to back up, e.g. paths = [\"/data/wwwroot/app\"]",
        );
    }
    if source == SourceKind::Files
        && let Some(d) = &raw.dsn
    {
        cx.at(d, &k("dsn"), "only used with source = \"postgres\"");
    }
    for p in &raw.paths {
        if !p.get_ref().is_absolute() {
            cx.at(
                p,
                &k("paths"),
                format!("{} must be an absolute path", p.get_ref().display()),
            );
        }
    }
    let format = match &raw.format {
        Some(f) => one_of(cx, f, &k("format"), FORMATS)
            .unwrap_or("sql")
            .to_string(),
        None => "sql".to_string(),
    };
    if source == SourceKind::Files
        && let Some(f) = &raw.format
    {
        cx.at(f, &k("format"), "only used with source = \"postgres\"");
    }
    let compression = match &raw.compression {
        Some(c) => match one_of(cx, c, &k("compression"), &["zstd", "gzip", "none"]) {
            Some("gzip") => Compression::Gzip,
            Some("none") => Compression::None,
            _ => Compression::Zstd,
        },
        None => Compression::Zstd,
    };
    let level = match (&raw.level, compression) {
        (None, Compression::Gzip) => 6,
        (None, _) => 3,
        (Some(l), Compression::Zstd) if (1..=22).contains(l.get_ref()) => *l.get_ref() as i32,
        (Some(l), Compression::Gzip) if (0..=9).contains(l.get_ref()) => *l.get_ref() as i32,
        (Some(l), Compression::None) => {
            cx.at(
                l,
                &k("level"),
                "has no effect with compression = \"none\"; remove it",
            );
            0
        }
        (Some(l), c) => {
            cx.at(
                l,
                &k("level"),
                format!(
                    "{} is out of range for {}; accepted: {}",
                    l.get_ref(),
                    if c == Compression::Zstd {
                        "zstd"
                    } else {
                        "gzip"
                    },
                    if c == Compression::Zstd {
                        "1..=22"
                    } else {
                        "0..=9"
                    }
                ),
            );
            3
        }
    };
    let threads = match &raw.threads {
        None => 0,
        Some(t) if (0..=256).contains(t.get_ref()) => *t.get_ref() as u32,
        Some(t) => {
            cx.at(t, &k("threads"), "must be 0 (one per core) to 256");
            0
        }
    };
    let par_jobs = match &raw.jobs {
        None => 2,
        Some(j) if (1..=64).contains(j.get_ref()) => *j.get_ref() as u32,
        Some(j) => {
            cx.at(j, &k("jobs"), "parallel dump jobs must be 1 to 64");
            2
        }
    };
    let keep = match &raw.keep {
        None => 7,
        Some(v) if *v.get_ref() >= 1 => *v.get_ref() as usize,
        Some(v) => {
            cx.at(
                v,
                &k("keep"),
                format!(
                    "{} generations cannot be kept; keep at least 1",
                    v.get_ref()
                ),
            );
            7
        }
    };
    let max_local = match &raw.max_local {
        None => 2 * keep,
        Some(v) if *v.get_ref() >= keep as i64 && *v.get_ref() <= 100_000 => *v.get_ref() as usize,
        Some(v) => {
            cx.at(
                v,
                &k("max_local"),
                format!(
                    "max_local = {} is out of range: it must be at least keep ({keep}) and at most 100000",
                    v.get_ref()
                ),
            );
            2 * keep
        }
    };
    let schedule = match &raw.schedule {
        None => Schedule::Manual,
        Some(s) => match s.get_ref().parse::<Schedule>() {
            Ok(s) => s,
            Err(e) => {
                cx.at(s, &k("schedule"), e.to_string());
                Schedule::Manual
            }
        },
    };
    let mut dests = vec![];
    for d in &raw.destinations {
        let n = d.get_ref();
        if destinations.contains_key(n) {
            dests.push(n.clone());
        } else {
            let known: Vec<&str> = destinations.keys().map(String::as_str).collect();
            let hint = match suggest(n, &known) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "no [destinations.NAME] is defined".into(),
                None => format!("defined: {}", known.join(", ")),
            };
            cx.at(
                d,
                &k("destinations"),
                format!("no destination `{n}`; {hint}"),
            );
        }
    }
    let mut notes = vec![];
    for d in &raw.notifiers {
        let n = d.get_ref();
        if notifiers.contains_key(n) {
            notes.push(n.clone());
        } else {
            let known: Vec<&str> = notifiers.keys().map(String::as_str).collect();
            let hint = match suggest(n, &known) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "no [notifiers.NAME] is defined".into(),
                None => format!("defined: {}", known.join(", ")),
            };
            cx.at(d, &k("notifiers"), format!("no notifier `{n}`; {hint}"));
        }
    }
    let verify = match &raw.verify {
        None => Verify::Checksum,
        Some(v) => match one_of(cx, v, &k("verify"), &["none", "checksum", "restore"]) {
            Some("none") => Verify::None,
            Some("restore") => Verify::Restore,
            _ => Verify::Checksum,
        },
    };
    let mut hook = |v: &Option<Spanned<PathBuf>>, key: &str| -> Option<PathBuf> {
        let v = v.as_ref()?;
        let p = v.get_ref();
        if !p.is_absolute() {
            cx.at(
                v,
                &k(key),
                format!("{} must be an absolute path to a program", p.display()),
            );
        } else if let Err(e) = crate::limits::hook(p) {
            cx.at(v, &k(key), e);
        }
        Some(p.clone())
    };
    let before = hook(&raw.before, "before");
    let after = hook(&raw.after, "after");
    let complete = hook(&raw.complete, "complete");
    let hook_timeout = match &raw.hook_timeout {
        None => Duration::from_secs(3600),
        Some(t) => match crate::limits::HOOK_TIMEOUT.parse(t.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                cx.at(t, &k("hook_timeout"), e);
                Duration::from_secs(3600)
            }
        },
    };
    let wal = wal::build(
        cx,
        name,
        wal::RawWal {
            wal: raw.wal,
            wal_dir: raw.wal_dir,
            wal_store_limit: raw.wal_store_limit,
            wal_lag: raw.wal_lag,
            wal_prefetch: raw.wal_prefetch,
        },
        source == SourceKind::Postgres && format == "snapshot",
    );
    if cx.errors.len() > errors_before {
        return None;
    }
    Some(Job {
        name: name.to_string(),
        source,
        dsn,
        format,
        jobs: par_jobs,
        paths: raw.paths.into_iter().map(Spanned::into_inner).collect(),
        compression,
        level,
        threads,
        keep,
        max_local,
        schedule,
        enabled: raw.enabled.unwrap_or(true),
        destinations: dests,
        notifiers: notes,
        verify,
        verify_dsn: raw.verify_dsn.map(Spanned::into_inner),
        before,
        after,
        complete,
        hook_timeout,
        allow_empty: raw.allow_empty.unwrap_or(false),
        wal,
        line,
    })
}

/// A DSN as it may be shown: the password replaced.
pub fn redact_dsn(dsn: &str) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        let scheme = &dsn[..dsn.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:********{}", &userinfo[..colon], &rest[at..]);
            }
        }
        return dsn.to_string();
    }
    // key=value form
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=********".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
