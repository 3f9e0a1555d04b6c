//! What an S3 answer or a transport failure means for the runner: try again
//! (with backoff, within a bound) or stop with an error of the contract,
//! naming the setting to check when the operator can fix it.
//!
//! Codes: <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>

use offsite_sdk::Error;

/// Why one exchange did not succeed.
#[derive(Debug)]
pub enum Fault {
    /// Worth another attempt: 5xx, SlowDown, timeouts, dropped connections.
    Retry(String),
    /// Final: no retry would change it.
    Final(Error),
}

impl Fault {
    pub fn message(&self) -> String {
        match self {
            Fault::Retry(m) => m.clone(),
            Fault::Final(e) => error_text(e).to_string(),
        }
    }
}

pub fn error_text(e: &Error) -> &str {
    match e {
        Error::Config(m)
        | Error::Transient(m)
        | Error::Rejected(m)
        | Error::NotFound(m)
        | Error::Unsupported(m)
        | Error::Other(m) => m,
    }
}

/// The `<Error>` document S3 sends with a failed request.
#[derive(Debug, Default, PartialEq)]
pub struct S3Error {
    pub code: String,
    pub message: String,
    /// Where the bucket really is (PermanentRedirect).
    pub endpoint: String,
    pub region: String,
}

impl S3Error {
    /// Parse the error document, if the body is one. A tag search is enough:
    /// the document is flat and S3 escapes `<` inside values.
    pub fn parse(body: &str) -> Option<S3Error> {
        if !body.contains("<Error>") {
            return None;
        }
        Some(S3Error {
            code: tag(body, "Code").unwrap_or_default(),
            message: tag(body, "Message").unwrap_or_default(),
            endpoint: tag(body, "Endpoint").unwrap_or_default(),
            region: tag(body, "Region").unwrap_or_default(),
        })
    }
}

