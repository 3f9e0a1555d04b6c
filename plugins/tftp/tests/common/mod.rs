//! Shared helpers for the integration tests: real TFTP servers on free
//! 127.0.0.1 ports (killed by PID when dropped), temporary directories,
//! deterministic random files, sha256 via coreutils, and a lossy UDP relay.
//!
//! The servers come from `tests/install/tftp.sh` (repository root), which
//! unpacks tftpd-hpa and atftpd side by side; `OFFSITE_IN_TFTPD` and
//! `OFFSITE_ATFTPD` override the paths. A missing server fails the test
//! with a message naming that script: nothing is skipped silently.

#![allow(dead_code)] // each test binary uses a different subset

pub mod relay;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use offsite_tftp::Options;

const INSTALL_HINT: &str =
    "run `bash tests/install/tftp.sh` from the repository root (as root) to install it";

fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("OFFSITE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/offsite")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/offsite"));
    cache.join("tools")
}

/// Finds a server binary: the env var, the install script's location, then
/// the system's (a Debian install of one of them).
fn find_binary(env: &str, script_rel: &str, system: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} does not exist; unset it or {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    let candidates = [tools_dir().join(script_rel), PathBuf::from(system)];
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "TFTP server binary not found (looked at ${env}, {}, {}): {INSTALL_HINT}",
        candidates[0].display(),
        candidates[1].display()
    );
}

pub fn in_tftpd() -> PathBuf {
    find_binary(
        "OFFSITE_IN_TFTPD",
        "tftpd-hpa/usr/sbin/in.tftpd",
        "/usr/sbin/in.tftpd",
    )
}

pub fn atftpd_bin() -> PathBuf {
    find_binary(
        "OFFSITE_ATFTPD",
        "atftpd/usr/sbin/atftpd",
        "/usr/sbin/atftpd",
    )
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("OFFSITE_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!(
            "offsite-tftp-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hpa,
    Atftpd,
}

/// A running TFTP server; killed (by its PID) and reaped on drop.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub addr: SocketAddr,
    pub root: TempDir,
}

impl Server {
    /// tftpd-hpa: `in.tftpd -L -a 127.0.0.1:PORT -c -s -u root DIR` plus
    /// `extra` (e.g. `-r blksize` to refuse an option). Runs as root: the
    /// `-u` user must own DIR and `tftp` may not exist here.
    pub fn hpa(extra: &[&str]) -> Server {
        let bin = in_tftpd();
        let root = TempDir::new("hpa");
        Server::launch(Kind::Hpa, root, |port, dir| {
            let mut c = Command::new(&bin);
            c.args([
                "-L",
                "-a",
                &format!("127.0.0.1:{port}"),
                "-c",
                "-s",
                "-u",
                "root",
            ]);
            c.args(extra);
            c.arg(dir);
            c
        })
    }

    /// atftpd in the foreground, logging to stdout (discarded). It drops to
    /// `nobody`, so its directory is world-writable.
    pub fn atftpd(extra: &[&str]) -> Server {
        let bin = atftpd_bin();
        let root = TempDir::new("atftpd");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        Server::launch(Kind::Atftpd, root, |port, dir| {
            let mut c = Command::new(&bin);
            c.args(["--daemon", "--no-fork", "--port", &port.to_string()]);
            c.args(["--bind-address", "127.0.0.1", "--logfile", "-"]);
            c.args(extra);
            c.arg(dir);
            c
        })
    }

    pub fn start(kind: Kind) -> Server {
        match kind {
            Kind::Hpa => Server::hpa(&[]),
            Kind::Atftpd => Server::atftpd(&[]),
        }
    }

    fn launch(kind: Kind, root: TempDir, cmd: impl Fn(u16, &Path) -> Command) -> Server {
        // A free port can be taken between probing and binding: try again.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_udp_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut c = cmd(port, root.path());
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap_or_else(|e| {
                panic!(
                    "starting {kind:?} ({:?}): {e}; {INSTALL_HINT}",
                    c.get_program()
                )
            });
            match wait_ready(kind, &mut child, addr) {
                Ok(()) => {
                    // Keep draining stderr so a chatty server never blocks.
                    if let Some(mut e) = child.stderr.take() {
                        std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::sink()));
                    }
                    return Server {
                        child,
                        kind,
                        addr,
                        root,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = e;
                }
            }
        }
        panic!("{kind:?} did not start: {last_err}");
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.kind == Kind::Hpa {
            // tftpd-hpa forks a child per transfer, which outlives the
            // listener until its own timeout: end those too.
            kill_hpa_children(self.addr.port());
        }
    }
}

