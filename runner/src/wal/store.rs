//! The job's local WAL store: every file `archive_command` hands over,
//! compressed, checksummed, durable before `wal-push` says yes.
//!
//! Layout, in `wal_dir` (default `<backup_dir>/<job>/wal`):
//! `<name>.zst` (zstd of the file as PostgreSQL wrote it) and
//! `<name>.json` (a [`WalEntry`]: sizes, sha256 of both forms, what the
//! segment header and records say). The entry is written after the data, so
//! a file without its entry is an interrupted push and is not archived.
//! `cluster.json` holds the system identifier the store belongs to, taken
//! from the first segment pushed (or a snapshot of the job).
//!
//! Rules follow PostgreSQL's `contrib/basic_archive`: temporary name, fsync,
//! rename, fsync the directory; a file pushed again with identical content
//! succeeds without a second copy; with different content it fails and the
//! original is kept.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::name::{Lsn, WalFileKind, kind_of};
use super::segment::{SegmentSummary, check_name, read_header, summarize};

/// zstd level for WAL: the archiver waits on every push, so fast wins.
const LEVEL: i32 = 1;
const DATA: &str = ".zst";
const ENTRY: &str = ".json";
const CLUSTER: &str = "cluster.json";

/// One archived file, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalEntry {
    pub name: String,
    /// segment | partial | history | backup
    pub kind: String,
    pub size: u64,
    /// Of the file as PostgreSQL wrote it.
    pub sha256: String,
    pub stored_size: u64,
    /// Of the stored (compressed) bytes: what destinations hold.
    pub stored_sha256: String,
    pub pushed: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<Lsn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SegmentSummary>,
}

/// The cluster a store belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterId {
    pub system_identifier: u64,
    pub segment_size: u64,
}

/// Why a push was refused. Every one means "not archived": PostgreSQL keeps
/// the file and tries again.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Refused(String),
    /// Same name, other bytes: the original is kept.
    #[error(
        "{name} is already archived with different content (archived sha256 {archived}, offered {offered}); the archived copy is kept. Two servers archiving into one job, or a standby promoted without a new timeline, do this: check which server owns job {job}"
    )]
    Conflict {
        job: String,
        name: String,
        archived: String,
        offered: String,
    },
    #[error(
        "the WAL store {dir} is full: {used} bytes used + {need} for {name} > wal_store_limit {limit}; PostgreSQL keeps the file and retries — ship WAL or raise wal_store_limit"
    )]
    Full {
        dir: PathBuf,
        name: String,
        used: u64,
        need: u64,
        limit: u64,
    },
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// What a successful push did.
#[derive(Debug, PartialEq)]
pub enum Pushed {
    Stored(Box<WalEntry>),
    /// Identical content was already archived.
    AlreadyThere,
}

