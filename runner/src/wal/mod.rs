//! Continuous WAL archiving and point-in-time recovery (seeds 002, 004).
//!
//! `offsite wal-push JOB %p` (PostgreSQL's `archive_command`) puts every WAL
//! file into the job's local WAL store ([`store`]) and says yes only once it
//! is durable; `offsite wal-fetch JOB %f %p` (`restore_command`) hands them
//! back during recovery with the exit codes PostgreSQL needs to stop rather
//! than promote early ([`fetch`]). [`name`] and [`segment`] read WAL file
//! names, page headers and records. [`ship`] carries the store to the job's
//! destinations and fetches back from them.

pub mod catalog;
pub mod fetch;
pub mod name;
pub mod recovery;
pub mod retention;
pub mod segment;
pub mod ship;
pub mod shipped;
pub mod store;

use std::path::PathBuf;

use crate::config::{Config, Job, WalSettings};

/// The job's WAL settings, or why it has none.
pub fn settings_of(job: &Job) -> anyhow::Result<&WalSettings> {
    job.wal.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "job {} does not archive WAL: add wal = true to [jobs.{}] (it needs format = \"snapshot\")",
            job.name,
            job.name
        )
    })
}

/// Where the job's WAL store lives: `wal_dir`, else `<backup_dir>/<job>/wal`.
pub fn dir_of(config: &Config, job: &Job) -> PathBuf {
    job.wal
        .as_ref()
        .and_then(|w| w.dir.clone())
        .unwrap_or_else(|| config.runner.backup_dir.join(&job.name).join("wal"))
}

/// The job's local WAL store.
pub fn store_of(config: &Config, job: &Job) -> anyhow::Result<store::WalStore> {
    let s = settings_of(job)?;
    Ok(store::WalStore::new(
        &dir_of(config, job),
        &job.name,
        s.store_limit,
    ))
}
