//! What a plugin instance may touch, derived from its own settings.
//!
//! A plugin gets nothing it was not given: the roles its `describe()` puts on
//! settings (network-host, http-url, directory, exec-directory) are the only
//! way in, and the values come from the operator's config. Every refusal is
//! logged with the plugin, what was refused, and the setting that would allow it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpHooks;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode as HttpErrorCode;

use super::bindings::wit::SettingRole;
use super::error::{ErrorKind, PluginError};
use super::progress::{Counted, Progress};
use super::settings::ResolvedSettings;

/// Who is running: used in every log line and refusal.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    /// The plugin's name.
    pub plugin: String,
    /// The destination or notifier name from the config (or a label such as
    /// `plugins test`).
    pub instance: String,
    pub job: Option<String>,
}

impl CallContext {
    pub fn label(&self) -> String {
        if self.instance.is_empty() || self.instance == self.plugin {
            format!("plugin `{}`", self.plugin)
        } else {
            format!("plugin `{}` (`{}`)", self.plugin, self.instance)
        }
    }
}

/// Refusals collected during a call, so a failed call can say why.
#[derive(Clone, Default)]
pub struct Refusals(Arc<Mutex<Vec<String>>>);

impl Refusals {
    pub fn record(&self, msg: String) {
        tracing::warn!("{msg}");
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 16 && !v.contains(&msg) {
            v.push(msg);
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Programs a plugin may run through `host.exec`.
#[derive(Clone, Debug)]
pub struct ExecGrant {
    /// The setting that granted it (for messages).
    pub key: String,
    /// Canonical directory; only files directly inside it run.
    pub dir: PathBuf,
    pub timeout: Duration,
}

/// Everything the sandbox grants one plugin instance.
pub struct Grants {
    /// Resolved addresses, each with the setting (key = value) that named it.
    pub hosts: Vec<(IpAddr, String)>,
    /// Network-host settings as `key = value`, for messages.
    pub host_settings: Vec<String>,
    /// HTTP authorities (host:port), each with its setting.
    pub http: Vec<(String, String)>,
    pub http_settings: Vec<String>,
    pub dirs: Vec<PathBuf>,
    pub exec: Option<ExecGrant>,
    /// HTTPS trust from the plugin's `tls_ca` / `tls_insecure` settings.
    pub http_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Grants {
    /// Nothing at all: for `describe()`, which must do no I/O.
    pub fn none() -> Grants {
        Grants {
            hosts: vec![],
            host_settings: vec![],
            http: vec![],
            http_settings: vec![],
            dirs: vec![],
            exec: None,
            http_tls: None,
        }
    }

    /// Derive grants from settings; resolves host names (that is I/O, so it
    /// happens here, once per instance, not per connection).
    pub async fn from_settings(
        settings: &ResolvedSettings,
        ctx: &CallContext,
    ) -> Result<Grants, PluginError> {
        let mut g = Grants::none();
        for (key, value) in settings.with_role(SettingRole::NetworkHost) {
            let named = format!("`{key}` = {value}");
            g.host_settings.push(named.clone());
            for ip in resolve_host(value).await.map_err(|e| {
                PluginError::new(
                    ErrorKind::Transient,
                    format!("{}: cannot resolve `{key}` = {value}: {e}", ctx.label()),
                )
            })? {
                g.hosts.push((ip, named.clone()));
            }
        }
        for (key, value) in settings.with_role(SettingRole::HttpUrl) {
            let authority = http_authority(value).ok_or_else(|| {
                PluginError::new(
                    ErrorKind::Config,
                    format!(
                        "{}: `{key}` = {value} is not an http:// or https:// URL with a host",
                        ctx.label()
                    ),
                )
            })?;
            // Only the authority: a hook URL's path often carries a token.
            g.http_settings.push(format!("`{key}` (host {authority})"));
            g.http.push((authority, key.to_string()));
        }
        g.http_tls = super::http_send::tls_config(settings, &ctx.label())?;
        for (key, value) in settings.with_role(SettingRole::Directory) {
            let dir = PathBuf::from(value);
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(PluginError::new(
                    ErrorKind::Config,
                    format!(
                        "{}: `{key}` = {value} must be an existing directory, given as an absolute path",
                        ctx.label()
                    ),
                ));
            }
            g.dirs.push(dir);
        }
        if let Some((key, value)) = settings.with_role(SettingRole::ExecDirectory).next() {
            let dir = std::fs::canonicalize(value).map_err(|e| {
                PluginError::new(
                    ErrorKind::Config,
                    format!("{}: `{key}` = {value}: {e}", ctx.label()),
                )
            })?;
            let timeout = match settings.get("timeout") {
                Some(t) => crate::duration::parse(t).map_err(|e| {
                    PluginError::new(
                        ErrorKind::Config,
                        format!("{}: `timeout`: {e}", ctx.label()),
                    )
                })?,
                None => Duration::from_secs(3600),
            };
            g.exec = Some(ExecGrant {
                key: key.to_string(),
                dir,
                timeout,
            });
        }
        Ok(g)
    }

    /// The WASI context: no environment, no arguments, no stdio unless
    /// debugging, the granted directories only, and sockets behind a check.
    pub fn wasi_ctx(
        &self,
        ctx: &CallContext,
        refusals: &Refusals,
        debug_stdio: bool,
        stderr: &super::stderr_tail::StderrTail,
    ) -> Result<WasiCtx, PluginError> {
        let mut b = WasiCtxBuilder::new();
        if debug_stdio {
            b.inherit_stdout().inherit_stderr();
        } else {
            b.stderr(stderr.clone());
        }
        for dir in &self.dirs {
            let guest = dir.to_string_lossy().into_owned();
            b.preopened_dir(dir, &guest, FsPerms::ReadWrite)
                .map_err(|e| {
                    PluginError::new(
                        ErrorKind::Config,
                        format!("{}: cannot open {}: {e}", ctx.label(), dir.display()),
                    )
                })?;
        }
        // Sockets are always enabled so that a refused attempt is logged with
        // the setting that would allow it, instead of failing silently.
        b.allow_tcp(true).allow_udp(true);
        b.allow_ip_name_lookup(!self.hosts.is_empty());
        let policy = Arc::new(NetPolicy {
            allowed: self.hosts.iter().map(|(ip, _)| *ip).collect(),
            settings: self.host_settings.clone(),
            label: ctx.label(),
            refusals: refusals.clone(),
        });
        b.socket_addr_check(move |addr, use_| {
            let policy = policy.clone();
            Box::pin(async move { policy.check(addr, use_) })
        });
        Ok(b.build())
    }

    pub fn http_hooks(
        &self,
        ctx: &CallContext,
        refusals: &Refusals,
        progress: &Progress,
        transfer: Duration,
    ) -> HttpPolicy {
        HttpPolicy {
            tls: self.http_tls.clone(),
            transfer,
            progress: progress.clone(),
            allowed: self.http.iter().map(|(a, _)| a.clone()).collect(),
            settings: self.http_settings.clone(),
            label: ctx.label(),
            refusals: refusals.clone(),
        }
    }
}

async fn resolve_host(value: &str) -> std::io::Result<Vec<IpAddr>> {
    let host = value.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs: BTreeSet<IpAddr> = tokio::net::lookup_host((host, 0))
        .await?
        .map(|a| a.ip())
        .collect();
    Ok(addrs.into_iter().collect())
}

/// `host:port` of an http(s) URL, with the scheme's default port made explicit.
pub fn http_authority(url: &str) -> Option<String> {
    uri_authority(&url.parse().ok()?)
}

/// The one rule for what an HTTP authority is, used both for the grant
/// (the setting's URL) and for the check (each request's URI).
fn uri_authority(uri: &http::Uri) -> Option<String> {
    let default = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host()?;
    Some(format!("{}:{}", host, uri.port_u16().unwrap_or(default)))
}

struct NetPolicy {
    allowed: BTreeSet<IpAddr>,
    settings: Vec<String>,
    label: String,
    refusals: Refusals,
}

impl NetPolicy {
    fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let (ok, what) = match use_ {
            // Clients bind implicitly to an ephemeral port; a fixed port
            // would let a plugin act as a server, which no destination needs.
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => (addr.port() == 0, "bind to"),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => (false, "listen on"),
            SocketAddrUse::TcpConnect => (self.allowed.contains(&addr.ip()), "a TCP connection to"),
            _ => (self.allowed.contains(&addr.ip()), "a UDP datagram to"),
        };
        if !ok {
            let allow = if matches!(use_, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind) {
                "plugins may only bind ephemeral ports (port 0)".to_string()
            } else if matches!(use_, SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept) {
                "plugins may not accept connections".to_string()
            } else if self.settings.is_empty() {
                "the plugin declares no network-host setting, so it has no network access"
                    .to_string()
            } else {
                format!(
                    "{} is not an address of its network-host setting {}; to allow it, set that setting to {}",
                    addr.ip(),
                    self.settings.join(", "),
                    addr.ip()
                )
            };
            self.refusals.record(format!(
                "sandbox: {} was refused {what} {addr}: {allow}",
                self.label
            ));
        }
        ok
    }
}

/// The only gate for wasi:http: these requests do not pass the socket check.
pub struct HttpPolicy {
    /// Request and response bodies count as progress of the call.
    progress: Progress,
    /// The operator's HTTPS trust for this destination, if not the public roots.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The call's limit, for requests that carry a body.
    transfer: Duration,
    allowed: BTreeSet<String>,
    settings: Vec<String>,
    label: String,
    refusals: Refusals,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let authority = uri_authority(request.uri());
        let ok = authority.as_ref().is_some_and(|a| self.allowed.contains(a));
        if !ok {
            let allow = if self.settings.is_empty() {
                "the plugin declares no http-url setting, so it has no HTTP access".to_string()
            } else {
                format!(
                    "it may only reach the authority of {}; to allow it, point that setting at {}",
                    self.settings.join(", "),
                    authority.as_deref().unwrap_or("that host")
                )
            };
            self.refusals.record(format!(
                "sandbox: {} was refused an HTTP request {} {}: {allow}",
                self.label,
                request.method(),
                authority.as_deref().unwrap_or("(no authority)")
            ));
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        use http_body_util::BodyExt;
        let progress = self.progress.clone();
        let request = request.map(|b| Counted::new(b, progress.clone()).boxed_unsync());
        let options = super::http_send::with_body_time(&request, options, self.transfer);
        let sent: SendFuture = match &self.tls {
            Some(tls) if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) => {
                let send = super::http_send::send_tls(tls.clone(), request, options);
                Box::new(send)
            }
            _ => wasmtime_wasi_http::default_hooks().send_request(request, options, fut),
        };
        Box::new(async move {
            let (response, io) = Box::into_pin(sent).await?;
            Ok((
                response.map(|b| Counted::new(b, progress).boxed_unsync()),
                io,
            ))
        })
    }

    // The causes wasmtime would log untagged: logged with the plugin and
    // destination, and appended to the error of the call that met them.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> HttpErrorCode {
        self.cause(format!("HTTP exchange failed: {err}"));
        HttpErrorCode::HttpProtocolError
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> HttpErrorCode {
        self.cause(format!("HTTP connect failed: {err}"));
        HttpErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> HttpErrorCode {
        let cause = super::http_send::tls_cause(err);
        let certificate = cause.starts_with("invalid peer certificate");
        self.cause(format!("TLS failed: {cause}"));
        if certificate {
            HttpErrorCode::TlsCertificateError
        } else {
            HttpErrorCode::TlsProtocolError
        }
    }
}

impl HttpPolicy {
    /// Logged (as a warning) and appended to the call's error.
    fn cause(&self, what: String) {
        self.refusals.record(format!("{}: {what}", self.label));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_has_explicit_port() {
        assert_eq!(
            http_authority("https://s3.eu-west-1.amazonaws.com").as_deref(),
            Some("s3.eu-west-1.amazonaws.com:443")
        );
        assert_eq!(
            http_authority("http://127.0.0.1:8088/hook").as_deref(),
            Some("127.0.0.1:8088")
        );
        assert_eq!(http_authority("ftp://x"), None);
    }
}
