//! Real TFTP and FTP servers for the `tftp` and `ftp` plugins' end-to-end
//! tests: tftpd-hpa and atftpd (tests/install/tftp.sh), pyftpdlib plain and
//! explicit FTPS (tests/install/ftp.sh). They live in `tests/servers`
//! (`offsite-test-servers`), which the plugins' own native tests share.

pub use offsite_test_servers::ftp::{
    FtpServer, PASSWORD as FTP_PASSWORD, USER as FTP_USER, python as ftp_python,
};
pub use offsite_test_servers::tftp::{TftpKind, TftpServer};

/// Names in a directory, sorted (empty when it does not exist).
pub use crate::jobs::entries as ls;
