//! An unmounted disk looks like an empty folder. A backup of it "succeeds"
//! with nothing in it, and rotation then drops the real backups. So each
//! generation records, per file-tree root, how many entries it held and
//! which filesystem it was on ([`TreeSummary`], in the manifest), and the
//! next run compares ([`check`]) before it takes anything: a root that is
//! now empty, or on another filesystem, while the last good generation
//! held files from it, fails the run — unless the job says
//! `allow_empty = true`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a generation holds of its file trees (manifest field `tree`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeSummary {
    pub roots: Vec<RootRecord>,
    /// Members of every kind (files, directories, links, …).
    pub entries: u64,
    /// Bytes of file data stored (holes of sparse files excluded).
    pub data_bytes: u64,
    /// Disk space a restore needs (data in 4 KiB blocks, a block per
    /// directory); checked against the target before anything is written.
    pub restore_bytes: u64,
}

/// One configured root, as it was when the generation was taken.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootRecord {
    pub path: PathBuf,
    /// Members archived from below it, the root itself included.
    pub entries: u64,
    #[serde(flatten)]
    pub fs: RootFs,
}

/// The filesystem a root lives on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootFs {
    /// `st_dev` of the root.
    pub dev: u64,
    /// statfs(2) type, by name where known (`ext4`, `tmpfs`, …).
    pub fs_type: String,
    /// The root is where a filesystem is mounted (its device differs from
    /// its parent's).
    pub mount_point: bool,
}

impl RootFs {
    /// The filesystem of `root` (followed if it is a symlink).
    pub fn probe(root: &Path) -> std::io::Result<RootFs> {
        let meta = std::fs::metadata(root)?;
        let parent = std::fs::metadata(root.join(".."))?;
        let mount_point = meta.dev() != parent.dev() || meta.ino() == parent.ino();
        let c = CString::new(root.as_os_str().as_bytes())?;
        // SAFETY: c is a valid path; st is written by statfs.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let fs_type = if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
            fs_name(st.f_type as i64)
        } else {
            "unknown".into()
        };
        Ok(RootFs {
            dev: meta.dev(),
            fs_type,
            mount_point,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} device {}:{}{}",
            self.fs_type,
            libc::major(self.dev as libc::dev_t),
            libc::minor(self.dev as libc::dev_t),
            if self.mount_point {
                ", a mount point"
            } else {
                ", not a mount point"
            }
        )
    }
}

fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xFF53_4D42 | 0xFE53_4D42 => "cifs",
        0x794C_7630 => "overlay",
        0x4D44 => "vfat",
        0x6573_5546 => "fuse",
        0x5346_544E => "ntfs",
        0xF15F => "ecryptfs",
        _ => return format!("0x{magic:x}"),
    }
    .to_string()
}

/// What to do about a refused root, in every [`TreeRefused`] message.
const HOW: &str = "check that its filesystem is mounted; if this is intended, set `allow_empty = true` for the job";

/// A file-tree root that no longer looks like the one the last good
/// generation saved: the run takes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeRefused {
    #[error(
        "file tree {} is on another filesystem than at the last good run ({then} then, {now} now), which held {entries} entries from it; nothing was backed up — {}",
        root.display(),
        HOW
    )]
    OtherFilesystem {
        root: PathBuf,
        then: String,
        now: String,
        entries: u64,
    },
    #[error(
        "file tree {} is empty, but the last good generation held {entries} entries from it; nothing was backed up — {}",
        root.display(),
        HOW
    )]
    Empty { root: PathBuf, entries: u64 },
}

/// Compares the roots as they are now with the last good generation's
/// record. `Err` says which root, what changed and how to proceed.
/// Missing roots are refused later by the source itself.
pub fn check(
    roots: &[PathBuf],
    last: Option<&TreeSummary>,
    allow_empty: bool,
) -> Result<(), TreeRefused> {
    let Some(last) = last else { return Ok(()) };
    if allow_empty {
        return Ok(());
    }
    for root in roots {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        let Some(before) = last.roots.iter().find(|r| r.path == abs) else {
            continue;
        };
        // The root directory itself is one entry.
        if before.entries <= 1 {
            continue;
        }
        let Ok(now) = RootFs::probe(&abs) else {
            continue;
        };
        if now != before.fs {
            return Err(TreeRefused::OtherFilesystem {
                root: abs,
                then: before.fs.describe(),
                now: now.describe(),
                entries: before.entries,
            });
        }
        let empty = std::fs::read_dir(&abs)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if empty {
            return Err(TreeRefused::Empty {
                root: abs,
                entries: before.entries,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(path: &Path, entries: u64) -> TreeSummary {
        TreeSummary {
            roots: vec![RootRecord {
                path: path.to_path_buf(),
                entries,
                fs: RootFs::probe(path).unwrap(),
            }],
            entries,
            ..TreeSummary::default()
        }
    }

    #[test]
    fn an_emptied_root_fails_unless_allowed() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let root = dir.path().to_path_buf();
        let last = summary(&root, 201);
        let err = check(std::slice::from_ref(&root), Some(&last), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is empty") && err.contains("201 entries"),
            "{err}"
        );
        assert!(err.contains("allow_empty"), "{err}");
        check(std::slice::from_ref(&root), Some(&last), true).unwrap();
        // Empty before too: nothing to compare with.
        check(std::slice::from_ref(&root), Some(&summary(&root, 1)), false).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        check(std::slice::from_ref(&root), Some(&last), false).unwrap();
        check(std::slice::from_ref(&root), None, false).unwrap();
    }

    #[test]
    fn another_filesystem_fails() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("f"), b"x").unwrap();
        let mut last = summary(&root, 5);
        last.roots[0].fs.dev += 1;
        last.roots[0].fs.mount_point = true;
        let err = check(std::slice::from_ref(&root), Some(&last), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another filesystem"), "{err}");
        assert!(
            err.contains("a mount point then") || err.contains("a mount point"),
            "{err}"
        );
    }

    #[test]
    fn the_filesystem_root_is_a_mount_point() {
        assert!(RootFs::probe(Path::new("/")).unwrap().mount_point);
    }
}
