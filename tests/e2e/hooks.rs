//! Seed 002's job hooks, run by the runner: `before` ahead of the dump (a
//! failure aborts the job), `after` right after the dump whether it worked or
//! not, `complete` last with the outcome in OFFSITE_STATUS.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use offsite_tests::jobs::Setup;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A files job with all three hooks, each appending `$0 $OFFSITE_STATUS`.
/// `tree` is the path backed up (missing → the dump fails). The folder's
/// name holds spaces.
fn setup(before_exit: i32, tree_exists: bool) -> Setup {
    let s = Setup::with_prefix("offsite hooks ", &["offsite_local_dir"]);
    let (nas, hooks) = (s.dir("nas"), s.dir("hooks"));
    let tree = s.root().join("tree");
    if tree_exists {
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("file.txt"), "data").unwrap();
    }
    let order = s.root().join("order.txt");
    for (name, exit) in [("before", before_exit), ("after", 0), ("complete", 0)] {
        script(
            &hooks.join(name),
            &format!(
                "echo \"$(basename \"$0\") $OFFSITE_STATUS $OFFSITE_JOB\" >> '{}'\nexit {exit}",
                order.display()
            ),
        );
    }
    s.write_config(&format!(
        r#"
[destinations.nas]
plugin = "local-dir"
path = "{nas}"

[jobs.app]
source = "files"
paths = ["{tree}"]
destinations = ["nas"]
before = "{hooks}/before"
after = "{hooks}/after"
complete = "{hooks}/complete"
"#,
        nas = nas.display(),
        tree = tree.display(),
        hooks = hooks.display(),
    ));
    s
}

fn run_job(s: &Setup) -> (bool, String) {
    let (code, out) = s.run("app");
    (code == 0, out)
}

fn order(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.root().join("order.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn generations(s: &Setup) -> usize {
    std::fs::read_dir(s.job_dir("app"))
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
    let leftovers: Vec<_> = std::fs::read_dir(s.job_dir("app"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| n.to_string_lossy() == ".lock"),
        "{leftovers:?}"
    );
}
