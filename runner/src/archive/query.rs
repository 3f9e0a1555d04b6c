//! `offsite find` and `offsite cat`: answered from the catalog alone (find)
//! or from one member's byte range (cat), never by walking volumes.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};

use super::catalog::{Catalog, Member, Query, VolumeRow};
use super::{ArchiveDir, at_ns, fetch};
use crate::config::Job;
use crate::runtime::Runtime;

/// A pattern as `find`/`restore` take it: with a `/` it matches the whole
/// path (SQLite GLOB: `*` crosses `/`, `?`, `[...]`); without one, the
/// file name in any folder.
pub fn glob_of(pattern: &str) -> String {
    if pattern.contains('/') {
        pattern.to_string()
    } else {
        format!("*/{pattern}")
    }
}

/// One version of a file as `find --json` prints it.
#[derive(serde::Serialize)]
struct Found<'a> {
    path: String,
    size: u64,
    mtime: String,
    sha256: &'a str,
    archived_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gone_at: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    torn: bool,
    volume: &'a str,
    /// `open` | `sealed`
    volume_state: &'a str,
    local: bool,
    /// Destinations with a confirmed copy of the volume.
    destinations: Vec<String>,
}

fn rfc(ns: i64) -> String {
    at_ns(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Per volume: state, whether a local file exists, confirmed destinations.
struct VolumeInfo {
    state: String,
    local: bool,
    dests: Vec<String>,
}

fn info<'a>(
    cache: &'a mut HashMap<String, VolumeInfo>,
    cat: &Catalog,
    dir: &ArchiveDir,
    name: &str,
) -> Result<&'a VolumeInfo> {
    if !cache.contains_key(name) {
        let v = cat
            .volume(name)?
            .context("a member names a volume the catalog lacks")?;
        let dests = cat
            .copies(v.id)?
            .into_iter()
            .filter(|(_, s)| s == "done")
            .map(|(d, _)| d)
            .collect();
        let local = fetch::local_file(dir, &v).is_some();
        cache.insert(
            name.to_string(),
            VolumeInfo {
                state: v.state,
                local,
                dests,
            },
        );
    }
    Ok(&cache[name])
}

/// Print every version of every file matching `q`, streamed: text lines,
/// or one JSON array. Returns how many versions matched.
pub fn find(dir: &ArchiveDir, q: &Query, json: bool, out: &mut dyn Write) -> Result<u64> {
    let cat = Catalog::open(&dir.catalog())?;
    let mut vols = HashMap::new();
    let mut n = 0u64;
    if json {
        out.write_all(b"[")?;
    }
    cat.find(q, |m: Member| {
        let i = info(&mut vols, &cat, dir, &m.volume)?;
        if json {
            if n > 0 {
                out.write_all(b",")?;
            }
            out.write_all(b"\n")?;
            serde_json::to_writer(&mut *out, &found(&m, i))?;
        } else {
            writeln!(out, "{}", text_line(&m, i))?;
        }
        n += 1;
        Ok(())
    })?;
    if json {
        out.write_all(b"\n]\n")?;
    }
    Ok(n)
}

fn found<'a>(m: &'a Member, i: &'a VolumeInfo) -> Found<'a> {
    Found {
        path: m.path_lossy(),
        size: m.stat.size,
        mtime: rfc(m.stat.mtime_ns),
        sha256: &m.sha256,
        archived_at: rfc(m.archived_at),
        gone_at: m.gone_at.map(rfc),
        torn: m.torn,
        volume: &m.volume,
        volume_state: &i.state,
        local: i.local,
        destinations: i.dests.clone(),
    }
}

fn text_line(m: &Member, i: &VolumeInfo) -> String {
    let secs = |ns: i64| at_ns(ns).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut where_ = vec![];
    if i.local {
        where_.push("local".to_string());
    }
    where_.extend(i.dests.iter().cloned());
    format!(
        "{}\t{} bytes\tmtime {}\tarchived {}{}{}\t{} ({}: {})",
        m.path_lossy(),
        m.stat.size,
        secs(m.stat.mtime_ns),
        secs(m.archived_at),
        m.gone_at
            .map(|g| format!("\tgone {}", secs(g)))
            .unwrap_or_default(),
        if m.torn {
            "\ttorn (changed while read)"
        } else {
            ""
        },
        m.volume,
        i.state,
        if where_.is_empty() {
            "nowhere".into()
        } else {
            where_.join(", ")
        }
    )
}

/// Where `cat`/`restore` read a volume from.
pub struct Reader<'a> {
    pub dir: &'a ArchiveDir,
    pub job: &'a Job,
    /// Set when a destination may be needed.
    pub rt: Option<&'a Runtime>,
    pub from: Option<&'a str>,
    pub cache_limit: u64,
}

impl Reader<'_> {
    /// A local path holding `v`: the local file (unless `--from` names a
    /// destination), else a cached copy from `--from` or from the first
    /// destination with a confirmed copy.
    pub async fn volume_path(
        &self,
        cat_copies: &[(String, String)],
        v: &VolumeRow,
    ) -> Result<std::path::PathBuf> {
        if self.from.is_none()
            && let Some(p) = fetch::local_file(self.dir, v)
        {
            return Ok(p);
        }
        let rt = self.rt.context("no plugin runtime to fetch with")?;
        let dests: Vec<&str> = match self.from {
            Some(d) => vec![d],
            None => cat_copies
                .iter()
                .filter(|(_, s)| s == "done")
                .map(|(d, _)| d.as_str())
                .collect(),
        };
        if dests.is_empty() {
            anyhow::bail!(
                "volume {} is not on this machine and no destination has a confirmed copy",
                v.name
            );
        }
        let mut last = None;
        for d in dests {
            match fetch::cached(rt, self.dir, d, v, self.cache_limit).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one destination was tried"))
    }
}

/// `offsite cat`: stream the version of `path` at `at` (newest when None)
/// to `out`. Returns bytes written.
pub async fn cat(
    r: &Reader<'_>,
    path: &str,
    at: Option<DateTime<Utc>>,
    out: &mut dyn Write,
) -> Result<u64> {
    let (m, v, copies) = {
        let cat = Catalog::open(&r.dir.catalog())?;
        let m = cat.version_at(path.as_bytes(), at.map(super::ns))?.with_context(|| {
            format!(
                "{path} is not in the catalog of job {}{}; `offsite find {} '{}'` lists what is",
                r.job.name,
                at.map(|t| format!(" as of {}", t.to_rfc3339())).unwrap_or_default(),
                r.job.name,
                path.rsplit('/').next().unwrap_or(path)
            )
        })?;
        let v = cat
            .volume(&m.volume)?
            .context("the member's volume is not in the catalog")?;
        let copies = cat.copies(v.id)?;
        (m, v, copies)
    };
    let p = r.volume_path(&copies, &v).await?;
    let mut f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
    super::volume::read_member(&mut f, &m.range(), out)
        .with_context(|| format!("reading {path} from {}", p.display()))
}
