//! pyftpdlib (`plugins/ftp/tests/ftpd.py`, from the venv that
//! `tests/install/ftp.sh` makes), plain or explicit FTPS, on a free
//! 127.0.0.1 port, with test certificates made by `openssl`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use crate::{cache_dir, free_tcp_ports};

const INSTALL: &str = "tests/install/ftp.sh";

/// The test user's name and password.
pub const USER: &str = "backup";
pub const PASSWORD: &str = "ftp-Pw-4417x";

/// The venv's python, with pyftpdlib and pyOpenSSL importable. Fails (never
/// skips) with a message naming the install script when they are missing.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
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
            "the FTP tests need pyftpdlib and pyopenssl in the venv {} (from OFFSITE_VENV, \
             else $OFFSITE_CACHE/venv, else ~/.cache/offsite/venv): run `bash {INSTALL}` \
             from the repository root first",
            venv.display()
        );
        py
    })
    .clone()
}

/// The server's certificate for explicit FTPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// Self-signed the quick way (`openssl req -x509`, which marks it
    /// CA:TRUE); the PEM to trust is the certificate itself.
    SelfSigned,
    /// Signed by a fresh test CA (CA:FALSE, serverAuth, for 127.0.0.1 and
    /// localhost); the PEM to trust is the CA's.
    CaSigned,
}

/// How to run ftpd.py.
#[derive(Clone, Debug, Default)]
pub struct FtpOptions {
    /// Explicit FTPS (AUTH TLS required for control and data).
    pub tls: Option<Cert>,
    /// Commands the server answers with 500 (to force the client's fallbacks).
    pub disable: Vec<&'static str>,
    /// SIZE answers one byte more than the file has.
    pub lie_size: bool,
    /// Passive data connections on 8 ports that were free at start, rather
    /// than any the kernel picks.
    pub passive_ports: bool,
    /// More ftpd.py options (e.g. `--refuse-dot-names`).
    pub extra: Vec<&'static str>,
}

/// A running pyftpdlib server. Its log, stderr and certificates are written
/// beside `root` (in its parent, named after it).
pub struct FtpServer {
    child: Child,
    pub port: u16,
    /// The directory the user logs in to.
    pub root: PathBuf,
    /// With TLS: the PEM a client must trust (the CA's, or the self-signed
    /// certificate itself, which `tls_ca` pins).
    pub cert_pem: Option<String>,
    /// Every command and reply (PASS masked), for assertions.
    pub log: PathBuf,
}

impl FtpServer {
    /// Plain FTP serving `root`.
    pub fn plain(root: &Path) -> FtpServer {
        FtpServer::start(root, &FtpOptions::default())
    }

    /// Explicit FTPS with a fresh self-signed certificate for 127.0.0.1.
    pub fn tls(root: &Path) -> FtpServer {
        let opts = FtpOptions {
            tls: Some(Cert::SelfSigned),
            ..FtpOptions::default()
        };
        FtpServer::start(root, &opts)
    }

