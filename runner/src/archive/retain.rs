//! Volume retention by content age (`archive_keep`): a sealed volume goes
//! only when every member's content (mtime) is older than `archive_keep`,
//! and only once every destination has confirmed its copy; then it is
//! removed at each destination and locally, and marked removed in the
//! catalog. A destination that cannot delete (TFTP) keeps its copy (its
//! rotation is external) and that is said once.

use anyhow::Result;

use super::catalog::{Catalog, VolumeRow};
use super::{ArchiveDir, MANIFEST_SUFFIX, ns};
use crate::plugin::ErrorKind;
use crate::runtime::Runtime;

/// Volumes past `keep` whose copies are confirmed everywhere.
pub fn due(
    cat: &Catalog,
    dests: &[String],
    keep: std::time::Duration,
    now: i64,
) -> Result<Vec<VolumeRow>> {
    let horizon = now.saturating_sub(keep.as_nanos().min(i64::MAX as u128) as i64);
    let mut out = vec![];
    for v in cat.volumes()? {
        if v.state != "sealed" {
            continue;
        }
        let (_, _, _, newest) = cat.volume_span(v.id)?;
        if newest.is_some_and(|n| n >= horizon) {
            continue;
        }
        let copies = cat.copies(v.id)?;
        let confirmed = dests.iter().all(|d| {
            copies
                .iter()
                .any(|(cd, s)| cd == d && (s == "done" || s == "removed"))
        });
        if confirmed {
            out.push(v);
        }
    }
    Ok(out)
}

/// Remove what [`due`] names. Returns one line per problem.
pub async fn retain(
    rt: &Runtime,
    dir: &ArchiveDir,
    dests: &[String],
    keep: std::time::Duration,
) -> Vec<String> {
    let now = ns(chrono::Utc::now());
    let cat = match Catalog::open(&dir.catalog()) {
        Ok(c) => c,
        Err(e) => return vec![format!("retention: cannot read the catalog: {e:#}")],
    };
    let todo = match due(&cat, dests, keep, now) {
        Ok(t) => t,
        Err(e) => return vec![format!("retention: cannot read the catalog: {e:#}")],
    };
    let mut errors = vec![];
    for v in todo {
        let mut all_removed = true;
        for d in dests {
            match remove_at(rt, dir, d, &v).await {
                Ok(()) => {
                    let _ = cat.set_copy(v.id, d, "removed", Some(now), None);
                }
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    tracing::warn!(
                        "job {}: {d} cannot delete {}; its rotation is external: {e}",
                        dir.job,
                        v.name
                    );
                    let _ = cat.set_copy(
                        v.id,
                        d,
                        "removed",
                        Some(now),
                        Some("kept: the destination cannot delete"),
                    );
                }
                Err(e) => {
                    all_removed = false;
                    errors.push(format!("retention: cannot remove {} at {d}: {e}", v.name));
                }
            }
        }
        if !all_removed {
            continue;
        }
        for p in [dir.sealed_path(&v.name), dir.manifest_path(&v.name)] {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                errors.push(format!("retention: cannot remove {}: {e}", p.display()));
            }
        }
        match cat.set_removed(v.id, now) {
            Ok(()) => tracing::info!(
                "job {}: volume {} removed (every member past archive_keep)",
                dir.job,
                v.name
            ),
            Err(e) => errors.push(format!("retention: {}: {e:#}", v.name)),
        }
    }
    errors
}

async fn remove_at(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    v: &VolumeRow,
) -> Result<(), crate::plugin::PluginError> {
    let mut s = crate::ship::open_named(rt, dest, &dir.job)
        .await
        .map_err(|e| crate::plugin::PluginError::host(format!("{e:#}")))?;
    let local = dir.sealed_path(&v.name);
    s.remove(&v.name, &dir.job, &local).await?;
    let mname = format!("{}{MANIFEST_SUFFIX}", v.name);
    match s
        .remove(&mname, &dir.job, &dir.manifest_path(&v.name))
        .await
    {
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Unsupported) => Ok(()),
        other => other,
    }
}
