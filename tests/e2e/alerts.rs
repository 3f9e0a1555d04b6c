//! Notifications from whole runs, to real sinks: a failed backup reaches the
//! webhook and the mailbox; a damaged generation fails `verify`, is named,
//! is reported as `verify-failed`, and no longer counts for retention.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{run, text};
use offsite_tests::sinks::{HttpSink, SmtpSink};

fn setup(root: &Path, hook: &HttpSink, smtp: Option<&SmtpSink>, keep: usize) -> PathBuf {
    for d in ["plugins", "nas", "tree"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("tree/a.txt"), "alpha").unwrap();
    for (krate, file) in [
        ("offsite_local_dir", "local-dir"),
        ("offsite_webhook", "webhook"),
        ("offsite_smtp", "smtp"),
    ] {
        std::fs::copy(wasm(krate), root.join(format!("plugins/{file}.wasm"))).unwrap();
    }
    let mail = match smtp {
        Some(s) => format!(
            "\n[notifiers.mail]\nplugin = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"offsite@example.org\"\nto = \"ops@example.org\"\nstarttls = \"never\"\n",
            s.port
        ),
        None => String::new(),
    };
    let notifiers = if smtp.is_some() {
        r#"["ops", "mail"]"#
    } else {
        r#"["ops"]"#
    };
    let cfg = root.join("offsite.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[runner]
backup_dir = "{r}/backups"
plugins_dir = "{r}/plugins"
state_dir = "{r}/state"
log_file = "{r}/backup.log"

[destinations.nas]
plugin = "local-dir"
path = "{r}/nas"

[notifiers.ops]
plugin = "webhook"
url = "{url}"
{mail}
[jobs.app]
source = "files"
paths = ["{r}/tree"]
keep = {keep}
destinations = ["nas"]
notifiers = {notifiers}
"#,
            r = root.display(),
            url = hook.url("/hook"),
        ),
    )
    .unwrap();
    cfg
}

fn offsite(cfg: &Path, args: &[&str]) -> (bool, String) {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(cfg)
        .args(args));
    (o.status.success(), text(&o))
}

fn generations(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("backups/app"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_backup_reaches_the_webhook_and_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let smtp = SmtpSink::plain();
    let cfg = setup(dir.path(), &hook, Some(&smtp), 3);
    // The tree vanishes: the dump fails.
    std::fs::remove_dir_all(dir.path().join("tree")).unwrap();
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(!ok, "{out}");

    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "{out}");
    let body = reqs[0].json();
    assert_eq!(body["kind"], "failure", "{body}");
    assert_eq!(body["job"], "app", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("cannot be read"),
        "{body}"
    );

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{out}");
    let subject = mails[0]
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap_or_default()
        .to_string();
    assert!(subject.contains("app"), "{subject}");
    assert!(subject.contains("failed"), "{subject}");
}

#[test]
fn success_is_not_sent_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let cfg = setup(dir.path(), &hook, None, 3);
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    assert!(hook.requests().is_empty(), "default `on` has no success");
}

#[test]
fn a_flipped_byte_fails_verify_is_reported_and_retention_keeps_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start();
    let cfg = setup(dir.path(), &hook, None, 2);
    for _ in 0..2 {
        let (ok, out) = offsite(&cfg, &["run", "app"]);
        assert!(ok, "{out}");
    }
    let gens = generations(dir.path());
    assert_eq!(gens.len(), 2);
    // Flip one byte of the newest generation.
    let newest = gens[1].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();

    let (ok, out) = offsite(&cfg, &["verify", "app"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("FAILED: {name}")), "{out}");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "{out}");
    let body = reqs[0].json();
    assert_eq!(body["kind"], "verify-failed", "{body}");
    assert_eq!(body["job"], "app", "{body}");
    assert_eq!(body["generation"], name.as_str(), "{body}");

    // The bad one no longer counts: the next run keeps the older good one
    // (keep = 2 good generations), so three files remain.
    let (ok, out) = offsite(&cfg, &["run", "app"]);
    assert!(ok, "{out}");
    let after = generations(dir.path());
    assert!(
        after.contains(&gens[0]),
        "the older good generation must stay: {after:?}"
    );
    assert!(
        after.contains(&newest),
        "the bad one is kept for inspection: {after:?}"
    );
    assert_eq!(after.len(), 3, "{after:?}");
}
