//! End-to-end tests of `offsite daemon`: the real binary, real files jobs
//! through the whole pipeline (dump, manifest, verify, shipping through the
//! local-dir plugin), driven by real time and real signals.
//!
//! - an `every 2s` job runs at that pace;
//! - SIGTERM lets a running job finish within `shutdown_grace`, or cancels
//!   it after the grace leaving no partial generation;
//! - SIGKILL + restart keeps weekly anchors and seed 004's interval rule, a
//!   missed weekly slot runs once, a disabled job nags once per 24 h, and a
//!   run cut short by SIGKILL leaves nothing behind after the restart;
//! - SIGHUP with a broken config keeps the old one, a fixed one is used;
//! - jobs never overlap themselves and run one at a time by default;
//! - an unreadable state file stops the daemon at start.
//!
//! Every daemon runs with `TZ=UTC`, so the test can reason about weekdays
//! without a time-zone database; the schedule's time-zone and DST rules are
//! covered by the unit tests in runner/src/schedule.rs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use offsite::store::{JobStore, UploadState};
use offsite_tests::jobs::runner_table_at;
use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};

/// Tests that measure time or burn CPU run one at a time, so a slow
/// compression in one does not skew the pace measured in another.
static TIMED: Mutex<()> = Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- harness

/// One daemon's world in a temp dir: plugins (local-dir), a "NAS" folder,
/// backups, state, log, data trees.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["plugins", "nas", "backups", "state", "data", "hooks"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy(
            wasm("offsite_local_dir"),
            root.join("plugins/local-dir.wasm"),
        )
        .unwrap();
        World { _tmp: tmp, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn config_path(&self) -> PathBuf {
        self.path("offsite.toml")
    }

    /// `[runner]` (plus `runner_extra`), the `nas` destination, then `jobs`.
    fn write_config(&self, runner_extra: &str, jobs: &str) {
        let r = self.root.display();
        let runner = runner_table_at(
            &self.path("backups"),
            &self.path("plugins"),
            &self.path("state"),
            &self.path("daemon.log"),
        );
        fs::write(
            self.config_path(),
            format!(
                "{runner}\
                 {runner_extra}\n\n\
                 [destinations.nas]\n\
                 plugin = \"local-dir\"\n\
                 path = \"{r}/nas\"\n\n\
                 {jobs}\n"
            ),
        )
        .unwrap();
    }

    /// A files job over `data/<tree>` shipped to `nas`.
    fn files_job(&self, name: &str, tree: &str, schedule: &str, extra: &str) -> String {
        format!(
            "[jobs.{name}]\n\
             source = \"files\"\n\
             paths = [\"{}\"]\n\
             schedule = \"{schedule}\"\n\
             keep = 100\n\
             destinations = [\"nas\"]\n\
             {extra}\n",
            self.path(&format!("data/{tree}")).display()
        )
    }

    /// A small tree: some text files, a binary one, a subfolder, a symlink.
    fn small_tree(&self, tree: &str) {
        let dir = self.path(&format!("data/{tree}"));
        fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..20 {
            fs::write(
                dir.join(format!("page{i}.txt")),
                format!("page {i}\n").repeat(200),
            )
            .unwrap();
        }
        fs::write(dir.join("sub/blob.bin"), pseudo_random_bytes(200_000, 7)).unwrap();
        std::os::unix::fs::symlink("page1.txt", dir.join("latest.txt")).unwrap();
    }

    /// A tree whose backup at zstd level 19 with one thread takes several
    /// seconds: ~8 MB of word salad, which compresses, but slowly.
    fn slow_tree(&self, tree: &str) {
        let dir = self.path(&format!("data/{tree}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("words.txt"), word_salad(8 << 20)).unwrap();
    }

    /// An executable shell script in `hooks/`.
    fn hook(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(&format!("hooks/{name}"));
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        self.path(&format!("backups/{job}"))
    }

    /// Complete generations (data file + manifest), oldest first.
    fn generations(&self, job: &str) -> Vec<offsite::store::Generation> {
        let mut g = JobStore::new(&self.path("backups"), job)
            .generations()
            .unwrap();
        g.sort_by_key(|g| g.manifest.started);
        g
    }

    fn state_json(&self) -> serde_json::Value {
        let p = self.path("state/schedule.json");
        serde_json::from_str(
            &fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}\nlog:\n{}", p.display(), self.log())),
        )
        .unwrap()
    }

    fn write_state(&self, jobs: serde_json::Value) {
        fs::write(
            self.path("state/schedule.json"),
            serde_json::to_string_pretty(&serde_json::json!({ "version": 1, "jobs": jobs }))
                .unwrap(),
        )
        .unwrap();
    }

    /// `offsite list --json`, by job name.
    fn list(&self) -> serde_json::Map<String, serde_json::Value> {
        let out = run(Command::new(offsite_bin())
            .env("TZ", "UTC")
            .arg("--config")
            .arg(self.config_path())
            .args(["list", "--json"]));
        assert!(out.status.success(), "offsite list: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json: {e}: {}", text(&out)));
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| (j["job"].as_str().unwrap().to_string(), j.clone()))
            .collect()
    }

    /// Nothing in the job folder that is not a complete generation: every
    /// data file has its manifest, no `.tmp-*`, no `.spool-*`.
    fn assert_clean(&self, job: &str) {
        let dir = self.job_dir(job);
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-") && !name.starts_with(".spool-"),
                "{name} left in {}\nlog:\n{}",
                dir.display(),
                self.log()
            );
            if name == ".lock" || name.ends_with(".manifest.json") {
                continue;
            }
            assert!(
                dir.join(format!("{name}.manifest.json")).exists(),
                "{name} in {} has no manifest: a partial generation\nlog:\n{}",
                dir.display(),
                self.log()
            );
        }
    }

    fn temporaries(&self, job: &str) -> Vec<String> {
        fs::read_dir(self.job_dir(job))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".tmp-") || n.starts_with(".spool-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(self)
    }

    /// Poll `cond` every 50 ms until it holds, or fail with the log.
    fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\nlog:\n{}",
            self.log()
        );
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }
}