pub struct WalStore {
    pub dir: PathBuf,
    pub job: String,
    /// Most stored bytes (compressed) before pushes are refused.
    pub limit: u64,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl WalStore {
    pub fn new(dir: &Path, job: &str, limit: u64) -> WalStore {
        WalStore {
            dir: dir.to_path_buf(),
            job: job.to_string(),
            limit,
        }
    }

    fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{DATA}"))
    }

    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{ENTRY}"))
    }

    /// The recorded entry of `name`, if it was archived.
    pub fn entry(&self, name: &str) -> anyhow::Result<Option<WalEntry>> {
        match fs::read(self.entry_path(name)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!(
                    "{}: unreadable WAL entry: {e}",
                    self.entry_path(name).display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "reading {}: {e}",
                self.entry_path(name).display()
            )),
        }
    }

    /// Every archived file's entry, by name (segments sort in WAL order).
    pub fn entries(&self) -> anyhow::Result<Vec<WalEntry>> {
        let mut out = vec![];
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", self.dir.display())),
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(ENTRY).filter(|s| kind_of(s).is_some())
                && let Some(entry) = self.entry(name)?
            {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Bytes stored (compressed data files, entries aside).
    pub fn used(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(DATA))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The cluster this store belongs to, once known.
    pub fn cluster(&self) -> anyhow::Result<Option<ClusterId>> {
        match fs::read(self.dir.join(CLUSTER)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Binds the store to a cluster, or checks it is the one it is bound
    /// to. The first writer wins (a hard link cannot replace a file).
    pub fn bind_cluster(&self, id: &ClusterId, what: &str) -> Result<(), PushError> {
        let refuse = |have: &ClusterId| {
            PushError::Refused(format!(
                "{what} comes from the cluster with system identifier {}, but job {}'s WAL store {} holds WAL of system identifier {}: WAL of two clusters must never mix; point this server's archive_command at its own job",
                id.system_identifier,
                self.job,
                self.dir.display(),
                have.system_identifier
            ))
        };
        if let Some(have) = self.cluster().map_err(PushError::Io)? {
            return if have.system_identifier == id.system_identifier {
                Ok(())
            } else {
                Err(refuse(&have))
            };
        }
        let tmp = self.dir.join(format!(".{CLUSTER}.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(id).expect("serializable");
        crate::store::write_atomic(&tmp, &bytes).map_err(PushError::Io)?;
        let linked = fs::hard_link(&tmp, self.dir.join(CLUSTER));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            // Another push bound it first: check against that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.bind_cluster(id, what),
            Err(e) => Err(PushError::Io(e.into())),
        }
    }

    /// Archives the file at `path` (PostgreSQL's `%p`), named by its file
    /// name. Returns only once the data and its entry are durable.
    pub fn push(&self, path: &Path) -> Result<Pushed, PushError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PushError::Refused(format!("{} has no file name", path.display())))?
            .to_string();
        let kind = kind_of(&name).ok_or_else(|| {
            PushError::Refused(format!(
                "`{name}` is not a file PostgreSQL archives (a 24-hex-digit segment, .partial, .history or .backup); archive_command must pass %p"
            ))
        })?;
        let mut raw = vec![];
        fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|e| PushError::Io(anyhow::anyhow!("reading {}: {e}", path.display())))?;
        let sha = sha256_hex(&raw);
        fs::create_dir_all(&self.dir)
            .map_err(|e| PushError::Io(anyhow::anyhow!("creating {}: {e}", self.dir.display())))?;
        let mut entry = self.describe(&name, &kind, &raw, sha)?;
        if let Some(have) = self.entry(&name).map_err(PushError::Io)?
            && self.data_path(&name).exists()
        {
            if have.sha256 == entry.sha256 {
                return Ok(Pushed::AlreadyThere);
            }
            return Err(PushError::Conflict {
                job: self.job.clone(),
                name,
                archived: have.sha256,
                offered: entry.sha256,
            });
        }
        let packed = zstd::bulk::compress(&raw, LEVEL)
            .map_err(|e| PushError::Io(anyhow::anyhow!("compressing {name}: {e}")))?;
        let used = self.used();
        if used + packed.len() as u64 > self.limit {
            return Err(PushError::Full {
                dir: self.dir.clone(),
                name,
                used,
                need: packed.len() as u64,
                limit: self.limit,
            });
        }
        entry.stored_size = packed.len() as u64;
        entry.stored_sha256 = sha256_hex(&packed);
        crate::store::write_atomic(&self.data_path(&name), &packed).map_err(PushError::Io)?;
        let json = serde_json::to_vec_pretty(&entry).expect("serializable");
        crate::store::write_atomic(&self.entry_path(&name), &json).map_err(PushError::Io)?;
        Ok(Pushed::Stored(Box::new(entry)))
    }

    /// The entry for a new file: for segments, what their header and
    /// records say, after checking they belong to this store's cluster.
    fn describe(
        &self,
        name: &str,
        kind: &WalFileKind,
        raw: &[u8],
        sha256: String,
    ) -> Result<WalEntry, PushError> {
        let mut e = WalEntry {
            name: name.to_string(),
            kind: match kind {
                WalFileKind::Segment => "segment",
                WalFileKind::Partial => "partial",
                WalFileKind::History => "history",
                WalFileKind::BackupLabel => "backup",
            }
            .into(),
            size: raw.len() as u64,
            sha256,
            stored_size: 0,
            stored_sha256: String::new(),
            pushed: Utc::now(),
            system_identifier: None,
            timeline: None,
            start_lsn: None,
            segment_size: None,
            summary: None,
        };
        if matches!(kind, WalFileKind::Segment | WalFileKind::Partial) {
            let bad = |why: String| {
                PushError::Refused(format!("{name} is not a usable WAL segment: {why}"))
            };
            let h = read_header(raw).map_err(bad)?;
            let len = if *kind == WalFileKind::Partial {
                h.segment_size as usize
            } else {
                raw.len()
            };
            let id = check_name(name, &h, len).map_err(bad)?;
            let cluster = ClusterId {
                system_identifier: h.system_identifier,
                segment_size: h.segment_size as u64,
            };
            self.bind_cluster(&cluster, &format!("WAL segment {name}"))?;
            e.system_identifier = Some(h.system_identifier);
            e.timeline = Some(id.timeline);
            e.start_lsn = Some(h.page_addr);
            e.segment_size = Some(h.segment_size as u64);
            e.summary = Some(summarize(raw, &h));
        }
        Ok(e)
    }

    /// The archived file's bytes as PostgreSQL wrote them, checked against
    /// the recorded sha256. `Ok(None)`: not archived here.
    pub fn read(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(entry) = self.entry(name)? else {
            return Ok(None);
        };
        let packed = match fs::read(self.data_path(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                anyhow::bail!(
                    "{name} is recorded in {} but its data file is missing",
                    self.dir.display()
                )
            }
            Err(e) => anyhow::bail!("reading {}: {e}", self.data_path(name).display()),
        };
        unpack(name, &entry, &packed).map(Some)
    }

    /// The stored (compressed) file, for shipping.
    pub fn stored_path(&self, name: &str) -> PathBuf {
        self.data_path(name)
    }

    /// Removes one archived file (entry first, so a crash in between leaves
    /// an unrecorded data file, never a record without data).
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        for p in [self.entry_path(name), self.data_path(name)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("removing {}: {e}", p.display()),
            }
        }
        Ok(())
    }
}

