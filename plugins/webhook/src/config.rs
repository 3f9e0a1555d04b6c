//! The webhook's settings and their checks. No I/O here: `configure` runs
//! these during `offsite config check`.

use std::fmt;
use std::time::Duration;

use offsite_plugin_core::duration;
use offsite_sdk::{Error, Settings};

/// Per-attempt limit for connecting, for the first response byte and between
/// response bytes, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Retries after the first attempt, on a 5xx, 408, 429 or a network error.
pub const DEFAULT_RETRIES: u32 = 3;
/// Retries beyond this would outlast the runner's per-call limit
/// (`[runner] plugin_timeout`, 5 minutes by default) with the default backoff.
pub const MAX_RETRIES: u32 = 10;

/// Headers the plugin sets itself, or that wasi:http refuses from a guest
/// (wasmtime-wasi-http's `DEFAULT_FORBIDDEN_HEADERS`): a secret header must
/// not be one of them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// What `configure` keeps.
pub struct Config {
    pub target: Target,
    pub secret_header: Option<SecretHeader>,
    pub timeout: Duration,
    pub retries: u32,
}

/// Where to POST, split the way wasi:http's `outgoing-request` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// `host[:port]` exactly as written in the URL: the runner's sandbox
    /// derives the authority it allows from the same URL with the same parser.
    pub authority: String,
    pub path_and_query: String,
}

impl Target {
    /// `scheme://authority`, the only part of the URL messages show: hook
    /// URLs often carry a token in the path (Slack, Discord, Mattermost).
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// `Name: value` from the `secret_header` setting. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHeader {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ********", self.name)
    }
}

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Config, Error> {
        let target = parse_url(s.required("url")?)?;
        let secret_header = s
            .get("secret_header")
            .map(parse_secret_header)
            .transpose()?;
        let timeout = match s.get("timeout") {
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            Some(v) => parse_seconds("timeout", v)?,
        };
        let retries = s.parse::<u32>("retries")?.unwrap_or(DEFAULT_RETRIES);
        let retries = offsite_plugin_core::retry::check_retries(retries, MAX_RETRIES)?;
        Ok(Config {
            target,
            secret_header,
            timeout,
            retries,
        })
    }
}

/// An `http://` or `https://` URL with a host. User info (`user:pass@`) is
/// refused: it would travel nowhere (wasi:http takes no credentials in the
/// authority), and credentials belong in the secret `secret_header`.
pub fn parse_url(url: &str) -> Result<Target, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "setting `url` {why}; write an http:// or https:// URL, e.g. https://hooks.example.com/offsite"
        ))
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("is not a valid URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => return Err(bad(&format!("has the scheme {other}:"))),
        None => return Err(bad("has no scheme")),
    };
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(Error::Config(
            "setting `url` holds credentials (user:password@); remove them and give them as \
             `secret_header`, e.g. `Authorization: Basic <base64 of user:password>`"
                .into(),
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("has no host"));
    }
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(Target {
        https,
        authority: authority.as_str().to_string(),
        path_and_query,
    })
}

/// `Name: value`, e.g. `Authorization: Bearer …` or `X-Token: …`. No error
/// message quotes the value, nor anything that could be part of it.
pub fn parse_secret_header(raw: &str) -> Result<SecretHeader, Error> {
    let shape =
        "write it as `Name: value`, e.g. `Authorization: Bearer <token>` or `X-Token: <token>`";
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| Error::Config(format!("setting `secret_header` has no `:`; {shape}")))?;
    let (name, value) = (name.trim(), value.trim());
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(Error::Config(format!(
            "setting `secret_header`: the part before `:` is not a valid header name \
             (RFC 9110 §5.1: letters, digits and !#$%&'*+-.^_`|~); {shape}"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(Error::Config(format!(
            "setting `secret_header`: the header {name} is set by the plugin or refused by \
             wasi:http; use another header, e.g. Authorization or X-Token"
        )));
    }
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        return Err(Error::Config(format!(
            "setting `secret_header`: the value of {name} is empty or holds control characters; {shape}"
        )));
    }
    Ok(SecretHeader {
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// Whole seconds, `30` or `30s`, or minutes, `2m`; more than zero.
pub fn parse_seconds(key: &str, v: &str) -> Result<Duration, Error> {
    Ok(duration::seconds_or_minutes(key, v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_message(e: Error) -> String {
        match e {
            Error::Config(m) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn url_is_split_for_wasi_http() {
        let t = parse_url("http://127.0.0.1:8088/hook?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                https: false,
                authority: "127.0.0.1:8088".into(),
                path_and_query: "/hook?x=1".into()
            }
        );
        let t = parse_url("https://hooks.example.com").unwrap();
        assert!(t.https);
        assert_eq!(t.authority, "hooks.example.com");
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.origin(), "https://hooks.example.com");
        assert_eq!(parse_url("http://[::1]:9/a").unwrap().authority, "[::1]:9");
    }

    #[test]
    fn bad_urls_are_config_errors_naming_url() {
        for bad in [
            "ftp://x/",
            "hooks.example.com/x",
            "",
            "http://",
            "not a url",
        ] {
            let m = config_message(parse_url(bad).unwrap_err());
            assert!(m.contains("setting `url`"), "{bad}: {m}");
        }
        let m = config_message(parse_url("https://u:hunter2@example.com/").unwrap_err());
        assert!(m.contains("secret_header"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
    }

    #[test]
    fn secret_header_is_name_colon_value_and_never_echoed() {
        let h = parse_secret_header("Authorization: Bearer abc:def").unwrap();
        assert_eq!(h.name, "Authorization");
        assert_eq!(h.value, "Bearer abc:def");
        assert_eq!(format!("{h:?}"), "Authorization: ********");
        assert_eq!(
            parse_secret_header("X-Token:s3cret").unwrap().value,
            "s3cret"
        );
        for bad in [
            "Bearer s3cret",
            "Bad Name: s3cret",
            "X-Token:",
            "X-Token: s3\ncret",
            "Content-Type: s3cret",
            "Host: s3cret",
        ] {
            let m = config_message(parse_secret_header(bad).unwrap_err());
            assert!(m.contains("setting `secret_header`"), "{bad:?}: {m}");
            assert!(
                !m.contains("s3cret") && !m.contains("s3\ncret"),
                "{bad:?}: {m}"
            );
        }
    }

    #[test]
    fn timeouts_take_seconds_or_minutes() {
        assert_eq!(
            parse_seconds("timeout", "30").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_seconds("timeout", "7s").unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(
            parse_seconds("timeout", "2m").unwrap(),
            Duration::from_secs(120)
        );
        for bad in ["0", "soon", "1h", "-3", ""] {
            let m = config_message(parse_seconds("timeout", bad).unwrap_err());
            assert!(m.contains("setting `timeout`"), "{m}");
        }
    }

    #[test]
    fn settings_are_checked_together() {
        let s = |pairs: &[(&str, &str)]| {
            Settings::from_pairs(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let c = Config::from_settings(&s(&[("url", "http://127.0.0.1:1/h")])).unwrap();
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert!(c.secret_header.is_none());
        let m = config_message(Config::from_settings(&s(&[])).err().unwrap());
        assert!(m.contains("`url`"), "{m}");
        let m = config_message(
            Config::from_settings(&s(&[("url", "http://h/"), ("retries", "11")]))
                .err()
                .unwrap(),
        );
        assert!(m.contains("`retries`"), "{m}");
    }
}
