//! The TLS setup for STARTTLS. The client itself (rustls with ring inside
//! the guest, over a plain `std::net::TcpStream`) and its trust rules are the
//! crate offsite-guest-tls, shared with the ftp plugin, so an operator's
//! `tls_ca` and `tls_insecure` mean the same for both:
//! - no `tls_ca`: the Mozilla roots (webpki-roots) and the name in `host`;
//! - `tls_ca`: each PEM certificate is trusted as a CA (the chain must lead
//!   to it and name `host`) and as the exact server certificate (a pin), for
//!   the self-signed certificate a small mail server is usually given;
//! - `tls_insecure`: any certificate, still checking that the handshake is
//!   signed by its key (encrypted, not authenticated).

pub use offsite_guest_tls::TlsSetup;
use offsite_sdk::Error;

/// What a TLS connection to the server needs, made once in `configure`.
pub fn setup(host: &str, tls_ca: Option<&str>, insecure: bool) -> Result<TlsSetup, Error> {
    TlsSetup::new(host, tls_ca, insecure).map_err(|e| e.to_error("`tls_ca`").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ca_without_certificates_is_a_config_error() {
        let r = setup("mail.example.com", Some("not pem"), false);
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("`tls_ca`")));
    }

    #[test]
    fn defaults_build_for_names_and_addresses() {
        assert!(setup("mail.example.com", None, false).is_ok());
        assert!(setup("127.0.0.1", None, true).is_ok());
    }

    #[test]
    fn a_host_that_is_no_name_is_a_config_error() {
        let r = setup("not a host name", None, false);
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("setting `host`")));
    }
}
