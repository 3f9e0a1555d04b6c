//! Driving the real `offsite` binary the way an operator does: a config file
//! in a temporary folder (backup_dir, plugins_dir, state_dir and log_file all
//! inside it), plugins copied in, `offsite --config FILE run JOB`, and the
//! generations and manifests read back from disk. Used by tests/e2e/jobs.rs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::paths::{offsite_bin, wasm};

/// One operator's installation, in a temporary folder removed on drop.
pub struct Setup {
    root: tempfile::TempDir,
    pub config: PathBuf,
    pub backup_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Setup {
    /// Folders made, and each named plugin (a crate name such as
    /// `offsite_local_dir` or `fixture_hostile`) copied into plugins_dir
    /// under its installed name (`local-dir.wasm`, as `just install` does).
    pub fn new(plugins: &[&str]) -> Setup {
        Setup::with_prefix("offsite-jobs-", plugins)
    }

    /// [`Setup::new`] in a folder whose name starts with `prefix` (e.g. one
    /// with a space, for paths that must survive quoting).
    pub fn with_prefix(prefix: &str, plugins: &[&str]) -> Setup {
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        let dir = root.path();
        let s = Setup {
            config: dir.join("offsite.toml"),
            backup_dir: dir.join("backups"),
            plugins_dir: dir.join("plugins"),
            state_dir: dir.join("state"),
            log_file: dir.join("log/backup.log"),
            root,
        };
        std::fs::create_dir_all(&s.plugins_dir).expect("plugins dir");
        for p in plugins {
            let installed = p
                .trim_start_matches("offsite_")
                .trim_start_matches("fixture_")
                .replace('_', "-");
            std::fs::copy(wasm(p), s.plugins_dir.join(format!("{installed}.wasm")))
                .unwrap_or_else(|e| panic!("copy plugin {p}: {e}"));
        }
        s
    }

    /// The temporary folder everything lives in.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A folder below the root, created.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.root.path().join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// The `[runner]` table pointing into the temporary folder.
    pub fn runner_table(&self) -> String {
        runner_table_at(
            &self.backup_dir,
            &self.plugins_dir,
            &self.state_dir,
            &self.log_file,
        )
    }

    /// Writes the config: the `[runner]` table, then `body`.
    pub fn write_config(&self, body: &str) {
        std::fs::write(&self.config, format!("{}\n{body}", self.runner_table())).expect("config");
    }

    /// `offsite --config CONFIG ARGS...`, not yet started. OFFSITE_CONFIG
    /// and OFFSITE_LOG from the caller's environment are not passed on.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.config, args)
    }

    pub fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(offsite_bin());
        c.arg("--config")
            .arg(config)
            .args(args)
            .env_remove("OFFSITE_CONFIG")
            .env_remove("OFFSITE_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `offsite ARGS...` to the end.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run offsite {args:?}: {e}"))
    }

    /// Runs `offsite ARGS...`: (exit code, stdout + stderr).
    pub fn offsite(&self, args: &[&str]) -> (i32, String) {
        let o = self.output(args);
        (code(&o), crate::proc::text(&o))
    }

    /// `offsite --config CONFIG ARGS...` with another config file: (exit
    /// code, stdout + stderr).
    pub fn offsite_with(&self, config: &Path, args: &[&str]) -> (i32, String) {
        let o = self
            .command_with(config, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run offsite {args:?}: {e}"));
        (code(&o), crate::proc::text(&o))
    }

    /// `offsite run JOB`: (exit code, stdout + stderr).
    pub fn run(&self, job: &str) -> (i32, String) {
        self.offsite(&["run", job])
    }

    /// `offsite run JOB`, which must succeed; returns its output.
    pub fn run_ok(&self, job: &str) -> String {
        let (code, out) = self.run(job);
        assert_eq!(code, 0, "offsite run {job} failed:\n{out}");
        out
    }

    /// `offsite run JOB` started in the background, its output going to
    /// files below the root (see [`Running::output`]).
    pub fn spawn_run(&self, job: &str) -> Running {
        let n = std::fs::read_dir(self.root.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let out = self.root.path().join(format!("run-{job}-{n}.out"));
        let f = std::fs::File::create(&out).expect("output file");
        let child = self
            .command(&["run", job])
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn offsite run");
        Running {
            child: Some(child),
            out,
        }
    }

    /// `<backup_dir>/<job>`
    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.backup_dir.join(job)
    }

    /// The manifests in the job folder, oldest generation first.
    pub fn manifests(&self, job: &str) -> Vec<Value> {
        manifests_in(&self.job_dir(job))
    }

    /// Names of the generations `offsite list JOB --json` reports.
    pub fn listed(&self, job: &str) -> Vec<String> {
        let v = self.list_json(job);
        v[0]["generations"]
            .as_array()
            .unwrap_or_else(|| panic!("no generations array in {v}"))
            .iter()
            .map(|g| g["name"].as_str().expect("name").to_string())
            .collect()
    }

    /// `offsite list JOB --json`, parsed.
    pub fn list_json(&self, job: &str) -> Value {
        let o = self.output(&["list", job, "--json"]);
        assert_eq!(
            code(&o),
            0,
            "offsite list --json: {}",
            crate::proc::text(&o)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "offsite list --json printed no JSON ({e}):\n{}",
                crate::proc::text(&o)
            )
        })
    }

    /// The log file as written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

