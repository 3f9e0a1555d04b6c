//! Restoring the database part into a server (`--to-dsn`): the roles, the
//! target database, the dump through psql or pg_restore, and the database's
//! own properties, in that order (see the parent module for why).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::spool::{RestoreSpool, get_spool, spool_path};
use super::target::{Target, inspect_target};
use super::{Restore, RestoreReport};
use crate::exec::{Cancel, ToolCommand, pump};
use crate::pipeline::{self, Compression};
use crate::source::files::FILES_PREFIX;
use crate::source::postgres::database::DatabaseProperties;
use crate::source::postgres::tools::ToolRecord;
use crate::source::postgres::{ConnInfo, PgError, PgFormat, PgTool, drop_database, find_tool};
use crate::source::{
    DATABASE_BEGIN, GLOBALS_BEGIN, GLOBALS_END, GLOBALS_MEMBER, Layout, PROPERTIES_BEGIN,
    PROPERTIES_END, PROPERTIES_MEMBER,
};

/// [`Restore::restore_to_dsn`]: checks the target, picks the client tools,
/// runs the restore on a blocking thread, and on failure drops the
/// database it created.
pub(super) async fn restore(r: &Restore, target_dsn: &str) -> anyhow::Result<RestoreReport> {
    let format = database_format(r)?;
    let conn = ConnInfo::parse(target_dsn)?;
    let target = inspect_target(&conn).await?;
    let mut report = RestoreReport {
        target: format!("{}/{}", conn.endpoint(), conn.dbname),
        ..RestoreReport::default()
    };
    let major = target.major;
    let (psql, pg_restore) = restore_tools(format, major, &mut report).await?;
    let cancel = Cancel::default();
    let mut guard = cancel.on_drop();
    let admin = target.admin.clone();
    let exists = target.exists;
    let job = DsnRestore {
        path: r.path.clone(),
        layout: r.layout,
        format,
        compression: r.compression,
        jobs: r.jobs,
        conn: conn.clone(),
        psql,
        pg_restore,
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
        Err(e) => {
            let what = if created {
                drop_created(admin.as_ref(), &conn.dbname, major).await
            } else if exists {
                "the database existed before and is left as the failure found it — empty it before trying again".to_string()
            } else {
                "no database was created".to_string()
            };
            Err(e.context(format!("restore into {} failed; {what}", report.target)))
        }
    }
}

/// The format of the database part, refusing a generation that has none
/// a server can take.
fn database_format(r: &Restore) -> anyhow::Result<PgFormat> {
    Ok(match (r.layout, r.format) {
        (Layout::SqlStream, _) => PgFormat::Sql,
        (Layout::Tar, Some(PgFormat::Snapshot)) => anyhow::bail!(
            "a snapshot generation restores to a data directory, not into a server: use --to-dir DIR and start PostgreSQL of the same major version on it"
        ),
        (Layout::Tar, Some(f)) => f,
        (Layout::Tar, None) => {
            anyhow::bail!("this generation holds file trees only, no database: use --to-dir DIR")
        }
    })
}

/// psql, and pg_restore for the archive formats, chosen for the target's
/// major version; a mismatch is a warning, and both go into the report.
async fn restore_tools(
    format: PgFormat,
    major: u32,
    report: &mut RestoreReport,
) -> anyhow::Result<(PgTool, Option<PgTool>)> {
    let tools = tokio::task::spawn_blocking(move || -> Result<_, PgError> {
        let psql = find_tool("psql", major, true)?;
        let pg_restore = if format == PgFormat::Sql {
            None
        } else {
            Some(find_tool("pg_restore", major, true)?)
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
    Ok(tools)
}

/// After a failed restore: drops the half-made database it created, and
/// says how that went.
async fn drop_created(admin: Option<&ConnInfo>, db: &str, major: u32) -> String {
    let dropped = match admin {
        Some(a) => drop_database(a, db, major).await,
        None => Err(anyhow::anyhow!("no maintenance database to connect to")),
    };
    match dropped {
        Ok(()) => "the database it created was dropped again".to_string(),
        Err(d) => format!(
            "dropping the half-made database it created failed too ({d:#}) — drop it by hand"
        ),
    }
}

/// One restore into a server, run on a blocking thread.
pub(super) struct DsnRestore {
    pub(super) path: PathBuf,
    pub(super) layout: Layout,
    pub(super) format: PgFormat,
    pub(super) compression: Compression,
    pub(super) jobs: u32,
    pub(super) conn: ConnInfo,
    pub(super) psql: PgTool,
    pub(super) pg_restore: Option<PgTool>,
    pub(super) target: Target,
    /// Set once this restore has created the target database.
    pub(super) created: Cell<bool>,
    pub(super) cancel: Cancel,
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

    pub(super) fn psql(&self, label: &str) -> ToolCommand {
        self.psql_on(&self.conn, label)
    }

    pub(super) fn psql_on(&self, conn: &ConnInfo, label: &str) -> ToolCommand {
        let mut cmd = self.psql.command(label, Some(conn));
        cmd.arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--set=ON_ERROR_STOP=1");
        cmd.stdin = true;
        cmd
    }

    /// Runs `script` through one psql on `conn`.
    pub(super) fn run_script(
        &self,
        conn: &ConnInfo,
        label: &str,
        script: &[u8],
    ) -> anyhow::Result<()> {
        let mut child = self.psql_on(conn, label).spawn(&self.cancel)?;
        let mut stdin = child.stdin.take().expect("piped");
        let fed = stdin.write_all(script);
        drop(stdin);
        child.wait()?;
        fed.with_context(|| format!("feeding {label}"))?;
        Ok(())
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
        fed.context("feeding the dump to psql")?;
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
