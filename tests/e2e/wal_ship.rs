//! WAL beyond the local store (issue 17, part A), against real servers on
//! 127.0.0.1: a PostgreSQL 15 cluster archiving through `offsite wal-push`,
//! `offsite daemon` shipping the archive to a local-dir destination and to
//! moto (S3) behind a relay that logs every request, and `offsite wal-fetch`
//! reading it back from there with restore_command's exit-code rules. The
//! oracles are the server's own files (pg_wal), the objects moto holds, the
//! requests that reached it, and a restored server's rows and its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use offsite_tests::jobs::{Setup, wait_for};
use offsite_tests::postgres::PgCluster;
use offsite_tests::s3::{Mischief, Moto, Relay};
use offsite_tests::sinks::HttpSink;
use offsite_tests::wal::{
    archiving_cluster, assert_absent, assert_fetched_identical, give_to_server, point_at,
    switch_and_wait, wal_dir, write_wal_job,
};

/// moto behind a logging relay, with the bucket `wal`.
struct S3 {
    moto: Moto,
    relay: Relay,
}

impl S3 {
    fn start() -> S3 {
        let moto = Moto::start();
        moto.create_bucket("wal");
        let relay = Relay::start(moto.port, Mischief::Nothing);
        S3 { moto, relay }
    }

    /// "METHOD target" of each request so far.
    fn lines(&self) -> Vec<String> {
        self.relay.log.lines.lock().unwrap().clone()
    }

