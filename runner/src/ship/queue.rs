//! The files in a job folder that carry rotation from one run to the next:
//! the manifests of generations dropped locally whose copies remain at
//! destinations, and what each destination's plugin warned about. Plain
//! file handling, no plugin calls; rotation ([`super::rotate`]) decides
//! what goes in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::store::{JobStore, Manifest};

/// Generations dropped locally whose copies remain at destinations (still
/// counted there, or a removal that failed and is retried): their
/// manifests, so rotation there goes on without the local file. Kept in
/// the job folder.
pub const REMOTE_COPIES_FILE: &str = ".pending-removals.json";

/// One generation known only by its copies at destinations.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RemoteCopy {
    pub manifest: Manifest,
    /// Where the generation was kept locally (for `eremove FILE`).
    pub local_path: PathBuf,
}

/// The remote copies of generations no longer on local disk.
pub fn remote_copies(job_dir: &Path) -> Vec<RemoteCopy> {
    let path = job_dir.join(REMOTE_COPIES_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(
                "ignoring {} (unreadable: {e}); copies it listed are no longer rotated",
                path.display()
            );
            vec![]
        }),
        Err(_) => vec![],
    }
}

pub(super) fn save_remote_copies(job_dir: &Path, copies: &[RemoteCopy]) -> anyhow::Result<()> {
    save_or_remove(&job_dir.join(REMOTE_COPIES_FILE), copies, copies.is_empty())
}

/// Write `value` as JSON (atomically), or remove the file when `empty`.
fn save_or_remove<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    empty: bool,
) -> anyhow::Result<()> {
    if empty {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    }
    crate::store::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// A generation as rotation handles it: on local disk or only remote.
pub struct Entry {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub local: bool,
}

/// Local generations and remote-only copies of a job, oldest first.
pub fn entries(store: &JobStore) -> anyhow::Result<Vec<Entry>> {
    let gens = store.generations()?;
    let mut out: Vec<Entry> = remote_copies(&store.dir)
        .into_iter()
        .filter(|c| !gens.iter().any(|g| g.manifest.name == c.manifest.name))
        .map(|c| Entry {
            manifest: c.manifest,
            path: c.local_path,
            local: false,
        })
        .collect();
    out.extend(gens.into_iter().map(|g| Entry {
        manifest: g.manifest,
        path: g.path,
        local: true,
    }));
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(out)
}

/// What a destination's plugin warned about during the last rotation
/// there (e.g. a versioned bucket where removing frees no space).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DestinationNote {
    pub at: chrono::DateTime<Utc>,
    pub warnings: Vec<String>,
}

const NOTES_FILE: &str = ".destination-notes.json";

/// The notes of each destination, by name.
pub fn destination_notes(job_dir: &Path) -> BTreeMap<String, DestinationNote> {
    std::fs::read(job_dir.join(NOTES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A destination rotated this run replaces its note (none if it had no
/// warning); the others keep theirs.
pub(super) fn save_notes(job_dir: &Path, fresh: Vec<(String, Vec<String>)>) -> anyhow::Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let mut notes = destination_notes(job_dir);
    for (d, w) in fresh {
        if w.is_empty() {
            notes.remove(&d);
        } else {
            notes.insert(
                d,
                DestinationNote {
                    at: Utc::now(),
                    warnings: w,
                },
            );
        }
    }
    save_or_remove(&job_dir.join(NOTES_FILE), &notes, notes.is_empty())
}
