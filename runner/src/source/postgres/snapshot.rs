//! The `snapshot` format: `pg_basebackup` copies the whole cluster's files
//! plus the WAL written during the copy, as tar files in the spool, which
//! the generation then carries under `snapshot/`. The WAL range the copy
//! needs (its `backup_manifest`'s "WAL-Ranges") is read from the spool
//! right after, so the generation's manifest records it ([`WalRange`]).

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

/// The WAL a snapshot needs to be consistent, as pg_basebackup's
/// `backup_manifest` gives it ("WAL-Ranges"): replay from `start_lsn`
/// through `end_lsn`, ending on `timeline`. LSNs are written as PostgreSQL
/// writes them (`0/2000028`). Recorded in the generation's manifest when
/// the snapshot is taken (`snapshot_wal`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
}

/// The range in a `backup_manifest`'s text: the first range's start, the
/// last range's end and timeline (more than one range only when the copy
/// spanned a timeline switch). Errors name what is missing.
pub fn wal_range_of_manifest(manifest: &str) -> Result<WalRange, String> {
    let v: serde_json::Value = serde_json::from_str(manifest).map_err(|e| e.to_string())?;
    let ranges = v["WAL-Ranges"].as_array().ok_or("no WAL-Ranges")?;
    let first = ranges.first().ok_or("WAL-Ranges is empty")?;
    let last = ranges.last().expect("non-empty");
    let lsn = |r: &serde_json::Value, k: &str| -> Result<String, String> {
        let s = r[k].as_str().ok_or(format!("no {k}"))?;
        let ok = s.split_once('/').is_some_and(|(h, l)| {
            [h, l]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 8 && u32::from_str_radix(p, 16).is_ok())
        });
        ok.then(|| s.to_string())
            .ok_or(format!("{k} `{s}` is not a WAL position"))
    };
    let timeline = last["Timeline"]
        .as_u64()
        .and_then(|t| u32::try_from(t).ok())
        .ok_or("no Timeline")?;
    Ok(WalRange {
        timeline,
        start_lsn: lsn(first, "Start-LSN")?,
        end_lsn: lsn(last, "End-LSN")?,
    })
}

/// The range of the snapshot pg_basebackup just wrote into `spool`
/// (`<spool>/snapshot/backup_manifest`).
pub(crate) fn wal_range_in_spool(spool: &Path) -> anyhow::Result<WalRange> {
    let path = spool.join(MEMBER_DIR).join("backup_manifest");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read pg_basebackup's {}: {e}", path.display()))?;
    wal_range_of_manifest(&text)
        .map_err(|e| anyhow::anyhow!("pg_basebackup's {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_range_from_a_backup_manifest() {
        let m = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(
            wal_range_of_manifest(m).unwrap(),
            WalRange {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                end_lsn: "0/2000100".into()
            }
        );
        // Taken across a timeline switch: start of the first, end and
        // timeline of the last.
        let two = r#"{"WAL-Ranges": [
            { "Timeline": 1, "Start-LSN": "0/5000028", "End-LSN": "0/5000200" },
            { "Timeline": 2, "Start-LSN": "0/5000200", "End-LSN": "0/6000100" }]}"#;
        let r = wal_range_of_manifest(two).unwrap();
        assert_eq!(
            (r.timeline, r.start_lsn.as_str(), r.end_lsn.as_str()),
            (2, "0/5000028", "0/6000100")
        );
        assert!(
            wal_range_of_manifest("{}")
                .unwrap_err()
                .contains("WAL-Ranges")
        );
        assert!(wal_range_of_manifest(r#"{"WAL-Ranges": []}"#).is_err());
        let bad = r#"{"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "zz", "End-LSN": "0/1" }]}"#;
        assert!(
            wal_range_of_manifest(bad)
                .unwrap_err()
                .contains("not a WAL position")
        );
    }
}
