//! Faults an operator meets, run as an operator would (issue 15): each ends
//! in a bounded time with a clear message, loses no good generation, and
//! leaves nothing a later run cannot clean.
//!
//! - A hung server: moto stopped with SIGSTOP mid multipart upload, a TCP
//!   server that accepts and never answers, a stopped FTP server. The run
//!   gives up once nothing moved for `[runner] stall_timeout`; the next run
//!   aborts the multipart upload the stopped one left in the bucket.
//! - A damaged compiled-plugin cache (flipped bytes, cut, empty, another
//!   plugin's entry, an entry without the header): recompiled with a
//!   warning, never a crash.
//! - A full disk (a small tmpfs and a filler) at every write of a run: the
//!   run fails naming the filesystem, no good generation is lost, and no
//!   generation is counted good without its verification on disk; a full
//!   local-dir destination is named as such.
//! - Config values out of range, secret files others can read, missing or
//!   non-executable hooks, a DSN port that is not a number: refused by
//!   `config check` with file, line and key; no jobs is a warning.
//! - A refused second run leaves the schedule state of the running one
//!   alone; a local-dir copy is no more readable than the local generation.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offsite_tests::jobs::{Setup, entries, manifests_in, runner_table_at, wait_for, write_secret};
use offsite_tests::s3::Moto;
use offsite_tests::tftp_ftp::{FTP_PASSWORD, FtpServer};
use offsite_tests::tmpfs::Tmpfs;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the PID of a server this test started.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// A tree of one file of `size` random (incompressible) bytes.
fn random_tree(dir: &Path, size: usize) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut data = vec![0u8; size];
    rand::rng().fill_bytes(&mut data);
    fs::write(dir.join("data.bin"), &data).unwrap();
    dir.to_path_buf()
}

fn sha256_file(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// The generation names become unique per second: wait for the next one.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn pending_everywhere(s: &Setup, job: &str) -> bool {
    s.manifests(job).iter().all(|m| {
        m["uploads"]
            .as_object()
            .is_some_and(|u| u.values().all(|st| st["state"] == "pending"))
    })
}

// ---- 1. a hung server ------------------------------------------------------------------

fn s3_setup(endpoint: &str, tree: &Path, runner_extra: &str) -> Setup {
    let s = Setup::new(&["offsite_s3"]);
    s.write_config(&format!(
        "{runner_extra}
[destinations.s3]
plugin = \"s3\"
endpoint = \"{endpoint}\"
region = \"us-east-1\"
bucket = \"backups\"
prefix = \"calls/\"
access_key_id = \"testing\"
secret_access_key = \"testing\"
part_size = \"5MiB\"
parallel_parts = 1

[jobs.calls]
source = \"files\"
paths = [\"{}\"]
compression = \"none\"
destinations = [\"s3\"]
",
        tree.display()
    ));
    s
}

/// moto stopped (SIGSTOP) in the middle of a multipart upload: the run
/// gives up after `stall_timeout` of silence, not after 8 × 300 s × 3; the
/// message says which setting and what moved. The next run, with moto
/// back, aborts the upload the stopped run left and ships both generations.
#[test]
fn a_hung_s3_server_is_given_up_after_the_stall_timeout_and_its_upload_aborted_next_run() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let tmp = tempfile::tempdir().unwrap();
    let tree = random_tree(&tmp.path().join("tree"), 64 << 20);
    let s = s3_setup(&moto.endpoint(), &tree, "stall_timeout = \"3s\"\n");
    // The [runner] table comes first in the file: the extra line lands in it.
    let run = s.spawn_run("calls");
    wait_for(
        "the multipart upload to start",
        Duration::from_secs(60),
        || s.log().contains("multipart upload of").then_some(()),
    );
    signal(moto.pid(), libc::SIGSTOP);
    let stopped = Instant::now();
    let (code, out) = run.wait(Duration::from_secs(60));
    let took = stopped.elapsed();
    signal(moto.pid(), libc::SIGCONT);
    eprintln!("moto stopped: gave up after {took:?}:\n{out}");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("moved no data for 3s ([runner] stall_timeout)"),
        "{out}"
    );
    assert!(took < Duration::from_secs(20), "gave up after {took:?}");
    assert!(
        pending_everywhere(&s, "calls"),
        "{:?}",
        s.manifests("calls")
    );
    let left = moto.multipart_uploads("backups");
    assert!(
        !left.is_empty(),
        "the stopped run cannot abort its upload; the next one must"
    );

    next_second();
    let out = s.run_ok("calls");
    assert!(
        s.log().contains("aborting the multipart upload")
            && s.log().contains("left by an interrupted run"),
        "{out}\n{}",
        s.log()
    );
    assert_eq!(moto.multipart_uploads("backups"), Vec::<String>::new());
    let objects = moto.objects("backups", "calls/");
    let data: Vec<&(String, u64, String)> = objects
        .iter()
        .filter(|(k, _, _)| !k.ends_with(".manifest.json"))
        .collect();
    assert_eq!(data.len(), 2, "both generations shipped: {objects:?}");
}

