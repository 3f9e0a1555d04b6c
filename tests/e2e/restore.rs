//! `offsite restore` refuses what it must: a file whose sha256 does not
//! match its manifest (checked before anything is applied), and a non-empty
//! target directory without `--force`.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};

fn setup(root: &Path) -> PathBuf {
    for d in ["plugins", "nas", "tree/sub"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("tree/a.txt"), "alpha").unwrap();
    std::fs::write(root.join("tree/sub/b.bin"), rand::random::<[u8; 4096]>()).unwrap();
    std::fs::copy(
        wasm("offsite_local_dir"),
        root.join("plugins/local-dir.wasm"),
    )
    .unwrap();
    let cfg = root.join("offsite.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[runner]
backup_dir = "{r}/backups"
plugins_dir = "{r}/plugins"
state_dir = "{r}/state"
log_file = "{r}/backup.log"

[destinations.nas]
plugin = "local-dir"
path = "{r}/nas"

[jobs.app]
source = "files"
paths = ["{r}/tree"]
destinations = ["nas"]
"#,
            r = root.display()
        ),
    )
    .unwrap();
    cfg
}

fn offsite(cfg: &Path, args: &[&str]) -> (bool, String) {
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(cfg)
        .args(args));
    (o.status.success(), text(&o))
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    // The local store is lost; the copy at the NAS has one flipped byte.
    std::fs::remove_dir_all(dir.path().join("backups")).unwrap();
    let remote = data_file(&dir.path().join("nas"));
    let mut bytes = std::fs::read(&remote).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&remote, bytes).unwrap();

    let target = dir.path().join("restored");
    let (ok, out) = offsite(
        &cfg,
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    let target = dir.path().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious.txt"), "keep me").unwrap();

    let (ok, out) = offsite(
        &cfg,
        &["restore", "app", "--to-dir", target.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(
        std::fs::read_to_string(target.join("precious.txt")).unwrap(),
        "keep me"
    );

    let (ok, out) = offsite(
        &cfg,
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
        .join(dir.path().strip_prefix("/").unwrap())
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let toml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        toml.replace(
            "destinations = [\"nas\"]",
            "destinations = [\"nas\"]\nkeep = 1",
        ),
    )
    .unwrap();
    let nas = dir.path().join("nas");
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    let first = data_file(&nas);
    // Immutable: even root cannot unlink it, so rotation's remove fails.
    chattr("+i", &first);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    chattr("-i", &first);
    assert!(ok, "a failed remote removal loses nothing: {out}");
    assert!(out.contains("retried next run"), "{out}");
    assert!(first.exists());
    assert!(
        dir.path()
            .join("backups/app/.pending-removals.json")
            .exists()
    );

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    assert!(!first.exists(), "the queued removal was retried: {out}");
    let left: Vec<_> = std::fs::read_dir(&nas)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        !dir.path()
            .join("backups/app/.pending-removals.json")
            .exists()
    );
}
