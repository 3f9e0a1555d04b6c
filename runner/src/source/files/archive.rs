//! The archive side of file trees: walking each tree in name order and
//! appending its members to the generation's tar stream (see the parent
//! module for what is kept).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use super::FILES_PREFIX;
use super::owners::NameCache;
use super::pax::PaxRecords;
use super::sparse;
use crate::exec::Cancel;

/// Appends file trees to `builder`, streaming file by file in constant
/// memory (plus one entry per multiply-linked file, to find its other
/// names). `exclude` (the job's own backup folder) is skipped wherever it
/// appears inside a tree: a backup of `/var` must not archive its own
/// temporary file while it grows.
pub(crate) fn append_trees<W: Write>(
    builder: &mut tar::Builder<W>,
    roots: &[PathBuf],
    exclude: &Path,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<FilesStats> {
    let mut walker = Walker {
        builder,
        exclude: fs::metadata(exclude).ok().map(|m| (m.dev(), m.ino())),
        cancel,
        warnings,
        names: NameCache::default(),
        links: HashMap::new(),
        stats: FilesStats::default(),
    };
    for root in roots {
        let root = std::path::absolute(root)?;
        // The configured root itself is followed if it is a symlink: the
        // user named it, and wants what it points to.
        let meta = root_metadata(&root)?;
        let before = walker.stats.entries();
        walker.entry(&root, meta)?;
        walker.stats.per_root.push(walker.stats.entries() - before);
    }
    Ok(walker.stats)
}

/// What a configured root is (followed if it is a symlink), or an error
/// naming the setting to fix.
pub(crate) fn root_metadata(root: &Path) -> anyhow::Result<fs::Metadata> {
    fs::metadata(root).with_context(|| {
        format!(
            "file tree {} cannot be read — fix `paths` in the job config",
            root.display()
        )
    })
}

/// Counts for the log line at the end and the manifest.
#[derive(Debug, Default, Clone)]
pub struct FilesStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Hard links to a file archived under another name.
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub special: u64,
    /// Apparent size of the regular files.
    pub bytes: u64,
    /// Bytes of data stored for them (holes of sparse files excluded).
    pub data_bytes: u64,
    /// Disk space a restore needs: data rounded up to 4 KiB blocks, and a
    /// block per directory.
    pub restore_bytes: u64,
    pub skipped: u64,
    /// Entries archived below each root, in the order of the roots.
    pub per_root: Vec<u64>,
}

impl FilesStats {
    /// Members written (every kind).
    pub fn entries(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.hardlinks + self.special
    }
}

const FS_BLOCK: u64 = 4096;

/// Largest read from a source file.
const READ_BUFFER: u64 = 1 << 20;

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    exclude: Option<(u64, u64)>,
    cancel: &'a Cancel,
    warnings: &'a mut Vec<String>,
    names: NameCache,
    /// (dev, inode) of files with more than one link → their member name.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: FilesStats,
}

