//! The database itself, not what is inside it: encoding, collation, ctype,
//! locale provider, tablespace, owner, ACL, comment, connection limit,
//! `ALTER DATABASE … SET` and `ALTER ROLE … IN DATABASE … SET`.
//!
//! Since PostgreSQL 11, `pg_dump` writes these only with `--create`, and
//! then as statements naming the source database, which a restore into
//! another name (`--to-dsn …/calls_restored`, the verify scratch database)
//! cannot run as they are. So a backup takes them separately — pg_dump's own
//! statements, from `pg_dump --create --schema-only --exclude-schema='*'`,
//! cut down to the database-level ones by [`extract`] — and a restore
//! renames them ([`DatabaseProperties::for_target`]) and runs them in two
//! steps: `CREATE DATABASE` (with the source's encoding and locale) and the
//! owner before any data, the rest after the data, so a setting such as
//! `default_transaction_read_only` or a revoked CONNECT cannot get in the
//! restore's way.
//!
//! The statements are bytes in the source database's encoding (a comment
//! in a LATIN1 database is LATIN1): they are handled as Latin-1 text, which
//! maps every byte to one char and back, since all SQL syntax is ASCII and
//! every server encoding is an ASCII superset.

use std::io::Read;

use super::sql_text::quote_ident;
use super::{Prepared, QuoteState, parse_ident};
use crate::exec::{Cancel, pump};

/// Upper bound for what the properties dump prints (extensions and their
/// comments come along and are dropped).
const PROPERTIES_MAX: u64 = 16 * 1024 * 1024;

/// Runs the properties dump against the prepared source and returns
/// [`extract`]'s statements.
pub(crate) fn dump_properties(p: &Prepared, cancel: &Cancel) -> anyhow::Result<Vec<u8>> {
    let tool = p.pg_dump.as_ref().or(p.pg_dumpall.as_ref()).map(|t| {
        // pg_basebackup jobs have no pg_dump; pg_dumpall's directory has one.
        let mut t = t.clone();
        t.path = t.path.with_file_name("pg_dump");
        t
    });
    let tool = tool.ok_or_else(|| anyhow::anyhow!("no pg_dump to read the database properties"))?;
    let mut cmd = tool.command("pg_dump", Some(&p.conn));
    cmd.arg("--create")
        .arg("--schema-only")
        .arg("--exclude-schema=*")
        .arg("--format=plain");
    if let Some(id) = &p.snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    cmd.stdout = true;
    let mut child = cmd.spawn(cancel)?;
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().expect("piped");
    pump(&mut (&mut stdout).take(PROPERTIES_MAX), &mut out, cancel)?;
    if out.len() as u64 >= PROPERTIES_MAX {
        anyhow::bail!(
            "pg_dump --create --schema-only printed more than {} MiB for the database properties",
            PROPERTIES_MAX >> 20
        );
    }
    drop(stdout);
    child
        .wait()
        .map_err(|e| anyhow::Error::from(e).context("reading the database's properties"))?;
    let props = extract(&out);
    if DatabaseProperties::parse(&props).create.is_none() {
        anyhow::bail!("pg_dump --create printed no CREATE DATABASE statement");
    }
    Ok(props)
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn bytes_of(text: &str) -> Vec<u8> {
    text.chars().map(|c| c as u32 as u8).collect()
}

/// Splits pg_dump's plain output into complete statements, without comment
/// lines, blank lines and psql meta-commands (`\connect`, `\restrict`).
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut state = QuoteState::Normal;
    for line in text.split_inclusive('\n') {
        if current.is_empty() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with("--") || t.starts_with('\\') {
                continue;
            }
        }
        current.push_str(line);
        state = state.after(line);
        if state == QuoteState::Normal && line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// Position just after the first unquoted keyword `word` (followed by a
/// space) at a word boundary, scanning from the start of `stmt`.
fn after_keyword(stmt: &str, word: &str) -> Option<usize> {
    let mut state = QuoteState::Normal;
    let mut prev = ' ';
    for (i, c) in stmt.char_indices() {
        if state == QuoteState::Normal
            && prev.is_whitespace()
            && stmt[i..].starts_with(word)
            && stmt[i + word.len()..].starts_with(' ')
        {
            return Some(i + word.len() + 1);
        }
        state = match (state, c) {
            (QuoteState::Normal, '\'') => QuoteState::Single,
            (QuoteState::Normal, '"') => QuoteState::Double,
            (QuoteState::Single, '\'') => QuoteState::Normal,
            (QuoteState::Double, '"') => QuoteState::Normal,
            (s, _) => s,
        };
        prev = c;
    }
    None
}

/// What kind of database-level statement this is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ClientEncoding,
    Create,
    Owner,
    /// Comment, settings, ACL, security label, role-in-database settings,
    /// and the session-authorization switches pg_dump puts around grants
    /// made by another role.
    After,
}

