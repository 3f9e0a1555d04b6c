//! The logical dumps: `pg_dump` in the sql, custom, tar and directory
//! formats, either streamed straight into the generation (sql alone) or
//! written to the spool for a tar-layout generation.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::tools::{collect_warnings, file_size};
use super::{PgFormat, Prepared, snapshot};
use crate::exec::{Cancel, pump};

/// `pg_dump -Fp` straight into `out`. Returns the bytes written; zero bytes
/// is an error because pg_dump always writes a header.
pub(crate) fn dump_sql_stream(
    p: &Prepared,
    out: &mut dyn Write,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<u64> {
    let tool = p.pg_dump.as_ref().expect("prepared with pg_dump");
    let mut cmd = tool.command("pg_dump", Some(&p.conn));
    cmd.arg("--format=plain");
    if let Some(id) = &p.snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    cmd.stdout = true;
    let mut child = cmd.spawn(cancel)?;
    let mut stdout = child.stdout.take().expect("piped");
    let copied = pump(&mut stdout, out, cancel);
    drop(stdout);
    // Always wait, so the error can say how pg_dump ended.
    let waited = child.wait();
    let bytes = match (copied, waited) {
        // Our side failed (disk full, …): that is the cause; pg_dump then
        // only died of the closed pipe.
        (Err(e), _) if !cancel.is_cancelled() => {
            return Err(
                anyhow::Error::new(e).context("writing pg_dump's output to the backup file")
            );
        }
        (_, Err(tool_err)) => return Err(tool_err.into()),
        (Err(e), Ok(_)) => return Err(e.into()),
        (Ok(n), Ok(stderr)) => {
            collect_warnings("pg_dump", &stderr, warnings);
            n
        }
    };
    if bytes == 0 {
        anyhow::bail!("pg_dump exited successfully but wrote nothing; refusing an empty backup");
    }
    Ok(bytes)
}

/// Runs the dump for a tar-layout generation into `spool`, returning
/// `(member name, path)` pairs in archive order. Directories are archived
/// recursively under their member name. A snapshot job takes its
/// `pg_basebackup`; the others `pg_dump --file` in the job's format (one
/// file, or one directory for `directory`), refusing a dump that wrote
/// nothing.
pub(crate) fn dump_to_spool(
    p: &Prepared,
    spool: &Path,
    outer_compression: bool,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if p.source.format == PgFormat::Snapshot {
        return snapshot::basebackup_to_spool(p, spool, cancel, warnings);
    }
    let format = p.source.format;
    let tool = p.pg_dump.as_ref().expect("prepared with pg_dump");
    let target = spool.join(format.member_name());
    let mut cmd = tool.command("pg_dump", Some(&p.conn));
    cmd.arg(format!(
        "--format={}",
        match format {
            PgFormat::Sql => "plain",
            PgFormat::Custom => "custom",
            PgFormat::Tar => "tar",
            _ => "directory",
        }
    ));
    cmd.arg("--file").arg(&target);
    if let Some(id) = &p.snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    if format == PgFormat::Directory {
        cmd.arg(format!("--jobs={}", p.source.jobs.max(1)));
    }
    if outer_compression && matches!(format, PgFormat::Custom | PgFormat::Directory) {
        // Compress once, with zstd's threads, instead of gzip inside
        // and zstd (gaining nothing) outside.
        cmd.arg("--compress=0");
    }
    let child = cmd.spawn(cancel)?;
    let stderr = child.wait()?;
    collect_warnings("pg_dump", &stderr, warnings);
    let written = if format == PgFormat::Directory {
        file_size(&target.join("toc.dat"))
    } else {
        file_size(&target)
    };
    if written == 0 {
        anyhow::bail!(
            "pg_dump exited successfully but wrote nothing to {}; refusing an empty backup",
            target.display()
        );
    }
    Ok(vec![(format.member_name().to_string(), target)])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{fake, script};
    use super::*;
    use crate::exec::{STDERR_TAIL_LINES, ToolError};

    #[test]
    fn a_dump_that_writes_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake(&script(dir.path(), "exit 0"));
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &Cancel::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrote nothing"), "{err}");
    }

    #[test]
    fn a_failing_dump_reports_status_and_scrubbed_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let body = "i=0; while [ $i -lt 80 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
                    echo \"pg_dump: error: password $PGPASSWORD rejected\" >&2\n\
                    echo partial; exit 3";
        let p = fake(&script(dir.path(), body));
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &Cancel::default(), &mut Vec::new()).unwrap_err();
        let tool = err.downcast_ref::<ToolError>().expect("ToolError");
        assert_eq!(tool.status, "exited with status 3");
        assert_eq!(tool.stderr_tail.len(), STDERR_TAIL_LINES);
        let msg = err.to_string();
        assert!(
            msg.starts_with("pg_dump exited with status 3; its last stderr lines:"),
            "{msg}"
        );
        assert!(
            msg.contains("pg_dump: error: password *** rejected"),
            "{msg}"
        );
        assert!(!msg.contains("fake-Secret"), "{msg}");
        assert!(!msg.contains("noise 0\n"), "only the tail is kept");
    }

    #[test]
    fn cancelling_kills_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake(&script(dir.path(), "exec sleep 30"));
        let cancel = Cancel::default();
        let c2 = cancel.clone();
        let started = std::time::Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            c2.cancel();
        });
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &cancel, &mut Vec::new())
            .unwrap_err()
            .to_string();
        t.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            err.contains("stopped because the backup was cancelled"),
            "{err}"
        );
    }
}
