//! Rotation: carrying out [`crate::retention`]'s plan for a job. Superseded
//! uploads are marked, copies at destinations removed (through their
//! plugins), local generations dropped; what has to outlive the run goes
//! to the job folder's files ([`super::queue`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::Utc;

use super::queue::{Entry, RemoteCopy, entries, save_notes, save_remote_copies};
use super::{open_named, save_logged};
use crate::config::Job;
use crate::plugin::{DestinationSession, ErrorKind};
use crate::retention::{Fate, Item, LocalFate, RemoteFate};
use crate::runtime::Runtime;
use crate::store::{Generation, JobStore, MANIFEST_SUFFIX, Manifest, UploadState, manifest_path};

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
    let mut dests = Destinations::new(rt, &job.name);
    let mut changed = vec![false; entries.len()];
    for ((e, fate), changed) in entries.iter_mut().zip(&fates).zip(&mut changed) {
        warn_held(job, e, fate);
        for (dest, rf) in &fate.remote {
            *changed |= apply_remote(&mut dests, e, dest, rf, remote, &mut out.problems).await;
        }
    }
    let copies = apply_local(job, entries, &fates, &changed, &mut out.forced);
    record(&store.dir, dests.take_notes(), &copies, &mut out.problems);
    for p in &out.problems {
        tracing::warn!("job {}: {p}", job.name);
    }
    out
}

/// What the plan keeps that an operator should look at: a generation
/// stamped in the future, or one held back from the usual order.
fn warn_held(job: &Job, e: &Entry, fate: &Fate) {
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
}

/// One entry's fate at one destination, carried out (removals only with
/// `remote`); whether its manifest changed. A removal that could not be
/// done is a problem, retried next run.
async fn apply_remote(
    dests: &mut Destinations<'_>,
    e: &mut Entry,
    dest: &str,
    rf: &RemoteFate,
    remote: bool,
    problems: &mut Vec<String>,
) -> bool {
    match rf {
        RemoteFate::Superseded(why) if e.manifest.pending_for(dest) => {
            tracing::info!(
                "job {}: not shipping {} to {dest}: {why}",
                dests.job,
                e.manifest.name
            );
            set_state(&mut e.manifest, dest, UploadState::Superseded);
            true
        }
        RemoteFate::Remove(_) if !remote => false,
        RemoteFate::Remove(why) if !dests.external.contains(dest) => {
            match dests.remove(e, dest, why).await {
                Ok(()) => set_state(&mut e.manifest, dest, UploadState::Removed),
                Err(Unremoved::Unavailable) => {
                    problems.push(format!(
                        "rotation on {dest}: destination unavailable; removing {} there is retried next run",
                        e.manifest.name
                    ));
                    return false;
                }
                Err(Unremoved::Failed(p)) => problems.push(p),
            }
            true
        }
        RemoteFate::Remove(_) => {
            // External rotation there: no longer ours to remove.
            set_state(&mut e.manifest, dest, UploadState::Removed);
            true
        }
        _ => false,
    }
}

/// Why a copy at a destination is still there.
enum Unremoved {
    /// The destination could not be opened in this run.
    Unavailable,
    /// The plugin's removal failed: the problem, as said to the operator.
    Failed(String),
}

/// Rotation's calls to the destinations during one `retain`: one session
/// per destination, opened when first needed, and the destinations found
/// to rotate externally (they cannot delete).
struct Destinations<'a> {
    rt: &'a Runtime,
    job: &'a str,
    /// `None`: the destination could not be opened.
    sessions: BTreeMap<String, Option<DestinationSession>>,
    external: BTreeSet<String>,
}

impl<'a> Destinations<'a> {
    fn new(rt: &'a Runtime, job: &'a str) -> Self {
        Destinations {
            rt,
            job,
            sessions: BTreeMap::new(),
            external: BTreeSet::new(),
        }
    }

    /// Remove a generation at `dest`, then its manifest there. `Ok` also
    /// when it is already gone, or when the destination cannot delete
    /// (logged once: rotation there is external).
    async fn remove(&mut self, e: &Entry, dest: &str, why: &str) -> Result<(), Unremoved> {
        if !self.sessions.contains_key(dest) {
            let s = open_named(self.rt, dest, self.job).await.ok();
            self.sessions.insert(dest.to_string(), s);
        }
        let Some(Some(s)) = self.sessions.get_mut(dest) else {
            return Err(Unremoved::Unavailable);
        };
        let job = self.job;
        let name = &e.manifest.name;
        match s.remove(name, job, &e.path).await {
            Ok(()) => {
                tracing::info!("job {job}: removed {name} from {dest} ({why})");
                let mname = format!("{name}{MANIFEST_SUFFIX}");
                let _ = s.remove(&mname, job, &manifest_path(&e.path)).await;
                Ok(())
            }
            Err(err) if err.kind == ErrorKind::Unsupported => {
                tracing::warn!(
                    "job {job}: rotation on {dest} is external ({})",
                    err.message
                );
                self.external.insert(dest.to_string());
                Ok(())
            }
            Err(err) if err.kind == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Unremoved::Failed(format!(
                "rotation on {dest}: could not remove {name} (retried next run): {err}"
            ))),
        }
    }

    /// What each opened destination's plugin warned about, by destination.
    fn take_notes(&mut self) -> Vec<(String, Vec<String>)> {
        self.sessions
            .iter_mut()
            .filter_map(|(d, s)| Some((d.clone(), s.as_mut()?.take_warnings())))
            .collect()
    }
}

/// The local side of the plan: drop what it drops (a forced drop is
/// reported in `forced`), save the manifests that changed, and return the
/// dropped generations whose copies remain at destinations.
fn apply_local(
    job: &Job,
    entries: Vec<Entry>,
    fates: &[Fate],
    changed: &[bool],
    forced: &mut Vec<String>,
) -> Vec<RemoteCopy> {
    let mut copies = vec![];
    for ((e, fate), &changed) in entries.into_iter().zip(fates).zip(changed) {
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
                forced.push(msg);
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
    copies
}

/// Keep, in the job folder, the destinations' notes and the copies left
/// at destinations; what cannot be written is a problem.
fn record(
    job_dir: &Path,
    notes: Vec<(String, Vec<String>)>,
    copies: &[RemoteCopy],
    problems: &mut Vec<String>,
) {
    if let Err(e) = save_notes(job_dir, notes) {
        problems.push(format!("cannot record the destinations' notes: {e:#}"));
    }
    if let Err(e) = save_remote_copies(job_dir, copies) {
        problems.push(format!(
            "cannot record the copies left at destinations: {e:#}"
        ));
    }
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
