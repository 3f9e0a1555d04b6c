//! Plugin start-up costs, as medians over many runs: compile from wasm, load
//! from the cache, and load from the cache + instantiate + first call.
//! Run with `just bench` (needs the plugins built).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offsite::plugin::{CallContext, DestinationSession, Limits, PluginHost, settings};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wasm = std::env::var_os("OFFSITE_WASM_DIR")
        .map(PathBuf::from)
        .expect("OFFSITE_WASM_DIR (run through `just bench`)")
        .join("offsite_local_dir.wasm");
    let bytes = std::fs::read(&wasm)?;
    let cache = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    let cold = PluginHost::new(None, Limits::default())?;
    let cached = PluginHost::new(Some(cache.path().to_path_buf()), Limits::default())?;

    // Compile from wasm: every load of the uncached host compiles.
    let mut compile = vec![];
    for _ in 0..11 {
        let t = Instant::now();
        cold.compile_only(&bytes)?;
        compile.push(t.elapsed());
    }
    cached.load_file(&wasm).await?; // fills the cache
    let mut from_cache = vec![];
    for _ in 0..51 {
        let t = Instant::now();
        cached.deserialize_only(&bytes)?;
        from_cache.push(t.elapsed());
    }
    let raw = std::collections::BTreeMap::from([(
        "path".to_string(),
        target.path().display().to_string(),
    )]);
    let mut full = vec![];
    for _ in 0..51 {
        let t = Instant::now();
        let p = Arc::new(cached.load_file(&wasm).await?);
        assert!(p.from_cache);
        let s = settings::resolve(&p.info, &raw).expect("settings");
        let ctx = CallContext {
            plugin: "local-dir".into(),
            instance: "bench".into(),
            job: None,
        };
        let mut session = DestinationSession::open(&cached, p, &s, ctx).await?;
        session.list("").await?;
        full.push(t.elapsed());
    }
    println!(
        "plugin start-up, local-dir ({} KiB wasm), medians:",
        bytes.len() / 1024
    );
    println!(
        "  compile from wasm (11 runs)                              {}",
        ms(median(compile))
    );
    println!(
        "  load compiled code from the cache (51 runs)              {}",
        ms(median(from_cache))
    );
    println!(
        "  cache load + link + describe + instantiate + configure + list (51 runs)  {}",
        ms(median(full))
    );
    Ok(())
}
