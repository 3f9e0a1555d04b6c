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

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

pub use super::pg_tools::{PgTool, ToolFit, find_tool};
use crate::pipeline;

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

/// A DSN taken apart: what the connection check uses, and what the client
/// tools get through their environment.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub config: tokio_postgres::Config,
    pub user: String,
    pub dbname: String,
    /// From the DSN, the service file, `PGPASSWORD` or the password file,
    /// resolved once so every connection and tool uses the same one.
    pub password: Option<String>,
    /// Every libpq setting as resolved ([`super::pg_conn::resolve`]); the
    /// client tools get them through their environment.
    params: BTreeMap<String, String>,
}

impl ConnInfo {
    /// Resolves `dsn` the way libpq does (DSN, service file, `PG*`
    /// environment, defaults, password file).
    pub fn parse(dsn: &str) -> Result<ConnInfo, PgError> {
        ConnInfo::from_params(super::pg_conn::resolve(dsn)?)
    }

    fn from_params(mut params: BTreeMap<String, String>) -> Result<ConnInfo, PgError> {
        if !params.contains_key("password")
            && let Some(pw) = super::pg_conn::passfile_password(&params)
        {
            params.insert("password".into(), pw);
        }
        let mut config = tokio_postgres::Config::new();
        let bad = |k: &str, v: &str| PgError::InvalidDsn(format!("invalid {k} \"{v}\""));
        if let Some(hosts) = params.get("host") {
            for h in hosts.split(',') {
                if h.starts_with('/') {
                    config.host_path(h);
                } else if h.is_empty() {
                    config.host_path(default_socket_dir());
                } else {
                    config.host(h);
                }
            }
        }
        if let Some(addrs) = params.get("hostaddr") {
            for a in addrs.split(',') {
                config.hostaddr(a.parse().map_err(|_| bad("hostaddr", a))?);
            }
        }
        if let Some(ports) = params.get("port") {
            for p in ports.split(',') {
                let p = if p.is_empty() { "5432" } else { p };
                config.port(p.parse().map_err(|_| bad("port", p))?);
            }
        }
        let user = params.get("user").cloned().unwrap_or_else(current_os_user);
        let dbname = params
            .get("dbname")
            .cloned()
            .unwrap_or_else(|| user.clone());
        config.user(&user).dbname(&dbname);
        let password = params.get("password").cloned();
        if let Some(pw) = &password {
            config.password(pw);
        }
        if let Some(o) = params.get("options") {
            config.options(o);
        }
        config.application_name(
            params
                .get("application_name")
                .map(String::as_str)
                .unwrap_or("offsite"),
        );
        let timeout = match params.get("connect_timeout") {
            Some(t) => t
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("connect_timeout", t))?,
            None => 10,
        };
        config.connect_timeout(Duration::from_secs(timeout.max(2)));
        config.ssl_mode(match params.get("sslmode").map(String::as_str) {
            None | Some("prefer") | Some("allow") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("require") | Some("verify-ca") | Some("verify-full") => SslMode::Require,
            Some(other) => return Err(bad("sslmode", other)),
        });
        if params.get("target_session_attrs").map(String::as_str) == Some("read-write") {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        Ok(ConnInfo {
            config,
            user,
            dbname,
            password,
            params,
        })
    }

    /// `host:port` (or the socket path) for messages: where, never how.
    pub fn endpoint(&self) -> String {
        let ports = self.config.get_ports();
        let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let mut parts = Vec::new();
        for (i, host) in self.config.get_hosts().iter().enumerate() {
            parts.push(match host {
                Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", port(i)),
                Host::Tcp(h) => format!("{h}:{}", port(i)),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
            });
        }
        if parts.is_empty() {
            for (i, addr) in self.config.get_hostaddrs().iter().enumerate() {
                parts.push(format!("{addr}:{}", port(i)));
            }
        }
        parts.join(", ")
    }

