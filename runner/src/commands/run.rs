//! `offsite run JOB`: one backup now; exit 0 only if every step succeeded.

use chrono::Utc;

use crate::config::Config;
use crate::schedule::{StateFile, Trigger, record_end, record_start};

pub async fn run(config: &Config, job_name: &str) -> anyhow::Result<bool> {
    let job = config
        .job(job_name)
        .map_err(|e| anyhow::anyhow!(e))?
        .clone();
    let rt = crate::runtime::open(config.clone()).await?;
    // Refused before anything is recorded: the run that holds the job owns
    // its schedule state (`list` must not show a failure while it works).
    let lock = crate::job::lock(&rt, &job)?;
    let state = StateFile::in_dir(&config.runner.state_dir);
    // The schedule's "last run" includes runs by hand (seed 004's interval
    // is measured from the last run's start, whoever started it).
    // A failure to record costs the bookkeeping, not the backup (logged).
    state.update_logged(job_name, |st| {
        record_start(st, &job.schedule, Utc::now(), Trigger::OnDemand)
    });
    let report = crate::job::run_locked(&rt, &job, lock).await;
    state.update_logged(job_name, |st| record_end(st, Utc::now(), report.outcome()));
    if !report.ok {
        for e in &report.errors {
            eprintln!("offsite: job {job_name}: {e}");
        }
    }
    Ok(report.ok)
}
