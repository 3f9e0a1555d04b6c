//! Point-in-time recovery and the restore verification of WAL jobs, judged
//! by the fidelity oracle (`pg_dump --schema-only`, the database's catalog
//! rows, every table's checksum: `offsite_tests::pg_oracle`) against the
//! source as it was at each target, and by PostgreSQL's own records of
//! where a base backup starts (the `.backup` history file it archives).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use offsite_tests::jobs::{Setup, wait_for};
use offsite_tests::pg_oracle::{DbImage, hard_database, image};
use offsite_tests::postgres::{PgCluster, SUPERUSER_PASSWORD, server_owned_tempdir};
use offsite_tests::wal::{
    archiving_cluster, insert_batch, point_at, switch_and_wait, wal_dir, write_wal_job,
};

/// A snapshot job with WAL archiving; `extra` goes into its table.
fn write_config(setup: &Setup, extra: &str) {
    write_wal_job(setup, extra, "");
}

/// pgbench against `pg` in the background: `args` after the connection.
fn pgbench(pg: &PgCluster, args: &[&str]) -> Child {
    Command::new(pg.bin().join("pgbench"))
        .arg("-h")
        .arg(pg.socket_dir())
        .args(["-p", &pg.port.to_string(), "-U", "postgres", "-n"])
        .args(args)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgbench")
}

/// Inserts batch `n` (rows n*1000+1 ..= n*1000+1000) into `t`, then a few
/// pgbench transactions, one after the other: the source is quiet when
/// this returns.
fn batch(pg: &PgCluster, n: i64) {
    insert_batch(pg, n);
    let ok = pgbench(pg, &["-c", "1", "-t", "30"]).wait().unwrap();
    assert!(ok.success(), "pgbench -t 30");
}

/// Both databases of the source, by the oracle.
fn images(pg: &PgCluster) -> (DbImage, DbImage) {
    (image(pg, "postgres"), image(pg, "shop"))
}

