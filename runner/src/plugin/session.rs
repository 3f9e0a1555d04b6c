//! A configured plugin instance and its calls, each under the memory cap and
//! a time limit (an epoch deadline for guest code plus a tokio timeout, since
//! epochs do not interrupt a guest waiting inside a host call).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi_http::WasiHttpCtx;

use super::bindings::wit;
use super::error::{ErrorKind, PluginError};
use super::host::{LoadedPlugin, PluginHost, Pre, first_line};
use super::host_api::{MemoryLimiter, State};
use super::progress::{Progress, Stopped, watch};
use super::sandbox::{CallContext, Grants, Refusals};
use super::settings::ResolvedSettings;
use super::stderr_tail::StderrTail;
use super::streams::{FileInput, FileOutput};
use super::versioned::{DestinationBindings, DestinationPre, NotifierBindings, NotifierPre};

/// A configured instance of one plugin, for one (job, destination) or one
/// notifier. After a trap or timeout it refuses further calls: open a new one.
pub struct Session<B> {
    store: Store<State>,
    bindings: B,
    plugin: Arc<LoadedPlugin>,
    limits: super::Limits,
    /// Directories the sandbox granted (local-dir's `path`).
    dirs: Vec<std::path::PathBuf>,
    poisoned: Option<String>,
}

pub type DestinationSession = Session<DestinationBindings>;
pub type NotifierSession = Session<NotifierBindings>;

/// What the runner knows about a generation it hands to `upload`.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    pub name: &'a str,
    pub local_path: &'a Path,
    pub size: u64,
    pub sha256: &'a str,
    pub job: &'a str,
}

fn new_store(
    host: &PluginHost,
    grants: &Grants,
    ctx: CallContext,
    secrets: Vec<String>,
) -> Result<Store<State>, PluginError> {
    let refusals = Refusals::default();
    let progress = Progress::default();
    let stderr = StderrTail::default();
    let wasi = grants.wasi_ctx(&ctx, &refusals, host.limits.debug_stdio, &stderr)?;
    let hooks = grants.http_hooks(&ctx, &refusals, &progress, host.limits.transfer_timeout);
    let mut store = Store::new(
        &host.engine,
        State {
            wasi,
            http: WasiHttpCtx::new(),
            hooks,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: host.limits.memory_bytes,
                exceeded: None,
            },
            ctx,
            exec: grants.exec.clone(),
            refusals,
            secrets,
            current_file: None,
            progress,
            deadline: None,
            warnings: vec![],
            stderr,
        },
    );
    store.limiter(|s| &mut s.limiter);
    // Checked on every epoch tick against the wall clock, so a limit holds
    // to the tick however loaded the machine is (counting ticks drifts).
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(1))
    });
    Ok(store)
}

/// Start the clock of one call.
fn arm(store: &mut Store<State>, limit: Duration) {
    store.data_mut().deadline = Some(Instant::now() + limit);
    store.set_epoch_deadline(1);
}

/// Run one guest call under both limits. A macro because the call borrows
/// the bindings and the store at once.
macro_rules! guarded {
    ($self:ident, $call:expr, $limit:expr, |$b:ident, $s:ident| $body:expr) => {{
        $self.usable($call)?;
        let limit: Duration = $limit;
        arm(&mut $self.store, limit);
        let $b = &$self.bindings;
        let $s = &mut $self.store;
        let r = tokio::time::timeout(limit, $body)
            .await
            .map_err(|_| Stopped::Limit);
        $self.settle($call, limit, r)
    }};
}

/// Like `guarded!`, for upload and fetch: also stopped once no byte has
/// moved for `stall_timeout` (a hung server), however long it has run.
macro_rules! watched {
    ($self:ident, $call:expr, |$b:ident, $s:ident| $body:expr) => {{
        $self.usable($call)?;
        let limit: Duration = $self.limits.transfer_timeout;
        let stall: Duration = $self.limits.stall_timeout;
        let progress = $self.store.data().progress.clone();
        arm(&mut $self.store, limit);
        let $b = &$self.bindings;
        let $s = &mut $self.store;
        let r = watch($body, limit, stall, &progress).await;
        $self.settle($call, limit, r)
    }};
}

// `fetch_range`: in its own file, with the macros above in scope.
mod range;

impl<B> Session<B> {
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    fn label(&self) -> String {
        self.store.data().ctx.label()
    }

