//! The FTP client against a real pyftpdlib server (see common/ and ftpd.py).
//! Needs `bash tests/install/ftp.sh` (from the repository root) first.

// Native only: the workspace builds for wasm32-wasip2 by default, and these
// tests start servers and threads on the host.
#![cfg(not(target_os = "wasi"))]

mod common;

use std::fs;
use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use offsite_ftp::{Client, ErrorKind, Settings, temp_name};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Upload, list, fetch (sha256 equal), remove of a 100 MB random file.
fn roundtrip_100mb(server: &Server) {
    let size = 100 * MB;
    let name = "calls-20260101T000000Z.sql.zst";
    let settings = Settings {
        remote_dir: "backups".into(),
        ..server.settings()
    };
    let mut client = Client::connect(&settings).unwrap();
    assert_eq!(client.is_tls(), server.tls);

    let mut data = RandomData::new(42, size);
    let t = Instant::now();
    client.upload(name, &mut data, size).unwrap();
    eprintln!("upload of 100 MB (tls={}): {:?}", server.tls, t.elapsed());
    let sent = data.sha256();
    assert_eq!(
        server.ls("backups"),
        vec![name.to_string()],
        "no .part left"
    );
    assert_eq!(file_sha256(&server.root.join("backups").join(name)), sent);

    let entries = client.list("calls-").unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].name, name);
    assert_eq!(entries[0].size, Some(size));
    let modified = entries[0].modified.expect("MLSD gives modify");
    assert!(modified.abs_diff(now()) < 120, "modified {modified}");
    assert!(client.list("other-").unwrap().is_empty());

    let mut out = HashWriter::default();
    let t = Instant::now();
    let n = client.fetch(name, &mut out).unwrap();
    eprintln!("fetch of 100 MB (tls={}): {:?}", server.tls, t.elapsed());
    assert_eq!(n, size);
    assert_eq!(out.count, size);
    assert_eq!(out.sha256(), sent);

    client.remove(name).unwrap();
    assert!(server.ls("backups").is_empty());
    let err = client.remove(name).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    let err = client.fetch(name, &mut HashWriter::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    client.quit();

    let log = server.log_text();
    assert!(log.contains("EPSV"), "EPSV used");
    assert!(log.contains("MLSD"), "MLSD used");
    assert!(!log.contains("PASV"), "no PASV fallback needed");
}

#[test]
fn plain_upload_list_fetch_remove_100mb() {
    let server = Server::plain();
    roundtrip_100mb(&server);
}

#[test]
fn tls_upload_list_fetch_remove_100mb() {
    let server = Server::tls();
    roundtrip_100mb(&server);
    let log = server.log_text();
    for cmd in ["AUTH TLS", "PBSZ 0", "PROT P"] {
        assert!(log.contains(cmd), "{cmd} sent");
    }
}

#[test]
fn remote_dir_is_created_level_by_level() {
    let server = Server::plain();
    for dir in ["a/b/c", "/x/y", "a/b/c"] {
        let settings = Settings {
            remote_dir: dir.into(),
            ..server.settings()
        };
        let mut client = Client::connect(&settings).unwrap();
        client
            .upload("f", &mut RandomData::new(1, 1000), 1000)
            .unwrap();
        let on_disk = server.root.join(dir.trim_start_matches('/')).join("f");
        assert_eq!(fs::metadata(on_disk).unwrap().len(), 1000);
    }
}

#[test]
fn wrong_password_is_a_config_error_naming_user_and_server() {
    for server in [Server::plain(), Server::tls()] {
        let settings = Settings {
            password: "Wrong-Pa55word".into(),
            ..server.settings()
        };
        let err = Client::connect(&settings).err().expect("login must fail");
        eprintln!("wrong password: {err}");
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("\"{USER}\"")), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{}", server.port)), "{msg}");
        assert!(msg.contains("530"), "{msg}");
        assert!(
            !msg.contains("Wrong-Pa55word") && !msg.contains(PASSWORD),
            "{msg}"
        );
    }
}

