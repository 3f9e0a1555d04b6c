//! Sealing a volume: its catalog slice and the tar end blocks are appended
//! as the last frames, then the seek table; the file is fsynced, renamed
//! from its open name to its final name, hashed, and its manifest written
//! (the commit marker). The catalog records it sealed, with a pending copy
//! for every destination.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use anyhow::{Context, Result};
use chrono::Utc;

use super::catalog::{Catalog, VolumeRow};
use super::volume::{self, TAR_END, TarMeta, VolumeWriter};
use super::{ArchiveDir, VolumeManifest, at_ns};

/// Seal `vol` (written through `w`) at `now`; returns its final name. The
/// caller commits the catalog transaction.
pub fn seal(
    dir: &ArchiveDir,
    cat: &Catalog,
    vol: &VolumeRow,
    mut w: VolumeWriter,
    now: i64,
    dests: &[String],
) -> Result<String> {
    let open = dir.open_path(&vol.name);
    let spool_path = dir.volumes().join(format!(".slice-{}", vol.name));
    let result = (|| -> Result<()> {
        let mut spool = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spool_path)
            .with_context(|| format!("creating {}", spool_path.display()))?;
        {
            let mut out = BufWriter::new(&mut spool);
            cat.for_each_slice_line(vol.id, |line| {
                serde_json::to_writer(&mut out, line)?;
                out.write_all(b"\n")?;
                Ok(())
            })?;
            out.flush()?;
        }
        let size = spool.stream_position()?;
        spool.seek(SeekFrom::Start(0))?;
        let header = volume::tar_header(
            volume::slice_member_path(&vol.name).as_bytes(),
            &TarMeta {
                size,
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime_secs: now.div_euclid(1_000_000_000),
            },
        )?;
        let a = w.append_chunked(&header, &mut spool, size, u64::MAX)?;
        cat.add_frames(vol.id, &a.frames)?;
        let end = w.append_frame(&[&TAR_END])?;
        cat.add_frames(vol.id, &[end])?;
        let mut frames = vec![];
        cat.for_each_frame(vol.id, |f| frames.push(f))?;
        w.finish(frames.into_iter())?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&spool_path);
    result
        .map_err(|e| crate::disk::explain(e, &open))
        .with_context(|| format!("sealing volume {}", vol.name))?;
    let sealed = dir.sealed_path(&vol.name);
    std::fs::rename(&open, &sealed)
        .with_context(|| format!("renaming {} to {}", open.display(), sealed.display()))?;
    std::fs::File::open(dir.volumes())?.sync_all()?;
    finish_sealed(dir, cat, vol, now, dests)?;
    tracing::info!("job {}: sealed volume {}", dir.job, vol.name);
    Ok(vol.name.clone())
}

/// The part of sealing after the rename: hash, manifest, catalog.
fn finish_sealed(
    dir: &ArchiveDir,
    cat: &Catalog,
    vol: &VolumeRow,
    now: i64,
    dests: &[String],
) -> Result<()> {
    let sealed = dir.sealed_path(&vol.name);
    let size = std::fs::metadata(&sealed)?.len();
    let sha256 = crate::pipeline::sha256_file(&sealed)
        .with_context(|| format!("hashing {}", sealed.display()))?;
    let (members, content_bytes, _, _) = cat.volume_span(vol.id)?;
    let m = VolumeManifest {
        version: 1,
        job: dir.job.clone(),
        kind: "archive-volume".into(),
        name: vol.name.clone(),
        seq: vol.seq,
        opened: at_ns(vol.opened_at),
        sealed: at_ns(now),
        size,
        sha256: sha256.clone(),
        members,
        content_bytes,
    };
    crate::store::write_atomic(
        &dir.manifest_path(&vol.name),
        &serde_json::to_vec_pretty(&m)?,
    )?;
    cat.seal(vol.id, now, size, &sha256, dests)?;
    Ok(())
}

/// A run that died while sealing: if the open volume already has its final
/// name, finish the seal; if its open file is gone otherwise, say so.
pub fn recover(dir: &ArchiveDir, cat: &Catalog, dests: &[String]) -> Result<()> {
    let Some(vol) = cat.open_volume()? else {
        return Ok(());
    };
    let open = dir.open_path(&vol.name);
    let sealed = dir.sealed_path(&vol.name);
    if open.exists() {
        return Ok(());
    }
    if sealed.exists() {
        tracing::warn!(
            "job {}: finishing the seal of {} (an earlier run stopped after renaming it)",
            dir.job,
            vol.name
        );
        return finish_sealed(dir, cat, &vol, crate::archive::ns(Utc::now()), dests);
    }
    if vol.len > 0 {
        anyhow::bail!(
            "the open volume {} is missing ({} bytes were committed): its files are not protected; \
             the catalog still lists them — move the catalog aside to start over",
            open.display(),
            vol.len
        );
    }
    Ok(())
}
