//! Putting a stored generation back: into a database server, into a
//! directory (file trees, or a snapshot as a data directory), or out as the
//! decompressed stream.
//!
//! Every restore first checks the file's sha256 against the manifest and
//! refuses a mismatch before touching anything: a damaged dump half-applied
//! to a server is worse than no restore.
//!
//! What a restore into a server does, and why:
//! - Roles and tablespaces run first, so objects keep their owners and
//!   grants. Roles that already exist on the target are left exactly as they
//!   are (their passwords are not reset to the backup's), the same for
//!   tablespaces; missing ones are created as they were.
//! - The target database is created when it does not exist, by the source's
//!   own `CREATE DATABASE` (renamed: same encoding, collation, ctype, locale
//!   provider, tablespace) and owner, before any data; an existing one must
//!   hold no tables, so a restore never mixes into live data. The rest of
//!   the database's properties (comment, ACL, `ALTER DATABASE … SET`,
//!   `ALTER ROLE … IN DATABASE … SET`) are applied after the data (see
//!   [`crate::source::postgres::database`]). A failed restore drops the database it
//!   created, so no half-made copy is mistaken for a restored one; a
//!   database that existed before is left as the failure found it.
//! - Client tools are chosen for the target server the way a backup
//!   chooses them for the source ([`crate::source::postgres::tools`]).
//! - Then `psql -v ON_ERROR_STOP=1` (sql) or `pg_restore --exit-on-error`
//!   (custom, tar, directory; `-j` for custom and directory): the first
//!   error stops the restore instead of scrolling past. Owners are kept; only
//!   a generation taken without roles restores with `--no-owner
//!
//! One file per part of the work: [`dsn`] restores into a server (with
//! [`target`] reading what the server already has, [`roles`] the roles and
//! tablespaces, [`properties`] the database's own properties); [`dir`]
//! restores file trees and [`snapshot`] a data directory; [`spool`] holds
//! the archive formats pg_restore wants as files.

mod dir;
mod dsn;
mod properties;
mod roles;
mod snapshot;
mod spool;
mod target;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::pipeline::{self, Compression, GenerationWriter};
use crate::source::Layout;
use crate::source::postgres::tools::ToolRecord;
use crate::source::postgres::{self, PgFormat};

/// The stored file does not hash to what the manifest recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "generation {path} is damaged: its sha256 is {actual} but the manifest records {expected} — refusing to restore it; fetch a good copy from a destination (--from) or pick another generation"
)]
pub struct ChecksumMismatch {
    pub path: PathBuf,
    pub expected: String,
    pub actual: String,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Where it went: `host:port/db`, a directory, or a file.
    pub target: String,
    /// The restore created the target database.
    pub created_database: bool,
    /// Things that did not fail the restore but the operator should read.
    pub warnings: Vec<String>,
    /// The client tools used (`psql`, `pg_restore`), for the manifest.
    pub client_tools: BTreeMap<String, ToolRecord>,
}

/// A generation whose checksum has been verified, ready to restore.
#[derive(Debug, Clone)]
pub struct Restore {
    path: PathBuf,
    layout: Layout,
    format: Option<PgFormat>,
    compression: Compression,
    jobs: u32,
    /// Bytes the file trees need on the target (manifest `tree`).
    space_needed: Option<u64>,
}

impl Restore {
    /// Checks `path` against `expected_sha256` (hex, from the manifest) and
    /// returns the handle the restores hang off. `format` is the job's
    /// database format, `None` for a files-only generation.
    pub async fn open(
        path: &Path,
        layout: Layout,
        format: Option<PgFormat>,
        compression: Compression,
        expected_sha256: &str,
    ) -> anyhow::Result<Restore> {
        let p = path.to_path_buf();
        let actual = tokio::task::spawn_blocking(move || pipeline::sha256_file(&p)).await??;
        let expected = expected_sha256.trim().to_ascii_lowercase();
        if actual != expected {
            return Err(ChecksumMismatch {
                path: path.to_path_buf(),
                expected,
                actual,
            }
            .into());
        }
        tracing::info!(path = %path.display(), sha256 = %actual, "generation checksum verified");
        Restore::open_unchecked(path, layout, format, compression)
    }

    /// The handle without the sha256 check, for a copy that has no manifest
    /// anywhere (a destination that keeps none, the local store gone): the
    /// caller says so to the operator.
    pub fn open_unchecked(
        path: &Path,
        layout: Layout,
        format: Option<PgFormat>,
        compression: Compression,
    ) -> anyhow::Result<Restore> {
        if layout == Layout::SqlStream && format.is_some_and(|f| f != PgFormat::Sql) {
            anyhow::bail!(
                "{} is a SQL stream, which only the sql format produces, but the manifest says format {}",
                path.display(),
                format.map(|f| f.name()).unwrap_or("none")
            );
        }
        Ok(Restore {
            path: path.to_path_buf(),
            layout,
            format,
            compression,
            jobs: postgres::default_jobs(),
            space_needed: None,
        })
    }

    /// Parallel pg_restore workers for custom and directory formats.
    pub fn with_jobs(mut self, jobs: u32) -> Restore {
        self.jobs = jobs.max(1);
        self
    }

    /// Disk space the file trees need (from the manifest): `--to-dir`
    /// refuses a target without that much room before writing anything.
    pub fn with_space_needed(mut self, bytes: Option<u64>) -> Restore {
        self.space_needed = bytes;
        self
    }

    /// Restores the database part into the database named by `target_dsn`
    /// (created when missing, refused when it already holds tables).
    pub async fn restore_to_dsn(&self, target_dsn: &str) -> anyhow::Result<RestoreReport> {
        dsn::restore(self, target_dsn).await
    }

    /// Restores file trees under `dir` (each at its original absolute path
    /// below it) and a snapshot as a data directory at `dir`. With both in
    /// one generation the file trees go to `<dir>-files` so the data
    /// directory stays clean. Refuses a non-empty target unless `force`.
    pub async fn restore_to_dir(&self, dir: &Path, force: bool) -> anyhow::Result<RestoreReport> {
        dir::restore(self, dir, force).await
    }

    /// Writes the decompressed stream (SQL text or tar) to `output`, or to
    /// stdout for `-`. An existing file is never overwritten.
    pub async fn restore_to_file(&self, output: &Path) -> anyhow::Result<RestoreReport> {
        let path = self.path.clone();
        let compression = self.compression;
        let output = output.to_path_buf();
        let target = output.display().to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut input = pipeline::open_decompressed(&path, &compression)?;
            if output.as_os_str() == "-" {
                let stdout = io::stdout();
                let mut lock = stdout.lock();
                pipeline::copy_buffered(&mut input, &mut lock)?;
                lock.flush()?;
                return Ok(());
            }
            let output = std::path::absolute(&output)?;
            let dir = output.parent().unwrap_or(Path::new("/"));
            let name = output
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow::anyhow!("{} is not a file name", output.display()))?;
            if output.symlink_metadata().is_ok() {
                anyhow::bail!(
                    "{} already exists; give a new file name (restores never overwrite)",
                    output.display()
                );
            }
            let mut out = GenerationWriter::create(dir, name, &Compression::None)?;
            pipeline::copy_buffered(&mut input, &mut out)?;
            out.finish()?;
            Ok(())
        })
        .await??;
        Ok(RestoreReport {
            target,
            ..RestoreReport::default()
        })
    }
}
