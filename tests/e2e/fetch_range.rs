//! Ranged reads through the plugin contract (`offsite:plugin@0.2.0`'s
//! `fetch-range`, the runner's `DestinationSession::fetch_range`), per
//! plugin against the real servers, with what crossed the wire counted:
//!
//! - S3 (moto behind a counting relay): a 100 KiB range of a 64 MiB object
//!   comes back byte-identical and well under 2 MiB is served;
//! - FTP (pyftpdlib, plain and FTPS): REST + RETR, the transfer left at the
//!   range's end, the same control connection (one login) serving the next
//!   ranges, a whole fetch and a listing;
//! - local-dir: a seek, the process reading about the range, not the file;
//! - TFTP: `unsupported` (RFC 1350 has no offset), the whole fetch works;
//! - every plugin: a range running past the end is an error naming offset,
//!   length and bytes received, never a short file;
//! - a plugin built against 0.1.0 (the template as it was) still loads,
//!   ships through `offsite run`, says 0.1.0 in `plugins check`, and its
//!   ranged read is `unsupported`;
//! - a server that stops answering mid-range is stopped by the stall watch.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use offsite::plugin::{
    CallContext, Contract, DestinationSession, ErrorKind, Limits, LoadedPlugin, PluginError,
    PluginHost, Upload, settings,
};
use offsite_tests::jobs::Setup;
use offsite_tests::paths::{offsite_bin, project_root, wasm};
use offsite_tests::proc::{run, text};
use offsite_tests::s3::{Mischief, Moto, Relay};
use offsite_tests::tftp_ftp::{FtpServer, TftpKind, TftpServer};
use rand::RngCore;
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The volume size and member size of the measure.
const OBJECT: u64 = 64 * MIB;
const MEMBER: u64 = 100 * KIB;
/// An offset inside the object that is not aligned to anything.
const AT: u64 = 40 * MIB + 12_345;

// ---- helpers ---------------------------------------------------------------

fn limits(stall: Duration) -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        call_timeout: Duration::from_secs(120),
        transfer_timeout: Duration::from_secs(600),
        stall_timeout: stall,
        debug_stdio: false,
    }
}

async fn load(host: &PluginHost, file: &Path) -> Arc<LoadedPlugin> {
    Arc::new(
        host.load_file(file)
            .await
            .unwrap_or_else(|e| panic!("{} loads: {e}", file.display())),
    )
}

async fn open(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    pairs: &[(String, String)],
) -> Result<DestinationSession, PluginError> {
    let raw: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let s =
        settings::resolve(&plugin.info, &raw).unwrap_or_else(|p| panic!("settings refused: {p:?}"));
    let ctx = CallContext {
        plugin: plugin.info.name.clone(),
        instance: "range".into(),
        job: Some("calls".into()),
    };
    DestinationSession::open(host, plugin.clone(), &s, ctx).await
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `size` random bytes in `path`.
fn random_file(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create data file"));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rand::rng().fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write data file");
        left -= n as u64;
    }
    f.flush().expect("flush data file");
}

fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash file");
    hex::encode(h.finalize())
}

/// The oracle: bytes `offset .. offset + len` of the source, read directly.
fn slice_of(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![];
    f.take(len).read_to_end(&mut v).unwrap();
    v
}

/// Fetch a range into `dir` and check it is exactly the source's bytes.
async fn range_matches(
    s: &mut DestinationSession,
    name: &str,
    source: &Path,
    offset: u64,
    len: u64,
    dir: &Path,
) {
    let to = dir.join(format!("range-{offset}-{len}"));
    let n = s
        .fetch_range(name, "calls", offset, len, &to)
        .await
        .unwrap_or_else(|e| panic!("fetch_range {name} {offset}+{len}: {e}"));
    assert_eq!(n, len);
    let got = fs::read(&to).unwrap();
    assert_eq!(got.len() as u64, len, "bytes in the file");
    assert!(
        got == slice_of(source, offset, len),
        "range {offset}+{len} of {name} differs from the source"
    );
    fs::remove_file(&to).unwrap();
}

/// A range that runs `over` bytes past the end of an object of `size`: an
/// `other` error naming offset, length and what arrived, and no file left.
async fn past_the_end_is_an_error(
    s: &mut DestinationSession,
    name: &str,
    size: u64,
    over: u64,
    dir: &Path,
) {
    let (offset, len) = (size - 1000, 1000 + over);
    let to = dir.join("past-the-end");
    let e = s
        .fetch_range(name, "calls", offset, len, &to)
        .await
        .expect_err("a range past the end must fail");
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    for part in [
        format!("offset {offset}"),
        format!("length {len}"),
        "received 1000 bytes".to_string(),
    ] {
        assert!(e.message.contains(&part), "{part:?} not in: {e}");
    }
    assert!(!to.exists(), "a short range left {}", to.display());
}

