//! The transfer state machines: request and option negotiation, then the
//! sender (WRQ) or receiver (RRQ) loop.
//!
//! Block numbers are tracked as absolute `u64` counts and only truncated to
//! 16 bits on the wire, so transfers longer than 65535 blocks wrap to 0 the
//! way tftpd-hpa, atftpd and curl do (RFC 1350 leaves wrap-around
//! unspecified).
//!
//! Timing is deadline-based: a packet that is ignored (duplicate, foreign,
//! malformed) never extends the wait for the packet that matters.

use std::fmt::Display;
use std::io::{self, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::net::Socket;
use crate::packet::{self, Packet, error_code, opcode};
use crate::{Error, ErrorKind, Options, Report};

/// Transfer mode: binary, byte for byte (RFC 1350 §1).
const MODE: &str = "octet";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Put,
    Get,
}

/// The transfer being attempted, for error messages.
struct Ctx<'a> {
    server: SocketAddr,
    name: &'a str,
    dir: Dir,
    opts: &'a Options,
}

impl Ctx<'_> {
    fn err(&self, kind: ErrorKind, detail: impl Display) -> Error {
        let what = match self.dir {
            Dir::Put => format!("TFTP upload of {:?} to {}", self.name, self.server),
            Dir::Get => format!("TFTP download of {:?} from {}", self.name, self.server),
        };
        Error::new(kind, format!("{what}: {detail}"))
    }

    fn io_err(&self, doing: &str, e: io::Error) -> Error {
        // The wasm host's sandbox answers a datagram to an address outside
        // the plugin's settings with PermissionDenied: a configuration
        // matter, not something a retry fixes.
        let kind = if e.kind() == io::ErrorKind::PermissionDenied {
            ErrorKind::Config
        } else {
            ErrorKind::Transient
        };
        self.err(kind, format!("{doing}: {e}"))
    }

    /// Maps an ERROR packet from the server (RFC 1350 §5, RFC 2347 code 8).
    /// An ERROR answering the request itself (RRQ/WRQ).
    fn request_refused(&self, code: u16, message: &str) -> Error {
        if code == error_code::FILE_NOT_FOUND && self.dir == Dir::Put {
            // tftpd-hpa without `-c` answers a write request for a file that
            // does not exist yet with ERROR 1: a refusal to create, not a
            // missing object (RFC 1350 has no code for "may not create").
            return self.err(
                ErrorKind::Rejected,
                format!(
                    "the server refused to create the file (ERROR {code} {message:?}): \
                     TFTP servers create new files only when allowed; start tftpd-hpa \
                     with `-c`/`--create` (atftpd creates by default), or create a \
                     world-writable file of that name in the server's directory first"
                ),
            );
        }
        self.server_err(code, message)
    }

    fn server_err(&self, code: u16, message: &str) -> Error {
        let kind = match code {
            error_code::FILE_NOT_FOUND => ErrorKind::NotFound,
            error_code::ACCESS_VIOLATION | error_code::DISK_FULL | error_code::FILE_EXISTS => {
                ErrorKind::Rejected
            }
            _ => ErrorKind::Other,
        };
        self.err(
            kind,
            format!(
                "server sent ERROR {code} ({}): {message:?}",
                error_code::describe(code)
            ),
        )
    }

    fn no_answer(&self, waiting_for: &str, tries: u32, since: Instant) -> Error {
        self.err(
            ErrorKind::Transient,
            format!(
                "no {waiting_for} after {tries} tries over {} (timeout {})",
                fmt_duration(since.elapsed()),
                fmt_duration(self.opts.timeout)
            ),
        )
    }
}

fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(10) || (d.subsec_millis() == 0 && d.as_secs() > 0) {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// One attempt's socket and the server's transfer ID once known.
struct Conn {
    sock: Socket,
    server: SocketAddr,
    /// The server's transfer ID (address and port), fixed by its first
    /// answer (RFC 1350 §4).
    peer: Option<SocketAddr>,
    /// Source of the last datagram `recv` returned.
    from: SocketAddr,
    ctl: Vec<u8>,
    retransmits: u64,
    foreign: u64,
}

impl Conn {
    fn open(ctx: &Ctx) -> Result<Conn, Error> {
        let sock = Socket::open(ctx.server).map_err(|e| ctx.io_err("opening a UDP socket", e))?;
        Ok(Conn {
            sock,
            server: ctx.server,
            peer: None,
            from: ctx.server,
            ctl: Vec::with_capacity(512),
            retransmits: 0,
            foreign: 0,
        })
    }

    fn send(&self, ctx: &Ctx, buf: &[u8]) -> Result<(), Error> {
        let to = self.peer.unwrap_or(self.server);
        self.sock
            .send_to(buf, to)
            .map_err(|e| ctx.io_err(&format!("sending to {to}"), e))
    }

    fn send_ack(&self, ctx: &Ctx, block: u64) -> Result<(), Error> {
        self.send(ctx, &packet::ack(block as u16))
    }

    /// Best effort: tells the peer why we stop. Errors are not acknowledged
    /// or retransmitted (RFC 1350 §7), so a lost one does not matter.
    fn send_error(&mut self, ctx: &Ctx, code: u16, message: &str) {
        packet::encode_error(&mut self.ctl, code, message);
        let _ = self.send(ctx, &self.ctl);
    }

    /// Receives the next datagram from the server, or `None` at `deadline`.
    ///
    /// Before the server has answered, any port on the server's address is
    /// accepted (its answer comes from a new port, its transfer ID); after
    /// that only the locked peer is. A datagram from any other transfer ID
    /// is answered with ERROR 5 and otherwise ignored, without disturbing
    /// the transfer (RFC 1350 §4).
    fn recv(
        &mut self,
        ctx: &Ctx,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Option<usize>, Error> {
        loop {
            let got = self
                .sock
                .recv_from(buf, deadline)
                .map_err(|e| ctx.io_err("receiving", e))?;
            let Some((n, from)) = got else {
                return Ok(None);
            };
            let ours = match self.peer {
                Some(peer) => from == peer,
                None => same_ip(from, self.server),
            };
            if ours {
                self.from = from;
                return Ok(Some(n));
            }
            self.foreign += 1;
            // Never answer an ERROR with an ERROR (no ping-pong).
            let is_error = n >= 2 && buf[..2] == opcode::ERROR.to_be_bytes();
            if !is_error {
                packet::encode_error(
                    &mut self.ctl,
                    error_code::UNKNOWN_TID,
                    "Unknown transfer ID",
                );
                let _ = self.sock.send_to(&self.ctl, from);
            }
        }
    }

    /// Fixes the server's transfer ID to the source of the last datagram.
    fn lock_peer(&mut self) {
        if self.peer.is_none() {
            self.peer = Some(self.from);
        }
    }
}

fn same_ip(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: std::net::IpAddr| ip.to_canonical();
    canon(a.ip()) == canon(b.ip())
}

/// The values in force after negotiation.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    blksize: u16,
    windowsize: u16,
    tsize: Option<u64>,
    oack: bool,
    /// The server's retransmission timeout when its OACK acknowledged
    /// ours (RFC 2349), in seconds.
    server_timeout: Option<u16>,
}

impl Negotiated {
    /// No OACK: RFC 1350 behaviour, 512-byte blocks in lockstep.
    const PLAIN: Negotiated = Negotiated {
        blksize: packet::DEFAULT_BLKSIZE,
        windowsize: 1,
        tsize: None,
        oack: false,
        server_timeout: None,
    };

    /// How long to wait after `timeouts` consecutive timeouts during the
    /// transfer: exponential backoff, as RFC 1123 §4.2.3.2 requires of TFTP.
    ///
    /// Backing off matters beyond politeness. Servers restart their own
    /// retransmission timer whenever a packet arrives and answer a given
    /// duplicate only once (atftpd does both): a client that retransmits
    /// faster than the server's timeout can then keep the server from ever
    /// resending the ACK or DATA that was lost. So the wait grows until it
    /// exceeds the server's timeout: the acknowledged one, or 5 s (atftpd's
    /// default; tftpd-hpa's is 1 s) when the OACK did not say.
    fn wait(&self, base: Duration, timeouts: u32) -> Duration {
        let server = Duration::from_secs(u64::from(self.server_timeout.unwrap_or(5)));
        let cap = base.max(server) * 2;
        base.saturating_mul(1u32 << timeouts.min(16)).min(cap)
    }
}

/// Options for the request (RFC 2347 "Packet Formats"); `tsize` is the
/// upload's size on a WRQ and 0 on an RRQ (RFC 2349).
fn request_options(opts: &Options, tsize: Option<u64>) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if opts.blksize != packet::DEFAULT_BLKSIZE {
        v.push(("blksize", opts.blksize.to_string()));
    }
    let windowsize = opts.requested_windowsize();
    if windowsize != 1 {
        v.push(("windowsize", windowsize.to_string()));
    }
    // RFC 2349: whole seconds, 1..=255. Sending it makes the server
    // retransmit on the same rhythm as we do.
    let secs = opts.timeout.as_millis().div_ceil(1000).clamp(1, 255);
    v.push(("timeout", secs.to_string()));
    if let Some(size) = tsize {
        v.push(("tsize", size.to_string()));
    }
    v
}

