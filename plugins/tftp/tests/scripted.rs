//! Protocol edge cases that real servers do not produce on demand, against
//! a scripted peer: a thread that plays the server's side packet by packet
//! with the crate's own codec and asserts on what the client sends.

// Native only: the workspace builds for wasm32-wasip2 by default, and these
// tests start servers and threads on the host.
#![cfg(not(target_os = "wasi"))]

use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use offsite_tftp::packet::{self, Packet, error_code, opcode};
use offsite_tftp::{ErrorKind, Options, get_report, put_report};

/// One socket of the scripted server (the listener or a transfer ID).
struct Sock(UdpSocket);

impl Sock {
    fn bind() -> Sock {
        Sock(UdpSocket::bind("127.0.0.1:0").expect("bind"))
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }

    /// The next datagram within `wait`, or None.
    fn try_recv(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.0.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = vec![0u8; 70000];
        let (n, from) = self.0.recv_from(&mut buf).ok()?;
        buf.truncate(n);
        Some((buf, from))
    }

    fn recv(&self) -> (Vec<u8>, SocketAddr) {
        self.try_recv(Duration::from_secs(5))
            .expect("scripted server: expected a packet from the client")
    }

    fn send(&self, pkt: &[u8], to: SocketAddr) {
        self.0.send_to(pkt, to).expect("send");
    }

    fn send_oack(&self, options: &[(&str, &str)], to: SocketAddr) {
        let mut b = Vec::new();
        packet::encode_oack(&mut b, options);
        self.send(&b, to);
    }

    fn send_data(&self, block: u16, data: &[u8], to: SocketAddr) {
        let mut b = Vec::new();
        packet::encode_data(&mut b, block, data);
        self.send(&b, to);
    }

