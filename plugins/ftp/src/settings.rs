//! The destination's settings, their defaults and their checks.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// Where and how to connect. `Debug` never shows the password or the CA text.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server name or address (the sandbox allows connections to it only).
    pub host: String,
    /// Control port, 21 by default.
    pub port: u16,
    pub user: String,
    /// Sent with PASS; in clear text unless `tls` is on.
    pub password: String,
    /// Directory for the files, relative to the login directory unless it
    /// starts with `/`. Missing levels are created. Empty: the login directory.
    pub remote_dir: String,
    /// Explicit FTPS (RFC 4217): AUTH TLS, then PBSZ 0 and PROT P, so the
    /// password and the data both travel encrypted. Off by default.
    pub tls: bool,
    /// Passive data connections (EPSV, falling back to PASV): the client
    /// connects to the server. On by default; off means active mode
    /// (EPRT/PORT), where the server connects back to the client.
    pub passive: bool,
    /// Limit for connecting and for each wait on the network (not for a whole
    /// transfer).
    pub timeout: Duration,
    /// PEM certificate(s) to trust instead of the built-in web roots, for a
    /// server with a private CA or a self-signed certificate: each is
    /// trusted as a CA, and also as the exact server certificate (a pin).
    /// Text, not a path: the plugin sandbox has no filesystem.
    pub tls_ca: Option<String>,
    /// Skip certificate verification (the connection is still encrypted but
    /// anyone in the middle can read it). Off by default.
    pub tls_insecure: bool,
}

/// Default control port (IANA's assignment for FTP).
pub const DEFAULT_PORT: u16 = 21;
/// Default network timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            host: String::new(),
            port: DEFAULT_PORT,
            user: String::new(),
            password: String::new(),
            remote_dir: String::new(),
            tls: false,
            passive: true,
            timeout: DEFAULT_TIMEOUT,
            tls_ca: None,
            tls_insecure: false,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("remote_dir", &self.remote_dir)
            .field("tls", &self.tls)
            .field("passive", &self.passive)
            .field("timeout", &self.timeout)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<pem>"))
            .field("tls_insecure", &self.tls_insecure)
            .finish()
    }
}

/// One setting as the plugin's `describe()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingInfo {
    pub key: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// Never shown in logs (may be given as `KEY_file` in the config).
    pub secret: bool,
    pub default: Option<&'static str>,
    /// Names a network endpoint the sandbox must allow.
    pub endpoint: bool,
}

const fn info(
    key: &'static str,
    description: &'static str,
    required: bool,
    default: Option<&'static str>,
) -> SettingInfo {
    SettingInfo {
        key,
        description,
        required,
        secret: false,
        default,
        endpoint: false,
    }
}

/// Every setting `Settings::from_pairs` accepts, for `describe()`.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        endpoint: true,
        ..info("host", "FTP server name or address", true, None)
    },
    info("port", "control port", false, Some("21")),
    info(
        "user",
        "login name (\"anonymous\" for anonymous FTP)",
        true,
        None,
    ),
    SettingInfo {
        secret: true,
        ..info(
            "password",
            "login password; travels in clear unless tls = true",
            false,
            Some(""),
        )
    },
    info(
        "remote_dir",
        "directory for the backups, created if missing; relative to the login directory unless it starts with /",
        false,
        Some(""),
    ),
    info(
        "tls",
        "explicit FTPS (AUTH TLS, RFC 4217): encrypt the login and the data",
        false,
        Some("false"),
    ),
    info(
        "passive",
        "passive data connections (EPSV/PASV); false = active (EPRT/PORT)",
        false,
        Some("true"),
    ),
    info(
        "timeout",
        "seconds to wait for the network at each step",
        false,
        Some("30"),
    ),
    info(
        "tls_ca",
        "PEM certificate(s) to trust instead of the public web roots: a private CA, or the server's own self-signed certificate",
        false,
        None,
    ),
    info(
        "tls_insecure",
        "skip certificate verification (encrypted, but not authenticated)",
        false,
        Some("false"),
    ),
];