/// A server that accepts connections and never answers (nor reads): the
/// run ends after about `stall_timeout`, naming it.
#[test]
fn an_s3_endpoint_that_accepts_and_never_answers_is_given_up_after_the_stall_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        for c in listener.incoming().take(8) {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_secs(60));
        drop(conns);
    });
    let tmp = tempfile::tempdir().unwrap();
    let tree = random_tree(&tmp.path().join("tree"), 12 << 20);
    let s = s3_setup(
        &format!("http://127.0.0.1:{port}"),
        &tree,
        "stall_timeout = \"2s\"\n",
    );
    let t = Instant::now();
    let (code, out) = s.run("calls");
    let took = t.elapsed();
    eprintln!("silent server: gave up after {took:?}:\n{out}");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("([runner] stall_timeout)"), "{out}");
    assert!(
        took < Duration::from_secs(20),
        "gave up after {took:?}: {out}"
    );
    assert!(pending_everywhere(&s, "calls"));
    drop(held);
}

/// pyftpdlib stopped with SIGSTOP before the run: the FTP plugin's own
/// `timeout` or the runner's `stall_timeout`, whichever first, ends it.
#[test]
fn a_stopped_ftp_server_is_given_up_within_the_stated_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FtpServer::plain(&tmp.path().join("ftp-root"));
    let tree = random_tree(&tmp.path().join("tree"), 8 << 20);
    let s = Setup::new(&["offsite_ftp"]);
    let pass = s.root().join("ftp.pass");
    write_secret(&pass, &format!("{FTP_PASSWORD}\n"));
    s.write_config(&format!(
        "stall_timeout = \"3s\"
[destinations.ftp]
plugin = \"ftp\"
host = \"127.0.0.1\"
port = {}
user = \"backup\"
password_file = \"{}\"

[jobs.www]
source = \"files\"
paths = [\"{}\"]
compression = \"none\"
destinations = [\"ftp\"]
",
        server.port,
        pass.display(),
        tree.display()
    ));
    signal(server.pid(), libc::SIGSTOP);
    let t = Instant::now();
    let (code, out) = s.run("www");
    let took = t.elapsed();
    signal(server.pid(), libc::SIGCONT);
    eprintln!("ftp stopped: gave up after {took:?}:\n{out}");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("stall_timeout") || out.contains("no answer within"),
        "{out}"
    );
    assert!(
        took < Duration::from_secs(30),
        "gave up after {took:?}: {out}"
    );
    assert!(pending_everywhere(&s, "www"));
    // Running again, it ships.
    next_second();
    s.run_ok("www");
    assert!(
        entries(&server.root)
            .iter()
            .any(|n| n.starts_with("www-") && !n.ends_with(".manifest.json")),
        "{:?}",
        entries(&server.root)
    );
}

