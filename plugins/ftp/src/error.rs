//! FTP's reading of failures into the plugins' shared error vocabulary
//! ([`offsite_plugin_core::Error`]): the kind tells the runner what to do
//! next, the message tells a person why. No message ever carries the
//! password (see `Control::redact`).

use std::io;
use std::time::Duration;

pub use offsite_plugin_core::{Error, ErrorKind};

use crate::reply::Reply;

/// The errors an FTP reply, a socket or TLS failure stand for. A trait so
/// that they read `Error::from_reply(...)` at the call site, as the shared
/// error's own constructors do.
pub(crate) trait FtpError {
    fn from_reply(what: &str, reply: &Reply) -> Self;
    fn from_io(what: &str, err: &io::Error, timeout: Duration) -> Self;
    fn from_tls(what: &str, err: &rustls::Error) -> Self;
}

impl FtpError for Error {
    /// An error for a reply that did not mean success. `what` says what was
    /// being done ("uploading x to host:21"). The kind follows the reply's
    /// first digit (RFC 959 §4.2): 4yz is a transient negative completion
    /// (421 included: the server is closing the control connection),
    /// 5yz a permanent one.
    fn from_reply(what: &str, reply: &Reply) -> Error {
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
    fn from_io(what: &str, err: &io::Error, timeout: Duration) -> Error {
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

    fn from_tls(what: &str, err: &rustls::Error) -> Error {
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