/// A run in the background; killed (SIGKILL) if still running when dropped.
pub struct Running {
    child: Option<Child>,
    out: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the end: (exit code, output). -1 for a signal.
    pub fn wait(mut self, limit: Duration) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return (st.code().unwrap_or(-1), self.output());
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "offsite run did not finish within {limit:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as an OOM killer or a power cut would; waits for the exit.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The exit code; -1 when a signal ended the process.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Every `*.manifest.json` in `dir`, parsed, by name.
pub fn manifests_in(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| {
            serde_json::from_slice(&std::fs::read(p).expect("read manifest"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

/// A `[runner]` table naming these four places, for a config a [`Setup`]
/// does not lay out (state on a tmpfs, one folder for everything, a test's
/// own tree). More `[runner]` keys may follow it directly.
pub fn runner_table_at(
    backup_dir: &Path,
    plugins_dir: &Path,
    state_dir: &Path,
    log_file: &Path,
) -> String {
    format!(
        "[runner]\nbackup_dir = \"{}\"\nplugins_dir = \"{}\"\nstate_dir = \"{}\"\nlog_file = \"{}\"\n",
        backup_dir.display(),
        plugins_dir.display(),
        state_dir.display(),
        log_file.display()
    )
}

/// File names in `dir`, sorted (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Processes whose parent is `pid`: (pid, command name).
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split at ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|x| x.1).unwrap_or("").to_string();
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == pid {
            out.push((p, comm));
        }
    }
    out
}

/// Every process's argv joined with spaces, for secret scans.
pub fn all_command_lines() -> Vec<(u32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{p}/cmdline")) {
            let s = String::from_utf8_lossy(&raw).replace('\0', " ");
            out.push((p, s));
        }
    }
    out
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID: count it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > until {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- file trees -------------------------------------------------------------

/// Sets a path's mtime (atime too) without following a symlink.
pub fn set_mtime(p: &Path, secs: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: a valid C path and two timespecs.
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

/// A tree an application might have: nested folders, modes from 0555 to
/// 0755, an empty file and an empty read-only folder, names with spaces and
/// non-ASCII letters, a 100-character name, a 1 MiB random file, a relative
/// and a dangling symlink, distinct mtimes on everything.
pub fn build_tree(root: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("conf")).unwrap();
    fs::create_dir_all(root.join("data/deep/er")).unwrap();
    fs::create_dir_all(root.join("uploads/année 2025")).unwrap();
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::write(root.join("conf/app.ini"), "[db]\nhost = 127.0.0.1\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::write(root.join("data/empty"), "").unwrap();
    let mut blob = vec![0u8; 1 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut blob);
    fs::write(root.join("data/deep/er/blob.bin"), blob).unwrap();
    fs::write(root.join("uploads/année 2025/reçu n°1.pdf"), "%PDF-1.4\n").unwrap();
    let long = "n".repeat(100);
    fs::write(root.join("data").join(&long), "long name").unwrap();
    std::os::unix::fs::symlink("conf/app.ini", root.join("settings")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    for (p, m) in [
        ("conf/app.ini", 0o640),
        ("run.sh", 0o755),
        ("data/empty", 0o600),
        ("data/deep/er/blob.bin", 0o644),
        ("conf", 0o700),
        ("data/deep", 0o751),
        ("emptydir", 0o555),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    }
    let mut t = 1_600_000_000;
    for p in [
        "conf/app.ini",
        "run.sh",
        "data/empty",
        "data/deep/er/blob.bin",
        "uploads/année 2025/reçu n°1.pdf",
        &format!("data/{long}"),
        "settings",
        "dangling",
        "uploads/année 2025",
        "uploads",
        "data/deep/er",
        "data/deep",
        "data",
        "conf",
        "emptydir",
        "",
    ] {
        t += 3_601;
        set_mtime(&root.join(p), t);
    }
}

/// Per path below `root`: kind (file content hash / link target / dir),
/// mode, mtime, owner. Equal listings mean identical trees.
pub fn tree_listing(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let kind = if m.file_type().is_symlink() {
            format!("link->{}", std::fs::read_link(p).unwrap().display())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            use sha2::Digest;
            let bytes = std::fs::read(p).unwrap();
            format!(
                "file size={} sha256={}",
                bytes.len(),
                hex::encode(sha2::Sha256::digest(&bytes))
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
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The `.tar.zst` generation data files in a folder (temporaries, whose
/// names start with a dot, left out), sorted: oldest first.
pub fn tar_generations_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".tar.zst") && !n.starts_with('.'))
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A secret file as an operator keeps one: readable by its owner only
/// (`config check` refuses one that others can read).
pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
}
