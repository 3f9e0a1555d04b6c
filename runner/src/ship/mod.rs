//! Shipping generations to destinations, and rotating them there.
//!
//! Every destination of a job gets its own plugin instance (its own Store)
//! and runs at the same time as the others. A generation's own manifest goes
//! along as `<name>.manifest.json`, so a restore from a destination alone can
//! check the sha256 before applying anything. Transient failures are retried
//! with backoff within the run; what still fails stays `pending` in the
//! manifest and is retried at the next run, newest generation first.
//!
//! - this file: uploads;
//! - `rotate`: carries out [`crate::retention`]'s plan (removals there);
//! - `queue`: the job folder's files that carry rotation between runs;
//! - `fetch`: reading a destination back (restore, `verify --remote`, `list`).

mod fetch;
mod queue;
mod rotate;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;

pub use fetch::{FetchedGeneration, fetch, newest_remote, remote_generations, stamp_of};
pub use queue::{
    DestinationNote, Entry, REMOTE_COPIES_FILE, RemoteCopy, destination_notes, entries,
    remote_copies,
};
pub use rotate::{Retained, plan_for, retain};

use crate::config::Job;
use crate::plugin::{
    CallContext, Configured, DestinationSession, ErrorKind, PluginError, Upload, configured,
};
use crate::retention::{Item, newer_confirmed};
use crate::runtime::Runtime;
use crate::store::{Generation, MANIFEST_SUFFIX, UploadState, UploadStatus, manifest_path};

/// Attempts per upload within one run, and the pause before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(8)];

/// The retries of one upload within a run (generations, WAL files, archive
/// volumes): a transient failure is tried again after each pause of the
/// backoff in turn; then the failure stands.
pub struct Retry {
    backoff: &'static [Duration],
    /// Tries made so far.
    pub attempts: u32,
}

impl Retry {
    pub fn new(backoff: &'static [Duration]) -> Retry {
        Retry {
            backoff,
            attempts: 1,
        }
    }

    /// After try number `attempts` ended in `r`: whether to try again (it
    /// failed, transiently, and the backoff has a pause left). If so, warns
    /// `"{what} failed (attempt N), retrying in P: {e}"`, drops a `session`
    /// that trapped or timed out (the next try opens a new one), sleeps the
    /// pause, and counts the next try.
    pub async fn again<T>(
        &mut self,
        r: &Result<T, PluginError>,
        session: &mut Option<DestinationSession>,
        what: impl FnOnce() -> String,
    ) -> bool {
        let Err(e) = r else {
            return false;
        };
        let Some(&pause) = self.backoff.get(self.attempts as usize - 1) else {
            return false;
        };
        if !e.kind.is_retryable() {
            return false;
        }
        tracing::warn!(
            "{} failed (attempt {}), retrying in {}: {e}",
            what(),
            self.attempts,
            crate::duration::format(pause)
        );
        if matches!(e.kind, ErrorKind::Timeout | ErrorKind::Crashed) {
            *session = None;
        }
        tokio::time::sleep(pause).await;
        self.attempts += 1;
        true
    }
}

#[derive(Debug, Clone)]
pub struct ShipFailure {
    pub destination: String,
    pub generation: String,
    pub error: String,
}

fn ctx(c: &Configured, job: &str) -> CallContext {
    CallContext {
        plugin: c.plugin.info.name.clone(),
        instance: c.name.clone(),
        job: Some(job.to_string()),
    }
}

/// A session with destination `c` for `job` (also used by WAL shipping).
pub async fn open(
    rt: &Runtime,
    c: &Configured,
    job: &str,
) -> Result<DestinationSession, PluginError> {
    DestinationSession::open(&rt.host, c.plugin.clone(), &c.settings, ctx(c, job)).await
}

