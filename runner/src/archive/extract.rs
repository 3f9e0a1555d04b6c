//! `offsite restore` for archive jobs: per path the newest version that
//! matches `--match/--since/--until` (files gone from the source included:
//! the archive is where they live now), written under `--to-dir`. What it
//! would write is summed first and checked against the target's free space
//! and inodes; a target without room is refused before a byte is written.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::catalog::{Catalog, Member, Order, Query};
use super::query::Reader;

/// Space a file takes beyond its bytes is rounded to this block size.
const BLOCK: u64 = 4096;

/// What a restore would write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Bytes on disk, each file rounded up to whole blocks.
    pub disk_bytes: u64,
}

fn rounded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Sum what `q` selects.
pub fn plan(cat: &Catalog, q: &Query) -> Result<Plan> {
    let mut p = Plan::default();
    cat.newest(q, |m| {
        p.files += 1;
        p.bytes += m.stat.size;
        p.disk_bytes += rounded(m.stat.size);
        Ok(())
    })?;
    Ok(p)
}

/// With `max_bytes`: the mtime from which the newest versions fill at most
/// that many bytes on disk (newest first). None if nothing fits.
pub fn newest_cutoff(cat: &Catalog, q: &Query, max_bytes: u64) -> Result<Option<i64>> {
    let mut q = q.clone();
    q.order = Order::NewestFirst;
    let mut used = 0u64;
    let mut cutoff = None;
    let mut full = false;
    cat.newest(&q, |m| {
        if full {
            return Ok(());
        }
        let next = used + rounded(m.stat.size);
        if next > max_bytes {
            full = true;
            // Everything at this mtime is out, so the cutoff is above it.
            if cutoff == Some(m.stat.mtime_ns) {
                cutoff = Some(m.stat.mtime_ns + 1);
            }
            return Ok(());
        }
        used = next;
        cutoff = Some(m.stat.mtime_ns);
        Ok(())
    })?;
    Ok(cutoff)
}

/// Refuse a target without room: free bytes and inodes of the filesystem
/// holding `dir` (or its nearest existing parent).
pub fn check_room(dir: &Path, p: &Plan) -> Result<()> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_bytes())?;
    // SAFETY: statvfs fills `st` for a NUL-terminated path we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", probe.display()));
    }
    let avail = st.f_bavail as u64 * st.f_frsize as u64;
    let need = p.disk_bytes + 64 * 1024;
    if need > avail {
        anyhow::bail!(
            "{} has {} free; restoring {} files needs {} ({} of content): nothing was written. \
             Narrow it with --match/--since/--until, or fill up to a limit newest first with --max-bytes",
            probe.display(),
            crate::units::human(avail),
            p.files,
            crate::units::human(need),
            crate::units::human(p.bytes)
        );
    }
    if st.f_favail != 0 && p.files > st.f_favail as u64 {
        anyhow::bail!(
            "{} has {} free inodes; restoring needs {} files: nothing was written",
            probe.display(),
            st.f_favail,
            p.files
        );
    }
    Ok(())
}

/// Write every selected file under `to`. Returns `(files, bytes)`.
pub async fn extract(r: &Reader<'_>, q: &Query, to: &Path) -> Result<(u64, u64)> {
    let mut q = q.clone();
    q.order = Order::Volume;
    // The members, one volume at a time: the list of one volume's members
    // is read from the catalog, then the volume is opened once.
    let volumes: Vec<String> = {
        let cat = Catalog::open(&r.dir.catalog())?;
        let mut names: Vec<String> = vec![];
        cat.newest(&q, |m| {
            if names.last() != Some(&m.volume) {
                names.push(m.volume);
            }
            Ok(())
        })?;
        names
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    for name in volumes {
        let (v, copies, members) = {
            let cat = Catalog::open(&r.dir.catalog())?;
            let v = cat
                .volume(&name)?
                .context("volume vanished from the catalog")?;
            let copies = cat.copies(v.id)?;
            let mut members = vec![];
            cat.newest(&q, |m| {
                if m.volume == name {
                    members.push(m);
                }
                Ok(())
            })?;
            (v, copies, members)
        };
        let path = r.volume_path(&copies, &v).await?;
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        for m in members {
            bytes += write_one(&mut f, &m, to)?;
            files += 1;
        }
    }
    Ok((files, bytes))
}

fn target_of(to: &Path, m: &Member) -> PathBuf {
    let rel = m.path.strip_prefix(b"/").unwrap_or(&m.path);
    to.join(std::ffi::OsStr::from_bytes(rel))
}

/// One file: temporary name, content checked against its sha256, mode,
/// owner (when root) and mtime, rename.
fn write_one(vol: &mut std::fs::File, m: &Member, to: &Path) -> Result<u64> {
    let target = target_of(to, m);
    let parent = target.parent().context("a member path has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".offsite-part-{}", std::process::id()));
    let r = (|| -> Result<u64> {
        let mut out = std::fs::File::create(&tmp)?;
        let n = {
            let mut w = std::io::BufWriter::new(&mut out);
            let n = super::volume::read_member(vol, &m.range(), &mut w)?;
            w.flush()?;
            n
        };
        use std::os::unix::fs::PermissionsExt;
        out.set_permissions(std::fs::Permissions::from_mode(m.stat.mode & 0o7777))?;
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            std::os::unix::fs::fchown(&out, Some(m.stat.uid), Some(m.stat.gid))?;
        }
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(m.stat.mtime_ns.max(0) as u64);
        out.set_times(
            std::fs::FileTimes::new()
                .set_modified(mtime)
                .set_accessed(mtime),
        )?;
        out.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| crate::disk::explain(e, &target))
        .with_context(|| format!("restoring {}", target.display()))
}
