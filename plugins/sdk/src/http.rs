//! HTTP for plugins, over `wasi:http` (the runner makes the connections and
//! does TLS; a plugin may reach only the host:port of its `http-url`
//! settings).
//!
//! ```ignore
//! use offsite_sdk::http::{Request, Timeouts};
//!
//! // A body-less request: no body is ever opened (see below).
//! let mut r = Request::new("MKCOL", "http://nas:8080/dav/backups/").send()?;
//! r.ok_or_error("create the folder")?;
//!
//! // An upload: the runner's stream is spliced into the request body on
//! // the host side, never copied through the plugin's memory.
//! let mut r = Request::put(&url).header("content-type", "application/octet-stream")
//!     .send_reader(data, req.size)?;
//! r.ok_or_error(&format!("upload {}", req.name))?;
//!
//! // A download, spliced into the fetch sink the same way.
//! let mut r = Request::get(&url).send()?;
//! r.ok_or_error(&format!("fetch {}", req.name))?;
//! let n = r.copy_to(sink)?;
//! ```
//!
//! Two traps of raw `wasi:http` this module handles for you:
//! - opening a body for a request that has none makes the host send an empty
//!   *chunked* body, which some servers read as a second, malformed request.
//!   [`Request::send`] never opens one; [`Request::send_bytes`] and
//!   [`Request::send_reader`] always send a `content-length`.
//! - after exactly `content-length` bytes, the final flush of the body may
//!   report `closed` although the server answered (e.g. `201`): the answer
//!   decides, not the flush.
//!
//! Errors come back as [`crate::Error`] with the variant the runner acts on
//! ([`status_error`], [`transport_error`]). Time limits: [`Timeouts`]; the
//! runner lets a request that carries a body wait for its answer as long as
//! its `transfer_timeout` (a 50 GiB PUT is one request), and stops any call
//! whose bytes stop moving for `stall_timeout`.

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use crate::{Error, Reader, Writer};

/// The largest piece moved per splice or read.
const CHUNK: u64 = 1 << 20;

/// The two settings through which an operator chooses how the runner checks
/// this plugin's HTTPS servers: `tls_ca` (PEM text, or the path of a PEM
/// file, of the CA to trust instead of the public roots: a NAS's own CA, a
/// self-signed certificate) and `tls_insecure` (`true` skips verification).
/// The runner does TLS for `wasi:http`, so it applies them; the plugin only
/// declares them:
///
/// ```ignore
/// PluginInfo::destination("mine", "0.1.0", "...")
///     .setting(Setting::new("url", "...").required().role(SettingRole::HttpUrl))
///     .settings(http::tls_settings())
/// ```
pub fn tls_settings() -> Vec<crate::Setting> {
    vec![
        crate::Setting::new(
            "tls_ca",
            "PEM certificate(s) to trust for https:// (text, or the path of a PEM file): a private CA or the server's self-signed certificate",
        ),
        crate::Setting::new(
            "tls_insecure",
            "skip HTTPS certificate verification (encrypted, but not authenticated)",
        )
        .default("false"),
    ]
}

/// Per-request time limits the host applies; `None` keeps the host's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Option<Duration>,
    /// From the request's start to the answer's head. For a request with a
    /// body the runner raises this to its `transfer_timeout`: the body's
    /// whole upload happens inside this wait.
    pub first_byte: Option<Duration>,
    /// Silence between two pieces of the answer's body.
    pub between_bytes: Option<Duration>,
}

impl Default for Timeouts {
    /// 30 s to connect, 5 min for the answer's head, 2 min between bytes.
    fn default() -> Self {
        Timeouts {
            connect: Some(Duration::from_secs(30)),
            first_byte: Some(Duration::from_secs(300)),
            between_bytes: Some(Duration::from_secs(120)),
        }
    }
}

/// One HTTP request: method, absolute URL, headers, time limits.
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    timeouts: Timeouts,
}

impl Request {
    /// Any method, including WebDAV's (`PROPFIND`, `MKCOL`, `MOVE`...).
    /// `url` is absolute: `http://host[:port]/path[?query]`, path already
    /// percent-encoded (see [`encode_path`]).
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: vec![],
            timeouts: Timeouts::default(),
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    pub fn delete(url: &str) -> Self {
        Self::new("DELETE", url)
    }

    pub fn head(url: &str) -> Self {
        Self::new("HEAD", url)
    }

