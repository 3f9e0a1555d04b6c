//! The archive-mode commands (seed 003): `find`, `cat`, `catalog rebuild`,
//! and `restore` of an archive job.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::archive::catalog::{Catalog, Query};
use crate::archive::pattern::Pattern;
use crate::archive::query::Reader;
use crate::archive::{ArchiveDir, extract, fetch, ns, parse_time};
use crate::config::{ArchiveSpec, Config, Job};

fn archive_job<'a>(
    config: &'a Config,
    name: &str,
) -> Result<(&'a Job, &'a ArchiveSpec, ArchiveDir)> {
    let job = config.job(name).map_err(|e| anyhow::anyhow!(e))?;
    let spec = match job.source.archive() {
        Some(s) => s,
        None => anyhow::bail!(
            "job {name} is not an archive job (source = \"archive\"); find, cat and catalog work on archive jobs"
        ),
    };
    Ok((job, spec, ArchiveDir::new(&config.runner.backup_dir, name)))
}

fn need_catalog(dir: &ArchiveDir) -> Result<()> {
    if !dir.catalog().exists() {
        anyhow::bail!(
            "job {} has no catalog at {} yet: run it once, or rebuild it with `offsite catalog rebuild {} --from DEST`",
            dir.job,
            dir.catalog().display(),
            dir.job
        );
    }
    Ok(())
}

/// Filters from the command line; `pattern` as the OS gave it (bytes).
pub fn query(pattern: Option<&[u8]>, since: Option<&str>, until: Option<&str>) -> Result<Query> {
    let now = Utc::now();
    let t = |s: Option<&str>, flag: &str| -> Result<Option<i64>> {
        s.map(|s| {
            parse_time(s, now)
                .map(ns)
                .with_context(|| format!("--{flag}"))
        })
        .transpose()
    };
    Ok(Query {
        glob: pattern.map(Pattern::parse),
        since: t(since, "since")?,
        until: t(until, "until")?,
        order: Default::default(),
    })
}

