//! What each destination holds of a job's WAL: one small JSON file per
//! destination, `<wal_dir>/shipped/<destination>.json`, rewritten
//! atomically after every confirmed upload, so a crash loses at most the
//! record of one upload (which is then made again, to the same name and
//! content). Plain file handling; shipping ([`super::ship`]) decides what goes
//! in; local retention keeps what a destination has not confirmed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The folder of the per-destination files, inside the WAL store.
pub const SHIPPED_DIR: &str = "shipped";

/// One destination's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DestState {
    /// WAL file name → sha256 of the stored (compressed) bytes confirmed
    /// there (data first, then its entry: both uploaded).
    #[serde(default)]
    pub confirmed: BTreeMap<String, String>,
    /// A `wal-lag` episode: when its notice was sent. Cleared once no file
    /// has waited longer than `wal_lag` any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_notified: Option<DateTime<Utc>>,
    /// Why the last attempt stopped, if it did (for logs and `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The file of `dest` in the WAL store `wal_dir`.
pub fn path_of(wal_dir: &Path, dest: &str) -> PathBuf {
    wal_dir.join(SHIPPED_DIR).join(format!("{dest}.json"))
}

/// Reads `dest`'s record; none yet is an empty one. An unreadable file is
/// an error (starting from empty would ship everything again, which is
/// harmless, but would also forget an open lag episode: say so instead).
pub fn load(wal_dir: &Path, dest: &str) -> anyhow::Result<DestState> {
    let p = path_of(wal_dir, dest);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!(
                "{} is unreadable: {e}; remove it to ship all WAL to {dest} again",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DestState::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", p.display())),
    }
}

/// Writes `dest`'s record atomically (temporary name, fsync, rename).
pub fn save(wal_dir: &Path, dest: &str, s: &DestState) -> anyhow::Result<()> {
    let p = path_of(wal_dir, dest);
    std::fs::create_dir_all(p.parent().expect("has a parent"))
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", wal_dir.join(SHIPPED_DIR).display()))?;
    crate::store::write_atomic(&p, &serde_json::to_vec_pretty(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_none_is_empty() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(load(t.path(), "s3").unwrap(), DestState::default());
        let mut s = DestState::default();
        s.confirmed
            .insert("000000010000000000000003".into(), "ab".into());
        s.lag_notified = Some(Utc::now());
        save(t.path(), "s3", &s).unwrap();
        assert_eq!(load(t.path(), "s3").unwrap(), s);
        std::fs::write(path_of(t.path(), "s3"), "{").unwrap();
        assert!(
            load(t.path(), "s3")
                .unwrap_err()
                .to_string()
                .contains("unreadable")
        );
    }
}
