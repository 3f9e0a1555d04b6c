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
//!   --no-privileges`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::exec::{Cancel, ToolCommand, pump};
use crate::pipeline::{self, Compression, GenerationWriter};
use crate::source::files::{FILES_PREFIX, TreeExtractor};
use crate::source::postgres::database::{DatabaseProperties, quote_ident};
use crate::source::postgres::tools::ToolRecord;
use crate::source::postgres::{
    self, ConnInfo, PgError, PgFormat, PgTool, QuoteState, db_message, parse_ident,
};
use crate::source::{
    DATABASE_BEGIN, GLOBALS_BEGIN, GLOBALS_END, GLOBALS_MEMBER, Layout, PROPERTIES_BEGIN,
    PROPERTIES_END, PROPERTIES_MEMBER,
};

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
        let format = match (self.layout, self.format) {
            (Layout::SqlStream, _) => PgFormat::Sql,
            (Layout::Tar, Some(PgFormat::Snapshot)) => anyhow::bail!(
                "a snapshot generation restores to a data directory, not into a server: use --to-dir DIR and start PostgreSQL of the same major version on it"
            ),
            (Layout::Tar, Some(f)) => f,
            (Layout::Tar, None) => anyhow::bail!(
                "this generation holds file trees only, no database: use --to-dir DIR"
            ),
        };
        let conn = ConnInfo::parse(target_dsn)?;
        let target = inspect_target(&conn).await?;
        let mut report = RestoreReport {
            target: format!("{}/{}", conn.endpoint(), conn.dbname),
            ..RestoreReport::default()
        };
        let major = target.major;
        let tools = tokio::task::spawn_blocking(move || -> Result<_, PgError> {
            let psql = postgres::find_tool("psql", major, true)?;
            let pg_restore = if format == PgFormat::Sql {
                None
            } else {
                Some(postgres::find_tool("pg_restore", major, true)?)
            };
            Ok((psql, pg_restore))
        })
        .await??;
        for (name, tool) in [("psql", Some(&tools.0)), ("pg_restore", tools.1.as_ref())] {
            let Some(tool) = tool else { continue };
            if let Some(w) = tool.mismatch_warning(name, major) {
                tracing::warn!("{w}");
                report.warnings.push(w);
            }
            report
                .client_tools
                .insert(name.to_string(), ToolRecord::from(tool));
        }
        let cancel = Cancel::default();
        let mut guard = cancel.on_drop();
        let admin = target.admin.clone();
        let exists = target.exists;
        let job = DsnRestore {
            path: self.path.clone(),
            layout: self.layout,
            format,
            compression: self.compression,
            jobs: self.jobs,
            conn: conn.clone(),
            psql: tools.0,
            pg_restore: tools.1,
            target,
            created: Cell::new(false),
            cancel,
        };
        let (result, created) = tokio::task::spawn_blocking(move || {
            let r = job.run();
            (r, job.created.get())
        })
        .await?;
        guard.disarm();
        report.created_database = created;
        match result {
            Ok(w) => {
                report.warnings.extend(w);
                tracing::info!(target = %report.target, "database restored");
                Ok(report)
            }
            Err(e) if created => {
                let dropped = match &admin {
                    Some(a) => drop_database(a, &conn.dbname, major).await,
                    None => Err(anyhow::anyhow!("no maintenance database to connect to")),
                };
                let what = match dropped {
                    Ok(()) => "the database it created was dropped again".to_string(),
                    Err(d) => format!(
                        "dropping the half-made database it created failed too ({d:#}) — drop it by hand"
                    ),
                };
                Err(e.context(format!("restore into {} failed; {what}", report.target)))
            }
            Err(e) => Err(e.context(format!(
                "restore into {} failed; {}",
                report.target,
                if exists {
                    "the database existed before and is left as the failure found it — empty it before trying again"
                } else {
                    "no database was created"
                }
            ))),
        }
    }

    /// Restores file trees under `dir` (each at its original absolute path
    /// below it) and a snapshot as a data directory at `dir`. With both in
    /// one generation the file trees go to `<dir>-files` so the data
    /// directory stays clean. Refuses a non-empty target unless `force`.
    pub async fn restore_to_dir(&self, dir: &Path, force: bool) -> anyhow::Result<RestoreReport> {
        if self.layout == Layout::SqlStream {
            anyhow::bail!(
                "this generation is a SQL dump: restore it with --to-dsn DSN, or get the SQL with --output FILE"
            );
        }
        let dir = std::path::absolute(dir)?;
        let snapshot = self.format == Some(PgFormat::Snapshot);
        let files_dir = if snapshot {
            PathBuf::from(format!("{}-files", dir.display()))
        } else {
            dir.clone()
        };
        if !force {
            for d in [&dir, &files_dir] {
                refuse_non_empty(d)?;
            }
        }
        if let Some(needed) = self.space_needed {
            crate::source::files::check_space(&files_dir, needed)?;
        }
        let job = DirRestore {
            path: self.path.clone(),
            compression: self.compression,
            dir: dir.clone(),
            files_dir,
            cancel: Cancel::default(),
        };
        let cancel = job.cancel.clone();
        let mut guard = cancel.on_drop();
        let warnings = tokio::task::spawn_blocking(move || job.run()).await??;
        guard.disarm();
        Ok(RestoreReport {
            target: dir.display().to_string(),
            created_database: false,
            warnings,
            ..RestoreReport::default()
        })
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

fn refuse_non_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{} is not empty — restore into a new or empty directory, or pass --force to restore over what is there",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
    }
}

