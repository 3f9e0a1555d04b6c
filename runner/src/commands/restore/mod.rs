//! `offsite restore JOB [--generation NAME|latest] [--from DEST]
//! (--to-dsn DSN | --to-dir DIR | --output FILE) [--force]`.
//!
//! Takes the local copy, or with `--from` fetches the copy at that
//! destination. The sha256 is checked before anything is applied: against
//! the manifest that travelled with the copy, else the local manifest of the
//! same generation; where neither exists (a destination that keeps no
//! manifests, on a machine whose local store is gone) the restore says
//! plainly that it applies the copy unchecked.

pub mod pitr;

use std::path::PathBuf;

use crate::config::{Config, Job};
use crate::pipeline::Compression;
use crate::restore::Restore;
use crate::source::Layout;
use crate::source::postgres::PgFormat;
use crate::store::{JobStore, Manifest, UploadState};

pub enum Target {
    Dsn(String),
    Dir(PathBuf),
    File(PathBuf),
}

/// What the sha256 of the copy to restore is checked against.
enum Check {
    /// The local generation's own manifest (no `--from`).
    Local,
    /// The manifest fetched from the destination beside the copy.
    RemoteManifest(String),
    /// The local manifest of the same generation: the destination keeps none.
    LocalManifestFor(String),
    /// Nothing to check against.
    Unchecked(String),
}

impl Check {
    fn describe(&self) -> String {
        match self {
            Check::Local => "sha256 checked against the local manifest".into(),
            Check::RemoteManifest(d) => {
                format!("sha256 checked against the manifest fetched from {d}")
            }
            Check::LocalManifestFor(d) => format!(
                "sha256 checked against the local manifest ({d} keeps no manifest of this generation)"
            ),
            Check::Unchecked(d) => format!(
                "sha256 NOT checked: {d} keeps no manifest of this generation and the local store has none; the copy is applied as fetched"
            ),
        }
    }
}

pub async fn restore(
    config: &Config,
    job_name: &str,
    generation: Option<&str>,
    from: Option<&str>,
    target: Target,
    force: bool,
) -> anyhow::Result<bool> {
    let job = config
        .job(job_name)
        .map_err(|e| anyhow::anyhow!(e))?
        .clone();
    let wanted = generation.unwrap_or("latest");
    let store = JobStore::new(&config.runner.backup_dir, &job.name);
    let scratch;
    let (path, what, check) = match from {
        None => {
            let g = store.find(wanted).map_err(|e| {
                anyhow::anyhow!("{e:#}; to fetch it from a destination, add --from DEST")
            })?;
            (g.path, Described::from(&g.manifest)?, Check::Local)
        }
        Some(dest) => {
            let rt = crate::runtime::open(config.clone()).await?;
            let name = if wanted == "latest" {
                newest_at(&rt, &store, &job.name, dest).await?
            } else {
                wanted.to_string()
            };
            std::fs::create_dir_all(&store.dir)?;
            scratch = tempfile::Builder::new()
                .prefix(".restore-")
                .tempdir_in(&store.dir)?;
            let fetched = crate::ship::fetch(&rt, &job.name, dest, &name, scratch.path()).await?;
            let (what, check) = match fetched.manifest {
                Some(m) => (
                    Described::from(&m)?,
                    Check::RemoteManifest(dest.to_string()),
                ),
                None => match store.find(&name) {
                    Ok(g) => (
                        Described::from(&g.manifest)?,
                        Check::LocalManifestFor(dest.to_string()),
                    ),
                    Err(_) => (
                        Described::by_name(&job, &name)?,
                        Check::Unchecked(dest.to_string()),
                    ),
                },
            };
            (fetched.data, what, check)
        }
    };
    let check_line = check.describe();
    tracing::info!("job {}: restoring {} ({check_line})", job.name, what.name);
    let r = match &what.sha256 {
        Some(sha256) => {
            Restore::open(&path, what.layout, what.format, what.compression, sha256).await?
        }
        None => {
            tracing::warn!("job {}: {}: {check_line}", job.name, what.name);
            Restore::open_unchecked(&path, what.layout, what.format, what.compression)?
        }
    }
    .with_jobs(job.source.postgres().map_or(2, |db| db.jobs))
    .with_space_needed(what.space_needed);
    let report = match target {
        Target::Dsn(dsn) => r.restore_to_dsn(&dsn).await?,
        Target::Dir(dir) => r.restore_to_dir(&dir, force).await?,
        Target::File(f) => r.restore_to_file(&f).await?,
    };
    for w in &report.warnings {
        tracing::warn!("job {}: {w}", job.name);
    }
    println!("{check_line}");
    println!("restored {} into {}", what.name, report.target);
    Ok(true)
}

/// `latest` at a destination: the newest generation it lists; where it
/// cannot list (TFTP, shell-compat), the newest good generation the local
/// store records as shipped there.
async fn newest_at(
    rt: &crate::runtime::Runtime,
    store: &JobStore,
    job: &str,
    dest: &str,
) -> anyhow::Result<String> {
    match crate::ship::newest_remote(rt, job, dest).await {
        Ok(name) => Ok(name),
        Err(listing) => {
            let shipped = store
                .generations()
                .unwrap_or_default()
                .into_iter()
                .rev()
                .find(|g| {
                    g.manifest.is_good()
                        && g.manifest
                            .uploads
                            .get(dest)
                            .is_some_and(|u| u.state == UploadState::Done)
                });
            match shipped {
                Some(g) => {
                    tracing::info!(
                        "job {job}: {dest} cannot list; {} is the newest good generation the local store records as shipped there",
                        g.manifest.name
                    );
                    Ok(g.manifest.name)
                }
                None => Err(listing),
            }
        }
    }
}

/// What a restore needs to know of the generation it applies.
struct Described {
    name: String,
    layout: Layout,
    format: Option<PgFormat>,
    compression: Compression,
    /// `None`: nothing to check the copy against.
    sha256: Option<String>,
    /// Disk space the file trees need (manifest `tree.restore_bytes`).
    space_needed: Option<u64>,
}

impl Described {
    fn from(m: &Manifest) -> anyhow::Result<Described> {
        Ok(Described {
            name: m.name.clone(),
            layout: m.layout,
            format: m
                .format
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("the manifest of {}: {e}", m.name))?,
            compression: m.compression,
            sha256: Some(m.sha256.clone()),
            space_needed: m.tree.as_ref().map(|t| t.restore_bytes),
        })
    }

    /// A generation that has no manifest anywhere: layout and compression
    /// from its name, the format from the job.
    fn by_name(job: &Job, name: &str) -> anyhow::Result<Described> {
        let layout = Layout::from_file_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not a generation file name (<job>-<UTC>.sql|tar[.zst|.gz]) and no manifest describes it"
            )
        })?;
        let format = match job.source.format() {
            Some(_) if layout == Layout::SqlStream => Some(PgFormat::Sql),
            format => format,
        };
        Ok(Described {
            name: name.to_string(),
            layout,
            format,
            compression: Compression::from_file_name(name),
            sha256: None,
            space_needed: None,
        })
    }
}
