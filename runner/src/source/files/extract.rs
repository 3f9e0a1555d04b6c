//! The restore side of file trees: `files/…` members back onto disk under
//! a target directory, with their metadata.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use super::FILES_PREFIX;
use super::owners::{gid_by_name, uid_by_name};
use super::pax;

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
        let cannot = || format!("cannot restore {}", dest.display());
        if kind.is_hard_link() {
            let first = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow::anyhow!("hard link {shown} names no file"))?
                .into_owned();
            let Some(first) = self.target(&first)? else {
                anyhow::bail!("hard link {shown} points at the tree root");
            };
            fs::hard_link(&first, &dest).with_context(|| {
                format!(
                    "cannot restore hard link {} to {}",
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
                return Err(io::Error::last_os_error()).with_context(cannot);
            }
        } else {
            entry.set_preserve_permissions(true);
            entry.set_preserve_mtime(false);
            entry.set_unpack_xattrs(false);
            entry.unpack(&dest).with_context(cannot)?;
        }
        self.apply(&dest, &meta, kind.is_symlink())
            .with_context(cannot)?;
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
                .with_context(|| format!("cannot restore {}", d.path.display()))?;
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