    /// Add a header (names are case-insensitive; a repeated name is sent twice).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// `authorization: Basic base64(user:password)`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = base64(format!("{user}:{password}").as_bytes());
        self.header("authorization", format!("Basic {token}"))
    }

    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// Send without a body (GET, HEAD, DELETE, MKCOL, MOVE...): the request
    /// body is never opened, so nothing but the head goes out.
    pub fn send(&self) -> Result<Response, Error> {
        let (out, future) = self.start(None)?;
        drop(out);
        wait(future, &self.what())
    }

    /// Send `body` with its `content-length`.
    pub fn send_bytes(&self, body: &[u8]) -> Result<Response, Error> {
        let (body_res, future) = self.start(Some(body.len() as u64))?;
        let body_res = body_res.expect("a body was asked for");
        let stream = body_res
            .write()
            .map_err(|()| Error::Other(format!("{}: request body opened twice", self.what())))?;
        let mut sent = 0usize;
        let mut broken = false;
        while sent < body.len() {
            let end = body.len().min(sent + CHUNK as usize);
            if stream.blocking_write_and_flush(&body[sent..end]).is_err() {
                // The server stopped reading (it may have answered early):
                // its answer says why.
                broken = true;
                break;
            }
            sent = end;
        }
        finish(stream, body_res, broken);
        wait(future, &self.what())
    }

    /// Send exactly `len` bytes of `data` (e.g. an upload's `req.size`) as
    /// the body, spliced on the host side: a 50 GiB generation passes in
    /// constant memory. When `data` ends early or fails, the body is
    /// abandoned (the server never sees a complete request) and the error
    /// is `transient`.
    pub fn send_reader(&self, data: &mut Reader, len: u64) -> Result<Response, Error> {
        let (body_res, future) = self.start(Some(len))?;
        let body_res = body_res.expect("a body was asked for");
        let stream = body_res
            .write()
            .map_err(|()| Error::Other(format!("{}: request body opened twice", self.what())))?;
        match splice_body(&stream, data, len) {
            Ok(server_stopped) => finish(stream, body_res, server_stopped),
            Err(e) => {
                // Dropped without `finish`: the host aborts the request.
                drop(stream);
                drop(body_res);
                drop(future);
                return Err(Error::Transient(format!("{}: {e}", self.what())));
            }
        }
        wait(future, &self.what())
    }

    /// `METHOD scheme://authority` for messages: never the path or query
    /// (they may hold tokens).
    fn what(&self) -> String {
        match split_url(&self.url) {
            Ok((scheme, authority, _)) => format!("{} {scheme}://{authority}", self.method),
            Err(_) => format!("{} (bad URL)", self.method),
        }
    }

    /// Build the request and hand it to the host. With `Some(len)` the body
    /// is opened (with its content-length); with `None` it never is.
    fn start(
        &self,
        body_len: Option<u64>,
    ) -> Result<(Option<OutgoingBody>, FutureIncomingResponse), Error> {
        let what = self.what();
        let (scheme, authority, path) = split_url(&self.url)?;
        let mut entries = self.headers.clone();
        if let Some(n) = body_len
            && !entries.iter().any(|(k, _)| k == "content-length")
        {
            entries.push(("content-length".into(), n.to_string().into_bytes()));
        }
        let fields = Fields::from_list(&entries)
            .map_err(|e| Error::Other(format!("{what}: bad header: {e:?}")))?;
        let out = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        let scheme = if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let bad = |part: &str| Error::Config(format!("{what}: invalid {part}"));
        out.set_method(&method).map_err(|()| bad("method"))?;
        out.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
        out.set_authority(Some(authority))
            .map_err(|()| bad("host"))?;
        out.set_path_with_query(Some(path))
            .map_err(|()| bad("path"))?;
        let body = match body_len {
            Some(_) => Some(
                out.body()
                    .map_err(|()| Error::Other(format!("{what}: body opened twice")))?,
            ),
            None => None,
        };
        let options = RequestOptions::new();
        let ns = |d: Option<Duration>| d.map(|d| d.as_nanos().min(u64::MAX as u128) as u64);
        // A host may refuse an option; it then keeps its default.
        let _ = options.set_connect_timeout(ns(self.timeouts.connect));
        let _ = options.set_first_byte_timeout(ns(self.timeouts.first_byte));
        let _ = options.set_between_bytes_timeout(ns(self.timeouts.between_bytes));
        let future = outgoing_handler::handle(out, Some(options))
            .map_err(|code| transport_error(&code, &what))?;
        Ok((body, future))
    }
}

/// Splice `len` bytes of `data` into `out`. `Ok(true)` when the server
/// stopped reading before the end (its answer will say why); `Err` when
/// the runner's stream ended early or failed.
fn splice_body(out: &OutputStream, data: &mut Reader, len: u64) -> Result<bool, String> {
    let src = data.stream();
    let mut sent = 0u64;
    while sent < len {
        match out.blocking_splice(src, (len - sent).min(CHUNK)) {
            Ok(n) => {
                sent += n;
                data.count(n);
            }
            Err(StreamError::Closed) => {
                // Which side closed: the body (the server stopped reading)
                // or the runner's stream (it ended early)?
                if matches!(out.check_write(), Err(StreamError::Closed)) {
                    return Ok(true);
                }
                return Err(format!("the data ended after {sent} of {len} bytes"));
            }
            Err(StreamError::LastOperationFailed(e)) => {
                if out.check_write().is_err() {
                    return Ok(true);
                }
                return Err(format!(
                    "reading the data failed after {sent} of {len} bytes: {}",
                    e.to_debug_string()
                ));
            }
        }
    }
    Ok(false)
}

