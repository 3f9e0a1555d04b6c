//! Write an offsite plugin in a few lines.
//!
//! ```ignore
//! use offsite_sdk::*;
//!
//! struct Mine { dir: String }
//!
//! impl Destination for Mine {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::destination("mine", env!("CARGO_PKG_VERSION"), "What it does")
//!             .setting(Setting::new("dir", "where to put files").required())
//!     }
//!     fn configure(s: &Settings) -> Result<Self, Error> { Ok(Mine { dir: s.required("dir")?.into() }) }
//!     fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> { ... }
//!     fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> { ... }
//!     fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> { ... }
//!     fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> { ... }
//!     // Optional (offsite:plugin@0.2.0): without it the plugin answers
//!     // `unsupported` and the runner fetches whole objects.
//!     fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> { ... }
//! }
//! offsite_sdk::export_destination!(Mine);
//! ```
//!
//! The runner calls `describe` (no I/O), then `configure` once per instance,
//! then any number of the other calls on the same instance.
//!
//! The SDK builds plugins of `offsite:plugin@0.2.0`; see `wit/README.md`
//! ("0.1.0 → 0.2.0") for what changed.

#[doc(hidden)]
pub mod bindings;
pub mod http;
mod verify;

pub use verify::Checked;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::str::FromStr;

pub use bindings::destination::exports::offsite::plugin::destination_api::RangeRequest;
pub use bindings::destination::offsite::plugin::host::{self as host, LogLevel};
pub use bindings::destination::offsite::plugin::types::{
    Error, Event, EventKind, FetchRequest, Fetched, ObjectInfo, PluginInfo, PluginKind,
    RemoveRequest, Setting, SettingRole, UploadRequest,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

impl EventKind {
    /// The kind as the contract's WIT spells it (kebab-case): the word
    /// operators write in a notifier's `on` list, and what a notifier names
    /// the event by.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::VerifyFailed => "verify-failed",
            EventKind::UploadFailed => "upload-failed",
            EventKind::NotEnabled => "not-enabled",
        }
    }
}

/// A destination plugin: where generations are kept off-site.
pub trait Destination: Sized + 'static {
    fn describe() -> PluginInfo;
    /// Check the settings and keep what the calls need. No network I/O:
    /// `offsite config check` calls this.
    fn configure(settings: &Settings) -> Result<Self, Error>;
    /// Store everything `data` yields under `req.name`, never leaving a
    /// partial object under that name.
    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error>;
    /// Delete `req.name`; `Error::Unsupported` when the protocol cannot.
    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error>;
    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error>;
    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error>;
    /// Write bytes `req.offset .. req.offset + req.length` of `req.name` to
    /// `sink`, reading only that range from the server, and return how many
    /// were written (fewer when the object ends first; never more). The
    /// default answers `unsupported`: the runner then fetches the whole
    /// object. Added in offsite:plugin@0.2.0.
    fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> {
        let _ = sink;
        Err(Error::Unsupported(format!(
            "this plugin cannot read part of {}; fetch the whole object",
            req.name
        )))
    }
}

/// A notifier plugin: tells people what happened.
pub trait Notifier: Sized + 'static {
    fn describe() -> PluginInfo;
    fn configure(settings: &Settings) -> Result<Self, Error>;
    fn notify(&mut self, event: &Event) -> Result<(), Error>;
}

impl PluginInfo {
    pub fn destination(name: &str, version: &str, summary: &str) -> Self {
        Self::new(name, version, summary, PluginKind::Destination)
    }

    pub fn notifier(name: &str, version: &str, summary: &str) -> Self {
        Self::new(name, version, summary, PluginKind::Notifier)
    }

    fn new(name: &str, version: &str, summary: &str, kind: PluginKind) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            kind,
            summary: summary.into(),
            settings: vec![],
        }
    }

    pub fn setting(mut self, s: Setting) -> Self {
        self.settings.push(s);
        self
    }

    /// Several settings at once (e.g. [`http::tls_settings`]).
    pub fn settings(mut self, s: impl IntoIterator<Item = Setting>) -> Self {
        self.settings.extend(s);
        self
    }
}

impl Setting {
    /// An optional plain setting with no default.
    pub fn new(key: &str, description: &str) -> Self {
        Setting {
            key: key.into(),
            description: description.into(),
            required: false,
            secret: false,
            default: None,
            role: SettingRole::Plain,
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Never logged or listed; may be given in the config as `KEY_file`.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn default(mut self, value: &str) -> Self {
        self.default = Some(value.into());
        self
    }

    /// What the value grants in the sandbox (network host, URL, directory...).
    pub fn role(mut self, role: SettingRole) -> Self {
        self.role = role;
        self
    }
}

/// Local I/O errors inside a plugin: interrupted/timed-out ones are worth a
/// retry, permission and space problems are the server's refusal.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        use io::ErrorKind as K;
        let m = e.to_string();
        match e.kind() {
            K::NotFound => Error::NotFound(m),
            K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::QuotaExceeded => {
                Error::Rejected(m)
            }
            K::TimedOut
            | K::Interrupted
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::WouldBlock => Error::Transient(m),
            _ => Error::Other(m),
        }
    }
}

