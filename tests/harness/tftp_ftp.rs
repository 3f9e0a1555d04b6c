//! Real TFTP and FTP servers for the `tftp` and `ftp` plugins' end-to-end
//! tests: tftpd-hpa and atftpd (tests/install/tftp.sh), pyftpdlib plain and
//! explicit FTPS (tests/install/ftp.sh). Each listens on a free 127.0.0.1
//! port, serves its own temporary directory and is killed by PID on drop.
//! A missing server fails the test with a message naming its install script.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::paths::project_root;
use crate::proc::free_udp_port;

const TFTP_INSTALL: &str = "run `bash tests/install/tftp.sh` (as root) to install it";
const FTP_INSTALL: &str = "run `bash tests/install/ftp.sh` to install it";

fn cache_dir() -> PathBuf {
    std::env::var_os("OFFSITE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/offsite")
        })
}

/// A server binary: `$env`, else where tests/install/tftp.sh unpacks it,
/// else the system's.
fn tftp_binary(env: &str, under_tools: &str, system: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env}={} does not exist; unset it or {TFTP_INSTALL}",
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
                "TFTP server not found (looked at ${env}, {}, {}): {TFTP_INSTALL}",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TftpKind {
    /// tftpd-hpa (`in.tftpd`): no windowsize (RFC 7440), forks per transfer.
    Hpa,
    /// atftpd: grants windowsize.
    Atftpd,
}

/// A running TFTP server serving `root`.
pub struct TftpServer {
    child: Child,
    pub kind: TftpKind,
    pub port: u16,
    /// The directory it serves (kept: the test's TempDir owns it).
    pub root: PathBuf,
}

impl TftpServer {
    /// Starts `kind` serving `root` (created; made world-writable for
    /// atftpd, which drops to `nobody`).
    pub fn start(kind: TftpKind, root: &Path) -> TftpServer {
        TftpServer::start_with(kind, root, true)
    }

    /// tftpd-hpa without `-c`: it refuses to create files (ERROR 1).
    pub fn start_no_create(root: &Path) -> TftpServer {
        TftpServer::start_with(TftpKind::Hpa, root, false)
    }

    fn start_with(kind: TftpKind, root: &Path, create: bool) -> TftpServer {
        fs::create_dir_all(root).expect("create the TFTP root");
        if kind == TftpKind::Atftpd {
            fs::set_permissions(root, fs::Permissions::from_mode(0o777)).expect("chmod root");
            // nobody must also be able to reach it: a test's temporary
            // directory (tempfile makes them 0700) gets o+x.
            if let Some(parent) = root.parent()
                && let Ok(m) = fs::metadata(parent)
            {
                let mode = m.permissions().mode();
                let _ = fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o011));
            }
        }
        let mut last = String::new();
        // A free port can be taken between probing and binding: try again.
        for _ in 0..5 {
            let port = free_udp_port();
            let mut cmd = match kind {
                TftpKind::Hpa => {
                    let mut c = Command::new(tftp_binary(
                        "OFFSITE_IN_TFTPD",
                        "tftpd-hpa/usr/sbin/in.tftpd",
                        "/usr/sbin/in.tftpd",
                    ));
                    // -c: allow creating files; -s: chroot-style root;
                    // -u root: a `tftp` user may not exist here.
                    c.args(["-L", "-a", &format!("127.0.0.1:{port}"), "-s"])
                        .args(["-u", "root"]);
                    if create {
                        c.arg("-c");
                    }
                    c
                }
                TftpKind::Atftpd => {
                    let mut c = Command::new(tftp_binary(
                        "OFFSITE_ATFTPD",
                        "atftpd/usr/sbin/atftpd",
                        "/usr/sbin/atftpd",
                    ));
                    c.args(["--daemon", "--no-fork", "--port", &port.to_string()])
                        .args(["--bind-address", "127.0.0.1", "--logfile", "-"]);
                    c
                }
            };
            cmd.arg(root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {kind:?} ({cmd:?}): {e}; {TFTP_INSTALL}"));
            let mut s = TftpServer {
                child,
                kind,
                port,
                root: root.to_path_buf(),
            };
            match s.wait_ready() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{kind:?} did not start: {last}");
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
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
                return Err(format!("{:?} exited with {status}", self.kind));
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

    /// Waits until the server's copy of `name` has `size` bytes: atftpd
    /// acknowledges the last block before it closes (and so flushes) the
    /// file.
    pub fn wait_size(&self, name: &str, size: u64) {
        let path = self.root.join(name);
        let until = Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).map(|m| m.len()).unwrap_or(0) != size && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.kind == TftpKind::Hpa {
            kill_hpa_children(self.port);
        }
    }
}

