//! A real S3 API server for the `s3` plugin's end-to-end tests: moto
//! (`moto_server` from the venv, tests/install/s3.sh) on a free 127.0.0.1
//! port, killed by PID on drop; boto3 helpers to set up buckets and look at
//! what the plugin left; and [`Relay`], an HTTP relay in front of moto that
//! injects S3 faults (503 SlowDown, redirects) and checks every PUT body
//! against its Content-MD5.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use base64::Engine;
use md5::{Digest, Md5};

use crate::proc::{Server, free_port};

const S3_INSTALL: &str = "run `bash tests/install/s3.sh` to install it";

/// The credentials of moto without IAM checks (any key works).
pub const ANY_KEY: (&str, &str) = ("offsite-test", "offsite-test-secret");

fn venv() -> PathBuf {
    std::env::var_os("OFFSITE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("OFFSITE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                        .join(".cache/offsite")
                })
                .join("venv")
        })
}

/// boto3 one-liners the tests need; run with the venv's python.
const ADMIN_PY: &str = r#"
import json, sys, concurrent.futures
import boto3, requests
from botocore.config import Config

ep, key, secret, cmd, *args = sys.argv[1:]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
kw = dict(endpoint_url=ep, aws_access_key_id=key, aws_secret_access_key=secret,
          region_name="us-east-1")
s3 = boto3.client("s3", config=cfg, **kw)
if cmd == "mkbucket":
    s3.create_bucket(Bucket=args[0])
elif cmd == "fill":
    bucket, prefix, n = args[0], args[1], int(args[2])
    def put(i):
        s3.put_object(Bucket=bucket, Key=f"{prefix}obj-{i:05d}.bin", Body=b"x" * (i % 7))
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(put, range(n)))
elif cmd == "put":
    s3.put_object(Bucket=args[0], Key=args[1], Body=args[2].encode())
elif cmd == "keys":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=args[1]):
        for o in page.get("Contents", []):
            print(o["Key"], o["Size"], o["ETag"])
elif cmd == "uploads":
    r = s3.list_multipart_uploads(Bucket=args[0])
    for u in r.get("Uploads", []):
        print(u["Key"], u["UploadId"])
elif cmd == "versioning":
    s3.put_bucket_versioning(Bucket=args[0], VersioningConfiguration={"Status": "Enabled"})
elif cmd == "versions":
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=args[0], Prefix=args[1]):
        for v in page.get("Versions", []):
            print("version", v["Key"], v["VersionId"])
        for d in page.get("DeleteMarkers", []):
            print("marker", d["Key"], d["VersionId"])
elif cmd == "download":
    s3.download_file(args[0], args[1], args[2])
elif cmd == "iam-user":
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="offsite")
    iam.put_user_policy(UserName="offsite", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="offsite")["AccessKey"]
    print(k["AccessKeyId"], k["SecretAccessKey"])
elif cmd == "enforce-auth":
    # From here on moto checks every request's SigV4 signature and the
    # IAM policy of its access key.
    requests.post(ep + "/moto-api/reset-auth", data=b"0").raise_for_status()
else:
    sys.exit(f"unknown command {cmd}")
"#;

/// A running moto server.
pub struct Moto {
    _server: Server,
    pub port: u16,
    /// Credentials that work on it.
    pub key: (String, String),
}

impl Moto {
    /// moto with any credentials accepted.
    pub fn start() -> Moto {
        let bin = venv().join("bin/moto_server");
        assert!(bin.is_file(), "{} is missing: {S3_INSTALL}", bin.display());
        let port = free_port();
        let server = Server::spawn(
            "moto_server",
            Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .wait_tcp(port);
        Moto {
            _server: server,
            port,
            key: (ANY_KEY.0.into(), ANY_KEY.1.into()),
        }
    }

    /// moto that checks signatures and IAM permissions: `key` is the only
    /// key pair it accepts (an IAM user allowed s3:*). Buckets must be made
    /// before: call with the buckets to create.
    pub fn start_with_auth(buckets: &[&str]) -> Moto {
        let mut m = Moto::start();
        for b in buckets {
            m.admin(&["mkbucket", b]);
        }
        let out = m.admin(&["iam-user"]);
        let mut it = out.split_whitespace();
        let key = (
            it.next().expect("access key id").to_string(),
            it.next().expect("secret").to_string(),
        );
        m.admin(&["enforce-auth"]);
        m.key = key;
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's PID (to stop it with SIGSTOP, as a hung server).
    pub fn pid(&self) -> u32 {
        self._server.pid()
    }

    /// Run one ADMIN_PY command with the server's working key; its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let py = venv().join("bin/python");
        let out = Command::new(&py)
            .arg("-c")
            .arg(ADMIN_PY)
            .arg(self.endpoint())
            .arg(&self.key.0)
            .arg(&self.key.1)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {S3_INSTALL}", py.display()));
        assert!(
            out.status.success(),
            "boto3 {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn create_bucket(&self, name: &str) {
        self.admin(&["mkbucket", name]);
    }

    /// `count` small objects `PREFIXobj-NNNNN.bin`, put by boto3 in parallel.
    pub fn fill(&self, bucket: &str, prefix: &str, count: usize) {
        self.admin(&["fill", bucket, prefix, &count.to_string()]);
    }

    /// (key, size, etag) of every object under `prefix`.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64, String)> {
        self.admin(&["keys", bucket, prefix])
            .lines()
            .map(|l| {
                let mut it = l.split(' ');
                (
                    it.next().unwrap_or_default().to_string(),
                    it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
                    it.next().unwrap_or_default().trim_matches('"').to_string(),
                )
            })
            .collect()
    }

    /// Turn versioning on (PutBucketVersioning Enabled).
    pub fn enable_versioning(&self, bucket: &str) {
        self.admin(&["versioning", bucket]);
    }

    /// (kind, key): every object version ("version") and delete marker
    /// ("marker") under `prefix`.
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        self.admin(&["versions", bucket, prefix])
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    }

