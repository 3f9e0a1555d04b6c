//! Resolving a DSN the way libpq does, so that every connection offsite
//! makes — its own (preflight, row counts, creating and dropping the verify
//! scratch database) and the client tools' — reaches the same server as
//! the same user with the same password.
//!
//! libpq's order for each setting (libpq docs, "Connection Strings" and
//! "Environment Variables"; `conninfo_add_defaults` in fe-connect.c): the
//! connection string, then the service file section named by `service` or
//! `PGSERVICE`, then the `PG*` environment variable, then the built-in
//! default (the Unix socket directory, port 5432, the OS user, a database
//! named like the user). A missing password is then looked up in the
//! password file (`passfile`, `PGPASSFILE`, `~/.pgpass`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PgError;

/// Connection parameters libpq accepts (PostgreSQL 15), and the environment
/// variable that supplies each when the DSN does not.
const PARAMS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("sslmode", Some("PGSSLMODE")),
    ("requiressl", Some("PGREQUIRESSL")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslpassword", None),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("service", Some("PGSERVICE")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
];

/// The environment variable for `key`, if libpq has one.
pub fn env_var(key: &str) -> Option<&'static str> {
    PARAMS.iter().find(|(k, _)| *k == key).and_then(|(_, e)| *e)
}

fn invalid(msg: impl Into<String>) -> PgError {
    PgError::InvalidDsn(msg.into())
}

/// Every setting for one connection, resolved as libpq would.
pub fn resolve(dsn: &str) -> Result<BTreeMap<String, String>, PgError> {
    resolve_with(dsn, &|k| std::env::var(k).ok())
}

/// [`resolve`] with the environment given (tests).
pub fn resolve_with(
    dsn: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, PgError> {
    let mut params = parse_dsn(dsn)?;
    for k in params.keys() {
        if !PARAMS.iter().any(|(p, _)| p == k) {
            return Err(invalid(format!(
                "unknown connection option \"{k}\" — libpq accepts host, hostaddr, port, dbname, user, password, passfile, sslmode, service, options, application_name, connect_timeout and the other libpq keywords"
            )));
        }
    }
    let service = params.get("service").cloned().or_else(|| env("PGSERVICE"));
    if let Some(name) = service {
        let section = service_section(&name, env)?;
        for (k, v) in section {
            params.entry(k).or_insert(v);
        }
    }
    for (key, var) in PARAMS {
        if let Some(var) = var
            && !params.contains_key(*key)
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            params.insert(key.to_string(), v);
        }
    }
    params.remove("service");
    if !params.contains_key("host") && !params.contains_key("hostaddr") {
        params.insert("host".into(), default_socket_dir().into());
    }
    if !params.contains_key("user") {
        params.insert("user".into(), current_os_user());
    }
    if !params.contains_key("dbname") {
        params.insert("dbname".into(), params["user"].clone());
    }
    Ok(params)
}

/// Parses a URL (`postgresql://…`) or `key=value` connection string.
pub fn parse_dsn(dsn: &str) -> Result<BTreeMap<String, String>, PgError> {
    let dsn = dsn.trim();
    if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        parse_url(rest)
    } else {
        parse_kv(dsn)
    }
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("invalid percent-encoding in the dsn"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("the dsn decodes to invalid UTF-8"))
}

fn parse_url(rest: &str) -> Result<BTreeMap<String, String>, PgError> {
    let mut params = BTreeMap::new();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], Some(&main[i + 1..])),
        None => (main, None),
    };
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.insert("user".into(), percent_decode(user)?);
            }
            if let Some(p) = password {
                params.insert("password".into(), percent_decode(p)?);
            }
            hosts
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    if !hostspec.is_empty() {
        for h in hostspec.split(',') {
            let (host, port) = if let Some(v6) = h.strip_prefix('[') {
                let end = v6
                    .find(']')
                    .ok_or_else(|| invalid("unterminated [IPv6] host in the dsn"))?;
                (&v6[..end], v6[end + 1..].strip_prefix(':'))
            } else {
                match h.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (h, None),
                }
            };
            hosts.push(percent_decode(host)?);
            ports.push(port.unwrap_or("").to_string());
        }
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        params.insert("host".into(), hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.insert("port".into(), ports.join(","));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.insert("dbname".into(), percent_decode(db)?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("missing \"=\" after \"{pair}\" in the dsn")))?;
        let k = percent_decode(k)?;
        // libpq's URL alias.
        let k = if k == "ssl" && v == "true" {
            params.insert("sslmode".into(), "require".into());
            continue;
        } else {
            k
        };
        params.insert(k, percent_decode(v)?);
    }
    Ok(params)
}