fn kind(stmt: &str) -> Option<Kind> {
    let s = stmt.trim_start();
    let on_database = || after_keyword(s, "ON DATABASE").is_some();
    if s.starts_with("SET client_encoding") {
        Some(Kind::ClientEncoding)
    } else if s.starts_with("CREATE DATABASE ") {
        Some(Kind::Create)
    } else if s.starts_with("ALTER DATABASE ") {
        let owner = after_keyword(s, "OWNER TO").is_some();
        Some(if owner { Kind::Owner } else { Kind::After })
    } else if s.starts_with("COMMENT ON DATABASE ")
        || (s.starts_with("SECURITY LABEL ") && on_database())
        || ((s.starts_with("GRANT ") || s.starts_with("REVOKE ")) && on_database())
        || (s.starts_with("ALTER ROLE ") && after_keyword(s, "IN DATABASE").is_some())
        || s.starts_with("SET SESSION AUTHORIZATION ")
        || s.starts_with("RESET SESSION AUTHORIZATION")
    {
        Some(Kind::After)
    } else {
        None
    }
}

/// Keeps the database-level statements of `pg_dump --create` output (bytes
/// in the database's encoding), in pg_dump's order.
pub fn extract(dump: &[u8]) -> Vec<u8> {
    let text = latin1(dump);
    let mut out = String::new();
    let mut saw_encoding = false;
    for stmt in statements(&text) {
        match kind(&stmt) {
            Some(Kind::ClientEncoding) if saw_encoding => {}
            Some(Kind::ClientEncoding) => {
                saw_encoding = true;
                out.push_str(&stmt);
            }
            Some(_) => out.push_str(&stmt),
            None => {}
        }
    }
    bytes_of(&out)
}

/// The statements of [`extract`], sorted by when a restore runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseProperties {
    /// The source database's name as pg_dump wrote it.
    pub source_name: Option<String>,
    /// `SET client_encoding = '…';`, which the other statements' bytes need.
    pub client_encoding: Option<String>,
    pub create: Option<String>,
    pub owner: Option<String>,
    pub after: Vec<String>,
}

impl DatabaseProperties {
    /// Sorts [`extract`]'s output (as stored in a generation).
    pub fn parse(stored: &[u8]) -> DatabaseProperties {
        let mut p = DatabaseProperties::default();
        for stmt in statements(&latin1(stored)) {
            match kind(&stmt) {
                Some(Kind::ClientEncoding) => p.client_encoding = Some(stmt),
                Some(Kind::Create) => {
                    p.source_name = after_keyword(&stmt, "DATABASE")
                        .and_then(|i| parse_ident(&stmt[i..]))
                        .map(|(n, _)| n);
                    p.create = Some(stmt);
                }
                Some(Kind::Owner) => p.owner = Some(stmt),
                Some(Kind::After) => p.after.push(stmt),
                None => {}
            }
        }
        p
    }

    /// The same statements naming `target` instead of the source database.
    pub fn for_target(&self, target: &str) -> DatabaseProperties {
        let Some(source) = &self.source_name else {
            return self.clone();
        };
        let rename = |stmt: &String| rename_database(stmt, source, target);
        DatabaseProperties {
            source_name: Some(target.to_string()),
            client_encoding: self.client_encoding.clone(),
            create: self.create.as_ref().map(rename),
            owner: self.owner.as_ref().map(rename),
            after: self.after.iter().map(rename).collect(),
        }
    }

    /// The encoding named in `CREATE DATABASE … ENCODING = 'X'`.
    pub fn encoding(&self) -> Option<String> {
        let create = self.create.as_ref()?;
        let i = create.find("ENCODING = '")? + "ENCODING = '".len();
        let end = create[i..].find('\'')?;
        Some(create[i..i + end].to_string())
    }