    /// Expects a DATA packet and returns (block, payload).
    fn expect_data(&self) -> (u16, Vec<u8>) {
        let (p, _) = self.recv();
        match packet::parse(&p) {
            Ok(Packet::Data { block, data }) => (block, data.to_vec()),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    fn expect_ack(&self) -> u16 {
        let (p, _) = self.recv();
        match packet::parse(&p) {
            Ok(Packet::Ack { block }) => block,
            other => panic!("expected ACK, got {other:?}"),
        }
    }
}

/// Runs `script` on a listener thread; returns the listener's address.
fn scripted(script: impl FnOnce(Sock) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listen = Sock::bind();
    let addr = listen.addr();
    (addr, std::thread::spawn(move || script(listen)))
}

/// Receives the request; returns (is_write, filename, options, client).
fn expect_request(listen: &Sock) -> (bool, String, Vec<(String, String)>, SocketAddr) {
    let (p, from) = listen.recv();
    match packet::parse(&p).expect("request parses") {
        Packet::Rrq(r) | Packet::Wrq(r) => {
            assert_eq!(r.mode, "octet");
            let opts = r
                .options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (
                p[1] == opcode::WRQ as u8,
                r.filename.to_string(),
                opts,
                from,
            )
        }
        other => panic!("expected a request, got {other:?}"),
    }
}

fn quick(blksize: u16, windowsize: u16) -> Options {
    Options {
        blksize,
        windowsize,
        timeout: Duration::from_millis(500),
        retries: 3,
        tsize: false,
    }
}

#[test]
fn oack_raising_blksize_is_refused_with_error8() {
    let (addr, server) = scripted(|listen| {
        let (write, name, opts, client) = expect_request(&listen);
        assert!(!write);
        assert_eq!(name, "f.bin");
        assert!(
            opts.contains(&("blksize".into(), "1468".into())),
            "{opts:?}"
        );
        let t = Sock::bind();
        t.send_oack(&[("blksize", "2000")], client);
        let (p, _) = t.recv();
        match packet::parse(&p) {
            Ok(Packet::Error { code, .. }) => assert_eq!(code, error_code::OPTION_REFUSED),
            other => panic!("expected ERROR 8, got {other:?}"),
        }
    });
    let e = get_report(addr, "f.bin", &mut Vec::new(), &quick(1468, 1)).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.message.contains("blksize \"2000\""), "{e}");
    assert!(
        e.message.contains("f.bin") && e.message.contains(&addr.to_string()),
        "{e}"
    );
}

#[test]
fn option_refusal_retries_once_without_options() {
    let (addr, server) = scripted(|listen| {
        let (_, _, opts, client1) = expect_request(&listen);
        assert!(!opts.is_empty());
        let mut b = Vec::new();
        packet::encode_error(&mut b, error_code::OPTION_REFUSED, "no options here");
        Sock::bind().send(&b, client1);
        // RFC 2347: the retry is a plain request, from a new transfer ID.
        let (_, name, opts, client2) = expect_request(&listen);
        assert_eq!(name, "plain.bin");
        assert!(opts.is_empty(), "{opts:?}");
        assert_ne!(client1, client2, "a new socket for the new attempt");
        let t = Sock::bind();
        t.send_data(1, &[9u8; 100], client2);
        assert_eq!(t.expect_ack(), 1);
    });
    let mut out = Vec::new();
    let r = get_report(addr, "plain.bin", &mut out, &quick(1468, 8)).unwrap();
    server.join().unwrap();
    assert_eq!(out, vec![9u8; 100]);
    assert!(r.options_refused && !r.oack);
    assert_eq!((r.blksize, r.windowsize), (512, 1));
}

#[test]
fn packets_from_another_transfer_id_get_error5_and_are_ignored() {
    let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    let expected = data.clone();
    let (addr, server) = scripted(move |listen| {
        let (write, _, _, client) = expect_request(&listen);
        assert!(write);
        let t = Sock::bind();
        let mut got = Vec::new();
        let mut block = 0u16;
        loop {
            t.send(&packet::ack(block), client);
            if block == 1 {
                // A stranger (another transfer ID) barges in.
                let x = Sock::bind();
                x.send(&packet::ack(1), client);
                let (p, from) = x.recv();
                assert_eq!(from, client);
                match packet::parse(&p) {
                    Ok(Packet::Error { code, .. }) => assert_eq!(code, error_code::UNKNOWN_TID),
                    other => panic!("expected ERROR 5, got {other:?}"),
                }
            }
            let (b, d) = t.expect_data();
            assert_eq!(b, block + 1);
            got.extend_from_slice(&d);
            block = b;
            if d.len() < 512 {
                t.send(&packet::ack(block), client);
                break;
            }
        }
        assert_eq!(got, expected);
    });
    let r = put_report(addr, "x.bin", &mut &data[..], 1500, &quick(512, 1)).unwrap();
    server.join().unwrap();
    assert_eq!(r.bytes, 1500);
    assert_eq!(r.foreign_packets, 1);
}

#[test]
fn duplicate_acks_do_not_trigger_retransmission() {
    let data = vec![1u8; 2048]; // 4 full blocks + an empty final block
    let (addr, server) = scripted(|listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        t.send(&packet::ack(0), client);
        assert_eq!(t.expect_data().0, 1);
        for _ in 0..3 {
            t.send(&packet::ack(1), client);
        }
        // Exactly one DATA 2, however many ACK 1 arrived (RFC 1123 §4.2.3.1).
        assert_eq!(t.expect_data().0, 2);
        assert!(
            t.try_recv(Duration::from_millis(300)).is_none(),
            "a duplicate ACK made the client send again"
        );
        // Duplicate ACK 0 (older still): ignored as well.
        t.send(&packet::ack(0), client);
        t.send(&packet::ack(2), client);
        for want in 3..=5u16 {
            let (b, d) = t.expect_data();
            assert_eq!(b, want);
            assert_eq!(d.len(), if want == 5 { 0 } else { 512 });
            t.send(&packet::ack(b), client);
        }
        assert!(t.try_recv(Duration::from_millis(200)).is_none());
    });
    let o = Options {
        timeout: Duration::from_secs(2),
        ..quick(512, 1)
    };
    let r = put_report(addr, "d.bin", &mut &data[..], 2048, &o).unwrap();
    server.join().unwrap();
    assert_eq!(r.retransmits, 0);
}

