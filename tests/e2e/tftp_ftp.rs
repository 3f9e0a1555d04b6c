//! The `tftp` and `ftp` destination plugins, run by the runner inside the
//! sandbox, against real servers started here: tftpd-hpa and atftpd,
//! pyftpdlib plain and explicit FTPS (tests/harness/tftp_ftp.rs).
//!
//! - `offsite plugins test` (the conformance round trip) passes for each;
//!   TFTP answers `unsupported` to list and remove, which passes.
//! - 100 MiB round trips byte-identical through the library API (the same
//!   `DestinationSession` calls `offsite run` makes), TFTP at blksize 512
//!   (the block number wraps) and 1468, windowsize 1 and 16.
//! - A wrong FTP password is a `config` error naming the fix, never the
//!   password; a stalled FTP server is a `transient` error after the
//!   plugin's own `timeout` (the guest's socket timeouts work).
//! - A job shipping to both keeps `keep` generations on FTP and all of them
//!   on TFTP, whose rotation is external.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offsite::plugin::{
    CallContext, DestinationSession, ErrorKind, Limits, LoadedPlugin, PluginError, PluginHost,
    Upload, settings,
};
use offsite_tests::jobs::runner_table_at;
use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};
use offsite_tests::tftp_ftp::{FTP_PASSWORD, FtpServer, TftpKind, TftpServer, ls};
use rand::RngCore;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

// ---- helpers ---------------------------------------------------------------

/// `size` random (incompressible) bytes in `path`; returns their sha256.
fn random_file(path: &Path, size: u64) -> String {
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create data file"));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rand::rng().fill_bytes(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("write data file");
        left -= n as u64;
    }
    f.flush().expect("flush data file");
    hex::encode(h.finalize())
}

fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash file");
    hex::encode(h.finalize())
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `offsite plugins test WASM -s k=v ... --size N`: (exit ok, output).
fn plugins_test(wasm_path: &Path, settings: &[(String, String)], size: u64) -> (bool, String) {
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(wasm_path);
    for (k, v) in settings {
        cmd.arg("-s").arg(format!("{k}={v}"));
    }
    cmd.args(["--size", &size.to_string()]);
    let o = run(&mut cmd);
    (o.status.success(), text(&o))
}