/// A files job `app` shipped to a local-dir destination `nas`.
fn files_to_nas(plugins: &[&str]) -> (Setup, PathBuf) {
    let s = Setup::new(plugins);
    let nas = s.dir("nas");
    let tree = random_tree(&s.root().join("tree"), 4096);
    s.write_config(&format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n\n[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\ndestinations = [\"nas\"]\n",
        nas.display(),
        tree.display()
    ));
    (s, nas)
}

// ---- 2. a damaged plugin cache ---------------------------------------------------------

/// Flipped bytes anywhere, a cut or empty file, another plugin's entry
/// under this one's name, a bare `.cwasm` without the header: `config
/// check` and `run` still exit 0, and the log says the entry was damaged.
#[test]
fn a_damaged_plugin_cache_is_recompiled_with_a_warning_never_a_crash() {
    let (s, _nas) = files_to_nas(&["offsite_local_dir", "offsite_webhook"]);
    let (code, out) = s.offsite(&["config", "check"]);
    assert_eq!(code, 0, "{out}");
    let cache = s.state_dir.join("plugin-cache");
    let entries_now = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        v.sort();
        v
    };
    let cached = entries_now();
    assert_eq!(cached.len(), 2, "{cached:?}");
    // Which entry is local-dir's: the one whose name starts with its sha256.
    let local_sha = sha256_file(&s.plugins_dir.join("local-dir.wasm"));
    let (target, other): (Vec<PathBuf>, Vec<PathBuf>) = cached.iter().cloned().partition(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&local_sha)
    });
    let (target, other) = (target[0].clone(), other[0].clone());
    let good = fs::read(&target).unwrap();
    let header = 48;

    let mut damages: Vec<(String, Vec<u8>)> = vec![];
    for at in [
        0,
        5,
        20,
        47,
        header,
        header + 1,
        header + 64,
        header + 4096,
        good.len() / 3,
        good.len() / 2,
        good.len() * 2 / 3,
        good.len() - 100,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[at] ^= 0xa5;
        b[(at + 7).min(good.len() - 1)] ^= 0x5a;
        damages.push((format!("bytes flipped at {at}"), b));
    }
    damages.push(("cut in half".into(), good[..good.len() / 2].to_vec()));
    damages.push(("empty".into(), vec![]));
    damages.push(("another plugin's entry".into(), fs::read(&other).unwrap()));
    damages.push((
        "a bare .cwasm without the header".into(),
        good[header..].to_vec(),
    ));
    for (i, (what, bytes)) in damages.iter().enumerate() {
        fs::write(&target, bytes).unwrap();
        let log_before = s.log().len();
        let cmd = if i % 2 == 0 {
            vec!["config", "check"]
        } else {
            vec!["run", "app"]
        };
        if cmd[0] == "run" {
            next_second();
        }
        let (code, out) = s.offsite(&cmd);
        assert_eq!(code, 0, "{what}: offsite {cmd:?} exited {code}:\n{out}");
        let said = format!("{out}{}", &s.log()[log_before.min(s.log().len())..]);
        assert!(
            said.contains("plugin cache:") && said.contains("is damaged"),
            "{what}: no warning:\n{said}"
        );
        // Recompiled and written back whole.
        let (code, out) = s.offsite(&["config", "check"]);
        assert_eq!(code, 0, "{what}: {out}");
        assert!(
            !out.contains("is damaged"),
            "{what}: rewritten entry bad: {out}"
        );
    }
    assert_eq!(entries_now().len(), 2);
}

// ---- 3. a full disk --------------------------------------------------------------------

/// Every generation on disk, checked: (name, good, its data's sha256 matches).
fn generations_on_disk(job_dir: &Path) -> Vec<(String, String, bool, Value)> {
    manifests_in(job_dir)
        .into_iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_string();
            let data = job_dir.join(&name);
            let intact = data.exists() && sha256_file(&data) == m["sha256"].as_str().unwrap();
            (name, m["health"].as_str().unwrap().to_string(), intact, m)
        })
        .collect()
}

