//! Child processes, in the two kinds the runner starts:
//!
//! - an operator's program ([`run`]): plugin `exec` (shell-compat) and job
//!   hooks (before/after/complete) share it, so both get the same
//!   guarantees — no shell in between (argv exactly as given), a minimal
//!   environment, every output line in the log, and a timeout after which
//!   the program and all its children (its process group) are killed;
//! - a client tool whose stdin/stdout carry backup data ([`ToolCommand`],
//!   in `tool.rs`), stopped through a [`Cancel`] (`cancel.rs`): the dumps,
//!   the restores and the file-tree walk use these.

mod cancel;
mod tool;

pub(crate) use cancel::Cancel;
#[cfg(test)]
pub(crate) use tool::STDERR_TAIL_LINES;
pub use tool::ToolError;
pub(crate) use tool::{ToolCommand, pump, scrub};

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Program<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
    /// Added to `PATH`; nothing else of the runner's environment passes.
    pub env: &'a [(&'a str, String)],
    pub cwd: &'a Path,
    pub timeout: Duration,
    /// Which setting sets the timeout, for the message when it fires.
    pub timeout_setting: &'a str,
}

#[derive(Debug)]
pub enum ExecError {
    /// Killed with its children at the timeout.
    TimedOut(String),
    /// Could not be started or waited for.
    Failed(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::TimedOut(m) | ExecError::Failed(m) => f.write_str(m),
        }
    }
}

/// Run to completion; the exit code (128 + signal when killed by one).
pub async fn run(who: &str, p: &Program<'_>) -> Result<i32, ExecError> {
    let name = p
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = tokio::process::Command::new(p.path);
    cmd.args(p.args)
        .env_clear()
        .env("PATH", PATH)
        .envs(p.env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecError::Failed(format!("cannot start {}: {e}", p.path.display())))?;
    // If this future is dropped (the caller's own time limit, a cancelled
    // run), the whole process group goes, not only the direct child.
    let mut group = GroupGuard(child.id());
    let pid = child.id();
    tracing::info!("{who}: running {} {:?}", p.path.display(), p.args);
    let out = log_lines(who, &name, child.stdout.take());
    let err = log_lines(who, &name, child.stderr.take());
    let waited = tokio::time::timeout(p.timeout, async {
        let (status, _, _) = tokio::join!(child.wait(), out, err);
        status
    })
    .await;
    match waited {
        Ok(Ok(status)) => {
            group.0 = None;
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            tracing::info!("{who}: `{name}` exited with {code}");
            Ok(code)
        }
        Ok(Err(e)) => {
            let _ = pid;
            Err(ExecError::Failed(format!("waiting for `{name}`: {e}")))
        }
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            let msg = format!(
                "`{name}` was killed with its children after its timeout of {} ({})",
                crate::duration::format(p.timeout),
                p.timeout_setting
            );
            tracing::warn!("{who}: {msg}");
            Err(ExecError::TimedOut(msg))
        }
    }
}

/// Kills a program's process group when dropped, unless disarmed (`.0 = None`).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: killpg only sends a signal; the group is the child's
            // own (process_group(0) at spawn).
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

async fn log_lines(who: &str, name: &str, pipe: Option<impl AsyncRead + Unpin>) {
    let Some(pipe) = pipe else { return };
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!("{who}: {name}: {line}");
    }
}
