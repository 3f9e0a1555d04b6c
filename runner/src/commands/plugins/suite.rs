//! `offsite plugins test`: the contract suite a destination must pass.
//!
//! Each step prints one line, `  STEP  ok|unsupported|FAILED  N ms  detail`:
//! configure, upload, list, list-prefix, fetch, overwrite, fetch-missing,
//! remove-missing, interrupt, remove, list. An `unsupported` answer passes
//! where the contract allows it (TFTP cannot list or delete).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{host_for, parse_settings};
use crate::config::Config;
use crate::plugin::{
    CallContext, DestinationSession, ErrorKind, LoadedPlugin, NotifierSession, PluginError,
    PluginHost, Upload, World, settings, wit,
};

/// What `plugins test` was asked for.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Bytes of random data in the main round trip.
    pub size: usize,
    /// Whole suite runs, each on a fresh instance; all must pass.
    pub repeat: u32,
    /// Forward the plugin's stdout and stderr (panics, tracebacks, prints).
    pub debug: bool,
}

/// Outcome of one step.
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

fn step_of<T>(r: &Result<T, PluginError>, ok: impl FnOnce(&T) -> Step) -> Step {
    match r {
        Ok(v) => ok(v),
        Err(e) if e.kind == ErrorKind::Unsupported => Step::Unsupported(e.message.clone()),
        Err(e) => Step::Failed(format!("[{}] {}", e.kind.as_str(), e.message)),
    }
}

/// Run the suite `opts.repeat` times. Returns whether every run passed.
pub async fn test(
    config: &Config,
    file: &Path,
    raw: &[String],
    opts: SuiteOptions,
) -> Result<bool> {
    let mut host = host_for(config)?;
    if opts.debug {
        host.limits.debug_stdio = true;
    }
    let plugin = Arc::new(host.load_file(file).await?);
    print_loaded(&plugin);
    let resolved = resolve_settings(&plugin, raw)?;
    let runs = opts.repeat.max(1);
    let mut failed = 0;
    for run in 1..=runs {
        if runs > 1 {
            println!("run {run}/{runs}");
        }
        let ok = match plugin.world {
            World::Notifier => test_notifier(&host, plugin.clone(), &resolved).await?,
            _ => Suite::run(&host, plugin.clone(), &resolved, &opts).await?,
        };
        if !ok {
            failed += 1;
        }
    }
    match (failed, runs) {
        (0, 1) => println!("conformance: passed"),
        (0, n) => println!("conformance: passed {n}/{n} runs"),
        (_, 1) => println!("conformance: FAILED"),
        (f, n) => println!("conformance: FAILED in {f} of {n} runs"),
    }
    Ok(failed == 0)
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

fn context(plugin: &LoadedPlugin) -> CallContext {
    CallContext {
        plugin: plugin.info.name.clone(),
        instance: "plugins test".into(),
        job: Some("conformance".into()),
    }
}

/// One object the suite ships: its bytes staged in a local file under the
/// object's own name, as a real generation is (plugins that hand the local
/// file to a program, like shell-compat, see the same name).
struct Object {
    name: String,
    path: std::path::PathBuf,
    size: u64,
    sha: String,
}

impl Object {
    fn new(dir: &Path, name: String, size: usize) -> Result<Object> {
        let mut data = vec![0u8; size];
        rand::rng().fill_bytes(&mut data);
        let sha = hex::encode(Sha256::digest(&data));
        let path = dir.join(&name);
        std::fs::write(&path, &data)?;
        Ok(Object {
            name,
            path,
            size: size as u64,
            sha,
        })
    }

    fn upload(&self) -> Upload<'_> {
        Upload {
            name: &self.name,
            local_path: &self.path,
            size: self.size,
            sha256: &self.sha,
            job: "conformance",
        }
    }
}

const PREFIX: &str = "offsite-conformance-";

struct Suite<'a> {
    s: DestinationSession,
    scratch: tempfile::TempDir,
    passed: bool,
    opts: &'a SuiteOptions,
    memory: u64,
}

