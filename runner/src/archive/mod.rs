//! Archive mode for churning trees (seed 003): each run appends the files
//! that are new or changed since the last run to an open volume; a volume
//! is sealed when it reaches `volume_size` or its oldest member has waited
//! `seal_after`, then written like a generation (final name by rename,
//! sha256, manifest) and shipped to the job's destinations. A catalog
//! (SQLite) says which volume holds which file at which byte range, so one
//! file is read back (`offsite cat`) without restoring its volume.
//!
//! Sits after `notify` in the flow (it ships through `plugin`/`ship` and
//! sends the `archive-lag` notice); `restore`, `job` and `commands` use it.
//!
//! On disk, under `<backup_dir>/<job>/`:
//! - `catalog.sqlite` — the catalog ([`catalog`]);
//! - `volumes/.open-<volume>` — the open volume, appended to by each run;
//! - `volumes/<job>.vol-NNNNNN.tar.zst` + `.manifest.json` — sealed volumes;
//! - `cache/` — volumes fetched from a destination, bounded in size.

pub mod catalog;
pub mod extract;
pub mod fetch;
pub mod pattern;
pub mod query;
pub mod rebuild;
pub mod retain;
pub mod run;
pub mod scan;
pub mod seal;
pub mod ship;
pub mod status;
pub mod volume;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// Where one archive job keeps its things.
#[derive(Clone, Debug)]
pub struct ArchiveDir {
    pub job: String,
    pub root: PathBuf,
}

/// Suffix of a volume's manifest, beside it locally and at destinations.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

impl ArchiveDir {
    pub fn new(backup_dir: &Path, job: &str) -> ArchiveDir {
        ArchiveDir {
            job: job.to_string(),
            root: backup_dir.join(job),
        }
    }

    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog.sqlite")
    }

    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn open_path(&self, volume: &str) -> PathBuf {
        self.volumes().join(format!(".open-{volume}"))
    }

    pub fn sealed_path(&self, volume: &str) -> PathBuf {
        self.volumes().join(volume)
    }

    pub fn manifest_path(&self, volume: &str) -> PathBuf {
        self.volumes().join(format!("{volume}{MANIFEST_SUFFIX}"))
    }

    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `<job>.vol-000001.tar.zst`: sorts in sealing order, and never
    /// matches a generation name (`<job>-<UTC>...`).
    pub fn volume_name(&self, seq: i64) -> String {
        format!("{}.vol-{seq:06}.tar.zst", self.job)
    }

    /// Whether `name` is one of this job's volume names.
    pub fn is_volume(&self, name: &str) -> bool {
        name.strip_prefix(&self.job)
            .and_then(|r| r.strip_prefix(".vol-"))
            .and_then(|r| r.strip_suffix(".tar.zst"))
            .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// A sealed volume's manifest (the commit marker: written last).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct VolumeManifest {
    pub version: u32,
    pub job: String,
    /// `archive-volume`
    pub kind: String,
    pub name: String,
    pub seq: i64,
    pub opened: DateTime<Utc>,
    pub sealed: DateTime<Utc>,
    /// Bytes and sha256 of the volume file.
    pub size: u64,
    pub sha256: String,
    pub members: u64,
    /// Content bytes of the members (what a restore of all of them writes).
    pub content_bytes: u64,
}

/// Unix nanoseconds of `t`.
pub fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The time of Unix nanoseconds `n`.
pub fn at_ns(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

/// Parse a time argument: RFC 3339 (`2026-11-30T01:00:00Z`), a date
/// (`2026-11-30`, UTC midnight), `YYYY-MM-DD HH:MM:SS[+ZZ]`, or an age
/// back from now (`3d`, `12h`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%#z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        return Ok(d.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    if let Ok(age) = crate::duration::parse(t) {
        return Ok(now - chrono::Duration::from_std(age)?);
    }
    anyhow::bail!(
        "`{s}` is not a time; write e.g. 2026-11-30T01:00:00Z, \"2026-11-30 01:00:00+00\", 2026-11-30, or an age like 3d or 12h"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_recognised_and_never_generation_names() {
        let d = ArchiveDir::new(Path::new("/b"), "calls");
        let n = d.volume_name(7);
        assert_eq!(n, "calls.vol-000007.tar.zst");
        assert!(d.is_volume(&n));
        assert!(!d.is_volume("calls-20261130T010000Z.tar.zst"));
        assert!(!crate::store::is_generation_of("calls", &n));
        assert!(!ArchiveDir::new(Path::new("/b"), "call").is_volume(&n));
    }

    #[test]
    fn times_parse_in_the_documented_shapes() {
        let now = parse_time("2026-11-30T12:00:00Z", Utc::now()).unwrap();
        assert_eq!(
            parse_time("2026-11-30", now).unwrap().to_rfc3339(),
            "2026-11-30T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-30 03:00:00+02", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-30T01:00:00+00:00"
        );
        assert_eq!(
            parse_time("12h", now).unwrap().to_rfc3339(),
            "2026-11-30T00:00:00+00:00"
        );
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
    }
}
