//! How the host sends a plugin's `wasi:http` requests, beyond wasmtime's
//! default: per-destination TLS trust, long bodies, and errors that say why.
//!
//! - **Trust**: a plugin with an `http-url` setting that also declares the
//!   settings `tls_ca` (PEM text, or the path of a PEM file) and/or
//!   `tls_insecure` (`true` skips verification) gets them applied to its
//!   HTTPS requests, instead of the compiled-in public roots only. The SDK
//!   offers both settings as `http::tls_settings()`.
//! - **Long bodies**: wasmtime's first-byte timeout spans the whole upload of
//!   a request's body; for a request that carries one the host waits up to
//!   the call's `transfer_timeout` (the stall watch still stops a call whose
//!   bytes stop moving).
//! - **Causes**: a failed connect, TLS handshake or HTTP exchange is logged
//!   with the plugin and destination, and the cause (e.g. `UnknownIssuer`)
//!   is appended to the error of the call that met it.

use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::bindings::wit::SettingRole;
use super::error::{ErrorKind, PluginError};
use super::settings::ResolvedSettings;

/// The settings a plugin declares to let operators choose its TLS trust.
pub const CA_KEY: &str = "tls_ca";
pub const INSECURE_KEY: &str = "tls_insecure";

/// The client TLS configuration for one plugin instance's HTTPS requests,
/// when its settings ask for something other than the public roots.
pub fn tls_config(
    settings: &ResolvedSettings,
    label: &str,
) -> Result<Option<Arc<rustls::ClientConfig>>, PluginError> {
    if settings.with_role(SettingRole::HttpUrl).next().is_none() {
        return Ok(None);
    }
    let ca = settings
        .get(CA_KEY)
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let insecure = match settings.get(INSECURE_KEY).map(str::trim) {
        None | Some("") | Some("false") | Some("no") | Some("0") => false,
        Some("true") | Some("yes") | Some("1") => true,
        Some(v) => {
            return Err(PluginError::new(
                ErrorKind::Config,
                format!("{label}: `{INSECURE_KEY}` = {v:?} is not a boolean; write true or false"),
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::host(format!("{label}: TLS: {e}")))?;
    let config = if insecure {
        tracing::warn!(
            "{label}: `{INSECURE_KEY}` = true: HTTPS without certificate verification (encrypted, not authenticated)"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else if let Some(ca) = ca {
        builder
            .with_root_certificates(roots(ca, label)?)
            .with_no_client_auth()
    } else {
        return Ok(None);
    };
    Ok(Some(Arc::new(config)))
}

/// Trust anchors from `tls_ca`: PEM text, or the path of a PEM file.
fn roots(ca: &str, label: &str) -> Result<rustls::RootCertStore, PluginError> {
    let bad = |m: String| PluginError::new(ErrorKind::Config, format!("{label}: `{CA_KEY}`: {m}"));
    let pem = if ca.starts_with("-----BEGIN") {
        ca.as_bytes().to_vec()
    } else {
        std::fs::read(ca).map_err(|e| bad(format!("cannot read {ca}: {e}")))?
    };
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad(
            "holds no certificate (want -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(store)
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Options for a request: one that carries a body may wait for its answer
/// as long as the call may run, since the body's upload happens inside
/// that wait.
pub fn with_body_time(
    request: &http::Request<WasiBody>,
    options: Option<RequestOptions>,
    transfer: Duration,
) -> Option<RequestOptions> {
    let has_body = !request.body().is_end_stream()
        || request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if !has_body {
        return options;
    }
    let mut o = options.unwrap_or_default();
    let asked = o.first_byte_timeout.unwrap_or(Duration::from_secs(600));
    o.first_byte_timeout = Some(asked.max(transfer));
    Some(o)
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Send over HTTPS with `config`'s trust (plain HTTP never reaches here).
pub async fn send_tls(
    config: Arc<rustls::ClientConfig>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    use http_body_util::BodyExt;
    let uri = request.uri().clone();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let o = options.unwrap_or_default();
    let connect = o.connect_timeout.unwrap_or(Duration::from_secs(600));
    let first_byte = o.first_byte_timeout.unwrap_or(Duration::from_secs(600));
    let tcp = tokio::time::timeout(connect, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        Err(_) => ServerName::try_from(host.clone())?,
    };
    let tls = tokio::time::timeout(
        connect,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let mut conn = Box::pin(conn);
    // The request line carries the path only (no proxy in between).
    *request.uri_mut() = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let answer = tokio::time::timeout(first_byte, async {
        tokio::select! {
            r = sender.send_request(request) => r.map_err(Error::from),
            r = &mut conn => match r {
                Ok(()) => Err(Error::ConnectionTerminated),
                Err(e) => Err(Error::from(e)),
            },
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = answer.map(|b| b.map_err(Error::from).boxed_unsync());
    let io: IoFuture = Box::new(async move { conn.await.map_err(Error::from) });
    Ok((response, io))
}

/// The cause of a TLS failure in an operator's words, e.g. "the server's
/// certificate is not signed by a trusted CA (UnknownIssuer)".
pub fn tls_cause(err: &std::io::Error) -> String {
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            let hint = match c {
                rustls::CertificateError::UnknownIssuer => {
                    "; give the server's CA in the destination's `tls_ca`"
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "; use the host name the certificate was issued for"
                }
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => {
                    "; the server's certificate has expired"
                }
                _ => "",
            };
            format!("invalid peer certificate: {c:?}{hint}")
        }
        Some(e) => e.to_string(),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuer_is_named_with_the_setting_to_fix_it() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let m = tls_cause(&e);
        assert!(m.contains("UnknownIssuer"), "{m}");
        assert!(m.contains("tls_ca"), "{m}");
    }

    #[test]
    fn a_ca_that_is_not_pem_is_a_config_error() {
        let e = roots("-----BEGIN NOTHING-----\n", "dest").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        let e = roots("/nonexistent/ca.pem", "dest").unwrap_err();
        assert!(e.message.contains("cannot read /nonexistent/ca.pem"), "{e}");
    }
}