fn parse_kv(s: &str) -> Result<BTreeMap<String, String>, PgError> {
    let mut params = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "missing \"=\" after \"{key}\" in the dsn (write key=value pairs or a postgresql:// URL)"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(invalid("unterminated quoted value in the dsn")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
    Ok(params)
}

/// The `[name]` section of the first service file that has it:
/// `PGSERVICEFILE` or `~/.pg_service.conf`, then `PGSYSCONFDIR/pg_service.conf`
/// (Debian's libpq: `/etc/postgresql-common/pg_service.conf`).
fn service_section(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, PgError> {
    let user_file = env("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pg_service.conf")));
    let sys_file = env("PGSYSCONFDIR")
        .map(|d| Path::new(&d).join("pg_service.conf"))
        .unwrap_or_else(|| PathBuf::from("/etc/postgresql-common/pg_service.conf"));
    for file in user_file.into_iter().chain([sys_file]) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut in_section = false;
        let mut found = false;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if found && in_section {
                    break;
                }
                in_section = sec == name;
                found |= in_section;
                continue;
            }
            if in_section && let Some((k, v)) = line.split_once('=') {
                out.entry(k.trim().to_string())
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        if found {
            return Ok(out);
        }
    }
    Err(invalid(format!(
        "definition of service \"{name}\" not found — add a [{name}] section to ~/.pg_service.conf (or the file PGSERVICEFILE names)"
    )))
}

/// The password file's password for this connection (libpq's rule: the
/// first `host:port:dbname:user:password` line that matches, `*` matching
/// anything; a socket host matches `localhost`; a file readable by group or
/// others is ignored, as libpq ignores it).
pub fn passfile_password(params: &BTreeMap<String, String>) -> Option<String> {
    let path = params
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by group or others (libpq ignores it too): chmod 0600 it",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let first = |k: &str| {
        params
            .get(k)
            .and_then(|v| v.split(',').next())
            .map(str::to_string)
    };
    let host = match first("host").or_else(|| first("hostaddr")) {
        Some(h) if !h.starts_with('/') && !h.is_empty() => h,
        _ => "localhost".to_string(),
    };
    let port = first("port")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "5432".into());
    let db = params.get("dbname").cloned().unwrap_or_default();
    let user = params.get("user").cloned().unwrap_or_default();
    let wanted = [host.as_str(), port.as_str(), db.as_str(), user.as_str()];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

pub(crate) fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

/// libpq's compiled-in socket directory: Debian's, else the upstream /tmp.
pub(crate) fn default_socket_dir() -> &'static str {
    ["/var/run/postgresql", "/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .unwrap_or("/tmp")
}

/// The user libpq connects as by default: the effective uid's login name.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn url_and_key_value_forms() {
        let p = parse_dsn("postgresql://app:p%40ss@[::1]:5433,db2/calls?sslmode=disable").unwrap();
        assert_eq!(p["user"], "app");
        assert_eq!(p["password"], "p@ss");
        assert_eq!(p["host"], "::1,db2");
        assert_eq!(p["port"], "5433,");
        assert_eq!(p["dbname"], "calls");
        assert_eq!(p["sslmode"], "disable");
        let p = parse_dsn("postgresql://%2Fvar%2Frun%2Fpostgresql/shop").unwrap();
        assert_eq!(p["host"], "/var/run/postgresql");
        let p = parse_dsn("dbname = shop user=postgres password='it\\'s x'").unwrap();
        assert_eq!(p["dbname"], "shop");
        assert_eq!(p["password"], "it's x");
        assert!(parse_dsn("dbname shop").is_err());
    }

    #[test]
    fn dsn_then_service_then_environment_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("svc.conf");
        std::fs::write(
            &svc,
            "# ops\n[other]\nport=1\n[prod]\nhost=10.0.0.5\nport=6432\ndbname=calls\n",
        )
        .unwrap();
        let svc_s = svc.display().to_string();
        let env = move |k: &str| match k {
            "PGSERVICEFILE" => Some(svc_s.clone()),
            "PGPORT" => Some("7777".into()),
            "PGUSER" => Some("envuser".into()),
            "PGSSLMODE" => Some("disable".into()),
            _ => None,
        };
        let p = resolve_with("service=prod dbname=override", &env).unwrap();
        assert_eq!(p["host"], "10.0.0.5");
        assert_eq!(p["port"], "6432", "the service beats the environment");
        assert_eq!(p["dbname"], "override", "the dsn beats the service");
        assert_eq!(p["user"], "envuser");
        assert_eq!(p["sslmode"], "disable");
        let e = resolve_with("service=nope", &env).unwrap_err().to_string();
        assert!(e.contains("service \"nope\" not found"), "{e}");
        let p = resolve_with("dbname=shop user=postgres", &no_env).unwrap();
        assert!(p["host"].starts_with('/'), "default socket: {p:?}");
        let e = resolve_with("dbname=shop colour=red", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown connection option \"colour\""), "{e}");
    }

    #[test]
    fn password_file_matches_like_libpq() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# c\n127.0.0.1:5999:other:postgres:no\n127.0.0.1:5999:*:postgres:pa\\:ss\nlocalhost:*:*:postgres:sock\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut p: BTreeMap<String, String> = [
            ("host", "127.0.0.1"),
            ("port", "5999"),
            ("dbname", "shop"),
            ("user", "postgres"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        p.insert("passfile".into(), f.display().to_string());
        assert_eq!(passfile_password(&p).as_deref(), Some("pa:ss"));
        p.insert("host".into(), "/tmp".into());
        assert_eq!(passfile_password(&p).as_deref(), Some("sock"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(passfile_password(&p), None, "world-readable: ignored");
    }

    #[test]
    fn pgpass_fields() {
        assert_eq!(
            split_pgpass(r"h:5432:db:u:pa\:ss:word"),
            vec!["h", "5432", "db", "u", "pa:ss:word"]
        );
    }
}
