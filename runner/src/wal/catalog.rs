//! The recovery window: which snapshots the archived WAL can carry forward,
//! and how far. A restore target is proven against this before anything is
//! written: a snapshot whose end the target is past, and an unbroken chain
//! of archived segments from the snapshot's start to a record at or after
//! the target.

use std::io::Read;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use super::name::{Lsn, SegmentId};
use super::store::{WalEntry, WalStore};
use crate::store::Generation;

/// The WAL a snapshot needs to be consistent (pg_basebackup's
/// `backup_manifest` "WAL-Ranges"): replay from `start` through `end` on
/// `timeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRange {
    pub generation: String,
    pub timeline: u32,
    pub start: Lsn,
    pub end: Lsn,
    /// When the snapshot was complete (its manifest's `finished`).
    pub finished: DateTime<Utc>,
}

/// The snapshot's range: from its manifest's `snapshot_wal` (recorded when
/// it was taken), else — a generation from before offsite recorded it —
/// from the `snapshot/backup_manifest` inside the file, cached under
/// `<wal_dir>/snapshots/` so that is read once.
pub fn snapshot_range(store: &WalStore, g: &Generation) -> anyhow::Result<SnapshotRange> {
    if let Some(w) = &g.manifest.snapshot_wal {
        let (timeline, start, end) = from_recorded(w)
            .map_err(|e| anyhow::anyhow!("{}: snapshot_wal: {e}", g.manifest.name))?;
        return Ok(SnapshotRange {
            generation: g.manifest.name.clone(),
            timeline,
            start,
            end,
            finished: g.manifest.finished,
        });
    }
    let cache = store
        .dir
        .join("snapshots")
        .join(format!("{}.json", g.manifest.name));
    if let Ok(b) = std::fs::read(&cache)
        && let Ok(r) = serde_json::from_slice::<SnapshotRange>(&b)
    {
        return Ok(r);
    }
    let input = crate::pipeline::open_decompressed(&g.path, &g.manifest.compression)?;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() != "snapshot/backup_manifest" {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        let (timeline, start, end) = parse_wal_ranges(&text)
            .map_err(|e| anyhow::anyhow!("{}: backup_manifest: {e}", g.manifest.name))?;
        let r = SnapshotRange {
            generation: g.manifest.name.clone(),
            timeline,
            start,
            end,
            finished: g.manifest.finished,
        };
        // Cached only once the store exists: made here (by root, in a run
        // or `list`), it would lock the server's wal-push out of it.
        if store.dir.is_dir() {
            std::fs::create_dir_all(cache.parent().expect("has parent"))?;
            crate::store::write_atomic(&cache, &serde_json::to_vec_pretty(&r)?)?;
        }
        return Ok(r);
    }
    anyhow::bail!(
        "{} has no snapshot/backup_manifest: it is not a pg_basebackup snapshot offsite can replay WAL onto",
        g.manifest.name
    )
}

/// A recorded range as timeline and positions.
fn from_recorded(w: &crate::source::postgres::WalRange) -> Result<(u32, Lsn, Lsn), String> {
    Ok((w.timeline, w.start_lsn.parse()?, w.end_lsn.parse()?))
}

/// `"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]`
/// (one range unless the snapshot was taken across a timeline switch; the
/// last one is where replay must end).
pub fn parse_wal_ranges(manifest: &str) -> Result<(u32, Lsn, Lsn), String> {
    from_recorded(&crate::source::postgres::wal_range_of_manifest(manifest)?)
}

/// A point-in-time recovery target (PostgreSQL's `recovery_target_*`).
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `recovery_target_time`: stop before the first commit after it.
    Time(DateTime<FixedOffset>),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_name`: a `pg_create_restore_point` name.
    Name(String),
    /// `recovery_target = 'immediate'`: as soon as the snapshot is consistent.
    Immediate,
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]+ZZ[:ZZ]`; a time without a zone is
/// refused, since the server's and the operator's zones may differ.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let t = s.trim();
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d);
        }
    }
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix(" UTC"));
    if let Some(d) = t.and_then(|t| {
        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
            .ok()
    }) {
        return Ok(d.and_utc().fixed_offset());
    }
    if chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f").is_ok() {
        return Err(format!(
            "`{s}` has no time zone: write it with one, like \"2026-11-30 01:50:00+00\" or \"+02:00\" (the server's zone and yours may differ)"
        ));
    }
    Err(format!(
        "`{s}` is not a time: expected \"YYYY-MM-DD HH:MM:SS+ZZ\", e.g. \"2026-11-30 01:50:00+00\""
    ))
}

