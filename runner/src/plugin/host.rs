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

use super::bindings::{
    CONTRACT_VERSION, CONTRACT_VERSIONS, DESTINATION_EXPORT, NOTIFIER_EXPORT, host_api, wit,
};
use super::bindings_v0_2 as v0_2;
use super::host_api::State;
use super::versioned::{self, Contract};
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
    Destination(versioned::DestinationPre),
    Notifier(versioned::NotifierPre),
}

/// A plugin file that loaded, described itself and can be instantiated.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub sha256: String,
    pub info: wit::PluginInfo,
    pub world: World,
    /// The `offsite:plugin` version it was built against.
    pub contract: Contract,
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
        let engine = Engine::new(&config).map_err(into_anyhow)?;
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
        let wrap = into_anyhow;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wrap)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wrap)?;
        host_api::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(wrap)?;
        wit::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(wrap)?;
        v0_2::add_to_linker(&mut linker).map_err(wrap)?;
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

    /// Compile without touching the cache (benchmarks).
    pub fn compile_only(&self, bytes: &[u8]) -> anyhow::Result<()> {
        Component::new(&self.engine, bytes).map_err(into_anyhow)?;
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
    pub(super) fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, bool), String> {
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

    /// The world and contract version are told by the exported interface's
    /// name and version.
    pub(super) fn world_of(&self, component: &Component) -> Result<(World, Contract), String> {
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
            let Some(contract) = Contract::parse(version) else {
                let supported = CONTRACT_VERSIONS.join(" and ");
                let newer = version_newer(version, CONTRACT_VERSION);
                return Err(if newer {
                    format!(
                        "built against offsite:plugin@{version}, newer than this offsite supports (offsite:plugin@{supported}); upgrade offsite or rebuild the plugin against {CONTRACT_VERSION}"
                    )
                } else {
                    format!(
                        "built against offsite:plugin@{version}; this offsite supports offsite:plugin@{supported}: rebuild the plugin against {CONTRACT_VERSION}"
                    )
                });
            };
            return Ok((world, contract));
        }
        Err(format!(
            "a component of another world: it exports neither {DESTINATION_EXPORT}@{CONTRACT_VERSION} nor {NOTIFIER_EXPORT}@{CONTRACT_VERSION} (nor their 0.1.0) (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ))
    }
}

fn version_newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) > parse(b)
}

/// A wasmtime error as an anyhow one, its chain of causes kept.
fn into_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
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
    fn versions_compare_numerically() {
        assert!(version_newer("0.2.0", "0.1.0"));
        assert!(version_newer("0.10.0", "0.9.0"));
        assert!(!version_newer("0.0.9", "0.1.0"));
    }
}
