//! `[jobs.NAME]`: what to back up, how, how often and where to.
//!
//! Parsed once, into types that cannot be wrong: a [`JobSource`] holds a
//! DSN and a format only for PostgreSQL, file trees only where they are
//! required or allowed; the compression is the pipeline's own
//! [`Compression`] with its level checked. [`build_job`] calls one small
//! parser per key, in the order of the file's keys, so every problem of a
//! job is reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::archive::{ArchiveSpec, archive_keys, archive_spec};
use super::dsn::{Dsn, parse_dsn};
use super::error::Ctx;
use super::plugins::{NotifierRef, PluginRef};
use super::raw::RawJob;
use super::suggest::hint;
use crate::pipeline::Compression;
use crate::schedule::Schedule;
use crate::source::postgres::PgFormat;

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// What is backed up: the database and/or file trees.
    pub source: JobSource,
    /// How the generation is compressed: algorithm, level and zstd threads
    /// (`threads = 0` in the file is resolved to one per core here).
    pub compression: Compression,
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
    pub before: Option<PathBuf>,
    pub after: Option<PathBuf>,
    pub complete: Option<PathBuf>,
    pub hook_timeout: Duration,
    /// A file tree that is missing, empty, or on another filesystem than at
    /// the last good run is backed up as it is instead of failing the run.
    pub allow_empty: bool,
    /// Continuous WAL archiving (`wal = true`): snapshot jobs only.
    pub wal: Option<super::WalSettings>,
    pub line: usize,
}

/// What a job backs up (`source`, with the keys that belong to it).
#[derive(Debug, Clone)]
pub enum JobSource {
    /// `source = "postgres"`: a database dumped by `pg_dump` (or the whole
    /// cluster by `pg_basebackup`); `paths`, if any, are file trees archived
    /// beside the dump in the same generation.
    Postgres {
        db: PostgresJob,
        paths: Vec<PathBuf>,
    },
    /// `source = "files"`: file trees, at least one, all absolute.
    Files { paths: Vec<PathBuf> },
    /// `source = "archive"` (seed 003): file trees, at least one, all
    /// absolute, appended to volumes with a catalog ([`crate::archive`]).
    Archive {
        paths: Vec<PathBuf>,
        spec: ArchiveSpec,
    },
}

/// The database part of a `source = "postgres"` job.
#[derive(Debug, Clone)]
pub struct PostgresJob {
    /// `dsn` or the content of `dsn_file`.
    pub dsn: Dsn,
    /// `format`: sql (default) | custom | tar | directory | snapshot.
    pub format: PgFormat,
    /// `jobs`: parallel dump/restore jobs for the directory (and custom)
    /// format, 1 to 64 (default 2).
    pub jobs: u32,
    /// `verify_dsn`: where `verify = "restore"` creates its scratch
    /// database; the job's `dsn` when absent.
    pub verify_dsn: Option<Dsn>,
}

impl JobSource {
    /// The `source` names, as written in the config and the manifests.
    pub const KINDS: [&'static str; 3] = ["postgres", "files", "archive"];

    /// `postgres`, `files` or `archive`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSource::Postgres { .. } => Self::KINDS[0],
            JobSource::Files { .. } => Self::KINDS[1],
            JobSource::Archive { .. } => Self::KINDS[2],
        }
    }

    /// The file trees backed up (empty for a database alone).
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            JobSource::Postgres { paths, .. }
            | JobSource::Files { paths }
            | JobSource::Archive { paths, .. } => paths,
        }
    }

    /// The database, for a PostgreSQL job.
    pub fn postgres(&self) -> Option<&PostgresJob> {
        match self {
            JobSource::Postgres { db, .. } => Some(db),
            JobSource::Files { .. } | JobSource::Archive { .. } => None,
        }
    }

    /// The archive settings, for an archive job.
    pub fn archive(&self) -> Option<&ArchiveSpec> {
        match self {
            JobSource::Archive { spec, .. } => Some(spec),
            JobSource::Postgres { .. } | JobSource::Files { .. } => None,
        }
    }

    /// The database's format, for a PostgreSQL job.
    pub fn format(&self) -> Option<PgFormat> {
        self.postgres().map(|db| db.format)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    None,
    Checksum,
    Restore,
}