/// `offsite daemon`, SIGKILLed by PID when dropped.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(w: &World) -> Daemon {
        let n = fs::read_dir(&w.root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("stderr"))
            .count();
        let stderr = w.path(&format!("stderr{n}.txt"));
        let child = Command::new(offsite_bin())
            .env("TZ", "UTC")
            .env_remove("OFFSITE_LOG")
            .arg("--config")
            .arg(w.config_path())
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", offsite_bin().display()));
        Daemon { child, stderr }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Wait for the daemon to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the daemon did not exit within {timeout:?}\nstderr:\n{}",
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ time, data

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds → RFC 3339 UTC, as the state file stores instants.
fn rfc3339(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// RFC 3339 UTC (`…Z` or `…+00:00`, fraction ignored) → unix seconds.
fn parse_rfc3339(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap_or_else(|_| panic!("{s}")) };
    assert!(s.ends_with('Z') || s.ends_with("+00:00"), "{s} is not UTC");
    days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32) * 86_400
        + n(11..13) * 3600
        + n(14..16) * 60
        + n(17..19)
}

/// 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
fn weekday(t: i64) -> i64 {
    (t.div_euclid(86_400) + 3).rem_euclid(7)
}

fn pseudo_random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn word_salad(n: usize) -> Vec<u8> {
    let words: Vec<Vec<u8>> = pseudo_random_bytes(6000 * 8, 99)
        .chunks(8)
        .map(|c| {
            let len = 2 + (c[0] % 7) as usize;
            c[1..]
                .iter()
                .cycle()
                .take(len)
                .map(|b| b'a' + b % 26)
                .collect()
        })
        .collect();
    let picks = pseudo_random_bytes(n, 12345);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        let w = (usize::from(picks[i % n]) << 5 | usize::from(picks[(i + 1) % n])) % words.len();
        out.extend_from_slice(&words[w]);
        out.push(if i % 13 == 12 { b'\n' } else { b' ' });
        i += 2;
    }
    out
}

// ------------------------------------------------------------------ tests

