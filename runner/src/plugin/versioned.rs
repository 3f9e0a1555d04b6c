//! One face over every contract version a plugin may target: the session
//! code instantiates and calls a plugin the same way whether it was built
//! against `offsite:plugin@0.1.0` or `@0.2.0`. Calls that only a newer
//! version has answer `unsupported` for an older plugin, as the plugin
//! itself would if it could not do them.

use wasmtime::AsContextMut;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::io::streams::{InputStream, OutputStream};

use super::bindings::{self, wit};
use super::bindings_v0_2::{self as v0_2, RangeRequest};
use super::host_api::State;

/// Which `offsite:plugin` version a plugin was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    /// The version as it appears in export names, e.g. `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    pub fn parse(version: &str) -> Option<Contract> {
        match version {
            "0.1.0" => Some(Contract::V0_1),
            "0.2.0" => Some(Contract::V0_2),
            _ => None,
        }
    }

    /// Whether `fetch-range` exists in this version.
    pub fn has_fetch_range(self) -> bool {
        self >= Contract::V0_2
    }
}

/// A destination plugin linked and ready to instantiate.
#[derive(Clone)]
pub(crate) enum DestinationPre {
    V0_1(bindings::destination::DestinationPre<State>),
    V0_2(v0_2::destination::DestinationPre<State>),
}

/// A notifier plugin linked and ready to instantiate.
#[derive(Clone)]
pub(crate) enum NotifierPre {
    V0_1(bindings::notifier::NotifierPre<State>),
    V0_2(v0_2::notifier::NotifierPre<State>),
}

/// A destination instance's exports.
pub enum DestinationBindings {
    V0_1(bindings::destination::Destination),
    V0_2(v0_2::destination::Destination),
}

/// A notifier instance's exports.
pub enum NotifierBindings {
    V0_1(bindings::notifier::Notifier),
    V0_2(v0_2::notifier::Notifier),
}

impl DestinationPre {
    pub(crate) async fn instantiate_async(
        &self,
        store: impl AsContextMut<Data = State>,
    ) -> wasmtime::Result<DestinationBindings> {
        Ok(match self {
            DestinationPre::V0_1(p) => DestinationBindings::V0_1(p.instantiate_async(store).await?),
            DestinationPre::V0_2(p) => DestinationBindings::V0_2(p.instantiate_async(store).await?),
        })
    }
}

impl NotifierPre {
    pub(crate) async fn instantiate_async(
        &self,
        store: impl AsContextMut<Data = State>,
    ) -> wasmtime::Result<NotifierBindings> {
        Ok(match self {
            NotifierPre::V0_1(p) => NotifierBindings::V0_1(p.instantiate_async(store).await?),
            NotifierPre::V0_2(p) => NotifierBindings::V0_2(p.instantiate_async(store).await?),
        })
    }
}

/// `destination-api` of either version.
pub enum DestinationApi<'a> {
    V0_1(&'a bindings::destination::exports::offsite::plugin::destination_api::Guest),
    V0_2(&'a v0_2::destination::exports::offsite::plugin::destination_api::Guest),
}

/// `notifier-api` of either version.
pub enum NotifierApi<'a> {
    V0_1(&'a bindings::notifier::exports::offsite::plugin::notifier_api::Guest),
    V0_2(&'a v0_2::notifier::exports::offsite::plugin::notifier_api::Guest),
}

impl DestinationBindings {
    pub fn offsite_plugin_destination_api(&self) -> DestinationApi<'_> {
        match self {
            DestinationBindings::V0_1(b) => {
                DestinationApi::V0_1(b.offsite_plugin_destination_api())
            }
            DestinationBindings::V0_2(b) => {
                DestinationApi::V0_2(b.offsite_plugin_destination_api())
            }
        }
    }

    pub fn contract(&self) -> Contract {
        match self {
            DestinationBindings::V0_1(_) => Contract::V0_1,
            DestinationBindings::V0_2(_) => Contract::V0_2,
        }
    }
}

impl NotifierBindings {
    pub fn offsite_plugin_notifier_api(&self) -> NotifierApi<'_> {
        match self {
            NotifierBindings::V0_1(b) => NotifierApi::V0_1(b.offsite_plugin_notifier_api()),
            NotifierBindings::V0_2(b) => NotifierApi::V0_2(b.offsite_plugin_notifier_api()),
        }
    }
}

/// Forward a call that every version has, with the same arguments: the
/// versions share `types`, so the argument and result types are the same.
macro_rules! forward {
    ($api:ident: $( $call:ident ( $( $arg:ident : $ty:ty ),* ) -> $ret:ty ; )*) => {
        impl $api<'_> {
            $(
                pub async fn $call<S>(&self, store: S, $( $arg: $ty ),*) -> wasmtime::Result<$ret>
                where
                    S: AsContextMut,
                    S::Data: Send,
                {
                    match self {
                        $api::V0_1(g) => g.$call(store, $( $arg ),*).await,
                        $api::V0_2(g) => g.$call(store, $( $arg ),*).await,
                    }
                }
            )*
        }
    };
}

forward! { DestinationApi:
    call_describe() -> wit::PluginInfo;
    call_configure(settings: &[(String, String)]) -> Result<(), wit::Error>;
    call_upload(req: &wit::UploadRequest, data: Resource<InputStream>) -> Result<(), wit::Error>;
    call_remove(req: &wit::RemoveRequest) -> Result<(), wit::Error>;
    call_fetch(req: &wit::FetchRequest, sink: Resource<OutputStream>) -> Result<wit::Fetched, wit::Error>;
    call_list(prefix: &str) -> Result<Vec<wit::ObjectInfo>, wit::Error>;
}

forward! { NotifierApi:
    call_describe() -> wit::PluginInfo;
    call_configure(settings: &[(String, String)]) -> Result<(), wit::Error>;
    call_notify(event: &wit::Event) -> Result<(), wit::Error>;
}

impl DestinationApi<'_> {
    /// `fetch-range`; a 0.1.0 plugin has none and answers `unsupported`.
    pub async fn call_fetch_range<S>(
        &self,
        store: S,
        req: &RangeRequest,
        sink: Resource<OutputStream>,
    ) -> wasmtime::Result<Result<u64, wit::Error>>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match self {
            DestinationApi::V0_1(_) => Ok(Err(wit::Error::Unsupported(format!(
                "it is built against offsite:plugin@{}, which has no fetch-range (0.2.0 added it)",
                Contract::V0_1.as_str()
            )))),
            DestinationApi::V0_2(g) => g.call_fetch_range(store, req, sink).await,
        }
    }
}
