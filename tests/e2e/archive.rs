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
use offsite_tests::tmpfs::Tmpfs;
use rand::{Rng, SeedableRng};

#[path = "archive/range.rs"]
mod range;
#[path = "archive/remote.rs"]
mod remote;
#[path = "archive/scale.rs"]
mod scale;
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
        self.ever
            .entry(p.display().to_string())
            .or_default()
            .push(sha);
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
    rec_config(s, tree, volume_size, seal_after, "", r#""nas""#)
}

/// The job `rec` archiving `tree` to `dests` (TOML strings): the local-dir
/// destination `nas` (its folder returned) and those the TOML tables `more`
/// declare.
fn rec_config(
    s: &Setup,
    tree: &Path,
    volume_size: &str,
    seal_after: &str,
    more: &str,
    dests: &str,
) -> PathBuf {
    let nas = s.dir("nas");
    s.write_config(&format!(
        r#"
{more}
[destinations.nas]
plugin = "local-dir"
path = "{}"

[jobs.rec]
source = "archive"
paths = ["{}"]
volume_size = "{volume_size}"
seal_after = "{seal_after}"
level = 1
destinations = [{dests}]
"#,
        nas.display(),
        tree.display()
    ));
    nas
}

/// GNU tar extracts the volume `vol` (zstd) into `into`, or the test fails.
fn gnu_tar_extract(vol: &Path, into: &Path) {
    let o = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(vol)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// RFC 3339 with nanoseconds of a time since the epoch (GNU date).
fn chrono_at(d: std::time::Duration) -> String {
    let o = Command::new("date")
        .arg("-u")
        .arg("-d")
        .arg(format!("@{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .arg("+%Y-%m-%dT%H:%M:%S.%NZ")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn find_json(s: &Setup, pattern: &str) -> Vec<Value> {
    let o = s.output(&["find", "rec", pattern, "--json"]);
    assert!(
        o.status.success(),
        "find: {}",
        offsite_tests::proc::text(&o)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "find --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    v.as_array().unwrap().clone()
}

fn cat_sha(s: &Setup, args: &[&str]) -> String {
    let o = s.output(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        offsite_tests::proc::text(&o)
    );
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
        by_path
            .entry(f["path"].as_str().unwrap().to_string())
            .or_default()
            .push(f);
    }
    assert_eq!(
        by_path.keys().collect::<Vec<_>>(),
        rec.ever.keys().collect::<Vec<_>>(),
        "find must list every file that ever existed"
    );
    let mut gone = 0;
    for (path, shas) in &rec.ever {
        let versions = &by_path[path];
        let got: Vec<&str> = versions
            .iter()
            .map(|v| v["sha256"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = shas.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{path}: the versions find lists");
        assert_eq!(
            cat_sha(&s, &["cat", "rec", path]),
            *shas.last().unwrap(),
            "cat {path}"
        );
        if versions.last().unwrap().get("gone_at").is_some() {
            gone += 1;
        }
    }
    let deleted = rec.ever.len() - rec.live.len();
    assert_eq!(
        gone, deleted,
        "every deleted file is recorded as gone, no more"
    );
    // The rewritten file's first version, by time.
    let path = rewritten.unwrap();
    let at = before_rewrite.unwrap();
    assert_eq!(
        cat_sha(&s, &["cat", "rec", &path, "--at", &at]),
        rec.ever[&path][0]
    );
    volumes_are_gnu_tar_and_shipped(&s, &nas, &rec);
}

/// Every sealed volume of the recorder's job stays under volume_size, is a
/// `.tar.zst` GNU tar lists (with its catalog slice) and was shipped
/// byte-identical to `nas`; GNU tar extracts the first one byte-identical to
/// what was recorded.
fn volumes_are_gnu_tar_and_shipped(s: &Setup, nas: &Path, rec: &Recorder) {
    // Volumes: sealed at 8 MiB, each a .tar.zst GNU tar lists.
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert!(
        vols.len() >= 3,
        "expected several sealed volumes, got {vols:?}"
    );
    for v in &vols {
        let len = std::fs::metadata(v).unwrap().len();
        assert!(
            len < (8 << 20) + (1 << 20),
            "{} is {len} bytes, past volume_size",
            v.display()
        );
        let o = Command::new("tar")
            .arg("--zstd")
            .arg("-tf")
            .arg(v)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "GNU tar cannot read {}: {}",
            v.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let names = String::from_utf8_lossy(&o.stdout);
        assert!(
            names.contains(".offsite/"),
            "no catalog slice in {}",
            v.display()
        );
        assert!(names.contains("call-"), "no recordings in {}", v.display());
        // Shipped, with its manifest, to the destination.
        let name = v.file_name().unwrap().to_str().unwrap();
        let shipped = walk_find(nas, name);
        assert_eq!(
            std::fs::read(shipped.unwrap()).unwrap(),
            std::fs::read(v).unwrap()
        );
    }
    // GNU tar extracts a volume's files byte-identical to cat's.
    let out = s.dir("gnu-tar");
    gnu_tar_extract(&vols[0], &out);
    let mut checked = 0;
    for (path, shas) in &rec.ever {
        let p = out.join(path.trim_start_matches('/'));
        if p.exists() && shas.len() == 1 {
            assert_eq!(
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
                shas[0]
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "GNU tar's extraction of the first volume held {checked} recordings"
    );
}

/// Now, RFC 3339 with nanoseconds (GNU date).
fn chrono_now() -> String {
    let o = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%S.%NZ")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn sealed_volumes(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(".tar.zst")
                && !p.file_name().unwrap().to_str().unwrap().starts_with('.')
        })
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
    assert!(
        before.iter().all(|f| f["volume_state"] == "sealed"),
        "all sealed before the rebuild"
    );
    assert!(
        before.iter().any(|f| f.get("gone_at").is_some()),
        "some files are gone"
    );
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
    let _fs = Tmpfs::mount(&target, &(total / 5).to_string());
    let dest = target.join("restore");
    let (code, out) = s.offsite(&["restore", "rec", "--to-dir", dest.to_str().unwrap()]);
    assert_ne!(
        code, 0,
        "a whole restore into 20 % of the space must be refused: {out}"
    );
    assert!(
        out.contains("nothing was written") && out.contains("free"),
        "{out}"
    );
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
        let used: u64 = mtimes
            .iter()
            .filter(|m| m.0 >= t)
            .map(|m| m.2.div_ceil(4096) * 4096)
            .sum();
        used <= total * 15 / 100
    };
    let since = mtimes.iter().map(|m| m.0).find(|t| fits(*t));
    let since = since.unwrap();
    let d = since.duration_since(std::time::UNIX_EPOCH).unwrap();
    let t = chrono_at(d);
    let (code, out) = s.offsite(&[
        "restore",
        "rec",
        "--to-dir",
        dest.to_str().unwrap(),
        "--since",
        &t,
    ]);
    assert_eq!(code, 0, "{out}");
    let want: Vec<&(std::time::SystemTime, String, u64)> =
        mtimes.iter().filter(|m| m.0 >= since).collect();
    let mut got = vec![];
    tree_files(&dest, &mut got);
    assert_eq!(got.len(), want.len(), "restored {got:?}");
    for (m, path, _) in want {
        let p = dest.join(path.trim_start_matches('/'));
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            *rec.ever[path].last().unwrap(),
            "{path}"
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            *m,
            "mtime of {path}"
        );
    }
}

fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The local volumes gone (a dead disk): `cat` reads each file from the
/// destination's copy through a cache bounded to two volumes, and
/// `restore --from` brings the files back byte-identical.
#[test]
fn cat_and_restore_from_a_destination_when_the_local_volumes_are_gone() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    config(&s, &tree, "1MiB", "1h");
    let mut rec = Recorder::new(&tree, 2 << 20, 5);
    for _ in 0..6 {
        rec.record(10, 20_000, 60_000);
        s.run_ok("rec");
    }
    let found = find_json(&s, "*");
    let sealed: Vec<&Value> = found
        .iter()
        .filter(|f| f["volume_state"] == "sealed")
        .collect();
    assert!(
        sealed.len() > 20,
        "expected sealed members, got {}",
        sealed.len()
    );
    for v in sealed_volumes(&s.job_dir("rec").join("volumes")) {
        std::fs::remove_file(&v).unwrap();
    }
    let cache = s.job_dir("rec").join("cache");
    for f in &sealed {
        let path = f["path"].as_str().unwrap();
        assert_eq!(
            cat_sha(&s, &["cat", "rec", path]),
            f["sha256"].as_str().unwrap(),
            "cat {path} via nas"
        );
        assert!(
            dir_bytes(&cache) <= (2 << 20) + (256 << 10),
            "the cache grew past two volumes: {}",
            dir_bytes(&cache)
        );
    }
    let out = s.root().join("restored");
    let (code, text) = s.offsite(&[
        "restore",
        "rec",
        "--to-dir",
        out.to_str().unwrap(),
        "--from",
        "nas",
        "--match",
        "/*/batch-00[12]/*",
    ]);
    assert_eq!(code, 0, "{text}");
    let mut got = vec![];
    tree_files(&out, &mut got);
    let want: Vec<&String> = rec
        .ever
        .keys()
        .filter(|k| k.contains("/batch-001/") || k.contains("/batch-002/"))
        .collect();
    assert_eq!(got.len(), want.len());
    for k in want {
        let data = std::fs::read(out.join(k.trim_start_matches('/'))).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            *rec.ever[k].last().unwrap()
        );
    }
    // A destination the job does not have is named as such.
    let (code, text) = s.offsite(&["cat", "rec", "/x", "--from", "nope"]);
    assert_ne!(code, 0);
    assert!(text.contains("not a destination of job rec"), "{text}");
}

/// archive_keep: a volume whose members are all older goes from the
/// destination and locally once its copy is confirmed there; never while a
/// destination lacks its copy. `list` shows the volumes, the open fill, the
/// unprotected files and the lag. An empty tree root fails the run.
#[test]
fn archive_keep_waits_for_every_copy_and_list_shows_the_lag() {
    let s = Setup::new(&["offsite_local_dir", "offsite_s3"]);
    let tree = s.dir("calls");
    let nas = s.dir("nas");
    let dead = offsite_tests::proc::free_port();
    let write = |dests: &str| {
        s.write_config(&format!(
            r#"
[destinations.nas]
plugin = "local-dir"
path = "{}"

[destinations.down]
plugin = "s3"
endpoint = "http://127.0.0.1:{dead}"
region = "us-east-1"
bucket = "b"
access_key_id = "k"
secret_access_key = "s"

[jobs.rec]
source = "archive"
paths = ["{}"]
volume_size = "1MiB"
seal_after = "1s"
archive_keep = "400d"
archive_lag = "1s"
destinations = [{dests}]
"#,
            nas.display(),
            tree.display()
        ))
    };
    write("\"nas\", \"down\"");
    let mut rec = Recorder::new(&tree, 100 << 20, 9);
    rec.record(5, 1000, 5000);
    let old = 1_600_000_000; // 2020: past archive_keep
    for (p, _) in &rec.live {
        offsite_tests::jobs::set_mtime(p, old);
    }
    s.run_ok("rec");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = s.run("rec");
    assert_ne!(code, 0, "{out}");
    let vol1 = "rec.vol-000001.tar.zst";
    assert!(walk_find(&nas, vol1).is_some(), "sealed and shipped to nas");
    assert!(
        s.job_dir("rec").join("volumes").join(vol1).exists(),
        "kept: `down` has no copy"
    );
    let l = s.list_json("rec");
    let a = &l[0]["archive"];
    assert_eq!(a["volumes"][0]["copies"]["nas"], "done", "{a}");
    assert_ne!(a["volumes"][0]["copies"]["down"], "done", "{a}");
    assert_eq!(a["unprotected"]["files"], 0, "every file is at nas: {a}");
    // Without the dead destination the copy is confirmed everywhere: it goes.
    write("\"nas\"");
    rec.record(3, 1000, 2000);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = s.run_ok("rec");
    assert!(walk_find(&nas, vol1).is_none(), "removed at nas: {out}");
    assert!(
        !s.job_dir("rec").join("volumes").join(vol1).exists(),
        "removed locally"
    );
    let found = find_json(&s, "*");
    assert!(
        found.iter().all(|f| f["volume"] != vol1),
        "find no longer offers removed volumes"
    );
    assert_eq!(found.len(), 3);
    // Lag: only `down` as destination; what is archived waits there.
    write("\"down\"");
    rec.record(2, 1000, 2000);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, _) = s.run("rec");
    assert_ne!(code, 0, "the only destination is down");
    let (code, text) = s.offsite(&["list", "rec"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("not yet at any destination: 5 files") && text.contains("ARCHIVE-LAG"),
        "{text}"
    );
    assert!(text.contains("open volume:"), "{text}");
    assert!(s.log().contains("archive-lag:"), "the notice is logged");
    // An empty root (an unmounted disk) is refused, nothing marked gone.
    for e in std::fs::read_dir(&tree).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let (code, out) = s.run("rec");
    assert_ne!(code, 0);
    assert!(out.contains("is empty"), "{out}");
    assert!(
        find_json(&s, "*")
            .iter()
            .all(|f| f.get("gone_at").is_none()),
        "nothing recorded as gone"
    );
}

/// Shipped to S3 (moto, through a relay that counts the bytes it serves)
/// and read back with `cat --from s3` after the local volumes are gone:
/// byte-identical; without a ranged read (here a relay that drops the
/// `Range` header, as a server that ignores it: the plugin answers
/// `unsupported`) the volume comes whole, once: a second file of the same
/// volume is served from the cache.
#[test]
fn cat_from_s3_fetches_a_volume_once_into_the_cache() {
    use offsite_tests::s3::Mischief;
    let remote::S3Rec {
        s,
        tree,
        relay,
        moto: _moto,
    } = remote::s3_rec(Mischief::DropRange, "4MiB", "1h");
    let mut rec = Recorder::new(&tree, 100 << 20, 13);
    rec.record(45, 100_000, 100_001);
    s.run_ok("rec");
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert_eq!(vols.len(), 1, "{vols:?}");
    let vlen = std::fs::metadata(&vols[0]).unwrap().len();
    std::fs::remove_file(&vols[0]).unwrap();
    let sealed: Vec<Value> = find_json(&s, "*")
        .into_iter()
        .filter(|f| f["volume_state"] == "sealed")
        .collect();
    let before = remote::served(&relay);
    let first = sealed[3]["path"].as_str().unwrap();
    assert_eq!(
        cat_sha(&s, &["cat", "rec", first, "--from", "s3"]),
        sealed[3]["sha256"].as_str().unwrap()
    );
    let one = remote::served(&relay) - before;
    assert!(
        one >= vlen && one < vlen + (64 << 10),
        "fetched {one} bytes for a {vlen}-byte volume"
    );
    let second = sealed[20]["path"].as_str().unwrap();
    assert_eq!(
        cat_sha(&s, &["cat", "rec", second, "--from", "s3"]),
        sealed[20]["sha256"].as_str().unwrap()
    );
    let two = remote::served(&relay) - before;
    assert_eq!(
        two, one,
        "the second file of the same volume comes from the cache"
    );
}
