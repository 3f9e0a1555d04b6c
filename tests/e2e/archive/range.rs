//! `restore --from DEST` of an archive job reads only the selected
//! members' byte ranges (moto S3 behind a relay counting the bytes served;
//! local-dir), as restic users asked of `restore --include` (restic#1520:
//! one file's restore read the whole snapshot). A whole restore still
//! fetches each volume once. A server that ignores `Range` and answers
//! with the whole object (rclone#6980: a client that cut that body to the
//! asked length wrote the object's first bytes as the chunk) falls back to
//! the whole volume and restores the right bytes. A range damaged or cut
//! short at the destination fails those files by name, writes nothing
//! under their names and exits non-zero. Concurrent `cat --from` sharing a
//! cache never remove each other's files.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use offsite_tests::s3::{Mischief, Relay};

use super::remote::{S3Rec, s3_config, s3_rec, served};
use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn mtime_arg(p: &Path) -> String {
    let t = std::fs::metadata(p).unwrap().modified().unwrap();
    chrono_at(t.duration_since(std::time::UNIX_EPOCH).unwrap())
}

/// Every regular file under `root`, as paths relative to it.
fn rel_files(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    if root.exists() {
        tree_files(root, &mut v);
    }
    let mut r: Vec<PathBuf> = v
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    r.sort();
    r
}

