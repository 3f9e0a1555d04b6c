//! What the end-to-end tests share: where the built binary and plugins are,
//! free ports, processes that die with the test, and small real servers.

pub mod jobs;
pub mod paths;
pub mod pg_oracle;
pub mod postgres;
pub mod proc;
pub mod s3;
pub mod sinks;
pub mod tftp_ftp;
pub mod tmpfs;
pub mod tree;
pub mod wal;
