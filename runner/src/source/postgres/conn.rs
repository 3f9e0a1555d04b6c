//! Connecting to PostgreSQL: a DSN resolved into a [`ConnInfo`] (see
//! [`super::dsn`] for libpq's resolution order), offsite's own connections
//! (without TLS), the client tools' environment, and connection failures
//! classified into one-line [`PgError`]s.

use std::collections::BTreeMap;
use std::io;
use std::process::Command;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

use super::PgError;
use super::dsn;
use crate::exec::scrub;

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
    /// Every libpq setting as resolved ([`dsn::resolve`]); the
    /// client tools get them through their environment.
    params: BTreeMap<String, String>,
}

impl ConnInfo {
    /// Resolves `dsn` the way libpq does (DSN, service file, `PG*`
    /// environment, defaults, password file).
    pub fn parse(dsn: &str) -> Result<ConnInfo, PgError> {
        ConnInfo::from_params(dsn::resolve(dsn)?)
    }

    fn from_params(mut params: BTreeMap<String, String>) -> Result<ConnInfo, PgError> {
        if !params.contains_key("password")
            && let Some(pw) = dsn::passfile_password(&params)
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
                    config.host_path(dsn::default_socket_dir());
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
        let user = params
            .get("user")
            .cloned()
            .unwrap_or_else(dsn::current_os_user);
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
        if let Some(pw) = dsn::passfile_password(&params).or(self.password.clone()) {
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
            if let Some(var) = dsn::env_var(key) {
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
