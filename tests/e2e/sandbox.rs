//! The sandbox, tried by fixture plugins that misbehave on purpose
//! (tests/fixtures/hostile). Each attack has a control case that succeeds
//! when the grant is given, so a test fails if its guard is removed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use offsite::plugin::{
    CallContext, DestinationSession, ErrorKind, Limits, LoadedPlugin, PluginError, PluginHost,
    settings,
};
use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};

fn limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(2),
        transfer_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(120),
        debug_stdio: false,
    }
}

async fn hostile(host: &PluginHost) -> Arc<LoadedPlugin> {
    Arc::new(
        host.load_file(&wasm("fixture_hostile"))
            .await
            .expect("hostile fixture loads"),
    )
}

/// Open the hostile fixture with these settings and call `list`, which
/// performs the attack named by `mode`.
async fn attack(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    pairs: &[(&str, &str)],
) -> Result<Vec<String>, PluginError> {
    let raw: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = settings::resolve(&plugin.info, &raw).expect("fixture settings resolve");
    let ctx = CallContext {
        plugin: "hostile".into(),
        instance: "test".into(),
        job: None,
    };
    let mut session = DestinationSession::open(host, plugin.clone(), &s, ctx).await?;
    session
        .list("")
        .await
        .map(|objs| objs.into_iter().map(|o| o.name).collect())
}

#[tokio::test]
async fn a_plugin_that_loops_forever_is_stopped_and_the_next_call_runs() {
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let e = attack(&host, &p, &[("mode", "spin")]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("time limit of 2s"), "{e}");
    // The runner goes on: a fresh instance of the same plugin works.
    assert_eq!(
        attack(&host, &p, &[("mode", "ok")]).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_plugin_that_allocates_without_end_hits_the_memory_limit() {
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let e = attack(&host, &p, &[("mode", "alloc")]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::MemoryLimit, "{e}");
    assert!(
        e.message.contains("over its limit of 67108864 bytes"),
        "{e}"
    );
    assert!(e.message.contains("plugin_memory"), "{e}");
}

#[tokio::test]
async fn tcp_to_an_address_not_in_its_settings_is_refused_and_names_the_setting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;

    let e = attack(
        &host,
        &p,
        &[
            ("mode", "connect"),
            ("target", &target),
            ("host", "127.0.0.2"),
        ],
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("PermissionDenied"), "{e}");
    assert!(e.message.contains("refused a TCP connection to"), "{e}");
    assert!(e.message.contains("`host` = 127.0.0.2"), "{e}");
    assert!(
        listener.accept().is_err(),
        "the refused connection reached the listener"
    );

    // Control: the same attempt with the address granted goes through.
    let ok = attack(
        &host,
        &p,
        &[
            ("mode", "connect"),
            ("target", &target),
            ("host", "127.0.0.1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok, vec!["connected".to_string()]);
}

#[tokio::test]
async fn udp_to_an_address_not_in_its_settings_is_refused() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let target = sock.local_addr().unwrap().to_string();
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;

    let e = attack(&host, &p, &[("mode", "udp"), ("target", &target)])
        .await
        .unwrap_err();
    assert!(
        e.message.contains("declares no network-host setting")
            || e.message.contains("refused a UDP"),
        "{e}"
    );
    let mut buf = [0u8; 16];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "the refused datagram arrived"
    );

    attack(
        &host,
        &p,
        &[("mode", "udp"), ("target", &target), ("host", "127.0.0.1")],
    )
    .await
    .unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("granted datagram arrives");
    assert_eq!(&buf[..n], b"stolen");
}

#[tokio::test]
async fn the_host_filesystem_is_invisible() {
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let e = attack(&host, &p, &[("mode", "passwd")]).await.unwrap_err();
    assert!(e.message.contains("open /etc/passwd"), "{e}");
    assert!(!e.message.contains("root:"), "{e}");
}

#[tokio::test]
async fn a_plugin_sees_no_environment_and_no_arguments() {
    // The runner's own environment is not empty (PATH at least).
    assert!(std::env::var_os("PATH").is_some());
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let seen = attack(&host, &p, &[("mode", "env")]).await.unwrap();
    assert_eq!(seen, Vec::<String>::new());
}

#[tokio::test]
async fn exec_without_a_grant_is_refused() {
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let e = attack(&host, &p, &[("mode", "exec")]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("has no exec-directory setting"), "{e}");
}

/// A one-request HTTP server answering 200; returns its port.
fn http_ok_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

#[tokio::test]
async fn http_to_an_authority_it_was_not_given_is_refused() {
    let port = http_ok_server();
    let target = format!("127.0.0.1:{port}");
    let host = PluginHost::new(None, limits()).unwrap();
    let p = hostile(&host).await;
    let other = format!("http://127.0.0.1:{}/", port.wrapping_add(1).max(1));
    let e = attack(
        &host,
        &p,
        &[("mode", "http"), ("target", &target), ("url", &other)],
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("HttpRequestDenied"), "{e}");
    assert!(e.message.contains("refused an HTTP request GET"), "{e}");
    assert!(e.message.contains("`url` (host 127.0.0.1:"), "{e}");

    let granted = format!("http://{target}/");
    let ok = attack(
        &host,
        &p,
        &[("mode", "http"), ("target", &target), ("url", &granted)],
    )
    .await
    .unwrap();
    assert_eq!(ok, vec!["status 200".to_string()]);
}

#[test]
fn a_refusal_is_logged_with_the_setting_that_would_allow_it() {
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "test"])
        .arg(wasm("fixture_hostile"))
        .args([
            "-s",
            "mode=connect",
            "-s",
            "target=127.0.0.9:9",
            "-s",
            "host=127.0.0.1",
            "--size",
            "10",
        ])
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("WARN sandbox: plugin `hostile` (`plugins test`) was refused a TCP connection to 127.0.0.9:9: 127.0.0.9 is not an address of its network-host setting `host` = 127.0.0.1; to allow it, set that setting to 127.0.0.9"),
        "{out}"
    );
}

