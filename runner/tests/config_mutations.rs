//! A property of the config parser: whatever an operator (or a bad editor
//! merge) makes of a valid file, `Config::parse` answers with a config or
//! located errors, and never panics; and a config it accepts never makes the
//! runner's clocks overflow (the `plugin_timeout = "18446744073709551615s"`
//! kind). A bounded random-mutation loop, seeded and reproducible
//! (cargo-fuzz needs a nightly toolchain): OFFSITE_MUTATION_SEED and
//! OFFSITE_MUTATION_SECS change the seed and the time spent.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use offsite::config::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VALID: &str = r#"
[runner]
backup_dir = "/var/backups"
plugins_dir = "/usr/lib/offsite/plugins"
state_dir = "/var/lib/offsite"
log_file = "/var/log/backup.log"
max_parallel = 2
plugin_memory = "256MiB"
plugin_timeout = "5m"
transfer_timeout = "24h"
stall_timeout = "2m"
shutdown_grace = "60s"
debug_plugins = false

[destinations.nas]
plugin = "local-dir"
path = "/mnt/nas/backups"

[destinations.ftp1]
plugin = "ftp"
host = "192.0.2.11"
port = 21
user = "backup"
password = "pw"

[notifiers.ops]
plugin = "webhook"
url = "http://127.0.0.1:8088/hook"
on = ["failure", "verify-failed"]

[jobs.calls]
source = "postgres"
dsn = "postgresql://postgres@127.0.0.1:5432/calls"
format = "directory"
jobs = 4
paths = ["/data/wwwroot/app"]
compression = "zstd"
level = 3
threads = 2
keep = 7
schedule = "weekly 04:30"
enabled = true
destinations = ["nas", "ftp1"]
notifiers = ["ops"]
verify = "checksum"
hook_timeout = "1h"

[jobs.files]
source = "files"
paths = ["/etc"]
compression = "gzip"
level = 6
schedule = "every 6h"
"#;

/// Values that broke parsers before: huge and negative numbers, odd units,
/// and characters TOML treats specially.
const NASTY: &[&str] = &[
    "18446744073709551615",
    "18446744073709551615s",
    "213503982334601d",
    "99999999999999999999d",
    "-1",
    "0",
    "0s",
    "1e400",
    "nan",
    "\"\"",
    "\"5m\"",
    "\"4294967296GiB\"",
    "\"18446744073709551615m\"",
    "\"18446744073709551615s\"",
    "\"213503982334601d\"",
    "\"9999999d\"",
    "\"9223372036854775807\"",
    "\"every 0h\"",
    "\"every 99999999999999h\"",
    "\"daily 25:61\"",
    "\"monthly 00:00\"",
    "\"postgresql://u@h:notaport/db\"",
    "\"postgresql://u@[::1:5432/db\"",
    "[",
    "]",
    "[[jobs]]",
    "{}",
    "\"\u{202e}\u{0}\"",
    "'''",
    "\"\"\"",
    "=",
    "\n",
    "#",
    "é",
];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..rng.random_range(1..=4) {
        if s.is_empty() {
            s.push_str(NASTY[rng.random_range(0..NASTY.len())]);
            continue;
        }
        let at = floor_char(&s, rng.random_range(0..s.len()));
        match rng.random_range(0..7) {
            // Replace the value of a random `key = value` line.
            0 | 1 => {
                let lines: Vec<&str> = s.lines().collect();
                let i = rng.random_range(0..lines.len());
                let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                if let Some((k, _)) = lines[i].split_once('=') {
                    out[i] = format!("{k}= {}", NASTY[rng.random_range(0..NASTY.len())]);
                }
                s = out.join("\n");
            }
            2 => s.insert_str(at, NASTY[rng.random_range(0..NASTY.len())]),
            3 => {
                let end = floor_char(&s, (at + rng.random_range(0..40)).min(s.len()));
                s.replace_range(at..end, "");
            }
            4 => {
                // Duplicate a line (duplicate keys and tables).
                let lines: Vec<&str> = s.lines().collect();
                let i = rng.random_range(0..lines.len());
                let dup = lines[i].to_string();
                s = format!("{s}\n{dup}\n");
            }
            5 => {
                let c = char::from_u32(rng.random_range(0..0x3000)).unwrap_or('x');
                s.insert(at, c);
            }
            _ => {
                // Swap two lines (a key lands in another table).
                let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
                let (i, j) = (
                    rng.random_range(0..lines.len()),
                    rng.random_range(0..lines.len()),
                );
                lines.swap(i, j);
                s = lines.join("\n");
            }
        }
    }
    s
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// What a run does with the limits of an accepted config: none may panic.
fn use_limits(c: &Config) {
    let r = &c.runner;
    let now = Instant::now();
    for d in [
        r.plugin_timeout,
        r.transfer_timeout,
        r.stall_timeout,
        r.shutdown_grace,
    ] {
        let _ = now + d;
        let _ = tokio::time::Instant::now() + d;
        let _ = chrono::Duration::from_std(d).expect("fits a chrono duration");
    }
    for j in c.jobs.values() {
        let _ = now + j.hook_timeout;
    }
}

#[test]
fn random_mutations_of_a_valid_config_never_panic() {
    let path = Path::new("/etc/offsite/offsite.toml");
    let base = Config::parse(path, VALID).unwrap_or_else(|e| panic!("the base is valid: {e}"));
    use_limits(&base);

    let seed: u64 = std::env::var("OFFSITE_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00ff_517e);
    let secs: u64 = std::env::var("OFFSITE_MUTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rng = StdRng::seed_from_u64(seed);
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut tried, mut accepted) = (0u64, 0u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    while Instant::now() < until {
        let text = mutate(&mut rng, VALID);
        tried += 1;
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match Config::parse(path, &text) {
                Ok(c) => {
                    use_limits(&c);
                    true
                }
                Err(e) => {
                    // Every error is located in the file.
                    for one in &e.0 {
                        assert_eq!(one.file, path, "{one}");
                    }
                    false
                }
            }
        }));
        match r {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "Config::parse panicked (seed {seed}, mutation {tried}) on:\n{text}\n-- end --"
            ),
        }
    }
    eprintln!("{tried} mutated configs parsed, {accepted} accepted, none panicked");
    assert!(tried > 100, "only {tried} mutations in {secs} s");
}
