//! Test harness: a real pyftpdlib server per test (killed by PID on drop),
//! test certificates, streaming random data, and a relay that cuts a data
//! connection.
#![allow(dead_code)]

use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use offsite_ftp::Settings;
use sha2::{Digest, Sha256};

pub const USER: &str = "backup";
pub const PASSWORD: &str = "s3cret-Pa55word";
pub const MB: u64 = 1024 * 1024;

const INSTALL: &str = "tests/install/ftp.sh";

/// The venv's python, with pyftpdlib and pyOpenSSL importable. Fails (never
/// skips) with a message naming the install script when they are missing.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = env::var_os("OFFSITE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                env::var_os("OFFSITE_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(env::var_os("HOME").expect("HOME is not set"))
                            .join(".cache/offsite")
                    })
                    .join("venv")
            });
        let py = venv.join("bin/python");
        let ok = Command::new(&py)
            .args(["-c", "import pyftpdlib, OpenSSL"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the FTP tests need pyftpdlib and pyopenssl in the venv {} (from OFFSITE_VENV, \
             else $OFFSITE_CACHE/venv, else ~/.cache/offsite/venv): run `bash {INSTALL}` \
             from the repository root first",
            venv.display()
        );
        py
    })
}

/// A fresh directory under the system temp dir, removed by `ScratchDir`'s drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = env::temp_dir().join(format!("offsite-ftp-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        ScratchDir(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[derive(Default, Clone)]
pub struct Opts {
    pub tls: bool,
    /// Commands the server answers with 500 (to force the client's fallbacks).
    pub disable: Vec<&'static str>,
    pub lie_size: bool,
    /// TLS with a self-signed `openssl req -x509` certificate (CA:TRUE, the
    /// usual quick server certificate) instead of a CA-signed one.
    pub self_signed: bool,
}

/// A running pyftpdlib server on 127.0.0.1.
pub struct Server {
    child: Child,
    pub port: u16,
    /// The directory the test user sees as `/`.
    pub root: PathBuf,
    pub log: PathBuf,
    /// PEM of the CA that signed the server's certificate (TLS only).
    pub ca_pem: Option<String>,
    pub tls: bool,
    dir: ScratchDir,
}

impl Server {
    pub fn start(opts: Opts) -> Server {
        let py = python();
        let dir = ScratchDir::new("ftpd");
        let root = dir.0.join("root");
        fs::create_dir_all(&root).unwrap();
        let log = dir.0.join("ftpd.log");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ftpd.py");
        let mut cmd = Command::new(py);
        cmd.arg(script)
            .arg("--dir")
            .arg(&root)
            .args(["--user", USER, "--password", PASSWORD])
            .arg("--log")
            .arg(&log)
            .arg("--passive-ports")
            .arg(
                free_ports(8)
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        let mut ca_pem = None;
        if opts.tls {
            let (ca, cert, key) = match opts.self_signed {
                true => make_self_signed(&dir.0),
                false => make_certs(&dir.0),
            };
            cmd.arg("--certfile").arg(cert).arg("--keyfile").arg(key);
            ca_pem = Some(ca);
        }
        for c in &opts.disable {
            cmd.args(["--disable", c]);
        }
        if opts.lie_size {
            cmd.arg("--lie-size");
        }
        let stderr = fs::File::create(dir.0.join("stderr.txt")).unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start python ftpd.py");
        // The server prints the port it bound; wait for it (bounded).
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            let err = fs::read_to_string(dir.0.join("stderr.txt")).unwrap_or_default();
            panic!("ftpd.py did not start (printed {line:?}):\n{err}");
        };
        Server {
            child,
            port,
            root,
            log,
            ca_pem,
            tls: opts.tls,
            dir,
        }
    }

    pub fn plain() -> Server {
        Server::start(Opts::default())
    }

    pub fn tls() -> Server {
        Server::start(Opts {
            tls: true,
            ..Opts::default()
        })
    }

