//! Seed 000's ecopy/eremove contract through the `shell-compat` plugin, the
//! sandbox around `host.exec` (tests/fixtures/exec-escape), the example
//! scripts in examples/scripts against real TFTP and FTP servers, and seed
//! 002's hooks in examples/hooks against a real PostgreSQL cluster.
//!
//! Every script here is a real program in a real directory; the "remote" of
//! the contract tests is a plain folder the scripts copy into.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use offsite::plugin::{
    CallContext, DestinationSession, ErrorKind, Limits, LoadedPlugin, PluginError, PluginHost,
    Upload, settings,
};
use offsite_tests::jobs::{entries, runner_table_at};
use offsite_tests::paths::{offsite_bin, project_root, wasm};
use offsite_tests::postgres::{PgCluster, server_owned_tempdir};
use offsite_tests::proc::{Server, free_port, free_udp_port, run, text};
use offsite_tests::tftp_ftp::{TftpKind, TftpServer, ftp_python};
use sha2::{Digest, Sha256};

const JOB: &str = "calls";
const NAME: &str = "calls-20261122T043000Z.sql.zst";

fn limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(60),
        transfer_timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(120),
        debug_stdio: false,
    }
}

async fn load(host: &PluginHost, crate_name: &str) -> Arc<LoadedPlugin> {
    Arc::new(
        host.load_file(&wasm(crate_name))
            .await
            .unwrap_or_else(|e| panic!("{crate_name} loads: {e}")),
    )
}

async fn open(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    pairs: &[(&str, &str)],
) -> Result<DestinationSession, PluginError> {
    let raw: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = settings::resolve(&plugin.info, &raw).expect("settings resolve");
    let ctx = CallContext {
        plugin: plugin.info.name.clone(),
        instance: "legacy".into(),
        job: Some(JOB.into()),
    };
    DestinationSession::open(host, plugin.clone(), &s, ctx).await
}

/// A shell-compat session on `scripts`, with a generous default timeout.
async fn shell_compat(host: &PluginHost, scripts: &Path) -> DestinationSession {
    shell_compat_with(host, scripts, "30s").await
}

async fn shell_compat_with(host: &PluginHost, scripts: &Path, timeout: &str) -> DestinationSession {
    let plugin = load(host, "offsite_shell_compat").await;
    let dir = scripts.to_str().unwrap();
    open(host, &plugin, &[("scripts_dir", dir), ("timeout", timeout)])
        .await
        .unwrap_or_else(|e| panic!("shell-compat opens on {dir}: {e}"))
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `root/scripts dir` (a space in the path on purpose) holding `scripts`.
fn scripts_dir(root: &Path, scripts: &[(&str, String)]) -> PathBuf {
    let dir = root.join("scripts dir");
    fs::create_dir_all(&dir).unwrap();
    for (name, body) in scripts {
        write_script(&dir.join(name), body);
    }
    dir
}

/// A generation laid out as the runner keeps it, `<backup_dir>/<job>/<name>`,
/// under a folder whose name has spaces.
struct Generation {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
}

impl Generation {
    fn new(root: &Path, size: usize) -> Generation {
        let dir = root.join("backup dir with spaces").join(JOB);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(NAME);
        let bytes: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
        fs::write(&path, &bytes).unwrap();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Generation {
            path,
            bytes,
            sha256,
        }
    }

    fn upload(&self) -> Upload<'_> {
        Upload {
            name: NAME,
            local_path: &self.path,
            size: self.bytes.len() as u64,
            sha256: &self.sha256,
            job: JOB,
        }
    }
}

/// Lines a script recorded with `printf '%s\n' "$#" "$@" > FILE`.
fn recorded(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// ecopy/eremove/efetch that copy into and out of the folder `remote` and
/// record their arguments (and the environment offsite gives them) in `log`.
fn folder_scripts(remote: &Path, log: &Path) -> Vec<(&'static str, String)> {
    let (r, l) = (remote.display(), log.display());
    vec![
        (
            "ecopy",
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" \"OFFSITE_FILE=$OFFSITE_FILE\" \"OFFSITE_JOB=$OFFSITE_JOB\" \"OFFSITE_DESTINATION=$OFFSITE_DESTINATION\" > '{l}/ecopy.args'\n\
                 cp -- \"$1\" '{r}/' && echo \"copied $(basename -- \"$1\")\"\n"
            ),
        ),
        (
            "eremove",
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" > '{l}/eremove.args'\n\
                 rm -f -- '{r}'/\"$(basename -- \"$1\")\"\n"
            ),
        ),
        (
            "efetch",
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" > '{l}/efetch.args'\n\
                 cp -- '{r}'/\"$1\" \"$2\"\n"
            ),
        ),
    ]
}

