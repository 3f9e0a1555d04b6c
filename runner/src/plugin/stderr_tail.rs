//! The end of what a plugin writes to stderr, kept (not shown) so that a
//! crash message can carry its cause: a Rust panic's message, a Python
//! traceback's last line. With `debug_plugins` stderr is shown instead.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept: enough for a panic message or a traceback's end.
const KEEP: usize = 8 << 10;

#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(bytes);
        let over = q.len().saturating_sub(KEEP);
        q.drain(..over);
    }

    fn text(&self) -> String {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&q.iter().copied().collect::<Vec<u8>>()).into_owned()
    }

    /// The cause of a crash as the plugin's language wrote it, on one line:
    /// `panicked at src/lib.rs:56:13: MESSAGE` for Rust, the traceback's
    /// last line (`ValueError: ...`) for Python; `None` when it wrote nothing.
    pub fn cause(&self) -> Option<String> {
        cause_of(&self.text())
    }
}

fn cause_of(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    // A Python traceback (componentize-py): its last frame and the
    // exception line, before the runtime's own panic about it.
    if let Some(t) = lines
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last)"))
    {
        let exception = lines[t + 1..]
            .iter()
            .find(|l| !l.is_empty() && !l.starts_with(' '));
        if let Some(exception) = exception {
            return Some(exception.chars().take(500).collect());
        }
    }
    if let Some(i) = lines.iter().rposition(|l| l.contains(" panicked at ")) {
        let at = lines[i].split(" panicked at ").nth(1).unwrap_or("");
        let message: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace"))
            .copied()
            .collect();
        return Some(
            format!("panicked at {at} {}", message.join(" "))
                .trim()
                .to_string(),
        );
    }
    let last = lines.iter().rev().find(|l| !l.trim().is_empty())?;
    let line: String = last.trim().chars().take(500).collect();
    Some(line)
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_gives_its_place_and_message() {
        let t = "\nthread '<unnamed>' panicked at src/lib.rs:56:13:\ncareless: on purpose\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            cause_of(t).as_deref(),
            Some("panicked at src/lib.rs:56:13: careless: on purpose")
        );
    }

    #[test]
    fn a_python_traceback_beats_the_runtimes_panic_about_it() {
        let t = "Traceback (most recent call last):\n  File \"/0/app.py\", line 156, in upload\n  File \"/0/app.py\", line 78, in path\nAttributeError: 'DestinationApi' object has no attribute 'url'\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            cause_of(t).as_deref(),
            Some("AttributeError: 'DestinationApi' object has no attribute 'url'")
        );
    }

    #[test]
    fn a_python_traceback_gives_its_last_line() {
        let t = "Traceback (most recent call last):\n  File \"app.py\", line 3, in upload\nValueError: bad url\n\n";
        assert_eq!(cause_of(t).as_deref(), Some("ValueError: bad url"));
        assert_eq!(cause_of(""), None);
    }

    #[test]
    fn only_the_tail_is_kept() {
        let t = StderrTail::default();
        t.push(&vec![b'x'; 3 * KEEP]);
        t.push(b"\nthe end");
        assert_eq!(t.text().len(), KEEP);
        assert_eq!(t.cause().as_deref(), Some("the end"));
    }
}
