//! `offsite plugins list | inspect | check | test | new`.

mod new;
mod suite;

pub use new::new;
pub use suite::{SuiteOptions, test};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::plugin::{LoadedPlugin, wit};
pub(crate) use crate::runtime::plugin_host as host_for;

pub async fn list(config: &Config) -> Result<()> {
    let host = host_for(config)?;
    let set = host.load_dir(&config.runner.plugins_dir).await?;
    if set.plugins.is_empty() && set.refused.is_empty() {
        println!("no plugins in {}", config.runner.plugins_dir.display());
    }
    if !set.plugins.is_empty() {
        println!(
            "{:<16} {:<9} {:<12} {:<9} {:<13} FILE",
            "NAME", "VERSION", "KIND", "CONTRACT", "SHA256"
        );
    }
    for p in set.plugins.values() {
        let (name, version, world, contract) = identity(p);
        println!(
            "{name:<16} {version:<9} {world:<12} {contract:<9} {:<13} {}",
            &p.sha256[..12],
            p.path.display()
        );
    }
    for e in &set.refused {
        println!("refused: {e}");
    }
    Ok(())
}

pub async fn inspect(config: &Config, name: &str) -> Result<()> {
    let host = host_for(config)?;
    let set = host.load_dir(&config.runner.plugins_dir).await?;
    let p = match set.get(name) {
        Some(p) => p.clone(),
        None if Path::new(name).exists() => Arc::new(host.load_file(Path::new(name)).await?),
        None => {
            let known: Vec<&str> = set.plugins.keys().map(String::as_str).collect();
            bail!(
                "no plugin `{name}` in {}; installed: {}",
                config.runner.plugins_dir.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    };
    print_info(&p);
    Ok(())
}

fn role_text(r: wit::SettingRole) -> &'static str {
    match r {
        wit::SettingRole::Plain => "",
        wit::SettingRole::NetworkHost => "grants network access to this host",
        wit::SettingRole::HttpUrl => "grants HTTP access to this URL's host:port",
        wit::SettingRole::Directory => "grants read-write access to this directory",
        wit::SettingRole::ExecDirectory => "grants running the programs in this directory",
    }
}

fn print_info(p: &LoadedPlugin) {
    let i = &p.info;
    println!(
        "{} {} ({}, offsite:plugin@{})",
        i.name,
        i.version,
        p.world.as_str(),
        p.contract.as_str()
    );
    println!("  {}", i.summary);
    println!("  file:   {}", p.path.display());
    println!("  sha256: {}", p.sha256);
    if i.settings.is_empty() {
        println!("  settings: none");
        return;
    }
    println!("  settings:");
    for s in &i.settings {
        let mut tags = vec![];
        if s.required {
            tags.push("required".to_string());
        }
        if s.secret {
            tags.push(format!("secret, or {}_file", s.key));
        }
        if let Some(d) = &s.default {
            tags.push(format!("default {d:?}"));
        }
        let role = role_text(s.role);
        if !role.is_empty() {
            tags.push(role.to_string());
        }
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", tags.join("; "))
        };
        println!("    {:<20} {}{tags}", s.key, s.description);
    }
}

/// What a loaded plugin says it is: name, version, world and contract.
fn identity(p: &LoadedPlugin) -> (&str, &str, &str, &str) {
    (
        &p.info.name,
        &p.info.version,
        p.world.as_str(),
        p.contract.as_str(),
    )
}

/// One line: loaded and what it is, or why not.
pub async fn check(config: &Config, file: &Path) -> Result<bool> {
    let host = host_for(config)?;
    match host.load_file(file).await {
        Ok(p) => {
            let (name, version, world, contract) = identity(&p);
            println!(
                "ok: {name} {version} {world} plugin, offsite:plugin@{contract} ({})",
                file.display()
            );
            Ok(true)
        }
        Err(e) => {
            println!("refused: {e}");
            Ok(false)
        }
    }
}

/// Parse `--setting key=value` pairs; `key_file=PATH` reads a secret.
pub fn parse_settings(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--setting {p:?}: write KEY=VALUE"))?;
        match k.strip_suffix("_file") {
            Some(base) => {
                let secret = crate::config::read_secret_file(Path::new(v))
                    .map_err(|e| anyhow::anyhow!("--setting {k}: {e}"))?;
                out.insert(base.to_string(), secret);
            }
            None => {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(out)
}
