//! Host-side bindings of `offsite:plugin@0.2.0` (`wit/plugin.wit`): 0.1.0
//! plus `destination-api.fetch-range`.
//!
//! `types@0.2.0` is the same as `types@0.1.0` field for field, so it maps to
//! the 0.1.0 Rust types (`bindings::wit`): a 0.2.0 plugin's errors, infos and
//! requests are the very values the rest of the runner already handles.
//! wasmtime checks the mapping structurally when a plugin is linked.
//! `host@0.2.0` is its own import name, so it gets its own trait, answered
//! by the 0.1.0 implementation.

use wasmtime::component::{HasSelf, Linker};

use super::bindings::host_api as host_v0_1;
use super::host_api::State;

pub mod destination {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "offsite:plugin/destination@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "offsite:plugin/types@0.2.0": crate::plugin::bindings::wit,
        },
    });
}

pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "offsite:plugin/notifier@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "offsite:plugin/types@0.2.0": crate::plugin::bindings::wit,
            "offsite:plugin/host@0.2.0": super::destination::offsite::plugin::host,
        },
    });
}

pub use destination::exports::offsite::plugin::destination_api::RangeRequest;
use destination::offsite::plugin::host as host_v0_2;

/// Define what a 0.2.0 plugin imports from the runner, beside 0.1.0's.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    host_v0_2::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    // `types` has no functions; a plugin still imports it by name.
    linker.instance("offsite:plugin/types@0.2.0")?;
    Ok(())
}

impl host_v0_2::Host for State {
    async fn log(&mut self, level: host_v0_2::LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            host_v0_2::LogLevel::Error => host_v0_1::LogLevel::Error,
            host_v0_2::LogLevel::Warn => host_v0_1::LogLevel::Warn,
            host_v0_2::LogLevel::Info => host_v0_1::LogLevel::Info,
            host_v0_2::LogLevel::Debug => host_v0_1::LogLevel::Debug,
        };
        host_v0_1::Host::log(self, level, message).await
    }

    async fn exec(
        &mut self,
        program: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<i32, super::wit::Error>> {
        host_v0_1::Host::exec(self, program, args).await
    }
}
