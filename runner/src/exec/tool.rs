//! Client tools (`pg_dump`, `pg_basebackup`, `psql`, `pg_restore`) as child
//! processes the runner feeds and drains itself: started in their own
//! process group, killed with the runner and on [`Cancel`], their stderr
//! logged line by line with the last lines kept for the error message.
//!
//! Unlike an operator's program ([`super::run`]), a tool's stdin and stdout
//! carry the backup's data, so they are handed to the caller ([`Spawned`])
//! and copied with [`pump`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context;

use super::cancel::{Cancel, kill_group};
use crate::pipeline;

/// Lines of a tool's stderr kept for the error message.
pub(crate) const STDERR_TAIL_LINES: usize = 50;
const STDERR_LINE_MAX: usize = 1000;

/// A client tool that failed. The message carries its last stderr lines
/// because that is where pg_dump says *why*.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ToolError {
    pub tool: String,
    pub status: String,
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tool, self.status)?;
        if self.stderr_tail.is_empty() {
            write!(f, " and printed nothing on stderr")
        } else {
            write!(f, "; its last stderr lines:")?;
            for l in &self.stderr_tail {
                write!(f, "\n    {l}")?;
            }
            Ok(())
        }
    }
}

/// How to start one client tool.
pub(crate) struct ToolCommand {
    /// Names the tool in logs and errors ("pg_dump", "psql (roles)").
    pub label: String,
    pub command: Command,
    /// Replaced by `***` in every stderr line kept or logged.
    pub secret: Option<String>,
    /// Pipe stdin (else /dev/null).
    pub stdin: bool,
    /// Pipe stdout (else /dev/null).
    pub stdout: bool,
}

impl ToolCommand {
    pub fn new(program: &Path, label: &str) -> ToolCommand {
        ToolCommand {
            label: label.to_string(),
            command: Command::new(program),
            secret: None,
            stdin: false,
            stdout: false,
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.command.arg(a.into());
        self
    }

    /// Starts the tool in its own process group, tied to the runner's
    /// life and to `cancel`, with a thread collecting its stderr.
    pub fn spawn(mut self, cancel: &Cancel) -> anyhow::Result<Spawned> {
        cancel.check()?;
        self.set_up_process();
        let mut child = self.command.spawn().with_context(|| {
            format!(
                "cannot start {} ({})",
                self.label,
                self.command.get_program().to_string_lossy()
            )
        })?;
        tracing::debug!(tool = %self.label, pid = child.id(), "started");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let tail = self.collect_stderr(stderr)?;
        let child = Arc::new(Mutex::new(child));
        cancel.register(&child);
        Ok(Spawned {
            label: self.label,
            child,
            stdin,
            stdout,
            stderr: Some(tail),
            cancel: cancel.clone(),
            done: false,
        })
    }

    /// Pipes, its own process group (so cancelling reaches the workers it
    /// forks; a terminal's Ctrl-C then reaches only the runner, which
    /// cancels), and death with the runner.
    fn set_up_process(&mut self) {
        let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
        let cmd = &mut self.command;
        cmd.stdin(piped(self.stdin));
        cmd.stdout(piped(self.stdout));
        cmd.stderr(Stdio::piped());
        cmd.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The kernel kills the tool when the thread that spawned it
                // dies, which covers a SIGKILLed runner. We spawn and wait
                // on the same thread, so that thread outlives the tool.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other("the runner exited while starting a tool"));
                }
                Ok(())
            });
        }
    }

    /// Reads the tool's stderr on a thread of its own (a full pipe would
    /// block the tool); the receiver yields the kept tail once it closes.
    fn collect_stderr(
        &self,
        stderr: impl Read + Send + 'static,
    ) -> io::Result<mpsc::Receiver<Vec<String>>> {
        let (tx, rx) = mpsc::channel();
        let label = self.label.clone();
        let secret = self.secret.clone();
        std::thread::Builder::new()
            .name(format!("{label}-stderr"))
            .spawn(move || {
                let _ = tx.send(read_stderr(stderr, &label, secret.as_deref()));
            })?;
        Ok(rx)
    }
}

/// A running tool. Dropping it before [`Spawned::wait`] kills it.
pub(crate) struct Spawned {
    pub label: String,
    child: Arc<Mutex<Child>>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    stderr: Option<mpsc::Receiver<Vec<String>>>,
    cancel: Cancel,
    done: bool,
}

impl Spawned {
    /// Closes stdin, waits, and turns anything but exit 0 into a
    /// [`ToolError`]. Returns the stderr lines of a successful run (warnings).
    pub fn wait(mut self) -> Result<Vec<String>, ToolError> {
        drop(self.stdin.take());
        let status = loop {
            let polled = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_wait();
            match polled {
                Ok(Some(s)) => break Ok(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(e),
            }
        };
        self.done = true;
        drop(self.stdout.take());
        // The pipe closes when the tool (and any worker it forked) is gone;
        // do not hang on a stray grandchild holding it.
        let tail = self
            .stderr
            .take()
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
            .unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(tail),
            Ok(s) => Err(ToolError {
                tool: self.label.clone(),
                status: describe_status(s, self.cancel.is_cancelled()),
                stderr_tail: tail,
            }),
            Err(e) => Err(ToolError {
                tool: self.label.clone(),
                status: format!("could not be waited for: {e}"),
                stderr_tail: tail,
            }),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.done {
            drop(self.stdin.take());
            drop(self.stdout.take());
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            kill_group(&mut child);
            let _ = child.wait();
        }
    }
}

fn describe_status(s: ExitStatus, cancelled: bool) -> String {
    if cancelled {
        return "was stopped because the backup was cancelled".to_string();
    }
    if let Some(code) = s.code() {
        return format!("exited with status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended abnormally ({s})"),
    }
}

/// Logs every non-empty stderr line (scrubbed of `secret`, cut at
/// [`STDERR_LINE_MAX`] bytes) and returns the last [`STDERR_TAIL_LINES`].
fn read_stderr(mut r: impl Read, label: &str, secret: Option<&str>) -> Vec<String> {
    let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let push = |bytes: &[u8], tail: &mut VecDeque<String>| {
        let line = String::from_utf8_lossy(bytes);
        let line = scrub(line.trim_end_matches('\r'), secret);
        if line.trim().is_empty() {
            return;
        }
        tracing::info!(tool = %label, "{line}");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                push(&partial, &mut tail);
                partial.clear();
            } else if partial.len() < STDERR_LINE_MAX {
                partial.push(b);
            }
        }
    }
    if !partial.is_empty() {
        push(&partial, &mut tail);
    }
    tail.into()
}

/// Replaces the password wherever it appears (defence in depth: libpq does
/// not print it, but a tool's stderr is not ours to trust).
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 3 => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

/// Copies a tool's stdout into `out` in fixed-size chunks, stopping early on
/// cancellation.
pub(crate) fn pump(
    from: &mut (impl Read + ?Sized),
    out: &mut (impl Write + ?Sized),
    cancel: &Cancel,
) -> io::Result<u64> {
    let mut buf = vec![0u8; pipeline::BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        cancel.check()?;
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}