/// The text of the first `<name>` element in `body`, entities decoded.
pub(crate) fn tag(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(unescape(&body[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// What the request was, for messages: e.g. `PUT calls/x.zst (part 3)`.
pub struct Context<'a> {
    pub what: &'a str,
    pub bucket: &'a str,
    pub endpoint: &'a str,
    pub region: &'a str,
}

/// Classify a non-2xx answer (or a 200 with an `<Error>` body, which
/// CompleteMultipartUpload may send).
pub fn classify(status: u16, body: &str, cx: &Context) -> Fault {
    let err = S3Error::parse(body).unwrap_or_default();
    let code = err.code.as_str();
    let said = if code.is_empty() {
        format!("{} answered HTTP {status}", cx.what)
    } else if err.message.is_empty() {
        format!("{} answered HTTP {status} {code}", cx.what)
    } else {
        format!("{} answered HTTP {status} {code}: {}", cx.what, err.message)
    };
    let config = |hint: String| Fault::Final(Error::Config(format!("{said}; {hint}")));
    match (status, code) {
        (_, "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
        | (_, "BadDigest" | "OperationAborted" | "Throttling" | "ThrottlingException")
        | (500..=599, _)
        | (408 | 429, _) => match status {
            // Server-side storage exhausted: a retry in seconds will not help.
            507 => Fault::Final(Error::Rejected(said)),
            _ => Fault::Retry(said),
        },
        (_, "SignatureDoesNotMatch") => config(
            "the signature was refused: check `secret_access_key` (and that it belongs to `access_key_id`)".into(),
        ),
        (_, "InvalidAccessKeyId") => {
            config("the server does not know this key: check `access_key_id`".into())
        }
        (_, "InvalidToken" | "ExpiredToken" | "TokenRefreshRequired") => config(
            "check `session_token` (temporary credentials expire; give fresh ones)".into(),
        ),
        (_, "RequestTimeTooSkewed") => config(
            "the clock of this machine differs from the server's by more than 15 minutes; set the time (NTP)".into(),
        ),
        (_, "AuthorizationHeaderMalformed" | "IncorrectEndpoint") => config(format!(
            "check `region` (now {}){}",
            cx.region,
            if err.region.is_empty() {
                String::new()
            } else {
                format!("; the server expects {}", err.region)
            }
        )),
        (_, "NoSuchBucket") => config(format!(
            "check `bucket` (now {}) and `endpoint` (now {})",
            cx.bucket, cx.endpoint
        )),
        (_, "InvalidStorageClass") => config("check `storage_class`".into()),
        (_, "PermanentRedirect") | (301, _) => config(format!(
            "the bucket is served elsewhere: set `endpoint`{} and `region` to the bucket's",
            if err.endpoint.is_empty() {
                String::new()
            } else {
                format!(" to https://{}", err.endpoint)
            }
        )),
        (_, "NoSuchKey") | (404, "") => Fault::Final(Error::NotFound(said)),
        (_, "InvalidObjectState") => Fault::Final(Error::Rejected(format!(
            "{said}; the object is archived (GLACIER or DEEP_ARCHIVE storage class) and must be restored before it can be fetched"
        ))),
        (_, "QuotaExceeded" | "AccountProblem" | "XMinioStorageFull" | "EntityTooLarge") => {
            Fault::Final(Error::Rejected(said))
        }
        (403, _) => config(format!(
            "access denied: check `access_key_id` and `secret_access_key`, and that the key may do this on bucket {} (and `prefix`)",
            cx.bucket
        )),
        _ => Fault::Final(Error::Other(said)),
    }
}

/// A wasi:http transport failure (no answer at all), by its error code's
/// debug name. Kept as text so this module builds and tests natively.
pub fn transport(what: &str, code: &str, endpoint: &str) -> Fault {
    let said = format!("{what}: {code}");
    let name = code.split(['(', ' ', '{']).next().unwrap_or(code);
    let name = name.rsplit("::").next().unwrap_or(name);
    match name {
        "HttpRequestDenied" => Fault::Final(Error::Config(format!(
            "{said}: the sandbox refused the request; this plugin may only reach the host:port of `endpoint` (now {endpoint}); if the server redirects elsewhere, set `endpoint` to where it points"
        ))),
        "TlsProtocolError" | "TlsCertificateError" | "TlsAlertReceived" => {
            Fault::Final(Error::Config(format!(
                "{said}: TLS with `endpoint` (now {endpoint}) failed; the runner checks certificates against the public web roots, so a private CA needs an http:// endpoint on a trusted network or a publicly trusted certificate"
            )))
        }
        "DestinationNotFound" => Fault::Final(Error::Config(format!(
            "{said}: the host of `endpoint` (now {endpoint}) does not resolve"
        ))),
        "HttpRequestUriInvalid"
        | "HttpRequestMethodInvalid"
        | "HttpRequestHeaderSize"
        | "HttpRequestHeaderSectionSize"
        | "ConfigurationError"
        | "HttpRequestBodySize" => Fault::Final(Error::Other(said)),
        // DNS hiccups, refused or dropped connections, timeouts, protocol
        // errors from a half-closed connection: another attempt may work.
        _ => Fault::Retry(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context {
            what: "PUT calls/x",
            bucket: "backups",
            endpoint: "http://127.0.0.1:9000",
            region: "us-east-1",
        }
    }

    fn body(code: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>m &amp; n</Message><RequestId>1</RequestId></Error>"
        )
    }

    fn config_text(f: Fault) -> String {
        match f {
            Fault::Final(Error::Config(m)) => m,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn parses_the_error_document() {
        let e = S3Error::parse(&body("SlowDown")).unwrap();
        assert_eq!(e.code, "SlowDown");
        assert_eq!(e.message, "m & n");
        assert!(S3Error::parse("<ListBucketResult/>").is_none());
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        for (s, c) in [
            (503, "SlowDown"),
            (500, "InternalError"),
            (400, "RequestTimeout"),
        ] {
            assert!(
                matches!(classify(s, &body(c), &cx()), Fault::Retry(_)),
                "{s} {c}"
            );
        }
        assert!(matches!(classify(502, "", &cx()), Fault::Retry(_)));
        assert!(matches!(
            classify(200, &body("InternalError"), &cx()),
            Fault::Retry(_)
        ));
    }

    #[test]
    fn credential_problems_name_the_setting() {
        let m = config_text(classify(403, &body("SignatureDoesNotMatch"), &cx()));
        assert!(m.contains("check `secret_access_key`"), "{m}");
        let m = config_text(classify(403, &body("InvalidAccessKeyId"), &cx()));
        assert!(m.contains("check `access_key_id`"), "{m}");
        let m = config_text(classify(403, &body("AccessDenied"), &cx()));
        assert!(m.contains("`access_key_id`"), "{m}");
        let m = config_text(classify(404, &body("NoSuchBucket"), &cx()));
        assert!(m.contains("check `bucket`"), "{m}");
        let m = config_text(classify(400, &body("AuthorizationHeaderMalformed"), &cx()));
        assert!(m.contains("check `region`"), "{m}");
    }

    #[test]
    fn missing_objects_are_not_found() {
        assert!(matches!(
            classify(404, &body("NoSuchKey"), &cx()),
            Fault::Final(Error::NotFound(_))
        ));
        // HEAD answers carry no body.
        assert!(matches!(
            classify(404, "", &cx()),
            Fault::Final(Error::NotFound(_))
        ));
    }

    #[test]
    fn transport_failures() {
        assert!(matches!(
            transport("PUT x", "ConnectionRefused", "e"),
            Fault::Retry(_)
        ));
        assert!(matches!(
            transport("PUT x", "ConnectionReadTimeout", "e"),
            Fault::Retry(_)
        ));
        let m = config_text(transport(
            "PUT x",
            "ErrorCode::HttpRequestDenied",
            "http://e:1",
        ));
        assert!(m.contains("`endpoint`"), "{m}");
        let m = config_text(transport("GET x", "TlsCertificateError", "https://e"));
        assert!(m.contains("TLS"), "{m}");
    }
}
