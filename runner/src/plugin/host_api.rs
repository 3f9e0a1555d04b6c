//! The per-instance state a plugin runs in, and the `host` interface it imports
//! (`log`, `exec`).

use std::os::unix::fs::PermissionsExt;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{host_api, wit};
use super::sandbox::{CallContext, ExecGrant, HttpPolicy, Refusals};

/// Everything one plugin instance's Store owns. One per (job, destination)
/// or per call, never shared: a trap poisons the whole Store.
pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: HttpPolicy,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) ctx: CallContext,
    pub(crate) exec: Option<ExecGrant>,
    pub(crate) refusals: Refusals,
    /// Secret setting values, scrubbed from everything the plugin logs.
    pub(crate) secrets: Vec<String>,
    /// The local file of the call in progress, for `OFFSITE_FILE`.
    pub(crate) current_file: Option<String>,
    /// Bytes moved by this instance's transfers (file streams, HTTP bodies).
    pub(crate) progress: super::progress::Progress,
    /// When the call in progress must have returned.
    pub(crate) deadline: Option<std::time::Instant>,
    /// What the plugin logged as warnings or errors, until taken.
    pub(crate) warnings: Vec<String>,
    /// The end of its stderr, for the cause of a crash.
    pub(crate) stderr: super::stderr_tail::StderrTail,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps linear memory. A refused growth traps the guest (rather than
/// letting `malloc` return null deep inside a library) and is remembered so
/// the error can say what was asked for.
pub struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    pub(crate) exceeded: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = Some(desired);
            return Err(wasmtime::format_err!(
                "memory limit: asked for {desired} bytes, the limit is {} bytes",
                self.max_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl State {
    pub(crate) fn scrub(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "********");
        }
        out
    }
}

impl wit::Host for State {}

impl host_api::Host for State {
    async fn log(&mut self, level: host_api::LogLevel, message: String) -> wasmtime::Result<()> {
        let msg = self.scrub(&message);
        let who = self.ctx.label();
        let warning = match level {
            host_api::LogLevel::Error => {
                tracing::error!("{who}: {msg}");
                true
            }
            host_api::LogLevel::Warn => {
                tracing::warn!("{who}: {msg}");
                true
            }
            host_api::LogLevel::Info => {
                tracing::info!("{who}: {msg}");
                false
            }
            host_api::LogLevel::Debug => {
                tracing::debug!("{who}: {msg}");
                false
            }
        };
        if warning && self.warnings.len() < 100 {
            self.warnings.push(msg);
        }
        Ok(())
    }

    async fn exec(
        &mut self,
        program: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<i32, wit::Error>> {
        let who = self.ctx.label();
        let Some(grant) = self.exec.clone() else {
            let msg = format!(
                "sandbox: {who} was refused exec of `{program}`: it has no exec-directory setting, so it may run no programs"
            );
            self.refusals.record(msg.clone());
            return Ok(Err(wit::Error::Config(msg)));
        };
        let path = match check_program(&grant, &program) {
            Ok(p) => p,
            Err(e) => {
                if let wit::Error::Config(m) = &e {
                    self.refusals.record(format!("sandbox: {who}: {m}"));
                }
                return Ok(Err(e));
            }
        };
        let env = [
            ("OFFSITE_JOB", self.ctx.job.clone().unwrap_or_default()),
            ("OFFSITE_DESTINATION", self.ctx.instance.clone()),
            (
                "OFFSITE_FILE",
                self.current_file.clone().unwrap_or_default(),
            ),
        ];
        let program = crate::exec::Program {
            path: &path,
            args: &args,
            env: &env,
            cwd: &grant.dir,
            timeout: grant.timeout,
            timeout_setting: "setting `timeout`",
        };
        Ok(match crate::exec::run(&who, &program).await {
            Ok(code) => Ok(code),
            Err(crate::exec::ExecError::TimedOut(m)) => Err(wit::Error::Transient(m)),
            Err(crate::exec::ExecError::Failed(m)) => Err(wit::Error::Other(m)),
        })
    }
}

/// `program` must be a bare file name that resolves, after following
/// symlinks, to an executable file directly inside the granted directory.
fn check_program(grant: &ExecGrant, program: &str) -> Result<std::path::PathBuf, wit::Error> {
    let dir = grant.dir.display();
    if program.is_empty() || program.contains('/') || program == "." || program == ".." {
        return Err(wit::Error::Config(format!(
            "refused exec of `{program}`: only a file name directly inside `{}` = {dir} may run",
            grant.key
        )));
    }
    let path = grant.dir.join(program);
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(wit::Error::NotFound(format!(
            "no program `{program}` in `{}` = {dir}",
            grant.key
        )));
    }
    let real = std::fs::canonicalize(&path)
        .map_err(|e| wit::Error::NotFound(format!("`{program}` in {dir}: {e}")))?;
    if real.parent() != Some(grant.dir.as_path()) {
        return Err(wit::Error::Config(format!(
            "refused exec of `{program}`: it resolves to {}, outside `{}` = {dir}",
            real.display(),
            grant.key
        )));
    }
    let meta = std::fs::metadata(&real)
        .map_err(|e| wit::Error::NotFound(format!("`{program}` in {dir}: {e}")))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(wit::Error::Config(format!(
            "`{program}` in {dir} is not an executable file (chmod +x it)"
        )));
    }
    Ok(real)
}
