//! `dsn` / `dsn_file`: a PostgreSQL connection string, which may hold a
//! password. It is read once into a [`Dsn`], whose `Debug` is redacted, so a
//! stray `{:?}` of a job cannot leak it; the raw text is taken explicitly
//! with [`Dsn::expose`].

use std::fmt;
use std::path::PathBuf;

use toml::Spanned;

use super::error::Ctx;
use super::plugins::read_secret_file;

/// A PostgreSQL connection string, in the URI (`postgresql://...`) or the
/// key=value form.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn(String);

impl Dsn {
    pub fn new(text: impl Into<String>) -> Dsn {
        Dsn(text.into())
    }

    /// The connection string itself, password included: for libpq only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with its password replaced, for logs.
    pub fn redacted(&self) -> String {
        redact_dsn(&self.0)
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.redacted())
    }
}

/// A DSN as it may be shown: the password replaced.
pub fn redact_dsn(dsn: &str) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        let scheme = &dsn[..dsn.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:********{}", &userinfo[..colon], &rest[at..]);
            }
        }
        return dsn.to_string();
    }
    // key=value form
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=********".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `text` is written as a connection string at all.
fn looks_like_dsn(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://") || text.contains('=')
}

/// `dsn` or `dsn_file` (not both), read and checked; `key(name)` is the
/// full key of the job's `name`. A DSN read from `dsn_file` is reported at
/// that key and never echoed.
pub(super) fn parse_dsn(
    cx: &mut Ctx,
    key: impl Fn(&str) -> String,
    dsn: Option<&Spanned<String>>,
    dsn_file: Option<&Spanned<PathBuf>>,
) -> Option<Dsn> {
    let value = match (dsn, dsn_file) {
        (Some(_), Some(f)) => {
            cx.at(
                f,
                &key("dsn_file"),
                "give either `dsn` or `dsn_file`, not both",
            );
            None
        }
        (Some(d), None) => Some(d.get_ref().clone()),
        (None, Some(f)) => match read_secret_file(f.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                cx.at(f, &key("dsn_file"), e);
                None
            }
        },
        (None, None) => None,
    };
    if let Some(d) = dsn
        && !looks_like_dsn(d.get_ref())
    {
        cx.at(
            d,
            &key("dsn"),
            "not a PostgreSQL connection string; write e.g. \"postgresql://postgres@127.0.0.1:5432/calls\"",
        );
    }
    if let Some(v) = &value
        && let Err(e) = crate::limits::dsn_ports(v)
    {
        match (dsn, dsn_file) {
            (Some(d), _) => cx.at(d, &key("dsn"), e),
            (None, Some(f)) => cx.at(f, &key("dsn_file"), e),
            (None, None) => {}
        }
    }
    value.map(Dsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let d = Dsn::new("postgresql://app:hunter2@127.0.0.1:5432/calls");
        assert_eq!(
            format!("{d:?}"),
            "Dsn(postgresql://app:********@127.0.0.1:5432/calls)"
        );
        assert_eq!(
            redact_dsn("host=h password=hunter2 dbname=x"),
            "host=h password=******** dbname=x"
        );
        assert_eq!(redact_dsn("postgres://u@h/db"), "postgres://u@h/db");
        assert!(d.expose().contains("hunter2"));
    }

    #[test]
    fn connection_strings_are_recognised() {
        assert!(looks_like_dsn("postgresql://u@h/db"));
        assert!(looks_like_dsn("host=/run/postgresql dbname=x"));
        assert!(!looks_like_dsn("calls"));
    }
}
