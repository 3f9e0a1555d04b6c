//! File trees into the generation's tar stream (members `files/<absolute
//! path without the leading />`), and back out of it.
//!
//! What is kept is what GNU tar keeps with `--sparse --xattrs --acls`:
//! names as bytes (a name that is not UTF-8 comes back byte for byte; GNU
//! long-name members for names of 100 bytes or more), regular files, holes
//! of sparse files (old GNU sparse members, see [`super::sparse`]), hard
//! links as links to the first name seen, symlinks (never followed), empty
//! directories, FIFOs and device nodes; permissions including
//! setuid/setgid/sticky, owner and group as numbers *and* names (a restore
//! maps by name first, as GNU tar does), modification times to the
//! nanosecond, extended attributes and POSIX ACLs (pax records, see
//! [`super::pax`]). Sockets are skipped (logged), as GNU tar does.
//!
//! A live tree changes while it is read. A file that vanishes, cannot be
//! read, or whose size, mtime or ctime differ before and after it was read
//! becomes a *warning* naming the file (the backup of everything else is
//! still worth having): the member keeps the size its header announced,
//! cut or zero-filled, so the archive stays valid.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::pax::{self, PaxRecords};
use super::sparse;
use crate::exec::Cancel;

/// Tar member prefix for file trees.
pub const FILES_PREFIX: &str = "files/";

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
        let meta = fs::metadata(&root).map_err(|e| {
            anyhow::anyhow!(
                "file tree {} cannot be read: {e} — fix `paths` in the job config",
                root.display()
            )
        })?;
        let before = walker.stats.entries();
        walker.entry(&root, meta)?;
        walker.stats.per_root.push(walker.stats.entries() - before);
    }
    Ok(walker.stats)
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

    fn file(&mut self, path: &Path, name: &[u8]) -> anyhow::Result<()> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{}: vanished before it was read", path.display()));
                return Ok(());
            }
            Err(e) => {
                self.warn(format!(
                    "{}: cannot be read, not archived: {e}",
                    path.display()
                ));
                return Ok(());
            }
        };
        // Metadata of what we opened, not of the name (which may have been
        // replaced since it was listed).
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                self.warn(format!("{}: is no longer a regular file", path.display()));
                return Ok(());
            }
            Err(e) => {
                self.warn(format!("{}: cannot stat: {e}", path.display()));
                return Ok(());
            }
        };
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                let mut header = self.header(&meta, tar::EntryType::Link);
                let pax = PaxRecords::default();
                self.append(&mut header, &pax, name, Some(&first), io::empty())?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), name.to_vec());
        }
        let size = meta.len();
        let mut header = self.header(&meta, tar::EntryType::Regular);
        let pax = self.pax(path, &meta);
        // GNU tar's test: fewer blocks than the size needs means holes.
        let map = if meta.blocks() * 512 < size {
            match sparse::data_map(&file, size) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(path = %path.display(), error = %e, "no hole map; stored dense");
                    None
                }
            }
        } else {
            None
        };
        let (runs, prefix) = match &map {
            Some(map) => (
                map.clone(),
                sparse::make_sparse_header(&mut header, map, size)?,
            ),
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
            file: &file,
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
        let (got, shrank, error) = (reader.got, reader.shrank, reader.error);
        if let Some(e) = error {
            self.warn(format!(
                "{}: read error after {got} of {stored} bytes, the rest is zero-filled in the backup: {e}",
                path.display(),
            ));
            return Ok(());
        }
        if shrank {
            self.warn(format!(
                "{}: shrank to {got} bytes while being read (was {size}); the backup copy is zero-filled to {size}",
                path.display(),
            ));
            return Ok(());
        }
        match file.metadata() {
            Ok(after) if after.nlink() == 0 => {
                self.warn(format!(
                    "{}: was deleted while being read; the backup holds what was read",
                    path.display()
                ));
            }
            Ok(after) => {
                if let Some(what) = changed(&meta, &after) {
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
        Ok(())
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

#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .clone()
    }
    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| group_name(gid))
            .clone()
    }
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid_r only writes into the buffers we pass.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut res) == 0
            && !res.is_null()
        {
            Some(
                std::ffi::CStr::from_ptr(pwd.pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        }
    }
}

fn group_name(gid: u32) -> Option<String> {
    // SAFETY: getgrgid_r only writes into the buffers we pass.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut res: *mut libc::group = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut res) == 0
            && !res.is_null()
        {
            Some(
                std::ffi::CStr::from_ptr(grp.gr_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        }
    }
}

fn uid_by_name(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam_r only writes into the buffers we pass.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut res) == 0
            && !res.is_null()
        {
            Some(pwd.pw_uid)
        } else {
            None
        }
    }
}

