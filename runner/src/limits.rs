//! What `config check` accepts beyond the file's shape: the range of every
//! duration and size (a value outside it would overflow a clock or an
//! allocation deep inside a run), and values that point at the system —
//! secret files no one else may read, hooks that exist and run, DSN ports.
//!
//! Each check returns the message for a `ConfigError`; the caller adds the
//! file, line and key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::duration;

/// Limits every plugin call runs under (`[runner]` plugin_memory,
/// plugin_timeout, transfer_timeout, stall_timeout, debug_plugins).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// describe, configure, list, remove, notify.
    pub call_timeout: Duration,
    /// upload and fetch, which move whole generations: the hard cap.
    pub transfer_timeout: Duration,
    /// upload and fetch: stopped once no byte has moved this long (a hung
    /// server), however long the transfer has run.
    pub stall_timeout: Duration,
    /// Let plugins write to the runner's stdout/stderr (debugging only).
    pub debug_stdio: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(300),
            transfer_timeout: Duration::from_secs(24 * 3600),
            stall_timeout: Duration::from_secs(120),
            debug_stdio: false,
        }
    }
}

/// An accepted range of one duration setting.
pub struct DurationRange {
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const DAY: u64 = 86400;

/// `[runner] plugin_timeout`: one describe/configure/list/remove/notify call.
pub const PLUGIN_TIMEOUT: DurationRange = DurationRange {
    key: "plugin_timeout",
    min: secs(1),
    max: secs(DAY),
};
/// `[runner] transfer_timeout`: the hard cap on one upload or fetch.
pub const TRANSFER_TIMEOUT: DurationRange = DurationRange {
    key: "transfer_timeout",
    min: secs(1),
    max: secs(30 * DAY),
};
/// `[runner] stall_timeout`: an upload or fetch that moves no byte this
/// long is stopped.
pub const STALL_TIMEOUT: DurationRange = DurationRange {
    key: "stall_timeout",
    min: secs(1),
    max: secs(DAY),
};
/// `[runner] shutdown_grace`: 0s cancels running jobs at once.
pub const SHUTDOWN_GRACE: DurationRange = DurationRange {
    key: "shutdown_grace",
    min: secs(0),
    max: secs(DAY),
};
/// `[jobs.NAME] hook_timeout`.
pub const HOOK_TIMEOUT: DurationRange = DurationRange {
    key: "hook_timeout",
    min: secs(1),
    max: secs(7 * DAY),
};

/// `[runner] plugin_memory`: wasm32 linear memory cannot exceed 4 GiB.
pub const PLUGIN_MEMORY_MIN: usize = 16 << 20;
pub const PLUGIN_MEMORY_MAX: usize = 4 << 30;

impl DurationRange {
    /// Parse `text` and check it is within the range.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
        let d = duration::parse(text)?;
        if d < self.min || d > self.max {
            return Err(format!(
                "`{text}` is out of range; accepted: {} to {}",
                duration::format(self.min),
                duration::format(self.max)
            ));
        }
        Ok(d)
    }
}

/// Check a `plugin_memory` size.
pub fn plugin_memory(text: &str) -> Result<usize, String> {
    match parse_size(text) {
        Some(n) if (PLUGIN_MEMORY_MIN..=PLUGIN_MEMORY_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a size from 16MiB to 4GiB (a plugin's memory cannot grow past 4GiB); write e.g. \"256MiB\" or \"1GiB\""
        )),
    }
}

/// `256MiB`, `1GiB`, `512MB`, or plain bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..split].parse().ok()?;
    let mult = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A secret file must not be readable by anyone but its owner: the config
/// keeps the secret out of itself precisely so it can be shared.
pub fn secret_file_mode(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else {
        // Reading it reports the error.
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        return Err(format!(
            "the secret file {} is readable by {} (mode {mode:04o}); make it readable by its owner only: chmod 600 {}",
            path.display(),
            match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "its group and everyone",
                (true, false) => "its group",
                _ => "everyone",
            },
            path.display()
        ));
    }
    Ok(())
}

/// A hook must be an existing regular file the runner may execute.
pub fn hook(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "{}: {}; a hook is the absolute path of an executable program",
            path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                e.to_string()
            }
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file; a hook is the absolute path of an executable program",
            path.display()
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not executable; chmod +x {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// The port(s) of a DSN, in the URI form (`postgresql://u@h1:5432,h2/db`)
/// or the key=value form (`host=h port=5432`): each must be 1..=65535.
pub fn dsn_ports(dsn: &str) -> Result<(), String> {
    let bad = |p: &str| {
        Err(format!(
            "the port `{p}` is not a number from 1 to 65535; write e.g. \"postgresql://postgres@127.0.0.1:5432/calls\""
        ))
    };
    let ports: Vec<String> = if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        let hosts = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
        hosts
            .split(',')
            .filter_map(|h| {
                // `[::1]:5432`: the port follows the bracket.
                let after = match h.rfind(']') {
                    Some(i) => &h[i + 1..],
                    None => h,
                };
                after.rsplit_once(':').map(|(_, p)| p.to_string())
            })
            .collect()
    } else {
        dsn.split_whitespace()
            .filter_map(|kv| kv.strip_prefix("port="))
            .flat_map(|v| v.trim_matches('\'').split(','))
            .map(str::to_string)
            .collect()
    };
    for p in ports {
        // An empty port (`host:`) means the default.
        if !p.is_empty() && !p.parse::<u16>().is_ok_and(|n| n > 0) {
            return bad(&p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_outside_their_range_say_what_is_accepted() {
        assert_eq!(PLUGIN_TIMEOUT.parse("5m").unwrap(), secs(300));
        let e = PLUGIN_TIMEOUT.parse("18446744073709551615s").unwrap_err();
        assert!(e.contains("out of range; accepted: 1s to 24h"), "{e}");
        assert!(TRANSFER_TIMEOUT.parse("213503982334601d").is_err());
        assert!(SHUTDOWN_GRACE.parse("0s").is_ok());
        assert!(PLUGIN_TIMEOUT.parse("0s").is_err());
        assert!(plugin_memory("8GiB").is_err());
        assert_eq!(plugin_memory("1GiB").unwrap(), 1 << 30);
    }

    #[test]
    fn dsn_ports_must_be_numbers() {
        for ok in [
            "postgresql://postgres@127.0.0.1:5432/calls",
            "postgresql://u:p%40ss@h/db",
            "postgres://[::1]:5433/db",
            "postgresql://h1:5432,h2:5433/db?sslmode=disable",
            "postgresql:///db?host=/run/postgresql",
            "host=127.0.0.1 port=5432 dbname=x",
            "host=a,b port=5432,5433",
        ] {
            assert!(dsn_ports(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgresql://postgres@127.0.0.1:notaport/calls",
            "postgresql://h:70000/db",
            "postgresql://[::1]:x/db",
            "host=a port=abc",
        ] {
            assert!(
                dsn_ports(bad).unwrap_err().contains("is not a number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_files_and_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(secret_file_mode(&f).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(secret_file_mode(&f).is_ok());
        assert!(hook(&f).unwrap_err().contains("not executable"));
        assert!(
            hook(&dir.path().join("none"))
                .unwrap_err()
                .contains("no such file")
        );
        assert!(hook(dir.path()).unwrap_err().contains("not a regular file"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(hook(&f).is_ok());
    }
}
