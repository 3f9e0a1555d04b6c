//! `restore_command` beyond the local store: the local store first, then
//! the prefetch folder, then each destination in the job's order.
//!
//! The answer follows PostgreSQL's rules (see [`crate::wal::fetch`]): the
//! file, checked against its catalog entry (the local one when the store
//! still has it, else the one shipped beside the data) — or "not there"
//! only when the local store and every destination that can be read
//! positively lack it. A destination that cannot be reached, refuses the
//! credentials, or serves bytes whose sha256 differs makes the whole
//! answer an error, unless another destination served the file: then
//! PostgreSQL stops instead of promoting at a gap it could have replayed.

use std::path::Path;

use super::prefetch;
use super::remote::find;
use crate::config::{Config, Job};
use crate::wal::fetch::{Outcome, from_store};
use crate::wal::name::kind_of;
use crate::wal::store::{unpack, write_restored};

/// `offsite wal-fetch JOB NAME PATH`: the file `name` written to `to`.
/// Errors are never "not there".
pub async fn fetch(config: &Config, job: &Job, name: &str, to: &Path) -> anyhow::Result<Outcome> {
    let store = crate::wal::store_of(config, job)?;
    if kind_of(name).is_none() || job.destinations.is_empty() {
        return from_store(&store, name, to);
    }
    let local = store.entry(name)?;
    if local.is_some() && store.stored_path(name).exists() {
        return from_store(&store, name, to);
    }
    let depth = crate::wal::settings_of(job)?.prefetch;
    if let Some(raw) = prefetch::take(&store, name, local.as_ref()) {
        write_restored(to, &raw)?;
        tracing::info!("job {}: {name} came from the prefetch folder", job.name);
        if prefetch::ahead(&store, name) * 2 < depth {
            let rt = crate::runtime::open(config.clone()).await?;
            prefetch::fill(&rt, job, &store, name, depth).await;
        }
        return Ok(Outcome::Restored(raw.len() as u64));
    }
    let rt = crate::runtime::open(config.clone()).await?;
    let (found, ()) = tokio::join!(
        find(&rt, job, &store, name, local.as_ref()),
        prefetch::fill(&rt, job, &store, name, depth)
    );
    match found? {
        Some(f) => {
            let raw = unpack(name, &f.entry, &f.packed)?;
            write_restored(to, &raw)?;
            tracing::info!(
                "job {}: {name} fetched from {} (not in the local store)",
                job.name,
                f.destination
            );
            Ok(Outcome::Restored(raw.len() as u64))
        }
        None => Ok(Outcome::NotThere),
    }
}
