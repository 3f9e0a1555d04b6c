//! Continuous WAL archiving against real PostgreSQL 15 clusters:
//! `offsite wal-push` as the server's archive_command, `offsite wal-fetch`
//! with restore_command's exit-code rules. The oracles are the server's own
//! files (pg_wal), its own reports (pg_stat_archiver, pg_control_system) and
//! its own WAL reader (pg_waldump).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use offsite::wal::name::Lsn;
use offsite::wal::segment::{check_name, read_header, summarize};
use offsite_tests::jobs::{Setup, entries};
use offsite_tests::postgres::PgCluster;
use offsite_tests::sinks::HttpSink;
use offsite_tests::tmpfs::Tmpfs;
use offsite_tests::wal::{
    archiving_cluster, assert_absent, assert_fetched_identical, give_to_server, insert_batch,
    point_at, separate_initdb, switch_and_wait, system_identifier, wait_archived, wal_dir,
    write_wal_job,
};

/// The job every test archives into; `extra` goes into its table.
fn write_config(setup: &Setup, extra: &str, notifiers: &str) {
    write_wal_job(setup, extra, notifiers);
}

/// A Setup with the webhook plugin, a sink, and the `[notifiers.ops]`
/// table that posts to it.
fn with_webhook() -> (HttpSink, Setup, String) {
    let sink = HttpSink::start();
    let setup = Setup::new(&["offsite_webhook"]);
    let notifier = format!(
        "[notifiers.ops]\nplugin = \"webhook\"\nurl = \"{}\"\n",
        sink.url("/hook")
    );
    (sink, setup, notifier)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// pg_waldump's view of the records starting in one segment: (LSN, desc).
fn waldump(pg: &PgCluster, seg_start: Lsn, seg_end: Lsn) -> Vec<(Lsn, String)> {
    let out = Command::new(pg.bin().join("pg_waldump"))
        .arg("-p")
        .arg(pg.data_dir().join("pg_wal"))
        .arg("-s")
        .arg(seg_start.to_string())
        .arg("-e")
        .arg(seg_end.to_string())
        .output()
        .expect("pg_waldump");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let lsn = l.split("lsn: ").nth(1)?.split(',').next()?;
            let desc = l.split("desc: ").nth(1).unwrap_or("").to_string();
            Some((lsn.parse().ok()?, desc))
        })
        .collect()
}

#[test]
fn segment_header_and_records_agree_with_the_server_and_pg_waldump() {
    let pg = PgCluster::start_with("wal_keep_size = '1GB'\nwal_recycle = off");
    pg.psql("postgres", "CREATE TABLE t (x int)");
    for batch in 0..3 {
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO t SELECT g FROM generate_series({0}, {0} + 999) g",
                batch * 1000
            ),
        );
    }
    let rp_end: Lsn = pg
        .psql(
            "postgres",
            "SELECT pg_create_restore_point('before-batch-4')",
        )
        .trim()
        .parse()
        .unwrap();
    pg.psql("postgres", "INSERT INTO t VALUES (-1)");
    let name = pg
        .psql("postgres", &format!("SELECT pg_walfile_name('{rp_end}')"))
        .trim()
        .to_string();
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let bytes = read(&pg.data_dir().join("pg_wal").join(&name));

    let h = read_header(&bytes).unwrap();
    assert_eq!(h.system_identifier, system_identifier(&pg));
    assert_eq!(h.segment_size, 16 << 20);
    assert_eq!(h.page_size, 8192);
    let id = check_name(&name, &h, bytes.len()).unwrap();
    assert_eq!(id.timeline, 1);

    let s = summarize(&bytes, &h);
    let seg_end = Lsn(h.page_addr.0 + (16 << 20));
    let dump = waldump(&pg, h.page_addr, seg_end);
    assert!(!dump.is_empty(), "pg_waldump read nothing");
    assert_eq!(s.records as usize, dump.len(), "records starting in {name}");
    assert_eq!(s.last_record, dump.last().map(|d| d.0));
    assert!(s.switched, "{name} ends with pg_switch_wal");
    let rps: Vec<(Lsn, String)> = dump
        .iter()
        .filter(|(_, d)| d.starts_with("RESTORE_POINT"))
        .cloned()
        .collect();
    assert_eq!(rps.len(), 1, "{rps:?}");
    assert_eq!(s.restore_points.len(), 1);
    assert_eq!(s.restore_points[0].name, "before-batch-4");
    assert_eq!(s.restore_points[0].lsn, rps[0].0);
    assert!(s.restore_points[0].lsn < rp_end);
    let commits = dump.iter().filter(|(_, d)| d.starts_with("COMMIT")).count();
    assert!(commits >= 4, "{commits} commits in {dump:?}");
    let (first, last) = (s.first_xact_us.unwrap(), s.last_xact_us.unwrap());
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    // The first commit may be initdb's (the harness copies one template).
    assert!(first <= last, "{first} {last}");
    assert!(
        last <= now_us && now_us - last < 120_000_000,
        "{last} vs now {now_us}"
    );
}

