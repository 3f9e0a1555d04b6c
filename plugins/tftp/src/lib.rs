//! TFTP client core for the offsite `tftp` destination plugin.
//!
//! Plain std Rust that runs natively and inside a wasm32-wasip2 component:
//! RFC 1350 read and write requests in octet mode, with option negotiation
//! (RFC 2347) for `blksize` (RFC 2348), `timeout` and `tsize` (RFC 2349) and
//! `windowsize` (RFC 7440). Data is streamed through a window-sized buffer,
//! so memory stays constant whatever the file size.
//!
//! ```no_run
//! use offsite_tftp::{put, Options};
//! let data = b"hello";
//! let sent = put("192.0.2.10:69".parse().unwrap(), "hello.txt", &mut &data[..],
//!                data.len() as u64, &Options::default())?;
//! # Ok::<(), offsite_tftp::Error>(())
//! ```
//!
//! TFTP has no delete or listing: the plugin glue reports those as
//! `ErrorKind::Unsupported`.

mod client;
mod net;
pub mod packet;

/// The WIT glue: the plugin's `destination` world export (wasm32 only;
/// the `plugin` feature, on by default).
#[cfg(all(target_arch = "wasm32", feature = "plugin"))]
mod plugin;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// A failed transfer: the plugins' shared error vocabulary. The message
/// names the server and the file.
pub use offsite_plugin_core::{Error, ErrorKind};

/// Largest burst (windowsize × blksize, payload bytes) the client asks
/// for. A window is sent back to back, and the receiver's UDP buffer must
/// hold it: Linux's default is 208 KiB, charged at up to twice the payload
/// per datagram (skb overhead), and every overflow loses the tail of the
/// window and costs a full timeout. Measured against atftpd on loopback:
/// 96 KiB bursts never overflowed, 115–131 KiB ones overflowed on every
/// window (50 s instead of 0.05 s for 16 MB). The requested windowsize is
/// lowered to fit; [`Report::windowsize`] tells what was used.
pub const MAX_BURST: usize = 64 * 1024;

/// Transfer options. `Default` gives blksize 1468 (fits a 1500-byte MTU),
/// windowsize 1, a 1 s per-packet timeout, 5 retries and tsize on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Requested block size, 8..=65464 (RFC 2348). 512 sends no option.
    pub blksize: u16,
    /// Requested window size, 1..=65535 (RFC 7440). 1 sends no option.
    /// Lowered to keep one window within [`MAX_BURST`] bytes (see
    /// [`Options::requested_windowsize`]).
    pub windowsize: u16,
    /// How long to wait for the next packet before retransmitting. Also
    /// offered to the server as the `timeout` option, rounded up to whole
    /// seconds (RFC 2349 allows 1..=255).
    pub timeout: Duration,
    /// Retransmissions of one packet before giving up with
    /// `ErrorKind::Transient`; progress resets the count.
    pub retries: u32,
    /// Send the `tsize` option (RFC 2349): the upload's size on a write, so
    /// the server can refuse early; on a read, ask for the size and check
    /// the received length against it.
    pub tsize: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            blksize: 1468,
            windowsize: 1,
            timeout: Duration::from_secs(1),
            retries: 5,
            tsize: true,
        }
    }
}

impl Options {
    /// Checks the values without touching the network.
    pub fn validate(&self) -> Result<(), Error> {
        if !(packet::MIN_BLKSIZE..=packet::MAX_BLKSIZE).contains(&self.blksize) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "blksize {} is out of range: RFC 2348 allows {}..={}",
                    self.blksize,
                    packet::MIN_BLKSIZE,
                    packet::MAX_BLKSIZE
                ),
            ));
        }
        if self.windowsize == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "windowsize 0 is out of range: RFC 7440 allows 1..=65535",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "timeout must be longer than zero",
            ));
        }
        Ok(())
    }

    /// The windowsize actually requested: `windowsize`, lowered so that a
    /// window of full blocks stays within [`MAX_BURST`] (at least 1).
    pub fn requested_windowsize(&self) -> u16 {
        let fit = (MAX_BURST / usize::from(self.blksize.max(1))).max(1);
        self.windowsize.min(fit.min(usize::from(u16::MAX)) as u16)
    }
}

