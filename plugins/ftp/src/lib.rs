//! The `ftp` destination's client core: FTP (RFC 959) and explicit FTPS
//! (RFC 4217) as a plain Rust library over `std::net::TcpStream`, so the same
//! code runs natively (and is tested there against a real server) and inside
//! a wasm32-wasip2 plugin. The WIT glue lives in a separate module.
//!
//! What it does, and why:
//! - passive data connections, EPSV (RFC 2428) falling back to PASV; the data
//!   connection always goes to the control connection's address;
//! - binary transfers (TYPE I);
//! - `remote_dir` is created level by level when missing;
//! - uploads go to `.NAME.part`, are checked with SIZE (RFC 3659) and only
//!   then renamed (RNFR/RNTO), so a cut transfer never leaves a partial file
//!   under the final name;
//! - `list` uses MLSD (RFC 3659), falling back to NLST + SIZE + MDTM;
//! - with `tls = true`: AUTH TLS, PBSZ 0, PROT P; rustls with the ring
//!   provider, verifying against the Mozilla roots (webpki-roots), or
//!   against PEM text in `tls_ca` (a CA, or the server's own self-signed
//!   certificate, pinned), or not at all (`tls_insecure`);
//! - transfers stream through one fixed buffer: memory does not grow with
//!   the file.
//!
//! Errors carry an [`ErrorKind`] that maps 1:1 onto the plugin contract's
//! error variant; no error text and no trace line holds the password.

mod client;
mod conn;
mod control;
mod error;
mod reply;
mod settings;

/// The WIT glue: the plugin's `destination` world export (wasm32 only;
/// the `plugin` feature, on by default).
#[cfg(all(target_arch = "wasm32", feature = "plugin"))]
mod plugin;

pub use client::{Client, Entry, temp_name};
pub use control::Trace;
pub use error::{Error, ErrorKind};
pub use settings::{DEFAULT_PORT, DEFAULT_TIMEOUT, SETTINGS, SettingInfo, Settings};
