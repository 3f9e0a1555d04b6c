//! Loading plugins: every `*.wasm` of the plugins directory recognised,
//! compiled (or taken from the cache), linked, and described by a throwaway
//! instance ([`super::session::describe`]); what fails is refused with the
//! reason, the others load. Above both `host` (the engine) and `session`
//! (guarded calls), so neither needs the other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::bindings::{self, wit};
use super::bindings_v0_2 as v0_2;
use super::host::{LoadError, LoadedPlugin, PluginHost, PluginSet, Pre, World, first_line};
use super::versioned::{self, Contract};

impl PluginHost {
    /// Load every `*.wasm` in `dir`. Files that fail are listed in `refused`;
    /// the others still load.
    pub async fn load_dir(&self, dir: &Path) -> anyhow::Result<PluginSet> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("plugins_dir {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        let mut set = PluginSet::default();
        for path in files {
            match self.load_file(&path).await {
                Ok(p) => {
                    if let Some(other) = set.plugins.get(&p.info.name) {
                        set.refused.push(LoadError {
                            reason: format!(
                                "another plugin is also named `{}` ({}); remove one of them",
                                p.info.name,
                                other.path.display()
                            ),
                            path,
                        });
                    } else {
                        set.plugins.insert(p.info.name.clone(), Arc::new(p));
                    }
                }
                Err(e) => set.refused.push(e),
            }
        }
        Ok(set)
    }

    /// Recognise, compile (or load from cache), link and describe one file.
    pub async fn load_file(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let fail = |reason: String| LoadError {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        classify(&bytes).map_err(fail)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, from_cache) = self.compile(&bytes, &sha256).map_err(fail)?;
        let (world, contract) = self.world_of(&component).map_err(fail)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "cannot be linked: {}; plugins may import only WASI 0.2 and offsite:plugin/host@{}",
                first_line(&e),
                contract.as_str()
            ))
        })?;
        use versioned::{DestinationPre as D, NotifierPre as N};
        let pre = match (world, contract) {
            (World::Destination, Contract::V0_1) => {
                bindings::destination::DestinationPre::new(instance_pre)
                    .map(|p| Pre::Destination(D::V0_1(p)))
            }
            (World::Destination, Contract::V0_2) => {
                v0_2::destination::DestinationPre::new(instance_pre)
                    .map(|p| Pre::Destination(D::V0_2(p)))
            }
            (World::Notifier, Contract::V0_1) => bindings::notifier::NotifierPre::new(instance_pre)
                .map(|p| Pre::Notifier(N::V0_1(p))),
            (World::Notifier, Contract::V0_2) => {
                v0_2::notifier::NotifierPre::new(instance_pre).map(|p| Pre::Notifier(N::V0_2(p)))
            }
        }
        .map_err(|e| {
            fail(format!(
                "does not match the {} world: {}",
                world.as_str(),
                first_line(&e)
            ))
        })?;
        let mut plugin = LoadedPlugin {
            path: path.to_path_buf(),
            sha256,
            info: wit::PluginInfo {
                name: String::new(),
                version: String::new(),
                kind: wit::PluginKind::Destination,
                summary: String::new(),
                settings: vec![],
            },
            world,
            contract,
            from_cache,
            pre,
        };
        plugin.info = super::session::describe(self, &plugin)
            .await
            .map_err(|e| fail(format!("describe() failed: {e}")))?;
        validate_info(&plugin.info, world).map_err(fail)?;
        Ok(plugin)
    }
}

/// What the bytes are, before handing them to the compiler, so the message
/// says what is wrong in the operator's terms.
fn classify(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(
            "not a WebAssembly file (no \\0asm header); a plugin is a component built for wasm32-wasip2"
                .into(),
        );
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(
            "a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        [_, _, 1, 0] => Ok(()),
        _ => Err("an unknown WebAssembly binary version; a plugin is a component (wasm32-wasip2)".into()),
    }
}

fn validate_info(info: &wit::PluginInfo, world: World) -> Result<(), String> {
    let kind_ok = matches!(
        (world, info.kind),
        (World::Destination, wit::PluginKind::Destination)
            | (World::Notifier, wit::PluginKind::Notifier)
    );
    if !kind_ok {
        return Err(format!(
            "describe() says kind {:?} but the component implements the {} world",
            info.kind,
            world.as_str()
        ));
    }
    let name_ok = !info.name.is_empty()
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(format!(
            "describe() returned the name {:?}; a plugin name is lowercase a-z, 0-9 and -",
            info.name
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &info.settings {
        let key_ok = !s.key.is_empty()
            && s.key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.key.ends_with("_file");
        if !key_ok || s.key == "plugin" || s.key == "on" {
            return Err(format!(
                "describe() declares the setting {:?}; keys are snake_case, must not end in `_file` and must not be `plugin` or `on`",
                s.key
            ));
        }
        if !seen.insert(&s.key) {
            return Err(format!("describe() declares the setting `{}` twice", s.key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names_what_the_bytes_are() {
        assert!(
            classify(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            classify(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(classify(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