impl<W: Write> Walker<'_, W> {
    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// Archive errors are fatal (the output is broken); source errors are
    /// warnings.
    fn entry(&mut self, path: &Path, meta: fs::Metadata) -> anyhow::Result<()> {
        self.cancel.check()?;
        let name = member_name(path);
        let ft = meta.file_type();
        if ft.is_dir() {
            if Some((meta.dev(), meta.ino())) == self.exclude {
                tracing::info!(path = %path.display(), "not archiving the backup folder itself");
                return Ok(());
            }
            let mut header = self.header(&meta, tar::EntryType::Directory);
            let pax = self.pax(path, &meta);
            self.append(&mut header, &pax, &name, None, io::empty())?;
            self.stats.dirs += 1;
            self.stats.restore_bytes += FS_BLOCK;
            let mut children = match fs::read_dir(path) {
                Ok(rd) => {
                    let mut v = Vec::new();
                    for e in rd {
                        match e {
                            Ok(e) => v.push(e.file_name()),
                            Err(e) => {
                                self.warn(format!(
                                    "{}: listing stopped early: {e}",
                                    path.display()
                                ));
                                break;
                            }
                        }
                    }
                    v
                }
                Err(e) => {
                    self.warn(format!("{}: cannot list directory: {e}", path.display()));
                    return Ok(());
                }
            };
            // Sorted: the same tree gives the same archive.
            children.sort();
            for child in children {
                let p = path.join(&child);
                match fs::symlink_metadata(&p) {
                    Ok(m) => self.entry(&p, m)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.warn(format!("{}: vanished before it was read", p.display()));
                    }
                    Err(e) => self.warn(format!("{}: cannot stat: {e}", p.display())),
                }
            }
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!("{}: vanished before it was read", path.display()));
                    return Ok(());
                }
                Err(e) => {
                    self.warn(format!("{}: cannot read link: {e}", path.display()));
                    return Ok(());
                }
            };
            let mut header = self.header(&meta, tar::EntryType::Symlink);
            let pax = self.pax(path, &meta);
            let target = target.as_os_str().as_bytes();
            self.append(&mut header, &pax, &name, Some(target), io::empty())?;
            self.stats.symlinks += 1;
        } else if ft.is_file() {
            self.file(path, &name)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut header = self.header(&meta, kind);
            if !ft.is_fifo() {
                let rdev = meta.rdev() as libc::dev_t;
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            let pax = self.pax(path, &meta);
            self.append(&mut header, &pax, &name, None, io::empty())?;
            self.stats.special += 1;
        } else {
            tracing::info!(path = %path.display(), "skipping a socket (GNU tar does too)");
            self.stats.skipped += 1;
        }
        Ok(())
    }

    /// A regular file: opened once and archived from that handle (a
    /// further name of a multiply-linked file as a link to the first),
    /// then checked for changes made while it was read. Problems with the
    /// file itself are warnings.
    fn file(&mut self, path: &Path, name: &[u8]) -> anyhow::Result<()> {
        let Some((file, meta)) = self.open_regular(path) else {
            return Ok(());
        };
        if self.append_if_hardlink(&meta, name)? {
            return Ok(());
        }
        let read = self.append_contents(path, name, &file, &meta)?;
        self.check_read(path, &file, &meta, read);
        Ok(())
    }

    /// Opens `path` and stats what was opened, not the name (which may
    /// have been replaced since it was listed). `None`, with a warning, when
    /// it vanished, cannot be read or is no longer a regular file.
    fn open_regular(&mut self, path: &Path) -> Option<(File, fs::Metadata)> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{}: vanished before it was read", path.display()));
                return None;
            }
            Err(e) => {
                self.warn(format!(
                    "{}: cannot be read, not archived: {e}",
                    path.display()
                ));
                return None;
            }
        };
        match file.metadata() {
            Ok(m) if m.is_file() => Some((file, m)),
            Ok(_) => {
                self.warn(format!("{}: is no longer a regular file", path.display()));
                None
            }
            Err(e) => {
                self.warn(format!("{}: cannot stat: {e}", path.display()));
                None
            }
        }
    }

    /// A file with more than one link: the first name seen is remembered,
    /// every later one becomes a link member to it (`true` when one was
    /// written).
    fn append_if_hardlink(&mut self, meta: &fs::Metadata, name: &[u8]) -> anyhow::Result<bool> {
        if meta.nlink() <= 1 {
            return Ok(false);
        }
        let key = (meta.dev(), meta.ino());
        let Some(first) = self.links.get(&key).cloned() else {
            self.links.insert(key, name.to_vec());
            return Ok(false);
        };
        let mut header = self.header(meta, tar::EntryType::Link);
        let pax = PaxRecords::default();
        self.append(&mut header, &pax, name, Some(&first), io::empty())?;
        self.stats.hardlinks += 1;
        Ok(true)
    }

    /// Header (a sparse one when the file has holes), pax records and the
    /// data, in exactly the size the header announces; counted in the
    /// stats.
    fn append_contents(
        &mut self,
        path: &Path,
        name: &[u8],
        file: &File,
        meta: &fs::Metadata,
    ) -> anyhow::Result<ReadOutcome> {
        let size = meta.len();
        let mut header = self.header(meta, tar::EntryType::Regular);
        let pax = self.pax(path, meta);
        let (runs, prefix) = match hole_map(path, file, meta) {
            Some(map) => {
                let prefix = sparse::make_sparse_header(&mut header, &map, size)?;
                (map, prefix)
            }
            None => {
                header.set_size(size);
                (vec![(0, size)], Vec::new())
            }
        };
        let stored = sparse::stored_size(&runs);
        // Big reads: the tar crate copies in 8 KiB pieces, one pread each
        // without this buffer.
        let buffer = stored.clamp(8 << 10, READ_BUFFER) as usize;
        let run_reader = RunReader {
            file,
            runs,
            run: 0,
            done_in_run: 0,
            got: 0,
            shrank: false,
            error: None,
            cancelled: self.cancel.clone(),
        };
        let mut reader =
            io::Cursor::new(prefix).chain(io::BufReader::with_capacity(buffer, run_reader));
        self.append(&mut header, &pax, name, None, &mut reader)?;
        self.cancel.check()?;
        let reader = reader.into_inner().1.into_inner();
        self.stats.files += 1;
        self.stats.bytes += size;
        self.stats.data_bytes += stored;
        self.stats.restore_bytes += stored.div_ceil(FS_BLOCK) * FS_BLOCK;
        Ok(ReadOutcome {
            stored,
            got: reader.got,
            shrank: reader.shrank,
            error: reader.error,
        })
    }

    /// Warns when the file could not be read to the end, shrank, was
    /// deleted or changed while it was read (`meta`: before reading).
    fn check_read(&mut self, path: &Path, file: &File, meta: &fs::Metadata, read: ReadOutcome) {
        let size = meta.len();
        let ReadOutcome {
            stored,
            got,
            shrank,
            error,
        } = read;
        if let Some(e) = error {
            self.warn(format!(
                "{}: read error after {got} of {stored} bytes, the rest is zero-filled in the backup: {e}",
                path.display(),
            ));
            return;
        }
        if shrank {
            self.warn(format!(
                "{}: shrank to {got} bytes while being read (was {size}); the backup copy is zero-filled to {size}",
                path.display(),
            ));
            return;
        }
        match file.metadata() {
            Ok(after) if after.nlink() == 0 => {
                self.warn(format!(
                    "{}: was deleted while being read; the backup holds what was read",
                    path.display()
                ));
            }
            Ok(after) => {
                if let Some(what) = changed(meta, &after) {
                    self.warn(format!(
                        "{}: changed while being read ({what}); the backup copy may mix old and new contents",
                        path.display()
                    ));
                }
            }
            Err(e) => self.warn(format!(
                "{}: cannot stat after reading: {e}",
                path.display()
            )),
        }
    }

    fn header(&mut self, meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.permissions().mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        if let Some(u) = self.names.user(meta.uid()) {
            let _ = h.set_username(&u);
        }
        if let Some(g) = self.names.group(meta.gid()) {
            let _ = h.set_groupname(&g);
        }
        h
    }

    /// Nanosecond mtime, extended attributes and ACLs of `path`.
    fn pax(&mut self, path: &Path, meta: &fs::Metadata) -> PaxRecords {
        let mut pax = PaxRecords::default();
        pax.mtime(meta.mtime(), meta.mtime_nsec());
        if let Err(e) = pax.xattrs(path) {
            self.warn(format!("{}: {e}; archived without them", path.display()));
        }
        pax
    }

    /// Writes the pax member (if any), long-name members (if needed) and
    /// the member itself, with `name` and `link` as raw bytes: the `tar`
    /// crate's path setters would normalise them (`a//b`, a trailing `/`
    /// of a symlink target) and need UTF-8 for the truncated header copy.
    fn append<R: Read>(
        &mut self,
        header: &mut tar::Header,
        pax: &PaxRecords,
        name: &[u8],
        link: Option<&[u8]>,
        data: R,
    ) -> io::Result<()> {
        if !pax.is_empty() {
            pax.append_to(self.builder, name)?;
        }
        let old = header.as_old_mut();
        if let Some(link) = link {
            if link.len() >= old.linkname.len() {
                long_name(self.builder, tar::EntryType::GNULongLink, link)?;
            }
            let n = link.len().min(old.linkname.len());
            old.linkname = [0; 100];
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
        if name.len() >= old.name.len() {
            long_name(self.builder, tar::EntryType::GNULongName, name)?;
        }
        let n = name.len().min(old.name.len());
        old.name = [0; 100];
        old.name[..n].copy_from_slice(&name[..n]);
        header.set_cksum();
        self.builder.append(header, data)
    }
}

