//! `offsite list [JOB] [--json]`: generations, local and per destination,
//! with the schedule's last and next run. Never shows a secret: DSNs are
//! redacted and plugin settings are not listed.

use std::collections::BTreeMap;

use chrono::{DateTime, Local, Utc};
use serde_json::json;

use crate::config::{Config, Job};
use crate::retention::{Fate, LocalFate, RemoteFate};
use crate::runtime::Runtime;
use crate::schedule::{JobState, StateFile, next_run};
use crate::ship::{DestinationNote, Entry};
use crate::store::{JobStore, Manifest, UploadState};
use crate::units::human;

fn local(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn state_word(d: &str, u: &crate::store::UploadStatus) -> String {
    match u.state {
        UploadState::Done => format!("{d}:shipped"),
        UploadState::Pending => format!("{d}:PENDING"),
        UploadState::Superseded => format!("{d}:superseded"),
        UploadState::Removed => format!("{d}:removed"),
    }
}

fn local_word(f: &LocalFate) -> &'static str {
    match f {
        LocalFate::Keep(_) => "kept",
        LocalFate::Held(_) => "HELD",
        LocalFate::Drop(_) => "dropped at the next run",
        LocalFate::Forced(_) => "DROPPED BY THE LIMIT at the next run",
        LocalFate::Gone => "gone",
    }
}

fn remote_word(f: &RemoteFate) -> &'static str {
    match f {
        RemoteFate::Keep(_) => "kept",
        RemoteFate::Remove(_) => "removed at the next run",
        RemoteFate::Ship(_) => "to ship",
        RemoteFate::Superseded(_) => "not shipped",
        RemoteFate::Nothing(_) => "-",
    }
}

/// One generation (local or only at destinations) with what rotation does
/// with each of its copies and why, as JSON.
fn entry_json(e: &Entry, f: &Fate) -> serde_json::Value {
    let m = &e.manifest;
    let dests: serde_json::Map<String, serde_json::Value> = m
        .uploads
        .iter()
        .map(|(d, u)| {
            let mut v = serde_json::to_value(u).unwrap_or_default();
            if let (Some(o), Some(r)) = (v.as_object_mut(), f.remote.get(d)) {
                o.insert("rotation".into(), json!(remote_word(r)));
                o.insert("why".into(), json!(r.reason()));
            }
            (d.clone(), v)
        })
        .collect();
    json!({
        "name": m.name,
        "path": e.path,
        "started": m.started,
        "size": m.size,
        "sha256": m.sha256,
        "format": m.format,
        "server_version": m.server_version,
        "client_tools": m.client_tools,
        "health": m.health,
        "future": f.future,
        "local": {"present": e.local, "rotation": local_word(&f.local), "why": f.local.reason()},
        "verifications": m.verifications,
        "destinations": dests,
    })
}

fn print_entry(e: &Entry, f: &Fate) {
    let m = &e.manifest;
    let dests: Vec<String> = m.uploads.iter().map(|(d, u)| state_word(d, u)).collect();
    println!(
        "  {:<40} {:>12}  {:<4}  {}{}{}",
        m.name,
        human(m.size),
        match m.health {
            crate::store::Health::Good => "good",
            crate::store::Health::Unverified => "unverified",
            crate::store::Health::Bad => "BAD",
        },
        if dests.is_empty() {
            "local only".to_string()
        } else {
            dests.join(" ")
        },
        if e.local { "" } else { "  (no local copy)" },
        if f.future {
            "  FUTURE-STAMPED (wrong clock): not counted"
        } else {
            ""
        }
    );
    if e.local {
        println!(
            "      local: {}: {}",
            local_word(&f.local),
            f.local.reason()
        );
    }
    for (d, r) in &f.remote {
        if !matches!(r, RemoteFate::Nothing(_)) {
            println!("      {d}: {}: {}", remote_word(r), r.reason());
        }
    }
}

