//! Looking an archived file up at the job's destinations: the entry
//! (unless the local catalog has it), then the data, checked against it.
//! Used by wal-fetch ([`super::fetch`]) and its prefetch.

use std::path::{Path, PathBuf};

use super::{data_object, entry_object};
use crate::config::Job;
use crate::plugin::{ErrorKind, PluginError, configured};
use crate::runtime::Runtime;
use crate::wal::store::{WalEntry, WalStore, unpack};

/// Where fetched files land (temporaries, and the prefetched files): the
/// prefetch folder of the store, outside any data directory.
pub fn scratch_dir(store: &WalStore) -> PathBuf {
    store.dir.join("prefetch")
}

/// An archived file as a destination holds it.
pub struct Fetched {
    pub entry: WalEntry,
    /// The stored (compressed) bytes; `unpack` checks them.
    pub packed: Vec<u8>,
    pub destination: String,
}

/// One destination's answer.
enum Answer {
    Have(Box<Fetched>),
    /// It positively lacks the file (`not-found`).
    Absent,
    /// It cannot be read back at all (`unsupported`, e.g. a shell-compat
    /// destination without a fetch script): it holds nothing wal-fetch can use.
    Cannot(String),
}

/// Looks `name` up at every destination of the job, in order, and returns
/// the first copy whose bytes match its entry. `Ok(None)` only when every
/// readable destination said `not-found` and the local catalog does not
/// record the file either.
pub async fn find(
    rt: &Runtime,
    job: &Job,
    store: &WalStore,
    name: &str,
    local: Option<&WalEntry>,
) -> anyhow::Result<Option<Fetched>> {
    let mut errors = vec![];
    for dest in &job.destinations {
        match from_destination(rt, job, store, dest, name, local).await {
            Ok(Answer::Have(f)) => {
                match unpack(name, &f.entry, &f.packed).and_then(|raw| check_restored(name, &raw)) {
                    Ok(()) => return Ok(Some(*f)),
                    Err(e) => errors.push(format!("{dest}: {e:#}")),
                }
            }
            Ok(Answer::Absent) => {}
            Ok(Answer::Cannot(why)) => {
                tracing::info!(
                    "job {}: {dest} cannot be read back ({why}); skipped",
                    job.name
                )
            }
            Err(e) => errors.push(format!("{dest}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{name} is not in the local WAL store and could not be looked up everywhere: {}",
            errors.join("; ")
        );
    }
    if local.is_some() {
        anyhow::bail!(
            "{name} is recorded in the local WAL catalog {} but its data is missing there and at every destination ({})",
            store.dir.display(),
            job.destinations.join(", ")
        );
    }
    Ok(None)
}

/// The bytes of `name` as PostgreSQL will read them: for a segment, its
/// first page header must name this segment (timeline, position, size), so
/// a copy whose entry agrees with itself but is not this segment (empty,
/// truncated, another file) is never handed over.
pub fn check_restored(name: &str, raw: &[u8]) -> anyhow::Result<()> {
    use crate::wal::name::WalFileKind;
    if crate::wal::name::kind_of(name) != Some(WalFileKind::Segment) {
        return Ok(());
    }
    let h = crate::wal::segment::read_header(raw)
        .map_err(|e| anyhow::anyhow!("{name} as fetched is not a WAL segment: {e}"))?;
    crate::wal::segment::check_name(name, &h, raw.len())
        .map_err(|e| anyhow::anyhow!("{name} as fetched is not that segment: {e}"))?;
    Ok(())
}

/// A plugin error, as an answer or an error.
fn answer_of(e: PluginError, what: &str, dest: &str) -> anyhow::Result<Answer> {
    match e.kind {
        ErrorKind::NotFound => Ok(Answer::Absent),
        ErrorKind::Unsupported => Ok(Answer::Cannot(e.message)),
        _ => anyhow::bail!("cannot fetch {what} from {dest}: {e}"),
    }
}

/// One destination: the entry (unless the local catalog has it), then the
/// data, each into a private temporary file of the prefetch folder.
async fn from_destination(
    rt: &Runtime,
    job: &Job,
    store: &WalStore,
    dest: &str,
    name: &str,
    local: Option<&WalEntry>,
) -> anyhow::Result<Answer> {
    let c = configured::destination(&rt.config, &rt.plugins, dest)
        .map_err(|e| anyhow::anyhow!(configured::joined(&e)))?;
    let mut s = crate::ship::open(rt, &c, &job.name).await?;
    let dir = scratch_dir(store);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let tmp = |ext: &str| dir.join(format!(".part-{}-{name}{ext}", std::process::id()));
    let read_gone = |p: &Path| {
        let b = std::fs::read(p);
        let _ = std::fs::remove_file(p);
        b.map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
    };
    let entry = match local {
        Some(e) => e.clone(),
        None => {
            let (obj, p) = (entry_object(&job.name, name), tmp(".json"));
            if let Err(e) = s.fetch(&obj, &job.name, &p).await {
                let _ = std::fs::remove_file(&p);
                return answer_of(e, &obj, dest);
            }
            let e: WalEntry = serde_json::from_slice(&read_gone(&p)?)
                .map_err(|e| anyhow::anyhow!("{obj} at {dest} is unreadable: {e}"))?;
            check_entry(store, name, &e, dest)?;
            e
        }
    };
    let (obj, p) = (data_object(&job.name, name), tmp(".zst"));
    if let Err(e) = s.fetch(&obj, &job.name, &p).await {
        let _ = std::fs::remove_file(&p);
        return match answer_of(e, &obj, dest)? {
            Answer::Absent if local.is_none() => anyhow::bail!(
                "{dest} holds the entry of {name} but not its data {obj}: the copy there is damaged"
            ),
            a => Ok(a),
        };
    }
    Ok(Answer::Have(Box::new(Fetched {
        entry,
        packed: read_gone(&p)?,
        destination: dest.to_string(),
    })))
}

/// An entry from a destination must be for this file and, when the local
/// store knows its cluster, of that cluster.
fn check_entry(store: &WalStore, name: &str, e: &WalEntry, dest: &str) -> anyhow::Result<()> {
    if e.name != name {
        anyhow::bail!("the entry of {name} at {dest} describes {}", e.name);
    }
    if let (Ok(Some(c)), Some(sys)) = (store.cluster(), e.system_identifier)
        && c.system_identifier != sys
    {
        anyhow::bail!(
            "{name} at {dest} comes from the cluster with system identifier {sys}, but job {}'s WAL belongs to system identifier {}: WAL of two clusters must never mix",
            store.job,
            c.system_identifier
        );
    }
    Ok(())
}
