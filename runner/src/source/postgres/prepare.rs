//! Everything that can be refused before a single byte is written: the
//! connection, the server's version and the role's privileges, and the
//! client tools that fit that server.

use super::{
    ConnInfo, PgError, PgFormat, PgSource, PgTool, ServerInfo, find_tool, major_label, server_info,
};

/// A source checked and ready: connection, server, and the tools that fit it.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub source: PgSource,
    pub conn: ConnInfo,
    pub info: ServerInfo,
    /// An exported snapshot pg_dump must use (`--snapshot`), so that what
    /// was counted is exactly what was dumped.
    pub snapshot: Option<String>,
    pub pg_dump: Option<PgTool>,
    pub pg_dumpall: Option<PgTool>,
    pub pg_basebackup: Option<PgTool>,
}

impl Prepared {
    /// The client tools this backup runs, by name.
    pub fn tools(&self) -> Vec<(&'static str, &PgTool)> {
        [
            ("pg_dump", self.pg_dump.as_ref()),
            ("pg_dumpall", self.pg_dumpall.as_ref()),
            ("pg_basebackup", self.pg_basebackup.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
        .collect()
    }
}

/// The client tools one backup runs: pg_dumpall always (roles), then
/// pg_dump, or pg_basebackup for a snapshot.
struct DumpTools {
    pg_dump: Option<PgTool>,
    pg_dumpall: PgTool,
    pg_basebackup: Option<PgTool>,
}

/// Connection check plus tool discovery: everything that can be refused
/// before a single byte is written.
pub(crate) async fn prepare(source: &PgSource) -> Result<Prepared, PgError> {
    let conn = ConnInfo::parse(&source.dsn)?;
    let info = server_info(&conn).await?;
    if source.format == PgFormat::Snapshot && !info.replication && !info.superuser {
        return Err(PgError::NoReplication {
            endpoint: conn.endpoint(),
            user: conn.user.clone(),
        });
    }
    let major = info.major();
    let format = source.format;
    let endpoint = conn.endpoint();
    let tools = tokio::task::spawn_blocking(move || find_dump_tools(format, major, &endpoint))
        .await
        .map_err(|e| PgError::ToolMissing {
            tool: format!("client tool lookup ({e})"),
            major: major_label(major),
        })??;
    tracing::info!(
        server = %conn.endpoint(),
        database = %info.database,
        version = %info.version,
        size_bytes = info.size_bytes,
        "PostgreSQL reachable"
    );
    Ok(Prepared {
        snapshot: None,
        source: source.clone(),
        conn,
        info,
        pg_dump: tools.pg_dump,
        pg_dumpall: Some(tools.pg_dumpall),
        pg_basebackup: tools.pg_basebackup,
    })
}

/// Looks up the tools `format` needs for a server of major `major` at
/// `endpoint` (named in a too-old-client refusal).
fn find_dump_tools(format: PgFormat, major: u32, endpoint: &str) -> Result<DumpTools, PgError> {
    let find = |name: &str| {
        find_tool(name, major, false).map_err(|e| match e {
            PgError::ClientTooOld {
                tool,
                client,
                path,
                server,
                ..
            } => PgError::ClientTooOld {
                tool,
                client,
                path,
                server,
                endpoint: endpoint.to_string(),
            },
            other => other,
        })
    };
    let pg_dumpall = find("pg_dumpall")?;
    Ok(if format == PgFormat::Snapshot {
        DumpTools {
            pg_dump: None,
            pg_dumpall,
            pg_basebackup: Some(find("pg_basebackup")?),
        }
    } else {
        DumpTools {
            pg_dump: Some(find("pg_dump")?),
            pg_dumpall,
            pg_basebackup: None,
        }
    })
}