#[tokio::test]
async fn ecopy_uploads_efetch_fetches_and_eremove_removes_with_the_file_as_one_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let (remote, log) = (tmp.path().join("remote"), tmp.path().join("log"));
    fs::create_dir_all(&remote).unwrap();
    fs::create_dir_all(&log).unwrap();
    let scripts = scripts_dir(tmp.path(), &folder_scripts(&remote, &log));
    let generation = Generation::new(tmp.path(), 300_000);
    let local = generation.path.display().to_string();

    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat(&host, &scripts).await;

    s.upload(&generation.upload()).await.expect("upload");
    assert_eq!(fs::read(remote.join(NAME)).unwrap(), generation.bytes);
    assert_eq!(
        recorded(&log.join("ecopy.args")),
        [
            "1".to_string(),
            local.clone(),
            format!("OFFSITE_FILE={local}"),
            format!("OFFSITE_JOB={JOB}"),
            "OFFSITE_DESTINATION=legacy".to_string(),
        ]
    );

    let target_dir = tmp.path().join("restore target");
    fs::create_dir_all(&target_dir).unwrap();
    let target = target_dir.join("fetched file");
    let n = s.fetch(NAME, JOB, &target).await.expect("fetch");
    assert_eq!(n, generation.bytes.len() as u64);
    assert_eq!(fs::read(&target).unwrap(), generation.bytes);
    assert_eq!(
        recorded(&log.join("efetch.args")),
        ["2", NAME, target.display().to_string().as_str()]
    );

    // Rotation deletes the local file first; eremove still gets the path
    // ecopy got, and uses its base name.
    fs::remove_file(&generation.path).unwrap();
    s.remove(NAME, JOB, &generation.path).await.expect("remove");
    assert!(!remote.join(NAME).exists(), "eremove did not delete it");
    assert_eq!(recorded(&log.join("eremove.args")), ["1", local.as_str()]);
}

#[tokio::test]
async fn a_failing_ecopy_is_a_transient_error_that_the_runner_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = scripts_dir(
        tmp.path(),
        &[(
            "ecopy",
            "#!/bin/sh\necho 'remote is down' >&2\nexit 1\n".into(),
        )],
    );
    let generation = Generation::new(tmp.path(), 1000);
    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat(&host, &scripts).await;
    let e = s.upload(&generation.upload()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.kind.is_retryable());
    assert!(e.message.contains("exited with 1"), "{e}");
    assert!(e.message.contains("the upload did not happen"), "{e}");
    // The same instance goes on: a retry runs the script again.
    let e = s.upload(&generation.upload()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
}

#[tokio::test]
async fn without_eremove_and_efetch_rotation_and_restore_are_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    let ecopy_only: Vec<_> = folder_scripts(&remote, tmp.path())
        .into_iter()
        .filter(|(n, _)| *n == "ecopy")
        .collect();
    let scripts = scripts_dir(tmp.path(), &ecopy_only);
    let generation = Generation::new(tmp.path(), 1000);
    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat(&host, &scripts).await;
    s.upload(&generation.upload()).await.expect("upload");

    let e = s.remove(NAME, JOB, &generation.path).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("no program `eremove`"), "{e}");
    assert!(e.message.contains("rotated by something else"), "{e}");
    assert!(remote.join(NAME).exists());

    let e = s
        .fetch(NAME, JOB, &tmp.path().join("out"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("efetch NAME TARGET"), "{e}");

    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
}

#[tokio::test]
async fn without_ecopy_an_upload_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = scripts_dir(tmp.path(), &[]);
    let generation = Generation::new(tmp.path(), 10);
    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat(&host, &scripts).await;
    let e = s.upload(&generation.upload()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("no program `ecopy`"), "{e}");
    assert!(e.message.contains("put an executable `ecopy` there"), "{e}");
}

