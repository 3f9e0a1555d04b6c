//! `offsite catalog rebuild JOB --from DEST`: a new catalog from the
//! volumes at a destination alone (Bacula's `bscan`). Each volume is
//! fetched (into the bounded cache), checked against its manifest, and its
//! catalog slice — the frame before the tar end blocks, found through the
//! seek table — is replayed in volume order. The new catalog is built
//! beside the old one and renamed over it only when complete.

use std::io::{BufRead, Read, Seek, SeekFrom};

use anyhow::{Context, Result};

use super::catalog::{Catalog, SliceLine, VolumeRow};
use super::{ArchiveDir, MANIFEST_SUFFIX, VolumeManifest, fetch, ns};
use crate::runtime::Runtime;

/// What a rebuild found.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub volumes: u64,
    pub members: u64,
    pub gone: u64,
}

pub async fn rebuild(
    rt: &Runtime,
    dir: &ArchiveDir,
    dest: &str,
    cache_limit: u64,
) -> Result<Rebuilt> {
    let mut s = crate::ship::open_named(rt, dest, &dir.job).await?;
    let objs = s
        .list(&format!("{}.vol-", dir.job))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list {dest}: {e}"))?;
    let mut names: Vec<String> = objs
        .into_iter()
        .map(|o| o.name)
        .filter(|n| dir.is_volume(n))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        anyhow::bail!(
            "{dest} holds no volumes of job {} (names {}.vol-NNNNNN.tar.zst)",
            dir.job,
            dir.job
        );
    }
    std::fs::create_dir_all(&dir.root)?;
    let new_path = dir.root.join("catalog.sqlite.rebuild");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", new_path.display()));
    }
    let scratch = dir.cache();
    std::fs::create_dir_all(&scratch)?;
    let mut out = Rebuilt::default();
    {
        let cat = Catalog::open(&new_path)?;
        cat.begin()?;
        for name in &names {
            let m = manifest(&mut s, dir, dest, name, &scratch).await?;
            let row = VolumeRow {
                id: 0,
                name: name.clone(),
                seq: m.seq,
                state: "sealed".into(),
                opened_at: ns(m.opened),
                sealed_at: Some(ns(m.sealed)),
                len: m.size,
                sha256: Some(m.sha256.clone()),
            };
            let held = fetch::cached(rt, dir, dest, &row, cache_limit).await?;
            let id = cat.insert_sealed(&row)?;
            cat.set_copy(id, dest, "done", Some(ns(m.sealed)), None)?;
            replay(&cat, id, &held.path, &mut out)
                .with_context(|| format!("reading the catalog slice of {name}"))?;
            out.volumes += 1;
        }
        cat.commit()?;
    }
    replace(dir, &new_path)?;
    Ok(out)
}

async fn manifest(
    s: &mut crate::plugin::DestinationSession,
    dir: &ArchiveDir,
    dest: &str,
    name: &str,
    scratch: &std::path::Path,
) -> Result<VolumeManifest> {
    let mname = format!("{name}{MANIFEST_SUFFIX}");
    let p = scratch.join(format!(".part-{mname}"));
    s.fetch(&mname, &dir.job, &p)
        .await
        .map_err(|e| anyhow::anyhow!("cannot fetch {mname} from {dest}: {e}"))?;
    let m: VolumeManifest = serde_json::from_slice(&std::fs::read(&p)?)
        .with_context(|| format!("{mname} from {dest} is not a volume manifest"))?;
    let _ = std::fs::remove_file(&p);
    if m.name != name || m.job != dir.job {
        anyhow::bail!("{mname} from {dest} describes {} of job {}", m.name, m.job);
    }
    Ok(m)
}

/// Replay one volume's slice into `cat`.
fn replay(cat: &Catalog, volume_id: i64, path: &std::path::Path, out: &mut Rebuilt) -> Result<()> {
    let mut f = std::fs::File::open(path)?;
    let (off, len) = super::volume::slice_frame(&mut f)?;
    f.seek(SeekFrom::Start(off))?;
    let lines = super::volume::read_slice(Box::new(f.take(len)))?;
    for line in lines.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let l: SliceLine = serde_json::from_str(&line)?;
        match &l {
            SliceLine::Member(_) => out.members += 1,
            SliceLine::Gone { .. } => out.gone += 1,
        }
        cat.apply_slice_line(volume_id, &l)?;
    }
    Ok(())
}

/// Put the rebuilt catalog in place; an existing one is kept beside it,
/// and an open volume it knew of is set aside (its files are archived
/// again by the next run).
fn replace(dir: &ArchiveDir, new_path: &std::path::Path) -> Result<()> {
    let cur = dir.catalog();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    if cur.exists() {
        let old = dir
            .root
            .join(format!("catalog.sqlite.before-rebuild-{stamp}"));
        std::fs::rename(&cur, &old)?;
        tracing::warn!("the previous catalog is kept as {}", old.display());
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", cur.display()));
    }
    if let Ok(rd) = std::fs::read_dir(dir.volumes()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix(".open-") {
                let aside = dir.volumes().join(format!(".orphan-{stamp}-{rest}"));
                std::fs::rename(e.path(), &aside)?;
                tracing::warn!(
                    "the open volume {rest} is not in the rebuilt catalog; kept as {}",
                    aside.display()
                );
            }
        }
    }
    std::fs::rename(new_path, &cur)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", new_path.display()));
    }
    Ok(())
}
