//! Shipping generations to destinations, and rotating them there.
//!
//! Every destination of a job gets its own plugin instance (its own Store)
//! and runs at the same time as the others. A generation's own manifest goes
//! along as `<name>.manifest.json`, so a restore from a destination alone can
//! check the sha256 before applying anything. Transient failures are retried
//! with backoff within the run; what still fails stays `pending` in the
//! manifest and is retried at the next run, newest generation first.
//! Rotation carries out [`crate::retention`]'s plan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use crate::config::{Config, Job};
use crate::plugin::{
    CallContext, Configured, DestinationSession, ErrorKind, PluginError, PluginHost, PluginSet,
    Upload, configured,
};
use crate::retention::{Fate, Item, LocalFate, RemoteFate, newer_confirmed};
use crate::store::{Generation, JobStore, MANIFEST_SUFFIX, Manifest, UploadState, manifest_path};

/// What a run needs from the outside world.
pub struct Runtime {
    pub config: Config,
    pub host: PluginHost,
    pub plugins: PluginSet,
}

/// Attempts per upload within one run, and the pause before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(8)];

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

async fn open(rt: &Runtime, c: &Configured, job: &str) -> Result<DestinationSession, PluginError> {
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
    let mut attempts = 0;
    loop {
        attempts += 1;
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
        match result {
            Ok(()) => return (Ok(()), attempts),
            Err(e) if e.kind.is_retryable() && (attempts as usize) <= BACKOFF.len() => {
                let pause = BACKOFF[attempts as usize - 1];
                tracing::warn!(
                    "job {job}: upload of {} to {} failed (attempt {attempts}), retrying in {}: {e}",
                    g.manifest.name,
                    c.name,
                    crate::duration::format(pause)
                );
                if matches!(e.kind, ErrorKind::Timeout | ErrorKind::Crashed) {
                    *session = None;
                }
                tokio::time::sleep(pause).await;
            }
            Err(e) => return (Err(e), attempts),
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
    let keep = job.keep.max(1);
    let per_dest = job.destinations.iter().map(|dest| {
        let todo = ship_order(gens, dest, now);
        let gens = &*gens;
        async move {
            let mut results = vec![];
            if todo.is_empty() {
                return (dest.clone(), results);
            }
            let c = match configured::destination(&rt.config, &rt.plugins, dest) {
                Ok(c) => c,
                Err(e) => {
                    let msg = configured::joined(&e);
                    for i in todo {
                        let e = PluginError::new(ErrorKind::Config, msg.clone());
                        results.push((i, Shipped::Tried(Err(e), 0)));
                    }
                    return (dest.clone(), results);
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
                    if newer >= keep {
                        results.push((i, Shipped::Superseded(newer)));
                        continue;
                    }
                }
                tracing::info!(
                    "job {}: uploading {} ({} bytes) to {dest}",
                    job.name,
                    g.manifest.name,
                    g.manifest.size
                );
                let started = std::time::Instant::now();
                let (r, attempts) = upload_one(rt, &c, &mut session, g).await;
                match &r {
                    Ok(()) => {
                        shipped_now.push(i);
                        tracing::info!(
                            "job {}: {} shipped to {dest} in {:.1} s",
                            job.name,
                            g.manifest.name,
                            started.elapsed().as_secs_f64()
                        )
                    }
                    Err(e) => tracing::error!(
                        "job {}: {} not shipped to {dest}, it stays pending: {e}",
                        job.name,
                        g.manifest.name
                    ),
                }
                if r.as_ref().is_err_and(|e| e.kind == ErrorKind::Stalled) {
                    stalled = Some(g.manifest.name.clone());
                }
                results.push((i, Shipped::Tried(r, attempts)));
            }
            (dest.clone(), results)
        }
    });
    let outcomes = futures::future::join_all(per_dest).await;
    let mut failures = vec![];
    let mut touched = BTreeSet::new();
    for (dest, results) in outcomes {
        for (i, outcome) in results {
            let g = &mut gens[i];
            let st = g
                .manifest
                .uploads
                .entry(dest.clone())
                .or_insert_with(crate::store::UploadStatus::pending);
            match outcome {
                Shipped::Superseded(newer) => {
                    tracing::info!(
                        "job {}: not shipping {} to {dest}: {newer} newer good copies are confirmed there (keep = {keep})",
                        job.name,
                        g.manifest.name
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

/// Generations dropped locally whose copies remain at destinations (still
/// counted there, or a removal that failed and is retried): their
/// manifests, so rotation there goes on without the local file. Kept in
/// the job folder.
pub const REMOTE_COPIES_FILE: &str = ".pending-removals.json";

/// One generation known only by its copies at destinations.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RemoteCopy {
    pub manifest: Manifest,
    /// Where the generation was kept locally (for `eremove FILE`).
    pub local_path: PathBuf,
}

/// The remote copies of generations no longer on local disk.
pub fn remote_copies(job_dir: &Path) -> Vec<RemoteCopy> {
    let path = job_dir.join(REMOTE_COPIES_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(
                "ignoring {} (unreadable: {e}); copies it listed are no longer rotated",
                path.display()
            );
            vec![]
        }),
        Err(_) => vec![],
    }
}

fn save_remote_copies(job_dir: &Path, copies: &[RemoteCopy]) -> anyhow::Result<()> {
    save_or_remove(&job_dir.join(REMOTE_COPIES_FILE), copies, copies.is_empty())
}

/// Write `value` as JSON (atomically), or remove the file when `empty`.
fn save_or_remove<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    empty: bool,
) -> anyhow::Result<()> {
    if empty {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    }
    crate::store::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// A generation as rotation handles it: on local disk or only remote.
pub struct Entry {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub local: bool,
}

/// Local generations and remote-only copies of a job, oldest first.
pub fn entries(store: &JobStore) -> anyhow::Result<Vec<Entry>> {
    let gens = store.generations()?;
    let mut out: Vec<Entry> = remote_copies(&store.dir)
        .into_iter()
        .filter(|c| !gens.iter().any(|g| g.manifest.name == c.manifest.name))
        .map(|c| Entry {
            manifest: c.manifest,
            path: c.local_path,
            local: false,
        })
        .collect();
    out.extend(gens.into_iter().map(|g| Entry {
        manifest: g.manifest,
        path: g.path,
        local: true,
    }));
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(out)
}

/// The retention plan for a job's entries now.
pub fn plan_for(job: &Job, entries: &[Entry]) -> Vec<Fate> {
    plan_within(job, entries, 0)
}

fn plan_within(job: &Job, entries: &[Entry], slack: usize) -> Vec<Fate> {
    let items: Vec<Item> = entries
        .iter()
        .map(|e| Item {
            manifest: &e.manifest,
            local: e.local,
        })
        .collect();
    crate::retention::plan(
        &items,
        &job.destinations,
        job.keep,
        (job.max_local, slack),
        Utc::now(),
    )
}

/// What rotation could not do cleanly.
#[derive(Default)]
pub struct Retained {
    /// Worth a warning; nothing was lost by them.
    pub problems: Vec<String>,
    /// Generations the `max_local` limit dropped although a destination
    /// still lacked them: an error and a notice.
    pub forced: Vec<String>,
}

/// Carry out the retention plan (see [`crate::retention`]): mark superseded
/// uploads, drop local generations, and with `remote` remove copies at
/// destinations (a local generation dropped first stays known by its
/// manifest until then). A destination that cannot delete (`unsupported`)
/// is logged once per run as external rotation; what a destination's plugin
/// warned about while removing is kept for `offsite list`. Only while
/// holding the job lock.
pub async fn retain(rt: &Runtime, job: &Job, store: &JobStore, remote: bool) -> Retained {
    let mut out = Retained::default();
    let mut entries = match entries(store) {
        Ok(e) => e,
        Err(e) => {
            out.problems.push(format!("retention skipped: {e:#}"));
            return out;
        }
    };
    // Before shipping, the run's new generation may stand over the limit:
    // shipping it may still let an older one go the regular way.
    let fates = plan_within(job, &entries, usize::from(!remote));
    let mut changed = vec![false; entries.len()];
    let mut external: BTreeSet<String> = BTreeSet::new();
    let mut sessions: std::collections::BTreeMap<String, Option<DestinationSession>> =
        Default::default();
    for (i, (e, fate)) in entries.iter_mut().zip(&fates).enumerate() {
        if fate.future && e.local {
            tracing::warn!(
                "job {}: generation {} is stamped {}, in the future of now: made with a wrong clock; \
                 it is not counted as the newest for retention or restore and never rotated out; \
                 check it, then delete it by hand ({} and its {MANIFEST_SUFFIX})",
                job.name,
                e.manifest.name,
                e.manifest.started.format("%Y-%m-%d %H:%M:%SZ"),
                e.path.display()
            );
        }
        if let LocalFate::Held(why) = &fate.local {
            tracing::warn!("job {}: keeping {}: {why}", job.name, e.manifest.name);
        }
        for (dest, rf) in &fate.remote {
            match rf {
                RemoteFate::Superseded(why) if e.manifest.pending_for(dest) => {
                    tracing::info!(
                        "job {}: not shipping {} to {dest}: {why}",
                        job.name,
                        e.manifest.name
                    );
                    set_state(&mut e.manifest, dest, UploadState::Superseded);
                    changed[i] = true;
                }
                RemoteFate::Remove(_) if !remote => {}
                RemoteFate::Remove(why) if !external.contains(dest) => {
                    if !sessions.contains_key(dest) {
                        let s = open_named(rt, dest, &job.name).await.ok();
                        sessions.insert(dest.clone(), s);
                    }
                    let Some(Some(s)) = sessions.get_mut(dest) else {
                        out.problems.push(format!(
                            "rotation on {dest}: destination unavailable; removing {} there is retried next run",
                            e.manifest.name
                        ));
                        continue;
                    };
                    let name = e.manifest.name.clone();
                    let mname = format!("{name}{MANIFEST_SUFFIX}");
                    match s.remove(&name, &job.name, &e.path).await {
                        Ok(()) => {
                            tracing::info!("job {}: removed {name} from {dest} ({why})", job.name);
                            let _ = s.remove(&mname, &job.name, &manifest_path(&e.path)).await;
                            set_state(&mut e.manifest, dest, UploadState::Removed);
                        }
                        Err(err) if err.kind == ErrorKind::Unsupported => {
                            tracing::warn!(
                                "job {}: rotation on {dest} is external ({})",
                                job.name,
                                err.message
                            );
                            external.insert(dest.clone());
                            set_state(&mut e.manifest, dest, UploadState::Removed);
                        }
                        Err(err) if err.kind == ErrorKind::NotFound => {
                            set_state(&mut e.manifest, dest, UploadState::Removed);
                        }
                        Err(err) => out.problems.push(format!(
                            "rotation on {dest}: could not remove {name} (retried next run): {err}"
                        )),
                    }
                    changed[i] = true;
                }
                RemoteFate::Remove(_) => {
                    // External rotation there: no longer ours to remove.
                    set_state(&mut e.manifest, dest, UploadState::Removed);
                    changed[i] = true;
                }
                _ => {}
            }
        }
    }
    let mut copies = vec![];
    for ((e, fate), changed) in entries.into_iter().zip(&fates).zip(changed) {
        let gone = match &fate.local {
            LocalFate::Drop(why) => {
                remove_local(&e.path);
                tracing::info!(
                    "job {}: dropped generation {} locally: {why}",
                    job.name,
                    e.manifest.name
                );
                true
            }
            LocalFate::Forced(why) => {
                remove_local(&e.path);
                let msg = format!("dropped generation {}: {why}", e.manifest.name);
                tracing::error!("job {}: {msg}", job.name);
                out.forced.push(msg);
                true
            }
            LocalFate::Gone => true,
            LocalFate::Keep(_) | LocalFate::Held(_) => false,
        };
        if gone {
            if e.manifest
                .uploads
                .values()
                .any(|u| u.state == UploadState::Done)
            {
                copies.push(RemoteCopy {
                    manifest: e.manifest,
                    local_path: e.path,
                });
            }
        } else if changed {
            save_logged(
                &job.name,
                &Generation {
                    manifest: e.manifest,
                    path: e.path,
                },
            );
        }
    }
    let notes: Vec<(String, Vec<String>)> = sessions
        .iter_mut()
        .filter_map(|(d, s)| Some((d.clone(), s.as_mut()?.take_warnings())))
        .collect();
    if let Err(e) = save_notes(&store.dir, notes) {
        out.problems
            .push(format!("cannot record the destinations' notes: {e:#}"));
    }
    if let Err(e) = save_remote_copies(&store.dir, &copies) {
        out.problems.push(format!(
            "cannot record the copies left at destinations: {e:#}"
        ));
    }
    for p in &out.problems {
        tracing::warn!("job {}: {p}", job.name);
    }
    out
}

/// What a destination's plugin warned about during the last rotation
/// there (e.g. a versioned bucket where removing frees no space).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DestinationNote {
    pub at: chrono::DateTime<Utc>,
    pub warnings: Vec<String>,
}

const NOTES_FILE: &str = ".destination-notes.json";

/// The notes of each destination, by name.
pub fn destination_notes(job_dir: &Path) -> std::collections::BTreeMap<String, DestinationNote> {
    std::fs::read(job_dir.join(NOTES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A destination rotated this run replaces its note (none if it had no
/// warning); the others keep theirs.
fn save_notes(job_dir: &Path, fresh: Vec<(String, Vec<String>)>) -> anyhow::Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let mut notes = destination_notes(job_dir);
    for (d, w) in fresh {
        if w.is_empty() {
            notes.remove(&d);
        } else {
            notes.insert(
                d,
                DestinationNote {
                    at: Utc::now(),
                    warnings: w,
                },
            );
        }
    }
    save_or_remove(&job_dir.join(NOTES_FILE), &notes, notes.is_empty())
}

fn set_state(m: &mut Manifest, dest: &str, state: UploadState) {
    if let Some(u) = m.uploads.get_mut(dest) {
        u.state = state;
    }
}

/// The data file first, then the manifest: a crash in between leaves a
/// manifest without data, which `generations()` reports and ignores.
fn remove_local(data: &Path) {
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(manifest_path(data));
}

/// A destination from the config, by name, opened for one job.
async fn open_named(rt: &Runtime, dest: &str, job: &str) -> anyhow::Result<DestinationSession> {
    let c = configured::destination(&rt.config, &rt.plugins, dest)
        .map_err(|e| anyhow::anyhow!(configured::joined(&e)))?;
    Ok(open(rt, &c, job).await?)
}

/// A generation fetched from a destination into a scratch folder.
pub struct FetchedGeneration {
    pub data: std::path::PathBuf,
    /// The manifest that travelled beside it; `None` where the destination
    /// keeps no manifests (it answered `unsupported` or `not-found` for it).
    pub manifest: Option<crate::store::Manifest>,
}

/// Used by restore and remote verify: fetch a generation (and its manifest,
/// where the destination keeps one) from a destination into `dir`.
pub async fn fetch(
    rt: &Runtime,
    job: &str,
    dest: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<FetchedGeneration> {
    let mut s = open_named(rt, dest, job).await?;
    let mname = format!("{name}{MANIFEST_SUFFIX}");
    let mpath = dir.join(&mname);
    let manifest = match s.fetch(&mname, job, &mpath).await {
        Ok(_) => Some(
            serde_json::from_slice(&std::fs::read(&mpath)?).map_err(|e| {
                anyhow::anyhow!("the manifest {mname} from {dest} is unreadable: {e}")
            })?,
        ),
        Err(e) if matches!(e.kind, ErrorKind::Unsupported | ErrorKind::NotFound) => {
            tracing::info!("job {job}: {dest} holds no manifest of {name} ({e})");
            None
        }
        Err(e) => anyhow::bail!("cannot fetch the manifest {mname} from {dest}: {e}"),
    };
    let data = dir.join(name);
    tracing::info!("job {job}: fetching {name} from {dest}");
    s.fetch(name, job, &data).await?;
    Ok(FetchedGeneration { data, manifest })
}

/// The newest generation name a destination lists for the job.
pub async fn newest_remote(rt: &Runtime, job: &str, dest: &str) -> anyhow::Result<String> {
    let mut s = open_named(rt, dest, job).await?;
    let objs = s.list(&format!("{job}-")).await.map_err(|e| {
        anyhow::anyhow!("cannot list {dest} ({e}); name the generation with --generation")
    })?;
    // Exactly this job's: `shop-staging-…` is not a generation of `shop`,
    // and a generation stamped in the future is not the newest.
    let now = Utc::now();
    let (future, real): (Vec<String>, Vec<String>) = objs
        .into_iter()
        .filter_map(|o| crate::store::manifest_of(job, &o.name).map(str::to_string))
        .partition(|n| stamp_of(job, n).is_some_and(|t| t > now + crate::store::FUTURE_SLACK));
    let newest = real
        .into_iter()
        .max()
        .ok_or_else(|| anyhow::anyhow!("{dest} holds no generation of job {job}"))?;
    tracing::info!(
        "job {job}: latest at {dest} is {newest}: the newest generation listed there{}",
        if future.is_empty() {
            String::new()
        } else {
            format!(
                "; skipped {} (stamped in the future of now, made with a wrong clock)",
                future.join(", ")
            )
        }
    );
    Ok(newest)
}

/// The generations of `job` a destination holds, by its own list and the
/// manifests shipped beside each (`<name>.manifest.json`), oldest first:
/// what `list` and `verify --remote` go by when the local store is gone.
/// A listed generation whose manifest cannot be read comes back as an
/// error line instead.
pub async fn remote_generations(
    rt: &Runtime,
    job: &str,
    dest: &str,
    scratch: &Path,
) -> anyhow::Result<Vec<Result<Manifest, String>>> {
    let mut s = open_named(rt, dest, job).await?;
    let objs = s
        .list(&format!("{job}-"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list {dest}: {e}"))?;
    let mut names: Vec<String> = objs
        .iter()
        .filter_map(|o| crate::store::manifest_of(job, &o.name).map(str::to_string))
        .collect();
    names.sort();
    let mut out = vec![];
    for name in names {
        let mname = format!("{name}{MANIFEST_SUFFIX}");
        let mpath = scratch.join(&mname);
        let m = match s.fetch(&mname, job, &mpath).await {
            Ok(_) => std::fs::read(&mpath)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("{name}: the manifest at {dest} is unreadable: {e}")),
            Err(e) => Err(format!(
                "{name}: cannot fetch its manifest from {dest}: {e}"
            )),
        };
        out.push(m);
    }
    Ok(out)
}

/// The time in a generation name of `job` (`<job>-<YYYYMMDDTHHMMSSZ>.<ext>`).
pub fn stamp_of(job: &str, name: &str) -> Option<chrono::DateTime<Utc>> {
    let stamp = name.get(job.len() + 1..job.len() + 17)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Open a runtime: plugins loaded, every destination and notifier checked.
pub async fn runtime(config: Config) -> anyhow::Result<Runtime> {
    let host = PluginHost::new(
        Some(config.runner.plugin_cache_dir()),
        config.runner.limits(),
    )?;
    let plugins = host.load_dir(&config.runner.plugins_dir).await?;
    for e in &plugins.refused {
        tracing::warn!("plugin refused: {e}");
    }
    let errors = configured::check_all(&config, &plugins);
    if !errors.is_empty() {
        anyhow::bail!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(Runtime {
        config,
        host,
        plugins,
    })
}
