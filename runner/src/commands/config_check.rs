//! `offsite config check`: is the config file right, plugins included?

use std::path::Path;

use crate::config::Config;
use crate::plugin::{CallContext, DestinationSession, NotifierSession, World, configured};

/// `offsite config check`: the file, then every destination's and notifier's
/// settings against its plugin, then each plugin's own `configure`.
pub async fn check(path: &Path) -> anyhow::Result<bool> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return Ok(false);
        }
    };
    if config.jobs.is_empty() {
        println!(
            "warning: {} defines no jobs: nothing will be backed up; add a [jobs.NAME] table (see `source`, `paths`, `schedule`)",
            config.path.display()
        );
    }
    let host = crate::runtime::plugin_host(&config)?;
    let set = host.load_dir(&config.runner.plugins_dir).await?;
    for e in &set.refused {
        println!("warning: plugin refused: {e}");
    }
    let mut errors: Vec<String> = configured::check_all(&config, &set)
        .iter()
        .map(ToString::to_string)
        .collect();
    if errors.is_empty() {
        // The plugin's own checks of the values (no network I/O in configure).
        let sections = config
            .destinations
            .keys()
            .map(|n| (n, World::Destination))
            .chain(config.notifiers.keys().map(|n| (n, World::Notifier)));
        for (name, world) in sections {
            let c = match world {
                World::Destination => configured::destination(&config, &set, name),
                World::Notifier => configured::notifier(&config, &set, name),
            };
            let Ok(c) = c else { continue };
            let ctx = CallContext {
                plugin: c.plugin.info.name.clone(),
                instance: name.clone(),
                job: None,
            };
            let r = match world {
                World::Destination => {
                    DestinationSession::open(&host, c.plugin.clone(), &c.settings, ctx)
                        .await
                        .map(drop)
                }
                World::Notifier => NotifierSession::open(&host, c.plugin.clone(), &c.settings, ctx)
                    .await
                    .map(drop),
            };
            if let Err(e) = r {
                let section = if world == World::Destination {
                    "destinations"
                } else {
                    "notifiers"
                };
                let line = config
                    .destinations
                    .get(name)
                    .map(|r| r.line)
                    .or_else(|| config.notifiers.get(name).map(|n| n.plugin.line))
                    .unwrap_or(0);
                errors.push(format!(
                    "{}:{line}: [{section}.{name}]: {e}",
                    config.path.display()
                ));
            }
        }
    }
    if errors.is_empty() {
        println!(
            "ok: {} ({} jobs, {} destinations, {} notifiers, {} plugins)",
            config.path.display(),
            config.jobs.len(),
            config.destinations.len(),
            config.notifiers.len(),
            set.plugins.len()
        );
        Ok(true)
    } else {
        for e in &errors {
            println!("{e}");
        }
        Ok(false)
    }
}
