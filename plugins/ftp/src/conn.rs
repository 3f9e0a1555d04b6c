//! Sockets, plain or inside TLS, and the TLS client configuration.
//!
//! TLS is rustls with the ring provider, running inside the plugin itself, so
//! it works in a wasm32-wasip2 guest over a plain `std::net::TcpStream` and
//! needs nothing from the host but TCP.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    StreamOwned,
};

use crate::error::Error;
use crate::settings::Settings;

/// A TCP connection, possibly wrapped in TLS.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Runs a TLS client handshake over this (plain) connection. Done eagerly
    /// so a certificate problem shows up here, not at the first read.
    pub fn into_tls(self, tls: &TlsSetup) -> io::Result<Conn> {
        let tcp = match self {
            Conn::Plain(s) => s,
            Conn::Tls(_) => return Err(io::Error::other("connection is already TLS")),
        };
        let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn::Tls(Box::new(stream)))
    }

    /// Ends the sending side cleanly: the TLS close_notify alert (RFC 8446
    /// §6.1, RFC 5246 §7.2.1; without it the server cannot tell a complete
    /// upload from a truncated one), then a TCP half-close (FIN), which is
    /// what ends a STOR in stream mode (RFC 959 §3.4.1).
    pub fn finish(&mut self) -> io::Result<()> {
        if let Conn::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock)?;
            }
        }
        self.flush()?;
        match self.tcp().shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
            _ => {}
        }
        self.drain();
        Ok(())
    }

    /// Reads (and drops) whatever the server still sends until it closes its
    /// side. Closing a socket with unread bytes in its receive buffer (a TLS
    /// 1.3 server's session tickets, say) makes the kernel send RST instead
    /// of FIN, and an RST makes the server's kernel throw away upload bytes
    /// the server has not read yet: measured with pyftpdlib, a 100 MB FTPS
    /// upload lost its last 384 KiB that way. Bounded by the read timeout
    /// and by `MAX_DRAIN` bytes; errors only end the wait.
    fn drain(&mut self) {
        const MAX_DRAIN: usize = 1 << 20;
        let mut buf = [0u8; 4096];
        let mut seen = 0;
        while seen < MAX_DRAIN {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
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

/// What a TLS connection to the server needs: the config (shared by the
/// control and every data connection, so rustls can resume the control
/// connection's session on data connections, which servers such as vsftpd
/// with `require_ssl_reuse` insist on; checked with vsftpd 3.0.3) and the
/// name to verify.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsSetup {
    pub fn new(settings: &Settings) -> Result<TlsSetup, Error> {
        let provider = Arc::new(provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::other(format!("TLS setup: {e}")))?;
        let config = if settings.tls_insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else if let Some(pem) = &settings.tls_ca {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CaOrPinned::new(pem, provider)?))
                .with_no_client_auth()
        } else {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
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
}

/// ring's provider. Inside wasm32 ring has no assembly and no AES
/// instructions, so AES-GCM runs as slow portable code; ChaCha20-Poly1305 is
/// offered first there, the order servers follow unless they impose theirs.
fn provider() -> CryptoProvider {
    #[allow(unused_mut)]
    let mut p = rustls::crypto::ring::default_provider();
    #[cfg(target_arch = "wasm32")]
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    p
}

/// Verification for a `tls_ca` setting. Each certificate in the PEM text is
/// trusted two ways:
/// - as a CA: the server's chain must lead to it and name `host` (ordinary
///   WebPKI verification, just with these roots instead of the web's);
/// - as the exact server certificate (a pin): a self-signed certificate
///   made with `openssl req -x509`, the usual way to give vsftpd or
///   pyftpdlib a certificate, is marked CA:TRUE, which WebPKI refuses as a
///   server certificate (CaUsedAsEndEntity). Pinning the very certificate the
///   user handed over trusts nothing more than they said to trust.
#[derive(Debug)]
struct CaOrPinned {
    pins: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl CaOrPinned {
    fn new(pem: &str, provider: Arc<CryptoProvider>) -> Result<CaOrPinned, Error> {
        let mut pins = Vec::new();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert =
                cert.map_err(|e| Error::config(format!("setting tls_ca: unreadable PEM: {e}")))?;
            // A certificate that is no usable trust anchor can still be a pin.
            let _ = roots.add(cert.clone());
            pins.push(cert);
        }
        if pins.is_empty() {
            return Err(Error::config(
                "setting tls_ca holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        let webpki = match roots.is_empty() {
            true => None,
            false => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::config(format!("setting tls_ca: {e}")))?,
            ),
        };
        Ok(CaOrPinned {
            pins,
            webpki,
            provider,
        })
    }
}

impl ServerCertVerifier for CaOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `tls_insecure`: accepts any certificate, but still checks that the
/// handshake is signed by the key in it, so the session is encrypted, just
/// not authenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn tls_ca_without_certificates_is_a_config_error() {
        let provider = Arc::new(provider());
        let err = CaOrPinned::new("not pem", provider).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
    }
}