    /// A script of `statements` preceded by the client encoding, as bytes
    /// for psql's stdin.
    pub fn script<'a>(&self, statements: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
        let mut s = String::from("SET standard_conforming_strings = on;\n");
        if let Some(e) = &self.client_encoding {
            s.push_str(e);
        }
        for st in statements {
            s.push_str(st);
        }
        bytes_of(&s)
    }

    /// The after-data statements without those that name roles (owner is
    /// separate): for a generation taken without roles.
    pub fn after_without_roles(&self) -> Vec<String> {
        self.after
            .iter()
            .filter(|s| {
                let s = s.trim_start();
                ![
                    "GRANT ",
                    "REVOKE ",
                    "ALTER ROLE ",
                    "SET SESSION ",
                    "RESET SESSION ",
                ]
                .iter()
                .any(|p| s.starts_with(p))
            })
            .cloned()
            .collect()
    }
}

/// Replaces the database name after the first unquoted `DATABASE` keyword,
/// when it is `source`.
fn rename_database(stmt: &str, source: &str, target: &str) -> String {
    let Some(i) = after_keyword(stmt, "DATABASE") else {
        return stmt.to_string();
    };
    match parse_ident(&stmt[i..]) {
        Some((name, rest)) if name == source => {
            format!("{}{}{}", &stmt[..i], quote_ident(target), rest)
        }
        _ => stmt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\nSET client_encoding = 'LATIN1';\n\
CREATE DATABASE calls WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE_PROVIDER = libc LOCALE = 'C';\n\n\n\
ALTER DATABASE calls OWNER TO app;\n\n\\unrestrict abc\n\\connect calls\n\\restrict abc\n\nSET client_encoding = 'LATIN1';\n\
COMMENT ON DATABASE calls IS 'call detail\nDATABASE calls; records \u{e9}';\n\
ALTER DATABASE calls SET search_path TO 'billing', 'public';\n\
ALTER ROLE app IN DATABASE calls SET statement_timeout TO '5s';\n\
CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;\n\
COMMENT ON EXTENSION citext IS 'ON DATABASE';\n\
REVOKE CONNECT,TEMPORARY ON DATABASE calls FROM PUBLIC;\n";

    #[test]
    fn keeps_database_statements_only_and_renames_them() {
        let stored = extract(&bytes_of(DUMP));
        let text = latin1(&stored);
        assert!(!text.contains("EXTENSION"), "{text}");
        assert!(!text.contains("\\connect"), "{text}");
        assert!(!text.contains("statement_timeout = 0"), "{text}");
        let p = DatabaseProperties::parse(&stored);
        assert_eq!(p.source_name.as_deref(), Some("calls"));
        assert_eq!(p.encoding().as_deref(), Some("LATIN1"));
        assert_eq!(p.after.len(), 4, "{:?}", p.after);
        let t = p.for_target("Calls Restored");
        assert!(
            t.create
                .as_ref()
                .unwrap()
                .starts_with("CREATE DATABASE \"Calls Restored\" WITH TEMPLATE = template0")
        );
        assert_eq!(
            t.owner.as_deref(),
            Some("ALTER DATABASE \"Calls Restored\" OWNER TO app;\n")
        );
        assert_eq!(
            t.after[0],
            "COMMENT ON DATABASE \"Calls Restored\" IS 'call detail\nDATABASE calls; records \u{e9}';\n",
            "only the name, never the comment's text"
        );
        assert_eq!(
            t.after[2],
            "ALTER ROLE app IN DATABASE \"Calls Restored\" SET statement_timeout TO '5s';\n"
        );
        assert_eq!(
            t.after[3],
            "REVOKE CONNECT,TEMPORARY ON DATABASE \"Calls Restored\" FROM PUBLIC;\n"
        );
        // High-bit bytes survive as they were.
        let script = t.script(&t.after);
        assert!(script.contains(&0xe9), "LATIN1 byte kept");
        assert_eq!(t.after_without_roles().len(), 2);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("calls_restored"), "calls_restored");
        assert_eq!(quote_ident("Calls"), "\"Calls\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("user"), "\"user\"");
    }
}
