//! `offsite restore JOB [--generation NAME|latest] [--from DEST]
//! (--to-dsn DSN | --to-dir DIR | --output FILE) [--force]`.
//!
//! Takes the local copy, or fetches it (and its manifest) through a
//! destination; the sha256 is checked before anything is applied.

use std::path::PathBuf;

use crate::config::Config;
use crate::restore::Restore;
use crate::store::JobStore;

pub enum Target {
    Dsn(String),
    Dir(PathBuf),
    File(PathBuf),
}

pub async fn restore(
    config: &Config,
    job_name: &str,
    generation: Option<&str>,
    from: Option<&str>,
    target: Target,
    force: bool,
) -> anyhow::Result<bool> {
    let job = config
        .job(job_name)
        .map_err(|e| anyhow::anyhow!(e))?
        .clone();
    let wanted = generation.unwrap_or("latest");
    let store = JobStore::new(&config.runner.backup_dir, &job.name);
    let local = store.find(wanted);
    let scratch;
    let (path, manifest) = match (local, from) {
        (Ok(g), _) => (g.path, g.manifest),
        (Err(e), None) => anyhow::bail!("{e:#}; to fetch it from a destination, add --from DEST"),
        (Err(_), Some(dest)) => {
            let rt = crate::ship::runtime(config.clone()).await?;
            let name = if wanted == "latest" {
                crate::ship::newest_remote(&rt, &job.name, dest).await?
            } else {
                wanted.to_string()
            };
            std::fs::create_dir_all(&store.dir)?;
            scratch = tempfile::Builder::new()
                .prefix(".restore-")
                .tempdir_in(&store.dir)?;
            crate::ship::fetch(&rt, &job.name, dest, &name, scratch.path()).await?
        }
    };
    let format = manifest
        .format
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        "job {}: restoring {} (sha256 checked first)",
        job.name,
        manifest.name
    );
    let r = Restore::open(
        &path,
        manifest.layout,
        format,
        manifest.compression,
        &manifest.sha256,
    )
    .await?
    .with_jobs(job.jobs)
    .with_space_needed(manifest.tree.as_ref().map(|t| t.restore_bytes));
    let report = match target {
        Target::Dsn(dsn) => r.restore_to_dsn(&dsn).await?,
        Target::Dir(dir) => r.restore_to_dir(&dir, force).await?,
        Target::File(f) => r.restore_to_file(&f).await?,
    };
    for w in &report.warnings {
        tracing::warn!("job {}: {w}", job.name);
    }
    println!("restored {} into {}", manifest.name, report.target);
    Ok(true)
}
