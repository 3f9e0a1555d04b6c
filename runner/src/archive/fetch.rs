//! Getting at a volume's bytes: the local file when there is one; byte
//! ranges fetched from a destination (`fetch-range`, contract 0.2.0: one
//! member for `cat`, coalesced spans of members for `restore`); else a
//! whole copy fetched into a bounded cache under `<backup_dir>/<job>/cache/`
//! (checked against the catalog's sha256 before use; the least recently
//! used copies go first when it is full).
//!
//! Several processes may share one cache (two `cat --from` at once, a
//! restore beside a `cat`). What keeps them from removing each other's
//! files is `flock(2)` (std's `File::lock*`, released by the kernel when a
//! process dies):
//! - `cache.lock` (beside `cache/`), held exclusively for short moments: while eviction
//!   scans and removes, and while a finished fetch is renamed into place
//!   and opened, or a cached copy is opened;
//! - a complete entry (a volume under its own name) is held with a shared
//!   lock by every reader for as long as it reads ([`Held`]); eviction
//!   removes an entry only when it can lock it exclusively (nobody reads);
//! - a temporary file (`.tmp-<pid>-<n>-<what>`: a fetch in progress, a
//!   fetched range) is held exclusively by its writer for its whole life
//!   ([`Temp`], removed when dropped); eviction removes one only when it
//!   can lock it, i.e. when the process that made it is gone (debris of a
//!   crash).
//!
//! So the bound (`limit`) counts every file in the cache but may be passed
//! while other processes hold what would have to go; it is never enforced
//! by removing what someone is using.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use super::ArchiveDir;
use super::catalog::VolumeRow;
use crate::plugin::{DestinationSession, ErrorKind};
use crate::runtime::Runtime;

/// The cache folder's lock file, beside it (so the folder holds only
/// volumes and temporary files).
const LOCK: &str = "cache.lock";

