//! The plugin host: loads WebAssembly components that implement the
//! `offsite:plugin` contract (`wit/plugin.wit`) and runs them sandboxed.
//!
//! - `host`: engine, linker, loading and the compiled-code cache;
//! - `sandbox`: what an instance may touch, derived from its settings;
//! - `session`: a configured instance and its guarded calls;
//! - `host_api`: the `host` interface plugins import (log, exec).

pub mod bindings;
pub mod configured;
mod error;
mod host;
mod host_api;
pub mod sandbox;
mod session;
pub mod settings;
mod streams;

pub use bindings::wit;
pub use configured::Configured;
pub use error::{ErrorKind, PluginError};
pub use host::{Limits, LoadError, LoadedPlugin, PluginHost, PluginSet, World};
pub use sandbox::CallContext;
pub use session::{DestinationSession, NotifierSession, Upload};
pub use settings::{ResolvedSettings, SettingProblem};
