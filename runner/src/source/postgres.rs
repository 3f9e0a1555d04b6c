//! PostgreSQL as a backup source: connection check, client tools, and the
//! dumps themselves (`pg_dump`, `pg_dumpall --globals-only`, `pg_basebackup`).
//!
//! Why the dumps run as child processes rather than over the wire protocol:
//! `pg_dump`'s output is the format every operator already knows how to
//! restore by hand, and its consistency rules (one snapshot, dependency
//! order) are not something to re-implement.
//!
//! Secrets: the DSN's password reaches the tools only through the `PGPASSWORD`
//! environment variable (readable by the same user and root, unlike argv which
//! any user can see in `ps`), it is scrubbed from every stderr line we keep,
//! and no error or log line here prints the DSN; they print `host:port` and
//! the database name instead.
//!
//! One file per subject, in the order a backup uses them:
//!
//! - [`format`]: the five formats (`sql`, `custom`, `tar`, `directory`, `snapshot`);
//! - [`dsn`] and [`conn`]: resolving a DSN like libpq, connecting, and
//!   classifying connection failures ([`error`]'s [`PgError`]);
//! - [`server`]: what offsite asks the server (version, size, privileges,
//!   the exported snapshot and its row counts);
//! - [`tools`]: which `pg_dump`/`psql`/… fits the server, and the command
//!   that runs it (child-process control itself is [`crate::exec`]'s);
//! - [`prepare`]: all of the above checked before anything is written;
//! - [`globals`] (roles, tablespaces), [`database`] (the database's own
//!   properties), [`dump`] (pg_dump) and [`snapshot`] (pg_basebackup): the
//!   parts of a generation;
//! - [`fingerprint`]: what a database is, for comparing a restored copy.

pub(crate) mod conn;
pub mod database;
pub mod dsn;
pub(crate) mod dump;
pub(crate) mod error;
pub mod fingerprint;
pub(crate) mod format;
pub(crate) mod globals;
pub(crate) mod prepare;
pub(crate) mod server;
pub(crate) mod snapshot;
pub(crate) mod sql_text;
#[cfg(test)]
mod testing;
pub mod tools;

use std::fmt;

pub(crate) use conn::ConnInfo;
pub(crate) use dump::{dump_sql_stream, dump_to_spool};
pub use error::PgError;
pub use format::{PgFormat, UnknownFormat};
pub(crate) use globals::dump_globals;
pub use globals::rewrite_globals;
pub(crate) use prepare::{Prepared, prepare};
pub use server::{ServerInfo, connect_dsn, count_rows, major_label, major_of, preflight};
pub(crate) use server::{drop_database, export_snapshot, query_error, server_info};
pub use snapshot::{WalRange, wal_range_of_manifest};
pub(crate) use sql_text::{QuoteState, parse_ident};
pub use tools::{PgTool, ToolFit, find_tool};

/// The database part of a job.
#[derive(Clone)]
pub struct PgSource {
    /// libpq-style DSN (URL or `key=value`). May hold a password; never logged.
    pub dsn: String,
    pub format: PgFormat,
    /// Parallel `pg_dump`/`pg_restore` workers for the directory format
    /// (each is one more connection to the server).
    pub jobs: u32,
}

impl PgSource {
    pub fn new(dsn: impl Into<String>, format: PgFormat) -> Self {
        PgSource {
            dsn: dsn.into(),
            format,
            jobs: default_jobs(),
        }
    }

    /// Everything [`crate::source::take`] checks before writing: the
    /// connection, the REPLICATION attribute for snapshots, and local
    /// `pg_dump`/`pg_dumpall`/`pg_basebackup` at least as new as the server.
    /// For `offsite config check` and the start of a run.
    pub async fn check(&self) -> Result<ServerInfo, PgError> {
        prepare(self).await.map(|p| p.info)
    }
}

// The DSN may carry a password: Debug shows where it points, never the DSN.
impl fmt::Debug for PgSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = ConnInfo::parse(&self.dsn)
            .map(|c| format!("{}/{}", c.endpoint(), c.dbname))
            .unwrap_or_else(|_| "<invalid dsn>".to_string());
        f.debug_struct("PgSource")
            .field("dsn", &target)
            .field("format", &self.format)
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// Parallel jobs when the config does not say: up to 4, since every job is a
/// server connection competing with production traffic (seed 000).
pub fn default_jobs() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_password_stays_out_of_debug_and_endpoint() {
        let s = PgSource::new(
            "postgresql://app:s3cret-pw@127.0.0.1:5433/calls",
            PgFormat::Sql,
        );
        let d = format!("{s:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("127.0.0.1:5433/calls"), "{d}");
    }
}
