//! `offsite verify JOB --remote DEST` for a job with `wal = true`: besides
//! the generation's own copy, is every archived WAL file that a
//! point-in-time recovery from that generation needs still at DEST?
//!
//! Needed: every file of the local WAL catalog from the segment holding the
//! snapshot's start onwards. Of those, the ones DEST confirmed (the
//! shipped-state file, [`crate::wal::shipped`]) must be listed there as both
//! objects ([`data_object`], then [`entry_object`]), the data at its stored
//! size when the plugin reports sizes. Files not yet confirmed are lag, not
//! loss: counted, never a failure. One `list` call; nothing is downloaded.

use std::collections::HashMap;

use super::{data_object, entry_object};
use crate::config::Job;
use crate::runtime::Runtime;
use crate::store::Generation;
use crate::wal::catalog;
use crate::wal::name::SegmentId;
use crate::wal::shipped;

/// What the audit of one destination found.
#[derive(Debug, Default)]
pub struct Audit {
    /// The first WAL file the generation needs.
    pub first: String,
    /// Confirmed files looked for.
    pub checked: usize,
    /// Confirmed files absent at the destination (data or entry).
    pub missing: Vec<String>,
    /// Confirmed files whose data has another size there: (name, stored
    /// size, size at the destination).
    pub wrong_size: Vec<(String, u64, u64)>,
    /// Needed files the destination has not confirmed yet.
    pub not_yet: usize,
}

impl Audit {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.wrong_size.is_empty()
    }

    /// One line for people: what is wrong (every name), or what was checked.
    pub fn describe(&self, dest: &str) -> String {
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!(
                "archived WAL missing at {dest}: {} (confirmed shipped, not listed there now)",
                self.missing.join(", ")
            ));
        }
        for (name, want, got) in &self.wrong_size {
            parts.push(format!(
                "archived WAL {name} at {dest} has {got} bytes, {want} were shipped"
            ));
        }
        if parts.is_empty() {
            let lag = if self.not_yet > 0 {
                format!(", {} not shipped there yet", self.not_yet)
            } else {
                String::new()
            };
            return format!(
                "WAL from {} at {dest}: {} files present{lag}",
                self.first, self.checked
            );
        }
        parts.join("; ")
    }
}

/// Lists `dest` and compares it with what it confirmed of the WAL that
/// generation `g` needs. Errors: the WAL store or the snapshot's WAL range
/// cannot be read, or the destination cannot be listed.
pub async fn audit(rt: &Runtime, job: &Job, g: &Generation, dest: &str) -> anyhow::Result<Audit> {
    let store = crate::wal::store_of(&rt.config, job)?;
    let (entries, seg) = catalog::load(&store)?;
    let range = catalog::snapshot_range(&store, g)?;
    let first = SegmentId::containing(range.timeline, range.start, seg).file_name(seg);
    let state = shipped::load(&store.dir, dest)?;
    let mut session = crate::ship::open_named(rt, dest, &job.name).await?;
    let listed = session
        .list(&format!("{}-wal-", job.name))
        .await
        .map_err(|e| anyhow::anyhow!("listing the WAL at {dest}: {e}"))?;
    let at_dest: HashMap<String, Option<u64>> =
        listed.into_iter().map(|o| (o.name, o.size)).collect();
    let mut audit = Audit {
        first: first.clone(),
        ..Audit::default()
    };
    for e in entries.iter().filter(|e| e.name >= first) {
        if !state.confirmed.contains_key(&e.name) {
            audit.not_yet += 1;
            continue;
        }
        audit.checked += 1;
        let data = at_dest.get(&data_object(&job.name, &e.name));
        let entry = at_dest.get(&entry_object(&job.name, &e.name));
        match (data, entry) {
            (Some(size), Some(_)) => {
                if let Some(s) = size
                    && *s != e.stored_size
                {
                    audit.wrong_size.push((e.name.clone(), e.stored_size, *s));
                }
            }
            _ => audit.missing.push(e.name.clone()),
        }
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_every_missing_file_and_the_destination() {
        let a = Audit {
            first: "000000010000000000000004".into(),
            checked: 5,
            missing: vec![
                "000000010000000000000006".into(),
                "000000010000000000000007".into(),
            ],
            wrong_size: vec![("000000010000000000000008".into(), 100, 40)],
            not_yet: 1,
        };
        assert!(!a.is_ok());
        let d = a.describe("s3");
        assert!(
            d.contains("000000010000000000000006, 000000010000000000000007"),
            "{d}"
        );
        assert!(d.contains("missing at s3"), "{d}");
        assert!(
            d.contains("000000010000000000000008 at s3 has 40 bytes, 100 were shipped"),
            "{d}"
        );
        let ok = Audit {
            first: "000000010000000000000004".into(),
            checked: 3,
            not_yet: 2,
            ..Audit::default()
        };
        assert!(ok.is_ok());
        assert_eq!(
            ok.describe("nas"),
            "WAL from 000000010000000000000004 at nas: 3 files present, 2 not shipped there yet"
        );
    }
}
