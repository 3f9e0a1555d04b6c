//! One request at a time, with retries and redirects; and the calls built
//! on it: head, remove, list, fetch.

use std::io::Write;
use std::time::SystemTime;

use offsite_sdk::{Error, LogLevel, ObjectInfo};
use rusty_s3::actions::ListObjectsV2;
use sha2::{Digest, Sha256};
use url::Url;

use crate::fault::{Context, Fault, S3Error, classify, error_text};
use crate::http::{self, Chunk, Exchange, Response};
use crate::request::{Op, S3, SHA256_META};
use crate::retry::{ATTEMPTS, Backoff};

/// Redirects followed for one request. S3 sends 307 Temporary Redirect while
/// a new bucket's DNS spreads; the sandbox refuses any other host:port.
const MAX_REDIRECTS: u32 = 3;
/// Fetch chunk: the memory a fetch holds, whatever the object's size.
const FETCH_CHUNK: usize = 1 << 20;

pub struct Client {
    pub s3: S3,
}

/// What a HEAD says about an object.
pub struct Head {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub etag: Option<String>,
    /// `x-amz-server-side-encryption`, when the server encrypts at rest.
    pub encryption: Option<String>,
}

impl Client {
    pub fn context<'a>(&'a self, what: &'a str) -> Context<'a> {
        Context {
            what,
            bucket: &self.s3.cfg.bucket,
            endpoint: self.s3.cfg.endpoint.as_str(),
            region: &self.s3.cfg.region,
        }
    }

