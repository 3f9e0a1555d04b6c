//! Continuous WAL archiving keys of a job (`wal = true` and its settings),
//! kept in one place beside the job model.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::Ctx;
use super::raw::RawJob;
use crate::limits::parse_size;

/// `wal = true` on a `format = "snapshot"` job.
#[derive(Debug, Clone, PartialEq)]
pub struct WalSettings {
    /// Where `wal-push` stores WAL: `wal_dir`, else `<backup_dir>/<job>/wal`.
    /// The PostgreSQL server's user must be able to write it.
    pub dir: Option<PathBuf>,
    /// Most compressed bytes in the local WAL store (`wal_store_limit`,
    /// default 8 GiB); a push past it fails and PostgreSQL retries.
    pub store_limit: u64,
    /// A segment waiting longer than this to reach a destination sends a
    /// `wal-lag` notice (`wal_lag`, default 15m).
    pub lag: Duration,
    /// Segments `wal-fetch` fetches ahead, in parallel (`wal_prefetch`,
    /// default 8; 0 turns prefetch off).
    pub prefetch: usize,
    /// `hot_backup`: where `verify = "restore"` keeps the last verified
    /// snapshot with the archived WAL replayed onto it, stopped in
    /// recovery, ready to start (absolute; replaced after each snapshot).
    pub hot_backup: Option<PathBuf>,
}

/// Where the first WAL setting other than `wal` itself is written.
fn any_setting(raw: &RawJob) -> Option<usize> {
    let s = |o: Option<std::ops::Range<usize>>| o.map(|r| r.start);
    s(raw.wal_dir.as_ref().map(Spanned::span))
        .or(s(raw.wal_store_limit.as_ref().map(Spanned::span)))
        .or(s(raw.wal_lag.as_ref().map(Spanned::span)))
        .or(s(raw.wal_prefetch.as_ref().map(Spanned::span)))
}

/// Checks the WAL keys of job `name` (the `wal*` and `hot_backup` fields of
/// its table `raw`); `snapshot` says whether the job takes
/// `pg_basebackup` snapshots (WAL archiving needs them as a base),
/// `verify_restore` whether it has `verify = "restore"` (`hot_backup`
/// needs it).
pub(super) fn build(
    cx: &mut Ctx,
    name: &str,
    raw: &RawJob,
    snapshot: bool,
    verify_restore: bool,
) -> Option<WalSettings> {
    let k = |key: &str| format!("jobs.{name}.{key}");
    let on = raw.wal.as_ref().is_some_and(|w| *w.get_ref());
    let hot_backup = hot_backup(cx, name, raw.hot_backup.as_ref(), on, verify_restore);
    if !on {
        if let Some(at) = any_setting(raw) {
            cx.err(
                Some(at),
                k("wal"),
                "WAL settings are given but wal = true is not: add wal = true or remove them",
            );
        }
        return None;
    }
    if !snapshot {
        let w = raw.wal.as_ref().expect("on");
        cx.at(w, &k("wal"), "needs source = \"postgres\" and format = \"snapshot\" (WAL replays onto a pg_basebackup snapshot)");
    }
    let dir = raw.wal_dir.as_ref().map(|d| {
        if !d.get_ref().is_absolute() {
            cx.at(
                d,
                &k("wal_dir"),
                format!("{} must be an absolute path", d.get_ref().display()),
            );
        }
        d.get_ref().clone()
    });
    let store_limit = match &raw.wal_store_limit {
        None => 8 << 30,
        Some(s) => match parse_size(s.get_ref()).filter(|n| *n >= 64 << 20) {
            Some(n) => n as u64,
            None => {
                cx.at(
                    s,
                    &k("wal_store_limit"),
                    "expected a size of at least 64MiB, like \"8GiB\" or \"500MiB\"",
                );
                0
            }
        },
    };
    let lag = match &raw.wal_lag {
        None => Duration::from_secs(15 * 60),
        Some(s) => crate::duration::parse(s.get_ref()).unwrap_or_else(|e| {
            cx.at(s, &k("wal_lag"), e);
            Duration::ZERO
        }),
    };
    let prefetch = match &raw.wal_prefetch {
        None => 8,
        Some(n) if (0..=64).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            cx.at(n, &k("wal_prefetch"), "expected 0 (off) to 64 segments");
            0
        }
    };
    Some(WalSettings {
        dir,
        store_limit,
        lag,
        prefetch,
        hot_backup,
    })
}

/// Checks `hot_backup` of job `name`: it needs `wal = true` and
/// `verify = "restore"` (the replay that fills it) and an absolute path.
fn hot_backup(
    cx: &mut Ctx,
    name: &str,
    raw: Option<&Spanned<PathBuf>>,
    wal: bool,
    verify_restore: bool,
) -> Option<PathBuf> {
    let h = raw?;
    let key = format!("jobs.{name}.hot_backup");
    if !wal || !verify_restore {
        cx.at(
            h,
            &key,
            "needs wal = true and verify = \"restore\": the hot backup is the snapshot the restore verification replayed the archived WAL onto",
        );
    }
    if !h.get_ref().is_absolute() {
        cx.at(
            h,
            &key,
            format!("{} must be an absolute path", h.get_ref().display()),
        );
    }
    Some(h.get_ref().clone())
}