/// The settings the runner passed to `configure`: declared keys only,
/// defaults filled in, secrets resolved.
#[derive(Clone, Default)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Settings(pairs.into_iter().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::Config(format!("setting `{key}` is required")))
    }

    /// Parse a value, with an error that names the key, the value and the type.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                Error::Config(format!(
                    "setting `{key}` = {v:?} is not a valid {}",
                    short_type_name::<T>()
                ))
            }),
        }
    }

    /// `true`/`false`/`yes`/`no`/`1`/`0`.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true" | "yes" | "1" | "on") => Ok(Some(true)),
            Some("false" | "no" | "0" | "off") => Ok(Some(false)),
            Some(v) => Err(Error::Config(format!(
                "setting `{key}` = {v:?} is not a boolean; write true or false"
            ))),
        }
    }
}

fn short_type_name<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    n.rsplit("::").next().unwrap_or(n)
}

/// Whether `name` is a generation of `job` exactly, by the runner's naming:
/// `<job>-<YYYYMMDDTHHMMSSZ>.<ext>`, optionally followed by
/// `.manifest.json`. `shop-staging-…` is not `shop`'s. For plugins that
/// clean up their own temporaries: only the job being shipped holds its
/// lock, so only its leftovers are safe to remove.
pub fn is_generation_of(job: &str, name: &str) -> bool {
    let name = name.strip_suffix(".manifest.json").unwrap_or(name);
    let Some(rest) = name.strip_prefix(job).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'.'
        && rest[17..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.')
}

/// Log through the runner (its log file and stderr), tagged with the plugin.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message)
}

pub fn info(message: &str) {
    log(LogLevel::Info, message)
}

pub fn warn(message: &str) {
    log(LogLevel::Warn, message)
}

/// Run an operator's program from the plugin's exec-directory setting.
pub fn exec(program: &str, args: &[String]) -> Result<i32, Error> {
    host::exec(program, args)
}

/// `std::io::Read` over the upload stream the runner hands in.
pub struct Reader<'a> {
    stream: &'a InputStream,
    done: bool,
    read: u64,
}

impl<'a> Reader<'a> {
    pub fn new(stream: &'a InputStream) -> Self {
        Reader {
            stream,
            done: false,
            read: 0,
        }
    }

    /// The runner's stream itself, to `splice` it into another host stream
    /// (an HTTP body, see [`http::Request::send_reader`]) without copying
    /// through the plugin's memory. Call [`Reader::count`] with what moved.
    pub fn stream(&self) -> &'a InputStream {
        self.stream
    }

    /// Record `n` bytes moved from [`Reader::stream`] by other means.
    pub fn count(&mut self, n: u64) {
        self.read += n;
    }

    /// Bytes taken from the stream so far (read or counted).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.stream.blocking_read(buf.len() as u64) {
            Ok(chunk) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                self.read += n as u64;
                Ok(n)
            }
            Err(StreamError::Closed) => {
                self.done = true;
                Ok(0)
            }
            Err(StreamError::LastOperationFailed(e)) => Err(io::Error::other(e.to_debug_string())),
        }
    }
}

/// `std::io::Write` over the fetch stream the runner hands in.
pub struct Writer<'a> {
    stream: &'a OutputStream,
    written: u64,
}

impl<'a> Writer<'a> {
    pub fn new(stream: &'a OutputStream) -> Self {
        Writer { stream, written: 0 }
    }

    /// Bytes written so far: what `Fetched::Streamed` must report.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The runner's stream itself, to `splice` a host stream (an HTTP
    /// answer's body, see [`http::Response::copy_to`]) into it. Call
    /// [`Writer::count`] with what moved.
    pub fn stream(&self) -> &'a OutputStream {
        self.stream
    }

    /// Record `n` bytes written to [`Writer::stream`] by other means.
    pub fn count(&mut self, n: u64) {
        self.written += n;
    }
}