    /// Same server, another database (to create the restore target, to
    /// drop the verify scratch database). The password file is asked again
    /// for that database; without a line for it, the password found for
    /// the first database is kept (it is the role's, whatever the database).
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut params = self.params.clone();
        params.insert("dbname".into(), dbname.to_string());
        if let Some(pw) = super::pg_conn::passfile_password(&params).or(self.password.clone()) {
            params.insert("password".into(), pw);
        }
        ConnInfo::from_params(params).unwrap_or_else(|_| {
            let mut c = self.clone();
            c.config.dbname(dbname);
            c.dbname = dbname.to_string();
            c
        })
    }

    /// Points a client tool at this server through libpq's environment
    /// variables, so argv holds neither the DSN nor the password. Every
    /// setting resolved for offsite's own connections is passed; a
    /// service named in the runner's environment is not (libpq would let
    /// it override the variables set here).
    pub fn apply_env(&self, cmd: &mut Command) {
        for var in ["PGSERVICE", "PGSERVICEFILE", "PGREQUIRESSL"] {
            cmd.env_remove(var);
        }
        for (key, value) in &self.params {
            if let Some(var) = super::pg_conn::env_var(key) {
                cmd.env(var, value);
            }
        }
        if !self.params.contains_key("application_name") {
            cmd.env("PGAPPNAME", "offsite");
        }
        cmd.env(
            "PGCONNECT_TIMEOUT",
            self.config
                .get_connect_timeout()
                .map(|t| t.as_secs().max(2))
                .unwrap_or(10)
                .to_string(),
        );
    }

    /// Connects (without TLS) and maps failures to one-line [`PgError`]s.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        if self.config.get_ssl_mode() == SslMode::Require {
            return Err(PgError::TlsRequired);
        }
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| self.classify(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    fn classify(&self, e: &tokio_postgres::Error) -> PgError {
        let endpoint = self.endpoint();
        let user = self.user.clone();
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            return if *code == SqlState::INVALID_PASSWORD {
                PgError::AuthFailed { endpoint, user }
            } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
                PgError::NotAllowed {
                    endpoint,
                    user,
                    message: db.message().to_string(),
                }
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                PgError::NoDatabase {
                    endpoint,
                    database: self.dbname.clone(),
                }
            } else if *code == SqlState::CANNOT_CONNECT_NOW {
                PgError::Unreachable {
                    endpoint,
                    reason: db.message().to_string(),
                }
            } else {
                PgError::Refused {
                    endpoint,
                    message: db.message().to_string(),
                }
            };
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                let reason = match io.kind() {
                    io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                    io::ErrorKind::TimedOut => "connection timed out".to_string(),
                    io::ErrorKind::NotFound => "no server socket there".to_string(),
                    io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    _ => strip_os_error(&io.to_string()),
                };
                return PgError::Unreachable { endpoint, reason };
            }
            source = s.source();
        }
        let text = e.to_string();
        if text.contains("password missing") {
            return PgError::PasswordMissing { endpoint, user };
        }
        if text.contains("timeout") {
            return PgError::Unreachable {
                endpoint,
                reason: "timed out waiting for the server".to_string(),
            };
        }
        if text.contains("TLS") {
            return PgError::TlsRequired;
        }
        PgError::Refused {
            endpoint,
            message: scrub(&text, self.password.as_deref()),
        }
    }
}

