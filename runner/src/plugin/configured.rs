//! Binding the config's `[destinations.*]` and `[notifiers.*]` to loaded
//! plugins, with each plugin's own description as the judge of its settings.

use std::sync::Arc;

use super::host::{LoadedPlugin, PluginSet, World};
use super::settings::{ResolvedSettings, resolve};
use crate::config::suggest::hint;
use crate::config::{Config, ConfigError, PluginRef};

/// A destination or notifier ready to be opened.
#[derive(Clone)]
pub struct Configured {
    pub name: String,
    pub plugin: Arc<LoadedPlugin>,
    pub settings: ResolvedSettings,
}

/// Resolve one `[section.name]` against the plugins directory.
pub fn resolve_ref(
    config: &Config,
    plugins: &PluginSet,
    section: &str,
    name: &str,
    r: &PluginRef,
    world: World,
) -> Result<Configured, Vec<ConfigError>> {
    let err = |line: usize, key: String, message: String| ConfigError {
        file: config.path.clone(),
        line: Some(line),
        key,
        message,
    };
    let Some(plugin) = plugins.get(&r.plugin) else {
        let known: Vec<&str> = plugins.plugins.keys().map(String::as_str).collect();
        let hint = hint(
            &r.plugin,
            &known,
            "that directory has no plugins",
            "installed",
        );
        let refused = plugins
            .refused
            .iter()
            .filter(|e| {
                e.path
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy().replace('_', "-").contains(&r.plugin))
            })
            .map(|e| format!(" (a file there was refused: {e})"))
            .collect::<String>();
        return Err(vec![err(
            r.line,
            format!("{section}.{name}.plugin"),
            format!(
                "no plugin `{}` in {}; {hint}{refused}",
                r.plugin,
                config.runner.plugins_dir.display()
            ),
        )]);
    };
    if plugin.world != world {
        return Err(vec![err(
            r.line,
            format!("{section}.{name}.plugin"),
            format!(
                "plugin `{}` is a {}, not a {}",
                r.plugin,
                plugin.world.as_str(),
                world.as_str()
            ),
        )]);
    }
    let settings = resolve(&plugin.info, &r.settings).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| {
                err(
                    r.lines.get(&p.key).copied().unwrap_or(r.line),
                    format!("{section}.{name}.{}", p.key),
                    p.message,
                )
            })
            .collect::<Vec<_>>()
    })?;
    Ok(Configured {
        name: name.to_string(),
        plugin: plugin.clone(),
        settings,
    })
}

/// Several config errors as one message (for places that report one line).
pub fn joined(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn destination(
    config: &Config,
    plugins: &PluginSet,
    name: &str,
) -> Result<Configured, Vec<ConfigError>> {
    let r = config.destinations.get(name).ok_or_else(|| {
        vec![ConfigError {
            file: config.path.clone(),
            line: None,
            key: format!("destinations.{name}"),
            message: "not defined".into(),
        }]
    })?;
    resolve_ref(config, plugins, "destinations", name, r, World::Destination)
}

pub fn notifier(
    config: &Config,
    plugins: &PluginSet,
    name: &str,
) -> Result<Configured, Vec<ConfigError>> {
    let r = config.notifiers.get(name).ok_or_else(|| {
        vec![ConfigError {
            file: config.path.clone(),
            line: None,
            key: format!("notifiers.{name}"),
            message: "not defined".into(),
        }]
    })?;
    resolve_ref(
        config,
        plugins,
        "notifiers",
        name,
        &r.plugin,
        World::Notifier,
    )
}

/// Every destination's and notifier's settings, checked: what `config check`
/// and every run start with.
pub fn check_all(config: &Config, plugins: &PluginSet) -> Vec<ConfigError> {
    let mut errors = vec![];
    for name in config.destinations.keys() {
        if let Err(e) = destination(config, plugins, name) {
            errors.extend(e);
        }
    }
    for name in config.notifiers.keys() {
        if let Err(e) = notifier(config, plugins, name) {
            errors.extend(e);
        }
    }
    errors
}
