//! Archive mode (seed 003) through the real binary: a "recorder" tree that
//! gains files every run and deletes its oldest when over a size; every
//! file that ever existed is found and comes back byte-identical; volumes
//! are plain `.tar.zst` to GNU tar and zstd; the catalog rebuilt from a
//! destination answers `find --json` the same; restore into a small tmpfs
//! is refused whole and succeeds for the newest files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::jobs::Setup;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A call recorder: a folder of recordings per batch; the oldest batches
/// go when the tree is over `limit` bytes.
struct Recorder {
    root: PathBuf,
    limit: u64,
    rng: rand::rngs::StdRng,
    batch: usize,
    /// Every file that ever existed: path → sha256 of each version, in order.
    ever: BTreeMap<String, Vec<String>>,
    /// Files on disk, oldest first: (path, size).
    live: Vec<(PathBuf, u64)>,
}

impl Recorder {
    fn new(root: &Path, limit: u64, seed: u64) -> Recorder {
        std::fs::create_dir_all(root).unwrap();
        Recorder {
            root: root.to_path_buf(),
            limit,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            batch: 0,
            ever: BTreeMap::new(),
            live: vec![],
        }
    }

    fn write(&mut self, p: &Path, size: usize) {
        let mut data = vec![0u8; size];
        self.rng.fill(&mut data[..]);
        std::fs::write(p, &data).unwrap();
        let sha = hex::encode(Sha256::digest(&data));
        self.ever.entry(p.display().to_string()).or_default().push(sha);
    }

    /// One batch of `n` recordings of `min..max` bytes, then the deletions.
    fn record(&mut self, n: usize, min: usize, max: usize) {
        self.batch += 1;
        let dir = self.root.join(format!("2026-11/batch-{:03}", self.batch));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let p = dir.join(format!("call-{:03}-{i:03}.wav", self.batch));
            let size = self.rng.random_range(min..max);
            self.write(&p, size);
            self.live.push((p, size as u64));
        }
        let mut total: u64 = self.live.iter().map(|f| f.1).sum();
        while total > self.limit {
            // The recorder deletes in batches of 10 (seed 003: of 100).
            for _ in 0..10.min(self.live.len()) {
                let (p, size) = self.live.remove(0);
                std::fs::remove_file(&p).unwrap();
                total -= size;
                let parent = p.parent().unwrap();
                if std::fs::read_dir(parent).unwrap().next().is_none() {
                    std::fs::remove_dir(parent).unwrap();
                }
            }
        }
    }

    /// Rewrite a live file in place (a new version of the same path).
    fn rewrite_newest(&mut self) -> String {
        let (p, _) = self.live.last().unwrap().clone();
        let size = self.rng.random_range(1000..5000);
        self.write(&p, size);
        if let Some(l) = self.live.last_mut() {
            l.1 = size as u64;
        }
        p.display().to_string()
    }
}

fn config(s: &Setup, tree: &Path, volume_size: &str, seal_after: &str) -> PathBuf {
    let nas = s.dir("nas");
    s.write_config(&format!(
        r#"
[destinations.nas]
plugin = "local-dir"
path = "{}"

[jobs.rec]
source = "archive"
paths = ["{}"]
volume_size = "{volume_size}"
seal_after = "{seal_after}"
level = 1
destinations = ["nas"]
"#,
        nas.display(),
        tree.display()
    ));
    nas
}

