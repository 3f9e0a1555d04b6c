//! The control connection: commands out, replies in (RFC 959 §4).

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::conn::{Conn, TlsSetup};
use crate::error::{Error, FtpError};
use crate::reply::{Reply, clean_text};

/// A hook that sees every command and reply line (PASS shown as `PASS ****`),
/// for a debug log.
pub type Trace = Box<dyn FnMut(&str) + Send>;

/// Longest reply line accepted; a server sending more is broken or hostile.
const MAX_LINE: usize = 8192;
/// Most lines kept from one multi-line reply.
const MAX_LINES: usize = 256;

pub(crate) struct Control {
    conn: Option<Conn>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Removed from any server text before it reaches a message or the trace.
    secret: String,
    /// `host:port`, for messages.
    pub endpoint: String,
    pub timeout: Duration,
    trace: Option<Trace>,
    /// Set when the connection failed; every later call fails fast.
    broken: bool,
}

impl Control {
    pub fn new(
        conn: Conn,
        endpoint: String,
        secret: String,
        timeout: Duration,
        trace: Option<Trace>,
    ) -> Control {
        Control {
            conn: Some(conn),
            buf: vec![0; MAX_LINE].into_boxed_slice(),
            start: 0,
            end: 0,
            secret,
            endpoint,
            timeout,
            trace,
            broken: false,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn trace(&mut self, line: &str) {
        if let Some(t) = self.trace.as_mut() {
            t(line);
        }
    }

    /// Replaces the password, should a server ever echo it, with `****`.
    pub fn redact(&self, text: &str) -> String {
        if self.secret.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.secret, "****")
        }
    }

    /// An error for an I/O failure on this connection; marks it broken.
    pub fn io_error(&mut self, what: &str, err: &io::Error) -> Error {
        self.broken = true;
        let mut e = Error::from_io(what, err, self.timeout);
        e.message = self.redact(&e.message);
        e
    }

    fn lost(&self) -> Error {
        Error::transient(format!(
            "the control connection to {} was lost earlier; connect again",
            self.endpoint
        ))
    }

    /// Sends one command. Arguments were checked for CR/LF before (names in
    /// `check_name`, settings in `Settings::validate`); this is the last
    /// guard, since RFC 959 §4.1 ends a command at the Telnet end-of-line.
    pub fn send(&mut self, cmd: &str) -> Result<(), Error> {
        if self.broken {
            return Err(self.lost());
        }
        if cmd.contains(['\r', '\n']) {
            return Err(Error::config("an FTP command argument holds a line break"));
        }
        let shown = if cmd.starts_with("PASS ") {
            "PASS ****".to_string()
        } else {
            cmd.to_string()
        };
        self.trace(&format!("> {shown}"));
        let what = format!("sending {} to {}", verb(&shown), self.endpoint);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::other("not connected"))?;
        let mut line = Vec::with_capacity(cmd.len() + 2);
        line.extend_from_slice(cmd.as_bytes());
        line.extend_from_slice(b"\r\n");
        let res = conn.write_all(&line).and_then(|()| conn.flush());
        res.map_err(|e| self.io_error(&what, &e))
    }

    /// Reads one complete reply, following multi-line replies to their end:
    /// RFC 959 §4.2 starts one with "xyz-" and ends it with the first line
    /// that begins "xyz " with the same code.
    pub fn read_reply(&mut self) -> Result<Reply, Error> {
        if self.broken {
            return Err(self.lost());
        }
        let first = self.read_line()?;
        let code = reply_code(&first).ok_or_else(|| {
            self.broken = true;
            Error::other(format!(
                "{} sent something that is not an FTP reply: \"{}\"",
                self.endpoint,
                self.redact(&clean_text(&first))
            ))
        })?;
        let mut lines = vec![self.redact(&clean_text(first.get(4..).unwrap_or("")))];
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                let line = self.read_line()?;
                let last = line.starts_with(&end) || line == end.trim_end();
                let text = if last || reply_code(&line) == Some(code) {
                    line.get(4..).unwrap_or("")
                } else {
                    line.as_str()
                };
                if lines.len() < MAX_LINES {
                    lines.push(self.redact(&clean_text(text)));
                }
                if last {
                    break;
                }
            }
        }
        let reply = Reply {
            code,
            text: lines[0].clone(),
            lines,
        };
        self.trace(&format!("< {reply}"));
        Ok(reply)
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, cmd: &str) -> Result<Reply, Error> {
        self.send(cmd)?;
        self.read_reply()
    }

    /// One line, without its CR LF (RFC 959 §4.2 lines end in Telnet EOL;
    /// a bare LF is accepted too).
    fn read_line(&mut self) -> Result<String, Error> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|b| *b == b'\n')
            {
                let raw = &self.buf[self.start..self.start + pos];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.start += pos + 1;
                return Ok(line);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.broken = true;
                return Err(Error::other(format!(
                    "{} sent a reply line longer than {MAX_LINE} bytes",
                    self.endpoint
                )));
            }
            let what = format!("reading the reply from {}", self.endpoint);
            let conn = self
                .conn
                .as_mut()
                .ok_or_else(|| Error::other("not connected"))?;
            match conn.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::transient(format!(
                        "{} closed the control connection",
                        self.endpoint
                    )));
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(&what, &e)),
            }
        }
    }

    /// Switches the control connection to TLS after "234" to AUTH TLS
    /// (RFC 4217 §4.1). Nothing may follow the 234 in clear text: bytes
    /// already buffered there would be a man-in-the-middle's injection.
    pub fn start_tls(&mut self, tls: &TlsSetup) -> Result<(), Error> {
        if self.start != self.end {
            self.broken = true;
            return Err(Error::other(format!(
                "{} sent unexpected data after accepting AUTH TLS",
                self.endpoint
            )));
        }
        let conn = self
            .conn
            .take()
            .ok_or_else(|| Error::other("not connected"))?;
        match conn.into_tls(tls) {
            Ok(c) => {
                self.conn = Some(c);
                Ok(())
            }
            Err(e) => {
                let what = format!("TLS handshake with {}", self.endpoint);
                Err(self.io_error(&what, &e))
            }
        }
    }

    /// Best-effort QUIT (RFC 959 §4.1.1) and close, without waiting long.
    pub fn close(&mut self) {
        if !self.broken && self.conn.is_some() {
            if let Some(c) = self.conn.as_ref() {
                let _ = c.tcp().set_read_timeout(Some(Duration::from_secs(2)));
            }
            if self.send("QUIT").is_ok() {
                let _ = self.read_reply();
            }
            if let Some(c) = self.conn.as_mut() {
                let _ = c.finish();
            }
        }
        self.broken = true;
        self.conn = None;
    }
}

/// The three-digit code at the start of a reply line, if there is one
/// followed by a space, a hyphen or the end of the line.
fn reply_code(line: &str) -> Option<u16> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || b[0] == b'0' {
        return None;
    }
    match b.get(3) {
        None | Some(b' ') | Some(b'-') => line[..3].parse().ok(),
        _ => None,
    }
}

/// The command word, for messages ("STOR" of "STOR x").
fn verb(cmd: &str) -> &str {
    cmd.split(' ').next().unwrap_or(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(reply_code("220 hi"), Some(220));
        assert_eq!(reply_code("211-Features:"), Some(211));
        assert_eq!(reply_code("226"), Some(226));
        assert_eq!(reply_code(" MLST"), None);
        assert_eq!(reply_code("2201"), None);
        assert_eq!(reply_code("ab"), None);
    }
}
