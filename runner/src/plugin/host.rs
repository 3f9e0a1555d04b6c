//! The engine, the linker every plugin is bound with, and loading `.wasm`
//! files: recognising what a file is, refusing what the host cannot run, and
//! caching compiled code.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{self, CONTRACT_VERSION, DESTINATION_EXPORT, NOTIFIER_EXPORT, host_api, wit};
use super::host_api::State;
use crate::limits::Limits;

/// The epoch ticker's period: the resolution of per-call time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Which world a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Destination,
    Notifier,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Destination => "destination",
            World::Notifier => "notifier",
        }
    }
}

#[derive(Clone)]
pub(crate) enum Pre {
    Destination(bindings::destination::DestinationPre<State>),
    Notifier(bindings::notifier::NotifierPre<State>),
}

/// A plugin file that loaded, described itself and can be instantiated.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub sha256: String,
    pub info: wit::PluginInfo,
    pub world: World,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    pub(crate) pre: Pre,
}

/// Why a file is not a usable plugin: one line, for `plugins check` and logs.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// Every plugin of a plugins directory, by name, plus the files refused.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    pub refused: Vec<LoadError>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }
}

pub struct PluginHost {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    pub limits: Limits,
}

impl PluginHost {
    /// `cache_dir`: where compiled plugins are kept (created 0700; loading
    /// precompiled code is only safe from a directory the runner owns).
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("offsite-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker: Linker<State> = Linker::new(&engine);
        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e}");
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wrap)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wrap)?;
        host_api::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(wrap)?;
        wit::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(wrap)?;
        if let Some(dir) = &cache_dir {
            create_private_dir(dir)?;
        }
        Ok(PluginHost {
            engine,
            linker,
            cache_dir,
            limits,
        })
    }

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
        let world = self.world_of(&component).map_err(fail)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "cannot be linked: {}; plugins may import only WASI 0.2 and offsite:plugin/host@{CONTRACT_VERSION}",
                first_line(&e)
            ))
        })?;
        let pre = match world {
            World::Destination => {
                bindings::destination::DestinationPre::new(instance_pre).map(Pre::Destination)
            }
            World::Notifier => {
                bindings::notifier::NotifierPre::new(instance_pre).map(Pre::Notifier)
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
            from_cache,
            pre,
        };
        plugin.info = super::session::describe(self, &plugin)
            .await
            .map_err(|e| fail(format!("describe() failed: {e}")))?;
        validate_info(&plugin.info, world).map_err(fail)?;
        Ok(plugin)
    }

    /// Compile without touching the cache (benchmarks).
    pub fn compile_only(&self, bytes: &[u8]) -> anyhow::Result<()> {
        Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Load already-cached compiled code (benchmarks); fails on a miss.
    pub fn deserialize_only(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        match self.compile(bytes, &sha256) {
            Ok((_, true)) => Ok(()),
            Ok((_, false)) => anyhow::bail!("not in the cache"),
            Err(e) => anyhow::bail!(e),
        }
    }

    /// Compiled code keyed by the wasm's sha256 and the engine's
    /// compatibility hash, so a different wasmtime or config never loads it.
    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, bool), String> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes)
                .map(|c| (c, false))
                .map_err(|e| format!("not a valid component: {}", first_line(&e)));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let entry = super::cache::Entry::new(dir, sha256, h.finish());
        match entry.read() {
            Ok(cached) => {
                // SAFETY: the cache directory is created 0700 by the runner,
                // and the entry's digest (over the wasm's sha256, the engine
                // hash and the code) matched, so these are the bytes this
                // engine wrote for this plugin; wasmtime still checks the
                // header and engine compatibility and errors on a mismatch.
                match unsafe { Component::deserialize(&self.engine, &cached) } {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => entry.discard(&first_line(&e)),
                }
            }
            Err(super::cache::Miss::Absent) => {}
            Err(super::cache::Miss::Damaged(why)) => entry.discard(&why),
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| format!("not a valid component: {}", first_line(&e)))?;
        entry.write(&compiled);
        // SAFETY: produced just above by this engine.
        let c = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| format!("cannot load compiled code: {}", first_line(&e)))?;
        Ok((c, false))
    }

    /// The world is told by the exported interface's name and version.
    fn world_of(&self, component: &Component) -> Result<World, String> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        for name in &exports {
            let (iface, version) = name.split_once('@').unwrap_or((name, ""));
            let world = match iface {
                DESTINATION_EXPORT => World::Destination,
                NOTIFIER_EXPORT => World::Notifier,
                _ => continue,
            };
            if version != CONTRACT_VERSION {
                let newer = version_newer(version, CONTRACT_VERSION);
                return Err(if newer {
                    format!(
                        "built against offsite:plugin@{version}, newer than this offsite supports (offsite:plugin@{CONTRACT_VERSION}); upgrade offsite or rebuild the plugin against {CONTRACT_VERSION}"
                    )
                } else {
                    format!(
                        "built against offsite:plugin@{version}; this offsite supports offsite:plugin@{CONTRACT_VERSION}: rebuild the plugin against it"
                    )
                });
            }
            return Ok(world);
        }
        Err(format!(
            "a component of another world: it exports neither {DESTINATION_EXPORT}@{CONTRACT_VERSION} nor {NOTIFIER_EXPORT}@{CONTRACT_VERSION} (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ))
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

fn version_newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) > parse(b)
}

pub(crate) fn first_line(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_string()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create plugin cache {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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

    #[test]
    fn versions_compare_numerically() {
        assert!(version_newer("0.2.0", "0.1.0"));
        assert!(version_newer("0.10.0", "0.9.0"));
        assert!(!version_newer("0.0.9", "0.1.0"));
    }
}
