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
use crate::ship::{Runtime, retain, ship};
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

/// Run a hook with the job's environment; `Err` says why it failed.
async fn hook(job: &Job, which: &str, path: &Path, status: &str, file: &str) -> Result<(), String> {
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
        Ok(code) => Err(format!(
            "hook `{which}` ({}) exited with {code}",
            path.display()
        )),
        Err(e) => Err(format!("hook `{which}` ({}): {e}", path.display())),
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

/// Take one backup of `job` now, holding its lock.
pub async fn run_locked(rt: &Runtime, job: &Job, _lock: JobLock) -> RunReport {
    let started = Utc::now();
    let clock = Instant::now();
    let mut report = RunReport {
        job: job.name.clone(),
        ok: false,
        generation: None,
        size: None,
        errors: vec![],
    };
    let store = JobStore::new(&rt.config.runner.backup_dir, &job.name);
    tracing::info!("job {}: starting ({})", job.name, describe(job));
    if let Err(e) = store.clean_interrupted() {
        tracing::warn!("job {}: cleaning up: {e:#}", job.name);
    }
    reverify(job, &store);

    let mut file = String::new();
    let mut new_gen: Option<Generation> = None;
    let mut failure: Option<(Event, String)> = None;

    if let Some(before) = &job.before
        && let Err(e) = hook(job, "before", before, "running", "").await
    {
        failure = Some((Event::Failure, format!("{e}; no dump was started")));
    }

    if failure.is_none() {
        match take_generation(job, &store, started).await {
            Ok(g) => {
                file = g.path.display().to_string();
                new_gen = Some(g);
            }
            Err(e) => {
                let e = crate::disk::explain(e, &store.dir);
                failure = Some((Event::Failure, format!("backup failed: {e:#}")));
            }
        }
        // Seed 002: `after` runs right after the dump, whether it worked or not.
        if let Some(after) = &job.after {
            let status = if failure.is_none() {
                "success"
            } else {
                "failure"
            };
            if let Err(e) = hook(job, "after", after, status, &file).await
                && failure.is_none()
            {
                failure = Some((Event::Failure, e));
            }
        }
    }

    if let Some(g) = new_gen.as_mut() {
        report.generation = Some(g.manifest.name.clone());
        report.size = Some(g.manifest.size);
        if job.verify != Verify::None {
            let r = crate::verify::checksum(&g.path, g.manifest.size, &g.manifest.sha256);
            crate::verify::record(g, "checksum", &r);
            if let Err(e) = &r {
                failure.get_or_insert((Event::VerifyFailed, format!("verification failed: {e}")));
            }
            if job.verify == Verify::Restore && r.is_ok() {
                let r = crate::verify::restore(job, g).await;
                crate::verify::record(g, "restore", &r);
                if let Err(e) = &r {
                    failure
                        .get_or_insert((Event::VerifyFailed, format!("restore test failed: {e}")));
                }
            }
            if let Err(e) = g.save() {
                // On disk it stays unverified: never counted good.
                g.manifest.health = Health::Unverified;
                failure
                    .get_or_insert((Event::Failure, format!("cannot write the manifest: {e:#}")));
            }
        }
    }

    // Retention only once everything of the new generation is durable (its
    // manifest, with the verification recorded): a failed run drops
    // nothing. Its local part runs before shipping too, so that runs cut
    // short during an upload still keep local space bounded.
    let durable = new_gen
        .as_ref()
        .is_some_and(|g| g.manifest.health != Health::Unverified);
    let mut forced = vec![];
    let mut upload_failures = vec![];
    if durable {
        let r = retain(rt, job, &store, false).await;
        report.errors.extend(r.problems);
        forced.extend(r.forced);
    }
    if durable && job.wal.is_some() {
        // WAL archiving (issue 17): WAL no kept snapshot needs goes.
        crate::wal::retention::prune(&rt.config, job);
    }
    if new_gen.is_some() {
        // Ship every pending generation, the newest good one first.
        let mut gens = store.generations().unwrap_or_default();
        if !job.destinations.is_empty() {
            upload_failures = ship(rt, job, &mut gens).await;
        }
        if durable {
            let r = retain(rt, job, &store, true).await;
            report.errors.extend(r.problems);
            forced.extend(r.forced);
        }
    }
    if failure.is_none() && !upload_failures.is_empty() {
        let lines: Vec<String> = upload_failures
            .iter()
            .map(|f| format!("{} to {}: {}", f.generation, f.destination, f.error))
            .collect();
        failure = Some((
            Event::UploadFailed,
            format!("upload failed: {}", lines.join("; ")),
        ));
    }
    if !forced.is_empty() {
        let msg = format!(
            "the local limit (max_local = {}) dropped generations a destination still lacks: {}",
            job.max_local,
            forced.join("; ")
        );
        match &mut failure {
            Some((_, m)) => {
                m.push_str("; ");
                m.push_str(&msg);
            }
            None => failure = Some((Event::UploadFailed, msg)),
        }
    }

    let status = if failure.is_none() {
        "success"
    } else {
        "failure"
    };
    if let Some(complete) = &job.complete
        && let Err(e) = hook(job, "complete", complete, status, &file).await
    {
        report.errors.push(e.clone());
        failure.get_or_insert((Event::Failure, e));
    }

    let duration = clock.elapsed();
    let mut notice = match &failure {
        Some((kind, msg)) => {
            report.errors.insert(0, msg.clone());
            tracing::error!(
                "job {}: FAILED after {:.1} s: {msg}",
                job.name,
                duration.as_secs_f64()
            );
            let summary = match kind {
                Event::VerifyFailed => format!("backup of {} failed verification", job.name),
                Event::UploadFailed => format!("backup of {} was not shipped everywhere", job.name),
                _ => format!("backup of {} failed", job.name),
            };
            let mut n = Notice::new(*kind, &job.name, summary, msg.clone());
            n.destination = upload_failures.first().map(|f| f.destination.clone());
            n
        }
        None => {
            report.ok = true;
            tracing::info!(
                "job {}: done in {:.1} s: {} ({} bytes)",
                job.name,
                duration.as_secs_f64(),
                report.generation.as_deref().unwrap_or("-"),
                report.size.unwrap_or(0)
            );
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
    };
    notice.generation = report.generation.clone();
    notice.size = report.size;
    notice.duration = Some(duration);
    crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &notice).await;
    report
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
        JobSource::Files { paths } => format!(
            "files {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
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
    let stem = generation_stem(&job.name, started);
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
                    crate::commands::list::human(written),
                    crate::commands::list::human(rate as u64)
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