/// A GNU `L` (long name) or `K` (long link target) member: the full bytes,
/// NUL-terminated, for the member that follows.
fn long_name<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: tar::EntryType,
    bytes: &[u8],
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_size(bytes.len() as u64 + 1);
    h.set_cksum();
    builder.append(&h, bytes.chain(&[0u8][..]))
}

/// What reading one file's data saw.
struct ReadOutcome {
    /// Bytes the member holds (holes excluded).
    stored: u64,
    /// Bytes that came from the file (the rest were zero-filled).
    got: u64,
    shrank: bool,
    error: Option<io::Error>,
}

/// The file's data runs when it has holes (GNU tar's test: fewer blocks
/// than the size needs), `None` to store it dense.
fn hole_map(path: &Path, file: &File, meta: &fs::Metadata) -> Option<sparse::DataMap> {
    let size = meta.len();
    if meta.blocks() * 512 >= size {
        return None;
    }
    match sparse::data_map(file, size) {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "no hole map; stored dense");
            None
        }
    }
}

/// What differs between the stat before and after reading a file.
fn changed(before: &fs::Metadata, after: &fs::Metadata) -> Option<String> {
    if before.len() != after.len() {
        Some(format!("size {} → {}", before.len(), after.len()))
    } else if (before.mtime(), before.mtime_nsec()) != (after.mtime(), after.mtime_nsec()) {
        Some("modification time changed".into())
    } else if (before.ctime(), before.ctime_nsec()) != (after.ctime(), after.ctime_nsec()) {
        Some("status change time changed".into())
    } else {
        None
    }
}

