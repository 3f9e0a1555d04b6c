//! Issue 3 end to end, through the `offsite` binary only, as an operator
//! uses it: a config file → `offsite run JOB` → generations and manifests on
//! disk and at a destination → `offsite list` / `offsite restore`.
//!
//! Every test starts its own PostgreSQL 15 cluster (tests/harness/postgres.rs)
//! and its own temporary installation (tests/harness/jobs.rs), so tests run
//! in parallel and clean up when they fail. The data path itself is tested at
//! library level in datapath_pg.rs; here it is the CLI path.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offsite_tests::jobs::{
    Setup, alive, all_command_lines, build_tree, children_of, entries, tree_listing, wait_for,
};
use offsite_tests::postgres::{PgCluster, SUPERUSER_PASSWORD, server_owned_tempdir};
use offsite_tests::proc::{Server, free_port};
use serde_json::Value;

const APP_PASSWORD: &str = "app-Pw-77x";

/// A database `shop` owned by role `app` (password, member of `readers`):
/// pgbench's tables at scale 1 plus a table of random text with a sequence,
/// arrays, newlines and non-ASCII characters.
fn seed(c: &PgCluster) {
    c.psql("postgres", "CREATE ROLE readers NOLOGIN");
    c.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}' IN ROLE readers"),
    );
    c.psql("postgres", "CREATE DATABASE shop OWNER app");
    c.run_client("pgbench", &["-i", "-s", "1", "-q", "shop"]);
    c.psql(
        "shop",
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, tags text[]);
         INSERT INTO notes (body, tags)
              SELECT md5(random()::text) || E'\\n' || repeat(chr(192 + (random() * 60)::int), (random() * 300)::int),
                     ARRAY['a', md5(i::text)]
                FROM generate_series(1, 2000) i;
         ALTER TABLE notes OWNER TO app;
         GRANT SELECT ON notes TO readers;",
    );
}

/// `[destinations.NAME]` through local-dir into a new folder NAME below the
/// setup's root; returns (folder, TOML).
fn local_dir(s: &Setup, name: &str) -> (std::path::PathBuf, String) {
    let dir = s.dir(name);
    let toml = format!(
        "[destinations.{name}]\nplugin = \"local-dir\"\npath = \"{}\"\n",
        dir.display()
    );
    (dir, toml)
}

/// Generation names are per second: runs of one job must be a second apart.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn sha256_of(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

fn data_files(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && !n.ends_with(".manifest.json"))
        .collect()
}

/// A psql session holding ACCESS EXCLUSIVE on `pgbench_accounts` in `shop`,
/// so a pg_dump of `shop` blocks until it is released. The password goes
/// through the environment, so it is in no process's argv.
struct TableLock<'a> {
    cluster: &'a PgCluster,
    _session: Server,
}

impl<'a> TableLock<'a> {
    fn hold(c: &'a PgCluster) -> TableLock<'a> {
        let session = Server::spawn(
            "psql holding a table lock",
            Command::new(c.bin().join("psql"))
                .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "shop"])
                .arg("-p")
                .arg(c.port.to_string())
                .args([
                    "-c",
                    "BEGIN; LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
                ])
                .env("PGPASSWORD", &c.password)
                .env("PGAPPNAME", "offsite-test-locker")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for("the table lock", Duration::from_secs(20), || {
            (c.psql(
                "shop",
                "SELECT count(*) FROM pg_locks \
                  WHERE relation = 'pgbench_accounts'::regclass \
                    AND mode = 'AccessExclusiveLock' AND granted",
            ) == "1")
                .then_some(())
        });
        TableLock {
            cluster: c,
            _session: session,
        }
    }

