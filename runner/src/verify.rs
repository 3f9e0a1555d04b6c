//! Verifying a generation: re-read it and compare with its manifest
//! (pgBackRest's rule: checksummed on the way in, rechecked on the way out),
//! or restore it into a scratch database and compare.

mod replay;

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::source::postgres::ConnInfo;
use crate::source::postgres::fingerprint;
use crate::store::{Generation, Health, Verification};

/// Why a generation (or a copy of it) did not verify. The text is what its
/// manifest records, the log shows and the notice says.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not what its manifest says (size, sha256, a truncated
    /// entry, the number of file-tree entries): it is damaged.
    #[error("{0}")]
    Damaged(String),
    /// The restored copy differs from the dump's snapshot, one line per
    /// difference.
    #[error("restored copy differs from the dump: {}", .0.join("; "))]
    Differs(Vec<String>),
    /// The check could not be made: no DSN, no server, a client tool
    /// missing, the restore itself failed, or a scratch database stays.
    #[error("{0}")]
    CannotCheck(String),
    /// The copy at a destination, judged.
    #[error("copy at {dest}: {source}")]
    AtDestination {
        dest: String,
        source: Box<VerifyError>,
    },
}

/// A check that could not be made, in the words of what stopped it.
fn cannot(e: impl std::fmt::Display) -> VerifyError {
    VerifyError::CannotCheck(e.to_string())
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// Re-read the stored file: size and sha256 must match the manifest.
pub fn checksum(path: &Path, size: u64, sha256: &str) -> Result<String, VerifyError> {
    let meta = std::fs::metadata(path).map_err(unreadable(path))?;
    if meta.len() != size {
        return Err(VerifyError::Damaged(format!(
            "{} has {} bytes, its manifest says {size}",
            path.display(),
            meta.len()
        )));
    }
    let actual = crate::pipeline::sha256_file(path).map_err(unreadable(path))?;
    if actual != sha256 {
        return Err(VerifyError::Damaged(format!(
            "{} has sha256 {actual}, its manifest says {sha256}: the file is damaged",
            path.display()
        )));
    }
    Ok(format!("sha256 {sha256} matches"))
}

/// Record a verification in the manifest. A failed local check marks the
/// generation bad (it then no longer counts for retention), a passed one
/// makes an unverified one good; a failed check of a copy at a destination
/// (`remote:DEST`) judges that copy only: it is marked pending there, to be
/// shipped again at the next run.
pub fn record(g: &mut Generation, method: &str, result: &Result<String, VerifyError>) {
    let (ok, detail) = match result {
        Ok(d) => (true, d.clone()),
        Err(e) => (false, e.to_string()),
    };
    match method.strip_prefix("remote:") {
        Some(dest) if !ok => {
            let st = g
                .manifest
                .uploads
                .entry(dest.to_string())
                .or_insert_with(crate::store::UploadStatus::pending);
            st.state = crate::store::UploadState::Pending;
            st.last_error = Some(format!("verify: {detail}"));
        }
        Some(_) => {}
        None if !ok => g.manifest.health = Health::Bad,
        None if g.manifest.health == Health::Unverified => g.manifest.health = Health::Good,
        None => {}
    }
    g.manifest.verifications.push(Verification {
        at: Utc::now(),
        method: method.to_string(),
        ok,
        detail,
    });
}

/// Restore the generation somewhere disposable and check it came back:
/// dumps into a scratch database (dropped after) compared with the source's
/// fingerprint from the dump's snapshot (schema, database properties, every
/// table's checksum; row counts for generations without one), snapshots
/// checked with `pg_verifybackup` and, for a job with `wal = true`,
/// started with the archived WAL replayed onto them ([`replay`]), file
/// archives read to the end entry by entry. The client tools the restore
/// used are recorded in the manifest.
pub async fn restore(
    config: &crate::config::Config,
    job: &crate::config::Job,
    g: &mut Generation,
) -> Result<String, VerifyError> {
    let m = &g.manifest;
    let format: Option<crate::source::postgres::PgFormat> = m
        .format
        .as_deref()
        .map(|f| f.parse())
        .transpose()
        .map_err(cannot)?;
    match format {
        None => read_to_end(
            &g.path,
            m.layout,
            &m.compression,
            m.tree.as_ref().map(|t| t.entries),
        ),
        Some(crate::source::postgres::PgFormat::Snapshot) => {
            let checked = verify_snapshot(g).await?;
            match &job.wal {
                None => Ok(checked),
                Some(_) => replay::replay(config, job, g)
                    .await
                    .map(|d| format!("{checked}; {d}")),
            }
        }
        Some(f) => {
            let source = job
                .source
                .postgres()
                .map(|db| {
                    db.verify_dsn
                        .as_ref()
                        .unwrap_or(&db.dsn)
                        .expose()
                        .to_string()
                })
                .ok_or_else(|| cannot("no dsn to restore into"))?;
            let base = ConnInfo::parse(&source).map_err(cannot)?;
            let prefix = scratch_prefix(&job.name);
            // The job lock is held: a database with this prefix is a
            // leftover of a run that was killed before it could drop it.
            remove_leftovers(&base, &prefix).await;
            let scratch_db = format!("{prefix}{}", std::process::id());
            let scratch = with_database(&source, &scratch_db);
            let r =
                crate::restore::Restore::open(&g.path, m.layout, Some(f), m.compression, &m.sha256)
                    .await
                    .map_err(|e| cannot(format!("{e:#}")))?;
            let result = match r.restore_to_dsn(&scratch).await {
                Ok(report) => {
                    g.manifest.client_tools.extend(report.client_tools.clone());
                    compare(&base.with_dbname(&scratch_db), &g.manifest)
                        .await
                        .map(|d| {
                            format!("restored into a scratch database ({}): {d}", report.target)
                        })
                }
                Err(e) => Err(cannot(format!("{e:#}"))),
            };
            let dropped = drop_scratch(&base, &scratch_db).await;
            let detail = result?;
            dropped?;
            Ok(detail)
        }
    }
}

/// `offsite_verify_<job>_<hash>_`: the job's name as far as an identifier
/// allows, plus a hash of the whole name so two jobs never share a prefix
/// (`a-b` and `a_b`; long names cut at 63 bytes).
fn scratch_prefix(job: &str) -> String {
    use sha2::Digest;
    let tag: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(job.as_bytes()));
    format!("offsite_verify_{tag}_{}_", &hash[..8])
}

