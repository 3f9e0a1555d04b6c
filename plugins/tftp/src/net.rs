//! A UDP socket with deadline-bounded receives that works the same natively
//! and inside a wasm32-wasip2 guest.
//!
//! `UdpSocket::set_read_timeout` is not an option in the guest: wasi-libc's
//! UDP `setsockopt` answers `SO_RCVTIMEO` with ENOPROTOOPT ("TODO
//! wasi-sockets: emulate in wasi-libc itself"). So the socket is
//! non-blocking and a receive waits with `poll(2)`, which wasi-libc
//! implements over `wasi:io/poll` and Linux has natively. Using the same
//! path on both means the native tests exercise the guest's code.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub(crate) struct Socket {
    sock: UdpSocket,
}

impl Socket {
    /// A socket on an ephemeral port of the same address family as
    /// `server`: our transfer ID (RFC 1350 §4).
    pub(crate) fn open(server: SocketAddr) -> io::Result<Socket> {
        let any: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(any)?;
        sock.set_nonblocking(true)?;
        Ok(Socket { sock })
    }

    pub(crate) fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        // A non-blocking send fails with WouldBlock only when the send
        // buffer is full; give the stack a moment, boundedly.
        let mut waits = 0u32;
        loop {
            match self.sock.send_to(buf, to) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && waits < 1000 => {
                    waits += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one datagram, or `None` once `deadline` has passed.
    ///
    /// The deadline is checked before every receive, so a stream of
    /// datagrams the caller ignores (duplicates, strangers) cannot hold
    /// off a timeout; anything still queued is read on the next call.
    pub(crate) fn recv_from(
        &self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match self.sock.recv_from(buf) {
                Ok(got) => return Ok(Some(got)),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {}
                    io::ErrorKind::Interrupted => continue,
                    // An ICMP "port unreachable" for an earlier datagram can
                    // surface here on some stacks; it is not an answer, so
                    // keep waiting and let the retry logic decide.
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {}
                    _ => return Err(e),
                },
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            wait_readable(&self.sock, left)?;
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "wasi"))]
fn wait_readable(sock: &UdpSocket, timeout: Duration) -> io::Result<()> {
    use std::ffi::{c_int, c_short, c_ulong};
    use std::os::fd::AsRawFd;

    // `struct pollfd` has this layout in glibc, musl, bionic and wasi-libc.
    #[repr(C)]
    struct PollFd {
        fd: c_int,
        events: c_short,
        revents: c_short,
    }
    // POLLIN is 0x1 in Linux and in wasi-libc (where it is POLLRDNORM).
    const POLLIN: c_short = 0x1;
    unsafe extern "C" {
        // nfds_t is `unsigned long` in these libcs.
        fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
    }

    // Round up so that a wake-up never comes before the deadline.
    let ms = timeout
        .as_micros()
        .div_ceil(1000)
        .clamp(1, c_int::MAX as u128) as c_int;
    let mut fds = PollFd {
        fd: sock.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: `fds` is one valid, initialised pollfd that lives across the
    // call, and nfds is 1; the descriptor stays open while `sock` is borrowed.
    let rc = unsafe { poll(&mut fds, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // Readable, timed out or interrupted: the caller tries recv again and
    // checks its deadline.
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "wasi")))]
fn wait_readable(_sock: &UdpSocket, timeout: Duration) -> io::Result<()> {
    // Portable fallback (not used on the project's targets): short sleeps.
    std::thread::sleep(timeout.min(Duration::from_millis(1)));
    Ok(())
}
