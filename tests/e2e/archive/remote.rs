//! Archive mode read back from S3 (moto behind a relay that counts the
//! bytes it serves): `cat` transfers only the member's byte range; a member
//! whose bytes do not hash to the catalog's sha256 is an error with nothing
//! written; the recorder's 20 runs all come back from moto and restore into
//! a small tmpfs from there; Latin-1 file names; the `archive-lag` notice
//! kind.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use offsite_tests::s3::{Mischief, Moto, Relay};
use offsite_tests::sinks::HttpSink;

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A job `rec` archiving `tree` to `s3` (through `relay`) and `nas`.
pub(super) fn s3_config(
    s: &Setup,
    relay: &Relay,
    tree: &Path,
    volume_size: &str,
    seal_after: &str,
) {
    let s3 = format!(
        r#"
[destinations.s3]
plugin = "s3"
endpoint = "{}"
region = "us-east-1"
bucket = "calls"
access_key_id = "testing"
secret_access_key = "testing"
"#,
        relay.endpoint()
    );
    rec_config(s, tree, volume_size, seal_after, &s3, r#""s3", "nas""#);
}

/// A job `rec` archiving the tree `calls` of a fresh [`Setup`] to `nas`
/// and to a bucket `calls` of moto behind a relay doing `mischief`.
pub(super) struct S3Rec {
    pub s: Setup,
    pub tree: PathBuf,
    pub relay: Relay,
    pub moto: Moto,
}

pub(super) fn s3_rec(mischief: Mischief, volume_size: &str, seal_after: &str) -> S3Rec {
    let moto = Moto::start();
    moto.create_bucket("calls");
    let relay = Relay::start(moto.port, mischief);
    let s = Setup::new(&["offsite_s3", "offsite_local_dir"]);
    let tree = s.dir("calls");
    s3_config(&s, &relay, &tree, volume_size, seal_after);
    S3Rec {
        s,
        tree,
        relay,
        moto,
    }
}

/// Body bytes the relay has served so far.
pub(super) fn served(relay: &Relay) -> u64 {
    relay.log.body_bytes_out.load(Ordering::SeqCst)
}

/// `offsite cat ARGS PATH` with PATH as bytes: (exit code, stdout, stderr).
fn cat_bytes(s: &Setup, args: &[&str], path: &[u8]) -> (i32, Vec<u8>, String) {
    let o = s
        .command(args)
        .arg(OsStr::from_bytes(path))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn files_in(d: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    if d.exists() {
        tree_files(d, &mut v);
    }
    v
}

/// The issue's measure through `offsite cat`: a 100 KiB member of a 64 MiB
/// volume read `--from s3` costs well under 2 MiB on the wire, comes back
/// byte-identical and leaves nothing in the cache. A member whose catalog
/// sha256 no longer matches (or whose bytes at the destination were
/// damaged) is an error naming it, and not a byte reaches stdout.
#[test]
fn cat_from_s3_reads_only_the_members_byte_range_and_checks_it_first() {
    let S3Rec {
        s,
        tree,
        relay,
        moto: _moto,
    } = s3_rec(Mischief::Nothing, "64MiB", "1h");
    let mut rec = Recorder::new(&tree, u64::MAX, 21);
    rec.record(660, 100 * KIB as usize, 100 * KIB as usize + 1);
    s.run_ok("rec");
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    assert_eq!(vols.len(), 1, "{vols:?}");
    let vlen = std::fs::metadata(&vols[0]).unwrap().len();
    assert!(vlen >= 64 * MIB, "the volume is {vlen} bytes");
    let found: Vec<Value> = find_json(&s, "*")
        .into_iter()
        .filter(|f| f["volume_state"] == "sealed")
        .collect();
    let one = &found[found.len() / 2];
    let path = one["path"].as_str().unwrap();
    let before = served(&relay);
    let (code, out, err) = cat_bytes(&s, &["cat", "rec", "--from", "s3"], path.as_bytes());
    assert_eq!(code, 0, "{err}");
    let moved = served(&relay) - before;
    assert_eq!(out.len() as u64, 100 * KIB);
    assert_eq!(hex::encode(Sha256::digest(&out)), one["sha256"]);
    assert!(
        moved < 2 * MIB,
        "cat of a 100 KiB member of a {vlen}-byte volume moved {moved} bytes"
    );
    assert!(moved >= 100 * KIB, "{moved} bytes cannot hold the member");
    assert!(
        files_in(&s.job_dir("rec").join("cache")).is_empty(),
        "a ranged read leaves nothing behind"
    );

    // The catalog's sha256 of another member no longer matches its bytes:
    // refused from s3 and locally, nothing written.
    let other = found[7]["path"].as_str().unwrap();
    let db = rusqlite::Connection::open(s.job_dir("rec").join("catalog.sqlite")).unwrap();
    let n = db
        .execute(
            "UPDATE members SET sha256 = ?1 WHERE path_id = (SELECT id FROM paths WHERE path = ?2)",
            rusqlite::params!["0".repeat(64), other.as_bytes()],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    for args in [&["cat", "rec", "--from", "s3"][..], &["cat", "rec"][..]] {
        let (code, out, err) = cat_bytes(&s, args, other.as_bytes());
        assert_ne!(code, 0, "{args:?} of a member that does not match: {err}");
        assert!(out.is_empty(), "{args:?} wrote {} bytes", out.len());
        assert!(err.contains("sha256") && err.contains(other), "{err}");
    }

    // The copy at nas is damaged inside a member's bytes: refused.
    let third = &found[found.len() - 3];
    let (offset, name) = {
        let db = rusqlite::Connection::open(s.job_dir("rec").join("catalog.sqlite")).unwrap();
        db.query_row(
            "SELECT m.offset + m.clen / 2 FROM members m JOIN paths p ON p.id = m.path_id WHERE p.path = ?1",
            [third["path"].as_str().unwrap().as_bytes()],
            |r| r.get::<_, i64>(0),
        )
        .map(|o| (o as u64, vols[0].file_name().unwrap().to_owned()))
        .unwrap()
    };
    let shipped = walk_find(&s.dir("nas"), name.to_str().unwrap()).unwrap();
    let mut bytes = std::fs::read(&shipped).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(&shipped, &bytes).unwrap();
    let p = third["path"].as_str().unwrap();
    let (code, out, err) = cat_bytes(&s, &["cat", "rec", "--from", "nas"], p.as_bytes());
    assert_ne!(code, 0, "a damaged member must fail: {err}");
    assert!(
        out.is_empty(),
        "wrote {} bytes of a damaged member",
        out.len()
    );
    assert!(err.contains(p), "{err}");
    // The local volume is intact: the same file reads back.
    let (code, out, err) = cat_bytes(&s, &["cat", "rec"], p.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(hex::encode(Sha256::digest(&out)), third["sha256"]);
}

/// The issue's recorder, from moto: 20 runs into 8 MiB volumes shipped to
/// S3; every file that ever existed is found and comes back byte-identical
/// with `cat --from s3`; a whole `restore --from s3` into a tmpfs holding
/// 20 % of the total is refused before writing; `--since` the newest that
/// fit succeeds there, byte-identical, deleted files included.
#[test]
fn recorder_from_moto_every_file_and_a_restore_into_a_small_tmpfs() {
    let S3Rec {
        s,
        tree,
        relay,
        moto: _moto,
    } = s3_rec(Mischief::Nothing, "8MiB", "1h");
    let mut rec = Recorder::new(&tree, 10 << 20, 17);
    let mut mtimes: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
    for _ in 0..20 {
        rec.record(12, 60_000, 140_000);
        for (p, _) in rec.live.iter().rev().take(12) {
            let m = std::fs::metadata(p).unwrap().modified().unwrap();
            mtimes.insert(p.display().to_string(), m);
        }
        s.run_ok("rec");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What is still open is sealed and shipped too.
    s3_config(&s, &relay, &tree, "8MiB", "1s");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.run_ok("rec");
    let found = find_json(&s, "*");
    assert!(
        found
            .iter()
            .all(|f| f["volume_state"] == "sealed" && f["destinations"][1] == "s3"),
        "every volume sealed and at s3"
    );
    let paths: std::collections::BTreeSet<&str> =
        found.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        rec.ever.keys().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(rec.ever.len() > rec.live.len() + 50, "the recorder deleted");
    let before = served(&relay);
    let mut content = 0u64;
    for (path, shas) in &rec.ever {
        let (code, out, err) = cat_bytes(&s, &["cat", "rec", "--from", "s3"], path.as_bytes());
        assert_eq!(code, 0, "{path}: {err}");
        assert_eq!(
            hex::encode(Sha256::digest(&out)),
            *shas.last().unwrap(),
            "{path}"
        );
        content += out.len() as u64;
    }
    let moved = served(&relay) - before;
    assert!(
        moved < content + content / 10,
        "reading {content} bytes of files from s3 moved {moved}"
    );

    // Restore from s3 into 20 % of the total: what a whole restore writes
    // is each path's newest version.
    let newest: BTreeMap<&str, u64> = found
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["size"].as_u64().unwrap()))
        .collect();
    let total: u64 = newest.values().sum();
    let target = s.root().join("small");
    let _fs = Tmpfs::mount(&target, &(total / 5).to_string());
    let dest = target.join("restore");
    let to = dest.to_str().unwrap();
    let (code, out) = s.offsite(&["restore", "rec", "--to-dir", to, "--from", "s3"]);
    assert_ne!(code, 0, "a whole restore into 20 % must be refused: {out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert!(files_in(&dest).is_empty(), "a refused restore wrote files");
    // The newest files that fit in 15 % of the total (block-rounded).
    let mut by_time: Vec<(std::time::SystemTime, &String)> =
        mtimes.iter().map(|(p, t)| (*t, p)).collect();
    by_time.sort();
    let mut used = 0;
    let mut since = by_time.last().unwrap().0;
    for (t, p) in by_time.iter().rev() {
        used += newest[p.as_str()].div_ceil(4096) * 4096;
        if used > total * 15 / 100 {
            break;
        }
        since = *t;
    }
    let want: Vec<&String> = by_time
        .iter()
        .filter(|(t, _)| *t >= since)
        .map(|(_, p)| *p)
        .collect();
    let d = since.duration_since(std::time::UNIX_EPOCH).unwrap();
    let t = chrono_at(d);
    let (code, out) = s.offsite(&[
        "restore", "rec", "--to-dir", to, "--from", "s3", "--since", &t,
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files_in(&dest).len(), want.len(), "{out}");
    for p in want {
        let data = std::fs::read(dest.join(p.trim_start_matches('/'))).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            *rec.ever[p].last().unwrap(),
            "{p}"
        );
    }
}

/// A recorder that names its files in Latin-1 (not UTF-8): found by a
/// Latin-1 glob, listed with their bytes in `path_b64`, read back by `cat`
/// given the same bytes, also after the file left the source; GNU tar
/// extracts the same bytes under the same name.
#[test]
fn latin1_file_names_are_found_and_read_back_byte_for_byte() {
    use base64::Engine;
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    config(&s, &tree, "8MiB", "1s");
    let dir = tree.join(OsStr::from_bytes(b"Anrufe-M\xfcller"));
    std::fs::create_dir_all(&dir).unwrap();
    let name = b"Gespr\xe4ch-001.wav";
    let file = dir.join(OsStr::from_bytes(name));
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    std::fs::write(dir.join("plain.wav"), b"plain").unwrap();
    s.run_ok("rec");
    let o = s
        .command(&["find", "rec", "--json"])
        .arg(OsStr::from_bytes(b"Gespr\xe4ch*"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let found: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(found[0]["path_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, file.as_os_str().as_bytes());
    let (code, out, err) = cat_bytes(&s, &["cat", "rec"], &raw);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, data);
    // Gone from the source, sealed: still there, and GNU tar agrees.
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.run_ok("rec");
    let (code, out, err) = cat_bytes(&s, &["cat", "rec", "--from", "nas"], &raw);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, data);
    let x = s.dir("x");
    let vols = sealed_volumes(&s.job_dir("rec").join("volumes"));
    gnu_tar_extract(&vols[0], &x);
    let rel = Path::new(OsStr::from_bytes(&raw[1..]));
    assert_eq!(std::fs::read(x.join(rel)).unwrap(), data);
}

/// `archive-lag` is a notice kind of its own: `on = ["archive-lag"]` is
/// accepted and hears it (delivered over the plugin contract as kind
/// `failure` with a summary starting `archive-lag:`, the contract having no
/// such kind); a notifier on `success` only does not; a misspelt kind is
/// refused naming the accepted ones.
#[test]
fn archive_lag_is_a_notice_kind_notifiers_subscribe_to() {
    let lag = HttpSink::start();
    let ok = HttpSink::start();
    let s = Setup::new(&["offsite_webhook"]);
    let tree = s.dir("calls");
    let write = |on: &str| {
        s.write_config(&format!(
            r#"
[notifiers.lag]
plugin = "webhook"
url = "{}"
on = [{on}]

[notifiers.ok]
plugin = "webhook"
url = "{}"
on = ["success"]

[jobs.rec]
source = "archive"
paths = ["{}"]
volume_size = "1MiB"
seal_after = "1s"
archive_lag = "1s"
destinations = []
notifiers = ["lag", "ok"]
"#,
            lag.url("/lag"),
            ok.url("/ok"),
            tree.display()
        ))
    };
    write("\"archive-lagg\"");
    let (code, out) = s.offsite(&["config", "check"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("archive-lagg") && out.contains("archive-lag, wal-lag"),
        "{out}"
    );
    write("\"archive-lag\", \"wal-lag\"");
    let mut rec = Recorder::new(&tree, u64::MAX, 23);
    rec.record(3, 1000, 2000);
    let _ = s.run("rec");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let _ = s.run("rec");
    let heard: Vec<Value> = lag.requests().iter().map(|r| r.json()).collect();
    assert!(
        heard.iter().any(|b| b["kind"] == "failure"
            && b["summary"].as_str().unwrap().starts_with("archive-lag:")),
        "{heard:?}"
    );
    assert!(
        heard
            .iter()
            .all(|b| b["summary"].as_str().unwrap().starts_with("archive-lag:")),
        "the lag notifier hears only what it asked for: {heard:?}"
    );
    assert!(
        ok.requests().iter().all(|r| !r.json()["summary"]
            .as_str()
            .unwrap()
            .starts_with("archive-lag")),
        "a success-only notifier does not hear archive-lag"
    );
}
