//! What `offsite list` shows of an archive job: its volumes and their
//! copies, how full the open volume is, and the files not yet protected at
//! any destination (count, bytes, oldest age) — what the source may still
//! delete before they are safe.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::catalog::Catalog;
use super::{ArchiveDir, at_ns};
use crate::config::ArchiveSpec;

#[derive(Debug, serde::Serialize)]
pub struct VolumeStatus {
    pub name: String,
    /// `open` | `sealed` | `removed`
    pub state: String,
    pub size: u64,
    pub members: u64,
    pub content_bytes: u64,
    pub sealed: Option<DateTime<Utc>>,
    /// Per destination: `pending` | `failed` | `done` | `removed`.
    pub copies: std::collections::BTreeMap<String, String>,
    pub local: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Unprotected {
    pub files: u64,
    pub bytes: u64,
    pub oldest_archived: Option<DateTime<Utc>>,
    pub oldest_age_secs: Option<u64>,
    /// The oldest is older than `archive_lag`.
    pub lagging: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub volume_size: u64,
    pub volumes: Vec<VolumeStatus>,
    /// Bytes in the open volume and its share of `volume_size` (percent).
    pub open_fill: u64,
    pub open_fill_percent: f64,
    pub unprotected: Unprotected,
}

pub fn status(dir: &ArchiveDir, spec: &ArchiveSpec) -> Result<Option<Status>> {
    if !dir.catalog().exists() {
        return Ok(None);
    }
    let cat = Catalog::open(&dir.catalog())?;
    let mut volumes = vec![];
    let mut open_fill = 0;
    for v in cat.volumes()? {
        let (members, content_bytes, _, _) = cat.volume_span(v.id)?;
        if v.state == "open" {
            open_fill = v.len;
        }
        volumes.push(VolumeStatus {
            local: super::fetch::local_file(dir, &v).is_some(),
            copies: cat.copies(v.id)?.into_iter().collect(),
            name: v.name,
            state: v.state,
            size: v.len,
            members,
            content_bytes,
            sealed: v.sealed_at.map(at_ns),
        });
    }
    let (files, bytes, oldest) = cat.unprotected()?;
    let oldest_archived = oldest.map(at_ns);
    let age = oldest_archived.map(|o| (Utc::now() - o).num_seconds().max(0) as u64);
    Ok(Some(Status {
        volume_size: spec.volume_size,
        volumes,
        open_fill,
        open_fill_percent: (open_fill as f64 * 100.0 / spec.volume_size as f64 * 10.0).round()
            / 10.0,
        unprotected: Unprotected {
            files,
            bytes,
            oldest_archived,
            oldest_age_secs: age,
            lagging: age.is_some_and(|a| a > spec.archive_lag.as_secs()),
        },
    }))
}

/// The text lines `offsite list` prints for it.
pub fn lines(s: &Status, human: fn(u64) -> String) -> Vec<String> {
    let mut out = vec![];
    for v in &s.volumes {
        let copies: Vec<String> = v
            .copies
            .iter()
            .map(|(d, st)| format!("{d}: {st}"))
            .collect();
        out.push(format!(
            "  {:<36} {:<7} {:>10}  {:>7} files{}{}",
            v.name,
            v.state,
            human(v.size),
            v.members,
            if v.local { "  local" } else { "" },
            if copies.is_empty() {
                String::new()
            } else {
                format!("  {}", copies.join(", "))
            }
        ));
    }
    out.push(format!(
        "  open volume: {} of {} ({}%)",
        human(s.open_fill),
        human(s.volume_size),
        s.open_fill_percent
    ));
    let u = &s.unprotected;
    out.push(match u.oldest_age_secs {
        None => "  every archived file is at a destination".to_string(),
        Some(age) => format!(
            "  not yet at any destination: {} files, {}, oldest archived {} ago{}",
            u.files,
            human(u.bytes),
            crate::duration::format(std::time::Duration::from_secs(age)),
            if u.lagging { "  ARCHIVE-LAG" } else { "" }
        ),
    });
    out
}