/// The line of a `plugins test` step, e.g. `  fetch    ok  12.3 ms  ...`.
fn step<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` step in:\n{out}"))
}

fn step_status<'a>(out: &'a str, name: &str) -> &'a str {
    step(out, name).split_whitespace().nth(1).unwrap_or("")
}

struct Sandbox {
    host: PluginHost,
    plugin: Arc<LoadedPlugin>,
}

impl Sandbox {
    /// The runner's plugin host, as `offsite run` builds it, with `call`
    /// as both time limits (so a test learns which timeout fired).
    async fn new(crate_name: &str, call: Duration) -> Sandbox {
        let host = PluginHost::new(
            None,
            Limits {
                memory_bytes: 256 << 20,
                call_timeout: call,
                transfer_timeout: call,
                stall_timeout: Duration::from_secs(120),
                debug_stdio: false,
            },
        )
        .expect("plugin host");
        let plugin = Arc::new(
            host.load_file(&wasm(crate_name))
                .await
                .unwrap_or_else(|e| panic!("{crate_name} loads: {e}")),
        );
        Sandbox { host, plugin }
    }

    async fn open(&self, settings: &[(String, String)]) -> Result<DestinationSession, PluginError> {
        let raw: BTreeMap<String, String> = settings.iter().cloned().collect();
        let s = settings::resolve(&self.plugin.info, &raw)
            .unwrap_or_else(|p| panic!("settings refused: {p:?}"));
        let ctx = CallContext {
            plugin: self.plugin.info.name.clone(),
            instance: "e2e".into(),
            job: Some("e2e".into()),
        };
        DestinationSession::open(&self.host, self.plugin.clone(), &s, ctx).await
    }
}

async fn upload(
    s: &mut DestinationSession,
    name: &str,
    src: &Path,
    size: u64,
    sha: &str,
) -> Result<(), PluginError> {
    s.upload(&Upload {
        name,
        local_path: src,
        size,
        sha256: sha,
        job: "e2e",
    })
    .await
}

// ---- conformance through `offsite plugins test` ----------------------------

/// `remote_dir` (may be ""): a directory the server already has.
fn tftp_conformance(kind: TftpKind, host: &str, remote_dir: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = TftpServer::start(kind, &dir.path().join("root"));
    let target = server.root.join(remote_dir);
    fs::create_dir_all(&target).unwrap();
    let size = 3 * MIB + 123;
    let port = server.port.to_string();
    let (ok, out) = plugins_test(
        &wasm("offsite_tftp"),
        &pairs(&[
            ("host", host),
            ("port", &port),
            ("timeout", "1s"),
            ("remote_dir", remote_dir),
        ]),
        size,
    );
    assert!(ok, "plugins test against {kind:?} failed:\n{out}");
    assert_eq!(step_status(&out, "upload"), "ok", "{out}");
    assert_eq!(step_status(&out, "list"), "unsupported", "{out}");
    assert_eq!(step_status(&out, "fetch"), "ok", "{out}");
    assert!(step(&out, "fetch").contains("sha256 matches"), "{out}");
    assert_eq!(step_status(&out, "remove"), "unsupported", "{out}");
    assert!(
        step(&out, "remove").contains("rotation on this destination is external"),
        "{out}"
    );
    assert!(out.contains("conformance: passed"), "{out}");
    assert_eq!(step_status(&out, "overwrite"), "ok", "{out}");
    assert_eq!(step_status(&out, "fetch-new"), "ok", "{out}");
    // The upload is on the server, in remote_dir, whole (TFTP cannot
    // remove it): one file, holding the suite's last upload under that
    // name, the overwrite with (size / 2 + 1) bytes, at most 1 MiB (the
    // first upload, `size` bytes, was checked whole by `fetch` above).
    let files: Vec<String> = ls(&target)
        .into_iter()
        .filter(|f| target.join(f).is_file())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("offsite-conformance-"), "{files:?}");
    let name = format!("{remote_dir}/{}", files[0]);
    let last = (size / 2 + 1).min(MIB);
    server.wait_size(name.trim_start_matches('/'), last);
    assert_eq!(fs::metadata(target.join(&files[0])).unwrap().len(), last);
}

#[test]
fn tftp_plugins_test_passes_against_tftpd_hpa_by_host_name() {
    // A name, not an address: the sandbox grants what it resolves to, and
    // the guest resolves it the same way.
    tftp_conformance(TftpKind::Hpa, "localhost", "incoming/offsite");
}

#[test]
fn tftp_plugins_test_passes_against_atftpd() {
    tftp_conformance(TftpKind::Atftpd, "127.0.0.1", "");
}

fn ftp_conformance(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = if tls {
        FtpServer::tls(&root)
    } else {
        FtpServer::plain(&root)
    };
    let mut settings = server.settings();
    settings.push(("remote_dir".into(), "backups/calls".into()));
    let (ok, out) = plugins_test(&wasm("offsite_ftp"), &settings, 5 * MIB + 7);
    assert!(ok, "plugins test (tls = {tls}) failed:\n{out}");
    for s in ["upload", "fetch", "remove"] {
        assert_eq!(step_status(&out, s), "ok", "{s}: {out}");
    }
    let lists: Vec<&str> = out
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("list"))
        .collect();
    assert_eq!(lists.len(), 2, "{out}");
    assert!(
        lists[0].contains(" ok ") && lists[0].contains("ours among them"),
        "{out}"
    );
    assert!(
        lists[1].contains(" ok ") && lists[1].contains("ours gone"),
        "{out}"
    );
    assert!(out.contains("conformance: passed"), "{out}");
    // One instance keeps one connection across its calls; the suite's
    // interrupted upload fails on purpose, the plugin closes that
    // connection, and the calls after it log in once more.
    assert_eq!(server.logins(), 2, "{out}");
    assert_eq!(step_status(&out, "interrupt"), "ok", "{out}");
    // remote_dir was created; nothing is left in it (no .part either).
    assert!(root.join("backups/calls").is_dir());
    assert_eq!(ls(&root.join("backups/calls")), Vec::<String>::new());
}

#[test]
fn ftp_plugins_test_passes_against_pyftpdlib_plain() {
    ftp_conformance(false);
}

#[test]
fn ftp_plugins_test_passes_against_pyftpdlib_explicit_tls_with_a_pinned_certificate() {
    ftp_conformance(true);
}

#[test]
fn ftps_without_tls_ca_refuses_the_self_signed_certificate_as_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::tls(&dir.path().join("root"));
    let settings: Vec<(String, String)> = server
        .settings()
        .into_iter()
        .filter(|(k, _)| k != "tls_ca")
        .collect();
    let (ok, out) = plugins_test(&wasm("offsite_ftp"), &settings, 1000);
    assert!(!ok, "{out}");
    let up = step(&out, "upload");
    assert!(up.contains("FAILED") && up.contains("[config]"), "{out}");
    assert!(up.contains("not trusted") && up.contains("tls_ca"), "{out}");
}

#[test]
fn a_wrong_ftp_password_is_a_config_error_that_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::plain(&dir.path().join("root"));
    let wrong = "not-the-Pw-9931";
    let settings: Vec<(String, String)> = server
        .settings()
        .into_iter()
        .map(|(k, v)| {
            if k == "password" {
                (k, wrong.to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    // Through the CLI.
    let (ok, out) = plugins_test(&wasm("offsite_ftp"), &settings, 1000);
    assert!(!ok, "{out}");
    let up = step(&out, "upload");
    assert!(up.contains("FAILED") && up.contains("[config]"), "{out}");
    assert!(
        up.contains("login to 127.0.0.1:") && up.contains("was refused"),
        "{out}"
    );
    assert!(up.contains("check the user and password settings"), "{out}");
    assert!(!out.contains(wrong) && !out.contains(FTP_PASSWORD), "{out}");

    // Through the library: the kind the runner acts on (not retried).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sb = Sandbox::new("offsite_ftp", Duration::from_secs(60)).await;
        let mut s = sb.open(&settings).await.expect("configure does no I/O");
        let e = s.list("").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        assert!(!e.kind.is_retryable(), "{e}");
        assert!(!e.message.contains(wrong), "{e}");
    });
}

#[test]
fn ftp_active_mode_is_refused_at_configure_since_the_sandbox_cannot_accept() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sb = Sandbox::new("offsite_ftp", Duration::from_secs(60)).await;
        let e = match sb
            .open(&pairs(&[
                ("host", "127.0.0.1"),
                ("user", "u"),
                ("passive", "false"),
            ]))
            .await
        {
            Ok(_) => panic!("passive = false was accepted"),
            Err(e) => e,
        };
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        assert!(e.message.contains("passive = true"), "{e}");
    });
}

// ---- 100 MiB through the sandbox ------------------------------------------

async fn tftp_100mib(kind: TftpKind, blksize: u16, windowsize: u16) {
    let dir = tempfile::tempdir().unwrap();
    let server = TftpServer::start(kind, &dir.path().join("root"));
    let src = dir.path().join("src.bin");
    let size = 100 * MIB;
    let sha = random_file(&src, size);
    let sb = Sandbox::new("offsite_tftp", Duration::from_secs(600)).await;
    let (port, blk, win) = (
        server.port.to_string(),
        blksize.to_string(),
        windowsize.to_string(),
    );
    let mut s = sb
        .open(&pairs(&[
            ("host", "127.0.0.1"),
            ("port", &port),
            ("blksize", &blk),
            ("windowsize", &win),
        ]))
        .await
        .expect("configure");
    let name = format!("big-{blksize}-{windowsize}.bin");
    let t = Instant::now();
    upload(&mut s, &name, &src, size, &sha)
        .await
        .unwrap_or_else(|e| panic!("upload to {kind:?}: {e}"));
    let up = t.elapsed();
    server.wait_size(&name, size);
    assert_eq!(sha256_file(&server.root.join(&name)), sha, "server's copy");
    let back = dir.path().join("back.bin");
    let t = Instant::now();
    let n = s
        .fetch(&name, "e2e", &back)
        .await
        .unwrap_or_else(|e| panic!("fetch from {kind:?}: {e}"));
    let down = t.elapsed();
    assert_eq!(n, size);
    assert_eq!(sha256_file(&back), sha, "fetched copy");
    eprintln!(
        "tftp {kind:?} blksize {blksize} windowsize {windowsize}: 100 MiB up {:.2} s, down {:.2} s",
        up.as_secs_f64(),
        down.as_secs_f64()
    );
    // What TFTP cannot do is reported, not failed.
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    let e = s.remove(&name, "e2e", &src).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    // A missing file is not-found.
    let e = s.fetch("missing.bin", "e2e", &back).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_100mib_atftpd_blksize512_lockstep_wraps() {
    tftp_100mib(TftpKind::Atftpd, 512, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_100mib_atftpd_blksize512_window16_wraps() {
    tftp_100mib(TftpKind::Atftpd, 512, 16).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_100mib_atftpd_blksize1468_lockstep() {
    tftp_100mib(TftpKind::Atftpd, 1468, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_100mib_atftpd_blksize1468_window16() {
    tftp_100mib(TftpKind::Atftpd, 1468, 16).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_100mib_tftpd_hpa_blksize1468() {
    tftp_100mib(TftpKind::Hpa, 1468, 1).await;
}

async fn ftp_100mib(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = if tls {
        FtpServer::tls(&root)
    } else {
        FtpServer::plain(&root)
    };
    let src = dir.path().join("src.bin");
    let size = 100 * MIB + 17;
    let sha = random_file(&src, size);
    let sb = Sandbox::new("offsite_ftp", Duration::from_secs(600)).await;
    let mut settings = server.settings();
    settings.push(("remote_dir".into(), "/offsite".into()));
    let mut s = sb.open(&settings).await.expect("configure");
    let name = "big.bin";
    let t = Instant::now();
    upload(&mut s, name, &src, size, &sha)
        .await
        .unwrap_or_else(|e| panic!("upload (tls = {tls}): {e}"));
    let up = t.elapsed();
    assert_eq!(ls(&root.join("offsite")), vec![name.to_string()]);
    assert_eq!(sha256_file(&root.join("offsite").join(name)), sha);

    let objs = s.list("big").await.expect("list");
    assert_eq!(objs.len(), 1, "{objs:?}");
    assert_eq!(objs[0].name, name);
    assert_eq!(objs[0].size, Some(size));
    assert!(objs[0].modified.is_some(), "MLSD gives the modify fact");
    assert!(s.list("other-").await.expect("list").is_empty());

    let back = dir.path().join("back.bin");
    let t = Instant::now();
    let n = s.fetch(name, "e2e", &back).await.expect("fetch");
    let down = t.elapsed();
    assert_eq!(n, size);
    assert_eq!(sha256_file(&back), sha);

    s.remove(name, "e2e", &src).await.expect("remove");
    assert_eq!(ls(&root.join("offsite")), Vec::<String>::new());
    let e = s.remove(name, "e2e", &src).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = s.fetch(name, "e2e", &back).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // The connection is kept after a not-found, and still works: the
    // whole session logged in once.
    assert!(s.list("").await.expect("list").is_empty());
    assert_eq!(server.logins(), 1);
    eprintln!(
        "ftp tls = {tls}: 100 MiB up {:.2} s, down {:.2} s",
        up.as_secs_f64(),
        down.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ftp_100mib_plain_upload_list_fetch_remove() {
    ftp_100mib(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ftp_100mib_tls_upload_list_fetch_remove() {
    ftp_100mib(true).await;
}

// ---- a stalled server ------------------------------------------------------

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the PID of a server this test started.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// The plugin's `timeout` bounds each wait for the server inside the guest
/// (SO_RCVTIMEO works for TCP under wasmtime's WASI): a server that stops
/// answering is a transient error after about `timeout`, long before the
/// host's own limit (60 s here); the next instance works again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_ftp_server_is_transient_after_the_plugins_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::plain(&dir.path().join("root"));
    let sb = Sandbox::new("offsite_ftp", Duration::from_secs(60)).await;
    let mut settings = server.settings();
    settings.push(("timeout".into(), "2".into()));
    let src = dir.path().join("src.bin");
    let size = 4 * MIB;
    let sha = random_file(&src, size);

    let mut s = sb.open(&settings).await.expect("configure");
    s.list("").await.expect("logged in and listed");
    signal(server.pid(), libc::SIGSTOP);
    let t = Instant::now();
    let e = upload(&mut s, "a.bin", &src, size, &sha).await.unwrap_err();
    let took = t.elapsed();
    signal(server.pid(), libc::SIGCONT);
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("no answer within 2s"), "{e}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {e}");

    // The instance logs in again on its next call.
    upload(&mut s, "a.bin", &src, size, &sha)
        .await
        .expect("upload after the server resumed");
    assert_eq!(sha256_file(&server.root.join("a.bin")), sha);
}

/// A server that stops reading in the middle of an upload. The guest's
/// send timeout (SO_SNDTIMEO) fires after `timeout`, but closing the stalled
/// data connection then waits for wasmtime-wasi's background write to finish
/// (`TcpWriter::cancel`), so until the FTP core leaks that connection
/// instead of dropping it, the host's `transfer_timeout` (10 s here) is what
/// ends the call. Either way the call ends, the runner learns why, and a
/// new instance works.
#[tokio::test(flavor = "multi_thread")]
async fn an_ftp_server_that_stops_reading_mid_upload_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::plain(&dir.path().join("root"));
    let limit = Duration::from_secs(10);
    let sb = Sandbox::new("offsite_ftp", limit).await;
    let mut settings = server.settings();
    settings.push(("timeout".into(), "2".into()));

    // The upload streams from a FIFO this test feeds; the server is stopped
    // once 8 MiB went through.
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let pid = server.pid();
    let feeder_path = fifo.clone();
    let feeder = std::thread::spawn(move || {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&feeder_path)
            .unwrap();
        let chunk = vec![7u8; 1 << 20];
        for i in 0..1024 {
            if i == 8 {
                signal(pid, libc::SIGSTOP);
            }
            // Fails with EPIPE once the runner closes the stream.
            if f.write_all(&chunk).is_err() {
                return i;
            }
        }
        1024
    });
    let mut s = sb.open(&settings).await.expect("configure");
    let t = Instant::now();
    let e = upload(&mut s, "b.bin", &fifo, 1024 * MIB, &"0".repeat(64))
        .await
        .unwrap_err();
    let took = t.elapsed();
    signal(server.pid(), libc::SIGCONT);
    let fed = feeder.join().unwrap();
    eprintln!(
        "stalled upload ended after {took:?}: [{}] {e}",
        e.kind.as_str()
    );
    match e.kind {
        // The guest's own timeout: the stalled data connection is
        // abandoned, not closed (closing would wait for the write).
        ErrorKind::Transient => {
            assert!(e.message.contains("no answer within 2s"), "{e}");
            assert!(
                e.message.contains("the data connection failed after"),
                "{e}"
            );
        }
        // The plugin's own timeout must fire, not the host's backstop.
        _ => panic!("expected the plugin's transient timeout: {e}"),
    }
    assert!(took < limit + Duration::from_secs(5), "took {took:?}: {e}");
    assert!(fed < 1024, "the whole stream was read: {e}");

    // A new instance uploads fine once the server runs again.
    let src = dir.path().join("src.bin");
    let sha = random_file(&src, MIB);
    let mut s = sb.open(&settings).await.expect("configure");
    upload(&mut s, "c.bin", &src, MIB, &sha)
        .await
        .expect("upload after the stall");
    assert_eq!(sha256_file(&server.root.join("c.bin")), sha);
}

// ---- a job shipping to both ------------------------------------------------

#[test]
fn a_job_ships_to_tftp_and_ftp_and_only_ftp_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tftp = TftpServer::start(TftpKind::Hpa, &d.join("tftp-root"));
    let ftp = FtpServer::plain(&d.join("ftp-root"));

    // A small tree to back up.
    let tree = d.join("data");
    fs::create_dir_all(tree.join("sub")).unwrap();
    for i in 0..20 {
        let mut bytes = vec![0u8; 10_000 + i * 333];
        rand::rng().fill_bytes(&mut bytes);
        fs::write(tree.join(format!("f{i}.bin")), &bytes).unwrap();
    }
    fs::write(tree.join("sub/notes.txt"), "hello\n".repeat(100)).unwrap();

    let plugins = d.join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(wasm("offsite_tftp"), plugins.join("tftp.wasm")).unwrap();
    fs::copy(wasm("offsite_ftp"), plugins.join("ftp.wasm")).unwrap();
    let pass = d.join("ftp.pass");
    offsite_tests::jobs::write_secret(&pass, &format!("{FTP_PASSWORD}\n"));
    let backups = d.join("backups");
    let log = d.join("backup.log");
    let config = d.join("offsite.toml");
    fs::write(
        &config,
        format!(
            r#"{runner}
[destinations.tftp]
plugin = "tftp"
host = "127.0.0.1"
port = {tport}
blksize = 1468
windowsize = 16

[destinations.ftp]
plugin = "ftp"
host = "127.0.0.1"
port = {fport}
user = "backup"
password_file = "{pass}"
remote_dir = "site"

[jobs.www]
source = "files"
paths = ["{tree}"]
keep = 2
schedule = "manual"
destinations = ["tftp", "ftp"]
verify = "checksum"
"#,
            runner = runner_table_at(&backups, &plugins, &d.join("state"), &log),
            tport = tftp.port,
            fport = ftp.port,
            pass = pass.display(),
            tree = tree.display(),
        ),
    )
    .unwrap();

    let mut outputs = vec![];
    for i in 0..3 {
        if i > 0 {
            // Generation names have one-second resolution.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let o = run(Command::new(offsite_bin())
            .arg("--config")
            .arg(&config)
            .args(["run", "www"]));
        let out = text(&o);
        assert!(o.status.success(), "run {} failed:\n{out}", i + 1);
        assert!(!out.contains(FTP_PASSWORD), "the password leaked:\n{out}");
        outputs.push(out);
    }

    let local = ls(&backups.join("www"));
    let gens: Vec<&String> = local.iter().filter(|n| n.ends_with(".tar.zst")).collect();
    assert_eq!(gens.len(), 2, "local keeps 2: {local:?}");
    // FTP: exactly the two newest generations and their manifests, nothing else.
    let mut want: Vec<String> = gens
        .iter()
        .flat_map(|g| [g.to_string(), format!("{g}.manifest.json")])
        .collect();
    want.sort();
    assert_eq!(ls(&d.join("ftp-root/site")), want, "ftp after 3 runs");
    for g in &gens {
        assert_eq!(
            sha256_file(&d.join("ftp-root/site").join(g)),
            sha256_file(&backups.join("www").join(g))
        );
    }
    // TFTP: all three (it cannot delete), and the newest two are the same bytes.
    let remote = ls(&d.join("tftp-root"));
    let tgens: Vec<&String> = remote.iter().filter(|n| n.ends_with(".tar.zst")).collect();
    let tmanifests = remote
        .iter()
        .filter(|n| n.ends_with(".manifest.json"))
        .count();
    assert_eq!(
        (tgens.len(), tmanifests, remote.len()),
        (3, 3, 6),
        "{remote:?}"
    );
    for g in &gens {
        assert!(tgens.contains(g), "{g} not on tftp: {remote:?}");
        assert_eq!(
            sha256_file(&d.join("tftp-root").join(g)),
            sha256_file(&backups.join("www").join(g))
        );
    }
    // Rotation: nothing to drop in runs 1 and 2; run 3 drops the oldest,
    // removes it from ftp and says once that tftp rotates externally.
    let external = "rotation on tftp is external";
    for (i, out) in outputs.iter().enumerate() {
        let n = out.matches(external).count();
        let want = if i == 2 { 1 } else { 0 };
        assert_eq!(n, want, "run {}: {n} × {external:?}:\n{out}", i + 1);
        assert!(!out.contains("rotation on ftp is external"), "{out}");
    }
    let log_text = fs::read_to_string(&log).unwrap();
    assert_eq!(log_text.matches(external).count(), 1, "{log_text}");
    assert!(log_text.contains("removed www-"), "{log_text}");

    // Restores from each destination alone (the local copies are gone).
    let newest = gens.iter().max().unwrap().to_string();
    for f in ls(&backups.join("www")) {
        fs::remove_file(backups.join("www").join(f)).unwrap();
    }
    let restore = |args: &[&str]| {
        let o = run(Command::new(offsite_bin())
            .arg("--config")
            .arg(&config)
            .args(["restore", "www"])
            .args(args));
        (o.status.success(), text(&o))
    };
    let same_tree = |to: &Path| {
        let got = to.join(tree.strip_prefix("/").unwrap());
        for i in 0..20 {
            let f = format!("f{i}.bin");
            assert_eq!(
                fs::read(got.join(&f)).unwrap(),
                fs::read(tree.join(&f)).unwrap(),
                "{f}"
            );
        }
        assert_eq!(
            fs::read(got.join("sub/notes.txt")).unwrap(),
            fs::read(tree.join("sub/notes.txt")).unwrap()
        );
    };
    // FTP lists, so `latest` is found there.
    let to = d.join("from-ftp");
    let (ok, out) = restore(&["--from", "ftp", "--to-dir", to.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains(&newest), "{out}");
    same_tree(&to);
    // TFTP cannot list: the generation must be named.
    let to = d.join("from-tftp");
    let (ok, out) = restore(&["--from", "tftp", "--to-dir", to.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("TFTP has no directory listing"), "{out}");
    assert!(out.contains("--generation"), "{out}");
    let (ok, out) = restore(&[
        "--from",
        "tftp",
        "--generation",
        &newest,
        "--to-dir",
        to.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    same_tree(&to);
}

#[test]
fn a_run_with_a_wrong_ftp_password_fails_once_with_the_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ftp = FtpServer::plain(&d.join("ftp-root"));
    let tree = d.join("data");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a.txt"), "a\n").unwrap();
    let plugins = d.join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(wasm("offsite_ftp"), plugins.join("ftp.wasm")).unwrap();
    let wrong = "wrong-Pw-5521";
    offsite_tests::jobs::write_secret(&d.join("ftp.pass"), &format!("{wrong}\n"));
    let config = d.join("offsite.toml");
    fs::write(
        &config,
        format!(
            r#"{runner}
[destinations.ftp]
plugin = "ftp"
host = "127.0.0.1"
port = {port}
user = "backup"
password_file = "{d}/ftp.pass"

[jobs.www]
source = "files"
paths = ["{d}/data"]
schedule = "manual"
destinations = ["ftp"]
"#,
            runner = runner_table_at(
                &d.join("backups"),
                &d.join("plugins"),
                &d.join("state"),
                &d.join("backup.log")
            ),
            d = d.display(),
            port = ftp.port,
        ),
    )
    .unwrap();
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "www"]));
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("was refused") && out.contains("check the user and password settings"),
        "{out}"
    );
    // A config error is not retried: one login attempt.
    assert!(!out.contains("retrying in"), "{out}");
    assert_eq!(
        fs::read_to_string(&ftp.log)
            .unwrap()
            .matches("<- USER backup")
            .count(),
        1
    );
    assert!(!out.contains(wrong), "the password leaked:\n{out}");
    // The generation is kept locally, pending for ftp.
    let local: Vec<String> = ls(&d.join("backups/www"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(local.len(), 2, "{local:?}");
    let manifest = fs::read_to_string(d.join("backups/www").join(&local[1])).unwrap();
    assert!(manifest.contains("pending"), "{manifest}");
    eprintln!("{out}");
}
