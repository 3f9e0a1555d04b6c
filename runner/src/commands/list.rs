//! `offsite list [JOB] [--json]`: generations, local and per destination,
//! with the schedule's last and next run. Never shows a secret: DSNs are
//! redacted and plugin settings are not listed.

use chrono::{DateTime, Local, Utc};
use serde_json::json;

use crate::config::{Config, Job};
use crate::retention::{Fate, LocalFate, RemoteFate};
use crate::schedule::{JobState, StateFile, next_run};
use crate::ship::Entry;
use crate::store::{JobStore, UploadState};

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
        let store = JobStore::new(&config.runner.backup_dir, &j.name);
        let entries = crate::ship::entries(&store)?;
        let fates = crate::ship::plan_for(j, &entries);
        let local_count = entries.iter().filter(|e| e.local).count();
        // The local store is empty: ask the destinations (their list and
        // the manifests shipped beside each generation).
        let mut at_dests = vec![];
        if local_count == 0 && !j.destinations.is_empty() {
            if rt.is_none() {
                rt = Some(crate::ship::runtime(config.clone()).await);
            }
            for d in &j.destinations {
                let found = match rt.as_ref().expect("set above") {
                    Ok(rt) => {
                        let scratch = tempfile::tempdir()?;
                        crate::ship::remote_generations(rt, &j.name, d, scratch.path()).await
                    }
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                };
                at_dests.push((d.clone(), found));
            }
        }
        let notes = crate::ship::destination_notes(&store.dir);
        let st = states.get(&j.name).cloned().unwrap_or_default();
        let next = if j.enabled {
            next_run(&j.schedule, &effective(&st, j), now, &Local)
        } else {
            None
        };
        if as_json {
            let pairs = || entries.iter().zip(&fates);
            out.push(json!({
                "job": j.name,
                "enabled": j.enabled,
                "schedule": j.schedule.to_string(),
                "last_run": st.last_start,
                "last_outcome": if st.interrupted() { None } else { st.last_outcome.clone() },
                "running_or_cut_short": st.interrupted(),
                "next_run": next,
                "keep": j.keep,
                "wal": j.wal.as_ref().map(|_| match crate::wal::catalog::recovery_window(config, j) {
                    Ok(w) => json!(w),
                    Err(e) => json!({"error": format!("{e:#}")}),
                }),
                "max_local": j.max_local,
                "local_store_empty": local_count == 0,
                "destination_notes": notes,
                "generations": pairs().filter(|(e, _)| e.local).map(|(e, f)| entry_json(e, f)).collect::<Vec<_>>(),
                "remote_only": pairs().filter(|(e, _)| !e.local).map(|(e, f)| entry_json(e, f)).collect::<Vec<_>>(),
                "at_destinations": at_dests.iter().map(|(d, r)| (d.clone(), match r {
                    Ok(v) => json!(v.iter().map(|m| match m {
                        Ok(m) => json!({"name": m.name, "started": m.started, "size": m.size, "sha256": m.sha256, "health": m.health, "future": m.is_future(now)}),
                        Err(e) => json!({"error": e}),
                    }).collect::<Vec<_>>()),
                    Err(e) => json!({"error": format!("{e:#}")}),
                })).collect::<serde_json::Map<_, _>>(),
            }));
            continue;
        }
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
            } + &match next {
                Some(t) if t <= now => ", next run now".to_string(),
                Some(t) => format!(", next run {}", local(&t)),
                None => String::new(),
            }
        );
        if j.wal.is_some() {
            match crate::wal::catalog::recovery_window(config, j) {
                Ok(w) => println!("  {w}"),
                Err(e) => println!("  WAL: cannot read the archive: {e:#}"),
            }
        }
        if local_count == 0 {
            println!(
                "  no generations in {}: the local store is empty",
                store.dir.display()
            );
        }
        for (e, f) in entries.iter().zip(&fates) {
            print_entry(e, f);
        }
        for (d, n) in &notes {
            for w in &n.warnings {
                println!("  note from {d} (rotation, {}): {w}", local(&n.at));
            }
        }
        for (d, found) in &at_dests {
            match found {
                Ok(v) if v.is_empty() => println!("  at {d}: no generation of {}", j.name),
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
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(true)
}

/// The state as the daemon would see it for this config.
fn effective(st: &JobState, j: &Job) -> JobState {
    let mut s = st.clone();
    crate::schedule::reconcile(&mut s, &j.schedule, j.enabled, Utc::now());
    s
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