/// `offsite restore db --to-dir … ARGS` into a fresh server-owned folder,
/// started, once its replay paused at the target.
fn restore_paused(setup: &Setup, args: &[&str]) -> (tempfile::TempDir, PgCluster) {
    let dir = server_owned_tempdir();
    let data = dir.path().join("data");
    let mut all = vec!["restore", "db", "--to-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let (c, log) = setup.offsite(&all);
    assert_eq!(c, 0, "{args:?}: {log}");
    let restored = PgCluster::start_existing(&data, SUPERUSER_PASSWORD);
    wait_for(
        &format!("replay paused at {args:?}"),
        Duration::from_secs(180),
        || {
            let s = restored.try_psql("postgres", "SELECT pg_get_wal_replay_pause_state()");
            match s {
                Ok(s) if s.trim() == "paused" => Some(()),
                _ => None,
            }
        },
    );
    (dir, restored)
}

fn rows_of_t(pg: &PgCluster) -> (i64, i64, i64) {
    let r = pg.psql(
        "postgres",
        "SELECT count(*), coalesce(min(x), 0), coalesce(max(x), 0) FROM t",
    );
    let v: Vec<i64> = r.trim().split('|').map(|s| s.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

/// Panics naming the database and the first difference.
fn assert_images(what: &str, got: &DbImage, want: &DbImage) {
    assert!(!want.data.is_empty(), "{what}: the source has no tables");
    assert!(
        got.schema == want.schema,
        "{what}: pg_dump --schema-only differs"
    );
    assert_eq!(got.catalog, want.catalog, "{what}: catalog rows");
    assert_eq!(got.data, want.data, "{what}: table checksums");
}

/// The WAL position a `.backup` history file's name gives:
/// `<timeline><log><seg>.<offset>.backup`, 16 MiB segments.
fn backup_file_start(name: &str) -> String {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let off = u64::from_str_radix(&name[25..33], 16).unwrap();
    let lsn = (log << 32) + (seg << 24) + off;
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn backup_files(setup: &Setup) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(wal_dir(setup))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| n.ends_with(".backup"))
        .collect();
    v.sort();
    v
}

/// The shape of PostgreSQL's src/test/recovery/t/003_recovery_targets.pl,
/// with a pgbench load running while the snapshot is taken and a "hard"
/// second database: batches of 1000 rows, with a time, an LSN and a named
/// restore point recorded between them, and the source's schema, catalog
/// rows and table checksums taken at each mark. Each restore must be the
/// source at its target by that oracle. A restored copy promoted onto
/// timeline 2 archives into the same WAL store (its configuration is the
/// source's): later restores to points of timeline 1 past that branch must
/// still follow timeline 1. A target inside the snapshot's own backup
/// window (before it is consistent) is refused up front.
#[test]
fn pitr_under_load_is_the_source_at_each_target_by_the_fidelity_oracle() {
    let setup = Setup::new(&[]);
    write_config(&setup, "");
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    hard_database(&pg, "shop");
    pg.run_client("pgbench", &["-i", "-s", "5", "-q", "postgres"]);
    pg.psql("postgres", "CREATE TABLE t (x int)");
    let mut load = pgbench(&pg, &["-c", "2", "-T", "12"]);
    setup.run_ok("db");
    assert!(load.wait().unwrap().success(), "pgbench load");
    let shop = image(&pg, "shop");

    // The range recorded at snapshot time is PostgreSQL's own.
    let m = &setup.manifests("db")[0];
    let w = &m["snapshot_wal"];
    assert_eq!(w["timeline"], 1, "{m}");
    let backups = backup_files(&setup);
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        w["start_lsn"].as_str().unwrap(),
        backup_file_start(&backups[0]),
        "start of {m} vs {backups:?}"
    );
    let end: offsite::wal::name::Lsn = w["end_lsn"].as_str().unwrap().parse().unwrap();
    let start: offsite::wal::name::Lsn = w["start_lsn"].as_str().unwrap().parse().unwrap();
    assert!(end > start, "{w}");

    batch(&pg, 0);
    let time = pg.psql("postgres", "SELECT now()").trim().to_string();
    let at_time = images(&pg);
    batch(&pg, 1);
    let lsn = pg
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .trim()
        .to_string();
    let at_lsn = images(&pg);
    batch(&pg, 2);
    pg.psql(
        "postgres",
        "SELECT pg_create_restore_point('after-batch-3')",
    );
    let at_name = images(&pg);
    batch(&pg, 3);
    switch_and_wait(&pg);

    // To the time; then promote that copy: it archives 00000002.history
    // and timeline 2's WAL into the job's store.
    {
        let (_dir, restored) = restore_paused(&setup, &["--to-time", &time]);
        assert_eq!(rows_of_t(&restored), (1000, 1, 1000));
        let got = images(&restored);
        assert_images("postgres at the time", &got.0, &at_time.0);
        assert_images("shop at the time", &got.1, &at_time.1);
        restored.psql("postgres", "SELECT pg_promote()");
        wait_for("timeline 2 archived", Duration::from_secs(60), || {
            wal_dir(&setup)
                .join("00000002.history.json")
                .exists()
                .then_some(())
        });
        restored.psql("postgres", "INSERT INTO t VALUES (-2)");
        switch_and_wait(&restored);
    }
    for (args, want, rows, what) in [
        (
            vec!["--to-lsn", lsn.as_str()],
            &at_lsn,
            (2000, 1, 2000),
            "lsn",
        ),
        (
            vec!["--to-name", "after-batch-3"],
            &at_name,
            (3000, 1, 3000),
            "name",
        ),
    ] {
        let (_dir, restored) = restore_paused(&setup, &args);
        assert_eq!(rows_of_t(&restored), rows, "{what}");
        let timeline = restored.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()",
        );
        assert_eq!(timeline.trim(), "1", "{what}: stays on timeline 1");
        let got = images(&restored);
        assert_images(&format!("postgres at the {what}"), &got.0, &want.0);
        assert_images(&format!("shop at the {what}"), &got.1, &want.1);
    }
    // As soon as consistent: no batch yet; shop did not change at all.
    let (_dir, restored) = restore_paused(&setup, &["--immediate"]);
    assert_eq!(rows_of_t(&restored), (0, 0, 0));
    assert_images("shop at consistency", &image(&restored, "shop"), &shop);
    drop(restored);

    // Inside the snapshot's backup window: PostgreSQL could not be
    // consistent there ("requested recovery stop point is before
    // consistent recovery point"); refused before anything is written.
    let dir = server_owned_tempdir();
    let data = dir.path().join("data");
    let inside = offsite::wal::name::Lsn(start.0 + (end.0 - start.0) / 2).to_string();
    let (c, log) = setup.offsite(&[
        "restore",
        "db",
        "--to-dir",
        data.to_str().unwrap(),
        "--to-lsn",
        &inside,
    ]);
    assert_ne!(c, 0, "{log}");
    assert!(
        log.contains("no good snapshot precedes the target") && log.contains(&end.to_string()),
        "{log}"
    );
    assert!(!data.exists());
}

