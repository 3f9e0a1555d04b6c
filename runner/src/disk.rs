//! Saying which disk is full. "No space left on device (os error 28)" names
//! neither the device nor the path; an operator at 3 a.m. needs both, and
//! how much room there is.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether `e` (or anything it wraps) is a full disk or an exhausted quota.
pub fn is_full(e: &anyhow::Error) -> bool {
    let full =
        |k: io::ErrorKind| matches!(k, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded);
    e.chain().any(|c| {
        // By kind, since wrappers (tar's, for one) keep the kind but not
        // the errno; by text for errors already turned into messages.
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| full(io.kind()))
            || ["(os error 28)", "(os error 122)"]
                .iter()
                .any(|t| c.to_string().contains(t))
    })
}

/// "no space left on the filesystem of PATH (ext4 mounted at /var, 0 B free
/// of 2.0 GiB)", as far as it can be found out.
pub fn no_space(path: &Path) -> String {
    let mut s = format!("no space left on the filesystem of {}", path.display());
    let mount = mount_of(path);
    let room = free_space(path);
    let mut parts = vec![];
    if let Some((point, fstype)) = &mount {
        parts.push(format!("{fstype} mounted at {}", point.display()));
    }
    if let Some((free, total)) = room {
        parts.push(format!(
            "{} free of {}",
            crate::units::human(free),
            crate::units::human(total)
        ));
    }
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join(", ")));
    }
    s
}

/// `e` with the full-disk explanation for `path` in front, when it is one.
pub fn explain(e: anyhow::Error, path: &Path) -> anyhow::Error {
    let said = e
        .chain()
        .any(|c| c.to_string().starts_with("no space left on"));
    if is_full(&e) && !said {
        e.context(no_space(path))
    } else {
        e
    }
}

/// Bytes available to the runner and the filesystem's size.
pub fn free_space(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// The mount point holding `path` and its filesystem type, from
/// /proc/self/mounts (the longest mount point that is a prefix).
pub fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let path = path
        .ancestors()
        .find_map(|p| p.canonicalize().ok())
        .unwrap_or_else(|| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _dev = f.next()?;
            let point = PathBuf::from(unescape_octal(f.next()?));
            let fstype = f.next()?.to_string();
            Some((point, fstype))
        })
        .filter(|(p, _)| path.starts_with(p))
        .max_by_key(|(p, _)| p.as_os_str().len())
}

/// /proc/self/mounts writes a space in a path as `\040`.
fn unescape_octal(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            let digits: String = (0..3).filter_map(|_| it.next()).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_mount_and_the_room() {
        let d = tempfile::tempdir().unwrap();
        let s = no_space(&d.path().join("x/y"));
        assert!(s.starts_with("no space left on the filesystem of "), "{s}");
        assert!(s.contains("mounted at /"), "{s}");
        assert!(s.contains(" free of "), "{s}");
        let e = anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOSPC)).context("writing");
        assert!(is_full(&e));
        assert!(!is_full(&anyhow::anyhow!("other")));
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
    }
}
