//! Generations on local disk: `<backup_dir>/<job>/<job>-<UTC>.<ext>` and a
//! manifest beside each.
//!
//! The manifest is written last, atomically: a data file without one is an
//! interrupted run and never counts as a generation (restic's rule: a
//! snapshot exists only once its last write is done).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pipeline::Compression;
use crate::source::Layout;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Where one destination stands with one generation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UploadState {
    /// Not shipped yet, or the last attempt failed: retried first next run.
    Pending,
    Done,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadStatus {
    pub state: UploadState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl UploadStatus {
    pub fn pending() -> Self {
        UploadStatus {
            state: UploadState::Pending,
            attempts: 0,
            last_error: None,
            at: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Written and (if asked) verified.
    Good,
    /// Failed verification: does not count for retention.
    Bad,
    /// Written, its verification not recorded yet (or the run died before
    /// it could record it): not counted good until a run verifies it.
    Unverified,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    pub at: DateTime<Utc>,
    /// checksum | restore | remote:<destination>
    pub method: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything known about one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub job: String,
    /// The data file's name, also its name at every destination.
    pub name: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub size: u64,
    /// Of the stored (compressed) bytes.
    pub sha256: String,
    /// postgres | files
    pub source: String,
    /// sql | custom | tar | directory | snapshot (postgres jobs)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub layout: Layout,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    pub globals_included: bool,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Rows per table in the dump's snapshot (verify = "restore" only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_rows: Option<BTreeMap<String, i64>>,
    /// File trees: entries and filesystem per root, bytes a restore needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<crate::source::tree_guard::TreeSummary>,
    /// The source database as the dump's snapshot saw it (verify =
    /// "restore" only): what the restored copy is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<crate::source::pg_fingerprint::Fingerprint>,
    /// PostgreSQL client tools by name (`pg_dump`, `pg_dumpall`,
    /// `pg_basebackup`; `psql`, `pg_restore` once a restore verification
    /// ran), with the version each reported and whether it matched the
    /// server's major version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_tools: BTreeMap<String, crate::source::pg_tools::ToolRecord>,
    pub health: Health,
    #[serde(default)]
    pub verifications: Vec<Verification>,
    /// Per destination name.
    #[serde(default)]
    pub uploads: BTreeMap<String, UploadStatus>,
}

impl Manifest {
    pub fn is_good(&self) -> bool {
        self.health == Health::Good
    }

    pub fn pending_for(&self, dest: &str) -> bool {
        self.uploads
            .get(dest)
            .is_some_and(|u| u.state == UploadState::Pending)
    }
}

/// A generation found on disk: its manifest and where it lives.
#[derive(Clone, Debug)]
pub struct Generation {
    pub manifest: Manifest,
    pub path: PathBuf,
}

impl Generation {
    pub fn manifest_path(&self) -> PathBuf {
        manifest_path(&self.path)
    }

    /// Rewrite the manifest (atomically) after a change.
    pub fn save(&self) -> Result<()> {
        write_atomic(
            &self.manifest_path(),
            &serde_json::to_vec_pretty(&self.manifest)?,
        )
    }
}

pub fn manifest_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(MANIFEST_SUFFIX);
    PathBuf::from(s)
}

/// `<job>-<UTC YYYYMMDDTHHMMSSZ>`: sorts by time as text.
pub fn generation_stem(job: &str, at: DateTime<Utc>) -> String {
    format!("{job}-{}", at.format("%Y%m%dT%H%M%SZ"))
}

/// The folder of one job's generations.
pub struct JobStore {
    pub dir: PathBuf,
    pub job: String,
}

impl JobStore {
    pub fn new(backup_dir: &Path, job: &str) -> JobStore {
        JobStore {
            dir: backup_dir.join(job),
            job: job.to_string(),
        }
    }

    /// Complete generations, oldest first. Unreadable manifests are
    /// reported, not fatal: one damaged file must not stop backups.
    pub fn generations(&self) -> Result<Vec<Generation>> {
        let mut out = vec![];
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(data_name) = name.strip_suffix(MANIFEST_SUFFIX) else {
                continue;
            };
            let data = self.dir.join(data_name);
            let manifest: Manifest = match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(
                        "job {}: ignoring unreadable manifest {}: {e}",
                        self.job,
                        path.display()
                    );
                    continue;
                }
            };
            if !data.exists() {
                tracing::error!(
                    "job {}: {} has a manifest but its data file is missing",
                    self.job,
                    data.display()
                );
                continue;
            }
            out.push(Generation {
                manifest,
                path: data,
            });
        }
        out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        Ok(out)
    }

    pub fn find(&self, name: &str) -> Result<Generation> {
        let gens = self.generations()?;
        if name == "latest" {
            return gens
                .into_iter()
                .rev()
                .find(|g| g.manifest.is_good())
                .with_context(|| {
                    format!(
                        "job {} has no good generation in {}",
                        self.job,
                        self.dir.display()
                    )
                });
        }
        let names: Vec<String> = gens.iter().map(|g| g.manifest.name.clone()).collect();
        gens.into_iter()
            .find(|g| g.manifest.name == name || g.manifest.name.starts_with(&format!("{name}.")))
            .with_context(|| {
                format!(
                    "job {} has no generation {name}; it has: {}",
                    self.job,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })
    }

    /// Remove what an interrupted run left: temporaries, spools, and data
    /// files that never got a manifest. Only while holding the job lock.
    pub fn clean_interrupted(&self) -> Result<Vec<PathBuf>> {
        let mut removed = crate::pipeline::remove_stale_temporaries(&self.dir).unwrap_or_default();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(removed);
        };
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let is_data = name.starts_with(&format!("{}-", self.job))
                && !name.ends_with(MANIFEST_SUFFIX)
                && Layout::from_file_name(name).is_some();
            if is_data && !manifest_path(&path).exists() {
                fs::remove_file(&path)?;
                removed.push(path);
            }
        }
        for p in &removed {
            tracing::warn!(
                "job {}: removed {} left by an interrupted run",
                self.job,
                p.display()
            );
        }
        Ok(removed)
    }
}

