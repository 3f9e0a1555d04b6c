//! `offsite restore` refuses what it must: a file whose sha256 does not
//! match its manifest (checked before anything is applied), and a non-empty
//! target directory without `--force`.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::jobs::Setup;
use offsite_tests::proc::{run, text};

fn setup() -> Setup {
    let s = Setup::new(&["offsite_local_dir"]);
    std::fs::write(s.dir("tree").join("a.txt"), "alpha").unwrap();
    std::fs::write(
        s.dir("tree/sub").join("b.bin"),
        rand::random::<[u8; 4096]>(),
    )
    .unwrap();
    s.write_config(&format!(
        r#"
[destinations.nas]
plugin = "local-dir"
path = "{nas}"

[jobs.app]
source = "files"
paths = ["{tree}"]
destinations = ["nas"]
"#,
        nas = s.dir("nas").display(),
        tree = s.dir("tree").display()
    ));
    s
}

fn offsite(s: &Setup, args: &[&str]) -> (bool, String) {
    let (code, out) = s.offsite(args);
    (code == 0, out)
}

fn data_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .expect("a generation")
}

#[test]
fn a_damaged_copy_at_a_destination_is_refused_before_anything_is_applied() {
    let s = setup();
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    // The local store is lost; the copy at the NAS has one flipped byte.
    std::fs::remove_dir_all(&s.backup_dir).unwrap();
    let remote = data_file(&s.dir("nas"));
    let mut bytes = std::fs::read(&remote).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&remote, bytes).unwrap();

    let target = s.root().join("restored");
    let (ok, out) = offsite(
        &s,
        &[
            "restore",
            "app",
            "--from",
            "nas",
            "--to-dir",
            target.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("is damaged: its sha256 is"), "{out}");
    assert!(out.contains("refusing to restore it"), "{out}");
    assert!(!target.exists(), "nothing may be applied: {out}");
}

#[test]
fn a_non_empty_target_directory_needs_force() {
    let s = setup();
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    let target = s.root().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious.txt"), "keep me").unwrap();

    let (ok, out) = offsite(
        &s,
        &["restore", "app", "--to-dir", target.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(
        std::fs::read_to_string(target.join("precious.txt")).unwrap(),
        "keep me"
    );

    let (ok, out) = offsite(
        &s,
        &[
            "restore",
            "app",
            "--to-dir",
            target.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(ok, "{out}");
    let restored = target
        .join(s.root().strip_prefix("/").unwrap())
        .join("tree/a.txt");
    assert_eq!(std::fs::read_to_string(restored).unwrap(), "alpha");
}

fn chattr(flag: &str, path: &Path) {
    let o = run(Command::new("chattr").arg(flag).arg(path));
    assert!(
        o.status.success(),
        "chattr {flag} {}: {}",
        path.display(),
        text(&o)
    );
}

/// A remote copy rotation could not remove is retried at the next run
/// rather than left behind for good.
#[test]
fn a_remote_removal_that_fails_is_retried_at_the_next_run() {
    let s = setup();
    let toml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        toml.replace(
            "destinations = [\"nas\"]",
            "destinations = [\"nas\"]\nkeep = 1",
        ),
    )
    .unwrap();
    let nas = s.dir("nas");
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    let first = data_file(&nas);
    // Immutable: even root cannot unlink it, so rotation's remove fails.
    chattr("+i", &first);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, out) = offsite(&s, &["run", "app"]);
    chattr("-i", &first);
    assert!(ok, "a failed remote removal loses nothing: {out}");
    assert!(out.contains("retried next run"), "{out}");
    assert!(first.exists());
    assert!(s.backup_dir.join("app/.pending-removals.json").exists());

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    assert!(!first.exists(), "the queued removal was retried: {out}");
    let left: Vec<_> = std::fs::read_dir(&nas)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!s.backup_dir.join("app/.pending-removals.json").exists());
}
