//! Errors, classified the way the plugin contract's `error` variant wants
//! them: the kind tells the runner what to do next, the message tells a
//! person why. A protocol core builds its own kinds on top (an FTP reply
//! code, a TFTP ERROR packet); no message may carry a secret.

use std::fmt;

/// What the runner should do about an error. Maps 1:1 onto the contract's
/// `error` variant (`config`, `transient`, `rejected`, `not-found`,
/// `unsupported`, `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The settings are wrong (bad option value or file name, bad password,
    /// untrusted certificate, an address the sandbox does not allow): fix
    /// the config.
    Config,
    /// Worth retrying with backoff: no answer, connection refused, reset or
    /// timed out, a server's "try again later".
    Transient,
    /// The server understood and said no (access violation, disk full, file
    /// exists, a permanent refusal).
    Rejected,
    /// The named file is not on the server.
    NotFound,
    /// The protocol or the server cannot do this (TFTP's delete and list, a
    /// command the FTP server lacks).
    Unsupported,
    /// Anything else (protocol violation, malformed reply, local read or
    /// write failure).
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

/// A failed operation: a kind for the runner and a message for people (it
/// names the server and the file).
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

    /// [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    /// [`ErrorKind::Transient`].
    pub fn transient(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Transient, message)
    }

    /// [`ErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Other, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The contract's variant of the same kind, with the same message.
#[cfg(feature = "sdk")]
impl From<Error> for offsite_sdk::Error {
    fn from(e: Error) -> Self {
        use offsite_sdk::Error as Sdk;
        let m = e.message;
        match e.kind {
            ErrorKind::Config => Sdk::Config(m),
            ErrorKind::Transient => Sdk::Transient(m),
            ErrorKind::Rejected => Sdk::Rejected(m),
            ErrorKind::NotFound => Sdk::NotFound(m),
            ErrorKind::Unsupported => Sdk::Unsupported(m),
            ErrorKind::Other => Sdk::Other(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message_and_kinds_use_the_contract_names() {
        let e = Error::new(ErrorKind::NotFound, "x on y: file not found");
        assert_eq!(e.to_string(), "x on y: file not found");
        let names: Vec<&str> = [
            ErrorKind::Config,
            ErrorKind::Transient,
            ErrorKind::Rejected,
            ErrorKind::NotFound,
            ErrorKind::Unsupported,
            ErrorKind::Other,
        ]
        .iter()
        .map(|k| k.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "config",
                "transient",
                "rejected",
                "not-found",
                "unsupported",
                "other"
            ]
        );
        assert_eq!(ErrorKind::NotFound.to_string(), "not-found");
        assert_eq!(Error::config("c").kind, ErrorKind::Config);
        assert_eq!(Error::transient("t").kind, ErrorKind::Transient);
        assert_eq!(Error::other("o").kind, ErrorKind::Other);
    }

    #[cfg(feature = "sdk")]
    #[test]
    fn maps_one_to_one_onto_the_sdk_error() {
        use offsite_sdk::Error as Sdk;
        let m = |k| offsite_sdk::Error::from(Error::new(k, "m"));
        assert!(matches!(m(ErrorKind::Config), Sdk::Config(s) if s == "m"));
        assert!(matches!(m(ErrorKind::Transient), Sdk::Transient(_)));
        assert!(matches!(m(ErrorKind::Rejected), Sdk::Rejected(_)));
        assert!(matches!(m(ErrorKind::NotFound), Sdk::NotFound(_)));
        assert!(matches!(m(ErrorKind::Unsupported), Sdk::Unsupported(_)));
        assert!(matches!(m(ErrorKind::Other), Sdk::Other(_)));
    }
}
