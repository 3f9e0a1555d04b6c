//! WAL beyond the local store: every archived file shipped to the job's
//! destinations through the same plugins as generations, and fetched back
//! from them by `wal-fetch` when the local store lacks it.
//!
//! Design: `wal-push` stays local and cheap (PostgreSQL waits on it);
//! shipping runs behind it — `offsite daemon` every [`TICK`] for each job
//! with `wal = true` and destinations, and `offsite run JOB` after the
//! run's own shipping. A segment that cannot ship never holds up the local
//! pushes after it.
//!
//! - At each destination, files go in WAL order (name order: timeline,
//!   segment, then `.backup`/`.partial` after their segment), each as two
//!   objects: `<job>-wal-<file>.zst` (the stored, compressed bytes) and then
//!   `<job>-wal-<file>.json` (its catalog entry: sizes, both sha256s, the
//!   segment's header facts), which is the commit marker. Transient errors
//!   are retried ([`BACKOFF`]); what still fails stops that destination
//!   until the next tick, so a destination never holds a later segment
//!   without the earlier ones it could have had.
//! - What each destination confirmed is kept in [`shipped`](super::shipped) (one small file
//!   per destination, rewritten atomically after each upload): a file
//!   pushed again with the same content is not uploaded again.
//! - A file waiting longer than `wal_lag` to reach a destination sends one
//!   `wal-lag` notice per episode (the episode ends once nothing has waited
//!   that long).
//! - [`fetch`]: wal-fetch's look-up at the destinations, checked against
//!   the catalog, with parallel prefetch ([`prefetch`]).

pub mod audit;
pub mod fetch;
pub mod prefetch;
pub mod remote;
pub mod retain;

use std::time::Duration;

use chrono::Utc;

use super::shipped;
use super::store::{WalEntry, WalStore};
use crate::config::{Event, Job};
use crate::notify::Notice;
use crate::plugin::{Configured, DestinationSession, ErrorKind, PluginError, Upload, configured};
use crate::runtime::Runtime;
use crate::ship::Retry;

/// How often `offsite daemon` ships the WAL of each job.
pub const TICK: Duration = Duration::from_secs(5);

/// Pauses before the retries of one upload within a tick.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// The object holding archived file `name` of `job` at a destination.
pub fn data_object(job: &str, name: &str) -> String {
    format!("{job}-wal-{name}.zst")
}

/// The object holding `name`'s catalog entry (uploaded after the data).
pub fn entry_object(job: &str, name: &str) -> String {
    format!("{job}-wal-{name}.json")
}

/// What one shipping pass did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files confirmed at a destination in this pass, per destination.
    pub shipped: Vec<(String, usize)>,
    /// Destinations that stopped: (destination, why).
    pub failures: Vec<(String, String)>,
    /// `wal-lag` notices sent.
    pub lag_notices: usize,
}

/// The archived files of the store, complete (entry and data), in WAL
/// order. Only names are read, so a pass with nothing to ship is cheap.
pub fn archived_names(store: &WalStore) -> anyhow::Result<Vec<String>> {
    let rd = match std::fs::read_dir(&store.dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => anyhow::bail!("reading {}: {e}", store.dir.display()),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".json")
                .filter(|s| super::name::kind_of(s).is_some())
                .map(str::to_string)
        })
        .filter(|n| store.stored_path(n).exists())
        .collect();
    names.sort();
    Ok(names)
}

/// An exclusive, non-blocking `flock` on `<wal_dir>/shipped/.lock`: one
/// shipper per job at a time (the daemon's tick and a run may meet).
struct ShipLock(#[allow(dead_code)] std::fs::File);

fn try_lock(store: &WalStore) -> anyhow::Result<Option<ShipLock>> {
    let dir = store.dir.join(shipped::SHIPPED_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let p = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(ShipLock(f))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("locking {}: {e}", p.display()))
        }
    }
}

