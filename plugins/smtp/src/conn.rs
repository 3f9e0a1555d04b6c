//! The connection to the server: TCP, upgraded in place to TLS by STARTTLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use crate::tls::TlsSetup;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Runs the TLS handshake now, so a certificate problem is reported as
    /// the STARTTLS step's, not as the next command's.
    pub fn into_tls(self, tls: &TlsSetup) -> io::Result<Conn> {
        let tcp = match self {
            Conn::Plain(s) => s,
            Conn::Tls(_) => return Err(io::Error::other("the connection is already TLS")),
        };
        let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn::Tls(Box::new(stream)))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

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