    /// Settings for this server (TLS ones trust the test CA).
    pub fn settings(&self) -> Settings {
        Settings {
            host: "127.0.0.1".into(),
            port: self.port,
            user: USER.into(),
            password: PASSWORD.into(),
            tls: self.tls,
            tls_ca: self.ca_pem.clone(),
            timeout: Duration::from_secs(20),
            ..Settings::default()
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log: every command and reply.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Names in a directory under the root, sorted.
    pub fn ls(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join(sub))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a process by PID (SIGKILL), as if the server machine died.
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// `n` ports that were free a moment ago (bound to port 0 together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A test CA and a server certificate it signed for 127.0.0.1/localhost,
/// made with `openssl`. Returns (CA PEM text, cert path, key path).
pub fn make_certs(dir: &Path) -> (String, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl not runnable ({e}): run `bash {INSTALL}`"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
    a.extend(["-subj", "/CN=offsite test CA"]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&a);
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    let ca = fs::read_to_string(dir.join("ca.pem")).unwrap();
    (ca, dir.join("server.pem"), dir.join("server.key"))
}

/// A self-signed certificate the quick way (`openssl req -x509`, which marks
/// it CA:TRUE). Returns (its PEM text, cert path, key path).
pub fn make_self_signed(dir: &Path) -> (String, PathBuf, PathBuf) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes", "-keyout", "self.key", "-out", "self.pem", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}): run `bash {INSTALL}`"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = fs::read_to_string(dir.join("self.pem")).unwrap();
    (pem, dir.join("self.pem"), dir.join("self.key"))
}

/// `len` pseudo-random bytes, generated as they are read (constant memory),
/// hashed on the way. Can fail, or call a hook, after a given byte count.
pub struct RandomData<'a> {
    state: u64,
    left: u64,
    done: u64,
    hasher: Sha256,
    fail_after: Option<u64>,
    hook: Option<(u64, Box<dyn FnMut() + 'a>)>,
}

impl<'a> RandomData<'a> {
    pub fn new(seed: u64, len: u64) -> RandomData<'a> {
        RandomData {
            state: seed | 1,
            left: len,
            done: 0,
            hasher: Sha256::new(),
            fail_after: None,
            hook: None,
        }
    }

    /// Reading fails with an I/O error once `n` bytes were given.
    pub fn fail_after(mut self, n: u64) -> Self {
        self.fail_after = Some(n);
        self
    }

    /// Calls `f` once, when `n` bytes were given.
    pub fn hook_after(mut self, n: u64, f: impl FnMut() + 'a) -> Self {
        self.hook = Some((n, Box::new(f)));
        self
    }

    /// SHA-256 of everything read so far.
    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Read for RandomData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((at, f)) = self.hook.as_mut()
            && self.done >= *at
        {
            f();
            self.hook = None;
        }
        if self.fail_after.is_some_and(|n| self.done >= n) {
            return Err(io::Error::other("test source failed on purpose"));
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        let n = n - n % 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        self.done += n as u64;
        Ok(n)
    }
}

/// A writer that only hashes and counts.
#[derive(Default)]
pub struct HashWriter {
    hasher: Sha256,
    pub count: u64,
}

impl HashWriter {
    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn file_sha256(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = HashWriter::default();
    io::copy(&mut f, &mut h).unwrap();
    h.sha256()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An FTP-aware relay between client and server: it forwards the control
/// connection, rewrites each 229 (EPSV) reply so the data connection also
/// goes through it, and cuts a data connection once `cut_after` bytes went
/// from the client to the server. Plain FTP only (it reads the replies).
/// Returns the port to connect to; its threads end with the test process.
pub fn cut_relay(server_port: u16, cut_after: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            thread::spawn(move || relay_control(client, server_port, cut_after));
        }
    });
    port
}

fn relay_control(client: TcpStream, server_port: u16, cut_after: u64) {
    let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let mut c_out = client;
    for line in BufReader::new(server).lines() {
        let Ok(mut line) = line else { break };
        if let Some(p) = line.strip_prefix("229 ").and_then(epsv_port) {
            let data = TcpListener::bind("127.0.0.1:0").unwrap();
            let relay_port = data.local_addr().unwrap().port();
            thread::spawn(move || relay_data(data, p, cut_after));
            line = format!("229 Entering extended passive mode (|||{relay_port}|)");
        }
        if c_out.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            break;
        }
    }
}

fn epsv_port(text: &str) -> Option<u16> {
    let inner = text.split("(|||").nth(1)?;
    inner.split('|').next()?.parse().ok()
}

fn relay_data(listener: TcpListener, server_port: u16, cut_after: u64) {
    let Ok((mut client, _)) = listener.accept() else {
        return;
    };
    let mut server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    loop {
        let want = buf.len().min((cut_after - moved) as usize);
        if want == 0 {
            break;
        }
        match client.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
                moved += n as u64;
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
