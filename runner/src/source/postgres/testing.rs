//! Test doubles for the dump tests: a [`Prepared`] whose tools are a shell
//! script (nothing connects anywhere).

use std::path::{Path, PathBuf};

use super::{ConnInfo, PgFormat, PgSource, PgTool, Prepared, ServerInfo, ToolFit};

/// A Prepared whose pg_dump is `program` (never connects anywhere).
pub(crate) fn fake(program: &Path) -> Prepared {
    let conn =
        ConnInfo::parse("host=127.0.0.1 port=1 user=u password=fake-Secret dbname=d").unwrap();
    let tool = PgTool {
        path: program.to_path_buf(),
        major: 15,
        version: "15.0".into(),
        fit: ToolFit::Exact,
    };
    Prepared {
        snapshot: None,
        source: PgSource::new("host=127.0.0.1", PgFormat::Sql),
        conn,
        info: ServerInfo {
            version: "15.0".into(),
            version_num: 150000,
            database: "d".into(),
            size_bytes: 0,
            superuser: true,
            replication: true,
        },
        pg_dump: Some(tool.clone()),
        pg_dumpall: Some(tool),
        pg_basebackup: None,
    }
}

pub(crate) fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-tool");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
