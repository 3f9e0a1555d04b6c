//! `offsite daemon`: run every enabled job on its schedule until SIGTERM.
//!
//! - Schedule state lives in `<state_dir>/schedule.json` (written atomically,
//!   under the same lock `offsite run` takes), so anchors survive restarts.
//!   A state file that cannot be read stops the daemon at start: running on
//!   empty state would move every weekly job to the restart's weekday.
//! - A job never overlaps itself; at most `max_parallel` jobs run at once.
//! - A disabled job nags its notifiers every 24 hours (seed 004).
//! - SIGTERM/SIGINT: no new runs; running ones get `[runner] shutdown_grace`
//!   (default 60 s), then are cancelled, which kills their dump; the daemon
//!   then removes whatever the cancelled run left, so no partial generation
//!   remains. A second signal cancels at once.
//! - SIGHUP: reload the config; a bad one is logged and the old one kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::{Id, JoinError, JoinSet};

use crate::config::{Config, Event, Job};
use crate::job::{RunReport, run_job};
use crate::notify::Notice;
use crate::runtime::{self, Runtime};
use crate::schedule::{
    ConfigChange, JobState, Schedule, StateFile, Trigger, next_not_enabled_notice, next_run,
    not_enabled_notice_due, reconcile, record_end, record_not_enabled_notice, record_start,
};
use crate::store::{JobLock, JobStore};

/// Wake at least this often, so clock changes and DST are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long a cancelled run's blocking half may take to notice the cancel
/// and drop its temporaries before the daemon removes them itself.
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// A calendar slot this far in the past is a missed one (daemon down), worth
/// saying so in the log.
const MISSED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// A job run in flight: which job, and the folder it writes to (kept from
/// the config it started with, in case a reload moves `backup_dir`).
struct Running {
    job: String,
    backup_dir: PathBuf,
}

struct Daemon {
    path: PathBuf,
    rt: Arc<Runtime>,
    state: StateFile,
    /// Last state read from disk, plus the changes made since. Used when the
    /// file cannot be read or written, so a disk problem does not turn into
    /// a job started (or a notice sent) on every loop.
    states: BTreeMap<String, JobState>,
    state_error: bool,
    running: JoinSet<RunReport>,
    in_flight: BTreeMap<Id, Running>,
    /// WAL shipping (issue 17): jobs whose shipping pass is under way, and
    /// when the next pass is due.
    wal_busy: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    wal_next: std::time::Instant,
}

pub async fn daemon(path: PathBuf, config: Config) -> anyhow::Result<bool> {
    // First, so a SIGTERM while the plugins load is not the default "die".
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let state = StateFile::in_dir(&config.runner.state_dir);
    let states = state.load()?;
    let rt = Arc::new(runtime::open(config).await?);
    let mut d = Daemon {
        path,
        rt,
        state,
        states,
        state_error: false,
        running: JoinSet::new(),
        in_flight: BTreeMap::new(),
        wal_busy: Arc::default(),
        wal_next: std::time::Instant::now(),
    };
    tracing::info!(
        "daemon started (pid {}): {} jobs, max_parallel {}, config {}, state {}",
        std::process::id(),
        d.rt.config.jobs.len(),
        d.rt.config.runner.max_parallel,
        d.path.display(),
        d.state.path().display()
    );
    d.reconcile_all();
    d.clean_leftovers();

    let mut sleep_for = Duration::ZERO;
    let signal_name = loop {
        // Signals first: after SIGTERM nothing new may start, even if a slot
        // is due in the same instant.
        tokio::select! {
            biased;
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => d.reload().await,
            Some(done) = d.running.join_next_with_id(), if !d.running.is_empty() => {
                d.finished(done);
            }
            _ = tokio::time::sleep(sleep_for) => {}
        }
        sleep_for = d.tick().await;
    };
    d.shutdown(signal_name, &mut term, &mut int).await;
    Ok(true)
}