/// What a successful transfer did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Payload bytes sent (put) or written to the output (get).
    pub bytes: u64,
    /// Block size used: the OACK's value, or 512 without options.
    pub blksize: u16,
    /// Window size used: the OACK's value, or 1 when not acknowledged.
    pub windowsize: u16,
    /// The transfer size the server acknowledged (RFC 2349), if any.
    pub tsize: Option<u64>,
    /// The server answered with an OACK (RFC 2347).
    pub oack: bool,
    /// The server refused the options (ERROR 8) and the transfer was
    /// retried without any.
    pub options_refused: bool,
    /// Packets sent again after a timeout or a partial window ACK.
    pub retransmits: u64,
    /// Datagrams from other transfer IDs, answered with ERROR 5.
    pub foreign_packets: u64,
}

/// Uploads `size` bytes read from `data` as `remote_name` (WRQ). Returns the
/// bytes sent. `data` must yield exactly `size` bytes: a shorter or longer
/// stream aborts the transfer (the server is sent an ERROR) with
/// `ErrorKind::Other`.
pub fn put(
    server: SocketAddr,
    remote_name: &str,
    data: &mut dyn Read,
    size: u64,
    opts: &Options,
) -> Result<u64, Error> {
    put_report(server, remote_name, data, size, opts).map(|r| r.bytes)
}

/// Downloads `remote_name` into `out` (RRQ). Returns the bytes written.
pub fn get(
    server: SocketAddr,
    remote_name: &str,
    out: &mut dyn Write,
    opts: &Options,
) -> Result<u64, Error> {
    get_report(server, remote_name, out, opts).map(|r| r.bytes)
}

/// [`put`], returning what was negotiated and how it went.
pub fn put_report(
    server: SocketAddr,
    remote_name: &str,
    data: &mut dyn Read,
    size: u64,
    opts: &Options,
) -> Result<Report, Error> {
    client::put(server, remote_name, data, size, opts)
}

/// [`get`], returning what was negotiated and how it went.
pub fn get_report(
    server: SocketAddr,
    remote_name: &str,
    out: &mut dyn Write,
    opts: &Options,
) -> Result<Report, Error> {
    client::get(server, remote_name, out, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let o = Options::default();
        assert_eq!((o.blksize, o.windowsize, o.retries), (1468, 1, 5));
        assert_eq!(o.timeout, Duration::from_secs(1));
        o.validate().unwrap();
    }

    #[test]
    fn invalid_options_are_config_errors() {
        let bad = [
            Options {
                blksize: 7,
                ..Options::default()
            },
            Options {
                blksize: 65465,
                ..Options::default()
            },
            Options {
                windowsize: 0,
                ..Options::default()
            },
            Options {
                timeout: Duration::ZERO,
                ..Options::default()
            },
        ];
        for o in bad {
            let e = o.validate().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Config, "{o:?}");
        }
    }

    #[test]
    fn windowsize_is_capped_to_the_burst_limit() {
        let w = |blksize, windowsize| {
            Options {
                blksize,
                windowsize,
                ..Options::default()
            }
            .requested_windowsize()
        };
        assert_eq!(w(1468, 16), 16);
        assert_eq!(w(1468, 100), 44);
        assert_eq!(w(512, 65535), 128);
        assert_eq!(w(8192, 16), 8);
        assert_eq!(w(65464, 16), 1);
        assert_eq!(w(65464, 1), 1);
    }

    #[test]
    fn error_display_is_the_message() {
        let e = Error::new(ErrorKind::NotFound, "x on y: file not found");
        assert_eq!(e.to_string(), "x on y: file not found");
        assert_eq!(ErrorKind::NotFound.to_string(), "not-found");
    }
}
