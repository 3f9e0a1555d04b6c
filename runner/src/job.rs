//! One run of a job, start to end:
//! lock → clean what an interrupted run left → `before` hook → dump →
//! `after` hook → manifest (the commit marker) → verify → retention → ship
//! (the newest good generation first) → retention → `complete` hook → notify.
//!
//! The run succeeds only if every step did. A failure never deletes a good
//! generation: retention runs only once a new generation is durable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;

use crate::config::{Event, Job, JobSource, Verify};
use crate::notify::Notice;
use crate::runtime::Runtime;
use crate::ship::{ShipFailure, retain, ship};
use crate::source::postgres::PgSource;
use crate::source::{SourceSpec, take};
use crate::store::{
    Generation, Health, JobLock, JobStore, Manifest, UploadStatus, generation_stem,
};

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: String,
    pub ok: bool,
    pub generation: Option<String>,
    pub size: Option<u64>,
    /// One line per thing that went wrong.
    pub errors: Vec<String>,
}

impl RunReport {
    pub fn outcome(&self) -> &'static str {
        if self.ok { "success" } else { "failure" }
    }
}

pub fn spec_of(job: &Job) -> SourceSpec {
    SourceSpec {
        postgres: job.source.postgres().map(|db| {
            let mut pg = PgSource::new(db.dsn.expose(), db.format);
            pg.jobs = db.jobs;
            pg
        }),
        paths: job.source.paths().to_vec(),
        count_rows: job.verify == Verify::Restore,
    }
}

/// Why a hook failed; the text names the hook and its program.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook `{which}` ({}) exited with {code}", path.display())]
    Exited {
        which: &'static str,
        path: PathBuf,
        code: i32,
    },
    /// It could not be started, or was killed at `hook_timeout`.
    #[error("hook `{which}` ({}): {error}", path.display())]
    Failed {
        which: &'static str,
        path: PathBuf,
        error: crate::exec::ExecError,
    },
}

