//! The TLS client the plugins run inside the guest (FTPS in ftp, STARTTLS in
//! smtp): rustls with the ring provider over a plain `std::net::TcpStream`,
//! so it works in a wasm32-wasip2 guest and needs nothing from the host but
//! TCP. One set of trust rules, so an operator's `tls_ca` and `tls_insecure`
//! mean the same in every plugin:
//! - neither: the Mozilla roots (webpki-roots) and the configured host name;
//! - `tls_ca`: each PEM certificate is trusted as a CA (the chain must lead
//!   to it and name the host) and as the exact server certificate (a pin);
//! - `tls_insecure`: any certificate, still checking that the handshake is
//!   signed by its key (encrypted, not authenticated).
//!
//! Errors about the settings come back as [`ConfigError`], which each plugin
//! turns into its own error type and wording.
//!
//! Also the TCP connect both use ([`dial`], [`connect`]): bounded in time,
//! with read and write timeouts, and a refused connect inside wasm32-wasip2
//! reported as refused.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};

/// What a TLS connection to the server needs: the config and the name to
/// verify. Cloning shares the config, so connections made from clones can
/// resume each other's sessions (FTP servers such as vsftpd with
/// `require_ssl_reuse` insist on it for data connections).
#[derive(Clone, Debug)]
pub struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsSetup {
    /// The setup for the server named by the setting `host`, with the
    /// settings `tls_ca` and `tls_insecure` (see [`client_config`]). Made
    /// once per client: connections made with it (or its clones) share one
    /// config and can resume each other's sessions.
    ///
    /// Errors: those of [`client_config`], or [`ConfigError::HostName`]
    /// when `host` is neither a DNS name nor an IP address.
    pub fn new(host: &str, tls_ca: Option<&str>, insecure: bool) -> Result<TlsSetup, ConfigError> {
        let config = client_config(tls_ca, insecure)?;
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| ConfigError::HostName(host.to_string()))?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Why [`client_config`] or [`TlsSetup::new`] failed.
#[derive(Debug)]
pub enum ConfigError {
    /// rustls refused the provider's protocol versions: a build problem,
    /// not a setting's.
    Protocols(rustls::Error),
    /// A PEM block in `tls_ca` could not be read.
    UnreadablePem(pem::Error),
    /// `tls_ca` holds no `CERTIFICATE` block.
    NoCertificate,
    /// rustls refused the certificates of `tls_ca` as trust anchors.
    Verifier(VerifierBuilderError),
    /// The setting `host` (this value) is no name a certificate can be
    /// checked against.
    HostName(String),
}

impl ConfigError {
    /// Whether a setting (`tls_ca`, `host`) is at fault (a configuration
    /// error), as opposed to the TLS library.
    pub fn is_setting(&self) -> bool {
        !matches!(self, ConfigError::Protocols(_))
    }

    /// The message, naming the `tls_ca` setting as `setting` (each plugin
    /// quotes setting names its own way, e.g. `tls_ca` or `` `tls_ca` ``;
    /// a bad `host` is named the same way).
    pub fn message(&self, setting: &str) -> String {
        match self {
            ConfigError::Protocols(e) => format!("TLS setup: {e}"),
            ConfigError::UnreadablePem(e) => format!("setting {setting}: unreadable PEM: {e}"),
            ConfigError::NoCertificate => {
                format!("setting {setting} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            }
            ConfigError::Verifier(e) => format!("setting {setting}: {e}"),
            ConfigError::HostName(host) => format!(
                "setting {}: {host:?} is not a name a TLS certificate can be checked against",
                setting.replace("tls_ca", "host")
            ),
        }
    }
}

impl ConfigError {
    /// As the plugins' shared error: `config` when a setting is at fault,
    /// `other` otherwise; `setting` as in [`Self::message`].
    pub fn to_error(&self, setting: &str) -> offsite_plugin_core::Error {
        match self.is_setting() {
            true => offsite_plugin_core::Error::config(self.message(setting)),
            false => offsite_plugin_core::Error::other(self.message(setting)),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("tls_ca"))
    }
}

impl std::error::Error for ConfigError {}

/// The client configuration for the settings `tls_ca` (PEM text) and
/// `tls_insecure` (see the crate documentation for what each trusts).
/// `insecure` wins when both are given; the plugins refuse that combination
/// before they get here.
pub fn client_config(tls_ca: Option<&str>, insecure: bool) -> Result<ClientConfig, ConfigError> {
    let provider = Arc::new(provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Protocols)?;
    let trust = if insecure {
        Trust::Any
    } else if let Some(pem) = tls_ca {
        Trust::ca_or_pinned(pem, &provider)?
    } else {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { trust, provider }))
        .with_no_client_auth())
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

/// Which server certificates a [`Verifier`] accepts.
#[derive(Debug)]
enum Trust {
    /// `tls_insecure`: any.
    Any,
    /// `tls_ca`: each certificate in the PEM text is trusted two ways:
    /// - as a CA: the server's chain must lead to it and name the host
    ///   (ordinary WebPKI verification, just with these roots instead of the
    ///   web's);
    /// - as the exact server certificate (a pin): a self-signed certificate
    ///   made with `openssl req -x509`, the usual way to give vsftpd,
    ///   pyftpdlib or a small mail server a certificate, is marked CA:TRUE,
    ///   which WebPKI refuses as a server certificate (CaUsedAsEndEntity).
    ///   Pinning the very certificate the operator handed over trusts nothing
    ///   more than they said to trust.
    CaOrPinned {
        pins: Vec<CertificateDer<'static>>,
        webpki: Option<Arc<WebPkiServerVerifier>>,
    },
}

impl Trust {
    fn ca_or_pinned(pem: &str, provider: &Arc<CryptoProvider>) -> Result<Trust, ConfigError> {
        let mut pins = Vec::new();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(ConfigError::UnreadablePem)?;
            // A certificate that is no usable trust anchor can still be a pin.
            let _ = roots.add(cert.clone());
            pins.push(cert);
        }
        if pins.is_empty() {
            return Err(ConfigError::NoCertificate);
        }
        let webpki = match roots.is_empty() {
            true => None,
            false => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(ConfigError::Verifier)?,
            ),
        };
        Ok(Trust::CaOrPinned { pins, webpki })
    }
}