    /// Plain FTP with extra ftpd.py options (e.g. `--refuse-dot-names`).
    pub fn plain_with(root: &Path, extra: &[&'static str]) -> FtpServer {
        let opts = FtpOptions {
            extra: extra.to_vec(),
            ..FtpOptions::default()
        };
        FtpServer::start(root, &opts)
    }

    /// ftpd.py serving `root` (created) for [`USER`] / [`PASSWORD`].
    pub fn start(root: &Path, opts: &FtpOptions) -> FtpServer {
        let py = python();
        fs::create_dir_all(root).expect("create the FTP root");
        let work = root.parent().expect("root has a parent").to_path_buf();
        let name = root.file_name().unwrap_or_default().to_string_lossy();
        let script = crate::project_root().join("plugins/ftp/tests/ftpd.py");
        let log = work.join(format!("{name}.ftpd.log"));
        let mut cmd = Command::new(py);
        cmd.arg(script)
            .arg("--dir")
            .arg(root)
            .args(["--user", USER, "--password", PASSWORD])
            .arg("--log")
            .arg(&log);
        if opts.passive_ports {
            let ports: Vec<String> = free_tcp_ports(8).iter().map(u16::to_string).collect();
            cmd.args(["--passive-ports", &ports.join(",")]);
        }
        let cert_pem = opts.tls.map(|kind| {
            let (pem, cert, key) = match kind {
                Cert::SelfSigned => self_signed(&work, &name),
                Cert::CaSigned => ca_signed(&work, &name),
            };
            cmd.arg("--certfile").arg(cert).arg("--keyfile").arg(key);
            pem
        });
        for c in &opts.disable {
            cmd.args(["--disable", c]);
        }
        if opts.lie_size {
            cmd.arg("--lie-size");
        }
        cmd.args(&opts.extra);
        let stderr_path = work.join(format!("{name}.ftpd.stderr"));
        let stderr = fs::File::create(&stderr_path).expect("create the ftpd.py stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting ftpd.py: {e}; run `bash {INSTALL}`"));
        match read_port(&mut child) {
            Ok(port) => FtpServer {
                child,
                port,
                root: root.to_path_buf(),
                cert_pem,
                log,
            },
            Err(line) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("ftpd.py did not start (printed {line:?}; run `bash {INSTALL}`):\n{err}");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log: every command and reply.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The ftp plugin's settings for this server (`-s` pairs / config
    /// keys): host, port, user, password, and with TLS the PEM to trust.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("host".to_string(), "127.0.0.1".to_string()),
            ("port".to_string(), self.port.to_string()),
            ("user".to_string(), USER.to_string()),
            ("password".to_string(), PASSWORD.to_string()),
        ];
        if let Some(pem) = &self.cert_pem {
            v.push(("tls".into(), "true".into()));
            v.push(("tls_ca".into(), pem.clone()));
        }
        v
    }

    /// How many times a client logged in so far.
    pub fn logins(&self) -> usize {
        self.log_text().matches(" logged in.").count()
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        // A test may have stopped it (SIGSTOP): SIGKILL works regardless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ftpd.py binds port 0 and prints the port it got (no race); waits 30 s at
/// most. `Err` holds what it printed instead.
fn read_port(child: &mut Child) -> Result<u16, String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    line.trim().parse::<u16>().map_err(|_| line)
}

/// Runs `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
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
}

/// A P-256 key made along with the request or certificate.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed certificate for 127.0.0.1 the quick way (`openssl req
/// -x509`, which marks it CA:TRUE), as `dir/NAME.pem` and `dir/NAME.key`.
/// Returns (its PEM text, cert path, key path).
pub fn self_signed(dir: &Path, name: &str) -> (String, PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let mut a = vec!["req", "-x509"];
    a.extend(EC_KEY);
    a.extend(["-keyout", &key, "-out", &cert, "-days", "2"]);
    a.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    openssl(dir, &a);
    let pem = fs::read_to_string(dir.join(&cert)).expect("read the certificate");
    (pem, dir.join(cert), dir.join(key))
}

/// A test CA and a server certificate it signed for 127.0.0.1/localhost, as
/// `dir/NAME-ca.pem` and `dir/NAME-server.{pem,key}`. Returns (CA PEM text,
/// cert path, key path).
pub fn ca_signed(dir: &Path, name: &str) -> (String, PathBuf, PathBuf) {
    let f = |what: &str| format!("{name}-{what}");
    let (ca, ca_key) = (f("ca.pem"), f("ca.key"));
    let (cert, key, csr, ext) = (
        f("server.pem"),
        f("server.key"),
        f("server.csr"),
        f("server.ext"),
    );
    let mut a = vec!["req", "-x509"];
    a.extend(EC_KEY);
    a.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2"]);
    a.extend(["-subj", "/CN=offsite test CA"]);
    openssl(dir, &a);
    let mut a = vec!["req"];
    a.extend(EC_KEY);
    a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &a);
    fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .expect("write the certificate extensions");
    let mut a = vec!["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key];
    a.extend([
        "-set_serial",
        "2",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    openssl(dir, &a);
    let pem = fs::read_to_string(dir.join(&ca)).expect("read the CA certificate");
    (pem, dir.join(cert), dir.join(key))
}