    /// Add what only the destination knows to an error: a refused request
    /// with virtual-hosted addressing went to `bucket.host`, not `endpoint`.
    pub fn explain<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| match e {
            Error::Config(m) if m.contains("HttpRequestDenied") && !self.s3.cfg.path_style => {
                Error::Config(format!(
                    "{m}; with `path_style` = false requests go to {}.{}, which the sandbox does not grant: set `path_style` = true",
                    self.s3.cfg.bucket,
                    self.s3.cfg.endpoint.host_str().unwrap_or_default()
                ))
            }
            e => e,
        })
    }

    pub fn endpoint(&self) -> &str {
        self.s3.cfg.endpoint.as_str()
    }

    /// One attempt: sign, send, and turn a non-2xx answer into a fault.
    fn attempt(&self, op: &Op, body: &[u8]) -> Result<Response, Fault> {
        let req = self.s3.sign(op, SystemTime::now()).map_err(Fault::Final)?;
        let mut resp = Exchange::run(&req, body, &op.what, self.endpoint())?;
        if (200..300).contains(&resp.status) || is_redirect(resp.status, &resp) {
            return Ok(resp);
        }
        let text = resp.error_text();
        Err(classify(resp.status, &text, &self.context(&op.what)))
    }

    /// Send `op` until it succeeds, fails for good, or the retry bound is
    /// reached (then `transient`). Follows redirects that carry a Location.
    pub fn call(&self, op: &Op, body: &[u8]) -> Result<Response, Error> {
        let mut op = op.clone();
        let mut backoff = Backoff::new();
        let mut redirects = 0;
        loop {
            match self.attempt(&op, body) {
                Ok(resp) if is_redirect(resp.status, &resp) => {
                    let to = resp.header("location").unwrap_or_default();
                    redirects += 1;
                    let next = op.url.join(&to).ok().filter(|_| redirects <= MAX_REDIRECTS);
                    let Some(next) = next else {
                        return Err(Error::Other(format!(
                            "{}: too many redirects (last to {to})",
                            op.what
                        )));
                    };
                    offsite_sdk::log(
                        LogLevel::Info,
                        &format!("s3: {} redirected to {}", op.what, safe_url(&next)),
                    );
                    op.url = next;
                }
                Ok(resp) => return Ok(resp),
                Err(Fault::Final(e)) => return Err(e),
                Err(Fault::Retry(m)) => self.pause(&mut backoff, &op.what, &m)?,
            }
        }
    }

    /// Wait before the next attempt, or give up as `transient`.
    pub fn pause(&self, backoff: &mut Backoff, what: &str, why: &str) -> Result<(), Error> {
        match backoff.next(http::random()) {
            Some(d) => {
                offsite_sdk::log(
                    LogLevel::Warn,
                    &format!(
                        "s3: {why}; attempt {} of {ATTEMPTS} in {:.1} s",
                        backoff.failures() + 1,
                        d.as_secs_f64()
                    ),
                );
                http::sleep(d);
                Ok(())
            }
            None => Err(gave_up(what, why)),
        }
    }

    pub fn head(&self, key: &str) -> Result<Head, Error> {
        let resp = self.call(&self.s3.head(key), &[])?;
        Ok(Head {
            size: resp.header("content-length").and_then(|v| v.parse().ok()),
            sha256: resp.header(SHA256_META),
            etag: resp.header("etag"),
            encryption: resp
                .header("x-amz-server-side-encryption")
                .filter(|v| !v.is_empty()),
        })
    }

    /// DeleteObject answers 204 whether or not the key existed; the
    /// contract wants `not-found` for a missing one, so HEAD first. A key
    /// without s3:GetObject gets 403 there: it deletes all the same.
    pub fn remove(&self, key: &str) -> Result<(), Error> {
        match self.head(key) {
            Ok(_) | Err(Error::Config(_)) => {}
            Err(e) => return Err(e),
        }
        self.call(&self.s3.delete(key), &[])?;
        Ok(())
    }

    /// Every object directly under `prefix + name_prefix`, names without
    /// `prefix`, following continuation tokens page by page.
    pub fn list(&self, name_prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let prefix = &self.s3.cfg.prefix;
        let full = format!("{prefix}{name_prefix}");
        let mut out = vec![];
        let mut token: Option<String> = None;
        loop {
            let op = self.s3.list(&full, token.as_deref());
            let mut resp = self.call(&op, &[])?;
            let text = resp
                .text(64 << 20)
                .map_err(|f| Error::Transient(f.message()))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| Error::Other(format!("{}: unreadable answer: {e}", op.what)))?;
            for obj in page.contents {
                let Some(name) = obj.key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: obj.size,
                    modified: obj
                        .last_modified
                        .as_deref()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .and_then(|t| u64::try_from(t.as_second()).ok()),
                });
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Stream the object into `sink` in fixed chunks. A connection that
    /// breaks mid-body is resumed with a Range request pinned to the same
    /// ETag. The bytes are checked against the sha256 stored at upload.
    pub fn fetch(&self, key: &str, sink: &mut impl Write) -> Result<u64, Error> {
        let mut written = 0u64;
        let mut total: Option<u64> = None;
        let mut etag: Option<String> = None;
        let mut stored_sha: Option<String> = None;
        let mut hasher = Sha256::new();
        let mut backoff = Backoff::new();
        loop {
            let op = self.s3.get(key, written, etag.as_deref());
            let mut resp = self.call(&op, &[])?;
            if written == 0 {
                total = resp.header("content-length").and_then(|v| v.parse().ok());
                etag = resp.header("etag");
                stored_sha = resp.header(SHA256_META);
            } else if resp.status != 206 {
                return Err(Error::Other(format!(
                    "{}: asked to resume at byte {written}, the server answered HTTP {} instead of 206",
                    op.what, resp.status
                )));
            }
            let broken = loop {
                match resp.read(FETCH_CHUNK) {
                    Chunk::Data(d) => {
                        hasher.update(&d);
                        sink.write_all(&d).map_err(|e| {
                            Error::Other(format!("{key}: writing the fetched bytes: {e}"))
                        })?;
                        written += d.len() as u64;
                    }
                    Chunk::End => break None,
                    Chunk::Broken(f) => break Some(f),
                }
            };
            match broken {
                None => break,
                Some(Fault::Final(e)) => return Err(e),
                Some(Fault::Retry(m)) => self.pause(&mut backoff, &op.what, &m)?,
            }
        }
        sink.flush()
            .map_err(|e| Error::Other(format!("{key}: writing the fetched bytes: {e}")))?;
        if let Some(t) = total
            && t != written
        {
            return Err(Error::Transient(format!(
                "GetObject {key}: the answer announced {t} bytes but {written} arrived"
            )));
        }
        if let Some(want) = stored_sha {
            let got = hex::encode(hasher.finalize());
            if !want.eq_ignore_ascii_case(&got) {
                return Err(Error::Other(format!(
                    "GetObject {key}: the bytes have sha256 {got}, but the object was stored with {want}: the copy in the bucket is damaged"
                )));
            }
        }
        Ok(written)
    }
}

fn is_redirect(status: u16, resp: &Response) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308) && resp.header("location").is_some()
}

/// A URL for logs: scheme, authority and path; the query may carry an
/// upload ID, never a secret, but it adds nothing to a log line.
fn safe_url(u: &Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or_default(),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

pub fn gave_up(what: &str, why: &str) -> Error {
    Error::Transient(format!(
        "{what}: gave up after {ATTEMPTS} attempts; last: {why}"
    ))
}

/// Parse an S3 `<Error>` found in a 200 answer (CompleteMultipartUpload can
/// fail after sending its head).
pub fn error_in_body(client: &Client, what: &str, text: &str) -> Option<Fault> {
    S3Error::parse(text).map(|_| classify(200, text, &client.context(what)))
}

pub fn text_of(e: &Error) -> String {
    error_text(e).to_string()
}
