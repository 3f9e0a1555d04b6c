//! A ranged read: one byte range of an object, through the plugin's
//! `fetch-range` (`offsite:plugin@0.2.0`), checked to be exactly the bytes
//! asked for. Used to read one member of an archive volume without fetching
//! the volume.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynOutputStream;

// `watched!` names `Duration`, `arm` and `watch` where it is used.
use super::{DestinationSession, arm, create_target, sync_target, table_error, watch};
use crate::plugin::bindings_v0_2::RangeRequest;
use crate::plugin::error::{ErrorKind, PluginError};
use crate::plugin::streams::FileOutput;

impl DestinationSession {
    /// Fetch bytes `offset .. offset + len` of `name` (of job `job`) into
    /// `to` (created or truncated, synced before returning). Returns `len`:
    /// on `Ok` every byte of the range arrived, no more and no fewer.
    ///
    /// Runs under the same limits as `fetch`: `[runner] transfer_timeout`,
    /// `stall_timeout` (no byte moved for that long), `plugin_memory`.
    /// `len == 0` returns `Ok(0)` with `to` empty and no plugin call.
    ///
    /// Errors, by [`PluginError::kind`]:
    /// - `Unsupported`: the plugin is built against `offsite:plugin@0.1.0`
    ///   (no `fetch-range`), or it answered `unsupported` (TFTP; an FTP
    ///   server without `REST`; an HTTP server that ignores `Range`): fetch
    ///   the whole object with [`fetch`](Self::fetch) instead.
    /// - `Other`: the plugin delivered fewer bytes than `len` (the message
    ///   names offset, length and bytes received: the object is shorter
    ///   than `offset + len`, or the transfer was cut), or tried to write
    ///   more than `len`; also the plugin's own `other` answers.
    /// - the plugin's answers `NotFound`, `Transient` (retry), `Rejected`,
    ///   `Config`;
    /// - the host's verdicts `Timeout`, `Stalled`, `MemoryLimit`,
    ///   `Crashed` (the session is then unusable), `Host` (local file I/O).
    ///
    /// On any error `to` is removed: a partial range is never left behind.
    pub async fn fetch_range(
        &mut self,
        name: &str,
        job: &str,
        offset: u64,
        len: u64,
        to: &Path,
    ) -> Result<u64, PluginError> {
        if !self.bindings.contract().has_fetch_range() {
            return Err(PluginError::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: plugin `{}` is built against offsite:plugin@{}, which has no fetch-range; fetch the whole object",
                    self.label(),
                    self.plugin.info.name,
                    self.bindings.contract().as_str()
                ),
            ));
        }
        if offset.checked_add(len).is_none() {
            return Err(PluginError::new(
                ErrorKind::Other,
                format!(
                    "{}: the range {offset} + {len} of {name} overflows",
                    self.label()
                ),
            ));
        }
        let req = RangeRequest {
            name: name.to_string(),
            job: job.to_string(),
            offset,
            length: len,
        };
        let r = self.fetch_range_into(&req, to).await;
        if r.is_err() {
            let _ = std::fs::remove_file(to);
        }
        r
    }

    async fn fetch_range_into(
        &mut self,
        req: &RangeRequest,
        to: &Path,
    ) -> Result<u64, PluginError> {
        let (name, offset, len) = (&req.name, req.offset, req.length);
        let (file, keep) = create_target(to)?;
        if len == 0 {
            return Ok(0);
        }
        let written = Arc::new(AtomicU64::new(0));
        let over = Arc::new(AtomicBool::new(false));
        let progress = self.store.data().progress.clone();
        let stream: DynOutputStream = Box::new(FileOutput::capped(
            file,
            written.clone(),
            progress,
            len,
            over.clone(),
        ));
        let res = self.table().push(stream).map_err(table_error)?;
        self.store.data_mut().current_file = Some(to.display().to_string());
        let borrow = Resource::new_borrow(res.rep());
        let r = watched!(self, "fetch-range", |b, st| b
            .offsite_plugin_destination_api()
            .call_fetch_range(st, req, borrow));
        self.store.data_mut().current_file = None;
        let _ = self.table().delete(res);
        let received = written.load(Ordering::Relaxed);
        let what = format!(
            "{}: fetch-range of {name} (offset {offset}, length {len})",
            self.label()
        );
        if over.load(Ordering::Relaxed) {
            return Err(PluginError::new(
                ErrorKind::Other,
                format!("{what}: the plugin sent more than the {len} bytes asked for"),
            ));
        }
        let claimed = r?;
        if claimed != received {
            return Err(PluginError::new(
                ErrorKind::Other,
                format!("{what}: the plugin claimed {claimed} bytes but wrote {received}"),
            ));
        }
        if received != len {
            return Err(PluginError::new(
                ErrorKind::Other,
                format!(
                    "{what}: received {received} bytes, {} short; the object ends before byte {} or the transfer was cut",
                    len - received,
                    offset + len
                ),
            ));
        }
        sync_target(&keep, to)?;
        Ok(len)
    }
}
