//! A restored tree is the tree that was backed up (issue 13): every name as
//! bytes, every hole, every hard link, attribute and ACL, nanosecond
//! mtimes; a file changing while read is reported; a source that is
//! suddenly empty or on another filesystem fails the run instead of
//! rotating the good generations away; a restore that cannot fit fails
//! before it writes. Each tree is compared by the oracle in
//! `harness/tree.rs`, and GNU tar's extraction of the same generation is
//! compared the same way.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use offsite_tests::jobs::Setup;
use offsite_tests::tree::{
    allocated, assert_same_tree, bpath, compare_trees, make_sparse, make_tree, restored_root,
    set_time_ns,
};

const MIB: u64 = 1 << 20;

fn files_job(s: &Setup, job: &str, root: &Path, extra: &str) {
    s.write_config(&format!(
        "[jobs.{job}]\nsource = \"files\"\npaths = [\"{}\"]\nkeep = 2\n{extra}\n",
        root.display()
    ));
}

/// The newest generation's data file.
fn newest_generation(s: &Setup, job: &str) -> PathBuf {
    let m = s.manifests(job);
    let name = m.last().expect("a generation")["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.job_dir(job).join(name)
}

/// `zstd -dc GEN | tar -x…` into `dir` the way an operator without offsite
/// would, keeping everything (`--xattrs-include='*'`: GNU tar restores only
/// user.* attributes unless told otherwise).
fn gnu_tar_extract(generation: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "set -o pipefail; zstd -dc \"$1\" | tar --xattrs --xattrs-include='*' --acls \
             --numeric-owner -xpf - -C \"$2\"",
        )
        .arg("x")
        .arg(generation)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar could not extract {}: {}",
        generation.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore_to(s: &Setup, job: &str, dir: &Path) -> (i32, String) {
    s.offsite(&["restore", job, "--to-dir", dir.to_str().unwrap()])
}

/// Case 1: names that are not UTF-8 come back byte for byte, and two names
/// that differ only in such a byte stay two files (`diff -r` is empty).
#[test]
fn names_that_are_not_utf8_come_back_byte_identical() {
    let s = Setup::new(&[]);
    let root = s.dir("src/latin1");
    std::fs::write(bpath(&root, b"caf\xe9.txt"), "latin-1 name").unwrap();
    std::fs::write(bpath(&root, b"x\xfe"), "first").unwrap();
    std::fs::write(bpath(&root, b"x\xff"), "second").unwrap();
    std::fs::create_dir(bpath(&root, b"Gr\xfc\xdfe")).unwrap();
    std::fs::write(bpath(&root, b"Gr\xfc\xdfe/f"), "inner").unwrap();
    files_job(&s, "names", &root, "");
    s.run_ok("names");
    let out = s.dir("out");
    let (code, text) = restore_to(&s, "names", &out);
    assert_eq!(code, 0, "{text}");
    let copy = restored_root(&out, &root);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&root)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "diff -r differs:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            b"Gr\xfc\xdfe".to_vec(),
            b"caf\xe9.txt".to_vec(),
            b"x\xfe".to_vec(),
            b"x\xff".to_vec()
        ]
    );
    assert_eq!(std::fs::read(bpath(&copy, b"x\xfe")).unwrap(), b"first");
    assert_eq!(std::fs::read(bpath(&copy, b"x\xff")).unwrap(), b"second");
    assert_same_tree(&root, &copy, "offsite restore");
}

/// Case 2: a 4 GiB file with 2 MiB of data is stored as holes (the archive
/// holds about the data only, in a sparse member GNU tar reads), and both
/// offsite and GNU tar restore it with the holes.
#[test]
fn a_sparse_file_is_stored_and_restored_with_its_holes() {
    let s = Setup::new(&[]);
    let root = s.dir("src/vm");
    let chunk = |seed: u8| -> Vec<u8> { (0..512 * 1024).map(|i| (i as u8) ^ seed).collect() };
    make_sparse(
        &root.join("vm.img"),
        4 << 30,
        &[
            (0, chunk(1)),
            (1 << 30, chunk(2)),
            (3 << 30, chunk(3)),
            ((4 << 30) - 512 * 1024, chunk(4)),
        ],
    );
    assert!(
        allocated(&root.join("vm.img")) < 4 * MIB,
        "the test file itself is not sparse"
    );
    files_job(&s, "vm", &root, "verify = \"restore\"");
    let t = Instant::now();
    s.run_ok("vm");
    let took = t.elapsed();
    let generation = newest_generation(&s, "vm");
    // The uncompressed archive is about the data: the holes were never read
    // into it (4 GiB of zeros would be 4 GiB of tar).
    let tar_bytes = Command::new("bash")
        .arg("-c")
        .arg("zstd -dc \"$1\" | wc -c")
        .arg("x")
        .arg(&generation)
        .output()
        .unwrap();
    let tar_bytes: u64 = String::from_utf8_lossy(&tar_bytes.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        tar_bytes < 3 * MIB,
        "archive holds {tar_bytes} bytes for 2 MiB of data"
    );
    assert!(took < Duration::from_secs(20), "backup took {took:?}");
    let m = s.manifests("vm");
    let tree = &m.last().unwrap()["tree"];
    assert_eq!(tree["data_bytes"].as_u64(), Some(2 * MIB), "{tree}");
    let verified = &m.last().unwrap()["verifications"];
    assert!(
        verified.as_array().unwrap().iter().all(|v| v["ok"] == true),
        "{verified}"
    );
    // GNU tar lists it as a sparse member with its real size.
    let listing = Command::new("bash")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -tvf -")
        .arg("x")
        .arg(&generation)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("4294967296"), "{listing}");

    let out = s.dir("out");
    let (code, text) = restore_to(&s, "vm", &out);
    assert_eq!(code, 0, "{text}");
    let copy = restored_root(&out, &root);
    assert_eq!(
        std::fs::metadata(copy.join("vm.img")).unwrap().len(),
        4 << 30
    );
    assert!(
        allocated(&copy.join("vm.img")) < 4 * MIB,
        "restore filled the holes: {} bytes allocated",
        allocated(&copy.join("vm.img"))
    );
    assert_same_tree(&root, &copy, "offsite restore");

    let gnu = s.dir("gnu");
    gnu_tar_extract(&generation, &gnu);
    let gcopy = restored_root(&gnu.join("files"), &root);
    assert!(allocated(&gcopy.join("vm.img")) < 4 * MIB);
    assert_same_tree(&root, &gcopy, "GNU tar's extraction");
}

fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "these tests mount a tmpfs (run as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn unmount(dir: &Path) {
    let st = Command::new("umount").arg(dir).status().unwrap();
    assert!(st.success(), "umount {}", dir.display());
}

/// Case 2, the other half: a target without room fails before writing
/// anything, naming the bytes needed and available.
#[test]
fn a_restore_that_cannot_fit_fails_before_writing() {
    let s = Setup::new(&[]);
    let root = s.dir("src/big");
    // 48 MiB of real (dense, incompressible-enough) data.
    let data: Vec<u8> = (0..48 * MIB as usize).map(|i| (i * 7 / 3) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    std::fs::write(root.join("small"), b"x").unwrap();
    files_job(&s, "big", &root, "");
    s.run_ok("big");
    let target = s.root().join("small-fs");
    mount_tmpfs(&target, "16m");
    let _m = Mounted(target.clone());
    let (code, text) = restore_to(&s, "big", &target);
    assert_ne!(code, 0, "restore into 16 MiB succeeded?\n{text}");
    assert!(text.contains("not enough room"), "{text}");
    assert!(
        text.contains("bytes") && text.contains("available"),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert!(
        left.is_empty(),
        "the failed restore wrote {} entries",
        left.len()
    );
}

/// Case 3: a job over a mount point; once the filesystem is unmounted the
/// runs fail (the folder under it is empty, another filesystem) and the
/// good generations stay, locally and restorable; `allow_empty` lets such a
/// run through on purpose.
#[test]
fn an_unmounted_source_fails_the_run_and_keeps_the_good_generations() {
    let s = Setup::new(&[]);
    let mnt = s.root().join("mnt");
    mount_tmpfs(&mnt, "32m");
    let m = Mounted(mnt.clone());
    for i in 0..200 {
        std::fs::write(mnt.join(format!("call-{i:03}.wav")), format!("{i}")).unwrap();
    }
    files_job(&s, "calls", &mnt, "");
    s.run_ok("calls");
    std::thread::sleep(Duration::from_millis(1100));
    s.run_ok("calls");
    let before: Vec<String> = s
        .manifests("calls")
        .iter()
        .map(|m| m["name"].to_string())
        .collect();
    assert_eq!(before.len(), 2);
    let tree = &s.manifests("calls")[1]["tree"];
    assert_eq!(tree["roots"][0]["entries"].as_u64(), Some(201), "{tree}");
    assert_eq!(tree["roots"][0]["fs_type"], "tmpfs", "{tree}");

    unmount(&mnt);
    drop(m);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1100));
        let (code, out) = s.run("calls");
        assert_ne!(code, 0, "a run over the unmounted folder succeeded:\n{out}");
        assert!(out.contains("another filesystem"), "{out}");
        assert!(out.contains("allow_empty"), "{out}");
    }
    let after: Vec<String> = s
        .manifests("calls")
        .iter()
        .map(|m| m["name"].to_string())
        .collect();
    assert_eq!(before, after, "generations changed after failed runs");
    assert!(s.log().contains("another filesystem"));

    let out = s.dir("out");
    let (code, text) = restore_to(&s, "calls", &out);
    assert_eq!(code, 0, "{text}");
    let n = std::fs::read_dir(restored_root(&out, &mnt))
        .unwrap()
        .count();
    assert_eq!(n, 200);

    // On purpose: the job says an empty source is normal.
    files_job(&s, "calls", &mnt, "allow_empty = true");
    std::thread::sleep(Duration::from_millis(1100));
    s.run_ok("calls");
}