/// Upload the data file and then its manifest, retrying transient errors.
/// A session that failed (trap, timeout) is replaced before the retry.
async fn upload_one(
    rt: &Runtime,
    c: &Configured,
    session: &mut Option<DestinationSession>,
    g: &Generation,
) -> (Result<(), PluginError>, u32) {
    let job = &g.manifest.job;
    let mut retry = Retry::new(&BACKOFF);
    loop {
        let result = async {
            if session.is_none() {
                *session = Some(open(rt, c, job).await?);
            }
            let s = session.as_mut().expect("opened above");
            s.upload(&Upload {
                name: &g.manifest.name,
                local_path: &g.path,
                size: g.manifest.size,
                sha256: &g.manifest.sha256,
                job,
            })
            .await?;
            let mpath = manifest_path(&g.path);
            let bytes = std::fs::read(&mpath)
                .map_err(|e| PluginError::host(format!("{}: {e}", mpath.display())))?;
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            match s
                .upload(&Upload {
                    name: &format!("{}{MANIFEST_SUFFIX}", g.manifest.name),
                    local_path: &mpath,
                    size: bytes.len() as u64,
                    sha256: &sha,
                    job,
                })
                .await
            {
                // A destination that keeps no manifests (shell-compat by
                // default: seed 000's scripts see backup files only); a
                // restore from there checks against the local manifest.
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    tracing::debug!("job {job}: {} keeps no manifests: {}", c.name, e.message);
                    Ok(())
                }
                other => other,
            }
        }
        .await;
        let what = || format!("job {job}: upload of {} to {}", g.manifest.name, c.name);
        if !retry.again(&result, session, what).await {
            return (result, retry.attempts);
        }
    }
}

/// How one pending (generation, destination) ended in a run.
enum Shipped {
    Tried(Result<(), PluginError>, u32),
    /// Not shipped: this many newer good copies are confirmed there.
    Superseded(usize),
}

/// The order pending uploads go in at one destination: counted (good, not
/// future-stamped) generations newest first — the newest is what a
/// restore needs — then bad ones newest first, then future-stamped ones.
fn ship_order(gens: &[Generation], dest: &str, now: chrono::DateTime<Utc>) -> Vec<usize> {
    let mut todo: Vec<usize> = (0..gens.len())
        .filter(|&i| gens[i].manifest.pending_for(dest))
        .collect();
    let class = |i: usize| {
        let m = &gens[i].manifest;
        if m.is_future(now) {
            2
        } else if m.is_good() {
            0
        } else {
            1
        }
    };
    todo.sort_by_key(|&i| (class(i), std::cmp::Reverse(i)));
    todo
}

/// Ship every pending (generation, destination) of the job, newest good
/// generation first, all destinations at once. A pending upload that
/// `keep` newer good copies confirmed at that destination have superseded
/// is not shipped (marked `superseded`). Manifests are updated.
pub async fn ship(rt: &Runtime, job: &Job, gens: &mut [Generation]) -> Vec<ShipFailure> {
    let now = Utc::now();
    let per_dest = job
        .destinations
        .iter()
        .map(|dest| ship_to(rt, job, dest, gens, now));
    let outcomes = futures::future::join_all(per_dest).await;
    record_outcomes(job, gens, outcomes)
}

/// The pending uploads of one destination, in [`ship_order`], through one
/// session: each generation's outcome by its index in `gens`.
async fn ship_to(
    rt: &Runtime,
    job: &Job,
    dest: &str,
    gens: &[Generation],
    now: chrono::DateTime<Utc>,
) -> (String, Vec<(usize, Shipped)>) {
    let todo = ship_order(gens, dest, now);
    let mut results = vec![];
    if todo.is_empty() {
        return (dest.to_string(), results);
    }
    let c = match configured::destination(&rt.config, &rt.plugins, dest) {
        Ok(c) => c,
        Err(e) => {
            let msg = configured::joined(&e);
            for i in todo {
                let e = PluginError::new(ErrorKind::Config, msg.clone());
                results.push((i, Shipped::Tried(Err(e), 0)));
            }
            return (dest.to_string(), results);
        }
    };
    let items: Vec<Item> = gens
        .iter()
        .map(|g| Item {
            manifest: &g.manifest,
            local: true,
        })
        .collect();
    let mut shipped_now = vec![];
    let mut session = None;
    // After a stall the server hangs: the rest waits for the next run.
    let mut stalled: Option<String> = None;
    for i in todo {
        let g = &gens[i];
        if let Some(first) = &stalled {
            let why = format!(
                "not tried in this run: {dest} stopped answering during the upload of {first}"
            );
            let e = PluginError::new(ErrorKind::Stalled, why);
            results.push((i, Shipped::Tried(Err(e), 0)));
            continue;
        }
        if !g.manifest.is_future(now) {
            let newer = newer_confirmed(&items, dest, i, now, &shipped_now);
            if newer >= job.keep.max(1) {
                results.push((i, Shipped::Superseded(newer)));
                continue;
            }
        }
        let (r, attempts) = upload_logged(rt, job, &c, &mut session, g).await;
        if r.is_ok() {
            shipped_now.push(i);
        }
        if r.as_ref().is_err_and(|e| e.kind == ErrorKind::Stalled) {
            stalled = Some(g.manifest.name.clone());
        }
        results.push((i, Shipped::Tried(r, attempts)));
    }
    (dest.to_string(), results)
}