/// `offsite find JOB PATTERN [--since T] [--until T] [--json]`.
pub fn find(config: &Config, job: &str, q: &Query, json: bool) -> Result<bool> {
    let (_, _, dir) = archive_job(config, job)?;
    need_catalog(&dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = crate::archive::query::find(&dir, q, json, &mut out)?;
    out.flush()?;
    if n == 0 && !json {
        eprintln!("offsite: nothing in job {job}'s catalog matches");
    }
    Ok(n > 0)
}

/// `offsite cat JOB PATH [--at T] [--from DEST]`. `path` is taken as the
/// OS gives it: a file name that is not UTF-8 (a recorder's Latin-1 names)
/// is matched byte for byte.
pub async fn cat(
    config: &Config,
    job: &str,
    path: &std::ffi::OsStr,
    at: Option<&str>,
    from: Option<&str>,
) -> Result<bool> {
    let (j, spec, dir) = archive_job(config, job)?;
    need_catalog(&dir)?;
    let at = at
        .map(|a| parse_time(a, Utc::now()))
        .transpose()
        .context("--at")?;
    let rt = runtime_for(config, j, from, &dir, path, at).await?;
    let r = Reader {
        dir: &dir,
        job: j,
        rt: rt.as_ref(),
        from,
        cache_limit: fetch::cache_limit(spec.volume_size),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    crate::archive::query::cat(&r, path.as_bytes(), at, &mut out).await?;
    out.flush()?;
    Ok(true)
}

/// A plugin runtime when `cat` needs a destination: `--from`, or the
/// member's volume is not on this machine.
async fn runtime_for(
    config: &Config,
    job: &Job,
    from: Option<&str>,
    dir: &ArchiveDir,
    path: &std::ffi::OsStr,
    at: Option<chrono::DateTime<Utc>>,
) -> Result<Option<crate::runtime::Runtime>> {
    if let Some(d) = from {
        check_dest(job, d)?;
    } else {
        let cat = Catalog::open(&dir.catalog())?;
        let local = cat
            .version_at(path.as_bytes(), at.map(ns))?
            .and_then(|m| cat.volume(&m.volume).ok().flatten())
            .is_none_or(|v| fetch::local_file(dir, &v).is_some());
        if local {
            return Ok(None);
        }
    }
    Ok(Some(crate::runtime::open(config.clone()).await?))
}

fn check_dest(job: &Job, d: &str) -> Result<()> {
    if !job.destinations.iter().any(|x| x == d) {
        anyhow::bail!(
            "`{d}` is not a destination of job {}; its destinations: {}",
            job.name,
            if job.destinations.is_empty() {
                "none".into()
            } else {
                job.destinations.join(", ")
            }
        );
    }
    Ok(())
}

/// `offsite catalog rebuild JOB --from DEST`.
pub async fn rebuild(config: &Config, job: &str, from: &str) -> Result<bool> {
    let (j, spec, dir) = archive_job(config, job)?;
    check_dest(j, from)?;
    let _lock = crate::store::JobLock::acquire(&crate::store::JobStore::new(
        &config.runner.backup_dir,
        job,
    ))?;
    let rt = crate::runtime::open(config.clone()).await?;
    let r = crate::archive::rebuild::rebuild(&rt, &dir, from, fetch::cache_limit(spec.volume_size))
        .await?;
    println!(
        "rebuilt the catalog of job {job} from {from}: {} volumes, {} files, {} gone records",
        r.volumes, r.members, r.gone
    );
    Ok(true)
}

/// What `restore` of an archive job takes besides the job.
pub struct RestoreArgs<'a> {
    pub to_dir: &'a Path,
    pub query: Query,
    pub max_bytes: Option<u64>,
    pub from: Option<&'a str>,
    pub force: bool,
}

/// `offsite restore JOB --to-dir DIR [--match GLOB] [--since T] [--until T]
/// [--max-bytes SIZE] [--from DEST]`.
pub async fn restore(config: &Config, job: &str, a: RestoreArgs<'_>) -> Result<bool> {
    let (j, spec, dir) = archive_job(config, job)?;
    need_catalog(&dir)?;
    if let Some(d) = a.from {
        check_dest(j, d)?;
    }
    if !a.force && std::fs::read_dir(a.to_dir).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} is not empty; restore into an empty directory, or add --force",
            a.to_dir.display()
        );
    }
    let mut q = a.query.clone();
    let plan = {
        let cat = Catalog::open(&dir.catalog())?;
        if let Some(max) = a.max_bytes {
            match extract::newest_cutoff(&cat, &q, max)? {
                Some(c) => q.since = Some(q.since.map_or(c, |s| s.max(c))),
                None => {
                    anyhow::bail!("not even the newest matching file fits in --max-bytes {max}")
                }
            }
        }
        extract::plan(&cat, &q)?
    };
    if plan.files == 0 {
        anyhow::bail!(
            "nothing in job {job}'s catalog matches; `offsite find {job} PATTERN` lists what is there"
        );
    }
    extract::check_room(a.to_dir, &plan)?;
    let rt = crate::runtime::open(config.clone()).await?;
    let r = Reader {
        dir: &dir,
        job: j,
        rt: Some(&rt),
        from: a.from,
        cache_limit: fetch::cache_limit(spec.volume_size),
    };
    std::fs::create_dir_all(a.to_dir)?;
    let done = extract::extract(&r, &q, a.to_dir).await?;
    println!(
        "restored {} files ({} bytes) of job {job} into {}; read {} volumes whole and {} byte ranges ({} bytes) from destinations",
        done.files,
        done.bytes,
        a.to_dir.display(),
        done.whole_volumes,
        done.ranges,
        done.range_bytes
    );
    if !done.failed.is_empty() {
        const SHOWN: usize = 20;
        let mut lines: Vec<String> = done.failed.iter().take(SHOWN).cloned().collect();
        if done.failed.len() > SHOWN {
            lines.push(format!("... and {} more", done.failed.len() - SHOWN));
        }
        anyhow::bail!(
            "{} of {} files were not restored (nothing was written under their names):\n  {}",
            done.failed.len(),
            plan.files,
            lines.join("\n  ")
        );
    }
    Ok(true)
}
