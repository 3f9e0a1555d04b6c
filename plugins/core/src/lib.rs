//! What the offsite plugins' protocol cores share, in plain std Rust that
//! builds natively (where the cores are tested against real servers) and for
//! wasm32-wasip2 (inside the plugins):
//!
//! - [`Error`] and [`ErrorKind`]: the plugin contract's six error kinds
//!   (`config`, `transient`, `rejected`, `not-found`, `unsupported`,
//!   `other`) with a message for people. With the `sdk` feature an `Error`
//!   converts into `offsite_sdk::Error` (`?` or `Error::from` in the glue).
//! - [`duration`]: the duration settings (`timeout = "500ms"`, `"30s"`,
//!   `"2m"`) with the rules and error texts the plugins document.
//! - [`retry`]: attempts with doubling backoff and how they give up (the
//!   notifiers' delivery).

pub mod duration;
mod error;
pub mod retry;

pub use error::{Error, ErrorKind};
