//! `wasi:io` streams over local files, handed to a plugin for one call.
//!
//! Plain blocking reads and writes of a local file are fast enough to do
//! inline; they avoid the extra task and copy of `AsyncReadStream`.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::progress::Progress;

/// The largest chunk handed to a guest per read: bounds the guest's memory
/// per call whatever it asks for.
const MAX_CHUNK: usize = 1 << 20;

pub struct FileInput {
    file: File,
    progress: Progress,
    /// `plugins test`'s interrupted upload: fail the read past this many
    /// bytes, and set the flag when the plugin reached that point.
    cut_after: Option<(u64, Arc<AtomicBool>)>,
    read: u64,
}

impl FileInput {
    pub fn new(file: File, progress: Progress) -> Self {
        FileInput {
            file,
            progress,
            cut_after: None,
            read: 0,
        }
    }

    /// A stream that fails (as a broken connection would) once `n` bytes
    /// were read; `met` turns true when the plugin reads that far.
    pub fn cut_after(mut self, n: u64, met: Arc<AtomicBool>) -> Self {
        self.cut_after = Some((n, met));
        self
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for FileInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let mut size = size.clamp(1, MAX_CHUNK);
        if let Some((cut, met)) = &self.cut_after {
            let cut = *cut;
            let left = cut.saturating_sub(self.read);
            if left == 0 {
                met.store(true, Ordering::Relaxed);
                return Err(StreamError::LastOperationFailed(wasmtime::Error::msg(
                    format!("the stream was cut after {cut} bytes (an interrupted upload)"),
                )));
            }
            size = size.min(left as usize);
        }
        let mut buf = BytesMut::zeroed(size);
        let n = self
            .file
            .read(&mut buf)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))?;
        if n == 0 {
            return Err(StreamError::Closed);
        }
        buf.truncate(n);
        self.read += n as u64;
        self.progress.add(n);
        Ok(buf.freeze())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileInput {
    async fn ready(&mut self) {}
}

/// Writes what a plugin fetches into a local file, counting the bytes.
pub struct FileOutput {
    file: File,
    written: Arc<AtomicU64>,
    progress: Progress,
    /// A ranged fetch: at most this many bytes; a write past it fails, and
    /// the flag tells the host the plugin sent more than it was asked for.
    cap: Option<(u64, Arc<AtomicBool>)>,
}

impl FileOutput {
    pub fn new(file: File, written: Arc<AtomicU64>, progress: Progress) -> Self {
        FileOutput {
            file,
            written,
            progress,
            cap: None,
        }
    }

    /// Like `new`, refusing any byte past the first `limit`; `over` is set
    /// when the plugin tried to write one.
    pub fn capped(
        file: File,
        written: Arc<AtomicU64>,
        progress: Progress,
        limit: u64,
        over: Arc<AtomicBool>,
    ) -> Self {
        FileOutput {
            cap: Some((limit, over)),
            ..Self::new(file, written, progress)
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for FileOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if let Some((limit, over)) = &self.cap
            && self.written.load(Ordering::Relaxed) + bytes.len() as u64 > *limit
        {
            over.store(true, Ordering::Relaxed);
            return Err(StreamError::LastOperationFailed(
                std::io::Error::other(format!("more than the {limit} bytes asked for")).into(),
            ));
        }
        self.file
            .write_all(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))?;
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.progress.add(bytes.len());
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_CHUNK)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileOutput {
    async fn ready(&mut self) {}
}
