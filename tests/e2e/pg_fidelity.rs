//! A restored database is the database that was backed up (issue 12).
//!
//! Each test backs a database up with the real `offsite` binary, restores
//! it — into another name where a DSN restore applies — and judges the copy
//! with the oracle in `tests/harness/pg_oracle.rs` (pg_dump --schema-only,
//! catalog rows, per-table checksums), never with offsite's own code.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::jobs::Setup;
use offsite_tests::pg_oracle::{
    APP_PASSWORD, assert_same, hard_database, latin1_bytes, latin1_database,
};
use offsite_tests::postgres::{PgCluster, SUPERUSER_PASSWORD};

const FORMATS: [&str; 4] = ["sql", "custom", "tar", "directory"];

fn job(name: &str, dsn: &str, format: &str, verify: &str) -> String {
    format!(
        "[jobs.{name}]\nsource = \"postgres\"\ndsn = \"{dsn}\"\nformat = \"{format}\"\nverify = \"{verify}\"\nschedule = \"manual\"\n"
    )
}

/// Runs an `offsite` command that must succeed (its output in the message).
fn succeeds(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", offsite_tests::proc::text(&out));
}

fn restore_verification(m: &serde_json::Value) -> &serde_json::Value {
    m["verifications"]
        .as_array()
        .expect("verifications")
        .iter()
        .find(|v| v["method"] == "restore")
        .unwrap_or_else(|| panic!("no restore verification: {m}"))
}

/// Issue 12 case 1, for one format: owner, ACL, comment, settings and
/// role-in-database settings come back under another name, and `app`
/// works in the copy as it did in the source.
fn case1(format: &str) {
    let pg = PgCluster::start();
    hard_database(&pg, "calls");
    let s = Setup::new(&[]);
    s.write_config(&job("calls", &pg.dsn("calls"), format, "restore"));
    s.run_ok("calls");
    let m = &s.manifests("calls")[0];
    let v = restore_verification(m);
    assert_eq!(v["ok"], true, "{m}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("and so do the schema, database properties and every table's checksum"),
        "{m}"
    );

    let (code, out) = s.offsite(&["restore", "calls", "--to-dsn", &pg.dsn("calls_restored")]);
    assert_eq!(code, 0, "{out}");
    assert_same(&pg, "calls", &pg, "calls_restored");

    // As the issue's operator sees it.
    assert_eq!(
        pg.try_psql_as(
            "app",
            APP_PASSWORD,
            "calls_restored",
            "SELECT count(*) FROM cdr"
        )
        .unwrap(),
        "1000",
        "search_path from ALTER DATABASE … SET"
    );
    pg.try_psql_as(
        "app",
        APP_PASSWORD,
        "calls_restored",
        "CREATE TABLE public.t2 (x int)",
    )
    .expect("app owns the database, so public is app's");
    assert_eq!(
        pg.try_psql_as(
            "app",
            APP_PASSWORD,
            "calls_restored",
            "SHOW statement_timeout"
        )
        .unwrap(),
        "5s"
    );
    pg.psql(
        "postgres",
        "CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw'",
    );
    let e = pg
        .try_psql_as("outsider", "outsider-pw", "calls_restored", "SELECT 1")
        .unwrap_err();
    assert!(
        e.contains("permission denied for database"),
        "PUBLIC may not connect: {e}"
    );
    // No scratch database outlived the run.
    let dbs = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("offsite_verify"), "{dbs}");
}

#[test]
fn case1_database_properties_survive_sql() {
    case1("sql");
}

#[test]
fn case1_database_properties_survive_custom() {
    case1("custom");
}

#[test]
fn case1_database_properties_survive_tar() {
    case1("tar");
}

#[test]
fn case1_database_properties_survive_directory() {
    case1("directory");
}