#[test]
fn wal_push_archives_each_segment_and_wal_fetch_returns_it_with_restore_command_exit_codes() {
    let setup = Setup::new(&[]);
    write_config(&setup, "", "");
    let pg = archiving_cluster(&setup, "db", "");
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    let names: Vec<String> = (0..3).map(|_| switch_and_wait(&pg)).collect();
    let out = setup.dir("fetched");
    let cluster: serde_json::Value =
        serde_json::from_slice(&read(&wal_dir(&setup).join("cluster.json"))).unwrap();
    assert_eq!(cluster["system_identifier"], system_identifier(&pg));
    for n in &names {
        assert_fetched_identical(&setup, &pg, n, &out.join(n));
    }
    // Positively absent: 1, and nothing written.
    for absent in ["0000000100000000000000FE", "00000002.history"] {
        assert_absent(&setup, absent, &out.join(absent));
    }
    // A damaged archive is not "absent": PostgreSQL must stop, not promote.
    let stored = wal_dir(&setup).join(format!("{}.zst", names[0]));
    let mut b = read(&stored);
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&stored, b).unwrap();
    let to = out.join("damaged");
    let (c, log) = setup.offsite(&["wal-fetch", "db", &names[0], to.to_str().unwrap()]);
    assert_eq!(c, 200, "{log}");
    assert!(log.contains("damaged"), "{log}");
    assert!(!to.exists());
    // So is a config that cannot be read, or a restore_command typo.
    let missing = setup.root().join("nope.toml");
    let (c, _) = setup.offsite_with(&missing, &["wal-fetch", "db", &names[1], "x"]);
    assert_eq!(c, 200);
    let (c, _) = setup.offsite(&["wal-fetch", "db", &names[1]]);
    assert_eq!(c, 200);
    let (c, _) = setup.offsite(&["wal-fetch", "nojob", &names[1], "x"]);
    assert_eq!(c, 200);
}

#[test]
fn a_segment_pushed_twice_is_one_copy_and_a_changed_one_is_refused_with_a_notice() {
    let (sink, setup, notifier) = with_webhook();
    write_config(&setup, "notifiers = [\"ops\"]", &notifier);
    let pg = archiving_cluster(&setup, "db", "");
    let name = switch_and_wait(&pg);
    let original = pg.data_dir().join("pg_wal").join(&name);
    let stored = wal_dir(&setup).join(format!("{name}.zst"));
    let before = read(&stored);
    // The archiver pushed it once; the same bytes again succeed.
    let (c, log) = setup.offsite(&["wal-push", "db", original.to_str().unwrap()]);
    assert_eq!(c, 0, "{log}");
    assert_eq!(read(&stored), before);
    let copies = entries(&wal_dir(&setup))
        .iter()
        .filter(|n| n.starts_with(name.as_str()))
        .count();
    assert_eq!(copies, 2, "one data file and one entry");
    // Same name, one byte different (past the page header).
    let other = setup.dir("other").join(&name);
    let mut b = read(&original);
    b[3 * 8192 + 100] ^= 1;
    std::fs::write(&other, b).unwrap();
    let (c, log) = setup.offsite(&["wal-push", "db", other.to_str().unwrap()]);
    assert_ne!(c, 0, "{log}");
    assert!(log.contains("different content"), "{log}");
    assert_eq!(read(&stored), before, "the archived copy is kept");
    let got = sink.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["kind"], "failure");
    assert!(body["detail"].as_str().unwrap().contains(&name), "{body}");
    // And a segment of another cluster: both identifiers named.
    let (_keep, data) = separate_initdb();
    let foreign_seg = data.join("pg_wal/000000010000000000000001");
    let foreign = read_header(&read(&foreign_seg)).unwrap().system_identifier;
    let (c, log) = setup.offsite(&["wal-push", "db", foreign_seg.to_str().unwrap()]);
    assert_ne!(c, 0, "{log}");
    let ours = system_identifier(&pg);
    assert_ne!(foreign, ours);
    assert!(
        log.contains(&foreign.to_string()) && log.contains(&ours.to_string()),
        "{log}"
    );
}

