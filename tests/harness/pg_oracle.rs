//! The fidelity oracle: is a restored database the database that was
//! backed up? Judged by PostgreSQL's own tools and catalogs, never by
//! offsite's code:
//! - `pg_dump --create --schema-only` of both, byte for byte, after
//!   replacing each side's database name and dropping the random
//!   `\restrict` keys;
//! - the database's catalog rows (pg_database: encoding, collation, ctype,
//!   locale provider, owner, ACL, connection limit, tablespace; its comment;
//!   pg_db_role_setting), the extensions with their versions, and the large
//!   objects with owner, ACL and an md5 of their data;
//! - every table's rows (md5 of all rows in text form, sorted) and every
//!   sequence's position ([`PgCluster::fingerprint`]).
//!
//! [`hard_database`] builds a source that exercises what pg_dump's own
//! regression tests single out as easy to lose.

use std::collections::BTreeMap;
use std::process::Command;

use crate::postgres::PgCluster;

/// Password of the `app` role [`hard_database`] creates.
pub const APP_PASSWORD: &str = "app-Pw-9c2";

/// Everything the oracle compares about one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbImage {
    pub schema: String,
    pub catalog: BTreeMap<String, String>,
    pub data: BTreeMap<String, (i64, String)>,
}

/// Bytes as Latin-1 text: lossless for any server encoding, so a LATIN1
/// comment compares byte for byte.
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// `pg_dump --create --schema-only` of `db`, with `db`'s name replaced by
/// `<DB>` where it names the database.
pub fn schema_of(pg: &PgCluster, db: &str) -> String {
    let out = Command::new(pg.bin().join("pg_dump"))
        .arg("-h")
        .arg(pg.socket_dir())
        .arg("-p")
        .arg(pg.port.to_string())
        .args(["-U", "postgres", "--create", "--schema-only", "-d", db])
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "pg_dump --schema-only {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ident = if db
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        db.to_string()
    } else {
        format!("\"{}\"", db.replace('"', "\"\""))
    };
    latin1(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| rename_db(l, &ident) + "\n")
        .collect()
}

/// `<DB>` for the database's name after `DATABASE `, `\connect ` and in
/// the `-- Name: db; Type: DATABASE` comments.
fn rename_db(line: &str, ident: &str) -> String {
    let mut l = line.to_string();
    for prefix in ["DATABASE ", "\\connect ", "-- Name: "] {
        if prefix == "-- Name: " && !l.contains("Type: DATABASE") {
            continue;
        }
        let pat = format!("{prefix}{ident}");
        if let Some(i) = l.find(&pat) {
            let end = i + pat.len();
            if matches!(l[end..].chars().next(), None | Some(' ') | Some(';')) {
                l.replace_range(i + prefix.len()..end, "<DB>");
            }
        }
    }
    l
}

/// The database-level catalog rows of `db`, its extensions and its large
/// objects, by name.
pub fn catalog_of(pg: &PgCluster, db: &str) -> BTreeMap<String, String> {
    let lit = db.replace('\'', "''");
    let mut out = BTreeMap::new();
    let row = pg.psql(
        "postgres",
        &format!(
            "SELECT concat_ws(' | ', pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datlocprovider, \
                    coalesce(d.daticulocale, '-'), pg_get_userbyid(d.datdba), coalesce(d.datacl::text, 'NULL'), \
                    d.datconnlimit, d.datistemplate, d.datallowconn, t.spcname) \
               FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = '{lit}'"
        ),
    );
    assert!(!row.is_empty(), "database {db} not found");
    out.insert("pg_database".into(), row);
    let comment = Command::new(pg.bin().join("psql"))
        .arg("-h")
        .arg(pg.socket_dir())
        .arg("-p")
        .arg(pg.port.to_string())
        .args(["-X", "-q", "-A", "-t", "-U", "postgres", "-d", db, "-c"])
        .arg("SELECT encode(convert_to(coalesce(shobj_description(oid, 'pg_database'), '<none>'), current_setting('server_encoding')), 'hex') FROM pg_database WHERE datname = current_database()")
        .output()
        .expect("psql");
    out.insert(
        "comment (hex, database encoding)".into(),
        String::from_utf8_lossy(&comment.stdout).trim().to_string(),
    );
    out.insert(
        "pg_db_role_setting".into(),
        pg.psql(
            "postgres",
            &format!(
                "SELECT coalesce(string_agg(coalesce(r.rolname, '<database>') || ': ' || array_to_string(s.setconfig, ', '), E'\\n' ORDER BY 1), '') \
                   FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                   LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = '{lit}'"
            ),
        ),
    );
    out.insert(
        "extensions".into(),
        pg.psql(
            db,
            "SELECT coalesce(string_agg(e.extname || ' ' || e.extversion || ' ' || n.nspname || ' ' || pg_get_userbyid(e.extowner), ', ' ORDER BY 1), '') \
               FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace",
        ),
    );
    out.insert(
        "large objects".into(),
        pg.psql(
            db,
            "SELECT coalesce(string_agg(m.oid || ' ' || pg_get_userbyid(m.lomowner) || ' ' || coalesce(m.lomacl::text, 'NULL') || ' ' || md5(lo_get(m.oid)), E'\\n' ORDER BY m.oid), '') \
               FROM pg_largeobject_metadata m",
        ),
    );
    out.insert(
        "default privileges".into(),
        pg.psql(
            db,
            "SELECT coalesce(string_agg(pg_get_userbyid(defaclrole) || ' ' || coalesce(n.nspname, '-') || ' ' || defaclobjtype::text || ' ' || defaclacl::text, E'\\n' ORDER BY 1), '') \
               FROM pg_default_acl a LEFT JOIN pg_namespace n ON n.oid = a.defaclnamespace",
        ),
    );
    out
}