#[test]
fn partial_window_ack_resends_from_the_next_block() {
    let data: Vec<u8> = (0..50u8).collect(); // 6 blocks of 8 + one of 2
    let (addr, server) = scripted(|listen| {
        let (_, _, opts, client) = expect_request(&listen);
        assert!(
            opts.contains(&("windowsize".into(), "4".into())),
            "{opts:?}"
        );
        let t = Sock::bind();
        t.send_oack(&[("blksize", "8"), ("windowsize", "4")], client);
        let first: Vec<u16> = (0..4).map(|_| t.expect_data().0).collect();
        assert_eq!(first, [1, 2, 3, 4]);
        // RFC 7440 §4: ACK 2 says blocks 3 and 4 went missing.
        t.send(&packet::ack(2), client);
        let mut payload = Vec::new();
        let resent: Vec<u16> = (0..4)
            .map(|_| {
                let (b, d) = t.expect_data();
                if b >= 3 {
                    payload.push((b, d));
                }
                b
            })
            .collect();
        assert_eq!(resent, [3, 4, 5, 6]);
        t.send(&packet::ack(6), client);
        let (b, d) = t.expect_data();
        assert_eq!((b, d.len()), (7, 2));
        t.send(&packet::ack(7), client);
        assert_eq!(payload[0].1, (16..24).collect::<Vec<u8>>());
    });
    let o = Options {
        timeout: Duration::from_secs(2),
        ..quick(8, 4)
    };
    let r = put_report(addr, "w.bin", &mut &data[..], 50, &o).unwrap();
    server.join().unwrap();
    assert_eq!((r.blksize, r.windowsize), (8, 4));
    assert_eq!(r.retransmits, 2, "blocks 3 and 4 were sent twice");
}

#[test]
fn receiver_acks_the_last_in_order_block_once_per_gap() {
    let block = |b: u8| vec![b; 8];
    let (addr, server) = scripted(move |listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        t.send_oack(&[("blksize", "8"), ("windowsize", "4")], client);
        assert_eq!(t.expect_ack(), 0, "RFC 2347: the client confirms the OACK");
        // Window 1..4 with block 3 lost, and block 5 from beyond.
        for b in [1u8, 2, 4, 5] {
            t.send_data(b as u16, &block(b), client);
        }
        assert_eq!(t.expect_ack(), 2, "ACK of the last in-order block");
        assert!(
            t.try_recv(Duration::from_millis(200)).is_none(),
            "only one ACK per gap"
        );
        // The sender restarts the window at 3.
        for b in 3u8..=6 {
            t.send_data(b as u16, &block(b), client);
        }
        assert_eq!(t.expect_ack(), 6);
        t.send_data(7, b"end", client);
        assert_eq!(t.expect_ack(), 7);
    });
    let o = Options {
        timeout: Duration::from_secs(2),
        ..quick(8, 4)
    };
    let mut out = Vec::new();
    let r = get_report(addr, "g.bin", &mut out, &o).unwrap();
    server.join().unwrap();
    let mut want = Vec::new();
    for b in 1u8..=6 {
        want.extend(block(b));
    }
    want.extend_from_slice(b"end");
    assert_eq!(out, want);
    assert_eq!(r.bytes, 51);
}

#[test]
fn unanswered_window_is_resent_with_backoff_then_transient() {
    let (addr, server) = scripted(|listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        t.send(&packet::ack(0), client);
        let mut arrivals = Vec::new();
        let start = Instant::now();
        let mut farewell = None;
        while let Some((p, _)) = t.try_recv(Duration::from_millis(1500)) {
            match packet::parse(&p) {
                Ok(Packet::Data { block: 1, .. }) => arrivals.push(start.elapsed()),
                // On giving up, the client tells the server to stop too.
                Ok(Packet::Error { code, message }) => {
                    farewell = Some((code, message.into_owned()));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(farewell, Some((0, "client timed out".to_string())));
        // First send + 3 retransmissions, 50, 100, 200 ms apart (backoff).
        assert_eq!(arrivals.len(), 4, "{arrivals:?}");
        let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[2] > gaps[0] * 3, "exponential backoff: {gaps:?}");
    });
    let o = Options {
        timeout: Duration::from_millis(50),
        retries: 3,
        ..quick(512, 1)
    };
    let e = put_report(addr, "t.bin", &mut &[5u8; 700][..], 700, &o).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.message.contains("no ACK for block 1 after 4 tries"),
        "{e}"
    );
}

#[test]
fn first_answer_fixes_the_transfer_id() {
    // The request is retransmitted; the server answers both copies from
    // two transfer IDs (as a forking server does). The second gets ERROR 5.
    let (addr, server) = scripted(|listen| {
        let (_, _, _, client) = expect_request(&listen);
        let (_, _, _, again) = expect_request(&listen);
        assert_eq!(
            client, again,
            "the request is retransmitted from the same TID"
        );
        let t1 = Sock::bind();
        let t2 = Sock::bind();
        t1.send_data(1, &[7u8; 512], client);
        t2.send_data(1, b"second", client);
        let (p, _) = t2.recv();
        assert!(matches!(
            packet::parse(&p),
            Ok(Packet::Error { code: 5, .. })
        ));
        assert_eq!(t1.expect_ack(), 1);
        t1.send_data(2, b"end", client);
        assert_eq!(t1.expect_ack(), 2);
    });
    let mut out = Vec::new();
    let o = Options {
        timeout: Duration::from_millis(100),
        ..quick(512, 1)
    };
    let r = get_report(addr, "tid.bin", &mut out, &o).unwrap();
    server.join().unwrap();
    let mut want = vec![7u8; 512];
    want.extend_from_slice(b"end");
    assert_eq!(out, want);
    assert_eq!(r.foreign_packets, 1);
    assert!(r.retransmits >= 1);
}

