//! The database's own properties on the target: created as the source
//! had it (encoding, locale, tablespace) and owned by the source's owner
//! before any data; comment, ACL and settings after the data.

use anyhow::Context;

use super::dsn::DsnRestore;
use crate::source::postgres::database::DatabaseProperties;
use crate::source::postgres::sql_text::quote_ident;

impl DsnRestore {
    /// Before the data: creates the target database as the source was
    /// (when it does not exist) and gives it the source's owner.
    pub(super) fn open_database(
        &self,
        stored: Option<&[u8]>,
        with_roles: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<DatabaseProperties>> {
        let props = stored.map(|s| DatabaseProperties::parse(s).for_target(&self.conn.dbname));
        let props = props.filter(|p| p.create.is_some());
        if props.is_none() {
            warnings.push(
                "the generation holds no database properties (taken by an older offsite): owner, encoding, locale, ACL, comment and settings of the database were not restored".into(),
            );
        }
        let target = quote_ident(&self.conn.dbname);
        let owner = props
            .as_ref()
            .and_then(|p| p.owner.clone())
            .filter(|_| with_roles);
        if let Some(admin) = self.target.admin.as_ref().filter(|_| !self.target.exists) {
            let mut statements: Vec<String> = match &props {
                Some(p) => p.create.iter().cloned().collect(),
                None => vec![format!("CREATE DATABASE {target} TEMPLATE template0;\n")],
            };
            let script = match &props {
                Some(p) => p.script(&statements),
                None => statements.concat().into_bytes(),
            };
            self.run_script(admin, "psql (create database)", &script)
                .with_context(|| {
                    format!(
                        "cannot create database \"{}\" on {} as the source had it (encoding, locale, tablespace) — create the missing locale or tablespace on the target, or create the database by hand and restore into it",
                        self.conn.dbname,
                        self.conn.endpoint()
                    )
                })?;
            self.created.set(true);
            tracing::info!(database = %self.conn.dbname, server = %self.conn.endpoint(), "created the restore target database");
            statements.clear();
            if let (Some(p), Some(o)) = (&props, &owner) {
                self.run_script(admin, "psql (database owner)", &p.script([o]))?;
            }
        } else if let Some(p) = &props {
            if let (Some(want), Some(have)) = (p.encoding(), &self.target.encoding)
                && !want.eq_ignore_ascii_case(have)
            {
                warnings.push(format!(
                    "database \"{}\" already existed with encoding {have}, the source's is {want}: the data was converted — restore into a new database to keep the source's encoding",
                    self.conn.dbname
                ));
            }
            if let Some(o) = &owner {
                self.run_script(&self.conn, "psql (database owner)", &p.script([o]))?;
            }
        }
        Ok(props)
    }

    /// After the data: comment, ACL and settings of the database, and the
    /// roles' settings in it. Without roles in the generation only those
    /// that name no role.
    pub(super) fn close_database(
        &self,
        props: Option<&DatabaseProperties>,
        with_roles: bool,
    ) -> anyhow::Result<()> {
        let Some(p) = props else { return Ok(()) };
        let statements = if with_roles {
            p.after.clone()
        } else {
            p.after_without_roles()
        };
        if statements.is_empty() {
            return Ok(());
        }
        self.run_script(
            &self.conn,
            "psql (database properties)",
            &p.script(&statements),
        )
        .map_err(|e| e.context("applying the database's comment, ACL and settings"))
    }
}
