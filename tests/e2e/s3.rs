//! The `s3` destination plugin against a real S3 API server (moto, started
//! per test on a free port): single PUT and multipart round trips, listing
//! with pagination, remove, 503 SlowDown storms through a relay, credential
//! errors, the sandbox refusing a redirect to another authority, the
//! conformance run of `offsite plugins test`, and the runner's peak memory
//! while shipping 1 GiB.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use offsite::plugin::{
    CallContext, DestinationSession, ErrorKind, Limits, LoadedPlugin, PluginError, PluginHost,
    Upload, settings,
};
use offsite_tests::jobs::runner_table_at;
use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};
use offsite_tests::s3::{Mischief, Moto, Relay};
use rand::RngCore;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        call_timeout: Duration::from_secs(120),
        transfer_timeout: Duration::from_secs(600),
        stall_timeout: Duration::from_secs(120),
        debug_stdio: false,
    }
}

async fn load(host: &PluginHost) -> Arc<LoadedPlugin> {
    Arc::new(
        host.load_file(&wasm("offsite_s3"))
            .await
            .expect("the s3 plugin loads"),
    )
}

/// Settings for `endpoint`/`bucket` with the given key pair, plus `extra`.
fn settings_for(
    endpoint: &str,
    bucket: &str,
    key: &(String, String),
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut s: BTreeMap<String, String> = [
        ("endpoint", endpoint),
        ("bucket", bucket),
        ("access_key_id", key.0.as_str()),
        ("secret_access_key", key.1.as_str()),
        ("prefix", "calls/"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        s.insert(k.to_string(), v.to_string());
    }
    s
}

async fn open(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    raw: &BTreeMap<String, String>,
) -> Result<DestinationSession, PluginError> {
    let s = settings::resolve(&plugin.info, raw).expect("settings resolve");
    let ctx = CallContext {
        plugin: "s3".into(),
        instance: "test".into(),
        job: Some("calls".into()),
    };
    DestinationSession::open(host, plugin.clone(), &s, ctx).await
}

/// A file of `size` random bytes, written in 1 MiB steps; its sha256.
fn random_file(dir: &Path, name: &str, size: u64) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rand::rng().fill_bytes(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    (path, hex::encode(h.finalize()))
}

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

async fn upload(
    s: &mut DestinationSession,
    name: &str,
    path: &Path,
    sha: &str,
) -> Result<(), PluginError> {
    let size = std::fs::metadata(path).unwrap().len();
    s.upload(&Upload {
        name,
        local_path: path,
        size,
        sha256: sha,
        job: "calls",
    })
    .await
}

/// Fetch through the plugin and return the fetched file's sha256.
async fn fetch_sha(s: &mut DestinationSession, name: &str, dir: &Path) -> String {
    let to = dir.join(format!("{name}.fetched"));
    let n = s.fetch(name, "calls", &to).await.expect("fetch");
    assert_eq!(n, std::fs::metadata(&to).unwrap().len());
    let sha = sha256_of(&to);
    std::fs::remove_file(&to).unwrap();
    sha
}

#[tokio::test]
async fn single_put_and_multipart_upload_fetch_back_identical_then_remove() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let raw = settings_for(&moto.endpoint(), "backups", &moto.key, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();

    let (small, small_sha) = random_file(dir.path(), "small.bin", 5_000_000);
    upload(&mut s, "calls-1.sql.zst", &small, &small_sha)
        .await
        .unwrap();
    let (big, big_sha) = random_file(dir.path(), "big.bin", 300 * MIB);
    upload(&mut s, "calls-2.sql.zst", &big, &big_sha)
        .await
        .unwrap();

    // A single PUT has a plain MD5 ETag; a multipart upload "md5-<parts>":
    // 300 MiB in parts of 16 MiB is 19 parts.
    let objs = moto.objects("backups", "calls/");
    let etag = |k: &str| {
        objs.iter()
            .find(|o| o.0 == k)
            .unwrap_or_else(|| panic!("{k} missing in {objs:?}"))
            .2
            .clone()
    };
    assert!(!etag("calls/calls-1.sql.zst").contains('-'), "{objs:?}");
    assert!(etag("calls/calls-2.sql.zst").ends_with("-19"), "{objs:?}");
    assert!(moto.multipart_uploads("backups").is_empty());

    assert_eq!(
        fetch_sha(&mut s, "calls-1.sql.zst", dir.path()).await,
        small_sha
    );
    assert_eq!(
        fetch_sha(&mut s, "calls-2.sql.zst", dir.path()).await,
        big_sha
    );

    let listed = s.list("").await.unwrap();
    let names: Vec<(&str, Option<u64>)> =
        listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(
        names,
        vec![
            ("calls-1.sql.zst", Some(5_000_000)),
            ("calls-2.sql.zst", Some(300 * MIB))
        ]
    );
    assert!(
        listed
            .iter()
            .all(|o| o.modified.is_some_and(|t| t > 1_700_000_000))
    );

    s.remove("calls-1.sql.zst", "calls", &small).await.unwrap();
    let left: Vec<String> = moto
        .objects("backups", "calls/")
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(left, vec!["calls/calls-2.sql.zst".to_string()]);
    let e = s
        .remove("calls-1.sql.zst", "calls", &small)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = s
        .fetch("calls-1.sql.zst", "calls", &dir.path().join("gone"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn list_pages_through_1500_objects_under_the_prefix_only() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    moto.fill("backups", "calls/", 1500);
    moto.fill("backups", "other/", 3);
    moto.fill("backups", "calls/nested/", 2);
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let raw = settings_for(&moto.endpoint(), "backups", &moto.key, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();

    let all = s.list("").await.unwrap();
    assert_eq!(all.len(), 1500, "S3 pages hold 1,000 keys: two pages");
    assert_eq!(all[0].name, "obj-00000.bin");
    assert_eq!(all[1499].name, "obj-01499.bin");
    assert_eq!(all[8].size, Some(1));
    let some = s.list("obj-0001").await.unwrap();
    let names: Vec<&str> = some.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("obj-0001")));
}

#[tokio::test]
async fn slowdown_on_every_7th_request_is_retried_and_the_object_is_whole() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let relay = Relay::start(moto.port, Mischief::SlowDownEvery(7));
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let raw = settings_for(
        &relay.endpoint(),
        "backups",
        &moto.key,
        &[("part_size", "5MiB"), ("parallel_parts", "4")],
    );
    let mut s = open(&host, &plugin, &raw).await.unwrap();

    let (big, big_sha) = random_file(dir.path(), "big.bin", 120 * MIB);
    upload(&mut s, "storm.bin", &big, &big_sha).await.unwrap();
    let (small, small_sha) = random_file(dir.path(), "small.bin", 3 * MIB);
    for i in 0..4 {
        upload(&mut s, &format!("small-{i}.bin"), &small, &small_sha)
            .await
            .unwrap();
    }
    assert_eq!(fetch_sha(&mut s, "storm.bin", dir.path()).await, big_sha);
    assert_eq!(s.list("").await.unwrap().len(), 5);

    let log = &relay.log;
    assert!(
        log.injected.load(Ordering::SeqCst) >= 4,
        "the relay injected {} SlowDowns in {} requests",
        log.injected.load(Ordering::SeqCst),
        log.requests.load(Ordering::SeqCst)
    );
    // 24 parts + 4 single PUTs, plus the PUTs retried after a SlowDown.
    assert!(log.md5_ok.load(Ordering::SeqCst) >= 28);
    assert_eq!(*log.md5_bad.lock().unwrap(), Vec::<String>::new());
    assert!(moto.multipart_uploads("backups").is_empty());
    let (_, size, _) = moto
        .objects("backups", "calls/storm.bin")
        .pop()
        .expect("stored");
    assert_eq!(size, 120 * MIB);
}

#[tokio::test]
async fn parts_that_keep_failing_give_transient_abort_and_leave_nothing() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let relay = Relay::start(moto.port, Mischief::SlowDownPartsAfter(2));
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let raw = settings_for(
        &relay.endpoint(),
        "backups",
        &moto.key,
        &[("part_size", "5MiB")],
    );
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let (big, big_sha) = random_file(dir.path(), "big.bin", 40 * MIB);
    let started = Instant::now();
    let e = upload(&mut s, "doomed.bin", &big, &big_sha)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("SlowDown"), "{e}");
    assert!(e.message.contains("gave up after 8 attempts"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(120));
    // Nothing is shipped, and no part is left behind.
    assert_eq!(
        moto.objects("backups", ""),
        Vec::<(String, u64, String)>::new()
    );
    assert_eq!(moto.multipart_uploads("backups"), Vec::<String>::new());
    assert!(relay.log.injected.load(Ordering::SeqCst) >= 7);
    let listed = s.list("").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn bad_credentials_are_config_errors_that_name_the_setting() {
    let moto = Moto::start_with_auth(&["backups"]);
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let (file, sha) = random_file(dir.path(), "f.bin", 100_000);

    // Control: the right key pair works, also for a multipart upload.
    let raw = settings_for(&moto.endpoint(), "backups", &moto.key, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    upload(&mut s, "ok.bin", &file, &sha).await.unwrap();
    let (big, big_sha) = random_file(dir.path(), "big.bin", 12 * MIB);
    let raw_mp = settings_for(
        &moto.endpoint(),
        "backups",
        &moto.key,
        &[("part_size", "5MiB")],
    );
    let mut mp = open(&host, &plugin, &raw_mp).await.unwrap();
    upload(&mut mp, "ok-mp.bin", &big, &big_sha).await.unwrap();
    assert_eq!(fetch_sha(&mut mp, "ok-mp.bin", dir.path()).await, big_sha);

    let wrong_secret = (moto.key.0.clone(), format!("{}x", moto.key.1));
    let raw = settings_for(&moto.endpoint(), "backups", &wrong_secret, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let e = upload(&mut s, "no.bin", &file, &sha).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("SignatureDoesNotMatch"), "{e}");
    assert!(e.message.contains("check `secret_access_key`"), "{e}");
    assert!(
        !e.message.contains(&wrong_secret.1),
        "the secret leaked: {e}"
    );
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");

    let wrong_id = ("AKIAOFFSITEUNKNOWN00".to_string(), moto.key.1.clone());
    let raw = settings_for(&moto.endpoint(), "backups", &wrong_id, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let e = upload(&mut s, "no.bin", &file, &sha).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("check `access_key_id`"), "{e}");

    let raw = settings_for(&moto.endpoint(), "no-such-bucket", &moto.key, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("check `bucket`"), "{e}");

    let names: Vec<String> = moto
        .objects("backups", "")
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(names, vec!["calls/ok-mp.bin", "calls/ok.bin"]);
}

#[tokio::test]
async fn a_redirect_to_another_authority_is_refused_by_the_sandbox() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    // The relay is the endpoint; it redirects everything to moto, which is
    // another host:port the plugin was not given.
    let relay = Relay::start(moto.port, Mischief::RedirectTo(moto.endpoint()));
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let raw = settings_for(&relay.endpoint(), "backups", &moto.key, &[]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let (file, sha) = random_file(dir.path(), "f.bin", 1000);
    let e = upload(&mut s, "x.bin", &file, &sha).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("HttpRequestDenied"), "{e}");
    let moto_authority = format!("127.0.0.1:{}", moto.port);
    assert!(
        e.message
            .contains(&format!("refused an HTTP request PUT {moto_authority}")),
        "the host names the refused authority: {e}"
    );
    assert!(e.message.contains("`endpoint`"), "{e}");
    assert!(relay.log.injected.load(Ordering::SeqCst) >= 1);
    // Nothing reached moto.
    assert!(moto.objects("backups", "").is_empty());
}

/// Virtual-hosted style addresses `bucket.host`, another authority than
/// `endpoint`: the sandbox refuses it, and the error says which setting helps.
#[tokio::test]
async fn virtual_hosted_style_is_refused_and_the_error_names_path_style() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let host = PluginHost::new(None, limits()).unwrap();
    let plugin = load(&host).await;
    let endpoint = format!("http://localhost:{}", moto.port);
    let raw = settings_for(&endpoint, "backups", &moto.key, &[("path_style", "false")]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("HttpRequestDenied"), "{e}");
    assert!(e.message.contains("set `path_style` = true"), "{e}");
    // Control: path style on the same endpoint works.
    let raw = settings_for(&endpoint, "backups", &moto.key, &[("path_style", "true")]);
    let mut s = open(&host, &plugin, &raw).await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
}