/// An `every 2s` job against the real pipeline produces generations at that
/// pace, each shipped, and SIGTERM between runs stops the daemon at once.
#[test]
fn every_2s_job_runs_at_that_pace() {
    let _t = timed();
    let w = World::new();
    w.small_tree("app");
    w.write_config("", &w.files_job("app", "app", "every 2s", ""));
    let mut d = w.daemon();
    w.wait_for("the first generation", Duration::from_secs(60), || {
        !w.generations("app").is_empty()
    });
    std::thread::sleep(Duration::from_secs(9));
    d.signal(libc::SIGTERM);
    let (status, took) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}\n{}", d.stderr());
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    let gens = w.generations("app");
    // Runs at t0, +2, +4, +6, +8 (one fewer if the machine is slow, one
    // more if SIGTERM came late); never faster than every 2 s.
    assert!(
        (3..=6).contains(&gens.len()),
        "{} generations in ~9 s of `every 2s`: {:?}\nlog:\n{}",
        gens.len(),
        gens.iter().map(|g| &g.manifest.name).collect::<Vec<_>>(),
        w.log()
    );
    let starts: Vec<i64> = gens
        .iter()
        .map(|g| g.manifest.started.timestamp_millis())
        .collect();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (1800..=4500).contains(&gap),
            "runs {gap} ms apart, expected ~2000: {starts:?}\nlog:\n{}",
            w.log()
        );
    }
    for g in &gens {
        assert!(g.manifest.is_good(), "{}", g.manifest.name);
        assert!(
            g.manifest
                .uploads
                .get("nas")
                .is_some_and(|u| u.state == UploadState::Done),
            "{} not shipped: {:?}",
            g.manifest.name,
            g.manifest.uploads
        );
        assert!(w.path("nas").join(&g.manifest.name).exists());
    }
    w.assert_clean("app");
    let st = w.state_json();
    assert_eq!(st["jobs"]["app"]["last_outcome"], "success", "{st}");
    assert!(w.log().contains("SIGTERM: daemon stopped"), "{}", w.log());
}

/// A run still going when the grace period ends is cancelled: its dump is
/// stopped and nothing of it remains; the daemon exits 0 within the grace.
#[test]
fn sigterm_after_grace_cancels_leaving_no_partial_generation() {
    let _t = timed();
    let w = World::new();
    w.slow_tree("big");
    w.write_config(
        "shutdown_grace = \"1s\"",
        &w.files_job("big", "big", "every 1h", "level = 19\nthreads = 1"),
    );
    let mut d = w.daemon();
    w.wait_for("the dump to be under way", Duration::from_secs(60), || {
        !w.temporaries("big").is_empty()
    });
    d.signal(libc::SIGTERM);
    let (status, took) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}\n{}", d.stderr());
    // 1 s of grace plus the cancel and clean-up, far below the ~8 s dump.
    assert!(
        took < Duration::from_secs(5),
        "exit after {took:?}\n{}",
        w.log()
    );
    assert!(
        w.generations("big").is_empty(),
        "a cancelled run must not leave a generation"
    );
    w.assert_clean("big");
    let names: Vec<String> = fs::read_dir(w.job_dir("big"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [".lock"], "only the lock file may remain");
    assert_eq!(fs::read_dir(w.path("nas")).unwrap().count(), 0);
    let log = w.log();
    assert!(
        log.contains("grace period of 1s is over: cancelling"),
        "{log}"
    );
    assert!(
        log.contains("job big: cancelled at shutdown; no partial generation was kept"),
        "{log}"
    );
    assert_eq!(w.state_json()["jobs"]["big"]["last_outcome"], "cancelled");
}

