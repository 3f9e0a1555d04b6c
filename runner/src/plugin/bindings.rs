//! Host-side bindings of `offsite:plugin@0.1.0` (`wit/0.1.0/plugin.wit`),
//! one module per world; 0.2.0 is in `bindings_v0_2`, and `versioned`
//! picks one per plugin.
//!
//! Both worlds import the same `host` and `types` interfaces; the notifier
//! bindings reuse the destination's so the runner implements `host` once.
//! `types` is the same, field for field, in every version: its Rust types
//! here are the ones the whole runner uses (`wit::Error`, `wit::PluginInfo`).

pub mod destination {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/io", "../wit/0.1.0/plugin.wit"],
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
        path: ["../wit/deps/io", "../wit/0.1.0/plugin.wit"],
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

/// The newest contract version this host implements; plugins export
/// interfaces named `offsite:plugin/<interface>@VERSION`, one of
/// [`CONTRACT_VERSIONS`].
pub const CONTRACT_VERSION: &str = "0.2.0";
/// Every contract version this host loads, oldest first.
pub const CONTRACT_VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];
pub const DESTINATION_EXPORT: &str = "offsite:plugin/destination-api";
pub const NOTIFIER_EXPORT: &str = "offsite:plugin/notifier-api";