/// The local file holding `v`, if there is one.
pub fn local_file(dir: &ArchiveDir, v: &VolumeRow) -> Option<PathBuf> {
    [dir.sealed_path(&v.name), dir.open_path(&v.name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// An open volume file: the local one, or a cache entry held with a
/// shared lock (eviction leaves it alone) until this is dropped.
pub struct Held {
    pub path: PathBuf,
    pub file: File,
}

/// The local volume file of `v`, opened.
pub fn open_local(dir: &ArchiveDir, v: &VolumeRow) -> Result<Option<Held>> {
    let Some(path) = local_file(dir, v) else {
        return Ok(None);
    };
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(Held { path, file }))
}

/// A whole copy of `v` already in the cache (no transfer), opened and
/// held, if there is one of the catalog's length.
pub fn in_cache(dir: &ArchiveDir, v: &VolumeRow) -> Result<Option<Held>> {
    let cache = dir.cache();
    if !cache.is_dir() {
        return Ok(None);
    }
    let _g = dir_lock(&cache)?;
    open_entry(&cache.join(&v.name), v.len)
}

/// Open and share-lock the entry at `path` if it has `len` bytes; the
/// caller holds the cache lock (so no eviction runs in between).
fn open_entry(path: &Path, len: u64) -> Result<Option<Held>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    if file.metadata()?.len() != len {
        return Ok(None);
    }
    file.lock_shared()
        .with_context(|| format!("locking {}", path.display()))?;
    touch(path);
    Ok(Some(Held {
        path: path.to_path_buf(),
        file,
    }))
}

/// A temporary file in the cache, locked by this process for its whole
/// life and removed when dropped (unless [`Temp::persist`]ed).
pub struct Temp {
    path: PathBuf,
    lock: Option<File>,
}

impl Temp {
    fn new(cache: &Path, what: &str) -> Result<Temp> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = cache.join(format!(
            ".tmp-{}-{}-{what}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = locked(&path, File::options().write(true).create_new(true))?;
        Ok(Temp {
            path,
            lock: Some(f),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rename to `to` and release the lock (a lock is per open file: this
    /// process's own shared lock on `to` would wait for it). The caller
    /// holds the cache lock, so nobody evicts `to` before it is opened.
    fn persist(mut self, to: &Path) -> Result<()> {
        std::fs::rename(&self.path, to)
            .with_context(|| format!("renaming into {}", to.display()))?;
        self.lock = None;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a ranged read gave.
pub enum Ranged {
    /// A temporary file under the cache holding exactly the bytes asked
    /// for; removed when dropped.
    Fetched(Temp),
    /// The destination cannot read a range (contract 0.1.0 plugin, TFTP,
    /// a server that ignores `Range`): the plugin's words.
    Unsupported(String),
}

/// Ranged reads of one job's volumes from one destination, through one
/// plugin session. Each range, while it exists, counts against the cache
/// bound like a cached volume.
pub struct Ranges<'a> {
    dir: &'a ArchiveDir,
    dest: &'a str,
    limit: u64,
    session: DestinationSession,
}

impl<'a> Ranges<'a> {
    pub async fn open(
        rt: &Runtime,
        dir: &'a ArchiveDir,
        dest: &'a str,
        limit: u64,
    ) -> Result<Ranges<'a>> {
        let session = crate::ship::open_named(rt, dest, &dir.job).await?;
        Ok(Ranges {
            dir,
            dest,
            limit,
            session,
        })
    }

    /// Fetch bytes `offset .. offset + len` of volume `v`. Errors name the
    /// volume, the range and the destination.
    pub async fn fetch(&mut self, v: &VolumeRow, offset: u64, len: u64) -> Result<Ranged> {
        let cache = cache_dir(self.dir)?;
        make_room(&cache, len, self.limit)?;
        let part = Temp::new(&cache, &format!("range-{}", v.name))?;
        match self
            .session
            .fetch_range(&v.name, &self.dir.job, offset, len, part.path())
            .await
        {
            Ok(_) => Ok(Ranged::Fetched(part)),
            Err(e) if e.kind == ErrorKind::Unsupported => Ok(Ranged::Unsupported(e.message)),
            Err(e) => Err(anyhow::anyhow!(
                "cannot fetch bytes {offset}..{} of {} from {}: {e}",
                offset + len,
                v.name,
                self.dest
            )),
        }
    }
}

/// A cached copy of `v` fetched from `dest`, fetching it if needed; opened
/// and held. `limit` bounds the cache's total bytes (a single volume
/// larger than the limit is still fetched, alone).
pub async fn cached(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    v: &VolumeRow,
    limit: u64,
) -> Result<Held> {
    if let Some(h) = in_cache(dir, v)? {
        return Ok(h);
    }
    let cache = cache_dir(dir)?;
    make_room(&cache, v.len, limit)?;
    let part = Temp::new(&cache, &v.name)?;
    let mut s = crate::ship::open_named(rt, dest, &dir.job).await?;
    let n = s
        .fetch(&v.name, &dir.job, part.path())
        .await
        .map_err(|e| anyhow::anyhow!("cannot fetch {} from {dest}: {e}", v.name))?;
    if n != v.len {
        anyhow::bail!(
            "{} from {dest} is {n} bytes; the catalog says {}",
            v.name,
            v.len
        );
    }
    if let Some(want) = &v.sha256 {
        let got = crate::pipeline::sha256_file(part.path())?;
        if &got != want {
            anyhow::bail!(
                "{} from {dest} has sha256 {got}; the catalog says {want}: that copy is damaged",
                v.name
            );
        }
    }
    let path = cache.join(&v.name);
    let _g = dir_lock(&cache)?;
    part.persist(&path)?;
    open_entry(&path, v.len)?.with_context(|| format!("{} vanished", path.display()))
}

/// The job's cache folder, made if missing.
fn cache_dir(dir: &ArchiveDir) -> Result<PathBuf> {
    let cache = dir.cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    Ok(cache)
}

/// The cache folder's lock, held exclusively until dropped.
fn dir_lock(cache: &Path) -> Result<File> {
    let p = cache.with_file_name(LOCK);
    locked(&p, File::options().create(true).truncate(false).write(true))
}

/// `p` opened with `how` and locked exclusively (waiting for the lock).
fn locked(p: &Path, how: &std::fs::OpenOptions) -> Result<File> {
    let f = how
        .open(p)
        .with_context(|| format!("opening {}", p.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", p.display()))?;
    Ok(f)
}

fn touch(p: &Path) {
    if let Ok(f) = File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Remove the least recently used files nobody holds (complete entries no
/// reader has locked; temporary files whose process is gone) until `need`
/// more bytes fit under `limit`.
fn make_room(cache: &Path, need: u64, limit: u64) -> Result<()> {
    let _g = dir_lock(cache)?;
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
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                total -= len;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", p.display())),
        };
        match f.try_lock() {
            Ok(()) => {
                std::fs::remove_file(&p).with_context(|| format!("evicting {}", p.display()))?;
                total -= len;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::debug!("{} is in use: not evicted", p.display());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", p.display()));
            }
        }
    }
    Ok(())
}

/// The cache bound for a job: two volumes.
pub fn cache_limit(volume_size: u64) -> u64 {
    volume_size.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &Path, name: &str, len: usize) -> PathBuf {
        let p = cache.join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        p
    }

    #[test]
    fn eviction_spares_what_another_holder_uses_and_clears_debris() {
        let t = tempfile::tempdir().unwrap();
        let cache = &t.path().join("cache");
        std::fs::create_dir(cache).unwrap();
        let held = entry(cache, "a.vol", 100);
        let free = entry(cache, "b.vol", 100);
        // Debris of a dead process: nobody holds its lock.
        let debris = entry(cache, ".tmp-1-0-c.vol", 100);
        let reader = open_entry(&held, 100).unwrap().unwrap();
        let writer = Temp::new(cache, "d.vol").unwrap();
        std::fs::write(writer.path(), vec![1u8; 100]).unwrap();
        // Everything would have to go to fit 400 more under 400.
        make_room(cache, 400, 400).unwrap();
        assert!(held.exists(), "an entry a reader holds stays");
        assert!(writer.path().exists(), "a fetch in progress stays");
        assert!(!free.exists(), "an unused entry goes");
        assert!(!debris.exists(), "a dead process's temporary file goes");
        drop(reader);
        make_room(cache, 400, 400).unwrap();
        assert!(!held.exists(), "released, it may go");
        let w = writer.path().to_path_buf();
        drop(writer);
        assert!(!w.exists(), "a temporary file is removed when dropped");
        // A finished fetch becomes an entry this process then reads.
        let t = Temp::new(cache, "e.vol").unwrap();
        std::fs::write(t.path(), vec![2u8; 10]).unwrap();
        let e = cache.join("e.vol");
        let _g = dir_lock(cache).unwrap();
        t.persist(&e).unwrap();
        assert!(open_entry(&e, 10).unwrap().is_some());
    }
}
