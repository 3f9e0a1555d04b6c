//! offsite: a backup runner whose off-site steps run in sandboxed
//! WebAssembly plugins. Modules follow a backup's life, in order:
//! config → schedule → source → pipeline → store → plugin → ship → verify →
//! notify → restore; `commands` ties them to the CLI.

pub mod commands;
pub mod config;
pub mod duration;
pub mod log;
pub mod notify;
pub mod pipeline;
pub mod plugin;
pub mod restore;
pub mod schedule;
pub mod source;