/// Checks an OACK against what was requested and returns the values to use.
/// Options the OACK leaves out keep their RFC 1350 defaults (RFC 2347: the
/// server acknowledges only the options it accepts). A value the client
/// did not allow is an error: RFC 2348 and RFC 7440 let the server lower
/// `blksize` and `windowsize`, never raise them; RFC 2349 bounds `timeout`.
fn negotiate(
    acked: &[(&str, &str)],
    requested: &[(&'static str, String)],
    dir: Dir,
) -> Result<Negotiated, String> {
    let mut neg = Negotiated {
        oack: true,
        ..Negotiated::PLAIN
    };
    let asked = |name: &str| {
        requested
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    for (name, value) in acked {
        let name = name.to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "blksize" => {
                let limit: u16 = asked("blksize")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(packet::DEFAULT_BLKSIZE);
                match value.parse::<u16>() {
                    Ok(v) if (packet::MIN_BLKSIZE..=limit).contains(&v) => neg.blksize = v,
                    _ => {
                        return Err(format!(
                            "blksize {value:?} acknowledged, but {limit} was requested \
                             (RFC 2348: the server may only lower it, to 8 at least)"
                        ));
                    }
                }
            }
            "windowsize" => {
                let limit: u16 = asked("windowsize")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                match value.parse::<u16>() {
                    Ok(v) if (1..=limit).contains(&v) => neg.windowsize = v,
                    _ => {
                        return Err(format!(
                            "windowsize {value:?} acknowledged, but {limit} was requested \
                             (RFC 7440: the server may only lower it, to 1 at least)"
                        ));
                    }
                }
            }
            "timeout" => {
                // We keep our own timer; only reject nonsense (RFC 2349).
                match value.parse::<u16>() {
                    Ok(1..=255) => {}
                    _ => {
                        return Err(format!(
                            "timeout {value:?} acknowledged (RFC 2349 allows 1..=255)"
                        ));
                    }
                }
            }
            "tsize" => match value.parse::<u64>() {
                Ok(v) => {
                    if asked("tsize").is_some() {
                        neg.tsize = Some(v);
                    }
                }
                Err(_) => return Err(format!("tsize {value:?} acknowledged, not a number")),
            },
            // RFC 2347 forbids a server to acknowledge an option that was
            // not requested; an unknown one changes nothing here, so it is
            // ignored rather than failing the transfer.
            _ => {}
        }
    }
    if dir == Dir::Get {
        // On a read the OACK's tsize is the file's size (RFC 2349).
    } else if let (Some(v), Some(req)) = (neg.tsize, asked("tsize")) {
        // On a write it is an echo of ours.
        if req != v.to_string() {
            return Err(format!("tsize {v} acknowledged, but {req} was sent"));
        }
    }
    Ok(neg)
}

/// How the server answered the request.
enum Start {
    /// OACK (RFC 2347): for a WRQ it stands for ACK 0, for an RRQ the
    /// client confirms it with ACK 0.
    Oack(Negotiated),
    /// WRQ answered with ACK 0: options ignored.
    Ack0,
    /// RRQ answered with DATA 1, left in the buffer with this length:
    /// options ignored.
    Data1(usize),
}

enum StartError {
    /// ERROR 8 (RFC 2347): the server refused the options.
    Refused,
    Fatal(Error),
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Fatal(e)
    }
}

/// Sends the request and waits for the first answer, retransmitting the
/// request from the same transfer ID on timeout.
fn start(
    ctx: &Ctx,
    conn: &mut Conn,
    buf: &mut [u8],
    options: &[(&'static str, String)],
) -> Result<Start, StartError> {
    let op = match ctx.dir {
        Dir::Put => opcode::WRQ,
        Dir::Get => opcode::RRQ,
    };
    let mut req = Vec::with_capacity(64 + ctx.name.len());
    packet::encode_request(&mut req, op, ctx.name, MODE, options);
    let mut tries = 0u32;
    let since = Instant::now();
    loop {
        conn.send(ctx, &req)?;
        tries += 1;
        let deadline = Instant::now() + ctx.opts.timeout;
        while let Some(n) = conn.recv(ctx, buf, deadline)? {
            let Ok(pkt) = packet::parse(&buf[..n]) else {
                continue;
            };
            match pkt {
                Packet::Oack { options: acked } => {
                    conn.lock_peer();
                    return match negotiate(&acked, options, ctx.dir) {
                        Ok(neg) => Ok(Start::Oack(neg)),
                        Err(why) => {
                            // RFC 2347: a client that rejects the OACK sends
                            // ERROR 8 and terminates the transfer.
                            conn.send_error(ctx, error_code::OPTION_REFUSED, &why);
                            Err(ctx
                                .err(ErrorKind::Other, format!("unacceptable OACK: {why}"))
                                .into())
                        }
                    };
                }
                Packet::Ack { block: 0 } if ctx.dir == Dir::Put => {
                    conn.lock_peer();
                    return Ok(Start::Ack0);
                }
                Packet::Data { block: 1, .. } if ctx.dir == Dir::Get => {
                    conn.lock_peer();
                    return Ok(Start::Data1(n));
                }
                Packet::Error { code, message } => {
                    if code == error_code::OPTION_REFUSED && !options.is_empty() {
                        return Err(StartError::Refused);
                    }
                    return Err(ctx.request_refused(code, &message).into());
                }
                // Not an answer to our request.
                _ => {}
            }
        }
        if tries > ctx.opts.retries {
            let what = match ctx.dir {
                Dir::Put => "answer to the write request",
                Dir::Get => "answer to the read request",
            };
            return Err(ctx.no_answer(what, tries, since).into());
        }
        conn.retransmits += 1;
    }
}

/// Runs the request phase, retrying once without options after ERROR 8
/// (RFC 2347), on a fresh socket so that the new attempt has its own
/// transfer ID.
fn begin(ctx: &Ctx, buf: &mut [u8], tsize: Option<u64>) -> Result<(Conn, Start, bool), Error> {
    let options = request_options(ctx.opts, tsize);
    let mut conn = Conn::open(ctx)?;
    match start(ctx, &mut conn, buf, &options) {
        Ok(s) => Ok((conn, s, false)),
        Err(StartError::Fatal(e)) => Err(e),
        Err(StartError::Refused) => {
            let retransmits = conn.retransmits;
            let mut conn = Conn::open(ctx)?;
            conn.retransmits = retransmits;
            match start(ctx, &mut conn, buf, &[]) {
                Ok(s) => Ok((conn, s, true)),
                Err(StartError::Fatal(e)) => Err(e),
                Err(StartError::Refused) => Err(ctx.server_err(
                    error_code::OPTION_REFUSED,
                    "refused a request that carried no options",
                )),
            }
        }
    }
}

fn validate_name(ctx: &Ctx) -> Result<(), Error> {
    if ctx.name.is_empty() {
        return Err(ctx.err(ErrorKind::Config, "the remote file name is empty"));
    }
    if ctx.name.contains('\0') {
        return Err(ctx.err(
            ErrorKind::Config,
            "the remote file name contains a NUL byte, which TFTP cannot carry",
        ));
    }
    // A request must fit one datagram of the default size with its options
    // (RFC 2347 limits the request packet to 512 bytes).
    if ctx.name.len() > 400 {
        return Err(ctx.err(
            ErrorKind::Config,
            format!(
                "the remote file name is {} bytes long; TFTP requests allow about 400",
                ctx.name.len()
            ),
        ));
    }
    Ok(())
}

/// Reads until `buf` is full or the reader ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first steps of a transfer in either direction: checks the options
/// and the name, then sends the request and settles the options (`begin`).
/// `tsize` is what the request offers (RFC 2349). Returns the connection,
/// the values in force, a DATA 1 already in `buf` (a read the server
/// answered without options) and whether the server refused the options.
fn open(
    ctx: &Ctx,
    buf: &mut [u8],
    tsize: Option<u64>,
) -> Result<(Conn, Negotiated, Option<usize>, bool), Error> {
    ctx.opts
        .validate()
        .map_err(|e| ctx.err(e.kind, e.message))?;
    validate_name(ctx)?;
    let (conn, start, refused) = begin(ctx, buf, tsize)?;
    let (neg, first) = match start {
        Start::Oack(neg) => (neg, None),
        // A write answered with ACK 0.
        Start::Ack0 => (Negotiated::PLAIN, None),
        // A read answered with DATA 1.
        Start::Data1(n) => (Negotiated::PLAIN, Some(n)),
    };
    Ok((conn, neg, first, refused))
}

/// What a finished transfer moved, used and went through.
fn report(bytes: u64, neg: Negotiated, refused: bool, conn: &Conn) -> Report {
    Report {
        bytes,
        blksize: neg.blksize,
        windowsize: neg.windowsize,
        tsize: neg.tsize,
        oack: neg.oack,
        options_refused: refused,
        retransmits: conn.retransmits,
        foreign_packets: conn.foreign,
    }
}

pub(crate) fn put(
    server: SocketAddr,
    name: &str,
    data: &mut dyn Read,
    size: u64,
    opts: &Options,
) -> Result<Report, Error> {
    let ctx = Ctx {
        server,
        name,
        dir: Dir::Put,
        opts,
    };
    // Control answers (ACK, OACK, ERROR) are small, but a confused peer may
    // send anything: receive into a buffer that holds any datagram, so
    // nothing is silently truncated.
    let mut buf = vec![0u8; packet::MAX_PACKET + 1];
    let (mut conn, neg, _, refused) = open(&ctx, &mut buf, opts.tsize.then_some(size))?;
    let bytes = send_file(&ctx, &mut conn, &mut buf, neg, data, size)?;
    Ok(report(bytes, neg, refused, &conn))
}

/// The sender (RFC 1350 §6, RFC 7440 §4): up to `windowsize` blocks in
/// flight, kept in a ring buffer of `windowsize` slots so that any of them
/// can be sent again. Each round fills the window from the reader and sends
/// what is unsent, then waits for an ACK that moves the window; on silence
/// it resends the whole unacknowledged window.
fn send_file(
    ctx: &Ctx,
    conn: &mut Conn,
    buf: &mut [u8],
    neg: Negotiated,
    data: &mut dyn Read,
    size: u64,
) -> Result<u64, Error> {
    let mut s = Sender::new(neg, size);
    loop {
        s.fill_window(ctx, conn, data)?;
        match s.await_ack(ctx, conn, buf)? {
            Ack::Last => return Ok(s.total),
            Ack::Moved => {}
            Ack::Silence => s.time_out(ctx, conn)?,
        }
    }
}

/// What waiting for an ACK brought.
enum Ack {
    /// The last block is acknowledged: the transfer is complete.
    Last,
    /// The window moved (fully or partially acknowledged).
    Moved,
    /// Nothing that moves the window before the deadline.
    Silence,
}

/// The sender's state between rounds.
struct Sender {
    neg: Negotiated,
    /// The announced size; the data must have exactly this many bytes.
    size: u64,
    blksize: usize,
    window: u64,
    /// One slot per block in flight: header and payload.
    slot_len: usize,
    ring: Vec<u8>,
    /// Packet length in each slot.
    lens: Vec<usize>,
    /// Last block the server acknowledged.
    acked: u64,
    /// Last block read into the ring.
    read_upto: u64,
    /// Next block to (re)send.
    next: u64,
    /// The short block that ends the file, once read.
    last_block: Option<u64>,
    /// Bytes read from the data so far.
    total: u64,
    /// Consecutive waits that brought nothing.
    timeouts: u32,
    progress_at: Instant,
}

impl Sender {
    fn new(neg: Negotiated, size: u64) -> Sender {
        let blksize = neg.blksize as usize;
        let window = neg.windowsize as u64;
        let slot_len = packet::HEADER_LEN + blksize;
        Sender {
            neg,
            size,
            blksize,
            window,
            slot_len,
            ring: vec![0u8; slot_len * window as usize],
            lens: vec![0usize; window as usize],
            acked: 0,
            read_upto: 0,
            next: 1,
            last_block: None,
            total: 0,
            timeouts: 0,
            progress_at: Instant::now(),
        }
    }

    /// Sends every block of the window not sent yet, reading new ones from
    /// `data` into their ring slots first.
    fn fill_window(
        &mut self,
        ctx: &Ctx,
        conn: &mut Conn,
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        while self.next <= self.acked + self.window
            && self.last_block.is_none_or(|l| self.next <= l)
        {
            let slot = (self.next % self.window) as usize;
            if self.next > self.read_upto {
                self.read_block(ctx, conn, data, slot)?;
            }
            let at = slot * self.slot_len;
            conn.send(ctx, &self.ring[at..at + self.lens[slot]])?;
            self.next += 1;
        }
        Ok(())
    }

    /// Reads block `next` into `slot`. A read error, or data longer or
    /// shorter than announced, aborts the transfer (the server is sent an
    /// ERROR): the server never ends up with a file of the wrong length.
    fn read_block(
        &mut self,
        ctx: &Ctx,
        conn: &mut Conn,
        data: &mut dyn Read,
        slot: usize,
    ) -> Result<(), Error> {
        let pkt = &mut self.ring[slot * self.slot_len..(slot + 1) * self.slot_len];
        let n = match read_full(data, &mut pkt[packet::HEADER_LEN..]) {
            Ok(n) => n,
            Err(e) => {
                conn.send_error(
                    ctx,
                    error_code::NOT_DEFINED,
                    "client could not read the data",
                );
                return Err(ctx.err(ErrorKind::Other, format!("reading the data to send: {e}")));
            }
        };
        self.total += n as u64;
        let (total, size) = (self.total, self.size);
        if total > size || (n < self.blksize && total < size) {
            conn.send_error(
                ctx,
                error_code::NOT_DEFINED,
                "client aborted: data size changed",
            );
            let got = if total > size {
                format!("more than {size}")
            } else {
                total.to_string()
            };
            return Err(ctx.err(
                ErrorKind::Other,
                format!(
                    "the data to send had {got} bytes, but {size} were announced; transfer aborted"
                ),
            ));
        }
        pkt[..packet::HEADER_LEN].copy_from_slice(&packet::data_header(self.next as u16));
        self.lens[slot] = packet::HEADER_LEN + n;
        self.read_upto = self.next;
        // A block shorter than blksize, possibly empty, ends the transfer
        // (RFC 1350 §6).
        if n < self.blksize {
            self.last_block = Some(self.next);
        }
        Ok(())
    }

    /// Waits (with backoff after timeouts) for an ACK that moves the
    /// window. An ERROR from the server ends the transfer.
    fn await_ack(&mut self, ctx: &Ctx, conn: &mut Conn, buf: &mut [u8]) -> Result<Ack, Error> {
        let deadline = Instant::now() + self.neg.wait(ctx.opts.timeout, self.timeouts);
        while let Some(n) = conn.recv(ctx, buf, deadline)? {
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack { block }) => {
                    if let Some(ack) = self.on_ack(conn, block) {
                        return Ok(ack);
                    }
                }
                Ok(Packet::Error { code, message }) => return Err(ctx.server_err(code, &message)),
                // Duplicate OACK, stray DATA, garbage: not for the sender.
                _ => {}
            }
        }
        Ok(Ack::Silence)
    }

    /// Takes ACK `block` (16-bit, wrapping); `None` when it does not move
    /// the window.
    fn on_ack(&mut self, conn: &mut Conn, block: u16) -> Option<Ack> {
        let sent = self.next - 1;
        let delta = block.wrapping_sub(self.acked as u16) as u64;
        if delta == 0 || delta > sent - self.acked {
            // A duplicate or stale ACK. Answering it with data would start
            // the Sorcerer's Apprentice (RFC 1123 §4.2.3.1): ignore it, our
            // timer handles loss.
            return None;
        }
        self.acked += delta;
        self.timeouts = 0;
        self.progress_at = Instant::now();
        if self.last_block == Some(self.acked) {
            return Some(Ack::Last);
        }
        // A partial ACK (RFC 7440 §4): the server lost a block; resend from
        // the one after the acknowledged block.
        if self.acked < sent {
            conn.retransmits += sent - self.acked;
        }
        self.next = self.acked + 1;
        Some(Ack::Moved)
    }

    /// A wait brought nothing: give up after `retries` (telling the server
    /// to stop too), else resend the whole unacknowledged window.
    fn time_out(&mut self, ctx: &Ctx, conn: &mut Conn) -> Result<(), Error> {
        self.timeouts += 1;
        if self.timeouts > ctx.opts.retries {
            let what = format!("ACK for block {}", self.acked + 1);
            // A lost ERROR does not matter.
            conn.send_error(ctx, error_code::NOT_DEFINED, "client timed out");
            return Err(ctx.no_answer(&what, self.timeouts, self.progress_at));
        }
        conn.retransmits += (self.next - 1) - self.acked;
        self.next = self.acked + 1;
        Ok(())
    }
}

pub(crate) fn get(
    server: SocketAddr,
    name: &str,
    out: &mut dyn Write,
    opts: &Options,
) -> Result<Report, Error> {
    let ctx = Ctx {
        server,
        name,
        dir: Dir::Get,
        opts,
    };
    // One byte more than the largest legal DATA, to detect oversize ones.
    let mut buf = vec![0u8; packet::MAX_PACKET + 1];
    let (mut conn, neg, first, refused) = open(&ctx, &mut buf, opts.tsize.then_some(0))?;
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let bytes = receive_file(&ctx, &mut conn, &mut buf, neg, first, &mut out)?;
    Ok(report(bytes, neg, refused, &conn))
}

/// The receiver (RFC 1350 §6, RFC 7440 §4): writes in-order blocks
/// straight to `out`, acknowledges every `windowsize` blocks, and
/// acknowledges the last in-order block on a gap or a timeout. `pending`
/// is a DATA 1 already in `buf`; without one, the OACK is confirmed first.
fn receive_file(
    ctx: &Ctx,
    conn: &mut Conn,
    buf: &mut [u8],
    neg: Negotiated,
    mut pending: Option<usize>,
    out: &mut BufWriter<&mut dyn Write>,
) -> Result<u64, Error> {
    let mut r = Receiver::new(neg);
    if pending.is_none() {
        // RFC 2347: the client confirms the OACK of a read with ACK 0.
        conn.send_ack(ctx, 0)?;
    }
    r.deadline = Instant::now() + ctx.opts.timeout;
    loop {
        let n = match pending.take() {
            Some(n) => n,
            None => match conn.recv(ctx, buf, r.deadline)? {
                Some(n) => n,
                None => {
                    r.time_out(ctx, conn)?;
                    continue;
                }
            },
        };
        let (block, data) = match packet::parse(&buf[..n]) {
            Ok(Packet::Data { block, data }) => (block, data),
            Ok(Packet::Error { code, message }) => return Err(ctx.server_err(code, &message)),
            // Duplicate OACK, ACKs, garbage: ignored.
            _ => continue,
        };
        if !r.in_order(ctx, conn, block)? {
            continue;
        }
        if r.store(ctx, conn, data, out)? {
            return r.finish(ctx, conn);
        }
        r.ack_full_window(ctx, conn)?;
    }
}

/// The receiver's state between datagrams.
struct Receiver {
    neg: Negotiated,
    blksize: usize,
    window: u64,
    /// Last block received in order.
    have: u64,
    /// In-order blocks since our last ACK.
    since_ack: u64,
    /// The current gap was already answered.
    gap_acked: bool,
    /// Bytes written to the output.
    total: u64,
    /// Consecutive waits that brought nothing.
    timeouts: u32,
    progress_at: Instant,
    /// When the next datagram is due.
    deadline: Instant,
}

impl Receiver {
    fn new(neg: Negotiated) -> Receiver {
        let now = Instant::now();
        Receiver {
            neg,
            blksize: neg.blksize as usize,
            window: neg.windowsize as u64,
            have: 0,
            since_ack: 0,
            gap_acked: false,
            total: 0,
            timeouts: 0,
            progress_at: now,
            deadline: now,
        }
    }

    /// Nothing came in time: give up after `retries` (telling the server to
    /// stop too), else, as RFC 7440 §4 (and RFC 1350 for window 1) say,
    /// acknowledge the last block received in order.
    fn time_out(&mut self, ctx: &Ctx, conn: &mut Conn) -> Result<(), Error> {
        self.timeouts += 1;
        if self.timeouts > ctx.opts.retries {
            let what = format!("DATA block {}", self.have + 1);
            conn.send_error(ctx, error_code::NOT_DEFINED, "client timed out");
            return Err(ctx.no_answer(&what, self.timeouts, self.progress_at));
        }
        conn.send_ack(ctx, self.have)?;
        conn.retransmits += 1;
        self.since_ack = 0;
        self.gap_acked = false;
        self.deadline = Instant::now() + self.neg.wait(ctx.opts.timeout, self.timeouts);
        Ok(())
    }

    /// Whether DATA `block` (16-bit, wrapping) is the next one in order.
    /// A block ahead of it means one went missing: RFC 7440 §4 has the
    /// last in-order block acknowledged so the sender restarts the window
    /// from the missing one; once per gap, so that the rest of the window
    /// does not multiply ACKs. An old duplicate is ignored (no re-ACK,
    /// which could feed a Sorcerer's Apprentice exchange); the timer covers
    /// a lost ACK.
    fn in_order(&mut self, ctx: &Ctx, conn: &mut Conn, block: u16) -> Result<bool, Error> {
        let delta = block.wrapping_sub((self.have + 1) as u16) as u64;
        if delta == 0 {
            return Ok(true);
        }
        if delta < self.window && !self.gap_acked {
            conn.send_ack(ctx, self.have)?;
            self.since_ack = 0;
            self.gap_acked = true;
            self.deadline = Instant::now() + self.neg.wait(ctx.opts.timeout, self.timeouts);
        }
        Ok(false)
    }

    /// Writes the next block's `data` to `out` (flushed after the last);
    /// returns whether it was the last (shorter than blksize). A block
    /// larger than blksize, or a failed write, aborts the transfer with an
    /// ERROR to the server.
    fn store(
        &mut self,
        ctx: &Ctx,
        conn: &mut Conn,
        data: &[u8],
        out: &mut BufWriter<&mut dyn Write>,
    ) -> Result<bool, Error> {
        let blksize = self.blksize;
        if data.len() > blksize {
            conn.send_error(
                ctx,
                error_code::ILLEGAL_OPERATION,
                "DATA larger than the block size",
            );
            return Err(ctx.err(
                ErrorKind::Other,
                format!(
                    "server sent {} bytes in block {}, more than the block size {blksize}",
                    data.len(),
                    self.have + 1
                ),
            ));
        }
        let last = data.len() < blksize;
        if let Err(e) = out
            .write_all(data)
            .and_then(|()| if last { out.flush() } else { Ok(()) })
        {
            conn.send_error(
                ctx,
                error_code::DISK_FULL,
                "client could not store the data",
            );
            return Err(ctx.err(ErrorKind::Other, format!("writing the received data: {e}")));
        }
        self.have += 1;
        self.total += data.len() as u64;
        self.since_ack += 1;
        self.gap_acked = false;
        self.timeouts = 0;
        self.progress_at = Instant::now();
        self.deadline = self.progress_at + ctx.opts.timeout;
        Ok(last)
    }

    /// Acknowledges once a full window arrived in order.
    fn ack_full_window(&mut self, ctx: &Ctx, conn: &mut Conn) -> Result<(), Error> {
        if self.since_ack >= self.window {
            conn.send_ack(ctx, self.have)?;
            self.since_ack = 0;
        }
        Ok(())
    }

    /// Sends the final ACK (RFC 1350 §6) and checks the length against the
    /// tsize the server announced. If the ACK is lost the server
    /// retransmits into a closed port; the data is complete here.
    fn finish(&self, ctx: &Ctx, conn: &mut Conn) -> Result<u64, Error> {
        conn.send_ack(ctx, self.have)?;
        if let Some(expected) = self.neg.tsize
            && expected != self.total
        {
            return Err(ctx.err(
                ErrorKind::Other,
                format!(
                    "received {} bytes, but the server announced tsize {expected}",
                    self.total
                ),
            ));
        }
        Ok(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(n, v)| (*n, v.to_string())).collect()
    }

    #[test]
    fn request_options_skip_defaults() {
        let o = Options {
            blksize: 512,
            windowsize: 1,
            timeout: Duration::from_millis(200),
            retries: 1,
            tsize: false,
        };
        assert_eq!(request_options(&o, None), req(&[("timeout", "1")]));
        let o = Options {
            blksize: 1468,
            windowsize: 16,
            timeout: Duration::from_millis(2500),
            ..Options::default()
        };
        assert_eq!(
            request_options(&o, Some(0)),
            req(&[
                ("blksize", "1468"),
                ("windowsize", "16"),
                ("timeout", "3"),
                ("tsize", "0")
            ])
        );
    }

    #[test]
    fn negotiate_uses_what_the_oack_says() {
        let asked = req(&[
            ("blksize", "1468"),
            ("windowsize", "16"),
            ("timeout", "1"),
            ("tsize", "0"),
        ]);
        // Everything acknowledged, blksize lowered.
        let n = negotiate(
            &[
                ("BLKSIZE", "1024"),
                ("windowsize", "8"),
                ("timeout", "1"),
                ("tsize", "99"),
            ],
            &asked,
            Dir::Get,
        )
        .unwrap();
        assert_eq!(
            (n.blksize, n.windowsize, n.tsize, n.oack),
            (1024, 8, Some(99), true)
        );
        // Only some acknowledged (tftpd-hpa ignores windowsize): the rest
        // keep their RFC 1350 defaults.
        let n = negotiate(&[("blksize", "1468")], &asked, Dir::Get).unwrap();
        assert_eq!((n.blksize, n.windowsize, n.tsize), (1468, 1, None));
        // An empty OACK: plain values.
        let n = negotiate(&[], &asked, Dir::Get).unwrap();
        assert_eq!((n.blksize, n.windowsize), (512, 1));
    }

    #[test]
    fn negotiate_rejects_raised_or_invalid_values() {
        let asked = req(&[
            ("blksize", "1468"),
            ("windowsize", "4"),
            ("timeout", "1"),
            ("tsize", "10"),
        ]);
        for bad in [
            vec![("blksize", "1469")],
            vec![("blksize", "7")],
            vec![("blksize", "x")],
            vec![("windowsize", "5")],
            vec![("windowsize", "0")],
            vec![("timeout", "0")],
            vec![("timeout", "256")],
            vec![("tsize", "-1")],
        ] {
            assert!(negotiate(&bad, &asked, Dir::Get).is_err(), "{bad:?}");
        }
        // On a write the tsize must be an echo.
        assert!(negotiate(&[("tsize", "11")], &asked, Dir::Put).is_err());
        assert!(negotiate(&[("tsize", "10")], &asked, Dir::Put).is_ok());
        // blksize not requested: any value above 512 is a raise.
        let asked = req(&[("timeout", "1")]);
        assert!(negotiate(&[("blksize", "1024")], &asked, Dir::Put).is_err());
        assert!(negotiate(&[("blksize", "512")], &asked, Dir::Put).is_ok());
        // Unknown options are ignored.
        assert!(negotiate(&[("multicast", "x")], &asked, Dir::Put).is_ok());
    }

    #[test]
    fn block_arithmetic_wraps() {
        // The sender's ACK mapping: acked 65535 (wire 65535), sent up to
        // 65536+3 (wire 3): an ACK for wire block 1 moves it by 2.
        let acked: u64 = 65535;
        let block: u16 = 1;
        assert_eq!(block.wrapping_sub(acked as u16), 2);
        // The receiver: having 65535, expecting 65536 = wire 0.
        let have: u64 = 65535;
        assert_eq!(0u16.wrapping_sub((have + 1) as u16), 0);
        assert_eq!(65535u16.wrapping_sub((have + 1) as u16), 65535, "old block");
    }

    #[test]
    fn durations_in_messages() {
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1 s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(fmt_duration(Duration::from_millis(12500)), "12 s");
    }

    #[test]
    fn backoff_doubles_up_to_twice_the_server_timeout() {
        let base = Duration::from_millis(100);
        let acked = Negotiated {
            server_timeout: Some(1),
            ..Negotiated::PLAIN
        };
        let waits: Vec<u128> = (0..7).map(|k| acked.wait(base, k).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        // Unknown server timeout: assume 5 s.
        assert_eq!(Negotiated::PLAIN.wait(base, 30), Duration::from_secs(10));
        // A base longer than the server's: capped at twice the base.
        assert_eq!(
            acked.wait(Duration::from_secs(3), 5),
            Duration::from_secs(6)
        );
    }
}
