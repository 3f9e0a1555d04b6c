//! Shared helpers for the integration tests: real TFTP servers on free
//! 127.0.0.1 ports (killed by PID when dropped), temporary directories,
//! deterministic random files, sha256 via coreutils, and a lossy UDP relay.
//!
//! The servers are started by `offsite-test-servers` (tests/servers at the
//! repository root, shared with the end-to-end harness) from what
//! `tests/install/tftp.sh` installs. A missing server fails the test with a
//! message naming that script: nothing is skipped silently.

#![allow(dead_code)] // each test binary uses a different subset

pub mod relay;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use offsite_test_servers::tftp::TftpServer;
use offsite_tftp::Options;

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

pub use offsite_test_servers::tftp::TftpKind as Kind;

/// A running TFTP server in its own temporary directory; killed (by its
/// PID) and reaped on drop, before the directory goes.
pub struct Server {
    server: TftpServer,
    pub kind: Kind,
    pub addr: SocketAddr,
    pub root: TempDir,
}

impl Server {
    /// tftpd-hpa: `in.tftpd -L -a 127.0.0.1:PORT -s -u root -c` plus
    /// `extra` (e.g. `-r blksize` to refuse an option) and the directory.
    pub fn hpa(extra: &[&str]) -> Server {
        Server::launch(Kind::Hpa, "hpa", extra)
    }

    /// atftpd in the foreground. It drops to `nobody`, so its directory is
    /// world-writable.
    pub fn atftpd(extra: &[&str]) -> Server {
        Server::launch(Kind::Atftpd, "atftpd", extra)
    }

    pub fn start(kind: Kind) -> Server {
        match kind {
            Kind::Hpa => Server::hpa(&[]),
            Kind::Atftpd => Server::atftpd(&[]),
        }
    }

    fn launch(kind: Kind, tag: &str, extra: &[&str]) -> Server {
        let root = TempDir::new(tag);
        let server = TftpServer::start_with(kind, root.path(), true, extra);
        Server {
            kind,
            addr: server.addr(),
            server,
            root,
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.server.file(name)
    }

    /// Waits until the server's copy of `name` has `size` bytes.
    pub fn wait_size(&self, name: &str, size: u64) {
        self.server.wait_size(name, size)
    }
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

/// [`round_trip`] of a fresh random file of `size` bytes (from `seed`)
/// to `server` through `target` (its address, or a relay's), as `name`,
/// with `o`.
pub fn round_trip_random(
    server: &Server,
    target: SocketAddr,
    size: u64,
    seed: u64,
    name: &str,
    o: &Options,
) -> (offsite_tftp::Report, offsite_tftp::Report) {
    let scratch = TempDir::new("src");
    let src = scratch.join("f");
    random_file(&src, size, seed);
    round_trip(server, target, &src, name, o, &scratch)
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
    server.wait_size(name, size);

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
