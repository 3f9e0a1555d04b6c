//! A snapshot generation restored as a data directory: `base.tar` at the
//! target, `pg_wal.tar` in its `pg_wal`, tablespaces next to it, and the
//! directory made private to its owner so PostgreSQL starts on it.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::dir::DirRestore;
use crate::exec::pump;

impl DirRestore {
    /// Unpacks one `snapshot/…` member: `base.tar` into the data
    /// directory, `pg_wal.tar` into its `pg_wal`, `backup_manifest` beside
    /// them, and a tablespace (`<oid>.tar`) next to the data directory with
    /// its `pg_tblspc` link repointed there.
    pub(super) fn snapshot_member<R: Read>(
        &self,
        member: &str,
        entry: &mut tar::Entry<'_, R>,
        as_root: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let unpack = |entry: &mut tar::Entry<'_, R>, to: &Path| -> anyhow::Result<()> {
            std::fs::create_dir_all(to)?;
            let mut inner = tar::Archive::new(entry);
            inner.set_preserve_permissions(true);
            inner.set_preserve_ownerships(as_root);
            inner.set_overwrite(true);
            inner
                .unpack(to)
                .with_context(|| format!("cannot unpack snapshot/{member} into {}", to.display()))
        };
        match member {
            "base.tar" => unpack(entry, &self.dir),
            "pg_wal.tar" => unpack(entry, &self.dir.join("pg_wal")),
            "backup_manifest" => {
                let mut out = std::fs::File::create(self.dir.join("backup_manifest"))?;
                pump(entry, &mut out, &self.cancel)?;
                Ok(())
            }
            other => {
                let Some(oid) = other
                    .strip_suffix(".tar")
                    .filter(|o| o.chars().all(|c| c.is_ascii_digit()))
                else {
                    tracing::debug!(member = other, "ignoring unknown snapshot member");
                    return Ok(());
                };
                // A tablespace: its original location may be in use on this
                // host, so it goes next to the data directory and the link
                // in pg_tblspc is repointed.
                let to = PathBuf::from(format!("{}-tablespace-{oid}", self.dir.display()));
                unpack(entry, &to)?;
                let link = self.dir.join("pg_tblspc").join(oid);
                let old = std::fs::read_link(&link).ok();
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&to, &link)?;
                warnings.push(format!(
                    "tablespace {oid} restored to {} (it was at {})",
                    to.display(),
                    old.map(|o| o.display().to_string())
                        .unwrap_or_else(|| "?".into())
                ));
                Ok(())
            }
        }
    }

    /// PostgreSQL starts only on a data directory that is private to its
    /// owner.
    pub(super) fn finish_snapshot(&self, as_root: bool) -> anyhow::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let version = self.dir.join("PG_VERSION");
        let meta = std::fs::metadata(&version).map_err(|_| {
            anyhow::anyhow!(
                "{} has no PG_VERSION after unpacking: the snapshot's base.tar is missing or damaged",
                self.dir.display()
            )
        })?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        if as_root {
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                self.dir.as_os_str(),
            ))?;
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::chown(c.as_ptr(), meta.uid(), meta.gid()) } != 0 {
                return Err(io::Error::last_os_error().into());
            }
            // pg_basebackup writes pg_wal.tar itself, with its own (here
            // root's) uid: PostgreSQL could not read those segments when
            // the archive lacks them ("Permission denied", PANIC).
            let wal = self.dir.join("pg_wal");
            if wal.symlink_metadata().is_ok() {
                chown_tree(&wal, meta.uid(), meta.gid())?;
            }
        }
        tracing::info!(
            dir = %self.dir.display(),
            version = %std::fs::read_to_string(&version).unwrap_or_default().trim(),
            "snapshot restored: start PostgreSQL of that major version on it"
        );
        Ok(())
    }
}

/// Gives `dir` and everything below it (symlinks not followed) to
/// `uid:gid`.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for e in std::fs::read_dir(dir)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}
