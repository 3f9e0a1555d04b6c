//! The plugin host: loads WebAssembly components that implement the
//! `offsite:plugin` contract (`wit/plugin.wit`) and runs them sandboxed.
//!
//! - `host`: engine, linker, loading;
//! - `cache`: compiled code kept between runs, checked before it is loaded;
//! - `sandbox`: what an instance may touch, derived from its settings;
//! - `session`: a configured instance and its guarded calls;
//! - `progress`: bytes moved, so a hung transfer is told from a slow one;
//! - `host_api`: the `host` interface plugins import (log, exec);
//! - `http_send`: how plugins' wasi:http requests go out (TLS trust, long bodies).

pub mod bindings;
mod cache;
pub mod configured;
mod error;
mod host;
mod host_api;
mod http_send;
mod progress;
pub mod sandbox;
mod session;
pub mod settings;
mod stderr_tail;
mod streams;

pub use bindings::wit;
pub use configured::Configured;
pub use error::{ErrorKind, PluginError};
pub use host::{Limits, LoadError, LoadedPlugin, PluginHost, PluginSet, World};
pub use sandbox::CallContext;
pub use session::{DestinationSession, NotifierSession, Upload};
pub use settings::{ResolvedSettings, SettingProblem};
