//! The five kinds of PostgreSQL backup a job can take, by their config name.

use std::fmt;
use std::str::FromStr;

/// Which PostgreSQL backup a job takes (`format` in the job config).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PgFormat {
    /// `pg_dump -Fp`: SQL text, restorable on any newer server. The default.
    #[default]
    Sql,
    /// `pg_dump -Fc`: pg_restore's archive, selective and parallel restore.
    Custom,
    /// `pg_dump -Ft`: tar archive for pg_restore.
    Tar,
    /// `pg_dump -Fd -j N`: one file per table, dumped and restored in parallel.
    Directory,
    /// `pg_basebackup`: the whole cluster's files plus the WAL to make them
    /// consistent. Fastest to restore; same major version only.
    Snapshot,
}

impl PgFormat {
    pub const ALL: [PgFormat; 5] = [
        PgFormat::Sql,
        PgFormat::Custom,
        PgFormat::Tar,
        PgFormat::Directory,
        PgFormat::Snapshot,
    ];

    /// The name used in the config and manifests.
    pub fn name(self) -> &'static str {
        match self {
            PgFormat::Sql => "sql",
            PgFormat::Custom => "custom",
            PgFormat::Tar => "tar",
            PgFormat::Directory => "directory",
            PgFormat::Snapshot => "snapshot",
        }
    }

    /// Path of the database part inside a tar-layout generation.
    pub fn member_name(self) -> &'static str {
        match self {
            PgFormat::Sql => "database.sql",
            PgFormat::Custom => "database.dump",
            PgFormat::Tar => "database.tar",
            PgFormat::Directory => "database",
            PgFormat::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for PgFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `format` value that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown PostgreSQL format \"{0}\": accepted values are sql (default), custom, tar, directory, snapshot"
)]
pub struct UnknownFormat(pub String);

impl FromStr for PgFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PgFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_and_errors_list_choices() {
        for f in PgFormat::ALL {
            assert_eq!(f.name().parse::<PgFormat>().unwrap(), f);
        }
        let e = "plain".parse::<PgFormat>().unwrap_err().to_string();
        assert!(
            e.contains("sql (default), custom, tar, directory, snapshot"),
            "{e}"
        );
    }
}
