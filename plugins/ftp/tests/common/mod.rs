//! Test harness: a real pyftpdlib server per test (started by
//! `offsite-test-servers`, tests/servers at the repository root, shared with
//! the end-to-end harness; killed by PID on drop), test certificates,
//! streaming random data, and a relay that cuts a data connection.
#![allow(dead_code, unused_imports)]

use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use offsite_ftp::Settings;
use offsite_test_servers::ftp::{Cert, FtpOptions, FtpServer, ca_signed, self_signed};
use sha2::{Digest, Sha256};

pub use offsite_test_servers::free_tcp_ports as free_ports;
pub use offsite_test_servers::ftp::{PASSWORD, USER};

pub const MB: u64 = 1024 * 1024;

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

/// A running pyftpdlib server on 127.0.0.1, in its own scratch directory.
pub struct Server {
    server: FtpServer,
    pub port: u16,
    /// The directory the test user sees as `/`.
    pub root: PathBuf,
    /// PEM of the CA that signed the server's certificate (TLS only).
    pub ca_pem: Option<String>,
    pub tls: bool,
    /// Removed after the server is killed (fields drop in order).
    dir: ScratchDir,
}

impl Server {
    pub fn start(opts: Opts) -> Server {
        let dir = ScratchDir::new("ftpd");
        let cert = match opts.self_signed {
            true => Cert::SelfSigned,
            false => Cert::CaSigned,
        };
        let options = FtpOptions {
            tls: opts.tls.then_some(cert),
            disable: opts.disable,
            lie_size: opts.lie_size,
            passive_ports: true,
            extra: vec![],
        };
        let server = FtpServer::start(&dir.0.join("root"), &options);
        Server {
            port: server.port,
            root: server.root.clone(),
            ca_pem: server.cert_pem.clone(),
            tls: opts.tls,
            server,
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
        self.server.pid()
    }

    /// The server's log: every command and reply.
    pub fn log_text(&self) -> String {
        self.server.log_text()
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

/// Kills a process by PID (SIGKILL), as if the server machine died.
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// A test CA and a server certificate it signed for 127.0.0.1/localhost.
/// Returns (CA PEM text, cert path, key path).
pub fn make_certs(dir: &Path) -> (String, PathBuf, PathBuf) {
    ca_signed(dir, "test")
}

/// A self-signed certificate the quick way (`openssl req -x509`, which marks
/// it CA:TRUE). Returns (its PEM text, cert path, key path).
pub fn make_self_signed(dir: &Path) -> (String, PathBuf, PathBuf) {
    self_signed(dir, "self")
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