fn strip_os_error(s: &str) -> String {
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// libpq's compiled-in socket directory: Debian's, else the upstream /tmp.
pub(crate) fn default_socket_dir() -> &'static str {
    ["/var/run/postgresql", "/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .unwrap_or("/tmp")
}

pub(crate) fn current_os_user() -> String {
    // SAFETY: getpwuid_r writes into the buffers we pass and nothing else.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) == 0
            && !result.is_null()
        {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        std::env::var("USER").unwrap_or_else(|_| uid.to_string())
    }
}

/// Replaces the password wherever it appears (defence in depth: libpq does
/// not print it, but a tool's stderr is not ours to trust).
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 3 => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

/// Connects and reads what the backup needs to know, in one line per failure.
/// Checks the connection only; [`PgSource::check`] also checks the client
/// tools the job's format needs.
pub async fn preflight(dsn: &str) -> Result<ServerInfo, PgError> {
    let conn = ConnInfo::parse(dsn)?;
    server_info(&conn).await
}

impl PgSource {
    /// Everything [`crate::source::take`] checks before writing: the
    /// connection, the REPLICATION attribute for snapshots, and local
    /// `pg_dump`/`pg_dumpall`/`pg_basebackup` at least as new as the server.
    /// For `offsite config check` and the start of a run.
    pub async fn check(&self) -> Result<ServerInfo, PgError> {
        prepare(self).await.map(|p| p.info)
    }
}

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
        .map_err(|e| PgError::Query {
            endpoint: conn.endpoint(),
            message: e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string()),
        })?;
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

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Lets an async caller stop blocking work it started: dropping the future
/// (timeout, shutdown) kills the dump instead of letting it run on unseen.
#[derive(Clone, Default)]
pub(crate) struct Cancel(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    children: Mutex<Vec<Weak<Mutex<Child>>>>,
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let children = self.0.children.lock().unwrap_or_else(|p| p.into_inner());
        for c in children.iter().filter_map(Weak::upgrade) {
            kill_group(&mut c.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    pub fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            // Not ErrorKind::Interrupted: io::copy (inside tar) retries that
            // forever, and a cancelled files backup would spin.
            Err(io::Error::other("the backup was cancelled"))
        } else {
            Ok(())
        }
    }

    fn register(&self, child: &Arc<Mutex<Child>>) {
        let mut children = self.0.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|w| w.strong_count() > 0);
        children.push(Arc::downgrade(child));
        if self.is_cancelled() {
            kill_group(&mut child.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Cancels when dropped unless [`CancelOnDrop::disarm`]ed.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// SIGKILLs a tool and everything it forked (pg_dump -j workers): each tool
/// leads its own process group. The group is signalled only while the
/// leader is unreaped, so its id cannot have been recycled.
fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the process group our unreaped child leads.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
    // A no-op once the child has been reaped.
    let _ = child.kill();
}

pub(crate) struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// Lines of a tool's stderr kept for the error message.
const STDERR_TAIL_LINES: usize = 50;
const STDERR_LINE_MAX: usize = 1000;

/// A client tool that failed. The message carries its last stderr lines
/// because that is where pg_dump says *why*.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ToolError {
    pub tool: String,
    pub status: String,
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tool, self.status)?;
        if self.stderr_tail.is_empty() {
            write!(f, " and printed nothing on stderr")
        } else {
            write!(f, "; its last stderr lines:")?;
            for l in &self.stderr_tail {
                write!(f, "\n    {l}")?;
            }
            Ok(())
        }
    }
}

/// How to start one client tool.
pub(crate) struct ToolCommand {
    pub label: String,
    pub command: Command,
    pub secret: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
}