fn find_json(s: &Setup, pattern: &str) -> Vec<Value> {
    let o = s.output(&["find", "rec", pattern, "--json"]);
    assert!(o.status.success(), "find: {}", offsite_tests::proc::text(&o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("find --json is not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    v.as_array().unwrap().clone()
}

fn cat_sha(s: &Setup, args: &[&str]) -> String {
    let o = s.output(args);
    assert!(o.status.success(), "{args:?}: {}", offsite_tests::proc::text(&o));
    hex::encode(Sha256::digest(&o.stdout))
}

/// 20 runs into 8 MiB volumes; every file that ever existed is found by
/// `find` and comes back byte-identical with `cat`, including the older
/// version of a rewritten file (`--at`); volumes read with GNU tar + zstd.
#[test]
fn recorder_every_file_that_ever_existed_is_found_and_read_back() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    let nas = config(&s, &tree, "8MiB", "1h");
    let mut rec = Recorder::new(&tree, 12 << 20, 3);
    let mut rewritten = None;
    let mut before_rewrite = None;
    for run in 0..20 {
        if run == 12 {
            // A file archived by the previous run is rewritten in place.
            before_rewrite = Some(chrono_now());
            std::thread::sleep(std::time::Duration::from_millis(20));
            rewritten = Some(rec.rewrite_newest());
        }
        rec.record(30, 20_000, 120_000);
        s.run_ok("rec");
    }
    let found = find_json(&s, "*");
    let mut by_path: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for f in &found {
        by_path.entry(f["path"].as_str().unwrap().to_string()).or_default().push(f);
    }
    assert_eq!(
        by_path.keys().collect::<Vec<_>>(),
        rec.ever.keys().collect::<Vec<_>>(),
        "find must list every file that ever existed"
    );
    let mut gone = 0;
    for (path, shas) in &rec.ever {
        let versions = &by_path[path];
        let got: Vec<&str> = versions.iter().map(|v| v["sha256"].as_str().unwrap()).collect();
        let want: Vec<&str> = shas.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{path}: the versions find lists");
        assert_eq!(cat_sha(&s, &["cat", "rec", path]), *shas.last().unwrap(), "cat {path}");
        if versions.last().unwrap().get("gone_at").is_some() {
            gone += 1;
        }
    }
    let deleted = rec.ever.len() - rec.live.len();
    assert_eq!(gone, deleted, "every deleted file is recorded as gone, no more");
    // The rewritten file's first version, by time.
    let path = rewritten.unwrap();
    let at = before_rewrite.unwrap();
    assert_eq!(cat_sha(&s, &["cat", "rec", &path, "--at", &at]), rec.ever[&path][0]);
    // Volumes: sealed at 8 MiB, each a .tar.zst GNU tar lists.
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert!(vols.len() >= 3, "expected several sealed volumes, got {vols:?}");
    for v in &vols {
        let len = std::fs::metadata(v).unwrap().len();
        assert!(len < (8 << 20) + (1 << 20), "{} is {len} bytes, past volume_size", v.display());
        let o = Command::new("tar").arg("--zstd").arg("-tf").arg(v).output().unwrap();
        assert!(o.status.success(), "GNU tar cannot read {}: {}", v.display(), String::from_utf8_lossy(&o.stderr));
        let names = String::from_utf8_lossy(&o.stdout);
        assert!(names.contains(".offsite/"), "no catalog slice in {}", v.display());
        assert!(names.contains("call-"), "no recordings in {}", v.display());
        // Shipped, with its manifest, to the destination.
        let name = v.file_name().unwrap().to_str().unwrap();
        let shipped = walk_find(&nas, name);
        assert_eq!(std::fs::read(shipped.unwrap()).unwrap(), std::fs::read(v).unwrap());
    }
    // GNU tar extracts a volume's files byte-identical to cat's.
    let out = s.dir("gnu-tar");
    let o = Command::new("tar").arg("--zstd").arg("-xf").arg(&vols[0]).arg("-C").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut checked = 0;
    for (path, shas) in &rec.ever {
        let p = out.join(path.trim_start_matches('/'));
        if p.exists() && shas.len() == 1 {
            assert_eq!(hex::encode(Sha256::digest(std::fs::read(&p).unwrap())), shas[0]);
            checked += 1;
        }
    }
    assert!(checked > 20, "GNU tar's extraction of the first volume held {checked} recordings");
}

/// Now, RFC 3339 with nanoseconds (GNU date).
fn chrono_now() -> String {
    let o = Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%S.%NZ").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn sealed_volumes(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(".tar.zst") && !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    v.sort();
    v
}

fn walk_find(root: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().unwrap() == name {
            return Some(p);
        }
    }
    None
}

/// The catalog deleted and rebuilt from the local-dir destination alone
/// gives the same `find --json`, and cat still works.
#[test]
fn catalog_rebuilt_from_a_destination_answers_find_the_same() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    config(&s, &tree, "1MiB", "1s");
    let mut rec = Recorder::new(&tree, 2 << 20, 7);
    for run in 0..8 {
        rec.record(12, 10_000, 60_000);
        if run == 4 {
            rec.rewrite_newest();
        }
        s.run_ok("rec");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Once more with nothing new: what is still open is sealed (waited 1s).
    s.run_ok("rec");
    let before = find_json(&s, "*");
    assert!(before.iter().all(|f| f["volume_state"] == "sealed"), "all sealed before the rebuild");
    assert!(before.iter().any(|f| f.get("gone_at").is_some()), "some files are gone");
    let cat = s.job_dir("rec").join("catalog.sqlite");
    std::fs::remove_file(&cat).unwrap();
    for x in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{x}", cat.display()));
    }
    let (code, out) = s.offsite(&["find", "rec", "*"]);
    assert_ne!(code, 0, "find without a catalog must fail: {out}");
    assert!(out.contains("catalog rebuild"), "{out}");
    let (code, out) = s.offsite(&["catalog", "rebuild", "rec", "--from", "nas"]);
    assert_eq!(code, 0, "{out}");
    let after = find_json(&s, "*");
    assert_eq!(before, after, "find --json after the rebuild");
    let (path, shas) = rec.ever.iter().next().unwrap();
    assert_eq!(cat_sha(&s, &["cat", "rec", path]), *shas.last().unwrap());
    // The next run goes on from the rebuilt catalog: nothing re-archived.
    s.run_ok("rec");
    assert_eq!(find_json(&s, "*").len(), after.len());
}

