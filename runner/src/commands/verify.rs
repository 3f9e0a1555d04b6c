//! `offsite verify JOB [--generation NAME] [--remote DEST]`.

use crate::config::{Config, Event, Verify};
use crate::notify::Notice;
use crate::store::{Generation, JobStore};

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
    let rt = crate::ship::runtime(config.clone()).await?;
    let store = JobStore::new(&config.runner.backup_dir, &job.name);
    let _lock = crate::store::JobLock::acquire(&store)?;
    let mut g: Generation = match generation {
        Some(name) => store.find(name)?,
        None => store.generations()?.pop().ok_or_else(|| {
            anyhow::anyhow!(
                "job {job_name} has no generation in {}",
                store.dir.display()
            )
        })?,
    };
    let name = g.manifest.name.clone();
    let mut result = crate::verify::checksum(&g.path, g.manifest.size, &g.manifest.sha256);
    crate::verify::record(&mut g, "checksum", &result);
    if result.is_ok() && job.verify == Verify::Restore {
        result = crate::verify::restore(&job, &mut g).await;
        crate::verify::record(&mut g, "restore", &result);
    }
    if let (Ok(_), Some(dest)) = (&result, remote) {
        let scratch = tempfile::Builder::new()
            .prefix(".verify-")
            .tempdir_in(&store.dir)?;
        result = match crate::ship::fetch(&rt, &job.name, dest, &name, scratch.path()).await {
            Ok(f) => crate::verify::checksum(&f.data, g.manifest.size, &g.manifest.sha256)
                .map(|d| format!("copy at {dest}: {d}")),
            Err(e) => Err(format!("cannot fetch {name} from {dest}: {e:#}")),
        };
        crate::verify::record(&mut g, &format!("remote:{dest}"), &result);
    }
    g.save()?;
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
                e,
            );
            n.generation = Some(name);
            n.size = Some(g.manifest.size);
            n.destination = remote.map(str::to_string);
            crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
            Ok(false)
        }
    }
}