/// A LATIN1 database comes back LATIN1 with its bytes, in every format.
#[test]
fn a_latin1_database_comes_back_latin1_with_its_bytes_in_every_format() {
    let pg = PgCluster::start();
    latin1_database(&pg, "legacy");
    let want = latin1_bytes(&pg, "legacy");
    let s = Setup::new(&[]);
    let body: String = FORMATS
        .iter()
        .map(|f| job(&format!("legacy_{f}"), &pg.dsn("legacy"), f, "restore"))
        .collect();
    s.write_config(&body);
    for f in FORMATS {
        let name = format!("legacy_{f}");
        s.run_ok(&name);
        let copy = format!("legacy_copy_{f}");
        let (code, out) = s.offsite(&["restore", &name, "--to-dsn", &pg.dsn(&copy)]);
        assert_eq!(code, 0, "{f}: {out}");
        assert_same(&pg, "legacy", &pg, &copy);
        assert_eq!(
            pg.psql(&copy, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"),
            "LATIN1",
            "{f}"
        );
        assert_eq!(latin1_bytes(&pg, &copy), want, "{f}: bytes unchanged");
    }
}

/// The snapshot format copies the cluster: every database comes back as
/// it was, LATIN1 included, on a server started on the restored directory.
#[test]
fn snapshot_restores_every_database_as_it_was() {
    let pg = PgCluster::start();
    hard_database(&pg, "calls");
    latin1_database(&pg, "legacy");
    let s = Setup::new(&[]);
    s.write_config(&job("calls", &pg.dsn("calls"), "snapshot", "checksum"));
    s.run_ok("calls");
    let target = offsite_tests::postgres::server_owned_tempdir();
    let data = target.path().join("data");
    let (code, out) = s.offsite(&["restore", "calls", "--to-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let copy = PgCluster::start_existing(&data, SUPERUSER_PASSWORD);
    assert_same(&pg, "calls", &copy, "calls");
    assert_same(&pg, "legacy", &copy, "legacy");
}

/// Pagila, a schema nobody on this project wrote, through the custom
/// format into another name.
#[test]
fn pagila_schema_restores_identically() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE pagila");
    let fixture =
        offsite_tests::paths::project_root().join("tests/fixtures/pagila/pagila-schema-pg15.sql");
    pg.run_client(
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "pagila",
            "-f",
            fixture.to_str().unwrap(),
        ],
    );
    pg.psql(
        "pagila",
        "INSERT INTO public.language (name) VALUES ('English'), ('Deutsch')",
    );
    let s = Setup::new(&[]);
    s.write_config(&job("pagila", &pg.dsn("pagila"), "custom", "restore"));
    s.run_ok("pagila");
    let (code, out) = s.offsite(&["restore", "pagila", "--to-dsn", &pg.dsn("pagila_copy")]);
    assert_eq!(code, 0, "{out}");
    assert_same(&pg, "pagila", &pg, "pagila_copy");
}

/// A `pg_dump` that claims to be 17 and writes pg_dump 17's
/// `SET transaction_timeout`, first in PATH (issue 12 case 2).
fn fake_newer_pg_dump(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = offsite_tests::postgres::pg_bin().join("pg_dump");
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = "--version" ] || [ "$1" = "-V" ]; then echo "pg_dump (PostgreSQL) 17.4"; exit 0; fi
out=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--file" ]; then out="$a"; fi
  prev="$a"
done
if [ -n "$out" ]; then exec "{real}" "$@"; fi
"{real}" "$@" | sed 's/^SET idle_in_transaction_session_timeout = 0;$/&\nSET transaction_timeout = 0;/'
"#,
        real = real.display()
    );
    let p = dir.join("pg_dump");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Case 2: with a newer pg_dump first in PATH, the one matching the
/// server is used, the manifest and `list --json` name it, and the
/// generation restores into the PostgreSQL 15 server it came from.
#[test]
fn case2_the_client_matching_the_server_wins_over_a_newer_one_first_in_path() {
    let pg = PgCluster::start();
    hard_database(&pg, "calls");
    let s = Setup::new(&[]);
    let fake = s.dir("fakebin");
    fake_newer_pg_dump(&fake);
    s.write_config(&job("calls", &pg.dsn("calls"), "sql", "restore"));
    succeeds(s.command(&["run", "calls"]).env("PATH", path_with(&fake)));
    let m = &s.manifests("calls")[0];
    let dump = &m["client_tools"]["pg_dump"];
    assert!(dump["version"].as_str().unwrap().starts_with("15."), "{m}");
    assert_eq!(dump["fit"], "exact", "{m}");
    assert!(!dump["path"].as_str().unwrap().contains("fakebin"), "{m}");
    assert!(
        m["client_tools"]["psql"]["version"]
            .as_str()
            .unwrap()
            .starts_with("15."),
        "the restore verification's psql is recorded: {m}"
    );
    let listed = s.list_json("calls");
    let g = &listed[0]["generations"][0];
    assert_eq!(
        g["client_tools"]["pg_dump"]["version"], dump["version"],
        "{listed}"
    );
    assert_eq!(g["client_tools"]["pg_dumpall"]["fit"], "exact", "{listed}");

    succeeds(
        s.command(&["restore", "calls", "--to-dsn", &pg.dsn("calls_restored")])
            .env("PATH", path_with(&fake)),
    );
    assert_same(&pg, "calls", &pg, "calls_restored");
}

