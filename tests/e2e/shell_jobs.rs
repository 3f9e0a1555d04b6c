//! Seed 000's ecopy/eremove contract through whole jobs: rotation calls
//! eremove for exactly the dropped generations, a failing ecopy leaves the
//! generation pending until a later run ships it (after the newest), and without eremove
//! rotation there is external (one warning per run). The scripts see
//! generation files only unless `ship_manifests = true`, and a restore
//! through `efetch` says which check it made.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use offsite_tests::jobs::Setup;

/// The installation (in a folder whose name holds spaces) and its scripts.
struct Legacy {
    s: Setup,
}

impl Legacy {
    fn p(&self, rel: &str) -> PathBuf {
        self.s.root().join(rel)
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// ecopy copies into `remote/` and logs; eremove (if wanted) deletes and logs.
fn setup(with_eremove: bool, keep: usize) -> Legacy {
    setup_with(with_eremove, keep, "")
}

/// [`setup`] with extra lines for `[destinations.legacy]`, and an `efetch`
/// that copies back from `remote/` and logs.
fn setup_with(with_eremove: bool, keep: usize, legacy_settings: &str) -> Legacy {
    let l = Legacy {
        s: Setup::with_prefix("offsite legacy ", &["offsite_shell_compat"]),
    };
    for d in ["scripts", "remote", "tree"] {
        l.s.dir(d);
    }
    std::fs::write(l.p("tree/data.txt"), "payload").unwrap();
    let (remote, log) = (l.p("remote"), l.p("calls.log"));
    script(
        &l.p("scripts/ecopy"),
        &format!(
            "[ -e '{fail}' ] && {{ echo 'remote is down' >&2; exit 1; }}\n\
             cp \"$1\" '{remote}/' && echo \"ecopy $(basename \"$1\")\" >> '{log}'",
            fail = l.p("ecopy-fails").display(),
            remote = remote.display(),
            log = log.display()
        ),
    );
    script(
        &l.p("scripts/efetch"),
        &format!(
            "cp \"{remote}/$1\" \"$2\" && echo \"efetch $1\" >> '{log}'",
            remote = remote.display(),
            log = log.display()
        ),
    );
    if with_eremove {
        script(
            &l.p("scripts/eremove"),
            &format!(
                "rm -f \"{remote}/$(basename \"$1\")\" && echo \"eremove $(basename \"$1\")\" >> '{log}'",
                remote = remote.display(),
                log = log.display()
            ),
        );
    }
    l.s.write_config(&format!(
        r#"
[destinations.legacy]
plugin = "shell-compat"
scripts_dir = "{r}/scripts"
{legacy_settings}

[jobs.calls]
source = "files"
paths = ["{r}/tree"]
keep = {keep}
destinations = ["legacy"]
"#,
        r = l.s.root().display()
    ));
    l
}

fn run_job(l: &Legacy) -> (bool, String) {
    // Generation names have one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    offsite(l, &["run", "calls"])
}

/// Data files (not manifests) in a folder, sorted.
fn data_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    v.sort();
    v
}

/// The generation files a script was called with, in order.
fn calls(l: &Legacy, verb: &str) -> Vec<String> {
    all_calls(l, verb)
        .into_iter()
        .filter(|n| n.ends_with(".tar.zst"))
        .collect()
}

/// Every file name a script was called with, in order.
fn all_calls(l: &Legacy, verb: &str) -> Vec<String> {
    std::fs::read_to_string(l.p("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|x| x.strip_prefix(&format!("{verb} ")))
        .map(str::to_string)
        .collect()
}

fn offsite(l: &Legacy, args: &[&str]) -> (bool, String) {
    let (code, out) = l.s.offsite(args);
    (code == 0, out)
}

/// Restores `generation` through `efetch` into a fresh folder and checks
/// the tree; returns the command's output.
fn restore_through_efetch(l: &Legacy, generation: Option<&str>, into: &str) -> String {
    let to = l.p(into);
    let mut args = vec!["restore", "calls", "--from", "legacy"];
    if let Some(g) = generation {
        args.extend(["--generation", g]);
    }
    args.extend(["--to-dir", to.to_str().unwrap()]);
    let (ok, out) = offsite(l, &args);
    assert!(ok, "{out}");
    let tree = l.p("tree");
    let restored = to.join(tree.strip_prefix("/").unwrap()).join("data.txt");
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "payload",
        "{out}"
    );
    out
}

#[test]
fn the_scripts_see_generation_files_only_unless_manifests_are_opted_in() {
    let l = setup(true, 2);
    for _ in 0..4 {
        let (ok, out) = run_job(&l);
        assert!(ok, "{out}");
    }
    let ecopied = all_calls(&l, "ecopy");
    assert_eq!(
        ecopied.len(),
        4,
        "one ecopy per generation, nothing else: {ecopied:?}"
    );
    assert!(
        ecopied.iter().all(|n| n.ends_with(".tar.zst")),
        "{ecopied:?}"
    );
    let removed = all_calls(&l, "eremove");
    assert_eq!(
        removed,
        ecopied[..2].to_vec(),
        "eremove for exactly the dropped ones"
    );
    let mut far: Vec<String> = std::fs::read_dir(l.p("remote"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    far.sort();
    assert_eq!(
        far,
        ecopied[2..].to_vec(),
        "the far side holds exactly the kept two"
    );

    // Restore through efetch: no remote manifest, so the local one is the check.
    let out = restore_through_efetch(&l, None, "restored-latest");
    assert!(
        out.contains("sha256 checked against the local manifest"),
        "{out}"
    );
    assert_eq!(
        all_calls(&l, "efetch"),
        vec![ecopied[3].clone()],
        "latest = newest shipped"
    );

    // The local store gone: applied, and said to be unchecked.
    std::fs::remove_dir_all(l.p("backups/calls")).unwrap();
    let out = restore_through_efetch(&l, Some(&ecopied[3]), "restored-bare");
    assert!(out.contains("sha256 NOT checked"), "{out}");
}

#[test]
fn with_ship_manifests_the_manifests_travel_through_the_scripts_and_restore_checks_them() {
    let l = setup_with(true, 2, "ship_manifests = true");
    for _ in 0..4 {
        let (ok, out) = run_job(&l);
        assert!(ok, "{out}");
    }
    let gens = calls(&l, "ecopy");
    assert_eq!(gens.len(), 4, "{gens:?}");
    let manifests: Vec<String> = gens.iter().map(|g| format!("{g}.manifest.json")).collect();
    let ecopied = all_calls(&l, "ecopy");
    assert_eq!(
        ecopied.len(),
        8,
        "a generation and its manifest each run: {ecopied:?}"
    );
    for m in &manifests {
        assert!(ecopied.contains(m), "{m} not shipped: {ecopied:?}");
    }
    let removed = all_calls(&l, "eremove");
    for m in &manifests[..2] {
        assert!(removed.contains(m), "{m} not removed: {removed:?}");
    }
    assert_eq!(removed.len(), 4, "{removed:?}");

    // The local store gone: the manifest fetched through efetch is the check.
    std::fs::remove_dir_all(l.p("backups/calls")).unwrap();
    let out = restore_through_efetch(&l, Some(&gens[3]), "restored");
    assert!(
        out.contains("sha256 checked against the manifest fetched from legacy"),
        "{out}"
    );
    // A damaged copy over there is refused before anything is applied.
    let far = l.p("remote").join(&gens[3]);
    let mut bytes = std::fs::read(&far).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&far, bytes).unwrap();
    let to = l.p("restored-damaged");
    let (ok, out) = offsite(
        &l,
        &[
            "restore",
            "calls",
            "--from",
            "legacy",
            "--generation",
            &gens[3],
            "--to-dir",
            to.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("is damaged"), "{out}");
    assert!(!to.exists(), "{out}");
}

#[test]
fn five_runs_with_keep_2_leave_two_copies_and_eremove_the_dropped_ones() {
    let l = setup(true, 2);
    let mut made = vec![];
    for _ in 0..5 {
        let (ok, out) = run_job(&l);
        assert!(ok, "{out}");
        made = data_files(&l.p("backups/calls"));
    }
    let all: Vec<String> = calls(&l, "ecopy");
    assert_eq!(all.len(), 5, "one ecopy per generation: {all:?}");
    assert_eq!(made, all[3..].to_vec(), "local keeps the newest two");
    assert_eq!(
        data_files(&l.p("remote")),
        all[3..].to_vec(),
        "remote keeps the newest two"
    );
    assert_eq!(
        calls(&l, "eremove"),
        all[..3].to_vec(),
        "eremove for exactly the dropped ones"
    );
}

#[test]
fn a_failing_ecopy_leaves_the_generation_pending_and_the_next_run_ships_it_after_the_newest() {
    let l = setup(true, 5);
    std::fs::write(l.p("ecopy-fails"), "").unwrap();
    let (ok, out) = run_job(&l);
    assert!(!ok, "a failed upload must fail the run: {out}");
    assert!(
        out.contains("remote is down") || out.contains("exited"),
        "{out}"
    );
    let first = data_files(&l.p("backups/calls"));
    assert_eq!(first.len(), 1, "the generation stays local");
    assert!(data_files(&l.p("remote")).is_empty());
    let (_, list) = l.s.offsite(&["list", "calls"]);
    assert!(list.contains("legacy:PENDING"), "{list}");

    std::fs::remove_file(l.p("ecopy-fails")).unwrap();
    let (ok, out) = run_job(&l);
    assert!(ok, "{out}");
    let shipped = calls(&l, "ecopy");
    assert_eq!(shipped.len(), 2, "{shipped:?}");
    // Issue 15.4: the newest good generation reaches the destination first
    // (it is what a restore needs); the pending one follows in the same run.
    assert_eq!(
        shipped[1], first[0],
        "the pending generation ships too, after the newest"
    );
    assert_eq!(data_files(&l.p("remote")).len(), 2);
}

#[test]
fn without_eremove_local_rotation_proceeds_and_one_warning_says_rotation_is_external() {
    let l = setup(false, 1);
    for _ in 0..2 {
        let (ok, out) = run_job(&l);
        assert!(ok, "{out}");
    }
    let (ok, out) = run_job(&l);
    assert!(ok, "{out}");
    assert_eq!(
        data_files(&l.p("backups/calls")).len(),
        1,
        "local rotation proceeds"
    );
    assert_eq!(
        data_files(&l.p("remote")).len(),
        3,
        "nothing removed remotely"
    );
    let warnings = out.matches("rotation on legacy is external").count();
    assert_eq!(warnings, 1, "exactly one warning per run: {out}");
}
