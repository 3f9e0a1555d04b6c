//! WAL retention at destinations: a destination's WAL goes only once that
//! destination's older snapshots are gone. At each destination, archived
//! files wholly before the start of the oldest good snapshot confirmed
//! there are removed (entry first, then data, so a fetch never finds an
//! entry without its data); with no good snapshot confirmed there, nothing
//! is removed, and neither is anything when that snapshot's WAL range
//! cannot be read (better a few files too many than a gap). Timeline
//! history files are kept. Runs after `offsite run`'s rotation.

use super::{data_object, entry_object};
use crate::config::Job;
use crate::plugin::ErrorKind;
use crate::runtime::Runtime;
use crate::store::{Generation, JobStore, UploadState};
use crate::wal::catalog::snapshot_range;
use crate::wal::name::SegmentId;
use crate::wal::shipped;
use crate::wal::store::WalStore;

/// Of the names a destination confirmed, those wholly before `oldest`
/// (history files kept). `None` (no good snapshot there): nothing.
pub fn removable<'a>(
    confirmed: impl Iterator<Item = &'a String>,
    oldest: Option<SegmentId>,
    seg_size: u64,
) -> Vec<String> {
    let Some(oldest) = oldest else {
        return vec![];
    };
    confirmed
        .filter(|n| !n.ends_with(".history"))
        .filter(|n| {
            n.get(..24)
                .and_then(|s| SegmentId::parse(s, seg_size))
                .is_some_and(|id| id.timeline <= oldest.timeline && id.segno < oldest.segno)
        })
        .cloned()
        .collect()
}

/// Where the oldest good snapshot confirmed at `dest` starts, if any;
/// an error when its range cannot be read.
fn oldest_at(
    store: &WalStore,
    entries: &[crate::ship::Entry],
    dest: &str,
    seg: u64,
) -> anyhow::Result<Option<SegmentId>> {
    let Some(e) = entries.iter().find(|e| {
        e.manifest.is_good()
            && e.manifest.format.as_deref() == Some("snapshot")
            && e.manifest
                .uploads
                .get(dest)
                .is_some_and(|u| u.state == UploadState::Done)
    }) else {
        return Ok(None);
    };
    let g = Generation {
        manifest: e.manifest.clone(),
        path: e.path.clone(),
    };
    let r = snapshot_range(store, &g)?;
    Ok(Some(SegmentId::containing(r.timeline, r.start, seg)))
}

/// Applies the rule at every destination of the job. Returns the files
/// removed, as (destination, name); problems are logged and remove nothing
/// more at that destination.
pub async fn retain(rt: &Runtime, job: &Job) -> Vec<(String, String)> {
    let mut removed = vec![];
    let Ok(store) = crate::wal::store_of(&rt.config, job) else {
        return removed;
    };
    let seg = store
        .cluster()
        .ok()
        .flatten()
        .map(|c| c.segment_size)
        .unwrap_or(crate::wal::name::DEFAULT_SEGMENT_SIZE);
    let entries =
        match crate::ship::entries(&JobStore::new(&rt.config.runner.backup_dir, &job.name)) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    "job {}: WAL retention at destinations skipped: {e:#}",
                    job.name
                );
                return removed;
            }
        };
    for dest in &job.destinations {
        let oldest = match oldest_at(&store, &entries, dest, seg) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("job {}: WAL retention at {dest} skipped: {e:#}", job.name);
                continue;
            }
        };
        let Ok(mut st) = shipped::load(&store.dir, dest) else {
            continue;
        };
        let names = removable(st.confirmed.keys(), oldest, seg);
        if names.is_empty() {
            continue;
        }
        let mut session = match crate::ship::open_named(rt, dest, &job.name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("job {}: WAL retention at {dest}: {e:#}", job.name);
                continue;
            }
        };
        for name in names {
            let mut ok = true;
            for obj in [
                entry_object(&job.name, &name),
                data_object(&job.name, &name),
            ] {
                match session
                    .remove(&obj, &job.name, &store.stored_path(&name))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!("job {}: WAL retention at {dest}: {obj}: {e}", job.name);
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
            st.confirmed.remove(&name);
            if let Err(e) = shipped::save(&store.dir, dest, &st) {
                tracing::error!("job {}: {e:#}", job.name);
                break;
            }
            removed.push((dest.clone(), name));
        }
    }
    if !removed.is_empty() {
        tracing::info!(
            "job {}: removed {} archived WAL files at destinations, older than the oldest snapshot each holds",
            job.name,
            removed.len()
        );
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wal_before_the_oldest_snapshot_there_goes_and_none_without_one() {
        let seg = 16u64 << 20;
        let names: Vec<String> = [
            "00000001.history",
            "000000010000000000000003",
            "000000010000000000000004.00000028.backup",
            "000000010000000000000004",
            "000000010000000000000005",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let oldest = SegmentId::parse("000000010000000000000005", seg);
        assert_eq!(
            removable(names.iter(), oldest, seg),
            [
                "000000010000000000000003",
                "000000010000000000000004.00000028.backup",
                "000000010000000000000004"
            ]
        );
        assert!(removable(names.iter(), None, seg).is_empty());
    }
}
