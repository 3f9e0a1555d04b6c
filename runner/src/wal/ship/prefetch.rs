//! `wal_prefetch = N`: while recovery asks for one segment, the next N are
//! fetched from the destinations in parallel into `<wal_dir>/prefetch/`
//! (outside the data directory, in the store the server user already
//! writes), so the calls after it are answered from local disk.
//!
//! A file is placed there only after its bytes matched its entry
//! (`<name>.zst` beside `<name>.json`, each written atomically), and is
//! checked again when it is used, then removed. The folder is bounded: at
//! most N segments ahead of the one asked for; segments before it, files
//! older than [`STALE`] and temporaries of dead calls are removed on each
//! call. Prefetch problems are never the answer: the file is then fetched
//! (or found missing) by the call that needs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::remote::find;
use crate::config::Job;
use crate::runtime::Runtime;
use crate::wal::name::SegmentId;
use crate::wal::store::{WalEntry, WalStore, unpack};

/// A prefetched file unused for this long is removed.
const STALE: Duration = Duration::from_secs(3600);

/// The prefetch folder of a store.
pub fn dir(store: &WalStore) -> PathBuf {
    super::remote::scratch_dir(store)
}

fn seg_size(store: &WalStore) -> u64 {
    store
        .cluster()
        .ok()
        .flatten()
        .map(|c| c.segment_size)
        .unwrap_or(crate::wal::name::DEFAULT_SEGMENT_SIZE)
}

/// Removes from the folder what no later call can use: segments before
/// `name` (recovery has moved past them), anything older than [`STALE`].
fn clean(store: &WalStore, name: &str) {
    let Ok(rd) = std::fs::read_dir(dir(store)) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let seg = n.get(..24).filter(|s| s.len() == 24 && n.len() == 29);
        let passed = seg.is_some_and(|s| s < name && name.len() == 24);
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if passed || old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The prefetched `name`, checked against `local` (the local catalog's
/// entry) or else the entry fetched beside it, and removed from the
/// folder. `None` when absent or damaged (it is then fetched again).
pub fn take(store: &WalStore, name: &str, local: Option<&WalEntry>) -> Option<Vec<u8>> {
    clean(store, name);
    let d = dir(store);
    let (data, entry) = (
        d.join(format!("{name}.zst")),
        d.join(format!("{name}.json")),
    );
    let got = (|| {
        let packed = std::fs::read(&data).ok()?;
        let e: WalEntry = match local {
            Some(e) => e.clone(),
            None => serde_json::from_slice(&std::fs::read(&entry).ok()?).ok()?,
        };
        match unpack(name, &e, &packed).and_then(|raw| {
            super::remote::check_restored(name, &raw)?;
            Ok(raw)
        }) {
            Ok(raw) => Some(raw),
            Err(err) => {
                tracing::warn!("prefetched {name} is unusable ({err:#}); fetching it again");
                None
            }
        }
    })();
    for p in [&data, &entry] {
        let _ = std::fs::remove_file(p);
    }
    got
}

/// Prefetched segments after `name`.
pub fn ahead(store: &WalStore, name: &str) -> usize {
    std::fs::read_dir(dir(store))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.len() == 29 && n.ends_with(".zst") && &n[..24] > name
                })
                .count()
        })
        .unwrap_or(0)
}

/// Fetches, in parallel, those of the `depth` segments after `name` (same
/// timeline) that are neither prefetched nor in the local store.
pub async fn fill(rt: &Runtime, job: &Job, store: &WalStore, name: &str, depth: usize) {
    let seg = seg_size(store);
    let Some(mut id) = SegmentId::parse(name, seg).filter(|_| depth > 0) else {
        return;
    };
    let d = dir(store);
    let mut wanted = vec![];
    for _ in 0..depth {
        id = id.next();
        let n = id.file_name(seg);
        if !d.join(format!("{n}.zst")).exists() && !store.stored_path(&n).exists() {
            wanted.push(n);
        }
    }
    let all = wanted.iter().map(|n| one(rt, job, store, n, &d));
    futures::future::join_all(all).await;
}

/// One prefetch: found and checked → placed; anything else → nothing.
async fn one(rt: &Runtime, job: &Job, store: &WalStore, name: &str, d: &Path) {
    let local = store.entry(name).ok().flatten();
    let f = match find(rt, job, store, name, local.as_ref()).await {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("job {}: prefetch of {name}: {e:#}", job.name);
            return;
        }
    };
    let entry = serde_json::to_vec_pretty(&f.entry).expect("serializable");
    let placed = crate::store::write_atomic(&d.join(format!("{name}.json")), &entry)
        .and_then(|()| crate::store::write_atomic(&d.join(format!("{name}.zst")), &f.packed));
    if let Err(e) = placed {
        tracing::debug!("job {}: prefetch of {name}: {e:#}", job.name);
    }
}
