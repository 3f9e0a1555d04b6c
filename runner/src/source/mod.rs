//! Taking one generation: a PostgreSQL database, file trees, or both, turned
//! into exactly one stored file by [`take`].
//!
//! # Generation layout
//!
//! There are two layouts, chosen by what the job holds:
//!
//! **SQL stream** ([`Layout::SqlStream`]) — `format = "sql"` and no `paths`.
//! One SQL text stream, `<stem>.sql.zst` (`.sql.gz`, `.sql`):
//!
//! ```text
//! -- offsite …header: what, from where, how to restore by hand…
//! -- offsite:globals-begin
//! pg_dumpall --globals-only, with every `CREATE ROLE x;` turned into
//!   DO $offsite$ BEGIN CREATE ROLE x; EXCEPTION WHEN duplicate_object THEN NULL; END $offsite$;
//! -- offsite:globals-end
//! -- offsite:database-properties-begin
//! -- CREATE DATABASE …, ALTER DATABASE … OWNER/SET, COMMENT, GRANT/REVOKE ON DATABASE,
//! -- ALTER ROLE … IN DATABASE … SET: pg_dump --create's database-level statements,
//! -- each line commented out (see [`postgres::database`])
//! -- offsite:database-properties-end
//! -- offsite:database-begin
//! pg_dump -Fp output, streamed straight through
//! ```
//!
//! It is restorable by hand with `zstd -d < FILE | psql -v ON_ERROR_STOP=1
//! -d NEWDB`, on any newer server. Nothing touches disk but the output
//! file, so this path costs what `pg_dump | zstd` costs. The markers are SQL
//! comments, so psql ignores them; `offsite restore` uses them to run the
//! roles part on its own first (see [`crate::restore`]).
//!
//! **Tar** ([`Layout::Tar`]) — every other case. One tar stream,
//! `<stem>.tar.zst`, with members in this order:
//!
//! ```text
//! globals.sql                    roles/tablespaces, rewritten as above
//! database-properties.sql        the database-level statements (not for snapshot)
//! database.sql | database.dump | database.tar | database/…   (sql | custom | tar | directory)
//! snapshot/base.tar, snapshot/pg_wal.tar, snapshot/<oid>.tar, snapshot/backup_manifest   (snapshot)
//! files/<absolute path without leading />…                     (file trees, if any)
//! ```
//!
//! `tar -xf` opens it without offsite. Formats whose tools write files
//! (custom, tar, directory, snapshot, and sql next to file trees, since a tar
//! header needs the size first) are first written to `<job_dir>/.spool-<stem>/`,
//! which is removed afterwards, on error too. The spool therefore needs room
//! for one uncompressed dump on the backup disk; pg_dump's own compression is
//! turned off when the generation is compressed, so data is compressed once,
//! by zstd's threads, and the restore side does not pay for gzip.
//!
//! Database before files: a restore that wants only the database stops
//! reading as soon as the file trees begin.

pub mod files;
pub mod postgres;
pub mod tree_guard;

use std::path::{Path, PathBuf};

use crate::exec::Cancel;
use anyhow::Context;

use crate::pipeline::{self, Compression, GenerationWriter, Written};
use postgres::{PgFormat, PgSource, Prepared};

/// What one job backs up.
#[derive(Debug, Clone, Default)]
pub struct SourceSpec {
    pub postgres: Option<PgSource>,
    /// File trees, absolute paths (relative ones are taken from the cwd).
    pub paths: Vec<PathBuf>,
    /// Count every table's rows in the dump's own snapshot (for
    /// `verify = "restore"`, which compares the restored copy with them).
    pub count_rows: bool,
}

impl SourceSpec {
    /// The layout [`take`] will produce for this spec.
    pub fn layout(&self) -> Layout {
        match &self.postgres {
            Some(pg) if pg.format == PgFormat::Sql && self.paths.is_empty() => Layout::SqlStream,
            _ => Layout::Tar,
        }
    }
}

/// How a generation's (decompressed) bytes are organised; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    SqlStream,
    Tar,
}

impl Layout {
    /// `sql` or `tar`: the part of the file name before the compression.
    pub fn extension(self) -> &'static str {
        match self {
            Layout::SqlStream => "sql",
            Layout::Tar => "tar",
        }
    }

    /// `<stem>.sql.zst`, `<stem>.tar.gz`, `<stem>.tar`, …
    pub fn file_name(self, stem: &str, compression: &Compression) -> String {
        compression.file_name(&format!("{stem}.{}", self.extension()))
    }

    /// Recognises a stored file's layout from its name.
    pub fn from_file_name(name: &str) -> Option<Layout> {
        let base = name
            .strip_suffix(".zst")
            .or_else(|| name.strip_suffix(".gz"))
            .unwrap_or(name);
        if base.ends_with(".sql") {
            Some(Layout::SqlStream)
        } else if base.ends_with(".tar") {
            Some(Layout::Tar)
        } else {
            None
        }
    }
}