impl Daemon {
    /// One pass: send due notices, start due jobs; returns how long to sleep.
    async fn tick(&mut self) -> Duration {
        self.refresh();
        self.ship_wal();
        let now = Utc::now();
        let mut wake = now + chrono::TimeDelta::from_std(MAX_SLEEP).unwrap_or_default();
        let rt = self.rt.clone();
        let mut due: Vec<(DateTime<Utc>, &Job)> = vec![];
        for (name, job) in &rt.config.jobs {
            if !job.enabled {
                if not_enabled_notice_due(&self.get(name), now) {
                    self.not_enabled_notice(job, now).await;
                }
                if let Some(t) = next_not_enabled_notice(&self.get(name), now) {
                    wake = wake.min(t);
                }
                continue;
            }
            match next_run(&job.schedule, &self.get(name), now, &Local) {
                Some(at) if at > now => wake = wake.min(at),
                Some(at) => due.push((at, job)),
                None => {}
            }
        }
        // The job that started least recently (never = first) goes first:
        // with fewer slots than due jobs, a short interval job must not
        // starve the others. (`at` is no fair key: a job that never ran is
        // due "now", later than one that is overdue.)
        due.sort_by_key(|(_, job)| (self.get(&job.name).last_start, job.name.clone()));
        for (at, job) in due {
            // A job never overlaps itself, and at most max_parallel run at
            // once; either way the end of a run wakes the loop.
            if self.running.len() >= rt.config.runner.max_parallel {
                break;
            }
            if !self.in_flight.values().any(|r| r.job == job.name) {
                // Not `now`: sending notices above may have taken a while.
                self.start(job, at, Utc::now());
            }
        }
        (wake - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP)
            .min(
                self.wal_next
                    .saturating_duration_since(std::time::Instant::now()),
            )
    }

    /// Every [`crate::wal::ship::TICK`], a shipping pass for each job with
    /// `wal = true` and destinations, unless its last one is still going.
    /// Passes run beside the jobs' runs (a run ships WAL too; a lock keeps
    /// them apart) and are not waited for at shutdown: every step of one
    /// is atomic, so an abandoned pass is taken up by the next.
    fn ship_wal(&mut self) {
        let now = std::time::Instant::now();
        if now < self.wal_next {
            return;
        }
        self.wal_next = now + crate::wal::ship::TICK;
        for (name, job) in &self.rt.config.jobs {
            if job.wal.is_none() || job.destinations.is_empty() {
                continue;
            }
            if !self
                .wal_busy
                .lock()
                .expect("not poisoned")
                .insert(name.clone())
            {
                continue;
            }
            let (rt, job, busy) = (self.rt.clone(), job.clone(), self.wal_busy.clone());
            tokio::spawn(async move {
                crate::wal::ship::ship(&rt, &job).await;
                busy.lock().expect("not poisoned").remove(&job.name);
            });
        }
    }

    fn start(&mut self, job: &Job, due: DateTime<Utc>, now: DateTime<Utc>) {
        let name = &job.name;
        // Recorded before the run, so a crash during a long dump does not
        // start it again at once after a restart.
        self.change(name, |s| {
            record_start(s, &job.schedule, now, Trigger::Scheduled)
        });
        let calendar = !matches!(job.schedule, Schedule::Every(_) | Schedule::Manual);
        if calendar && due < now - MISSED_AFTER {
            tracing::info!(
                "job {name}: the run due {} was missed (the daemon was down, or every \
                 slot was busy); running it once now ({})",
                due.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
                job.schedule
            );
        } else {
            tracing::info!("job {name}: scheduled run ({})", job.schedule);
        }
        let (rt, job) = (self.rt.clone(), job.clone());
        let h = self.running.spawn(async move { run_job(&rt, &job).await });
        self.in_flight.insert(
            h.id(),
            Running {
                job: name.clone(),
                backup_dir: self.rt.config.runner.backup_dir.clone(),
            },
        );
    }

    async fn not_enabled_notice(&mut self, job: &Job, now: DateTime<Utc>) {
        let name = &job.name;
        let n = Notice::new(
            Event::NotEnabled,
            name,
            format!("backups of {name} are not enabled"),
            format!(
                "job {name} has enabled = false in {}; no backups are taken",
                self.rt.config.path.display()
            ),
        );
        let wanted = job
            .notifiers
            .iter()
            .filter(|n| {
                self.rt
                    .config
                    .notifiers
                    .get(*n)
                    .is_some_and(|c| c.on.contains(&Event::NotEnabled))
            })
            .count();
        tracing::warn!(
            "job {name}: backups are not enabled (enabled = false in {}); {}; next reminder in 24 h",
            self.rt.config.path.display(),
            if wanted == 0 {
                "no notifier of the job takes `not-enabled`, so this log line is the notice"
                    .to_string()
            } else {
                format!("telling {wanted} notifier(s)")
            }
        );
        if wanted > 0 {
            let rt = &self.rt;
            crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
        }
        // Recorded even when a notifier failed: a broken notifier must not
        // turn into a notice on every loop.
        self.change(name, |s| record_not_enabled_notice(s, now));
    }