/// Schema, catalog rows and data of `db`.
pub fn image(pg: &PgCluster, db: &str) -> DbImage {
    DbImage {
        schema: schema_of(pg, db),
        catalog: catalog_of(pg, db),
        data: pg.fingerprint(db),
    }
}

/// Panics with the first differences when `copy_db` on `copy` is not
/// `src_db` on `src`.
pub fn assert_same(src: &PgCluster, src_db: &str, copy: &PgCluster, copy_db: &str) {
    let a = image(src, src_db);
    let b = image(copy, copy_db);
    assert!(
        !a.data.is_empty(),
        "the source has no tables: nothing proven"
    );
    if a.schema != b.schema {
        let diff: Vec<String> = a
            .schema
            .lines()
            .zip(b.schema.lines())
            .filter(|(x, y)| x != y)
            .take(10)
            .map(|(x, y)| format!("  source: {x}\n  copy:   {y}"))
            .collect();
        panic!(
            "schema of {copy_db} differs from {src_db} ({} vs {} lines):\n{}",
            a.schema.lines().count(),
            b.schema.lines().count(),
            diff.join("\n")
        );
    }
    assert_eq!(
        a.catalog, b.catalog,
        "catalog rows of {copy_db} vs {src_db}"
    );
    assert_eq!(a.data, b.data, "table contents of {copy_db} vs {src_db}");
}

