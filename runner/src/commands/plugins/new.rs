//! `offsite plugins new NAME [--lang rust|python] [--http]`: a plugin
//! project that builds wherever it is put. Rust: plain `cargo build
//! --release`, the SDK (and the WIT it is generated from) vendored inside it,
//! so it needs neither this repository nor a published crate. Python (HTTP
//! only): componentize-py against the WIT files written beside `app.py`.

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

/// A destination over HTTP in Python (examples/plugin-template-python),
/// with the WIT it builds against (wit/python; deps/offsite is plugin.wit).
const PYTHON: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../../examples/plugin-template-python/app.py"),
    ),
    (
        "README.md",
        include_str!("../../../../examples/plugin-template-python/README.md"),
    ),
    (
        "wit/world.wit",
        include_str!("../../../../wit/python/world.wit"),
    ),
    (
        "wit/deps/offsite/plugin.wit",
        include_str!("../../../../wit/plugin.wit"),
    ),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../../../wit/python/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../../../wit/python/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../../../wit/python/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/http/http.wit",
        include_str!("../../../../wit/python/deps/http/http.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../../wit/python/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../../../wit/python/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../../../wit/python/deps/sockets/sockets.wit"),
    ),
];

/// Write a Python project (`--lang python --http`) into `root`.
fn new_python(name: &str, root: &Path) -> Result<()> {
    for (rel, text) in PYTHON {
        let text = match *rel {
            "app.py" => text.replace("\"template-python\"", &format!("\"{name}\"")),
            "README.md" => text.replace("offsite_plugin_template_python", &name.replace('-', "_")),
            _ => text.to_string(),
        };
        write_file(&root.join(rel), &text)?;
    }
    let wasm = name.replace('-', "_");
    println!(
        "created {} (Python HTTP destination plugin)",
        root.display()
    );
    println!("  cd {name}");
    println!("  pip install componentize-py==0.25.1    # once");
    println!("  componentize-py -d wit -w destination-http componentize app -o {wasm}.wasm");
    println!(
        "  offsite plugins test {wasm}.wasm --setting url=... --setting user=... --setting password_file=..."
    );
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

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
/// `lang`: `rust`, or `python` (with `http`).
pub fn new(name: &str, lang: &str, http: bool, into: &Path) -> Result<PathBuf> {
    match (lang, http) {
        ("rust", _) | ("python", true) => {}
        ("python", false) => bail!(
            "--lang python: the Python template is an HTTP (WebDAV) destination; add --http (see wit/README.md, \"Python\")"
        ),
        _ => bail!("--lang {lang}: write rust or python"),
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
    if lang == "python" {
        new_python(name, &root)?;
        return Ok(root);
    }
    let files = if http { HTTP } else { FILES };
    for (rel, text) in files {
        write_file(&root.join(rel), &adapt(rel, text, name, http))?;
    }
    for (rel, text) in SDK {
        write_file(&root.join("offsite-sdk").join(rel), text)?;
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