impl Verify {
    pub const ALL: [(&'static str, Verify); 3] = [
        ("none", Verify::None),
        ("checksum", Verify::Checksum),
        ("restore", Verify::Restore),
    ];
}

/// `jobs.NAME.KEY`, the key errors name.
struct Keys<'a>(&'a str);

impl Keys<'_> {
    fn of(&self, key: &str) -> String {
        format!("jobs.{}.{key}", self.0)
    }
}

/// The source's kind as parsed so far, before its keys are assembled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Files,
    Archive,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => JobSource::KINDS[0],
            Kind::Files => JobSource::KINDS[1],
            Kind::Archive => JobSource::KINDS[2],
        }
    }
}

/// One `[jobs.NAME]` table; `None` if it has any problem (all reported).
pub(super) fn build_job(
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
    let k = Keys(name);
    check_name(cx, name, start);
    let kind = kind(cx, &k, start, raw.source.as_ref());
    let dsn = parse_dsn(cx, |key| k.of(key), raw.dsn.as_ref(), raw.dsn_file.as_ref());
    check_source_keys(cx, &k, start, kind, &raw, dsn.is_some());
    let format = format(cx, &k, kind, raw.format.as_ref());
    let compression = compression(cx, &k, &raw);
    let archive = archive(cx, &k, kind, &compression, &raw);
    let jobs = cx.ranged(raw.jobs.as_ref(), &k.of("jobs"), 1..=64, 2, |_| {
        "parallel dump jobs must be 1 to 64".into()
    });
    let keep = cx.ranged(raw.keep.as_ref(), &k.of("keep"), 1..=i64::MAX, 7, |n| {
        format!("{n} generations cannot be kept; keep at least 1")
    });
    let max_local = cx.ranged(
        raw.max_local.as_ref(),
        &k.of("max_local"),
        keep as i64..=100_000,
        2 * keep,
        |n| format!("max_local = {n} is out of range: it must be at least keep ({keep}) and at most 100000"),
    );
    let schedule = schedule(cx, &k, raw.schedule.as_ref());
    let destinations = references(cx, &k, &raw.destinations, destinations, &DESTINATIONS);
    let notifiers = references(cx, &k, &raw.notifiers, notifiers, &NOTIFIERS);
    let verify = match &raw.verify {
        None => Verify::Checksum,
        Some(v) => cx
            .one_of(v, &k.of("verify"), &Verify::ALL)
            .unwrap_or(Verify::Checksum),
    };
    let before = hook(cx, &k, "before", raw.before.as_ref());
    let after = hook(cx, &k, "after", raw.after.as_ref());
    let complete = hook(cx, &k, "complete", raw.complete.as_ref());
    let hook_timeout = hook_timeout(cx, &k, raw.hook_timeout.as_ref());
    let wal = super::wal::build(
        cx,
        name,
        &raw,
        matches!(kind, Kind::Postgres) && format == PgFormat::Snapshot,
        verify == Verify::Restore,
    );
    if cx.errors.len() > errors_before {
        return None;
    }
    let paths: Vec<PathBuf> = raw.paths.into_iter().map(Spanned::into_inner).collect();
    let source = match (kind, dsn) {
        (Kind::Postgres, Some(dsn)) => JobSource::Postgres {
            db: PostgresJob {
                dsn,
                format,
                jobs,
                verify_dsn: raw.verify_dsn.map(|d| Dsn::new(d.into_inner())),
            },
            paths,
        },
        (Kind::Files, _) => JobSource::Files { paths },
        (Kind::Archive, _) => JobSource::Archive {
            paths,
            spec: archive?,
        },
        // Reported by check_source_keys.
        (Kind::Postgres, None) => return None,
    };
    Some(Job {
        name: name.to_string(),
        source,
        compression,
        keep,
        max_local,
        schedule,
        enabled: raw.enabled.unwrap_or(true),
        destinations,
        notifiers,
        verify,
        before,
        after,
        complete,
        hook_timeout,
        allow_empty: raw.allow_empty.unwrap_or(false),
        wal,
        line,
    })
}