/// Run a hook with the job's environment; `Err` says why it failed.
async fn hook(
    job: &Job,
    which: &'static str,
    path: &Path,
    status: &str,
    file: &str,
) -> Result<(), HookError> {
    let cwd = path.parent().unwrap_or(Path::new("/"));
    let env = [
        ("OFFSITE_JOB", job.name.clone()),
        ("OFFSITE_HOOK", which.to_string()),
        ("OFFSITE_STATUS", status.to_string()),
        ("OFFSITE_FILE", file.to_string()),
    ];
    let program = crate::exec::Program {
        path,
        args: &[],
        env: &env,
        cwd,
        timeout: job.hook_timeout,
        timeout_setting: "hook_timeout",
    };
    let who = format!("job {} hook `{which}`", job.name);
    match crate::exec::run(&who, &program).await {
        Ok(0) => Ok(()),
        Ok(code) => Err(HookError::Exited {
            which,
            path: path.to_path_buf(),
            code,
        }),
        Err(error) => Err(HookError::Failed {
            which,
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Take one backup of `job` now.
pub async fn run_job(rt: &Runtime, job: &Job) -> RunReport {
    match lock(rt, job) {
        Ok(l) => run_locked(rt, job, l).await,
        // Another run holds the job: not a failed backup, so no notice.
        Err(e) => RunReport {
            job: job.name.clone(),
            ok: false,
            generation: None,
            size: None,
            errors: vec![format!("{e:#}")],
        },
    }
}

/// The job's lock: an error if another run holds it.
pub fn lock(rt: &Runtime, job: &Job) -> anyhow::Result<JobLock> {
    JobLock::acquire(&JobStore::new(&rt.config.runner.backup_dir, &job.name))
}

/// An archive job's run (`crate::archive::run`), reported like a backup.
async fn run_archive(rt: &Runtime, job: &Job) -> RunReport {
    let r = crate::archive::run::run(rt, job).await;
    RunReport {
        job: job.name.clone(),
        ok: r.ok,
        generation: r.generation,
        size: r.size,
        errors: r.errors,
    }
}

/// Take one backup of `job` now, holding its lock: the steps of the
/// module doc, in order. A step that fails records the run's failure
/// (the first one is what the notice leads with); later steps see it.
pub async fn run_locked(rt: &Runtime, job: &Job, _lock: JobLock) -> RunReport {
    if let JobSource::Archive { .. } = job.source {
        return run_archive(rt, job).await;
    }
    let mut run = Run::start(rt, job);
    run.before_hook().await;
    if run.failure.is_none() {
        run.dump().await;
        run.after_hook().await;
    }
    run.verify_new().await;
    run.retain_and_ship().await;
    run.complete_hook().await;
    run.notify().await
}

/// One run in progress: what the steps hand on to each other.
struct Run<'a> {
    rt: &'a Runtime,
    job: &'a Job,
    store: JobStore,
    started: chrono::DateTime<Utc>,
    clock: Instant,
    report: RunReport,
    /// The new generation's file, for the hooks' `OFFSITE_FILE` (empty
    /// until the dump wrote one).
    file: String,
    new_gen: Option<Generation>,
    /// The first failure, with the event its notice goes out as.
    failure: Option<(Event, String)>,
    /// Generations `max_local` dropped although a destination lacked them.
    forced: Vec<String>,
    upload_failures: Vec<ShipFailure>,
}

impl<'a> Run<'a> {
    /// Clean what an interrupted run left, and check again what it could
    /// not record as verified.
    fn start(rt: &'a Runtime, job: &'a Job) -> Self {
        let store = JobStore::new(&rt.config.runner.backup_dir, &job.name);
        let run = Run {
            rt,
            job,
            started: Utc::now(),
            clock: Instant::now(),
            report: RunReport {
                job: job.name.clone(),
                ok: false,
                generation: None,
                size: None,
                errors: vec![],
            },
            file: String::new(),
            new_gen: None,
            failure: None,
            forced: vec![],
            upload_failures: vec![],
            store,
        };
        tracing::info!("job {}: starting ({})", job.name, describe(job));
        if let Err(e) = run.store.clean_interrupted() {
            tracing::warn!("job {}: cleaning up: {e:#}", job.name);
        }
        reverify(job, &run.store);
        run
    }

    fn status(&self) -> &'static str {
        if self.failure.is_none() {
            "success"
        } else {
            "failure"
        }
    }

    /// The `before` hook; if it fails no dump is started.
    async fn before_hook(&mut self) {
        if let Some(before) = &self.job.before
            && let Err(e) = hook(self.job, "before", before, "running", "").await
        {
            self.failure = Some((Event::Failure, format!("{e}; no dump was started")));
        }
    }

    /// The dump into a new generation, committed with its manifest.
    async fn dump(&mut self) {
        match take_generation(self.job, &self.store, self.started).await {
            Ok(g) => {
                self.file = g.path.display().to_string();
                self.report.generation = Some(g.manifest.name.clone());
                self.report.size = Some(g.manifest.size);
                self.new_gen = Some(g);
            }
            Err(e) => {
                let e = crate::disk::explain(e, &self.store.dir);
                self.failure = Some((Event::Failure, format!("backup failed: {e:#}")));
            }
        }
    }

    /// Seed 002: `after` runs right after the dump, whether it worked or not.
    async fn after_hook(&mut self) {
        if let Some(after) = &self.job.after
            && let Err(e) = hook(self.job, "after", after, self.status(), &self.file).await
            && self.failure.is_none()
        {
            self.failure = Some((Event::Failure, e.to_string()));
        }
    }

    /// The new generation's checksum (and restore test), recorded in its
    /// manifest; a manifest that cannot be written leaves it unverified.
    async fn verify_new(&mut self) {
        let job = self.job;
        let Some(g) = self.new_gen.as_mut() else {
            return;
        };
        if job.verify == Verify::None {
            return;
        }
        let r = crate::verify::checksum(&g.path, g.manifest.size, &g.manifest.sha256);
        crate::verify::record(g, "checksum", &r);
        if let Err(e) = &r {
            self.failure
                .get_or_insert((Event::VerifyFailed, format!("verification failed: {e}")));
        }
        if job.verify == Verify::Restore && r.is_ok() {
            let r = crate::verify::restore(&self.rt.config, job, g).await;
            crate::verify::record(g, "restore", &r);
            if let Err(e) = &r {
                self.failure
                    .get_or_insert((Event::VerifyFailed, format!("restore test failed: {e}")));
            }
        }
        if let Err(e) = g.save() {
            // On disk it stays unverified: never counted good.
            g.manifest.health = Health::Unverified;
            self.failure
                .get_or_insert((Event::Failure, format!("cannot write the manifest: {e:#}")));
        }
    }

    /// Retention, then shipping every pending generation (the newest good
    /// one first), then retention at the destinations too.
    ///
    /// Retention only once everything of the new generation is durable (its
    /// manifest, with the verification recorded): a failed run drops
    /// nothing. Its local part runs before shipping too, so that runs cut
    /// short during an upload still keep local space bounded.
    async fn retain_and_ship(&mut self) {
        let durable = self
            .new_gen
            .as_ref()
            .is_some_and(|g| g.manifest.health != Health::Unverified);
        if durable {
            self.retain(false).await;
        }
        if durable && self.job.wal.is_some() {
            // WAL no kept snapshot needs goes (issue 17).
            crate::wal::retention::prune(&self.rt.config, self.job);
        }
        if self.new_gen.is_some() {
            let mut gens = self.store.generations().unwrap_or_default();
            if !self.job.destinations.is_empty() {
                self.upload_failures = ship(self.rt, self.job, &mut gens).await;
            }
            if durable {
                self.retain(true).await;
            }
        }
        self.ship_wal().await;
        self.fail_on_shipping();
    }

    /// A WAL job's archived WAL to its destinations (issue 17), whatever
    /// became of the snapshot: the WAL is worth shipping either way. What
    /// cannot ship waits for the next pass and, past `wal_lag`, is a
    /// `wal-lag` notice; the run itself is not failed for it. Then WAL
    /// retention at the destinations (after their rotation).
    async fn ship_wal(&mut self) {
        if self.job.wal.is_none() {
            return;
        }
        let r = crate::wal::ship::ship(self.rt, self.job).await;
        for (dest, why) in r.failures {
            self.report
                .errors
                .push(format!("WAL not shipped to {dest}: {why}"));
        }
        crate::wal::ship::retain::retain(self.rt, self.job).await;
    }

    async fn retain(&mut self, remote: bool) {
        let r = retain(self.rt, self.job, &self.store, remote).await;
        self.report.errors.extend(r.problems);
        self.forced.extend(r.forced);
    }

    /// A run whose generations did not reach every destination failed,
    /// and so did one whose local limit dropped a copy a destination lacks.
    fn fail_on_shipping(&mut self) {
        if self.failure.is_none() && !self.upload_failures.is_empty() {
            let lines: Vec<String> = self
                .upload_failures
                .iter()
                .map(|f| format!("{} to {}: {}", f.generation, f.destination, f.error))
                .collect();
            self.failure = Some((
                Event::UploadFailed,
                format!("upload failed: {}", lines.join("; ")),
            ));
        }
        if !self.forced.is_empty() {
            let msg = format!(
                "the local limit (max_local = {}) dropped generations a destination still lacks: {}",
                self.job.max_local,
                self.forced.join("; ")
            );
            match &mut self.failure {
                Some((_, m)) => {
                    m.push_str("; ");
                    m.push_str(&msg);
                }
                None => self.failure = Some((Event::UploadFailed, msg)),
            }
        }
    }

    async fn complete_hook(&mut self) {
        if let Some(complete) = &self.job.complete
            && let Err(e) = hook(self.job, "complete", complete, self.status(), &self.file).await
        {
            self.report.errors.push(e.to_string());
            self.failure.get_or_insert((Event::Failure, e.to_string()));
        }
    }

    /// Log the outcome, send the notice, and report.
    async fn notify(mut self) -> RunReport {
        let duration = self.clock.elapsed();
        let job = self.job;
        let mut notice = match &self.failure {
            Some((kind, msg)) => {
                self.report.errors.insert(0, msg.clone());
                tracing::error!(
                    "job {}: FAILED after {:.1} s: {msg}",
                    job.name,
                    duration.as_secs_f64()
                );
                let mut n = Notice::new(*kind, &job.name, failure_summary(*kind, job), msg.clone());
                n.destination = self.upload_failures.first().map(|f| f.destination.clone());
                n
            }
            None => {
                self.report.ok = true;
                tracing::info!(
                    "job {}: done in {:.1} s: {} ({} bytes)",
                    job.name,
                    duration.as_secs_f64(),
                    self.report.generation.as_deref().unwrap_or("-"),
                    self.report.size.unwrap_or(0)
                );
                success_notice(job, &self.report)
            }
        };
        notice.generation = self.report.generation.clone();
        notice.size = self.report.size;
        notice.duration = Some(duration);
        let rt = self.rt;
        crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &notice).await;
        self.report
    }
}

/// The one-line summary of a failed run's notice, by what failed.
fn failure_summary(kind: Event, job: &Job) -> String {
    match kind {
        Event::VerifyFailed => format!("backup of {} failed verification", job.name),
        Event::UploadFailed => format!("backup of {} was not shipped everywhere", job.name),
        _ => format!("backup of {} failed", job.name),
    }
}

fn success_notice(job: &Job, report: &RunReport) -> Notice {
    Notice::new(
        Event::Success,
        &job.name,
        format!("backup of {} succeeded", job.name),
        format!(
            "{} shipped to {}",
            report.generation.as_deref().unwrap_or("-"),
            if job.destinations.is_empty() {
                "no destination".to_string()
            } else {
                job.destinations.join(", ")
            }
        ),
    )
}

/// Generations an earlier run wrote but could not record as verified (it
/// died, or the disk was full): checked again now, good or bad for good.
fn reverify(job: &Job, store: &JobStore) {
    for mut g in store.generations().unwrap_or_default() {
        if g.manifest.health != Health::Unverified {
            continue;
        }
        let r = crate::verify::checksum(&g.path, g.manifest.size, &g.manifest.sha256);
        crate::verify::record(&mut g, "checksum", &r);
        match g.save() {
            Ok(()) => tracing::info!(
                "job {}: {} left unverified by an earlier run: {}",
                job.name,
                g.manifest.name,
                match &r {
                    Ok(d) => format!("verified now ({d})"),
                    Err(e) => format!("fails its check ({e}), marked bad"),
                }
            ),
            Err(e) => tracing::warn!(
                "job {}: cannot record the verification of {}: {e:#}",
                job.name,
                g.manifest.name
            ),
        }
    }
}

fn describe(job: &Job) -> String {
    match &job.source {
        JobSource::Postgres { db, paths } => format!(
            "postgres {} format {}{}",
            db.dsn.redacted(),
            db.format,
            if paths.is_empty() {
                String::new()
            } else {
                format!(" + {} file trees", paths.len())
            }
        ),
        JobSource::Files { paths } | JobSource::Archive { paths, .. } => format!(
            "{} {}",
            job.source.kind(),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A generation name is the start time to the second; a second run in the
/// same second (a manual run beside a scheduled one, a retry) waits for the
/// next second rather than fail on the first one's name. Runs of one job
/// are serialized by its lock, so the wait is at most about a second.
async fn free_stem(
    store: &JobStore,
    job: &str,
    mut started: chrono::DateTime<Utc>,
) -> (String, chrono::DateTime<Utc>) {
    loop {
        let stem = generation_stem(job, started);
        let taken = std::fs::read_dir(&store.dir)
            .map(|d| {
                d.flatten().any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix(&stem)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                })
            })
            .unwrap_or(false);
        if !taken {
            return (stem, started);
        }
        let into = u64::from(started.timestamp_subsec_millis());
        tokio::time::sleep(std::time::Duration::from_millis(1000 - into.min(999))).await;
        started = Utc::now();
    }
}

/// Dump into the job folder and commit the generation with its manifest.
async fn take_generation(
    job: &Job,
    store: &JobStore,
    started: chrono::DateTime<Utc>,
) -> anyhow::Result<Generation> {
    let spec = spec_of(job);
    if !spec.paths.is_empty() {
        let last = store
            .generations()
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|g| g.manifest.is_good())
            .and_then(|g| g.manifest.tree);
        crate::source::tree_guard::check(&spec.paths, last.as_ref(), job.allow_empty)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let compression = job.compression;
    let (stem, started) = free_stem(store, &job.name, started).await;
    let progress = Progress::start(&store.dir);
    let taken = take(&spec, &store.dir, &stem, &compression).await;
    drop(progress);
    let taken = taken?;
    for w in &taken.warnings {
        tracing::warn!("job {}: {w}", job.name);
    }
    let name = taken
        .written
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = Manifest {
        version: 1,
        job: job.name.clone(),
        name,
        started,
        finished: Utc::now(),
        size: taken.written.size,
        sha256: taken.written.sha256.clone(),
        source: job.source.kind().into(),
        format: job.source.format().map(|f| f.name().to_string()),
        layout: taken.layout,
        compression,
        server_version: taken.server_version.clone(),
        globals_included: taken.globals_included,
        paths: job.source.paths().to_vec(),
        warnings: taken.warnings.clone(),
        table_rows: taken.table_rows.clone(),
        tree: taken.tree.clone(),
        client_tools: taken.client_tools.clone(),
        fingerprint: taken.fingerprint.clone(),
        snapshot_wal: taken.snapshot_wal.clone(),
        // Good only once its verification is recorded in this file too.
        health: if job.verify == Verify::None {
            Health::Good
        } else {
            Health::Unverified
        },
        verifications: vec![],
        uploads: job
            .destinations
            .iter()
            .map(|d| (d.clone(), UploadStatus::pending()))
            .collect(),
    };
    let g = Generation {
        manifest,
        path: PathBuf::from(&taken.written.path),
    };
    if let Err(e) = g.save() {
        // Without its manifest the file is not a generation: remove it.
        let _ = std::fs::remove_file(&g.path);
        return Err(e);
    }
    tracing::info!(
        "job {}: generation {} written ({} bytes, sha256 {})",
        job.name,
        g.manifest.name,
        g.manifest.size,
        g.manifest.sha256
    );
    Ok(g)
}

/// A progress line on a terminal only (logs and pipes get the log lines):
/// bytes written so far and the rate, read from the growing temporary file.
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(dir: &Path) -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let dir = dir.to_path_buf();
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                let written: u64 = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter(|e| {
                                e.file_name()
                                    .to_string_lossy()
                                    .starts_with(crate::pipeline::TEMP_PREFIX)
                            })
                            .filter_map(|e| e.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                let rate = written as f64 / t0.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "dumping: {} written, {}/s",
                    crate::units::human(written),
                    crate::units::human(rate as u64)
                ));
                bar.tick();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
        Progress { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}
