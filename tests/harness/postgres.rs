//! Throwaway PostgreSQL clusters for end-to-end tests.
//!
//! Each [`PgCluster`] is a fresh data directory (a copy of one cached initdb,
//! see `template`) in its own temporary folder, on a
//! free port, listening on 127.0.0.1 only, stopped (and its folder deleted)
//! when dropped — also when a test panics. TCP logins need a password
//! (scram-sha-256), so tests exercise the way a real DSN carries one; the
//! harness itself talks over the cluster's private Unix socket, trusted.
//!
//! Needs the PostgreSQL server binaries (tests/install/postgres.sh). As root,
//! the server runs as the `postgres` user via `runuser` (initdb refuses root).
//! Set `OFFSITE_PG_BIN` to pick a bin directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// Password of the `postgres` superuser in every harness cluster.
pub const SUPERUSER_PASSWORD: &str = "harness-Pw-4e1f";

/// A running throwaway cluster.
pub struct PgCluster {
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    _root: tempfile::TempDir,
    stopped: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The server's bin directory: `OFFSITE_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` that has `initdb`.
pub fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OFFSITE_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .expect("no PostgreSQL server binaries: run tests/install/postgres.sh")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A temporary folder the server user can use (data directories, restored
/// snapshots).
pub fn server_owned_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("offsite-pg-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown tempdir");
    }
    dir
}

/// uid and gid of the `postgres` user.
pub fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres uid");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id");
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres gid");
    (uid, gid)
}

/// An initdb'd data directory, made once per server version and machine and
/// then copied for every cluster: initdb costs ~3 s, a copy ~0.1 s. It lives
/// in the temp dir as `offsite-pg-template-<version>-v1` and is never
/// started, so copies are clean. Built in a private folder and renamed into
/// place, so concurrent test runs never see half of one.
fn template(bin: &Path) -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let version = check(
            "postgres --version",
            Command::new(bin.join("postgres")).arg("--version").output(),
        );
        let version = version
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .to_string();
        let dir = std::env::temp_dir().join(format!("offsite-pg-template-{version}-v1"));
        if dir.join("PG_VERSION").exists() {
            return dir;
        }
        let staging = server_owned_tempdir();
        let pwfile = staging.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("pwfile");
        let data = staging.path().join("data");
        check(
            "initdb",
            as_server_user(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .arg(format!("--pwfile={}", pwfile.display()))
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .output(),
        );
        // Another run may have won the race; its template is as good.
        if std::fs::rename(&data, &dir).is_err() && !dir.join("PG_VERSION").exists() {
            panic!("cannot move the initdb template to {}", dir.display());
        }
        dir
    })
}

