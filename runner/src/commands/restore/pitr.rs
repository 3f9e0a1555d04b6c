//! `offsite restore JOB --to-dir DIR (--to-time T | --to-lsn LSN |
//! --to-name NAME | --immediate)`: point-in-time recovery.
//!
//! Picks the newest good snapshot that precedes the target, proves from the
//! WAL catalog that an unbroken chain of archived segments reaches the
//! target, and only then writes the data directory, with `recovery.signal`
//! and, in `postgresql.auto.conf`, a `restore_command` calling
//! `offsite wal-fetch` and the target. PostgreSQL does the replay when it
//! starts there; it pauses at the target (its default
//! `recovery_target_action`) so the result can be checked before
//! `pg_ctl promote`.

use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::store::JobStore;
use crate::wal::catalog::{self, SnapshotRange, Target, Window};

/// The snapshot to start from and the WAL window after it.
fn plan<'a>(
    config: &Config,
    job_name: &str,
    entries: &'a [crate::wal::store::WalEntry],
    seg_size: u64,
    target: &Target,
) -> anyhow::Result<Window<'a>> {
    let job = config.job(job_name).map_err(|e| anyhow::anyhow!(e))?;
    let store = crate::wal::store_of(config, job)?;
    let gens = JobStore::new(&config.runner.backup_dir, &job.name).generations()?;
    let now = chrono::Utc::now();
    let mut considered = vec![];
    for g in gens.iter().rev() {
        let m = &g.manifest;
        if !m.is_good() || m.is_future(now) || m.format.as_deref() != Some("snapshot") {
            continue;
        }
        let range: SnapshotRange = catalog::snapshot_range(&store, g)?;
        let w = catalog::window(entries, range, seg_size);
        if catalog::snapshot_precedes(&w.snapshot, target, &w) {
            w.reaches(target).map_err(|e| {
                anyhow::anyhow!(
                    "job {job_name}: cannot restore to that target, nothing written: {e}"
                )
            })?;
            return Ok(w);
        }
        considered.push(format!(
            "{} (consistent at {}, finished {})",
            m.name, w.snapshot.end, m.finished
        ));
    }
    if let Target::Name(n) = target {
        anyhow::bail!(
            "job {job_name}: no restore point named `{n}` in the archived WAL after any good snapshot, nothing written"
        );
    }
    if considered.is_empty() {
        anyhow::bail!(
            "job {job_name} has no good snapshot generation in {}: run `offsite run {job_name}` first",
            config.runner.backup_dir.join(job_name).display()
        );
    }
    anyhow::bail!(
        "job {job_name}: no good snapshot precedes the target, nothing written; snapshots: {}",
        considered.join(", ")
    )
}

pub async fn restore(
    config: &Config,
    job_name: &str,
    target: Target,
    dir: &Path,
    force: bool,
) -> anyhow::Result<bool> {
    let job = config.job(job_name).map_err(|e| anyhow::anyhow!(e))?;
    let store = crate::wal::store_of(config, job)?;
    let (entries, seg_size) = catalog::load(&store)?;
    let w = plan(config, job_name, &entries, seg_size, &target)?;
    server_reach(config, &store.dir, dir)?;
    tracing::info!(
        "job {job_name}: restoring snapshot {} and {} archived WAL segments after it",
        w.snapshot.generation,
        w.chain.len()
    );
    let name = w.snapshot.generation.clone();
    let to = super::Target::Dir(dir.to_path_buf());
    if !super::restore(config, job_name, Some(&name), None, to, force).await? {
        return Ok(false);
    }
    write_recovery(config, job_name, dir, &target)?;
    println!(
        "recovery set up in {}: start PostgreSQL there; it replays archived WAL to the target and pauses (check, then pg_ctl promote)",
        dir.display()
    );
    Ok(true)
}

/// PostgreSQL runs `restore_command` as the data directory's owner: that
/// user must be able to run this binary and read the config and the WAL
/// store, or recovery stops at its first segment. Checked before anything
/// is written when the directory exists and belongs to someone other than
/// root; for a directory root will hand over later, a warning.
fn server_reach(config: &Config, wal_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe()?;
    let owner = std::fs::metadata(dir).ok().map(|m| (m.uid(), m.gid()));
    let (uid, gid) = match owner {
        Some((0, _)) | None => (u32::MAX, u32::MAX),
        Some(ids) => ids,
    };
    let needs: [(&Path, u32, &str); 3] = [
        (&exe, 0o1, "run"),
        (&config.path, 0o4, "read"),
        (wal_dir, 0o5, "read"),
    ];
    for (path, bits, verb) in needs {
        if let Err(blocker) = reachable(path, uid, gid, bits) {
            let who = match owner {
                Some((u, _)) if u != 0 => format!("uid {u} (the owner of {})", dir.display()),
                _ => "the PostgreSQL user (not root)".to_string(),
            };
            let msg = format!(
                "{who} cannot {verb} {}: {blocker}; restore_command would fail at the first segment. Install offsite where that user can run it (e.g. /usr/local/bin) and give it read access to the config and the WAL store",
                path.display()
            );
            if uid == u32::MAX {
                eprintln!("warning: {msg}");
                return Ok(());
            }
            anyhow::bail!("nothing written: {msg}");
        }
    }
    Ok(())
}

/// Ok when user `uid` (group `gid`; `u32::MAX` for "any other user") can
/// search every folder above `path` and has `bits` (r=4, x=1) on it; else
/// the first path that stops it. Root is not special-cased: the server
/// never runs as root.
fn reachable(path: &Path, uid: u32, gid: u32, bits: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let allowed = |p: &Path, want: u32| -> bool {
        std::fs::metadata(p)
            .map(|m| {
                let shift = if m.uid() == uid {
                    6
                } else if m.gid() == gid {
                    3
                } else {
                    0
                };
                (m.mode() >> shift) & want == want
            })
            .unwrap_or(false)
    };
    for folder in path.ancestors().skip(1) {
        if !allowed(folder, 0o1) {
            return Err(format!("{} is not searchable by it", folder.display()));
        }
    }
    if !allowed(&path, bits) {
        return Err(format!("{} lacks the permission", path.display()));
    }
    Ok(())
}

/// `recovery.signal` and the recovery settings.
fn write_recovery(config: &Config, job: &str, dir: &Path, target: &Target) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cfg = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    let quote = |p: &Path| p.display().to_string().replace('\'', "''");
    let mut text = format!(
        "\n# offsite: point-in-time recovery of job {job}\nrestore_command = '\"{}\" --config \"{}\" wal-fetch {job} %f \"%p\"'\n",
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
