//! `offsite wal-push JOB PATH` (archive_command) and
//! `offsite wal-fetch JOB NAME PATH` (restore_command).

use std::path::Path;

use crate::config::{Config, Event};
use crate::notify::Notice;
use crate::wal::fetch::{EXIT_FATAL, EXIT_NOT_FOUND, Outcome};
use crate::wal::store::{PushError, Pushed};

/// Archives one file. Exit status 0 only once it is durable in the job's
/// WAL store; any refusal is non-zero, and PostgreSQL keeps the file
/// `.ready` and retries it.
pub async fn push(config: &Config, job_name: &str, path: &Path) -> anyhow::Result<bool> {
    let job = config.job(job_name).map_err(|e| anyhow::anyhow!(e))?;
    let store = crate::wal::store_of(config, job)?;
    let started = std::time::Instant::now();
    match store.push(path) {
        Ok(Pushed::Stored(e)) => {
            tracing::info!(
                "job {job_name}: archived {} ({} bytes, {} stored) in {} ms",
                e.name,
                e.size,
                e.stored_size,
                started.elapsed().as_millis()
            );
            Ok(true)
        }
        Ok(Pushed::AlreadyThere) => {
            tracing::info!(
                "job {job_name}: {} is already archived with identical content",
                path.display()
            );
            Ok(true)
        }
        Err(e) => {
            tracing::error!("job {job_name}: wal-push {}: {e}", path.display());
            if matches!(e, PushError::Conflict { .. }) {
                notify(config, job_name, &e).await;
            }
            Ok(false)
        }
    }
}

/// A refused push that needs a person (another server's WAL under this
/// job's names) is also a notice.
async fn notify(config: &Config, job_name: &str, e: &PushError) {
    let Ok(job) = config.job(job_name) else { return };
    match crate::ship::runtime(config.clone()).await {
        Ok(rt) => {
            let n = Notice::new(
                Event::Failure,
                job_name,
                format!("wal-push refused a WAL file of job {job_name}"),
                e.to_string(),
            );
            crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
        }
        Err(err) => tracing::error!("job {job_name}: cannot load notifiers: {err:#}"),
    }
}

/// Restores one archived file to `to`; returns the process exit status
/// PostgreSQL's restore_command rules need (see [`crate::wal::fetch`]).
pub async fn fetch(config: &Config, job_name: &str, name: &str, to: &Path) -> u8 {
    let r = async {
        let job = config.job(job_name).map_err(|e| anyhow::anyhow!(e))?;
        let store = crate::wal::store_of(config, job)?;
        crate::wal::fetch::from_store(&store, name, to)
    }
    .await;
    match r {
        Ok(Outcome::Restored(n)) => {
            tracing::info!("job {job_name}: restored {name} ({n} bytes)");
            0
        }
        Ok(Outcome::NotThere) => {
            tracing::info!("job {job_name}: {name} is not archived");
            EXIT_NOT_FOUND
        }
        Err(e) => {
            tracing::error!(
                "job {job_name}: wal-fetch {name}: {e:#} (exit {EXIT_FATAL}: recovery stops rather than end early)"
            );
            EXIT_FATAL
        }
    }
}
