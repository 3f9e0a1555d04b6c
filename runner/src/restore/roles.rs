//! The roles and tablespaces of a generation, run on the target first so
//! objects keep their owners and grants — without touching what the
//! target already has.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use anyhow::Context;

use super::dsn::DsnRestore;
use crate::source::postgres::{QuoteState, parse_ident};

/// Drops the statements of a roles script that would change what already
/// exists on the target: `ALTER ROLE` of an existing role (attributes,
/// password, settings), `CREATE TABLESPACE` of an existing tablespace.
struct GlobalsFilter {
    roles: HashSet<String>,
    tablespaces: HashSet<String>,
    state: QuoteState,
    skipping: bool,
    kept_roles: Vec<String>,
}

impl GlobalsFilter {
    fn keep(&mut self, line: &str) -> bool {
        let starts_normal = self.state == QuoteState::Normal;
        self.state = self.state.after(line);
        let body = line.trim_end();
        if self.skipping {
            if self.state == QuoteState::Normal && body.ends_with(';') {
                self.skipping = false;
            }
            return false;
        }
        if !starts_normal {
            return true;
        }
        let skip = if let Some(rest) = body
            .strip_prefix("ALTER ROLE ")
            .or_else(|| body.strip_prefix("CREATE ROLE "))
        {
            match parse_ident(rest) {
                Some((name, _)) if self.roles.contains(&name) => {
                    if !self.kept_roles.contains(&name) {
                        self.kept_roles.push(name);
                    }
                    true
                }
                _ => false,
            }
        } else if let Some(rest) = body.strip_prefix("CREATE TABLESPACE ") {
            matches!(parse_ident(rest), Some((name, _)) if self.tablespaces.contains(&name))
        } else {
            false
        };
        if skip && !(self.state == QuoteState::Normal && body.ends_with(';')) {
            self.skipping = true;
        }
        !skip
    }
}

impl DsnRestore {
    /// Runs a roles script through its own psql, filtered; stops at
    /// `until` (the end marker) or the end of `input`.
    pub(super) fn globals(
        &self,
        input: &mut dyn BufRead,
        until: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut filter = GlobalsFilter {
            roles: self.target.roles.clone(),
            tablespaces: self.target.tablespaces.clone(),
            state: QuoteState::Normal,
            skipping: false,
            kept_roles: Vec::new(),
        };
        // The target database may not exist yet: roles go in through the
        // maintenance database then.
        let on = self.target.admin.as_ref().unwrap_or(&self.conn);
        let mut child = self.psql_on(on, "psql (roles)").spawn(&self.cancel)?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut line = Vec::new();
        let mut write_result = Ok(());
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if until.is_some_and(|u| text.trim_end() == u) {
                break;
            }
            if filter.keep(&text)
                && write_result.is_ok()
                && let Err(e) = stdin.write_all(&line)
            {
                // psql quit early; its exit status says why.
                write_result = Err(e);
            }
        }
        drop(stdin);
        child.wait().map_err(|e| {
            let tablespace = e
                .stderr_tail
                .iter()
                .any(|l| l.contains("tablespace") || l.contains("directory"));
            let hint = if tablespace {
                " — a tablespace the source had cannot be created here: its LOCATION must be an empty directory owned by the server's user on the target host; create that directory, or create the tablespace by hand (any location) before restoring"
            } else {
                ""
            };
            anyhow::Error::from(e).context(format!(
                "creating the source's roles and tablespaces on {} failed{hint}",
                self.conn.endpoint()
            ))
        })?;
        write_result.context("feeding roles to psql")?;
        if !filter.kept_roles.is_empty() {
            let msg = format!(
                "roles already on the target were left as they are (attributes and passwords not restored): {}",
                filter.kept_roles.join(", ")
            );
            tracing::info!("{msg}");
            warnings.push(msg);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_leaves_existing_roles_and_tablespaces_alone() {
        let mut f = GlobalsFilter {
            roles: ["postgres".to_string(), "app".to_string()].into(),
            tablespaces: ["fast".to_string()].into(),
            state: QuoteState::Normal,
            skipping: false,
            kept_roles: Vec::new(),
        };
        let script = [
            "DO $offsite$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $offsite$;\n",
            "ALTER ROLE app WITH LOGIN PASSWORD 'x';\n",
            "COMMENT ON ROLE app IS 'a\n",
            "ALTER ROLE app WITH SUPERUSER;\n",
            "';\n",
            "ALTER ROLE \"New\" WITH LOGIN;\n",
            "ALTER ROLE app SET search_path TO 'a\n",
            "b';\n",
            "CREATE TABLESPACE fast OWNER postgres LOCATION '/x';\n",
            "CREATE TABLESPACE slow OWNER postgres LOCATION '/y';\n",
            "GRANT readers TO app GRANTED BY postgres;\n",
        ];
        let kept: Vec<bool> = script.iter().map(|l| f.keep(l)).collect();
        assert_eq!(
            kept,
            [
                true, false, true, true, true, true, false, false, false, true, true
            ]
        );
        assert_eq!(f.kept_roles, ["app"]);
    }
}