impl Settings {
    /// `host:port`, with brackets around an IPv6 address, for messages.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Builds settings from key/value text pairs (the plugin's `configure`
    /// input). Unknown keys and unparsable values are `Config` errors that
    /// name the key; `timeout` is in seconds.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<Settings, Error>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut s = Settings::default();
        for (key, value) in pairs {
            match key {
                "host" => s.host = value.trim().to_string(),
                "port" => {
                    s.port = value.trim().parse().map_err(|_| {
                        Error::config(format!(
                            "setting port: \"{value}\" is not a port number (1-65535)"
                        ))
                    })?
                }
                "user" => s.user = value.to_string(),
                "password" => s.password = value.to_string(),
                "remote_dir" => s.remote_dir = value.trim().to_string(),
                "tls" => s.tls = parse_bool(key, value)?,
                "passive" => s.passive = parse_bool(key, value)?,
                "tls_insecure" => s.tls_insecure = parse_bool(key, value)?,
                "tls_ca" => s.tls_ca = Some(value.to_string()).filter(|v| !v.trim().is_empty()),
                "timeout" => {
                    let secs: f64 = value
                        .trim()
                        .trim_end_matches('s')
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "setting timeout: \"{value}\" is not a number of seconds (e.g. 30)"
                            ))
                        })?;
                    s.timeout = Duration::from_secs_f64(secs);
                }
                _ => {
                    let keys: Vec<&str> = SETTINGS.iter().map(|i| i.key).collect();
                    return Err(Error::config(format!(
                        "unknown setting \"{key}\"; the ftp plugin takes: {}",
                        keys.join(", ")
                    )));
                }
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks what can be checked without a server. Values that end up in
    /// FTP commands must not hold CR or LF: RFC 959 §4.1 ends a command with
    /// Telnet end-of-line, so those would inject commands.
    pub fn validate(&self) -> Result<(), Error> {
        if self.host.is_empty() {
            return Err(Error::config("setting host is required"));
        }
        if self
            .host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(Error::config(format!(
                "setting host: \"{}\" is not a host name or address",
                self.host
            )));
        }
        if self.port == 0 {
            return Err(Error::config("setting port: 0 is not a port"));
        }
        if self.user.is_empty() {
            return Err(Error::config(
                "setting user is required (\"anonymous\" for anonymous FTP)",
            ));
        }
        for (key, value) in [
            ("user", &self.user),
            ("password", &self.password),
            ("remote_dir", &self.remote_dir),
        ] {
            if value.contains(['\r', '\n', '\0']) {
                return Err(Error::config(format!(
                    "setting {key} must not contain line breaks or NUL"
                )));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::config("setting timeout must be more than 0"));
        }
        if !self.tls && (self.tls_ca.is_some() || self.tls_insecure) {
            return Err(Error::config(
                "tls_ca / tls_insecure are set but tls = false: set tls = true to use FTPS",
            ));
        }
        if self.tls_insecure && self.tls_ca.is_some() {
            return Err(Error::config(
                "set either tls_ca (verify against this CA) or tls_insecure (verify nothing), not both",
            ));
        }
        Ok(())
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(Error::config(format!(
            "setting {key}: \"{value}\" is not true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn pairs_and_defaults() {
        let s = Settings::from_pairs([
            ("host", "ftp.example"),
            ("user", "backup"),
            ("password", "pw"),
            ("tls", "true"),
            ("timeout", "2.5"),
        ])
        .unwrap();
        assert_eq!(s.port, 21);
        assert!(s.passive && s.tls && !s.tls_insecure);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.endpoint(), "ftp.example:21");
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for pairs in [
            vec![("user", "u")],
            vec![("host", "h"), ("user", "u"), ("port", "99999")],
            vec![("host", "h"), ("user", "u"), ("colour", "red")],
            vec![("host", "h"), ("user", "u\r\nDELE x")],
            vec![("host", "h"), ("user", "u"), ("tls_insecure", "true")],
            vec![("host", "h"), ("user", "u"), ("timeout", "0")],
        ] {
            let err = Settings::from_pairs(pairs).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let s = Settings {
            password: "hunter2".into(),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn described_defaults_are_the_real_ones() {
        let mut pairs = vec![("host", "h"), ("user", "u")];
        pairs.extend(
            SETTINGS
                .iter()
                .filter(|i| !i.required && i.key != "tls_insecure")
                .filter_map(|i| i.default.map(|d| (i.key, d))),
        );
        let s = Settings::from_pairs(pairs).unwrap();
        let d = Settings {
            host: "h".into(),
            user: "u".into(),
            ..Settings::default()
        };
        assert_eq!(s, d);
        assert_eq!(SETTINGS.iter().filter(|i| i.secret).count(), 1);
    }

    #[test]
    fn ipv6_endpoint() {
        let s = Settings {
            host: "::1".into(),
            ..Settings::default()
        };
        assert_eq!(s.endpoint(), "[::1]:21");
    }
}
