//! Memory stays constant: a 64 MiB upload and download through the
//! library never holds more than a window's worth of data. A counting
//! global allocator measures the heap high-water mark of this test binary
//! (one test, so nothing else allocates meanwhile).

// Native only: the workspace builds for wasm32-wasip2 by default, and these
// tests start servers and threads on the host.
#![cfg(not(target_os = "wasi"))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Kind, Rng, Server, opts};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `len` pseudo-random bytes, generated on the fly.
struct Source {
    rng: Rng,
    left: u64,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            *b = self.rng.next_u64() as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Checks the bytes against the same generator, keeping nothing.
struct Check {
    rng: Rng,
    seen: u64,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            assert_eq!(b, self.rng.next_u64() as u8, "byte {} differs", self.seen);
            self.seen += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_64_mib_round_trip_keeps_the_heap_small() {
    const SIZE: u64 = 64 * 1024 * 1024;
    for (kind, blksize, windowsize) in [(Kind::Hpa, 1468u16, 1u16), (Kind::Atftpd, 8192, 16)] {
        let server = Server::start(kind);
        let o = opts(blksize, windowsize);
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);

        let mut src = Source {
            rng: Rng::new(77),
            left: SIZE,
        };
        let t = std::time::Instant::now();
        let up = offsite_tftp::put_report(server.addr, "mem.bin", &mut src, SIZE, &o).expect("put");
        assert_eq!(up.bytes, SIZE);
        eprintln!(
            "{kind:?}: put {:.2} s, {} retransmits",
            t.elapsed().as_secs_f64(),
            up.retransmits
        );
        let mut check = Check {
            rng: Rng::new(77),
            seen: 0,
        };
        // atftpd acknowledges before it closes the file; let it settle.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(server.file("mem.bin"))
            .map(|m| m.len())
            .unwrap_or(0)
            != SIZE
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let t = std::time::Instant::now();
        let down = offsite_tftp::get_report(server.addr, "mem.bin", &mut check, &o).expect("get");
        assert_eq!((down.bytes, check.seen), (SIZE, SIZE));
        eprintln!(
            "{kind:?}: get {:.2} s, {} retransmits",
            t.elapsed().as_secs_f64(),
            down.retransmits
        );

        let peak = PEAK.load(Ordering::Relaxed) - base;
        // Receive buffer (64 KiB), window ring (windowsize × blksize), the
        // 64 KiB output buffer, and small change.
        let budget = 65_536 * 2 + usize::from(windowsize) * (usize::from(blksize) + 4) + 64 * 1024;
        eprintln!("{kind:?}: heap peak {peak} bytes for {SIZE} bytes each way (budget {budget})");
        assert!(peak < budget, "{kind:?}: heap peak {peak} bytes > {budget}");
    }
}
