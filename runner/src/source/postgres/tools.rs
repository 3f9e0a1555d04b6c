//! Which `pg_dump`, `pg_restore`, `psql`, `pg_basebackup` to run.
//!
//! The rule: the client whose major version equals the server's, wherever it
//! is installed (PATH, Debian's `/usr/lib/postgresql/N/bin`, PGDG's
//! `/usr/pgsql-N/bin`). Only when no exact match exists, the closest newer
//! one — and then the caller says so in the log and the manifest, because a
//! newer `pg_dump` writes things an older server rejects (pg_dump 17 emits
//! `SET transaction_timeout = 0`, which a PostgreSQL 15 server does not
//! know, so the dump no longer restores into the server it came from).
//! An older client only where the caller allows it (restore tools), never
//! for a dump: pg_dump refuses newer servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ConnInfo, PgError, major_label};
use crate::exec::ToolCommand;

/// How a chosen client relates to the server it is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolFit {
    /// Same major version as the server.
    Exact,
    /// Newer than the server: no exact match was installed.
    Newer,
    /// Older than the server (restore tools only, when nothing else exists).
    Older,
}

/// A client program and the major version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTool {
    pub path: PathBuf,
    /// Same scale as [`super::major_of`].
    pub major: u32,
    /// As printed by `--version`, e.g. "15.18".
    pub version: String,
    /// Against the server it was chosen for.
    pub fit: ToolFit,
}

impl PgTool {
    /// One line for logs and manifests: `15.18 (/usr/lib/postgresql/15/bin/pg_dump)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.version, self.path.display())
    }

    /// A command running this tool as `label`, pointed at `conn` through
    /// libpq's environment (see [`ConnInfo::apply_env`]; the password is
    /// scrubbed from its stderr), and never waiting for a password prompt.
    pub(crate) fn command(&self, label: &str, conn: Option<&ConnInfo>) -> ToolCommand {
        let mut cmd = ToolCommand::new(&self.path, label);
        if let Some(c) = conn {
            c.apply_env(&mut cmd.command);
            cmd.secret = c.password.clone();
        }
        // Never wait for a password prompt nobody will answer.
        cmd.arg("-w");
        cmd
    }

    /// The warning to log and record when this tool is not an exact match,
    /// `None` when it is.
    pub fn mismatch_warning(&self, name: &str, server_major: u32) -> Option<String> {
        match self.fit {
            ToolFit::Exact => None,
            ToolFit::Newer => Some(format!(
                "{name} {} ({}) is newer than the PostgreSQL {} server because no {name} {} is installed: what it writes may not restore into a PostgreSQL {} server — install postgresql-client-{} (apt-get install postgresql-client-{}) so the versions match",
                self.version,
                self.path.display(),
                major_label(server_major),
                major_label(server_major),
                major_label(server_major),
                major_label(server_major),
                major_label(server_major),
            )),
            ToolFit::Older => Some(format!(
                "{name} {} ({}) is older than the PostgreSQL {} server because no newer {name} is installed — install postgresql-client-{}",
                self.version,
                self.path.display(),
                major_label(server_major),
                major_label(server_major),
            )),
        }
    }
}

/// What a manifest records about one client tool a generation was made or
/// checked with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolRecord {
    /// As the tool printed it, e.g. "15.18".
    pub version: String,
    pub path: PathBuf,
    /// Against the server it ran against.
    pub fit: ToolFit,
}

impl From<&PgTool> for ToolRecord {
    fn from(t: &PgTool) -> Self {
        ToolRecord {
            version: t.version.clone(),
            path: t.path.clone(),
            fit: t.fit,
        }
    }
}

