//! A small command-line TFTP client over the library, for the bench script
//! and for trying the wasm32-wasip2 build under `wasmtime run`.
//!
//! ```text
//! tftp put HOST:PORT REMOTE LOCAL [--blksize N] [--windowsize N] [--timeout-ms N] [--retries N] [--no-tsize]
//! tftp get HOST:PORT REMOTE LOCAL [same options]
//! ```
//! Prints one line to stderr: bytes, seconds, MB/s and what was negotiated.

use std::fs::File;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use offsite_tftp::{Options, get_report, put_report};

fn usage() -> ExitCode {
    eprintln!(
        "usage: tftp put|get HOST:PORT REMOTE LOCAL [--blksize N] [--windowsize N] \
         [--timeout-ms N] [--retries N] [--no-tsize]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return usage();
    }
    let Ok(server) = args[1].parse::<SocketAddr>() else {
        eprintln!("tftp: {:?} is not an IP:PORT address", args[1]);
        return usage();
    };
    let (remote, local) = (&args[2], &args[3]);
    let mut opts = Options::default();
    let mut rest = args[4..].iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-tsize" {
            opts.tsize = false;
            continue;
        }
        let Some(value) = rest.next().and_then(|v| v.parse::<u64>().ok()) else {
            eprintln!("tftp: {flag} needs a number");
            return usage();
        };
        match flag.as_str() {
            "--blksize" => opts.blksize = value.min(u16::MAX as u64) as u16,
            "--windowsize" => opts.windowsize = value.min(u16::MAX as u64) as u16,
            "--timeout-ms" => opts.timeout = Duration::from_millis(value),
            "--retries" => opts.retries = value.min(u32::MAX as u64) as u32,
            _ => return usage(),
        }
    }

    let started = Instant::now();
    let result = match args[0].as_str() {
        "put" => File::open(local)
            .and_then(|f| Ok((f.metadata()?.len(), f)))
            .map_err(|e| format!("{local}: {e}"))
            .and_then(|(size, mut f)| {
                put_report(server, remote, &mut f, size, &opts)
                    .map_err(|e| format!("{} ({})", e, e.kind))
            }),
        "get" => File::create(local)
            .map_err(|e| format!("{local}: {e}"))
            .and_then(|mut f| {
                get_report(server, remote, &mut f, &opts).map_err(|e| format!("{} ({})", e, e.kind))
            }),
        _ => return usage(),
    };
    match result {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{} bytes in {secs:.3} s = {:.1} MB/s (blksize {}, windowsize {}, oack {}, retransmits {})",
                r.bytes,
                r.bytes as f64 / secs / 1e6,
                r.blksize,
                r.windowsize,
                r.oack,
                r.retransmits
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tftp: {e}");
            ExitCode::FAILURE
        }
    }
}
