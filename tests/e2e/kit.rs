//! The plugin author kit: `offsite plugins test` as a contract suite (it
//! passes correct destinations and fails the bugs authors write), the HTTP
//! template against a real WebDAV server (wsgidav on cheroot, from
//! tests/install/webdav.sh), HTTPS behind a private CA given in the
//! settings, and crash messages that carry the panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use offsite_tests::jobs::runner_table_at;
use offsite_tests::paths::{offsite_bin, project_root, wasm};
use offsite_tests::proc::{Server, free_port, run, text};

const MIB: u64 = 1 << 20;

/// A config whose runner allows `memory` per plugin instance; kept alive
/// with the directory.
fn config(dir: &Path, memory: &str) -> PathBuf {
    let path = dir.join("offsite.toml");
    std::fs::write(
        &path,
        format!(
            "{}plugin_memory = \"{memory}\"\n",
            runner_table_at(dir, dir, dir, &dir.join("log"))
        ),
    )
    .unwrap();
    path
}

/// `offsite plugins test FILE -s k=v ... EXTRA`: (passed, output).
fn suite(file: &Path, config: &Path, settings: &[String], extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(file);
    for s in settings {
        cmd.args(["--setting", s]);
    }
    let o = run(cmd.args(extra).env("OFFSITE_CONFIG", config));
    (o.status.success(), text(&o))
}

/// Every line of step `name`, e.g. `  interrupt  ok  12.3 ms  ...`.
fn steps<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .collect()
}

fn status<'a>(out: &'a str, name: &str) -> &'a str {
    let lines = steps(out, name);
    let line = lines
        .first()
        .unwrap_or_else(|| panic!("no `{name}` step in:\n{out}"));
    line.split_whitespace().nth(1).unwrap_or("")
}

const CONTRACT: [&str; 10] = [
    "upload",
    "list",
    "list-prefix",
    "fetch",
    "overwrite",
    "fetch-new",
    "fetch-missing",
    "remove-missing",
    "interrupt",
    "remove",
];

fn assert_all_ok(out: &str) {
    for s in CONTRACT {
        assert_eq!(status(out, s), "ok", "{s}:\n{out}");
    }
}

#[test]
fn local_destinations_pass_the_suite_repeatedly_with_data_over_plugin_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "32MiB");
    let size = (40 * MIB + 17).to_string();
    for crate_name in [
        "offsite_local_dir",
        "offsite_plugin_template",
        "fixture_careless",
    ] {
        let store = tempfile::tempdir().unwrap();
        let path = format!("path={}", store.path().display());
        let (ok, out) = suite(
            &wasm(crate_name),
            &cfg,
            &[path],
            &["--size", &size, "--repeat", "2"],
        );
        assert!(ok, "{crate_name}:\n{out}");
        assert!(out.contains("conformance: passed 2/2 runs"), "{out}");
        assert_all_ok(&out);
        assert_eq!(steps(&out, "interrupt").len(), 2, "{out}");
        assert!(
            steps(&out, "upload")[0].contains("over plugin_memory (32 MiB)"),
            "{out}"
        );
        // Nothing left behind: no object, no temporary.
        let left: Vec<_> = walk(store.path());
        assert!(left.is_empty(), "{crate_name} left {left:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Each bug an author wrote (and an old one-round-trip test passed) fails
/// the step that is about it.
#[test]
fn the_suite_fails_the_bugs_authors_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "256MiB");
    for (bug, step, says) in [
        (
            "direct",
            "interrupt",
            "upload reported success although its stream failed after",
        ),
        (
            "prefix",
            "list-prefix",
            "which does not start with the prefix",
        ),
        (
            "missing",
            "fetch-missing",
            "fetch of a name never uploaded returned 0 bytes",
        ),
        (
            "append",
            "fetch-new",
            "the second upload under the name did not replace the first (appended?)",
        ),
    ] {
        let store = tempfile::tempdir().unwrap();
        let settings = [
            format!("path={}", store.path().display()),
            format!("bugs={bug}"),
        ];
        let (ok, out) = suite(&wasm("fixture_careless"), &cfg, &settings, &[]);
        assert!(!ok, "bug {bug} passed:\n{out}");
        assert_eq!(status(&out, step), "FAILED", "bug {bug}:\n{out}");
        assert!(steps(&out, step)[0].contains(says), "bug {bug}:\n{out}");
        assert!(out.contains("conformance: FAILED"), "{out}");
    }
}

