//! What a database is, reduced to values two databases can be compared by:
//! the schema as `pg_dump --schema-only` prints it, the database's own
//! catalog row (encoding, collation, ctype, locale provider, owner, ACL,
//! comment, connection limit, settings, extensions and versions), and a
//! checksum of every table's contents, every sequence's position and every
//! large object (with its owner and ACL).
//!
//! A backup with `verify = "restore"` takes one of the source inside the
//! dump's own snapshot and records it in the manifest; the verification
//! takes one of the restored scratch copy and compares (see
//! [`crate::verify`]). Row counts alone would pass a copy with the wrong
//! encoding, owner or contents.
//!
//! Table checksums do not depend on row order (a restore may lay rows out
//! differently): for each row, md5 of its text form, the two 64-bit halves
//! summed as numerics over the table. Text forms are made comparable by
//! fixing the session settings that shape them (time zone, date and
//! interval style, float digits, bytea output).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConnInfo, PgTool};
use crate::exec::{Cancel, pump};

/// The comparable description of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// sha256 of `pg_dump --schema-only`, normalized (see [`normalize_schema`]).
    pub schema_sha256: String,
    /// Database-level catalog values by name (`encoding`, `collate`, …).
    pub database: BTreeMap<String, String>,
    /// `schema.table` → `rows:sum1:sum2`.
    pub tables: BTreeMap<String, String>,
    /// `schema.sequence` → last value (`unset` before the first nextval).
    pub sequences: BTreeMap<String, String>,
    /// `count:sum1:sum2` over oid, owner, ACL and md5 of the data.
    pub large_objects: String,
}

/// Session settings that fix how values print, so two servers print the
/// same rows the same way.
pub const STABLE_OUTPUT: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET statement_timeout = 0";

/// `count:sum1:sum2` over the md5s of `expr` for each row of `from`
/// (which names its row `t`): each md5 computed once, its two 64-bit halves
/// summed as numerics, so the result does not depend on row order.
fn sums(expr: &str, from: &str) -> String {
    format!(
        "SELECT count(*)::text || ':' || coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8::numeric), 0)::text \
         || ':' || coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::int8::numeric), 0)::text \
         FROM (SELECT md5({expr}) AS h FROM {from}) q"
    )
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Everything but the schema, read through `client` (inside the dump's
/// snapshot for the source). The session gets [`STABLE_OUTPUT`] first.
pub async fn catalog_and_data(
    client: &tokio_postgres::Client,
) -> Result<Fingerprint, tokio_postgres::Error> {
    client.batch_execute(STABLE_OUTPUT).await?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await?
        .get(0);
    let locale = if version >= 150000 {
        "d.datlocprovider::text, coalesce(d.daticulocale, '')"
    } else {
        "'c', ''"
    };
    let row = client
        .query_one(
            &format!(
                "SELECT pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text, {locale},
                        pg_get_userbyid(d.datdba)::text, coalesce(d.datacl::text, 'default'),
                        d.datconnlimit::text, coalesce(shobj_description(d.oid, 'pg_database'), ''),
                        coalesce((SELECT string_agg(coalesce(r.rolname::text, '*') || ' ' || array_to_string(s.setconfig, ', '), '; ' ORDER BY 1)
                                    FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
                                   WHERE s.setdatabase = d.oid), ''),
                        coalesce((SELECT string_agg(e.extname || ' ' || e.extversion || ' in ' || n.nspname, ', ' ORDER BY 1)
                                    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace), '')
                   FROM pg_database d WHERE d.datname = current_database()"
            ),
            &[],
        )
        .await?;
    let names = [
        "encoding",
        "collate",
        "ctype",
        "locale provider",
        "icu locale",
        "owner",
        "acl",
        "connection limit",
        "comment",
        "settings",
        "extensions",
    ];
    let mut fp = Fingerprint::default();
    for (i, n) in names.iter().enumerate() {
        fp.database.insert(n.to_string(), row.get::<_, String>(i));
    }
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
              ORDER BY 1, 2",
            &[],
        )
        .await?;
    for t in tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let q = sums(
            "t::text",
            &format!("ONLY {}.{} t", quote(&schema), quote(&table)),
        );
        let v: String = client.query_one(&q, &[]).await?.get(0);
        fp.tables.insert(format!("{schema}.{table}"), v);
    }
    for r in client
        .query(
            "SELECT schemaname::text || '.' || sequencename::text, coalesce(last_value::text, 'unset')
               FROM pg_sequences ORDER BY 1",
            &[],
        )
        .await?
    {
        fp.sequences.insert(r.get(0), r.get(1));
    }
    fp.large_objects = client
        .query_one(
            &sums(
                "t.oid::text || ':' || pg_get_userbyid(t.lomowner)::text || ':' || coalesce(t.lomacl::text, '') || ':' || md5(lo_get(t.oid))",
                "pg_largeobject_metadata t",
            ),
            &[],
        )
        .await?
        .get(0);
    Ok(fp)
}