fn gid_by_name(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getgrnam_r only writes into the buffers we pass.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut res: *mut libc::group = std::ptr::null_mut();
        if libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut res) == 0
            && !res.is_null()
        {
            Some(grp.gr_gid)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Restore side
// ---------------------------------------------------------------------------

/// A directory whose owner, mode, extended attributes and mtime are applied
/// after its contents (a default ACL set early would be inherited by
/// everything restored into it).
struct DeferredDir {
    path: PathBuf,
    meta: MemberMeta,
}

/// What a member says about its file besides the data.
struct MemberMeta {
    mode: u32,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    owner: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Extracts `files/…` members under `dir`, keeping each tree's absolute path
/// below it (`files/data/app/x` → `dir/data/app/x`), names byte for byte.
///
/// Directory modes, attributes and mtimes are applied last, deepest first:
/// a read-only directory must still receive its files, and creating them
/// would bump its mtime.
pub(crate) struct TreeExtractor {
    dir: PathBuf,
    canonical_dir: PathBuf,
    as_root: bool,
    deferred_dirs: Vec<DeferredDir>,
    warnings: Vec<String>,
    pub files: u64,
}

impl TreeExtractor {
    pub fn new(dir: &Path) -> io::Result<TreeExtractor> {
        fs::create_dir_all(dir)?;
        Ok(TreeExtractor {
            dir: dir.to_path_buf(),
            canonical_dir: fs::canonicalize(dir)?,
            // SAFETY: geteuid has no preconditions.
            as_root: unsafe { libc::geteuid() } == 0,
            deferred_dirs: Vec::new(),
            warnings: Vec::new(),
            files: 0,
        })
    }

    /// `files/a/b` (raw bytes) → `dir/a/b`, refusing anything that would
    /// leave `dir`. `None` for the `files` member itself.
    fn target(&self, member: &[u8]) -> anyhow::Result<Option<PathBuf>> {
        let shown = || String::from_utf8_lossy(member).into_owned();
        let prefix = FILES_PREFIX.trim_end_matches('/').as_bytes();
        let rel = match member.strip_prefix(prefix) {
            Some(r) if r.is_empty() || r[0] == b'/' => r,
            _ => anyhow::bail!("{} is not a file-tree member", shown()),
        };
        let mut dest = self.dir.clone();
        for c in Path::new(OsStr::from_bytes(rel)).components() {
            match c {
                Component::Normal(p) => dest.push(p),
                Component::CurDir | Component::RootDir => {}
                // An archive we wrote never has these; a tampered one must
                // not write outside the target.
                _ => anyhow::bail!("refusing archive member {} (leaves the target)", shown()),
            }
        }
        Ok((dest != self.dir).then_some(dest))
    }

    /// Extracts one `files/…` member.
    pub fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> anyhow::Result<()> {
        let member = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&member).into_owned();
        let Some(dest) = self.target(&member)? else {
            return Ok(());
        };
        let parent = dest.parent().expect("below dir").to_path_buf();
        fs::create_dir_all(&parent)?;
        if !fs::canonicalize(&parent)?.starts_with(&self.canonical_dir) {
            anyhow::bail!(
                "refusing archive member {shown}: its folder resolves outside {}",
                self.dir.display()
            );
        }
        let header = entry.header().clone();
        let meta = self.member_meta(entry)?;
        let kind = header.entry_type();
        let existing = fs::symlink_metadata(&dest).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&dest)?;
                    fs::create_dir(&dest)?;
                }
                None => fs::create_dir(&dest)?,
            }
            // Writable for us until the end.
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))?;
            self.deferred_dirs.push(DeferredDir { path: dest, meta });
            return Ok(());
        }
        match existing {
            Some(m) if m.is_dir() => fs::remove_dir_all(&dest)?,
            Some(_) => fs::remove_file(&dest)?,
            None => {}
        }
        let cannot =
            |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot restore {}: {e}", dest.display());
        if kind.is_hard_link() {
            let first = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow::anyhow!("hard link {shown} names no file"))?
                .into_owned();
            let Some(first) = self.target(&first)? else {
                anyhow::bail!("hard link {shown} points at the tree root");
            };
            fs::hard_link(&first, &dest).map_err(|e| {
                anyhow::anyhow!(
                    "cannot restore hard link {} to {}: {e}",
                    dest.display(),
                    first.display()
                )
            })?;
            self.files += 1;
            return Ok(());
        }
        if kind == tar::EntryType::Fifo
            || kind == tar::EntryType::Char
            || kind == tar::EntryType::Block
        {
            let (fmt, dev) = if kind == tar::EntryType::Fifo {
                (libc::S_IFIFO, 0)
            } else {
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                let fmt = if kind == tar::EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (fmt, libc::makedev(major, minor))
            };
            let c = CString::new(dest.as_os_str().as_bytes())?;
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) } != 0 {
                return Err(cannot(&io::Error::last_os_error()));
            }
        } else {
            entry.set_preserve_permissions(true);
            entry.set_preserve_mtime(false);
            entry.set_unpack_xattrs(false);
            entry.unpack(&dest).map_err(|e| cannot(&e))?;
        }
        self.apply(&dest, &meta, kind.is_symlink())
            .map_err(|e| cannot(&e))?;
        self.files += 1;
        Ok(())
    }

    /// Owner (root only: by name first, like GNU tar), then extended
    /// attributes (chown drops file capabilities), then the mode (chown
    /// clears setuid/setgid), then the mtime (last: the others change
    /// nothing it covers, but keep it last for directories).
    fn apply(&mut self, path: &Path, meta: &MemberMeta, symlink: bool) -> io::Result<()> {
        if let Some((uid, gid)) = meta.owner {
            lchown(path, uid, gid)?;
        }
        for (name, value) in &meta.xattrs {
            if let Err(e) = xattr::set(path, name, value) {
                self.warnings.push(format!(
                    "{}: extended attribute {name} not restored: {e}",
                    path.display()
                ));
            }
        }
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
        }
        set_mtime(path, meta.mtime)
    }

    fn member_meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> anyhow::Result<MemberMeta> {
        let header = entry.header();
        let mut meta = MemberMeta {
            mode: header.mode()? & 0o7777,
            mtime: (header.mtime()? as i64, 0),
            owner: self.owner_for(header),
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions()? {
            let records = pax::MemberRecords::read(exts);
            if let Some(t) = records.mtime {
                meta.mtime = t;
            }
            meta.xattrs = records.xattrs;
        }
        Ok(meta)
    }

    /// Only root can give files away; by name first, like GNU tar.
    fn owner_for(&self, header: &tar::Header) -> Option<(u32, u32)> {
        if !self.as_root {
            return None;
        }
        let uid = header
            .username()
            .ok()
            .flatten()
            .and_then(uid_by_name)
            .or_else(|| header.uid().ok().map(|u| u as u32))?;
        let gid = header
            .groupname()
            .ok()
            .flatten()
            .and_then(gid_by_name)
            .or_else(|| header.gid().ok().map(|g| g as u32))?;
        Some((uid, gid))
    }

    /// Applies directory owners, attributes, modes and mtimes; returns the
    /// entries restored and warnings (attributes the target refused).
    pub fn finish(mut self) -> anyhow::Result<(u64, Vec<String>)> {
        // Deepest first: a parent without the x bit (mode 0o600, say) would
        // otherwise stop us reaching its children.
        let mut dirs = std::mem::take(&mut self.deferred_dirs);
        dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in &dirs {
            self.apply(&d.path, &d.meta, false)
                .map_err(|e| anyhow::anyhow!("cannot restore {}: {e}", d.path.display()))?;
        }
        Ok((self.files + dirs.len() as u64, self.warnings))
    }
}