/// tftpd-hpa forks a child per transfer that outlives the listener until its
/// own timeout: kill, by PID, the in.tftpd processes started with this
/// test's `-a 127.0.0.1:PORT`.
fn kill_hpa_children(port: u16) {
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
            // SAFETY: kill(2) with a PID read from /proc; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The venv's python with pyftpdlib and pyOpenSSL.
pub fn ftp_python() -> PathBuf {
    let venv = std::env::var_os("OFFSITE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import pyftpdlib, OpenSSL"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "pyftpdlib and pyopenssl are missing from the venv {}: {FTP_INSTALL}",
        venv.display()
    );
    py
}

pub const FTP_USER: &str = "backup";
pub const FTP_PASSWORD: &str = "ftp-Pw-4417x";

/// A running pyftpdlib server (plugins/ftp/tests/ftpd.py).
pub struct FtpServer {
    child: Child,
    pub port: u16,
    /// The directory the user logs in to.
    pub root: PathBuf,
    /// With TLS: the server's self-signed certificate, PEM (what `tls_ca`
    /// pins).
    pub cert_pem: Option<String>,
    /// Every command and reply (PASS masked), for assertions.
    pub log: PathBuf,
}

impl FtpServer {
    /// Plain FTP serving `root`.
    pub fn plain(root: &Path) -> FtpServer {
        FtpServer::start(root, false)
    }

    /// Explicit FTPS (AUTH TLS required for control and data) with a fresh
    /// self-signed certificate for 127.0.0.1, made in `root`'s parent.
    pub fn tls(root: &Path) -> FtpServer {
        FtpServer::start(root, true)
    }

    /// Plain FTP with extra ftpd.py options (e.g. `--refuse-dot-names`).
    pub fn plain_with(root: &Path, extra: &[&str]) -> FtpServer {
        FtpServer::start_with(root, false, extra)
    }

    fn start(root: &Path, tls: bool) -> FtpServer {
        FtpServer::start_with(root, tls, &[])
    }

    fn start_with(root: &Path, tls: bool, extra: &[&str]) -> FtpServer {
        let py = ftp_python();
        fs::create_dir_all(root).expect("create the FTP root");
        let work = root.parent().expect("root has a parent").to_path_buf();
        let script = project_root().join("plugins/ftp/tests/ftpd.py");
        let name = root.file_name().unwrap_or_default().to_string_lossy();
        let log = work.join(format!("{name}.ftpd.log"));
        let mut cmd = Command::new(py);
        cmd.arg(&script)
            .arg("--dir")
            .arg(root)
            .args(["--user", FTP_USER, "--password", FTP_PASSWORD])
            .arg("--log")
            .arg(&log)
            .args(extra);
        let mut cert_pem = None;
        if tls {
            let (pem, cert, key) = self_signed(&work, &name);
            cmd.arg("--certfile").arg(cert).arg("--keyfile").arg(key);
            cert_pem = Some(pem);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ftpd.py: {e}; {FTP_INSTALL}"));
        // ftpd.py binds port 0 and prints the port it got: no race.
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ftpd.py did not start (printed {line:?}); {FTP_INSTALL}");
        };
        FtpServer {
            child,
            port,
            root: root.to_path_buf(),
            cert_pem,
            log,
        }
    }

    /// How many times a client logged in so far.
    pub fn logins(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(" logged in.")
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Plugin settings for this server (`-s` pairs / config keys).
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("host".to_string(), "127.0.0.1".to_string()),
            ("port".to_string(), self.port.to_string()),
            ("user".to_string(), FTP_USER.to_string()),
            ("password".to_string(), FTP_PASSWORD.to_string()),
        ];
        if let Some(pem) = &self.cert_pem {
            v.push(("tls".into(), "true".into()));
            v.push(("tls_ca".into(), pem.clone()));
        }
        v
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        // A test may have stopped it (SIGSTOP): SIGKILL works regardless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 the quick way (`openssl req
/// -x509`, which marks it CA:TRUE), as `dir/NAME.pem` and `dir/NAME.key`.
/// Returns (PEM, cert path, key path).
fn self_signed(dir: &Path, name: &str) -> (String, PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}): {FTP_INSTALL}"));
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = fs::read_to_string(&cert).expect("read the certificate");
    (pem, cert, key)
}

/// Names in a directory, sorted (empty when it does not exist).
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