/// Drops what differs between two dumps of the same schema for reasons
/// other than the schema: the version banner and the random
/// `\restrict` keys of newer pg_dump releases.
pub fn normalize_schema(dump: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dump.len());
    for line in dump.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"\\restrict ")
            || line.starts_with(b"\\unrestrict ")
            || line.starts_with(b"-- Dumped from database version")
            || line.starts_with(b"-- Dumped by pg_dump version")
        {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// sha256 of the normalized `pg_dump --schema-only` of the database `conn`
/// names (in `snapshot` when given). Blocking.
pub(crate) fn schema_sha256(
    tool: &PgTool,
    conn: &ConnInfo,
    snapshot: Option<&str>,
    cancel: &Cancel,
) -> anyhow::Result<String> {
    let mut cmd = tool.command("pg_dump (schema)", Some(conn));
    cmd.arg("--schema-only").arg("--format=plain");
    if let Some(id) = snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    cmd.stdout = true;
    let mut child = cmd.spawn(cancel)?;
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().expect("piped");
    pump(&mut stdout, &mut out, cancel)?;
    drop(stdout);
    child.wait()?;
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(normalize_schema(&out))))
}

/// One line per difference between what the source was (`expected`) and
/// what the copy is (`actual`); empty when they are the same.
pub fn differences(expected: &Fingerprint, actual: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    if expected.schema_sha256 != actual.schema_sha256 {
        out.push(format!(
            "schema differs (pg_dump --schema-only sha256 {} restored, {} dumped)",
            short(&actual.schema_sha256),
            short(&expected.schema_sha256)
        ));
    }
    for (k, want) in &expected.database {
        let got = actual.database.get(k).map(String::as_str).unwrap_or("?");
        if got != want {
            out.push(format!(
                "database {k}: \"{got}\" restored, \"{want}\" dumped"
            ));
        }
    }
    for (t, want) in &expected.tables {
        match actual.tables.get(t) {
            None => out.push(format!("{t}: missing after restore")),
            Some(got) if got == want => {}
            Some(got) => {
                let rows = |v: &str| v.split(':').next().unwrap_or("").to_string();
                if rows(got) != rows(want) {
                    out.push(format!(
                        "{t}: {} rows restored, {} dumped",
                        rows(got),
                        rows(want)
                    ));
                } else {
                    out.push(format!("{t}: same row count, different contents"));
                }
            }
        }
    }
    for t in actual.tables.keys() {
        if !expected.tables.contains_key(t) {
            out.push(format!("{t}: not in the source"));
        }
    }
    if expected.sequences != actual.sequences {
        for (s, want) in &expected.sequences {
            let got = actual
                .sequences
                .get(s)
                .map(String::as_str)
                .unwrap_or("missing");
            if got != want {
                out.push(format!("sequence {s}: at {got} restored, {want} dumped"));
            }
        }
    }
    if expected.large_objects != actual.large_objects {
        out.push(format!(
            "large objects differ (count:checksums {} restored, {} dumped)",
            actual.large_objects, expected.large_objects
        ));
    }
    out
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_drops_banner_and_restrict_keys_only() {
        let a = b"--\n-- Dumped from database version 15.18\n\\restrict AbC\nCREATE TABLE t (a int);\n\\unrestrict AbC\n";
        let b = b"--\n-- Dumped from database version 15.2\n\\restrict XyZ\nCREATE TABLE t (a int);\n\\unrestrict XyZ\n";
        assert_eq!(normalize_schema(a), normalize_schema(b));
        assert_ne!(
            normalize_schema(a),
            normalize_schema(b"--\nCREATE TABLE t (a bigint);\n")
        );
    }

    #[test]
    fn differences_name_what_differs() {
        let mut a = Fingerprint::default();
        a.database.insert("encoding".into(), "LATIN1".into());
        a.tables.insert("public.t".into(), "3:1:2".into());
        a.tables.insert("public.u".into(), "3:1:2".into());
        let mut b = a.clone();
        assert!(differences(&a, &b).is_empty());
        b.database.insert("encoding".into(), "UTF8".into());
        b.tables.insert("public.t".into(), "2:1:2".into());
        b.tables.insert("public.u".into(), "3:1:9".into());
        b.schema_sha256 = "ff".into();
        let d = differences(&a, &b);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d.iter()
                .any(|l| l == "database encoding: \"UTF8\" restored, \"LATIN1\" dumped")
        );
        assert!(d.iter().any(|l| l == "public.t: 2 rows restored, 3 dumped"));
        assert!(
            d.iter()
                .any(|l| l == "public.u: same row count, different contents")
        );
    }
}