pub async fn list(config: &Config, job: Option<&str>, as_json: bool) -> anyhow::Result<bool> {
    let jobs: Vec<&Job> = match job {
        Some(name) => vec![config.job(name).map_err(|e| anyhow::anyhow!(e))?],
        None => config.jobs.values().collect(),
    };
    let states = StateFile::in_dir(&config.runner.state_dir)
        .load()
        .unwrap_or_default();
    let now = Utc::now();
    let mut out = vec![];
    let mut rt = None;
    for j in jobs {
        let view = JobView::gather(config, j, &states, now, &mut rt).await?;
        if as_json {
            out.push(view.json(now));
        } else {
            view.print(now);
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(true)
}

/// What a destination holds of a job, by its list: each generation's
/// manifest, or the line saying why it cannot be read.
type Holdings = anyhow::Result<Vec<Result<Manifest, String>>>;

/// Archive mode: an archive job's volumes (`None` for any other job, or
/// before its first run); a catalog that cannot be read is logged and
/// shown as none.
fn archive_status(config: &Config, j: &Job) -> Option<crate::archive::status::Status> {
    let spec = j.source.archive()?;
    let dir = crate::archive::ArchiveDir::new(&config.runner.backup_dir, &j.name);
    crate::archive::status::status(&dir, spec).unwrap_or_else(|e| {
        tracing::warn!("job {}: cannot read the catalog: {e:#}", j.name);
        None
    })
}

/// What `list` shows of one job.
struct JobView<'a> {
    job: &'a Job,
    store: JobStore,
    entries: Vec<Entry>,
    fates: Vec<Fate>,
    local_count: usize,
    /// With the local store empty: what each destination holds.
    at_dests: Vec<(String, Holdings)>,
    notes: BTreeMap<String, DestinationNote>,
    state: JobState,
    next: Option<DateTime<Utc>>,
    /// For a job with `wal = true`: the recovery window, or why it cannot be read.
    wal: Option<anyhow::Result<crate::wal::catalog::RecoveryWindow>>,
    /// For an archive job (`source = "archive"`): its volumes, from the
    /// catalog; `None` before its first run.
    archive: Option<crate::archive::status::Status>,
}

impl<'a> JobView<'a> {
    /// `rt` is opened the first time a job's local store is empty.
    async fn gather(
        config: &Config,
        j: &'a Job,
        states: &BTreeMap<String, JobState>,
        now: DateTime<Utc>,
        rt: &mut Option<Result<Runtime, String>>,
    ) -> anyhow::Result<JobView<'a>> {
        let store = JobStore::new(&config.runner.backup_dir, &j.name);
        let entries = crate::ship::entries(&store)?;
        let fates = crate::ship::plan_for(j, &entries);
        let local_count = entries.iter().filter(|e| e.local).count();
        // The local store is empty: ask the destinations (their list and
        // the manifests shipped beside each generation).
        let mut at_dests = vec![];
        if local_count == 0 && !j.destinations.is_empty() && j.source.archive().is_none() {
            if rt.is_none() {
                *rt = Some(
                    crate::runtime::open(config.clone())
                        .await
                        .map_err(|e| format!("{e:#}")),
                );
            }
            for d in &j.destinations {
                let found = match rt.as_ref().expect("set above") {
                    Ok(rt) => {
                        let scratch = tempfile::tempdir()?;
                        crate::ship::remote_generations(rt, &j.name, d, scratch.path()).await
                    }
                    Err(e) => Err(anyhow::Error::msg(e.clone())),
                };
                at_dests.push((d.clone(), found));
            }
        }
        let state = states.get(&j.name).cloned().unwrap_or_default();
        let next = if j.enabled {
            next_run(&j.schedule, &effective(&state, j), now, &Local)
        } else {
            None
        };
        Ok(JobView {
            job: j,
            notes: crate::ship::destination_notes(&store.dir),
            store,
            entries,
            fates,
            local_count,
            at_dests,
            state,
            next,
            wal: j
                .wal
                .as_ref()
                .map(|_| crate::wal::catalog::recovery_window(config, j)),
            archive: archive_status(config, j),
        })
    }

    fn json(&self, now: DateTime<Utc>) -> serde_json::Value {
        let (j, st) = (self.job, &self.state);
        let pairs = || self.entries.iter().zip(&self.fates);
        json!({
            "job": j.name,
            "enabled": j.enabled,
            "schedule": j.schedule.to_string(),
            "last_run": st.last_start,
            "last_outcome": if st.interrupted() { None } else { st.last_outcome.clone() },
            "running_or_cut_short": st.interrupted(),
            "next_run": self.next,
            "keep": j.keep,
            "wal": self.wal.as_ref().map(|w| match w {
                Ok(w) => json!(w),
                Err(e) => json!({"error": format!("{e:#}")}),
            }),
            "max_local": j.max_local,
            "local_store_empty": self.local_count == 0,
            "archive": self.archive,
            "destination_notes": self.notes,
            "generations": pairs().filter(|(e, _)| e.local).map(|(e, f)| entry_json(e, f)).collect::<Vec<_>>(),
            "remote_only": pairs().filter(|(e, _)| !e.local).map(|(e, f)| entry_json(e, f)).collect::<Vec<_>>(),
            "at_destinations": self.at_dests.iter().map(|(d, r)| (d.clone(), match r {
                Ok(v) => json!(v.iter().map(|m| match m {
                    Ok(m) => json!({"name": m.name, "started": m.started, "size": m.size, "sha256": m.sha256, "health": m.health, "future": m.is_future(now)}),
                    Err(e) => json!({"error": e}),
                }).collect::<Vec<_>>()),
                Err(e) => json!({"error": format!("{e:#}")}),
            })).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// An archive job's volumes instead of generations; false for any
    /// other job (the caller prints its generations).
    fn print_archive(&self) -> bool {
        if let Some(a) = &self.archive {
            for l in crate::archive::status::lines(a, human) {
                println!("{l}");
            }
        } else if self.job.source.archive().is_some() {
            println!("  no catalog yet: the job has not run");
        } else {
            return false;
        }
        true
    }

    fn print(&self, now: DateTime<Utc>) {
        let (j, st) = (self.job, &self.state);
        println!(
            "job {} ({}, {}, keep {}){}",
            j.name,
            if j.enabled { "enabled" } else { "DISABLED" },
            j.schedule,
            j.keep,
            match (&st.last_start, &st.last_outcome) {
                (Some(t), _) if st.interrupted() => {
                    format!(", last run {} (running or cut short)", local(t))
                }
                (Some(t), Some(o)) => format!(", last run {} {o}", local(t)),
                (Some(t), None) => format!(", last run {} (running or cut short)", local(t)),
                _ => ", never run".to_string(),
            } + &match self.next {
                Some(t) if t <= now => ", next run now".to_string(),
                Some(t) => format!(", next run {}", local(&t)),
                None => String::new(),
            }
        );
        match &self.wal {
            Some(Ok(w)) => println!("  {w}"),
            Some(Err(e)) => println!("  WAL: cannot read the archive: {e:#}"),
            None => {}
        }
        if !self.print_archive() && self.local_count == 0 {
            println!(
                "  no generations in {}: the local store is empty",
                self.store.dir.display()
            );
        }
        for (e, f) in self.entries.iter().zip(&self.fates) {
            print_entry(e, f);
        }
        for (d, n) in &self.notes {
            for w in &n.warnings {
                println!("  note from {d} (rotation, {}): {w}", local(&n.at));
            }
        }
        for (d, found) in &self.at_dests {
            print_at_dest(&j.name, d, found, now);
        }
    }
}

/// What a destination holds of a job whose local store is empty.
fn print_at_dest(job: &str, d: &str, found: &Holdings, now: DateTime<Utc>) {
    match found {
        Ok(v) if v.is_empty() => println!("  at {d}: no generation of {job}"),
        Ok(v) => {
            println!("  at {d} (by its list and the manifests shipped there):");
            for m in v {
                match m {
                    Ok(m) => println!(
                        "  {:<40} {:>12}  {:<4}  at {d}{}",
                        m.name,
                        human(m.size),
                        if m.is_good() { "good" } else { "BAD" },
                        if m.is_future(now) {
                            "  FUTURE-STAMPED (wrong clock)"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => println!("  ? {e}"),
                }
            }
        }
        Err(e) => println!("  at {d}: cannot list: {e:#}"),
    }
}

/// The state as the daemon would see it for this config.
fn effective(st: &JobState, j: &Job) -> JobState {
    let mut s = st.clone();
    crate::schedule::reconcile(&mut s, &j.schedule, j.enabled, Utc::now());
    s
}