impl Suite<'_> {
    async fn run(
        host: &PluginHost,
        plugin: Arc<LoadedPlugin>,
        resolved: &settings::ResolvedSettings,
        opts: &SuiteOptions,
    ) -> Result<bool> {
        let t = Instant::now();
        let ctx = context(&plugin);
        let s = match DestinationSession::open(host, plugin, resolved, ctx).await {
            Ok(s) => {
                report("configure", t, &Step::Ok(String::new()));
                s
            }
            Err(e) => {
                report("configure", t, &Step::Failed(e.message));
                return Ok(false);
            }
        };
        let scratch = tempfile::Builder::new()
            .prefix("offsite-conformance")
            .tempdir()?;
        let mut suite = Suite {
            s,
            scratch,
            passed: true,
            opts,
            memory: host.limits.memory_bytes as u64,
        };
        suite.steps().await?;
        Ok(suite.passed)
    }

    fn note(&mut self, name: &str, t: Instant, step: Step) {
        report(name, t, &step);
        if matches!(step, Step::Failed(_)) {
            self.passed = false;
        }
    }

    fn object(&self, tag: &str, size: usize) -> Result<Object> {
        let mut id = [0u8; 6];
        rand::rng().fill_bytes(&mut id);
        let name = format!("{PREFIX}{}{tag}.bin", hex::encode(id));
        Object::new(self.scratch.path(), name, size)
    }

    async fn steps(&mut self) -> Result<()> {
        let a = self.object("", self.opts.size)?;
        let t = Instant::now();
        let r = self.s.upload(&a.upload()).await;
        let beyond = if a.size > self.memory {
            format!(", streamed: over plugin_memory ({} MiB)", self.memory >> 20)
        } else {
            String::new()
        };
        let step = step_of(&r, |_| {
            Step::Ok(format!(
                "{}, {:.1} MiB{beyond}",
                a.name,
                a.size as f64 / 1048576.0
            ))
        });
        self.note("upload", t, step);
        if r.is_err() {
            return Ok(());
        }
        self.list_shows(&a, PREFIX, "list").await;
        self.list_prefix(&a).await;
        self.fetch_same("fetch", &a).await?;
        self.overwrite(&a).await?;
        let can_remove = self.missing().await?;
        self.interrupt(can_remove).await?;
        let t = Instant::now();
        let r = self.s.remove(&a.name, "conformance", &a.path).await;
        let step = step_of(&r, |_| Step::Ok(a.name.clone()));
        self.note("remove", t, step);
        if r.is_ok() {
            let t = Instant::now();
            let r = self.s.list(PREFIX).await;
            let step = step_of(&r, |objs| listed(objs, &a, false));
            self.note("list", t, step);
        }
        Ok(())
    }

    async fn list_shows(&mut self, o: &Object, prefix: &str, step_name: &str) {
        let t = Instant::now();
        let r = self.s.list(prefix).await;
        let step = step_of(&r, |objs| listed(objs, o, true));
        self.note(step_name, t, step);
    }

    /// `list` filters by prefix: our object under its own prefix, not under
    /// a prefix it does not start with.
    async fn list_prefix(&mut self, a: &Object) {
        let t = Instant::now();
        let own = &a.name[..a.name.len() - 4];
        let other = format!("{PREFIX}zz");
        let mine = self.s.list(own).await;
        let step = match (&mine, self.s.list(&other).await) {
            (Err(_), _) => step_of(&mine, |_| Step::Ok(String::new())),
            (_, Err(e)) => step_of::<()>(&Err(e), |_| Step::Ok(String::new())),
            (Ok(m), Ok(o)) => {
                if let Some(x) = o.iter().find(|x| !x.name.starts_with(&other)) {
                    Step::Failed(format!(
                        "list({other:?}) returned {}, which does not start with the prefix",
                        x.name
                    ))
                } else if !m.iter().any(|x| x.name == a.name) {
                    Step::Failed(format!("list({own:?}) does not show {}", a.name))
                } else {
                    Step::Ok(format!(
                        "list({own:?}) shows ours; list({other:?}) shows {} object(s)",
                        o.len()
                    ))
                }
            }
        };
        self.note("list-prefix", t, step);
    }

    /// Fetch `o` and compare its sha256; `false` on a failed step.
    async fn fetch_same(&mut self, step_name: &str, o: &Object) -> Result<bool> {
        let t = Instant::now();
        let back = self.scratch.path().join("fetched.bin");
        let r = self.s.fetch(&o.name, "conformance", &back).await;
        let step = step_of(&r, |n| {
            let got = sha256_file(&back).unwrap_or_default();
            let len = std::fs::metadata(&back).map(|m| m.len()).unwrap_or(0);
            if got == o.sha {
                return Step::Ok(format!("{n} bytes, sha256 matches"));
            }
            let why = match step_name {
                "fetch-new" if len > o.size => {
                    ": the second upload under the name did not replace the first (appended?)"
                }
                "fetch-new" => ": the second upload under the name did not replace the first",
                _ => "",
            };
            Step::Failed(format!(
                "fetched {len} bytes, sha256 {got}; uploaded {} bytes, sha256 {}{why}",
                o.size, o.sha
            ))
        });
        let _ = std::fs::remove_file(&back);
        let ok = !matches!(step, Step::Failed(_));
        self.note(step_name, t, step);
        Ok(ok)
    }

    /// A second upload under the same name replaces the first: the fetch
    /// brings back the new bytes (a different, shorter content).
    async fn overwrite(&mut self, a: &Object) -> Result<()> {
        let size = (a.size / 2 + 1).min(1 << 20) as usize;
        // Staged in a directory of its own, still under the object's name.
        let dir = self.scratch.path().join("overwrite");
        std::fs::create_dir_all(&dir)?;
        let b = Object::new(&dir, a.name.clone(), size)?;
        let t = Instant::now();
        let r = self.s.upload(&b.upload()).await;
        let step = step_of(&r, |_| {
            Step::Ok(format!("{} bytes over {}", b.size, a.size))
        });
        let uploaded = r.is_ok();
        self.note("overwrite", t, step);
        if uploaded {
            self.fetch_same("fetch-new", &b).await?;
        }
        Ok(())
    }

    /// A name that was never uploaded: `fetch` says not-found; `remove` says
    /// not-found (or succeeds: some stores cannot tell). Returns whether the
    /// plugin can remove at all.
    async fn missing(&mut self) -> Result<bool> {
        let ghost = self.object("-missing", 0)?;
        let t = Instant::now();
        let back = self.scratch.path().join("ghost.bin");
        let r = self.s.fetch(&ghost.name, "conformance", &back).await;
        let step = match &r {
            Err(e) if e.kind == ErrorKind::NotFound => Step::Ok("not-found".into()),
            Err(e) if e.kind == ErrorKind::Unsupported => Step::Unsupported(e.message.clone()),
            Err(e) => Step::Failed(format!(
                "want not-found, got [{}] {}",
                e.kind.as_str(),
                e.message
            )),
            Ok(n) => Step::Failed(format!("fetch of a name never uploaded returned {n} bytes")),
        };
        self.note("fetch-missing", t, step);
        let t = Instant::now();
        let r = self.s.remove(&ghost.name, "conformance", &ghost.path).await;
        let step = match &r {
            Err(e) if e.kind == ErrorKind::NotFound => Step::Ok("not-found".into()),
            Ok(()) => Step::Ok("success (the store does not tell a missing name)".into()),
            _ => step_of(&r, |_| Step::Ok(String::new())),
        };
        self.note("remove-missing", t, step);
        Ok(!matches!(&r, Err(e) if e.kind == ErrorKind::Unsupported))
    }

    /// The upload stream fails half-way: the call must fail and nothing may
    /// be visible under the name (checked by `list`, else by `fetch`). Not
    /// tried on a protocol that cannot delete (TFTP): what a cut upload
    /// leaves there could never be cleaned up.
    async fn interrupt(&mut self, can_remove: bool) -> Result<()> {
        if !can_remove {
            let why = "not tried: the protocol cannot delete, so a cut upload may stay on the server under its name";
            self.note("interrupt", Instant::now(), Step::Unsupported(why.into()));
            return Ok(());
        }
        // As large as the main object up to 64 MiB, so a plugin that
        // uploads in parts (S3 multipart) is cut after some parts went.
        let size = self.opts.size.clamp(2, 64 << 20);
        let c = self.object("-cut", size)?;
        let t = Instant::now();
        let (r, met) = self.s.upload_cut(&c.upload(), c.size / 2).await;
        if r.is_ok() && !met {
            // It never read the stream that far: it uploads from
            // `local_path` (an operator's program), which is whole.
            let _ = self.s.remove(&c.name, "conformance", &c.path).await;
            let why = "not tried: the plugin does not read the upload stream (it hands local_path to a program); the program's own failures are its to report";
            self.note("interrupt", t, Step::Unsupported(why.into()));
            return Ok(());
        }
        if r.is_ok() {
            self.note(
                "interrupt",
                t,
                Step::Failed(format!(
                    "upload reported success although its stream failed after {} of {} bytes",
                    c.size / 2,
                    c.size
                )),
            );
            let _ = self.s.remove(&c.name, "conformance", &c.path).await;
            return Ok(());
        }
        let step = self.nothing_under(&c).await;
        self.note("interrupt", t, step);
        Ok(())
    }

    async fn nothing_under(&mut self, c: &Object) -> Step {
        match self.s.list(PREFIX).await {
            Ok(objs) if objs.iter().any(|o| o.name == c.name) => {
                let _ = self.s.remove(&c.name, "conformance", &c.path).await;
                return Step::Failed(format!(
                    "{} is listed after an upload that failed half-way",
                    c.name
                ));
            }
            Ok(_) => return Step::Ok("upload failed; nothing listed under the name".into()),
            Err(e) if e.kind == ErrorKind::Unsupported => {}
            Err(e) => return Step::Failed(format!("list: [{}] {}", e.kind.as_str(), e.message)),
        }
        let back = self.scratch.path().join("cut.bin");
        match self.s.fetch(&c.name, "conformance", &back).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                Step::Ok("upload failed; fetch finds nothing under the name".into())
            }
            Err(e) => Step::Failed(format!(
                "after a failed upload, fetch says [{}] {} (want not-found)",
                e.kind.as_str(),
                e.message
            )),
            Ok(n) => Step::Failed(format!(
                "after an upload that failed half-way, fetch returns {n} bytes under the name"
            )),
        }
    }
}

fn listed(objs: &[wit::ObjectInfo], o: &Object, want: bool) -> Step {
    let found = objs.iter().find(|x| x.name == o.name);
    match (found, want) {
        (Some(x), true) if x.size.is_none_or(|n| n == o.size) => {
            Step::Ok(format!("{} object(s), ours among them", objs.len()))
        }
        (Some(x), true) => Step::Failed(format!(
            "lists {} with {} bytes, uploaded {}",
            o.name,
            x.size.unwrap_or(0),
            o.size
        )),
        (None, true) => Step::Failed(format!("{} is not listed after upload", o.name)),
        (Some(_), false) => Step::Failed(format!("{} is still listed after remove", o.name)),
        (None, false) => Step::Ok(format!("{} object(s), ours gone", objs.len())),
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

async fn test_notifier(
    host: &PluginHost,
    plugin: Arc<LoadedPlugin>,
    settings: &settings::ResolvedSettings,
) -> Result<bool> {
    let t = Instant::now();
    let ctx = context(&plugin);
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
    Ok(!matches!(step, Step::Failed(_)))
}