impl io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = loop {
            match self.stream.check_write() {
                Ok(0) => self.stream.subscribe().block(),
                Ok(n) => break n,
                Err(StreamError::Closed) => return Err(io::ErrorKind::BrokenPipe.into()),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(io::Error::other(e.to_debug_string()));
                }
            }
        };
        let n = buf.len().min(room as usize);
        self.stream
            .write(&buf[..n])
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream
            .blocking_flush()
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Glue used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn configure<T: 'static>(
        pairs: Vec<(String, String)>,
        make: fn(&Settings) -> Result<T, Error>,
    ) -> Result<(), Error> {
        let v = make(&Settings::from_pairs(pairs))?;
        INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(v)));
        Ok(())
    }

    pub fn with<T: 'static, R>(f: impl FnOnce(&mut T) -> Result<R, Error>) -> Result<R, Error> {
        INSTANCE.with(|i| {
            let mut slot = i.borrow_mut();
            match slot.as_mut().and_then(|b| b.downcast_mut::<T>()) {
                Some(t) => f(t),
                None => Err(Error::Other(
                    "called before configure(); the runner always configures first".into(),
                )),
            }
        })
    }
}

/// Export a [`Destination`] implementation as the plugin's component world.
#[macro_export]
macro_rules! export_destination {
    ($t:ty) => {
        // Exports only for the component: a native build (`cargo test` on the
        // host) links without them (their names are not valid in a native
        // symbol list).
        #[cfg(target_arch = "wasm32")]
        struct __OffsiteGuest;
        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::destination::exports::offsite::plugin::destination_api::Guest
            for __OffsiteGuest
        {
            fn describe() -> $crate::PluginInfo {
                <$t as $crate::Destination>::describe()
            }
            fn configure(settings: Vec<(String, String)>) -> Result<(), $crate::Error> {
                $crate::__private::configure::<$t>(settings, <$t as $crate::Destination>::configure)
            }
            fn upload(
                req: $crate::UploadRequest,
                data: &$crate::bindings::destination::exports::offsite::plugin::destination_api::InputStream,
            ) -> Result<(), $crate::Error> {
                $crate::__private::with::<$t, _>(|p| {
                    $crate::Destination::upload(p, &req, &mut $crate::Reader::new(data))
                })
            }
            fn remove(req: $crate::RemoveRequest) -> Result<(), $crate::Error> {
                $crate::__private::with::<$t, _>(|p| $crate::Destination::remove(p, &req))
            }
            fn fetch(
                req: $crate::FetchRequest,
                sink: &$crate::bindings::destination::exports::offsite::plugin::destination_api::OutputStream,
            ) -> Result<$crate::Fetched, $crate::Error> {
                $crate::__private::with::<$t, _>(|p| {
                    $crate::Destination::fetch(p, &req, &mut $crate::Writer::new(sink))
                })
            }
            fn list(prefix: String) -> Result<Vec<$crate::ObjectInfo>, $crate::Error> {
                $crate::__private::with::<$t, _>(|p| $crate::Destination::list(p, &prefix))
            }
            fn fetch_range(
                req: $crate::RangeRequest,
                sink: &$crate::bindings::destination::exports::offsite::plugin::destination_api::OutputStream,
            ) -> Result<u64, $crate::Error> {
                $crate::__private::with::<$t, _>(|p| {
                    $crate::Destination::fetch_range(p, &req, &mut $crate::Writer::new(sink))
                })
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::destination::__export_destination_world!(__OffsiteGuest);
        // Natively the implementation is still in use (by tests).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$t as $crate::Destination>::describe;
            let _ = <$t as $crate::Destination>::configure;
            let _ = <$t as $crate::Destination>::upload;
            let _ = <$t as $crate::Destination>::remove;
            let _ = <$t as $crate::Destination>::fetch;
            let _ = <$t as $crate::Destination>::list;
        };
    };
}

/// Export a [`Notifier`] implementation as the plugin's component world.
#[macro_export]
macro_rules! export_notifier {
    ($t:ty) => {
        // Exports only for the component: a native build (`cargo test` on the
        // host) links without them (their names are not valid in a native
        // symbol list).
        #[cfg(target_arch = "wasm32")]
        struct __OffsiteGuest;
        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::notifier::exports::offsite::plugin::notifier_api::Guest
            for __OffsiteGuest
        {
            fn describe() -> $crate::PluginInfo {
                <$t as $crate::Notifier>::describe()
            }
            fn configure(settings: Vec<(String, String)>) -> Result<(), $crate::Error> {
                $crate::__private::configure::<$t>(settings, <$t as $crate::Notifier>::configure)
            }
            fn notify(event: $crate::Event) -> Result<(), $crate::Error> {
                $crate::__private::with::<$t, _>(|p| $crate::Notifier::notify(p, &event))
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::notifier::__export_notifier_world!(__OffsiteGuest);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$t as $crate::Notifier>::describe;
            let _ = <$t as $crate::Notifier>::configure;
            let _ = <$t as $crate::Notifier>::notify;
        };
    };
}
