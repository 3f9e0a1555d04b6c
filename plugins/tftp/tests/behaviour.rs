//! Negotiation fallbacks, error mapping and loss recovery against the real
//! servers (tftpd-hpa and atftpd).

// Native only: the workspace builds for wasm32-wasip2 by default, and these
// tests start servers and threads on the host.
#![cfg(not(target_os = "wasi"))]

mod common;

use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::relay::{Loss, Relay, protect_block};
use common::{Kind, Server, TempDir, opts, random_file, round_trip_random};
use offsite_test_servers::free_udp_port;
use offsite_tftp::{ErrorKind, Options, get, get_report, put, put_report};

/// tftpd-hpa acknowledges blksize, tsize and timeout but not windowsize
/// (it does not implement RFC 7440): the OACK's values win and the window
/// falls back to 1.
#[test]
fn hpa_ignores_windowsize_so_the_client_uses_lockstep() {
    let server = Server::hpa(&[]);
    let (up, down) = round_trip_random(
        &server,
        server.addr,
        300_000,
        11,
        "w16.bin",
        &opts(1468, 16),
    );
    for r in [up, down] {
        assert!(r.oack);
        assert_eq!((r.blksize, r.windowsize, r.tsize), (1468, 1, Some(300_000)));
    }
}

/// With every option refused (`-r`), tftpd-hpa answers a WRQ with a plain
/// ACK 0 and an RRQ with DATA 1: RFC 1350 transfer, blksize 512, window 1.
/// 3 × 512 bytes exactly, so the transfer ends with an empty block.
#[test]
fn hpa_refusing_every_option_means_plain_rfc1350() {
    let server = Server::hpa(&["-r", "blksize", "-r", "tsize", "-r", "timeout"]);
    for size in [3 * 512, 3 * 512 + 7] {
        let (up, down) = round_trip_random(
            &server,
            server.addr,
            size,
            size,
            "plain.bin",
            &opts(1468, 16),
        );
        for r in [up, down] {
            assert!(!r.oack, "no OACK expected");
            assert_eq!((r.blksize, r.windowsize, r.tsize), (512, 1, None));
        }
    }
}

/// atftpd with windowsize disabled acknowledges the others: partial OACK.
#[test]
fn atftpd_partial_oack_keeps_defaults_for_the_rest() {
    let server = Server::atftpd(&["--no-windowsize", "--no-tsize"]);
    let (up, down) = round_trip_random(
        &server,
        server.addr,
        200_001,
        5,
        "partial.bin",
        &opts(1024, 8),
    );
    for r in [up, down] {
        assert!(r.oack);
        assert_eq!((r.blksize, r.windowsize, r.tsize), (1024, 1, None));
    }
}

/// atftpd with every option disabled.
#[test]
fn atftpd_without_options_means_plain_rfc1350() {
    let server = Server::atftpd(&[
        "--no-blksize",
        "--no-windowsize",
        "--no-tsize",
        "--no-timeout",
    ]);
    let (up, down) = round_trip_random(
        &server,
        server.addr,
        100_000,
        6,
        "plain.bin",
        &opts(1468, 16),
    );
    for r in [up, down] {
        assert_eq!((r.blksize, r.windowsize, r.tsize), (512, 1, None));
    }
}

/// Sizes that are multiples of the block size end with an empty DATA
/// block (RFC 1350 §6); so does an empty file.
#[test]
fn exact_multiples_of_blksize_and_empty_files() {
    for kind in [Kind::Hpa, Kind::Atftpd] {
        let server = Server::start(kind);
        for (blksize, windowsize, size) in [
            (1468u16, 1u16, 0u64),
            (1468, 4, 0),
            (1468, 1, 1468 * 5),
            (1000, 4, 1000 * 8),
            (512, 4, 512),
        ] {
            let name = format!("multiple-{blksize}-{windowsize}-{size}");
            round_trip_random(
                &server,
                server.addr,
                size,
                size + 1,
                &name,
                &opts(blksize, windowsize),
            );
        }
    }
}

#[test]
fn missing_file_is_not_found() {
    for kind in [Kind::Hpa, Kind::Atftpd] {
        let server = Server::start(kind);
        let mut out = Vec::new();
        let e = get(
            server.addr,
            "no-such-file.dump",
            &mut out,
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{kind:?}: {e}");
        assert!(e.message.contains("no-such-file.dump"), "{e}");
        assert!(e.message.contains(&server.addr.to_string()), "{e}");
        assert!(out.is_empty());
    }
}

/// tftpd-hpa refuses to overwrite a file that is not world-writable;
/// atftpd (running as nobody) cannot create files in a directory it does
/// not own. Both answer ERROR 2 (access violation) → Rejected.
#[test]
fn denied_upload_is_rejected() {
    let data = b"backup bytes";
    let hpa = Server::hpa(&[]);
    let locked = hpa.file("locked.dump");
    fs::write(&locked, b"old").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    let e = put(
        hpa.addr,
        "locked.dump",
        &mut &data[..],
        data.len() as u64,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "tftpd-hpa: {e}");
    assert!(
        e.message.contains("locked.dump") && e.message.contains("ERROR 2"),
        "{e}"
    );
    assert_eq!(fs::read(&locked).unwrap(), b"old");

    let at = Server::atftpd(&[]);
    fs::set_permissions(at.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let e = put(
        at.addr,
        "new.dump",
        &mut &data[..],
        data.len() as u64,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "atftpd: {e}");
    assert!(!at.file("new.dump").exists());
}

/// Nothing listens: every request times out, and after `retries`
/// retransmissions the error is Transient.
#[test]
fn dead_port_is_transient_after_retries() {
    let dead: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let o = Options {
        timeout: Duration::from_millis(50),
        retries: 3,
        ..Options::default()
    };
    let t = Instant::now();
    let e = get(dead, "x.dump", &mut Vec::new(), &o).unwrap_err();
    let elapsed = t.elapsed();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("4 tries"), "{e}");
    assert!(e.message.contains("read request"), "{e}");
    assert!(
        e.message.contains(&dead.to_string()) && e.message.contains("x.dump"),
        "{e}"
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    let e = put(dead, "y.dump", &mut &b"abc"[..], 3, &o).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
}

/// The server stops answering in the middle of a transfer.
#[test]
fn server_dying_mid_transfer_is_transient() {
    let server = Server::hpa(&[]);
    let scratch = TempDir::new("src");
    let src = scratch.join("f");
    random_file(&src, 20_000_000, 3);
    let addr = server.addr;
    let o = Options {
        blksize: 512,
        timeout: Duration::from_millis(100),
        retries: 2,
        ..Options::default()
    };
    // Kill the listener and its per-transfer children shortly after start.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(server);
        // Dropping the server also kills its per-transfer children.
    });
    let mut f = File::open(&src).unwrap();
    let r = put(addr, "dying.bin", &mut f, 20_000_000, &o);
    killer.join().unwrap();
    let e = r.expect_err("the transfer cannot complete");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("ACK for block"), "{e}");
}

