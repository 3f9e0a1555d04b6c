//! File trees into the generation's tar stream (members `files/<absolute
//! path without the leading />`), and back out of it.
//!
//! What is kept: permissions (including setuid/sticky bits), owner and group
//! as numbers *and* names (so a restore on another host can map by name, as
//! GNU tar does), modification times (whole seconds, the tar header's
//! resolution), symlinks as symlinks (never followed, so a link to `/` does
//! not archive the machine), empty files and empty directories. Hard links
//! are stored as separate copies; sockets, FIFOs and device nodes are skipped
//! (logged), since restoring them into a backup tree is never what is wanted.
//!
//! A live tree changes while it is read. A file that vanishes, cannot be
//! read, or changes size mid-read becomes a *warning* (the backup of
//! everything else is still worth having): the member keeps the size its
//! header announced, cut or zero-filled, so the archive stays valid.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::source::postgres::Cancel;

/// Tar member prefix for file trees.
pub const FILES_PREFIX: &str = "files/";

/// Appends file trees to `builder`, streaming file by file in constant
/// memory. `exclude` (the job's own backup folder) is skipped wherever it
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
        walker.entry(&root, meta)?;
    }
    Ok(walker.stats)
}

/// Counts for the log line at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct FilesStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub skipped: u64,
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    exclude: Option<(u64, u64)>,
    cancel: &'a Cancel,
    warnings: &'a mut Vec<String>,
    names: NameCache,
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
            header.set_size(0);
            self.builder.append_data(&mut header, &name, io::empty())?;
            self.stats.dirs += 1;
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
            header.set_size(0);
            self.builder.append_link(&mut header, &name, &target)?;
            self.stats.symlinks += 1;
        } else if ft.is_file() {
            self.file(path, &name)?;
        } else {
            tracing::info!(path = %path.display(), "skipping socket, FIFO or device node");
            self.stats.skipped += 1;
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, name: &str) -> anyhow::Result<()> {
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
        let size = meta.len();
        let mut header = self.header(&meta, tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = ExactSize {
            inner: file,
            remaining: size,
            got: 0,
            shrank: false,
            error: None,
            cancelled: self.cancel.clone(),
        };
        self.builder.append_data(&mut header, name, &mut reader)?;
        self.cancel.check()?;
        self.stats.files += 1;
        self.stats.bytes += size;
        if let Some(e) = reader.error.take() {
            self.warn(format!(
                "{}: read error after {} of {size} bytes, the rest is zero-filled in the backup: {e}",
                path.display(),
                reader.got
            ));
        } else if reader.shrank {
            self.warn(format!(
                "{}: shrank from {size} to {} bytes while being read; the backup copy is zero-filled to {size}",
                path.display(),
                reader.got
            ));
        } else {
            let mut probe = [0u8; 1];
            let grew = matches!(reader.inner.read(&mut probe), Ok(n) if n > 0);
            let after = reader.inner.metadata().ok();
            if grew || after.as_ref().is_some_and(|m| m.len() != size) {
                self.warn(format!(
                    "{}: changed size while being read (was {size} bytes, now {}); the backup holds the first {size}",
                    path.display(),
                    after.map(|m| m.len().to_string()).unwrap_or_else(|| "?".into())
                ));
            }
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
        if let Some(u) = self.names.user(meta.uid()) {
            let _ = h.set_username(&u);
        }
        if let Some(g) = self.names.group(meta.gid()) {
            let _ = h.set_groupname(&g);
        }
        h
    }
}

/// `/data/app/x` → `files/data/app/x`.
fn member_name(path: &Path) -> String {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    format!("{FILES_PREFIX}{}", rel.display())
}

/// Yields exactly `remaining` bytes whatever the file does meanwhile: the tar
/// header already promised that size.
struct ExactSize {
    inner: File,
    remaining: u64,
    /// Bytes that came from the file (the rest were zero-filled).
    got: u64,
    /// The file ended before the announced size.
    shrank: bool,
    error: Option<io::Error>,
    cancelled: Cancel,
}

impl Read for ExactSize {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        self.cancelled.check()?;
        let want = buf.len().min(self.remaining as usize);
        let n = if self.error.is_some() || self.shrank {
            0
        } else {
            loop {
                match self.inner.read(&mut buf[..want]) {
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
            self.remaining -= want as u64;
            return Ok(want);
        }
        self.got += n as u64;
        self.remaining -= n as u64;
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

/// A directory whose owner, mode and mtime are applied after its contents.
struct DeferredDir {
    path: PathBuf,
    mode: u32,
    mtime: i64,
    owner: Option<(u32, u32)>,
}

/// Extracts `files/…` members under `dir`, keeping each tree's absolute path
/// below it (`files/data/app/x` → `dir/data/app/x`).
///
/// Directory modes and mtimes are applied last, deepest first: a read-only
/// directory must still receive its files, and creating them would bump its
/// mtime.
pub(crate) struct TreeExtractor {
    dir: PathBuf,
    canonical_dir: PathBuf,
    as_root: bool,
    deferred_dirs: Vec<DeferredDir>,
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
            files: 0,
        })
    }

    /// Extracts one `files/…` member.
    pub fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> anyhow::Result<()> {
        let path = entry.path()?.into_owned();
        let rel = path
            .strip_prefix(FILES_PREFIX.trim_end_matches('/'))
            .map_err(|_| anyhow::anyhow!("{} is not a file-tree member", path.display()))?;
        let mut dest = self.dir.clone();
        for c in rel.components() {
            match c {
                Component::Normal(p) => dest.push(p),
                Component::CurDir => {}
                // An archive we wrote never has these; a tampered one must
                // not write outside the target.
                _ => anyhow::bail!(
                    "refusing archive member {} (leaves the target)",
                    path.display()
                ),
            }
        }
        if dest == self.dir {
            return Ok(());
        }
        let parent = dest.parent().expect("below dir").to_path_buf();
        fs::create_dir_all(&parent)?;
        if !fs::canonicalize(&parent)?.starts_with(&self.canonical_dir) {
            anyhow::bail!(
                "refusing archive member {}: its folder resolves outside {}",
                path.display(),
                self.dir.display()
            );
        }
        let header = entry.header().clone();
        let owner = self.owner_for(&header);
        let kind = header.entry_type();
        if kind.is_dir() {
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&dest)?;
                    fs::create_dir(&dest)?;
                }
                Err(_) => fs::create_dir(&dest)?,
            }
            // Writable for us until the end.
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))?;
            self.deferred_dirs.push(DeferredDir {
                path: dest,
                mode: header.mode()? & 0o7777,
                mtime: header.mtime()? as i64,
                owner,
            });
            return Ok(());
        }
        if let Ok(m) = fs::symlink_metadata(&dest)
            && m.is_dir()
        {
            fs::remove_dir_all(&dest)?;
        }
        entry.set_preserve_permissions(true);
        entry.set_preserve_mtime(true);
        entry.set_unpack_xattrs(false);
        entry
            .unpack(&dest)
            .map_err(|e| anyhow::anyhow!("cannot restore {}: {e}", dest.display()))?;
        if let Some((uid, gid)) = owner {
            lchown(&dest, uid, gid)?;
            if !kind.is_symlink() {
                // chown clears setuid/setgid: put the mode back.
                fs::set_permissions(&dest, fs::Permissions::from_mode(header.mode()? & 0o7777))?;
            }
        }
        self.files += 1;
        Ok(())
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

    /// Applies directory owners, modes and mtimes.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        // Deepest first: a parent without the x bit (mode 0o600, say) would
        // otherwise stop us reaching its children.
        self.deferred_dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in &self.deferred_dirs {
            if let Some((uid, gid)) = d.owner {
                lchown(&d.path, uid, gid)?;
            }
            fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))?;
            set_mtime(&d.path, d.mtime)?;
        }
        Ok(self.files + self.deferred_dirs.len() as u64)
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let t = libc::timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: c is a valid path and times points to two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_drop_the_root() {
        assert_eq!(member_name(Path::new("/data/app/x")), "files/data/app/x");
    }
}
