//! WAL archiving rigs: a cluster whose `archive_command` is
//! `offsite wal-push`, run by the server's user, so the operator's
//! installation (config, WAL store, log) must be readable and writable by
//! that user, as it must be in production.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::jobs::{Setup, wait_for};
use crate::paths::offsite_bin;
use crate::postgres::{
    PgCluster, as_server_user, check, pg_bin, postgres_ids, server_owned_tempdir,
};

/// Gives the server user everything below `path` (as root; a no-op
/// otherwise).
pub fn give_to_server(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let (uid, gid) = postgres_ids();
    check(
        "chown to the server user",
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .output(),
    );
}

/// postgresql.conf lines that archive through `offsite wal-push JOB %p`
/// with `config`, and keep the segments in pg_wal (no recycling, a large
/// wal_keep_size) so tests can compare the archive with the originals.
pub fn archive_conf(config: &Path, job: &str) -> String {
    format!(
        "archive_mode = on\narchive_command = '{} --config {} wal-push {job} %p'\n\
         wal_keep_size = '2GB'\nwal_recycle = off\nmax_wal_size = '1GB'\n",
        offsite_bin().display(),
        config.display()
    )
}

/// A Setup whose config is written and whose folders belong to the server
/// user, and a cluster archiving into job `job` of it.
pub fn archiving_cluster(setup: &Setup, job: &str, extra: &str) -> PgCluster {
    give_to_server(setup.root());
    PgCluster::start_with(&format!("{}{extra}", archive_conf(&setup.config, job)))
}

/// The server's current WAL file (it is not archived until switched).
pub fn current_wal(pg: &PgCluster) -> String {
    pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .trim()
        .to_string()
}

/// Switches to a new segment and waits until the archiver reports the old
/// one archived; returns its name.
pub fn switch_and_wait(pg: &PgCluster) -> String {
    // Something must be written, or pg_switch_wal is a no-op.
    pg.psql("postgres", "SELECT txid_current()");
    let name = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .trim()
        .to_string();
    wait_archived(pg, &name, Duration::from_secs(60));
    name
}

/// Waits until pg_stat_archiver's last archived file is `name` or later.
pub fn wait_archived(pg: &PgCluster, name: &str, limit: Duration) {
    wait_for(&format!("{name} archived"), limit, || {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        (last.trim() >= name).then_some(())
    });
}

/// A cluster made by its own initdb (the harness's clusters are copies of
/// one template and so share a system identifier). Not started; its data
/// directory holds the first WAL segment initdb wrote.
pub fn separate_initdb() -> (tempfile::TempDir, PathBuf) {
    let root = server_owned_tempdir();
    let data = root.path().join("data");
    check(
        "initdb",
        as_server_user(&pg_bin().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ])
            .output(),
    );
    (root, data)
}

/// The server's system identifier (pg_controldata's "Database system identifier").
pub fn system_identifier(pg: &PgCluster) -> u64 {
    pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
    .trim()
    .parse()
    .expect("system identifier")
}

/// The DSN [`write_wal_job`] writes until [`point_at`] knows the port.
pub const PLACEHOLDER_DSN: &str = "postgresql://postgres@127.0.0.1:1/postgres";

/// Writes the config of job `db`: a snapshot job with `wal = true`;
/// `extra` goes into its table, `notifiers` before it.
pub fn write_wal_job(setup: &Setup, extra: &str, notifiers: &str) {
    setup.write_config(&format!(
        "{notifiers}\n[jobs.db]\nsource = \"postgres\"\n\
         dsn = \"{PLACEHOLDER_DSN}\"\n\
         format = \"snapshot\"\nschedule = \"manual\"\nwal = true\n{extra}\n"
    ));
}

/// Points the job's DSN at `pg` (its port is known once it runs) and
/// hands the config to the server user.
pub fn point_at(setup: &Setup, pg: &PgCluster) {
    let cfg = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(PLACEHOLDER_DSN, &pg.dsn("postgres"));
    std::fs::write(&setup.config, cfg).unwrap();
    give_to_server(&setup.config);
}

/// `offsite wal-fetch db NAME TO`, as PostgreSQL's `restore_command`
/// runs it: (exit code, stdout + stderr).
pub fn wal_fetch(setup: &Setup, name: &str, to: &Path) -> (i32, String) {
    setup.offsite(&["wal-fetch", "db", name, to.to_str().unwrap()])
}

/// `wal-fetch` of `name` into `to` answers 0 and writes the cluster's own
/// `pg_wal/NAME`, byte for byte.
pub fn assert_fetched_identical(setup: &Setup, pg: &PgCluster, name: &str, to: &Path) {
    let (c, log) = wal_fetch(setup, name, to);
    assert_eq!(c, 0, "{log}");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert!(
        read(to) == read(&pg.data_dir().join("pg_wal").join(name)),
        "{name} differs"
    );
}

/// `wal-fetch` of `name` into `to` answers 1 (positively absent: recovery
/// may end there) and writes nothing.
pub fn assert_absent(setup: &Setup, name: &str, to: &Path) {
    let (c, log) = wal_fetch(setup, name, to);
    assert_eq!(c, 1, "{log}");
    assert!(!to.exists());
}

/// Job `db`'s local WAL store (the default `wal_dir`).
pub fn wal_dir(setup: &Setup) -> PathBuf {
    setup.backup_dir.join("db/wal")
}

/// Inserts batch `n` (rows `n*1000+1 ..= n*1000+1000`) into `t` of database
/// `postgres`, as PostgreSQL's 003_recovery_targets.pl does.
pub fn insert_batch(pg: &PgCluster, n: i64) {
    pg.psql(
        "postgres",
        &format!(
            "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
            n * 1000 + 1,
            n * 1000 + 1000
        ),
    );
}