impl ToolCommand {
    pub fn new(tool: &PgTool, label: &str, conn: Option<&ConnInfo>) -> ToolCommand {
        let mut command = Command::new(&tool.path);
        if let Some(c) = conn {
            c.apply_env(&mut command);
        }
        // Never wait for a password prompt nobody will answer.
        command.arg("-w");
        ToolCommand {
            label: label.to_string(),
            command,
            secret: conn.and_then(|c| c.password.clone()),
            stdin: false,
            stdout: false,
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.command.arg(a.into());
        self
    }

    pub fn spawn(mut self, cancel: &Cancel) -> anyhow::Result<Spawned> {
        cancel.check()?;
        let cmd = &mut self.command;
        cmd.stdin(if self.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(if self.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stderr(Stdio::piped());
        // Its own group, so cancelling reaches the workers it forks. (A
        // terminal's Ctrl-C then reaches only the runner, which cancels.)
        cmd.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The kernel kills the tool when the thread that spawned it
                // dies, which covers a SIGKILLed runner. We spawn and wait
                // on the same thread, so that thread outlives the tool.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other("the runner exited while starting a tool"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start {} ({}): {e}",
                self.label,
                cmd.get_program().to_string_lossy()
            )
        })?;
        tracing::debug!(tool = %self.label, pid = child.id(), "started");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        let label = self.label.clone();
        let secret = self.secret.clone();
        std::thread::Builder::new()
            .name(format!("{label}-stderr"))
            .spawn(move || {
                let _ = tx.send(read_stderr(stderr, &label, secret.as_deref()));
            })?;
        let child = Arc::new(Mutex::new(child));
        cancel.register(&child);
        Ok(Spawned {
            label: self.label,
            child,
            stdin,
            stdout,
            stderr: Some(rx),
            cancel: cancel.clone(),
            done: false,
        })
    }
}

/// A running tool. Dropping it before [`Spawned::wait`] kills it.
pub(crate) struct Spawned {
    pub label: String,
    child: Arc<Mutex<Child>>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    stderr: Option<mpsc::Receiver<Vec<String>>>,
    cancel: Cancel,
    done: bool,
}

impl Spawned {
    /// Closes stdin, waits, and turns anything but exit 0 into a
    /// [`ToolError`]. Returns the stderr lines of a successful run (warnings).
    pub fn wait(mut self) -> Result<Vec<String>, ToolError> {
        drop(self.stdin.take());
        let status = loop {
            let polled = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_wait();
            match polled {
                Ok(Some(s)) => break Ok(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(e),
            }
        };
        self.done = true;
        drop(self.stdout.take());
        // The pipe closes when the tool (and any worker it forked) is gone;
        // do not hang on a stray grandchild holding it.
        let tail = self
            .stderr
            .take()
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
            .unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(tail),
            Ok(s) => Err(ToolError {
                tool: self.label.clone(),
                status: describe_status(s, self.cancel.is_cancelled()),
                stderr_tail: tail,
            }),
            Err(e) => Err(ToolError {
                tool: self.label.clone(),
                status: format!("could not be waited for: {e}"),
                stderr_tail: tail,
            }),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.done {
            drop(self.stdin.take());
            drop(self.stdout.take());
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            kill_group(&mut child);
            let _ = child.wait();
        }
    }
}

fn describe_status(s: ExitStatus, cancelled: bool) -> String {
    if cancelled {
        return "was stopped because the backup was cancelled".to_string();
    }
    if let Some(code) = s.code() {
        return format!("exited with status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended abnormally ({s})"),
    }
}

fn read_stderr(mut r: impl Read, label: &str, secret: Option<&str>) -> Vec<String> {
    let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let push = |bytes: &[u8], tail: &mut VecDeque<String>| {
        let line = String::from_utf8_lossy(bytes);
        let line = scrub(line.trim_end_matches('\r'), secret);
        if line.trim().is_empty() {
            return;
        }
        tracing::info!(tool = %label, "{line}");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                push(&partial, &mut tail);
                partial.clear();
            } else if partial.len() < STDERR_LINE_MAX {
                partial.push(b);
            }
        }
    }
    if !partial.is_empty() {
        push(&partial, &mut tail);
    }
    tail.into()
}

/// Copies a tool's stdout into `out` in fixed-size chunks, stopping early on
/// cancellation.
pub(crate) fn pump(
    from: &mut (impl Read + ?Sized),
    out: &mut (impl Write + ?Sized),
    cancel: &Cancel,
) -> io::Result<u64> {
    let mut buf = vec![0u8; pipeline::BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        cancel.check()?;
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------
// Dumps
// ---------------------------------------------------------------------------

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
    let tools = tokio::task::spawn_blocking(move || {
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
                    endpoint: endpoint.clone(),
                },
                other => other,
            })
        };
        let dumpall = find("pg_dumpall")?;
        if format == PgFormat::Snapshot {
            Ok::<_, PgError>((None, Some(dumpall), Some(find("pg_basebackup")?)))
        } else {
            Ok((Some(find("pg_dump")?), Some(dumpall), None))
        }
    })
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
        pg_dump: tools.0,
        pg_dumpall: tools.1,
        pg_basebackup: tools.2,
    })
}