fn check(file: &Path) -> String {
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "check"])
        .arg(file)
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    let out = text(&o);
    assert_eq!(out.lines().count(), 1, "one line expected: {out}");
    out
}

#[test]
fn plugins_check_gives_one_clear_line_for_each_kind_of_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic + version 1, no sections.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    assert!(check(&core).contains("a core WebAssembly module, not a component"));

    let random = dir.path().join("random.wasm");
    std::fs::write(&random, rand::random::<[u8; 64]>()).unwrap();
    assert!(check(&random).contains("not a WebAssembly file"));

    let other = check(&wasm("fixture_other_world"));
    assert!(other.contains("a component of another world"), "{other}");
    assert!(other.contains("fixture:other/greeter@1.0.0"), "{other}");

    let future = check(&wasm("fixture_future_contract"));
    assert!(
        future.contains("built against offsite:plugin@0.3.0, newer than this offsite supports"),
        "{future}"
    );

    let good = check(&wasm("offsite_local_dir"));
    assert!(good.starts_with("ok: local-dir"), "{good}");
}

fn conformance(file: &Path, settings: &[String]) -> String {
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(file);
    for s in settings {
        cmd.args(["--setting", s]);
    }
    let o = run(cmd.env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("conformance: passed"), "{out}");
    out
}

#[test]
fn plugins_test_passes_for_local_dir_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = conformance(
        &wasm("offsite_local_dir"),
        &[format!("path={}", dir.path().display())],
    );
    for step in ["upload   ok", "list     ok", "fetch    ok", "remove   ok"] {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn plugins_test_passes_for_the_template() {
    let dir = tempfile::tempdir().unwrap();
    conformance(
        &wasm("offsite_plugin_template"),
        &[format!("path={}", dir.path().display())],
    );
}

#[tokio::test]
async fn compiled_code_is_cached_by_hash_and_a_damaged_cache_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Some(cache.path().to_path_buf()), limits()).unwrap();
    let first = host.load_file(&wasm("offsite_local_dir")).await.unwrap();
    assert!(!first.from_cache);
    let second = host.load_file(&wasm("offsite_local_dir")).await.unwrap();
    assert!(second.from_cache);
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&first.sha256)
    );
    drop((first, second));
    std::fs::write(&files[0], b"garbage").unwrap();
    let third = host.load_file(&wasm("offsite_local_dir")).await.unwrap();
    assert!(!third.from_cache, "a damaged artifact must not load");
    assert_eq!(third.info.name, "local-dir");
}
