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
            let used = store.used();
            if let Some(f) = crossed(used - e.stored_size.min(used), used, store.limit) {
                let msg = format!(
                    "wal-lag: job {job_name}'s WAL store {} is over {}% of wal_store_limit ({used} of {} bytes); at 100% wal-push fails and PostgreSQL's pg_wal grows",
                    store.dir.display(),
                    f,
                    store.limit
                );
                tracing::warn!("{msg}");
                notify(config, job_name, Event::WalLag, &msg).await;
            }
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
            if matches!(e, PushError::Conflict { .. } | PushError::Full { .. }) {
                notify(config, job_name, Event::Failure, &e.to_string()).await;
            }
            Ok(false)
        }
    }
}

/// Percent marks of wal_store_limit that send a `wal-lag` notice when a
/// push crosses them: early enough to act before pushes fail.
const MARKS: [u64; 3] = [50, 80, 95];

/// The highest mark crossed going from `before` to `after` bytes.
fn crossed(before: u64, after: u64, limit: u64) -> Option<u64> {
    MARKS
        .iter()
        .rev()
        .find(|m| before * 100 < *m * limit && after * 100 >= *m * limit)
        .copied()
}

/// A refused push that needs a person (another server's WAL under this
/// job's names, a full store) or a store filling up is also a notice.
/// `kind` is `wal-lag` for a store filling up, else `failure`.
async fn notify(config: &Config, job_name: &str, kind: Event, detail: &str) {
    let Ok(job) = config.job(job_name) else {
        return;
    };
    match crate::runtime::open(config.clone()).await {
        Ok(rt) => {
            let summary = match kind {
                Event::WalLag => format!("wal-lag: job {job_name}'s WAL store is filling up"),
                _ => format!("wal-push: WAL archiving of job {job_name} needs attention"),
            };
            let n = Notice::new(kind, job_name, summary, detail.to_string());
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
        crate::wal::ship::fetch::fetch(config, job, name, to).await
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

#[cfg(test)]
mod tests {
    #[test]
    fn marks_are_sent_once_when_crossed() {
        assert_eq!(super::crossed(40, 50, 100), Some(50));
        assert_eq!(super::crossed(50, 60, 100), None);
        assert_eq!(super::crossed(10, 96, 100), Some(95));
        assert_eq!(super::crossed(79, 80, 100), Some(80));
    }
}