/// Case 2's other half: a dump the target server rejects midway (what a
/// newer pg_dump wrote) fails the restore, and the database the restore
/// created is gone afterwards, not left half-made.
#[test]
fn case2_a_failed_restore_leaves_no_half_made_database() {
    let pg = PgCluster::start();
    hard_database(&pg, "calls");
    let s = Setup::new(&[]);
    s.write_config(&job("calls", &pg.dsn("calls"), "sql", "checksum"));
    s.run_ok("calls");
    let m = s.manifests("calls").remove(0);
    let name = m["name"].as_str().unwrap().to_string();
    let data = s.job_dir("calls").join(&name);
    // What pg_dump 17 writes, put into the stored dump, with the manifest
    // updated so only the server can object.
    let sql = String::from_utf8(
        Command::new("zstd")
            .arg("-dc")
            .arg(&data)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sql = sql.replacen(
        "SET idle_in_transaction_session_timeout = 0;\n",
        "SET idle_in_transaction_session_timeout = 0;\nSET transaction_timeout = 0;\n",
        1,
    );
    assert!(sql.contains("SET transaction_timeout = 0;"));
    let raw = s.root().join("edited.sql");
    std::fs::write(&raw, sql).unwrap();
    std::fs::remove_file(&data).unwrap();
    let o = Command::new("zstd")
        .arg("-q")
        .arg(&raw)
        .arg("-o")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success());
    let bytes = std::fs::read(&data).unwrap();
    let mut m2 = m.clone();
    m2["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)).into();
    m2["size"] = (bytes.len() as u64).into();
    std::fs::write(
        s.job_dir("calls").join(format!("{name}.manifest.json")),
        serde_json::to_vec_pretty(&m2).unwrap(),
    )
    .unwrap();

    let (code, out) = s.offsite(&["restore", "calls", "--to-dsn", &pg.dsn("calls_restored")]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("transaction_timeout"), "{out}");
    assert!(
        out.contains("the database it created was dropped again"),
        "{out}"
    );
    let dbs = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("calls_restored"), "{dbs}");
}

fn shop(pg: &PgCluster) {
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);
         INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 1234) g;",
    );
}

fn assert_verified_and_no_scratch_left(s: &Setup, pg: &PgCluster, job_name: &str) {
    for m in s.manifests(job_name) {
        assert_eq!(m["health"], "good", "{m}");
        assert_eq!(restore_verification(&m)["ok"], true, "{m}");
    }
    let dbs = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("offsite_verify"), "{dbs}");
}

/// Case 3: the password only in a password file; every connection
/// (preflight, dump, restore, verify, drop) finds it as libpq does.
#[test]
fn case3_password_only_in_the_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgCluster::start();
    shop(&pg);
    let s = Setup::new(&[]);
    let passfile = s.root().join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:postgres:{}\n", pg.port, pg.password),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dsn = format!("postgresql://postgres@127.0.0.1:{}/shop", pg.port);
    s.write_config(&job("shop", &dsn, "custom", "restore"));
    succeeds(
        s.command(&["run", "shop"])
            .env("PGPASSFILE", &passfile)
            .env_remove("PGPASSWORD"),
    );
    assert_verified_and_no_scratch_left(&s, &pg, "shop");
    succeeds(
        s.command(&[
            "restore",
            "shop",
            "--to-dsn",
            &format!("postgresql://postgres@127.0.0.1:{}/shop2", pg.port),
        ])
        .env("PGPASSFILE", &passfile),
    );
    assert_same(&pg, "shop", &pg, "shop2");
}