/// A panic's own line reaches the error (not only "wasm backtrace"), and
/// `--debug` forwards the plugin's stderr.
#[test]
fn a_crash_names_the_panic_and_debug_shows_the_plugins_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "256MiB");
    let store = tempfile::tempdir().unwrap();
    let settings = [
        format!("path={}", store.path().display()),
        "bugs=panic".to_string(),
    ];
    let (ok, out) = suite(&wasm("fixture_careless"), &cfg, &settings, &[]);
    assert!(!ok, "{out}");
    let upload = steps(&out, "upload")[0];
    assert!(upload.contains("FAILED"), "{out}");
    assert!(
        upload.contains("careless: panicked on purpose in upload of offsite-conformance-"),
        "{out}"
    );
    let (_, out) = suite(&wasm("fixture_careless"), &cfg, &settings, &["--debug"]);
    assert!(out.contains("panicked at"), "{out}");
}

/// wsgidav on cheroot, serving a folder at `/dav`, with basic auth u/p;
/// over HTTPS with `tls` = (certificate, key).
struct WebDav {
    _server: Server,
    port: u16,
    root: tempfile::TempDir,
    _conf: tempfile::TempDir,
    https: bool,
}

fn venv() -> PathBuf {
    offsite_tests::sinks::venv_python()
        .parent()
        .and_then(Path::parent)
        .expect("venv")
        .to_path_buf()
}

impl WebDav {
    fn start(tls: Option<(&Path, &Path)>) -> WebDav {
        let bin = venv().join("bin/wsgidav");
        assert!(
            bin.is_file(),
            "{} is missing: run tests/install/webdav.sh (part of `just deps`)",
            bin.display()
        );
        let root = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut c = serde_json::json!({
            "host": "127.0.0.1",
            "port": port,
            "provider_mapping": {"/dav": root.path()},
            "simple_dc": {"user_mapping": {"*": {"u": {"password": "p"}}}},
            "http_authenticator": {"accept_basic": true, "accept_digest": false, "default_to_digest": false},
            "verbose": 1,
            "logging": {"enable_loggers": []},
        });
        if let Some((cert, key)) = tls {
            c["ssl_certificate"] = cert.display().to_string().into();
            c["ssl_private_key"] = key.display().to_string().into();
        }
        let file = conf.path().join("wsgidav.json");
        std::fs::write(&file, c.to_string()).unwrap();
        let server = Server::spawn(
            "wsgidav",
            Command::new(&bin)
                .arg("--config")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .wait_tcp(port);
        WebDav {
            _server: server,
            port,
            root,
            _conf: conf,
            https: tls.is_some(),
        }
    }

    fn settings(&self, host: &str) -> Vec<String> {
        let scheme = if self.https { "https" } else { "http" };
        vec![
            format!("url={scheme}://{host}:{}/dav/", self.port),
            "user=u".into(),
            "password=p".into(),
        ]
    }
}

#[test]
fn the_http_template_passes_the_suite_against_wsgidav_30_times() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "32MiB");
    let dav = WebDav::start(None);
    let (ok, out) = suite(
        &wasm("offsite_plugin_template_http"),
        &cfg,
        &dav.settings("127.0.0.1"),
        &["--repeat", "30", "--size", "100000"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("conformance: passed 30/30 runs"), "{out}");
    // One run with a generation larger than plugin_memory, spliced.
    let (ok, out) = suite(
        &wasm("offsite_plugin_template_http"),
        &cfg,
        &dav.settings("127.0.0.1"),
        &["--size", &(48 * MIB).to_string()],
    );
    assert!(ok, "{out}");
    assert_all_ok(&out);
    assert!(
        walk(dav.root.path()).is_empty(),
        "{:?}",
        walk(dav.root.path())
    );
}

