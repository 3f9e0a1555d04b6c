//! `[runner]`: where the runner keeps things and the limits plugins run under.

use std::path::PathBuf;
use std::time::Duration;

use super::error::Ctx;
use super::raw::RawRunner;
use crate::limits::{
    self, Limits, PLUGIN_TIMEOUT, SHUTDOWN_GRACE, STALL_TIMEOUT, TRANSFER_TIMEOUT,
};

#[derive(Debug, Clone)]
pub struct Runner {
    pub backup_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
    /// Jobs running at once in the daemon (a backup loads the server).
    pub max_parallel: usize,
    pub plugin_memory: usize,
    pub plugin_timeout: Duration,
    pub transfer_timeout: Duration,
    /// An upload or fetch that moves no byte this long is stopped.
    pub stall_timeout: Duration,
    /// Let plugins write to stdout/stderr.
    pub debug_plugins: bool,
    /// How long `offsite daemon` lets running jobs finish after SIGTERM
    /// before cancelling them (their partial files are removed).
    pub shutdown_grace: Duration,
}

impl Default for Runner {
    fn default() -> Self {
        let limits = Limits::default();
        Runner {
            backup_dir: "/var/backups".into(),
            plugins_dir: "/usr/lib/offsite/plugins".into(),
            state_dir: "/var/lib/offsite".into(),
            log_file: "/var/log/backup.log".into(),
            max_parallel: 1,
            plugin_memory: limits.memory_bytes,
            plugin_timeout: limits.call_timeout,
            transfer_timeout: limits.transfer_timeout,
            stall_timeout: limits.stall_timeout,
            debug_plugins: false,
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

impl Runner {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.plugin_memory,
            call_timeout: self.plugin_timeout,
            transfer_timeout: self.transfer_timeout,
            stall_timeout: self.stall_timeout,
            debug_stdio: self.debug_plugins,
        }
    }

    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.state_dir.join("plugin-cache")
    }
}

pub(super) fn build_runner(cx: &mut Ctx, raw: Option<RawRunner>) -> Runner {
    let mut r = Runner::default();
    let Some(raw) = raw else { return r };
    for (slot, v) in [
        (&mut r.backup_dir, raw.backup_dir),
        (&mut r.plugins_dir, raw.plugins_dir),
        (&mut r.state_dir, raw.state_dir),
        (&mut r.log_file, raw.log_file),
    ] {
        if let Some(v) = v {
            *slot = v.into_inner();
        }
    }
    r.max_parallel = cx.ranged(
        raw.max_parallel.as_ref(),
        "runner.max_parallel",
        1..=256,
        r.max_parallel,
        |_| "must be a whole number from 1 to 256".into(),
    );
    if let Some(m) = raw.plugin_memory {
        match limits::plugin_memory(m.get_ref()) {
            Ok(n) => r.plugin_memory = n,
            Err(e) => cx.at(&m, "runner.plugin_memory", e),
        }
    }
    for (slot, v, range) in [
        (&mut r.plugin_timeout, raw.plugin_timeout, PLUGIN_TIMEOUT),
        (
            &mut r.transfer_timeout,
            raw.transfer_timeout,
            TRANSFER_TIMEOUT,
        ),
        (&mut r.stall_timeout, raw.stall_timeout, STALL_TIMEOUT),
        (&mut r.shutdown_grace, raw.shutdown_grace, SHUTDOWN_GRACE),
    ] {
        if let Some(v) = v {
            match range.parse(v.get_ref()) {
                Ok(d) => *slot = d,
                Err(e) => cx.at(&v, &format!("runner.{}", range.key), e),
            }
        }
    }
    r.debug_plugins = raw.debug_plugins.unwrap_or(false);
    r
}