impl Target {
    /// The `postgresql.auto.conf` lines that set it.
    pub fn recovery_conf(&self) -> String {
        let q = |s: &str| s.replace('\'', "''");
        match self {
            Target::Time(t) => format!(
                "recovery_target_time = '{}'\n",
                t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S%.6f+00")
            ),
            Target::Lsn(l) => format!("recovery_target_lsn = '{l}'\n"),
            Target::Name(n) => format!("recovery_target_name = '{}'\n", q(n)),
            Target::Immediate => "recovery_target = 'immediate'\n".into(),
        }
    }
}

/// Archived segments of one timeline from `from`, as long as none is
/// missing: the WAL a replay from `from` can actually read.
pub fn chain_from(entries: &[WalEntry], from: SegmentId, seg_size: u64) -> Vec<&WalEntry> {
    let mut want = from;
    let mut out = vec![];
    for e in entries.iter().filter(|e| e.kind == "segment") {
        let Some(id) = SegmentId::parse(&e.name, seg_size) else {
            continue;
        };
        if id.timeline != from.timeline || id < want {
            continue;
        }
        if id != want {
            break;
        }
        out.push(e);
        want = want.next();
    }
    out
}

/// The WAL after a snapshot, as far as it is archived unbroken.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    pub snapshot: SnapshotRange,
    pub chain: Vec<&'a WalEntry>,
    /// The first segment the chain lacks.
    pub missing: String,
}

impl Window<'_> {
    /// Start of the last record the chain holds.
    pub fn last_record(&self) -> Option<Lsn> {
        self.chain
            .iter()
            .rev()
            .find_map(|e| e.summary.as_ref()?.last_record)
    }

    /// Latest commit time in the chain (Unix µs).
    pub fn last_commit_us(&self) -> Option<i64> {
        self.chain
            .iter()
            .filter_map(|e| e.summary.as_ref()?.last_xact_us)
            .max()
    }

    fn restore_point(&self, name: &str) -> Option<Lsn> {
        self.chain
            .iter()
            .filter_map(|e| e.summary.as_ref())
            .flat_map(|s| &s.restore_points)
            .filter(|rp| rp.name == name && rp.lsn >= self.snapshot.end)
            .map(|rp| rp.lsn)
            .next_back()
    }

    /// Whether a replay of this window reaches `target`; the error says
    /// where the window ends instead.
    pub fn reaches(&self, target: &Target) -> Result<(), String> {
        let end = || match (self.last_record(), self.last_commit_us()) {
            (Some(l), Some(t)) => format!(
                "the archived WAL after snapshot {} ends at {l} (last commit {}); the next segment, {}, is not archived",
                self.snapshot.generation,
                fmt_us(t),
                self.missing
            ),
            _ => format!(
                "no WAL after snapshot {} is archived (first missing segment {})",
                self.snapshot.generation, self.missing
            ),
        };
        let s_end_seg = self.snapshot.end;
        let covers_end = self.last_record().is_some_and(|l| l >= s_end_seg);
        match target {
            Target::Immediate => Ok(()),
            Target::Lsn(l) if *l < self.snapshot.end => Err(format!(
                "{l} is before snapshot {}'s end {}",
                self.snapshot.generation, self.snapshot.end
            )),
            Target::Lsn(l) => (covers_end && self.last_record().is_some_and(|r| r >= *l))
                .then_some(())
                .ok_or_else(|| format!("{l} is past the end of the archive: {}", end())),
            Target::Name(n) => (covers_end && self.restore_point(n).is_some())
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "no restore point named `{n}` in the archive after snapshot {}: {}",
                        self.snapshot.generation,
                        end()
                    )
                }),
            Target::Time(t) => {
                let t_us = t.timestamp_micros();
                let after = self
                    .chain
                    .iter()
                    .filter_map(|e| e.summary.as_ref()?.last_xact_us)
                    .any(|c| c > t_us);
                (covers_end && after).then_some(()).ok_or_else(|| {
                    format!(
                        "{t} is past the end of the archive (no commit after it is archived): {}",
                        end()
                    )
                })
            }
        }
    }
}

fn fmt_us(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// The window after `snapshot` in `entries`.
pub fn window<'a>(entries: &'a [WalEntry], snapshot: SnapshotRange, seg_size: u64) -> Window<'a> {
    let from = SegmentId::containing(snapshot.timeline, snapshot.start, seg_size);
    let chain = chain_from(entries, from, seg_size);
    let next = SegmentId {
        segno: from.segno + chain.len() as u64,
        ..from
    };
    Window {
        snapshot,
        chain,
        missing: next.file_name(seg_size),
    }
}

