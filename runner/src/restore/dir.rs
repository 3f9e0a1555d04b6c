//! Restoring to a directory (`--to-dir`): file trees under it, each at its
//! original absolute path, and a snapshot as a data directory (see
//! [`super::snapshot`]).

use std::io;
use std::path::{Path, PathBuf};

use super::{Restore, RestoreReport};
use crate::exec::Cancel;
use crate::pipeline::{self, Compression};
use crate::source::files::{FILES_PREFIX, TreeExtractor};
use crate::source::postgres::PgFormat;
use crate::source::{GLOBALS_MEMBER, Layout};

/// [`Restore::restore_to_dir`]: refuses a non-empty target (unless
/// `force`) or one without room, then unpacks on a blocking thread.
pub(super) async fn restore(r: &Restore, dir: &Path, force: bool) -> anyhow::Result<RestoreReport> {
    if r.layout == Layout::SqlStream {
        anyhow::bail!(
            "this generation is a SQL dump: restore it with --to-dsn DSN, or get the SQL with --output FILE"
        );
    }
    let dir = std::path::absolute(dir)?;
    let snapshot = r.format == Some(PgFormat::Snapshot);
    let files_dir = if snapshot {
        PathBuf::from(format!("{}-files", dir.display()))
    } else {
        dir.clone()
    };
    if !force {
        for d in [&dir, &files_dir] {
            refuse_non_empty(d)?;
        }
    }
    if let Some(needed) = r.space_needed {
        crate::source::files::check_space(&files_dir, needed)?;
    }
    let job = DirRestore {
        path: r.path.clone(),
        compression: r.compression,
        dir: dir.clone(),
        files_dir,
        cancel: Cancel::default(),
    };
    let cancel = job.cancel.clone();
    let mut guard = cancel.on_drop();
    let warnings = tokio::task::spawn_blocking(move || job.run()).await??;
    guard.disarm();
    Ok(RestoreReport {
        target: dir.display().to_string(),
        created_database: false,
        warnings,
        ..RestoreReport::default()
    })
}

fn refuse_non_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{} is not empty — restore into a new or empty directory, or pass --force to restore over what is there",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
    }
}

/// One restore to a directory, run on a blocking thread.
pub(super) struct DirRestore {
    path: PathBuf,
    compression: Compression,
    pub(super) dir: PathBuf,
    files_dir: PathBuf,
    pub(super) cancel: Cancel,
}

impl DirRestore {
    /// Reads the generation once: `files/…` members through a
    /// [`TreeExtractor`], `snapshot/…` members into the data directory;
    /// the database dump is skipped (with a warning, or an error when
    /// nothing else was there).
    fn run(self) -> anyhow::Result<Vec<String>> {
        let input = pipeline::open_decompressed(&self.path, &self.compression)?;
        let mut archive = tar::Archive::new(input);
        let mut warnings = Vec::new();
        let mut files: Option<TreeExtractor> = None;
        let mut snapshot = false;
        let mut skipped_db = false;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        for entry in archive.entries()? {
            self.cancel.check()?;
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if name.starts_with(FILES_PREFIX) {
                if files.is_none() {
                    files = Some(TreeExtractor::new(&self.files_dir)?);
                }
                files.as_mut().expect("set").extract(&mut entry)?;
            } else if let Some(member) = name.strip_prefix("snapshot/") {
                snapshot = true;
                std::fs::create_dir_all(&self.dir)?;
                self.snapshot_member(member, &mut entry, as_root, &mut warnings)?;
            } else if name == GLOBALS_MEMBER || name.starts_with("database") {
                skipped_db = true;
            }
        }
        let mut restored = false;
        if let Some(f) = files {
            let (n, w) = f.finish()?;
            warnings.extend(w);
            tracing::info!(entries = n, dir = %self.files_dir.display(), "file trees restored");
            restored = true;
        }
        if snapshot {
            self.finish_snapshot(as_root)?;
            restored = true;
        }
        if skipped_db {
            let msg =
                "the database dump in this generation was not restored: restore it with --to-dsn"
                    .to_string();
            if !restored {
                anyhow::bail!("{msg} (it holds nothing for a directory)");
            }
            warnings.push(msg);
        }
        if !restored {
            anyhow::bail!(
                "{} holds nothing to restore to a directory",
                self.path.display()
            );
        }
        Ok(warnings)
    }
}
