//! One run's walk of the trees: every regular file whose (size, mtime ns,
//! ctime ns, inode, device) differs from its live catalog entry is appended
//! to the open volume; unchanged files are not opened. Live entries whose
//! file is gone are marked gone (never replayed as deletions). Memory stays
//! flat: a directory's entries at a time, the catalog on disk.
//!
//! A directory whose files all have the stat they had when the last run
//! finished it (one digest, `catalog::dirs`) costs its `stat` calls and two
//! catalog statements, not one catalog read per file: a run's catalog reads
//! grow with the directories that changed, not with the tree.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::catalog::{Catalog, FileStat, LiveCursor, LiveFile, Member, VolumeRow};
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
    /// Directories whose files all matched their digest (no catalog read
    /// per file) and directories compared file by file.
    pub dirs_skipped: u64,
    pub dirs_compared: u64,
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
    /// The racy windows (fine, coarse) in ns; see [`racy`].
    racy_ns: (i64, i64),
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
            racy_ns: (RACY_FINE_NS, RACY_COARSE_NS),
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
            let read = std::fs::read_dir(&d);
            let Ok(rd) =
                self.readable(read, &d, "read directory", "its files count as unchanged")?
            else {
                continue;
            };
            let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
            names.sort();
            let mut subdirs = vec![];
            let mut files = vec![];
            for n in names {
                let p = d.join(&n);
                // A file or a directory that is there but cannot be looked
                // at (a directory without search permission): what the
                // catalog has of it stays live.
                let meta = match self.readable(
                    std::fs::symlink_metadata(&p),
                    &p,
                    "stat",
                    "what it held counts as unchanged",
                )? {
                    Ok(meta) => meta,
                    Err(Missing::Vanished) => continue,
                    Err(Missing::Unreadable) => {
                        files.push((n, None));
                        continue;
                    }
                };
                if meta.is_dir() {
                    subdirs.push(p);
                } else if meta.is_file() {
                    files.push((n, Some(stat_of(&meta))));
                }
            }
            self.directory(&d, files)?;
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// One directory's regular files (sorted by name, with their stat):
    /// skipped whole when its digest is the one stored, else compared file
    /// by file with its live members; live members without a file are
    /// marked gone. A file without a stat (`None`: it could not be looked
    /// at) keeps its live member; the directory then gets no digest.
    fn directory(&mut self, d: &Path, files: Vec<(OsString, Option<FileStat>)>) -> Result<()> {
        let row = self.cat.dir(dir_key(d))?;
        let digest = digest_of(&files);
        let mut clean = files.iter().all(|(_, s)| s.is_some());
        if clean && row.digest.as_deref() == Some(&digest[..]) {
            self.stats.unchanged += files.len() as u64;
            self.stats.dirs_skipped += 1;
            return self.cat.dir_seen(row.id, self.now, Some(&digest));
        }
        self.stats.dirs_compared += 1;
        let mut live = LiveCursor::new(self.cat, row.id);
        let mut left = vec![];
        for (name, stat) in files {
            let old = live.take(name.as_bytes(), &mut left)?;
            self.gone(&mut left)?;
            let Some(stat) = stat else {
                continue;
            };
            let path = d.join(&name);
            if let Some(o) = &old
                && same(&o.stat, &stat)
            {
                if !o.recheck {
                    self.stats.unchanged += 1;
                    continue;
                }
                match self.recheck(&path, o, &stat)? {
                    Recheck::Same { racy } => {
                        clean &= !racy;
                        self.stats.unchanged += 1;
                        continue;
                    }
                    Recheck::Differs => {}
                }
            }
            match self.visit(&path, row.id, stat, old.as_ref())? {
                Visit::Archived => {}
                Visit::Kept => clean = false,
                Visit::Vanished => {
                    clean = false;
                    left.extend(old);
                    self.gone(&mut left)?;
                }
            }
        }
        live.rest(&mut left)?;
        self.gone(&mut left)?;
        self.cat
            .dir_seen(row.id, self.now, clean.then_some(&digest[..]))
    }

    /// `r`, a read of `p`: its value; or gone since it was listed; or
    /// there but unreadable: then warned (ending with `then`, what counts
    /// as unchanged) and what the catalog has under `p` stays live,
    /// digests as they were.
    fn readable<T>(
        &mut self,
        r: std::io::Result<T>,
        p: &Path,
        verb: &str,
        then: &str,
    ) -> Result<Result<T, Missing>> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Err(Missing::Vanished)),
            Err(e) => {
                self.warn(format!("cannot {verb} {}: {e}; {then}", p.display()));
                self.cat.keep_dirs_under(dir_key(p), self.now)?;
                Ok(Err(Missing::Unreadable))
            }
        }
    }

    /// Live members whose file is no longer in its directory.
    fn gone(&mut self, left: &mut Vec<LiveFile>) -> Result<()> {
        for o in left.drain(..) {
            self.cat.mark_gone(o.member, self.now, self.vol.id)?;
            self.stats.gone += 1;
        }
        Ok(())
    }

    fn warn(&mut self, w: String) {
        tracing::warn!("job {}: {w}", self.dir.job);
        if self.stats.warnings.len() < 100 {
            self.stats.warnings.push(w);
        }
    }

    /// Append `path` (new, or changed since its live member `old`) to the
    /// open volume.
    fn visit(
        &mut self,
        path: &Path,
        dir_id: i64,
        stat: FileStat,
        old: Option<&LiveFile>,
    ) -> Result<Visit> {
        let bytes = path.as_os_str().as_bytes();
        // A write after this instant in the tick of the file's stamp goes
        // unseen by the stat, however long the read takes.
        let started = super::ns(chrono::Utc::now());
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Visit::Vanished),
            Err(e) => {
                // Its live member (if any) stays live; read again next run.
                self.warn(format!("cannot read {}: {e}", path.display()));
                return Ok(Visit::Kept);
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
        let pid = match old {
            Some(o) => o.path_id,
            None => self.cat.path_id_in(bytes, dir_id)?,
        };
        if let Some(o) = old {
            self.cat.mark_gone(o.member, self.now, self.vol.id)?;
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
        let id = self.cat.add_member(self.vol.id, pid, &m, &a.frames)?;
        let racy = !torn && racy(&stat, self.racy_ns, started);
        if racy {
            self.cat.set_recheck(id, true)?;
        }
        self.stats.bytes += m.stat.size;
        self.pending_members += 1;
        self.pending_bytes += a.clen;
        self.after_append()?;
        Ok(if torn || racy {
            Visit::Kept
        } else {
            Visit::Archived
        })
    }

    /// `path` has the stat of its live member `old`, but `old` was read
    /// within the timestamp granularity of its last change: a write in the
    /// same clock tick would have left the stat as it was. Compare the
    /// content (one read, nothing appended when it is the same).
    fn recheck(&mut self, path: &Path, old: &LiveFile, stat: &FileStat) -> Result<Recheck> {
        let started = super::ns(chrono::Utc::now());
        let sha = match std::fs::File::open(path).and_then(|mut f| {
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h)?;
            Ok((h.finalize(), stat_of(&f.metadata()?)))
        }) {
            Ok((sha, after)) if same(&after, stat) => sha,
            _ => return Ok(Recheck::Differs),
        };
        if hex::encode(sha) != old.sha256 {
            return Ok(Recheck::Differs);
        }
        let racy = racy(stat, self.racy_ns, started);
        if !racy {
            self.cat.set_recheck(old.member, false)?;
        }
        Ok(Recheck::Same { racy })
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
        self.stats.gone += self.cat.sweep_unseen(self.now, self.vol.id)? as u64;
        let first = self.cat.first_archived_at(self.vol.id)?;
        let oldest_gone = self.cat.oldest_gone(self.vol.id)?;
        // Gone records alone also seal a volume in time, so that a rebuilt
        // catalog knows what left the source.
        let oldest = first.into_iter().chain(oldest_gone).min();
        let now = super::ns(chrono::Utc::now());
        let waited = oldest.is_some_and(|o| {
            now.saturating_sub(o) >= self.spec.seal_after.as_nanos().min(i64::MAX as u128) as i64
        });
        if waited {
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

/// What [`Archiver::visit`] did with a file.
enum Visit {
    /// Appended; its member is live with the stat the digest has.
    Archived,
    /// Not read (a warning) or changed while read: compare it again next
    /// run (the directory gets no digest).
    Kept,
    /// Gone between the listing and the open.
    Vanished,
}

/// Why [`Archiver::readable`] gave no value.
enum Missing {
    Vanished,
    Unreadable,
}

/// What [`Archiver::recheck`] found.
enum Recheck {
    /// The content is the archived one; `racy`: still within the
    /// granularity window (compare again next run).
    Same { racy: bool },
    /// Read it as a changed file.
    Differs,
}

/// How close to "now" a change must be for a read to be racy: the kernel
/// stamps files from a coarse clock (one tick, at most 10 ms at HZ=100),
/// so a write in the same tick as the read leaves size, mtime and ctime as
/// they were (borg #3536, git's "racy clean"). A filesystem without
/// sub-second stamps (ctime's nanoseconds 0) gets 2 s (FAT stamps by
/// 2 s).
const RACY_FINE_NS: i64 = 20_000_000;
const RACY_COARSE_NS: i64 = 2_000_000_000;

/// Whether a file with `stat`, whose read began at `started` (Unix ns),
/// changed within the window (`(fine, coarse)` ns) in which another change
/// could keep the same stat. Measured from the start of the read, not its
/// end: a long read (a large file) must not push a change that the stamp
/// hides out of the window. By ctime, which the kernel stamps on every
/// change: an mtime set into the future (`touch -d`, an unpacked archive)
/// says nothing of when the file last changed and would make it racy
/// forever (read again every run).
fn racy(stat: &FileStat, (fine, coarse): (i64, i64), started: i64) -> bool {
    let whole_seconds = stat.ctime_ns % 1_000_000_000 == 0;
    let window = if whole_seconds { coarse } else { fine };
    stat.ctime_ns > started.saturating_sub(window)
}

/// The key of directory `d` in the scan state: its path bytes without a
/// trailing `/` (so that a root written `/srv/rec/` and the parent of
/// `/srv/rec/a.wav` are one directory).
fn dir_key(d: &Path) -> &[u8] {
    let b = d.as_os_str().as_bytes();
    let t = b.len() - b.iter().rev().take_while(|c| **c == b'/').count();
    if t == 0 && !b.is_empty() {
        b"/"
    } else {
        &b[..t]
    }
}

/// SHA-256 over each file's name and stat, in the (sorted) order given.
fn digest_of(files: &[(OsString, Option<FileStat>)]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (name, s) in files {
        let Some(s) = s else { continue };
        let n = name.as_bytes();
        h.update((n.len() as u64).to_le_bytes());
        h.update(n);
        for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().into()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec() -> ArchiveSpec {
        ArchiveSpec {
            volume_size: 64 << 20,
            seal_after: Duration::from_secs(3600),
            archive_keep: None,
            archive_lag: Duration::from_secs(7200),
        }
    }

    /// A scratch folder (kept until dropped), its tree root and job `rec`.
    fn scratch() -> (tempfile::TempDir, PathBuf, ArchiveDir) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("tree");
        let dir = ArchiveDir::new(&t.path().join("backups"), "rec");
        (t, root, dir)
    }

    /// Write a file, then wait out the racy window.
    fn put(p: &Path, body: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        std::thread::sleep(Duration::from_nanos(2 * RACY_FINE_NS as u64));
    }

    /// One run over `root`; its stats.
    fn run(dir: &ArchiveDir, root: &Path, now: i64) -> ScanStats {
        run_racy(dir, root, now, (RACY_FINE_NS, RACY_COARSE_NS))
    }

    fn run_racy(dir: &ArchiveDir, root: &Path, now: i64, racy_ns: (i64, i64)) -> ScanStats {
        let cat = Catalog::open(&dir.catalog()).unwrap();
        let spec = spec();
        let mut a = Archiver::start(dir, &cat, &spec, 1, now, &[]).unwrap();
        a.racy_ns = racy_ns;
        a.scan(&[root.to_path_buf()], false).unwrap();
        a.finish().unwrap()
    }

    /// Paths with a live member, sorted.
    fn live(dir: &ArchiveDir) -> Vec<String> {
        let c = rusqlite::Connection::open(dir.catalog()).unwrap();
        let mut st = c
            .prepare(
                "SELECT p.path FROM paths p JOIN members m ON m.path_id = p.id
                 WHERE m.gone_at IS NULL ORDER BY p.path",
            )
            .unwrap();
        st.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|p| String::from_utf8(p.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn unchanged_directories_are_skipped_and_every_kind_of_change_is_still_seen() {
        let (_t, root, dir) = scratch();
        for (p, b) in [
            ("a/1.wav", "one"),
            ("a/2.wav", "two"),
            ("a/3.wav", "three"),
            ("b/4.wav", "four"),
            ("b/5.wav", "five"),
            ("b/c/6.wav", "six"),
        ] {
            put(&root.join(p), b.as_bytes());
        }
        let s = run(&dir, &root, 1);
        assert_eq!((s.new, s.unchanged, s.dirs_compared), (6, 0, 4));
        let s = run(&dir, &root, 2);
        assert_eq!((s.new, s.changed, s.unchanged, s.gone), (0, 0, 6, 0));
        assert_eq!((s.dirs_skipped, s.dirs_compared), (4, 0));

        // Same size, mtime put back: only the ctime tells.
        let one = root.join("a/1.wav");
        let mtime = std::fs::metadata(&one).unwrap().modified().unwrap();
        std::fs::write(&one, b"ONE").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&one)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::thread::sleep(Duration::from_nanos(2 * RACY_FINE_NS as u64));
        // A file replaced by a rename (same name and size, other inode).
        put(&root.join("b/tmp"), b"FOUR");
        std::fs::rename(root.join("b/tmp"), root.join("b/4.wav")).unwrap();
        std::fs::remove_file(root.join("b/5.wav")).unwrap();
        std::fs::remove_dir_all(root.join("b/c")).unwrap();
        put(&root.join("d/7.wav"), b"seven");
        let s = run(&dir, &root, 3);
        assert_eq!((s.new, s.changed, s.unchanged, s.gone), (1, 2, 2, 2));
        assert_eq!((s.dirs_skipped, s.dirs_compared), (1, 3), "root skipped");
        let root_s = root.display().to_string();
        let want: Vec<String> = ["a/1.wav", "a/2.wav", "a/3.wav", "b/4.wav", "d/7.wav"]
            .iter()
            .map(|p| format!("{root_s}/{p}"))
            .collect();
        assert_eq!(live(&dir), want);

        let s = run(&dir, &root, 4);
        assert_eq!((s.new, s.changed, s.unchanged, s.gone), (0, 0, 5, 0));
        assert_eq!(s.dirs_compared, 0);

        // A directory that comes back is compared file by file again.
        put(&root.join("b/c/6.wav"), b"six again");
        let s = run(&dir, &root, 5);
        assert_eq!((s.new, s.unchanged), (1, 5));

        // A catalog of layout 1 (no scan state) is upgraded: nothing is
        // archived again, every directory is compared once.
        {
            let c = rusqlite::Connection::open(dir.catalog()).unwrap();
            c.execute_batch(
                "UPDATE paths SET dir_id = NULL; DELETE FROM dirs; DROP INDEX paths_dir;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let s = run(&dir, &root, 6);
        assert_eq!((s.new, s.changed, s.unchanged, s.gone), (0, 0, 6, 0));
        assert_eq!(s.dirs_compared, 5);
        let s = run(&dir, &root, 7);
        assert_eq!((s.unchanged, s.dirs_skipped, s.dirs_compared), (6, 5, 0));
    }

    /// A write in the same clock tick as the read leaves the stat as it
    /// was (borg #3536). Simulated: the file is read inside the racy
    /// window, then rewritten, and the catalog is given the new stat as if
    /// the kernel had not moved the stamps. The content comparison finds
    /// the write; outside the window nothing is read twice.
    #[test]
    fn a_file_read_within_the_timestamp_tick_is_compared_by_content_next_run() {
        let (_t, root, dir) = scratch();
        put(&root.join("a/1.wav"), b"first take");
        put(&root.join("a/2.wav"), b"kept as is");
        let hour = 3_600_000_000_000;
        let s = run_racy(&dir, &root, 1, (hour, hour));
        assert_eq!(s.new, 2);
        std::fs::write(root.join("a/1.wav"), b"other take").unwrap();
        let st = stat_of(&std::fs::symlink_metadata(root.join("a/1.wav")).unwrap());
        {
            let c = rusqlite::Connection::open(dir.catalog()).unwrap();
            let n = c
                .execute(
                    "UPDATE members SET mtime_ns = ?1, ctime_ns = ?2, ino = ?3
                     WHERE path_id = (SELECT id FROM paths WHERE name = CAST('1.wav' AS BLOB))",
                    rusqlite::params![st.mtime_ns, st.ctime_ns, st.ino as i64],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        // Still inside the window: compared by content, the rewrite found;
        // 2.wav is the same content and stays one version.
        let s = run_racy(&dir, &root, 2, (hour, hour));
        assert_eq!((s.new, s.changed, s.unchanged), (0, 1, 1));
        assert_eq!(s.dirs_compared, 1, "a racy directory gets no digest");
        // Past the window: nothing is read, every directory is skipped
        // from the run after the last racy read on.
        std::thread::sleep(Duration::from_nanos(2 * RACY_FINE_NS as u64));
        let s = run(&dir, &root, 3);
        assert_eq!((s.changed, s.unchanged, s.bytes), (0, 2, 0));
        let s = run(&dir, &root, 4);
        assert_eq!((s.unchanged, s.dirs_compared, s.dirs_skipped), (2, 0, 2));
    }

    /// A directory larger than one batch of live members: deletions,
    /// rewrites and new names interleaved across the batch boundaries.
    #[test]
    fn a_large_directory_is_merged_with_its_live_members_batch_by_batch() {
        let (_t, root, dir) = scratch();
        std::fs::create_dir_all(&root).unwrap();
        let n = 9000;
        for i in 0..n {
            std::fs::write(root.join(format!("c{i:05}")), i.to_string()).unwrap();
        }
        put(&root.join("zz-last"), b"z");
        assert_eq!(run(&dir, &root, 1).new, n + 1);
        let (mut gone, mut changed, mut new) = (0, 0, 0);
        for i in 0..n {
            let p = root.join(format!("c{i:05}"));
            if i % 3 == 0 {
                std::fs::remove_file(&p).unwrap();
                gone += 1;
            } else if i % 7 == 0 {
                std::fs::write(&p, format!("{i} again")).unwrap();
                changed += 1;
            }
            if i % 500 == 0 {
                std::fs::write(root.join(format!("c{i:05}-new")), "new").unwrap();
                new += 1;
            }
        }
        std::thread::sleep(Duration::from_nanos(2 * RACY_FINE_NS as u64));
        let s = run(&dir, &root, 2);
        assert_eq!((s.new, s.changed, s.gone), (new, changed, gone));
        assert_eq!(s.unchanged, n + 1 - gone - changed);
        assert_eq!(live(&dir).len() as u64, n + 1 - gone + new);
        let s = run(&dir, &root, 3);
        assert_eq!((s.new, s.changed, s.gone, s.dirs_skipped), (0, 0, 0, 1));
    }

    /// Drops (`false`) or raises again (`true`) CAP_DAC_OVERRIDE and
    /// CAP_DAC_READ_SEARCH in this thread's effective set (capset is per
    /// thread), so that a test running as root meets permissions as the
    /// operator's unprivileged runner does.
    fn dac_caps(on: bool) {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let h = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data structs.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &h, d.as_mut_ptr()), 0);
            let dac = (1 << 1) | (1 << 2);
            if on {
                d[0].effective |= d[0].permitted & dac;
            } else {
                d[0].effective &= !dac;
            }
            assert_eq!(libc::syscall(libc::SYS_capset, &h, d.as_ptr()), 0);
        }
    }

    /// A directory the runner can list but not search (mode r without x,
    /// or a file under it that cannot be stat'ed): its files and
    /// subdirectories are still at the source and must stay live, not be
    /// recorded as gone.
    #[test]
    fn an_entry_that_cannot_be_stated_keeps_its_live_members() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, root, dir) = scratch();
        put(&root.join("a/1.wav"), b"one");
        put(&root.join("a/sub/2.wav"), b"two");
        put(&root.join("b/3.wav"), b"three");
        assert_eq!(run(&dir, &root, 1).new, 3);
        let all = live(&dir);
        let a = root.join("a");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        dac_caps(false);
        let cat = Catalog::open(&dir.catalog()).unwrap();
        let spec = spec();
        let mut ar = Archiver::start(&dir, &cat, &spec, 1, 2, &[]).unwrap();
        ar.scan(std::slice::from_ref(&root), false).unwrap();
        let s = ar.finish();
        dac_caps(true);
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = s.unwrap();
        assert_eq!(s.gone, 0, "{s:?}");
        assert!(!s.warnings.is_empty(), "{s:?}");
        assert_eq!(live(&dir), all);
        // Searchable again: nothing to archive, nothing gone.
        let s = run(&dir, &root, 3);
        assert_eq!((s.new, s.changed, s.gone, s.unchanged), (0, 0, 0, 3));
        assert_eq!(live(&dir), all);
    }

    /// A file stamped 5 ms before its read began is racy however long the
    /// read lasted (a same-tick write during a 1 s read of a large file
    /// leaves the stat as it was).
    #[test]
    fn the_racy_window_is_measured_from_the_start_of_the_read() {
        let ms = 1_000_000;
        let t0 = 1_700_000_000_123 * ms;
        let stat = FileStat {
            mtime_ns: t0,
            ctime_ns: t0,
            ..FileStat::default()
        };
        let w = (RACY_FINE_NS, RACY_COARSE_NS);
        assert!(racy(&stat, w, t0 + 5 * ms));
        assert!(!racy(&stat, w, t0 + 25 * ms));
        // Whole-second stamps: the coarse window.
        let coarse = FileStat {
            mtime_ns: 1_700_000_000 * 1000 * ms,
            ctime_ns: 1_700_000_000 * 1000 * ms,
            ..FileStat::default()
        };
        assert!(racy(&coarse, w, coarse.mtime_ns + 1500 * ms));
        assert!(!racy(&coarse, w, coarse.mtime_ns + 2500 * ms));
        // A file dated into the future but last changed long ago.
        let future = FileStat {
            mtime_ns: t0 + 86_400_000 * ms,
            ..stat
        };
        assert!(!racy(&future, w, t0 + 25 * ms));
    }

    /// Names whose byte order differs from their text or case order
    /// (non-UTF-8, bytes >= 0x80, case-only differences): the listing's
    /// order (OsString, bytes) and the catalog's (BLOB, memcmp) must agree
    /// or the merge records present files as gone.
    #[test]
    fn names_in_byte_order_merge_with_the_catalog() {
        use std::os::unix::ffi::OsStringExt;
        let (_t, root, dir) = scratch();
        let names: Vec<Vec<u8>> = vec![
            b"B".to_vec(),
            b"a".to_vec(),
            b"A".to_vec(),
            b"b".to_vec(),
            vec![0xff, b'x'],
            vec![0x80],
            "\u{e9}t\u{e9}".as_bytes().to_vec(),
            "e\u{301}".as_bytes().to_vec(),
            b"~".to_vec(),
            vec![b'z', 0xfe],
            b" space".to_vec(),
        ];
        for n in &names {
            put(&root.join(OsString::from_vec(n.clone())), n);
        }
        let s = run(&dir, &root, 1);
        assert_eq!(s.new, names.len() as u64);
        std::fs::remove_file(root.join(OsString::from_vec(vec![0x80]))).unwrap();
        put(&root.join("A"), b"A again");
        put(&root.join(OsString::from_vec(vec![0xc3, 0x28])), b"new");
        let s = run(&dir, &root, 2);
        let n = names.len() as u64;
        assert_eq!((s.new, s.changed, s.gone, s.unchanged), (1, 1, 1, n - 2));
        let s = run(&dir, &root, 3);
        assert_eq!((s.new, s.changed, s.gone, s.unchanged), (0, 0, 0, n));
        assert_eq!(s.dirs_skipped, 1);
    }

    /// A run killed after a mid-run commit (the rest of its transaction
    /// rolled back, the volume's tail past the committed length cut): no
    /// directory keeps a digest for members that were rolled back, so the
    /// next run archives every file the killed run did not commit, and
    /// each live member is the file's content.
    #[test]
    fn a_run_killed_after_a_commit_loses_no_file_next_run() {
        let (_t, root, dir) = scratch();
        let n = COMMIT_EVERY_MEMBERS + 300;
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for i in 0..n {
            let d = ["a", "b", "c"][(i * 3 / n) as usize];
            std::fs::write(root.join(d).join(format!("f{i:05}")), i.to_string()).unwrap();
        }
        std::thread::sleep(Duration::from_nanos(2 * RACY_FINE_NS as u64));
        {
            let cat = Catalog::open(&dir.catalog()).unwrap();
            let spec = spec();
            let mut a = Archiver::start(&dir, &cat, &spec, 1, 1, &[]).unwrap();
            a.scan(std::slice::from_ref(&root), false).unwrap();
            // Killed here: no finish, the open transaction is lost.
        }
        let committed = live(&dir).len() as u64;
        assert!(
            committed > 0 && committed < n,
            "{committed} of {n} committed"
        );
        let s = run(&dir, &root, 2);
        assert_eq!((s.new, s.unchanged, s.gone), (n - committed, committed, 0));
        assert_eq!(live(&dir).len() as u64, n);
        let c = rusqlite::Connection::open(dir.catalog()).unwrap();
        let mut st = c
            .prepare(
                "SELECT p.path, m.sha256 FROM paths p JOIN members m ON m.path_id = p.id
                 WHERE m.gone_at IS NULL",
            )
            .unwrap();
        let rows: Vec<(Vec<u8>, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (p, sha) in rows {
            let body = std::fs::read(std::ffi::OsStr::from_bytes(&p)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&body)), sha);
        }
        let s = run(&dir, &root, 3);
        assert_eq!((s.new, s.changed, s.gone, s.dirs_skipped), (0, 0, 0, 4));
    }

    #[test]
    fn a_root_with_a_trailing_slash_is_the_same_directory() {
        assert_eq!(dir_key(Path::new("/srv/rec/")), b"/srv/rec");
        assert_eq!(dir_key(Path::new("/srv/rec")), b"/srv/rec");
        assert_eq!(dir_key(Path::new("/")), b"/");
    }
}