/// A run that finishes within the grace period is completed, shipped and
/// recorded; nothing new starts after SIGTERM.
#[test]
fn sigterm_lets_a_running_job_finish_within_grace() {
    let _t = timed();
    let w = World::new();
    w.small_tree("app");
    let mark = w.path("hook-started");
    let hook = w.hook(
        "slow-before",
        &format!("touch '{}'\nsleep 3", mark.display()),
    );
    w.write_config(
        "shutdown_grace = \"60s\"",
        &w.files_job(
            "app",
            "app",
            "every 1s",
            &format!("before = \"{}\"", hook.display()),
        ),
    );
    let mut d = w.daemon();
    w.wait_for("the before hook", Duration::from_secs(60), || mark.exists());
    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let (status, _) = d.wait_exit(Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(status.success(), "exit {status}\n{}", d.stderr());
    assert!(
        took >= Duration::from_secs(2),
        "exited after {took:?}: it did not wait for the run"
    );
    assert!(took < Duration::from_secs(30), "exit after {took:?}");
    let gens = w.generations("app");
    assert_eq!(
        gens.len(),
        1,
        "the running job finishes, and no new run starts after SIGTERM (every 1s)\n{}",
        w.log()
    );
    assert!(gens[0].manifest.is_good());
    assert!(w.path("nas").join(&gens[0].manifest.name).exists());
    w.assert_clean("app");
    let log = w.log();
    assert!(
        log.contains("SIGTERM: no new runs; waiting up to 1m (runner.shutdown_grace) for app"),
        "{log}"
    );
    assert!(!log.contains("cancelling"), "{log}");
    assert_eq!(w.state_json()["jobs"]["app"]["last_outcome"], "success");
}

/// Restart after SIGKILL: a weekly job stays on its anchor's weekday (and a
/// missed weekly slot ran exactly once), an hourly job whose last run is
/// 10 min old does not run, one whose last run is 2 h old runs at once, and
/// a disabled job's "not enabled" notice is not repeated within 24 h.
#[test]
fn sigkill_and_restart_keep_anchors_intervals_and_notices() {
    let w = World::new();
    w.small_tree("app");
    let now = unix_now();
    let today = now.div_euclid(86_400) * 86_400;
    let at = 4 * 3600 + 30 * 60; // 04:30 UTC
    let day = 86_400;
    // Anchored 16 days ago, last run 9 days ago: the slot 2 days ago was
    // missed while "the daemon was down".
    let anchor = today - 16 * day + at;
    let last_weekly = today - 9 * day + at;
    let next_weekly = today + 5 * day + at;
    assert_eq!(weekday(anchor), weekday(next_weekly));
    assert_ne!(weekday(anchor), weekday(now), "the restart's weekday");
    let recent = now - 600;
    let stale = now - 2 * 3600;
    let enabled = now - 30 * day;
    let hourly = |last: i64| {
        serde_json::json!({
            "enabled_at": rfc3339(enabled),
            "last_start": rfc3339(last),
            "last_end": rfc3339(last + 5),
            "last_outcome": "success",
            "schedule": "every 1h",
        })
    };
    w.write_state(serde_json::json!({
        "weekly": {
            "enabled_at": rfc3339(anchor - day),
            "anchor": rfc3339(anchor),
            "last_start": rfc3339(last_weekly),
            "last_end": rfc3339(last_weekly + 60),
            "last_outcome": "success",
            "schedule": "weekly 04:30",
        },
        "recent": hourly(recent),
        "stale": hourly(stale),
    }));
    w.write_config(
        "",
        &[
            w.files_job("weekly", "app", "weekly 04:30", ""),
            w.files_job("recent", "app", "every 1h", ""),
            w.files_job("stale", "app", "every 1h", ""),
            w.files_job("off", "app", "daily 04:30", "enabled = false"),
        ]
        .concat(),
    );

    let mut d = w.daemon();
    let ended = |job: &str| {
        let st = w.state_json();
        let j = &st["jobs"][job];
        j["last_end"].as_str().map(parse_rfc3339) >= j["last_start"].as_str().map(parse_rfc3339)
            && j["last_start"].as_str().map(parse_rfc3339) > Some(now - 60)
    };
    w.wait_for(
        "the missed weekly slot and the stale hourly job to run",
        Duration::from_secs(90),
        || ended("weekly") && ended("stale"),
    );
    w.wait_for("the not-enabled notice", Duration::from_secs(10), || {
        w.log().contains("job off: backups are not enabled")
    });
    let check = |phase: &str| {
        assert_eq!(w.generations("weekly").len(), 1, "{phase}\n{}", w.log());
        assert_eq!(w.generations("stale").len(), 1, "{phase}\n{}", w.log());
        assert_eq!(w.generations("recent").len(), 0, "{phase}\n{}", w.log());
        assert_eq!(w.generations("off").len(), 0, "{phase}");
        let st = w.state_json();
        assert_eq!(
            st["jobs"]["weekly"]["anchor"].as_str().map(parse_rfc3339),
            Some(anchor),
            "{phase}: the anchor must not move\n{st}"
        );
        assert_eq!(
            st["jobs"]["recent"]["last_start"]
                .as_str()
                .map(parse_rfc3339),
            Some(recent),
            "{phase}"
        );
        assert_eq!(
            w.count("job off: backups are not enabled"),
            1,
            "{phase}: one notice per 24 h\n{}",
            w.log()
        );
        let list = w.list();
        let next = |job: &str| list[job]["next_run"].as_str().map(parse_rfc3339);
        assert_eq!(next("weekly"), Some(next_weekly), "{phase}: {list:?}");
        assert_eq!(weekday(next("weekly").unwrap()), weekday(anchor), "{phase}");
        assert_eq!(next("recent"), Some(recent + 3600), "{phase}");
        let stale_started = parse_rfc3339(st["jobs"]["stale"]["last_start"].as_str().unwrap());
        assert_eq!(next("stale"), Some(stale_started + 3600), "{phase}");
        assert_eq!(list["off"]["next_run"], serde_json::Value::Null, "{phase}");
        assert_eq!(list["weekly"]["last_outcome"], "success", "{phase}");
    };
    check("first start");
    assert!(
        w.log().contains("job weekly: the run due")
            && w.log().contains(
                "was missed (the daemon was down, or every slot was busy); running it once now"
            ),
        "{}",
        w.log()
    );

    d.kill9();
    let mut d = w.daemon();
    w.wait_for("the restart", Duration::from_secs(60), || {
        w.count("daemon started") == 2
    });
    // Give a wrongly-due job time to show up.
    std::thread::sleep(Duration::from_secs(3));
    check("after SIGKILL and restart");
    d.signal(libc::SIGTERM);
    let (status, _) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", d.stderr());
}

/// A run cut short by SIGKILL leaves its temporary file; the restarted
/// daemon says so, removes it at once, and (seed 004) does not start the
/// hourly job again just because it restarted.
#[test]
fn sigkill_mid_run_leftovers_are_removed_at_restart() {
    let _t = timed();
    let w = World::new();
    w.slow_tree("big");
    w.write_config(
        "",
        &w.files_job("big", "big", "every 1h", "level = 19\nthreads = 1"),
    );
    let mut d = w.daemon();
    w.wait_for("the dump to be under way", Duration::from_secs(60), || {
        !w.temporaries("big").is_empty()
    });
    d.kill9();
    assert!(!w.temporaries("big").is_empty(), "SIGKILL leaves the .tmp");
    let mut d = w.daemon();
    w.wait_for("the leftovers to go", Duration::from_secs(60), || {
        w.temporaries("big").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.temporaries("big").is_empty(), "no new run after restart");
    assert!(w.generations("big").is_empty());
    w.assert_clean("big");
    let log = w.log();
    assert!(log.contains("job big: its last run (started"), "{log}");
    assert!(log.contains("left by an interrupted run"), "{log}");
    assert_eq!(log.matches("job big: scheduled run").count(), 1, "{log}");
    d.signal(libc::SIGTERM);
    let (status, _) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", d.stderr());
}

/// SIGHUP with a broken config: logged with the reason, the old config keeps
/// running. SIGHUP with a fixed one: the new jobs and schedules apply.
#[test]
fn sighup_keeps_old_config_when_broken_and_picks_up_a_fixed_one() {
    let w = World::new();
    w.small_tree("app");
    w.write_config("", &w.files_job("alpha", "app", "every 2s", ""));
    let mut d = w.daemon();
    w.wait_for("alpha's first run", Duration::from_secs(60), || {
        !w.generations("alpha").is_empty()
    });

    w.write_config("", &w.files_job("alpha", "app", "every 2x", ""));
    d.signal(libc::SIGHUP);
    w.wait_for("the refused reload", Duration::from_secs(30), || {
        w.log()
            .contains("config reload refused, keeping the old one")
    });
    let log = w.log();
    assert!(
        log.contains("`jobs.alpha.schedule`: `every 2x`: unknown unit `x`"),
        "the log must say why: {log}"
    );
    let n = w.generations("alpha").len();
    w.wait_for(
        "alpha to go on under the old config",
        Duration::from_secs(20),
        || w.generations("alpha").len() >= n + 2,
    );

    w.write_config(
        "",
        &[
            w.files_job("alpha", "app", "manual", ""),
            w.files_job("beta", "app", "every 1h", ""),
        ]
        .concat(),
    );
    d.signal(libc::SIGHUP);
    w.wait_for("the reload", Duration::from_secs(30), || {
        w.log().contains("config reloaded from")
    });
    w.wait_for("beta's first run", Duration::from_secs(30), || {
        !w.generations("beta").is_empty()
    });
    // An alpha run in flight at the reload may still finish; after that,
    // `manual` means no more runs.
    std::thread::sleep(Duration::from_secs(2));
    let n = w.generations("alpha").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(w.generations("alpha").len(), n, "alpha is manual now");
    assert_eq!(w.generations("beta").len(), 1, "every 1h");
    assert!(
        w.log().contains("job alpha: schedule changed to `manual`"),
        "{}",
        w.log()
    );
    w.assert_clean("alpha");
    d.signal(libc::SIGTERM);
    let (status, _) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", d.stderr());
}

/// Start and end times of each hook run, from the shared hook log.
fn intervals(log: &Path) -> Vec<(String, f64, f64)> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut open: std::collections::BTreeMap<String, f64> = Default::default();
    let mut out = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t: f64 = f[2].parse().unwrap();
        match f[0] {
            "start" => {
                assert!(
                    open.insert(f[1].to_string(), t).is_none(),
                    "{} started while running: {text}",
                    f[1]
                );
            }
            _ => {
                let s = open.remove(f[1]).expect("end without start");
                out.push((f[1].to_string(), s, t));
            }
        }
    }
    out
}

