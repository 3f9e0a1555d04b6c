//! Real servers for the notifier plugins: an HTTP sink that records every
//! request (tests/harness/http_sink.py, standard-library Python) and aiosmtpd
//! (mails land in `DIR/new`). Each runs on a free 127.0.0.1 port and is
//! killed when dropped. `tests/install/notify.sh` installs what they need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

use crate::paths::project_root;
use crate::proc::{Server, free_port, run, text};

const INSTALL: &str = "run tests/install/notify.sh (part of `just test`)";

/// The venv's Python: `$OFFSITE_VENV`, else
/// `${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv`.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("OFFSITE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("OFFSITE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                        .join(".cache/offsite")
                });
            cache.join("venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: {INSTALL}",
        python.display()
    );
    python
}

fn harness_file(name: &str) -> PathBuf {
    project_root().join("tests/harness").join(name)
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// One request as the HTTP sink recorded it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status the sink answered.
    pub status: u16,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// An HTTP server that answers each request with the next status of a list
/// (the last one repeats) and records every request.
pub struct HttpSink {
    pub port: u16,
    _server: Server,
    log: PathBuf,
    _dir: TempDir,
}

impl HttpSink {
    /// Answers 200 to everything.
    pub fn start() -> HttpSink {
        HttpSink::answering(&[200])
    }

    /// Answers `statuses[0]`, then `statuses[1]`, …, then the last one again.
    pub fn answering(statuses: &[u16]) -> HttpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("requests.jsonl");
        let port = free_port();
        let mut cmd = Command::new(venv_python());
        cmd.arg(harness_file("http_sink.py"))
            .arg(port.to_string())
            .arg(&log)
            .args(statuses.iter().map(u16::to_string))
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "stderr.log"));
        let server = Server::spawn("http sink", &mut cmd).wait_tcp(port);
        HttpSink {
            port,
            _server: server,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, oldest first. (The sink writes a request down
    /// before it answers, so a delivered notification is already here.)
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("sink log line is JSON");
                Request {
                    method: v["method"].as_str().unwrap_or_default().to_string(),
                    path: v["path"].as_str().unwrap_or_default().to_string(),
                    headers: v["headers"]
                        .as_array()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h[0].as_str().unwrap_or_default().to_string(),
                                        h[1].as_str().unwrap_or_default().to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    body: v["body"].as_str().unwrap_or_default().to_string(),
                    status: v["status"].as_u64().unwrap_or_default() as u16,
                }
            })
            .collect()
    }
}

/// A self-signed certificate for 127.0.0.1 made with `openssl req -x509`,
/// as an operator would make one (so it is marked CA:TRUE). Returns the
/// certificate and key paths.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let o = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(
        o.status.success(),
        "openssl req failed ({INSTALL}): {}",
        text(&o)
    );
    (cert, key)
}

/// aiosmtpd with the Mailbox handler: every accepted mail is a file in `DIR/new`.
pub struct SmtpSink {
    pub port: u16,
    _server: Server,
    maildir: PathBuf,
    auth_log: PathBuf,
    /// The server certificate (PEM) when it offers STARTTLS.
    pub cert_pem: Option<String>,
    _dir: TempDir,
}

impl SmtpSink {
    /// `python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`,
    /// plus `extra` arguments before `-c`.
    fn cli(extra: &[&str], cert: bool) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        // The Mailbox handler creates the Maildir (tmp, new, cur) only when
        // the directory does not exist yet.
        let maildir = dir.path().join("mail");
        let port = free_port();
        let mut cmd = Command::new(venv_python());
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(extra);
        let mut cert_pem = None;
        if cert {
            let (c, k) = self_signed_cert(dir.path());
            cmd.arg("--tlscert").arg(&c).arg("--tlskey").arg(&k);
            cert_pem = Some(std::fs::read_to_string(&c).expect("read cert"));
        }
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "stderr.log"));
        let server = Server::spawn(&format!("aiosmtpd ({INSTALL})"), &mut cmd).wait_tcp(port);
        SmtpSink {
            port,
            _server: server,
            maildir,
            auth_log: dir.path().join("auth.jsonl"),
            cert_pem,
            _dir: dir,
        }
    }

    /// Plain SMTP, no STARTTLS, no AUTH.
    pub fn plain() -> SmtpSink {
        SmtpSink::cli(&[], false)
    }

    /// Plain SMTP whose messages may be at most `bytes` long (RFC 1870 SIZE):
    /// a longer one gets 552.
    pub fn with_size_limit(bytes: u32) -> SmtpSink {
        SmtpSink::cli(&["-s", &bytes.to_string()], false)
    }

    /// STARTTLS with a self-signed certificate, required before any mail
    /// command (aiosmtpd's `require_starttls` default with a certificate).
    pub fn starttls() -> SmtpSink {
        SmtpSink::cli(&[], true)
    }

    /// STARTTLS required, then AUTH required with `user`/`password`,
    /// offering only `mechanisms` (PLAIN, LOGIN; both when empty). Runs
    /// aiosmtpd through tests/harness/smtp_auth_sink.py, since its command
    /// line takes no authenticator.
    pub fn with_auth(user: &str, password: &str, mechanisms: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let maildir = dir.path().join("mail");
        let auth_log = dir.path().join("auth.jsonl");
        let (cert, key) = self_signed_cert(dir.path());
        let port = free_port();
        let mut cmd = Command::new(venv_python());
        cmd.arg(harness_file("smtp_auth_sink.py"))
            .arg(port.to_string())
            .arg(&maildir)
            .args([user, password])
            .arg(&cert)
            .arg(&key)
            .arg(&auth_log)
            .args(mechanisms)
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "stderr.log"));
        let server =
            Server::spawn(&format!("aiosmtpd with AUTH ({INSTALL})"), &mut cmd).wait_tcp(port);
        SmtpSink {
            port,
            _server: server,
            maildir,
            auth_log,
            cert_pem: Some(std::fs::read_to_string(&cert).expect("read cert")),
            _dir: dir,
        }
    }

    /// Every mail received so far, as the files hold them.
    pub fn mails(&self) -> Vec<String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("read mail"))
            .collect()
    }

    /// AUTH attempts (`with_auth` sinks): `{"mechanism", "login", "success"}`.
    pub fn auth_attempts(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.auth_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("auth log line is JSON"))
            .collect()
    }
}