/// An archive job's keys (`config::archive`); archive volumes are zstd
/// only, so any other `compression` is reported here.
fn archive(
    cx: &mut Ctx,
    k: &Keys,
    kind: Kind,
    compression: &Compression,
    raw: &RawJob,
) -> Option<ArchiveSpec> {
    if kind == Kind::Archive
        && !matches!(compression, Compression::Zstd { .. })
        && let Some(c) = &raw.compression
    {
        cx.at(
            c,
            &k.of("compression"),
            "archive volumes are tar files of zstd frames (zstd seekable format); with source = \"archive\" only compression = \"zstd\" is accepted",
        );
    }
    (kind == Kind::Archive).then(|| archive_spec(cx, |key| k.of(key), raw))
}

/// A job's name names files and folders.
fn check_name(cx: &mut Ctx, name: &str, start: usize) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        cx.err(
            Some(start),
            format!("jobs.{name}"),
            "a job name is letters, digits, - and _ (it names files and folders)",
        );
    }
}

/// `source`; a missing or unknown one is reported, and the job's other keys
/// are then checked as for `files`.
fn kind(cx: &mut Ctx, k: &Keys, start: usize, v: Option<&Spanned<String>>) -> Kind {
    let accepted = [
        (JobSource::KINDS[0], Kind::Postgres),
        (JobSource::KINDS[1], Kind::Files),
        (JobSource::KINDS[2], Kind::Archive),
    ];
    match v {
        None => {
            cx.err(
                Some(start),
                k.of("source"),
                format!("missing; accepted: {}", JobSource::KINDS.join(" | ")),
            );
            Kind::Files
        }
        Some(s) => cx
            .one_of(s, &k.of("source"), &accepted)
            .unwrap_or(Kind::Files),
    }
}

/// The keys each source requires or refuses, and `paths` being absolute.
fn check_source_keys(
    cx: &mut Ctx,
    k: &Keys,
    start: usize,
    kind: Kind,
    raw: &RawJob,
    has_dsn: bool,
) {
    if kind == Kind::Postgres && !has_dsn && raw.dsn_file.is_none() {
        cx.err(
            Some(start),
            k.of("dsn"),
            "required with source = \"postgres\", e.g. dsn = \"postgresql://postgres@127.0.0.1:5432/calls\"",
        );
    }
    if kind != Kind::Postgres && raw.paths.is_empty() {
        cx.err(
            Some(start),
            k.of("paths"),
            format!(
                "required with source = \"{}\": the trees to back up, e.g. paths = [\"/data/wwwroot/app\"]",
                kind.name()
            ),
        );
    }
    if kind != Kind::Postgres
        && let Some(d) = &raw.dsn
    {
        cx.at(d, &k.of("dsn"), "only used with source = \"postgres\"");
    }
    if kind != Kind::Archive {
        for (key, v) in archive_keys(raw) {
            if let Some(v) = v {
                cx.at(v, &k.of(key), "only used with source = \"archive\"");
            }
        }
    }
    for p in &raw.paths {
        let path = p.get_ref();
        if !path.is_absolute() {
            cx.at(
                p,
                &k.of("paths"),
                format!("{} must be an absolute path", path.display()),
            );
        } else if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            // Archive members and tar entries name files by this path; a
            // `..` in it is refused by tar readers (and by ours).
            cx.at(
                p,
                &k.of("paths"),
                format!(
                    "{} must not contain `..`: write the folder it means without it",
                    path.display()
                ),
            );
        }
    }
}