    /// Waits until the runner's pg_dump is blocked behind the lock (the
    /// runner names its sessions `offsite`; pg_dump locks every table it
    /// dumps with LOCK TABLE ... IN ACCESS SHARE MODE).
    fn wait_blocked_dump(&self) {
        wait_for(
            "pg_dump to wait on the lock",
            Duration::from_secs(30),
            || {
                (self.cluster.psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity \
                  WHERE application_name = 'offsite' AND wait_event_type = 'Lock' \
                    AND query LIKE 'LOCK TABLE %'",
                ) == "1")
                    .then_some(())
            },
        );
    }
}

impl Drop for TableLock<'_> {
    fn drop(&mut self) {
        // Ends the transaction server-side (killing psql alone leaves its
        // backend sleeping with the lock until it next writes to the client).
        let _ = self.cluster.try_psql(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE application_name = 'offsite-test-locker'",
        );
    }
}

// ---- every format: run, then restore through the CLI -------------------------

/// `offsite run` of a postgres job in `format` (with `extra` job keys), its
/// manifest and its copy at a local-dir destination checked, then restored
/// with `offsite restore` into a fresh server and compared table by table,
/// roles included.
fn format_round_trip(format: &str, extra: &str, ext: &str) {
    let src = PgCluster::start();
    seed(&src);
    let s = Setup::new(&["offsite_local_dir"]);
    let (nas, nas_toml) = local_dir(&s, "nas");
    s.write_config(&format!(
        "{nas_toml}
[jobs.shop]
source = \"postgres\"
dsn = \"{dsn}\"
format = \"{format}\"
{extra}
destinations = [\"nas\"]
",
        dsn = src.dsn("shop")
    ));
    let started = Instant::now();
    s.run_ok("shop");
    let took = started.elapsed();

    let manifests = s.manifests("shop");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let m = &manifests[0];
    let name = m["name"].as_str().unwrap();
    assert!(
        name.starts_with("shop-") && name.ends_with(ext),
        "{name} should end with {ext}"
    );
    assert_eq!(m["format"], format);
    assert_eq!(m["globals_included"], true, "{m}");
    assert_eq!(m["health"], "good");
    assert_eq!(m["uploads"]["nas"]["state"], "done", "{m}");
    assert_eq!(
        m["verifications"][0]["method"], "checksum",
        "verify = checksum is the default: {m}"
    );
    assert_eq!(m["verifications"][0]["ok"], true);
    let local = s.job_dir("shop").join(name);
    assert_eq!(sha256_of(&local), m["sha256"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&local).unwrap().len(), m["size"]);
    // The destination holds the same bytes and the same manifest.
    assert_eq!(sha256_of(&nas.join(name)), m["sha256"].as_str().unwrap());
    let remote_manifest: Value =
        serde_json::from_slice(&std::fs::read(nas.join(format!("{name}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(remote_manifest["sha256"], m["sha256"]);

    let dst = PgCluster::start();
    if format == "snapshot" {
        let parent = server_owned_tempdir();
        let data = parent.path().join("restored");
        let (code, out) = s.offsite(&["restore", "shop", "--to-dir", data.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("restored {name} into ")), "{out}");
        let restored = PgCluster::start_existing(&data, SUPERUSER_PASSWORD);
        assert_eq!(src.fingerprint("shop"), restored.fingerprint("shop"));
        assert_eq!(src.roles(), restored.roles());
    } else {
        let (code, out) = s.offsite(&["restore", "shop", "--to-dsn", &dst.dsn("shop_restored")]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("restored {name} into ")), "{out}");
        assert!(
            !out.contains(&dst.password),
            "the target's password was printed:\n{out}"
        );
        assert_eq!(src.fingerprint("shop"), dst.fingerprint("shop_restored"));
        assert_eq!(src.roles(), dst.roles(), "roles and memberships come back");
        assert!(
            dst.roles().contains(&"app|true|true|readers".to_string()),
            "{:?}",
            dst.roles()
        );
        // The restored role logs in with its original password.
        dst.assert_login("app", APP_PASSWORD, "shop_restored");
    }
    eprintln!("{format}: offsite run took {took:?}");
}

/// Logs in over TCP as `user` with `password`, or panics.
trait LoginCheck {
    fn assert_login(&self, user: &str, password: &str, db: &str);
}

impl LoginCheck for PgCluster {
    fn assert_login(&self, user: &str, password: &str, db: &str) {
        let out = Command::new(self.bin().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-c",
                "SELECT current_user",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", user, "-d", db])
            .env("PGPASSWORD", password)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{user} cannot log in to {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sql_format_runs_and_restores_through_the_cli() {
    format_round_trip("sql", "", ".sql.zst");
}

#[test]
fn custom_format_runs_and_restores_through_the_cli() {
    format_round_trip("custom", "compression = \"gzip\"\nlevel = 6", ".tar.gz");
}

#[test]
fn tar_format_runs_and_restores_through_the_cli() {
    format_round_trip("tar", "compression = \"none\"", ".tar");
}

#[test]
fn directory_format_runs_and_restores_through_the_cli() {
    format_round_trip(
        "directory",
        "jobs = 2\nlevel = 5\nthreads = 2\nverify = \"restore\"",
        ".tar.zst",
    );
}

#[test]
fn snapshot_format_runs_and_restores_through_the_cli() {
    format_round_trip("snapshot", "", ".tar.zst");
}

/// A generation that is only at the destination (the local disk died) is
/// fetched, checked and restored with `--from`.
#[test]
fn restore_from_a_destination_when_the_local_copy_is_gone() {
    let src = PgCluster::start();
    seed(&src);
    let s = Setup::new(&["offsite_local_dir"]);
    let (_nas, nas_toml) = local_dir(&s, "nas");
    s.write_config(&format!(
        "{nas_toml}
[jobs.shop]
source = \"postgres\"
dsn = \"{}\"
format = \"custom\"
destinations = [\"nas\"]
",
        src.dsn("shop")
    ));
    s.run_ok("shop");
    std::fs::remove_dir_all(s.job_dir("shop")).unwrap();
    let dst = PgCluster::start();
    let target = dst.dsn("from_nas");
    let (code, out) = s.offsite(&["restore", "shop", "--to-dsn", &target]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("add --from DEST"), "{out}");
    let (code, out) = s.offsite(&["restore", "shop", "--from", "nas", "--to-dsn", &target]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(src.fingerprint("shop"), dst.fingerprint("from_nas"));
    assert_eq!(src.roles(), dst.roles());
}

// ---- file trees ----------------------------------------------------------------

#[test]
fn files_job_restores_an_identical_tree() {
    let s = Setup::new(&["offsite_local_dir"]);
    let app = s.dir("srv/app");
    build_tree(&app);
    let before = tree_listing(&app);
    let (nas, nas_toml) = local_dir(&s, "nas");
    s.write_config(&format!(
        "{nas_toml}
[jobs.app]
source = \"files\"
paths = [\"{}\"]
destinations = [\"nas\"]
verify = \"restore\"
",
        app.display()
    ));
    s.run_ok("app");
    let m = &s.manifests("app")[0];
    assert_eq!(m["source"], "files");
    assert_eq!(m["uploads"]["nas"]["state"], "done");
    assert!(nas.join(m["name"].as_str().unwrap()).exists());

    let out_dir = s.root().join("restored");
    let (code, out) = s.offsite(&["restore", "app", "--to-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let restored = out_dir.join(app.strip_prefix("/").unwrap());
    assert_eq!(before, tree_listing(&restored));

    // A second restore into the same folder is refused without --force.
    let (code, out) = s.offsite(&["restore", "app", "--to-dir", out_dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("--force"), "{out}");
}

// ---- retention -------------------------------------------------------------------

#[test]
fn five_runs_with_keep_3_leave_3_generations_locally_and_at_the_destination() {
    let s = Setup::new(&["offsite_local_dir"]);
    let app = s.dir("srv/app");
    std::fs::write(app.join("index.html"), "<h1>v0</h1>").unwrap();
    let (nas, nas_toml) = local_dir(&s, "nas");
    s.write_config(&format!(
        "{nas_toml}
[jobs.app]
source = \"files\"
paths = [\"{}\"]
keep = 3
destinations = [\"nas\"]
",
        app.display()
    ));
    let mut names = vec![];
    for i in 1..=5 {
        std::fs::write(app.join("index.html"), format!("<h1>v{i}</h1>")).unwrap();
        s.run_ok("app");
        let listed = s.listed("app");
        names.push(listed.last().unwrap().clone());
        assert_eq!(listed.len(), i.min(3), "after run {i}: {listed:?}");
        next_second();
    }
    let kept = names[2..].to_vec();
    assert_eq!(s.listed("app"), kept);
    let mut expected: Vec<String> = kept
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}.manifest.json")])
        .collect();
    expected.sort();
    let local: Vec<String> = entries(&s.job_dir("app"))
        .into_iter()
        .filter(|n| n != ".lock")
        .collect();
    assert_eq!(local, expected, "locally");
    assert_eq!(entries(&nas), expected, "at the destination");
    for m in s.manifests("app") {
        assert_eq!(m["uploads"]["nas"]["state"], "done", "{m}");
    }
    let log = s.log();
    for dropped in &names[..2] {
        assert!(
            log.contains(&format!("removed {dropped} from nas")),
            "{dropped} was not removed remotely:\n{log}"
        );
    }
}

// ---- a killed runner ---------------------------------------------------------------

#[test]
fn a_runner_killed_mid_dump_leaves_no_generation_and_the_next_run_recovers() {
    let src = PgCluster::start();
    seed(&src);
    let s = Setup::new(&["offsite_local_dir"]);
    let (nas, nas_toml) = local_dir(&s, "nas");
    s.write_config(&format!(
        "{nas_toml}
[jobs.shop]
source = \"postgres\"
dsn = \"{}\"
keep = 3
destinations = [\"nas\"]
",
        src.dsn("shop")
    ));
    s.run_ok("shop");
    next_second();
    s.run_ok("shop");
    next_second();
    let good = s.listed("shop");
    assert_eq!(good.len(), 2);
    let sums: Vec<Value> = s
        .manifests("shop")
        .iter()
        .map(|m| m["sha256"].clone())
        .collect();

    let lock = TableLock::hold(&src);
    let run = s.spawn_run("shop");
    let runner = run.pid();
    lock.wait_blocked_dump();
    let dump = children_of(runner)
        .into_iter()
        .find(|(_, comm)| comm == "pg_dump")
        .unwrap_or_else(|| panic!("no pg_dump child of {runner}: {:?}", children_of(runner)))
        .0;
    let job_dir = s.job_dir("shop");
    let temporaries = wait_for("the dump's temporary file", Duration::from_secs(10), || {
        let t: Vec<String> = entries(&job_dir)
            .into_iter()
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        (!t.is_empty()).then_some(t)
    });
    run.kill();

    wait_for(
        "pg_dump to die with the runner (PR_SET_PDEATHSIG)",
        Duration::from_secs(5),
        || (!alive(dump)).then_some(()),
    );
    assert_eq!(s.listed("shop"), good, "only the old generations count");
    assert_eq!(s.manifests("shop").len(), 2);
    assert_eq!(data_files(&nas).len(), 2, "nothing new was shipped");
    let (code, text) = s.offsite(&["list", "shop"]);
    assert_eq!(code, 0);
    for t in &temporaries {
        assert!(!text.contains(t.as_str()), "{t} is listed:\n{text}");
    }

    drop(lock);
    let out = s.run_ok("shop");
    assert!(
        out.contains("left by an interrupted run"),
        "the leftovers' removal is logged:\n{out}"
    );
    let listed = s.listed("shop");
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[..2], good[..], "retention deleted nothing good");
    let after: Vec<Value> = s
        .manifests("shop")
        .iter()
        .map(|m| m["sha256"].clone())
        .collect();
    assert_eq!(after[..2], sums[..], "the old generations are untouched");
    let leftovers: Vec<String> = entries(&job_dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "not cleaned: {leftovers:?}");
    assert_eq!(data_files(&job_dir), listed);
    assert_eq!(data_files(&nas), listed);
    for name in &good {
        let (code, out) = s.offsite(&["verify", "shop", "--generation", name]);
        assert_eq!(code, 0, "{out}");
    }
}

// ---- a destination that fails ----------------------------------------------------

#[test]
fn a_failing_destination_leaves_the_generation_pending_and_it_ships_first_once_fixed() {
    let s = Setup::new(&["offsite_local_dir", "fixture_hostile"]);
    let app = s.dir("srv/app");
    std::fs::write(app.join("index.html"), "<h1>hello</h1>").unwrap();
    let (nas, nas_toml) = local_dir(&s, "nas");
    let offsite_dir = s.dir("offsite");
    let job = format!(
        "[jobs.app]
source = \"files\"
paths = [\"{}\"]
keep = 3
destinations = [\"nas\", \"offsite\"]
",
        app.display()
    );
    // `offsite` is down: every upload answers `transient`.
    s.write_config(&format!(
        "{nas_toml}
[destinations.offsite]
plugin = \"hostile\"
mode = \"transient\"

{job}"
    ));
    let (code, out) = s.run("app");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("upload failed") && out.contains("to offsite: "),
        "{out}"
    );
    let m = s.manifests("app");
    assert_eq!(m.len(), 1, "the generation is kept locally");
    let first = m[0]["name"].as_str().unwrap().to_string();
    assert_eq!(m[0]["uploads"]["offsite"]["state"], "pending", "{}", m[0]);
    assert_eq!(
        m[0]["uploads"]["offsite"]["attempts"], 3,
        "two retries within the run: {}",
        m[0]
    );
    assert_eq!(m[0]["uploads"]["nas"]["state"], "done", "{}", m[0]);
    assert!(nas.join(&first).exists(), "the working destination got it");
    let (code, text) = s.offsite(&["list", "app"]);
    assert_eq!(code, 0);
    let line = text
        .lines()
        .find(|l| l.contains(&first))
        .unwrap_or_else(|| panic!("{first} not listed:\n{text}"));
    assert!(
        line.contains("offsite:PENDING") && line.contains("nas:shipped"),
        "{line}"
    );

    // Fixed: the same destination name now reaches a working folder.
    next_second();
    std::fs::write(app.join("index.html"), "<h1>hello again</h1>").unwrap();
    let log_before = s.log().len();
    s.write_config(&format!(
        "{nas_toml}
[destinations.offsite]
plugin = \"local-dir\"
path = \"{}\"

{job}",
        offsite_dir.display()
    ));
    s.run_ok("app");
    let names = s.listed("app");
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], first);
    let log = s.log()[log_before..].to_string();
    // Destinations ship side by side; within one destination, the newest
    // good generation first (issue 15.4: it is what a restore needs).
    let line_of = |needle: &str| {
        log.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` not in the log:\n{log}"))
    };
    let old = line_of(&format!(
        "uploading {first} ({} bytes) to offsite",
        m[0]["size"]
    ));
    let new = line_of(&format!(
        "uploading {} ({} bytes) to offsite",
        names[1],
        s.manifests("app")[1]["size"]
    ));
    assert!(
        new < old,
        "the newest ships first, then the pending one:\n{log}"
    );
    assert!(old < line_of(&format!("{first} shipped to offsite")));
    for m in s.manifests("app") {
        assert_eq!(m["uploads"]["offsite"]["state"], "done", "{m}");
        assert_eq!(m["uploads"]["nas"]["state"], "done", "{m}");
    }
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}.manifest.json")])
        .collect();
    expected.sort();
    assert_eq!(entries(&offsite_dir), expected);
}

// ---- the database side going wrong ------------------------------------------------

#[test]
fn database_down_wrong_password_and_missing_database_each_fail_with_one_clear_line() {
    let c = PgCluster::start();
    c.psql("postgres", "CREATE DATABASE shop");
    let s = Setup::new(&[]);
    let dead = free_port();
    let wrong = "Wr0ng-Pw-x1";
    s.write_config(&format!(
        "[jobs.down]
source = \"postgres\"
dsn = \"postgresql://postgres:{pw}@127.0.0.1:{dead}/shop\"

[jobs.badpw]
source = \"postgres\"
dsn = \"postgresql://postgres:{wrong}@127.0.0.1:{port}/shop\"

[jobs.nodb]
source = \"postgres\"
dsn = \"postgresql://postgres:{pw}@127.0.0.1:{port}/nosuchdb\"
",
        pw = c.password,
        port = c.port
    ));
    let cases = [
        (
            "down",
            format!(
                "offsite: job down: backup failed: cannot reach PostgreSQL at 127.0.0.1:{dead}: connection refused — is the server running?"
            ),
        ),
        (
            "badpw",
            format!(
                "offsite: job badpw: backup failed: PostgreSQL at 127.0.0.1:{} rejected the password for user \"postgres\" — fix the password in the dsn (or in ~/.pgpass)",
                c.port
            ),
        ),
        (
            "nodb",
            format!(
                "offsite: job nodb: backup failed: database \"nosuchdb\" does not exist on PostgreSQL at 127.0.0.1:{} — create it or fix the database name in the dsn",
                c.port
            ),
        ),
    ];
    for (job, line) in cases {
        let o = s.output(&["run", job]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{job}: {stderr}");
        let summary: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("offsite:"))
            .collect();
        assert_eq!(summary, vec![line.as_str()], "{job}:\n{stderr}");
        for secret in [c.password.as_str(), wrong] {
            assert!(!stderr.contains(secret), "{job} printed a password");
        }
        assert!(s.listed(job).is_empty(), "{job} left a generation");
        assert!(data_files(&s.job_dir(job)).is_empty());
    }
    assert!(!s.log().contains(&c.password));
    assert!(!s.log().contains(wrong));
}

// ---- bad configs --------------------------------------------------------------------

#[test]
fn bad_configs_each_name_file_line_and_key() {
    let s = Setup::new(&["offsite_local_dir", "fixture_hostile"]);
    let nas = s.dir("nas");
    let secret = s.root().join("token");
    std::fs::write(&secret, "tok-1\n").unwrap();
    // Lines 1-5: [runner]; 6-8: [destinations.nas]; 9: blank; 10-12:
    // [jobs.db]; 13: the line under test.
    let runner = s.runner_table();
    let dest = format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n",
        nas.display()
    );
    let job =
        "[jobs.db]\nsource = \"postgres\"\ndsn = \"postgresql://postgres@127.0.0.1:5432/db\"\n";
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown job key",
            format!("{runner}{dest}\n{job}kep = 3\n"),
            "13: unknown key `kep`: did you mean `keep`?".into(),
        ),
        (
            "bad schedule",
            format!("{runner}{dest}\n{job}schedule = \"dialy 04:30\"\n"),
            "13: `jobs.db.schedule`: `dialy 04:30`: unknown schedule kind `dialy`; accepted schedules: daily HH:MM, weekly HH:MM, monthly HH:MM, every N(h|m|s), manual".into(),
        ),
        (
            "bad compression",
            format!("{runner}{dest}\n{job}compression = \"zstandard\"\n"),
            "13: `jobs.db.compression`: `zstandard` is not accepted; accepted: zstd | gzip | none".into(),
        ),
        (
            "level out of range",
            format!("{runner}{dest}\n{job}level = 23\n"),
            "13: `jobs.db.level`: 23 is out of range for zstd; accepted: 1..=22".into(),
        ),
        (
            "keep = 0",
            format!("{runner}{dest}\n{job}keep = 0\n"),
            "13: `jobs.db.keep`: 0 generations cannot be kept; keep at least 1".into(),
        ),
        (
            "unknown destination",
            format!("{runner}{dest}\n{job}destinations = [\"nsa\"]\n"),
            "13: `jobs.db.destinations`: no destination `nsa`; did you mean `nas`?".into(),
        ),
        (
            "missing plugin",
            format!("{runner}[destinations.nas]\nplugin = \"local-dri\"\npath = \"{}\"\n", nas.display()),
            format!("6: `destinations.nas.plugin`: no plugin `local-dri` in {}; did you mean `local-dir`?", s.plugins_dir.display()),
        ),
        (
            "unknown plugin setting",
            format!("{runner}[destinations.nas]\nplugin = \"local-dir\"\npaht = \"{}\"\n", nas.display()),
            "8: `destinations.nas.paht`: plugin `local-dir` has no such setting; did you mean `path`?".into(),
        ),
        (
            "missing required plugin setting",
            format!("{runner}[destinations.nas]\nplugin = \"local-dir\"\n"),
            "6: `destinations.nas.path`: required by plugin `local-dir` but not set (absolute path of an existing directory to keep the copies in)".into(),
        ),
        (
            "secret file missing",
            format!("{runner}[destinations.x]\nplugin = \"hostile\"\nmode = \"ok\"\ntoken_file = \"/nonexistent/token\"\n"),
            "9: `destinations.x.token_file`: cannot read the secret file /nonexistent/token: No such file or directory (os error 2)".into(),
        ),
        (
            "both KEY and KEY_file",
            format!("{runner}[destinations.x]\nplugin = \"hostile\"\nmode = \"ok\"\ntoken = \"t\"\ntoken_file = \"{}\"\n", secret.display()),
            "10: `destinations.x.token_file`: give either `token` or `token_file`, not both".into(),
        ),
        (
            "dsn missing",
            format!("{runner}{dest}\n[jobs.db]\nsource = \"postgres\"\n"),
            "10: `jobs.db.dsn`: required with source = \"postgres\", e.g. dsn = \"postgresql://postgres@127.0.0.1:5432/calls\"".into(),
        ),
        (
            "relative path",
            format!("{runner}{dest}\n[jobs.app]\nsource = \"files\"\npaths = [\"srv/app\"]\n"),
            "12: `jobs.app.paths`: srv/app must be an absolute path".into(),
        ),
        (
            "bad notifier event",
            format!("{runner}[notifiers.ops]\nplugin = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\non = [\"failure\", \"sucess\"]\n"),
            "9: `notifiers.ops.on`: unknown event \"sucess\"; did you mean `success`? events: success, failure, verify-failed, upload-failed, not-enabled, archive-lag, wal-lag".into(),
        ),
        (
            "bad format",
            format!("{runner}{dest}\n{job}format = \"plain\"\n"),
            "13: `jobs.db.format`: `plain` is not accepted; accepted: sql | custom | tar | directory | snapshot".into(),
        ),
        (
            "unknown runner key",
            "[runner]\nbackup_dri = \"/var/backups\"\n".to_string(),
            "2: unknown key `backup_dri`: did you mean `backup_dir`?".into(),
        ),
    ];
    assert!(cases.len() >= 10);
    let mut failures = vec![];
    for (i, (what, text, expected)) in cases.iter().enumerate() {
        let path = s.root().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, out) = s.offsite_with(&path, &["config", "check"]);
        let want = format!("{}:{expected}", path.display());
        let ok = code != 0 && out.lines().any(|l| l.starts_with(&want));
        if !ok {
            failures.push(format!(
                "{what}: exit {code}, wanted a line starting with\n  {want}\ngot:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The same file, fixed, passes.
    let good = s.root().join("good.toml");
    std::fs::write(&good, format!("{runner}{dest}\n{job}keep = 3\n")).unwrap();
    let (code, out) = s.offsite_with(&good, &["config", "check"]);
    assert_eq!(code, 0, "{out}");
}

// ---- one run at a time ----------------------------------------------------------------

#[test]
fn a_second_run_of_a_running_job_is_refused_at_once_naming_the_holder() {
    let src = PgCluster::start();
    seed(&src);
    let s = Setup::new(&[]);
    s.write_config(&format!(
        "[jobs.shop]\nsource = \"postgres\"\ndsn = \"{}\"\n",
        src.dsn("shop")
    ));
    let lock = TableLock::hold(&src);
    let first = s.spawn_run("shop");
    lock.wait_blocked_dump();
    let started = Instant::now();
    let (code, out) = s.run("shop");
    let took = started.elapsed();
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "job shop is already running (pid {}); a job never runs twice at once",
            first.pid()
        )),
        "{out}"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    drop(lock);
    let (code, out) = first.wait(Duration::from_secs(120));
    assert_eq!(code, 0, "the first run goes on:\n{out}");
    assert_eq!(s.listed("shop").len(), 1);
}

// ---- secrets ---------------------------------------------------------------------------

#[test]
fn secrets_stay_out_of_logs_listings_and_every_argv() {
    let src = PgCluster::start();
    seed(&src);
    let s = Setup::new(&["offsite_local_dir", "fixture_hostile"]);
    let (_nas, nas_toml) = local_dir(&s, "nas");
    let token = "tok-S3cr3t-9c2d7e";
    let token_file = s.root().join("vault.token");
    offsite_tests::jobs::write_secret(&token_file, &format!("{token}\n"));
    // A password no other test uses, so the argv scan below can look at
    // every process on the machine.
    let db_password = "bk-S3cret-51f0a";
    src.psql(
        "postgres",
        &format!("CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{db_password}'"),
    );
    let dsn = src.dsn_as("backup", db_password, "shop");
    // `vault` is down and its plugin echoes its token in the error.
    s.write_config(&format!(
        "{nas_toml}
[destinations.vault]
plugin = \"hostile\"
mode = \"transient\"
token_file = \"{}\"

[jobs.shop]
source = \"postgres\"
dsn = \"{dsn}\"
format = \"custom\"
destinations = [\"nas\", \"vault\"]
",
        token_file.display()
    ));
    let lock = TableLock::hold(&src);
    let run = s.spawn_run("shop");
    lock.wait_blocked_dump();
    let mut seen = 0;
    for (pid, argv) in all_command_lines() {
        seen += 1;
        for secret in [db_password, token] {
            assert!(
                !argv.contains(secret),
                "pid {pid} has a secret in its argv: {argv}"
            );
        }
    }
    assert!(
        children_of(run.pid()).iter().any(|(_, c)| c == "pg_dump"),
        "the scan ran while pg_dump did"
    );
    assert!(seen > 3);
    drop(lock);
    let (code, out) = run.wait(Duration::from_secs(120));
    assert_ne!(code, 0, "vault fails:\n{out}");
    assert_eq!(
        s.manifests("shop")[0]["uploads"]["vault"]["state"],
        "pending"
    );

    let (_, list) = s.offsite(&["list"]);
    let (_, list_json) = s.offsite(&["list", "--json"]);
    let (_, check) = s.offsite(&["config", "check"]);
    let manifests = std::fs::read_dir(s.job_dir("shop"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(list.contains("vault:PENDING"), "{list}");
    assert!(
        out.contains("server unavailable (session ********)"),
        "the plugin's message is kept, its secret masked:\n{out}"
    );
    for (what, text) in [
        ("run output", &out),
        ("log file", &s.log()),
        ("offsite list", &list),
        ("offsite list --json", &list_json),
        ("offsite config check", &check),
        ("manifests", &manifests),
    ] {
        for secret in [db_password, token] {
            assert!(
                !text.contains(secret),
                "{what} shows a secret ({secret}):\n{text}"
            );
        }
    }
}