/// Ships every archived file each destination of `job` lacks, in WAL
/// order, all destinations at once; then checks `wal_lag`. Never fails:
/// problems are in the report (and the log).
pub async fn ship(rt: &Runtime, job: &Job) -> Report {
    let mut report = Report::default();
    if job.destinations.is_empty() {
        return report;
    }
    let prepared = (|| {
        let store = super::store_of(&rt.config, job)?;
        if !store.dir.exists() {
            // Nothing archived yet. Not created here: the first wal-push
            // makes it, as the server's user, who must be able to write it.
            return anyhow::Ok((store, None));
        }
        let lock = try_lock(&store)?;
        anyhow::Ok((store, lock))
    })();
    let (store, _lock) = match prepared {
        Ok((s, Some(l))) => (s, l),
        Ok((_, None)) => {
            tracing::debug!("job {}: WAL shipping already under way", job.name);
            return report;
        }
        Err(e) => {
            tracing::error!("job {}: WAL shipping: {e:#}", job.name);
            report.failures.push(("*".into(), format!("{e:#}")));
            return report;
        }
    };
    let names = match archived_names(&store) {
        Ok(n) => n,
        Err(e) => {
            report.failures.push(("*".into(), format!("{e:#}")));
            return report;
        }
    };
    let per_dest = job
        .destinations
        .iter()
        .map(|d| ship_to(rt, job, &store, d, &names));
    for (dest, n, err) in futures::future::join_all(per_dest).await {
        report.shipped.push((dest.clone(), n));
        if let Some(e) = err {
            report.failures.push((dest, e));
        }
    }
    for dest in &job.destinations {
        if lag_check(rt, job, &store, dest, &names).await {
            report.lag_notices += 1;
        }
    }
    report
}

/// One destination: what it lacks, in order, until the first failure.
/// Returns (destination, files confirmed, why it stopped).
async fn ship_to(
    rt: &Runtime,
    job: &Job,
    store: &WalStore,
    dest: &str,
    names: &[String],
) -> (String, usize, Option<String>) {
    let fail = |e: String| (dest.to_string(), 0, Some(e));
    let mut st = match shipped::load(&store.dir, dest) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e:#}")),
    };
    let pending: Vec<&String> = names
        .iter()
        .filter(|n| !st.confirmed.contains_key(*n))
        .collect();
    if pending.is_empty() {
        return (dest.to_string(), 0, None);
    }
    let c = match configured::destination(&rt.config, &rt.plugins, dest) {
        Ok(c) => c,
        Err(e) => return fail(configured::joined(&e)),
    };
    let mut session = None;
    let mut done = 0;
    let mut stopped = None;
    for name in pending {
        let entry = match store.entry(name) {
            Ok(Some(e)) => e,
            // Removed by retention since it was listed.
            Ok(None) => continue,
            Err(e) => {
                stopped = Some(format!("{name}: {e:#}"));
                break;
            }
        };
        match upload_file(rt, &c, &mut session, store, &job.name, &entry).await {
            Ok(()) => {
                st.confirmed
                    .insert(name.clone(), entry.stored_sha256.clone());
                done += 1;
                if let Err(e) = shipped::save(&store.dir, dest, &st) {
                    stopped = Some(format!("{e:#}"));
                    break;
                }
            }
            Err(e) => {
                tracing::error!(
                    "job {}: WAL file {name} not shipped to {dest}; it and the files after it wait for the next try: {e}",
                    job.name
                );
                stopped = Some(format!("{name}: {e}"));
                break;
            }
        }
    }
    if done > 0 {
        tracing::info!("job {}: shipped {done} WAL files to {dest}", job.name);
    }
    if st.last_error != stopped {
        st.last_error = stopped.clone();
        if let Err(e) = shipped::save(&store.dir, dest, &st) {
            tracing::error!("job {}: {e:#}", job.name);
        }
    }
    (dest.to_string(), done, stopped)
}