/// Case 3 on one filesystem: the folder is emptied (no unmount); the run
/// fails and says so.
#[test]
fn an_emptied_source_fails_the_run() {
    let s = Setup::new(&[]);
    let root = s.dir("src/app");
    for i in 0..5 {
        std::fs::write(root.join(format!("f{i}")), "x").unwrap();
    }
    files_job(&s, "app", &root, "");
    s.run_ok("app");
    for i in 0..5 {
        std::fs::remove_file(root.join(format!("f{i}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let (code, out) = s.run("app");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("is empty") && out.contains("6 entries"),
        "{out}"
    );
    assert_eq!(s.manifests("app").len(), 1);
}

/// The kind: the generated tree (every name, hole, link, attribute, ACL,
/// mode, owner, nanosecond mtime, FIFO, device) round-trips through offsite
/// with an empty diff by the oracle, and GNU tar extracts the same
/// generation to the same tree.
#[test]
fn the_generated_tree_round_trips_and_gnu_tar_agrees() {
    let s = Setup::new(&[]);
    let root = s.root().join("src/tree");
    make_tree(&root);
    // The oracle sees a difference when there is one.
    let other = s.root().join("src/other");
    make_tree(&other);
    assert!(!compare_trees(&root, &other).is_empty());

    files_job(&s, "tree", &root, "verify = \"restore\"");
    let out = s.run_ok("tree");
    let m = s.manifests("tree");
    let warnings = &m.last().unwrap()["warnings"];
    assert_eq!(
        warnings.as_array().map(Vec::len),
        Some(0),
        "{warnings}\n{out}"
    );
    let verified = &m.last().unwrap()["verifications"];
    assert!(
        verified.as_array().unwrap().iter().all(|v| v["ok"] == true),
        "{verified}"
    );

    let dir = s.root().join("restored");
    let (code, text) = restore_to(&s, "tree", &dir);
    assert_eq!(code, 0, "{text}");
    let copy = restored_root(&dir, &root);
    assert_same_tree(&root, &copy, "offsite restore");
    // And the oracle notices a nanosecond, one attribute, one shared inode.
    set_time_ns(&copy.join("sym-rel"), 1_500_000_000, 2);
    xattr::remove(copy.join("random.bin"), "user.empty").unwrap();
    std::fs::remove_file(copy.join("links/b")).unwrap();
    std::fs::copy(copy.join("links/a"), copy.join("links/b")).unwrap();
    let diffs = compare_trees(&root, &copy).join("\n");
    for (name, what) in [
        ("sym-rel", "mtime"),
        ("random.bin", "xattrs"),
        ("links/b", "link count"),
    ] {
        assert!(
            diffs.lines().any(|l| l.contains(name) && l.contains(what)),
            "oracle missed {what} of {name}:\n{diffs}"
        );
    }

    let gnu = s.root().join("gnu");
    gnu_tar_extract(&newest_generation(&s, "tree"), &gnu);
    assert_same_tree(
        &root,
        &restored_root(&gnu.join("files"), &root),
        "GNU tar's extraction",
    );
}

/// A file that changes while it is read is named in a warning in the run's
/// output, the log and the manifest; the run still succeeds.
#[test]
fn a_file_changing_while_read_is_reported() {
    let s = Setup::new(&[]);
    let root = s.dir("src/live");
    let busy = root.join("growing.log");
    std::fs::write(&busy, vec![b'a'; 64 * MIB as usize]).unwrap();
    std::fs::write(root.join("quiet"), b"still").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let busy = busy.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&busy)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"line\n").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    files_job(&s, "live", &root, "");
    let out = s.run_ok("live");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let m = s.manifests("live");
    let warnings = m.last().unwrap()["warnings"].to_string();
    let name = busy.display().to_string();
    assert!(
        warnings.contains(&name) && warnings.contains("changed while being read"),
        "{warnings}"
    );
    assert!(out.contains(&name), "{out}");
    assert!(s.log().contains("changed while being read"));
    assert!(!warnings.contains("quiet"));
}

/// A file that is removed between listing and reading is a warning naming
/// it, not a failure.
#[test]
fn a_vanished_file_is_reported() {
    let s = Setup::new(&[]);
    let root = s.dir("src/churn");
    // Many names, removed from the end while the walk is under way.
    let n = 20_000;
    for i in 0..n {
        std::fs::write(root.join(format!("f{i:05}")), b"x").unwrap();
    }
    files_job(&s, "churn", &root, "");
    let child = s.spawn_run("churn");
    let job_dir = s.job_dir("churn");
    let remover = {
        let root = root.clone();
        std::thread::spawn(move || {
            // Once the archive is being written, the walk has listed the
            // folder: remove from the end, which the walk reaches last.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(60)
                && !std::fs::read_dir(&job_dir).is_ok_and(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
                })
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            for i in (0..n).rev() {
                let _ = std::fs::remove_file(root.join(format!("f{i:05}")));
            }
        })
    };
    let (code, out) = child.wait(Duration::from_secs(120));
    remover.join().unwrap();
    assert_eq!(code, 0, "{out}");
    let m = s.manifests("churn");
    let warnings = m.last().unwrap()["warnings"].to_string();
    assert!(warnings.contains("vanished"), "no vanish seen: {warnings}");
}
