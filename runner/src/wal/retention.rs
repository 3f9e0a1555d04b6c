//! WAL retention tied to snapshots: a segment goes only once no kept good
//! snapshot can need it, i.e. it lies wholly before the start of the oldest
//! good snapshot still kept. Without a good snapshot nothing is deleted
//! (that WAL may be all there is), and nothing some destination of the
//! job has not confirmed yet (the local copy may be the only one). Timeline
//! history files are tiny and always kept.

use crate::config::{Config, Job};
use crate::store::JobStore;

use super::catalog::snapshot_range;
use super::name::SegmentId;
use super::store::WalEntry;

/// The archived files that lie wholly before `oldest`: segments and
/// partial segments numbered lower, and backup labels of those segments.
pub fn prunable(entries: &[WalEntry], oldest: SegmentId, seg_size: u64) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind != "history")
        .filter(|e| {
            SegmentId::parse(&e.name[..24], seg_size).is_some_and(|id| id.segno < oldest.segno)
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Removes from the job's local WAL store what no kept good snapshot
/// needs. Returns the names removed; problems are logged and delete
/// nothing.
pub fn prune(config: &Config, job: &Job) -> Vec<String> {
    let Ok(store) = super::store_of(config, job) else {
        return vec![];
    };
    let gens = match JobStore::new(&config.runner.backup_dir, &job.name).generations() {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("job {}: WAL retention skipped: {e:#}", job.name);
            return vec![];
        }
    };
    let Some(oldest) = gens
        .iter()
        .find(|g| g.manifest.is_good() && g.manifest.format.as_deref() == Some("snapshot"))
    else {
        tracing::info!(
            "job {}: no good snapshot yet: all archived WAL is kept",
            job.name
        );
        return vec![];
    };
    let range = match snapshot_range(&store, oldest) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("job {}: WAL retention skipped: {e:#}", job.name);
            return vec![];
        }
    };
    let (entries, seg) = match super::catalog::load(&store) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("job {}: WAL retention skipped: {e:#}", job.name);
            return vec![];
        }
    };
    let from = SegmentId::containing(range.timeline, range.start, seg);
    let mut removed = vec![];
    let (ready, waiting) = shipped_everywhere(&store.dir, job, prunable(&entries, from, seg));
    if !waiting.is_empty() {
        tracing::info!(
            "job {}: keeping {} archived WAL files older than snapshot {} until every destination has them (first: {})",
            job.name,
            waiting.len(),
            oldest.manifest.name,
            waiting[0]
        );
    }
    for name in ready {
        match store.remove(&name) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::error!("job {}: WAL retention: {e:#}", job.name),
        }
    }
    if !removed.is_empty() {
        tracing::info!(
            "job {}: removed {} archived WAL files older than snapshot {} ({} onwards kept)",
            job.name,
            removed.len(),
            oldest.manifest.name,
            from.file_name(seg)
        );
    }
    removed
}

/// `names` split into those every destination of the job confirmed (or
/// all, for a job without destinations) and those some destination still
/// lacks: the local copy is the only one there may be of those.
fn shipped_everywhere(
    dir: &std::path::Path,
    job: &Job,
    names: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let states: Vec<Option<super::shipped::DestState>> = job
        .destinations
        .iter()
        .map(|d| super::shipped::load(dir, d).ok())
        .collect();
    names.into_iter().partition(|n| {
        states
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.confirmed.contains_key(n)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: &str) -> WalEntry {
        WalEntry {
            name: name.into(),
            kind: kind.into(),
            size: 0,
            sha256: String::new(),
            stored_size: 0,
            stored_sha256: String::new(),
            pushed: chrono::Utc::now(),
            system_identifier: None,
            timeline: None,
            start_lsn: None,
            segment_size: None,
            summary: None,
        }
    }

    #[test]
    fn only_wal_wholly_before_the_oldest_snapshot_goes() {
        let seg = 16u64 << 20;
        let entries = vec![
            entry("00000001.history", "history"),
            entry("000000010000000000000003", "segment"),
            entry("000000010000000000000004.00000028.backup", "backup"),
            entry("000000010000000000000004", "segment"),
            entry("000000010000000000000005", "segment"),
            entry("000000010000000000000006", "segment"),
        ];
        let oldest = SegmentId::parse("000000010000000000000005", seg).unwrap();
        assert_eq!(
            prunable(&entries, oldest, seg),
            [
                "000000010000000000000003",
                "000000010000000000000004.00000028.backup",
                "000000010000000000000004"
            ]
        );
    }
}