/// Runs a server-side program as the server user.
pub fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn check(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgCluster {
    /// A fresh cluster (a copy of the cached initdb template) started on a
    /// free port. Panics with the tool's output if anything fails.
    pub fn start() -> PgCluster {
        PgCluster::start_with("")
    }

    /// A fresh cluster with `conf` (postgresql.conf lines, e.g. WAL
    /// archiving settings) appended before it starts.
    pub fn start_with(conf: &str) -> PgCluster {
        let bin = pg_bin();
        let template = template(&bin);
        let root = server_owned_tempdir();
        let data = root.path().join("data");
        check(
            "copy the initdb template",
            Command::new("cp")
                .arg("-a")
                .arg(template)
                .arg(&data)
                .output(),
        );
        if !conf.is_empty() {
            let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
            text.push_str(&format!("\n{conf}\n"));
            std::fs::write(data.join("postgresql.conf"), text).expect("write conf");
        }
        PgCluster::on_data_dir(bin, root, data, SUPERUSER_PASSWORD)
    }

    /// Starts a second server on an existing data directory (a restored
    /// snapshot). `password` is the superuser's in that data.
    pub fn start_existing(data: &Path, password: &str) -> PgCluster {
        let bin = pg_bin();
        let root = server_owned_tempdir();
        if is_root() {
            let (uid, gid) = postgres_ids();
            check(
                "chown restored data directory",
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{uid}:{gid}"))
                    .arg(data)
                    .output(),
            );
        }
        PgCluster::on_data_dir(bin, root, data.to_path_buf(), password)
    }

    fn on_data_dir(
        bin: PathBuf,
        root: tempfile::TempDir,
        data: PathBuf,
        password: &str,
    ) -> PgCluster {
        let sock = root.path().join("sock");
        std::fs::create_dir(&sock).expect("socket dir");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).expect("chown sock");
        }
        let log = root.path().join("server.log");
        let mut last_err = String::new();
        // The port is free when picked but may be taken before the server
        // binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let out = as_server_user(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
                    sock.display()
                ))
                .arg("start")
                .output()
                .expect("pg_ctl");
            if out.status.success() {
                return PgCluster {
                    port,
                    password: password.to_string(),
                    bin,
                    data,
                    sock,
                    log,
                    _root: root,
                    stopped: false,
                };
            }
            last_err = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed:\n{last_err}");
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`
    pub fn dsn(&self, db: &str) -> String {
        self.dsn_as("postgres", &self.password, db)
    }

    pub fn dsn_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The private Unix socket directory (trusted logins).
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// psql over the private socket as `postgres`; Err carries stderr.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_command(db, sql);
        cmd.args(["-U", "postgres", "-h"]).arg(&self.sock);
        Self::psql_output(cmd)
    }

    /// psql over TCP as `user` with `password` (no password file), as an
    /// application would connect; Err carries stderr.
    pub fn try_psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        let mut cmd = self.psql_command(db, sql);
        cmd.args(["-U", user, "-h", "127.0.0.1"])
            .env("PGPASSWORD", password)
            .env_remove("PGPASSFILE");
        Self::psql_output(cmd)
    }

    /// psql quiet, unaligned, tuples only, stopping at the first error.
    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p"])
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql]);
        cmd
    }

    fn psql_output(mut cmd: Command) -> Result<String, String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// psql that must succeed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed: {e}\nSQL: {sql}"))
    }

    /// Runs a program from the server's bin directory against this cluster
    /// (over the socket), e.g. `pgbench -i`.
    pub fn run_client(&self, program: &str, args: &[&str]) -> String {
        check(
            program,
            Command::new(self.bin.join(program))
                .args(["-h"])
                .arg(&self.sock)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres"])
                .args(args)
                .output(),
        )
    }

    /// Table by table: `schema.table` → (row count, md5 of all rows in text
    /// form, sorted), plus `sequence:name` → last_value. Equal maps mean the
    /// same data.
    pub fn fingerprint(&self, db: &str) -> BTreeMap<String, (i64, String)> {
        let tables = self.psql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for t in tables.lines().filter(|l| !l.is_empty()) {
            let row = self.psql(
                db,
                &format!(
                    "SELECT count(*) || '|' || coalesce(md5(string_agg(t::text, '' ORDER BY t::text)), '') FROM {t} t"
                ),
            );
            let (n, sum) = row.split_once('|').expect("count|md5");
            out.insert(t.to_string(), (n.parse().expect("count"), sum.to_string()));
        }
        let seqs = self.psql(
            db,
            "SELECT format('%I.%I', schemaname, sequencename) || '|' || coalesce(last_value, 0) \
             FROM pg_sequences ORDER BY 1",
        );
        for s in seqs.lines().filter(|l| !l.is_empty()) {
            let (name, v) = s.split_once('|').expect("name|value");
            out.insert(
                format!("sequence:{name}"),
                (v.parse().expect("last_value"), String::new()),
            );
        }
        out
    }

    /// Non-system roles as `name|login|has password|member of (comma list)`.
    pub fn roles(&self) -> Vec<String> {
        self.psql(
            "postgres",
            "SELECT r.rolname || '|' || r.rolcanlogin || '|' || (r.rolpassword IS NOT NULL) || '|' || \
                    coalesce(string_agg(g.rolname, ',' ORDER BY g.rolname), '') \
               FROM pg_authid r \
               LEFT JOIN pg_auth_members m ON m.member = r.oid \
               LEFT JOIN pg_roles g ON g.oid = m.roleid \
              WHERE r.rolname NOT LIKE 'pg\\_%' \
              GROUP BY r.rolname, r.rolcanlogin, r.rolpassword ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Stops the server now (immediate mode: tests do not need a clean
    /// shutdown). Falls back to SIGKILL of the postmaster.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let ok = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok
            && let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            && let Some(pid) = pidfile
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: plain kill(2) of the postmaster we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
