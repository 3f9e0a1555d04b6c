//! Sockets, and the TLS setup for the settings. The TLS client itself
//! (rustls with ring inside the guest, the trust rules, the plain-or-TLS
//! stream `Conn`) and the TCP connect with timeouts are the shared crate
//! offsite-guest-tls.

pub(crate) use offsite_guest_tls::{Conn, TlsSetup, connect, dial, set_timeouts};

use crate::error::Error;
use crate::settings::Settings;

/// The TLS setup for these settings (see offsite-guest-tls for what
/// `tls_ca` and `tls_insecure` trust). Made once per client: the control and
/// every data connection share its config, so rustls can resume the control
/// connection's session on data connections, which servers such as vsftpd
/// with `require_ssl_reuse` insist on (checked with vsftpd 3.0.3).
pub(crate) fn tls_setup(settings: &Settings) -> Result<TlsSetup, Error> {
    TlsSetup::new(
        &settings.host,
        settings.tls_ca.as_deref(),
        settings.tls_insecure,
    )
    .map_err(|e| e.to_error("tls_ca"))
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
