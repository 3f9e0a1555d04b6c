//! The TLS client for STARTTLS: rustls with the ring provider, running in
//! the plugin itself over a plain `std::net::TcpStream`, so the host needs
//! to offer nothing but TCP. Trust follows the ftp plugin's rules, so an
//! operator's `tls_ca` means the same for both:
//! - no `tls_ca`: the Mozilla roots (webpki-roots) and the name in `host`;
//! - `tls_ca`: each PEM certificate is trusted as a CA (the chain must lead
//!   to it and name `host`) and as the exact server certificate (a pin): a
//!   self-signed certificate made with `openssl req -x509`, the usual way to
//!   give a small mail server one, is marked CA:TRUE, which WebPKI refuses as
//!   a server certificate (CaUsedAsEndEntity); pinning the very certificate
//!   the operator handed over trusts nothing more than they said to trust;
//! - `tls_insecure`: any certificate, still checking that the handshake is
//!   signed by its key (encrypted, not authenticated).
//!
//! This mirrors plugins/ftp/src/conn.rs (`TlsSetup`, `CaOrPinned`,
//! `NoVerification`); the two belong in one shared crate.

use std::sync::Arc;

use offsite_sdk::Error;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What a TLS connection to the server needs, made once in `configure`.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsSetup {
    pub fn new(host: &str, tls_ca: Option<&str>, insecure: bool) -> Result<TlsSetup, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Other(format!("TLS setup: {e}")))?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else if let Some(pem) = tls_ca {
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
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
            Error::Config(format!(
                "setting `host` = {host} is not a name a TLS certificate can be checked against"
            ))
        })?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Verification for a `tls_ca` setting: a pin, or a chain to one of its CAs.
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
                cert.map_err(|e| Error::Config(format!("setting `tls_ca`: unreadable PEM: {e}")))?;
            // A certificate that is no usable trust anchor can still be a pin.
            let _ = roots.add(cert.clone());
            pins.push(cert);
        }
        if pins.is_empty() {
            return Err(Error::Config(
                "setting `tls_ca` holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let webpki = match roots.is_empty() {
            true => None,
            false => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Config(format!("setting `tls_ca`: {e}")))?,
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `tls_insecure`: any certificate, but the handshake must be signed by its key.
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ca_without_certificates_is_a_config_error() {
        let r = TlsSetup::new("mail.example.com", Some("not pem"), false);
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("`tls_ca`")));
    }

    #[test]
    fn defaults_build_for_names_and_addresses() {
        assert!(TlsSetup::new("mail.example.com", None, false).is_ok());
        assert!(TlsSetup::new("127.0.0.1", None, true).is_ok());
    }
}