/// Processes a test started indirectly; any still alive at the end are
/// killed so a failed test leaves nothing behind.
struct Pids(Vec<i32>);

impl Pids {
    /// Running (a zombie has already died: its parent was killed with it
    /// and nobody may be left to reap it).
    fn alive(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state != 'Z'),
        }
    }

    fn wait_all_dead(&self, within: Duration) -> Vec<i32> {
        let until = Instant::now() + within;
        loop {
            let alive: Vec<i32> = self.0.iter().copied().filter(|p| Self::alive(*p)).collect();
            if alive.is_empty() || Instant::now() > until {
                return alive;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in self.0.iter().copied().filter(|p| Self::alive(*p)) {
            // SAFETY: kill(2) of a process this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test]
async fn a_hanging_script_is_killed_with_its_children_at_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();
    let scripts = scripts_dir(
        tmp.path(),
        &[(
            "ecopy",
            format!(
                "#!/bin/sh\necho $$ > '{t}/script.pid'\nsleep 1000 &\necho $! > '{t}/child.pid'\nsleep 1000\n"
            ),
        )],
    );
    let generation = Generation::new(tmp.path(), 10);
    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat_with(&host, &scripts, "2s").await;
    let started = Instant::now();
    let e = s.upload(&generation.upload()).await.unwrap_err();
    let took = started.elapsed();

    let pid = |f: &str| -> i32 {
        fs::read_to_string(tmp.path().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let pids = Pids(vec![pid("script.pid"), pid("child.pid")]);
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.message
            .contains("was killed with its children after its timeout of 2s"),
        "{e}"
    );
    // Stopped by the script timeout, not by the 60 s call limit.
    assert!(took < Duration::from_secs(50), "took {took:?}: {e}");
    let alive = pids.wait_all_dead(Duration::from_secs(10));
    assert!(
        alive.is_empty(),
        "still running after the timeout: {alive:?} (script, background child: {:?})",
        pids.0
    );
}

// ---------------------------------------------------------------------------
// The sandbox around exec, tried by tests/fixtures/exec-escape.

/// `root/outside/x` creates `root/outside/ran-x` when it runs; the scripts
/// directory holds `inside` (the control, marker `ran-inside`) and `link`,
/// a symlink to `../outside/x`.
struct Escape {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    scripts: PathBuf,
    outside_x: PathBuf,
}

impl Escape {
    fn new() -> Escape {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let outside = root.join("outside");
        let scripts = root.join("scripts");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&scripts).unwrap();
        let outside_x = outside.join("x");
        write_script(
            &outside_x,
            &format!("#!/bin/sh\ntouch '{}/ran-x'\n", root.display()),
        );
        write_script(
            &scripts.join("inside"),
            &format!("#!/bin/sh\ntouch '{}/ran-inside'\n", root.display()),
        );
        std::os::unix::fs::symlink("../outside/x", scripts.join("link")).unwrap();
        Escape {
            _tmp: tmp,
            root,
            scripts,
            outside_x,
        }
    }

    fn ran(&self, marker: &str) -> bool {
        self.root.join(marker).exists()
    }

    /// `list` on the fixture, which asks the runner to exec `program`.
    async fn exec(&self, program: &str, with_dir: bool) -> Result<Vec<String>, PluginError> {
        let host = PluginHost::new(None, limits()).unwrap();
        let plugin = load(&host, "fixture_exec_escape").await;
        let dir = self.scripts.display().to_string();
        let mut pairs = vec![("program", program)];
        if with_dir {
            pairs.push(("scripts_dir", dir.as_str()));
        }
        let mut s = open(&host, &plugin, &pairs).await?;
        s.list("")
            .await
            .map(|objs| objs.into_iter().map(|o| o.name).collect())
    }

    async fn refused(&self, program: &str, with_dir: bool, says: &str) {
        let e = self
            .exec(program, with_dir)
            .await
            .expect_err(&format!("exec of {program} was allowed"));
        assert_eq!(e.kind, ErrorKind::Config, "{program}: {e}");
        assert!(e.message.contains(says), "{program}: {e}");
        assert!(!self.ran("ran-x"), "{program} ran the program outside");
    }
}

#[tokio::test]
async fn exec_stays_inside_the_exec_directory() {
    let t = Escape::new();
    // Control: a program directly inside runs.
    assert_eq!(t.exec("inside", true).await.unwrap(), ["exit 0"]);
    assert!(t.ran("ran-inside"));

    t.refused("../outside/x", true, "only a file name directly inside")
        .await;
    t.refused(
        t.outside_x.to_str().unwrap(),
        true,
        "only a file name directly inside",
    )
    .await;
    t.refused("link", true, "outside `scripts_dir`").await;
    t.refused("link", true, "resolves to").await;
}

#[tokio::test]
async fn exec_without_an_exec_directory_setting_runs_nothing() {
    let t = Escape::new();
    t.refused("inside", false, "has no exec-directory setting")
        .await;
    t.refused(
        t.outside_x.to_str().unwrap(),
        false,
        "has no exec-directory setting",
    )
    .await;
    assert!(!t.ran("ran-inside"));
}

// ---------------------------------------------------------------------------
// `offsite plugins test` on the real binary.

fn plugins_test(scripts: &Path) -> (bool, String) {
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "test"])
        .arg(wasm("offsite_shell_compat"))
        .arg("--setting")
        .arg(format!("scripts_dir={}", scripts.display()))
        .args(["--setting", "timeout=30s", "--size", "100000"])
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    (o.status.success(), text(&o))
}

#[test]
fn plugins_test_runs_ecopy_and_eremove_and_logs_their_output() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    let scripts: Vec<_> = folder_scripts(&remote, tmp.path())
        .into_iter()
        .filter(|(n, _)| *n != "efetch")
        .collect();
    let (ok, out) = plugins_test(&scripts_dir(tmp.path(), &scripts));
    assert!(ok, "{out}");
    for step in [
        "upload   ok",
        "list     unsupported",
        "fetch    unsupported",
        "remove   ok",
        "overwrite ok",
        "fetch-missing unsupported",
        // eremove of a name that is not there exits 0 (rm -f), as
        // examples/scripts/README.md asks.
        "remove-missing ok",
        "interrupt unsupported",
        "conformance: passed",
    ] {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    assert!(
        out.contains("ecopy: copied "),
        "ecopy's stdout is not in the log: {out}"
    );
    assert_eq!(
        fs::read_dir(&remote).unwrap().count(),
        0,
        "eremove left files"
    );
}

#[test]
fn plugins_test_fails_when_ecopy_fails_and_shows_why() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = scripts_dir(
        tmp.path(),
        &[(
            "ecopy",
            "#!/bin/sh\necho 'ecopy: no route to 192.0.2.10' >&2\nexit 3\n".into(),
        )],
    );
    let (ok, out) = plugins_test(&scripts);
    assert!(!ok, "{out}");
    assert!(out.contains("conformance: FAILED"), "{out}");
    assert!(out.contains("[transient]"), "{out}");
    assert!(out.contains("exited with 3"), "{out}");
    assert!(
        out.contains("ecopy: ecopy: no route to 192.0.2.10"),
        "ecopy's stderr is not in the log: {out}"
    );
}

