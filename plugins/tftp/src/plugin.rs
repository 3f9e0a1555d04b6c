//! The `tftp` destination: the WIT glue over this crate's client core.
//!
//! TFTP (RFC 1350) can only read and write whole files: it has no delete, no
//! listing and no rename. So `remove` and `list` answer `unsupported` (the
//! runner then logs that rotation on this destination is external), and an
//! upload is written under its final name directly. The runner uploads the
//! generation's manifest after its data, so a generation whose
//! `.manifest.json` is on the server is complete there.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use offsite_plugin_core::duration;
use offsite_sdk::*;

use crate::Options;

/// The upload stream is read in `blksize` pieces by the core; a buffer in
/// between turns ~70 000 host calls per 100 MB into ~400.
const READ_BUF: usize = 256 * 1024;

struct Tftp {
    host: String,
    port: u16,
    /// Prefix of every remote name, without trailing `/`; may be empty.
    remote_dir: String,
    opts: Options,
    /// Resolved on the first call (`configure` must not do network I/O).
    server: Option<SocketAddr>,
}

/// The per-packet timeout: `1s`, `500ms`, `1.5s` or plain seconds (`2`).
fn parse_timeout(v: &str) -> Result<Duration, Error> {
    // RFC 2349 lets the server's timeout be 1..=255 s; the client's own
    // wait may be shorter (it is rounded up when offered).
    let range = Duration::from_millis(1)..=Duration::from_secs(255);
    duration::decimal(v, duration::MILLIS_OR_SECONDS, range).ok_or_else(|| {
        Error::Config(format!(
            "setting `timeout` = {v:?} is not a per-packet timeout between 1ms and 255s; write e.g. `1s`, `500ms` or `2`"
        ))
    })
}

impl Tftp {
    fn remote_name(&self, name: &str) -> Result<String, Error> {
        // A name from the runner is one file name; RFC 1350 filenames are
        // NUL-terminated netascii strings, so NUL can never be sent.
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
            return Err(Error::Config(format!(
                "object name {name:?} is not a plain file name"
            )));
        }
        Ok(if self.remote_dir.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.remote_dir)
        })
    }

    /// The server's address. The runner allows exactly the addresses the
    /// `host` value resolves to (network-host role), so resolving it here
    /// gives one of those.
    fn server(&mut self) -> Result<SocketAddr, Error> {
        if let Some(a) = self.server {
            return Ok(a);
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, self.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::Transient(format!(
                    "cannot resolve the TFTP server `host` = {}: {e}",
                    self.host
                ))
            })?
            .collect();
        // IPv4 first: TFTP servers commonly listen on IPv4 only.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| {
                Error::Transient(format!("`host` = {} resolved to no address", self.host))
            })?;
        self.server = Some(addr);
        Ok(addr)
    }
}

impl Destination for Tftp {
    fn describe() -> PluginInfo {
        PluginInfo::destination(
            "tftp",
            env!("CARGO_PKG_VERSION"),
            "Sends generations to a TFTP server (RFC 1350 with blksize, tsize, timeout and windowsize options); TFTP cannot delete, so rotation there is external",
        )
        .setting(
            Setting::new("host", "TFTP server name or IP address")
                .required()
                .role(SettingRole::NetworkHost),
        )
        .setting(Setting::new("port", "server UDP port").default("69"))
        .setting(
            Setting::new(
                "blksize",
                "block size in bytes, 8..=65464 (RFC 2348); 1468 fills a 1500-byte MTU, 512 sends no option",
            )
            .default("1468"),
        )
        .setting(
            Setting::new(
                "windowsize",
                "blocks sent per acknowledgement (RFC 7440); 1 is classic lockstep; lowered to keep a window within 64 KiB",
            )
            .default("1"),
        )
        .setting(
            Setting::new(
                "timeout",
                "wait for each packet before resending, e.g. 1s or 500ms (offered to the server rounded up to whole seconds)",
            )
            .default("1s"),
        )
        .setting(
            Setting::new(
                "retries",
                "resends of one packet before the transfer fails (as transient)",
            )
            .default("5"),
        )
        .setting(
            Setting::new(
                "remote_dir",
                "directory on the server the files go to (joined with / to the name; it must exist: TFTP cannot create it)",
            )
            .default(""),
        )
    }

    fn configure(s: &Settings) -> Result<Self, Error> {
        let host = s.required("host")?.trim().to_string();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(Error::Config(format!(
                "setting `host` = {host:?} is not a host name or IP address"
            )));
        }
        let port: u16 = s.parse("port")?.unwrap_or(69);
        if port == 0 {
            return Err(Error::Config(
                "setting `port` = 0 is not a port; write 1..=65535 (TFTP's is 69)".into(),
            ));
        }
        let mut opts = Options::default();
        if let Some(b) = s.parse::<u16>("blksize")? {
            opts.blksize = b;
        }
        if let Some(w) = s.parse::<u16>("windowsize")? {
            opts.windowsize = w;
        }
        if let Some(t) = s.get("timeout") {
            opts.timeout = parse_timeout(t)?;
        }
        if let Some(r) = s.parse::<u32>("retries")? {
            opts.retries = r;
        }
        opts.validate()?;
        let remote_dir = s
            .get("remote_dir")
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .to_string();
        if remote_dir.contains('\0') {
            return Err(Error::Config(
                "setting `remote_dir` holds a NUL byte".into(),
            ));
        }
        Ok(Tftp {
            host,
            port,
            remote_dir,
            opts,
            server: None,
        })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        let remote = self.remote_name(&req.name)?;
        let server = self.server()?;
        let mut input = BufReader::with_capacity(READ_BUF, data);
        let r = crate::put_report(server, &remote, &mut input, req.size, &self.opts)?;
        if r.blksize != self.opts.blksize || r.windowsize != self.opts.windowsize {
            log(
                LogLevel::Debug,
                &format!(
                    "{remote}: sent with blksize {} and windowsize {} (asked {} and {}), {} retransmits",
                    r.blksize, r.windowsize, self.opts.blksize, self.opts.windowsize, r.retransmits
                ),
            );
        }
        Ok(())
    }

    fn remove(&mut self, _req: &RemoveRequest) -> Result<(), Error> {
        Err(Error::Unsupported(
            "TFTP has no delete; rotation on this destination is external".into(),
        ))
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let remote = self.remote_name(&req.name)?;
        let server = self.server()?;
        let n = crate::get(server, &remote, sink, &self.opts)?;
        sink.flush()?;
        Ok(Fetched::Streamed(n))
    }

    fn list(&mut self, _prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        Err(Error::Unsupported("TFTP has no directory listing".into()))
    }

    /// RFC 1350 has no way to start a read anywhere but at block 1.
    fn fetch_range(&mut self, req: &RangeRequest, _sink: &mut Writer) -> Result<u64, Error> {
        Err(Error::Unsupported(format!(
            "TFTP (RFC 1350) cannot start a read at byte {} of {}: fetch the whole object",
            req.offset, req.name
        )))
    }
}

export_destination!(Tftp);