/// Uploads one archived file (data, then entry), retrying transient
/// errors; a session that failed (trap, timeout) is replaced first.
async fn upload_file(
    rt: &Runtime,
    c: &Configured,
    session: &mut Option<DestinationSession>,
    store: &WalStore,
    job: &str,
    e: &WalEntry,
) -> Result<(), PluginError> {
    let entry_path = store.dir.join(format!("{}.json", e.name));
    let entry_bytes = std::fs::read(&entry_path)
        .map_err(|err| PluginError::host(format!("{}: {err}", entry_path.display())))?;
    let entry_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&entry_bytes));
    let data_path = store.stored_path(&e.name);
    let objects = [
        (
            data_object(job, &e.name),
            data_path,
            e.stored_size,
            e.stored_sha256.clone(),
        ),
        (
            entry_object(job, &e.name),
            entry_path,
            entry_bytes.len() as u64,
            entry_sha,
        ),
    ];
    let mut retry = Retry::new(&BACKOFF);
    loop {
        let r: Result<(), PluginError> = async {
            if session.is_none() {
                *session = Some(crate::ship::open(rt, c, job).await?);
            }
            let s = session.as_mut().expect("opened above");
            for (name, path, size, sha) in &objects {
                s.upload(&Upload {
                    name,
                    local_path: path,
                    size: *size,
                    sha256: sha,
                    job,
                })
                .await?;
            }
            Ok(())
        }
        .await;
        let what = || format!("job {job}: upload of WAL file {} to {}", e.name, c.name);
        if retry.again(&r, session, what).await {
            continue;
        }
        match r {
            Err(err) => {
                if !matches!(err.kind, ErrorKind::Rejected | ErrorKind::Config) {
                    *session = None;
                }
                return Err(err);
            }
            Ok(()) => return Ok(()),
        }
    }
}

/// The oldest archived file `dest` has not confirmed, and how long ago it
/// was pushed.
pub fn oldest_waiting(
    store: &WalStore,
    st: &shipped::DestState,
    names: &[String],
) -> Option<(String, chrono::TimeDelta)> {
    let name = names.iter().find(|n| !st.confirmed.contains_key(*n))?;
    let e = store.entry(name).ok()??;
    Some((name.clone(), Utc::now() - e.pushed))
}

/// Sends the `wal-lag` notice of `dest` when a file has waited longer than
/// `wal_lag` and no notice was sent in this episode; ends the episode once
/// nothing waits that long. Returns whether a notice went out.
async fn lag_check(
    rt: &Runtime,
    job: &Job,
    store: &WalStore,
    dest: &str,
    names: &[String],
) -> bool {
    let Some(lag) = job.wal.as_ref().map(|w| w.lag) else {
        return false;
    };
    let Ok(mut st) = shipped::load(&store.dir, dest) else {
        return false;
    };
    let waiting = oldest_waiting(store, &st, names);
    let late = waiting
        .as_ref()
        .filter(|(_, age)| age.to_std().is_ok_and(|a| a > lag));
    match (late, st.lag_notified) {
        (Some((name, age)), None) => {
            let count = names
                .iter()
                .filter(|n| !st.confirmed.contains_key(*n))
                .count();
            let detail = format!(
                "wal-lag: job {}: {count} archived WAL files have not reached {dest}; the oldest, {name}, has waited {} (wal_lag = {}). Last error: {}. Until they arrive, a restore from {dest} alone cannot reach past the WAL it holds",
                job.name,
                crate::duration::format(age.to_std().unwrap_or_default()),
                crate::duration::format(lag),
                st.last_error
                    .as_deref()
                    .unwrap_or("none (shipping has not caught up)")
            );
            tracing::warn!("{detail}");
            let n = Notice::new(
                Event::WalLag,
                &job.name,
                format!("wal-lag: WAL of job {} is not reaching {dest}", job.name),
                detail,
            );
            let mut n = n;
            n.destination = Some(dest.to_string());
            crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
            st.lag_notified = Some(Utc::now());
            let _ = shipped::save(&store.dir, dest, &st);
            true
        }
        (None, Some(_)) => {
            tracing::info!(
                "job {}: WAL at {dest} has caught up (no file waits longer than wal_lag)",
                job.name
            );
            st.lag_notified = None;
            let _ = shipped::save(&store.dir, dest, &st);
            false
        }
        _ => false,
    }
}
