//! The PostgreSQL side's one error type: everything refused before a dump
//! or restore starts (bad DSN, unreachable server, authentication, missing
//! or too old client tools, missing privileges).

/// Everything that can go wrong before a dump starts. Each message is one
/// line that names what is wrong and what to do, and none contains the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL dsn: {0}")]
    InvalidDsn(String),
    #[error("cannot reach PostgreSQL at {endpoint}: {reason} — is the server running?")]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "PostgreSQL at {endpoint} rejected the password for user \"{user}\" — fix the password in the dsn (or in ~/.pgpass)"
    )]
    AuthFailed { endpoint: String, user: String },
    #[error(
        "PostgreSQL at {endpoint} asks for a password for user \"{user}\" and the dsn has none — add it to the dsn or to ~/.pgpass"
    )]
    PasswordMissing { endpoint: String, user: String },
    #[error(
        "PostgreSQL at {endpoint} does not let user \"{user}\" in: {message} — allow it in pg_hba.conf"
    )]
    NotAllowed {
        endpoint: String,
        user: String,
        message: String,
    },
    #[error(
        "database \"{database}\" does not exist on PostgreSQL at {endpoint} — create it or fix the database name in the dsn"
    )]
    NoDatabase { endpoint: String, database: String },
    #[error(
        "the dsn asks for sslmode=require but offsite connects without TLS — use sslmode=prefer or disable, or connect over the Unix socket"
    )]
    TlsRequired,
    #[error("PostgreSQL at {endpoint} refused the connection: {message}")]
    Refused { endpoint: String, message: String },
    #[error("query on PostgreSQL at {endpoint} failed: {message}")]
    Query { endpoint: String, message: String },
    #[error(
        "{tool} not found in PATH nor in /usr/lib/postgresql/*/bin — install postgresql-client-{major} (apt-get install postgresql-client-{major})"
    )]
    ToolMissing { tool: String, major: String },
    #[error(
        "{tool} {client} ({path}) is older than the PostgreSQL {server} server at {endpoint} and cannot back it up — install postgresql-client-{server} (apt-get install postgresql-client-{server}) or put a newer {tool} first in PATH"
    )]
    ClientTooOld {
        tool: String,
        client: String,
        path: String,
        server: String,
        endpoint: String,
    },
    #[error(
        "user \"{user}\" may not take a snapshot of PostgreSQL at {endpoint}: pg_basebackup needs the REPLICATION attribute — run ALTER ROLE \"{user}\" REPLICATION and allow replication connections in pg_hba.conf"
    )]
    NoReplication { endpoint: String, user: String },
}
