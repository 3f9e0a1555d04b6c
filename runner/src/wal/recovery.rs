//! The recovery settings offsite writes into a restored snapshot's data
//! directory: `recovery.signal`, and in `postgresql.auto.conf` a
//! `restore_command` calling `offsite wal-fetch`, the timeline the catalog
//! proved the WAL chain on, and the target. Used by `restore --to-*` and by
//! `verify = "restore"` of a WAL job.

use std::io::Write;
use std::path::Path;

use super::catalog::Target;

/// First line of the block offsite appends to `postgresql.auto.conf`.
pub const BEGIN: &str = "# offsite: recovery of job";

/// Appends the recovery block for job `job` (whose config is at `config`)
/// to `dir/postgresql.auto.conf` and creates `dir/recovery.signal`, both
/// fsynced and owned like `dir`.
///
/// `timeline` pins `recovery_target_timeline` to the snapshot's timeline:
/// PostgreSQL's default, `latest`, would follow a newer timeline's history
/// file in the archive (one a promoted restore pushed there) away from the
/// WAL offsite proved reaches the target.
pub fn write(
    dir: &Path,
    job: &str,
    config: &Path,
    timeline: u32,
    target: &Target,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cfg = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let quote = |p: &Path| p.display().to_string().replace('\'', "''");
    let mut text = format!(
        "\n{BEGIN} {job}\nrestore_command = '\"{}\" --config \"{}\" wal-fetch {job} %f \"%p\"'\nrecovery_target_timeline = '{timeline}'\n",
        quote(&exe),
        quote(&cfg)
    );
    text.push_str(&target.recovery_conf());
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::File::create(dir.join("recovery.signal"))?.sync_all()?;
    copy_owner(dir, &[&auto, &dir.join("recovery.signal")]);
    Ok(())
}

/// `postgresql.auto.conf` without offsite's `recovery_target*` lines
/// (the timeline pin aside): a directory that, started, replays whatever
/// the archive holds by then instead of stopping at an old target.
pub fn drop_target(dir: &Path) -> anyhow::Result<()> {
    let auto = dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto)?;
    let kept: String = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("recovery_target") || l.starts_with("recovery_target_timeline")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::store::write_atomic(&auto, kept.as_bytes())?;
    copy_owner(dir, &[&auto]);
    Ok(())
}

/// The files offsite adds belong to whoever owns the data directory (as
/// root, PostgreSQL's user).
fn copy_owner(dir: &Path, files: &[&Path]) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(dir) {
        for f in files {
            let _ = std::os::unix::fs::chown(f, Some(m.uid()), Some(m.gid()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_pins_the_timeline_and_the_target_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '8MB'\n",
        )
        .unwrap();
        let cfg = dir.path().join("offsite.toml");
        let target = Target::Lsn("0/3000060".parse().unwrap());
        write(dir.path(), "db", &cfg, 1, &target).unwrap();
        let text = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(text.starts_with("work_mem = '8MB'\n"), "{text}");
        assert!(text.contains("wal-fetch db %f \"%p\"'"), "{text}");
        assert!(text.contains("recovery_target_timeline = '1'\n"), "{text}");
        assert!(
            text.contains("recovery_target_lsn = '0/3000060'\n"),
            "{text}"
        );
        assert!(dir.path().join("recovery.signal").exists());
        drop_target(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(!text.contains("recovery_target_lsn"), "{text}");
        assert!(text.contains("recovery_target_timeline = '1'"), "{text}");
        assert!(text.contains("restore_command"), "{text}");
    }
}