/// Whether `target` can be after `snapshot` at all (the snapshot must be
/// consistent before the target).
pub fn snapshot_precedes(snapshot: &SnapshotRange, target: &Target, window: &Window) -> bool {
    match target {
        Target::Immediate => true,
        Target::Lsn(l) => snapshot.end <= *l,
        Target::Name(n) => window.restore_point(n).is_some(),
        Target::Time(t) => snapshot.finished < t.with_timezone(&Utc),
    }
}

/// Reads the WAL store's entries and the cluster's segment size.
pub fn load(store: &WalStore) -> anyhow::Result<(Vec<WalEntry>, u64)> {
    let seg = store
        .cluster()?
        .map(|c| c.segment_size)
        .unwrap_or(super::name::DEFAULT_SEGMENT_SIZE);
    Ok((store.entries()?, seg))
}

/// What `offsite list` shows of a WAL job: how much is archived, the span
/// a restore can reach (from the oldest good snapshot's consistent point to
/// the last archived record), and the holes in the archive.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryWindow {
    pub dir: std::path::PathBuf,
    pub files: usize,
    pub stored_bytes: u64,
    /// Oldest good snapshot and the position it is consistent at.
    pub earliest: Option<(String, Lsn, DateTime<Utc>)>,
    pub latest_lsn: Option<Lsn>,
    pub latest_commit: Option<String>,
    /// First missing segment of each hole between archived segments.
    pub gaps: Vec<String>,
}

/// The job's recovery window, from its WAL store and local generations.
pub fn recovery_window(
    config: &crate::config::Config,
    job: &crate::config::Job,
) -> anyhow::Result<RecoveryWindow> {
    let store = super::store_of(config, job)?;
    let (entries, seg) = load(&store)?;
    let mut gaps = vec![];
    let ids: Vec<SegmentId> = entries
        .iter()
        .filter(|e| e.kind == "segment")
        .filter_map(|e| SegmentId::parse(&e.name, seg))
        .collect();
    for w in ids.windows(2) {
        if w[0].timeline == w[1].timeline && w[1].segno > w[0].segno + 1 {
            gaps.push(w[0].next().file_name(seg));
        }
    }
    let gens = crate::store::JobStore::new(&config.runner.backup_dir, &job.name).generations()?;
    let oldest = gens
        .iter()
        .find(|g| g.manifest.is_good() && g.manifest.format.as_deref() == Some("snapshot"));
    let mut out = RecoveryWindow {
        dir: store.dir.clone(),
        files: entries.len(),
        stored_bytes: entries.iter().map(|e| e.stored_size).sum(),
        earliest: None,
        latest_lsn: None,
        latest_commit: None,
        gaps,
    };
    if let Some(g) = oldest {
        let range = snapshot_range(&store, g)?;
        out.earliest = Some((range.generation.clone(), range.end, range.finished));
        let w = window(&entries, range, seg);
        out.latest_lsn = w.last_record();
        out.latest_commit = w.last_commit_us().map(fmt_us);
    }
    Ok(out)
}

