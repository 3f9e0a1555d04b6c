//! Host-side bindings of `wit/plugin.wit`, one module per world.
//!
//! Both worlds import the same `host` and `types` interfaces; the notifier
//! bindings reuse the destination's so the runner implements `host` once.

pub mod destination {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "offsite:plugin/destination",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
    });
}

pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "offsite:plugin/notifier",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "offsite:plugin/types": super::destination::offsite::plugin::types,
            "offsite:plugin/host": super::destination::offsite::plugin::host,
        },
    });
}

pub use destination::offsite::plugin::host as host_api;
pub use destination::offsite::plugin::types as wit;

/// The contract version this host implements; plugins export interfaces
/// named `offsite:plugin/<interface>@CONTRACT_VERSION`.
pub const CONTRACT_VERSION: &str = "0.1.0";
pub const DESTINATION_EXPORT: &str = "offsite:plugin/destination-api";
pub const NOTIFIER_EXPORT: &str = "offsite:plugin/notifier-api";
