//! `offsite list [JOB] [--json]`: generations, local and per destination,
//! with the schedule's last and next run. Never shows a secret: DSNs are
//! redacted and plugin settings are not listed.

use chrono::{DateTime, Local, Utc};
use serde_json::json;

use crate::config::{Config, Job};
use crate::schedule::{JobState, StateFile, next_run};
use crate::store::{JobStore, UploadState};

fn local(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
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
    for j in jobs {
        let store = JobStore::new(&config.runner.backup_dir, &j.name);
        let gens = store.generations()?;
        let st = states.get(&j.name).cloned().unwrap_or_default();
        let next = if j.enabled {
            next_run(&j.schedule, &effective(&st, j), now, &Local)
        } else {
            None
        };
        if as_json {
            out.push(json!({
                "job": j.name,
                "enabled": j.enabled,
                "schedule": j.schedule.to_string(),
                "last_run": st.last_start,
                "last_outcome": if st.interrupted() { None } else { st.last_outcome.clone() },
                "running_or_cut_short": st.interrupted(),
                "next_run": next,
                "keep": j.keep,
                "generations": gens.iter().map(|g| json!({
                    "name": g.manifest.name,
                    "path": g.path,
                    "started": g.manifest.started,
                    "size": g.manifest.size,
                    "sha256": g.manifest.sha256,
                    "format": g.manifest.format,
                    "server_version": g.manifest.server_version,
                    "client_tools": g.manifest.client_tools,
                    "health": g.manifest.health,
                    "verifications": g.manifest.verifications,
                    "destinations": g.manifest.uploads,
                })).collect::<Vec<_>>(),
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
        if gens.is_empty() {
            println!("  no generations in {}", store.dir.display());
        }
        for g in &gens {
            let dests: Vec<String> = g
                .manifest
                .uploads
                .iter()
                .map(|(d, u)| match u.state {
                    UploadState::Done => format!("{d}:shipped"),
                    UploadState::Pending => format!("{d}:PENDING"),
                })
                .collect();
            println!(
                "  {:<40} {:>12}  {:<4}  {}",
                g.manifest.name,
                human(g.manifest.size),
                match g.manifest.health {
                    crate::store::Health::Good => "good",
                    crate::store::Health::Unverified => "unverified",
                    crate::store::Health::Bad => "BAD",
                },
                if dests.is_empty() {
                    "local only".to_string()
                } else {
                    dests.join(" ")
                }
            );
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