impl std::fmt::Display for RecoveryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL: {} files, {} bytes stored in {}",
            self.files,
            self.stored_bytes,
            self.dir.display()
        )?;
        match (&self.earliest, &self.latest_lsn) {
            (Some((g, l, t)), Some(end)) => write!(
                f,
                "; recovery window {l} ({g}, {}) .. {end} (last commit {})",
                t.format("%Y-%m-%d %H:%M:%S"),
                self.latest_commit.as_deref().unwrap_or("none")
            )?,
            (Some((g, l, _)), None) => write!(
                f,
                "; recovery window: {g} at {l} only (no WAL after it archived)"
            )?,
            _ => write!(
                f,
                "; no good snapshot: no point in time can be restored yet"
            )?,
        }
        if !self.gaps.is_empty() {
            write!(f, "; GAPS at {}", self.gaps.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        let t = parse_time("2026-11-30 01:50:00+02").unwrap();
        assert_eq!(
            t.with_timezone(&Utc).to_rfc3339(),
            "2026-11-29T23:50:00+00:00"
        );
        assert!(parse_time("2026-11-30 01:50:00.123456+00").is_ok());
        assert!(parse_time("2026-11-30 01:50:00+05:30").is_ok());
        assert!(parse_time("2026-11-30 01:50:00Z").is_ok());
        let e = parse_time("2026-11-30 01:50:00").unwrap_err();
        assert!(e.contains("no time zone"), "{e}");
        assert!(parse_time("yesterday").unwrap_err().contains("not a time"));
    }

    #[test]
    fn wal_ranges_from_a_backup_manifest() {
        let m = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(
            parse_wal_ranges(m).unwrap(),
            (
                1,
                "0/2000028".parse().unwrap(),
                "0/2000100".parse().unwrap()
            )
        );
        assert!(parse_wal_ranges("{}").is_err());
    }

    /// A generation of a snapshot job, with or without a recorded range,
    /// whose file holds `snapshot/backup_manifest` with `file_range`.
    fn snapshot_generation(dir: &std::path::Path, recorded: bool) -> Generation {
        let path = dir.join("db-20260101T000000Z.tar");
        let text = r#"{"WAL-Ranges": [{ "Timeline": 3, "Start-LSN": "0/9000028", "End-LSN": "0/9000138" }]}"#;
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, "snapshot/backup_manifest", text.as_bytes())
            .unwrap();
        b.finish().unwrap();
        let mut m = serde_json::json!({
            "version": 1, "job": "db", "name": "db-20260101T000000Z.tar",
            "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:01:00Z",
            "size": 1, "sha256": "", "source": "postgres", "format": "snapshot",
            "layout": "tar", "compression": {"algorithm": "none"},
            "globals_included": false, "health": "good",
        });
        if recorded {
            m["snapshot_wal"] = serde_json::json!(
                {"timeline": 2, "start_lsn": "0/5000028", "end_lsn": "0/6000100"});
        }
        Generation {
            manifest: serde_json::from_value(m).unwrap(),
            path,
        }
    }

    #[test]
    fn the_recorded_range_is_used_and_old_generations_fall_back_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = WalStore::new(&dir.path().join("wal"), "db", 1 << 30);
        // The cache below is kept only in a store that exists (a run as root
        // must not create the server user's WAL store).
        std::fs::create_dir_all(&store.dir).unwrap();
        // Recorded at snapshot time: the file is not opened at all.
        let g = snapshot_generation(dir.path(), true);
        std::fs::remove_file(&g.path).unwrap();
        let r = snapshot_range(&store, &g).unwrap();
        assert_eq!(
            (r.timeline, r.start.to_string(), r.end.to_string()),
            (2, "0/5000028".into(), "0/6000100".into())
        );
        assert!(!store.dir.join("snapshots").exists());
        // Written before it was recorded: read from backup_manifest, cached.
        let old = snapshot_generation(dir.path(), false);
        let r = snapshot_range(&store, &old).unwrap();
        assert_eq!(
            (r.timeline, r.start.to_string(), r.end.to_string()),
            (3, "0/9000028".into(), "0/9000138".into())
        );
        std::fs::remove_file(&old.path).unwrap();
        assert_eq!(snapshot_range(&store, &old).unwrap(), r, "from the cache");
        // A recorded range that is not one is an error, not a guess.
        let mut bad = snapshot_generation(dir.path(), true);
        bad.manifest.snapshot_wal.as_mut().unwrap().end_lsn = "x".into();
        assert!(snapshot_range(&store, &bad).is_err());
    }

    #[test]
    fn a_missing_segment_ends_the_chain() {
        let seg = 16u64 << 20;
        let entry = |n: &str| WalEntry {
            name: n.into(),
            kind: "segment".into(),
            size: seg,
            sha256: String::new(),
            stored_size: 0,
            stored_sha256: String::new(),
            pushed: Utc::now(),
            system_identifier: None,
            timeline: Some(1),
            start_lsn: None,
            segment_size: Some(seg),
            summary: None,
        };
        let entries: Vec<WalEntry> = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
        ]
        .iter()
        .map(|n| entry(n))
        .collect();
        let from = SegmentId::parse("000000010000000000000002", seg).unwrap();
        let names: Vec<&str> = chain_from(&entries, from, seg)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["000000010000000000000002", "000000010000000000000003"]
        );
        let snap = SnapshotRange {
            generation: "g".into(),
            timeline: 1,
            start: "0/2000028".parse().unwrap(),
            end: "0/2000100".parse().unwrap(),
            finished: Utc::now(),
        };
        let w = window(&entries, snap, seg);
        assert_eq!(w.missing, "000000010000000000000004");
        let e = w
            .reaches(&Target::Lsn("0/5000000".parse().unwrap()))
            .unwrap_err();
        assert!(
            e.contains("past the end") && e.contains("000000010000000000000004"),
            "{e}"
        );
    }
}
