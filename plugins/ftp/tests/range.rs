//! Ranged reads (`Client::fetch_range`: REST + RETR, RFC 3659 §5) against a
//! real pyftpdlib server: exact bytes, the transfer left at the range's end
//! with the control connection still in step, short ranges reported as
//! short, and a server without REST as `Unsupported`.
#![cfg(not(target_os = "wasi"))]

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

use common::*;
use offsite_ftp::{Client, ErrorKind};

/// `len` bytes of `path` from `offset`, read directly: the oracle.
fn slice(path: &std::path::Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![];
    f.take(len).read_to_end(&mut v).unwrap();
    v
}

fn write_random(path: &std::path::Path, seed: u64, len: u64) {
    let mut f = fs::File::create(path).unwrap();
    std::io::copy(&mut RandomData::new(seed, len), &mut f).unwrap();
    f.flush().unwrap();
}

fn ranges_on(server: &Server) {
    let file = server.root.join("vol.bin");
    let size = 48 * MB + 17;
    write_random(&file, 7, size);
    let mut client = Client::connect(&server.settings()).unwrap();
    for (offset, len) in [
        (0, 1),
        (33 * MB + 5, 100 * 1024),
        (MB - 3, 2 * MB + 6),
        // Up to the very last byte: the server ends the transfer itself.
        (size - 4096, 4096),
        (size - 1, 1),
    ] {
        let mut out = vec![];
        let n = client
            .fetch_range("vol.bin", offset, len, &mut out)
            .unwrap();
        assert_eq!(n, len, "range {offset}+{len}");
        assert!(
            out == slice(&file, offset, len),
            "range {offset}+{len} differs"
        );
    }
    // Past the end: what exists, counted, never more.
    let mut out = vec![];
    let n = client
        .fetch_range("vol.bin", size - 10, 100, &mut out)
        .unwrap();
    assert_eq!(n, 10);
    assert!(out == slice(&file, size - 10, 10));
    // The control connection is still in step: a whole fetch and a listing.
    let mut whole = HashWriter::default();
    assert_eq!(client.fetch("vol.bin", &mut whole).unwrap(), size);
    assert_eq!(whole.sha256(), file_sha256(&file));
    assert_eq!(client.list("vol").unwrap().len(), 1);
    let err = client
        .fetch_range("missing.bin", 0, 10, &mut vec![])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    let log = server.log_text();
    assert_eq!(
        log.matches("logged in").count(),
        1,
        "one login for everything"
    );
    assert!(log.contains(&format!("REST {}", 33 * MB + 5)), "REST sent");
}

#[test]
fn plain_ranges_are_exact_and_the_session_goes_on() {
    ranges_on(&Server::plain());
}

#[test]
fn tls_ranges_are_exact_and_the_session_goes_on() {
    ranges_on(&Server::tls());
}

#[test]
fn a_server_without_rest_is_unsupported() {
    let server = Server::start(Opts {
        disable: vec!["REST"],
        ..Opts::default()
    });
    write_random(&server.root.join("vol.bin"), 3, MB);
    let mut client = Client::connect(&server.settings()).unwrap();
    let err = client
        .fetch_range("vol.bin", 10, 10, &mut vec![])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(err.message.contains("REST 10"), "{err}");
    // Still usable: the whole object is the fallback.
    let mut whole = HashWriter::default();
    assert_eq!(client.fetch("vol.bin", &mut whole).unwrap(), MB);
}