#[test]
fn a_job_ships_through_ecopy_rotates_through_eremove_and_restores_through_efetch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(
        wasm("offsite_shell_compat"),
        plugins.join("shell-compat.wasm"),
    )
    .unwrap();
    let (remote, log) = (root.join("remote"), root.join("log"));
    fs::create_dir_all(&remote).unwrap();
    fs::create_dir_all(&log).unwrap();
    let scripts = scripts_dir(root, &folder_scripts(&remote, &log));
    let app = root.join("srv/app");
    fs::create_dir_all(&app).unwrap();
    let backups = root.join("backups");
    let config = root.join("offsite.toml");
    fs::write(
        &config,
        format!(
            "{}\n\
             [destinations.legacy]\nplugin = \"shell-compat\"\nscripts_dir = \"{}\"\nship_manifests = true\n\n\
             [jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\nkeep = 1\ndestinations = [\"legacy\"]\n",
            runner_table_at(
                &backups,
                &plugins,
                &root.join("state"),
                &root.join("backup.log")
            ),
            scripts.display(),
            app.display()
        ),
    )
    .unwrap();
    let offsite = |args: &[&str]| {
        let o = run(Command::new(offsite_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("OFFSITE_CONFIG")
            .env_remove("OFFSITE_LOG")
            .stdin(Stdio::null()));
        (o.status.success(), text(&o))
    };

    fs::write(app.join("index.html"), "<h1>one</h1>").unwrap();
    let (ok, out) = offsite(&["run", "app"]);
    assert!(ok, "{out}");
    let first = entries(&remote);
    assert_eq!(first.len(), 2, "the backup and its manifest: {first:?}");
    let first_gen = first
        .iter()
        .find(|n| !n.ends_with(".manifest.json"))
        .unwrap()
        .clone();
    assert!(
        first.contains(&format!("{first_gen}.manifest.json")),
        "{first:?}"
    );
    // ecopy got the generation where the runner keeps it.
    let ecopied = recorded(&log.join("ecopy.args"));
    assert_eq!(ecopied[0], "1");
    assert!(
        ecopied[1].starts_with(&format!("{}/app/", backups.display())),
        "{ecopied:?}"
    );

    // Generation names have one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(app.join("index.html"), "<h1>two</h1>").unwrap();
    let (ok, out) = offsite(&["run", "app"]);
    assert!(ok, "{out}");
    let second = entries(&remote);
    assert_eq!(
        second.len(),
        2,
        "keep = 1 leaves one generation: {second:?}"
    );
    assert!(
        !second.contains(&first_gen),
        "eremove did not run: {second:?}"
    );
    let second_gen = second
        .iter()
        .find(|n| !n.ends_with(".manifest.json"))
        .unwrap()
        .clone();
    let removed = recorded(&log.join("eremove.args"));
    assert_eq!(removed[0], "1");
    assert!(
        removed[1].starts_with(&format!("{}/app/", backups.display())),
        "{removed:?}"
    );

    // Restore from the destination alone, through efetch.
    let out_dir = root.join("restored");
    let (ok, out) = offsite(&[
        "restore",
        "app",
        "--from",
        "legacy",
        "--generation",
        &second_gen,
        "--to-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let restored = out_dir
        .join(app.strip_prefix("/").unwrap())
        .join("index.html");
    assert_eq!(fs::read_to_string(&restored).unwrap(), "<h1>two</h1>");
}

// ---------------------------------------------------------------------------
// examples/scripts against real servers.

/// An example script with the `KEY=` lines at its top replaced, as an
/// operator installing it would.
fn configured_example(file: &str, set: &[(&str, String)]) -> String {
    let path = project_root().join("examples/scripts").join(file);
    let mut text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (key, value) in set {
        let start = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{file} has no {key}= line to set"))
            .to_string();
        text = text.replacen(&start, &format!("{key}={value}"), 1);
    }
    text
}

fn example(file: &str) -> String {
    configured_example(file, &[])
}

#[tokio::test]
async fn the_tftp_example_uploads_to_tftpd_hpa_and_fails_when_nobody_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("tftp root");
    fs::create_dir_all(&served).unwrap();
    let server = TftpServer::start(TftpKind::Hpa, &served);
    let port = server.port;
    let generation = Generation::new(tmp.path(), 3_000_000);
    let host = PluginHost::new(None, limits()).unwrap();

    let ecopy = configured_example(
        "ecopy_tftp.sh",
        &[
            ("TFTP_HOST", "127.0.0.1".into()),
            ("TFTP_PORT", port.to_string()),
        ],
    );
    let scripts = scripts_dir(tmp.path(), &[("ecopy", ecopy)]);
    let mut s = shell_compat(&host, &scripts).await;
    s.upload(&generation.upload())
        .await
        .expect("upload over TFTP");
    assert_eq!(
        fs::read(served.join(NAME)).unwrap(),
        generation.bytes,
        "the file on the TFTP server differs"
    );
    // TFTP cannot delete: without an eremove, rotation there is external.
    let e = s.remove(NAME, JOB, &generation.path).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");

    // Nobody on the port: curl gives up, the upload stays pending.
    let dead = tempfile::tempdir().unwrap();
    let ecopy = configured_example(
        "ecopy_tftp.sh",
        &[
            ("TFTP_HOST", "127.0.0.1".into()),
            ("TFTP_PORT", free_udp_port().to_string()),
            ("TFTP_TIMEOUT", "2".into()),
        ],
    );
    let mut s = shell_compat(&host, &scripts_dir(dead.path(), &[("ecopy", ecopy)])).await;
    let e = s.upload(&generation.upload()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("exited with 28"), "{e}");
}

#[tokio::test]
async fn the_ftp_examples_upload_fetch_and_remove_on_pyftpdlib() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("ftp root");
    fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let password = "pw with spaces";
    let _server = Server::spawn(
        "pyftpdlib",
        Command::new(ftp_python())
            .args([
                "-m",
                "pyftpdlib",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-w",
            ])
            .arg("-d")
            .arg(&served)
            .args(["-u", "backup", "-P", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .wait_tcp(port);

    let scripts = scripts_dir(
        tmp.path(),
        &[
            ("ecopy", example("ecopy_ftp.sh")),
            ("eremove", example("eremove_ftp.sh")),
            ("efetch", example("efetch_ftp.sh")),
        ],
    );
    fs::write(scripts.join("ftp-common.sh"), example("ftp-common.sh")).unwrap();
    let netrc = scripts.join("ftp.netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login backup password \"{password}\"\n"),
    )
    .unwrap();
    fs::set_permissions(&netrc, fs::Permissions::from_mode(0o600)).unwrap();
    let conf = example("ftp.conf.example")
        .replace(
            "FTP_URL=ftp://192.0.2.11:21/backups",
            &format!("FTP_URL=ftp://127.0.0.1:{port}/db/backups"),
        )
        .replace(
            "FTP_NETRC=/var/db/pgsql/ftp.netrc",
            &format!("FTP_NETRC='{}'", netrc.display()),
        );
    assert!(conf.contains(&format!("127.0.0.1:{port}")) && conf.contains("ftp.netrc'"));
    fs::write(scripts.join("ftp.conf"), conf).unwrap();

    let generation = Generation::new(tmp.path(), 2_000_000);
    let host = PluginHost::new(None, limits()).unwrap();
    let mut s = shell_compat(&host, &scripts).await;
    let stored = served.join("db/backups").join(NAME);

    s.upload(&generation.upload())
        .await
        .expect("upload over FTP");
    assert_eq!(fs::read(&stored).unwrap(), generation.bytes);
    let names: Vec<String> = fs::read_dir(stored.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [NAME], "a temporary upload was left behind");

    let target = tmp.path().join("restored");
    let n = s.fetch(NAME, JOB, &target).await.expect("fetch over FTP");
    assert_eq!(n, generation.bytes.len() as u64);
    assert_eq!(fs::read(&target).unwrap(), generation.bytes);

    s.remove(NAME, JOB, &generation.path).await.expect("remove");
    assert!(!stored.exists());
    // Removing what is gone already succeeds (a retry after a lost answer).
    s.remove(NAME, JOB, &generation.path)
        .await
        .expect("second remove");
    let e = s.fetch(NAME, JOB, &target).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
}

// ---------------------------------------------------------------------------
// examples/hooks: seed 002's before/after/complete.

fn hook(name: &str) -> PathBuf {
    project_root().join("examples/hooks").join(name)
}

/// A hook as the runner would run it: a bare environment plus `env`.
fn run_hook(name: &str, env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(hook(name));
    cmd.env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = run(&mut cmd);
    (o.status.success(), text(&o))
}

#[test]
fn pg_backup_hooks_make_a_copy_that_starts_on_its_own_while_the_database_is_busy() {
    let db = PgCluster::start();
    db.psql(
        "postgres",
        "CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g; \
         CREATE TABLE churn (id bigserial, v text)",
    );
    let before = db.fingerprint("postgres")["public.kept"].clone();
    let work = server_owned_tempdir();
    let staging = work.path().join("staging");
    let env = [
        ("PGDATA", db.data_dir().display().to_string()),
        ("STAGING", staging.display().to_string()),
        ("PG_CONN", db.dsn("postgres")),
        ("OFFSITE_JOB", "pgdata".to_string()),
    ];

    // Writes go on during the whole backup.
    let stop = AtomicBool::new(false);
    let (ok, out) = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = db.try_psql(
                    "postgres",
                    "INSERT INTO churn (v) SELECT repeat('x', 500) FROM generate_series(1, 500)",
                );
            }
        });
        let r = run_hook("pg-backup-before", &env);
        stop.store(true, Ordering::Relaxed);
        r
    });
    assert!(ok, "pg-backup-before failed:\n{out}");
    let label = fs::read_to_string(staging.join("backup_label")).expect("backup_label in the copy");
    assert!(label.contains("LABEL: offsite-pgdata"), "{label}");
    assert!(label.starts_with("START WAL LOCATION: "), "{label}");
    assert!(!staging.join("postmaster.pid").exists());
    assert!(out.contains("WAL segment(s)"), "{out}");
    // The temporary slot went away with the session.
    assert_eq!(
        db.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );

    // What the runner archives between the hooks, then `after` empties STAGING.
    let archived = work.path().join("archived");
    let o = run(Command::new("cp").arg("-a").arg(&staging).arg(&archived));
    assert!(o.status.success(), "{}", text(&o));
    let (ok, out) = run_hook("pg-backup-after", &env);
    assert!(ok, "pg-backup-after failed:\n{out}");
    assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);

    let restored = PgCluster::start_existing(&archived, &db.password);
    assert!(
        restored
            .log()
            .contains("completed backup recovery with redo LSN"),
        "the copy did not recover from its backup_label:\n{}",
        restored.log()
    );
    assert_eq!(restored.fingerprint("postgres")["public.kept"], before);
    restored.psql("postgres", "SELECT count(*) FROM churn");
}

