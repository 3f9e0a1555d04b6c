//! Roles, memberships and tablespaces (`pg_dumpall --globals-only`): what a
//! database's objects need to exist on a new server before they can keep
//! their owners and grants.

use std::io::Read;

use super::Prepared;
use super::sql_text::{QuoteState, parse_ident};
use crate::exec::{Cancel, ToolError, pump};

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
    let out = match run_dumpall(p, false, cancel)? {
        Ok(out) => out,
        Err(e) => {
            cancel.check()?;
            tracing::warn!(error = %e, "pg_dumpall --globals-only failed; retrying without role passwords");
            match run_dumpall(p, true, cancel)? {
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

/// One `pg_dumpall --globals-only` run (with `--no-role-passwords` when
/// `no_passwords`): its output, or how the tool failed. The outer error is
/// ours (cannot start it, output too large, cancelled).
fn run_dumpall(
    p: &Prepared,
    no_passwords: bool,
    cancel: &Cancel,
) -> anyhow::Result<Result<Vec<u8>, ToolError>> {
    let tool = p.pg_dumpall.as_ref().expect("prepared with pg_dumpall");
    let mut cmd = tool.command("pg_dumpall", Some(&p.conn));
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

#[cfg(test)]
mod tests {
    use super::super::testing::{fake, script};
    use super::*;

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
}