/// Builds the "hard" database `db` (owned by `app`, which it creates with
/// a `reader` role): issue 12's case 1 plus sequences with set values,
/// identity and generated columns, domains, enums, a partitioned table,
/// row-level security, a trigger, views and a materialized view, citext and
/// hstore, large objects with owner and ACL, default privileges, comments,
/// and awkward values (NULLs, newlines, backslashes, floats, bytea, jsonb,
/// arrays, time zones).
pub fn hard_database(pg: &PgCluster, db: &str) {
    pg.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE reader LOGIN PASSWORD 'reader-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        ),
    );
    pg.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"));
    pg.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {db} SET search_path = billing, public;
             ALTER ROLE app IN DATABASE {db} SET statement_timeout = '5s';
             REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {db} TO app;
             GRANT CONNECT ON DATABASE {db} TO reader;
             ALTER DATABASE {db} CONNECTION LIMIT 40;
             COMMENT ON DATABASE {db} IS 'call detail records';"
        ),
    );
    pg.psql(
        db,
        "CREATE EXTENSION citext; CREATE EXTENSION hstore;
         SET ROLE app;
         CREATE SCHEMA billing;
         CREATE TABLE billing.cdr (id bigserial PRIMARY KEY, caller text, secs int);
         INSERT INTO billing.cdr (caller, secs) SELECT 'caller-' || g, g % 600 FROM generate_series(1, 1000) g;
         CREATE TABLE public.schema_version (v int);
         INSERT INTO public.schema_version VALUES (7);
         CREATE SEQUENCE billing.invoice_no START 1000 INCREMENT 7;
         SELECT setval('billing.invoice_no', 5012, false);
         CREATE DOMAIN billing.positive AS numeric(12,4) CHECK (VALUE > 0);
         CREATE TYPE billing.state AS ENUM ('open', 'billed', 'void');
         CREATE TABLE billing.tariffs (
             id int GENERATED ALWAYS AS IDENTITY (START WITH 50 INCREMENT BY 5) PRIMARY KEY,
             name citext UNIQUE,
             rate billing.positive,
             per_hour numeric GENERATED ALWAYS AS (rate * 60) STORED,
             state billing.state DEFAULT 'open',
             tags hstore,
             meta jsonb,
             ratios float8[],
             raw bytea,
             valid tstzrange,
             note text);
         INSERT INTO billing.tariffs (name, rate, state, tags, meta, ratios, raw, valid, note) VALUES
           ('Local', 0.0123, 'open', 'zone=>1, peak=>\"yes\"', '{\"a\": [1, 2.5, null]}', '{0.1, 1e-300, -0}', '\\x00ff5c', '[2024-01-01 00:00+02, 2025-01-01)', E'line1\\nline2\\t\\\\back'),
           ('INTL', 1.5, 'billed', NULL, NULL, NULL, NULL, NULL, NULL),
           ('local-2', 2, 'void', '', '[]', '{}', '', 'empty', '');
         CREATE TABLE billing.calls (id bigint, at timestamptz NOT NULL, secs int) PARTITION BY RANGE (at);
         CREATE TABLE billing.calls_2024 PARTITION OF billing.calls FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE billing.calls_rest PARTITION OF billing.calls DEFAULT;
         INSERT INTO billing.calls SELECT g, timestamptz '2024-06-01 12:00+00' + g * interval '1 day', g FROM generate_series(1, 400) g;
         CREATE TABLE billing.accounts (id int PRIMARY KEY, owner name DEFAULT current_user, balance numeric);
         INSERT INTO billing.accounts VALUES (1, 'app', 10.5), (2, 'reader', -3);
         ALTER TABLE billing.accounts ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_rows ON billing.accounts USING (owner = current_user);
         CREATE FUNCTION billing.touch() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN NEW.secs := coalesce(NEW.secs, 0); RETURN NEW; END $f$;
         CREATE TRIGGER cdr_touch BEFORE INSERT ON billing.cdr FOR EACH ROW EXECUTE FUNCTION billing.touch();
         CREATE VIEW billing.long_calls AS SELECT * FROM billing.cdr WHERE secs > 300;
         CREATE MATERIALIZED VIEW billing.per_caller AS SELECT caller, sum(secs) AS secs FROM billing.cdr GROUP BY caller;
         CREATE MATERIALIZED VIEW billing.unfilled AS SELECT 1 AS x WITH NO DATA;
         COMMENT ON TABLE billing.cdr IS 'one row per call';
         COMMENT ON COLUMN billing.cdr.secs IS 'duration, seconds';
         ALTER DEFAULT PRIVILEGES IN SCHEMA billing GRANT SELECT ON TABLES TO reader;
         GRANT USAGE ON SCHEMA billing TO reader;
         GRANT SELECT ON billing.cdr TO reader;
         SELECT lo_from_bytea(424242, '\\x6c6f620001');
         GRANT SELECT ON LARGE OBJECT 424242 TO reader;
         RESET ROLE;
         SELECT lo_from_bytea(424243, 'owned by postgres');",
    );
}

/// A LATIN1 database `db` (C collation) whose table, comment and setting
/// hold bytes above 0x7f.
pub fn latin1_database(pg: &PgCluster, db: &str) {
    pg.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {db} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
        ),
    );
    pg.psql(
        db,
        &format!(
            "COMMENT ON DATABASE {db} IS E'd\\xe9j\\xe0 vu \\xff';
             ALTER DATABASE {db} SET work_mem = '8MB';
             CREATE TABLE words (id int PRIMARY KEY, w text, b bytea);
             INSERT INTO words SELECT g, E'caf\\xe9 cr\\xe8me \\xfe\\xff ' || g, convert_to(E'\\xe9', 'LATIN1') FROM generate_series(1, 300) g;
             COMMENT ON TABLE words IS E'\\xe9t\\xe9';"
        ),
    );
}

/// Hex of every `w` in `words` in the database's own bytes, for checking
/// a LATIN1 copy byte for byte.
pub fn latin1_bytes(pg: &PgCluster, db: &str) -> String {
    pg.psql(
        db,
        "SELECT md5(string_agg(encode(convert_to(w, 'LATIN1'), 'hex'), ',' ORDER BY id)) FROM words",
    )
}
