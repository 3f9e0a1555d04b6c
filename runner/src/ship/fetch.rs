//! Reading a destination: a generation (and the manifest beside it)
//! fetched, the newest one, the list of them. Used by restore, `verify
//! --remote` and `list`.

use std::path::{Path, PathBuf};

use chrono::Utc;

use super::open_named;
use crate::plugin::ErrorKind;
use crate::runtime::Runtime;
use crate::store::{MANIFEST_SUFFIX, Manifest};

/// A generation fetched from a destination into a scratch folder.
pub struct FetchedGeneration {
    pub data: PathBuf,
    /// The manifest that travelled beside it; `None` where the destination
    /// keeps no manifests (it answered `unsupported` or `not-found` for it).
    pub manifest: Option<Manifest>,
}

/// Used by restore and remote verify: fetch a generation (and its manifest,
/// where the destination keeps one) from a destination into `dir`.
pub async fn fetch(
    rt: &Runtime,
    job: &str,
    dest: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<FetchedGeneration> {
    let mut s = open_named(rt, dest, job).await?;
    let mname = format!("{name}{MANIFEST_SUFFIX}");
    let mpath = dir.join(&mname);
    let manifest = match s.fetch(&mname, job, &mpath).await {
        Ok(_) => Some(
            serde_json::from_slice(&std::fs::read(&mpath)?).map_err(|e| {
                anyhow::anyhow!("the manifest {mname} from {dest} is unreadable: {e}")
            })?,
        ),
        Err(e) if matches!(e.kind, ErrorKind::Unsupported | ErrorKind::NotFound) => {
            tracing::info!("job {job}: {dest} holds no manifest of {name} ({e})");
            None
        }
        Err(e) => anyhow::bail!("cannot fetch the manifest {mname} from {dest}: {e}"),
    };
    let data = dir.join(name);
    tracing::info!("job {job}: fetching {name} from {dest}");
    s.fetch(name, job, &data).await?;
    Ok(FetchedGeneration { data, manifest })
}

/// The newest generation name a destination lists for the job.
pub async fn newest_remote(rt: &Runtime, job: &str, dest: &str) -> anyhow::Result<String> {
    let mut s = open_named(rt, dest, job).await?;
    let objs = s.list(&format!("{job}-")).await.map_err(|e| {
        anyhow::anyhow!("cannot list {dest} ({e}); name the generation with --generation")
    })?;
    // Exactly this job's: `shop-staging-…` is not a generation of `shop`,
    // and a generation stamped in the future is not the newest.
    let now = Utc::now();
    let (future, real): (Vec<String>, Vec<String>) = objs
        .into_iter()
        .filter_map(|o| crate::store::manifest_of(job, &o.name).map(str::to_string))
        .partition(|n| stamp_of(job, n).is_some_and(|t| t > now + crate::store::FUTURE_SLACK));
    let newest = real
        .into_iter()
        .max()
        .ok_or_else(|| anyhow::anyhow!("{dest} holds no generation of job {job}"))?;
    tracing::info!(
        "job {job}: latest at {dest} is {newest}: the newest generation listed there{}",
        if future.is_empty() {
            String::new()
        } else {
            format!(
                "; skipped {} (stamped in the future of now, made with a wrong clock)",
                future.join(", ")
            )
        }
    );
    Ok(newest)
}

/// The generations of `job` a destination holds, by its own list and the
/// manifests shipped beside each (`<name>.manifest.json`), oldest first:
/// what `list` and `verify --remote` go by when the local store is gone.
/// A listed generation whose manifest cannot be read comes back as an
/// error line instead.
pub async fn remote_generations(
    rt: &Runtime,
    job: &str,
    dest: &str,
    scratch: &Path,
) -> anyhow::Result<Vec<Result<Manifest, String>>> {
    let mut s = open_named(rt, dest, job).await?;
    let objs = s
        .list(&format!("{job}-"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list {dest}: {e}"))?;
    let mut names: Vec<String> = objs
        .iter()
        .filter_map(|o| crate::store::manifest_of(job, &o.name).map(str::to_string))
        .collect();
    names.sort();
    let mut out = vec![];
    for name in names {
        let mname = format!("{name}{MANIFEST_SUFFIX}");
        let mpath = scratch.join(&mname);
        let m = match s.fetch(&mname, job, &mpath).await {
            Ok(_) => std::fs::read(&mpath)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("{name}: the manifest at {dest} is unreadable: {e}")),
            Err(e) => Err(format!(
                "{name}: cannot fetch its manifest from {dest}: {e}"
            )),
        };
        out.push(m);
    }
    Ok(out)
}

/// The time in a generation name of `job` (`<job>-<YYYYMMDDTHHMMSSZ>.<ext>`).
pub fn stamp_of(job: &str, name: &str) -> Option<chrono::DateTime<Utc>> {
    let stamp = name.get(job.len() + 1..job.len() + 17)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}
