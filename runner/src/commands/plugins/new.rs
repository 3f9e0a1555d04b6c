//! `offsite plugins new NAME [--http]`: a plugin project that builds with
//! plain `cargo build --release` wherever it is put, the SDK (and the WIT it
//! is generated from) vendored inside it, so it needs neither this
//! repository nor a published crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The SDK as this offsite was built with it: (path inside the SDK, text).
const SDK: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "README.md",
        include_str!("../../../../plugins/sdk/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/bindings.rs",
        include_str!("../../../../plugins/sdk/src/bindings.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../../plugins/sdk/src/http.rs"),
    ),
    (
        "src/verify.rs",
        include_str!("../../../../plugins/sdk/src/verify.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../../wit/plugin.wit")),
    ("wit/README.md", include_str!("../../../../wit/README.md")),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../../wit/deps/io/io.wit"),
    ),
];

/// A destination keeping files in a directory (examples/plugin-template).
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../../examples/plugin-template/Cargo.toml"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../../../examples/plugin-template/.cargo/config.toml"),
    ),
    (
        "README.md",
        include_str!("../../../../examples/plugin-template/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../examples/plugin-template/src/lib.rs"),
    ),
];

/// A destination over HTTP: a WebDAV collection (examples/plugin-template-http).
const HTTP: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../../examples/plugin-template-http/Cargo.toml"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../../../examples/plugin-template-http/.cargo/config.toml"),
    ),
    (
        "README.md",
        include_str!("../../../../examples/plugin-template-http/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../examples/plugin-template-http/src/lib.rs"),
    ),
    (
        "src/multistatus.rs",
        include_str!("../../../../examples/plugin-template-http/src/multistatus.rs"),
    ),
];

/// Whether `name` can be a plugin's name: `a-z0-9-`, starting with a letter.
fn valid(name: &str) -> bool {
    name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// A template file with the template's names replaced by `name`'s.
fn adapt(path: &str, text: &str, name: &str, http: bool) -> String {
    match path {
        "Cargo.toml" => text
            .replace(
                if http {
                    "name = \"offsite-plugin-template-http\""
                } else {
                    "name = \"offsite-plugin-template\""
                },
                &format!("name = \"{name}\""),
            )
            .replace(
                "# Outside this repository: `offsite plugins new NAME` vendors the SDK.\n",
                "",
            )
            .replace(
                "offsite-sdk = { path = \"../../plugins/sdk\" }",
                "# The SDK and its WIT, as `offsite plugins new` wrote them.\noffsite-sdk = { path = \"offsite-sdk\" }",
            ),
        "src/lib.rs" => text.replace(
            if http {
                "\"template-http\""
            } else {
                "\"template\""
            },
            &format!("\"{name}\""),
        ),
        "README.md" => text
            .replace("offsite_plugin_template_http", &name.replace('-', "_"))
            .replace("offsite_plugin_template", &name.replace('-', "_"))
            .replace("../../wit/README.md", "offsite-sdk/wit/README.md"),
        _ => text.to_string(),
    }
}

/// Write the project into `./NAME` (which must not exist). Returns its path.
/// `lang`: `rust`, the only language the kit writes so far.
pub fn new(name: &str, lang: &str, http: bool, into: &Path) -> Result<PathBuf> {
    if lang != "rust" {
        bail!(
            "--lang {lang}: only `rust` projects can be written so far (see wit/README.md, \"Other languages\")"
        );
    }
    if !valid(name) {
        bail!(
            "`{name}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter (operators write `plugin = \"{name}\"`)"
        );
    }
    let root = into.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or directory",
            root.display()
        );
    }
    let files = if http { HTTP } else { FILES };
    let write = |rel: String, text: &str| -> Result<()> {
        let path = root.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    for (rel, text) in files {
        write(rel.to_string(), &adapt(rel, text, name, http))?;
    }
    for (rel, text) in SDK {
        write(format!("offsite-sdk/{rel}"), text)?;
    }
    let wasm = name.replace('-', "_");
    println!(
        "created {} ({} destination plugin)",
        root.display(),
        if http { "HTTP" } else { "directory" }
    );
    println!("  cd {name}");
    println!("  rustup target add wasm32-wasip2    # once");
    println!("  cargo build --release");
    println!("  offsite plugins test target/wasm32-wasip2/release/{wasm}.wasm --setting ...");
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid("web"));
        assert!(valid("nas-2"));
        for bad in ["", "Web", "2web", "web-", "we b", "web_dav", "../x"] {
            assert!(!valid(bad), "{bad}");
        }
    }

    #[test]
    fn the_project_names_itself_and_uses_its_vendored_sdk() {
        let cargo = adapt("Cargo.toml", FILES[0].1, "nas", false);
        assert!(cargo.contains("name = \"nas\""), "{cargo}");
        assert!(
            cargo.contains("offsite-sdk = { path = \"offsite-sdk\" }"),
            "{cargo}"
        );
        assert!(!cargo.contains("../"), "{cargo}");
        let lib = adapt("src/lib.rs", HTTP[3].1, "web", true);
        assert!(lib.contains("\"web\""), "{lib}");
        let sdk = SDK.iter().find(|(p, _)| *p == "src/bindings.rs").unwrap().1;
        assert!(
            sdk.contains("path: \"wit\""),
            "the SDK must read its own wit/"
        );
    }
}