/// `/data/app/x` → `files/data/app/x`, as bytes (names need not be UTF-8).
fn member_name(path: &Path) -> Vec<u8> {
    let mut out = FILES_PREFIX.as_bytes().to_vec();
    let mut first = true;
    for c in path.components() {
        if let Component::Normal(p) = c {
            if !first {
                out.push(b'/');
            }
            out.extend_from_slice(p.as_bytes());
            first = false;
        }
    }
    out
}

/// Yields exactly the bytes of `runs` (offset, length) of the file, whatever
/// the file does meanwhile: the tar header already promised that size.
struct RunReader<'f> {
    file: &'f File,
    runs: sparse::DataMap,
    run: usize,
    done_in_run: u64,
    /// Bytes that came from the file (the rest were zero-filled).
    got: u64,
    /// The file ended before the announced size.
    shrank: bool,
    error: Option<io::Error>,
    cancelled: Cancel,
}

impl Read for RunReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (off, len) = loop {
            match self.runs.get(self.run) {
                None => return Ok(0),
                Some(&(o, l)) if self.done_in_run < l => break (o, l),
                Some(_) => {
                    self.run += 1;
                    self.done_in_run = 0;
                }
            }
        };
        self.cancelled.check()?;
        let want = buf.len().min((len - self.done_in_run) as usize);
        let n = if self.error.is_some() || self.shrank {
            0
        } else {
            loop {
                match self.file.read_at(&mut buf[..want], off + self.done_in_run) {
                    Ok(0) => {
                        self.shrank = true;
                        break 0;
                    }
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.error = Some(e);
                        break 0;
                    }
                }
            }
        };
        if n == 0 {
            // Shrunk or failed: zero-fill what is left.
            buf[..want].fill(0);
            self.done_in_run += want as u64;
            return Ok(want);
        }
        self.got += n as u64;
        self.done_in_run += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn member_names_drop_the_root() {
        assert_eq!(member_name(Path::new("/data/app/x")), b"files/data/app/x");
        let raw = Path::new(OsStr::from_bytes(b"/d/caf\xe9/x\nb"));
        assert_eq!(member_name(raw), b"files/d/caf\xe9/x\nb");
    }
}
