//! The connection to the server: TCP, upgraded in place to TLS by STARTTLS.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// TCP, or TLS over it (offsite-guest-tls, shared with the ftp plugin).
pub use offsite_guest_tls::Conn;

/// Connects to `host:port`, trying each address the name resolves to, each
/// within `timeout`, and sets `timeout` for every read and write.
pub fn dial(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        "the host name resolved to no address",
    );
    for addr in (host, port).to_socket_addrs()? {
        match connect(addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    // peer_addr: inside wasm32-wasip2 a refused connect sometimes "succeeds"
    // and only the next call fails, with ENOTCONN (seen by the ftp plugin);
    // report it as what it is.
    let s = match TcpStream::connect_timeout(&addr, timeout).and_then(|s| s.peer_addr().map(|_| s))
    {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "no connection (refused or unreachable)",
            ));
        }
        Err(e) => return Err(e),
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}
