//! Getting at a volume's bytes: the local file when there is one; one
//! member's byte range fetched from a destination (`fetch-range`, contract
//! 0.2.0); else a whole copy fetched into a bounded cache under
//! `<backup_dir>/<job>/cache/` (checked against the catalog's sha256
//! before use; the least recently used copies go first when it is full).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ArchiveDir;
use super::catalog::VolumeRow;
use super::volume::MemberRange;
use crate::plugin::ErrorKind;
use crate::runtime::Runtime;

/// The local file holding `v`, if there is one.
pub fn local_file(dir: &ArchiveDir, v: &VolumeRow) -> Option<PathBuf> {
    [dir.sealed_path(&v.name), dir.open_path(&v.name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// A whole copy of `v` already in the cache (no transfer), if there is one.
pub fn in_cache(dir: &ArchiveDir, v: &VolumeRow) -> Option<PathBuf> {
    let path = dir.cache().join(&v.name);
    std::fs::metadata(&path)
        .is_ok_and(|m| m.len() == v.len)
        .then(|| {
            touch(&path);
            path
        })
}

/// What a ranged read of one member gave.
pub enum Ranged {
    /// A temporary file under the cache holding exactly the member's
    /// compressed bytes (its frames); the caller removes it.
    Fetched(PathBuf),
    /// The destination cannot read a range (contract 0.1.0 plugin, TFTP,
    /// a server that ignores `Range`): the plugin's words.
    Unsupported(String),
}

/// Fetch only member `m`'s bytes (`m.offset .. m.offset + m.clen`) of
/// volume `v` from `dest` through the plugin's `fetch-range`. While it
/// exists it counts against the cache bound `limit` like a cached volume.
pub async fn member_range(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    v: &VolumeRow,
    m: &MemberRange,
    limit: u64,
) -> Result<Ranged> {
    let cache = cache_dir(dir)?;
    make_room(&cache, m.clen, limit)?;
    let part = cache.join(format!(".range-{}-{}", std::process::id(), v.name));
    let mut s = super::ship::session(rt, dest, &dir.job).await?;
    match s
        .fetch_range(&v.name, &dir.job, m.offset, m.clen, &part)
        .await
    {
        Ok(_) => Ok(Ranged::Fetched(part)),
        Err(e) if e.kind == ErrorKind::Unsupported => Ok(Ranged::Unsupported(e.message)),
        Err(e) => Err(anyhow::anyhow!(
            "cannot fetch bytes {}..{} of {} from {dest}: {e}",
            m.offset,
            m.offset + m.clen,
            v.name
        )),
    }
}

/// A cached copy of `v` fetched from `dest`, fetching it if needed.
/// `limit` bounds the cache's total bytes (a single volume larger than the
/// limit is still fetched, alone).
pub async fn cached(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    v: &VolumeRow,
    limit: u64,
) -> Result<PathBuf> {
    let cache = cache_dir(dir)?;
    let path = cache.join(&v.name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == v.len) {
        touch(&path);
        return Ok(path);
    }
    make_room(&cache, v.len, limit)?;
    let part = cache.join(format!(".part-{}", v.name));
    let mut s = super::ship::session(rt, dest, &dir.job).await?;
    let n = s
        .fetch(&v.name, &dir.job, &part)
        .await
        .map_err(|e| anyhow::anyhow!("cannot fetch {} from {dest}: {e}", v.name))?;
    let check = || -> Result<()> {
        if n != v.len {
            anyhow::bail!(
                "{} from {dest} is {n} bytes; the catalog says {}",
                v.name,
                v.len
            );
        }
        if let Some(want) = &v.sha256 {
            let got = crate::pipeline::sha256_file(&part)?;
            if &got != want {
                anyhow::bail!(
                    "{} from {dest} has sha256 {got}; the catalog says {want}: that copy is damaged",
                    v.name
                );
            }
        }
        Ok(())
    };
    if let Err(e) = check() {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, &path)?;
    Ok(path)
}

/// The job's cache folder, made if missing.
fn cache_dir(dir: &ArchiveDir) -> Result<PathBuf> {
    let cache = dir.cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    Ok(cache)
}

fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Remove the least recently used cached volumes until `need` more bytes
/// fit under `limit`.
fn make_room(cache: &Path, need: u64, limit: u64) -> Result<()> {
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(cache)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, p) in files {
        if total + need <= limit {
            break;
        }
        std::fs::remove_file(&p).with_context(|| format!("evicting {}", p.display()))?;
        total -= len;
    }
    Ok(())
}

/// The cache bound for a job: two volumes.
pub fn cache_limit(volume_size: u64) -> u64 {
    volume_size.saturating_mul(2)
}
