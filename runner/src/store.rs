//! Generations on local disk: `<backup_dir>/<job>/<job>-<UTC>.<ext>` and a
//! manifest beside each.
//!
//! The manifest is written last, atomically: a data file without one is an
//! interrupted run and never counts as a generation (restic's rule: a
//! snapshot exists only once its last write is done).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
    /// Not shipped yet, the last attempt failed, or a remote verify found
    /// the copy missing or damaged: shipped at the next run.
    Pending,
    /// Confirmed at the destination.
    Done,
    /// Never shipped: `keep` newer good copies were confirmed there first.
    Superseded,
    /// Rotation removed the copy there.
    Removed,
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
    pub fingerprint: Option<crate::source::postgres::fingerprint::Fingerprint>,
    /// PostgreSQL client tools by name (`pg_dump`, `pg_dumpall`,
    /// `pg_basebackup`; `psql`, `pg_restore` once a restore verification
    /// ran), with the version each reported and whether it matched the
    /// server's major version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_tools: BTreeMap<String, crate::source::postgres::tools::ToolRecord>,
    /// A snapshot's WAL range (start, end, timeline), recorded when it was
    /// taken; generations written before offsite recorded it lack it, and
    /// readers fall back to the `backup_manifest` inside the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_wal: Option<crate::source::postgres::WalRange>,
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
        self.state_at(dest) == Some(UploadState::Pending)
    }

    pub fn done_at(&self, dest: &str) -> bool {
        self.state_at(dest) == Some(UploadState::Done)
    }

    pub fn state_at(&self, dest: &str) -> Option<UploadState> {
        self.uploads.get(dest).map(|u| u.state.clone())
    }

    /// Stamped more than [`FUTURE_SLACK`] after `now`: made with a wrong
    /// clock. Such a generation never counts as the newest.
    pub fn is_future(&self, now: DateTime<Utc>) -> bool {
        self.started > now + FUTURE_SLACK
    }
}

/// How far ahead of the clock a generation's stamp may be before it is
/// taken for one made with a wrong clock (NTP steps are far smaller).
pub const FUTURE_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Whether `name` is a generation data file of `job` exactly:
/// `<job>-<YYYYMMDDTHHMMSSZ>.<ext>` with a known extension. `shop-staging-…`
/// is not a generation of `shop`, nor is a temporary or a manifest.
pub fn is_generation_of(job: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(job).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'.'
        && Layout::from_file_name(&rest[16..]).is_some()
        && !rest[17..].contains(['/', '-'])
}

/// Whether `name` is the manifest of a generation of `job` exactly; the
/// generation's name when it is.
pub fn manifest_of<'a>(job: &str, name: &'a str) -> Option<&'a str> {
    name.strip_suffix(MANIFEST_SUFFIX)
        .filter(|g| is_generation_of(job, g))
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
            let now = Utc::now();
            let skipped: Vec<String> = gens
                .iter()
                .filter(|g| g.manifest.is_future(now))
                .map(|g| g.manifest.name.clone())
                .collect();
            let picked = gens
                .into_iter()
                .rev()
                .find(|g| g.manifest.is_good() && !g.manifest.is_future(now));
            if let Some(g) = &picked {
                tracing::info!(
                    "job {}: latest is {}: the newest good generation{}",
                    self.job,
                    g.manifest.name,
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; skipped {} (stamped in the future of now, made with a wrong clock)",
                            skipped.join(", ")
                        )
                    }
                );
            }
            return picked.with_context(|| {
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
        if let Err(e) = f.try_lock() {
            if let std::fs::TryLockError::Error(e) = e {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
            // The holder writes its pid right after taking the lock: a
            // refusal in between finds the file empty.
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => format!("another process holds {}", path.display()),
                pid => format!("pid {pid}"),
            };
            anyhow::bail!(
                "job {} is already running ({holder}); a job never runs twice at once",
                store.job
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

    #[test]
    fn generation_names_match_their_job_exactly() {
        assert!(is_generation_of("shop", "shop-20260102T030405Z.sql.zst"));
        assert!(is_generation_of("shop", "shop-20260102T030405Z.tar"));
        assert!(!is_generation_of(
            "shop",
            "shop-staging-20260102T030405Z.sql.zst"
        ));
        assert!(!is_generation_of(
            "shop-staging",
            "shop-20260102T030405Z.sql.zst"
        ));
        assert!(!is_generation_of(
            "shop",
            "shop-20260102T030405Z.sql.zst.manifest.json"
        ));
        assert!(!is_generation_of(
            "shop",
            ".shop-20260102T030405Z.sql.zst.part"
        ));
        assert!(!is_generation_of(
            "shop",
            "shop-20260102T030405Z.sql.zst.offsite-part"
        ));
        assert!(!is_generation_of("shop", "shop-2026010T030405Z.sql"));
        assert_eq!(
            manifest_of("shop", "shop-20260102T030405Z.sql.manifest.json"),
            Some("shop-20260102T030405Z.sql")
        );
        assert_eq!(
            manifest_of("shop", "shop-staging-20260102T030405Z.sql.manifest.json"),
            None
        );
    }

    #[test]
    fn stems_sort_by_time() {
        let a = generation_stem("j", "2026-01-02T03:04:05Z".parse().unwrap());
        assert_eq!(a, "j-20260102T030405Z");
    }
}
