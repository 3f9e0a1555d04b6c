//! HTTP over wasi:http: the runner makes the connections (and TLS) and lets
//! requests reach only the `endpoint`'s host:port.
//!
//! An [`Exchange`] is one request in flight. Several can be outstanding at
//! once: the host runs each on its own task, and the guest feeds their
//! bodies and collects their answers from one loop that waits on all their
//! pollables together (`wasi:io/poll.poll`).

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method as WMethod, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::OutputStream;

use crate::fault::{Fault, transport};
use crate::request::{Method, Request};

/// Time limits the host applies to each request. A part of 16 MiB over a
/// slow link may take minutes, so the limits are on silence, not on length.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(120);

/// Error bodies are small; anything longer is cut.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// The body being written: the stream is a child of the body resource and
/// must be dropped before the body is finished.
struct Upload {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
    written: usize,
}

pub struct Exchange {
    what: String,
    endpoint: String,
    upload: Option<Upload>,
    len: usize,
    future: FutureIncomingResponse,
}

impl Exchange {
    /// Start `req` with a body of `len` bytes (fed by [`Exchange::step`]).
    pub fn start(req: &Request, len: usize, what: &str, endpoint: &str) -> Result<Exchange, Fault> {
        let internal = |m: String| Fault::Final(offsite_sdk::Error::Other(format!("{what}: {m}")));
        let entries: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        let fields =
            Fields::from_list(&entries).map_err(|e| internal(format!("bad header: {e:?}")))?;
        let out = OutgoingRequest::new(fields);
        let method = match req.method {
            Method::Get => WMethod::Get,
            Method::Head => WMethod::Head,
            Method::Put => WMethod::Put,
            Method::Post => WMethod::Post,
            Method::Delete => WMethod::Delete,
        };
        let scheme = if req.url.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let host = req.url.host_str().unwrap_or_default();
        let authority = match req.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_string(),
        };
        let set =
            |r: Result<(), ()>, what: &str| r.map_err(|()| internal(format!("invalid {what}")));
        set(out.set_method(&method), "method")?;
        set(out.set_scheme(Some(&scheme)), "scheme")?;
        set(out.set_authority(Some(&authority)), "authority")?;
        set(out.set_path_with_query(Some(&path)), "path")?;
        let body = out
            .body()
            .map_err(|()| internal("request body taken twice".into()))?;
        let options = RequestOptions::new();
        // Hosts may not support every option; a refusal leaves their default.
        let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT.as_nanos() as u64));
        let _ = options.set_first_byte_timeout(Some(FIRST_BYTE_TIMEOUT.as_nanos() as u64));
        let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT.as_nanos() as u64));
        let future = outgoing_handler::handle(out, Some(options))
            .map_err(|code| transport(what, &describe(&code), endpoint))?;
        let upload = if len == 0 {
            OutgoingBody::finish(body, None)
                .map_err(|code| transport(what, &describe(&code), endpoint))?;
            None
        } else {
            let stream = body
                .write()
                .map_err(|()| internal("body stream taken twice".into()))?;
            Some(Upload {
                stream: Some(stream),
                body: Some(body),
                written: 0,
            })
        };
        Ok(Exchange {
            what: what.to_string(),
            endpoint: endpoint.to_string(),
            upload,
            len,
            future,
        })
    }

    /// Bytes of the body handed to the host so far.
    pub fn written(&self) -> usize {
        self.upload.as_ref().map_or(self.len, |u| u.written)
    }

    /// What to wait on before the next [`Exchange::step`] can do anything.
    pub fn pollables(&self, out: &mut Vec<Pollable>) {
        if let Some(stream) = self.upload.as_ref().and_then(|u| u.stream.as_ref()) {
            out.push(stream.subscribe());
        }
        out.push(self.future.subscribe());
    }

    /// Without blocking: hand the host as much of `body` as it takes, and
    /// return the answer once its head has arrived.
    pub fn step(&mut self, body: &[u8]) -> Result<Option<Response>, Fault> {
        if let Some(up) = &mut self.upload {
            while let Some(stream) = &up.stream {
                if up.written == body.len() {
                    up.stream = None;
                    if let Some(b) = up.body.take() {
                        OutgoingBody::finish(b, None).map_err(|code| {
                            transport(&self.what, &describe(&code), &self.endpoint)
                        })?;
                    }
                    break;
                }
                match stream.check_write() {
                    Ok(0) => break,
                    Ok(room) => {
                        let end = body.len().min(up.written + room as usize);
                        if stream.write(&body[up.written..end]).is_err() {
                            // The server stopped reading (it may have
                            // answered early): the answer says why.
                            up.stream = None;
                            up.body = None;
                            break;
                        }
                        up.written = end;
                    }
                    Err(_) => {
                        up.stream = None;
                        up.body = None;
                        break;
                    }
                }
            }
        }
        match self.future.get() {
            None => Ok(None),
            Some(Err(())) => Err(Fault::Retry(format!("{}: answer lost", self.what))),
            Some(Ok(Err(code))) => Err(transport(&self.what, &describe(&code), &self.endpoint)),
            Some(Ok(Ok(resp))) => {
                // An answer before the whole body was sent is an error answer
                // (or a server that cut us off); drop what is left unsent.
                self.upload = None;
                Ok(Some(Response::new(resp, &self.what, &self.endpoint)))
            }
        }
    }

    /// Send and wait for the answer's head.
    pub fn run(req: &Request, body: &[u8], what: &str, endpoint: &str) -> Result<Response, Fault> {
        let mut ex = Exchange::start(req, body.len(), what, endpoint)?;
        loop {
            if let Some(r) = ex.step(body)? {
                return Ok(r);
            }
            let mut ps = vec![];
            ex.pollables(&mut ps);
            wait_any(&ps);
        }
    }
}

