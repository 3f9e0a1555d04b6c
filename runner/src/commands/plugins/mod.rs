//! `offsite plugins list | inspect | check | test`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::plugin::{
    CallContext, DestinationSession, ErrorKind, LoadedPlugin, NotifierSession, PluginHost, Upload,
    World, settings, wit,
};
use crate::runtime::plugin_host as host_for;

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
        println!(
            "{:<16} {:<9} {:<12} {:<9} {:<13} {}",
            p.info.name,
            p.info.version,
            p.world.as_str(),
            p.contract.as_str(),
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

/// One line: loaded and what it is, or why not.
pub async fn check(config: &Config, file: &Path) -> Result<bool> {
    let host = host_for(config)?;
    match host.load_file(file).await {
        Ok(p) => {
            println!(
                "ok: {} {} {} plugin, offsite:plugin@{} ({})",
                p.info.name,
                p.info.version,
                p.world.as_str(),
                p.contract.as_str(),
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

/// Outcome of one conformance step.
enum Step {
    Ok(String),
    Unsupported(String),
    Failed(String),
}

fn report(name: &str, started: Instant, step: &Step) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let (tag, text) = match step {
        Step::Ok(t) => ("ok", t),
        Step::Unsupported(t) => ("unsupported", t),
        Step::Failed(t) => ("FAILED", t),
    };
    println!("  {name:<8} {tag:<11} {ms:>9.1} ms  {text}");
    let _ = std::io::stdout().flush();
}

fn step_of<T>(r: &Result<T, crate::plugin::PluginError>, ok: impl FnOnce(&T) -> Step) -> Step {
    match r {
        Ok(v) => ok(v),
        Err(e) if e.kind == ErrorKind::Unsupported => Step::Unsupported(e.message.clone()),
        Err(e) => Step::Failed(format!("[{}] {}", e.kind.as_str(), e.message)),
    }
}

/// The conformance round trip. Returns whether every step passed (an
/// `unsupported` answer is a pass: the contract allows it).
pub async fn test(config: &Config, file: &Path, raw: &[String], size: usize) -> Result<bool> {
    let host = host_for(config)?;
    let plugin = Arc::new(host.load_file(file).await?);
    print_loaded(&plugin);
    let resolved = resolve_settings(&plugin, raw)?;
    let ctx = CallContext {
        plugin: plugin.info.name.clone(),
        instance: "plugins test".into(),
        job: Some("conformance".into()),
    };
    if plugin.world == World::Notifier {
        return test_notifier(&host, plugin, &resolved, ctx).await;
    }
    let t = Instant::now();
    let mut s = match DestinationSession::open(&host, plugin.clone(), &resolved, ctx).await {
        Ok(s) => {
            report("configure", t, &Step::Ok(String::new()));
            s
        }
        Err(e) => {
            report("configure", t, &Step::Failed(e.message));
            return Ok(false);
        }
    };
    let object = TestObject::stage(size)?;
    let passed = round_trip(&mut s, &object).await;
    println!(
        "{}",
        if passed {
            "conformance: passed"
        } else {
            "conformance: FAILED"
        }
    );
    Ok(passed)
}

/// The plugin's name, version, world, hash and whether its code came from
/// the cache: the first line of `plugins test`.
fn print_loaded(plugin: &LoadedPlugin) {
    println!(
        "{} {} ({}), sha256 {}, {}",
        plugin.info.name,
        plugin.info.version,
        plugin.world.as_str(),
        &plugin.sha256[..12],
        if plugin.from_cache {
            "compiled code from cache"
        } else {
            "compiled"
        }
    );
}

/// `--setting KEY=VALUE` pairs checked against what the plugin declares.
fn resolve_settings(plugin: &LoadedPlugin, raw: &[String]) -> Result<settings::ResolvedSettings> {
    settings::resolve(&plugin.info, &parse_settings(raw)?).map_err(|problems| {
        anyhow::anyhow!(
            "settings refused:\n{}",
            problems
                .iter()
                .map(|p| format!("  --setting {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Prefix of every object `plugins test` writes.
const TEST_PREFIX: &str = "offsite-conformance-";

/// Random bytes staged in a scratch folder under the object's own name, as a
/// real generation is: plugins that hand the local file to a program
/// (shell-compat) see the same name.
struct TestObject {
    scratch: tempfile::TempDir,
    name: String,
    src: std::path::PathBuf,
    size: usize,
    sha: String,
}

impl TestObject {
    fn stage(size: usize) -> Result<TestObject> {
        let scratch = tempfile::Builder::new()
            .prefix("offsite-conformance")
            .tempdir()?;
        let mut data = vec![0u8; size];
        rand::rng().fill_bytes(&mut data);
        let sha = hex::encode(Sha256::digest(&data));
        let name = format!("{TEST_PREFIX}{}.bin", &sha[..12]);
        let src = scratch.path().join(&name);
        std::fs::write(&src, &data)?;
        Ok(TestObject {
            scratch,
            name,
            src,
            size,
            sha,
        })
    }

    /// Whether a listing shows the object (`want`) or no longer does.
    fn listed(&self, objs: &[wit::ObjectInfo], want: bool) -> Step {
        let (name, size) = (&self.name, self.size);
        let found = objs.iter().find(|o| o.name == *name);
        match (found, want) {
            (Some(o), true) if o.size.is_none_or(|n| n == size as u64) => {
                Step::Ok(format!("{} object(s), ours among them", objs.len()))
            }
            (Some(o), true) => Step::Failed(format!(
                "lists {name} with {} bytes, uploaded {size}",
                o.size.unwrap_or(0)
            )),
            (None, true) => Step::Failed(format!("{name} is not listed after upload")),
            (Some(_), false) => Step::Failed(format!("{name} is still listed after remove")),
            (None, false) => Step::Ok(format!("{} object(s), ours gone", objs.len())),
        }
    }
}

/// Upload, list, fetch (sha256 compared), remove, list again; each step
/// reported. False when any step failed.
async fn round_trip(s: &mut DestinationSession, obj: &TestObject) -> bool {
    let mut passed = true;
    let mut note = |name: &str, t: Instant, step: Step| {
        report(name, t, &step);
        if matches!(step, Step::Failed(_)) {
            passed = false;
        }
    };
    let t = Instant::now();
    let r = s
        .upload(&Upload {
            name: &obj.name,
            local_path: &obj.src,
            size: obj.size as u64,
            sha256: &obj.sha,
            job: "conformance",
        })
        .await;
    let uploaded = r.is_ok();
    note(
        "upload",
        t,
        step_of(&r, |_| {
            Step::Ok(format!(
                "{}, {:.1} MiB",
                obj.name,
                obj.size as f64 / 1048576.0
            ))
        }),
    );
    if !uploaded {
        return passed;
    }
    let t = Instant::now();
    let r = s.list(TEST_PREFIX).await;
    note("list", t, step_of(&r, |o| obj.listed(o, true)));

    let t = Instant::now();
    let back = obj.scratch.path().join("fetched.bin");
    let r = s.fetch(&obj.name, "conformance", &back).await;
    note(
        "fetch",
        t,
        step_of(&r, |n| {
            let got = std::fs::read(&back)
                .map(|b| hex::encode(Sha256::digest(b)))
                .unwrap_or_default();
            if got == obj.sha {
                Step::Ok(format!("{n} bytes, sha256 matches"))
            } else {
                Step::Failed(format!("sha256 {got} differs from uploaded {}", obj.sha))
            }
        }),
    );

    let t = Instant::now();
    let r = s.remove(&obj.name, "conformance", &obj.src).await;
    let removed = r.is_ok();
    note("remove", t, step_of(&r, |_| Step::Ok(obj.name.clone())));
    if removed {
        let t = Instant::now();
        let r = s.list(TEST_PREFIX).await;
        note("list", t, step_of(&r, |o| obj.listed(o, false)));
    }
    passed
}

async fn test_notifier(
    host: &PluginHost,
    plugin: Arc<LoadedPlugin>,
    settings: &settings::ResolvedSettings,
    ctx: CallContext,
) -> Result<bool> {
    let t = Instant::now();
    let mut s = match NotifierSession::open(host, plugin, settings, ctx).await {
        Ok(s) => {
            report("configure", t, &Step::Ok(String::new()));
            s
        }
        Err(e) => {
            report("configure", t, &Step::Failed(e.message));
            return Ok(false);
        }
    };
    let t = Instant::now();
    let event = crate::notify::test_event();
    let r = s.notify(&event).await;
    let step = step_of(&r, |_| Step::Ok("test event sent".into()));
    report("notify", t, &step);
    let ok = !matches!(step, Step::Failed(_));
    println!(
        "{}",
        if ok {
            "conformance: passed"
        } else {
            "conformance: FAILED"
        }
    );
    Ok(ok)
}