#[test]
fn pg_backup_hooks_never_empty_a_directory_they_did_not_fill() {
    let work = tempfile::tempdir().unwrap();
    let staging = work.path().join("staging");
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("precious"), "keep me").unwrap();
    let pgdata = work.path().join("pgdata");
    fs::create_dir_all(&pgdata).unwrap();
    fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    let env = [
        ("PGDATA", pgdata.display().to_string()),
        ("STAGING", staging.display().to_string()),
        (
            "PG_CONN",
            format!("host=127.0.0.1 port={} user=postgres", free_port()),
        ),
    ];
    let (ok, out) = run_hook("pg-backup-before", &env);
    assert!(!ok, "{out}");
    assert!(out.contains("refusing to empty it"), "{out}");
    let (ok, out) = run_hook("pg-backup-after", &env);
    assert!(!ok, "{out}");
    assert!(out.contains("left as it is"), "{out}");
    assert!(staging.join("precious").exists());

    // An unreachable server: non-zero, so the runner takes no dump; what
    // the failed run left is marked as its own, and the next run replaces it.
    fs::remove_file(staging.join("precious")).unwrap();
    for _ in 0..2 {
        let (ok, out) = run_hook("pg-backup-before", &env);
        assert!(!ok, "{out}");
        assert!(out.contains("the psql session ended"), "{out}");
    }
}

