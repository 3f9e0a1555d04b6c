//! A small filesystem for one test: a tmpfs of a given size (full-disk
//! faults, a restore target that cannot hold everything, a WAL store that
//! fills). Mounting needs root, as `just test` runs; unmounted (lazily) on
//! drop, so a failing test leaves no mount behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; `.0` is its mount point.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8)'s syntax: bytes, or `4m`, `64k`)
    /// at `dir` (created), mode 0755.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount -t tmpfs at {} failed (these tests need root, as `just test` runs): {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Gives it a new size, keeping what it holds (space comes back).
    pub fn resize(&self, size: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "remount {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Bytes free for an unprivileged writer (statvfs f_bavail).
    pub fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path and a zeroed out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// A filler file leaving about `leave` bytes free; its path.
    pub fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = std::fs::remove_file(&filler);
        let mut left = self.free().saturating_sub(leave);
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xffu8; 1 << 16];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
