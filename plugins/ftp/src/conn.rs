//! Sockets, and the TLS setup for the settings. The TLS client itself
//! (rustls with ring inside the guest, the trust rules, the plain-or-TLS
//! stream `Conn`) is the shared crate offsite-guest-tls.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use offsite_guest_tls::{Conn, TlsSetup};
use rustls::pki_types::ServerName;

use crate::error::Error;
use crate::settings::Settings;

/// Connects to `host:port`, trying each address the name resolves to, within
/// `timeout` for each, and sets the read/write timeouts.
pub(crate) fn dial(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
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

/// Connects to one address within `timeout` and sets the read/write timeouts.
pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    // peer_addr: inside wasm32-wasip2 a refused connect sometimes "succeeds"
    // and only the next call on the socket fails, with "not connected"
    // (ENOTCONN), which reads like a bug; say what it means.
    match TcpStream::connect_timeout(&addr, timeout).and_then(|s| s.peer_addr().map(|_| s)) {
        Ok(s) => {
            set_timeouts(&s, timeout)?;
            Ok(s)
        }
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no connection (refused or unreachable)",
        )),
        Err(e) => Err(e),
    }
}

/// Read and write timeouts on a socket. A platform without them (the
/// guest's WASI sockets may lack SO_RCVTIMEO) still works: the host's
/// per-call time limit then bounds a stuck wait.
pub(crate) fn set_timeouts(s: &TcpStream, timeout: Duration) -> io::Result<()> {
    for r in [
        s.set_read_timeout(Some(timeout)),
        s.set_write_timeout(Some(timeout)),
    ] {
        match r {
            Err(e) if e.kind() != io::ErrorKind::Unsupported => return Err(e),
            _ => {}
        }
    }
    let _ = s.set_nodelay(true);
    Ok(())
}

/// The TLS setup for these settings (see offsite-guest-tls for what
/// `tls_ca` and `tls_insecure` trust). Made once per client: the control and
/// every data connection share its config, so rustls can resume the control
/// connection's session on data connections, which servers such as vsftpd
/// with `require_ssl_reuse` insist on (checked with vsftpd 3.0.3).
pub(crate) fn tls_setup(settings: &Settings) -> Result<TlsSetup, Error> {
    let config =
        offsite_guest_tls::client_config(settings.tls_ca.as_deref(), settings.tls_insecure)
            .map_err(|e| match e.is_setting() {
                true => Error::config(e.message("tls_ca")),
                false => Error::other(e.message("tls_ca")),
            })?;
    let server_name = ServerName::try_from(settings.host.clone()).map_err(|_| {
        Error::config(format!(
            "setting host: \"{}\" is not a valid name to check a TLS certificate against",
            settings.host
        ))
    })?;
    Ok(TlsSetup {
        config: Arc::new(config),
        server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn tls_ca_without_certificates_is_a_config_error() {
        let settings = Settings {
            tls: true,
            tls_ca: Some("not pem".into()),
            ..Settings::default()
        };
        let err = tls_setup(&settings).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("setting tls_ca holds no PEM"), "{err}");
    }
}