    /// PUTs of objects whose key contains `part`.
    fn puts_of(&self, part: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("PUT ") && l.contains(part))
            .count()
    }

    /// Keys under `pg/` of the bucket.
    fn keys(&self) -> Vec<String> {
        self.moto
            .objects("wal", "pg/")
            .into_iter()
            .map(|(k, _, _)| k)
            .collect()
    }

    /// SIGSTOP / SIGCONT: a server that hangs, and comes back.
    fn signal(&self, sig: &str) {
        let o = Command::new("kill")
            .args([sig, &self.moto.pid().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill {sig}");
    }
}

/// The config: a local-dir destination `nas`, the S3 destination `s3`,
/// the webhook notifier `ops` posting to `sink`, and job `db` archiving
/// WAL to both destinations. `runner` goes into `[runner]`, `extra` into
/// the job's table.
fn write_config(setup: &Setup, s3: &S3, sink: &HttpSink, runner: &str, extra: &str) -> PathBuf {
    let nas = setup.dir("nas");
    let tables = format!(
        "{runner}\n[notifiers.ops]\nplugin = \"webhook\"\nurl = \"{}\"\n\n\
         [destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n\n\
         [destinations.s3]\nplugin = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         bucket = \"wal\"\nprefix = \"pg/\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
        sink.url("/hook"),
        nas.display(),
        s3.relay.endpoint()
    );
    let job = format!("destinations = [\"nas\", \"s3\"]\nnotifiers = [\"ops\"]\n{extra}");
    write_wal_job(setup, &job, &tables);
    nas
}

/// moto, a webhook sink, a fresh [`Setup`] and its config by
/// [`write_config`] (`runner` and `extra` as there), `nas` its folder.
struct Rig {
    setup: Setup,
    nas: PathBuf,
    sink: HttpSink,
    s3: S3,
}

fn rig(runner: &str, extra: &str) -> Rig {
    let s3 = S3::start();
    let sink = HttpSink::start();
    let setup = new_setup();
    let nas = write_config(&setup, &s3, &sink, runner, extra);
    Rig {
        setup,
        nas,
        sink,
        s3,
    }
}

fn new_setup() -> Setup {
    Setup::new(&["offsite_local_dir", "offsite_s3", "offsite_webhook"])
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// What the job's state file says `dest` confirmed.
fn confirmed(setup: &Setup, dest: &str) -> Vec<String> {
    let p = wal_dir(setup).join(format!("shipped/{dest}.json"));
    let Ok(b) = std::fs::read(&p) else {
        return vec![];
    };
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    v["confirmed"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The archived files of the local store, in WAL order.
fn archived(setup: &Setup) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(wal_dir(setup))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| n != "cluster")
        .collect();
    v.sort();
    v
}

/// `offsite daemon` in the background; SIGTERM and wait on drop.
struct Daemon {
    child: Child,
    out: PathBuf,
}

impl Daemon {
    fn start(setup: &Setup) -> Daemon {
        let out = setup.root().join("daemon.out");
        let f = std::fs::File::create(&out).unwrap();
        let child = setup
            .command(&["daemon"])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("offsite daemon");
        Daemon { child, out }
    }

    /// What it logged so far (for failure messages).
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .output();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until both destinations confirmed every archived file.
fn wait_shipped(setup: &Setup, limit: Duration) -> Vec<String> {
    wait_for("every archived WAL file shipped", limit, || {
        let all = archived(setup);
        (["nas", "s3"].iter().all(|d| confirmed(setup, d) == all)).then_some(all)
    })
}

/// Shipping runs behind the push: the daemon carries every archived file
/// to both destinations, in WAL order, data before its entry. A segment
/// pushed again with the same content is one copy locally and one upload
/// (counted on the wire); wal-fetch, with the local store gone, reads the
/// files back from the destinations byte for byte, and answers 1 only for
/// a file no destination has, 200 when a destination cannot answer or
/// serves damaged bytes.
#[test]
fn the_daemon_ships_wal_in_order_once_and_wal_fetch_reads_it_back_from_destinations() {
    let Rig {
        s3,
        sink: _sink,
        setup,
        nas,
    } = rig("stall_timeout = \"3s\"\n", "wal_prefetch = 0");
    let pg = archiving_cluster(&setup, "db", "");
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    let names: Vec<String> = (0..3).map(|_| switch_and_wait(&pg)).collect();
    let daemon = Daemon::start(&setup);
    let all = wait_shipped(&setup, Duration::from_secs(60));
    // The summary line follows the last confirmed file.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !setup.log().contains("WAL files to s3") {
        assert!(
            std::time::Instant::now() < until,
            "{}\n{}",
            setup.log(),
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in &names {
        assert!(all.contains(n), "{n} archived: {all:?}");
        assert!(nas.join(format!("db-wal-{n}.zst")).exists());
        assert!(nas.join(format!("db-wal-{n}.json")).exists());
    }
    // In WAL order, each file's data before its entry.
    let puts: Vec<String> = s3
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("PUT "))
        .collect();
    let order: Vec<String> = puts
        .iter()
        .filter_map(|l| {
            l.split("db-wal-")
                .nth(1)?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(order, all, "entries in WAL order: {puts:?}");
    for n in &all {
        let data = puts
            .iter()
            .position(|l| l.contains(&format!("db-wal-{n}.zst")));
        let entry = puts
            .iter()
            .position(|l| l.contains(&format!("db-wal-{n}.json")));
        assert!(data.is_some() && data < entry, "{n}: {puts:?}");
    }
    // Pushed again, same content: one copy, no second upload.
    let again = &names[1];
    let before = s3.puts_of(&format!("db-wal-{again}"));
    assert_eq!(before, 2, "data and entry, once");
    let nas_inode = std::fs::metadata(nas.join(format!("db-wal-{again}.zst"))).unwrap();
    let original = pg.data_dir().join("pg_wal").join(again);
    let (c, log) = setup.offsite(&["wal-push", "db", original.to_str().unwrap()]);
    assert_eq!(c, 0, "{log}");
    std::thread::sleep(Duration::from_secs(12)); // two ticks
    assert_eq!(s3.puts_of(&format!("db-wal-{again}")), before);
    let nas_after = std::fs::metadata(nas.join(format!("db-wal-{again}.zst"))).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(nas_inode.ino(), nas_after.ino(), "not copied again");
    assert_eq!(
        s3.keys()
            .iter()
            .filter(|k| k.contains(&format!("db-wal-{again}")))
            .count(),
        2
    );
    drop(daemon);

    // The local store gone: every file comes back from a destination.
    let out = setup.dir("fetched");
    give_to_server(setup.root());
    for f in std::fs::read_dir(wal_dir(&setup)).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    for n in &names {
        assert_fetched_identical(&setup, &pg, n, &out.join(n));
    }
    // Positively absent everywhere: 1, nothing written.
    let absent = "0000000100000000000000FE";
    assert_absent(&setup, absent, &out.join(absent));
    // WAL-E once placed an empty file for a failed prefetch and PostgreSQL
    // replayed it: junk in the prefetch folder is never served — the real
    // file is fetched again, and a name no destination has stays "absent".
    let pf = wal_dir(&setup).join("prefetch");
    std::fs::create_dir_all(&pf).unwrap();
    for n in [names[1].as_str(), absent] {
        std::fs::write(pf.join(format!("{n}.zst")), b"").unwrap();
        std::fs::write(
            pf.join(format!("{n}.json")),
            format!("{{\"name\":\"{n}\",\"kind\":\"segment\",\"size\":0,\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"stored_size\":0,\"stored_sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"pushed\":\"2026-01-01T00:00:00Z\"}}"),
        )
        .unwrap();
    }
    let to = out.join("again");
    let (c, log) = setup.offsite(&["wal-fetch", "db", &names[1], to.to_str().unwrap()]);
    assert_eq!(c, 0, "{log}");
    assert!(
        read(&to) == read(&pg.data_dir().join("pg_wal").join(&names[1])),
        "junk served"
    );
    assert_absent(&setup, absent, &out.join(absent));
    // nas lacks it, s3 hangs: not "absent" — 200, recovery must stop.
    std::fs::remove_file(nas.join(format!("db-wal-{}.zst", names[0]))).unwrap();
    std::fs::remove_file(nas.join(format!("db-wal-{}.json", names[0]))).unwrap();
    s3.signal("-STOP");
    let to = out.join("hung");
    let (c, log) = setup.offsite(&["wal-fetch", "db", &names[0], to.to_str().unwrap()]);
    s3.signal("-CONT");
    assert_eq!(c, 200, "{log}");
    assert!(!to.exists());
    // And the absent file with s3 hanging is not "absent" either.
    s3.signal("-STOP");
    let (c, log) = setup.offsite(&["wal-fetch", "db", absent, to.to_str().unwrap()]);
    s3.signal("-CONT");
    assert_eq!(c, 200, "{log}");
    // Damaged at the destination (a byte changed in place): 200, named.
    let key = format!("pg/db-wal-{}.zst", names[0]);
    s3.moto.admin(&["put", "wal", &key, "not a zstd frame"]);
    let (c, log) = setup.offsite(&["wal-fetch", "db", &names[0], to.to_str().unwrap()]);
    assert_eq!(c, 200, "{log}");
    assert!(log.contains("damaged"), "{log}");
    assert!(!to.exists());
}

/// The destination hangs while PostgreSQL keeps writing: pushes go on
/// locally (no segment stays .ready), one `wal-lag` notice arrives within
/// the set time and only one for the episode; once the server is back
/// everything reaches it, each file's first upload in WAL order.
#[test]
fn a_hung_destination_sends_one_wal_lag_notice_and_everything_ships_in_order_once_back() {
    let Rig {
        s3,
        sink,
        setup,
        nas: _nas,
    } = rig("stall_timeout = \"3s\"\n", "wal_lag = \"10s\"");
    let pg = archiving_cluster(&setup, "db", "");
    switch_and_wait(&pg);
    let daemon = Daemon::start(&setup);
    wait_shipped(&setup, Duration::from_secs(60));
    s3.signal("-STOP");
    let stopped_at = Instant::now();
    let mut written = vec![];
    for _ in 0..4 {
        written.push(switch_and_wait(&pg));
    }
    let ready = std::fs::read_dir(pg.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert_eq!(ready, 0, "pushes go on while the destination hangs");
    let lag_notices = || -> Vec<String> {
        sink.requests()
            .iter()
            .map(|r| r.json()["detail"].as_str().unwrap_or("").to_string())
            .filter(|d| d.starts_with("wal-lag") && d.contains("reached s3"))
            .collect()
    };
    let n = wait_for("a wal-lag notice", Duration::from_secs(60), || {
        let v = lag_notices();
        (!v.is_empty()).then_some(v)
    });
    let waited = stopped_at.elapsed();
    assert!(waited < Duration::from_secs(45), "notice after {waited:?}");
    assert!(n[0].contains(&written[0]), "{n:?}");
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(lag_notices().len(), 1, "one notice per episode");
    // nas is not held up by s3.
    let all = archived(&setup);
    assert_eq!(confirmed(&setup, "nas"), all);
    let marks = s3.lines().len();
    s3.signal("-CONT");
    let shipped = wait_shipped(&setup, Duration::from_secs(90));
    for w in &written {
        assert!(shipped.contains(w));
    }
    // Each file's first upload after the outage began, in WAL order.
    let lines = s3.lines();
    let mut firsts: Vec<String> = vec![];
    for l in &lines[marks.min(lines.len())..] {
        if let Some(n) = l
            .strip_prefix("PUT ")
            .and_then(|l| l.split("db-wal-").nth(1))
            .and_then(|n| n.strip_suffix(".zst"))
            && !firsts.iter().any(|f| f == n)
        {
            firsts.push(n.to_string());
        }
    }
    let mut sorted = firsts.clone();
    sorted.sort();
    assert_eq!(firsts, sorted, "{lines:?}");
    let keys = s3.keys();
    for w in &written {
        assert!(keys.contains(&format!("pg/db-wal-{w}.zst")), "{keys:?}");
        assert!(keys.contains(&format!("pg/db-wal-{w}.json")), "{keys:?}");
    }
    drop(daemon);
}

/// Rows of `t` (count, max) once the replay of `pg` paused at its target.
fn rows_at_pause(pg: &PgCluster) -> (i64, i64) {
    wait_for(
        "replay paused at the target",
        Duration::from_secs(180),
        || {
            let s = pg.psql("postgres", "SELECT pg_get_wal_replay_pause_state()");
            (s.trim() == "paused").then_some(())
        },
    );
    let r = pg.psql("postgres", "SELECT count(*), coalesce(max(x), 0) FROM t");
    let v: Vec<i64> = r.trim().split('|').map(|s| s.parse().unwrap()).collect();
    (v[0], v[1])
}

/// `offsite restore db --to-dir … --to-name end`, into a fresh folder.
fn restore_to_end(setup: &Setup) -> (tempfile::TempDir, PathBuf) {
    let dir = offsite_tests::postgres::server_owned_tempdir();
    let data = dir.path().join("data");
    let (c, log) = setup.offsite(&[
        "restore",
        "db",
        "--to-dir",
        data.to_str().unwrap(),
        "--to-name",
        "end",
    ]);
    assert_eq!(c, 0, "{log}");
    (dir, data)
}

/// Empties a folder's files (the local WAL store, a destination).
fn remove_files(dir: &Path) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// Point-in-time recovery with the local WAL store and the local-dir copy
/// gone, so every segment comes from moto: the target is reached (with
/// prefetch, whose folder is left bounded). Then the same restore with
/// moto stopped mid-recovery: wal-fetch exits 200, PostgreSQL's recovery
/// stops and does not promote (no new timeline, recovery.signal kept, the
/// server log says why); with moto back, the target is reached.
#[test]
fn recovery_from_moto_alone_reaches_the_target_and_stops_without_promoting_when_moto_is_cut() {
    let Rig {
        s3,
        sink: _sink,
        setup,
        nas,
    } = rig("stall_timeout = \"3s\"\n", "wal_prefetch = 3");
    // As an operator does: the WAL store made for the server's user.
    setup.dir("backups/db/wal");
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    pg.psql("postgres", "CREATE TABLE t (x int)");
    // The first snapshot before any WAL is archived: the run must not
    // make the WAL store (as root) before the server's first wal-push.
    setup.run_ok("db");
    const SEGMENTS: i64 = 16;
    for i in 0..SEGMENTS {
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
                i * 1000 + 1,
                i * 1000 + 1000
            ),
        );
        switch_and_wait(&pg);
    }
    pg.psql("postgres", "SELECT pg_create_restore_point('end')");
    pg.psql("postgres", "INSERT INTO t VALUES (-1)");
    switch_and_wait(&pg);
    {
        let _daemon = Daemon::start(&setup);
        wait_shipped(&setup, Duration::from_secs(120));
    }
    let (_a_dir, a_data) = restore_to_end(&setup);
    let (_b_dir, b_data) = restore_to_end(&setup);
    remove_files(&wal_dir(&setup));
    remove_files(&nas);
    give_to_server(setup.root());

    let a = PgCluster::start_existing(&a_data, offsite_tests::postgres::SUPERUSER_PASSWORD);
    assert_eq!(
        rows_at_pause(&a),
        (SEGMENTS * 1000, SEGMENTS * 1000),
        "{}",
        a.log()
    );
    assert!(a.log().contains("restored log file"), "{}", a.log());
    let left: Vec<String> = std::fs::read_dir(wal_dir(&setup).join("prefetch"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.len() <= 2 * 3,
        "prefetch holds at most wal_prefetch files ahead: {left:?}"
    );
    drop(a);

    // Cut mid-recovery: moto hangs once the server is consistent.
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config = config.replace("wal_prefetch = 3", "wal_prefetch = 0");
    std::fs::write(&setup.config, config).unwrap();
    let mut b = PgCluster::start_existing(&b_data, offsite_tests::postgres::SUPERUSER_PASSWORD);
    s3.signal("-STOP");
    let in_recovery = b.psql("postgres", "SELECT pg_is_in_recovery()");
    assert_eq!(in_recovery.trim(), "t");
    let b_pid = b_data.join("postmaster.pid");
    wait_for("recovery stopped", Duration::from_secs(120), || {
        (!b_pid.exists()).then_some(())
    });
    let log = b.log();
    b.stop();
    drop(b);
    s3.signal("-CONT");
    assert!(
        log.contains("restored log file"),
        "some WAL replayed first: {log}"
    );
    assert!(
        log.contains("could not restore file") && log.contains("exit code 200"),
        "{log}"
    );
    for promoted in ["selected new timeline ID", "archive recovery complete"] {
        assert!(!log.contains(promoted), "promoted: {log}");
    }
    assert!(b_data.join("recovery.signal").exists());
    assert!(!s3.keys().iter().any(|k| k.ends_with(".history.zst")));

    let b = PgCluster::start_existing(&b_data, offsite_tests::postgres::SUPERUSER_PASSWORD);
    assert_eq!(
        rows_at_pause(&b),
        (SEGMENTS * 1000, SEGMENTS * 1000),
        "{}",
        b.log()
    );
}

/// The segment where the newest snapshot starts: PostgreSQL archives a
/// backup history file (`<segment>.<offset>.backup`) when a base backup ends.
fn newest_backup_start(setup: &Setup) -> String {
    archived(setup)
        .into_iter()
        .filter(|n| n.ends_with(".backup"))
        .max()
        .expect("a backup history file is archived")[..24]
        .to_string()
}

/// WAL segments (24-hex names) a local-dir destination holds, sorted.
fn segments_at(nas: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(nas)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            n.strip_prefix("db-wal-")?
                .strip_suffix(".zst")
                .map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// WAL at a destination goes only once that destination's older snapshot
/// is gone: with keep = 1, the second run rotates snapshot A away at the
/// destination and then removes the WAL only A needed there; B's WAL stays
/// whole. Before any snapshot is there, nothing is removed.
#[test]
fn wal_at_a_destination_goes_only_after_its_older_snapshot_is_gone() {
    let Rig {
        s3,
        sink: _sink,
        setup,
        nas,
    } = rig("", "keep = 1");
    setup.dir("backups/db/wal");
    let pg = archiving_cluster(&setup, "db", "");
    point_at(&setup, &pg);
    let early: Vec<String> = (0..2).map(|_| switch_and_wait(&pg)).collect();
    {
        let _daemon = Daemon::start(&setup);
        wait_shipped(&setup, Duration::from_secs(60));
    }
    for n in &early {
        assert!(segments_at(&nas).contains(n), "no snapshot yet: {n} kept");
    }
    setup.run_ok("db");
    let a_start = newest_backup_start(&setup);
    for _ in 0..2 {
        switch_and_wait(&pg);
    }
    setup.run_ok("db");
    let b_start = newest_backup_start(&setup);
    assert!(b_start > a_start);
    let last = switch_and_wait(&pg);
    setup.run_ok("db");
    let c_start = newest_backup_start(&setup);
    let at_nas = segments_at(&nas);
    assert_eq!(
        at_nas[0], c_start,
        "WAL before the oldest snapshot at nas goes: {at_nas:?}"
    );
    assert!(
        last < c_start && !at_nas.contains(&last),
        "only B needed {last}: {at_nas:?}"
    );
    let first = u64::from_str_radix(&c_start[16..], 16).unwrap();
    let end = u64::from_str_radix(&at_nas.last().unwrap()[16..], 16).unwrap();
    assert_eq!(at_nas.len() as u64, end - first + 1, "unbroken: {at_nas:?}");
    for n in &at_nas {
        assert!(nas.join(format!("db-wal-{n}.json")).exists(), "{n}'s entry");
    }
    let confirmed_nas = confirmed(&setup, "nas");
    assert!(!confirmed_nas.iter().any(|n| n.len() == 24 && *n < c_start));
    // The same at moto.
    let keys = s3.keys();
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&format!("db-wal-{a_start}"))),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.contains(&format!("db-wal-{c_start}.zst"))),
        "{keys:?}"
    );

    // verify --remote judges the snapshot at nas with the WAL after it.
    let (code, out) = setup.offsite(&["verify", "db", "--remote", "nas"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("WAL from {c_start} at nas")), "{out}");
    // The snapshot's first archived segment lost at nas: named, with the
    // destination.
    let lost = at_nas[0].clone();
    std::fs::remove_file(nas.join(format!("db-wal-{lost}.zst"))).unwrap();
    let (code, out) = setup.offsite(&["verify", "db", "--remote", "nas"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("archived WAL missing at nas") && out.contains(&lost),
        "{out}"
    );
    // moto still has all of it.
    let (code, out) = setup.offsite(&["verify", "db", "--remote", "s3"]);
    assert_eq!(code, 0, "{out}");
}