#[test]
fn oversized_data_block_is_a_protocol_error() {
    let (addr, server) = scripted(|listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        t.send_data(1, &[0u8; 600], client); // no OACK: blksize is 512
        let (p, _) = t.recv();
        assert!(matches!(
            packet::parse(&p),
            Ok(Packet::Error { code: 4, .. })
        ));
    });
    let e = get_report(addr, "big.bin", &mut Vec::new(), &quick(1468, 1)).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.message.contains("600 bytes"), "{e}");
}

#[test]
fn download_shorter_than_tsize_is_an_error() {
    let (addr, server) = scripted(|listen| {
        let (_, _, opts, client) = expect_request(&listen);
        assert!(opts.contains(&("tsize".into(), "0".into())), "{opts:?}");
        let t = Sock::bind();
        t.send_oack(&[("tsize", "1000")], client);
        assert_eq!(t.expect_ack(), 0);
        t.send_data(1, &[1u8; 10], client);
        assert_eq!(t.expect_ack(), 1);
    });
    let o = Options {
        tsize: true,
        ..quick(512, 1)
    };
    let e = get_report(addr, "short.bin", &mut Vec::new(), &o).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.message.contains("tsize 1000"), "{e}");
}

#[test]
fn server_errors_map_to_kinds() {
    for (code, kind) in [
        (error_code::FILE_NOT_FOUND, ErrorKind::NotFound),
        (error_code::ACCESS_VIOLATION, ErrorKind::Rejected),
        (error_code::DISK_FULL, ErrorKind::Rejected),
        (error_code::FILE_EXISTS, ErrorKind::Rejected),
        (error_code::ILLEGAL_OPERATION, ErrorKind::Other),
        (error_code::NOT_DEFINED, ErrorKind::Other),
    ] {
        // Mid-transfer: after the first block is acknowledged.
        let (addr, server) = scripted(move |listen| {
            let (_, _, _, client) = expect_request(&listen);
            let t = Sock::bind();
            t.send(&packet::ack(0), client);
            t.expect_data();
            let mut b = Vec::new();
            packet::encode_error(&mut b, code, "scripted failure");
            t.send(&b, client);
        });
        let e = put_report(addr, "e.bin", &mut &[0u8; 2000][..], 2000, &quick(512, 1)).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, kind, "ERROR {code}: {e}");
        assert!(e.message.contains("scripted failure"), "{e}");
        assert!(e.message.contains(&format!("ERROR {code}")), "{e}");
    }
}

#[test]
fn a_stream_of_duplicates_cannot_hold_off_the_timeout() {
    let (addr, server) = scripted(|listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        // Acknowledge the request, then repeat that stale ACK every
        // millisecond and never acknowledge block 1.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            t.send(&packet::ack(0), client);
            if let Some((p, _)) = t.try_recv(Duration::from_millis(1))
                && matches!(packet::parse(&p), Ok(Packet::Error { .. }))
            {
                return;
            }
        }
    });
    let o = Options {
        timeout: Duration::from_millis(50),
        retries: 2,
        ..quick(512, 1)
    };
    let t = Instant::now();
    let e = put_report(addr, "flood.bin", &mut &[1u8; 600][..], 600, &o).unwrap_err();
    let elapsed = t.elapsed();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

/// tftpd-hpa without `-c` answers a write request with ERROR 1: that is a
/// refusal to create the file (rejected, with the fix), not "not found".
#[test]
fn error_1_to_a_write_request_is_a_refusal_to_create() {
    let (addr, server) = scripted(move |listen| {
        let (_, _, _, client) = expect_request(&listen);
        let t = Sock::bind();
        let mut b = Vec::new();
        packet::encode_error(&mut b, error_code::FILE_NOT_FOUND, "File not found");
        t.send(&b, client);
    });
    let e = put_report(addr, "e.bin", &mut &[0u8; 2000][..], 2000, &quick(512, 1)).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert!(e.message.contains("refused to create the file"), "{e}");
    assert!(e.message.contains("-c"), "{e}");
}
