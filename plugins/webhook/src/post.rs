//! One POST through wasi:http 0.2 (`outgoing-handler.handle`).
//!
//! The runner's sandbox lets these requests reach the authority of the `url`
//! setting only (its wasi:http send hook is the gate). Resource order matters
//! in the component model: a child resource (a stream, a body, a pollable)
//! must be dropped before its parent, or the call traps.

use std::time::Duration;

use offsite_sdk::Error;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use wasip2::io::streams::StreamError;

use crate::config::Target;
use crate::policy::Verdict;

/// What the server answered.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The start of the body; read only for statuses other than 2xx.
    pub body_start: Vec<u8>,
}

/// How much of an error response's body is kept for the message.
const BODY_START: usize = 1024;
/// wasi:io's `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

/// POST `body` with `headers`. `Err` is wasi:http's reason when no answer came.
pub fn post(
    target: &Target,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, ErrorCode> {
    let fields = Fields::from_list(headers)
        .map_err(|e| ErrorCode::InternalError(Some(format!("request headers: {e:?}"))))?;
    let req = OutgoingRequest::new(fields);
    let refused =
        |what: &str| ErrorCode::InternalError(Some(format!("wasi:http refused the {what}")));
    req.set_method(&Method::Post)
        .map_err(|_| refused("method"))?;
    let scheme = if target.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    req.set_scheme(Some(&scheme))
        .map_err(|_| refused("scheme"))?;
    req.set_authority(Some(&target.authority))
        .map_err(|_| refused("authority"))?;
    req.set_path_with_query(Some(&target.path_and_query))
        .map_err(|_| refused("path"))?;
    let out = req.body().map_err(|_| refused("request body"))?;

    // The same limit for connecting, for the first response byte and between
    // bytes; a host without one of them ignores it (the runner's per-call
    // limit still holds).
    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));

    // Send first, then write the body: the host streams it out as it comes,
    // so a body larger than the pipe's buffer cannot block before sending.
    let pending = outgoing_handler::handle(req, Some(options))?;
    let written = write_body(out, body);

    let ready = pending.subscribe();
    ready.block();
    drop(ready);
    let resp = match pending.get() {
        Some(Ok(Ok(resp))) => resp,
        // The server's or the network's reason beats a broken body pipe.
        Some(Ok(Err(code))) => return Err(code),
        Some(Err(())) => {
            return Err(ErrorCode::InternalError(Some(
                "response taken twice".into(),
            )));
        }
        None => {
            return Err(ErrorCode::InternalError(Some(
                "no response after waiting".into(),
            )));
        }
    };
    written?;
    let status = resp.status();
    let headers = resp.headers();
    let retry_after = headers
        .get("retry-after")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    drop(headers);
    let body_start = if (200..300).contains(&status) {
        vec![]
    } else {
        read_start(&resp)
    };
    Ok(Answer {
        status,
        retry_after,
        body_start,
    })
}

fn write_body(out: OutgoingBody, body: &[u8]) -> Result<(), ErrorCode> {
    let stream = out
        .write()
        .map_err(|_| ErrorCode::InternalError(Some("request body stream taken".into())))?;
    for chunk in body.chunks(WRITE_CHUNK) {
        if let Err(e) = stream.blocking_write_and_flush(chunk) {
            return Err(match e {
                StreamError::Closed => ErrorCode::ConnectionTerminated,
                StreamError::LastOperationFailed(io) => wasip2::http::types::http_error_code(&io)
                    .unwrap_or_else(|| ErrorCode::InternalError(Some(io.to_debug_string()))),
            });
        }
    }
    drop(stream);
    OutgoingBody::finish(out, None)
}

/// Up to [`BODY_START`] bytes of the response body; errors end the read.
fn read_start(resp: &IncomingResponse) -> Vec<u8> {
    let mut got = Vec::new();
    let Ok(body) = resp.consume() else {
        return got;
    };
    if let Ok(stream) = body.stream() {
        while got.len() < BODY_START {
            match stream.blocking_read((BODY_START - got.len()) as u64) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
        drop(stream);
    }
    drop(body);
    got
}

/// What a failure to get any answer means. `origin` is `scheme://authority`.
pub fn from_error(code: &ErrorCode, origin: &str) -> Verdict {
    let retry = |what: String| Verdict::Retry {
        message: format!("{origin}: {what}"),
        retry_after: None,
    };
    match code {
        ErrorCode::HttpRequestDenied => Verdict::Final(Error::Config(format!(
            "the sandbox refused the request to {origin}: a webhook may only reach the \
             host and port of its `url` setting"
        ))),
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            retry(format!("cannot resolve the host ({code:?}); check `url`"))
        }
        ErrorCode::ConnectionRefused => retry("connection refused (nothing listens there?)".into()),
        ErrorCode::ConnectionTimeout => retry("no connection within the `timeout` setting".into()),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            retry("no answer within the `timeout` setting".into())
        }
        ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::InternalError(_) => retry(format!("{code:?}")),
        ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_)
        | ErrorCode::TlsProtocolError => Verdict::Final(Error::Config(format!(
            "{origin}: TLS failed ({code:?}); an https `url` needs a certificate signed by a \
             public CA (the runner checks it against the Mozilla roots)"
        ))),
        ErrorCode::DestinationIpProhibited => Verdict::Final(Error::Config(format!(
            "{origin}: the address is prohibited ({code:?}); check `url`"
        ))),
        other => Verdict::Final(Error::Other(format!("{origin}: {other:?}"))),
    }
}