/// Upper bound for the roles/tablespaces script held in memory.
const GLOBALS_MAX: u64 = 64 * 1024 * 1024;

/// Roles, memberships and tablespaces, rewritten by [`rewrite_globals`].
/// `None` (with a warning) when even the password-less variant is refused:
/// a backup without roles is still worth keeping, a failed one is not.
pub(crate) fn dump_globals(
    p: &Prepared,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let tool = p.pg_dumpall.as_ref().expect("prepared with pg_dumpall");
    let attempt = |no_passwords: bool| -> anyhow::Result<Result<Vec<u8>, ToolError>> {
        let mut cmd = ToolCommand::new(tool, "pg_dumpall", Some(&p.conn));
        cmd.arg("--globals-only").arg("-l").arg(&p.conn.dbname);
        if no_passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd.stdout = true;
        let mut child = cmd.spawn(cancel)?;
        let mut out = Vec::new();
        let mut stdout = child.stdout.take().expect("piped");
        pump(&mut (&mut stdout).take(GLOBALS_MAX), &mut out, cancel)?;
        if out.len() as u64 >= GLOBALS_MAX {
            // Dropping `child` kills it; it would block on a full pipe.
            anyhow::bail!(
                "pg_dumpall --globals-only printed more than {} MiB of roles and tablespaces; offsite keeps them in memory and refuses that much",
                GLOBALS_MAX >> 20
            );
        }
        drop(stdout);
        Ok(child.wait().map(|_| out))
    };
    let first = attempt(false)?;
    let out = match first {
        Ok(out) => out,
        Err(e) => {
            cancel.check()?;
            tracing::warn!(error = %e, "pg_dumpall --globals-only failed; retrying without role passwords");
            match attempt(true)? {
                Ok(out) => {
                    warnings.push(format!(
                        "roles were saved without their passwords: user \"{}\" may not read pg_authid (connect as a superuser to include them)",
                        p.conn.user
                    ));
                    out
                }
                Err(e2) => {
                    cancel.check()?;
                    let msg = format!(
                        "roles and tablespaces were not saved (a restore on a new server must create them first): {}",
                        e2.stderr_tail
                            .last()
                            .cloned()
                            .unwrap_or_else(|| e2.status.clone())
                    );
                    tracing::warn!("{msg}");
                    warnings.push(msg);
                    return Ok(None);
                }
            }
        }
    };
    if out.is_empty() {
        anyhow::bail!("pg_dumpall --globals-only wrote nothing");
    }
    Ok(Some(rewrite_globals(&out)))
}

/// Makes `pg_dumpall --globals-only` output re-runnable under
/// `ON_ERROR_STOP`: `CREATE ROLE x;` fails when x exists (always true for the
/// role doing the restore), so it becomes a DO block that ignores
/// `duplicate_object`. Everything else is kept as pg_dumpall wrote it.
pub fn rewrite_globals(input: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut out = String::with_capacity(text.len() + 1024);
    let mut state = QuoteState::Normal;
    for line in text.split_inclusive('\n') {
        let starts_normal = state == QuoteState::Normal;
        state = state.after(line);
        let body = line.trim_end_matches(['\n', '\r']);
        if starts_normal
            && let Some(rest) = body.strip_prefix("CREATE ROLE ")
            && let Some((_, after)) = parse_ident(rest)
            && after == ";"
        {
            let stmt = body.trim_end_matches(';');
            let mut tag = "$offsite$".to_string();
            while stmt.contains(&tag) {
                tag.insert(tag.len() - 1, '_');
            }
            out.push_str(&format!(
                "DO {tag} BEGIN {stmt}; EXCEPTION WHEN duplicate_object THEN NULL; END {tag};\n"
            ));
            continue;
        }
        out.push_str(line);
    }
    out.into_bytes()
}

