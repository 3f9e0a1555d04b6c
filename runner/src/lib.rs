//! offsite: a backup runner whose off-site steps run in sandboxed
//! WebAssembly plugins. Modules follow a backup's life, in order:
//! config → schedule → source → pipeline → store → plugin → ship → verify →
//! notify → wal → restore; `job` runs them for one backup, `commands` ties them to
//! the CLI.

pub mod config;

pub mod schedule;

pub mod source;

pub mod pipeline;

pub mod store;

pub mod retention;

pub mod plugin;

pub mod ship;

pub mod verify;

pub mod notify;

pub mod wal;

pub mod restore;

pub mod job;

pub mod commands;

// Shared by several stages.
pub mod disk;
pub mod duration;
pub mod exec;
pub mod limits;
pub mod log;