/// One generation on disk plus what the manifest should say about it.
#[derive(Debug, Clone)]
pub struct TakenGeneration {
    pub written: Written,
    pub layout: Layout,
    /// e.g. "15.18" for a database source.
    pub server_version: Option<String>,
    /// Roles and tablespaces are in the generation (false only when
    /// `pg_dumpall` was refused; see `warnings`).
    pub globals_included: bool,
    /// Things the operator should know that did not fail the backup: files
    /// that changed while read, roles saved without passwords, pg_dump
    /// warnings.
    pub warnings: Vec<String>,
    /// Rows per table (`schema.table`) in the snapshot the dump used, when
    /// the spec asked for them.
    pub table_rows: Option<std::collections::BTreeMap<String, i64>>,
    /// Per-root counts and filesystems of the file trees, if any.
    pub tree: Option<tree_guard::TreeSummary>,
    /// The source as the dump's snapshot saw it (schema, database catalog
    /// row, table checksums), for `verify = "restore"`.
    pub fingerprint: Option<postgres::fingerprint::Fingerprint>,
    /// The client tools that made it (`pg_dump`, `pg_dumpall`,
    /// `pg_basebackup`), with their versions.
    pub client_tools: std::collections::BTreeMap<String, postgres::tools::ToolRecord>,
    /// A snapshot's WAL range, from pg_basebackup's `backup_manifest`.
    pub snapshot_wal: Option<postgres::WalRange>,
}

/// Line that opens the roles part of a SQL-stream generation.
pub const GLOBALS_BEGIN: &str = "-- offsite:globals-begin";
/// Line that closes it.
pub const GLOBALS_END: &str = "-- offsite:globals-end";
/// Line after which pg_dump's output follows unchanged.
pub const DATABASE_BEGIN: &str = "-- offsite:database-begin";
/// Tar member holding roles and tablespaces.
pub const GLOBALS_MEMBER: &str = "globals.sql";
/// Line that opens the database-properties part of a SQL stream; each line
/// up to [`PROPERTIES_END`] is the statement line behind `-- `.
pub const PROPERTIES_BEGIN: &str = "-- offsite:database-properties-begin";
/// Line that closes it.
pub const PROPERTIES_END: &str = "-- offsite:database-properties-end";
/// Tar member holding the database-level statements.
pub const PROPERTIES_MEMBER: &str = "database-properties.sql";

/// Takes one generation of `spec` into `job_dir/<stem>.<layout>[.<ext>]`.
///
/// Everything that can be refused (server down, bad password, missing
/// database, pg_dump too old, missing file tree) is checked before any file
/// is created. On error nothing is left in `job_dir`: no final file, no
/// `.tmp-*`, no `.spool-*`. Dropping the returned future kills the dump
/// tools and cleans up the same way.
pub async fn take(
    spec: &SourceSpec,
    job_dir: &Path,
    final_name_stem: &str,
    compression: &Compression,
) -> anyhow::Result<TakenGeneration> {
    if spec.postgres.is_none() && spec.paths.is_empty() {
        anyhow::bail!("the job has nothing to back up: give it a dsn, paths, or both");
    }
    if final_name_stem.is_empty() || final_name_stem.contains('/') {
        anyhow::bail!("invalid generation name {final_name_stem:?}");
    }
    let mut prepared = match &spec.postgres {
        Some(pg) => Some(postgres::prepare(pg).await?),
        None => None,
    };
    // The exporting transaction stays open (in `_snapshot_holder`) until the
    // dump has finished, so pg_dump can attach to its snapshot.
    let mut _snapshot_holder = None;
    let mut table_rows = None;
    let mut fingerprint = None;
    let mut fingerprint_warning = None;
    if let Some(p) = prepared.as_mut()
        && spec.count_rows
        && p.source.format != PgFormat::Snapshot
    {
        let (client, id, counts) = postgres::export_snapshot(&p.conn).await?;
        match fingerprint_in_snapshot(p, &client, &id).await {
            Ok(fp) => fingerprint = Some(fp),
            Err(e) => {
                let w = format!(
                    "the source's fingerprint (schema, database properties, table checksums) could not be taken, so the restore verification compares row counts only: {e:#}"
                );
                tracing::warn!("{w}");
                fingerprint_warning = Some(w);
            }
        }
        p.snapshot = Some(id);
        _snapshot_holder = Some(client);
        table_rows = Some(counts);
    }
    for p in &spec.paths {
        let abs = std::path::absolute(p)?;
        files::root_metadata(&abs)?;
    }
    tokio::fs::create_dir_all(job_dir)
        .await
        .with_context(|| format!("cannot create the backup folder {}", job_dir.display()))?;

    let layout = spec.layout();
    let cancel = Cancel::default();
    let mut guard = cancel.on_drop();
    let job = Job {
        prepared,
        paths: spec.paths.clone(),
        job_dir: job_dir.to_path_buf(),
        stem: final_name_stem.to_string(),
        compression: *compression,
        cancel,
    };
    let result = tokio::task::spawn_blocking(move || job.run(layout))
        .await
        .context("the backup task failed")?;
    guard.disarm();
    result.map(|mut t| {
        t.table_rows = table_rows;
        t.fingerprint = fingerprint;
        t.warnings.extend(fingerprint_warning);
        t
    })
}

