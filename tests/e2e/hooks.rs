//! Seed 002's job hooks, run by the runner: `before` ahead of the dump (a
//! failure aborts the job), `after` right after the dump whether it worked or
//! not, `complete` last with the outcome in OFFSITE_STATUS.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A files job with all three hooks, each appending `$0 $OFFSITE_STATUS`.
/// `tree` is the path backed up (missing → the dump fails).
fn setup(before_exit: i32, tree_exists: bool) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("offsite hooks ")
        .tempdir()
        .unwrap();
    let s = Setup { dir };
    for d in ["plugins", "nas", "hooks"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    if tree_exists {
        std::fs::create_dir_all(s.path("tree")).unwrap();
        std::fs::write(s.path("tree/file.txt"), "data").unwrap();
    }
    std::fs::copy(wasm("offsite_local_dir"), s.path("plugins/local-dir.wasm")).unwrap();
    let order = s.path("order.txt");
    for (name, exit) in [("before", before_exit), ("after", 0), ("complete", 0)] {
        script(
            &s.path(&format!("hooks/{name}")),
            &format!(
                "echo \"$(basename \"$0\") $OFFSITE_STATUS $OFFSITE_JOB\" >> '{}'\nexit {exit}",
                order.display()
            ),
        );
    }
    let cfg = format!(
        r#"
[runner]
backup_dir = "{root}/backups"
plugins_dir = "{root}/plugins"
state_dir = "{root}/state"
log_file = "{root}/backup.log"

[destinations.nas]
plugin = "local-dir"
path = "{root}/nas"

[jobs.app]
source = "files"
paths = ["{root}/tree"]
destinations = ["nas"]
before = "{root}/hooks/before"
after = "{root}/hooks/after"
complete = "{root}/hooks/complete"
"#,
        root = s.dir.path().display()
    );
    std::fs::write(s.path("offsite.toml"), cfg).unwrap();
    s
}

fn run_job(s: &Setup) -> (bool, String) {
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(s.path("offsite.toml"))
        .args(["run", "app"]));
    (o.status.success(), text(&o))
}

fn order(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.path("order.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn generations(s: &Setup) -> usize {
    std::fs::read_dir(s.path("backups/app"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".manifest.json")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn hooks_run_in_order_with_the_outcome_of_a_good_run() {
    let s = setup(0, true);
    let (ok, out) = run_job(&s);
    assert!(ok, "{out}");
    assert_eq!(
        order(&s),
        vec![
            "before running app",
            "after success app",
            "complete success app"
        ]
    );
    assert_eq!(generations(&s), 1);
}

#[test]
fn a_failed_dump_still_runs_after_and_complete_with_failure() {
    let s = setup(0, false);
    let (ok, out) = run_job(&s);
    assert!(!ok, "{out}");
    assert_eq!(
        order(&s),
        vec![
            "before running app",
            "after failure app",
            "complete failure app"
        ]
    );
    assert_eq!(generations(&s), 0);
}

#[test]
fn a_failing_before_hook_means_no_dump_was_started() {
    let s = setup(3, true);
    let (ok, out) = run_job(&s);
    assert!(!ok, "{out}");
    assert!(out.contains("hook `before`"), "{out}");
    assert!(out.contains("exited with 3"), "{out}");
    assert!(out.contains("no dump was started"), "{out}");
    // No dump: no `after`; `complete` still reports the failure.
    assert_eq!(
        order(&s),
        vec!["before running app", "complete failure app"]
    );
    assert_eq!(generations(&s), 0);
    let leftovers: Vec<_> = std::fs::read_dir(s.path("backups/app"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| n.to_string_lossy() == ".lock"),
        "{leftovers:?}"
    );
}