    fn finished(&mut self, done: Result<(Id, RunReport), JoinError>) -> Option<(String, bool)> {
        let (id, outcome, cancelled) = match done {
            Ok((id, report)) => (id, report.outcome().to_string(), false),
            Err(e) if e.is_cancelled() => (e.id(), "cancelled".to_string(), true),
            Err(e) => (e.id(), format!("crashed: {e}"), false),
        };
        let run = self.in_flight.remove(&id)?;
        if outcome.starts_with("crashed") {
            tracing::error!("job {}: the run {outcome}", run.job);
        }
        let end = Utc::now();
        self.change(&run.job, |s| record_end(s, end, outcome.clone()));
        Some((run.job, cancelled))
    }

    async fn reload(&mut self) {
        let path = &self.path;
        tracing::info!("SIGHUP: reloading the config from {}", path.display());
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "config reload refused, keeping the old one (fix the file and send SIGHUP \
                     again):\n{e}"
                );
                return;
            }
        };
        let new = match runtime::open(config).await {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(
                    "config reload refused, keeping the old one (fix the file and send SIGHUP \
                     again): {e:#}"
                );
                return;
            }
        };
        let (old, newr) = (&self.rt.config.runner, &new.config.runner);
        for (key, a, b) in [
            ("state_dir", &old.state_dir, &newr.state_dir),
            ("log_file", &old.log_file, &newr.log_file),
        ] {
            if a != b {
                tracing::warn!(
                    "runner.{key} changed from {} to {}: it takes effect when the daemon is \
                     restarted; until then the old one is used",
                    a.display(),
                    b.display()
                );
            }
        }
        self.rt = Arc::new(new);
        tracing::info!(
            "config reloaded from {}: {} jobs, max_parallel {}",
            self.path.display(),
            self.rt.config.jobs.len(),
            self.rt.config.runner.max_parallel
        );
        self.reconcile_all();
    }

    /// Bring every job's state in line with the config (new, re-enabled,
    /// disabled, schedule changed). An unchanged job keeps its anchor.
    fn reconcile_all(&mut self) {
        self.refresh();
        let now = Utc::now();
        let rt = self.rt.clone();
        for (name, job) in &rt.config.jobs {
            let mut preview = self.get(name);
            let change = reconcile(&mut preview, &job.schedule, job.enabled, now);
            let fixes = match job.schedule {
                Schedule::Weekly { .. } => "; its first run fixes the weekday it keeps",
                Schedule::Monthly { .. } => "; its first run fixes the day of the month it keeps",
                _ => "",
            };
            match change {
                ConfigChange::Unchanged => {}
                ConfigChange::Enabled => {
                    tracing::info!("job {name}: enabled, schedule `{}`{fixes}", job.schedule)
                }
                ConfigChange::Disabled => tracing::info!("job {name}: disabled"),
                ConfigChange::ScheduleChanged => {
                    tracing::info!("job {name}: schedule changed to `{}`{fixes}", job.schedule)
                }
            }
            if preview.interrupted() && !self.in_flight.values().any(|r| &r.job == name) {
                tracing::warn!(
                    "job {name}: its last run (started {}) recorded no end: it was killed, or \
                     `offsite run` is running it now; the schedule goes on from its start",
                    preview
                        .last_start
                        .map(|t| t
                            .with_timezone(&Local)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string())
                        .unwrap_or_default()
                );
            }
            self.change(name, |s| {
                reconcile(s, &job.schedule, job.enabled, now);
            });
        }
    }

    /// At start: what a killed run left in job folders (`.tmp-*`, `.spool-*`,
    /// a data file without manifest) goes now rather than at the job's next
    /// run, which may be a week away.
    fn clean_leftovers(&self) {
        for name in self.rt.config.jobs.keys() {
            let store = JobStore::new(&self.rt.config.runner.backup_dir, name);
            if store.dir.is_dir() {
                clean_job_dir(&store);
            }
        }
    }

    /// Re-read the state file (`offsite run` writes it too). On failure the
    /// in-memory copy goes on, and the problem is logged once.
    fn refresh(&mut self) {
        match self.state.load() {
            Ok(s) => {
                if self.state_error {
                    tracing::info!(
                        "schedule state {} readable again",
                        self.state.path().display()
                    );
                }
                self.state_error = false;
                self.states = s;
            }
            Err(e) => {
                if !self.state_error {
                    tracing::error!(
                        "{:#}; going on with the state in memory",
                        anyhow::Error::from(e)
                    );
                }
                self.state_error = true;
            }
        }
    }

    fn get(&self, job: &str) -> JobState {
        self.states.get(job).cloned().unwrap_or_default()
    }

    /// Change one job's state on disk (locked read-modify-write, which also
    /// picks up what `offsite run` wrote) and in memory; `f` is applied to
    /// each copy once.
    fn change(&mut self, job: &str, f: impl Fn(&mut JobState)) {
        f(self.states.entry(job.to_string()).or_default());
        if !self.state.update_logged(job, &f) {
            self.state_error = true;
        }
    }

    async fn shutdown(&mut self, signal_name: &str, term: &mut Signal, int: &mut Signal) {
        if self.running.is_empty() {
            tracing::info!("{signal_name}: daemon stopped");
            return;
        }
        let grace = self.rt.config.runner.shutdown_grace;
        let names: Vec<&str> = self.in_flight.values().map(|r| r.job.as_str()).collect();
        tracing::info!(
            "{signal_name}: no new runs; waiting up to {} (runner.shutdown_grace) for {} to finish",
            crate::duration::format(grace),
            names.join(", ")
        );
        let deadline = tokio::time::Instant::now() + grace;
        let mut cancel_now = false;
        while !self.running.is_empty() && !cancel_now {
            tokio::select! {
                biased;
                _ = term.recv() => {
                    tracing::warn!("SIGTERM again: cancelling now");
                    cancel_now = true;
                }
                _ = int.recv() => {
                    tracing::warn!("SIGINT again: cancelling now");
                    cancel_now = true;
                }
                done = self.running.join_next_with_id() => {
                    if let Some(done) = done {
                        self.finished(done);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        "grace period of {} is over: cancelling",
                        crate::duration::format(grace)
                    );
                    cancel_now = true;
                }
            }
        }
        if !self.running.is_empty() {
            // Dropping a run's future kills its dump and hooks; the blocking
            // half of the dump removes its temporary file when it notices.
            let dirs: BTreeMap<Id, PathBuf> = self
                .in_flight
                .iter()
                .map(|(id, r)| (*id, r.backup_dir.clone()))
                .collect();
            self.running.abort_all();
            while let Some(done) = self.running.join_next_with_id().await {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                if let Some((job, cancelled)) = self.finished(done) {
                    if !cancelled {
                        continue;
                    }
                    let store = JobStore::new(dirs.get(&id).map_or(Path::new(""), |d| d), &job);
                    settle(&store).await;
                    tracing::warn!(
                        "job {job}: cancelled at shutdown; no partial generation was kept"
                    );
                }
            }
        }
        tracing::info!("{signal_name}: daemon stopped");
    }
}

/// After a run was cancelled: wait (bounded) for its dump thread to drop its
/// temporaries, then remove whatever is left under the job's lock, including
/// a data file renamed into place just before the cancel but without its
/// manifest (the manifest is the commit marker, so that file is no
/// generation).
async fn settle(store: &JobStore) {
    let until = tokio::time::Instant::now() + SETTLE_MAX;
    while has_temporaries(&store.dir) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clean_job_dir(store);
}

fn has_temporaries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(crate::pipeline::TEMP_PREFIX)
                || n.starts_with(crate::pipeline::SPOOL_PREFIX)
        })
    })
}

/// `clean_interrupted` under the job's lock; a job held by `offsite run`
/// is left alone (its own run cleans up).
fn clean_job_dir(store: &JobStore) {
    match JobLock::acquire(store) {
        Ok(_lock) => {
            if let Err(e) = store.clean_interrupted() {
                tracing::warn!(
                    "job {}: cannot remove leftovers in {}: {e:#}",
                    store.job,
                    store.dir.display()
                );
            }
        }
        Err(e) => tracing::info!("job {}: not cleaning up now: {e:#}", store.job),
    }
}
