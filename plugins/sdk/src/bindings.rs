//! Guest bindings of `wit/plugin.wit` (`offsite:plugin@0.2.0`). `wasi:io` maps to the `wasip2` crate
//! so streams are the same types std-using code already knows; the notifier
//! world reuses the destination world's `types` and `host`.

pub mod destination {
    wit_bindgen::generate!({
        world: "offsite:plugin/destination",
        path: "wit",
        with: {
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
        },
        pub_export_macro: true,
        export_macro_name: "__export_destination_world",
        default_bindings_module: "::offsite_sdk::bindings::destination",
    });
}

pub mod notifier {
    wit_bindgen::generate!({
        world: "offsite:plugin/notifier",
        path: "wit",
        with: {
            "offsite:plugin/types@0.2.0": crate::bindings::destination::offsite::plugin::types,
            "offsite:plugin/host@0.2.0": crate::bindings::destination::offsite::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_notifier_world",
        default_bindings_module: "::offsite_sdk::bindings::notifier",
    });
}
