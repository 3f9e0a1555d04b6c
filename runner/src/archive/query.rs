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

/// One version of a file as `find --json` prints it.
#[derive(serde::Serialize)]
struct Found<'a> {
    /// The path as text (invalid UTF-8 replaced by U+FFFD)...
    path: String,
    /// ...and, when it is not UTF-8, its bytes in base64 (RFC 4648): what
    /// `cat` takes, byte for byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
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
        path_b64: std::str::from_utf8(&m.path).is_err().then(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&m.path)
        }),
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
    /// The destinations to read `v` from: `--from`, else those with a
    /// confirmed copy (an error names the volume when there is none).
    pub(super) fn sources<'c>(
        &'c self,
        copies: &'c [(String, String)],
        v: &VolumeRow,
    ) -> Result<Vec<&'c str>> {
        let dests: Vec<&str> = match self.from {
            Some(d) => vec![d],
            None => copies
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
        Ok(dests)
    }

    /// The open volume file holding `v`: the local file (unless `--from`
    /// names a destination), else a cached copy (held: no other process
    /// evicts it while this lives) from `--from` or from the first
    /// destination with a confirmed copy.
    pub async fn volume_file(
        &self,
        cat_copies: &[(String, String)],
        v: &VolumeRow,
    ) -> Result<fetch::Held> {
        if self.from.is_none()
            && let Some(h) = fetch::open_local(self.dir, v)?
        {
            return Ok(h);
        }
        let rt = self.rt.context("no plugin runtime to fetch with")?;
        let mut last = None;
        for d in self.sources(cat_copies, v)? {
            match fetch::cached(rt, self.dir, d, v, self.cache_limit).await {
                Ok(h) => return Ok(h),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one destination was tried"))
    }

    /// The open volume file of `v` when no transfer is needed: the local
    /// file (unless `--from`), or a whole copy already in the cache.
    pub fn volume_at_hand(&self, v: &VolumeRow) -> Result<Option<fetch::Held>> {
        if self.from.is_none()
            && let Some(h) = fetch::open_local(self.dir, v)?
        {
            return Ok(Some(h));
        }
        fetch::in_cache(self.dir, v)
    }

    /// Write member `m` of `v` to `out`, its content checked against the
    /// catalog's sha256 before the first byte goes out. From the local
    /// volume (unless `--from`), a whole cached copy, or else only the
    /// member's byte range from a destination; a destination that cannot
    /// read ranges gives the whole volume into the bounded cache.
    pub async fn copy_member(
        &self,
        copies: &[(String, String)],
        v: &VolumeRow,
        m: &Member,
        out: &mut dyn Write,
    ) -> Result<u64> {
        if let Some(mut h) = self.volume_at_hand(v)? {
            return verified_copy(&mut h.file, &h.path, &m.range(), out);
        }
        let rt = self.rt.context("no plugin runtime to fetch with")?;
        let mut last = None;
        for d in self.sources(copies, v)? {
            let r = match self.copy_ranged(rt, d, v, m, out).await {
                Ok(Some(n)) => Ok(n),
                Ok(None) => match fetch::cached(rt, self.dir, d, v, self.cache_limit).await {
                    Ok(mut h) => verified_copy(&mut h.file, &h.path, &m.range(), out),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one destination was tried"))
    }

    /// `m`'s own byte range from `d`, checked, to `out`; None when `d`
    /// reads no range.
    async fn copy_ranged(
        &self,
        rt: &Runtime,
        d: &str,
        v: &VolumeRow,
        m: &Member,
        out: &mut dyn Write,
    ) -> Result<Option<u64>> {
        let mut ranges = fetch::Ranges::open(rt, self.dir, d, self.cache_limit).await?;
        match ranges.fetch(v, m.offset, m.clen).await? {
            fetch::Ranged::Fetched(part) => {
                let whole = super::volume::MemberRange {
                    offset: 0,
                    ..m.range()
                };
                let mut f = std::fs::File::open(part.path())?;
                let n = verified_copy(&mut f, part.path(), &whole, out)
                    .with_context(|| format!("the bytes of {} from {d}", v.name))?;
                Ok(Some(n))
            }
            fetch::Ranged::Unsupported(why) => {
                tracing::info!("{d} reads no byte range ({why}): fetching {} whole", v.name);
                Ok(None)
            }
        }
    }
}

/// Copy one member's content from the volume file `p` to `out` only after
/// a first pass checked it (length and sha256 against the catalog): a
/// damaged member is an error and nothing of it is written.
fn verified_copy(
    f: &mut std::fs::File,
    p: &std::path::Path,
    m: &super::volume::MemberRange,
    out: &mut dyn Write,
) -> Result<u64> {
    super::volume::read_member(f, m, &mut std::io::sink()).with_context(|| {
        format!(
            "checking the member at byte {} of {}",
            m.offset,
            p.display()
        )
    })?;
    Ok(super::volume::read_member(f, m, out)?)
}

/// `offsite cat`: stream the version of `path` (its bytes: any file name
/// the source had) at `at` (newest when None) to `out`, checked against
/// the catalog's sha256 before a byte is written. Returns bytes written.
pub async fn cat(
    r: &Reader<'_>,
    path: &[u8],
    at: Option<DateTime<Utc>>,
    out: &mut dyn Write,
) -> Result<u64> {
    let shown = String::from_utf8_lossy(path);
    let (m, v, copies) = {
        let cat = Catalog::open(&r.dir.catalog())?;
        let m = cat.version_at(path, at.map(super::ns))?.with_context(|| {
            format!(
                "{shown} is not in the catalog of job {}{}; `offsite find {} '{}'` lists what is",
                r.job.name,
                at.map(|t| format!(" as of {}", t.to_rfc3339()))
                    .unwrap_or_default(),
                r.job.name,
                shown.rsplit('/').next().unwrap_or(&shown)
            )
        })?;
        let v = cat
            .volume(&m.volume)?
            .context("the member's volume is not in the catalog")?;
        let copies = cat.copies(v.id)?;
        (m, v, copies)
    };
    r.copy_member(&copies, &v, &m, out)
        .await
        .with_context(|| format!("reading {shown} from volume {}", v.name))
}