#[test]
fn the_complete_hook_records_the_outcome_and_prunes_the_wal_archive_only_on_success() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("wal archive");
    fs::create_dir_all(&archive).unwrap();
    let segments = [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
        "000000010000000000000003.00000028.backup",
        "000000010000000000000004",
    ];
    for s in segments {
        fs::write(archive.join(s), s).unwrap();
    }
    let file = tmp.path().join(NAME);
    fs::write(&file, b"12345").unwrap();
    let history = tmp.path().join("history.log");
    let env = |status: &str| {
        vec![
            ("OFFSITE_JOB", JOB.to_string()),
            ("OFFSITE_STATUS", status.to_string()),
            ("OFFSITE_FILE", file.display().to_string()),
            ("HISTORY", history.display().to_string()),
            ("WAL_ARCHIVE", archive.display().to_string()),
        ]
    };
    let left = || {
        let mut v: Vec<String> = fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    let (ok, out) = run_hook("offsite-complete", &env("failure"));
    assert!(ok, "{out}");
    assert_eq!(left().len(), segments.len(), "pruned after a failure");

    let (ok, out) = run_hook("offsite-complete", &env("success"));
    assert!(ok, "{out}");
    assert_eq!(left(), segments[2..]);

    let lines: Vec<String> = fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with(&format!(
            " job={JOB} status=failure file={} size=5",
            file.display()
        )),
        "{lines:?}"
    );
    assert!(lines[1].contains(" status=success "), "{lines:?}");
}
