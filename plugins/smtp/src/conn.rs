//! The connection to the server: TCP, upgraded in place to TLS by STARTTLS.
//! Both the connect (bounded in time, with read/write timeouts) and the
//! stream are the crate offsite-guest-tls, shared with the ftp plugin.

/// TCP, or TLS over it.
pub use offsite_guest_tls::{Conn, dial};
