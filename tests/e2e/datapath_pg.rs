//! End-to-end tests of the data path against real PostgreSQL clusters:
//! every format backed up and restored into a fresh server and compared
//! table by table, file trees restored identical, a killed dump leaving
//! nothing behind, and the one-line errors for the usual connection mistakes.
//!
//! Each test starts its own throwaway clusters (tests/harness/postgres.rs),
//! so they run in parallel and clean up even when they fail.

use offsite_tests::postgres as pg_harness;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offsite::pipeline::{self, Compression};
use offsite::restore::{ChecksumMismatch, Restore};
use offsite::source::postgres::{self, PgError, PgFormat, PgSource};
use offsite::source::{Layout, SourceSpec, TakenGeneration, take};
use pg_harness::{PgCluster, SUPERUSER_PASSWORD};

const APP_PASSWORD: &str = "app-Pw-77x";
const STEM: &str = "shop-20250102T030405Z";

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A database `shop` owned by role `app` (password, member of `readers`):
/// pgbench's tables at scale 1 plus a table of random text, with a
/// sequence, arrays, newlines and non-ASCII characters.
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
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, tags text[], \
                             created timestamptz NOT NULL DEFAULT now());
         INSERT INTO notes (body, tags)
              SELECT md5(random()::text) || E'\\n' || repeat(chr(192 + (random() * 60)::int), (random() * 300)::int),
                     ARRAY['a', md5(i::text)]
                FROM generate_series(1, 3000) i;
         ALTER TABLE notes OWNER TO app;
         GRANT SELECT ON notes TO readers;",
    );
}

fn job_dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn assert_only_generation(dir: &Path, taken: &TakenGeneration) {
    let name = taken
        .written
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        job_dir_entries(dir),
        vec![name],
        "no temporaries may remain"
    );
}

