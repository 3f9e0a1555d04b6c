//! Shipping generations to destinations, and rotating them there.
//!
//! Every destination of a job gets its own plugin instance (its own Store)
//! and runs at the same time as the others. A generation's own manifest goes
//! along as `<name>.manifest.json`, so a restore from a destination alone can
//! check the sha256 before applying anything. Transient failures are retried
//! with backoff within the run; what still fails stays `pending` in the
//! manifest and is retried first at the next run.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use crate::config::{Config, Job};
use crate::plugin::{
    CallContext, Configured, DestinationSession, ErrorKind, PluginError, PluginHost, PluginSet,
    Upload, configured,
};
use crate::store::{Generation, MANIFEST_SUFFIX, UploadState, manifest_path};

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

/// Ship every pending (generation, destination) of the job, oldest
/// generation first, all destinations at once. Manifests are updated.
pub async fn ship(rt: &Runtime, job: &Job, gens: &mut [Generation]) -> Vec<ShipFailure> {
    let per_dest = job.destinations.iter().map(|dest| {
        let todo: Vec<usize> = gens
            .iter()
            .enumerate()
            .filter(|(_, g)| g.manifest.pending_for(dest))
            .map(|(i, _)| i)
            .collect();
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
                        results.push((i, Err(PluginError::new(ErrorKind::Config, msg.clone())), 0));
                    }
                    return (dest.clone(), results);
                }
            };
            let mut session = None;
            // After a stall the server hangs: the rest waits for the next run.
            let mut stalled: Option<String> = None;
            for i in todo {
                let g = &gens[i];
                if let Some(first) = &stalled {
                    let why = format!(
                        "not tried in this run: {dest} stopped answering during the upload of {first}"
                    );
                    results.push((i, Err(PluginError::new(ErrorKind::Stalled, why)), 0));
                    continue;
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
                if r.as_ref().is_err_and(|e| e.kind == ErrorKind::Stalled) {
                    stalled = Some(g.manifest.name.clone());
                }
                results.push((i, r, attempts));
            }
            (dest.clone(), results)
        }
    });
    let outcomes = futures::future::join_all(per_dest).await;
    let mut failures = vec![];
    let mut touched = BTreeSet::new();
    for (dest, results) in outcomes {
        for (i, r, attempts) in results {
            let g = &mut gens[i];
            let st = g
                .manifest
                .uploads
                .entry(dest.clone())
                .or_insert_with(crate::store::UploadStatus::pending);
            st.attempts += attempts;
            match r {
                Ok(()) => {
                    st.state = UploadState::Done;
                    st.last_error = None;
                    st.at = Some(Utc::now());
                }
                Err(e) => {
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
        if let Err(e) = gens[i].save() {
            tracing::error!(
                "job {}: cannot update the manifest of {}: {e:#}",
                job.name,
                gens[i].manifest.name
            );
        }
    }
    failures
}

/// A remote copy rotation could not remove yet; retried at the next run so
/// a passing failure does not leave it there for good.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct PendingRemoval {
    destination: String,
    name: String,
    local_path: std::path::PathBuf,
}

const REMOVALS_FILE: &str = ".pending-removals.json";

/// Drop generations locally and at every destination that has them, after
/// retrying the remote removals earlier runs could not do. A destination
/// that cannot delete (`unsupported`) is logged once per run as external
/// rotation. Returns problems worth a warning (nothing is lost by them: the
/// local copy of a kept generation is never touched).
pub async fn rotate(rt: &Runtime, job: &Job, dropped: &[Generation]) -> Vec<String> {
    let dir = rt.config.runner.backup_dir.join(&job.name);
    let queue_path = dir.join(REMOVALS_FILE);
    let earlier: Vec<PendingRemoval> = std::fs::read(&queue_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut todo = earlier.clone();
    for g in dropped {
        for (dest, st) in &g.manifest.uploads {
            if st.state == UploadState::Done {
                todo.push(PendingRemoval {
                    destination: dest.clone(),
                    name: g.manifest.name.clone(),
                    local_path: g.path.clone(),
                });
            }
        }
    }
    let mut problems = vec![];
    let mut still = vec![];
    let mut external: BTreeSet<String> = BTreeSet::new();
    let mut sessions: std::collections::BTreeMap<String, Option<DestinationSession>> =
        Default::default();
    for r in todo {
        let dest = &r.destination;
        if external.contains(dest) {
            continue;
        }
        if !sessions.contains_key(dest) {
            let s = match configured::destination(&rt.config, &rt.plugins, dest) {
                Ok(c) => open(rt, &c, &job.name).await.ok(),
                Err(_) => None,
            };
            sessions.insert(dest.clone(), s);
        }
        let Some(Some(s)) = sessions.get_mut(dest) else {
            problems.push(format!(
                "rotation on {dest}: destination unavailable; removing {} there is retried next run",
                r.name
            ));
            still.push(r);
            continue;
        };
        let mname = format!("{}{MANIFEST_SUFFIX}", r.name);
        match s.remove(&r.name, &job.name, &r.local_path).await {
            Ok(()) => {
                tracing::info!("job {}: removed {} from {dest}", job.name, r.name);
                let _ = s
                    .remove(&mname, &job.name, &manifest_path(&r.local_path))
                    .await;
            }
            Err(e) if e.kind == ErrorKind::Unsupported => {
                tracing::warn!(
                    "job {}: rotation on {dest} is external ({})",
                    job.name,
                    e.message
                );
                external.insert(dest.clone());
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => {
                problems.push(format!(
                    "rotation on {dest}: could not remove {} (retried next run): {e}",
                    r.name
                ));
                still.push(r);
            }
        }
    }
    for g in dropped {
        remove_local(&g.path);
        tracing::info!(
            "job {}: dropped generation {} (keep = {})",
            job.name,
            g.manifest.name,
            job.keep
        );
    }
    if still != earlier {
        let saved = if still.is_empty() {
            std::fs::remove_file(&queue_path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(anyhow::Error::from)
        } else {
            serde_json::to_vec_pretty(&still)
                .map_err(anyhow::Error::from)
                .and_then(|b| crate::store::write_atomic(&queue_path, &b))
        };
        if let Err(e) = saved {
            problems.push(format!("cannot record the removals still to do: {e:#}"));
        }
    }
    for p in &problems {
        tracing::warn!("job {}: {p}", job.name);
    }
    problems
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
    objs.into_iter()
        .filter_map(|o| o.name.strip_suffix(MANIFEST_SUFFIX).map(str::to_string))
        .max()
        .ok_or_else(|| anyhow::anyhow!("{dest} holds no generation of job {job}"))
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