/// backup_dir and state_dir on a small tmpfs; for every amount of free
/// space from none to enough, page by page, one run. Each run either
/// succeeds or fails naming the full filesystem; none loses a good
/// generation; every generation counted good is intact and has its
/// checksum verification recorded in its manifest.
#[test]
fn a_full_disk_at_each_write_of_a_run_fails_cleanly_and_loses_nothing() {
    let s = Setup::new(&["offsite_local_dir"]);
    let nas = s.dir("nas");
    let disk = Tmpfs::mount(&s.root().join("disk"), "4m");
    let tree = random_tree(&s.root().join("tree"), 24 << 10);
    let backup_dir = disk.0.join("backups");
    let state_dir = disk.0.join("state");
    let config = format!(
        "{}
[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n
[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\nkeep = 2\nverify = \"checksum\"\ndestinations = [\"nas\"]\n",
        runner_table_at(&backup_dir, &s.plugins_dir, &state_dir, &s.log_file),
        nas.display(),
        tree.display()
    );
    fs::write(&s.config, config).unwrap();
    // The plugin cache is compiled once, with room.
    s.run_ok("app");
    next_second();
    s.run_ok("app");
    let job_dir = backup_dir.join("app");
    let gen_size = manifests_in(&job_dir)[0]["size"].as_u64().unwrap();
    let page = 4096u64;
    let pages = (gen_size + 8 * page).div_ceil(page);
    let (mut failed, mut succeeded) = (0, 0);
    for free_pages in 0..=pages {
        let before: Vec<(String, String, bool, Value)> = generations_on_disk(&job_dir);
        let good_before: Vec<String> = before
            .iter()
            .filter(|g| g.1 == "good")
            .map(|g| g.0.clone())
            .collect();
        let filler = disk.fill_leaving(free_pages * page);
        next_second();
        let (code, out) = s.run("app");
        fs::remove_file(&filler).unwrap();
        let after = generations_on_disk(&job_dir);
        let at = format!("{free_pages} pages free: exit {code}\n{out}");
        eprintln!(
            "{free_pages:>3} pages free: exit {code}: {}",
            out.lines()
                .find(|l| l.starts_with("offsite:"))
                .unwrap_or("(no error)")
        );
        for (name, health, intact, m) in &after {
            if health == "good" {
                assert!(intact, "{at}\n{name} counted good but damaged");
                let verified = m["verifications"].as_array().is_some_and(|v| {
                    v.iter()
                        .any(|x| x["method"] == "checksum" && x["ok"] == true)
                });
                assert!(
                    verified,
                    "{at}\n{name} counted good without its verification: {m}"
                );
            }
        }
        if code == 0 {
            succeeded += 1;
        } else {
            failed += 1;
            assert!(
                out.contains("no space left on the filesystem of"),
                "{at}\n(the message must name the full filesystem)"
            );
            assert!(out.contains(&disk.0.display().to_string()), "{at}");
            for g in &good_before {
                assert!(
                    after.iter().any(|a| &a.0 == g && a.1 == "good" && a.2),
                    "{at}\nthe failed run lost the good generation {g}"
                );
            }
        }
        // Nothing half-written is ever listed.
        let listed = s.listed("app");
        for name in &listed {
            assert!(
                job_dir.join(name).exists(),
                "{at}\nlisted {name} without data"
            );
        }
    }
    assert!(
        failed > 0 && succeeded > 0,
        "{failed} failed, {succeeded} succeeded"
    );
    // With room again, a run works and cleans what the failed ones left.
    next_second();
    s.run_ok("app");
    let leftovers: Vec<String> = entries(&job_dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The state_dir full (schedule.json cannot be rewritten): the backup
/// itself still succeeds, and the warning names the file and filesystem;
/// the old state file is intact (written atomically), not truncated.
#[test]
fn a_full_state_dir_costs_the_bookkeeping_not_the_backup() {
    let s = Setup::new(&[]);
    let state = Tmpfs::mount(&s.state_dir, "64k");
    let tree = random_tree(&s.root().join("tree"), 4096);
    s.write_config(&format!(
        "[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\n",
        tree.display()
    ));
    s.run_ok("app");
    let file = s.state_dir.join("schedule.json");
    let before = fs::read(&file).expect("schedule state written");
    let filler = state.fill_leaving(0);
    next_second();
    let out = s.run_ok("app");
    assert!(
        out.contains("cannot update the schedule state")
            && out.contains(&format!(
                "no space left on the filesystem of {}",
                file.display()
            )),
        "{out}"
    );
    assert_eq!(fs::read(&file).unwrap(), before, "the old state is intact");
    fs::remove_file(filler).unwrap();
    assert_eq!(s.listed("app").len(), 2);
}

/// A local-dir destination on a full disk: the message names the
/// destination, its path and the filesystem, not "I/O error (os error 29)";
/// no partial copy stays there; the generation stays pending.
#[test]
fn a_full_local_dir_destination_says_no_space_left_on_it() {
    let s = Setup::new(&["offsite_local_dir"]);
    let nas = Tmpfs::mount(&s.root().join("nas"), "64k");
    let tree = random_tree(&s.root().join("tree"), 256 << 10);
    s.write_config(&format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n\n[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\ncompression = \"none\"\ndestinations = [\"nas\"]\n",
        nas.0.display(),
        tree.display()
    ));
    let (code, out) = s.run("app");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "(`nas`): no space left on the filesystem of {}",
            nas.0.display()
        )),
        "{out}"
    );
    assert!(out.contains("tmpfs mounted at"), "{out}");
    assert!(entries(&nas.0).is_empty(), "{:?}", entries(&nas.0));
    assert!(pending_everywhere(&s, "app"));
}

// ---- 5. bad config values --------------------------------------------------------------

#[test]
fn bad_values_are_refused_by_config_check_naming_file_line_and_key() {
    let s = Setup::new(&["offsite_local_dir", "fixture_hostile"]);
    let nas = s.dir("nas");
    let tree = s.dir("tree");
    let runner = s.runner_table();
    // Lines 1-5: [runner]; 6: the line under test (in [runner]).
    let job = format!(
        "\n[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\n",
        tree.display()
    );
    let open = s.root().join("open.secret");
    fs::write(&open, "tok\n").unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let group = s.root().join("group.secret");
    fs::write(&group, "tok\n").unwrap();
    fs::set_permissions(&group, fs::Permissions::from_mode(0o640)).unwrap();
    let script = s.root().join("not-executable.sh");
    fs::write(&script, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let in_runner = |line: &str| format!("{runner}{line}\n{job}");
    let in_job = |line: &str| format!("{runner}{job}{line}\n");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "plugin_timeout past u64",
            in_runner("plugin_timeout = \"18446744073709551615s\""),
            "6: `runner.plugin_timeout`: `18446744073709551615s` is out of range; accepted: 1s to 24h".into(),
        ),
        (
            "transfer_timeout of 584 billion years",
            in_runner("transfer_timeout = \"213503982334601d\""),
            "6: `runner.transfer_timeout`: `213503982334601d` is out of range; accepted: 1s to 720h".into(),
        ),
        (
            "shutdown_grace that overflows the clock",
            in_runner("shutdown_grace = \"18446744073709551615s\""),
            "6: `runner.shutdown_grace`: `18446744073709551615s` is out of range; accepted: 0s to 24h".into(),
        ),
        (
            "a duration past u64 seconds",
            in_runner("shutdown_grace = \"99999999999999999999d\""),
            "6: `runner.shutdown_grace`: `99999999999999999999d` is far too long a duration".into(),
        ),
        (
            "stall_timeout 0",
            in_runner("stall_timeout = \"0s\""),
            "6: `runner.stall_timeout`: `0s` is out of range; accepted: 1s to 24h".into(),
        ),
        (
            "plugin_memory past wasm32",
            in_runner("plugin_memory = \"8GiB\""),
            "6: `runner.plugin_memory`: `8GiB` is not a size from 16MiB to 4GiB".into(),
        ),
        (
            "hook_timeout",
            in_job("hook_timeout = \"9999d\""),
            "10: `jobs.app.hook_timeout`: `9999d` is out of range; accepted: 1s to 168h".into(),
        ),
        (
            "a hook that does not exist",
            in_job("before = \"/nonexistent/pre-backup\""),
            "10: `jobs.app.before`: /nonexistent/pre-backup: no such file; a hook is the absolute path of an executable program".into(),
        ),
        (
            "a hook that is not executable",
            in_job(&format!("complete = \"{}\"", script.display())),
            format!(
                "10: `jobs.app.complete`: {} is not executable; chmod +x {}",
                script.display(),
                script.display()
            ),
        ),
        (
            "a DSN port that is not a number",
            format!("{runner}\n[jobs.db]\nsource = \"postgres\"\ndsn = \"postgresql://postgres@127.0.0.1:notaport/calls\"\n"),
            "9: `jobs.db.dsn`: the port `notaport` is not a number from 1 to 65535".into(),
        ),
        (
            "a world-readable secret file",
            format!(
                "{runner}[destinations.x]\nplugin = \"hostile\"\nmode = \"ok\"\ntoken_file = \"{}\"\n",
                open.display()
            ),
            format!(
                "9: `destinations.x.token_file`: the secret file {} is readable by its group and everyone (mode 0644); make it readable by its owner only: chmod 600 {}",
                open.display(),
                open.display()
            ),
        ),
        (
            "a group-readable dsn_file",
            format!(
                "{runner}\n[jobs.db]\nsource = \"postgres\"\ndsn_file = \"{}\"\n",
                group.display()
            ),
            format!(
                "9: `jobs.db.dsn_file`: the secret file {} is readable by its group (mode 0640)",
                group.display()
            ),
        ),
    ];
    let mut failures = vec![];
    for (i, (what, text, expected)) in cases.iter().enumerate() {
        let path = s.root().join(format!("bad-{i}.toml"));
        fs::write(&path, text).unwrap();
        let (code, out) = s.offsite_with(&path, &["config", "check"]);
        let want = format!("{}:{expected}", path.display());
        if !(code != 0 && out.lines().any(|l| l.starts_with(&want))) {
            failures.push(format!(
                "{what}: exit {code}, wanted a line starting with\n  {want}\ngot:\n{out}"
            ));
        }
        // `run` and the daemon read the same file the same way: refused
        // before anything runs, no panic.
        let (code, out) = s.offsite_with(&path, &["run", "app"]);
        if code != 1 || out.contains("panicked") {
            failures.push(format!("{what}: `run` exited {code}:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // No jobs at all: a warning, not an error.
    let path = s.root().join("no-jobs.toml");
    fs::write(
        &path,
        format!(
            "{runner}[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n",
            nas.display()
        ),
    )
    .unwrap();
    let (code, out) = s.offsite_with(&path, &["config", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "warning: {} defines no jobs: nothing will be backed up",
            path.display()
        )),
        "{out}"
    );
}

// ---- 6. the smaller ones ---------------------------------------------------------------

/// While a run works, a second `offsite run` of the job is refused and
/// does not touch the schedule state: `list` keeps showing the first run
/// as running, not as failed.
#[test]
fn a_refused_second_run_leaves_the_schedule_state_alone() {
    let s = Setup::new(&[]);
    let tree = random_tree(&s.root().join("tree"), 1024);
    let mark = s.root().join("hook-started");
    let go = s.root().join("go");
    let hook = s.root().join("before.sh");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            mark.display(),
            go.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o700)).unwrap();
    s.write_config(&format!(
        "[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\nbefore = \"{}\"\n",
        tree.display(),
        hook.display()
    ));
    let first = s.spawn_run("app");
    wait_for("the before hook", Duration::from_secs(30), || {
        mark.exists().then_some(())
    });
    let (code, out) = s.run("app");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("is already running"), "{out}");
    let v = s.list_json("app");
    assert_eq!(v[0]["running_or_cut_short"], true, "{v}");
    assert_ne!(v[0]["last_outcome"], "failure", "{v}");
    fs::write(&go, "").unwrap();
    let (code, out) = first.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");
    let v = s.list_json("app");
    assert_eq!(v[0]["last_outcome"], "success", "{v}");
}

/// The local generation is 0600; its copy (and its manifest's) at a
/// local-dir destination must not be more readable.
#[test]
fn a_local_dir_copy_is_no_more_readable_than_the_local_generation() {
    let (s, nas) = files_to_nas(&["offsite_local_dir"]);
    s.run_ok("app");
    let copies = entries(&nas);
    assert_eq!(copies.len(), 2, "{copies:?}");
    for name in copies {
        let local = fs::metadata(s.job_dir("app").join(&name)).unwrap();
        let remote = fs::metadata(nas.join(&name)).unwrap();
        let (l, r) = (
            local.permissions().mode() & 0o777,
            remote.permissions().mode() & 0o777,
        );
        assert_eq!(l & 0o077, 0, "{name}: local mode {l:o}");
        assert_eq!(
            r & !l,
            0,
            "{name}: copy mode {r:o} is wider than local {l:o}"
        );
    }
}