/// Fails unless the filesystem that will hold `dir` has `needed` bytes
/// free for an unprivileged user (statvfs `f_bavail`), before anything is
/// written there.
pub(crate) fn check_space(dir: &Path, needed: u64) -> anyhow::Result<()> {
    let mut probe = dir.to_path_buf();
    while fs::metadata(&probe).is_err() {
        if !probe.pop() {
            return Ok(());
        }
    }
    let c = CString::new(probe.as_os_str().as_bytes())?;
    // SAFETY: c is a valid path; st is written by statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let available = st.f_bavail as u64 * st.f_frsize as u64;
    if needed > available {
        anyhow::bail!(
            "not enough room to restore into {}: the file trees need {needed} bytes ({:.1} MiB), the filesystem of {} has {available} bytes ({:.1} MiB) available; nothing was written",
            dir.display(),
            needed as f64 / 1048576.0,
            probe.display(),
            available as f64 / 1048576.0,
        );
    }
    Ok(())
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets atime and mtime of `path` itself (not a symlink's target).
fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [t, t];
    // SAFETY: c is a valid path and times points to two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_drop_the_root() {
        assert_eq!(member_name(Path::new("/data/app/x")), b"files/data/app/x");
        let raw = Path::new(OsStr::from_bytes(b"/d/caf\xe9/x\nb"));
        assert_eq!(member_name(raw), b"files/d/caf\xe9/x\nb");
    }
}