async fn round_trip(format: PgFormat, compression: Compression, expected_name: &str) {
    init_logs();
    let started = Instant::now();
    let src = PgCluster::start();
    seed(&src);
    let dst = PgCluster::start();
    let job = tempfile::tempdir().unwrap();
    let spec = SourceSpec {
        postgres: Some(PgSource::new(src.dsn("shop"), format)),
        paths: vec![],
        count_rows: false,
    };
    let taken = take(&spec, job.path(), STEM, &compression)
        .await
        .unwrap_or_else(|e| panic!("{format} backup failed: {e:#}"));
    assert_eq!(taken.written.path, job.path().join(expected_name));
    assert_eq!(taken.layout, spec.layout());
    assert_eq!(
        taken.written.sha256,
        pipeline::sha256_file(&taken.written.path).unwrap()
    );
    assert_eq!(
        taken.written.size,
        std::fs::metadata(&taken.written.path).unwrap().len()
    );
    assert!(taken.globals_included, "roles must be in the generation");
    assert_eq!(
        taken.server_version.as_deref(),
        Some(
            src.psql("postgres", "SHOW server_version")
                .split_whitespace()
                .next()
                .unwrap()
        )
    );
    assert!(taken.warnings.is_empty(), "{:?}", taken.warnings);
    assert_only_generation(job.path(), &taken);

    let restore = Restore::open(
        &taken.written.path,
        taken.layout,
        Some(format),
        compression,
        &taken.written.sha256,
    )
    .await
    .unwrap();
    let report = restore
        .restore_to_dsn(&dst.dsn("shop_restored"))
        .await
        .unwrap_or_else(|e| panic!("{format} restore failed: {e:#}"));
    assert!(report.created_database);
    assert_eq!(src.fingerprint("shop"), dst.fingerprint("shop_restored"));
    assert_eq!(src.roles(), dst.roles(), "roles and memberships come back");
    assert!(
        dst.roles().contains(&"app|true|true|readers".to_string()),
        "{:?}",
        dst.roles()
    );
    assert_eq!(
        dst.psql(
            "shop_restored",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'"
        ),
        "app",
        "owners are kept"
    );
    assert_eq!(
        dst.psql(
            "shop_restored",
            "SELECT has_table_privilege('readers', 'public.notes', 'SELECT')"
        ),
        "t",
        "grants are kept"
    );
    // The restored role logs in with its original password.
    let info = postgres::preflight(&dst.dsn_as("app", APP_PASSWORD, "shop_restored"))
        .await
        .unwrap();
    assert_eq!(info.database, "shop_restored");
    eprintln!("{format}: backup + restore in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_format_round_trip_restores_twice_and_by_hand() {
    let compression = Compression::Zstd {
        level: 3,
        threads: 2,
    };
    // The main round trip, then the same generation again into the same
    // server (roles now exist) and once by hand with psql.
    init_logs();
    let src = PgCluster::start();
    seed(&src);
    let dst = PgCluster::start();
    let job = tempfile::tempdir().unwrap();
    let spec = SourceSpec {
        postgres: Some(PgSource::new(src.dsn("shop"), PgFormat::Sql)),
        paths: vec![],
        count_rows: false,
    };
    assert_eq!(spec.layout(), Layout::SqlStream);
    let taken = take(&spec, job.path(), STEM, &compression).await.unwrap();
    assert_eq!(
        taken.written.path,
        job.path().join(format!("{STEM}.sql.zst"))
    );
    assert_only_generation(job.path(), &taken);
    let restore = Restore::open(
        &taken.written.path,
        Layout::SqlStream,
        Some(PgFormat::Sql),
        compression,
        &taken.written.sha256,
    )
    .await
    .unwrap();

    restore.restore_to_dsn(&dst.dsn("first")).await.unwrap();
    assert_eq!(src.fingerprint("shop"), dst.fingerprint("first"));
    assert_eq!(src.roles(), dst.roles());

    // Roles exist now: they are left alone and the restore still succeeds.
    dst.psql("postgres", "ALTER ROLE app PASSWORD 'changed-Since-Backup'");
    let again = restore.restore_to_dsn(&dst.dsn("second")).await.unwrap();
    assert_eq!(src.fingerprint("shop"), dst.fingerprint("second"));
    assert!(
        again.warnings.iter().any(|w| w.contains("app")),
        "{:?}",
        again.warnings
    );
    postgres::preflight(&dst.dsn_as("app", "changed-Since-Backup", "second"))
        .await
        .expect("an existing role's password is not reset by a restore");

    // Into a database that already has tables: refused, nothing applied.
    let err = restore
        .restore_to_dsn(&dst.dsn("first"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds"), "{err}");

    // The decompressed stream, and the documented hand restore with
    // ON_ERROR_STOP on a server where every role already exists.
    let sql_out = job.path().join("out.sql");
    restore.restore_to_file(&sql_out).await.unwrap();
    let text = std::fs::read_to_string(&sql_out).unwrap();
    assert!(text.contains(offsite::source::GLOBALS_BEGIN));
    assert!(text.contains("DO $offsite$ BEGIN CREATE ROLE app;"));
    assert!(text.contains("CREATE TABLE public.notes"));
    assert!(
        restore.restore_to_file(&sql_out).await.is_err(),
        "never overwrites"
    );
    dst.psql("postgres", "CREATE DATABASE by_hand");
    let out = std::process::Command::new(dst.bin().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&sql_out)
        .arg(dst.dsn("by_hand"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hand restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(src.fingerprint("shop"), dst.fingerprint("by_hand"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_format_round_trip() {
    round_trip(
        PgFormat::Custom,
        Compression::Gzip { level: 6 },
        &format!("{STEM}.tar.gz"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_format_round_trip() {
    round_trip(PgFormat::Tar, Compression::None, &format!("{STEM}.tar")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_format_round_trip() {
    round_trip(
        PgFormat::Directory,
        Compression::Zstd {
            level: 1,
            threads: 1,
        },
        &format!("{STEM}.tar.zst"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_to_a_data_directory_that_starts() {
    init_logs();
    let src = PgCluster::start();
    seed(&src);
    let job = tempfile::tempdir().unwrap();
    let compression = Compression::default();
    let spec = SourceSpec {
        postgres: Some(PgSource::new(src.dsn("shop"), PgFormat::Snapshot)),
        paths: vec![],
        count_rows: false,
    };
    let taken = take(&spec, job.path(), STEM, &compression).await.unwrap();
    assert_eq!(taken.layout, Layout::Tar);
    assert_only_generation(job.path(), &taken);
    let restore = Restore::open(
        &taken.written.path,
        taken.layout,
        Some(PgFormat::Snapshot),
        compression,
        &taken.written.sha256,
    )
    .await
    .unwrap();
    let err = restore
        .restore_to_dsn(&src.dsn("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--to-dir"), "{err}");

    let parent = pg_harness::server_owned_tempdir();
    let data = parent.path().join("restored");
    restore.restore_to_dir(&data, false).await.unwrap();
    let verify = std::process::Command::new(src.bin().join("pg_verifybackup"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let err = restore
        .restore_to_dir(&data, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");

    let restored = PgCluster::start_existing(&data, SUPERUSER_PASSWORD);
    assert_eq!(src.fingerprint("shop"), restored.fingerprint("shop"));
    assert_eq!(src.roles(), restored.roles());
}

/// Everything `tar` should preserve, per path below `root`.
fn tree_listing(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, String>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if skip.iter().any(|s| rel == Path::new(s)) {
            return;
        }
        let kind = if m.file_type().is_symlink() {
            format!("link->{}", std::fs::read_link(p).unwrap().display())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            format!(
                "file size={} sha={}",
                m.len(),
                pipeline::sha256_file(p).unwrap()
            )
        };
        let mode = if m.file_type().is_symlink() {
            0
        } else {
            m.permissions().mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{kind} mode={mode:o} mtime={} uid={} gid={}",
                m.mtime(),
                m.uid(),
                m.gid()
            ),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn set_mtime(p: &Path, secs: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

/// A tree with nested dirs, modes, an empty file, an empty read-only dir,
/// symlinks (one dangling), distinct mtimes, and the job's own backup folder
/// inside it (which must not be archived).
fn build_tree(root: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("conf")).unwrap();
    fs::create_dir_all(root.join("data/deep/er")).unwrap();
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::write(root.join("conf/settings.ini"), "[db]\nhost = 127.0.0.1\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::write(root.join("data/empty"), "").unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(root.join("data/deep/er/blob.bin"), blob).unwrap();
    let long = "n".repeat(120);
    fs::write(root.join("data").join(&long), "long name").unwrap();
    std::os::unix::fs::symlink("conf/settings.ini", root.join("settings")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let modes = [
        ("conf/settings.ini", 0o640),
        ("run.sh", 0o755),
        ("data/empty", 0o600),
        ("data/deep/er/blob.bin", 0o644),
        ("conf", 0o700),
        ("data/deep", 0o751),
        ("emptydir", 0o555),
    ];
    for (p, m) in modes {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    }
    let mut t = 1_600_000_000;
    for p in [
        "conf/settings.ini",
        "run.sh",
        "data/empty",
        "data/deep/er/blob.bin",
        &format!("data/{long}"),
        "settings",
        "dangling",
        "data/deep/er",
        "data/deep",
        "data",
        "conf",
        "emptydir",
    ] {
        t += 3_601;
        set_mtime(&root.join(p), t);
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tree_restores_identical() {
    init_logs();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("srv/app");
    build_tree(&root);
    // The backup folder sits inside the tree being backed up.
    let job = root.join("backups");
    std::fs::create_dir(&job).unwrap();
    set_mtime(&root, 1_500_000_000);
    let before = tree_listing(&root, &["backups"]);

    let compression = Compression::Gzip { level: 6 };
    let spec = SourceSpec {
        postgres: None,
        paths: vec![root.clone()],
        count_rows: false,
    };
    let taken = take(&spec, &job, "files-20250102T030405Z", &compression)
        .await
        .unwrap();
    assert_eq!(taken.layout, Layout::Tar);
    assert!(taken.warnings.is_empty(), "{:?}", taken.warnings);
    assert_eq!(taken.server_version, None);
    assert_only_generation(&job, &taken);

    // A wrong checksum is refused before anything is written.
    let bad = "0".repeat(64);
    let err = Restore::open(&taken.written.path, taken.layout, None, compression, &bad)
        .await
        .unwrap_err();
    let mismatch = err.downcast_ref::<ChecksumMismatch>().expect("typed error");
    assert_eq!(mismatch.actual, taken.written.sha256);
    let msg = err.to_string();
    assert!(
        msg.contains(&bad) && msg.contains(&taken.written.sha256),
        "{msg}"
    );

    let restore = Restore::open(
        &taken.written.path,
        taken.layout,
        None,
        compression,
        &taken.written.sha256,
    )
    .await
    .unwrap();
    let err = restore
        .restore_to_dsn("postgresql://postgres@127.0.0.1:1/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("file trees only"), "{err}");

    let out = work.path().join("restored");
    restore.restore_to_dir(&out, false).await.unwrap();
    let restored_root = out.join(root.strip_prefix("/").unwrap());
    let after = tree_listing(&restored_root, &[]);
    assert_eq!(before, after);

    let err = restore
        .restore_to_dir(&out, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(restored_root.join("run.sh"), "changed").unwrap();
    restore.restore_to_dir(&out, true).await.unwrap();
    assert_eq!(before, tree_listing(&restored_root, &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_files_in_one_generation() {
    init_logs();
    let src = PgCluster::start();
    seed(&src);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("wwwroot/app");
    build_tree(&root);
    let before = tree_listing(&root, &[]);
    let job = work.path().join("backups");
    let compression = Compression::None;
    let spec = SourceSpec {
        postgres: Some(PgSource::new(src.dsn("shop"), PgFormat::Sql)),
        paths: vec![root.clone()],
        count_rows: false,
    };
    assert_eq!(spec.layout(), Layout::Tar);
    let taken = take(&spec, &job, STEM, &compression).await.unwrap();
    assert_eq!(taken.written.path, job.join(format!("{STEM}.tar")));
    assert_only_generation(&job, &taken);

    // Members in the documented order.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&taken.written.path).unwrap());
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(names[0], "globals.sql");
    // Issue 12: the database-level statements travel between roles and dump.
    assert_eq!(names[1], "database-properties.sql");
    assert_eq!(names[2], "database.sql");
    assert!(
        names[3..].iter().all(|n| n.starts_with("files/")),
        "{names:?}"
    );

    let restore = Restore::open(
        &taken.written.path,
        taken.layout,
        Some(PgFormat::Sql),
        compression,
        &taken.written.sha256,
    )
    .await
    .unwrap();
    restore.restore_to_dsn(&src.dsn("shop_copy")).await.unwrap();
    assert_eq!(src.fingerprint("shop"), src.fingerprint("shop_copy"));
    let out = work.path().join("restored");
    let report = restore.restore_to_dir(&out, false).await.unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("--to-dsn")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        before,
        tree_listing(&out.join(root.strip_prefix("/").unwrap()), &[])
    );
}

/// Our child process called `name` connected to `port` (tests in this
/// binary run dumps in parallel, all as our children).
fn find_child(name: &str, port: u16, timeout: Duration) -> i32 {
    let me = std::process::id().to_string();
    let want_env = format!("PGPORT={port}");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 2..].split_whitespace().nth(1).unwrap_or("");
            if comm != name || ppid != me {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|kv| kv == want_env.as_bytes()) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {name} child for port {port} within {timeout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dump_leaves_no_file_and_no_temporaries() {
    init_logs();
    let src = PgCluster::start();
    src.psql("postgres", "CREATE DATABASE shop");
    src.psql(
        "shop",
        "CREATE TABLE notes AS SELECT i, md5(i::text) AS body FROM generate_series(1, 1000) i",
    );
    for (format, temp_prefix) in [(PgFormat::Sql, ".tmp-"), (PgFormat::Custom, ".spool-")] {
        // A session holding an exclusive lock makes pg_dump wait mid-way.
        let (client, conn) = tokio_postgres::connect(&src.dsn("shop"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();

        let job = tempfile::tempdir().unwrap();
        let spec = SourceSpec {
            postgres: Some(PgSource::new(src.dsn("shop"), format)),
            paths: vec![],
            count_rows: false,
        };
        let job_path = job.path().to_path_buf();
        let task =
            tokio::spawn(
                async move { take(&spec, &job_path, STEM, &Compression::default()).await },
            );
        let pid = tokio::task::spawn_blocking({
            let port = src.port;
            move || find_child("pg_dump", port, Duration::from_secs(30))
        })
        .await
        .unwrap();

        // The password is in the environment, never in argv (world-readable).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(SUPERUSER_PASSWORD),
            "password in pg_dump's argv"
        );
        assert!(
            job_dir_entries(job.path())
                .iter()
                .any(|n| n.starts_with(temp_prefix)),
            "{format}: expected a {temp_prefix}* while dumping, found {:?}",
            job_dir_entries(job.path())
        );

        // SAFETY: kill(2) of the pg_dump child found above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let err = task.await.unwrap().expect_err("a killed dump must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("pg_dump was killed by signal 9"),
            "{format}: {msg}"
        );
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            job_dir_entries(job.path()),
            Vec::<String>::new(),
            "{format}: nothing may remain"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_backup_future_kills_the_dump_and_cleans_up() {
    init_logs();
    let src = PgCluster::start();
    src.psql("postgres", "CREATE DATABASE shop");
    src.psql("shop", "CREATE TABLE notes AS SELECT 1 AS i");
    let (client, conn) = tokio_postgres::connect(&src.dsn("shop"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let job = tempfile::tempdir().unwrap();
    let spec = SourceSpec {
        postgres: Some(PgSource::new(src.dsn("shop"), PgFormat::Directory)),
        paths: vec![],
        count_rows: false,
    };
    let job_path = job.path().to_path_buf();
    // What a job timeout does: the future is dropped mid-dump.
    let task = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(2),
            take(&spec, &job_path, STEM, &Compression::default()),
        )
        .await
    });
    let pid = tokio::task::spawn_blocking({
        let port = src.port;
        move || find_child("pg_dump", port, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert!(task.await.unwrap().is_err(), "timed out");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() || !job_dir_entries(job.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "pg_dump {pid} still alive or leftovers {:?}",
            job_dir_entries(job.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_mistakes_give_one_clear_line_and_no_file() {
    init_logs();
    let c = PgCluster::start();
    let info = postgres::preflight(&c.dsn("postgres")).await.unwrap();
    assert!(
        info.version
            .starts_with(&format!("{}.", info.version_num / 10000))
    );
    assert_eq!(info.database, "postgres");
    assert!(info.size_bytes > 0 && info.superuser);
    for format in PgFormat::ALL {
        let checked = PgSource::new(c.dsn("postgres"), format).check().await;
        assert_eq!(checked.unwrap().version, info.version, "{format}");
    }

    let down = pg_harness::free_port();
    let wrong = "wrong-Secret-93";
    let cases: Vec<(String, String, String)> = vec![
        (
            format!("postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{down}/postgres"),
            format!(
                "cannot reach PostgreSQL at 127.0.0.1:{down}: connection refused — is the server running?"
            ),
            SUPERUSER_PASSWORD.to_string(),
        ),
        (
            c.dsn_as("postgres", wrong, "postgres"),
            format!(
                "PostgreSQL at 127.0.0.1:{} rejected the password for user \"postgres\" — fix the password in the dsn (or in ~/.pgpass)",
                c.port
            ),
            wrong.to_string(),
        ),
        (
            c.dsn("nosuchdb"),
            format!(
                "database \"nosuchdb\" does not exist on PostgreSQL at 127.0.0.1:{} — create it or fix the database name in the dsn",
                c.port
            ),
            SUPERUSER_PASSWORD.to_string(),
        ),
    ];
    for (dsn, expected, password) in cases {
        for format in [PgFormat::Sql, PgFormat::Snapshot] {
            let job = tempfile::tempdir().unwrap();
            let spec = SourceSpec {
                postgres: Some(PgSource::new(dsn.clone(), format)),
                paths: vec![],
                count_rows: false,
            };
            let err = take(&spec, job.path(), STEM, &Compression::default())
                .await
                .expect_err("must fail");
            let msg = format!("{err:#}");
            assert_eq!(msg, expected);
            assert!(!msg.contains('\n') && !msg.contains(&password));
            assert!(err.downcast_ref::<PgError>().is_some());
            assert_eq!(job_dir_entries(job.path()), Vec::<String>::new());
        }
        let err = postgres::preflight(&dsn).await.unwrap_err().to_string();
        assert_eq!(err, expected);
    }
}
