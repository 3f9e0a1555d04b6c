//! What offsite asks the server itself over its own connection: version,
//! size and privileges before a backup ([`server_info`]), and the exported
//! snapshot whose row counts a `pg_dump --snapshot` then matches
//! ([`export_snapshot`]).

use std::collections::BTreeMap;

use anyhow::Context;

use super::sql_text::quote_ident;
use super::{ConnInfo, PgError};

/// What [`preflight`] learned about the server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// e.g. "15.18" (the distribution suffix dropped).
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    pub database: String,
    /// `pg_database_size` of that database.
    pub size_bytes: u64,
    /// The connecting role is a superuser (role passwords can be dumped).
    pub superuser: bool,
    /// The connecting role may take a `pg_basebackup`.
    pub replication: bool,
}

impl ServerInfo {
    /// Major version as PostgreSQL counts it (15; 906 for 9.6).
    pub fn major(&self) -> u32 {
        major_of(self.version_num)
    }
}

/// Connects and reads what the backup needs to know, in one line per failure.
/// Checks the connection only; [`PgSource::check`] also checks the client
/// tools the job's format needs.
pub async fn preflight(dsn: &str) -> Result<ServerInfo, PgError> {
    let conn = ConnInfo::parse(dsn)?;
    server_info(&conn).await
}

/// A failed query as a one-line [`PgError`]: the server's own message when
/// it sent one.
pub(crate) fn query_error(conn: &ConnInfo, e: &tokio_postgres::Error) -> PgError {
    PgError::Query {
        endpoint: conn.endpoint(),
        message: db_message(e),
    }
}

/// The server's message for a failed statement (without tokio_postgres's
/// "db error: " prefix), else the client's own description.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Version, database size and the connecting role's privileges.
pub(crate) async fn server_info(conn: &ConnInfo) -> Result<ServerInfo, PgError> {
    let client = conn.connect().await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'),
                    current_setting('server_version_num')::int4,
                    current_database()::text,
                    pg_database_size(current_database())::int8,
                    r.rolsuper, r.rolreplication
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| query_error(conn, &e))?;
    let version: String = row.get(0);
    let version_num: i32 = row.get(1);
    let size: i64 = row.get(3);
    Ok(ServerInfo {
        version: version
            .split_whitespace()
            .next()
            .unwrap_or(&version)
            .to_string(),
        version_num: version_num.max(0) as u32,
        database: row.get(2),
        size_bytes: size.max(0) as u64,
        superuser: row.get(4),
        replication: row.get(5),
    })
}

/// PostgreSQL's major version from `server_version_num` (15 for 150018,
/// 906 for 90624: before 10 the major had two parts).
pub fn major_of(version_num: u32) -> u32 {
    if version_num >= 100_000 {
        version_num / 10_000
    } else {
        version_num / 100
    }
}

/// "15" or "9.6".
pub fn major_label(major: u32) -> String {
    if major >= 100 {
        format!("{}.{}", major / 100, major % 100)
    } else {
        major.to_string()
    }
}

/// `DROP DATABASE` through `admin` (a maintenance database of the same
/// server), forcing other sessions out where the server can (13+).
pub(crate) async fn drop_database(admin: &ConnInfo, db: &str, major: u32) -> anyhow::Result<()> {
    let client = admin.connect().await?;
    let force = if major >= 13 { " WITH (FORCE)" } else { "" };
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(db)
        ))
        .await
        .map_err(|e| query_error(admin, &e))
        .with_context(|| format!("cannot drop database \"{db}\""))?;
    tracing::info!(database = db, server = %admin.endpoint(), "dropped database");
    Ok(())
}

/// Row counts of every ordinary and partitioned table, `schema.table` →
/// rows, as the client's current transaction sees them.
pub async fn count_rows(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%'
                AND n.nspname NOT LIKE 'pg_temp%'
              ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut out = BTreeMap::new();
    for t in tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let q = format!(
            "SELECT count(*) FROM ONLY \"{}\".\"{}\"",
            schema.replace('"', "\"\""),
            table.replace('"', "\"\"")
        );
        let n: i64 = client.query_one(&q, &[]).await?.get(0);
        out.insert(format!("{schema}.{table}"), n);
    }
    Ok(out)
}

/// Open a repeatable-read transaction, export its snapshot and count rows
/// in it. The returned client must stay open until pg_dump has started
/// with `--snapshot` (and is kept until the dump ends).
pub(crate) async fn export_snapshot(
    conn: &ConnInfo,
) -> Result<(tokio_postgres::Client, String, BTreeMap<String, i64>), PgError> {
    let client = conn.connect().await?;
    let query_err = |e: tokio_postgres::Error| query_error(conn, &e);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(query_err)?;
    let id: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(query_err)?
        .get(0);
    let counts = count_rows(&client).await.map_err(query_err)?;
    Ok((client, id, counts))
}

/// A client for `dsn` (used by restore verification to count rows).
pub async fn connect_dsn(dsn: &str) -> Result<tokio_postgres::Client, PgError> {
    ConnInfo::parse(dsn)?.connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_of(150018), 15);
        assert_eq!(major_of(90624), 906);
        assert_eq!(major_label(906), "9.6");
    }
}