/// Which generations retention drops: all but the newest `keep` good ones.
/// Bad generations never count; they go once `keep` newer good ones exist.
/// The newest good generation is never dropped (keep ≥ 1).
pub fn to_drop(gens: &[Generation], keep: usize) -> Vec<usize> {
    let keep = keep.max(1);
    let mut good_seen = 0;
    let mut drop = vec![];
    for (i, g) in gens.iter().enumerate().rev() {
        if good_seen >= keep {
            drop.push(i);
        } else if g.manifest.is_good() {
            good_seen += 1;
        }
    }
    drop.reverse();
    drop
}

/// Write `bytes` to `path` so that readers see the old or the new content,
/// never a mix: temporary file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let result = (|| -> Result<()> {
        // Private like the generations it describes.
        let mut f = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().write(true).create(true).truncate(true),
            0o600,
        )
        .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
        .map_err(|e| crate::disk::explain(e, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// One run of a job at a time: an exclusive `flock` on `<job dir>/.lock`.
/// The kernel releases it when the holder dies, so a lock left by a killed
/// runner is simply taken over.
pub struct JobLock {
    _file: File,
}

impl JobLock {
    pub fn acquire(store: &JobStore) -> Result<JobLock> {
        fs::create_dir_all(&store.dir)
            .with_context(|| format!("cannot create the backup folder {}", store.dir.display()))?;
        let path = store.dir.join(".lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "job {} is already running (pid {}); a job never runs twice at once",
                store.job,
                holder.trim()
            );
        }
        f.set_len(0)
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .map_err(|e| crate::disk::explain(e.into(), &path))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(JobLock { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_(name: &str, good: bool) -> Generation {
        Generation {
            path: PathBuf::from(name),
            manifest: Manifest {
                version: 1,
                job: "j".into(),
                name: name.into(),
                started: Utc::now(),
                finished: Utc::now(),
                size: 1,
                sha256: String::new(),
                source: "files".into(),
                format: None,
                layout: Layout::Tar,
                compression: Compression::None,
                server_version: None,
                globals_included: false,
                paths: vec![],
                warnings: vec![],
                table_rows: None,
                tree: None,
                client_tools: BTreeMap::new(),
                fingerprint: None,
                health: if good { Health::Good } else { Health::Bad },
                verifications: vec![],
                uploads: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn retention_keeps_the_newest_good_ones_and_ignores_bad_ones() {
        let gens: Vec<_> = [
            ("a", true),
            ("b", true),
            ("c", false),
            ("d", true),
            ("e", false),
        ]
        .iter()
        .map(|(n, g)| gen_(n, *g))
        .collect();
        // keep 2 good: d and b; c (bad, between them) stays, a goes.
        assert_eq!(to_drop(&gens, 2), vec![0]);
        // keep 1: d stays; c, b, a go; e (bad, newest) stays.
        assert_eq!(to_drop(&gens, 1), vec![0, 1, 2]);
        assert_eq!(to_drop(&gens, 10), Vec::<usize>::new());
        // keep 0 is treated as 1: the newest good one survives.
        assert_eq!(to_drop(&gens, 0), vec![0, 1, 2]);
    }

    #[test]
    fn stems_sort_by_time() {
        let a = generation_stem("j", "2026-01-02T03:04:05Z".parse().unwrap());
        assert_eq!(a, "j-20260102T030405Z");
    }
}