#[test]
fn trace_and_errors_never_show_the_password() {
    let server = Server::plain();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let trace = Box::new(move |l: &str| sink.lock().unwrap().push(l.to_string()));
    let mut client = Client::connect_traced(&server.settings(), Some(trace)).unwrap();
    client.upload("t", &mut RandomData::new(3, 10), 10).unwrap();
    client.quit();
    let all = lines.lock().unwrap().join("\n");
    assert!(all.contains("> PASS ****"), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    assert!(!format!("{:?}", server.settings()).contains(PASSWORD));
}

/// A relay cuts the data connection after 10 MB of a 100 MB upload while the
/// control connection stays up: the upload fails as transient, the server's
/// partial temporary file is deleted, nothing has the final name.
#[test]
fn data_connection_cut_mid_upload_leaves_nothing() {
    let server = Server::plain();
    let relay_port = cut_relay(server.port, 10 * MB);
    let settings = Settings {
        port: relay_port,
        ..server.settings()
    };
    let mut client = Client::connect(&settings).unwrap();
    let size = 100 * MB;
    let err = client
        .upload("cut.bin", &mut RandomData::new(7, size), size)
        .unwrap_err();
    eprintln!("cut relay: {err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("removed .cut.bin.part"), "{err}");
    assert!(server.ls("").is_empty(), "{:?}", server.ls(""));
    // The session still works after the failed transfer.
    client
        .upload("ok.bin", &mut RandomData::new(8, 4096), 4096)
        .unwrap();
    assert_eq!(server.ls(""), vec!["ok.bin".to_string()]);
}

/// The server dies (SIGKILL) 20 MB into a 100 MB upload: transient error,
/// and the final name never appears (the partial `.part` may stay).
fn server_killed_mid_upload(server: &Server) {
    let mut client = Client::connect(&server.settings()).unwrap();
    let pid = server.pid();
    let size = 100 * MB;
    let mut data = RandomData::new(9, size).hook_after(20 * MB, || kill_pid(pid));
    let err = client.upload("killed.bin", &mut data, size).unwrap_err();
    eprintln!("server killed: {err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    let left = server.ls("");
    assert!(!left.contains(&"killed.bin".to_string()), "{left:?}");
    assert!(
        left.iter().all(|n| n == &temp_name("killed.bin")),
        "{left:?}"
    );
}

#[test]
fn plain_server_killed_mid_upload() {
    server_killed_mid_upload(&Server::plain());
}

#[test]
fn tls_server_killed_mid_upload() {
    server_killed_mid_upload(&Server::tls());
}

#[test]
fn failing_source_aborts_and_cleans_up() {
    let server = Server::plain();
    let mut client = Client::connect(&server.settings()).unwrap();
    let mut data = RandomData::new(5, 10 * MB).fail_after(MB);
    let err = client.upload("src.bin", &mut data, 10 * MB).unwrap_err();
    eprintln!("failing source: {err}");
    assert_eq!(err.kind, ErrorKind::Other, "{err}");
    assert!(server.ls("").is_empty(), "{:?}", server.ls(""));
    // Fewer bytes than announced: refused, cleaned up.
    let err = client
        .upload("short.bin", &mut RandomData::new(5, 1000), 2000)
        .unwrap_err();
    assert!(err.message.contains("announced"), "{err}");
    assert!(server.ls("").is_empty(), "{:?}", server.ls(""));
}

#[test]
fn size_mismatch_after_upload_is_an_error() {
    let server = Server::start(Opts {
        lie_size: true,
        ..Opts::default()
    });
    let mut client = Client::connect(&server.settings()).unwrap();
    let err = client
        .upload("s.bin", &mut RandomData::new(6, 5000), 5000)
        .unwrap_err();
    eprintln!("size mismatch: {err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("5001"), "{err}");
    assert!(server.ls("").is_empty(), "{:?}", server.ls(""));
}

/// Without EPSV and MLSD the client falls back to PASV and NLST (+SIZE, MDTM).
#[test]
fn pasv_and_nlst_fallbacks() {
    for tls in [false, true] {
        let server = Server::start(Opts {
            tls,
            disable: vec!["EPSV", "MLSD", "MLST"],
            ..Opts::default()
        });
        list_and_fetch_everywhere(&server);
        let log = server.log_text();
        assert!(
            log.contains("PASV") && log.contains("NLST"),
            "fallbacks used"
        );
    }
}

/// A server without SIZE and MDTM (RFC 3659 is an extension): uploads are
/// checked by the byte count and the 226 alone; NLST gives names only.
#[test]
fn server_without_size_or_mdtm() {
    let server = Server::start(Opts {
        disable: vec!["MLSD", "MLST", "SIZE", "MDTM"],
        ..Opts::default()
    });
    let mut client = Client::connect(&server.settings()).unwrap();
    let mut data = RandomData::new(11, 3 * MB);
    client.upload("n.bin", &mut data, 3 * MB).unwrap();
    let mut out = HashWriter::default();
    assert_eq!(client.fetch("n.bin", &mut out).unwrap(), 3 * MB);
    assert_eq!(out.sha256(), data.sha256());
    let entries = client.list("n").unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].size, entries[0].modified), (None, None));
    client.remove("n.bin").unwrap();
    assert!(server.ls("").is_empty());
}

#[test]
fn mlsd_lists_files_only() {
    list_and_fetch_everywhere(&Server::plain());
}

/// Files made on the server's disk: list filters by prefix and leaves out
/// directories and temporary uploads; sizes and times are right.
fn list_and_fetch_everywhere(server: &Server) {
    fs::write(server.root.join("db-1"), vec![1u8; 1234]).unwrap();
    fs::write(server.root.join("db-2"), b"").unwrap();
    fs::write(server.root.join("other-1"), b"x").unwrap();
    fs::write(server.root.join(temp_name("db-3")), b"partial").unwrap();
    fs::create_dir(server.root.join("db-dir")).unwrap();
    let mut client = Client::connect(&server.settings()).unwrap();
    let entries = client.list("db-").unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["db-1", "db-2"], "{entries:?}");
    assert_eq!(entries[0].size, Some(1234));
    assert_eq!(entries[1].size, Some(0));
    for e in &entries {
        assert!(e.modified.unwrap().abs_diff(now()) < 120, "{e:?}");
    }
    assert_eq!(client.list("").unwrap().len(), 3);
    let mut out = HashWriter::default();
    assert_eq!(client.fetch("db-1", &mut out).unwrap(), 1234);
    assert_eq!(client.fetch("db-2", &mut HashWriter::default()).unwrap(), 0);
    client
        .upload("db-4", &mut RandomData::new(2, 77), 77)
        .unwrap();
    assert_eq!(client.list("db-4").unwrap()[0].size, Some(77));
}