fn conformance(settings: &[String], size: Option<u64>) -> String {
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(wasm("offsite_s3"));
    for s in settings {
        cmd.args(["--setting", s]);
    }
    if let Some(n) = size {
        cmd.args(["--size", &n.to_string()]);
    }
    let o = run(cmd.env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("conformance: passed"), "{out}");
    out
}

fn cli_settings(endpoint: &str, key: &(String, String), extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("endpoint={endpoint}"),
        "bucket=backups".into(),
        format!("access_key_id={}", key.0),
        format!("secret_access_key={}", key.1),
        "prefix=conformance/".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn plugins_test_passes_against_moto_and_leaves_nothing_behind() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let out = conformance(&cli_settings(&moto.endpoint(), &moto.key, &[]), None);
    for step in ["upload   ok", "list     ok", "fetch    ok", "remove   ok"] {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    let contract = [
        "list-prefix ok",
        "overwrite ok",
        "fetch-new ok",
        "fetch-missing ok",
        "remove-missing ok",
        "interrupt ok",
    ];
    for step in contract {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    // A multipart round trip too: 23 MiB in parts of 5 MiB; the suite's
    // interrupted upload (23 MiB, cut after half) dies after two parts went,
    // and must abort its multipart upload (checked below).
    let out = conformance(
        &cli_settings(&moto.endpoint(), &moto.key, &["part_size=5MiB"]),
        Some(23 * MIB),
    );
    for step in contract {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    assert!(moto.objects("backups", "").is_empty());
    assert!(moto.multipart_uploads("backups").is_empty());
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `offsite plugins test --size 1GiB` first builds the random file in
/// memory (1 GiB of RSS), and after the fetch it reads the fetched file
/// whole to hash it; so the peak is reset (`/proc/PID/clear_refs` 5) once
/// the first buffer is gone, and read when the upload step reports.
#[test]
fn peak_rss_while_shipping_1_gib_stays_within_parts_in_flight_plus_64_mib() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    // The runner keeps compiled plugins in a cache (compiling costs ~40 MiB
    // of peak RSS once); measure that steady state, with a cache of this
    // test's own that `plugins check` fills first.
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("offsite.toml");
    std::fs::write(
        &config,
        runner_table_at(
            state.path(),
            state.path(),
            state.path(),
            &state.path().join("log"),
        ),
    )
    .unwrap();
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "check"])
        .arg(wasm("offsite_s3"))
        .env("OFFSITE_CONFIG", &config));
    assert!(o.status.success(), "{}", text(&o));
    let (parts, part_size) = (4u64, 16 * MIB);
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(wasm("offsite_s3"));
    for s in cli_settings(
        &moto.endpoint(),
        &moto.key,
        &["part_size=16MiB", "parallel_parts=4"],
    ) {
        cmd.args(["--setting", &s]);
    }
    let mut child = cmd
        .args(["--size", &(1u64 << 30).to_string()])
        .env("OFFSITE_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut out = vec![];
    // Wait for the 1 GiB buffer: RSS climbs past 900 MiB, then falls (the
    // reset waits for the whole buffer to be unmapped, below 192 MiB).
    let mut phase = 0;
    let mut peak = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while peak.is_none() {
        assert!(
            Instant::now() < deadline,
            "plugins test ran over 10 minutes"
        );
        for line in rx.try_iter() {
            if phase == 2 && line.trim_start().starts_with("upload ") {
                peak = status_kib(pid, "VmHWM:");
            }
            out.push(line);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
        match phase {
            0 if rss > 900 << 10 => phase = 1,
            1 if rss < 192 << 10 => {
                std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
                phase = 2;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    out.extend(rx.try_iter());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let out = out.join("\n");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("conformance: passed"), "{out}");
    assert!(out.contains("compiled code from cache"), "{out}");
    assert_eq!(
        phase, 2,
        "never saw the 1 GiB buffer come and go (RSS below 192 MiB after it): {out}"
    );
    let peak = peak.expect("the upload step reported while the process ran");
    let bound_kib = (parts * part_size + 64 * MIB) >> 10;
    eprintln!(
        "peak RSS of the runner while uploading 1 GiB: {} MiB (bound {} MiB)",
        peak >> 10,
        bound_kib >> 10
    );
    assert!(
        peak < bound_kib,
        "peak RSS {} MiB is over {} MiB\n{out}",
        peak >> 10,
        bound_kib >> 10
    );
}
