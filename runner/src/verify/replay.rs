//! `verify = "restore"` of a snapshot job with `wal = true` (seed 004):
//! restore the snapshot into a scratch directory, check every archived
//! segment it will read, start PostgreSQL there as the server's user (a
//! private socket directory, no TCP, archiving off, bounded in time), let
//! it replay the archived WAL to the last archived record (or at least to
//! the snapshot's consistent point), then read every table of every
//! database. With `hot_backup` set, the replayed directory is kept there,
//! stopped in recovery, as a data directory ready to start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{VerifyError, cannot};
use crate::config::{Config, Job};
use crate::source::postgres::ConnInfo;
use crate::store::Generation;
use crate::wal::catalog::{self, SnapshotRange, Target};
use crate::wal::name::{Lsn, SegmentId};
use crate::wal::store::WalStore;

/// How long PostgreSQL may take to start and replay.
const REPLAY_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long the run waits for the archiver to push the segment holding the
/// snapshot's end (PostgreSQL archives it right after the backup ends).
const END_WAIT: Duration = Duration::from_secs(30);

/// What the replay will read and where it stops.
struct Plan {
    range: SnapshotRange,
    /// Archived segments from the snapshot's start, unbroken.
    segments: Vec<String>,
    target: Target,
    reach: Lsn,
}

/// Restores `g`, replays the job's archived WAL onto it and checks the
/// result; see the module doc. The detail says how far it replayed.
pub async fn replay(config: &Config, job: &Job, g: &Generation) -> Result<String, VerifyError> {
    let store = crate::wal::store_of(config, job).map_err(cannot)?;
    let plan = plan(&store, g).await?;
    check_segments(&store, &plan)?;
    let hot = job.wal.as_ref().and_then(|w| w.hot_backup.clone());
    let parent = match &hot {
        Some(h) => h
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "/".into()),
        None => g.path.parent().unwrap_or(Path::new("/tmp")).to_path_buf(),
    };
    std::fs::create_dir_all(&parent).map_err(cannot)?;
    let scratch = tempfile::Builder::new()
        .prefix(".offsite-replay-")
        .tempdir_in(&parent)
        .map_err(|e| {
            cannot(format!(
                "cannot make a scratch directory in {}: {e}",
                parent.display()
            ))
        })?;
    let data = scratch.path().join("data");
    super::unpack_snapshot(g, &data).await?;
    crate::wal::recovery::write(
        &data,
        &job.name,
        &config.path,
        plan.range.timeline,
        &plan.target,
    )
    .map_err(|e| cannot(format!("writing the recovery settings: {e:#}")))?;
    let server = Scratch::prepare(scratch.path(), &data, super::snapshot_major(&g.manifest))?;
    let started = Instant::now();
    let result = server.run(&plan, job).await;
    let stopped = server.stop();
    let detail = result?;
    stopped?;
    let mut detail = format!(
        "snapshot restored and {} archived WAL segments replayed onto it from {} to {} in {:.1} s; {detail}",
        plan.segments.len(),
        plan.range.start,
        plan.reach,
        started.elapsed().as_secs_f64()
    );
    if let Some(h) = hot {
        keep_hot(scratch, &data, &h)?;
        detail.push_str(&format!("; hot backup kept in {}", h.display()));
    }
    Ok(detail)
}

