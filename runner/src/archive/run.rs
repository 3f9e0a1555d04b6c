//! One run of an archive job: scan and append (sealing full or waited-out
//! volumes), ship sealed volumes, apply `archive_keep`, check the lag of
//! unprotected files, notify.

use std::time::Instant;

use chrono::Utc;

use super::catalog::Catalog;
use super::scan::{Archiver, ScanStats};
use super::{ArchiveDir, at_ns, ns};
use crate::config::{Event, Job};
use crate::notify::Notice;
use crate::pipeline::Compression;
use crate::runtime::Runtime;

/// How an archive run ended.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: bool,
    /// The last volume this run sealed.
    pub generation: Option<String>,
    /// Content bytes archived.
    pub size: Option<u64>,
    pub errors: Vec<String>,
}

/// Take one archive run of `job` (the caller holds the job's lock).
pub async fn run(rt: &Runtime, job: &Job) -> Report {
    let clock = Instant::now();
    let mut report = Report::default();
    let Some(spec) = job.source.archive().cloned() else {
        report.errors.push("not an archive job".into());
        return report;
    };
    let dir = ArchiveDir::new(&rt.config.runner.backup_dir, &job.name);
    let now = ns(Utc::now());
    // Volumes are zstd seekable; the config refuses another compression.
    let level = match job.compression {
        Compression::Zstd { level, .. } => level,
        Compression::Gzip { .. } | Compression::None => 3,
    };
    let (d2, j2) = (dir.clone(), job.clone());
    let scanned = tokio::task::spawn_blocking(move || -> anyhow::Result<ScanStats> {
        let cat = Catalog::open(&d2.catalog())?;
        let mut a = Archiver::start(&d2, &cat, &spec, level, now, &j2.destinations)?;
        a.scan(j2.source.paths(), j2.allow_empty)?;
        a.finish()
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("the scan stopped: {e}")));
    let mut failure_kind = Event::Failure;
    match &scanned {
        Ok(s) => {
            tracing::info!(
                "job {}: archived {} new and {} changed files ({} bytes); {} unchanged, {} gone; {} directories unchanged, {} compared file by file{}",
                job.name,
                s.new,
                s.changed,
                s.bytes,
                s.unchanged,
                s.gone,
                s.dirs_skipped,
                s.dirs_compared,
                if s.sealed.is_empty() {
                    String::new()
                } else {
                    format!("; sealed {}", s.sealed.join(", "))
                }
            );
            report.size = Some(s.bytes);
            report.generation = s.sealed.last().cloned();
        }
        Err(e) => report.errors.push(format!("archiving failed: {e:#}")),
    }
    // Ship whatever is sealed and pending, also after a failed scan: what
    // is sealed is worth protecting.
    tracing::info!("job {}: scan {}", job.name, self_usage());
    let ship_errors = super::ship::ship_pending(rt, &dir, &job.destinations).await;
    if !ship_errors.is_empty() && report.errors.is_empty() {
        failure_kind = Event::UploadFailed;
    }
    report.errors.extend(ship_errors);
    if let Some(keep) = job.source.archive().and_then(|a| a.archive_keep) {
        report
            .errors
            .extend(super::retain::retain(rt, &dir, &job.destinations, keep).await);
    }
    report.ok = report.errors.is_empty();
    let lag = lag_notice(&dir, job);
    let notice = if report.ok {
        let s = scanned.as_ref().ok();
        Notice::new(
            Event::Success,
            &job.name,
            format!("archive run of {} succeeded", job.name),
            format!(
                "{} files archived; volumes sealed: {}",
                s.map_or(0, |s| s.new + s.changed),
                s.map(|s| s.sealed.join(", "))
                    .filter(|x| !x.is_empty())
                    .unwrap_or_else(|| "none".into())
            ),
        )
    } else {
        Notice::new(
            failure_kind,
            &job.name,
            format!("archive run of {} failed", job.name),
            report.errors.join("\n"),
        )
    };
    let mut notice = notice;
    notice.generation = report.generation.clone();
    notice.size = report.size;
    notice.duration = Some(clock.elapsed());
    crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &notice).await;
    if let Some(n) = lag {
        tracing::warn!("job {}: {}: {}", job.name, n.summary, n.detail);
        crate::notify::send(&rt.host, &rt.config, &rt.plugins, &job.notifiers, &n).await;
    }
    report
}

/// The `archive-lag` notice, when the oldest file not yet at any
/// destination has waited longer than `archive_lag`.
fn lag_notice(dir: &ArchiveDir, job: &Job) -> Option<Notice> {
    let spec = job.source.archive()?;
    let (count, bytes, oldest) = Catalog::open(&dir.catalog()).ok()?.unprotected().ok()?;
    let oldest = oldest?;
    let waited = (Utc::now() - at_ns(oldest)).to_std().unwrap_or_default();
    if waited <= spec.archive_lag {
        return None;
    }
    Some(Notice::new(
        Event::ArchiveLag,
        &job.name,
        format!(
            "archive-lag: {} has files at no destination for {}",
            job.name,
            crate::duration::format(waited)
        ),
        format!(
            "{count} files ({bytes} bytes) are not yet at any destination; the oldest was archived {} ago, past archive_lag = {}. \
             The source may delete them on its own: check the destinations and `offsite list {}`",
            crate::duration::format(waited),
            crate::duration::format(spec.archive_lag),
            job.name
        ),
    ))
}

/// This process's reads and peak memory so far, from /proc/self/io and
/// /proc/self/status (what `just bench` reads back from the log).
fn self_usage() -> String {
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let st = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    format!(
        "rchar={} read_bytes={} peak_rss={}",
        field(&io, "rchar:"),
        field(&io, "read_bytes:"),
        field(&st, "VmHWM:").replace(' ', "")
    )
}