/// [`upload_one`], its start and end logged.
async fn upload_logged(
    rt: &Runtime,
    job: &Job,
    c: &Configured,
    session: &mut Option<DestinationSession>,
    g: &Generation,
) -> (Result<(), PluginError>, u32) {
    let dest = &c.name;
    tracing::info!(
        "job {}: uploading {} ({} bytes) to {dest}",
        job.name,
        g.manifest.name,
        g.manifest.size
    );
    let started = std::time::Instant::now();
    let (r, attempts) = upload_one(rt, c, session, g).await;
    match &r {
        Ok(()) => tracing::info!(
            "job {}: {} shipped to {dest} in {:.1} s",
            job.name,
            g.manifest.name,
            started.elapsed().as_secs_f64()
        ),
        Err(e) => tracing::error!(
            "job {}: {} not shipped to {dest}, it stays pending: {e}",
            job.name,
            g.manifest.name
        ),
    }
    (r, attempts)
}

/// Each outcome into its generation's manifest (saved), and the failures.
fn record_outcomes(
    job: &Job,
    gens: &mut [Generation],
    outcomes: Vec<(String, Vec<(usize, Shipped)>)>,
) -> Vec<ShipFailure> {
    let mut failures = vec![];
    let mut touched = BTreeSet::new();
    for (dest, results) in outcomes {
        for (i, outcome) in results {
            let g = &mut gens[i];
            let st = g
                .manifest
                .uploads
                .entry(dest.clone())
                .or_insert_with(UploadStatus::pending);
            match outcome {
                Shipped::Superseded(newer) => {
                    tracing::info!(
                        "job {}: not shipping {} to {dest}: {newer} newer good copies are confirmed there (keep = {})",
                        job.name,
                        g.manifest.name,
                        job.keep.max(1)
                    );
                    st.state = UploadState::Superseded;
                }
                Shipped::Tried(Ok(()), attempts) => {
                    st.attempts += attempts;
                    st.state = UploadState::Done;
                    st.last_error = None;
                    st.at = Some(Utc::now());
                }
                Shipped::Tried(Err(e), attempts) => {
                    st.attempts += attempts;
                    st.state = UploadState::Pending;
                    st.last_error = Some(e.message.clone());
                    failures.push(ShipFailure {
                        destination: dest.clone(),
                        generation: g.manifest.name.clone(),
                        error: e.message,
                    });
                }
            }
            touched.insert(i);
        }
    }
    for i in touched {
        save_logged(&job.name, &gens[i]);
    }
    failures
}

fn save_logged(job: &str, g: &Generation) {
    if let Err(e) = g.save() {
        tracing::error!(
            "job {job}: cannot update the manifest of {}: {e:#}",
            g.manifest.name
        );
    }
}

/// A destination from the config, by name, opened for one job.
pub async fn open_named(rt: &Runtime, dest: &str, job: &str) -> anyhow::Result<DestinationSession> {
    let c = configured::destination(&rt.config, &rt.plugins, dest)
        .map_err(|e| anyhow::anyhow!(configured::joined(&e)))?;
    Ok(open(rt, &c, job).await?)
}