/// Decompresses a stored file and checks both checksums: the stored bytes
/// (as shipped) and the result (as PostgreSQL wrote it).
pub fn unpack(name: &str, entry: &WalEntry, packed: &[u8]) -> anyhow::Result<Vec<u8>> {
    // The sha256 of the result is the proof; the stored bytes are hashed
    // only when that fails, to say which copy is damaged (one hash on the
    // happy path: wal-fetch sits on recovery's critical path).
    let problem = match zstd::bulk::decompress(packed, entry.size as usize) {
        Ok(raw) => {
            let got = sha256_hex(&raw);
            if got == entry.sha256 {
                return Ok(raw);
            }
            format!(
                "{name} decompresses to sha256 {got}, recorded {}",
                entry.sha256
            )
        }
        Err(e) => format!("{name} does not decompress: {e}"),
    };
    let got = sha256_hex(packed);
    if got != entry.stored_sha256 {
        anyhow::bail!(
            "{name} is damaged: stored sha256 {got}, recorded {}",
            entry.stored_sha256
        );
    }
    anyhow::bail!("{problem}")
}

/// Writes `bytes` to PostgreSQL's `%p`: temporary name beside it, then
/// rename, so PostgreSQL (which reads the file as soon as the command
/// exits) never sees part of it. No fsync: PostgreSQL makes a restored
/// segment durable itself when it keeps it (`KeepFileRestoredFromArchive`,
/// src/backend/access/transam/xlogarchive.c), and after a crash recovery
/// asks for the file again.
pub fn write_restored(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".offsite-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let r = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        anyhow::bail!("writing {}: {e}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> WalStore {
        WalStore::new(&dir.join("wal"), "db", u64::MAX)
    }

    #[test]
    fn history_files_round_trip_and_duplicates_follow_basic_archive() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let src = t.path().join("00000002.history");
        fs::write(&src, "1\t0/3000000\tno recovery target specified\n").unwrap();
        assert!(matches!(s.push(&src).unwrap(), Pushed::Stored(_)));
        assert_eq!(s.push(&src).unwrap(), Pushed::AlreadyThere);
        fs::write(&src, "1\t0/3000001\tno recovery target specified\n").unwrap();
        let e = s.push(&src).unwrap_err();
        assert!(matches!(e, PushError::Conflict { .. }), "{e}");
        let back = s.read("00000002.history").unwrap().unwrap();
        assert_eq!(back, b"1\t0/3000000\tno recovery target specified\n");
        assert_eq!(s.entries().unwrap().len(), 1);
    }

    #[test]
    fn junk_names_and_junk_segments_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let p = t.path().join("postgresql.conf");
        fs::write(&p, "x").unwrap();
        assert!(
            s.push(&p)
                .unwrap_err()
                .to_string()
                .contains("not a file PostgreSQL archives")
        );
        let p = t.path().join("000000010000000000000003");
        fs::write(&p, vec![0u8; 16 << 20]).unwrap();
        let e = s.push(&p).unwrap_err().to_string();
        assert!(e.contains("not a usable WAL segment"), "{e}");
        assert!(s.entries().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_stored_copy_is_an_error_not_absence() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let src = t.path().join("00000003.history");
        fs::write(&src, "2\t0/5000000\tbefore 2020\n").unwrap();
        s.push(&src).unwrap();
        let data = s.stored_path("00000003.history");
        let mut b = fs::read(&data).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&data, b).unwrap();
        assert!(
            s.read("00000003.history")
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
        assert!(s.read("00000004.history").unwrap().is_none());
    }

    #[test]
    fn a_full_store_refuses_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = WalStore::new(&t.path().join("wal"), "db", 10);
        let src = t.path().join("00000002.history");
        fs::write(&src, "x".repeat(1000)).unwrap();
        assert!(matches!(s.push(&src).unwrap_err(), PushError::Full { .. }));
        assert!(s.entries().unwrap().is_empty());
        assert!(!s.stored_path("00000002.history").exists());
    }
}