/// What the target server already has.
struct Target {
    major: u32,
    /// The target database exists (and holds no tables).
    exists: bool,
    /// Encoding of the existing target database.
    encoding: Option<String>,
    /// A maintenance database on the same server (`postgres` or
    /// `template1`), to create and drop the target from.
    admin: Option<ConnInfo>,
    roles: HashSet<String>,
    tablespaces: HashSet<String>,
}

/// Connects to the target database or, when it does not exist, to a
/// maintenance database of the same server, and reads what the restore
/// must know. Creates nothing.
async fn inspect_target(conn: &ConnInfo) -> anyhow::Result<Target> {
    let mut admin = None;
    let (client, exists) = match conn.connect().await {
        Ok(c) => (c, true),
        Err(PgError::NoDatabase { .. }) => {
            let mut last = None;
            let mut found = None;
            for maintenance in ["postgres", "template1"] {
                let m = conn.with_dbname(maintenance);
                match m.connect().await {
                    Ok(c) => {
                        found = Some(c);
                        admin = Some(m);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match found {
                Some(c) => (c, false),
                None => return Err(last.expect("tried").into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let q = |e: tokio_postgres::Error| {
        anyhow::anyhow!("query on {} failed: {}", conn.endpoint(), db_message(&e))
    };
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4,
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                        AND n.nspname NOT LIKE 'pg\\_toast%'
                        AND n.nspname NOT LIKE 'pg\\_temp%'),
                    pg_encoding_to_char(d.encoding)::text
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(q)?;
    let version_num: i32 = row.get(0);
    let relations: i64 = row.get(1);
    if exists && relations > 0 {
        anyhow::bail!(
            "database \"{}\" on {} already holds {relations} tables, views or sequences — restore into a new database (offsite creates it when it does not exist) or an empty one",
            conn.dbname,
            conn.endpoint()
        );
    }
    let roles = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let tablespaces = client
        .query("SELECT spcname::text FROM pg_tablespace", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    if exists {
        // To drop nothing by mistake, an existing target never gets one.
        admin = None;
    }
    Ok(Target {
        major: postgres::major_of(version_num.max(0) as u32),
        exists,
        encoding: exists.then(|| row.get(2)),
        admin,
        roles,
        tablespaces,
    })
}

/// `DROP DATABASE` through `admin` (a maintenance database of the same
/// server), forcing other sessions out where the server can (13+).
pub(crate) async fn drop_database(admin: &ConnInfo, db: &str, major: u32) -> anyhow::Result<()> {
    let client = admin.connect().await?;
    let force = if major >= 13 { " WITH (FORCE)" } else { "" };
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(db)
        ))
        .await
        .map_err(|e| anyhow::anyhow!("cannot drop database \"{db}\": {}", db_message(&e)))?;
    tracing::info!(database = db, server = %admin.endpoint(), "dropped database");
    Ok(())
}

/// Drops the statements of a roles script that would change what already
/// exists on the target: `ALTER ROLE` of an existing role (attributes,
/// password, settings), `CREATE TABLESPACE` of an existing tablespace.
struct GlobalsFilter {
    roles: HashSet<String>,
    tablespaces: HashSet<String>,
    state: QuoteState,
    skipping: bool,
    kept_roles: Vec<String>,
}

impl GlobalsFilter {
    fn keep(&mut self, line: &str) -> bool {
        let starts_normal = self.state == QuoteState::Normal;
        self.state = self.state.after(line);
        let body = line.trim_end();
        if self.skipping {
            if self.state == QuoteState::Normal && body.ends_with(';') {
                self.skipping = false;
            }
            return false;
        }
        if !starts_normal {
            return true;
        }
        let skip = if let Some(rest) = body
            .strip_prefix("ALTER ROLE ")
            .or_else(|| body.strip_prefix("CREATE ROLE "))
        {
            match parse_ident(rest) {
                Some((name, _)) if self.roles.contains(&name) => {
                    if !self.kept_roles.contains(&name) {
                        self.kept_roles.push(name);
                    }
                    true
                }
                _ => false,
            }
        } else if let Some(rest) = body.strip_prefix("CREATE TABLESPACE ") {
            matches!(parse_ident(rest), Some((name, _)) if self.tablespaces.contains(&name))
        } else {
            false
        };
        if skip && !(self.state == QuoteState::Normal && body.ends_with(';')) {
            self.skipping = true;
        }
        !skip
    }
}

struct DsnRestore {
    path: PathBuf,
    layout: Layout,
    format: PgFormat,
    compression: Compression,
    jobs: u32,
    conn: ConnInfo,
    psql: PgTool,
    pg_restore: Option<PgTool>,
    target: Target,
    /// Set once this restore has created the target database.
    created: Cell<bool>,
    cancel: Cancel,
}

impl DsnRestore {
    fn run(&self) -> anyhow::Result<Vec<String>> {
        let input = pipeline::open_decompressed(&self.path, &self.compression)?;
        let mut warnings = Vec::new();
        match self.layout {
            Layout::SqlStream => self.sql_stream(input, &mut warnings)?,
            Layout::Tar => self.tar(input, &mut warnings)?,
        }
        Ok(warnings)
    }

    fn psql(&self, label: &str) -> ToolCommand {
        self.psql_on(&self.conn, label)
    }

    fn psql_on(&self, conn: &ConnInfo, label: &str) -> ToolCommand {
        let mut cmd = self.psql.command(label, Some(conn));
        cmd.arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--set=ON_ERROR_STOP=1");
        cmd.stdin = true;
        cmd
    }

    /// Runs a roles script through its own psql, filtered; stops at
    /// `until` (the end marker) or the end of `input`.
    fn globals(
        &self,
        input: &mut dyn BufRead,
        until: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut filter = GlobalsFilter {
            roles: self.target.roles.clone(),
            tablespaces: self.target.tablespaces.clone(),
            state: QuoteState::Normal,
            skipping: false,
            kept_roles: Vec::new(),
        };
        // The target database may not exist yet: roles go in through the
        // maintenance database then.
        let on = self.target.admin.as_ref().unwrap_or(&self.conn);
        let mut child = self.psql_on(on, "psql (roles)").spawn(&self.cancel)?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut line = Vec::new();
        let mut write_result = Ok(());
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if until.is_some_and(|u| text.trim_end() == u) {
                break;
            }
            if filter.keep(&text)
                && write_result.is_ok()
                && let Err(e) = stdin.write_all(&line)
            {
                // psql quit early; its exit status says why.
                write_result = Err(e);
            }
        }
        drop(stdin);
        child.wait().map_err(|e| {
            let tablespace = e
                .stderr_tail
                .iter()
                .any(|l| l.contains("tablespace") || l.contains("directory"));
            let hint = if tablespace {
                " — a tablespace the source had cannot be created here: its LOCATION must be an empty directory owned by the server's user on the target host; create that directory, or create the tablespace by hand (any location) before restoring"
            } else {
                ""
            };
            anyhow::Error::from(e).context(format!(
                "creating the source's roles and tablespaces on {} failed{hint}",
                self.conn.endpoint()
            ))
        })?;
        write_result.map_err(|e| anyhow::anyhow!("feeding roles to psql: {e}"))?;
        if !filter.kept_roles.is_empty() {
            let msg = format!(
                "roles already on the target were left as they are (attributes and passwords not restored): {}",
                filter.kept_roles.join(", ")
            );
            tracing::info!("{msg}");
            warnings.push(msg);
        }
        Ok(())
    }

    /// Runs `script` through one psql on `conn`.
    fn run_script(&self, conn: &ConnInfo, label: &str, script: &[u8]) -> anyhow::Result<()> {
        let mut child = self.psql_on(conn, label).spawn(&self.cancel)?;
        let mut stdin = child.stdin.take().expect("piped");
        let fed = stdin.write_all(script);
        drop(stdin);
        child.wait()?;
        fed.map_err(|e| anyhow::anyhow!("feeding {label}: {e}"))?;
        Ok(())
    }

    /// Before the data: creates the target database as the source was
    /// (when it does not exist) and gives it the source's owner.
    fn open_database(
        &self,
        stored: Option<&[u8]>,
        with_roles: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<DatabaseProperties>> {
        let props = stored.map(|s| DatabaseProperties::parse(s).for_target(&self.conn.dbname));
        let props = props.filter(|p| p.create.is_some());
        if props.is_none() {
            warnings.push(
                "the generation holds no database properties (taken by an older offsite): owner, encoding, locale, ACL, comment and settings of the database were not restored".into(),
            );
        }
        let target = quote_ident(&self.conn.dbname);
        let owner = props
            .as_ref()
            .and_then(|p| p.owner.clone())
            .filter(|_| with_roles);
        if let Some(admin) = self.target.admin.as_ref().filter(|_| !self.target.exists) {
            let mut statements: Vec<String> = match &props {
                Some(p) => p.create.iter().cloned().collect(),
                None => vec![format!("CREATE DATABASE {target} TEMPLATE template0;\n")],
            };
            let script = match &props {
                Some(p) => p.script(&statements),
                None => statements.concat().into_bytes(),
            };
            self.run_script(admin, "psql (create database)", &script)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create database \"{}\" on {} as the source had it (encoding, locale, tablespace): {e} — create the missing locale or tablespace on the target, or create the database by hand and restore into it",
                        self.conn.dbname,
                        self.conn.endpoint()
                    )
                })?;
            self.created.set(true);
            tracing::info!(database = %self.conn.dbname, server = %self.conn.endpoint(), "created the restore target database");
            statements.clear();
            if let (Some(p), Some(o)) = (&props, &owner) {
                self.run_script(admin, "psql (database owner)", &p.script([o]))?;
            }
        } else if let Some(p) = &props {
            if let (Some(want), Some(have)) = (p.encoding(), &self.target.encoding)
                && !want.eq_ignore_ascii_case(have)
            {
                warnings.push(format!(
                    "database \"{}\" already existed with encoding {have}, the source's is {want}: the data was converted — restore into a new database to keep the source's encoding",
                    self.conn.dbname
                ));
            }
            if let Some(o) = &owner {
                self.run_script(&self.conn, "psql (database owner)", &p.script([o]))?;
            }
        }
        Ok(props)
    }

    /// After the data: comment, ACL and settings of the database, and the
    /// roles' settings in it. Without roles in the generation only those
    /// that name no role.
    fn close_database(
        &self,
        props: Option<&DatabaseProperties>,
        with_roles: bool,
    ) -> anyhow::Result<()> {
        let Some(p) = props else { return Ok(()) };
        let statements = if with_roles {
            p.after.clone()
        } else {
            p.after_without_roles()
        };
        if statements.is_empty() {
            return Ok(());
        }
        self.run_script(
            &self.conn,
            "psql (database properties)",
            &p.script(&statements),
        )
        .map_err(|e| e.context("applying the database's comment, ACL and settings"))
    }

    /// Feeds `prefix` then the rest of `input` to one psql.
    fn psql_stream(&self, prefix: &[u8], input: &mut dyn Read) -> anyhow::Result<()> {
        let mut child = self.psql("psql").spawn(&self.cancel)?;
        let mut stdin = child.stdin.take().expect("piped");
        let fed = stdin
            .write_all(prefix)
            .and_then(|_| pump(input, &mut stdin, &self.cancel));
        drop(stdin);
        child.wait()?;
        fed.map_err(|e| anyhow::anyhow!("feeding the dump to psql: {e}"))?;
        Ok(())
    }

    fn sql_stream(
        &self,
        input: Box<dyn Read + Send>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut reader = BufReader::with_capacity(pipeline::BUFFER_SIZE, input);
        let mut line = Vec::new();
        let mut saw_globals = false;
        let mut properties: Option<Vec<u8>> = None;
        let prefix = loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                anyhow::bail!("{} holds no SQL", self.path.display());
            }
            let text = String::from_utf8_lossy(&line);
            let t = text.trim_end();
            if t == GLOBALS_BEGIN {
                self.globals(&mut reader, Some(GLOBALS_END), warnings)?;
                saw_globals = true;
            } else if t == PROPERTIES_BEGIN {
                let mut props = Vec::new();
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line)? == 0 {
                        anyhow::bail!(
                            "{} ends inside its database properties",
                            self.path.display()
                        );
                    }
                    if String::from_utf8_lossy(&line).trim_end() == PROPERTIES_END {
                        break;
                    }
                    let body = line.strip_prefix(b"-- ").unwrap_or(&line);
                    props.extend_from_slice(body);
                }
                properties = Some(props);
            } else if t == DATABASE_BEGIN {
                break Vec::new();
            } else if t.starts_with("--") || t.is_empty() {
                continue;
            } else {
                // Not written by offsite (or markers lost): all of it is the
                // database script.
                break line.clone();
            }
        };
        if !saw_globals {
            warnings
                .push("the dump holds no roles; owners and grants need them on the target".into());
        }
        let props = self.open_database(properties.as_deref(), saw_globals, warnings)?;
        self.psql_stream(&prefix, &mut reader)?;
        self.close_database(props.as_ref(), saw_globals)
    }

    fn tar(&self, input: Box<dyn Read + Send>, warnings: &mut Vec<String>) -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(input);
        let mut saw_globals = false;
        let mut restored = false;
        let mut spool: Option<RestoreSpool> = None;
        let mut dir_pending = false;
        let mut properties: Option<Vec<u8>> = None;
        let mut opened: Option<Option<DatabaseProperties>> = None;
        for entry in archive.entries()? {
            self.cancel.check()?;
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if opened.is_none() && name.starts_with("database") && name != PROPERTIES_MEMBER {
                opened = Some(self.open_database(properties.as_deref(), saw_globals, warnings)?);
            }
            if dir_pending && !name.starts_with("database/") {
                self.pg_restore(&spool_path(&spool)?.join("database"), saw_globals, warnings)?;
                dir_pending = false;
                restored = true;
            }
            if name == GLOBALS_MEMBER {
                let mut r = BufReader::new(&mut entry);
                self.globals(&mut r, None, warnings)?;
                saw_globals = true;
            } else if name == PROPERTIES_MEMBER {
                let mut props = Vec::new();
                (&mut entry).take(16 << 20).read_to_end(&mut props)?;
                properties = Some(props);
            } else if name == "database.sql" {
                if !saw_globals {
                    warnings.push(
                        "the dump holds no roles; owners and grants need them on the target".into(),
                    );
                }
                self.psql_stream(b"", &mut entry)?;
                restored = true;
            } else if name == "database.dump" || name == "database.tar" {
                let sp = get_spool(&mut spool, &self.path)?;
                let file = sp.join(&name);
                let mut out = std::fs::File::create(&file)?;
                pump(&mut entry, &mut out, &self.cancel)?;
                out.sync_all().ok();
                drop(out);
                self.pg_restore(&file, saw_globals, warnings)?;
                std::fs::remove_file(&file).ok();
                restored = true;
            } else if let Some(rest) = name.strip_prefix("database/") {
                let sp = get_spool(&mut spool, &self.path)?.join("database");
                std::fs::create_dir_all(&sp)?;
                if entry.header().entry_type().is_file()
                    && !rest.contains("..")
                    && !rest.contains('/')
                {
                    let mut out = std::fs::File::create(sp.join(rest))?;
                    pump(&mut entry, &mut out, &self.cancel)?;
                }
                dir_pending = true;
            } else if name == "database" || name == "database/" {
                dir_pending = true;
            } else if name.starts_with(FILES_PREFIX) || name.starts_with("snapshot/") {
                // Database members come first; the rest is not ours.
                break;
            }
        }
        if dir_pending {
            self.pg_restore(&spool_path(&spool)?.join("database"), saw_globals, warnings)?;
            restored = true;
        }
        if !restored {
            anyhow::bail!(
                "{} holds no database dump (format {})",
                self.path.display(),
                self.format
            );
        }
        self.close_database(opened.flatten().as_ref(), saw_globals)
    }

    fn pg_restore(
        &self,
        archive: &Path,
        with_roles: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let tool = self.pg_restore.as_ref().expect("found for non-sql formats");
        let mut cmd = tool.command("pg_restore", Some(&self.conn));
        let dbname = format!(
            "dbname='{}'",
            self.conn.dbname.replace('\\', "\\\\").replace('\'', "\\'")
        );
        cmd.arg("--exit-on-error").arg(format!("--dbname={dbname}"));
        if matches!(self.format, PgFormat::Custom | PgFormat::Directory) && self.jobs > 1 {
            cmd.arg(format!("--jobs={}", self.jobs));
        }
        if !with_roles {
            cmd.arg("--no-owner").arg("--no-privileges");
            warnings.push(
                "the generation holds no roles: restored with --no-owner --no-privileges, objects belong to the restoring user".into(),
            );
        }
        cmd.arg(archive);
        let child = cmd.spawn(&self.cancel)?;
        child.wait()?;
        Ok(())
    }
}

