//! tftpd-hpa and atftpd on a free 127.0.0.1 UDP port. `tests/install/tftp.sh`
//! unpacks both under `$OFFSITE_CACHE/tools`; `OFFSITE_IN_TFTPD` and
//! `OFFSITE_ATFTPD` override the paths; a Debian install of either is used
//! when present.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache_dir, free_udp_port};

const INSTALL: &str =
    "run `bash tests/install/tftp.sh` from the repository root (as root) to install it";

/// A server binary: `$env`, else where tests/install/tftp.sh unpacks it,
/// else the system's.
fn find_binary(env: &str, under_tools: &str, system: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} does not exist; unset it or {INSTALL}",
            p.display()
        );
        return p;
    }
    let candidates = [
        cache_dir().join("tools").join(under_tools),
        PathBuf::from(system),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "TFTP server binary not found (looked at ${env}, {}, {}): {INSTALL}",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// tftpd-hpa's `in.tftpd`.
pub fn in_tftpd() -> PathBuf {
    find_binary(
        "OFFSITE_IN_TFTPD",
        "tftpd-hpa/usr/sbin/in.tftpd",
        "/usr/sbin/in.tftpd",
    )
}

/// atftpd.
pub fn atftpd() -> PathBuf {
    find_binary(
        "OFFSITE_ATFTPD",
        "atftpd/usr/sbin/atftpd",
        "/usr/sbin/atftpd",
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TftpKind {
    /// tftpd-hpa (`in.tftpd`): no windowsize (RFC 7440), forks per transfer.
    Hpa,
    /// atftpd: grants windowsize.
    Atftpd,
}

/// A running TFTP server serving `root`; killed (by its PID) and reaped on
/// drop, with tftpd-hpa's per-transfer children.
pub struct TftpServer {
    child: Child,
    pub kind: TftpKind,
    pub port: u16,
    /// The directory it serves (the caller owns it).
    pub root: PathBuf,
}

impl TftpServer {
    /// Starts `kind` serving `root` (created), allowed to create files.
    pub fn start(kind: TftpKind, root: &Path) -> TftpServer {
        TftpServer::start_with(kind, root, true, &[])
    }

    /// tftpd-hpa without `-c`: it refuses to create files (ERROR 1).
    pub fn start_no_create(root: &Path) -> TftpServer {
        TftpServer::start_with(TftpKind::Hpa, root, false, &[])
    }

    /// Starts `kind` serving `root` (created; made world-writable for
    /// atftpd, which drops to `nobody`), with `extra` arguments before the
    /// directory (e.g. `-r blksize` to make tftpd-hpa refuse an option).
    /// `create = false` leaves out tftpd-hpa's `-c` (atftpd always creates).
    pub fn start_with(kind: TftpKind, root: &Path, create: bool, extra: &[&str]) -> TftpServer {
        fs::create_dir_all(root).expect("create the TFTP root");
        if kind == TftpKind::Atftpd {
            open_to_nobody(root);
        }
        let mut last = String::new();
        // A free port can be taken between probing and binding: try again.
        for _ in 0..5 {
            let port = free_udp_port();
            let mut cmd = command(kind, port, create);
            cmd.args(extra)
                .arg(root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {kind:?} ({cmd:?}): {e}; {INSTALL}"));
            let mut s = TftpServer {
                child,
                kind,
                port,
                root: root.to_path_buf(),
            };
            match s.wait_ready() {
                Ok(()) => {
                    // Keep draining stderr so a chatty server never blocks.
                    if let Some(mut e) = s.child.stderr.take() {
                        std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::sink()));
                    }
                    return s;
                }
                // Dropping `s` kills it.
                Err(e) => last = e,
            }
        }
        panic!("{kind:?} did not start: {last}");
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The server's copy of `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Ready when a read request for a missing file gets an answer.
    fn wait_ready(&mut self) -> Result<(), String> {
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let rrq = b"\x00\x01offsite-readiness-probe\x00octet\x00";
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 600];
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!(
                    "{:?} exited with {status}: {}",
                    self.kind,
                    err.trim()
                ));
            }
            let _ = probe.send_to(rrq, self.addr());
            if probe.recv_from(&mut buf).is_ok() {
                return Ok(());
            }
        }
        Err(format!(
            "{:?} on {} did not answer within 10 s",
            self.kind,
            self.addr()
        ))
    }

    /// Waits (10 s at most) until the server's copy of `name` has `size`
    /// bytes: atftpd acknowledges the last block before it closes (and so
    /// flushes) the file.
    pub fn wait_size(&self, name: &str, size: u64) {
        let path = self.file(name);
        let until = Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).map(|m| m.len()).unwrap_or(0) != size && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.kind == TftpKind::Hpa {
            kill_hpa_children(self.port);
        }
    }
}

/// The server's command line up to its options; the caller adds any extra
/// arguments and the directory.
fn command(kind: TftpKind, port: u16, create: bool) -> Command {
    match kind {
        TftpKind::Hpa => {
            let mut c = Command::new(in_tftpd());
            // -L: foreground; -s: chroot-style root; -u root: a `tftp`
            // user may not exist here; -c: allow creating files.
            c.args(["-L", "-a", &format!("127.0.0.1:{port}"), "-s"])
                .args(["-u", "root"]);
            if create {
                c.arg("-c");
            }
            c
        }
        TftpKind::Atftpd => {
            let mut c = Command::new(atftpd());
            c.args(["--daemon", "--no-fork", "--port", &port.to_string()])
                .args(["--bind-address", "127.0.0.1", "--logfile", "-"]);
            c
        }
    }
}

/// atftpd drops to `nobody`: the root becomes world-writable, and its
/// parent (tempfile makes them 0700) world-searchable.
fn open_to_nobody(root: &Path) {
    fs::set_permissions(root, fs::Permissions::from_mode(0o777)).expect("chmod the TFTP root");
    if let Some(parent) = root.parent()
        && let Ok(m) = fs::metadata(parent)
    {
        let mode = m.permissions().mode();
        if mode & 0o011 != 0o011 {
            let _ = fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o011));
        }
    }
}

/// tftpd-hpa forks a child per transfer that outlives the listener until its
/// own timeout: kill, by PID, the in.tftpd processes started with
/// `-a 127.0.0.1:PORT`.
pub fn kill_hpa_children(port: u16) {
    let needle = format!("127.0.0.1:{port}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
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
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