/// The source's [`postgres::fingerprint::Fingerprint`] inside the exported
/// snapshot `id` that `client` holds open.
async fn fingerprint_in_snapshot(
    p: &Prepared,
    client: &tokio_postgres::Client,
    id: &str,
) -> anyhow::Result<postgres::fingerprint::Fingerprint> {
    let mut fp = postgres::fingerprint::catalog_and_data(client).await?;
    let tool = p.pg_dump.clone().expect("dump formats have pg_dump");
    let conn = p.conn.clone();
    let id = id.to_string();
    fp.schema_sha256 = tokio::task::spawn_blocking(move || {
        postgres::fingerprint::schema_sha256(&tool, &conn, Some(&id), &Cancel::default())
    })
    .await??;
    Ok(fp)
}

/// The blocking half of [`take`]. Runs on one thread from start to end:
/// the dump tools are tied to it by `PR_SET_DEATHSIG`.
struct Job {
    prepared: Option<Prepared>,
    paths: Vec<PathBuf>,
    job_dir: PathBuf,
    stem: String,
    compression: Compression,
    cancel: Cancel,
}

impl Job {
    fn run(self, layout: Layout) -> anyhow::Result<TakenGeneration> {
        let started = std::time::Instant::now();
        let mut warnings = Vec::new();
        let mut tree = None;
        let mut client_tools = std::collections::BTreeMap::new();
        let mut snapshot_wal = None;
        if let Some(p) = &self.prepared {
            for (name, tool) in p.tools() {
                if let Some(w) = tool.mismatch_warning(name, p.info.major()) {
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
                tracing::info!(tool = name, version = %tool.version, path = %tool.path.display(), "client tool");
                client_tools.insert(name.to_string(), postgres::tools::ToolRecord::from(tool));
            }
        }
        let (written, globals_included, raw) = match layout {
            Layout::SqlStream => self.sql_stream(&mut warnings)?,
            Layout::Tar => self.tar(&mut warnings, &mut tree, &mut snapshot_wal)?,
        };
        tracing::info!(
            path = %written.path.display(),
            stored_bytes = written.size,
            source_bytes = raw,
            sha256 = %written.sha256,
            seconds = started.elapsed().as_secs_f64(),
            warnings = warnings.len(),
            "generation written"
        );
        Ok(TakenGeneration {
            written,
            layout,
            server_version: self.prepared.as_ref().map(|p| p.info.version.clone()),
            globals_included,
            warnings,
            table_rows: None,
            tree,
            fingerprint: None,
            client_tools,
            snapshot_wal,
        })
    }

    fn sql_stream(&self, warnings: &mut Vec<String>) -> anyhow::Result<(Written, bool, u64)> {
        use std::io::Write;
        let p = self.prepared.as_ref().expect("sql stream has a database");
        let globals = postgres::dump_globals(p, &self.cancel, warnings)?;
        let name = Layout::SqlStream.file_name(&self.stem, &self.compression);
        let mut out = GenerationWriter::create(&self.job_dir, &name, &self.compression)?;
        let properties = postgres::database::dump_properties(p, &self.cancel)?;
        writeln!(
            out,
            "-- offsite backup of PostgreSQL database \"{}\" at {} (server {}), format sql, taken {}",
            p.info.database.replace('\n', " "),
            p.conn.endpoint(),
            p.info.version,
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        )?;
        writeln!(
            out,
            "-- Restore by hand into a new, empty database: {} < FILE | psql -v ON_ERROR_STOP=1 -d NEWDB\n\
             -- The roles part creates missing roles and re-applies attributes and passwords of existing ones;\n\
             -- `offsite restore --to-dsn` leaves roles that already exist on the target untouched.",
            match self.compression {
                Compression::Zstd { .. } => "zstd -d",
                Compression::Gzip { .. } => "gzip -d",
                Compression::None => "cat",
            }
        )?;
        writeln!(out, "{GLOBALS_BEGIN}")?;
        if let Some(g) = &globals {
            out.write_all(g)?;
        }
        writeln!(out, "\n{GLOBALS_END}\n{PROPERTIES_BEGIN}")?;
        for line in properties.split_inclusive(|&b| b == b'\n') {
            out.write_all(b"-- ")?;
            out.write_all(line)?;
        }
        if !properties.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        writeln!(out, "{PROPERTIES_END}\n{DATABASE_BEGIN}")?;
        postgres::dump_sql_stream(p, &mut out, &self.cancel, warnings)?;
        let raw = out.uncompressed_bytes();
        Ok((out.finish()?, globals.is_some(), raw))
    }

    fn tar(
        &self,
        warnings: &mut Vec<String>,
        tree: &mut Option<tree_guard::TreeSummary>,
        snapshot_wal: &mut Option<postgres::WalRange>,
    ) -> anyhow::Result<(Written, bool, u64)> {
        let spool = Spool::create(&self.job_dir, &self.stem)?;
        let mut globals_included = false;
        let mut members: Vec<(String, PathBuf)> = Vec::new();
        if let Some(p) = &self.prepared {
            if let Some(g) = postgres::dump_globals(p, &self.cancel, warnings)? {
                let path = spool.path.join(GLOBALS_MEMBER);
                std::fs::write(&path, g)?;
                members.push((GLOBALS_MEMBER.to_string(), path));
                globals_included = true;
            }
            if p.source.format != PgFormat::Snapshot {
                let path = spool.path.join(PROPERTIES_MEMBER);
                std::fs::write(&path, postgres::database::dump_properties(p, &self.cancel)?)?;
                members.push((PROPERTIES_MEMBER.to_string(), path));
            }
            let outer = self.compression != Compression::None;
            members.extend(postgres::dump_to_spool(
                p,
                &spool.path,
                outer,
                &self.cancel,
                warnings,
            )?);
            if p.source.format == PgFormat::Snapshot {
                *snapshot_wal = Some(postgres::snapshot::wal_range_in_spool(&spool.path)?);
            }
        }
        let name = Layout::Tar.file_name(&self.stem, &self.compression);
        let out = GenerationWriter::create(&self.job_dir, &name, &self.compression)?;
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        for (member, path) in &members {
            self.cancel.check()?;
            append_spooled(&mut builder, member, path)?;
        }
        if !self.paths.is_empty() {
            // The filesystems before the walk: what the next run compares.
            let mut fs = Vec::new();
            for p in &self.paths {
                let abs = std::path::absolute(p)?;
                fs.push((abs.clone(), tree_guard::RootFs::probe(&abs)?));
            }
            let stats = files::append_trees(
                &mut builder,
                &self.paths,
                &self.job_dir,
                &self.cancel,
                warnings,
            )?;
            tracing::info!(
                files = stats.files,
                dirs = stats.dirs,
                symlinks = stats.symlinks,
                hardlinks = stats.hardlinks,
                special = stats.special,
                bytes = stats.bytes,
                data_bytes = stats.data_bytes,
                skipped = stats.skipped,
                "file trees archived"
            );
            *tree = Some(tree_guard::TreeSummary {
                roots: fs
                    .into_iter()
                    .zip(&stats.per_root)
                    .map(|((path, fs), &entries)| tree_guard::RootRecord { path, entries, fs })
                    .collect(),
                entries: stats.entries(),
                data_bytes: stats.data_bytes,
                restore_bytes: stats.restore_bytes,
            });
        }
        let out = builder.into_inner()?;
        let raw = out.uncompressed_bytes();
        let written = out.finish()?;
        drop(spool);
        Ok((written, globals_included, raw))
    }
}

/// Adds a spooled file, or a spooled directory recursively, under `member`.
fn append_spooled<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    member: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        builder.append_dir(member, path)?;
        let mut names: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            append_spooled(
                builder,
                &format!("{member}/{}", n.to_string_lossy()),
                &path.join(&n),
            )?;
        }
    } else {
        let mut f = std::fs::File::open(path)?;
        builder.append_file(member, &mut f)?;
    }
    Ok(())
}

/// `.spool-<stem>/` in the job folder; removed when dropped, whatever
/// happened.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn create(job_dir: &Path, stem: &str) -> anyhow::Result<Spool> {
        let path = job_dir.join(format!("{}{stem}", pipeline::SPOOL_PREFIX));
        std::fs::create_dir(&path).with_context(|| {
            format!(
                "cannot create the spool folder {} (a leftover from a killed run can be deleted)",
                path.display()
            )
        })?;
        // Dumps inside hold the data: keep them from other local users.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Spool { path })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the spool folder");
        }
    }
}