#[test]
fn a_full_wal_store_fails_the_push_keeps_the_segment_ready_and_archives_it_when_space_returns() {
    let setup = Setup::new(&[]);
    let store = setup.root().join("walfs");
    write_config(&setup, &format!("wal_dir = \"{}\"", store.display()), "");
    let fs = Tmpfs::mount(&store, "12m");
    give_to_server(&store);
    let pg = archiving_cluster(&setup, "db", "archive_timeout = 0");
    // md5 text compresses to about half: ~64 MiB of WAL needs ~30 MiB.
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g+1)::text) AS v FROM generate_series(1, 600000) g",
    );
    let last = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .trim()
        .to_string();
    let stuck = offsite_tests::jobs::wait_for("a failed push", Duration::from_secs(60), || {
        let r = pg.psql(
            "postgres",
            "SELECT failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        );
        let (n, wal) = r.trim().split_once('|')?;
        (n.parse::<u32>().ok()? > 0).then(|| wal.to_string())
    });
    assert!(
        !store.join(format!("{stuck}.zst")).exists(),
        "nothing under the final name"
    );
    assert!(!store.join(format!("{stuck}.json")).exists());
    let temporaries: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
    let status = pg
        .data_dir()
        .join(format!("pg_wal/archive_status/{stuck}.ready"));
    assert!(status.exists(), "PostgreSQL keeps {stuck} ready");
    fs.resize("200m");
    wait_archived(&pg, &last, Duration::from_secs(120));
    let to = setup.dir("fetched").join(&stuck);
    let (c, log) = setup.offsite(&["wal-fetch", "db", &stuck, to.to_str().unwrap()]);
    assert_eq!(c, 0, "{log}");
    assert!(read(&to) == read(&pg.data_dir().join("pg_wal").join(&stuck)));
}

