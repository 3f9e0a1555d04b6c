//! The `smtp` notifier: mails each event to the `to` addresses through an
//! SMTP server, with STARTTLS and AUTH PLAIN/LOGIN.
//!
//! # Settings
//!
//! | key | required | default | meaning |
//! | --- | --- | --- | --- |
//! | `host` | yes | | the SMTP server's name or address (role network-host) |
//! | `port` | no | `25` | submission servers usually listen on 587 |
//! | `from` | yes | | sender, `user@example.com` or `Name <user@example.com>` |
//! | `to` | yes | | recipients, separated by commas |
//! | `user` | no | | AUTH user; with `password`, or neither |
//! | `password` | no | | secret; AUTH password |
//! | `starttls` | no | `auto` | `auto`: STARTTLS when the server offers it; `always`: refuse a server without it; `never` |
//! | `tls_ca` | no | | PEM: the CA of the server's certificate, or the certificate itself (pinned) |
//! | `tls_insecure` | no | `false` | skip certificate checks (still encrypted) |
//! | `subject_prefix` | no | `[offsite]` | put before each subject; empty for none |
//! | `timeout` | no | `30` | seconds (`30`, `30s`) or minutes (`2m`) for connecting and for each reply |
//! | `retries` | no | `3` | retries (0–10) after a network error, a timeout or a 4yz reply; waits 1 s, 2 s, 4 s, … (≤ 30 s) |
//!
//! # The mail
//!
//! Subject `[offsite] calls: backup failed on db1`; headers From, To,
//! Subject, Date, Message-ID, MIME-Version, Content-Type
//! `text/plain; charset=utf-8`, Auto-Submitted `auto-generated` (RFC 3834);
//! a text body with the summary, every event field (`kind`, `job`, `host`,
//! `time`, `summary`, `generation`, `size`, `duration_ms`, `destination`;
//! `-` when absent) and the detail. 7bit, quoted-printable or base64 as the
//! text needs, so no server extension is required.
//!
//! # Outcomes
//!
//! Unreachable server, timeout, 4yz reply: retried within `retries`, then
//! `transient`. AUTH refused: `config` (check `user`/`password`). An
//! untrusted certificate, a server without STARTTLS under `always`, or
//! without AUTH when `user` is set: `config`, naming the setting. Other 5yz
//! replies (an unknown recipient, …): `rejected`. No message holds the
//! password.
//!
//! # lettre, and TLS
//!
//! lettre 0.11 builds the message (headers, encoded words, transfer
//! encoding) and supplies the SMTP pieces (commands, reply parser, EHLO
//! keywords, AUTH encoding); the dialogue over the socket is ours (see
//! `session` for why lettre's own connection does not fit the guest). TLS is
//! rustls with the ring provider inside the guest (the crate
//! offsite-guest-tls, shared with the ftp plugin): no host TLS interface is
//! needed, and STARTTLS upgrades the TCP connection in
//! place. `tls_ca` trusts a CA or pins the server's own certificate (`tls`).

// Natively only the unit tests use the plugin (the export is wasm32-only, see
// the end of this file).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod config;
mod conn;
mod message;
mod session;
mod tls;

use lettre::transport::smtp::extension::ClientId;
use offsite_plugin_core::retry::{Outcome, with_retries};
use offsite_sdk::*;

use crate::config::{
    Config, DEFAULT_PORT, DEFAULT_RETRIES, DEFAULT_SUBJECT_PREFIX, DEFAULT_TIMEOUT_SECS,
    MAX_RETRIES,
};
use crate::session::{Failure, Mailer};

struct Smtp {
    mailer: Mailer,
}

/// The EHLO name (RFC 5321 §4.1.1.1 wants the client's domain): the runner's
/// host name when it is a plain DNS name, else an address literal.
fn hello_name(host: &str) -> ClientId {
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if plain {
        ClientId::Domain(host.to_string())
    } else {
        ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST)
    }
}

impl Notifier for Smtp {
    fn describe() -> PluginInfo {
        PluginInfo::notifier(
            "smtp",
            env!("CARGO_PKG_VERSION"),
            "Mails each event through an SMTP server (STARTTLS, AUTH PLAIN/LOGIN)",
        )
        .setting(
            Setting::new("host", "the SMTP server's host name or IP address")
                .required()
                .role(SettingRole::NetworkHost),
        )
        .setting(
            Setting::new("port", "the SMTP server's port (587 for submission)")
                .default(&DEFAULT_PORT.to_string()),
        )
        .setting(
            Setting::new("from", "sender: user@example.com or `Name <user@example.com>`")
                .required(),
        )
        .setting(Setting::new("to", "recipients, separated by commas").required())
        .setting(Setting::new("user", "user for SMTP AUTH (PLAIN or LOGIN); with `password`"))
        .setting(Setting::new("password", "password for SMTP AUTH").secret())
        .setting(
            Setting::new(
                "starttls",
                "auto (STARTTLS when offered), always (refuse a server without it) or never",
            )
            .default("auto"),
        )
        .setting(Setting::new(
            "tls_ca",
            "PEM certificate(s) to trust: the server's CA, or its own (self-signed) certificate",
        ))
        .setting(
            Setting::new(
                "tls_insecure",
                "true to skip certificate checks (still encrypted, not authenticated)",
            )
            .default("false"),
        )
        .setting(
            Setting::new("subject_prefix", "text put before each subject; empty for none")
                .default(DEFAULT_SUBJECT_PREFIX),
        )
        .setting(
            Setting::new(
                "timeout",
                "seconds (30, 30s) or minutes (2m) to connect and to wait for each reply",
            )
            .default(&DEFAULT_TIMEOUT_SECS.to_string()),
        )
        .setting(
            Setting::new(
                "retries",
                &format!(
                    "retries after a network error, a timeout or a 4yz reply (0-{MAX_RETRIES}), with backoff"
                ),
            )
            .default(&DEFAULT_RETRIES.to_string()),
        )
    }

    fn configure(settings: &Settings) -> Result<Self, Error> {
        Ok(Smtp {
            mailer: Mailer::new(Config::from_settings(settings)?)?,
        })
    }

    fn notify(&mut self, event: &Event) -> Result<(), Error> {
        let config = &self.mailer.config;
        let mail = message::build(config, event)?;
        let hello = hello_name(&event.host);
        with_retries(config.retries, warn, || {
            match self.mailer.deliver(&mail, &hello) {
                Ok(()) => Outcome::Done,
                Err(Failure::Final(e)) => Outcome::Final(e),
                Err(Failure::Retry(why)) => Outcome::Retry { why, after: None },
            }
        })
    }
}

// Only in the wasm32 build: the export symbols' names (such as
// `cabi_post_offsite:plugin/notifier-api@0.1.0#configure`) are no valid
// names in a native linker's version script, so the native cdylib that
// `cargo test --target x86_64-unknown-linux-gnu` links would fail.
#[cfg(target_arch = "wasm32")]
export_notifier!(Smtp);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use offsite_plugin_core::retry::{MAX_BACKOFF, backoff};

    use super::*;

    #[test]
    fn hello_name_is_a_domain_or_an_address_literal() {
        assert_eq!(
            hello_name("db1.example.com"),
            ClientId::Domain("db1.example.com".into())
        );
        assert_eq!(
            hello_name("bad host"),
            ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            hello_name(""),
            ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
