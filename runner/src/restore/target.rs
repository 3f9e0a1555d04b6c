//! What the target server already has, read before a restore into it
//! changes anything.

use std::collections::HashSet;

use crate::source::postgres::{ConnInfo, PgError, major_of, query_error};

/// What the target server already has.
pub(super) struct Target {
    pub(super) major: u32,
    /// The target database exists (and holds no tables).
    pub(super) exists: bool,
    /// Encoding of the existing target database.
    pub(super) encoding: Option<String>,
    /// A maintenance database on the same server (`postgres` or
    /// `template1`), to create and drop the target from.
    pub(super) admin: Option<ConnInfo>,
    pub(super) roles: HashSet<String>,
    pub(super) tablespaces: HashSet<String>,
}

/// Connects to the target database or, when it does not exist, to a
/// maintenance database of the same server, and reads what the restore
/// must know. Creates nothing.
pub(super) async fn inspect_target(conn: &ConnInfo) -> anyhow::Result<Target> {
    // To drop nothing by mistake, an existing target never gets an admin
    // connection.
    let (client, exists, admin) = connect_target(conn).await?;
    let q = |e: tokio_postgres::Error| query_error(conn, &e);
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4,
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                        AND n.nspname NOT LIKE 'pg\\_toast%'
                        AND n.nspname NOT LIKE 'pg\\_temp%'),
                    pg_encoding_to_char(d.encoding)::text
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(q)?;
    let version_num: i32 = row.get(0);
    let relations: i64 = row.get(1);
    if exists && relations > 0 {
        anyhow::bail!(
            "database \"{}\" on {} already holds {relations} tables, views or sequences — restore into a new database (offsite creates it when it does not exist) or an empty one",
            conn.dbname,
            conn.endpoint()
        );
    }
    let roles = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let tablespaces = client
        .query("SELECT spcname::text FROM pg_tablespace", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(Target {
        major: major_of(version_num.max(0) as u32),
        exists,
        encoding: exists.then(|| row.get(2)),
        admin,
        roles,
        tablespaces,
    })
}

/// A client on the target database when it exists (`true`); else on a
/// maintenance database of the same server (`postgres`, else
/// `template1`), which is also returned to create the target from.
async fn connect_target(
    conn: &ConnInfo,
) -> Result<(tokio_postgres::Client, bool, Option<ConnInfo>), PgError> {
    match conn.connect().await {
        Ok(c) => Ok((c, true, None)),
        Err(PgError::NoDatabase { .. }) => {
            let mut last = None;
            for maintenance in ["postgres", "template1"] {
                let m = conn.with_dbname(maintenance);
                match m.connect().await {
                    Ok(c) => return Ok((c, false, Some(m))),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("tried"))
        }
        Err(e) => Err(e),
    }
}
