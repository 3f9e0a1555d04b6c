//! Locating what `just test` built. The justfile exports `OFFSITE_BIN` and
//! `OFFSITE_WASM_DIR`; without them (a bare `cargo test`) the paths are
//! derived from this test binary's own location.

use std::path::{Path, PathBuf};

/// `target/release/deps/<test>` → `target/release`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The built `offsite` binary, where cargo put it.
fn built_bin() -> PathBuf {
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

/// The `offsite` binary, at a path every user can run: PostgreSQL runs
/// `archive_command`/`restore_command` as its own user, and a build under
/// root's home (mode 0700, the default `~/.cache/offsite`) is out of its
/// reach. Such a build is copied once per build into
/// `$TMPDIR/offsite-test-bin/<size>-<mtime>/offsite` (older copies removed).
pub fn offsite_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = built_bin();
        if reachable_by_all(&built) {
            built
        } else {
            shared_copy(&built)
        }
    })
    .clone()
}

/// Whether every folder above `p` is searchable and `p` executable by
/// "others" (a user in no group of the owner's).
fn reachable_by_all(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(p) = p.canonicalize() else {
        return false;
    };
    let mode = |q: &Path| std::fs::metadata(q).map(|m| m.permissions().mode());
    p.ancestors()
        .all(|q| mode(q).map(|m| m & 0o001 != 0).unwrap_or(false))
}

/// A copy of `built` in a world-readable folder, made atomically (several
/// test binaries may race) and kept for the next test binary of the same
/// build.
fn shared_copy(built: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(built).expect("offsite binary metadata");
    let root = std::env::temp_dir().join("offsite-test-bin");
    let key = format!("{}-{}.{}", m.len(), m.mtime(), m.mtime_nsec());
    let dir = root.join(&key);
    let bin = dir.join("offsite");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&root).expect("create offsite-test-bin");
    let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755));
    if let Ok(old) = std::fs::read_dir(&root) {
        for e in old.flatten() {
            if e.file_name() != key.as_str() && !e.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".copy")
        .tempdir_in(&root)
        .expect("temporary folder for the binary copy");
    std::fs::copy(built, tmp.path().join("offsite")).expect("copy the offsite binary");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the binary copy's folder");
    let staged = tmp.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another test binary got there first: use its copy.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(bin.exists(), "{} was not made", bin.display());
    bin
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

/// The project's root folder. Looked up when the tests run (cargo sets
/// `CARGO_MANIFEST_DIR` for a test process), not baked in when they are
/// built: a build cache shared by checkouts at other paths (CI's
/// persistent `CARGO_TARGET_DIR`) must not point the tests elsewhere.
pub fn project_root() -> PathBuf {
    offsite_test_servers::project_root()
}