/// Case 3: a socket-only DSN, the socket directory and port from the
/// environment (PGHOST, PGPORT) as libpq takes them.
#[test]
fn case3_socket_only_dsn_with_the_rest_from_the_environment() {
    let pg = PgCluster::start();
    shop(&pg);
    let s = Setup::new(&[]);
    s.write_config(&job("shop", "dbname=shop user=postgres", "sql", "restore"));
    succeeds(
        s.command(&["run", "shop"])
            .env("PGHOST", pg.socket_dir())
            .env("PGPORT", pg.port.to_string())
            .env_remove("PGPASSWORD"),
    );
    assert_verified_and_no_scratch_left(&s, &pg, "shop");
}

/// Case 3: a run killed while its verification restores leaves a scratch
/// database; the next run removes it.
#[test]
fn case3_a_killed_verification_leaves_nothing_after_the_next_run() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.run_client("pgbench", &["-i", "-q", "-s", "4", "shop"]);
    let s = Setup::new(&[]);
    s.write_config(&job("shop", &pg.dsn("shop"), "sql", "restore"));
    let run = s.spawn_run("shop");
    offsite_tests::jobs::wait_for(
        "a scratch database",
        std::time::Duration::from_secs(120),
        || {
            let dbs = pg.psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'offsite\\_verify\\_%'",
            );
            (dbs != "0").then_some(())
        },
    );
    run.kill();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'offsite\\_verify\\_%'",
    );
    assert_eq!(left, "1", "the killed run left its scratch database");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = s.run_ok("shop");
    assert!(
        out.contains("interrupted verification left behind"),
        "{out}"
    );
    let left = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'offsite\\_verify\\_%'",
    );
    assert_eq!(left, "0", "{out}");
}

/// Case 5: a dump that restores into something else (here: a pg_dump that
/// silently leaves out comments and grants, row counts unchanged) fails the
/// restore verification at backup time, naming what differs.
#[test]
fn verification_fails_a_dump_whose_restore_differs_in_schema_only() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgCluster::start();
    hard_database(&pg, "calls");
    let s = Setup::new(&[]);
    let fake = s.dir("lossybin");
    let real = offsite_tests::postgres::pg_bin().join("pg_dump");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = --version ] && exec \"{real}\" --version\nfor a in \"$@\"; do [ \"$a\" = --schema-only ] && exec \"{real}\" \"$@\"; done\nexec \"{real}\" --no-comments --no-privileges \"$@\"\n",
        real = real.display()
    );
    std::fs::write(fake.join("pg_dump"), script).unwrap();
    std::fs::set_permissions(fake.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write_config(&job("calls", &pg.dsn("calls"), "custom", "restore"));
    let out = s
        .command(&["run", "calls"])
        .env("PATH", path_with(&fake))
        .output()
        .unwrap();
    let text = offsite_tests::proc::text(&out);
    assert!(!out.status.success(), "{text}");
    let m = &s.manifests("calls")[0];
    assert_eq!(m["health"], "bad", "{m}");
    let v = restore_verification(m);
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("schema differs"), "{detail}");
    assert!(
        !detail.contains("rows restored"),
        "row counts match: {detail}"
    );
}

/// A tablespace the target host cannot have (its location is taken there)
/// is refused with the reason and what to do, and nothing is left behind.
#[test]
fn a_tablespace_the_target_cannot_create_is_refused_clearly() {
    let src = PgCluster::start();
    let location = offsite_tests::postgres::server_owned_tempdir();
    src.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE fast LOCATION '{}'",
            location.path().display()
        ),
    );
    src.psql("postgres", "CREATE DATABASE calls");
    src.psql(
        "calls",
        "CREATE TABLE hot (id int) TABLESPACE fast; INSERT INTO hot SELECT generate_series(1, 10)",
    );
    let s = Setup::new(&[]);
    s.write_config(&job("calls", &src.dsn("calls"), "custom", "checksum"));
    s.run_ok("calls");
    // Another server on the same host: the location is the first one's.
    let dst = PgCluster::start();
    let (code, out) = s.offsite(&["restore", "calls", "--to-dsn", &dst.dsn("calls")]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("a tablespace the source had cannot be created here"),
        "{out}"
    );
    assert!(out.contains("no database was created"), "{out}");
    let dbs = dst.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("calls"), "{dbs}");
}