/// A private CA and a server certificate for 127.0.0.1 and localhost,
/// made with the openssl command line.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |args: &str| {
        let o = run(Command::new("sh").arg("-c").arg(args).current_dir(dir));
        assert!(o.status.success(), "{args}: {}", text(&o));
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=offsite-test-ca \
        -keyout ca.key -out ca.pem 2>/dev/null",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null",
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext -out server.pem 2>/dev/null",
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn https_behind_a_private_ca_works_with_the_ca_in_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "64MiB");
    let (ca, cert, key) = private_ca(dir.path());
    let dav = WebDav::start(Some((&cert, &key)));
    let plugin = wasm("offsite_plugin_template_http");
    // Without the CA: refused, and the verifier's reason is in the error.
    let (ok, out) = suite(&plugin, &cfg, &dav.settings("localhost"), &[]);
    assert!(!ok, "{out}");
    let upload = steps(&out, "upload")[0];
    assert!(
        upload.contains("FAILED") && upload.contains("[config]"),
        "{out}"
    );
    assert!(upload.contains("UnknownIssuer"), "{out}");
    assert!(upload.contains("tls_ca"), "{out}");
    // With the CA, as a file path and as PEM text.
    let mut with_path = dav.settings("localhost");
    with_path.push(format!("tls_ca={}", ca.display()));
    let (ok, out) = suite(&plugin, &cfg, &with_path, &["--size", "3000000"]);
    assert!(ok, "{out}");
    assert_all_ok(&out);
    let mut with_pem = dav.settings("127.0.0.1");
    with_pem.push(format!("tls_ca={}", std::fs::read_to_string(&ca).unwrap()));
    let (ok, out) = suite(&plugin, &cfg, &with_pem, &[]);
    assert!(ok, "{out}");
}

/// `offsite plugins new web --http` in a directory outside the repository,
/// then the documented `cargo build --release`, gives a plugin that passes
/// the suite against a real WebDAV server. (Its build directory is kept in
/// the cache, so a second run does not compile everything again.)
#[test]
fn plugins_new_http_builds_outside_the_repository_and_passes_the_suite() {
    let outside = tempfile::tempdir().unwrap();
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "new", "web", "--http"])
        .current_dir(outside.path())
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    assert!(o.status.success(), "{}", text(&o));
    let project = outside.path().join("web");
    assert!(project.join("offsite-sdk/wit/plugin.wit").is_file());
    let cargo_toml = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(!cargo_toml.contains("../"), "{cargo_toml}");
    let built = build_plugin(&project, "web");
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "new", "web"])
        .current_dir(outside.path())
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );

    web_passes_over_plugin_memory(&built, 3, 40 * MIB);
}

/// A plugin named `web` passes the suite `runs` times against wsgidav, with
/// `size` bytes under a 32 MiB plugin_memory.
fn web_passes_over_plugin_memory(built: &Path, runs: u32, size: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "32MiB");
    let dav = WebDav::start(None);
    let (ok, out) = suite(
        built,
        &cfg,
        &dav.settings("127.0.0.1"),
        &["--repeat", &runs.to_string(), "--size", &size.to_string()],
    );
    assert!(ok, "{out}");
    assert!(out.contains("web 0.1.0 (destination)"), "{out}");
    assert!(
        out.contains(&format!("conformance: passed {runs}/{runs} runs")),
        "{out}"
    );
    out
}

/// A build directory kept in the cache between runs (the first build of
/// the SDK's dependencies takes minutes on two cores).
/// `cargo build --release` of the plugin project at `project` into a kept
/// target folder; the component `<wasm>.wasm` it built.
fn build_plugin(project: &Path, wasm: &str) -> PathBuf {
    let target = kept_target("target-plugins-new");
    let o = run(Command::new("cargo")
        .args(["build", "--release"])
        .current_dir(project)
        .env("CARGO_TARGET_DIR", &target));
    assert!(o.status.success(), "{}", text(&o));
    let built = target.join(format!("wasm32-wasip2/release/{wasm}.wasm"));
    assert!(built.is_file(), "{}", built.display());
    built
}