    /// "key upload-id" of every multipart upload still in progress.
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        self.admin(&["uploads", bucket])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// What the relay does to the requests it forwards.
#[derive(Clone, Debug)]
pub enum Mischief {
    /// Forward everything untouched (to count what passes).
    Nothing,
    /// Answer every nth request with 503 SlowDown (the rest go through).
    SlowDownEvery(u64),
    /// Let `n` UploadPart requests through, then answer every later one
    /// with 503 SlowDown; everything else goes through.
    SlowDownPartsAfter(u64),
    /// Answer every request with 307 Temporary Redirect to this base URL
    /// (same path and query), as a hostile or misconfigured server could.
    RedirectTo(String),
    /// Forward every request without its `Range` header, as a server (or a
    /// proxy) that ignores ranges: the whole object comes back with 200.
    DropRange,
}

/// What the relay saw.
#[derive(Default)]
pub struct RelayLog {
    pub requests: AtomicU64,
    pub injected: AtomicU64,
    /// PUT bodies whose Content-MD5 matched.
    pub md5_ok: AtomicU64,
    /// PUTs with a body but a missing or wrong Content-MD5: "METHOD path".
    pub md5_bad: Mutex<Vec<String>>,
    pub part_puts: AtomicU64,
    /// Bytes of answer bodies sent back to the client: what the server
    /// served, counted on the wire.
    pub body_bytes_out: AtomicU64,
    /// "METHOD target" of every request, in the order they arrived.
    pub lines: Mutex<Vec<String>>,
}

/// An HTTP/1.1 relay on a free port in front of `upstream` (127.0.0.1:port).
/// Each connection carries one request (the runner opens one per request);
/// it is forwarded with `Connection: close` and the answer copied back.
pub struct Relay {
    pub port: u16,
    pub log: Arc<RelayLog>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(upstream_port: u16, mischief: Mischief) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(RelayLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, mischief) = (l2.clone(), mischief.clone());
                thread::spawn(move || {
                    let _ = relay_one(conn, upstream_port, &mischief, &log);
                });
            }
        });
        Relay { port, log, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn slow_down(n: u64) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>relay-{n}</RequestId><HostId>relay</HostId></Error>"
    );
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn relay_one(
    client: TcpStream,
    upstream_port: u16,
    mischief: &Mischief,
    log: &RelayLog,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = vec![];
    loop {
        let mut line = vec![];
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let end = line == b"\r\n";
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
        if end {
            break;
        }
    }
    let request_line = head[0].clone();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head[1..].iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut out = client;
    if header("transfer-encoding").is_some() {
        // S3 wants every body's length up front (411 MissingContentLength).
        let resp = "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        out.write_all(resp.as_bytes())?;
        return out.shutdown(Shutdown::Write);
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let n = log.requests.fetch_add(1, Ordering::SeqCst) + 1;
    log.lines.lock().unwrap().push(format!("{method} {target}"));
    let is_part = method == "PUT" && target.contains("partNumber=");
    if is_part {
        log.part_puts.fetch_add(1, Ordering::SeqCst);
    }
    if method == "PUT" && len > 0 {
        let want = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        if header("content-md5").as_deref() == Some(want.as_str()) {
            log.md5_ok.fetch_add(1, Ordering::SeqCst);
        } else {
            log.md5_bad
                .lock()
                .unwrap()
                .push(format!("{method} {target}"));
        }
    }
    let inject = match mischief {
        Mischief::Nothing | Mischief::DropRange => false,
        Mischief::SlowDownEvery(k) => n.is_multiple_of(*k),
        Mischief::SlowDownPartsAfter(k) => is_part && log.part_puts.load(Ordering::SeqCst) > *k,
        Mischief::RedirectTo(base) => {
            log.injected.fetch_add(1, Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {base}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            out.write_all(resp.as_bytes())?;
            return out.shutdown(Shutdown::Write);
        }
    };
    if inject {
        log.injected.fetch_add(1, Ordering::SeqCst);
        out.write_all(&slow_down(n))?;
        return out.shutdown(Shutdown::Write);
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut raw = String::new();
    raw.push_str(&request_line);
    raw.push_str("\r\n");
    for h in &head[1..] {
        let name = h.split(':').next().unwrap_or_default().trim();
        if h.is_empty() || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if matches!(mischief, Mischief::DropRange) && name.eq_ignore_ascii_case("range") {
            continue;
        }
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("Connection: close\r\n\r\n");
    up.write_all(raw.as_bytes())?;
    up.write_all(&body)?;
    drop(body);
    // Relay the answer by its own framing: moto may keep the connection
    // open despite `Connection: close`.
    let mut answer = BufReader::new(up);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if answer.read_line(&mut line)? == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    out.write_all(head.as_bytes())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<u64>().ok())?
    });
    if method == "HEAD" || status == 204 || status == 304 {
        // No body.
    } else if let Some(n) = length {
        let sent = std::io::copy(&mut answer.take(n), &mut out)?;
        log.body_bytes_out.fetch_add(sent, Ordering::SeqCst);
    } else {
        let sent = std::io::copy(&mut answer, &mut out)?;
        log.body_bytes_out.fetch_add(sent, Ordering::SeqCst);
    }
    out.shutdown(Shutdown::Write)
}
