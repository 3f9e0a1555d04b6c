//! What one attempt's answer means: delivered, worth another try, or final.

use std::time::Duration;

use offsite_sdk::Error;

/// The answer to one attempt.
#[derive(Debug)]
pub enum Verdict {
    Delivered,
    /// Try again (after `retry_after` if the server said, else the shared
    /// backoff, `offsite_plugin_core::retry::backoff`).
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// No retry helps: the contract's error for the runner.
    Final(Error),
}

/// A `Retry-After` longer than this is not waited for: the per-call limit of
/// the runner would end the call first.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Classify an HTTP status (RFC 9110 §15). `origin` is `scheme://authority`,
/// `excerpt` the start of the response body (to show the server's reason).
pub fn from_status(status: u16, retry_after: Option<&str>, excerpt: &str, origin: &str) -> Verdict {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let said = if excerpt.is_empty() {
        format!("{origin} answered {status} {reason}")
    } else {
        format!("{origin} answered {status} {reason}: {excerpt}")
    };
    match status {
        200..=299 => Verdict::Delivered,
        // wasi:http follows no redirect; the operator should point at the target.
        300..=399 => Verdict::Final(Error::Config(format!(
            "{said}; offsite does not follow redirects: set `url` to the address the hook moved to"
        ))),
        401 | 403 => Verdict::Final(Error::Config(format!(
            "{said}; the endpoint refused the credentials: check `secret_header` \
             (e.g. `Authorization: Bearer <token>`) and that `url` is the right endpoint"
        ))),
        // 408 Request Timeout and 429 Too Many Requests say "later", not "no".
        408 | 429 => Verdict::Retry {
            message: said,
            retry_after: retry_after.and_then(parse_retry_after),
        },
        400..=499 => Verdict::Final(Error::Rejected(format!(
            "{said}; the endpoint refused the notification (check `url`)"
        ))),
        500..=599 => Verdict::Retry {
            message: said,
            retry_after: retry_after.and_then(parse_retry_after),
        },
        _ => Verdict::Final(Error::Other(format!(
            "{said}, which is not a final HTTP status"
        ))),
    }
}

/// `Retry-After` in delay-seconds (RFC 9110 §10.2.3); the HTTP-date form
/// and delays over [`MAX_RETRY_AFTER`] fall back to the backoff.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    let d = Duration::from_secs(secs);
    (d <= MAX_RETRY_AFTER).then_some(d)
}

/// A short, one-line excerpt of a response body for an error message.
pub fn excerpt(body: &[u8], secret: Option<&str>) -> String {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(s) = secret {
        // A server that echoes the request must not put the secret in our log.
        one_line = one_line.replace(s, "********");
    }
    match one_line.char_indices().nth(MAX_CHARS) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_contract() {
        let o = "http://h:1";
        assert!(matches!(from_status(200, None, "", o), Verdict::Delivered));
        assert!(matches!(from_status(204, None, "", o), Verdict::Delivered));
        match from_status(503, Some("2"), "busy", o) {
            Verdict::Retry {
                message,
                retry_after,
            } => {
                assert_eq!(message, "http://h:1 answered 503 Service Unavailable: busy");
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            from_status(429, None, "", o),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            from_status(408, None, "", o),
            Verdict::Retry { .. }
        ));
        match from_status(400, None, "bad json", o) {
            Verdict::Final(Error::Rejected(m)) => {
                assert!(m.contains("400 Bad Request: bad json"), "{m}")
            }
            v => panic!("{v:?}"),
        }
        for s in [401, 403] {
            match from_status(s, None, "", o) {
                Verdict::Final(Error::Config(m)) => {
                    assert!(m.contains("`secret_header`") && m.contains("`url`"), "{m}")
                }
                v => panic!("{v:?}"),
            }
        }
        assert!(matches!(
            from_status(301, None, "", o),
            Verdict::Final(Error::Config(_))
        ));
    }

    #[test]
    fn retry_after_is_seconds_within_a_bound() {
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("3600"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn excerpts_are_short_one_line_and_redacted() {
        assert_eq!(excerpt(b"a\n  b\tc", None), "a b c");
        assert_eq!(excerpt(b"token=s3cret", Some("s3cret")), "token=********");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes(), None).chars().count(), 201);
    }
}