fn kept_target(name: &str) -> PathBuf {
    std::env::var_os("OFFSITE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("offsite-kit"))
        .join(name)
}

/// `cargo package` of the SDK succeeds (its WIT inside), and a copy of
/// examples/plugin-template outside the repository, its SDK dependency
/// pointed at the unpacked package, builds with plain `cargo build
/// --release` into a plugin that passes the suite.
#[test]
fn the_template_builds_outside_the_repository_on_the_packaged_sdk() {
    let root = project_root();
    let packaged = kept_target("target-sdk-package");
    let o = run(Command::new("cargo")
        .args(["package", "--allow-dirty"])
        .current_dir(root.join("plugins/sdk"))
        .env("CARGO_TARGET_DIR", &packaged));
    assert!(o.status.success(), "cargo package: {}", text(&o));
    let krate = packaged.join("package/offsite-sdk-0.1.0.crate");
    let outside = tempfile::tempdir().unwrap();
    let o = run(Command::new("tar")
        .arg("-xzf")
        .arg(&krate)
        .current_dir(outside.path()));
    assert!(o.status.success(), "{}", text(&o));
    let sdk = outside.path().join("offsite-sdk-0.1.0");
    assert!(
        sdk.join("wit/plugin.wit").is_file(),
        "the package lacks its WIT"
    );
    assert!(!sdk.join("wit").is_symlink());

    let project = outside.path().join("template");
    let from = root.join("examples/plugin-template");
    for rel in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
        "src/lib.rs",
    ] {
        let to = project.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from.join(rel), &to).unwrap();
    }
    let manifest = project.join("Cargo.toml");
    let text_of = std::fs::read_to_string(&manifest).unwrap();
    let path_dep = "path = \"../../plugins/sdk\"";
    assert!(text_of.contains(path_dep), "{text_of}");
    std::fs::write(
        &manifest,
        text_of.replace(path_dep, "path = \"../offsite-sdk-0.1.0\""),
    )
    .unwrap();
    let built = build_plugin(&project, "offsite_plugin_template");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "64MiB");
    let store = tempfile::tempdir().unwrap();
    let (ok, out) = suite(
        &built,
        &cfg,
        &[format!("path={}", store.path().display())],
        &[],
    );
    assert!(ok, "{out}");
    assert_all_ok(&out);
}

/// `offsite plugins new web --lang python --http`, then the documented
/// componentize-py build (tests/install/componentize.sh puts it in the
/// venv), gives a component that passes the suite against wsgidav, with a
/// generation larger than plugin_memory (spliced host stream to host stream,
/// never through Python objects), twice.
#[test]
fn plugins_new_python_http_builds_with_componentize_py_and_passes_the_suite() {
    let outside = tempfile::tempdir().unwrap();
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "new", "web", "--lang", "python", "--http"])
        .current_dir(outside.path())
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o)
            .contains("componentize-py -d wit -w destination-http componentize app -o web.wasm")
    );
    let project = outside.path().join("web");
    for f in [
        "app.py",
        "wit/world.wit",
        "wit/deps/offsite/plugin.wit",
        "wit/deps/http/http.wit",
    ] {
        assert!(project.join(f).is_file(), "{f} missing");
    }
    let o = run(Command::new(offsite_bin())
        .args(["plugins", "new", "web2", "--lang", "python"])
        .current_dir(outside.path())
        .env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    assert!(
        !o.status.success() && text(&o).contains("add --http"),
        "{}",
        text(&o)
    );

    let cpy = venv().join("bin/componentize-py");
    assert!(
        cpy.is_file(),
        "{} is missing: run tests/install/componentize.sh (part of `just deps`)",
        cpy.display()
    );
    let started = std::time::Instant::now();
    let o = run(Command::new(&cpy)
        .args([
            "-d",
            "wit",
            "-w",
            "destination-http",
            "componentize",
            "app",
            "-o",
            "web.wasm",
        ])
        .current_dir(&project));
    assert!(o.status.success(), "{}", text(&o));
    let built = project.join("web.wasm");
    eprintln!(
        "componentize-py: {:.1} s, {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&built).unwrap().len()
    );

    let out = web_passes_over_plugin_memory(&built, 2, 48 * MIB);
    assert_all_ok(&out);
    assert!(
        steps(&out, "upload")[0].contains("over plugin_memory (32 MiB)"),
        "{out}"
    );
}
