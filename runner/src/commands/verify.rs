//! `offsite verify JOB [--generation NAME] [--remote DEST]`.
//!
//! Without `--remote` the local generation is judged (checksum, and a
//! restore test with `verify = "restore"`); a failure marks it bad. With
//! `--remote DEST` only the copy at DEST is judged, against the local
//! manifest or — when the local store is empty — the manifest shipped
//! beside it: a missing or damaged copy is marked pending there and
//! shipped again at the next run; the local generation's health is its own.

use crate::config::{Config, Event, Job, Verify};
use crate::notify::Notice;
use crate::runtime::Runtime;
use crate::store::{Generation, JobStore};
use crate::verify::VerifyError;

pub async fn verify(
    config: &Config,
    job_name: &str,
    generation: Option<&str>,
    remote: Option<&str>,
) -> anyhow::Result<bool> {
    let job = config
        .job(job_name)
        .map_err(|e| anyhow::anyhow!(e))?
        .clone();
    let rt = crate::runtime::open(config.clone()).await?;
    let store = JobStore::new(&config.runner.backup_dir, &job.name);
    let _lock = crate::store::JobLock::acquire(&store)?;
    if let Some(dest) = remote {
        return verify_remote(&rt, &job, &store, generation, dest).await;
    }
    let mut g: Generation = match generation {
        Some(name) => store.find(name)?,
        // The newest one not stamped in the future (a wrong clock's).
        None => {
            let mut gens = store.generations()?;
            let now = chrono::Utc::now();
            let pick = gens
                .iter()
                .rposition(|g| !g.manifest.is_future(now))
                .or_else(|| gens.len().checked_sub(1))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "job {job_name} has no generation in {}: the local store is empty; \
                         to check a copy at a destination, add --remote DEST",
                        store.dir.display()
                    )
                })?;
            gens.swap_remove(pick)
        }
    };
    let name = g.manifest.name.clone();
    let mut result = crate::verify::checksum(&g.path, g.manifest.size, &g.manifest.sha256);
    crate::verify::record(&mut g, "checksum", &result);
    if result.is_ok() && job.verify == Verify::Restore {
        result = crate::verify::restore(&rt.config, &job, &mut g).await;
        crate::verify::record(&mut g, "restore", &result);
    }
    g.save()?;
    outcome(&rt, &job, &name, Some(g.manifest.size), None, result).await
}

/// Judge the copy at `dest` only.
async fn verify_remote(
    rt: &Runtime,
    job: &Job,
    store: &JobStore,
    generation: Option<&str>,
    dest: &str,
) -> anyhow::Result<bool> {
    let gens = store.generations()?;
    if gens.is_empty() {
        println!(
            "the local store {} holds no generation of {}: judging the copy at {dest} by the manifest shipped beside it",
            store.dir.display(),
            job.name
        );
    }
    let now = chrono::Utc::now();
    let mut local: Option<Generation> = match generation {
        Some(name) => gens
            .into_iter()
            .find(|g| g.manifest.name == name || g.manifest.name.starts_with(&format!("{name}."))),
        // The newest good copy confirmed there, by the local manifests.
        None => gens.into_iter().rev().find(|g| {
            g.manifest.is_good() && !g.manifest.is_future(now) && g.manifest.done_at(dest)
        }),
    };
    let name = match (&local, generation) {
        (Some(g), _) => g.manifest.name.clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => crate::ship::newest_remote(rt, &job.name, dest).await?,
    };
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(&store.dir)?;
    let fetched = crate::ship::fetch(rt, &job.name, dest, &name, scratch.path()).await;
    let expected = |f: &crate::ship::FetchedGeneration| match (&local, &f.manifest) {
        (Some(g), _) => Some((g.manifest.size, g.manifest.sha256.clone())),
        (None, Some(m)) => Some((m.size, m.sha256.clone())),
        (None, None) => None,
    };
    let result = match &fetched {
        Err(e) => Err(VerifyError::CannotCheck(format!(
            "the copy at {dest} cannot be read: {e:#}"
        ))),
        Ok(f) => match expected(f) {
            Some((size, sha)) => crate::verify::checksum(&f.data, size, &sha)
                .map(|d| format!("copy at {dest}: {d}"))
                .map_err(|e| VerifyError::AtDestination {
                    dest: dest.to_string(),
                    source: Box::new(e),
                }),
            None => Err(VerifyError::CannotCheck(format!(
                "{dest} keeps no manifest of {name} and there is none locally: nothing to check it against"
            ))),
        },
    };
    let result = match (result, &local) {
        (Ok(detail), Some(g))
            if job.wal.is_some() && g.manifest.format.as_deref() == Some("snapshot") =>
        {
            wal_at(rt, job, g, dest)
                .await
                .map(|w| format!("{detail}; {w}"))
        }
        (r, _) => r,
    };
    let size = local.as_ref().map(|g| g.manifest.size);
    match local.as_mut() {
        Some(g) => {
            crate::verify::record(g, &format!("remote:{dest}"), &result);
            g.save()?;
            if result.is_err() {
                println!(
                    "{name} is marked pending at {dest}: it is shipped there again at the next run (the local generation stays {})",
                    if g.manifest.is_good() { "good" } else { "bad" }
                );
            }
        }
        None => println!("no local manifest of {name}: nothing recorded"),
    }
    outcome(rt, job, &name, size, Some(dest), result).await
}

/// A WAL job's snapshot at `dest` is only as good as the archived WAL
/// there after it: every file `dest` confirmed must still be listed
/// ([`crate::wal::ship::audit`]).
async fn wal_at(
    rt: &Runtime,
    job: &Job,
    g: &Generation,
    dest: &str,
) -> Result<String, VerifyError> {
    match crate::wal::ship::audit::audit(rt, job, g, dest).await {
        Ok(a) if a.is_ok() => Ok(a.describe(dest)),
        Ok(a) => Err(VerifyError::AtDestination {
            dest: dest.to_string(),
            source: Box::new(VerifyError::Damaged(a.describe(dest))),
        }),
        Err(e) => Err(VerifyError::CannotCheck(format!(
            "the archived WAL at {dest} cannot be checked: {e:#}"
        ))),
    }
}

/// Print the result; a failure is logged and notified.
async fn outcome(
    rt: &Runtime,
    job: &Job,
    name: &str,
    size: Option<u64>,
    dest: Option<&str>,
    result: Result<String, VerifyError>,
) -> anyhow::Result<bool> {
    match result {
        Ok(detail) => {
            println!("ok: {name}: {detail}");
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {name}: {e}");
            tracing::error!(
                "job {}: generation {name} failed verification: {e}",
                job.name
            );
            let mut n = Notice::new(
                Event::VerifyFailed,
                &job.name,
                format!("generation {name} of {} failed verification", job.name),
                e.to_string(),
            );
            n.generation = Some(name.to_string());
            n.size = size;
            n.destination = dest.map(str::to_string);
            crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
            Ok(false)
        }
    }
}