#[test]
fn upload_replaces_an_existing_file() {
    let server = Server::plain();
    let mut client = Client::connect(&server.settings()).unwrap();
    client
        .upload("r", &mut RandomData::new(1, 3000), 3000)
        .unwrap();
    let mut second = RandomData::new(2, 2000);
    client.upload("r", &mut second, 2000).unwrap();
    assert_eq!(file_sha256(&server.root.join("r")), second.sha256());
}

#[test]
fn active_mode_eprt_and_port() {
    for disable in [vec![], vec!["EPRT"]] {
        let server = Server::start(Opts {
            disable: disable.clone(),
            ..Opts::default()
        });
        let settings = Settings {
            passive: false,
            ..server.settings()
        };
        let mut client = Client::connect(&settings).unwrap();
        let mut data = RandomData::new(4, 3 * MB);
        client.upload("act", &mut data, 3 * MB).unwrap();
        let mut out = HashWriter::default();
        client.fetch("act", &mut out).unwrap();
        assert_eq!(out.sha256(), data.sha256());
        let log = server.log_text();
        let used = if disable.is_empty() { "EPRT" } else { "PORT" };
        assert!(log.contains(&format!("<- {used}")), "{used} used");
    }
}

#[test]
fn tls_certificate_checks() {
    let server = Server::tls();
    // Not signed by a web root: refused, with a hint.
    let settings = Settings {
        tls_ca: None,
        ..server.settings()
    };
    let err = Client::connect(&settings).err().expect("untrusted cert");
    eprintln!("untrusted: {err}");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("tls_ca"), "{err}");
    // A CA that did not sign it: refused too.
    let other = ScratchDir::new("otherca");
    let (other_ca, _, _) = make_certs(&other.0);
    let settings = Settings {
        tls_ca: Some(other_ca),
        ..server.settings()
    };
    let err = Client::connect(&settings).err().expect("wrong CA");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    // Opting out of verification works (still encrypted).
    let settings = Settings {
        tls_ca: None,
        tls_insecure: true,
        ..server.settings()
    };
    let mut client = Client::connect(&settings).unwrap();
    client
        .upload("i", &mut RandomData::new(1, 100), 100)
        .unwrap();
    // A host name that is not in the certificate is refused.
    let settings = Settings {
        host: "127.0.0.2".into(),
        ..server.settings()
    };
    if let Err(err) = Client::connect(&settings) {
        assert!(
            matches!(err.kind, ErrorKind::Config | ErrorKind::Transient),
            "{err}"
        );
    } else {
        panic!("127.0.0.2 is not in the certificate");
    }
}

