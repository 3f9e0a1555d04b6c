//! Notifications from whole runs, to real sinks: a failed backup reaches the
//! webhook and the mailbox; a damaged generation fails `verify`, is named,
//! is reported as `verify-failed`, and no longer counts for retention.

use std::path::PathBuf;

use offsite_tests::jobs::Setup;
use offsite_tests::sinks::{HttpSink, SmtpSink};

fn setup(hook: &HttpSink, smtp: Option<&SmtpSink>, keep: usize) -> Setup {
    let s = Setup::new(&["offsite_local_dir", "offsite_webhook", "offsite_smtp"]);
    let (nas, tree) = (s.dir("nas"), s.dir("tree"));
    std::fs::write(tree.join("a.txt"), "alpha").unwrap();
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
    s.write_config(&format!(
        r#"
[destinations.nas]
plugin = "local-dir"
path = "{nas}"

[notifiers.ops]
plugin = "webhook"
url = "{url}"
{mail}
[jobs.app]
source = "files"
paths = ["{tree}"]
keep = {keep}
destinations = ["nas"]
notifiers = {notifiers}
"#,
        nas = nas.display(),
        tree = tree.display(),
        url = hook.url("/hook"),
    ));
    s
}

fn offsite(s: &Setup, args: &[&str]) -> (bool, String) {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = s.offsite(args);
    (code == 0, out)
}

fn generations(s: &Setup) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(s.job_dir("app"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_backup_reaches_the_webhook_and_the_mailbox() {
    let hook = HttpSink::start();
    let smtp = SmtpSink::plain();
    let s = setup(&hook, Some(&smtp), 3);
    // The tree vanishes: the dump fails.
    std::fs::remove_dir_all(s.root().join("tree")).unwrap();
    let (ok, out) = offsite(&s, &["run", "app"]);
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
    let hook = HttpSink::start();
    let s = setup(&hook, None, 3);
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    assert!(hook.requests().is_empty(), "default `on` has no success");
}

#[test]
fn a_flipped_byte_fails_verify_is_reported_and_retention_keeps_the_good_ones() {
    let hook = HttpSink::start();
    let s = setup(&hook, None, 2);
    for _ in 0..2 {
        let (ok, out) = offsite(&s, &["run", "app"]);
        assert!(ok, "{out}");
    }
    let gens = generations(&s);
    assert_eq!(gens.len(), 2);
    // Flip one byte of the newest generation.
    let newest = gens[1].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();

    let (ok, out) = offsite(&s, &["verify", "app"]);
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
    let (ok, out) = offsite(&s, &["run", "app"]);
    assert!(ok, "{out}");
    let after = generations(&s);
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