/// Rows of `t` in a restored server, once its replay paused at the target.
fn rows_at_target(setup: &Setup, args: &[&str]) -> (i64, i64, i64) {
    let dir = offsite_tests::postgres::server_owned_tempdir();
    let data = dir.path().join("data");
    let mut all = vec!["restore", "db", "--to-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let (c, log) = setup.offsite(&all);
    assert_eq!(c, 0, "{log}");
    let signal = data.join("recovery.signal");
    assert!(signal.exists());
    let restored = PgCluster::start_existing(&data, offsite_tests::postgres::SUPERUSER_PASSWORD);
    offsite_tests::jobs::wait_for(
        "replay paused at the target",
        Duration::from_secs(120),
        || {
            let s = restored.psql("postgres", "SELECT pg_get_wal_replay_pause_state()");
            (s.trim() == "paused").then_some(())
        },
    );
    let r = restored.psql(
        "postgres",
        "SELECT count(*), coalesce(min(x), 0), coalesce(max(x), 0) FROM t",
    );
    let v: Vec<i64> = r.trim().split('|').map(|s| s.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

/// The shape of PostgreSQL's src/test/recovery/t/003_recovery_targets.pl:
/// batches of 1000 rows with a time, an LSN and a named restore point
/// recorded between them, a pgbench load running while the snapshot is
/// taken; each restore shows exactly the batches committed before its
/// target. Targets the archive cannot reach, and times without a zone, are
/// refused before anything is written.
#[test]
fn point_in_time_recovery_to_time_lsn_name_and_immediate() {
    let setup = Setup::new(&[]);
    write_config(&setup, "", "");
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    pg.run_client("pgbench", &["-i", "-s", "5", "-q", "postgres"]);
    pg.psql("postgres", "CREATE TABLE t (x int)");
    let mut load = Command::new(pg.bin().join("pgbench"))
        .arg("-h")
        .arg(pg.socket_dir())
        .args([
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-n",
            "-c",
            "2",
            "-T",
            "20",
            "postgres",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbench");
    setup.run_ok("db");
    let batch = |n: i64| insert_batch(&pg, n);
    batch(0);
    let time = pg.psql("postgres", "SELECT now()").trim().to_string();
    batch(1);
    let lsn = pg
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .trim()
        .to_string();
    batch(2);
    pg.psql(
        "postgres",
        "SELECT pg_create_restore_point('after-batch-3')",
    );
    batch(3);
    assert!(load.wait().unwrap().success(), "pgbench load");
    switch_and_wait(&pg);

    assert_eq!(
        rows_at_target(&setup, &["--to-time", &time]),
        (1000, 1, 1000)
    );
    assert_eq!(rows_at_target(&setup, &["--to-lsn", &lsn]), (2000, 1, 2000));
    assert_eq!(
        rows_at_target(&setup, &["--to-name", "after-batch-3"]),
        (3000, 1, 3000)
    );
    assert_eq!(rows_at_target(&setup, &["--immediate"]), (0, 0, 0));

    // Refused up front, nothing written.
    let refused = |args: &[&str], why: &str| {
        let dir = offsite_tests::postgres::server_owned_tempdir();
        let data = dir.path().join("data");
        let mut all = vec!["restore", "db", "--to-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let (c, log) = setup.offsite(&all);
        assert_ne!(c, 0, "{args:?}: {log}");
        assert!(log.contains(why), "{args:?}: {log}");
        assert!(!data.exists(), "{args:?} wrote {}", data.display());
    };
    refused(
        &["--to-time", "2099-01-01 00:00:00+00"],
        "past the end of the archive",
    );
    refused(&["--to-lsn", "FF/0"], "past the end of the archive");
    refused(
        &["--to-name", "never-made"],
        "no restore point named `never-made`",
    );
    refused(&["--to-time", "2026-01-01 00:00:00"], "no time zone");
    refused(
        &["--to-time", "2000-01-01 00:00:00+00"],
        "no good snapshot precedes the target",
    );
}

/// Segment names in the store, in WAL order.
fn stored_segments(setup: &Setup) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(wal_dir(setup))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// PostgreSQL archives a backup history file (`<segment>.<offset>.backup`)
/// when a base backup ends: its segment is where the newest snapshot starts.
fn newest_backup_start(setup: &Setup) -> String {
    let mut v: Vec<String> = std::fs::read_dir(wal_dir(setup))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".backup.json"))
        .collect();
    v.sort();
    v.pop().expect("a backup history file is archived")[..24].to_string()
}

#[test]
fn wal_retention_follows_the_oldest_kept_snapshot_and_list_shows_the_window() {
    let setup = Setup::new(&[]);
    write_config(&setup, "keep = 1", "");
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    let early: Vec<String> = (0..2).map(|_| switch_and_wait(&pg)).collect();
    setup.run_ok("db");
    switch_and_wait(&pg);
    let a_start = newest_backup_start(&setup);
    assert_eq!(
        stored_segments(&setup)[0],
        a_start,
        "WAL before the only snapshot goes"
    );
    for n in &early {
        assert!(*n < a_start, "{n} precedes snapshot A");
    }
    for _ in 0..2 {
        switch_and_wait(&pg);
    }
    setup.run_ok("db");
    let last = switch_and_wait(&pg);
    let b_start = newest_backup_start(&setup);
    assert!(b_start > a_start);
    let segs = stored_segments(&setup);
    assert_eq!(
        segs[0], b_start,
        "snapshot A is rotated away, and the WAL only it needed"
    );
    assert_eq!(segs.last().unwrap(), &last);
    // Unbroken from B's start to the last archived segment.
    let first = u64::from_str_radix(&b_start[16..], 16).unwrap();
    let end = u64::from_str_radix(&last[16..], 16).unwrap();
    assert_eq!(segs.len() as u64, end - first + 1, "{segs:?}");
    let j = setup.list_json("db");
    let wal = &j[0]["wal"];
    assert_eq!(wal["gaps"].as_array().unwrap().len(), 0, "{wal}");
    assert!(wal["earliest"].is_array(), "{wal}");
    let (c, out) = setup.offsite(&["list", "db"]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("recovery window"), "{out}");
}

#[test]
fn a_filling_wal_store_sends_wal_lag_notices_before_it_is_full() {
    let (sink, setup, notifier) = with_webhook();
    write_config(
        &setup,
        "notifiers = [\"ops\"]\nwal_store_limit = \"64MiB\"",
        &notifier,
    );
    let pg = archiving_cluster(&setup, "db", "");
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g+1)::text) AS v FROM generate_series(1, 900000) g",
    );
    switch_and_wait(&pg);
    let notices: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| r.json()["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        notices
            .iter()
            .any(|d| d.starts_with("wal-lag") && d.contains("over 50%")),
        "{notices:?}"
    );
    assert_eq!(
        notices.iter().filter(|d| d.contains("over 50%")).count(),
        1,
        "a mark is sent once: {notices:?}"
    );
}