/// The snapshot's range and the archived WAL after it; waits briefly for
/// the archiver to push the segment holding the snapshot's end.
async fn plan(store: &WalStore, g: &Generation) -> Result<Plan, VerifyError> {
    let range = catalog::snapshot_range(store, g).map_err(|e| cannot(format!("{e:#}")))?;
    let deadline = Instant::now() + END_WAIT;
    loop {
        let (entries, seg) = catalog::load(store).map_err(|e| cannot(format!("{e:#}")))?;
        let w = catalog::window(&entries, range.clone(), seg);
        let last = w.last_record();
        let covered = last.is_some_and(|l| l >= range.end);
        if covered || Instant::now() >= deadline {
            hole_after(&entries, &w.missing, seg)?;
            let (target, reach) = match last {
                Some(l) if covered => (Target::Lsn(l), l),
                _ => (Target::Immediate, range.end),
            };
            return Ok(Plan {
                segments: w.chain.iter().map(|e| e.name.clone()).collect(),
                range,
                target,
                reach,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A segment archived after `missing` on its timeline means the archive
/// has a hole: WAL after it can never be replayed.
fn hole_after(
    entries: &[crate::wal::store::WalEntry],
    missing: &str,
    seg: u64,
) -> Result<(), VerifyError> {
    let Some(m) = SegmentId::parse(missing, seg) else {
        return Ok(());
    };
    let later: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "segment")
        .filter(|e| {
            SegmentId::parse(&e.name, seg).is_some_and(|id| id.timeline == m.timeline && id > m)
        })
        .map(|e| e.name.as_str())
        .collect();
    match later.last() {
        None => Ok(()),
        Some(last) => Err(VerifyError::Damaged(format!(
            "archived WAL segment {missing} is missing from the local WAL store: the {} segments after it (up to {last}) cannot be replayed",
            later.len()
        ))),
    }
}

/// Reads every segment the replay needs back from the store, checking it
/// against its recorded sha256, so a damaged one is named here rather than
/// found by PostgreSQL half way.
fn check_segments(store: &WalStore, plan: &Plan) -> Result<(), VerifyError> {
    for name in &plan.segments {
        match store.read(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(VerifyError::Damaged(format!(
                    "archived WAL segment {name} vanished from the local WAL store during the check"
                )));
            }
            Err(e) => {
                return Err(VerifyError::Damaged(format!(
                    "archived WAL segment {name}: {e:#}"
                )));
            }
        }
    }
    Ok(())
}

/// A restored data directory and the PostgreSQL started on it.
struct Scratch {
    root: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    /// The server's user (the data directory's owner) when run as root.
    owner: Option<(u32, u32)>,
    port: u16,
    log: PathBuf,
}

impl Scratch {
    /// Finds `pg_ctl` of `major`, hands `root` to the data directory's
    /// owner, and writes the access rules of the scratch server (its own
    /// socket directory only, trusted).
    fn prepare(root: &Path, data: &Path, major: u32) -> Result<Scratch, VerifyError> {
        use std::os::unix::fs::MetadataExt;
        let tool = crate::source::postgres::find_tool("pg_ctl", major, false).map_err(cannot)?;
        let meta = std::fs::metadata(data.join("PG_VERSION")).map_err(cannot)?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let owner = as_root.then_some((meta.uid(), meta.gid()));
        if owner.is_some_and(|(u, _)| u == 0) {
            return Err(cannot(
                "the snapshot's files belong to root, and PostgreSQL does not run as root",
            ));
        }
        if !data.join("postgresql.conf").exists() {
            // The source kept its configuration outside the data directory
            // (Debian's /etc/postgresql): the defaults do for a check.
            std::fs::write(data.join("postgresql.conf"), "").map_err(cannot)?;
        }
        std::fs::write(root.join("hba.conf"), "local all all trust\n").map_err(cannot)?;
        std::fs::write(root.join("ident.conf"), "").map_err(cannot)?;
        if let Some((u, g)) = owner {
            for p in [
                root.to_path_buf(),
                root.join("hba.conf"),
                root.join("ident.conf"),
                data.join("postgresql.conf"),
            ] {
                std::os::unix::fs::chown(&p, Some(u), Some(g)).map_err(cannot)?;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(cannot)?;
        Ok(Scratch {
            root: root.to_path_buf(),
            data: data.to_path_buf(),
            pg_ctl: tool.path,
            owner,
            port,
            log: root.join("postgresql.log"),
        })
    }

    fn pg_ctl(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(&self.pg_ctl);
        if let Some((u, g)) = self.owner {
            // std drops root's supplementary groups when it sets the uid.
            c.uid(u).gid(g);
        }
        c.arg("-D").arg(&self.data).env_remove("PGDATA");
        c
    }

    /// Starts the server, waits for the replay to pause at the target,
    /// and reads every database.
    async fn run(&self, plan: &Plan, job: &Job) -> Result<String, VerifyError> {
        let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let opts = format!(
            "-c port={} -c listen_addresses='' -c unix_socket_directories={} -c hba_file={} -c ident_file={} \
             -c archive_mode=off -c hot_standby=on -c recovery_target_action=pause -c primary_conninfo='' \
             -c logging_collector=off -c log_destination=stderr -c shared_buffers=64MB",
            self.port,
            q(&self.root),
            q(&self.root.join("hba.conf")),
            q(&self.root.join("ident.conf")),
        );
        let out = self
            .pg_ctl()
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(&opts)
            // -w: until it accepts (read-only) connections, i.e. is
            // consistent, or has exited.
            .args(["-w", "-t"])
            .arg(REPLAY_LIMIT.as_secs().to_string())
            .arg("start")
            .output()
            .map_err(|e| cannot(format!("cannot run pg_ctl: {e}")))?;
        if !out.status.success() {
            return Err(cannot(format!(
                "PostgreSQL did not start on the restored snapshot: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            )));
        }
        let conn = self.wait_paused(plan, job).await?;
        read_databases(&conn).await
    }

    /// The connection once replay has paused at the target; fails with
    /// the server's own words when it stops first.
    async fn wait_paused(&self, plan: &Plan, job: &Job) -> Result<ConnInfo, VerifyError> {
        let deadline = Instant::now() + REPLAY_LIMIT;
        let users = self.candidate_users(job);
        loop {
            for user in &users {
                let dsn = format!(
                    "host={} port={} user={user} dbname=postgres sslmode=disable",
                    self.root.display(),
                    self.port
                );
                let Ok(conn) = ConnInfo::parse(&dsn) else {
                    continue;
                };
                if let Ok(c) = conn.connect().await
                    && let Ok(row) = c
                        .query_one(
                            "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, ''), pg_get_wal_replay_pause_state()",
                            &[],
                        )
                        .await
                {
                    let (recovering, lsn, state): (bool, String, String) =
                        (row.get(0), row.get(1), row.get(2));
                    let lsn: Option<Lsn> = lsn.parse().ok();
                    if !recovering {
                        return Err(VerifyError::Damaged(format!(
                            "the restored server ended recovery (promoted) before pausing at {}: {}",
                            plan.reach,
                            self.log_tail()
                        )));
                    }
                    if state == "paused" {
                        return match lsn {
                            Some(l) if l >= plan.reach => Ok(conn),
                            _ => Err(VerifyError::Damaged(format!(
                                "replay paused at {} short of {}: {}",
                                lsn.map(|l| l.to_string()).unwrap_or_default(),
                                plan.reach,
                                self.log_tail()
                            ))),
                        };
                    }
                }
            }
            if !self.data.join("postmaster.pid").exists() {
                return Err(VerifyError::Damaged(format!(
                    "PostgreSQL stopped while replaying the archived WAL: {}",
                    self.log_tail()
                )));
            }
            if Instant::now() >= deadline {
                return Err(cannot(format!(
                    "the replay did not reach {} within {} s: {}",
                    plan.reach,
                    REPLAY_LIMIT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Roles to connect as over the trusted private socket: the server's
    /// OS user (initdb's superuser is named after it), the job's user,
    /// `postgres`.
    fn candidate_users(&self, job: &Job) -> Vec<String> {
        let mut v = vec![];
        if let Some((uid, _)) = self.owner
            && let Some(name) = user_name(uid)
        {
            v.push(name);
        }
        if let Some(pg) = job.source.postgres()
            && let Ok(c) = ConnInfo::parse(pg.dsn.expose())
        {
            v.push(c.user.clone());
        }
        v.push("postgres".into());
        v.dedup();
        v
    }

    /// The server log's FATAL, PANIC and restore lines (the last few).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("FATAL")
                    || l.contains("PANIC")
                    || l.contains("ERROR")
                    || l.contains("wal-fetch")
            })
            .collect();
        let lines = if lines.is_empty() {
            text.lines().collect()
        } else {
            lines
        };
        let tail = &lines[lines.len().saturating_sub(6)..];
        format!("server log {}: {}", self.log.display(), tail.join(" | "))
    }

    /// Stops the server (fast), then for sure (immediate).
    fn stop(&self) -> Result<(), VerifyError> {
        if !self.data.join("postmaster.pid").exists() {
            return Ok(());
        }
        let fast = self
            .pg_ctl()
            .args(["-m", "fast", "-w", "-t", "120", "stop"])
            .output();
        if fast.as_ref().is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        Err(cannot(format!(
            "the scratch PostgreSQL on {} did not stop cleanly",
            self.data.display()
        )))
    }
}

/// The login name of `uid`.
fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns NULL or a pointer to static storage, read at
    // once on this thread.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Reads every table of every database that allows connections (the
/// fingerprint's per-table checksums read each row), so a page PostgreSQL
/// cannot read fails the check.
async fn read_databases(conn: &ConnInfo) -> Result<String, VerifyError> {
    let client = conn
        .connect()
        .await
        .map_err(|e| cannot(format!("connecting to the restored server: {e}")))?;
    let rows = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| cannot(format!("listing databases: {e}")))?;
    let mut tables = 0;
    let mut dbs = vec![];
    for r in rows {
        let db: String = r.get(0);
        let c = conn.with_dbname(&db).connect().await.map_err(|e| {
            cannot(format!(
                "connecting to database {db} on the restored server: {e}"
            ))
        })?;
        let fp = crate::source::postgres::fingerprint::catalog_and_data(&c)
            .await
            .map_err(|e| {
                VerifyError::Damaged(format!("reading database {db} on the restored server: {e}"))
            })?;
        tables += fp.tables.len();
        dbs.push(db);
    }
    Ok(format!(
        "PostgreSQL started on it and read all {tables} tables of {} databases ({})",
        dbs.len(),
        dbs.join(", ")
    ))
}

/// Moves the replayed directory (stopped in recovery) to `hot`, replacing
/// the previous hot backup only once the new one is in place, with the
/// target dropped so that, started, it replays whatever the archive holds
/// by then.
fn keep_hot(scratch: tempfile::TempDir, data: &Path, hot: &Path) -> Result<(), VerifyError> {
    crate::wal::recovery::drop_target(data)
        .map_err(|e| cannot(format!("preparing the hot backup: {e:#}")))?;
    let _ = std::fs::remove_file(data.join("postmaster.opts"));
    let old = scratch.path().join("previous");
    let had_old = hot.exists();
    if had_old {
        std::fs::rename(hot, &old).map_err(|e| {
            cannot(format!(
                "moving the previous hot backup {} aside: {e}",
                hot.display()
            ))
        })?;
    }
    if let Err(e) = std::fs::rename(data, hot) {
        if had_old {
            let _ = std::fs::rename(&old, hot);
        }
        return Err(cannot(format!(
            "moving the replayed directory to {}: {e}",
            hot.display()
        )));
    }
    if let Some(p) = hot.parent()
        && let Ok(d) = std::fs::File::open(p)
    {
        let _ = d.sync_all();
    }
    drop(scratch);
    Ok(())
}
