//! The application context: the loaded config, the plugin host and the
//! plugins checked against the config. Built once per command (and again on
//! a daemon reload); every stage above `plugin` that talks to a destination
//! or a notifier takes it.

use crate::config::Config;
use crate::plugin::{PluginHost, PluginSet, configured};

/// What a run needs from the outside world.
pub struct Runtime {
    pub config: Config,
    pub host: PluginHost,
    pub plugins: PluginSet,
}

/// Open a runtime: plugins loaded, every destination and notifier checked.
/// Errors: the plugin cache directory cannot be made private, the plugins
/// directory cannot be read, or the config's plugin settings are wrong (one
/// line per problem).
pub async fn open(config: Config) -> anyhow::Result<Runtime> {
    let host = PluginHost::new(
        Some(config.runner.plugin_cache_dir()),
        config.runner.limits(),
    )?;
    let plugins = host.load_dir(&config.runner.plugins_dir).await?;
    for e in &plugins.refused {
        tracing::warn!("plugin refused: {e}");
    }
    let errors = configured::check_all(&config, &plugins);
    if !errors.is_empty() {
        anyhow::bail!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(Runtime {
        config,
        host,
        plugins,
    })
}

/// A plugin host for commands that only inspect plugins (`config check`,
/// `plugins …`): an unwritable state_dir (a user without root) costs only
/// the compiled-code cache, not the command.
pub fn plugin_host(config: &Config) -> anyhow::Result<PluginHost> {
    PluginHost::new(
        Some(config.runner.plugin_cache_dir()),
        config.runner.limits(),
    )
    .or_else(|_| PluginHost::new(None, config.runner.limits()))
}