/// A small tmpfs, mounted for the test and unmounted on drop (needs root;
/// the test says so when it is not).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Tmpfs {
        // SAFETY: getuid has no preconditions.
        assert_eq!(unsafe { libc::getuid() }, 0, "mounting a tmpfs target needs root");
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&o.stderr));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn tree_files(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            tree_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Restore into a tmpfs that holds 20 % of everything archived: the whole
/// archive is refused before a byte is written (needed and available
/// named); `--since` the newest files fits and comes back byte-identical
/// with its mtimes, gone files included.
#[test]
fn restore_into_a_small_tmpfs_refuses_the_whole_and_fits_the_newest() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    config(&s, &tree, "2MiB", "1h");
    let mut rec = Recorder::new(&tree, 3 << 20, 11);
    let mut mtimes: Vec<(std::time::SystemTime, String, u64)> = vec![];
    for _ in 0..10 {
        rec.record(10, 20_000, 80_000);
        for (p, size) in rec.live.iter().rev().take(10) {
            let m = std::fs::metadata(p).unwrap().modified().unwrap();
            mtimes.push((m, p.display().to_string(), *size));
        }
        s.run_ok("rec");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let total: u64 = mtimes.iter().map(|m| m.2).sum();
    let target = s.root().join("small");
    let _fs = Tmpfs::mount(&target, total / 5);
    let dest = target.join("restore");
    let (code, out) = s.offsite(&["restore", "rec", "--to-dir", dest.to_str().unwrap()]);
    assert_ne!(code, 0, "a whole restore into 20 % of the space must be refused: {out}");
    assert!(out.contains("nothing was written") && out.contains("free"), "{out}");
    let mut written = vec![];
    if dest.exists() {
        tree_files(&dest, &mut written);
    }
    assert!(written.is_empty(), "a refused restore wrote {written:?}");
    // The newest files that fill at most 15 % (block-rounded) of the total:
    // the oldest mtime T such that everything at or after T fits (files of
    // one batch may share an mtime: coarse filesystem timestamps).
    mtimes.sort();
    let fits = |t: std::time::SystemTime| -> bool {
        let used: u64 = mtimes.iter().filter(|m| m.0 >= t).map(|m| m.2.div_ceil(4096) * 4096).sum();
        used <= total * 15 / 100
    };
    let since = mtimes.iter().map(|m| m.0).find(|t| fits(*t));
    let since = since.unwrap();
    let d = since.duration_since(std::time::UNIX_EPOCH).unwrap();
    let o = Command::new("date")
        .arg("-u")
        .arg("-d")
        .arg(format!("@{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .arg("+%Y-%m-%dT%H:%M:%S.%NZ")
        .output()
        .unwrap();
    let t = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let (code, out) = s.offsite(&["restore", "rec", "--to-dir", dest.to_str().unwrap(), "--since", &t]);
    assert_eq!(code, 0, "{out}");
    let want: Vec<&(std::time::SystemTime, String, u64)> = mtimes.iter().filter(|m| m.0 >= since).collect();
    let mut got = vec![];
    tree_files(&dest, &mut got);
    assert_eq!(got.len(), want.len(), "restored {got:?}");
    for (m, path, _) in want {
        let p = dest.join(path.trim_start_matches('/'));
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(hex::encode(Sha256::digest(&data)), *rec.ever[path].last().unwrap(), "{path}");
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), *m, "mtime of {path}");
    }
}