/// Where a line of SQL text leaves us: inside a string or identifier that
/// continues on the next line, or not. Enough for pg_dumpall output, which
/// uses standard-conforming strings and no dollar quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteState {
    Normal,
    Single,
    Double,
}

impl QuoteState {
    pub fn after(self, line: &str) -> QuoteState {
        let mut state = self;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            state = match (state, c) {
                (QuoteState::Normal, '\'') => QuoteState::Single,
                (QuoteState::Normal, '"') => QuoteState::Double,
                (QuoteState::Normal, '-') if chars.peek() == Some(&'-') => break,
                (QuoteState::Single, '\'') => QuoteState::Normal,
                (QuoteState::Double, '"') => QuoteState::Normal,
                (s, _) => s,
            };
        }
        state
    }
}

/// Parses an SQL identifier at the start of `s` (bare or double-quoted) and
/// returns it unquoted, with the rest of the string.
pub(crate) fn parse_ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if let Some((_, '"')) = chars.peek() {
                    chars.next();
                    name.push('"');
                } else {
                    return Some((name, &rest[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        Some((s[..end].to_lowercase(), &s[end..]))
    }
}

/// `pg_dump -Fp` straight into `out`. Returns the bytes written; zero bytes
/// is an error because pg_dump always writes a header.
pub(crate) fn dump_sql_stream(
    p: &Prepared,
    out: &mut dyn Write,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<u64> {
    let tool = p.pg_dump.as_ref().expect("prepared with pg_dump");
    let mut cmd = ToolCommand::new(tool, "pg_dump", Some(&p.conn));
    cmd.arg("--format=plain");
    if let Some(id) = &p.snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    cmd.stdout = true;
    let mut child = cmd.spawn(cancel)?;
    let mut stdout = child.stdout.take().expect("piped");
    let copied = pump(&mut stdout, out, cancel);
    drop(stdout);
    // Always wait, so the error can say how pg_dump ended.
    let waited = child.wait();
    let bytes = match (copied, waited) {
        // Our side failed (disk full, …): that is the cause; pg_dump then
        // only died of the closed pipe.
        (Err(e), _) if !cancel.is_cancelled() => {
            return Err(anyhow::anyhow!(
                "writing pg_dump's output to the backup file: {e}"
            ));
        }
        (_, Err(tool_err)) => return Err(tool_err.into()),
        (Err(e), Ok(_)) => return Err(e.into()),
        (Ok(n), Ok(stderr)) => {
            collect_warnings("pg_dump", &stderr, warnings);
            n
        }
    };
    if bytes == 0 {
        anyhow::bail!("pg_dump exited successfully but wrote nothing; refusing an empty backup");
    }
    Ok(bytes)
}

/// Runs the dump for a tar-layout generation into `spool`, returning
/// `(member name, path)` pairs in archive order. Directories are archived
/// recursively under their member name.
pub(crate) fn dump_to_spool(
    p: &Prepared,
    spool: &Path,
    outer_compression: bool,
    cancel: &Cancel,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let format = p.source.format;
    match format {
        PgFormat::Snapshot => {
            let tool = p
                .pg_basebackup
                .as_ref()
                .expect("prepared with pg_basebackup");
            let dir = spool.join("snapshot");
            let mut cmd = ToolCommand::new(tool, "pg_basebackup", Some(&p.conn));
            cmd.arg("-D")
                .arg(&dir)
                .arg("--format=tar")
                // stream: the WAL written during the copy arrives as
                // pg_wal.tar, so the snapshot starts on its own.
                .arg("--wal-method=stream")
                .arg("--checkpoint=fast")
                // The spool is archived and fsynced as one file afterwards.
                .arg("--no-sync")
                .arg("--label=offsite");
            let child = cmd.spawn(cancel)?;
            let stderr = child.wait()?;
            collect_warnings("pg_basebackup", &stderr, warnings);
            let base = dir.join("base.tar");
            if file_size(&base) == 0 {
                anyhow::bail!(
                    "pg_basebackup exited successfully but wrote no base.tar; refusing an empty backup"
                );
            }
            // base.tar, pg_wal.tar, tablespaces (<oid>.tar), backup_manifest:
            // base first so a restore can lay the data directory down first.
            let mut members = vec![("snapshot/base.tar".to_string(), base)];
            let wal = dir.join("pg_wal.tar");
            if wal.exists() {
                members.push(("snapshot/pg_wal.tar".to_string(), wal));
            }
            let mut rest: Vec<_> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "base.tar" && n != "pg_wal.tar")
                .collect();
            rest.sort();
            for n in rest {
                members.push((format!("snapshot/{n}"), dir.join(&n)));
            }
            Ok(members)
        }
        _ => {
            let tool = p.pg_dump.as_ref().expect("prepared with pg_dump");
            let target = spool.join(format.member_name());
            let mut cmd = ToolCommand::new(tool, "pg_dump", Some(&p.conn));
            cmd.arg(format!(
                "--format={}",
                match format {
                    PgFormat::Sql => "plain",
                    PgFormat::Custom => "custom",
                    PgFormat::Tar => "tar",
                    _ => "directory",
                }
            ));
            cmd.arg("--file").arg(&target);
            if let Some(id) = &p.snapshot {
                cmd.arg(format!("--snapshot={id}"));
            }
            if format == PgFormat::Directory {
                cmd.arg(format!("--jobs={}", p.source.jobs.max(1)));
            }
            if outer_compression && matches!(format, PgFormat::Custom | PgFormat::Directory) {
                // Compress once, with zstd's threads, instead of gzip inside
                // and zstd (gaining nothing) outside.
                cmd.arg("--compress=0");
            }
            let child = cmd.spawn(cancel)?;
            let stderr = child.wait()?;
            collect_warnings("pg_dump", &stderr, warnings);
            let written = if format == PgFormat::Directory {
                file_size(&target.join("toc.dat"))
            } else {
                file_size(&target)
            };
            if written == 0 {
                anyhow::bail!(
                    "pg_dump exited successfully but wrote nothing to {}; refusing an empty backup",
                    target.display()
                );
            }
            Ok(vec![(format.member_name().to_string(), target)])
        }
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn collect_warnings(tool: &str, stderr: &[String], warnings: &mut Vec<String>) {
    for l in stderr {
        if l.to_ascii_lowercase().contains("warning") {
            warnings.push(format!("{tool}: {l}"));
        }
    }
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
    let query_err = |e: tokio_postgres::Error| PgError::Query {
        endpoint: conn.endpoint(),
        message: e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    };
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

    #[test]
    fn versions() {
        assert_eq!(major_of(150018), 15);
        assert_eq!(major_of(90624), 906);
        assert_eq!(major_label(906), "9.6");
    }

    #[test]
    fn globals_rewrite_wraps_create_role_only_outside_strings() {
        let input = "CREATE ROLE app;\nCOMMENT ON ROLE app IS 'x\nCREATE ROLE fake;\n';\nCREATE ROLE \"we\"\"ird\";\nALTER ROLE app WITH LOGIN;\n";
        let out = String::from_utf8(rewrite_globals(input.as_bytes())).unwrap();
        assert!(out.starts_with(
            "DO $offsite$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $offsite$;\n"
        ));
        assert!(out.contains("\nCREATE ROLE fake;\n"), "{out}");
        assert!(
            out.contains("BEGIN CREATE ROLE \"we\"\"ird\"; EXCEPTION"),
            "{out}"
        );
        assert!(out.contains("\nALTER ROLE app WITH LOGIN;\n"));
    }

    #[test]
    fn idents() {
        assert_eq!(parse_ident("app;"), Some(("app".into(), ";")));
        assert_eq!(
            parse_ident("\"A\"\"b\" WITH"),
            Some(("A\"b".into(), " WITH"))
        );
        assert_eq!(parse_ident(";"), None);
    }

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

    /// A Prepared whose pg_dump is `program` (never connects anywhere).
    fn fake(program: &Path) -> Prepared {
        let conn =
            ConnInfo::parse("host=127.0.0.1 port=1 user=u password=fake-Secret dbname=d").unwrap();
        let tool = PgTool {
            path: program.to_path_buf(),
            major: 15,
            version: "15.0".into(),
            fit: ToolFit::Exact,
        };
        Prepared {
            snapshot: None,
            source: PgSource::new("host=127.0.0.1", PgFormat::Sql),
            conn,
            info: ServerInfo {
                version: "15.0".into(),
                version_num: 150000,
                database: "d".into(),
                size_bytes: 0,
                superuser: true,
                replication: true,
            },
            pg_dump: Some(tool.clone()),
            pg_dumpall: Some(tool),
            pg_basebackup: None,
        }
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-tool");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_dump_that_writes_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake(&script(dir.path(), "exit 0"));
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &Cancel::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrote nothing"), "{err}");
    }

    #[test]
    fn a_failing_dump_reports_status_and_scrubbed_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let body = "i=0; while [ $i -lt 80 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
                    echo \"pg_dump: error: password $PGPASSWORD rejected\" >&2\n\
                    echo partial; exit 3";
        let p = fake(&script(dir.path(), body));
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &Cancel::default(), &mut Vec::new()).unwrap_err();
        let tool = err.downcast_ref::<ToolError>().expect("ToolError");
        assert_eq!(tool.status, "exited with status 3");
        assert_eq!(tool.stderr_tail.len(), STDERR_TAIL_LINES);
        let msg = err.to_string();
        assert!(
            msg.starts_with("pg_dump exited with status 3; its last stderr lines:"),
            "{msg}"
        );
        assert!(
            msg.contains("pg_dump: error: password *** rejected"),
            "{msg}"
        );
        assert!(!msg.contains("fake-Secret"), "{msg}");
        assert!(!msg.contains("noise 0\n"), "only the tail is kept");
    }

    #[test]
    fn globals_fall_back_to_no_passwords_then_to_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        // Refuses unless --no-role-passwords is given.
        let body = "for a in \"$@\"; do [ \"$a\" = --no-role-passwords ] && { echo 'CREATE ROLE app;'; exit 0; }; done\n\
                    echo 'pg_dumpall: error: query failed: ERROR:  permission denied for table pg_authid' >&2; exit 1";
        let p = fake(&script(dir.path(), body));
        let mut warnings = Vec::new();
        let g = dump_globals(&p, &Cancel::default(), &mut warnings)
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(g)
                .unwrap()
                .contains("EXCEPTION WHEN duplicate_object")
        );
        assert!(
            warnings[0].contains("without their passwords"),
            "{warnings:?}"
        );

        let p = fake(&script(
            dir.path(),
            "echo 'pg_dumpall: error: nope' >&2; exit 1",
        ));
        let mut warnings = Vec::new();
        assert!(
            dump_globals(&p, &Cancel::default(), &mut warnings)
                .unwrap()
                .is_none()
        );
        assert!(warnings[0].contains("were not saved"), "{warnings:?}");
    }

    #[test]
    fn cancelling_kills_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake(&script(dir.path(), "exec sleep 30"));
        let cancel = Cancel::default();
        let c2 = cancel.clone();
        let started = std::time::Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            c2.cancel();
        });
        let mut out = Vec::new();
        let err = dump_sql_stream(&p, &mut out, &cancel, &mut Vec::new())
            .unwrap_err()
            .to_string();
        t.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            err.contains("stopped because the backup was cancelled"),
            "{err}"
        );
    }
}
