//! `offsite run JOB`: one backup now; exit 0 only if every step succeeded.

use chrono::Utc;

use crate::config::Config;
use crate::schedule::{StateFile, Trigger, record_end, record_start};

pub async fn run(config: &Config, job_name: &str) -> anyhow::Result<bool> {
    let job = config
        .job(job_name)
        .map_err(|e| anyhow::anyhow!(e))?
        .clone();
    let rt = crate::ship::runtime(config.clone()).await?;
    // Refused before anything is recorded: the run that holds the job owns
    // its schedule state (`list` must not show a failure while it works).
    let lock = crate::job::lock(&rt, &job)?;
    let state = StateFile::in_dir(&config.runner.state_dir);
    // The schedule's "last run" includes runs by hand (seed 004's interval
    // is measured from the last run's start, whoever started it).
    let _ = update(&state, job_name, |st| {
        record_start(st, &job.schedule, Utc::now(), Trigger::OnDemand)
    });
    let report = crate::job::run_locked(&rt, &job, lock).await;
    let _ = update(&state, job_name, |st| {
        record_end(st, Utc::now(), report.outcome())
    });
    if !report.ok {
        for e in &report.errors {
            eprintln!("offsite: job {job_name}: {e}");
        }
    }
    Ok(report.ok)
}

/// Read-modify-write one job's schedule state; a failure is logged only
/// (the backup matters more than its bookkeeping).
pub fn update(
    state: &StateFile,
    job: &str,
    f: impl FnOnce(&mut crate::schedule::JobState),
) -> anyhow::Result<()> {
    let r = (|| -> anyhow::Result<()> {
        let dir = state.path().parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        // The daemon and `offsite run` both write this file: one at a time.
        let lock = std::fs::File::create(dir.join(".schedule.lock"))?;
        // SAFETY: flock on a descriptor we own; released when `lock` drops.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        let mut all = state.load()?;
        f(all.entry(job.to_string()).or_default());
        state.save(&all)?;
        Ok(())
    })();
    let r = r.map_err(|e| crate::disk::explain(e, state.path()));
    if let Err(e) = &r {
        tracing::warn!(
            "cannot update the schedule state {}: {e:#}",
            state.path().display()
        );
    }
    r
}