/// A scratch folder for the archive formats pg_restore wants as files
/// (seeking, `-j`): next to the generation when possible, so it lands on the
/// backup disk rather than a small /tmp.
struct RestoreSpool(PathBuf);

impl Drop for RestoreSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get_spool<'a>(
    spool: &'a mut Option<RestoreSpool>,
    generation: &Path,
) -> anyhow::Result<&'a Path> {
    if spool.is_none() {
        let name = format!(
            "{}restore-{}-{}",
            pipeline::SPOOL_PREFIX,
            std::process::id(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
        );
        let near = generation.parent().unwrap_or(Path::new(".")).join(&name);
        let dir = match std::fs::create_dir(&near) {
            Ok(()) => near,
            Err(_) => {
                let tmp = std::env::temp_dir().join(&name);
                std::fs::create_dir(&tmp)?;
                tmp
            }
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        *spool = Some(RestoreSpool(dir));
    }
    Ok(&spool.as_ref().expect("set above").0)
}

fn spool_path(spool: &Option<RestoreSpool>) -> anyhow::Result<&Path> {
    spool
        .as_ref()
        .map(|s| s.0.as_path())
        .ok_or_else(|| anyhow::anyhow!("directory-format dump has no files"))
}

struct DirRestore {
    path: PathBuf,
    compression: Compression,
    dir: PathBuf,
    files_dir: PathBuf,
    cancel: Cancel,
}

impl DirRestore {
    fn run(self) -> anyhow::Result<Vec<String>> {
        let input = pipeline::open_decompressed(&self.path, &self.compression)?;
        let mut archive = tar::Archive::new(input);
        let mut warnings = Vec::new();
        let mut files: Option<TreeExtractor> = None;
        let mut snapshot = false;
        let mut skipped_db = false;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        for entry in archive.entries()? {
            self.cancel.check()?;
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if name.starts_with(FILES_PREFIX) {
                if files.is_none() {
                    files = Some(TreeExtractor::new(&self.files_dir)?);
                }
                files.as_mut().expect("set").extract(&mut entry)?;
            } else if let Some(member) = name.strip_prefix("snapshot/") {
                snapshot = true;
                std::fs::create_dir_all(&self.dir)?;
                self.snapshot_member(member, &mut entry, as_root, &mut warnings)?;
            } else if name == GLOBALS_MEMBER || name.starts_with("database") {
                skipped_db = true;
            }
        }
        let mut restored = false;
        if let Some(f) = files {
            let (n, w) = f.finish()?;
            warnings.extend(w);
            tracing::info!(entries = n, dir = %self.files_dir.display(), "file trees restored");
            restored = true;
        }
        if snapshot {
            self.finish_snapshot(as_root)?;
            restored = true;
        }
        if skipped_db {
            let msg =
                "the database dump in this generation was not restored: restore it with --to-dsn"
                    .to_string();
            if !restored {
                anyhow::bail!("{msg} (it holds nothing for a directory)");
            }
            warnings.push(msg);
        }
        if !restored {
            anyhow::bail!(
                "{} holds nothing to restore to a directory",
                self.path.display()
            );
        }
        Ok(warnings)
    }

    fn snapshot_member<R: Read>(
        &self,
        member: &str,
        entry: &mut tar::Entry<'_, R>,
        as_root: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let unpack = |entry: &mut tar::Entry<'_, R>, to: &Path| -> anyhow::Result<()> {
            std::fs::create_dir_all(to)?;
            let mut inner = tar::Archive::new(entry);
            inner.set_preserve_permissions(true);
            inner.set_preserve_ownerships(as_root);
            inner.set_overwrite(true);
            inner.unpack(to).map_err(|e| {
                anyhow::anyhow!("cannot unpack snapshot/{member} into {}: {e}", to.display())
            })
        };
        match member {
            "base.tar" => unpack(entry, &self.dir),
            "pg_wal.tar" => unpack(entry, &self.dir.join("pg_wal")),
            "backup_manifest" => {
                let mut out = std::fs::File::create(self.dir.join("backup_manifest"))?;
                pump(entry, &mut out, &self.cancel)?;
                Ok(())
            }
            other => {
                let Some(oid) = other
                    .strip_suffix(".tar")
                    .filter(|o| o.chars().all(|c| c.is_ascii_digit()))
                else {
                    tracing::debug!(member = other, "ignoring unknown snapshot member");
                    return Ok(());
                };
                // A tablespace: its original location may be in use on this
                // host, so it goes next to the data directory and the link
                // in pg_tblspc is repointed.
                let to = PathBuf::from(format!("{}-tablespace-{oid}", self.dir.display()));
                unpack(entry, &to)?;
                let link = self.dir.join("pg_tblspc").join(oid);
                let old = std::fs::read_link(&link).ok();
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&to, &link)?;
                warnings.push(format!(
                    "tablespace {oid} restored to {} (it was at {})",
                    to.display(),
                    old.map(|o| o.display().to_string())
                        .unwrap_or_else(|| "?".into())
                ));
                Ok(())
            }
        }
    }

    /// PostgreSQL starts only on a data directory that is private to its
    /// owner.
    fn finish_snapshot(&self, as_root: bool) -> anyhow::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let version = self.dir.join("PG_VERSION");
        let meta = std::fs::metadata(&version).map_err(|_| {
            anyhow::anyhow!(
                "{} has no PG_VERSION after unpacking: the snapshot's base.tar is missing or damaged",
                self.dir.display()
            )
        })?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        if as_root {
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                self.dir.as_os_str(),
            ))?;
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::chown(c.as_ptr(), meta.uid(), meta.gid()) } != 0 {
                return Err(io::Error::last_os_error().into());
            }
        }
        tracing::info!(
            dir = %self.dir.display(),
            version = %std::fs::read_to_string(&version).unwrap_or_default().trim(),
            "snapshot restored: start PostgreSQL of that major version on it"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_leaves_existing_roles_and_tablespaces_alone() {
        let mut f = GlobalsFilter {
            roles: ["postgres".to_string(), "app".to_string()].into(),
            tablespaces: ["fast".to_string()].into(),
            state: QuoteState::Normal,
            skipping: false,
            kept_roles: Vec::new(),
        };
        let script = [
            "DO $offsite$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $offsite$;\n",
            "ALTER ROLE app WITH LOGIN PASSWORD 'x';\n",
            "COMMENT ON ROLE app IS 'a\n",
            "ALTER ROLE app WITH SUPERUSER;\n",
            "';\n",
            "ALTER ROLE \"New\" WITH LOGIN;\n",
            "ALTER ROLE app SET search_path TO 'a\n",
            "b';\n",
            "CREATE TABLESPACE fast OWNER postgres LOCATION '/x';\n",
            "CREATE TABLESPACE slow OWNER postgres LOCATION '/y';\n",
            "GRANT readers TO app GRANTED BY postgres;\n",
        ];
        let kept: Vec<bool> = script.iter().map(|l| f.keep(l)).collect();
        assert_eq!(
            kept,
            [
                true, false, true, true, true, true, false, false, false, true, true
            ]
        );
        assert_eq!(f.kept_roles, ["app"]);
    }
}
