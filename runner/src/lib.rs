//! offsite: a backup runner whose off-site steps run in sandboxed
//! WebAssembly plugins. Modules follow a backup's life, in order:
//! schedule → config → pipeline → source → store → retention → plugin →
//! runtime → ship → restore → verify → notify; `job` runs them for one
//! backup, `commands` ties them to the CLI. Imports only go up this list;
//! `ARCHITECTURE.md` says what each module owns and may import, and
//! `tests/arch/architecture.rs` holds the code to it.

// Below every stage: words and tools any of them may use.
pub mod disk;
pub mod duration;
pub mod exec;
pub mod limits;
pub mod log;
pub mod units;

pub mod schedule;

pub mod config;

pub mod pipeline;

pub mod source;

pub mod store;

pub mod retention;

pub mod plugin;

pub mod runtime;

pub mod ship;

pub mod restore;

pub mod verify;

pub mod notify;

pub mod archive;

pub mod job;
pub mod wal;

pub mod commands;