/// `format`, for PostgreSQL only: one of [`PgFormat::ALL`], default sql.
fn format(cx: &mut Ctx, k: &Keys, kind: Kind, v: Option<&Spanned<String>>) -> PgFormat {
    let Some(v) = v else {
        return PgFormat::default();
    };
    let accepted = PgFormat::ALL.map(|f| (f.name(), f));
    let format = cx.one_of(v, &k.of("format"), &accepted).unwrap_or_default();
    if kind != Kind::Postgres {
        cx.at(v, &k.of("format"), "only used with source = \"postgres\"");
    }
    format
}

/// `compression`, `level` and `threads`: the levels are the pipeline's
/// ([`Compression::from_config`]), checked there once.
fn compression(cx: &mut Ctx, k: &Keys, raw: &RawJob) -> Compression {
    let accepted = Compression::NAMES.map(|n| (n, n));
    let name = match &raw.compression {
        Some(c) => cx.one_of(c, &k.of("compression"), &accepted),
        None => None,
    }
    .unwrap_or(Compression::NAMES[0]);
    let mut c = match Compression::from_config(name, raw.level.as_ref().map(|l| *l.get_ref())) {
        Ok(c) => c,
        Err(e) => {
            if let Some(l) = &raw.level {
                cx.at(l, &k.of("level"), e.to_string());
            }
            Compression::default()
        }
    };
    let threads: u32 = cx.ranged(raw.threads.as_ref(), &k.of("threads"), 0..=256, 0, |_| {
        "must be 0 (one per core) to 256".into()
    });
    if let Compression::Zstd { threads: t, .. } = &mut c
        && threads > 0
    {
        *t = threads;
    }
    c
}

fn schedule(cx: &mut Ctx, k: &Keys, v: Option<&Spanned<String>>) -> Schedule {
    let Some(v) = v else {
        return Schedule::Manual;
    };
    match v.get_ref().parse::<Schedule>() {
        Ok(s) => s,
        Err(e) => {
            cx.at(v, &k.of("schedule"), e.to_string());
            Schedule::Manual
        }
    }
}

/// A list of names that must each be defined in a table of the config.
struct Reference {
    key: &'static str,
    one: &'static str,
    table: &'static str,
}

const DESTINATIONS: Reference = Reference {
    key: "destinations",
    one: "destination",
    table: "[destinations.NAME]",
};
const NOTIFIERS: Reference = Reference {
    key: "notifiers",
    one: "notifier",
    table: "[notifiers.NAME]",
};

/// `destinations` / `notifiers`: each name must be defined.
fn references<T>(
    cx: &mut Ctx,
    k: &Keys,
    names: &[Spanned<String>],
    defined: &BTreeMap<String, T>,
    r: &Reference,
) -> Vec<String> {
    let known: Vec<&str> = defined.keys().map(String::as_str).collect();
    let mut out = vec![];
    for v in names {
        let n = v.get_ref();
        if defined.contains_key(n) {
            out.push(n.clone());
        } else {
            let none = format!("no {} is defined", r.table);
            let hint = hint(n, &known, &none, "defined");
            cx.at(v, &k.of(r.key), format!("no {} `{n}`; {hint}", r.one));
        }
    }
    out
}

/// `before` / `after` / `complete`: an absolute path to an executable.
fn hook(cx: &mut Ctx, k: &Keys, key: &str, v: Option<&Spanned<PathBuf>>) -> Option<PathBuf> {
    let v = v?;
    let p = v.get_ref();
    if !p.is_absolute() {
        cx.at(
            v,
            &k.of(key),
            format!("{} must be an absolute path to a program", p.display()),
        );
    } else if let Err(e) = crate::limits::hook(p) {
        cx.at(v, &k.of(key), e);
    }
    Some(p.clone())
}

fn hook_timeout(cx: &mut Ctx, k: &Keys, v: Option<&Spanned<String>>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(3600);
    let Some(v) = v else { return DEFAULT };
    match crate::limits::HOOK_TIMEOUT.parse(v.get_ref()) {
        Ok(d) => d,
        Err(e) => {
            cx.at(v, &k.of("hook_timeout"), e);
            DEFAULT
        }
    }
}
