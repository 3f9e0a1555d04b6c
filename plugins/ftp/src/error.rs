//! Errors, classified the way the plugin contract's `error` variant wants them:
//! the kind tells the runner what to do next, the message tells a person why.
//! No message ever carries the password (see `Control::redact`).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::reply::Reply;

/// What the runner should do about an error. Maps 1:1 onto the contract's
/// `error` variant (`config`, `transient`, `rejected`, `not-found`,
/// `unsupported`, `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The settings are wrong (bad password, untrusted certificate, a server
    /// without AUTH TLS while `tls = true`, ...): fix the config.
    Config,
    /// Worth retrying with backoff: connection refused/reset/timed out, 421, 4yz.
    Transient,
    /// The server understood and said no (5yz other than the ones below).
    Rejected,
    /// The named file is not on the server.
    NotFound,
    /// The server lacks something this operation needs.
    Unsupported,
    /// Anything else (a malformed reply, the input stream failed, ...).
    Other,
}

impl ErrorKind {
    /// The name the plugin contract uses for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Transient => "transient",
            ErrorKind::Rejected => "rejected",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the FTP client: a kind for the runner and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn transient(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Transient, message)
    }

    pub(crate) fn other(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Other, message)
    }

    /// An error for a reply that did not mean success. `what` says what was
    /// being done ("uploading x to host:21"). The kind follows the reply's
    /// first digit (RFC 959 §4.2): 4yz is a transient negative completion
    /// (421 included: the server is closing the control connection),
    /// 5yz a permanent one.
    pub(crate) fn from_reply(what: &str, reply: &Reply) -> Error {
        let kind = match reply.code {
            400..=499 => ErrorKind::Transient,
            // 500 syntax error / command unrecognized, 502 not implemented,
            // 504 not implemented for that parameter (RFC 959 §4.2.2).
            500 | 502 | 504 => ErrorKind::Unsupported,
            // 530 not logged in, 532 need an account for storing files.
            530 | 532 => ErrorKind::Config,
            501..=599 => ErrorKind::Rejected,
            // 1yz/2yz/3yz where another was expected: the server is confused.
            _ => ErrorKind::Other,
        };
        Error::new(kind, format!("{what}: the server replied \"{reply}\""))
    }

    /// An error for a failed socket or TLS operation. `what` says what was
    /// being done and with whom.
    pub(crate) fn from_io(what: &str, err: &io::Error, timeout: Duration) -> Error {
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Error::from_tls(what, tls);
        }
        match err.kind() {
            // Read/write timeouts surface as WouldBlock on Unix, TimedOut elsewhere.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::transient(format!(
                "{what}: no answer within {}s (the timeout setting)",
                timeout.as_secs_f64()
            )),
            // Inside the plugin sandbox a connection to an address that no
            // setting names is refused with PermissionDenied.
            io::ErrorKind::PermissionDenied => Error::config(format!(
                "{what}: connection not permitted ({err}); the sandbox only allows the host named in the settings"
            )),
            _ => Error::transient(format!("{what}: {err}")),
        }
    }

    pub(crate) fn from_tls(what: &str, err: &rustls::Error) -> Error {
        match err {
            rustls::Error::InvalidCertificate(_) => Error::config(format!(
                "{what}: TLS: the server's certificate is not trusted ({err}); \
                 give the CA that signed it as the tls_ca setting (PEM), \
                 or set tls_insecure = true to skip verification"
            )),
            rustls::Error::PeerIncompatible(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(_) => {
                Error::config(format!("{what}: TLS handshake failed: {err}"))
            }
            _ => Error::transient(format!("{what}: TLS: {err}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