/// The restored files under `to` against the source (`/`-rooted paths:
/// content, mode, uid, gid, mtime to the nanosecond) and against GNU tar's
/// extraction of the same members from the local volumes (content, mode,
/// uid, gid, mtime to the second: what a tar header holds). `want` are the
/// source paths that must be there, and nothing else.
fn assert_restored(to: &Path, want: &[PathBuf], vols: &[PathBuf], scratch: &Path) {
    let got = rel_files(to);
    let mut want_rel: Vec<PathBuf> = want
        .iter()
        .map(|p| p.strip_prefix("/").unwrap().to_path_buf())
        .collect();
    want_rel.sort();
    assert_eq!(got, want_rel, "the restored files are the selected ones");
    let tar = scratch.join(format!("tar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tar);
    std::fs::create_dir_all(&tar).unwrap();
    for v in vols {
        let mut c = Command::new("tar");
        c.arg("--zstd").arg("-xf").arg(v).arg("-C").arg(&tar);
        for rel in &got {
            c.arg(rel);
        }
        // A volume holds only some of them: tar says which it lacks.
        let _ = c.output().unwrap();
    }
    let meta = |m: &std::fs::Metadata| (m.mode() & 0o7777, m.uid(), m.gid(), m.len());
    for rel in &got {
        let (ours, src, gnu) = (to.join(rel), Path::new("/").join(rel), tar.join(rel));
        let (mo, ms, mg) = (
            std::fs::metadata(&ours).unwrap(),
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&gnu)
                .unwrap_or_else(|e| panic!("GNU tar did not extract {}: {e}", rel.display())),
        );
        let data = std::fs::read(&ours).unwrap();
        assert!(
            data == std::fs::read(&src).unwrap(),
            "{}: content",
            rel.display()
        );
        assert!(
            data == std::fs::read(&gnu).unwrap(),
            "{}: GNU tar",
            rel.display()
        );
        assert_eq!(meta(&mo), meta(&ms), "{}", rel.display());
        assert_eq!(meta(&mo), meta(&mg), "{}: GNU tar", rel.display());
        assert_eq!(
            (mo.mtime(), mo.mtime_nsec()),
            (ms.mtime(), ms.mtime_nsec()),
            "{}: mtime",
            rel.display()
        );
        assert_eq!(mo.mtime(), mg.mtime(), "{}: GNU tar's mtime", rel.display());
    }
    std::fs::remove_dir_all(&tar).unwrap();
}

fn restore(s: &Setup, to: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["restore", "rec", "--to-dir", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    s.offsite(&args)
}

/// Seed 003 after the local disk died: restoring one batch of calls, or
/// one stretch of time, from a 64 MiB volume on S3 moves those calls'
/// bytes, not the volume's; the files equal the source and GNU tar's
/// extraction. Through a relay that drops `Range` the same restore falls
/// back to the whole volume and still writes the right bytes. A whole
/// restore fetches each volume once.
#[test]
fn restore_from_s3_of_a_subset_reads_only_its_byte_ranges() {
    let S3Rec {
        moto,
        relay,
        s,
        tree,
    } = s3_rec(Mischief::Nothing, "64MiB", "1h");
    let mut rec = Recorder::new(&tree, u64::MAX, 31);
    for _ in 0..11 {
        rec.record(60, 100 * KIB as usize, 100 * KIB as usize + 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.run_ok("rec");
    // The rest is sealed and shipped too.
    s3_config(&s, &relay, &tree, "64MiB", "1s");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.run_ok("rec");
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert_eq!(vols.len(), 2, "{vols:?}");
    let vlen = std::fs::metadata(&vols[0]).unwrap().len();
    let all_len: u64 = vols
        .iter()
        .map(|v| std::fs::metadata(v).unwrap().len())
        .sum();
    assert!(vlen >= 64 * MIB, "{vlen}");
    let batch = |n: u32| -> Vec<PathBuf> {
        rec.live
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| p.to_str().unwrap().contains(&format!("/batch-{n:03}/")))
            .collect()
    };

    // One batch by --match: 60 calls of 100 KiB.
    let to = s.root().join("r-match");
    let before = served(&relay);
    let t0 = std::time::Instant::now();
    let (code, out) = restore(&s, &to, &["--from", "s3", "--match", "/*/batch-007/*"]);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{out}");
    let moved = served(&relay) - before;
    let want = batch(7);
    assert_eq!(want.len(), 60);
    let content = 60 * 100 * KIB;
    eprintln!(
        "restore --match of {content} bytes from a {vlen}-byte volume: {moved} bytes served in {took:?}"
    );
    assert!(
        moved >= content && moved < content + MIB && moved < vlen / 8,
        "restoring {content} bytes of a {vlen}-byte volume moved {moved} bytes: {out}"
    );
    assert!(out.contains("read 0 volumes whole"), "{out}");
    assert_restored(&to, &want, &vols, s.root());
    assert!(
        rel_files(&s.job_dir("rec").join("cache")).is_empty(),
        "ranges leave nothing in the cache"
    );

    // One stretch of time by --since/--until: batch 9.
    let b9 = batch(9);
    let to = s.root().join("r-since");
    let before = served(&relay);
    let (code, out) = restore(
        &s,
        &to,
        &[
            "--from",
            "s3",
            "--since",
            &mtime_arg(&b9[0]),
            "--until",
            &mtime_arg(&b9[59]),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let moved = served(&relay) - before;
    assert!(
        moved >= content && moved < content + MIB,
        "restoring batch 9 moved {moved} bytes: {out}"
    );
    assert_restored(&to, &b9, &vols, s.root());

    // A server that ignores Range: the whole volume, the right bytes.
    let deaf = Relay::start(moto.port, Mischief::DropRange);
    s3_config(&s, &deaf, &tree, "64MiB", "1h");
    let to = s.root().join("r-deaf");
    let (code, out) = restore(&s, &to, &["--from", "s3", "--match", "/*/batch-005/*"]);
    assert_eq!(code, 0, "{out}");
    assert!(served(&deaf) >= vlen, "{} bytes: {out}", served(&deaf));
    assert!(out.contains("read 1 volumes whole"), "{out}");
    assert_restored(&to, &batch(5), &vols, s.root());
    std::fs::remove_dir_all(s.job_dir("rec").join("cache")).unwrap();

    // Everything: each volume whole, once.
    s3_config(&s, &relay, &tree, "64MiB", "1h");
    let to = s.root().join("r-all");
    let before = served(&relay);
    let (code, out) = restore(&s, &to, &["--from", "s3"]);
    assert_eq!(code, 0, "{out}");
    let moved = served(&relay) - before;
    assert!(
        moved >= all_len && moved < all_len + 256 * KIB,
        "a whole restore of {all_len} bytes of volumes moved {moved}: {out}"
    );
    assert!(
        out.contains("read 2 volumes whole and 0 byte ranges"),
        "{out}"
    );
    let every: Vec<PathBuf> = rec.live.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(every.len(), 660);
    assert_restored(&to, &every, &vols, s.root());
}

/// (path, volume, offset, clen) of every member of a sealed volume, in
/// volume order.
fn members(s: &Setup) -> Vec<(String, String, u64, u64)> {
    let db = rusqlite::Connection::open(s.job_dir("rec").join("catalog.sqlite")).unwrap();
    let mut st = db
        .prepare(
            "SELECT p.path, v.name, m.offset, m.clen FROM members m JOIN paths p ON p.id = m.path_id
             JOIN volumes v ON v.id = m.volume_id WHERE v.state = 'sealed' ORDER BY v.seq, m.offset",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            String::from_utf8(r.get::<_, Vec<u8>>(0)?).unwrap(),
            r.get(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)? as u64,
        ))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// At the local-dir destination one member's bytes are damaged (in the
/// middle of a span of neighbours) and another volume is cut short inside
/// a member: `restore --from nas` restores every other file, names the two
/// that fail, leaves nothing under their names (nor a temporary file) and
/// exits non-zero.
#[test]
fn restore_from_a_damaged_or_short_copy_fails_those_files_by_name() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    let nas = config(&s, &tree, "4MiB", "1h");
    let mut rec = Recorder::new(&tree, u64::MAX, 37);
    rec.record(100, 100 * KIB as usize, 100 * KIB as usize + 1);
    s.run_ok("rec");
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert!(vols.len() >= 2, "{vols:?}");
    let all = members(&s);
    let name_of = |p: &str| p.rsplit('/').next().unwrap().to_string();
    // The selection: call-001-010..019 and 050..059.
    let picked: Vec<&(String, String, u64, u64)> = all
        .iter()
        .filter(|m| {
            let n = name_of(&m.0);
            n.starts_with("call-001-01") || n.starts_with("call-001-05")
        })
        .collect();
    assert_eq!(picked.len(), 20);
    let vol_a = &picked[0].1;
    let vol_b = &picked[19].1;
    assert_ne!(vol_a, vol_b, "the two groups lie in two volumes");
    // Damaged: the middle of call-001-015 at nas.
    let bad = picked
        .iter()
        .find(|m| name_of(&m.0) == "call-001-015.wav")
        .unwrap();
    assert_eq!(&bad.1, vol_a);
    let shipped_a = walk_find(&nas, vol_a).unwrap();
    let mut bytes = std::fs::read(&shipped_a).unwrap();
    bytes[(bad.2 + bad.3 / 2) as usize] ^= 0x5a;
    std::fs::write(&shipped_a, &bytes).unwrap();
    // Cut short: volume B at nas ends inside call-001-057.
    let cut = picked
        .iter()
        .find(|m| name_of(&m.0) == "call-001-057.wav")
        .unwrap();
    assert_eq!(&cut.1, vol_b);
    let shipped_b = walk_find(&nas, vol_b).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shipped_b)
        .unwrap();
    f.set_len(cut.2 + cut.3 / 2).unwrap();
    drop(f);

    let to = s.root().join("r");
    let (code, out) = restore(
        &s,
        &to,
        &[
            "--from",
            "nas",
            "--match",
            "/*/batch-001/call-001-0[15]?.wav",
        ],
    );
    assert_ne!(code, 0, "a restore with damaged files must fail: {out}");
    // Lost: the damaged member, and in volume B every picked member the
    // cut reaches (the object ends inside or before them).
    let end_b = cut.2 + cut.3 / 2;
    let mut lost: Vec<&str> = vec![bad.0.as_str()];
    lost.extend(
        picked
            .iter()
            .filter(|m| m.1 == *vol_b && m.2 + m.3 > end_b)
            .map(|m| m.0.as_str()),
    );
    assert_eq!(lost.len(), 4, "057, 058 and 059 are past the cut: {lost:?}");
    for p in &lost {
        assert!(out.contains(p), "the failure names {p}: {out}");
    }
    assert!(out.contains("4 of 20 files were not restored"), "{out}");
    assert!(out.contains("sha256"), "{out}");
    assert!(out.contains("short"), "{out}");
    let want: Vec<PathBuf> = picked
        .iter()
        .filter(|m| !lost.contains(&m.0.as_str()))
        .map(|m| PathBuf::from(&m.0))
        .collect();
    assert_restored(&to, &want, &vols, s.root());
    let mut leftovers = vec![];
    tree_files(&to, &mut leftovers);
    assert!(
        leftovers
            .iter()
            .all(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.')),
        "no temporary file is left: {leftovers:?}"
    );
}

/// Spawn `offsite cat rec PATH --from s3` for each path, `stagger` apart
/// (so one's eviction falls into another's transfer); each must succeed
/// with the file's bytes.
fn cats_at_once(s: &Setup, paths: &[&String], rec: &Recorder, what: &str) {
    let stagger = std::time::Duration::from_millis(30);
    let kids: Vec<(String, std::process::Child)> = paths
        .iter()
        .map(|p| {
            let c = s
                .command(&["cat", "rec", "--from", "s3"])
                .arg(OsStr::from_bytes(p.as_bytes()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(stagger);
            (p.to_string(), c)
        })
        .collect();
    for (p, c) in kids {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{what}: cat {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            hex::encode(Sha256::digest(&o.stdout)),
            *rec.ever[&p].last().unwrap(),
            "{what}: {p}"
        );
    }
}

/// One cache bounded to 2 MiB (two 1 MiB volumes), files of 1.5 MiB: any
/// two fetches at once must make room. What another process holds — a
/// fetch in progress (its temporary file, locked), a cached volume being
/// read (shared lock) — is never removed; a dead process's temporary file
/// (no lock) is. Then four `cat --from s3` at a time, started 30 ms apart,
/// ranged; and through a relay that drops `Range`, four whole volumes
/// fetched into the cache at a time.
#[test]
fn concurrent_cats_sharing_a_cache_never_remove_each_others_files() {
    let S3Rec {
        moto,
        relay: _relay,
        s,
        tree,
    } = s3_rec(Mischief::Nothing, "1MiB", "1s");
    let mut rec = Recorder::new(&tree, u64::MAX, 41);
    rec.record(12, 1536 * KIB as usize, 1536 * KIB as usize + 1);
    s.run_ok("rec");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.run_ok("rec");
    let found = find_json(&s, "*");
    assert!(
        found.iter().all(|f| f["volume_state"] == "sealed"),
        "{found:?}"
    );
    let every: Vec<&String> = rec.ever.keys().collect();
    assert!(every.len() == 12);

    // Another process's files, as it holds them (flock), and debris.
    let cache = s.job_dir("rec").join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let fill = |name: &str, len: u64| {
        let p = cache.join(name);
        std::fs::write(&p, vec![0u8; len as usize]).unwrap();
        p
    };
    let in_flight = fill(".tmp-4194304-0-range-rec.vol-000001.tar.zst", MIB);
    let reading = fill("rec.vol-000009.tar.zst", MIB);
    let debris = fill(".tmp-4194305-0-rec.vol-000002.tar.zst", MIB);
    let w = std::fs::File::open(&in_flight).unwrap();
    w.lock().unwrap();
    let r = std::fs::File::open(&reading).unwrap();
    r.lock_shared().unwrap();
    cats_at_once(&s, &every[..1], &rec, "beside held files");
    assert!(in_flight.exists(), "a fetch in progress was evicted");
    assert!(reading.exists(), "a volume being read was evicted");
    assert!(!debris.exists(), "a dead process's temporary file stays");
    drop((w, r));

    for round in 0..3 {
        let four: Vec<&String> = every.iter().skip(round * 4).take(4).copied().collect();
        cats_at_once(&s, &four, &rec, "ranges");
    }
    let deaf = Relay::start(moto.port, Mischief::DropRange);
    s3_config(&s, &deaf, &tree, "1MiB", "1h");
    for round in 0..2 {
        let _ = std::fs::remove_dir_all(&cache);
        let four: Vec<&String> = every.iter().skip(round * 4).take(4).copied().collect();
        cats_at_once(&s, &four, &rec, "whole volumes");
    }
}
