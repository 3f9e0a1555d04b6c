//! A small command-line FTP client over the library, for manual checks and
//! plugins/ftp/bench.sh. Builds natively and for wasm32-wasip2 (run it with
//! `wasmtime run -S inherit-network -S allow-ip-name-lookup --dir ...`).
//!
//! ftp [--tls] [--ca PEMFILE] [--insecure] [--active] [--dir REMOTE_DIR]
//!     [--timeout SECS] [--trace] HOST PORT USER COMMAND ARGS...
//! COMMAND: upload LOCAL NAME | fetch NAME LOCAL | list [PREFIX] | remove NAME
//! The password comes from the FTP_PASSWORD environment variable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use offsite_ftp::{Client, Settings};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = Settings {
        password: std::env::var("FTP_PASSWORD").unwrap_or_default(),
        ..Settings::default()
    };
    let mut trace = false;
    while let Some(flag) = args.first().filter(|a| a.starts_with("--")).cloned() {
        args.remove(0);
        let mut value = || {
            if args.is_empty() {
                Err(format!("{flag} needs a value"))
            } else {
                Ok(args.remove(0))
            }
        };
        match flag.as_str() {
            "--tls" => s.tls = true,
            "--insecure" => s.tls_insecure = true,
            "--active" => s.passive = false,
            "--trace" => trace = true,
            "--ca" => {
                let path = value()?;
                s.tls_ca =
                    Some(std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?);
            }
            "--dir" => s.remote_dir = value()?,
            "--timeout" => {
                let v = value()?;
                s.timeout = Duration::from_secs_f64(v.parse().map_err(|_| format!("{v}?"))?);
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.len() < 4 {
        return Err("usage: ftp [options] HOST PORT USER COMMAND ARGS...".into());
    }
    s.host = args[0].clone();
    s.port = args[1]
        .parse()
        .map_err(|_| format!("{}: not a port", args[1]))?;
    s.user = args[2].clone();
    let hook: Option<offsite_ftp::Trace> = match trace {
        true => Some(Box::new(|l: &str| eprintln!("{l}"))),
        false => None,
    };
    let started = Instant::now();
    let mut client = Client::connect_traced(&s, hook).map_err(|e| e.to_string())?;
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument".to_string());
    match args[3].as_str() {
        "upload" => {
            let (local, name) = (arg(4)?, arg(5)?);
            let mut f = File::open(&local).map_err(|e| format!("{local}: {e}"))?;
            let size = f.metadata().map_err(|e| e.to_string())?.len();
            client
                .upload(&name, &mut f, size)
                .map_err(|e| format!("{}: {e}", e.kind))?;
            eprintln!("uploaded {size} bytes in {:?}", started.elapsed());
        }
        "fetch" => {
            let (name, local) = (arg(4)?, arg(5)?);
            let f = File::create(&local).map_err(|e| format!("{local}: {e}"))?;
            let mut out = BufWriter::new(f);
            let n = client
                .fetch(&name, &mut out)
                .map_err(|e| format!("{}: {e}", e.kind))?;
            out.flush().map_err(|e| e.to_string())?;
            eprintln!("fetched {n} bytes in {:?}", started.elapsed());
        }
        "list" => {
            let prefix = args.get(4).map(String::as_str).unwrap_or("");
            for e in client
                .list(prefix)
                .map_err(|e| format!("{}: {e}", e.kind))?
            {
                let size = e.size.map_or("-".into(), |v| v.to_string());
                let modified = e.modified.map_or("-".into(), |v| v.to_string());
                println!("{}\t{size}\t{modified}", e.name);
            }
        }
        "remove" => client
            .remove(&arg(4)?)
            .map_err(|e| format!("{}: {e}", e.kind))?,
        other => return Err(format!("unknown command {other}")),
    }
    client.quit();
    Ok(())
}