/// The certificate verifier for `tls_ca` and `tls_insecure`. Handshake
/// signatures are always checked against the certificate's key, whatever
/// `trust` says about the certificate itself.
#[derive(Debug)]
struct Verifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (pins, webpki) = match &self.trust {
            Trust::Any => return Ok(ServerCertVerified::assertion()),
            Trust::CaOrPinned { pins, webpki } => (pins, webpki),
        };
        if pins.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match webpki {
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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

/// Connects to one address within `timeout` and sets the read/write timeouts.
pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
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

/// Read and write timeouts on a socket, and no Nagle delay. A platform
/// without timeouts (the guest's WASI sockets may lack SO_RCVTIMEO) still
/// works: the host's per-call time limit then bounds a stuck wait.
pub fn set_timeouts(s: &TcpStream, timeout: Duration) -> io::Result<()> {
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

/// A TCP connection, possibly wrapped in TLS.
pub enum Conn {
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
    /// so a certificate problem shows up as this step's (AUTH TLS, STARTTLS),
    /// not as the next read's.
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

    /// Ends the sending side cleanly: the TLS close_notify alert (RFC 8446
    /// §6.1, RFC 5246 §7.2.1; without it the server cannot tell a complete
    /// upload from a truncated one), then a TCP half-close (FIN), which is
    /// what ends an FTP STOR in stream mode (RFC 959 §3.4.1).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ca_without_certificates_is_a_setting_error() {
        let err = client_config(Some("not pem"), false).unwrap_err();
        assert!(matches!(err, ConfigError::NoCertificate), "{err:?}");
        assert!(err.is_setting());
        assert_eq!(
            err.message("`tls_ca`"),
            "setting `tls_ca` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        );
    }

    #[test]
    fn unreadable_pem_names_the_setting() {
        let pem = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        let err = client_config(Some(pem), false).unwrap_err();
        assert!(matches!(err, ConfigError::UnreadablePem(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("setting tls_ca: unreadable PEM: "),
            "{err}"
        );
    }

    #[test]
    fn defaults_and_insecure_build() {
        assert!(client_config(None, false).is_ok());
        assert!(client_config(None, true).is_ok());
    }
}