/// A maintenance database on the server `base` points at.
async fn admin_of(base: &ConnInfo) -> Result<(ConnInfo, u32), crate::source::postgres::PgError> {
    let admin = base.with_dbname("postgres");
    match crate::source::postgres::server_info(&admin).await {
        Ok(info) => Ok((admin, info.major())),
        Err(_) => {
            let admin = base.with_dbname("template1");
            let info = crate::source::postgres::server_info(&admin).await?;
            Ok((admin, info.major()))
        }
    }
}

/// Drops the scratch databases of this job that earlier, killed runs left.
async fn remove_leftovers(base: &ConnInfo, prefix: &str) {
    let Ok((admin, major)) = admin_of(base).await else {
        return;
    };
    let Ok(client) = admin.connect().await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1)",
            &[&prefix],
        )
        .await
    else {
        return;
    };
    for r in rows {
        let name: String = r.get(0);
        if !name[prefix.len()..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        match crate::source::postgres::drop_database(&admin, &name, major).await {
            Ok(()) => tracing::warn!(
                "removed the scratch database {name} that an interrupted verification left behind"
            ),
            Err(e) => tracing::warn!("cannot remove the leftover scratch database {name}: {e:#}"),
        }
    }
}

async fn drop_scratch(base: &ConnInfo, db: &str) -> Result<(), VerifyError> {
    let (admin, major) = admin_of(base).await.map_err(|e| {
        cannot(format!(
            "cannot connect to drop the scratch database {db}: {e}"
        ))
    })?;
    crate::source::postgres::drop_database(&admin, db, major)
        .await
        .map_err(|e| cannot(format!("cannot drop the scratch database {db}: {e:#}")))
}

/// The restored copy against the source: the full fingerprint when the
/// manifest has one, else the row counts.
async fn compare(scratch: &ConnInfo, m: &crate::store::Manifest) -> Result<String, VerifyError> {
    let Some(expected) = &m.fingerprint else {
        return compare_rows(scratch, m.table_rows.as_ref()).await;
    };
    let client = scratch
        .connect()
        .await
        .map_err(|e| cannot(format!("cannot connect to the scratch database: {e}")))?;
    let mut actual = fingerprint::catalog_and_data(&client)
        .await
        .map_err(|e| cannot(format!("reading the scratch database: {e}")))?;
    let info = crate::source::postgres::server_info(scratch)
        .await
        .map_err(cannot)?;
    let conn = scratch.clone();
    actual.schema_sha256 = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let tool = crate::source::postgres::find_tool("pg_dump", info.major(), false)?;
        fingerprint::schema_sha256(&tool, &conn, None, &Default::default())
    })
    .await
    .map_err(cannot)?
    .map_err(|e| cannot(format!("dumping the scratch database's schema: {e:#}")))?;
    let diffs = fingerprint::differences(expected, &actual);
    if diffs.is_empty() {
        Ok(format!(
            "{} tables, row counts match the dump's snapshot, and so do the schema, database properties and every table's checksum",
            expected.tables.len()
        ))
    } else {
        Err(VerifyError::Differs(diffs))
    }
}

/// The DSN with its database replaced (URL or key=value form).
pub fn with_database(dsn: &str, db: &str) -> String {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let (base, query) = match dsn.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (dsn, String::new()),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_part = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => base,
        };
        format!("{host_part}/{db}{query}")
    } else {
        let mut parts: Vec<String> = dsn
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .map(str::to_string)
            .collect();
        parts.push(format!("dbname={db}"));
        parts.join(" ")
    }
}