fn overlaps(a: &(String, f64, f64), b: &(String, f64, f64)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

/// Two jobs due all the time, each run longer than its interval: a job never
/// overlaps itself; with the default max_parallel = 1 the two never overlap
/// and neither starves; with max_parallel = 2 they do run side by side.
#[test]
fn jobs_never_overlap_themselves_and_run_one_at_a_time_by_default() {
    let _t = timed();
    for parallel in [1, 2] {
        let w = World::new();
        w.small_tree("app");
        let hook_log = w.path("hooks.log");
        let hook = w.hook(
            "busy",
            &format!(
                "echo \"start $OFFSITE_JOB $(date +%s.%N)\" >> '{l}'\n\
                 sleep 1\n\
                 echo \"end $OFFSITE_JOB $(date +%s.%N)\" >> '{l}'",
                l = hook_log.display()
            ),
        );
        let before = format!("before = \"{}\"", hook.display());
        w.write_config(
            &format!("max_parallel = {parallel}"),
            &[
                w.files_job("a", "app", "every 1s", &before),
                w.files_job("b", "app", "every 1s", &before),
            ]
            .concat(),
        );
        let mut d = w.daemon();
        w.wait_for("both jobs to run 3 times", Duration::from_secs(60), || {
            let iv = intervals(&hook_log);
            ["a", "b"]
                .iter()
                .all(|j| iv.iter().filter(|i| i.0 == *j).count() >= 3)
        });
        d.signal(libc::SIGTERM);
        let (status, _) = d.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "{}", d.stderr());
        let iv = intervals(&hook_log);
        for (i, x) in iv.iter().enumerate() {
            for y in &iv[i + 1..] {
                if x.0 == y.0 || parallel == 1 {
                    assert!(
                        !overlaps(x, y),
                        "max_parallel {parallel}: {x:?} overlaps {y:?}"
                    );
                }
            }
        }
        if parallel == 2 {
            assert!(
                iv.iter()
                    .any(|x| iv.iter().any(|y| x.0 != y.0 && overlaps(x, y))),
                "with max_parallel = 2 the jobs run side by side: {iv:?}"
            );
        }
        w.assert_clean("a");
        w.assert_clean("b");
        // The daemon itself keeps a job from overlapping; the job lock
        // refusing a second run would be a daemon bug showing.
        let log = w.log();
        assert!(!log.contains("already running"), "{log}");
        assert!(!log.contains("FAILED"), "{log}");
    }
}

/// A schedule state that cannot be read stops the daemon at start, naming
/// the file and the way out, instead of silently losing every anchor.
#[test]
fn unreadable_state_file_stops_the_daemon_at_start() {
    let w = World::new();
    w.small_tree("app");
    w.write_config("", &w.files_job("app", "app", "weekly 04:30", ""));
    fs::write(w.path("state/schedule.json"), "{\"version\":1,\"jobs\":{").unwrap();
    let mut d = w.daemon();
    let (status, _) = d.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let err = d.stderr();
    assert!(
        err.contains(&w.path("state/schedule.json").display().to_string())
            && err.contains("is not valid")
            && err.contains("move it aside"),
        "{err}"
    );
    assert!(!w.job_dir("app").exists(), "nothing ran");
}