/// Close the body after its last byte. A `closed` flush after exactly
/// content-length bytes is not a failure: the answer decides.
fn finish(stream: OutputStream, body: OutgoingBody, broken: bool) {
    if !broken {
        let _ = stream.blocking_flush();
    }
    drop(stream);
    if !broken {
        // An error here (the host saw fewer bytes than announced, or the
        // connection went) also shows in the answer, which is awaited next.
        let _ = OutgoingBody::finish(body, None);
    }
}

fn wait(future: FutureIncomingResponse, what: &str) -> Result<Response, Error> {
    future.subscribe().block();
    match future.get() {
        None => Err(Error::Transient(format!("{what}: no answer"))),
        Some(Err(())) => Err(Error::Other(format!("{what}: answer taken twice"))),
        Some(Ok(Err(code))) => Err(transport_error(&code, what)),
        Some(Ok(Ok(resp))) => Ok(Response::new(resp, what)),
    }
}

/// An answer: status and headers at once, the body on demand. Fields drop
/// in the order wasi:http requires (the stream before its body).
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _resp: IncomingResponse,
    what: String,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.stream.take();
        self.body.take();
    }
}

impl Response {
    /// Takes an answer a plugin got from `wasi:http` itself (s3 drives its
    /// own requests, several at once): status and headers now, the body
    /// through [`Self::read_chunk`] and the readers below. `what` names the
    /// request in errors.
    pub fn new(resp: IncomingResponse, what: &str) -> Response {
        let headers = resp.headers().entries();
        let status = resp.status();
        let body = resp.consume().ok();
        let stream = body.as_ref().and_then(|b| b.stream().ok());
        Response {
            status,
            headers,
            stream,
            body,
            _resp: resp,
            what: what.to_string(),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// `Ok` on 2xx; otherwise the [`status_error`] for it, with the start
    /// of the answer's body (servers explain refusals there).
    pub fn ok_or_error(&mut self, doing: &str) -> Result<(), Error> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        let body = self.text(2048).unwrap_or_default();
        Err(status_error(
            self.status,
            &format!("{doing}: {}", self.what),
            &body,
        ))
    }

    /// Blocks for the next piece of the body, at most `max` bytes: `None`
    /// at its end (or when the answer has no body), the stream's error if
    /// the connection failed mid-body.
    pub fn read_chunk(&mut self, max: u64) -> Result<Option<Vec<u8>>, wasip2::io::error::Error> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        match stream.blocking_read(max) {
            Ok(d) => Ok(Some(d)),
            Err(StreamError::Closed) => Ok(None),
            Err(StreamError::LastOperationFailed(e)) => Err(e),
        }
    }