/// Block until one of `ps` is ready.
pub fn wait_any(ps: &[Pollable]) {
    if ps.is_empty() {
        return;
    }
    let refs: Vec<&Pollable> = ps.iter().collect();
    poll(&refs);
}

/// Wait `d` without spinning.
pub fn sleep(d: Duration) {
    wasip2::clocks::monotonic_clock::subscribe_duration(d.as_nanos() as u64).block();
}

/// A pollable that is ready `d` from now, to wait for a retry's turn while
/// other exchanges go on.
pub fn timer(d: Duration) -> Pollable {
    wasip2::clocks::monotonic_clock::subscribe_duration(d.as_nanos() as u64)
}

pub fn now_ns() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}

pub fn random() -> u64 {
    wasip2::random::random::get_random_u64()
}

/// `ConnectionRefused`, `DnsError(...)`: the error code's name first, as
/// [`crate::fault::transport`] reads it.
fn describe(code: &ErrorCode) -> String {
    let s = format!("{code:?}");
    s.strip_prefix("ErrorCode::")
        .map(str::to_string)
        .unwrap_or(s)
}

/// An answer: status and headers now, the body on demand (the SDK's
/// response, with the endpoint named in the faults it reads into).
pub struct Response {
    pub status: u16,
    inner: offsite_sdk::http::Response,
    what: String,
    endpoint: String,
}

/// One read from a body stream.
pub enum Chunk {
    Data(Vec<u8>),
    End,
    /// The connection failed mid-body.
    Broken(Fault),
}

impl Response {
    fn new(resp: IncomingResponse, what: &str, endpoint: &str) -> Response {
        let inner = offsite_sdk::http::Response::new(resp, what);
        Response {
            status: inner.status(),
            inner,
            what: what.to_string(),
            endpoint: endpoint.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// Block for the next piece of the body, at most `max` bytes.
    pub fn read(&mut self, max: usize) -> Chunk {
        match self.inner.read_chunk(max as u64) {
            Ok(Some(data)) => Chunk::Data(data),
            Ok(None) => Chunk::End,
            Err(e) => {
                let code = wasip2::http::types::http_error_code(&e)
                    .map(|c| describe(&c))
                    .unwrap_or_else(|| e.to_debug_string());
                Chunk::Broken(transport(
                    &format!("{} (reading the answer)", self.what),
                    &code,
                    &self.endpoint,
                ))
            }
        }
    }

    /// The whole body as text, up to `limit` bytes (the rest is dropped).
    pub fn text(&mut self, limit: usize) -> Result<String, Fault> {
        let mut buf = vec![];
        loop {
            match self.read(64 << 10) {
                Chunk::Data(d) => {
                    let room = limit.saturating_sub(buf.len());
                    buf.extend_from_slice(&d[..d.len().min(room)]);
                }
                Chunk::End => break,
                Chunk::Broken(f) => return Err(f),
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The body of an error answer, for [`crate::fault::classify`].
    pub fn error_text(&mut self) -> String {
        self.text(ERROR_BODY_LIMIT).unwrap_or_default()
    }
}
