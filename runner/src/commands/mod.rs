//! What each CLI command does; `main.rs` only parses arguments. One module
//! per command; a command never calls another (what two share lives in a
//! module below `commands`, see ARCHITECTURE.md).

pub mod archive;
pub mod config_check;
pub mod daemon;
pub mod list;
pub mod plugins;
pub mod restore;
pub mod run;
pub mod verify;
pub mod wal;