/// `pg_controldata`'s "Minimum recovery ending location" of a stopped
/// data directory.
fn min_recovery_end(pg: &PgCluster, data: &Path) -> offsite::wal::name::Lsn {
    let out = Command::new(pg.bin().join("pg_controldata"))
        .arg(data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Minimum recovery ending location:"))
        .unwrap_or_else(|| panic!("{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn entries_of(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Seed 004's restore verification of a WAL job: the snapshot is restored,
/// the archived WAL replayed onto it by a PostgreSQL started for the
/// purpose (which archives nothing), and the result kept as a hot backup
/// that is brought forward by the next snapshot. Started later, the hot
/// backup replays what was archived since and is the source by the
/// fidelity oracle. A damaged archived segment fails the verification with
/// its name.
#[test]
fn verify_restore_replays_the_archive_keeps_a_hot_backup_and_names_a_damaged_segment() {
    let setup = Setup::new(&[]);
    let hot = setup.root().join("hot/db");
    write_config(
        &setup,
        &format!("verify = \"restore\"\nhot_backup = \"{}\"", hot.display()),
    );
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    hard_database(&pg, "shop");
    pg.run_client("pgbench", &["-i", "-s", "3", "-q", "postgres"]);
    let mut load = pgbench(&pg, &["-c", "2", "-T", "8"]);
    let out = setup.run_ok("db");
    assert!(load.wait().unwrap().success());
    let m = &setup.manifests("db")[0];
    assert_eq!(m["health"], "good", "{m}\n{out}");
    let v = m["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["method"] == "restore")
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(v["ok"], true, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("archived WAL segments replayed") && detail.contains("tables of"),
        "{detail}"
    );
    assert!(hot.join("PG_VERSION").exists(), "{detail}");
    assert!(hot.join("recovery.signal").exists());
    let first = min_recovery_end(&pg, &hot);
    // The scratch server archived nothing (no new timeline in the store)
    // and left nothing behind.
    let store = entries_of(&wal_dir(&setup));
    assert!(!store.iter().any(|n| n.contains(".history")), "{store:?}");
    for d in [setup.job_dir("db"), hot.parent().unwrap().to_path_buf()] {
        let left: Vec<String> = entries_of(&d)
            .into_iter()
            .filter(|n| n.starts_with(".offsite-replay-"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", d.display());
    }

    // The next snapshot brings the hot backup forward.
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g",
    );
    switch_and_wait(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    setup.run_ok("db");
    let second = min_recovery_end(&pg, &hot);
    assert!(second > first, "{second} > {first}");

    // Started, it replays what was archived since and is the source.
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g FROM generate_series(5001, 6000) g",
    );
    pg.psql("shop", "DELETE FROM billing.cdr WHERE id % 7 = 0");
    let want = images(&pg);
    switch_and_wait(&pg);

    // One archived segment damaged: verify names it.
    let last = switch_and_wait(&pg);
    let stored = wal_dir(&setup).join(format!("{last}.zst"));
    let mut b = std::fs::read(&stored).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    std::fs::write(&stored, &b).unwrap();
    let (c, log) = setup.offsite(&["verify", "db"]);
    assert_ne!(c, 0, "{log}");
    assert!(log.contains(&last), "{last} not named: {log}");
    b[mid] ^= 0x20;
    std::fs::write(&stored, &b).unwrap();

    let copy = server_owned_tempdir();
    let data = copy.path().join("data");
    let o = Command::new("cp")
        .arg("-a")
        .arg(&hot)
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success());
    let started = PgCluster::start_existing(&data, SUPERUSER_PASSWORD);
    wait_for("the hot backup promoted", Duration::from_secs(120), || {
        let r = started
            .try_psql("postgres", "SELECT pg_is_in_recovery()")
            .ok()?;
        (r.trim() == "f").then_some(())
    });
    let got = images(&started);
    assert_images("postgres from the hot backup", &got.0, &want.0);
    assert_images("shop from the hot backup", &got.1, &want.1);
}