/// `read_bytes`-independent count of what this process read through
/// read(2) and friends (`rchar` of /proc/self/io).
fn rchar() -> u64 {
    let io = fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

// ---- S3 ----------------------------------------------------------------------

fn s3_settings(endpoint: &str, moto: &Moto) -> Vec<(String, String)> {
    pairs(&[
        ("endpoint", endpoint),
        ("bucket", "volumes"),
        ("access_key_id", &moto.key.0),
        ("secret_access_key", &moto.key.1),
        ("prefix", "archive/"),
    ])
}

#[tokio::test]
async fn s3_range_of_a_64_mib_object_serves_well_under_2_mib() {
    let moto = Moto::start();
    moto.create_bucket("volumes");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("volume.bin");
    random_file(&src, OBJECT);
    let sha = sha256_file(&src);
    let host = PluginHost::new(None, limits(Duration::from_secs(60))).unwrap();
    let plugin = load(&host, &wasm("offsite_s3")).await;
    assert_eq!(plugin.contract, Contract::V0_2);

    let mut direct = open(&host, &plugin, &s3_settings(&moto.endpoint(), &moto))
        .await
        .unwrap();
    direct
        .upload(&Upload {
            name: "vol-0001.tar.zst",
            local_path: &src,
            size: OBJECT,
            sha256: &sha,
            job: "calls",
        })
        .await
        .expect("upload the volume");

    let relay = Relay::start(moto.port, Mischief::Nothing);
    let mut s = open(&host, &plugin, &s3_settings(&relay.endpoint(), &moto))
        .await
        .unwrap();
    let before = relay.log.body_bytes_out.load(Ordering::SeqCst);
    range_matches(&mut s, "vol-0001.tar.zst", &src, AT, MEMBER, dir.path()).await;
    let served = relay.log.body_bytes_out.load(Ordering::SeqCst) - before;
    println!("s3: a {MEMBER}-byte range of a {OBJECT}-byte object: {served} body bytes served");
    assert!(
        served < 2 * MIB,
        "{served} bytes served for a 100 KiB range"
    );
    assert!(
        served >= MEMBER,
        "{served} bytes served, fewer than the range"
    );

    // The first byte, the last byte, a range crossing a MiB boundary.
    range_matches(&mut s, "vol-0001.tar.zst", &src, 0, 1, dir.path()).await;
    range_matches(&mut s, "vol-0001.tar.zst", &src, OBJECT - 1, 1, dir.path()).await;
    range_matches(
        &mut s,
        "vol-0001.tar.zst",
        &src,
        3 * MIB - 7,
        MIB + 14,
        dir.path(),
    )
    .await;
    past_the_end_is_an_error(&mut s, "vol-0001.tar.zst", OBJECT, 500, dir.path()).await;

    let e = s
        .fetch_range("vol-9999.tar.zst", "calls", 0, 10, &dir.path().join("x"))
        .await
        .expect_err("a missing object");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // The session goes on after errors.
    range_matches(&mut s, "vol-0001.tar.zst", &src, AT, MEMBER, dir.path()).await;
}

/// An endpoint that accepts connections and never answers: the ranged read
/// is stopped by `stall_timeout`, as a whole fetch would be.
#[tokio::test]
async fn s3_range_from_a_server_that_never_answers_is_stopped_as_stalled() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        for c in silent.incoming().take(4).flatten() {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits(Duration::from_secs(1))).unwrap();
    let plugin = load(&host, &wasm("offsite_s3")).await;
    let moto_key = ("k".to_string(), "s".to_string());
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut s = open(
        &host,
        &plugin,
        &pairs(&[
            ("endpoint", &endpoint),
            ("bucket", "volumes"),
            ("access_key_id", &moto_key.0),
            ("secret_access_key", &moto_key.1),
        ]),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let e = s
        .fetch_range("vol.tar.zst", "calls", 0, MEMBER, &dir.path().join("x"))
        .await
        .expect_err("a silent server");
    assert_eq!(e.kind, ErrorKind::Stalled, "{e}");
    assert!(e.message.contains("fetch-range"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(!dir.path().join("x").exists());
    drop(held);
}

// ---- FTP -----------------------------------------------------------------------

async fn ftp_ranges(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ftp-root");
    let server = if tls {
        FtpServer::tls(&root)
    } else {
        FtpServer::plain(&root)
    };
    let src = root.join("vol-0001.tar.zst");
    random_file(&src, OBJECT);
    let small = root.join("small.bin");
    random_file(&small, 300 * KIB);
    let host = PluginHost::new(None, limits(Duration::from_secs(60))).unwrap();
    let plugin = load(&host, &wasm("offsite_ftp")).await;
    let mut s = open(&host, &plugin, &server.settings()).await.unwrap();
    let out = tempfile::tempdir().unwrap();

    // Several ranges in one session: each leaves its transfer at the range's
    // end, and the control connection stays in step for the next command.
    range_matches(&mut s, "vol-0001.tar.zst", &src, AT, MEMBER, out.path()).await;
    range_matches(&mut s, "vol-0001.tar.zst", &src, 0, 1, out.path()).await;
    range_matches(
        &mut s,
        "vol-0001.tar.zst",
        &src,
        7 * MIB + 1,
        3 * MIB,
        out.path(),
    )
    .await;
    // A range that ends exactly at the end of the file (the server closes
    // the data connection itself).
    range_matches(
        &mut s,
        "vol-0001.tar.zst",
        &src,
        OBJECT - MEMBER,
        MEMBER,
        out.path(),
    )
    .await;
    let whole = out.path().join("small.back");
    let n = s.fetch("small.bin", "calls", &whole).await.expect("fetch");
    assert_eq!(n, 300 * KIB);
    assert_eq!(sha256_file(&whole), sha256_file(&small));
    let listed = s.list("").await.expect("list");
    assert!(listed.iter().any(|o| o.name == "vol-0001.tar.zst"));
    assert_eq!(server.logins(), 1, "one login served every call");

    let log = fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        log.contains(&format!("REST {AT}")),
        "no REST {AT} in the server's log"
    );

    past_the_end_is_an_error(&mut s, "vol-0001.tar.zst", OBJECT, 500, out.path()).await;
    let e = s
        .fetch_range("nothing.bin", "calls", 0, 10, &out.path().join("x"))
        .await
        .expect_err("missing file");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    range_matches(&mut s, "vol-0001.tar.zst", &src, AT, MEMBER, out.path()).await;
}

#[tokio::test]
async fn ftp_range_is_rest_and_retr_and_the_session_goes_on() {
    ftp_ranges(false).await;
}

#[tokio::test]
async fn ftps_range_leaves_the_tls_transfer_and_the_session_goes_on() {
    ftp_ranges(true).await;
}

// ---- local-dir -------------------------------------------------------------------

#[tokio::test]
async fn local_dir_range_seeks_and_reads_only_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let nas = dir.path().join("nas");
    fs::create_dir_all(&nas).unwrap();
    let src = nas.join("vol-0001.tar.zst");
    random_file(&src, OBJECT);
    let host = PluginHost::new(None, limits(Duration::from_secs(60))).unwrap();
    let plugin = load(&host, &wasm("offsite_local_dir")).await;
    let mut s = open(&host, &plugin, &pairs(&[("path", nas.to_str().unwrap())]))
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let before = rchar();
    range_matches(&mut s, "vol-0001.tar.zst", &src, AT, MEMBER, out.path()).await;
    // The check itself reads the range (and the fetched copy) again.
    let read = rchar() - before;
    println!(
        "local-dir: a {MEMBER}-byte range of {OBJECT} bytes: {read} bytes read by the process"
    );
    assert!(read < 2 * MIB, "{read} bytes read for a 100 KiB range");
    range_matches(&mut s, "vol-0001.tar.zst", &src, OBJECT - 1, 1, out.path()).await;
    past_the_end_is_an_error(&mut s, "vol-0001.tar.zst", OBJECT, 1, out.path()).await;
    let e = s
        .fetch_range("nothing.bin", "calls", 0, 10, &out.path().join("x"))
        .await
        .expect_err("missing file");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

// ---- TFTP ------------------------------------------------------------------------

#[tokio::test]
async fn tftp_range_is_unsupported_and_the_whole_fetch_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = TftpServer::start(TftpKind::Hpa, &dir.path().join("root"));
    let src = server.root.join("vol.bin");
    random_file(&src, 2 * MIB);
    let host = PluginHost::new(None, limits(Duration::from_secs(60))).unwrap();
    let plugin = load(&host, &wasm("offsite_tftp")).await;
    let port = server.port.to_string();
    let mut s = open(
        &host,
        &plugin,
        &pairs(&[("host", "127.0.0.1"), ("port", &port)]),
    )
    .await
    .unwrap();
    let to = dir.path().join("range");
    let e = s
        .fetch_range("vol.bin", "calls", MIB, MEMBER, &to)
        .await
        .expect_err("TFTP has no offset");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("RFC 1350"), "{e}");
    assert!(!to.exists());
    // The fallback the runner takes: the whole object, same session.
    let whole = dir.path().join("whole");
    let n = s.fetch("vol.bin", "calls", &whole).await.expect("fetch");
    assert_eq!(n, 2 * MIB);
    assert_eq!(sha256_file(&whole), sha256_file(&src));
}