    fn usable(&self, call: &str) -> Result<(), PluginError> {
        match &self.poisoned {
            Some(why) => Err(PluginError::new(
                ErrorKind::Crashed,
                format!(
                    "{}: not calling {call}: this instance already failed ({why})",
                    self.label()
                ),
            )),
            None => Ok(()),
        }
    }

    fn settle<T>(
        &mut self,
        call: &str,
        limit: Duration,
        r: Result<wasmtime::Result<Result<T, wit::Error>>, Stopped>,
    ) -> Result<T, PluginError> {
        let label = self.label();
        let refusals = self.store.data().refusals.take();
        // A plugin may echo a server reply that carries a credential: its
        // errors end up in logs, manifests and `list`, so mask its secrets.
        let result = self.settle_unscrubbed(call, limit, r, &label, refusals);
        result.map_err(|mut e| {
            e.message = self.store.data().scrub(&e.message);
            e
        })
    }

    fn settle_unscrubbed<T>(
        &mut self,
        call: &str,
        limit: Duration,
        r: Result<wasmtime::Result<Result<T, wit::Error>>, Stopped>,
        label: &str,
        refusals: Vec<String>,
    ) -> Result<T, PluginError> {
        let with_refusals = |mut e: PluginError| {
            let new: Vec<&String> = refusals
                .iter()
                .filter(|r| !e.message.contains(r.trim_start_matches("sandbox: ")))
                .collect();
            if !new.is_empty() {
                let joined: Vec<&str> = new.iter().map(|s| s.as_str()).collect();
                e.message = format!("{} ({})", e.message, joined.join("; "));
            }
            e
        };
        let timeout = || {
            PluginError::new(
                ErrorKind::Timeout,
                format!(
                    "{label} was stopped: {call} ran past its time limit of {} ([runner] {})",
                    crate::duration::format(limit),
                    if matches!(call, "upload" | "fetch" | "fetch-range") {
                        "transfer_timeout"
                    } else {
                        "plugin_timeout"
                    }
                ),
            )
        };
        match r {
            Err(Stopped::Stall { moved, after }) => {
                let e = PluginError::new(
                    ErrorKind::Stalled,
                    format!(
                        "{label} was stopped: {call} moved no data for {} ([runner] stall_timeout) after {moved} bytes in {:.0} s; the server stopped answering",
                        crate::duration::format(self.limits.stall_timeout),
                        after.as_secs_f64()
                    ),
                );
                self.poisoned = Some(e.message.clone());
                Err(with_refusals(e))
            }
            Err(Stopped::Limit) => {
                let e = timeout();
                self.poisoned = Some(e.message.clone());
                Err(with_refusals(e))
            }
            Ok(Err(trap)) => {
                let limiter = &self.store.data().limiter;
                let e = if let Some(asked) = limiter.exceeded {
                    PluginError::new(
                        ErrorKind::MemoryLimit,
                        format!(
                            "{label} was stopped in {call}: it asked for {asked} bytes of memory, over its limit of {} bytes ([runner] plugin_memory)",
                            limiter.max_bytes
                        ),
                    )
                } else if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
                {
                    timeout()
                } else {
                    let why = match self.store.data().stderr.cause() {
                        Some(cause) => format!("{cause} ({})", first_line(&trap)),
                        None => first_line(&trap),
                    };
                    PluginError::new(
                        ErrorKind::Crashed,
                        format!("{label} crashed in {call}: {why}"),
                    )
                };
                self.poisoned = Some(e.message.clone());
                Err(with_refusals(e))
            }
            Ok(Ok(Err(e))) => Err(with_refusals(PluginError::from_wit(
                &self.plugin.info.name,
                call,
                e,
            ))),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}

/// `describe()` in a throwaway instance with no grants at all.
pub(crate) async fn describe(
    host: &PluginHost,
    plugin: &LoadedPlugin,
) -> Result<wit::PluginInfo, PluginError> {
    let ctx = CallContext {
        plugin: plugin
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Default::default()
    };
    let grants = Grants::none();
    let mut store = new_store(host, &grants, ctx, vec![])?;
    let limit = host.limits.call_timeout;
    arm(&mut store, limit);
    let run = async {
        match &plugin.pre {
            Pre::Destination(pre) => {
                let b = pre.instantiate_async(&mut store).await?;
                b.offsite_plugin_destination_api()
                    .call_describe(&mut store)
                    .await
            }
            Pre::Notifier(pre) => {
                let b = pre.instantiate_async(&mut store).await?;
                b.offsite_plugin_notifier_api()
                    .call_describe(&mut store)
                    .await
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => Err(PluginError::new(ErrorKind::Crashed, first_line(&e))),
        Err(_) => Err(PluginError::new(
            ErrorKind::Timeout,
            format!("did not answer within {}", crate::duration::format(limit)),
        )),
    }
}

async fn prepare(
    host: &PluginHost,
    settings: &ResolvedSettings,
    ctx: CallContext,
) -> Result<(Store<State>, super::Limits, Vec<std::path::PathBuf>), PluginError> {
    let grants = Grants::from_settings(settings, &ctx).await?;
    let mut store = new_store(host, &grants, ctx, settings.secret_values())?;
    arm(&mut store, host.limits.call_timeout);
    Ok((
        store,
        limits_for(&host.limits, &grants),
        grants.dirs.clone(),
    ))
}

/// A plugin that runs operator programs gets at least the programs' own
/// `timeout` (plus a margin) per call, so that setting decides when a
/// script is killed, not the runner's generic call limit.
fn limits_for(base: &super::Limits, grants: &Grants) -> super::Limits {
    let mut l = base.clone();
    if let Some(exec) = &grants.exec {
        let floor = exec.timeout + Duration::from_secs(60);
        l.call_timeout = l.call_timeout.max(floor);
        l.transfer_timeout = l.transfer_timeout.max(floor);
        // A script moves its bytes itself, unseen by the host: its own
        // `timeout` bounds it, not the stall watch.
        l.stall_timeout = l.stall_timeout.max(floor);
    }
    l
}

fn instantiate_failed(label: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::Crashed, format!("{label} failed to start: {e}"))
}

/// What differs between a destination and a notifier session: where the
/// linked plugin sits in [`Pre`], how it is instantiated and configured.
pub(crate) trait Kind: Sized + Send {
    /// The linked, ready-to-instantiate plugin.
    type Pre: Sync;
    /// This world, and the other one, as named in errors.
    const WORLD: &'static str;
    const OTHER: &'static str;
    #[doc(hidden)]
    fn pre(pre: &Pre) -> Option<&Self::Pre>;
    #[doc(hidden)]
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<State>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
    #[doc(hidden)]
    fn configure(
        &self,
        store: &mut Store<State>,
        pairs: &[(String, String)],
    ) -> impl Future<Output = wasmtime::Result<Result<(), wit::Error>>> + Send;
}

/// `Kind` for the bindings of one world: `Pre::$variant` holds its linked
/// plugin, `$api` its exports.
macro_rules! kind {
    ($bindings:ident, $pre:ident, $variant:ident, $world:literal, $other:literal, $api:ident) => {
        impl Kind for $bindings {
            type Pre = $pre;
            const WORLD: &'static str = $world;
            const OTHER: &'static str = $other;
            fn pre(pre: &Pre) -> Option<&$pre> {
                match pre {
                    Pre::$variant(p) => Some(p),
                    _ => None,
                }
            }
            async fn instantiate(pre: &$pre, store: &mut Store<State>) -> wasmtime::Result<Self> {
                pre.instantiate_async(store).await
            }
            async fn configure(
                &self,
                store: &mut Store<State>,
                pairs: &[(String, String)],
            ) -> wasmtime::Result<Result<(), wit::Error>> {
                self.$api().call_configure(store, pairs).await
            }
        }
    };
}

kind!(
    DestinationBindings,
    DestinationPre,
    Destination,
    "destination",
    "notifier",
    offsite_plugin_destination_api
);
kind!(
    NotifierBindings,
    NotifierPre,
    Notifier,
    "notifier",
    "destination",
    offsite_plugin_notifier_api
);

// `Kind` stays crate-internal (it names the linked plugin types); callers
// outside see only `DestinationSession::open` and `NotifierSession::open`.
#[allow(private_bounds)]
impl<B: Kind> Session<B> {
    /// Instantiate with the sandbox its settings grant, and `configure`.
    /// A plugin of the other world is refused (`Config`); one that does not
    /// start within `[runner] plugin_timeout` is `Crashed`.
    pub async fn open(
        host: &PluginHost,
        plugin: Arc<LoadedPlugin>,
        settings: &ResolvedSettings,
        ctx: CallContext,
    ) -> Result<Self, PluginError> {
        let Some(pre) = B::pre(&plugin.pre) else {
            return Err(PluginError::new(
                ErrorKind::Config,
                format!(
                    "plugin `{}` is a {}, not a {}",
                    plugin.info.name,
                    B::OTHER,
                    B::WORLD
                ),
            ));
        };
        let label = ctx.label();
        let (mut store, limits, dirs) = prepare(host, settings, ctx).await?;
        let bindings =
            tokio::time::timeout(host.limits.call_timeout, B::instantiate(pre, &mut store))
                .await
                .map_err(|_| instantiate_failed(&label, "timed out"))?
                .map_err(|e| instantiate_failed(&label, first_line(&e)))?;
        let mut s = Session {
            store,
            bindings,
            plugin: plugin.clone(),
            limits,
            dirs,
            poisoned: None,
        };
        let pairs = settings.pairs();
        guarded!(s, "configure", s.limits.call_timeout, |b, st| b
            .configure(st, &pairs))?;
        Ok(s)
    }
}

impl DestinationSession {
    /// Stream a local file to the destination.
    pub async fn upload(&mut self, up: &Upload<'_>) -> Result<(), PluginError> {
        self.upload_stream(up, None).await
    }

    /// Like [`Self::upload`], with the stream failing after `cut` bytes
    /// (`plugins test` checks a plugin leaves nothing under the name).
    /// Also returns whether the plugin read that far: one that uploads from
    /// `local_path` (shell-compat) never meets the cut.
    pub async fn upload_cut(
        &mut self,
        up: &Upload<'_>,
        cut: u64,
    ) -> (Result<(), PluginError>, bool) {
        let met = Arc::new(AtomicBool::new(false));
        let r = self.upload_stream(up, Some((cut, met.clone()))).await;
        (r, met.load(Ordering::Relaxed))
    }

    async fn upload_stream(
        &mut self,
        up: &Upload<'_>,
        cut: Option<(u64, Arc<AtomicBool>)>,
    ) -> Result<(), PluginError> {
        let file = std::fs::File::open(up.local_path).map_err(|e| {
            PluginError::host(format!("cannot open {}: {e}", up.local_path.display()))
        })?;
        let progress = self.store.data().progress.clone();
        let input = FileInput::new(file, progress);
        let input = match cut {
            Some((n, met)) => input.cut_after(n, met),
            None => input,
        };
        let stream: DynInputStream = Box::new(input);
        let res = self.table().push(stream).map_err(table_error)?;
        self.store.data_mut().current_file = Some(up.local_path.display().to_string());
        let req = wit::UploadRequest {
            name: up.name.to_string(),
            size: up.size,
            sha256: up.sha256.to_string(),
            job: up.job.to_string(),
            local_path: up.local_path.display().to_string(),
        };
        let borrow = Resource::new_borrow(res.rep());
        let r = watched!(self, "upload", |b, st| b
            .offsite_plugin_destination_api()
            .call_upload(st, &req, borrow));
        self.store.data_mut().current_file = None;
        let _ = self.table().delete(res);
        match r {
            Ok(()) => {
                self.no_wider_than_local(up);
                Ok(())
            }
            Err(mut e) => {
                if let Some(full) = self.full_dir(up.size) {
                    e.message = format!("{}: {full}: {}", self.label(), e.message);
                }
                Err(e)
            }
        }
    }

    /// A copy the plugin wrote into a granted directory must not be more
    /// readable than the local generation (0600): WASI cannot set modes, so
    /// the host narrows them after the upload.
    fn no_wider_than_local(&self, up: &Upload<'_>) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(local) = std::fs::metadata(up.local_path) else {
            return;
        };
        let allowed = local.permissions().mode() & 0o777;
        for dir in &self.dirs {
            let copy = dir.join(up.name);
            let Ok(meta) = std::fs::symlink_metadata(&copy) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_file() && mode & !allowed != 0 {
                let narrowed = std::fs::Permissions::from_mode(mode & allowed);
                if let Err(e) = std::fs::set_permissions(&copy, narrowed) {
                    tracing::warn!(
                        "{}: cannot make {} private like the local generation: {e}",
                        self.label(),
                        copy.display()
                    );
                }
            }
        }
    }

    /// After a failed upload: a granted directory without room for `size`
    /// bytes, described (the plugin only sees a bare I/O error).
    fn full_dir(&self, size: u64) -> Option<String> {
        self.dirs.iter().find_map(|d| {
            let (free, _) = crate::disk::free_space(d)?;
            (free < size).then(|| {
                format!(
                    "{}; the generation needs {}",
                    crate::disk::no_space(d),
                    crate::units::human(size)
                )
            })
        })
    }

    /// Delete a generation; `local_path` is where the runner kept it.
    pub async fn remove(
        &mut self,
        name: &str,
        job: &str,
        local_path: &Path,
    ) -> Result<(), PluginError> {
        let req = wit::RemoveRequest {
            name: name.to_string(),
            job: job.to_string(),
            local_path: local_path.display().to_string(),
        };
        self.store.data_mut().current_file = Some(req.local_path.clone());
        let r = guarded!(self, "remove", self.limits.call_timeout, |b, st| b
            .offsite_plugin_destination_api()
            .call_remove(st, &req));
        self.store.data_mut().current_file = None;
        r
    }

    /// Fetch `name` into `to` (created or truncated). Returns the bytes
    /// that arrived.
    pub async fn fetch(&mut self, name: &str, job: &str, to: &Path) -> Result<u64, PluginError> {
        let (file, keep) = create_target(to)?;
        let written = Arc::new(AtomicU64::new(0));
        let progress = self.store.data().progress.clone();
        let stream: DynOutputStream = Box::new(FileOutput::new(file, written.clone(), progress));
        let res = self.table().push(stream).map_err(table_error)?;
        self.store.data_mut().current_file = Some(to.display().to_string());
        let req = wit::FetchRequest {
            name: name.to_string(),
            job: job.to_string(),
            local_path: to.display().to_string(),
        };
        let borrow = Resource::new_borrow(res.rep());
        let r = watched!(self, "fetch", |b, st| b
            .offsite_plugin_destination_api()
            .call_fetch(st, &req, borrow));
        self.store.data_mut().current_file = None;
        let _ = self.table().delete(res);
        let streamed = written.load(Ordering::Relaxed);
        match r? {
            wit::Fetched::Streamed(n) if n != streamed => Err(PluginError::new(
                ErrorKind::Other,
                format!(
                    "{}: fetch of {name} claimed {n} bytes but wrote {streamed}",
                    self.label()
                ),
            )),
            wit::Fetched::Streamed(n) => {
                sync_target(&keep, to)?;
                Ok(n)
            }
            wit::Fetched::PlacedAtLocalPath => std::fs::metadata(to)
                .map(|m| m.len())
                .map_err(|e| PluginError::host(format!("{}: {e}", to.display()))),
        }
    }

    /// The warnings the plugin logged so far (scrubbed), drained: e.g. a
    /// versioned bucket where rotation frees no space, for `offsite list`.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.store.data_mut().warnings)
    }

    pub async fn list(&mut self, prefix: &str) -> Result<Vec<wit::ObjectInfo>, PluginError> {
        guarded!(self, "list", self.limits.call_timeout, |b, st| b
            .offsite_plugin_destination_api()
            .call_list(st, prefix))
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.store.data_mut().table
    }
}

impl NotifierSession {
    pub async fn notify(&mut self, event: &wit::Event) -> Result<(), PluginError> {
        guarded!(self, "notify", self.limits.call_timeout, |b, st| b
            .offsite_plugin_notifier_api()
            .call_notify(st, event))
    }
}

fn table_error(e: wasmtime::component::ResourceTableError) -> PluginError {
    PluginError::host(format!("resource table: {e}"))
}

/// Create (or truncate) `to`, the local file a fetch streams into: the
/// handle the stream writes, and one kept to sync it once the plugin is done.
fn create_target(to: &Path) -> Result<(std::fs::File, std::fs::File), PluginError> {
    let file = std::fs::File::create(to)
        .map_err(|e| PluginError::host(format!("cannot create {}: {e}", to.display())))?;
    let keep = file
        .try_clone()
        .map_err(|e| PluginError::host(format!("{}: {e}", to.display())))?;
    Ok((file, keep))
}

/// Flush a fetched file to disk before it is reported as arrived.
fn sync_target(keep: &std::fs::File, to: &Path) -> Result<(), PluginError> {
    keep.sync_all()
        .map_err(|e| PluginError::host(format!("{}: {e}", to.display())))
}
