//! The `snapshot` format: `pg_basebackup` copies the whole cluster's files
//! plus the WAL written during the copy, as tar files in the spool, which
//! the generation then carries under `snapshot/`.

use std::path::{Path, PathBuf};

use super::Prepared;
use super::tools::{collect_warnings, file_size};
use crate::exec::Cancel;

/// Member-name prefix of a snapshot's files inside a tar-layout generation.
const MEMBER_DIR: &str = "snapshot";

/// Runs `pg_basebackup` into `<spool>/snapshot` and returns its files as
/// `(member name, path)` pairs in archive order: `base.tar` first (a
/// restore lays the data directory down before anything else), then
/// `pg_wal.tar`, then tablespaces (`<oid>.tar`) and `backup_manifest` by
/// name.
pub(crate) fn basebackup_to_spool(
    p: &Prepared,
    spool: &Path,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = spool.join(MEMBER_DIR);
    run_basebackup(p, &dir, cancel, warnings)?;
    let base = dir.join("base.tar");
    if file_size(&base) == 0 {
        anyhow::bail!(
            "pg_basebackup exited successfully but wrote no base.tar; refusing an empty backup"
        );
    }
    spool_members(&dir, base)
}

/// `pg_basebackup` into `dir`, as tar files with the WAL streamed alongside.
fn run_basebackup(
    p: &Prepared,
    dir: &Path,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    let tool = p
        .pg_basebackup
        .as_ref()
        .expect("prepared with pg_basebackup");
    let mut cmd = tool.command("pg_basebackup", Some(&p.conn));
    cmd.arg("-D")
        .arg(dir)
        .arg("--format=tar")
        // stream: the WAL written during the copy arrives as
        // pg_wal.tar, so the snapshot starts on its own.
        .arg("--wal-method=stream")
        .arg("--checkpoint=fast")
        // The spool is archived and fsynced as one file afterwards.
        .arg("--no-sync")
        .arg("--label=offsite");
    let child = cmd.spawn(cancel)?;
    let stderr = child.wait()?;
    collect_warnings("pg_basebackup", &stderr, warnings);
    Ok(())
}

/// The files pg_basebackup left in `dir`, in archive order (`base` first).
fn spool_members(dir: &Path, base: PathBuf) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut members = vec![(format!("{MEMBER_DIR}/base.tar"), base)];
    let wal = dir.join("pg_wal.tar");
    if wal.exists() {
        members.push((format!("{MEMBER_DIR}/pg_wal.tar"), wal));
    }
    let mut rest: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "base.tar" && n != "pg_wal.tar")
        .collect();
    rest.sort();
    for n in rest {
        members.push((format!("{MEMBER_DIR}/{n}"), dir.join(&n)));
    }
    Ok(members)
}