    /// The body, up to `limit` bytes (the rest is read and dropped).
    pub fn bytes(&mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![];
        while let Some(d) = self
            .read_chunk(CHUNK)
            .map_err(|e| body_error(&e, &self.what))?
        {
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&d[..d.len().min(room)]);
        }
        Ok(buf)
    }

    /// The body as text (lossy UTF-8), up to `limit` bytes.
    pub fn text(&mut self, limit: usize) -> Result<String, Error> {
        self.bytes(limit)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Move the whole body into `sink` (a fetch's writer), spliced on the
    /// host side. Returns the bytes moved; [`Writer::written`] counts them too.
    pub fn copy_to(&mut self, sink: &mut Writer) -> Result<u64, Error> {
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        let mut moved = 0u64;
        loop {
            match sink.stream().blocking_splice(stream, CHUNK) {
                Ok(n) => {
                    moved += n;
                    sink.count(n);
                }
                Err(StreamError::Closed) => {
                    if matches!(sink.stream().check_write(), Err(StreamError::Closed)) {
                        return Err(Error::Other(format!(
                            "{}: the runner closed the fetch stream after {moved} bytes",
                            self.what
                        )));
                    }
                    return Ok(moved);
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(body_error(&e, &self.what));
                }
            }
        }
    }
}

fn body_error(e: &wasip2::io::error::Error, what: &str) -> Error {
    match wasip2::http::types::http_error_code(e) {
        Some(code) => transport_error(&code, &format!("{what} (reading the answer)")),
        None => Error::Transient(format!(
            "{what}: reading the answer failed: {}",
            e.to_debug_string()
        )),
    }
}

/// What an HTTP status means to the runner. `doing` names the step and the
/// server (e.g. `upload x.sql.zst: PUT https://nas:443`); `body` is the
/// start of the answer's body.
pub fn status_error(status: u16, doing: &str, body: &str) -> Error {
    let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let excerpt: String = excerpt.chars().take(300).collect();
    let m = if excerpt.is_empty() {
        format!("{doing}: HTTP {status}")
    } else {
        format!("{doing}: HTTP {status}: {excerpt}")
    };
    match status {
        401 => Error::Config(format!("{m}; check the user name and password")),
        404 | 410 => Error::NotFound(m),
        405 | 501 => Error::Unsupported(m),
        408 | 425 | 429 | 500 | 502 | 503 | 504 => Error::Transient(m),
        300..=399 => Error::Config(format!(
            "{m}; redirects are not followed: point the URL at the final address"
        )),
        403 | 413 | 507 => Error::Rejected(m),
        400..=499 => Error::Rejected(m),
        _ => Error::Other(m),
    }
}

/// What a `wasi:http` error code means to the runner. TLS failures are
/// `config` (the runner appends the verifier's reason, e.g. an unknown
/// issuer, to the call's error); a refused request is the sandbox's answer.
pub fn transport_error(code: &ErrorCode, what: &str) -> Error {
    let name = format!("{code:?}");
    let name = name
        .strip_prefix("ErrorCode::")
        .unwrap_or(&name)
        .to_string();
    use ErrorCode as C;
    match code {
        C::HttpRequestDenied => Error::Config(format!(
            "{what}: refused by the sandbox (HttpRequestDenied): the plugin may reach only the host:port of its http-url settings"
        )),
        C::TlsProtocolError | C::TlsCertificateError | C::TlsAlertReceived(_) => {
            Error::Config(format!(
                "{what}: TLS failed ({name}); for a private CA or a self-signed certificate set `tls_ca`"
            ))
        }
        C::DnsTimeout
        | C::DnsError(_)
        | C::DestinationNotFound
        | C::DestinationUnavailable
        | C::DestinationIpUnroutable
        | C::ConnectionRefused
        | C::ConnectionTerminated
        | C::ConnectionTimeout
        | C::ConnectionReadTimeout
        | C::ConnectionWriteTimeout
        | C::ConnectionLimitReached
        | C::HttpResponseIncomplete
        | C::HttpResponseTimeout
        | C::HttpProtocolError => Error::Transient(format!("{what}: {name}")),
        C::InternalError(Some(m)) => Error::Other(format!("{what}: {m}")),
        _ => Error::Other(format!("{what}: {name}")),
    }
}

/// `(scheme, authority, path-with-query)` of an absolute http(s) URL.
pub fn split_url(url: &str) -> Result<(&str, &str, &str), Error> {
    let bad = || Error::Config(format!("{url:?} is not an http:// or https:// URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// Percent-encode a path (or one name) for a URL: `/` is kept, every byte
/// outside `A-Za-z0-9-._~` is encoded.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undo [`encode_path`] (and any other percent-encoding), e.g. for names a
/// server lists as URLs. Invalid escapes are kept as they are.
pub fn decode_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            split_url("https://nas:8443/dav/a%20b?x=1").unwrap(),
            ("https", "nas:8443", "/dav/a%20b?x=1")
        );
        assert_eq!(split_url("http://h").unwrap(), ("http", "h", "/"));
        assert!(split_url("ftp://h/x").is_err());
        assert!(split_url("http://user:pw@h/x").is_err());
    }

    #[test]
    fn paths_encode_and_decode() {
        assert_eq!(encode_path("/a b/ü+x.zst"), "/a%20b/%C3%BC%2Bx.zst");
        assert_eq!(decode_path("/a%20b/%C3%BC%2Bx.zst"), "/a b/ü+x.zst");
        assert_eq!(decode_path("100%"), "100%");
    }

    #[test]
    fn statuses_map_to_what_the_runner_does() {
        assert!(matches!(status_error(404, "x", ""), Error::NotFound(_)));
        assert!(matches!(status_error(503, "x", ""), Error::Transient(_)));
        assert!(matches!(status_error(507, "x", ""), Error::Rejected(_)));
        assert!(matches!(status_error(401, "x", ""), Error::Config(_)));
        assert!(matches!(status_error(301, "x", ""), Error::Config(_)));
        assert!(matches!(status_error(405, "x", ""), Error::Unsupported(_)));
        match status_error(403, "PUT http://h:80", "<p>quota\n exceeded</p>") {
            Error::Rejected(m) => assert_eq!(m, "PUT http://h:80: HTTP 403: <p>quota exceeded</p>"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }
}
