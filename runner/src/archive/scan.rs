//! One run's walk of the trees: every regular file whose (size, mtime ns,
//! ctime ns, inode) differs from its live catalog entry is appended to the
//! open volume; unchanged files are not opened. Live entries whose file is
//! gone are marked gone (never replayed as deletions). Memory stays flat:
//! a directory's entries at a time, the catalog on disk.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::catalog::{Catalog, FileStat, Member, VolumeRow};
use super::volume::{TarMeta, VolumeWriter, tar_header};
use super::{ArchiveDir, seal};
use crate::config::ArchiveSpec;

/// Commit the catalog (after an fsync of the volume) at least this often,
/// so a crash loses at most this much work.
const COMMIT_EVERY_MEMBERS: u64 = 2000;
const COMMIT_EVERY_BYTES: u64 = 256 << 20;

/// What a run's scan did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScanStats {
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub gone: u64,
    /// Content bytes read and appended.
    pub bytes: u64,
    /// Files that changed while read (archived again next run).
    pub torn: u64,
    /// Volumes sealed by this run.
    pub sealed: Vec<String>,
    /// Files that could not be read (each named once).
    pub warnings: Vec<String>,
}

/// The open volume being appended to in this run.
pub struct Archiver<'a> {
    dir: &'a ArchiveDir,
    cat: &'a Catalog,
    spec: &'a ArchiveSpec,
    level: i32,
    /// `archived_at` of everything this run appends (Unix ns).
    now: i64,
    dests: &'a [String],
    vol: VolumeRow,
    w: Option<VolumeWriter>,
    pub stats: ScanStats,
    pending_members: u64,
    pending_bytes: u64,
}