/// Through a relay that drops 5% of the datagrams and duplicates 3%, in
/// both directions, transfers still complete byte-identical.
///
/// The client's timeout is short (100 ms). tftpd-hpa never answers a
/// duplicate ACK (Sorcerer's Apprentice protection), so only its own timer
/// recovers a lost DATA: it runs with a 200 ms retransmit timeout (`-T`)
/// and refuses the `timeout` option that would raise it to 1 s, or the
/// test would spend a second per lost DATA block.
fn lossy(server: Server, blksize: u16, windowsize: u16, size: u64, seed: u64) {
    let kind = server.kind;
    let last_block = (size / u64::from(blksize) + 1) as u16;
    let relay = Relay::start(
        server.addr,
        Loss {
            drop_pct: 5,
            dup_pct: 3,
            seed,
            protect: protect_block(last_block),
        },
    );
    let o = Options {
        blksize,
        windowsize,
        timeout: Duration::from_millis(100),
        retries: 8,
        tsize: true,
    };
    let t = Instant::now();
    let (up, down) = round_trip_random(&server, relay.addr, size, seed, "lossy.bin", &o);
    let dropped = relay.stats.dropped.load(Ordering::Relaxed);
    let duplicated = relay.stats.duplicated.load(Ordering::Relaxed);
    eprintln!(
        "{kind:?} via lossy relay: {:.1} s, {dropped} dropped, {duplicated} duplicated, \
         {} + {} retransmits, {} + {} foreign",
        t.elapsed().as_secs_f64(),
        up.retransmits,
        down.retransmits,
        up.foreign_packets,
        down.foreign_packets
    );
    assert!(
        dropped > 10 && duplicated > 5,
        "the relay should have interfered"
    );
    assert!(up.retransmits + down.retransmits > 0);
}

#[test]
fn lossy_relay_hpa_lockstep() {
    lossy(
        Server::hpa(&["-T", "200000", "-r", "timeout"]),
        1468,
        1,
        600_000,
        42,
    );
}

#[test]
fn lossy_relay_hpa_small_blocks() {
    lossy(
        Server::hpa(&["-T", "200000", "-r", "timeout"]),
        512,
        16,
        200_000,
        4242,
    );
}

#[test]
fn lossy_relay_atftpd_window8() {
    lossy(Server::atftpd(&[]), 1468, 8, 1_000_000, 7);
}

#[test]
fn lossy_relay_atftpd_lockstep_small_blocks() {
    lossy(Server::atftpd(&[]), 512, 1, 120_000, 99);
}

#[test]
fn bad_options_and_names_are_config_errors_without_network() {
    // Port 9 (discard) on loopback: nothing is sent, so nothing listens.
    let nowhere: SocketAddr = ([127, 0, 0, 1], 9).into();
    let bad = Options {
        blksize: 4,
        ..Options::default()
    };
    let e = get(nowhere, "a", &mut Vec::new(), &bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("blksize 4"), "{e}");
    let e = put(nowhere, "", &mut &b""[..], 0, &Options::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    let e = put(nowhere, "a\0b", &mut &b""[..], 0, &Options::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
}

/// A stream that ends before the announced size aborts the upload instead
/// of completing a short file.
#[test]
fn short_data_stream_aborts_the_upload() {
    let server = Server::hpa(&[]);
    let data = vec![7u8; 5000];
    let e = put_report(
        server.addr,
        "short.bin",
        &mut &data[..],
        6000,
        &opts(1468, 1),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(
        e.message.contains("5000") && e.message.contains("6000"),
        "{e}"
    );
    // tftpd-hpa keeps what it received, but never the final short block.
    let kept = fs::metadata(server.file("short.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(kept < 5000, "server kept {kept} bytes");

    let long = vec![7u8; 7000];
    let e = put(
        server.addr,
        "long.bin",
        &mut &long[..],
        6000,
        &opts(1468, 1),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
}

/// A download that matches what the server announced in tsize.
#[test]
fn get_checks_tsize() {
    let server = Server::hpa(&[]);
    fs::write(server.file("t.bin"), vec![1u8; 4321]).unwrap();
    fs::set_permissions(server.file("t.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    let mut out = Vec::new();
    let r = get_report(server.addr, "t.bin", &mut out, &Options::default()).unwrap();
    assert_eq!((r.bytes, r.tsize), (4321, Some(4321)));
    assert_eq!(out, vec![1u8; 4321]);
}