/// Decompress to the end; a tar is walked entry by entry, each read fully
/// (a sparse member to its real size, holes included), and its file-tree
/// members counted against the manifest's `tree.entries` when recorded.
fn read_to_end(
    path: &Path,
    layout: crate::source::Layout,
    c: &crate::pipeline::Compression,
    tree_entries: Option<u64>,
) -> Result<String, VerifyError> {
    let reader = crate::pipeline::open_decompressed(path, c).map_err(unreadable(path))?;
    match layout {
        crate::source::Layout::SqlStream => {
            let n =
                std::io::copy(&mut { reader }, &mut std::io::sink()).map_err(unreadable(path))?;
            Ok(format!("decompressed {n} bytes to the end"))
        }
        crate::source::Layout::Tar => {
            let mut ar = tar::Archive::new(reader);
            let mut entries = 0u64;
            let mut bytes = 0u64;
            let mut tree_members = 0u64;
            let damaged = |n: u64, e: std::io::Error| {
                VerifyError::Damaged(format!("{}: entry {n}: {e}", path.display()))
            };
            for e in ar.entries().map_err(unreadable(path))? {
                let mut e = e.map_err(|e| damaged(entries + 1, e))?;
                let want = e.size();
                if e.path_bytes()
                    .starts_with(crate::source::files::FILES_PREFIX.as_bytes())
                {
                    tree_members += 1;
                }
                let got = std::io::copy(&mut e, &mut std::io::sink())
                    .map_err(|err| damaged(entries + 1, err))?;
                if got != want {
                    return Err(VerifyError::Damaged(format!(
                        "{}: entry {} is truncated ({got} of {want} bytes)",
                        path.display(),
                        entries + 1
                    )));
                }
                entries += 1;
                bytes += got;
            }
            if let Some(n) = tree_entries
                && n != tree_members
            {
                return Err(VerifyError::Damaged(format!(
                    "{}: holds {tree_members} file-tree entries, its manifest says {n}",
                    path.display()
                )));
            }
            Ok(format!("read {entries} entries ({bytes} bytes) to the end"))
        }
    }
}

/// Unpacks snapshot generation `g` (sha256 checked first) as a data
/// directory at `target`.
async fn unpack_snapshot(g: &Generation, target: &Path) -> Result<(), VerifyError> {
    let m = &g.manifest;
    crate::restore::Restore::open(
        &g.path,
        m.layout,
        Some(crate::source::postgres::PgFormat::Snapshot),
        m.compression,
        &m.sha256,
    )
    .await
    .map_err(|e| cannot(format!("{e:#}")))?
    .restore_to_dir(target, false)
    .await
    .map_err(|e| cannot(format!("{e:#}")))?;
    Ok(())
}

/// The server's major version a snapshot's manifest records (`15.4` →
/// 15; 15 when it records none).
fn snapshot_major(m: &crate::store::Manifest) -> u32 {
    m.server_version
        .as_deref()
        .and_then(crate::source::postgres::tools::parse_version)
        .map(|(major, _)| major)
        .unwrap_or(15)
}

/// Extract the snapshot to a scratch directory and run pg_verifybackup on it.
async fn verify_snapshot(g: &Generation) -> Result<String, VerifyError> {
    let m = &g.manifest;
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(g.path.parent().unwrap_or(Path::new("/tmp")))
        .map_err(cannot)?;
    let target = scratch.path().join("data");
    unpack_snapshot(g, &target).await?;
    let major = snapshot_major(m);
    let tool =
        crate::source::postgres::find_tool("pg_verifybackup", major, true).map_err(cannot)?;
    let out = tokio::process::Command::new(&tool.path)
        .arg("--no-parse-wal")
        .arg(&target)
        .output()
        .await
        .map_err(|e| cannot(format!("cannot run pg_verifybackup: {e}")))?;
    if out.status.success() {
        Ok("pg_verifybackup: backup successfully verified".into())
    } else {
        Err(VerifyError::Damaged(format!(
            "pg_verifybackup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The restored copy must hold exactly the rows the dump's snapshot held.
async fn compare_rows(
    scratch: &ConnInfo,
    expected: Option<&std::collections::BTreeMap<String, i64>>,
) -> Result<String, VerifyError> {
    let Some(expected) = expected else {
        return Ok("restore succeeded (no row counts recorded to compare)".into());
    };
    let client = scratch
        .connect()
        .await
        .map_err(|e| cannot(format!("cannot connect to the scratch database: {e}")))?;
    let actual = crate::source::postgres::count_rows(&client)
        .await
        .map_err(|e| cannot(format!("counting rows in the scratch database: {e}")))?;
    let mut diffs = vec![];
    for (table, want) in expected {
        match actual.get(table) {
            Some(got) if got == want => {}
            Some(got) => diffs.push(format!("{table}: {got} rows restored, {want} dumped")),
            None => diffs.push(format!(
                "{table}: missing after restore ({want} rows dumped)"
            )),
        }
    }
    if diffs.is_empty() {
        Ok(format!(
            "{} tables, row counts match the dump's snapshot",
            expected.len()
        ))
    } else {
        Err(VerifyError::Differs(diffs))
    }
}
