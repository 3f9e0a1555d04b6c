//! Each destination's quirks (issue 14 cases 4–6), against the real
//! servers: pyftpdlib refusing names that start with a dot, a versioned
//! bucket on moto, tftpd-hpa without `-c`.

use std::time::Duration;

use offsite_tests::jobs::{Setup, tar_generations_in, write_secret};
use offsite_tests::s3::Moto;
use offsite_tests::tftp_ftp::{FTP_PASSWORD, FTP_USER, FtpServer, TftpServer};

fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn files_job(s: &Setup, keep: usize, dests: &str) -> String {
    let tree = s.dir("tree");
    std::fs::write(tree.join("a.txt"), "alpha").unwrap();
    format!(
        "[jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\nkeep = {keep}\ndestinations = [{dests}]\n",
        tree.display()
    )
}

/// Case 4: uploads work on a server that answers 553 to dot names, never
/// visible under the final name while partial; `verify --remote` judges
/// only the copy there, and a missing copy is shipped again next run.
#[test]
fn an_ftp_server_refusing_dot_names_gets_uploads_and_remote_verify_judges_that_copy() {
    let s = Setup::new(&["offsite_ftp"]);
    let root = s.root().join("ftp-root");
    let ftp = FtpServer::plain_with(&root, &["--refuse-dot-names"]);
    write_secret(&s.root().join("ftp.pass"), &format!("{FTP_PASSWORD}\n"));
    let job = files_job(&s, 2, "\"ftp1\"");
    s.write_config(&format!(
        "[destinations.ftp1]\nplugin = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{FTP_USER}\"\npassword_file = \"{}\"\n\n{job}",
        ftp.port,
        s.root().join("ftp.pass").display()
    ));
    // A leftover of an interrupted upload by the fallback scheme: cleaned.
    std::fs::create_dir_all(&root).unwrap();
    let leftover = root.join("app-20260101T000000Z.tar.zst.offsite-part");
    std::fs::write(&leftover, "partial").unwrap();
    let stranger = root.join("notes.offsite-part");
    std::fs::write(&stranger, "not ours").unwrap();

    next_second();
    let out = s.run_ok("app");
    let local = tar_generations_in(&s.job_dir("app"));
    assert_eq!(tar_generations_in(&root), local, "{out}");
    let log = std::fs::read_to_string(&ftp.log).unwrap();
    assert!(
        log.contains("553"),
        "the server did refuse a dot name:\n{log}"
    );
    assert!(
        log.contains("STOR app-") && log.contains(".offsite-part"),
        "{log}"
    );
    assert!(
        !leftover.exists(),
        "our temporary is cleaned at the next run"
    );
    assert!(stranger.exists(), "a name that is not ours stays");
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("part") && n.starts_with("app-")),
        "{names:?}"
    );

    // The copy at ftp1 vanishes: a remote verify says so for ftp1 only.
    let name = local[0].clone();
    std::fs::remove_file(root.join(&name)).unwrap();
    let (code, out) = s.offsite(&["verify", "app", "--remote", "ftp1"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("pending at ftp1"), "{out}");
    let m = &s.manifests("app")[0];
    assert_eq!(m["health"], "good", "local health is its own: {m}");
    assert_eq!(m["uploads"]["ftp1"]["state"], "pending", "{m}");
    // The next run ships it again (beside the new one).
    next_second();
    s.run_ok("app");
    assert!(root.join(&name).exists(), "shipped again");
    let (code, out) = s.offsite(&["verify", "app", "--generation", &name, "--remote", "ftp1"]);
    assert_eq!(code, 0, "{out}");
}

/// Case 5: a versioned bucket. By default rotation there says (once per
/// run, and in `offsite list`) that it frees no space; with
/// `remove_versions = true` every version offsite wrote goes.
#[test]
fn a_versioned_bucket_is_detected_and_versions_are_removed_on_request() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    moto.enable_versioning("backups");
    let s = Setup::new(&["offsite_s3"]);
    write_secret(&s.root().join("s3.secret"), "secret\n");
    let write = |remove_versions: bool| {
        let job = files_job(&s, 1, "\"s3\"");
        s.write_config(&format!(
            "[destinations.s3]\nplugin = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"backups\"\nprefix = \"calls/\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"{}\"\nremove_versions = {remove_versions}\n\n{job}",
            moto.endpoint(),
            s.root().join("s3.secret").display()
        ));
    };
    write(false);
    let mut outs = vec![];
    for _ in 0..3 {
        next_second();
        outs.push(s.run_ok("app"));
    }
    let last = outs.last().unwrap();
    assert_eq!(
        last.matches("has versioning enabled").count(),
        1,
        "said once per run: {last}"
    );
    let (_, list) = s.offsite(&["list", "app"]);
    assert!(
        list.contains("note from s3") && list.contains("versioning"),
        "{list}"
    );
    let markers = moto
        .versions("backups", "calls/")
        .iter()
        .filter(|(k, _)| k == "marker")
        .count();
    assert!(markers >= 2, "delete markers, as warned");

    write(true);
    let third = tar_generations_in(&s.job_dir("app"))[0].clone();
    next_second();
    s.run_ok("app");
    let fourth = tar_generations_in(&s.job_dir("app"))[0].clone();
    next_second();
    s.run_ok("app");
    let fifth = tar_generations_in(&s.job_dir("app"))[0].clone();
    let left = moto.versions("backups", "calls/");
    let of = |name: &str| -> Vec<&(String, String)> {
        left.iter()
            .filter(|(_, k)| *k == format!("calls/{name}"))
            .collect()
    };
    // Dropped under remove_versions: no version, no delete marker left.
    assert!(of(&third).is_empty(), "{third}: {left:?}");
    assert!(of(&fourth).is_empty(), "{fourth}: {left:?}");
    assert_eq!(of(&fifth).len(), 1, "the kept one: {left:?}");
    let (_, list) = s.offsite(&["list", "app"]);
    assert!(
        !list.contains("note from s3"),
        "no warning any more: {list}"
    );
}

/// Case 6: tftpd-hpa without `-c` refuses to create files; the error says
/// so, how to allow it, and is `rejected`, not `not-found`.
#[test]
fn tftpd_hpa_without_create_is_a_rejection_that_names_the_fix() {
    let s = Setup::new(&["offsite_tftp"]);
    let tftp = TftpServer::start_no_create(&s.root().join("tftp-root"));
    let job = files_job(&s, 2, "\"tftp1\"");
    s.write_config(&format!(
        "[destinations.tftp1]\nplugin = \"tftp\"\nhost = \"127.0.0.1\"\nport = {}\n\n{job}",
        tftp.port
    ));
    next_second();
    let (code, out) = s.run("app");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("refused to create the file"), "{out}");
    assert!(out.contains("-c"), "{out}");
    assert!(!out.contains("[not-found]"), "{out}");
    assert!(
        !out.contains("retrying in"),
        "a refusal is not retried: {out}"
    );

    // The kind, as `plugins test` shows it: rejected, not not-found.
    let o = offsite_tests::proc::run(
        std::process::Command::new(offsite_tests::paths::offsite_bin())
            .args(["plugins", "test"])
            .arg(offsite_tests::paths::wasm("offsite_tftp"))
            .args(["-s", "host=127.0.0.1", "-s"])
            .arg(format!("port={}", tftp.port))
            .args(["--size", "1000"]),
    );
    let out = offsite_tests::proc::text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("[rejected]"), "{out}");
    assert!(out.contains("refused to create the file"), "{out}");
}
