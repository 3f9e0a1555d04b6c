//! The notifier's settings and their checks. No I/O here: `configure` runs
//! these during `offsite config check`.

use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use offsite_plugin_core::duration;
use offsite_sdk::{Error, Settings};

pub const DEFAULT_PORT: u16 = 25;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_RETRIES: u32 = 3;
/// More would outlast the runner's per-call limit (`[runner] plugin_timeout`,
/// 5 minutes by default) with the backoff.
pub const MAX_RETRIES: u32 = 10;
pub const DEFAULT_SUBJECT_PREFIX: &str = "[offsite]";

/// When to upgrade the connection with STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// When the server offers it; in clear text otherwise.
    Auto,
    /// Refuse a server that does not offer it.
    Always,
    /// Never, even when offered.
    Never,
}

/// What `configure` keeps. `Debug` never shows the password or the CA text.
#[derive(Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    /// User and password for AUTH; both or neither.
    pub login: Option<(String, String)>,
    pub starttls: StartTls,
    /// PEM text: CA certificates, or the server's own certificate (pinned).
    pub tls_ca: Option<String>,
    pub tls_insecure: bool,
    pub subject_prefix: String,
    pub timeout: Duration,
    pub retries: u32,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .field("user", &self.login.as_ref().map(|(u, _)| u))
            .field("password", &self.login.as_ref().map(|_| "********"))
            .field("starttls", &self.starttls)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<pem>"))
            .field("tls_insecure", &self.tls_insecure)
            .field("subject_prefix", &self.subject_prefix)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Config, Error> {
        let host = s.required("host")?.trim().to_string();
        let port = s.parse::<u16>("port")?.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(Error::Config("setting `port` must be 1 to 65535".into()));
        }
        let from = parse_mailbox("from", s.required("from")?)?;
        let to = parse_mailboxes(s.required("to")?)?;
        let login = match (s.get("user"), s.get("password")) {
            (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "setting `user` is set but `password` is not; give both for AUTH, or neither"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "setting `password` is set but `user` is not; give both for AUTH, or neither"
                        .into(),
                ));
            }
        };
        let starttls = match s.get("starttls").map(|v| v.trim().to_ascii_lowercase()) {
            None => StartTls::Auto,
            Some(v) => match v.as_str() {
                "auto" => StartTls::Auto,
                "always" => StartTls::Always,
                "never" => StartTls::Never,
                _ => {
                    return Err(Error::Config(format!(
                        "setting `starttls` = {v:?} is not one of auto, always, never"
                    )));
                }
            },
        };
        let tls_ca = s.get("tls_ca").map(str::to_string);
        if let Some(pem) = &tls_ca
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(Error::Config(
                "setting `tls_ca` holds no PEM certificate (-----BEGIN CERTIFICATE-----); \
                 give the certificate text itself (tls_ca_file = PATH in the config reads it from a file)"
                    .into(),
            ));
        }
        let tls_insecure = s.flag("tls_insecure")?.unwrap_or(false);
        let subject_prefix = s.get("subject_prefix").unwrap_or("").trim().to_string();
        let timeout = match s.get("timeout") {
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            Some(v) => duration::seconds_or_minutes("timeout", v)?,
        };
        let retries = s.parse::<u32>("retries")?.unwrap_or(DEFAULT_RETRIES);
        let retries = offsite_plugin_core::retry::check_retries(retries, MAX_RETRIES)?;
        Ok(Config {
            host,
            port,
            from,
            to,
            login,
            starttls,
            tls_ca,
            tls_insecure,
            subject_prefix,
            timeout,
            retries,
        })
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_mailbox(key: &str, v: &str) -> Result<Mailbox, Error> {
    v.trim().parse::<Mailbox>().map_err(|e| {
        Error::Config(format!(
            "setting `{key}`: {:?} is not a mail address ({e}); write `user@example.com` or `Name <user@example.com>`",
            v.trim()
        ))
    })
}

/// `to`: addresses separated by commas (a display name may not hold one).
fn parse_mailboxes(v: &str) -> Result<Vec<Mailbox>, Error> {
    let to = v
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_mailbox("to", p))
        .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err(Error::Config(
            "setting `to` names no recipient; write addresses separated by commas".into(),
        ));
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        match Config::from_settings(&settings(pairs)) {
            Err(Error::Config(m)) => m,
            Err(e) => panic!("expected a config error, got {e:?}"),
            Ok(c) => panic!("expected a config error, got {c:?}"),
        }
    }

    const BASE: [(&str, &str); 3] = [
        ("host", "127.0.0.1"),
        ("from", "Backups <backup@example.com>"),
        ("to", "ops@example.com, Dana Doe <dana@example.org>"),
    ];

    #[test]
    fn defaults_and_recipients() {
        let c = Config::from_settings(&settings(&BASE)).unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.starttls, StartTls::Auto);
        assert_eq!(c.to.len(), 2);
        assert_eq!(c.to[1].email.to_string(), "dana@example.org");
        assert_eq!(c.from.name.as_deref(), Some("Backups"));
        assert!(c.login.is_none());
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.server(), "127.0.0.1:25");
    }

    #[test]
    fn every_bad_setting_is_named() {
        let with = |k: &'static str, v: &'static str| {
            let mut p = BASE.to_vec();
            p.retain(|(key, _)| *key != k);
            p.push((k, v));
            config_error(&p)
        };
        assert!(with("to", "not an address").contains("setting `to`"));
        assert!(with("to", " , ").contains("setting `to`"));
        assert!(with("from", "nobody").contains("setting `from`"));
        assert!(with("starttls", "maybe").contains("setting `starttls`"));
        assert!(with("port", "70000").contains("`port`"));
        assert!(with("timeout", "soon").contains("setting `timeout`"));
        assert!(with("retries", "99").contains("setting `retries`"));
        assert!(with("tls_ca", "/etc/ssl/ca.pem").contains("setting `tls_ca`"));
        assert!(with("tls_insecure", "perhaps").contains("`tls_insecure`"));
        let m = with("password", "hunter2");
        assert!(m.contains("`user`") && !m.contains("hunter2"), "{m}");
        assert!(with("user", "bob").contains("`password`"));
        assert!(config_error(&[]).contains("`host`"));
    }

    #[test]
    fn debug_hides_the_password() {
        let mut p = BASE.to_vec();
        p.push(("user", "bob"));
        p.push(("password", "hunter2"));
        let c = Config::from_settings(&settings(&p)).unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("bob") && !d.contains("hunter2"), "{d}");
    }
}