// ---- a 0.1.0 plugin ----------------------------------------------------------------

fn template_0_1_0() -> PathBuf {
    project_root().join("tests/fixtures/contract-0.1.0/template.wasm")
}

fn plugins_check(file: &Path) -> String {
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "check"])
        .arg(file));
    text(&o)
}

#[test]
fn plugins_check_says_which_contract_each_plugin_targets() {
    let old = plugins_check(&template_0_1_0());
    assert!(
        old.starts_with("ok: template 0.1.0 destination plugin, offsite:plugin@0.1.0"),
        "{old}"
    );
    let new = plugins_check(&wasm("offsite_local_dir"));
    assert!(new.contains("offsite:plugin@0.2.0"), "{new}");
    let tpl = plugins_check(&wasm("offsite_plugin_template"));
    assert!(
        tpl.contains("offsite:plugin@0.2.0"),
        "today's template: {tpl}"
    );
}

#[tokio::test]
async fn a_0_1_0_plugin_round_trips_and_its_range_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let nas = dir.path().join("nas");
    fs::create_dir_all(&nas).unwrap();
    let host = PluginHost::new(None, limits(Duration::from_secs(60))).unwrap();
    let plugin = load(&host, &template_0_1_0()).await;
    assert_eq!(plugin.contract, Contract::V0_1);
    let mut s = open(&host, &plugin, &pairs(&[("path", nas.to_str().unwrap())]))
        .await
        .unwrap();
    let src = dir.path().join("g.bin");
    random_file(&src, 3 * MIB);
    let sha = sha256_file(&src);
    s.upload(&Upload {
        name: "calls-20261130T010000Z.tar.zst",
        local_path: &src,
        size: 3 * MIB,
        sha256: &sha,
        job: "calls",
    })
    .await
    .expect("upload through a 0.1.0 plugin");
    let listed = s.list("calls-").await.expect("list");
    assert_eq!(listed.len(), 1);
    let back = dir.path().join("back.bin");
    s.fetch("calls-20261130T010000Z.tar.zst", "calls", &back)
        .await
        .expect("fetch");
    assert_eq!(sha256_file(&back), sha);
    let to = dir.path().join("range");
    let e = s
        .fetch_range("calls-20261130T010000Z.tar.zst", "calls", 10, 10, &to)
        .await
        .expect_err("0.1.0 has no fetch-range");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("offsite:plugin@0.1.0"), "{e}");
    assert!(!to.exists());
    // The session is still usable after the refusal.
    assert_eq!(s.list("calls-").await.expect("list").len(), 1);
}

