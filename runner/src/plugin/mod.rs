//! The plugin host: loads WebAssembly components that implement the
//! `offsite:plugin` contract (`wit/plugin.wit`) and runs them sandboxed.
//!
//! - `host`: engine, linker, compiling;
//! - `load`: a plugins directory read, each file checked and described;
//! - `cache`: compiled code kept between runs, checked before it is loaded;
//! - `sandbox`: what an instance may touch, derived from its settings;
//! - `session`: a configured instance and its guarded calls;
//! - `progress`: bytes moved, so a hung transfer is told from a slow one;
//! - `host_api`: the `host` interface plugins import (log, exec);
//! - `bindings`, `bindings_v0_2`, `versioned`: the contract versions a
//!   plugin may target (0.1.0, 0.2.0) behind one face.
//! - `http_send`: how plugins' wasi:http requests go out (TLS trust, long bodies).

pub mod bindings;
pub mod bindings_v0_2;
mod cache;
pub mod configured;
mod error;
mod host;
mod host_api;
mod http_send;
mod load;
mod progress;
pub mod sandbox;
mod session;
pub mod settings;
mod stderr_tail;
mod streams;
pub mod versioned;

pub use crate::limits::Limits;
pub use bindings::wit;
pub use configured::Configured;
pub use error::{ErrorKind, PluginError};
pub use host::{LoadError, LoadedPlugin, PluginHost, PluginSet, World};
pub use sandbox::CallContext;
pub use session::{DestinationSession, NotifierSession, Upload};
pub use settings::{ResolvedSettings, SettingProblem};
pub use versioned::Contract;