/// Kills the in.tftpd processes started with `-a 127.0.0.1:PORT`, by PID.
pub fn kill_hpa_children(port: u16) {
    let needle = format!("127.0.0.1:{port}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("in.tftpd")) && args.contains(&needle) {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Probes with an RRQ for a missing file until the server answers.
fn wait_ready(kind: Kind, child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let rrq = b"\x00\x01offsite-readiness-probe\x00octet\x00";
    let started = Instant::now();
    let mut buf = [0u8; 600];
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!("{kind:?} exited with {status}: {}", err.trim()));
        }
        let _ = probe.send_to(rrq, addr);
        if probe.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    Err(format!("{kind:?} on {addr} did not answer within 10 s"))
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

/// xorshift64*: deterministic, fast, good enough for test data and drops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }
}

/// Writes `size` pseudo-random bytes (incompressible, seeded) to `path`.
pub fn random_file(path: &Path, size: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).expect("create data file"));
    let mut left = size;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).expect("write data file");
        left -= n as u64;
    }
    w.flush().expect("flush data file");
}

/// sha256 of a file, via coreutils' sha256sum.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running sha256sum: {e}"));
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn opts(blksize: u16, windowsize: u16) -> Options {
    Options {
        blksize,
        windowsize,
        ..Options::default()
    }
}

/// Uploads `src` as `name`, fetches it back, and checks that the source,
/// the server's copy and the fetched copy have the same sha256. Returns the
/// two reports.
pub fn round_trip(
    server: &Server,
    target: SocketAddr,
    src: &Path,
    name: &str,
    o: &Options,
    scratch: &TempDir,
) -> (offsite_tftp::Report, offsite_tftp::Report) {
    let size = fs::metadata(src).expect("stat source").len();
    let t = Instant::now();
    let mut f = File::open(src).expect("open source");
    let up = offsite_tftp::put_report(target, name, &mut f, size, o).unwrap_or_else(|e| {
        panic!(
            "put {name} to {:?} with {o:?}: {e} ({})",
            server.kind, e.kind
        )
    });
    let put_secs = t.elapsed().as_secs_f64();
    assert_eq!(up.bytes, size);
    // atftpd sends the final ACK before it closes (and so flushes) the
    // file: wait for the server's copy to be complete before reading it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::metadata(server.file(name))
        .map(|m| m.len())
        .unwrap_or(0)
        != size
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    let fetched = scratch.join(&format!("{name}.fetched"));
    let t = Instant::now();
    let mut out = File::create(&fetched).expect("create fetched");
    let down = offsite_tftp::get_report(target, name, &mut out, o).unwrap_or_else(|e| {
        panic!(
            "get {name} from {:?} with {o:?}: {e} ({})",
            server.kind, e.kind
        )
    });
    drop(out);
    let get_secs = t.elapsed().as_secs_f64();
    assert_eq!(down.bytes, size);

    let want = sha256(src);
    assert_eq!(
        sha256(&server.file(name)),
        want,
        "server's copy of {name} differs"
    );
    assert_eq!(sha256(&fetched), want, "fetched copy of {name} differs");
    let _ = fs::remove_file(&fetched);
    let _ = fs::remove_file(server.file(name));
    eprintln!(
        "{:?} {name}: {size} bytes, blksize {}/{} windowsize {}/{}: put {put_secs:.2} s ({:.0} MB/s), \
         get {get_secs:.2} s ({:.0} MB/s), retransmits {}+{}",
        server.kind,
        up.blksize,
        down.blksize,
        up.windowsize,
        down.windowsize,
        size as f64 / put_secs / 1e6,
        size as f64 / get_secs / 1e6,
        up.retransmits,
        down.retransmits
    );
    (up, down)
}
