//! Shipping sealed volumes: each destination gets every sealed volume it
//! does not hold yet (oldest first: the oldest is the one most at risk of
//! the recorder deleting its files), the volume then its manifest, through
//! the destination's plugin. Transient failures are retried within the run;
//! what still fails stays pending and is tried again next run.

use std::time::Duration;

use anyhow::Result;

use super::catalog::{Catalog, VolumeRow};
use super::{ArchiveDir, MANIFEST_SUFFIX, ns};
use crate::plugin::{DestinationSession, ErrorKind, PluginError, Upload};
use crate::runtime::Runtime;
use crate::ship::Retry;

const BACKOFF: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(8)];

/// Ship every pending volume to every destination. Returns one line per
/// volume that could not be shipped.
pub async fn ship_pending(rt: &Runtime, dir: &ArchiveDir, dests: &[String]) -> Vec<String> {
    let cat = match Catalog::open(&dir.catalog()) {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot read the catalog: {e:#}")],
    };
    let mut errors = vec![];
    for dest in dests {
        let todo = match cat.pending_at(dest) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{dest}: cannot read the catalog: {e:#}"));
                continue;
            }
        };
        if todo.is_empty() {
            continue;
        }
        let mut s: Option<DestinationSession> = None;
        for v in todo {
            let mut retry = Retry::new(&BACKOFF);
            let r = loop {
                let r = upload_pair(rt, dir, dest, &mut s, &v).await;
                let what = || format!("job {}: upload of {} to {dest}", dir.job, v.name);
                if !retry.again(&r, &mut s, what).await {
                    break r;
                }
            };
            let now = ns(chrono::Utc::now());
            let recorded = match &r {
                Ok(()) => cat.set_copy(v.id, dest, "done", Some(now), None),
                Err(e) => cat.set_copy(v.id, dest, "failed", Some(now), Some(&e.to_string())),
            };
            if let Err(e) = recorded {
                errors.push(format!(
                    "{dest}: {}: shipped but not recorded: {e:#}",
                    v.name
                ));
            }
            match r {
                Ok(()) => tracing::info!("job {}: {} shipped to {dest}", dir.job, v.name),
                Err(e) => errors.push(format!("upload of {} to {dest} failed: {e}", v.name)),
            }
        }
    }
    errors
}

/// The volume, then its manifest (a destination that keeps no manifests
/// answers `unsupported`, which is fine).
async fn upload_pair(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    s: &mut Option<DestinationSession>,
    v: &VolumeRow,
) -> Result<(), PluginError> {
    if s.is_none() {
        *s = Some(
            crate::ship::open_named(rt, dest, &dir.job)
                .await
                .map_err(|e| PluginError::host(format!("{e:#}")))?,
        );
    }
    let sess = s.as_mut().expect("opened above");
    let path = dir.sealed_path(&v.name);
    let sha = v.sha256.clone().unwrap_or_default();
    sess.upload(&Upload {
        name: &v.name,
        local_path: &path,
        size: v.len,
        sha256: &sha,
        job: &dir.job,
    })
    .await?;
    let mpath = dir.manifest_path(&v.name);
    let bytes = std::fs::read(&mpath)
        .map_err(|e| PluginError::host(format!("{}: {e}", mpath.display())))?;
    let msha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    match sess
        .upload(&Upload {
            name: &format!("{}{MANIFEST_SUFFIX}", v.name),
            local_path: &mpath,
            size: bytes.len() as u64,
            sha256: &msha,
            job: &dir.job,
        })
        .await
    {
        Err(e) if e.kind == ErrorKind::Unsupported => Ok(()),
        other => other,
    }
}