impl<'a> Archiver<'a> {
    /// Finish what a crashed run left, open (or start) the open volume and
    /// begin the run's first catalog transaction.
    pub fn start(
        dir: &'a ArchiveDir,
        cat: &'a Catalog,
        spec: &'a ArchiveSpec,
        level: i32,
        now: i64,
        dests: &'a [String],
    ) -> Result<Archiver<'a>> {
        std::fs::create_dir_all(dir.volumes())
            .with_context(|| format!("creating {}", dir.volumes().display()))?;
        cat.begin()?;
        seal::recover(dir, cat, dests)?;
        let vol = match cat.open_volume()? {
            Some(v) => v,
            None => cat.new_volume(|s| dir.volume_name(s), now)?,
        };
        let w = VolumeWriter::open(&dir.open_path(&vol.name), vol.len, level)
            .map_err(|e| crate::disk::explain(e.into(), &dir.open_path(&vol.name)))?;
        Ok(Archiver {
            dir,
            cat,
            spec,
            level,
            now,
            dests,
            vol,
            w: Some(w),
            stats: ScanStats::default(),
            pending_members: 0,
            pending_bytes: 0,
        })
    }

    /// Walk every root. A root that is missing or empty fails the run
    /// unless `allow_empty` (an unmounted disk must not look like a tree
    /// whose files were all deleted).
    pub fn scan(&mut self, roots: &[PathBuf], allow_empty: bool) -> Result<()> {
        for root in roots {
            let empty = std::fs::read_dir(root).map(|mut d| d.next().is_none());
            match empty {
                Ok(false) => {}
                Ok(true) | Err(_) if allow_empty => {
                    tracing::warn!(
                        "{} is missing or empty; archived as it is (allow_empty)",
                        root.display()
                    );
                }
                Ok(true) => anyhow::bail!(
                    "{} is empty: refusing to record every file under it as gone (an unmounted disk?); set allow_empty = true if that is expected",
                    root.display()
                ),
                Err(e) => anyhow::bail!("{}: {e}; a tree to archive must exist", root.display()),
            }
            self.walk(root)?;
        }
        Ok(())
    }

    fn walk(&mut self, root: &Path) -> Result<()> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.warn(format!(
                        "cannot read directory {}: {e}; its files count as unchanged",
                        d.display()
                    ));
                    self.keep_under(&d)?;
                    continue;
                }
            };
            let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
            names.sort();
            let mut subdirs = vec![];
            for n in names {
                let p = d.join(&n);
                let Ok(meta) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if meta.is_dir() {
                    subdirs.push(p);
                } else if meta.is_file() {
                    self.visit(&p, &meta)?;
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// A directory that could not be read: its live files stay live.
    fn keep_under(&mut self, d: &Path) -> Result<()> {
        let mut prefix = d.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        self.cat.keep_live_under(&prefix)
    }

    fn warn(&mut self, w: String) {
        tracing::warn!("job {}: {w}", self.dir.job);
        if self.stats.warnings.len() < 100 {
            self.stats.warnings.push(w);
        }
    }

    fn visit(&mut self, path: &Path, meta: &Metadata) -> Result<()> {
        let bytes = path.as_os_str().as_bytes();
        let stat = stat_of(meta);
        let live = self.cat.live(bytes)?;
        if let Some((_, pid, old)) = &live
            && same(old, &stat)
        {
            self.stats.unchanged += 1;
            return self.cat.mark_seen(*pid);
        }
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.warn(format!("cannot read {}: {e}", path.display()));
                if let Some((_, pid, _)) = live {
                    self.cat.mark_seen(pid)?;
                }
                return Ok(());
            }
        };
        let header = tar_header(
            bytes,
            &TarMeta {
                size: stat.size,
                mode: stat.mode,
                uid: stat.uid,
                gid: stat.gid,
                mtime_secs: stat.mtime_ns.div_euclid(1_000_000_000),
            },
        )?;
        let w = self.w.as_mut().expect("open while scanning");
        let a = w
            .append(&header, &mut file, stat.size)
            .map_err(|e| crate::disk::explain(e.into(), &self.dir.open_path(&self.vol.name)))?;
        // A file rewritten while read: what was read is kept as a torn
        // version (never chosen by cat/restore) and read again next run.
        let after = file.metadata().map(|m| stat_of(&m)).unwrap_or_default();
        let torn = a.torn || !same(&after, &stat);
        let m = Member {
            path: bytes.to_vec(),
            volume: self.vol.name.clone(),
            offset: a.offset,
            clen: a.clen,
            header_len: a.header_len,
            stat,
            sha256: a.sha256,
            archived_at: self.now,
            gone_at: torn.then_some(self.now),
            torn,
        };
        let pid = self.cat.path_id(bytes)?;
        if let Some((old, _, _)) = live {
            self.cat.mark_gone(old, self.now, self.vol.id)?;
            self.stats.changed += 1;
        } else {
            self.stats.new += 1;
        }
        if torn {
            self.stats.torn += 1;
            self.warn(format!(
                "{} changed while it was read; archived again next run",
                path.display()
            ));
        }
        self.cat.add_member(self.vol.id, pid, &m, &a.frames)?;
        self.cat.mark_seen(pid)?;
        self.stats.bytes += stat.size;
        self.pending_members += 1;
        self.pending_bytes += a.clen;
        self.after_append()
    }

    fn after_append(&mut self) -> Result<()> {
        let len = self.w.as_ref().map_or(0, VolumeWriter::len);
        if len >= self.spec.volume_size {
            self.seal_and_next()?;
        } else if self.pending_members >= COMMIT_EVERY_MEMBERS
            || self.pending_bytes >= COMMIT_EVERY_BYTES
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// fsync the volume, then record its length and commit the catalog.
    fn checkpoint(&mut self) -> Result<()> {
        let w = self.w.as_mut().expect("open");
        w.sync()
            .map_err(|e| crate::disk::explain(e.into(), &self.dir.open_path(&self.vol.name)))?;
        self.cat.set_len(self.vol.id, w.len())?;
        self.cat.commit()?;
        self.cat.begin()?;
        self.pending_members = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    fn seal_and_next(&mut self) -> Result<()> {
        let w = self.w.take().expect("open");
        let name = seal::seal(self.dir, self.cat, &self.vol, w, self.now, self.dests)?;
        self.stats.sealed.push(name);
        self.cat.commit()?;
        self.cat.begin()?;
        self.vol = self.cat.new_volume(|s| self.dir.volume_name(s), self.now)?;
        self.w = Some(VolumeWriter::open(
            &self.dir.open_path(&self.vol.name),
            0,
            self.level,
        )?);
        self.pending_members = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Mark unseen files gone, seal the open volume if its oldest member
    /// waited `seal_after`, and commit.
    pub fn finish(mut self) -> Result<ScanStats> {
        self.stats.gone = self.cat.sweep_unseen(self.now, self.vol.id)? as u64;
        let (members, _, oldest, _) = self.cat.volume_span(self.vol.id)?;
        let (gone, oldest_gone) = self.cat.gone_span(self.vol.id)?;
        // Gone records alone also seal a volume in time, so that a rebuilt
        // catalog knows what left the source.
        let oldest = oldest.into_iter().chain(oldest_gone).min();
        let now = super::ns(chrono::Utc::now());
        let waited = oldest.is_some_and(|o| {
            now.saturating_sub(o) >= self.spec.seal_after.as_nanos().min(i64::MAX as u128) as i64
        });
        if members + gone > 0 && waited {
            let w = self.w.take().expect("open");
            let name = seal::seal(self.dir, self.cat, &self.vol, w, self.now, self.dests)?;
            self.stats.sealed.push(name);
        } else {
            self.checkpoint()?;
        }
        self.cat.commit()?;
        Ok(self.stats)
    }
}

fn same(a: &FileStat, b: &FileStat) -> bool {
    a.size == b.size
        && a.mtime_ns == b.mtime_ns
        && a.ctime_ns == b.ctime_ns
        && a.ino == b.ino
        && a.dev == b.dev
}

pub fn stat_of(m: &Metadata) -> FileStat {
    FileStat {
        size: m.len(),
        mtime_ns: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        ctime_ns: m
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
        ino: m.ino(),
        dev: m.dev(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
    }
}
