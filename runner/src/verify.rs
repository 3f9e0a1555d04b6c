//! Verifying a generation: re-read it and compare with its manifest
//! (pgBackRest's rule: checksummed on the way in, rechecked on the way out),
//! or restore it into a scratch database and compare.

use std::path::Path;

use chrono::Utc;

use crate::store::{Generation, Health, Verification};

/// Re-read the stored file: size and sha256 must match the manifest.
pub fn checksum(path: &Path, size: u64, sha256: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() != size {
        return Err(format!(
            "{} has {} bytes, its manifest says {size}",
            path.display(),
            meta.len()
        ));
    }
    let actual =
        crate::pipeline::sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if actual != sha256 {
        return Err(format!(
            "{} has sha256 {actual}, its manifest says {sha256}: the file is damaged",
            path.display()
        ));
    }
    Ok(format!("sha256 {sha256} matches"))
}

/// Record a verification in the manifest; a failure marks the generation
/// bad (it then no longer counts for retention), a success makes an
/// unverified one good.
pub fn record(g: &mut Generation, method: &str, result: &Result<String, String>) {
    let (ok, detail) = match result {
        Ok(d) => (true, d.clone()),
        Err(e) => (false, e.clone()),
    };
    if !ok {
        g.manifest.health = Health::Bad;
    } else if g.manifest.health == Health::Unverified {
        g.manifest.health = Health::Good;
    }
    g.manifest.verifications.push(Verification {
        at: Utc::now(),
        method: method.to_string(),
        ok,
        detail,
    });
}

/// Restore the generation somewhere disposable and check it came back:
/// dumps into a scratch database (dropped after), snapshots checked with
/// `pg_verifybackup`, file archives read to the end entry by entry.
pub async fn restore(job: &crate::config::Job, g: &Generation) -> Result<String, String> {
    let m = &g.manifest;
    let format: Option<crate::source::postgres::PgFormat> = m
        .format
        .as_deref()
        .map(|f| f.parse())
        .transpose()
        .map_err(|e| format!("{e}"))?;
    match format {
        None => read_to_end(
            &g.path,
            m.layout,
            &m.compression,
            m.tree.as_ref().map(|t| t.entries),
        ),
        Some(crate::source::postgres::PgFormat::Snapshot) => verify_snapshot(g).await,
        Some(f) => {
            let source = job
                .verify_dsn
                .clone()
                .or_else(|| job.dsn.clone())
                .ok_or("no dsn to restore into")?;
            let scratch_db = format!(
                "offsite_verify_{}_{}",
                job.name.replace('-', "_"),
                std::process::id()
            );
            let scratch = with_database(&source, &scratch_db);
            let r =
                crate::restore::Restore::open(&g.path, m.layout, Some(f), m.compression, &m.sha256)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
            let result = match r.restore_to_dsn(&scratch).await {
                Ok(report) => compare_rows(&scratch, m.table_rows.as_ref())
                    .await
                    .map(|d| format!("restored into a scratch database ({}): {d}", report.target)),
                Err(e) => Err(format!("{e:#}")),
            };
            let dropped = drop_database(&source, &scratch_db).await;
            let detail = result?;
            dropped?;
            Ok(detail)
        }
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

async fn drop_database(source_dsn: &str, db: &str) -> Result<(), String> {
    let admin = with_database(source_dsn, "postgres");
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to drop the scratch database {db}: {e}"))?;
    let task = tokio::spawn(conn);
    let r = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await
        .map_err(|e| format!("cannot drop the scratch database {db}: {e}"));
    drop(client);
    let _ = task.await;
    r
}

/// Decompress to the end; a tar is walked entry by entry, each read fully
/// (a sparse member to its real size, holes included), and its file-tree
/// members counted against the manifest's `tree.entries` when recorded.
fn read_to_end(
    path: &Path,
    layout: crate::source::Layout,
    c: &crate::pipeline::Compression,
    tree_entries: Option<u64>,
) -> Result<String, String> {
    let reader = crate::pipeline::open_decompressed(path, c)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match layout {
        crate::source::Layout::SqlStream => {
            let n = std::io::copy(&mut { reader }, &mut std::io::sink())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(format!("decompressed {n} bytes to the end"))
        }
        crate::source::Layout::Tar => {
            let mut ar = tar::Archive::new(reader);
            let mut entries = 0u64;
            let mut bytes = 0u64;
            let mut tree_members = 0u64;
            for e in ar
                .entries()
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                let mut e =
                    e.map_err(|e| format!("{}: entry {}: {e}", path.display(), entries + 1))?;
                let want = e.size();
                if e.path_bytes()
                    .starts_with(crate::source::files::FILES_PREFIX.as_bytes())
                {
                    tree_members += 1;
                }
                let got = std::io::copy(&mut e, &mut std::io::sink())
                    .map_err(|err| format!("{}: entry {}: {err}", path.display(), entries + 1))?;
                if got != want {
                    return Err(format!(
                        "{}: entry {} is truncated ({got} of {want} bytes)",
                        path.display(),
                        entries + 1
                    ));
                }
                entries += 1;
                bytes += got;
            }
            if let Some(n) = tree_entries
                && n != tree_members
            {
                return Err(format!(
                    "{}: holds {tree_members} file-tree entries, its manifest says {n}",
                    path.display()
                ));
            }
            Ok(format!("read {entries} entries ({bytes} bytes) to the end"))
        }
    }
}

/// Extract the snapshot to a scratch directory and run pg_verifybackup on it.
async fn verify_snapshot(g: &Generation) -> Result<String, String> {
    let m = &g.manifest;
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(g.path.parent().unwrap_or(Path::new("/tmp")))
        .map_err(|e| e.to_string())?;
    let target = scratch.path().join("data");
    let r = crate::restore::Restore::open(
        &g.path,
        m.layout,
        Some(crate::source::postgres::PgFormat::Snapshot),
        m.compression,
        &m.sha256,
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    r.restore_to_dir(&target, false)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let tool = crate::source::postgres::find_tool("pg_verifybackup", 15, None)
        .map_err(|e| e.to_string())?;
    let out = tokio::process::Command::new(&tool.path)
        .arg("--no-parse-wal")
        .arg(&target)
        .output()
        .await
        .map_err(|e| format!("cannot run pg_verifybackup: {e}"))?;
    if out.status.success() {
        Ok("pg_verifybackup: backup successfully verified".into())
    } else {
        Err(format!(
            "pg_verifybackup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The restored copy must hold exactly the rows the dump's snapshot held.
async fn compare_rows(
    scratch_dsn: &str,
    expected: Option<&std::collections::BTreeMap<String, i64>>,
) -> Result<String, String> {
    let Some(expected) = expected else {
        return Ok("restore succeeded (no row counts recorded to compare)".into());
    };
    let client = crate::source::postgres::connect_dsn(scratch_dsn)
        .await
        .map_err(|e| format!("cannot connect to the scratch database: {e}"))?;
    let actual = crate::source::postgres::count_rows(&client)
        .await
        .map_err(|e| format!("counting rows in the scratch database: {e}"))?;
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
        Err(format!(
            "restored copy differs from the dump: {}",
            diffs.join("; ")
        ))
    }
}
