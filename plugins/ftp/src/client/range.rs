//! A ranged read: `REST offset` then `RETR` (RFC 3659 §5), reading exactly
//! the range and then leaving the transfer, so a small member of a 4 GiB
//! volume costs its own size, not the volume's.
//!
//! Leaving a RETR early: the data connection is closed once the range has
//! arrived. The server answers the RETR exactly once either way: 226 when it
//! had already handed everything to its socket, 426/451 when the close cut
//! it. That one reply is read, so the control connection stays in step for
//! the next command of the session. (ABOR would get one or two replies
//! depending on timing, which only a further NOOP round-trip could sort.)

use std::io::{self, Read, Write};

use super::{COPY_BUF, Client, Started, check_name, not_found};
use crate::conn::Conn;
use crate::error::{Error, FtpError};

impl Client {
    /// Writes bytes `offset .. offset + length` of the remote file `name` to
    /// `out` and returns how many were written: `length`, or fewer when the
    /// file ends first. Never writes more than `length`.
    pub fn fetch_range(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
        out: &mut dyn Write,
    ) -> Result<u64, Error> {
        check_name(name)?;
        let what = format!(
            "fetching bytes {offset}..{} of {name} from {}",
            offset.saturating_add(length),
            self.ctl.endpoint
        );
        if length == 0 {
            return Ok(0);
        }
        let conn = match self.start_transfer_at(&format!("RETR {name}"), Some(offset))? {
            Started::Data(c) => c,
            Started::Refused(r) if r.code == 550 => return Err(not_found(&what, &r)),
            Started::Refused(r) => return Err(Error::from_reply(&what, &r)),
        };
        let (mut conn, got, end) = self.copy_data(conn, out, length, &what)?;
        let ended = end != DataEnd::Limit;
        if ended {
            let _ = conn.finish();
            drop(conn);
            self.transfer_done(&what)?;
        } else {
            // The range is complete; the file may go on. Close without
            // reading the rest, then take the RETR's one answer.
            drop(conn);
            match self.after_abort() {
                Some(r) if r.is_completion() || (400..500).contains(&r.code) => {}
                Some(r) => {
                    return Err(Error::other(format!(
                        "{what}: after leaving the transfer at the range's end the server replied \"{r}\""
                    )));
                }
                None => {
                    return Err(Error::transient(format!(
                        "{what}: the server did not answer after the transfer was left at the range's end"
                    )));
                }
            }
        }
        out.flush()
            .map_err(|e| Error::other(format!("{what}: writing the fetched data failed: {e}")))?;
        Ok(got)
    }

    /// Copies the data connection into `out` until it ends or `limit`
    /// bytes have arrived; returns the count and why it stopped. A failed
    /// write to `out` aborts the transfer; a failed read is classified by
    /// `transfer_failed`.
    pub(super) fn copy_data(
        &mut self,
        mut conn: Conn,
        out: &mut dyn Write,
        limit: u64,
        what: &str,
    ) -> Result<(Conn, u64, DataEnd), Error> {
        let mut buf = vec![0u8; COPY_BUF];
        let mut got: u64 = 0;
        while got < limit {
            let want = (limit - got).min(buf.len() as u64) as usize;
            match conn.read(&mut buf[..want]) {
                Ok(0) => return Ok((conn, got, DataEnd::Closed)),
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        // Close the data connection first: the server
                        // answers the transfer once it sees the close.
                        drop(conn);
                        self.after_abort();
                        return Err(Error::other(format!(
                            "{what}: writing the fetched data failed after {got} bytes: {e}"
                        )));
                    }
                    got += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A TLS data connection that ended without close_notify: the
                // caller checks the count, so a cut one is not taken as whole.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && conn.is_tls() => {
                    return Ok((conn, got, DataEnd::Unclean));
                }
                Err(e) => {
                    drop(conn);
                    let what = format!("{what}: the data connection failed after {got} bytes");
                    return Err(self.transfer_failed(&what, &e));
                }
            }
        }
        Ok((conn, got, DataEnd::Limit))
    }
}

/// Why [`Client::copy_data`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DataEnd {
    /// The server closed the data connection.
    Closed,
    /// A TLS data connection ended without close_notify.
    Unclean,
    /// `limit` bytes arrived; the connection may have more.
    Limit,
}
