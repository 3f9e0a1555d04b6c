//! The `ftp` destination: the WIT glue over this crate's client core.
//!
//! The settings are the core's [`SETTINGS`], declared as they are. The
//! control connection is opened on the instance's first call (`configure`
//! must do no network I/O) and reused by the calls after it, so a
//! generation and its manifest cost one login. A call that fails drops the
//! connection (it may be broken mid-command); the next call logs in again.

use std::io::Write;

use offsite_sdk::*;

use crate::{Client, ErrorKind, SETTINGS, Settings as FtpSettings};

struct Ftp {
    settings: FtpSettings,
    client: Option<Client>,
    /// Temporaries of interrupted uploads were looked for (once per
    /// instance, i.e. per run and destination).
    swept: bool,
}

impl Ftp {
    /// Runs `f` on the logged-in client, connecting first if needed. After
    /// an error other than "no such file" the connection is closed: the
    /// core may have stopped mid-reply, and a fresh login is cheap next to
    /// a transfer on a confused connection.
    fn with_client<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, crate::Error>,
    ) -> Result<T, Error> {
        if self.client.is_none() {
            let trace: crate::Trace = Box::new(|line: &str| log(LogLevel::Debug, line));
            let c = Client::connect_traced(&self.settings, Some(trace))?;
            self.client = Some(c);
        }
        let client = self.client.as_mut().expect("connected above");
        match f(client) {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.kind != ErrorKind::NotFound
                    && let Some(c) = self.client.take()
                {
                    c.quit();
                }
                Err(e.into())
            }
        }
    }
}

impl Destination for Ftp {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::destination(
            "ftp",
            env!("CARGO_PKG_VERSION"),
            "Sends generations to an FTP server (RFC 959, passive mode), optionally over explicit FTPS (RFC 4217)",
        );
        for s in SETTINGS {
            let mut setting = Setting::new(s.key, s.description);
            if s.required {
                setting = setting.required();
            }
            if s.secret {
                setting = setting.secret();
            }
            if let Some(d) = s.default {
                setting = setting.default(d);
            }
            if s.endpoint {
                setting = setting.role(SettingRole::NetworkHost);
            }
            info = info.setting(setting);
        }
        info
    }

    fn configure(s: &offsite_sdk::Settings) -> Result<Self, Error> {
        // The runner passes declared keys only; empty values mean "not set".
        let pairs = SETTINGS
            .iter()
            .filter_map(|i| s.get(i.key).map(|v| (i.key, v)));
        let settings = FtpSettings::from_pairs(pairs)?;
        if !settings.passive {
            // Active mode has the server connect back to a port the client
            // listens on; the plugin sandbox lets no plugin accept connections.
            return Err(Error::Config(
                "setting `passive` = false (active FTP) needs the server to connect back to the plugin, \
                 which the plugin sandbox does not allow; use passive = true (the default)"
                    .into(),
            ));
        }
        Ok(Ftp {
            settings,
            client: None,
            swept: false,
        })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        if !self.swept {
            self.swept = true;
            let job = req.job.clone();
            match self.with_client(|c| c.remove_temporaries(&|n| is_generation_of(&job, n))) {
                Ok(gone) if !gone.is_empty() => warn(&format!(
                    "removed {} left by an interrupted upload",
                    gone.join(", ")
                )),
                Ok(_) => {}
                // No login or no connection: the upload would fail the
                // same way, so say it once (a wrong password logs in once).
                Err(e @ (Error::Config(_) | Error::Transient(_))) => {
                    self.swept = false;
                    return Err(e);
                }
                Err(e) => warn(&format!(
                    "could not look for temporaries of interrupted uploads: {e:?}"
                )),
            }
        }
        self.with_client(|c| c.upload(&req.name, data, req.size))
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        self.with_client(|c| c.remove(&req.name))
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let n = self.with_client(|c| c.fetch(&req.name, sink))?;
        sink.flush()?;
        Ok(Fetched::Streamed(n))
    }

    fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> {
        self.with_client(|c| c.fetch_range(&req.name, req.offset, req.length, sink))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let entries = self.with_client(|c| c.list(prefix))?;
        Ok(entries
            .into_iter()
            .map(|e| ObjectInfo {
                name: e.name,
                size: e.size,
                modified: e.modified,
            })
            .collect())
    }
}

export_destination!(Ftp);