/// Where client tools are looked for, in order: PATH (without Debian's
/// `pg_wrapper`, which picks a version by its own rules), then the
/// versioned directories of Debian and PGDG, then `pg_wrapper` last.
fn candidates(name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut wrappers: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if !is_executable(&p) {
                continue;
            }
            let is_wrapper = std::fs::canonicalize(&p)
                .ok()
                .and_then(|c| c.file_name().map(|n| n == "pg_wrapper"))
                .unwrap_or(false);
            if is_wrapper {
                wrappers.push(p);
            } else {
                out.push(p);
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    let roots: [(&str, &str); 2] = [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")];
    for (root, prefix) in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let dir_name = e.file_name().to_string_lossy().into_owned();
            let Some(v) = dir_name.strip_prefix(prefix) else {
                continue;
            };
            let Some((major, _)) = parse_version(v) else {
                continue;
            };
            let p = e.path().join("bin").join(name);
            if is_executable(&p) {
                versioned.push((major, p));
            }
        }
    }
    versioned.sort_by_key(|(m, _)| std::cmp::Reverse(*m));
    for (_, p) in versioned {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.extend(wrappers);
    out
}

/// Picks among `(path, major, version)` found in search order: the first
/// exact match, else the closest newer, else (when `allow_older`) the
/// newest older one. Pure, so the rule is tested without installing
/// several PostgreSQL versions.
pub fn pick(
    found: &[(PathBuf, u32, String)],
    server_major: u32,
    allow_older: bool,
) -> Option<PgTool> {
    let tool = |(path, major, version): &(PathBuf, u32, String), fit| PgTool {
        path: path.clone(),
        major: *major,
        version: version.clone(),
        fit,
    };
    if let Some(t) = found.iter().find(|t| t.1 == server_major) {
        return Some(tool(t, ToolFit::Exact));
    }
    // min_by_key keeps the first of equals, i.e. search order.
    if let Some(t) = found
        .iter()
        .filter(|t| t.1 > server_major)
        .min_by_key(|t| t.1)
    {
        return Some(tool(t, ToolFit::Newer));
    }
    if allow_older && let Some(t) = found.iter().rev().max_by_key(|t| t.1) {
        return Some(tool(t, ToolFit::Older));
    }
    None
}

/// Finds `name` (pg_dump, psql, …) for a server of major `server_major` by
/// the rule in the module doc. `allow_older`: accept an older client when
/// nothing else is installed (psql, pg_restore); a dump never does.
pub fn find_tool(name: &str, server_major: u32, allow_older: bool) -> Result<PgTool, PgError> {
    let found: Vec<(PathBuf, u32, String)> = candidates(name)
        .into_iter()
        .filter_map(|p| tool_version(&p).map(|(m, v)| (p, m, v)))
        .collect();
    if let Some(t) = pick(&found, server_major, allow_older) {
        return Ok(t);
    }
    match found.iter().max_by_key(|t| t.1) {
        None => Err(PgError::ToolMissing {
            tool: name.to_string(),
            major: major_label(server_major),
        }),
        Some((path, _, version)) => Err(PgError::ClientTooOld {
            tool: name.to_string(),
            client: version.clone(),
            path: path.display().to_string(),
            server: major_label(server_major),
            endpoint: String::new(),
        }),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `(major, version)` from `TOOL --version`.
fn tool_version(path: &Path) -> Option<(u32, String)> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text.split(')').nth(1)?.trim();
    let version = after.split_whitespace().next()?.to_string();
    let (major, _) = parse_version(&version)?;
    Some((major, version))
}

/// "15.18" → (15, 18); "9.6.24" → (906, 24); "16devel"/"17beta1" → (16|17, 0).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let first = parts.next()?;
    let digits: String = first.chars().take_while(|c| c.is_ascii_digit()).collect();
    let a: u32 = digits.parse().ok()?;
    let b: u32 = parts
        .next()
        .map(|p| {
            p.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if a >= 10 {
        Some((a, b))
    } else {
        let c: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some((a * 100 + b, c))
    }
}

/// Size of `p`, 0 when it does not exist.
pub(crate) fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Keeps a successful tool's stderr lines that say "warning" for the
/// manifest.
pub(crate) fn collect_warnings(tool: &str, stderr: &[String], warnings: &mut Vec<String>) {
    for l in stderr {
        if l.to_ascii_lowercase().contains("warning") {
            warnings.push(format!("{tool}: {l}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, major: u32) -> (PathBuf, u32, String) {
        (PathBuf::from(path), major, format!("{major}.4"))
    }

    #[test]
    fn the_exact_major_wins_even_behind_a_newer_one_first_in_path() {
        let found = [
            f("/opt/pg17/pg_dump", 17),
            f("/usr/lib/postgresql/16/bin/pg_dump", 16),
            f("/usr/pgsql-15/bin/pg_dump", 15),
        ];
        let t = pick(&found, 15, false).unwrap();
        assert_eq!(t.path, PathBuf::from("/usr/pgsql-15/bin/pg_dump"));
        assert_eq!(t.fit, ToolFit::Exact);
        assert!(t.mismatch_warning("pg_dump", 15).is_none());
    }

    #[test]
    fn without_an_exact_match_the_closest_newer_is_taken_and_flagged() {
        let found = [
            f("/a/pg_dump", 17),
            f("/b/pg_dump", 16),
            f("/c/pg_dump", 14),
        ];
        let t = pick(&found, 15, false).unwrap();
        assert_eq!((t.major, t.fit), (16, ToolFit::Newer));
        let w = t.mismatch_warning("pg_dump", 15).unwrap();
        assert!(
            w.contains("may not restore into a PostgreSQL 15 server"),
            "{w}"
        );
        assert!(w.contains("postgresql-client-15"), "{w}");
    }

    #[test]
    fn older_clients_only_where_allowed() {
        let found = [f("/c/psql", 13), f("/d/psql", 14)];
        assert!(pick(&found, 15, false).is_none());
        let t = pick(&found, 15, true).unwrap();
        assert_eq!((t.major, t.fit), (14, ToolFit::Older));
        let err = find_tool("pg_dump", 99, false).unwrap_err().to_string();
        assert!(err.contains("postgresql-client-99"), "{err}");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("15.18"), Some((15, 18)));
        assert_eq!(parse_version("9.6.24"), Some((906, 24)));
        assert_eq!(parse_version("17beta1"), Some((17, 0)));
    }
}
