//! Round trips against real servers (tftpd-hpa and atftpd): upload a random
//! file, fetch it back, compare sha256 of the source, the server's copy and
//! the fetched copy.
//!
//! The 100 MiB cases at blksize 512 are 204800 blocks: the 16-bit block
//! number wraps three times, and since 100 MiB is a multiple of 512 the
//! transfer ends with an empty DATA block. The rest of the matrix uses
//! 8 MiB + 123 bytes to stay affordable.

// Native only: the workspace builds for wasm32-wasip2 by default, and these
// tests start servers and threads on the host.
#![cfg(not(target_os = "wasi"))]

mod common;

use common::{Kind, Server, opts, round_trip_random};

const MIB: u64 = 1024 * 1024;

fn case(kind: Kind, blksize: u16, windowsize: u16, size: u64) {
    let server = Server::start(kind);
    let seed = u64::from(blksize) << 16 | u64::from(windowsize);
    let name = format!("rt-{blksize}-{windowsize}.bin");
    let o = opts(blksize, windowsize);
    let (up, down) = round_trip_random(&server, server.addr, size, seed, &name, &o);
    for r in [&up, &down] {
        assert!(r.oack, "{kind:?} should answer the options with an OACK");
        assert_eq!(r.blksize, blksize, "{kind:?} acknowledges blksize");
        // tftpd-hpa does not implement RFC 7440 and leaves windowsize out
        // of its OACK: the client must fall back to lockstep. atftpd grants
        // what is asked, which the client keeps within MAX_BURST.
        let want_window = if kind == Kind::Hpa {
            1
        } else {
            o.requested_windowsize()
        };
        assert_eq!(r.windowsize, want_window, "{kind:?} windowsize");
    }
    assert_eq!(up.tsize, Some(size), "tsize echoed on the upload");
    assert_eq!(down.tsize, Some(size), "tsize announced on the download");
}

macro_rules! cases {
    ($($name:ident: $kind:ident, $blk:expr, $win:expr, $size:expr;)*) => {$(
        #[test]
        fn $name() {
            case(Kind::$kind, $blk, $win, $size);
        }
    )*};
}

cases! {
    hpa_100mib_blksize512_wraps: Hpa, 512, 1, 100 * MIB;
    atftpd_100mib_blksize512_window16_wraps: Atftpd, 512, 16, 100 * MIB;
    hpa_100mib_blksize65464: Hpa, 65464, 1, 100 * MIB;
    atftpd_100mib_blksize1468_window16: Atftpd, 1468, 16, 100 * MIB;

    hpa_blksize512_window16_falls_back: Hpa, 512, 16, 8 * MIB + 123;
    hpa_blksize1468_window1: Hpa, 1468, 1, 8 * MIB + 123;
    hpa_blksize1468_window16_falls_back: Hpa, 1468, 16, 8 * MIB + 123;
    hpa_blksize65464_window16_falls_back: Hpa, 65464, 16, 8 * MIB + 123;

    atftpd_blksize512_window1: Atftpd, 512, 1, 8 * MIB + 123;
    atftpd_blksize1468_window1: Atftpd, 1468, 1, 8 * MIB + 123;
    atftpd_blksize65464_window1: Atftpd, 65464, 1, 8 * MIB + 123;
    // Requested as 16, sent as 1 and 8: 16 such blocks back to back
    // overflow socket buffers (see MAX_BURST).
    atftpd_blksize65464_window16: Atftpd, 65464, 16, 8 * MIB + 123;
    atftpd_blksize8192_window16: Atftpd, 8192, 16, 8 * MIB + 123;
}
