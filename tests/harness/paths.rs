//! Locating what `just test` built. The justfile exports `OFFSITE_BIN` and
//! `OFFSITE_WASM_DIR`; without them (a bare `cargo test`) the paths are
//! derived from this test binary's own location.

use std::path::PathBuf;

/// `target/release/deps/<test>` → `target/release`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The `offsite` binary.
pub fn offsite_bin() -> PathBuf {
    let p = std::env::var_os("OFFSITE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("offsite"));
    assert!(
        p.exists(),
        "{} is missing: run the tests with `just test` (it builds the runner first)",
        p.display()
    );
    p
}

/// Where the wasm32-wasip2 plugins and fixtures were built.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("OFFSITE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            profile_dir()
                .parent()
                .and_then(|t| t.parent())
                .expect("target dir has a parent")
                .join("target-wasm/wasm32-wasip2/release")
        })
}

/// A built plugin or fixture by crate name, e.g. `offsite_local_dir`.
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = wasm_dir().join(format!("{crate_name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the plugins with `just plugins fixtures` (or run `just test`)",
        p.display()
    );
    p
}

/// The project's root folder.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the project")
        .to_path_buf()
}
