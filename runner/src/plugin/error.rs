//! The one error type at the plugin boundary.
//!
//! A plugin's own answer (the WIT `error` variant) and the host's verdicts
//! (time limit, memory limit, trap, sandbox refusal) both end up here, so the
//! runner decides retry or give-up from a single `kind`.

use std::fmt;

use super::bindings::wit;

/// What the runner should do about a failed plugin call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The operator must fix the settings.
    Config,
    /// Worth retrying with backoff.
    Transient,
    /// The server said no.
    Rejected,
    NotFound,
    /// The plugin cannot do this at all (e.g. TFTP has no delete).
    Unsupported,
    Other,
    /// The plugin ran past its time limit.
    Timeout,
    /// A transfer moved no data for `[runner] stall_timeout`: the server
    /// hangs. Not retried in the same run (it would hang again).
    Stalled,
    /// The plugin asked for more memory than its limit.
    MemoryLimit,
    /// The plugin trapped (panicked, hit `unreachable`, ...).
    Crashed,
    /// The runner itself failed around the call (local file I/O, ...).
    Host,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Transient => "transient",
            ErrorKind::Rejected => "rejected",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Stalled => "stalled",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::Crashed => "crashed",
            ErrorKind::Host => "host",
        }
    }

    /// Transient answers are retried; a timeout too, since a stalled network
    /// is the usual cause and the next attempt gets a fresh instance.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Timeout)
    }
}

/// A failed plugin call: what kind, and a message that names the plugin.
#[derive(Clone, Debug)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
        }
    }

    pub fn host(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Host, message)
    }

    /// The plugin's own answer, prefixed with who said it.
    pub(crate) fn from_wit(plugin: &str, call: &str, e: wit::Error) -> Self {
        let (kind, msg) = match e {
            wit::Error::Config(m) => (ErrorKind::Config, m),
            wit::Error::Transient(m) => (ErrorKind::Transient, m),
            wit::Error::Rejected(m) => (ErrorKind::Rejected, m),
            wit::Error::NotFound(m) => (ErrorKind::NotFound, m),
            wit::Error::Unsupported(m) => (ErrorKind::Unsupported, m),
            wit::Error::Other(m) => (ErrorKind::Other, m),
        };
        Self::new(kind, format!("plugin `{plugin}` {call}: {msg}"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}
