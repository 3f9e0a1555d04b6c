//! Real TFTP and FTP servers for offsite's tests: tftpd-hpa and atftpd
//! (`tests/install/tftp.sh`), pyftpdlib plain and explicit FTPS
//! (`tests/install/ftp.sh`). Each listens on a free 127.0.0.1 port, serves a
//! directory the caller owns and is killed by PID on drop. A missing server
//! fails the test with a message naming its install script: nothing is
//! skipped silently.
//!
//! One copy for the end-to-end harness (`tests/harness`) and the ftp and
//! tftp plugins' native tests (a dev-dependency there). Std only; host
//! only (the plugins' workspace builds for wasm32-wasip2 by default, where
//! this crate is empty).

#![cfg(not(target_os = "wasi"))]

pub mod ftp;
pub mod tftp;

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;

/// `$OFFSITE_CACHE`, else `~/.cache/offsite`: where the install scripts put
/// the servers (`tools/`) and the Python venv (`venv/`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("OFFSITE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/offsite")
        })
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind udp 127.0.0.1:0")
}

/// `n` TCP ports on 127.0.0.1 that were free a moment ago (bound to port 0
/// together, then released).
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The repository's root: found when the tests run, by walking up from the
/// running test package's folder (cargo sets `CARGO_MANIFEST_DIR` for a
/// test process: `tests/`, `plugins/ftp`, ...) to the folder holding the
/// `justfile`. Never baked in at build time, so a build cache shared by
/// checkouts at other paths cannot point the tests at a missing folder.
pub fn project_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("CARGO_MANIFEST_DIR or a current directory");
    start
        .ancestors()
        .find(|d| d.join("justfile").is_file() && d.join("runner").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no repository root (a folder with `justfile` and `runner/`) above {}",
                start.display()
            )
        })
        .to_path_buf()
}