/// `tls_ca` set to the server's own self-signed certificate (CA:TRUE, which
/// WebPKI refuses as a server certificate) works: it is pinned.
#[test]
fn tls_self_signed_certificate_given_as_tls_ca() {
    let server = Server::start(Opts {
        tls: true,
        self_signed: true,
        ..Opts::default()
    });
    let mut client = Client::connect(&server.settings()).unwrap();
    let mut data = RandomData::new(12, MB);
    client.upload("p", &mut data, MB).unwrap();
    let mut out = HashWriter::default();
    client.fetch("p", &mut out).unwrap();
    assert_eq!(out.sha256(), data.sha256());
    // Another self-signed certificate does not open the door.
    let other = ScratchDir::new("otherself");
    let settings = Settings {
        tls_ca: Some(make_self_signed(&other.0).0),
        ..server.settings()
    };
    let err = Client::connect(&settings)
        .err()
        .expect("not the pinned cert");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
}

#[test]
fn tls_against_a_plain_server_is_refused_not_downgraded() {
    let server = Server::plain();
    let settings = Settings {
        tls: true,
        tls_insecure: true,
        ..server.settings()
    };
    let err = Client::connect(&settings).err().expect("no AUTH TLS");
    eprintln!("no AUTH TLS: {err}");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("AUTH TLS"), "{err}");
    assert!(!server.log_text().contains("<- USER"), "no login in clear");
}

#[test]
fn unreachable_and_silent_servers_are_transient() {
    // Nothing listens: refused.
    let port = free_ports(1)[0];
    let settings = Settings {
        host: "127.0.0.1".into(),
        port,
        user: "u".into(),
        ..Settings::default()
    };
    let err = Client::connect(&settings).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
    // Accepts but never greets: times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = Settings {
        port: silent.local_addr().unwrap().port(),
        timeout: Duration::from_millis(500),
        ..settings
    };
    let t = Instant::now();
    let err = Client::connect(&settings).err().unwrap();
    eprintln!("silent server: {err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("no answer within"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_names_are_refused_before_the_server_sees_them() {
    let server = Server::plain();
    let mut client = Client::connect(&server.settings()).unwrap();
    for bad in ["", "..", "a/b", "x\r\nDELE y"] {
        assert!(client.upload(bad, &mut io::empty(), 0).is_err(), "{bad:?}");
        assert!(client.remove(bad).is_err(), "{bad:?}");
    }
    assert!(!server.log_text().contains("DELE y"));
}