#[test]
fn a_job_ships_through_a_0_1_0_plugin() {
    let s = Setup::new(&[]);
    fs::copy(template_0_1_0(), s.plugins_dir.join("template.wasm")).unwrap();
    let app = s.dir("srv/app");
    fs::write(app.join("index.html"), "<h1>kept by a 0.1.0 plugin</h1>").unwrap();
    let nas = s.dir("nas");
    s.write_config(&format!(
        "[destinations.nas]
plugin = \"template\"
path = \"{}\"

[jobs.app]
source = \"files\"
paths = [\"{}\"]
destinations = [\"nas\"]
",
        nas.display(),
        app.display()
    ));
    s.run_ok("app");
    let m = &s.manifests("app")[0];
    assert_eq!(m["uploads"]["nas"]["state"], "done", "{m}");
    let name = m["name"].as_str().unwrap();
    let local = s.job_dir("app").join(name);
    let remote = nas.join("app").join(name);
    assert_eq!(sha256_file(&remote), sha256_file(&local));
}

// ---- a plugin that misbehaves ------------------------------------------------------

/// The host is the judge of a range, not the plugin's claim: more bytes
/// than asked are refused at the stream, fewer under a claim of all are
/// caught by the count, a plugin that never returns is stopped by
/// `transfer_timeout`; none leaves a file behind.
#[tokio::test]
async fn the_host_checks_the_bytes_not_the_plugins_claim() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(Duration::from_secs(60));
    l.transfer_timeout = Duration::from_secs(2);
    let host = PluginHost::new(None, l).unwrap();
    let plugin = load(&host, &wasm("fixture_hostile")).await;
    let to = dir.path().join("range");
    for (mode, want) in [
        ("range-more", "sent more than the 1000 bytes asked for"),
        ("range-lie", "claimed 1000 bytes but wrote 999"),
        (
            "spin",
            "ran past its time limit of 2s ([runner] transfer_timeout)",
        ),
    ] {
        let mut s = open(&host, &plugin, &pairs(&[("mode", mode)]))
            .await
            .unwrap();
        let e = s
            .fetch_range("vol.bin", "calls", 5, 1000, &to)
            .await
            .expect_err(mode);
        assert!(e.message.contains(want), "{mode}: {e}");
        assert!(
            e.message.contains("offset 5, length 1000") || mode == "spin",
            "{mode}: {e}"
        );
        assert!(!to.exists(), "{mode} left {}", to.display());
    }
}
