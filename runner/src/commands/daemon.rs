//! `offsite daemon`: run every enabled job on its schedule until SIGTERM.
//!
//! - Schedule state lives in `<state_dir>/schedule.json` (written atomically,
//!   under the same lock `offsite run` takes), so anchors survive restarts.
//! - A job never overlaps itself; at most `max_parallel` jobs run at once.
//! - A disabled job nags its notifiers every 24 hours (seed 004).
//! - SIGTERM/SIGINT: no new runs; running ones get `SHUTDOWN_GRACE`, then are
//!   cancelled, which kills their dump and removes its temporary files.
//! - SIGHUP: reload the config; a bad one is logged and the old one kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use super::run::update;
use crate::config::{Config, Event};
use crate::job::{RunReport, run_job};
use crate::notify::Notice;
use crate::schedule::{
    ConfigChange, StateFile, Trigger, next_not_enabled_notice, next_run, not_enabled_notice_due,
    reconcile, record_end, record_not_enabled_notice, record_start,
};
use crate::ship::{Runtime, runtime};

/// How long running jobs may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// Wake at least this often, so clock changes and DST are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

pub async fn daemon(path: PathBuf, config: Config) -> anyhow::Result<bool> {
    let mut rt = Arc::new(runtime(config).await?);
    let state = StateFile::in_dir(&rt.config.runner.state_dir);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut running: JoinSet<RunReport> = JoinSet::new();
    let mut running_jobs: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
    tracing::info!(
        "daemon started: {} jobs, max_parallel {}, config {}",
        rt.config.jobs.len(),
        rt.config.runner.max_parallel,
        path.display()
    );
    reconcile_all(&rt, &state);
    loop {
        let now = Utc::now();
        let states = state.load().unwrap_or_default();
        let mut wake = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
        for (name, job) in &rt.config.jobs {
            let st = states.get(name).cloned().unwrap_or_default();
            if !job.enabled {
                if not_enabled_notice_due(&st, now) {
                    let n = Notice::new(
                        Event::NotEnabled,
                        name,
                        format!("backups of {name} are not enabled"),
                        format!(
                            "job {name} has enabled = false in {}; no backups are taken",
                            rt.config.path.display()
                        ),
                    );
                    tracing::warn!("job {name}: backups are not enabled");
                    crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n)
                        .await;
                    let _ = update(&state, name, |s| record_not_enabled_notice(s, now));
                }
                if let Some(t) = next_not_enabled_notice(&st, now) {
                    wake = wake.min(t);
                }
                continue;
            }
            let Some(at) = next_run(&job.schedule, &st, now, &Local) else {
                continue;
            };
            let busy = running_jobs.values().any(|j| j == name);
            if at <= now && !busy && running.len() < rt.config.runner.max_parallel {
                let _ = update(&state, name, |s| {
                    record_start(s, &job.schedule, now, Trigger::Scheduled)
                });
                tracing::info!("job {name}: scheduled run ({})", job.schedule);
                let (rt2, job2) = (rt.clone(), job.clone());
                let h = running.spawn(async move { run_job(&rt2, &job2).await });
                running_jobs.insert(h.id(), name.clone());
            } else if at > now {
                wake = wake.min(at);
            }
        }
        let sleep = (wake - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finished(&state, &mut running_jobs, done);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match Config::load(&path) {
                    Ok(c) => match runtime(c).await {
                        Ok(new) => {
                            rt = Arc::new(new);
                            reconcile_all(&rt, &state);
                            tracing::info!("config reloaded from {}", path.display());
                        }
                        Err(e) => tracing::error!("config reload refused, keeping the old one: {e:#}"),
                    },
                    Err(e) => tracing::error!("config reload refused, keeping the old one:\n{e}"),
                }
            }
        }
    }
    shutdown(&state, &mut running, &mut running_jobs).await;
    Ok(true)
}

fn reconcile_all(rt: &Runtime, state: &StateFile) {
    let now = Utc::now();
    for (name, job) in &rt.config.jobs {
        let _ = update(state, name, |s| {
            match reconcile(s, &job.schedule, job.enabled, now) {
                ConfigChange::Unchanged => {}
                change => tracing::info!("job {name}: {change:?} ({})", job.schedule),
            }
            if s.interrupted() {
                tracing::warn!("job {name}: its last run was cut short");
            }
        });
    }
}

fn finished(
    state: &StateFile,
    running_jobs: &mut BTreeMap<tokio::task::Id, String>,
    done: Result<(tokio::task::Id, RunReport), tokio::task::JoinError>,
) {
    let (id, outcome) = match done {
        Ok((id, report)) => (id, report.outcome().to_string()),
        Err(e) => (
            e.id(),
            if e.is_cancelled() {
                "cancelled".into()
            } else {
                format!("crashed: {e}")
            },
        ),
    };
    if let Some(name) = running_jobs.remove(&id) {
        let _ = update(state, &name, |s| record_end(s, Utc::now(), outcome));
    }
}

async fn shutdown(
    state: &StateFile,
    running: &mut JoinSet<RunReport>,
    running_jobs: &mut BTreeMap<tokio::task::Id, String>,
) {
    if running.is_empty() {
        tracing::info!("daemon stopping");
        return;
    }
    tracing::info!(
        "daemon stopping: waiting up to {} for {} running job(s)",
        crate::duration::format(SHUTDOWN_GRACE),
        running.len()
    );
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.join_next_with_id()).await {
            Ok(Some(done)) => finished(state, running_jobs, done),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    "grace period over: cancelling running jobs (no partial generation is kept)"
                );
                running.abort_all();
                while let Some(done) = running.join_next_with_id().await {
                    finished(state, running_jobs, done);
                }
            }
        }
    }
}
